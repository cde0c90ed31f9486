// Bad HTTP input against `wf serve`: clear 4xx JSON answers ({"detail": ...}),
// and the server keeps serving; 1,000 event-stream readers that go away at
// random times leave no thread behind. TAP on stdout.
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import { startServer, runTap, assert, eq, SKIP } from './lib.mjs';

if (!process.env.WF) {
  console.log('1..0 # SKIP WF is not set');
  process.exit(SKIP);
}
const srv = await startServer(['--body-limit', '1048576']);
const U = srv.url;

async function call(method, path, body, headers = {}) {
  const r = await fetch(U + path, { method, body, headers: { 'content-type': 'application/json', ...headers } });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
  return { status: r.status, json, text, type: r.headers.get('content-type') };
}

function detail(r, status, re) {
  eq(r.status, status, 'status of ' + r.text);
  assert(r.type && r.type.startsWith('application/json'), 'JSON answer: ' + r.type);
  assert(r.json && typeof r.json.detail === 'string', 'a detail: ' + r.text);
  if (re) assert(re.test(r.json.detail), `detail ${JSON.stringify(r.json.detail)} matches ${re}`);
}

function threads() {
  const m = fs.readFileSync(`/proc/${srv.proc.pid}/status`, 'utf8').match(/^Threads:\s+(\d+)/m);
  return m ? Number(m[1]) : 0;
}

async function healthy() {
  const r = await call('GET', '/health');
  eq(r.json, { status: 'healthy' }, 'still healthy');
}

const tests = [
  ['malformed JSON body', async () => {
    detail(await call('POST', '/workflows/MyWorkflow/run', '{"start_event": {'), 400, /Invalid JSON body/);
    detail(await call('POST', '/workflows/MyWorkflow/run-nowait', '[1, 2]'), 400, /JSON object/);
    detail(await call('POST', '/workflows/MyWorkflow/run', '{"start_event": "{not json"}'), 400, /start_event/);
    // wf's event types declare no field schemas: a wrong field fails the run (500, status failed)
    const bad = await call('POST', '/workflows/MyWorkflow/run', '{"start_event": {"data": 5}}');
    eq([bad.status, bad.json.status], [500, 'failed'], 'a start event the step refuses');
    assert(/needs a string field/.test(bad.json.error), 'error: ' + bad.json.error);
    detail(await call('POST', '/workflows/MyWorkflow/run', '{"context": {"x": 1}}'), 400, /Context API is disabled/);
    detail(await call('POST', '/events/whatever', 'nope'), 400, /Error processing request/);
    await healthy();
  }],
  ['unknown workflow', async () => {
    detail(await call('POST', '/workflows/nope/run', '{}'), 404, /Workflow not found/);
    detail(await call('POST', '/workflows/nope/run-nowait', '{}'), 404);
    detail(await call('GET', '/workflows/nope/schema'), 404, /not found/);
    detail(await call('GET', '/workflows/nope/representation'), 404);
    detail(await call('GET', '/workflows/nope/events'), 404);
  }],
  ['unknown handler', async () => {
    detail(await call('GET', '/handlers/AAAAAAAAAA'), 404, /Handler not found/);
    detail(await call('GET', '/results/AAAAAAAAAA'), 404, /Handler not found/);
    detail(await call('GET', '/events/AAAAAAAAAA'), 404, /Handler not found/);
    detail(await call('POST', '/handlers/AAAAAAAAAA/cancel'), 404, /Handler not found/);
    detail(await call('POST', '/events/AAAAAAAAAA', JSON.stringify({ event: { type: 'HumanResponseEvent', value: {} } })), 404, /Handler not found/);
  }],
  ['an event the workflow does not know, a missing event, a bad cursor', async () => {
    const r = await call('POST', '/workflows/approval/run-nowait', JSON.stringify({ start_event: { item: 'a' } }));
    const id = r.json.handler_id;
    detail(await call('POST', `/events/${id}`, JSON.stringify({ event: { type: 'NoSuchEvent', value: {} } })), 400, /Invalid event type: NoSuchEvent/);
    detail(await call('POST', `/events/${id}`, JSON.stringify({ event: { value: {} } })), 400, /type/);
    detail(await call('POST', `/events/${id}`, JSON.stringify({ event: { type: 'StepStateChanged', value: {} } })), 400, /Invalid event type/);
    detail(await call('POST', `/events/${id}`, JSON.stringify({})), 400, /Event data is required/);
    detail(await call('POST', `/events/${id}`, JSON.stringify({ event: 42 })), 400, /json object/);
    detail(await call('GET', `/events/${id}?after_sequence=abc`), 400, /Invalid after_sequence/);
    eq((await call('POST', `/handlers/${id}/cancel`)).json, { status: 'cancelled' }, 'cancel');
  }],
  ['a body over the limit (1 MiB)', async () => {
    const big = JSON.stringify({ start_event: { data: 'x'.repeat(1100000) } });
    detail(await call('POST', '/workflows/MyWorkflow/run', big), 413, /too large/);
    // without a Content-Length (chunked): read up to the limit, then refused
    const status = await new Promise((resolve, reject) => {
      const req = http.request(U + '/workflows/MyWorkflow/run', { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      });
      req.on('error', reject);
      for (let i = 0; i < 20; i++) req.write('x'.repeat(100000));
      req.end();
    });
    eq(status, 413, 'chunked body over the limit');
    await healthy();
  }],
  ['unknown routes and methods', async () => {
    detail(await call('GET', '/nope/nope/nope'), 404);
    detail(await call('DELETE', '/workflows'), 405);
    detail(await call('GET', '/workflows/MyWorkflow/run'), 405);
    detail(await call('GET', '/../../etc/passwd'), 404);
  }],
  ['garbage on the socket', async () => {
    await new Promise((resolve) => {
      const s = net.connect(srv.port, '127.0.0.1', () => s.end('\x00\x01 NOT HTTP\r\n\r\n'));
      s.on('data', () => {});
      s.on('close', resolve);
      s.on('error', resolve);
    });
    await healthy();
  }],
  ['1,000 event-stream readers that disconnect at random', async () => {
    const base = threads();
    const r = await call('POST', '/workflows/approval/run-nowait', JSON.stringify({ start_event: { item: 'b' } }));
    const id = r.json.handler_id;
    const n = 1000;
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const readers = [];
    for (let i = 0; i < n; i++) {
      const mode = i % 3; // 0: SSE, 1: NDJSON with internal events, 2: connect and never read
      const q = mode === 0 ? 'after_sequence=-1' : mode === 1 ? 'sse=false&include_internal=true&after_sequence=-1' : '';
      const after = Math.floor(rnd() * 300);
      readers.push(new Promise((resolve) => {
        const req = http.get(`${U}/events/${id}?${q}`, { agent: false }, (res) => {
          if (mode !== 2) res.on('data', () => {});
          setTimeout(() => { req.destroy(); resolve(res.statusCode); }, after);
        });
        req.on('error', () => resolve('error'));
      }));
    }
    const codes = await Promise.all(readers);
    assert(codes.filter((c) => c === 200).length === n, 'every reader got 200: ' + JSON.stringify(codes.filter((c) => c !== 200).slice(0, 5)));
    await healthy();
    // the connection threads of the readers end (bounded wait: 15 s)
    let t = threads();
    for (let i = 0; i < 150 && t > base + 4; i++) {
      await new Promise((res) => setTimeout(res, 100));
      t = threads();
    }
    assert(t <= base + 4, `threads back near ${base}: ${t}`);
    const ans = await call('POST', `/events/${id}`, JSON.stringify({ event: { type: 'HumanResponseEvent', value: { response: 'no' } } }));
    eq(ans.json, { status: 'sent' }, 'the run still takes its answer');
    const h = await call('GET', `/handlers/${id}`);
    // the answer may still be on its way: the handler is running or completed
    assert(h.status === 200 || h.status === 202, 'handler: ' + h.status);
    const run = await call('POST', '/workflows/MyWorkflow/run', JSON.stringify({ start_event: { data: 'still' } }));
    eq(run.status, 200, 'runs still work');
  }],
];

const failed = await runTap(tests);
const code = await srv.stop();
if (code !== 0) {
  console.log(`# wf serve exited with ${code}: ${srv.stderr()}`);
  process.exit(1);
}
process.exit(failed ? 1 : 0);
