// Shared by the wf serve tests: start `wf serve --listen 127.0.0.1:0`, read
// the port it prints, stop it; a tiny TAP runner. Environment: WF (the wf
// binary), WF_QS and WF_HITL (the example plugins), NODE_PATH (the npm
// packages of build-node/node_modules).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

export const SKIP = 77;

// require() from the npm directory (NODE_PATH does not apply to ES modules)
export function npmRequire(name) {
  const dir = process.env.WF_NODE_MODULES;
  if (!dir) return null;
  try {
    return createRequire(path.join(dir, 'x.js'))(name);
  } catch (e) {
    return null;
  }
}

export function startServer(extra = []) {
  const args = ['serve', process.env.WF_QS, process.env.WF_HITL, '--listen', '127.0.0.1:0', ...extra];
  const proc = spawn(process.env.WF, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('wf serve printed no port in 30 s: ' + err)), 30000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[0-9.]+:(\d+))/);
      if (m) {
        clearTimeout(timer);
        resolve({
          url: m[1], port: Number(m[2]), proc,
          stderr: () => err,
          stop: () => new Promise((res) => {
            if (proc.exitCode !== null) return res(proc.exitCode);
            proc.on('exit', (code, sig) => res(code ?? sig));
            proc.kill('SIGTERM');
          }),
        });
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`wf serve exited (${code}): ${err}`)); });
  });
}

export async function runTap(tests) {
  console.log(`1..${tests.length}`);
  let failed = 0;
  for (let i = 0; i < tests.length; i++) {
    const [name, fn] = tests[i];
    try {
      await fn();
      console.log(`ok ${i + 1} - ${name}`);
    } catch (e) {
      failed++;
      console.log(`not ok ${i + 1} - ${name}`);
      for (const l of String(e && e.stack || e).split('\n')) console.log(`# ${l}`);
    }
  }
  return failed;
}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

export function eq(a, b, msg) {
  const ja = JSON.stringify(a), jb = JSON.stringify(b);
  if (ja !== jb) throw new Error(`${msg}: got ${ja}, want ${jb}`);
}
