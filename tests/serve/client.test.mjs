// The official TypeScript client (@llamaindex/workflows-client) drives
// `wf serve`: list workflows, run and wait, run-nowait then stream events
// and fetch the result, answer a human-in-the-loop request, cancel a run,
// read handlers. TAP on stdout; exit 77 when the npm package is missing.
import { startServer, runTap, assert, eq, npmRequire, SKIP } from './lib.mjs';

const wc = npmRequire('@llamaindex/workflows-client');
if (!wc || !process.env.WF) {
  console.log('1..0 # SKIP @llamaindex/workflows-client is not installed (scripts/test installs it)');
  process.exit(SKIP);
}

const srv = await startServer();
const client = wc.createClient(wc.createConfig({ baseUrl: srv.url }));
const QS = 'MyWorkflow';

// Reads an SSE stream of the client until the StopEvent (or a StopEvent subtype).
async function collect(handler_id, query = {}, onEvent = async () => {}) {
  const { stream } = await wc.getEventsByHandlerId({
    client, path: { handler_id }, query: { after_sequence: -1, ...query }, sseMaxRetryAttempts: 1,
  });
  const events = [];
  for await (const ev of stream) {
    events.push(ev);
    await onEvent(ev);
    if (ev.type === 'StopEvent' || (ev.types || []).includes('StopEvent')) break;
    if (events.length > 1000) throw new Error('too many events');
  }
  return events;
}

const tests = [
  ['health', async () => {
    const r = await wc.getHealth({ client });
    eq(r.data, { status: 'healthy' }, 'health');
  }],
  ['list workflows', async () => {
    const r = await wc.getWorkflows({ client });
    eq(r.data.workflows.sort(), [QS, 'approval'].sort(), 'workflows');
  }],
  ['run and wait', async () => {
    const r = await wc.postWorkflowsByNameRun({ client, path: { name: QS }, body: { start_event: { data: 'Hello' } } });
    eq(r.response.status, 200, 'status code');
    eq(r.data.status, 'completed', 'status');
    eq(r.data.workflow_name, QS, 'workflow_name');
    assert(/^[A-Za-z0-9]{10}$/.test(r.data.handler_id), 'handler_id is a 10-character nanoid: ' + r.data.handler_id);
    eq(r.data.result.type, 'StopEvent', 'result type');
    assert(/data length: 5$/.test(r.data.result.value.result), 'result: ' + JSON.stringify(r.data.result));
    assert(r.data.completed_at && r.data.started_at, 'timestamps');
  }],
  ['run-nowait, stream events (SSE), fetch the result', async () => {
    const r = await wc.postWorkflowsByNameRunNowait({ client, path: { name: QS }, body: { start_event: { data: 'abc' } } });
    eq(r.response.status, 200, 'status code');
    const id = r.data.handler_id;
    const events = await collect(id);
    const last = events[events.length - 1];
    eq(last.type, 'StopEvent', 'last event');
    assert(!events.some((e) => (e.types || []).includes('InternalDispatchEvent')), 'no internal events unless asked');
    const h = await wc.getHandlersByHandlerId({ client, path: { handler_id: id } });
    eq(h.response.status, 200, 'GET /handlers/{id}');
    eq(h.data.status, 'completed', 'status');
    const res = await wc.getResultsByHandlerId({ client, path: { handler_id: id } });
    assert(/data length: 3$/.test(res.data.result), 'GET /results: ' + JSON.stringify(res.data));
  }],
  ['stream with internal events (NDJSON)', async () => {
    const r = await wc.postWorkflowsByNameRun({ client, path: { name: QS }, body: { start_event: { data: 'x' } } });
    const resp = await fetch(`${srv.url}/events/${r.data.handler_id}?sse=false&include_internal=true&after_sequence=-1`);
    eq(resp.status, 200, 'status');
    assert(resp.headers.get('content-type').startsWith('application/x-ndjson'), 'content type');
    const lines = (await resp.text()).trim().split('\n').map((l) => JSON.parse(l));
    assert(lines.some((e) => e.type === 'StepStateChanged' && e.value.step_state === 'running'), 'StepStateChanged');
    eq(lines[lines.length - 1].type, 'StopEvent', 'last');
    assert(lines.every((e) => typeof e.qualified_name === 'string' && e.qualified_name.endsWith('.' + e.type)),
      'qualified_name by default');
    // the same log again, without qualified names (each event formatted as it is sent)
    const bare = await fetch(`${srv.url}/events/${r.data.handler_id}?sse=false&include_internal=true&after_sequence=-1&include_qualified_name=false`);
    const blines = (await bare.text()).trim().split('\n').map((l) => JSON.parse(l));
    eq(blines.length, lines.length, 'same events');
    blines.forEach((e, i) => {
      eq(e.qualified_name, null, 'include_qualified_name=false');
      eq({ ...e, qualified_name: lines[i].qualified_name }, lines[i], 'otherwise the same envelope');
    });
    const again = await fetch(`${srv.url}/events/${r.data.handler_id}?sse=false&after_sequence=${lines.length + 100}`);
    eq(again.status, 204, 'read to the end: 204');
  }],
  ['POST /run runs the first step on its HTTP thread; --steps-on-workers on a worker', async () => {
    const workerIds = async (url) => {
      const r = await fetch(`${url}/workflows/${QS}/run`, { method: 'POST', body: JSON.stringify({ start_event: { data: 'w' } }) });
      eq(r.status, 200, 'POST /run');
      const id = (await r.json()).handler_id;
      const e = await fetch(`${url}/events/${id}?sse=false&include_internal=true&after_sequence=-1`);
      return (await e.text()).trim().split('\n').map((l) => JSON.parse(l))
        .filter((x) => x.type === 'StepStateChanged' && x.value.step_state === 'running')
        .map((x) => x.value.worker_id);
    };
    eq(await workerIds(srv.url), ['outside'], 'the HTTP thread ran it (not a worker of the pool)');
    const other = await startServer(['--steps-on-workers']);
    try {
      const ids = await workerIds(other.url);
      eq(ids.length, 1, 'one step');
      assert(/^worker \d+$/.test(ids[0]), 'a worker ran it: ' + ids[0]);
    } finally {
      await other.stop();
    }
  }],
  ['a run body read without a tree gives what the general path gives', async () => {
    // {"start_event": FLAT} is read by flat.c (yajl), any other body by jansson:
    // the same start event either way, and a body flat.c must not take still works.
    const post = async (body) => {
      const r = await fetch(`${srv.url}/workflows/${QS}/run`, { method: 'POST', body });
      return [r.status, await r.json()];
    };
    const datas = ['ab', 'tab\there', 'quote " and \\ backslash', 'A\u0042C', 'x'.repeat(3000), ''];
    for (const d of datas) {
      const flat = `{"start_event": {"data": ${JSON.stringify(d)}}}`;
      const spaced = `\n { "start_event" :  {"data":${JSON.stringify(d)}}  }\n`;
      const asString = JSON.stringify({ start_event: JSON.stringify({ data: d }) });
      const results = [];
      for (const body of [flat, spaced, asString]) {
        const [st, h] = await post(body);
        eq(st, 200, 'status of ' + body.slice(0, 40));
        results.push(h.result.value.result);
      }
      eq(results[1], results[0], 'spaced body, data ' + JSON.stringify(d).slice(0, 30));
      eq(results[2], results[0], 'start_event as a string, data ' + JSON.stringify(d).slice(0, 30));
      eq(results[0], `Processed 1 times, data length: ${d.length}`, 'the data as sent');
    }
    // members after start_event: not flat.c's; the handler id is honoured
    const [st, h] = await post('{"start_event": {"data": "abc"}, "handler_id": "flatfallback1"}');
    eq(st, 200, 'status');
    eq(h.handler_id, 'flatfallback1', 'handler_id after start_event');
    eq(h.result.value.result, 'Processed 1 times, data length: 3', 'its result');
    // a start event the step refuses: the same failure through either path
    const [fst, fbad] = await post('{"start_event": {"data": 5}}');
    const [gst, gbad] = await post(JSON.stringify({ start_event: '{"data": 5}' }));
    eq([fst, fbad.status], [500, 'failed'], 'the step refuses it');
    eq([gst, gbad.status, gbad.error], [fst, fbad.status, fbad.error], 'as the general path');
  }],
  ['human in the loop: answer an InputRequiredEvent', async () => {
    const r = await wc.postWorkflowsByNameRunNowait({ client, path: { name: 'approval' }, body: { start_event: { item: 'invoice 7' } } });
    const id = r.data.handler_id;
    let asked = null;
    const events = await collect(id, {}, async (ev) => {
      if (ev.type === 'InputRequiredEvent') {
        asked = ev.value.prefix;
        const s = await wc.postEventsByHandlerId({
          client, path: { handler_id: id },
          body: { event: { type: 'HumanResponseEvent', value: { response: 'yes' } } },
        });
        eq(s.data, { status: 'sent' }, 'send');
      }
    });
    eq(asked, 'Approve invoice 7?', 'the question');
    eq(events[events.length - 1].value.result, 'invoice 7: approved', 'result');
    const h = await wc.getHandlersByHandlerId({ client, path: { handler_id: id } });
    eq(h.data.status, 'completed', 'status');
    const late = await wc.postEventsByHandlerId({ client, path: { handler_id: id },
      body: { event: { type: 'HumanResponseEvent', value: { response: 'no' } } } });
    eq(late.response.status, 409, 'an event for an ended run');
  }],
  ['a streamed StopEvent comes with the final status', async () => {
    // the handler a client asks for right after reading the StopEvent has ended
    // (the server hands the stop event out only once the status is set)
    for (let i = 0; i < 500; i++) {
      const r = await wc.postWorkflowsByNameRunNowait({ client, path: { name: QS }, body: { start_event: { data: 'x'.repeat(i) } } });
      const id = r.data.handler_id;
      const events = await collect(id);
      eq(events[events.length - 1].type, 'StopEvent', 'last event');
      const h = await wc.getHandlersByHandlerId({ client, path: { handler_id: id } });
      eq([i, h.data.status], [i, 'completed'], 'status after the StopEvent');
      eq(h.data.result.value.result, `Processed 1 times, data length: ${i}`, 'result');
    }
  }],
  ['cancel a run', async () => {
    const r = await wc.postWorkflowsByNameRunNowait({ client, path: { name: 'approval' }, body: { start_event: { item: 'x' } } });
    const id = r.data.handler_id;
    const c = await wc.postHandlersByHandlerIdCancel({ client, path: { handler_id: id } });
    eq(c.data, { status: 'cancelled' }, 'cancel');
    const events = await collect(id);
    eq(events[events.length - 1].type, 'WorkflowCancelledEvent', 'last event');
    const h = await wc.getHandlersByHandlerId({ client, path: { handler_id: id } });
    eq(h.response.status, 500, 'a cancelled handler answers 500, as the reference');
    eq(h.error.status, 'cancelled', 'status');
    const p = await wc.postHandlersByHandlerIdCancel({ client, path: { handler_id: id }, query: { purge: true } });
    eq(p.data, { status: 'deleted' }, 'purge');
    const gone = await wc.getHandlersByHandlerId({ client, path: { handler_id: id } });
    eq(gone.response.status, 404, 'purged');
  }],
  ['read handlers, filtered', async () => {
    const r = await wc.postWorkflowsByNameRunNowait({ client, path: { name: 'approval' }, body: { start_event: { item: 'y' } } });
    const all = await wc.getHandlers({ client });
    assert(all.data.handlers.length >= 4, 'handlers: ' + all.data.handlers.length);
    const running = await wc.getHandlers({ client, query: { status: ['running'], workflow_name: ['approval'] } });
    assert(running.data.handlers.some((h) => h.handler_id === r.data.handler_id), 'the running one is listed');
    assert(running.data.handlers.every((h) => h.status === 'running' && h.workflow_name === 'approval'), 'filtered');
    await wc.postHandlersByHandlerIdCancel({ client, path: { handler_id: r.data.handler_id } });
  }],
  ['schema, representation, events of a workflow', async () => {
    const s = await wc.getWorkflowsByNameSchema({ client, path: { name: QS } });
    eq([s.data.start.title, s.data.stop.title], ['StartEvent', 'StopEvent'], 'schema');
    const g = await wc.getWorkflowsByNameRepresentation({ client, path: { name: QS } });
    assert(g.data.graph.nodes.some((n) => n.node_type === 'step'), 'step nodes');
    assert(g.data.graph.edges.length > 0, 'edges');
    const e = await wc.getWorkflowsByNameEvents({ client, path: { name: 'approval' } });
    assert(e.data.events.some((x) => x.title === 'HumanResponseEvent'), 'events');
    const nf = await wc.getWorkflowsByNameSchema({ client, path: { name: 'nope' } });
    eq(nf.response.status, 404, 'unknown workflow');
  }],
];

const failed = await runTap(tests);
const code = await srv.stop();
if (code !== 0) {
  console.log(`# wf serve exited with ${code}: ${srv.stderr()}`);
  process.exit(1);
}
process.exit(failed ? 1 : 0);
