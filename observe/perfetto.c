/*
 * perfetto.c: Chrome / Perfetto trace event JSON.
 *
 * The file is the JSON array form ("[ {event}, {event}, ... ]") rather than
 * the {"traceEvents": [...]} object: both viewers accept an array whose
 * closing bracket is missing, so the trace of a process that crashed before
 * the observer was removed still loads. Timestamps are microseconds with
 * three decimals (exact nanoseconds) of CLOCK_MONOTONIC, like other traces
 * of the same machine.
 *
 * What is drawn (pid 1, one track per thread, tid = thread + 1, the threads
 * outside the pool on tid 0):
 *  - a complete slice ("X") per step invocation, written at its STEP_END
 *    (so begin and end can never mismatch) and starting at its STEP_START
 *    when that was seen on the same thread;
 *  - a flow arrow ("s" -> "f", id from run and event id) from the routing of an
 *    event (inside the emitting step's slice, or a small "route" anchor
 *    slice when routed from outside a step) to the invocation consuming it,
 *    written once both ends were seen, whichever came first;
 *  - a counter per step of its waiting events (the EVENT_ROUTE value);
 *  - runs (id = run id, grouped by workflow name) and waits as async slices;
 *  - identifiers in "args" (run_id, event_id, waiter) are decimal strings:
 *    JSON readers in JavaScript, jq and Perfetto's own (signed 64-bit) would
 *    change values above 2^53 or 2^63. Numbers that are quantities (ts,
 *    dur, attempt, counters) stay numbers. The "id" of flows and waits is
 *    cut to 53 bits (short_id), that of runs is the run id, an executor's
 *    counter from 1: both exact as numbers;
 *  - instants for retries, unhandled and dropped events, full streams and
 *    steals; "parked" slices while a worker sleeps.
 * Track names ("worker N", "blocking N", "outside") are metadata written at
 * the end, from the records' worker count (or, for records that have none,
 * from the threads that parked, stole or were stolen from).
 */
#include "export.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Above this much text the records' events are written without waiting for a flush. */
#define FLUSH_BYTES (64 * 1024)

/* Pending ends of flows, open runs and waits: bounded (beyond: dropped and counted). */
#define MAX_FLOWS 65536
#define MAX_RUNS  262144
#define MAX_WAITS 65536

typedef struct thr {
    int worker; /* parked, stole or was stolen from */
    int in_step;
    int64_t start_ts;
    uint64_t run_id, event_id;
    uint32_t attempt;
    const char *workflow, *step, *type; /* interned: to close an unfinished slice */
} thr;

typedef struct flow {
    int have_route, have_start;
    int64_t seen; /* the later end's time: the oldest are swept when the map is full */
    uint64_t route_tid, start_tid;
    int64_t route_ts, start_ts;
    const char *type;
} flow;

typedef struct open_run {
    int64_t ts;
    uint64_t tid;
    const char *name; /* interned workflow name: b and e must carry the same one */
} open_run;

typedef struct open_wait {
    int64_t ts;
    uint64_t tid;
    const char *type;
} open_wait;

typedef struct perfetto {
    FILE *out;
    int keep_open;
    wf__buf buf; /* events not yet written */
    int first;   /* no event written yet (no separating comma) */
    int64_t last_ts;
    uint32_t workers; /* the records' worker count (0: none said) */
    int have_ts;
    uint64_t lost; /* what could not be stored or written */
    wf__exp_pool names;
    wf__exp_map threads; /* thread -> thr */
    wf__exp_map flows;   /* (run id, event id) -> flow */
    wf__exp_map runs;    /* run id -> open_run */
    wf__exp_map waits;   /* (run id, waiter id) -> open_wait */
} perfetto;

static uint64_t tid_of(uint32_t thread)
{
    return thread == WF_OBS_OUTSIDE ? 0 : (uint64_t)thread + 1;
}

/* Microseconds with the nanoseconds as three decimals. */
static void put_us(wf__buf *b, int64_t ns)
{
    uint64_t a = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    if (ns < 0)
        wf__buf_lit(b, "-");
    wf__buf_u64(b, a / 1000);
    unsigned f = (unsigned)(a % 1000);
    char frac[4] = {'.', (char)('0' + f / 100), (char)('0' + f / 10 % 10), (char)('0' + f % 10)};
    wf__buf_append(b, frac, sizeof frac);
}

/* Opens one event object: the separator, ph, pid, tid, ts. */
static void ev_open(perfetto *p, const char *ph, uint64_t tid, int64_t ts)
{
    wf__buf *b = &p->buf;
    if (p->first)
        wf__buf_lit(b, "\n{\"ph\":\"");
    else
        wf__buf_lit(b, ",\n{\"ph\":\"");
    p->first = 0;
    wf__buf_puts(b, ph);
    wf__buf_lit(b, "\",\"pid\":1,\"tid\":");
    wf__buf_u64(b, tid);
    wf__buf_lit(b, ",\"ts\":");
    put_us(b, ts);
}

static void kv_str(wf__buf *b, const char *key, const char *val)
{
    wf__buf_lit(b, ",\"");
    wf__buf_puts(b, key);
    wf__buf_lit(b, "\":");
    wf__exp_json_str(b, val);
}

static void kv_u64(wf__buf *b, const char *key, uint64_t val)
{
    wf__buf_lit(b, ",\"");
    wf__buf_puts(b, key);
    wf__buf_lit(b, "\":");
    wf__buf_u64(b, val);
}

/* An identifier: a decimal string, exact in JavaScript and jq (numbers are doubles there). */
static void kv_id(wf__buf *b, const char *key, uint64_t val)
{
    wf__buf_lit(b, ",\"");
    wf__buf_puts(b, key);
    wf__buf_lit(b, "\":\"");
    wf__buf_u64(b, val);
    wf__buf_lit(b, "\"");
}

/* The common arguments of a record: run, workflow, step, event type. */
static void args_record(wf__buf *b, const wf_obs_record *r)
{
    wf__buf_lit(b, "\"run_id\":\"");
    wf__buf_u64(b, r->run_id);
    wf__buf_lit(b, "\"");
    if (r->workflow)
        kv_str(b, "workflow", r->workflow);
    if (r->step)
        kv_str(b, "step", r->step);
    if (r->event_type)
        kv_str(b, "event_type", r->event_type);
}

static void args_error(wf__buf *b, int32_t error, const char *message)
{
    if (error < 0) {
        kv_str(b, "error", wf_err_name(error));
        kv_str(b, "message", message ? message : wf_strerror(error));
    }
}

static thr *thread_state(perfetto *p, uint32_t thread)
{
    wf__exp_key k = wf__exp_key2(thread, 0);
    thr *t = wf__exp_map_put(&p->threads, &k, NULL);
    if (t == NULL)
        p->lost++;
    return t;
}

static void write_out(perfetto *p)
{
    if (wf__exp_write(p->out, &p->buf) < 0)
        p->lost++;
    p->buf.len = 0;
    p->buf.oom = 0;
    if (p->buf.data)
        p->buf.data[0] = 0;
}

/* A named instant on the record's thread. */
static void instant(perfetto *p, const wf_obs_record *r, const char *what, const char *name)
{
    wf__buf *b = &p->buf;
    ev_open(p, "i", tid_of(r->thread), r->ts_ns);
    wf__buf_puts(b, ",\"s\":\"t\",\"cat\":\"wf\",\"name\":\"");
    wf__exp_json_chars(b, what);
    if (name) {
        wf__buf_puts(b, " ");
        wf__exp_json_chars(b, name);
    }
    wf__buf_puts(b, "\",\"args\":{");
    args_record(b, r);
}

/*
 * The ids of flows and waits in the file. Event and waiter ids are unique
 * only while in flight (the executor derives them from addresses, which are
 * reused) and may exceed 2^53, where JavaScript readers round them; mixed
 * with the run id and cut to 53 bits they stay exact and apart across runs.
 */
static uint64_t short_id(uint64_t run_id, uint64_t id)
{
    return wf__exp_mix(wf__exp_mix(run_id) ^ id) >> 11;
}

static void flow_pair(perfetto *p, uint64_t id, const flow *f)
{
    wf__buf *b = &p->buf;
    ev_open(p, "s", f->route_tid, f->route_ts);
    wf__buf_lit(b, ",\"cat\":\"flow\",\"id\":");
    wf__buf_u64(b, id);
    wf__buf_lit(b, ",\"name\":");
    wf__exp_json_str(b, f->type ? f->type : "event");
    wf__buf_puts(b, "}");
    ev_open(p, "f", f->start_tid, f->start_ts);
    wf__buf_lit(b, ",\"bp\":\"e\",\"cat\":\"flow\",\"id\":");
    wf__buf_u64(b, id);
    wf__buf_lit(b, ",\"name\":");
    wf__exp_json_str(b, f->type ? f->type : "event");
    wf__buf_puts(b, "}");
}

/*
 * Ends that never pair (an event routed to a run that then ended, a
 * retried or resumed invocation re-reading its input) would fill the map:
 * when it is full, the older half of it goes.
 */
static void flow_sweep(perfetto *p)
{
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (size_t i = 0; i < p->flows.cap; i++) {
        flow *f = wf__exp_map_at(&p->flows, i, NULL);
        if (f) {
            lo = f->seen < lo ? f->seen : lo;
            hi = f->seen > hi ? f->seen : hi;
        }
    }
    int64_t cut = lo + (hi - lo) / 2;
    for (size_t i = 0; i < p->flows.cap;) {
        wf__exp_key k;
        flow *f = wf__exp_map_at(&p->flows, i, &k);
        /* Deleting shifts a later entry into slot i: look at it again. */
        if (f && (f->seen <= cut || lo == hi)) {
            wf__exp_map_del(&p->flows, &k);
            p->lost++;
            continue;
        }
        i++;
    }
}

/*
 * One end of a flow: pairs with the other end when that was seen (and
 * writes the arrow), else waits for it. Event id 0 means none.
 */
static void flow_end(perfetto *p, const wf_obs_record *r, int is_route)
{
    if (r->event_id == 0)
        return;
    wf__exp_key k = wf__exp_key2(r->run_id, r->event_id);
    flow *f = wf__exp_map_get(&p->flows, &k);
    if (f && (is_route ? f->have_start && !f->have_route : f->have_route && !f->have_start)) {
        flow done = *f;
        if (is_route) {
            done.route_tid = tid_of(r->thread);
            done.route_ts = r->ts_ns;
        } else {
            done.start_tid = tid_of(r->thread);
            done.start_ts = r->ts_ns;
        }
        wf__exp_map_del(&p->flows, &k);
        flow_pair(p, short_id(r->run_id, r->event_id), &done);
        return;
    }
    /* A later attempt (or a resumed invocation) re-reads an input already paired. */
    if (!is_route && r->attempt > 1)
        return;
    int created;
    f = wf__exp_map_put(&p->flows, &k, &created);
    if (f == NULL && p->flows.n >= MAX_FLOWS) {
        flow_sweep(p);
        f = wf__exp_map_put(&p->flows, &k, &created);
    }
    if (f == NULL) {
        p->lost++;
        return;
    }
    /* A second end of the same kind: the newest wins. */
    if (is_route) {
        f->have_route = 1;
        f->route_tid = tid_of(r->thread);
        f->route_ts = r->ts_ns;
    } else {
        f->have_start = 1;
        f->start_tid = tid_of(r->thread);
        f->start_ts = r->ts_ns;
    }
    f->seen = r->ts_ns;
    if (f->type == NULL)
        f->type = wf__exp_intern(&p->names, r->event_type);
}

static void step_slice(perfetto *p, const wf_obs_record *r, int64_t start, int64_t end,
                       int unfinished)
{
    wf__buf *b = &p->buf;
    ev_open(p, "X", tid_of(r->thread), start);
    wf__buf_puts(b, ",\"dur\":");
    put_us(b, end > start ? end - start : 0);
    wf__buf_puts(b, ",\"cat\":\"step\",\"name\":");
    wf__exp_json_str(b, r->step ? r->step : "step");
    wf__buf_puts(b, ",\"args\":{");
    args_record(b, r);
    kv_id(b, "event_id", r->event_id);
    kv_u64(b, "attempt", r->attempt);
    if (unfinished) {
        wf__buf_puts(b, ",\"outcome\":\"unfinished\"");
    } else {
        kv_str(b, "outcome", wf__exp_outcome(r->error));
        args_error(b, r->error, r->message);
    }
    wf__buf_puts(b, "}}");
}

static void on_step_start(perfetto *p, const wf_obs_record *r)
{
    thr *t = thread_state(p, r->thread);
    if (t) {
        t->in_step = 1;
        t->start_ts = r->ts_ns;
        t->run_id = r->run_id;
        t->event_id = r->event_id;
        t->attempt = r->attempt;
        t->workflow = wf__exp_intern(&p->names, r->workflow);
        t->step = wf__exp_intern(&p->names, r->step);
        t->type = wf__exp_intern(&p->names, r->event_type);
    }
    flow_end(p, r, 0);
}

static void on_step_end(perfetto *p, const wf_obs_record *r)
{
    thr *t = thread_state(p, r->thread);
    int64_t start = r->ts_ns - (r->dur_ns > 0 ? r->dur_ns : 0);
    /* Records of one thread arrive in order: its open step is this one, if any. */
    if (t && t->in_step && t->run_id == r->run_id && t->event_id == r->event_id &&
        t->attempt == r->attempt && t->start_ts <= r->ts_ns)
        start = t->start_ts;
    if (t)
        t->in_step = 0;
    step_slice(p, r, start, r->ts_ns, 0);
}

static void on_route(perfetto *p, const wf_obs_record *r)
{
    wf__buf *b = &p->buf;
    thr *t = thread_state(p, r->thread);
    if (t == NULL || !t->in_step) {
        /* A flow starts inside a slice: routed from outside a step, give it one. */
        ev_open(p, "X", tid_of(r->thread), r->ts_ns);
        wf__buf_puts(b, ",\"dur\":0.001,\"cat\":\"route\",\"name\":\"route\",\"args\":{");
        args_record(b, r);
        wf__buf_puts(b, "}}");
    }
    flow_end(p, r, 1);
    ev_open(p, "C", tid_of(r->thread), r->ts_ns);
    wf__buf_puts(b, ",\"name\":\"");
    if (r->workflow) {
        wf__exp_json_chars(b, r->workflow);
        wf__buf_puts(b, ".");
    }
    wf__exp_json_chars(b, r->step ? r->step : "?");
    wf__buf_lit(b, " waiting\",\"args\":{\"events\":");
    wf__buf_i64(b, r->value);
    wf__buf_lit(b, "}}");
}

/* parent_run, parent_event: a child run's parent and the parent step's event_id (or 0). */
static void run_begin(perfetto *p, uint64_t run_id, uint64_t tid, int64_t ts, const char *name,
                      uint64_t parent_run, uint64_t parent_event)
{
    wf__buf *b = &p->buf;
    ev_open(p, "b", tid, ts);
    wf__buf_printf(b, ",\"cat\":\"run\",\"id\":%" PRIu64 ",\"name\":", run_id);
    wf__exp_json_str(b, name ? name : "run");
    wf__buf_printf(b, ",\"args\":{\"run_id\":\"%" PRIu64 "\"", run_id);
    if (parent_run) {
        kv_id(b, "parent_run_id", parent_run);
        kv_id(b, "parent_event_id", parent_event);
    }
    wf__buf_puts(b, "}}");
}

static void run_finish(perfetto *p, uint64_t run_id, uint64_t tid, int64_t ts, const char *name)
{
    ev_open(p, "e", tid, ts);
    wf__buf_printf(&p->buf, ",\"cat\":\"run\",\"id\":%" PRIu64 ",\"name\":", run_id);
    wf__exp_json_str(&p->buf, name ? name : "run");
}

static void on_run_start(perfetto *p, const wf_obs_record *r)
{
    wf__exp_key k = wf__exp_key2(r->run_id, 0);
    int created;
    open_run *o = wf__exp_map_put(&p->runs, &k, &created);
    const char *name = wf__exp_intern(&p->names, r->workflow);
    if (o == NULL || (r->workflow && name == NULL)) {
        /* Without a place to remember it the run's end could not match: no slice. */
        if (o)
            wf__exp_map_del(&p->runs, &k);
        p->lost++;
        return;
    }
    if (!created) { /* the same run id twice: close the first */
        run_finish(p, r->run_id, o->tid, r->ts_ns > o->ts ? r->ts_ns : o->ts, o->name);
        wf__buf_puts(&p->buf, "}");
    }
    o->ts = r->ts_ns;
    o->tid = tid_of(r->thread);
    o->name = name;
    /* a child run: its parent's run, and the event_id of the parent step's slice */
    int child = r->value > 0 && r->event_id;
    run_begin(p, r->run_id, o->tid, r->ts_ns, name, child ? (uint64_t)r->value : 0,
              child ? r->event_id : 0);
}

static void on_run_end(perfetto *p, const wf_obs_record *r)
{
    wf__exp_key k = wf__exp_key2(r->run_id, 0);
    open_run *o = wf__exp_map_get(&p->runs, &k);
    open_run run;
    if (o) {
        run = *o;
        wf__exp_map_del(&p->runs, &k);
    } else {
        /* Started before the observer came (or not stored): begin it dur_ns ago. */
        run.tid = tid_of(r->thread);
        run.ts = r->ts_ns - (r->dur_ns > 0 ? r->dur_ns : 0);
        run.name = r->workflow;
        run_begin(p, r->run_id, run.tid, run.ts, run.name, 0, 0);
    }
    wf__buf *b = &p->buf;
    /* Never end before the begin (a slice of negative length confuses the viewers). */
    run_finish(p, r->run_id, run.tid, r->ts_ns > run.ts ? r->ts_ns : run.ts, run.name);
    wf__buf_puts(b, ",\"args\":{");
    args_record(b, r);
    kv_str(b, "status", wf__exp_status_name(r->status));
    args_error(b, r->error, r->message);
    wf__buf_puts(b, "}}");
}

static void wait_event(perfetto *p, const char *ph, uint64_t id, uint64_t tid, int64_t ts,
                       const char *type)
{
    wf__buf *b = &p->buf;
    ev_open(p, ph, tid, ts);
    wf__buf_printf(b, ",\"cat\":\"wait\",\"id\":%" PRIu64 ",\"name\":\"wait ", id);
    wf__exp_json_chars(b, type ? type : "event");
    wf__buf_puts(b, "\"");
}

static void on_wait_suspend(perfetto *p, const wf_obs_record *r)
{
    wf__exp_key k = wf__exp_key2(r->run_id, r->event_id);
    int created;
    open_wait *w = wf__exp_map_put(&p->waits, &k, &created);
    const char *type = wf__exp_intern(&p->names, r->event_type);
    if (w == NULL || (r->event_type && type == NULL)) {
        if (w)
            wf__exp_map_del(&p->waits, &k);
        p->lost++;
        return;
    }
    uint64_t id = short_id(r->run_id, r->event_id);
    if (!created) {
        wait_event(p, "e", id, w->tid, r->ts_ns > w->ts ? r->ts_ns : w->ts, w->type);
        wf__buf_puts(&p->buf, "}");
    }
    w->ts = r->ts_ns;
    w->tid = tid_of(r->thread);
    w->type = type;
    wait_event(p, "b", id, w->tid, r->ts_ns, type);
    wf__buf_puts(&p->buf, ",\"args\":{");
    args_record(&p->buf, r);
    kv_id(&p->buf, "waiter", r->event_id);
    wf__buf_puts(&p->buf, "}}");
}

static void on_wait_resume(perfetto *p, const wf_obs_record *r)
{
    wf__exp_key k = wf__exp_key2(r->run_id, r->event_id);
    open_wait *o = wf__exp_map_get(&p->waits, &k);
    open_wait w;
    uint64_t id = short_id(r->run_id, r->event_id);
    if (o) {
        w = *o;
        wf__exp_map_del(&p->waits, &k);
    } else {
        w.tid = tid_of(r->thread);
        w.ts = r->ts_ns - (r->dur_ns > 0 ? r->dur_ns : 0);
        w.type = r->event_type;
        wait_event(p, "b", id, w.tid, w.ts, w.type);
        wf__buf_puts(&p->buf, "}");
    }
    wait_event(p, "e", id, w.tid, r->ts_ns > w.ts ? r->ts_ns : w.ts, w.type);
    wf__buf_puts(&p->buf, ",\"args\":{");
    args_record(&p->buf, r);
    kv_str(&p->buf, "outcome", r->error ? "failed" : "resumed");
    args_error(&p->buf, r->error, r->message);
    wf__buf_puts(&p->buf, "}}");
}

static void perfetto_record(const wf_obs_record *r, void *user)
{
    perfetto *p = user;
    wf__buf *b = &p->buf;
    size_t len0 = b->len;
    int first0 = p->first;
    if (r->workers)
        p->workers = r->workers;
    if (!p->have_ts || r->ts_ns > p->last_ts) {
        p->last_ts = r->ts_ns;
        p->have_ts = 1;
    }
    thr *t;
    switch (r->kind) {
    case WF_OBS_RUN_START:
        on_run_start(p, r);
        break;
    case WF_OBS_RUN_END:
        on_run_end(p, r);
        break;
    case WF_OBS_STEP_START:
        on_step_start(p, r);
        break;
    case WF_OBS_STEP_END:
        on_step_end(p, r);
        break;
    case WF_OBS_EVENT_ROUTE:
        on_route(p, r);
        break;
    case WF_OBS_EVENT_DROP:
        instant(p, r, "dropped", r->event_type);
        wf__buf_puts(b, "}}");
        break;
    case WF_OBS_EVENT_UNHANDLED:
        instant(p, r, "unhandled", r->event_type);
        wf__buf_puts(b, "}}");
        break;
    case WF_OBS_STREAM_WRITE:
        if (r->value == 1) {
            instant(p, r, "stream full, dropped", r->event_type);
            wf__buf_puts(b, "}}");
        }
        break;
    case WF_OBS_WAIT_SUSPEND:
        on_wait_suspend(p, r);
        break;
    case WF_OBS_WAIT_RESUME:
        on_wait_resume(p, r);
        break;
    case WF_OBS_RETRY:
        instant(p, r, "retry", r->step);
        kv_u64(b, "attempt", r->attempt);
        args_error(b, r->error, r->message);
        wf__buf_printf(b, ",\"delay_ms\":%" PRId64 "}}", r->value);
        break;
    case WF_OBS_STEAL:
        if ((t = thread_state(p, r->thread)) != NULL)
            t->worker = 1;
        if ((t = thread_state(p, r->victim)) != NULL)
            t->worker = 1;
        ev_open(p, "i", tid_of(r->thread), r->ts_ns);
        wf__buf_printf(b,
                       ",\"s\":\"t\",\"cat\":\"sched\",\"name\":\"steal\",\"args\":{\"victim\":%u,"
                       "\"tasks\":%" PRId64 "}}",
                       (unsigned)r->victim, r->value);
        break;
    case WF_OBS_PARK:
        if ((t = thread_state(p, r->thread)) != NULL)
            t->worker = 1;
        break;
    case WF_OBS_UNPARK:
        if ((t = thread_state(p, r->thread)) != NULL)
            t->worker = 1;
        ev_open(p, "X", tid_of(r->thread), r->ts_ns - (r->dur_ns > 0 ? r->dur_ns : 0));
        wf__buf_puts(b, ",\"dur\":");
        put_us(b, r->dur_ns > 0 ? r->dur_ns : 0);
        wf__buf_puts(b, ",\"cat\":\"sched\",\"name\":\"parked\"}");
        break;
    default: /* EVENT_EMIT: the flows show where events went; unknown kinds */
        break;
    }
    if (b->oom) {
        /* Keep the file valid JSON: this record's events go, whole. */
        b->oom = 0;
        b->len = len0;
        if (b->data)
            b->data[len0] = 0;
        p->first = first0;
        p->lost++;
    }
    if (b->len >= FLUSH_BYTES)
        write_out(p);
}

static void perfetto_flush(void *user)
{
    perfetto *p = user;
    write_out(p);
    if (p->out)
        fflush(p->out);
}

static void thread_name(perfetto *p, uint64_t tid, const char *fmt, uint64_t n)
{
    ev_open(p, "M", tid, 0);
    wf__buf_puts(&p->buf, ",\"name\":\"thread_name\",\"args\":{\"name\":\"");
    wf__buf_printf(&p->buf, fmt, n);
    wf__buf_puts(&p->buf, "\"}}");
    ev_open(p, "M", tid, 0);
    wf__buf_printf(&p->buf,
                   ",\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":%" PRIu64 "}}", tid);
}

/* Closes what is still open at the last time seen, names the tracks, ends the array. */
static void perfetto_finish(perfetto *p)
{
    int64_t end = p->last_ts;
    wf__exp_key k;
    uint32_t workers = 0;
    for (size_t i = 0; i < p->threads.cap; i++) {
        thr *t = wf__exp_map_at(&p->threads, i, &k);
        if (t == NULL)
            continue;
        if (t->in_step) {
            wf_obs_record r = {.kind = WF_OBS_STEP_END,
                               .thread = (uint32_t)k.k[0],
                               .run_id = t->run_id,
                               .event_id = t->event_id,
                               .attempt = t->attempt,
                               .workflow = t->workflow,
                               .step = t->step,
                               .event_type = t->type};
            step_slice(p, &r, t->start_ts, end, 1);
        }
        if (t->worker && k.k[0] != WF_OBS_OUTSIDE && k.k[0] + 1 > workers)
            workers = (uint32_t)k.k[0] + 1;
    }
    for (size_t i = 0; i < p->runs.cap; i++) {
        open_run *o = wf__exp_map_at(&p->runs, i, &k);
        if (o == NULL)
            continue;
        run_finish(p, k.k[0], o->tid, end > o->ts ? end : o->ts, o->name);
        wf__buf_puts(&p->buf, ",\"args\":{\"status\":\"unfinished\"}}");
    }
    for (size_t i = 0; i < p->waits.cap; i++) {
        open_wait *w = wf__exp_map_at(&p->waits, i, &k);
        if (w == NULL)
            continue;
        wait_event(p, "e", short_id(k.k[0], k.k[1]), w->tid, end > w->ts ? end : w->ts, w->type);
        wf__buf_puts(&p->buf, ",\"args\":{\"outcome\":\"unfinished\"}}");
    }
    if (p->workers)
        workers = p->workers;
    ev_open(p, "M", 0, 0);
    wf__buf_puts(&p->buf, ",\"name\":\"process_name\",\"args\":{\"name\":\"wf\"}}");
    thread_name(p, 0, "outside", 0);
    for (size_t i = 0; i < p->threads.cap; i++) {
        thr *t = wf__exp_map_at(&p->threads, i, &k);
        if (t == NULL || k.k[0] == WF_OBS_OUTSIDE)
            continue;
        uint64_t th = k.k[0];
        if (workers == 0)
            thread_name(p, th + 1, "thread %" PRIu64, th);
        else if (th < workers)
            thread_name(p, th + 1, "worker %" PRIu64, th);
        else
            thread_name(p, th + 1, "blocking %" PRIu64, th - workers);
    }
    if (p->lost) {
        ev_open(p, "i", 0, end);
        wf__buf_printf(
            &p->buf,
            ",\"s\":\"g\",\"name\":\"exporter lost records\",\"args\":{\"count\":%" PRIu64 "}}",
            p->lost);
    }
    wf__buf_puts(&p->buf, "\n]\n");
    write_out(p);
}

static void perfetto_free(void *user)
{
    perfetto *p = user;
    perfetto_finish(p);
    wf__exp_close(p->out, p->keep_open);
    wf__buf_free(&p->buf);
    wf__exp_pool_free(&p->names);
    wf__exp_map_free(&p->threads);
    wf__exp_map_free(&p->flows);
    wf__exp_map_free(&p->runs);
    wf__exp_map_free(&p->waits);
    wf__free_mem(p);
}

int wf_exporter_perfetto(wf_observer *out, const wf_exporter_params *params)
{
    if (out == NULL || params == NULL || params->out == NULL) {
        if (params)
            wf__exp_close(params->out, params->keep_open); /* taken over even when refused */
        return WF_EINVAL;
    }
    memset(out, 0, sizeof *out);
    perfetto *p = wf__calloc(1, sizeof *p);
    if (p == NULL) {
        wf__exp_close(params->out, params->keep_open);
        return WF_ENOMEM;
    }
    p->out = params->out;
    p->keep_open = params->keep_open;
    p->first = 1;
    /*
     * The text buffer is allocated once, at its full size (it is written out
     * past FLUSH_BYTES): appending then only fails for a record whose own
     * text is huge.
     */
    wf__buf_init(&p->buf);
    p->buf.cap = 2 * FLUSH_BYTES;
    p->buf.data = wf__malloc(p->buf.cap);
    if (p->buf.data == NULL) {
        wf__free_mem(p);
        wf__exp_close(params->out, params->keep_open);
        return WF_ENOMEM;
    }
    p->buf.data[0] = 0;
    wf__exp_map_init(&p->threads, sizeof(thr), 0);
    wf__exp_map_init(&p->flows, sizeof(flow), MAX_FLOWS);
    wf__exp_map_init(&p->runs, sizeof(open_run), MAX_RUNS);
    wf__exp_map_init(&p->waits, sizeof(open_wait), MAX_WAITS);
    /* The opening bracket now: a trace cut short by a crash still loads. */
    wf__buf_puts(&p->buf, "[");
    write_out(p);
    out->record = perfetto_record;
    out->flush = perfetto_flush;
    out->user_free = perfetto_free;
    out->user = p;
    out->kinds = WF_OBS_ALL & ~WF_OBS_BIT(WF_OBS_EVENT_EMIT);
    return 0;
}
