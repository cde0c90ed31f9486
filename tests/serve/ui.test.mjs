// The official debugger UI (@llamaindex/workflow-debugger, served by
// `wf serve` at /) in Debian's Chromium driven by playwright-core: the page
// lists the workflows, starts the quick start, and runs the human-in-the-loop
// workflow to its result, answering it from the UI's "Send Event" dialog;
// the page shows the events and the result. Screenshots go to
// $WF_ARTIFACTS (ui-quickstart.png, ui-approval.png). Skips (77) without
// chromium or the npm packages.
import fs from 'node:fs';
import path from 'node:path';
import { startServer, runTap, assert, eq, npmRequire, SKIP } from './lib.mjs';

const CHROMIUM = process.env.WF_CHROMIUM || '/usr/bin/chromium';
const pw = npmRequire('playwright-core');
const uiDir = process.env.WF_NODE_MODULES &&
  path.join(process.env.WF_NODE_MODULES, '@llamaindex', 'workflow-debugger', 'dist');
if (!pw || !fs.existsSync(CHROMIUM) || !uiDir || !fs.existsSync(path.join(uiDir, 'app.js'))) {
  console.log('1..0 # SKIP chromium, playwright-core or @llamaindex/workflow-debugger is not installed');
  process.exit(SKIP);
}
const art = process.env.WF_ARTIFACTS || '.';
fs.mkdirSync(art, { recursive: true });

const srv = await startServer(['--ui', uiDir]);
const browser = await pw.chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.setDefaultTimeout(20000);
const apiErrors = [];
page.on('response', (r) => {
  if (r.url().startsWith(srv.url) && r.status() >= 400 && !r.url().endsWith('favicon.ico')) apiErrors.push(`${r.status()} ${r.url()}`);
});

async function runFromUi(workflow, input) {
  await page.goto(srv.url + '/'); // a fresh page: the configure panel
  await page.getByText('Select workflow...').click();
  await page.getByRole('option', { name: workflow, exact: true }).click();
  await page.locator('#raw-input').fill(input);
  const started = page.waitForResponse((r) => r.url().endsWith(`/workflows/${workflow}/run-nowait`));
  await page.getByRole('button', { name: 'Run Workflow' }).click();
  const resp = await started;
  eq(resp.status(), 200, 'run-nowait');
  return (await resp.json()).handler_id;
}

const tests = [
  ['the page loads from / and lists the workflows', async () => {
    const resp = await page.goto(srv.url + '/');
    eq(resp.status(), 200, 'GET /');
    await page.getByText('Workflow Debugger').first().waitFor();
    await page.getByText('Select workflow...').click();
    await page.getByRole('option').first().waitFor();
    const names = await page.getByRole('option').allInnerTexts();
    eq(names.sort(), ['MyWorkflow', 'approval'], 'workflows in the picker');
    await page.keyboard.press('Escape');
  }],
  ['the quick start, started from the UI, completes', async () => {
    const id = await runFromUi('MyWorkflow', '{"data": "Hello, world!"}');
    await page.getByText(id).first().waitFor();
    await page.locator('text=completed').first().waitFor();
    await page.getByText('my_step').first().waitFor(); // the graph from /representation
    await page.screenshot({ path: path.join(art, 'ui-quickstart.png') });
    const h = await (await fetch(`${srv.url}/handlers/${id}`)).json();
    eq(h.result.value.result, 'Processed 1 times, data length: 13', 'its result');
  }],
  ['human in the loop from the UI: events and the result on the page', async () => {
    const streamed = page.waitForRequest((r) => /\/events\/[A-Za-z0-9]+\?.*include_internal=true/.test(r.url()));
    const id = await runFromUi('approval', '{"item": "invoice 7"}');
    await page.getByText(id).first().waitFor();
    await page.locator('text=running').first().waitFor();
    // the UI streams the run's events (SSE, include_internal) while it runs
    assert((await streamed).url().includes(`/events/${id}?`), 'the stream of this run');
    await page.getByRole('button', { name: 'Send Event' }).click();
    const dlg = page.getByRole('dialog');
    await dlg.getByRole('combobox').click();
    await page.getByRole('option', { name: 'HumanResponseEvent' }).click();
    await dlg.locator('input, textarea').first().fill('yes');
    const sent = page.waitForResponse((r) => r.url().endsWith(`/events/${id}`) && r.request().method() === 'POST');
    await dlg.getByRole('button', { name: 'Send Event' }).click();
    eq((await sent).status(), 200, 'POST /events');
    await page.getByText('Final Result').waitFor();
    await page.getByText('invoice 7: approved').waitFor();
    await page.locator('#hide-internal').click(); // show every event
    await page.getByText('StopEvent').last().waitFor();
    const body = await page.locator('body').innerText();
    const m = body.match(/Event Stream \((\d+)\)/);
    assert(m && Number(m[1]) >= 2, 'events on the page: ' + (m && m[0]));
    assert(/StepStateChanged/.test(body), 'the internal events are listed');
    await page.screenshot({ path: path.join(art, 'ui-approval.png') });
  }],
  ['no API request of the page failed', async () => {
    eq(apiErrors, [], 'failed requests');
  }],
];

const failed = await runTap(tests);
await browser.close();
const code = await srv.stop();
if (code !== 0) {
  console.log(`# wf serve exited with ${code}: ${srv.stderr()}`);
  process.exit(1);
}
process.exit(failed ? 1 : 0);
