/*
 * otlp.c: OpenTelemetry spans as OTLP/JSON lines (the file format of the
 * Collector's otlpjsonfile receiver and file exporter): one TracesData
 * object per line.
 *
 * A run is a root span, each step invocation a child span of it. Ids:
 * the trace id of a run is derived from its run id and a random seed drawn
 * per exporter (run ids restart with every executor; the seed keeps traces
 * of two processes apart), and so is the run's span id, so a step span can
 * name its parent before, or without, the run's records being seen. A step
 * span is written when the invocation ends, the run span when the run ends,
 * several spans per line: a line is written at each flush and whenever 256
 * spans are pending. Retries, unhandled and dropped events are span events
 * of the run span (a retry is known once the failed attempt's span may
 * already be written).
 *
 * OTLP/JSON spells trace and span ids as lowercase hex, 64-bit integers
 * (times included) as decimal strings, enums as integers. Receivers turn an
 * intValue attribute back into a number (a double in JavaScript), so
 * identifiers (wf.run_id) are stringValue attributes: exact everywhere.
 * Quantities (wf.attempt, wf.delay_ms) stay intValue.
 *
 * Standard attributes (OpenTelemetry semantic conventions): the resource
 * has service.name (params->service_name, default "wf"), service.version
 * (params->service_version, when given), telemetry.sdk.name "wf" and
 * telemetry.sdk.version; a failed span has error.type (the WF_E* name, or
 * the decimal code of a step's own code) and status ERROR with the message;
 * other spans leave the status unset, as the conventions ask of
 * instrumentation.
 */
#include "export.h"
#include "otlp.h"

#include <inttypes.h>
#include <string.h>

#define MAX_SPANS_PER_LINE 256
#define MAX_RUNS           262144
#define MAX_RUN_EVENTS     128

#define MAX_CHILDREN    8 /* open child spans per invocation (beyond: dropped, counted) */
#define MAX_CHILD_ATTRS 8

/* A step's own child span (WF_OBS_SPAN_*), open on its thread. */
typedef struct otlp_child {
    uint32_t num, parent; /* numbers within the invocation; parent 0: the step's span */
    uint64_t id;
    int64_t start_ts;
    const char *name; /* interned */
    wf__otlp_attr attrs[MAX_CHILD_ATTRS];
    char *owned[MAX_CHILD_ATTRS]; /* string values, copied */
    uint32_t n_attrs;
} otlp_child;

typedef struct otlp_thr {
    int in_step;
    int64_t start_ts;
    uint64_t run_id, event_id;
    uint32_t attempt;
    uint64_t span_id; /* of the open step, given at its STEP_START (its children's parent) */
    const char *workflow, *step, *type; /* interned */
    otlp_child kids[MAX_CHILDREN];
    uint32_t n_kids;
    /*
     * The invocation that ended last on this thread: a child run's RUN_START
     * (written by its parent's step, on its thread) may come after that
     * step's end (a step that starts a child returns at once, and its start
     * and end may reach the exporter as one record).
     */
    uint64_t last_run_id, last_event_id, last_span_id;
} otlp_thr;

typedef struct otlp_run {
    int joined;        /* a traceparent gave trace and parent */
    uint64_t trace[2]; /* when joined */
    uint64_t parent;   /* the caller's span, the run span's parent (when joined) */
    int have_start;
    int64_t start_ts;
    const char *workflow;   /* interned */
    wf__otlp_event *events; /* owned */
    uint32_t n_events, cap_events;
    uint32_t dropped_events;
} otlp_run;

typedef struct otlp {
    FILE *out;
    int keep_open;
    char *service;
    uint64_t seed[2];
    uint64_t next_span;
    int64_t offset;  /* CLOCK_MONOTONIC -> Unix time */
    int64_t last_ts; /* the latest time seen: ends what never ended */
    int have_ts;
    wf__buf head, tail; /* of a line, around its spans */
    wf__buf spans;      /* pending spans, comma-separated */
    uint32_t n_spans;
    uint64_t lost;
    wf__exp_pool names;
    wf__exp_map runs;    /* run id -> otlp_run */
    wf__exp_map threads; /* thread -> otlp_thr */
    char *service_version;
    wf__otlp_attr res[4]; /* the resource's attributes */
    uint32_t n_res;
    /* wf_exporter_otlp_proto: encoded spans waiting for a request, and its sender */
    int has_sender;
    wf_otlp_sender sender;
    wf__buf pb, req;
    uint32_t n_pb;
} otlp;

/* ------------------------------------------------------------ ids */

void wf__otlp_trace_id(const uint64_t seed[2], uint64_t run_id, uint64_t out[2])
{
    out[0] = wf__exp_mix(seed[0] ^ wf__exp_mix(run_id));
    out[1] = wf__exp_mix(seed[1] ^ run_id);
    if ((out[0] | out[1]) == 0) /* the all-zero id is invalid */
        out[1] = 1;
}

uint64_t wf__otlp_run_span_id(const uint64_t seed[2], uint64_t run_id)
{
    uint64_t id = wf__exp_mix(seed[1] + wf__exp_mix(run_id ^ seed[0]));
    return id ? id : 1;
}

static int hex_word(const char *s, int digits, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1; /* W3C: lowercase hex only */
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

int wf__otlp_traceparent(const char *tp, uint64_t trace[2], uint64_t *parent)
{
    /* version "-" trace-id (32) "-" parent-id (16) "-" flags (2): 55 characters for version 00 */
    size_t n = strlen(tp);
    uint64_t version, flags;
    if (n < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || hex_word(tp, 2, &version) < 0 ||
        version == 0xff || (version == 0 && n != 55) || (n > 55 && tp[55] != '-') ||
        hex_word(tp + 3, 16, &trace[0]) < 0 || hex_word(tp + 19, 16, &trace[1]) < 0 ||
        hex_word(tp + 36, 16, parent) < 0 || hex_word(tp + 53, 2, &flags) < 0)
        return WF_EINVAL;
    if ((trace[0] | trace[1]) == 0 || *parent == 0)
        return WF_EINVAL; /* all-zero ids are invalid */
    return 0;
}

static uint64_t step_span_id(otlp *o)
{
    uint64_t id = wf__exp_mix(o->seed[0] + 0x632be59bd9b4e019ull * ++o->next_span);
    return id ? id : 1;
}

static uint64_t unix_ns(const otlp *o, int64_t mono)
{
    int64_t t = mono + o->offset;
    return t > 0 ? (uint64_t)t : 0;
}

/* ---------------------------------------------------------- JSON */

static void hex(wf__buf *b, uint64_t x)
{
    static const char digits[] = "0123456789abcdef";
    char t[16];
    for (int i = 15; i >= 0; i--, x >>= 4)
        t[i] = digits[x & 15];
    wf__buf_append(b, t, sizeof t);
}

static void json_attr(wf__buf *b, const wf__otlp_attr *a, int first)
{
    wf__buf_puts(b, first ? "{\"key\":" : ",{\"key\":");
    wf__exp_json_str(b, a->key);
    if (a->is_int) {
        wf__buf_lit(b, ",\"value\":{\"intValue\":\"");
        wf__buf_i64(b, a->i);
        wf__buf_lit(b, "\"}}");
    } else {
        wf__buf_puts(b, ",\"value\":{\"stringValue\":");
        wf__exp_json_str(b, a->s);
        wf__buf_puts(b, "}}");
    }
}

static void json_attrs(wf__buf *b, const wf__otlp_attr *a, uint32_t n)
{
    wf__buf_puts(b, "\"attributes\":[");
    for (uint32_t i = 0; i < n; i++)
        json_attr(b, &a[i], i == 0);
    wf__buf_puts(b, "]");
}

void wf__otlp_span_json(wf__buf *b, const wf__otlp_span *s)
{
    wf__buf_puts(b, "{\"traceId\":\"");
    hex(b, s->trace_id[0]);
    hex(b, s->trace_id[1]);
    wf__buf_puts(b, "\",\"spanId\":\"");
    hex(b, s->span_id);
    wf__buf_puts(b, "\"");
    if (s->parent_id) {
        wf__buf_puts(b, ",\"parentSpanId\":\"");
        hex(b, s->parent_id);
        wf__buf_puts(b, "\"");
    }
    wf__buf_puts(b, ",\"name\":");
    wf__exp_json_str(b, s->name);
    /* SPAN_KIND_INTERNAL: work inside the process. */
    wf__buf_lit(b, ",\"kind\":1,\"startTimeUnixNano\":\"");
    wf__buf_u64(b, s->start_ns);
    wf__buf_lit(b, "\",\"endTimeUnixNano\":\"");
    wf__buf_u64(b, s->end_ns);
    wf__buf_lit(b, "\",");
    json_attrs(b, s->attrs, s->n_attrs);
    if (s->n_events) {
        wf__buf_puts(b, ",\"events\":[");
        for (uint32_t i = 0; i < s->n_events; i++) {
            const wf__otlp_event *e = &s->events[i];
            wf__buf_puts(b, i ? ",{\"timeUnixNano\":\"" : "{\"timeUnixNano\":\"");
            wf__buf_u64(b, e->time_ns);
            wf__buf_lit(b, "\",\"name\":");
            wf__exp_json_str(b, e->name);
            wf__buf_puts(b, ",");
            json_attrs(b, e->attrs, e->n_attrs);
            wf__buf_puts(b, "}");
        }
        wf__buf_puts(b, "]");
    }
    if (s->dropped_events)
        wf__buf_printf(b, ",\"droppedEventsCount\":%u", (unsigned)s->dropped_events);
    if (s->status_code) {
        wf__buf_printf(b, ",\"status\":{\"code\":%d", s->status_code);
        if (s->status_message) {
            wf__buf_puts(b, ",\"message\":");
            wf__exp_json_str(b, s->status_message);
        }
        wf__buf_puts(b, "}");
    }
    wf__buf_puts(b, "}");
}

/* Writes the pending spans as one line. */
static void write_line(otlp *o)
{
    if (o->n_spans == 0)
        return;
    if (o->out) {
        if (wf__exp_write(o->out, &o->head) < 0 || wf__exp_write(o->out, &o->spans) < 0 ||
            wf__exp_write(o->out, &o->tail) < 0)
            o->lost += o->n_spans;
    }
    o->spans.len = 0;
    o->spans.data[0] = 0;
    o->n_spans = 0;
}

/* Hands the pending protobuf spans to the sender as one request. */
static void send_pb(otlp *o)
{
    if (o->n_pb == 0)
        return;
    o->req.len = 0;
    o->req.oom = 0;
    wf__otlp_request_pb(&o->req, o->res, o->n_res, &o->pb);
    if (o->req.oom || o->sender.send(o->req.data, o->req.len, o->n_pb, o->sender.user) < 0)
        o->lost += o->n_pb;
    o->pb.len = 0;
    o->n_pb = 0;
    /* A big request's buffer is not kept for the next one. */
    if (o->req.cap > (1u << 20)) {
        wf__buf_free(&o->req);
        wf__buf_init(&o->req);
    }
}

static void emit_span(otlp *o, const wf__otlp_span *s)
{
    if (o->has_sender) {
        size_t len0 = o->pb.len;
        wf__otlp_span_pb(&o->pb, s);
        if (o->pb.oom) {
            o->pb.oom = 0;
            o->pb.len = len0;
            o->lost++;
        } else if (++o->n_pb >= MAX_SPANS_PER_LINE) {
            send_pb(o);
        }
    }
    if (o->out == NULL)
        return;
    size_t len0 = o->spans.len;
    if (o->n_spans)
        wf__buf_puts(&o->spans, ",");
    wf__otlp_span_json(&o->spans, s);
    if (o->spans.oom) {
        /* This span goes, whole; the line stays valid. */
        o->spans.oom = 0;
        o->spans.len = len0;
        if (o->spans.data)
            o->spans.data[len0] = 0;
        o->lost++;
        return;
    }
    if (++o->n_spans >= MAX_SPANS_PER_LINE)
        write_line(o);
}

/* --------------------------------------------------------- records */

static otlp_thr *thread_state(otlp *o, uint32_t thread)
{
    wf__exp_key k = wf__exp_key2(thread, 0);
    otlp_thr *t = wf__exp_map_put(&o->threads, &k, NULL);
    if (t == NULL)
        o->lost++;
    return t;
}

/* An identifier as a decimal string (see the file's comment). */
typedef struct id_str {
    char s[24];
} id_str;

static id_str id_string(uint64_t id)
{
    id_str r;
    snprintf(r.s, sizeof r.s, "%" PRIu64, id);
    return r;
}

/*
 * error.type (OpenTelemetry's semantic conventions): the code's name, or
 * its decimal value for a step's own code outside the WF_E* table.
 */
static const char *error_type(int32_t error, char tmp[16])
{
    const char *name = wf_err_name(error);
    if (strcmp(name, "WF_E?") != 0)
        return name;
    snprintf(tmp, 16, "%d", (int)error);
    return tmp;
}

static uint32_t step_attrs(wf__otlp_attr *a, const char *run_id, const char *workflow,
                           const char *step, const char *type, uint32_t attempt)
{
    uint32_t n = 0;
    a[n++] = (wf__otlp_attr){"wf.run_id", 0, 0, run_id};
    if (workflow)
        a[n++] = (wf__otlp_attr){"wf.workflow", 0, 0, workflow};
    if (step)
        a[n++] = (wf__otlp_attr){"wf.step", 0, 0, step};
    if (type)
        a[n++] = (wf__otlp_attr){"wf.event_type", 0, 0, type};
    a[n++] = (wf__otlp_attr){"wf.attempt", 1, attempt, NULL};
    return n;
}

/* The trace of run_id: the caller's when the run joined one, else derived from the run id. */
static void run_trace(otlp *o, uint64_t run_id, uint64_t trace[2])
{
    wf__exp_key k = wf__exp_key2(run_id, 0);
    const otlp_run *run = wf__exp_map_get(&o->runs, &k);
    if (run && run->joined) {
        trace[0] = run->trace[0];
        trace[1] = run->trace[1];
        return;
    }
    wf__otlp_trace_id(o->seed, run_id, trace);
}

static void step_span(otlp *o, const wf_obs_record *r, int64_t start, int64_t end, int unfinished,
                      uint64_t span_id)
{
    wf__otlp_attr a[10];
    wf__otlp_span s = {0};
    id_str run_id = id_string(r->run_id);
    char etype[16];
    run_trace(o, r->run_id, s.trace_id);
    s.span_id = span_id ? span_id : step_span_id(o);
    s.parent_id = wf__otlp_run_span_id(o->seed, r->run_id);
    s.name = r->step ? r->step : "step";
    s.start_ns = unix_ns(o, start);
    s.end_ns = unix_ns(o, end > start ? end : start);
    s.attrs = a;
    s.n_attrs = step_attrs(a, run_id.s, r->workflow, r->step, r->event_type, r->attempt);
    a[s.n_attrs++] =
        (wf__otlp_attr){"wf.outcome", 0, 0, unfinished ? "unfinished" : wf__exp_outcome(r->error)};
    if (!unfinished && r->error < 0) {
        a[s.n_attrs++] = (wf__otlp_attr){"wf.error", 0, 0, wf_err_name(r->error)};
        a[s.n_attrs++] = (wf__otlp_attr){"error.type", 0, 0, error_type(r->error, etype)};
        s.status_code = 2; /* STATUS_CODE_ERROR */
        s.status_message = r->message ? r->message : wf_strerror(r->error);
    }
    emit_span(o, &s);
}

static void child_free(otlp_child *c)
{
    for (uint32_t i = 0; i < c->n_attrs; i++)
        wf__free_mem(c->owned[i]);
    c->n_attrs = 0;
}

/* Writes child c of t's open invocation (ending at end) and forgets it. */
static void child_span(otlp *o, otlp_thr *t, uint32_t at, int64_t end, int32_t error,
                       const char *message, int unfinished)
{
    otlp_child *c = &t->kids[at];
    wf__otlp_attr a[MAX_CHILD_ATTRS + 2];
    wf__otlp_span s = {0};
    run_trace(o, t->run_id, s.trace_id);
    s.span_id = c->id;
    s.parent_id = t->span_id;
    for (uint32_t i = 0; i < t->n_kids; i++)
        if (c->parent && t->kids[i].num == c->parent)
            s.parent_id = t->kids[i].id;
    s.name = c->name ? c->name : "span";
    s.start_ns = unix_ns(o, c->start_ts);
    s.end_ns = unix_ns(o, end > c->start_ts ? end : c->start_ts);
    memcpy(a, c->attrs, c->n_attrs * sizeof *a);
    s.attrs = a;
    s.n_attrs = c->n_attrs;
    char etype[16];
    if (unfinished)
        a[s.n_attrs++] = (wf__otlp_attr){"wf.outcome", 0, 0, "unfinished"};
    if (error < 0) {
        a[s.n_attrs++] = (wf__otlp_attr){"error.type", 0, 0, error_type(error, etype)};
        s.status_code = 2;
        s.status_message = message ? message : wf_strerror(error);
    }
    emit_span(o, &s);
    child_free(c);
    t->kids[at] = t->kids[--t->n_kids];
}

/* Ends every child span still open on t (its step ended, or the exporter goes). */
static void children_end(otlp *o, otlp_thr *t, int64_t end)
{
    while (t->n_kids)
        child_span(o, t, t->n_kids - 1, end, 0, NULL, 1);
}

/* The thread's open invocation, if r belongs to it. */
static otlp_thr *open_step(otlp *o, const wf_obs_record *r)
{
    otlp_thr *t = thread_state(o, r->thread);
    if (t && t->in_step && t->run_id == r->run_id && t->event_id == r->event_id &&
        t->attempt == r->attempt)
        return t;
    return NULL;
}

static int child_at(const otlp_thr *t, uint32_t num)
{
    for (uint32_t i = 0; i < t->n_kids; i++)
        if (t->kids[i].num == num)
            return (int)i;
    return -1;
}

static void on_span_begin(otlp *o, const wf_obs_record *r)
{
    otlp_thr *t = open_step(o, r);
    if (t == NULL || r->span == 0 || child_at(t, r->span) >= 0 || t->n_kids == MAX_CHILDREN) {
        o->lost++;
        return;
    }
    otlp_child *c = &t->kids[t->n_kids++];
    memset(c, 0, sizeof *c);
    c->num = r->span;
    c->parent = r->parent_span;
    c->id = step_span_id(o);
    c->start_ts = r->ts_ns;
    c->name = wf__exp_intern(&o->names, r->name);
}

static void on_span_attr(otlp *o, const wf_obs_record *r)
{
    otlp_thr *t = open_step(o, r);
    int at = t ? child_at(t, r->span) : -1;
    const char *key = wf__exp_intern(&o->names, r->name);
    if (at < 0 || key == NULL || t->kids[at].n_attrs == MAX_CHILD_ATTRS) {
        o->lost++;
        return;
    }
    otlp_child *c = &t->kids[at];
    wf__otlp_attr *a = &c->attrs[c->n_attrs];
    if (r->str) {
        char *v = wf__strdup(r->str);
        if (v == NULL) {
            o->lost++;
            return;
        }
        c->owned[c->n_attrs] = v;
        *a = (wf__otlp_attr){key, 0, 0, v};
    } else {
        c->owned[c->n_attrs] = NULL;
        *a = (wf__otlp_attr){key, 1, r->value, NULL};
    }
    c->n_attrs++;
}

static void on_span_end(otlp *o, const wf_obs_record *r)
{
    otlp_thr *t = open_step(o, r);
    int at = t ? child_at(t, r->span) : -1;
    if (at < 0) {
        o->lost++;
        return;
    }
    child_span(o, t, (uint32_t)at, r->ts_ns, r->error, r->message, 0);
}

static void on_step_start(otlp *o, const wf_obs_record *r)
{
    otlp_thr *t = thread_state(o, r->thread);
    if (t == NULL)
        return;
    if (t->in_step)
        children_end(o, t, r->ts_ns); /* a STEP_END never came */
    t->in_step = 1;
    t->start_ts = r->ts_ns;
    t->run_id = r->run_id;
    t->event_id = r->event_id;
    t->attempt = r->attempt;
    t->span_id = step_span_id(o);
    t->workflow = wf__exp_intern(&o->names, r->workflow);
    t->step = wf__exp_intern(&o->names, r->step);
    t->type = wf__exp_intern(&o->names, r->event_type);
}

static void on_step_end(otlp *o, const wf_obs_record *r)
{
    otlp_thr *t = thread_state(o, r->thread);
    int64_t start = r->ts_ns - (r->dur_ns > 0 ? r->dur_ns : 0);
    uint64_t span_id = 0;
    /* Records of one thread arrive in order: its open step is this one, if any. */
    if (t && t->in_step && t->run_id == r->run_id && t->event_id == r->event_id &&
        t->attempt == r->attempt && t->start_ts <= r->ts_ns) {
        start = t->start_ts;
        span_id = t->span_id;
    }
    if (span_id == 0)
        span_id = step_span_id(o);
    if (t) {
        children_end(o, t, r->ts_ns);
        t->in_step = 0;
        t->last_run_id = r->run_id;
        t->last_event_id = r->event_id;
        t->last_span_id = span_id;
    }
    step_span(o, r, start, r->ts_ns, 0, span_id);
}

static void free_events(otlp_run *run)
{
    for (uint32_t i = 0; i < run->n_events; i++)
        wf__free_mem(run->events[i].owned);
    wf__free_mem(run->events);
    run->events = NULL;
    run->n_events = run->cap_events = 0;
}

/* The run's entry, created when absent; NULL (counted) when it cannot be stored. */
static otlp_run *run_state(otlp *o, uint64_t run_id)
{
    wf__exp_key k = wf__exp_key2(run_id, 0);
    otlp_run *run = wf__exp_map_put(&o->runs, &k, NULL);
    if (run == NULL)
        o->lost++;
    return run;
}

static void on_run_start(otlp *o, const wf_obs_record *r)
{
    otlp_run *run = run_state(o, r->run_id);
    if (run == NULL)
        return;
    run->have_start = 1;
    run->start_ts = r->ts_ns;
    run->workflow = wf__exp_intern(&o->names, r->workflow);
    run->joined =
        r->traceparent && wf__otlp_traceparent(r->traceparent, run->trace, &run->parent) == 0;
    /*
     * A child run (value: its parent's run id, event_id: the parent step's
     * invocation): its spans join the parent's trace, its run span under the
     * step's span. The parent's step wrote this record on its own thread,
     * after its STEP_START: that thread's open or last invocation is it.
     */
    otlp_thr *t = r->value > 0 && r->event_id ? thread_state(o, r->thread) : NULL;
    uint64_t parent = (uint64_t)r->value, span = 0;
    if (t && t->in_step && t->run_id == parent && t->event_id == r->event_id)
        span = t->span_id;
    else if (t && t->last_run_id == parent && t->last_event_id == r->event_id)
        span = t->last_span_id;
    if (span && !run->joined) {
        run_trace(o, parent, run->trace);
        run->parent = span;
        run->joined = 1;
    }
}

static void run_span(otlp *o, uint64_t run_id, otlp_run *run, const wf_obs_record *end)
{
    wf__otlp_attr a[10];
    wf__otlp_span s = {0};
    id_str rid = id_string(run_id);
    char etype[16];
    const char *workflow = end && end->workflow ? end->workflow : run->workflow;
    int64_t end_ts = end ? end->ts_ns : o->last_ts;
    int64_t start =
        run->have_start ? run->start_ts : end_ts - (end && end->dur_ns > 0 ? end->dur_ns : 0);
    if (run->joined) {
        s.trace_id[0] = run->trace[0];
        s.trace_id[1] = run->trace[1];
        s.parent_id = run->parent;
    } else {
        wf__otlp_trace_id(o->seed, run_id, s.trace_id);
    }
    s.span_id = wf__otlp_run_span_id(o->seed, run_id);
    s.name = workflow ? workflow : "run";
    s.start_ns = unix_ns(o, start);
    s.end_ns = unix_ns(o, end_ts > start ? end_ts : start);
    s.attrs = a;
    a[s.n_attrs++] = (wf__otlp_attr){"wf.run_id", 0, 0, rid.s};
    if (workflow)
        a[s.n_attrs++] = (wf__otlp_attr){"wf.workflow", 0, 0, workflow};
    a[s.n_attrs++] =
        (wf__otlp_attr){"wf.status", 0, 0, end ? wf__exp_status_name(end->status) : "unfinished"};
    char msg[512];
    if (end && end->error < 0) {
        a[s.n_attrs++] = (wf__otlp_attr){"wf.error", 0, 0, wf_err_name(end->error)};
        a[s.n_attrs++] = (wf__otlp_attr){"error.type", 0, 0, error_type(end->error, etype)};
        if (end->step)
            a[s.n_attrs++] = (wf__otlp_attr){"wf.step", 0, 0, end->step};
    }
    if (end && (end->status == WF_RUN_FAILED || end->status == WF_RUN_TIMED_OUT)) {
        s.status_code = 2;
        const char *m = end->message ? end->message : wf_strerror(end->error);
        if (end->step) {
            snprintf(msg, sizeof msg, "step %s: %s", end->step, m);
            s.status_message = msg;
        } else {
            s.status_message = m;
        }
    }
    s.events = run->events;
    s.n_events = run->n_events;
    s.dropped_events = run->dropped_events;
    emit_span(o, &s);
}

static void on_run_end(otlp *o, const wf_obs_record *r)
{
    wf__exp_key k = wf__exp_key2(r->run_id, 0);
    otlp_run *stored = wf__exp_map_get(&o->runs, &k);
    otlp_run run = {0};
    if (stored) {
        run = *stored;
        wf__exp_map_del(&o->runs, &k);
    }
    run_span(o, r->run_id, &run, r);
    free_events(&run);
}

/* A span event on the run's span (written when the run ends). */
static void run_event(otlp *o, const wf_obs_record *r, const char *name)
{
    otlp_run *run = run_state(o, r->run_id);
    if (run == NULL)
        return;
    if (run->workflow == NULL)
        run->workflow = wf__exp_intern(&o->names, r->workflow);
    if (run->n_events >= MAX_RUN_EVENTS) {
        run->dropped_events++;
        return;
    }
    if (run->n_events == run->cap_events) {
        uint32_t cap = run->cap_events ? run->cap_events * 2 : 4;
        wf__otlp_event *ev = wf__realloc(run->events, cap * sizeof *ev);
        if (ev == NULL) {
            run->dropped_events++;
            o->lost++;
            return;
        }
        run->events = ev;
        run->cap_events = cap;
    }
    wf__otlp_event *e = &run->events[run->n_events];
    memset(e, 0, sizeof *e);
    e->time_ns = unix_ns(o, r->ts_ns);
    e->name = name;
    wf__otlp_attr *a = e->attrs;
    uint32_t n = 0;
    const char *step = wf__exp_intern(&o->names, r->step);
    const char *type = wf__exp_intern(&o->names, r->event_type);
    if (step)
        a[n++] = (wf__otlp_attr){"wf.step", 0, 0, step};
    if (type)
        a[n++] = (wf__otlp_attr){"wf.event_type", 0, 0, type};
    if (r->kind == WF_OBS_RETRY) {
        a[n++] = (wf__otlp_attr){"wf.attempt", 1, r->attempt, NULL};
        a[n++] = (wf__otlp_attr){"wf.delay_ms", 1, r->value, NULL};
        if (r->error < 0) {
            a[n++] = (wf__otlp_attr){"wf.error", 0, 0, wf_err_name(r->error)};
            e->owned = r->message ? wf__strdup(r->message) : NULL;
            a[n++] =
                (wf__otlp_attr){"wf.message", 0, 0, e->owned ? e->owned : wf_strerror(r->error)};
        }
    }
    e->n_attrs = n;
    run->n_events++;
}

static void otlp_record(const wf_obs_record *r, void *user)
{
    otlp *o = user;
    if (!o->have_ts || r->ts_ns > o->last_ts) {
        o->last_ts = r->ts_ns;
        o->have_ts = 1;
    }
    switch (r->kind) {
    case WF_OBS_RUN_START:
        on_run_start(o, r);
        break;
    case WF_OBS_RUN_END:
        on_run_end(o, r);
        break;
    case WF_OBS_STEP_START:
        on_step_start(o, r);
        break;
    case WF_OBS_STEP_END:
        on_step_end(o, r);
        break;
    case WF_OBS_RETRY:
        run_event(o, r, "retry");
        break;
    case WF_OBS_SPAN_BEGIN:
        on_span_begin(o, r);
        break;
    case WF_OBS_SPAN_ATTR:
        on_span_attr(o, r);
        break;
    case WF_OBS_SPAN_END:
        on_span_end(o, r);
        break;
    case WF_OBS_EVENT_UNHANDLED:
        run_event(o, r, "event.unhandled");
        break;
    case WF_OBS_EVENT_DROP:
        run_event(o, r, "event.dropped");
        break;
    default:
        break;
    }
}

static void otlp_flush(void *user)
{
    otlp *o = user;
    write_line(o);
    if (o->out)
        fflush(o->out);
    if (o->has_sender)
        send_pb(o);
}

static void otlp_free(void *user)
{
    otlp *o = user;
    wf__exp_key k;
    /* What never ended ends at the last time seen: children keep their parent. */
    for (size_t i = 0; i < o->threads.cap; i++) {
        otlp_thr *t = wf__exp_map_at(&o->threads, i, &k);
        if (t && t->in_step) {
            children_end(o, t, o->last_ts);
            wf_obs_record r = {.kind = WF_OBS_STEP_END,
                               .thread = (uint32_t)k.k[0],
                               .run_id = t->run_id,
                               .event_id = t->event_id,
                               .attempt = t->attempt,
                               .workflow = t->workflow,
                               .step = t->step,
                               .event_type = t->type};
            step_span(o, &r, t->start_ts, o->last_ts, 1, t->span_id);
        }
    }
    for (size_t i = 0; i < o->runs.cap; i++) {
        otlp_run *run = wf__exp_map_at(&o->runs, i, &k);
        if (run) {
            run_span(o, k.k[0], run, NULL);
            free_events(run);
        }
    }
    otlp_flush(o);
    if (o->has_sender && o->sender.user_free)
        o->sender.user_free(o->sender.user);
    wf__exp_close(o->out, o->keep_open);
    wf__buf_free(&o->pb);
    wf__buf_free(&o->req);
    wf__free_mem(o->service_version);
    wf__buf_free(&o->head);
    wf__buf_free(&o->tail);
    wf__buf_free(&o->spans);
    wf__exp_pool_free(&o->names);
    wf__exp_map_free(&o->runs);
    wf__exp_map_free(&o->threads);
    wf__free_mem(o->service);
    wf__free_mem(o);
}

static void sender_free(const wf_otlp_sender *snd)
{
    if (snd && snd->user_free)
        snd->user_free(snd->user);
}

/* The JSON exporter (sender NULL) or the protobuf one (params optional). */
static int otlp_new(wf_observer *out, const wf_exporter_params *params, const wf_otlp_sender *snd)
{
    FILE *f = params ? params->out : NULL;
    int keep = params ? params->keep_open : 0;
    if (out == NULL || (f == NULL && snd == NULL) || (snd && snd->send == NULL)) {
        wf__exp_close(f, keep); /* taken over even when refused */
        sender_free(snd);
        return WF_EINVAL;
    }
    memset(out, 0, sizeof *out);
    otlp *o = wf__calloc(1, sizeof *o);
    const char *service = params && params->service_name ? params->service_name : "wf";
    const char *version = params ? params->service_version : NULL;
    if (o == NULL || (o->service = wf__strdup(service)) == NULL ||
        (version && (o->service_version = wf__strdup(version)) == NULL)) {
        if (o)
            wf__free_mem(o->service);
        wf__free_mem(o);
        wf__exp_close(f, keep);
        sender_free(snd);
        return WF_ENOMEM;
    }
    o->out = f;
    o->keep_open = keep;
    if (snd) {
        o->has_sender = 1;
        o->sender = *snd;
    }
    o->seed[0] = wf__exp_random64();
    o->seed[1] = wf__exp_random64();
    o->offset = wf_obs_clock_offset_ns();
    o->res[o->n_res++] = (wf__otlp_attr){"service.name", 0, 0, o->service};
    if (o->service_version)
        o->res[o->n_res++] = (wf__otlp_attr){"service.version", 0, 0, o->service_version};
    o->res[o->n_res++] = (wf__otlp_attr){"telemetry.sdk.name", 0, 0, "wf"};
    o->res[o->n_res++] = (wf__otlp_attr){"telemetry.sdk.version", 0, 0, wf_version_string()};
    wf__exp_map_init(&o->runs, sizeof(otlp_run), MAX_RUNS);
    wf__exp_map_init(&o->threads, sizeof(otlp_thr), 0);
    wf__buf_init(&o->head);
    wf__buf_init(&o->tail);
    wf__buf_init(&o->spans);
    wf__buf_init(&o->pb);
    wf__buf_init(&o->req);
    wf__buf_puts(&o->head, "{\"resourceSpans\":[{\"resource\":{");
    json_attrs(&o->head, o->res, o->n_res);
    wf__buf_puts(&o->head, "},\"scopeSpans\":[{\"scope\":{\"name\":\"wf\",\"version\":");
    wf__exp_json_str(&o->head, wf_version_string());
    wf__buf_puts(&o->head, "},\"spans\":[");
    wf__buf_puts(&o->tail, "]}]}]}\n");
    wf__buf_puts(&o->spans, ""); /* allocated: write_line may reset it */
    if (o->head.oom || o->tail.oom || o->spans.oom) {
        o->out = NULL;
        o->has_sender = 0;
        otlp_free(o);
        wf__exp_close(f, keep);
        sender_free(snd);
        return WF_ENOMEM;
    }
    out->record = otlp_record;
    out->flush = otlp_flush;
    out->user_free = otlp_free;
    out->user = o;
    out->kinds = WF_OBS_BIT(WF_OBS_RUN_START) | WF_OBS_BIT(WF_OBS_RUN_END) |
                 WF_OBS_BIT(WF_OBS_STEP_START) | WF_OBS_BIT(WF_OBS_STEP_END) |
                 WF_OBS_BIT(WF_OBS_RETRY) | WF_OBS_BIT(WF_OBS_EVENT_UNHANDLED) |
                 WF_OBS_BIT(WF_OBS_EVENT_DROP) | WF_OBS_BIT(WF_OBS_SPAN_BEGIN) |
                 WF_OBS_BIT(WF_OBS_SPAN_ATTR) | WF_OBS_BIT(WF_OBS_SPAN_END);
    return 0;
}

int wf_exporter_otlp_json(wf_observer *out, const wf_exporter_params *params)
{
    if (params == NULL || params->out == NULL) {
        if (params)
            wf__exp_close(params->out, params->keep_open);
        return WF_EINVAL;
    }
    return otlp_new(out, params, NULL);
}

int wf_exporter_otlp_proto(wf_observer *out, const wf_otlp_sender *sender,
                           const wf_exporter_params *params)
{
    if (sender == NULL) {
        if (params)
            wf__exp_close(params->out, params->keep_open);
        return WF_EINVAL;
    }
    return otlp_new(out, params, sender);
}
