/*
 * server.c: wf serve, the reference server's HTTP API over libmicrohttpd
 * (serve.h; the routes and their shapes in docs/CLI.md, "wf serve").
 *
 * Threads and locks:
 * - MHD runs a thread per connection. POST .../run starts the run and reads
 *   its stream in that thread; POST .../run-nowait starts a detached reader
 *   thread for the run (pump). Executor workers only ever push events into
 *   the run's stream; nothing here runs on them.
 * - wf_server.lock guards the handler table, the start-order list and the
 *   counts; srv_rec.lock guards a record's log and state. Order: server lock
 *   before a record's lock, never the other way.
 * - An event stream (GET /events/{id}) is an MHD callback response whose
 *   callback copies one event at a time from the record's log; MHD calls it
 *   only when its bounded write buffer has room, so a slow reader costs its
 *   cursor and one event's text, not a queue.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json_internal.h"
#include "serve.h"

enum { ST_RUNNING = 0, ST_COMPLETED = 1, ST_FAILED = 2, ST_CANCELLED = 3 };
static const char *const status_names[] = {"running", "completed", "failed", "cancelled"};

typedef struct srv_entry {
    char *text;      /* the envelope {"value", "type", "types", "qualified_name"} */
    uint32_t len;    /* bytes of text */
    uint32_t qn_off; /* where ,"qualified_name": begins (for include_qualified_name=false) */
    int internal;    /* an InternalDispatchEvent (StepStateChanged, WorkflowIdleEvent, ...) */
} srv_entry;

typedef struct srv_wf {
    const char *name; /* borrowed from the workflow */
    wf_workflow *wf;  /* borrowed from its plugin */
    const char *plugin;
} srv_wf;

typedef struct srv_rec {
    char id[32];
    const srv_wf *w;
    atomic_int refs;
    /* set before the record is shared, then read-only */
    wf_handler *h;
    char run_id[24];
    double started_at;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* guarded by lock */
    srv_entry *log;
    size_t n_log, cap_log;
    int status;
    int ended; /* the final status, error and result are set */
    char *error;
    char *result;        /* envelope of the StopEvent, or NULL */
    char *result_compat; /* GET /results' result: StopEvent.result or the value */
    double updated_at, completed_at;
    /* guarded by the server's lock */
    struct srv_rec *hnext, *prev, *next;
    int listed;
} srv_rec;

struct wf_server {
    struct MHD_Daemon *d;
    wf_executor *ex;
    srv_wf *wfs;
    size_t n_wfs;
    char *ui_dir;
    size_t body_limit, max_handlers;
    uint16_t port;
    atomic_int stopping;
    /* guarded by lock */
    pthread_mutex_t lock;
    srv_rec **table;
    size_t table_cap, count;
    srv_rec *head, *tail;
    /* reader threads still running; guarded by lock, signalled on pumps_cond */
    size_t pumps;
    pthread_cond_t pumps_cond;
    /*
     * Held around the calls that inject work into the executor from a thread
     * outside it (starting a run, sending an event, cancelling). The executor's injection
     * ring (ck_ring MPMC) makes a producer spin until the one before it has
     * published; with dozens of connection threads on 2 cores, a producer
     * preempted in between made the others spin for whole time slices
     * (97% of the time in wf__inject at 64 connections). One producer at a
     * time, the others parked on this mutex, avoids that convoy.
     */
    pthread_mutex_t inject_lock;
};

/* ------------------------------------------------------------ small helpers */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Python's datetime.isoformat() of an aware UTC time. */
static void iso_time(double t, char out[64])
{
    time_t sec = (time_t)t;
    long us = (long)((t - (double)sec) * 1e6);
    if (us > 999999)
        us = 999999;
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%06ld+00:00", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
}

/* A 10-character id of [A-Za-z0-9], as the reference's nanoid. */
static void new_id(char out[11])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char r[32];
    size_t n = 0, used = sizeof r;
    while (n < 10) {
        if (used == sizeof r) {
            if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
                /* no entropy source: the time and a counter are unique enough here */
                static atomic_uint ctr;
                unsigned long long x = (unsigned long long)(now_s() * 1e6) ^
                                       ((unsigned long long)atomic_fetch_add(&ctr, 1) << 40);
                for (size_t i = 0; i < sizeof r; i++) {
                    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                    r[i] = (unsigned char)(x >> 56);
                }
            }
            used = 0;
        }
        unsigned char c = r[used++];
        if (c < 248) /* 248 = 4 * 62: no modulo bias */
            out[n++] = alphabet[c % 62];
    }
    out[10] = 0;
}

static void put(wf_json_buf *b, const char *s)
{
    wf_json_buf_append(b, s, strlen(s));
}

static void put_str(wf_json_buf *b, const char *s)
{
    if (s)
        wf_json_write_string(b, s, strlen(s));
    else
        put(b, "null");
}

static void put_time(wf_json_buf *b, double t)
{
    if (t <= 0) {
        put(b, "null");
        return;
    }
    char iso[64];
    iso_time(t, iso);
    put_str(b, iso);
}

/* ------------------------------------------------------------ records */

static void rec_unref(srv_rec *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (size_t i = 0; i < r->n_log; i++)
        free(r->log[i].text);
    free(r->log);
    free(r->error);
    free(r->result);
    free(r->result_compat);
    wf_handler_free(r->h);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}

static size_t id_hash(const char *id)
{
    size_t h = 1469598103934665603ULL;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return h;
}

/* With s->lock held. */
static srv_rec *table_find(wf_server *s, const char *id)
{
    if (s->table_cap == 0)
        return NULL;
    for (srv_rec *r = s->table[id_hash(id) & (s->table_cap - 1)]; r; r = r->hnext)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

/* With s->lock held: unlinks r from the table and the list, drops the table's reference. */
static void table_remove(wf_server *s, srv_rec *r)
{
    srv_rec **pp = &s->table[id_hash(r->id) & (s->table_cap - 1)];
    while (*pp != r)
        pp = &(*pp)->hnext;
    *pp = r->hnext;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        s->tail = r->prev;
    r->listed = 0;
    s->count--;
    rec_unref(r);
}

/* With s->lock held: takes the caller's reference. WF_ENOMEM. */
static int table_insert(wf_server *s, srv_rec *r)
{
    if (s->count + 1 > s->table_cap / 4 * 3) {
        size_t cap = s->table_cap ? s->table_cap * 2 : 1024;
        srv_rec **t = calloc(cap, sizeof *t);
        if (t == NULL)
            return WF_ENOMEM;
        for (size_t i = 0; i < s->table_cap; i++) {
            for (srv_rec *x = s->table[i], *nx; x; x = nx) {
                nx = x->hnext;
                size_t k = id_hash(x->id) & (cap - 1);
                x->hnext = t[k];
                t[k] = x;
            }
        }
        free(s->table);
        s->table = t;
        s->table_cap = cap;
    }
    size_t k = id_hash(r->id) & (s->table_cap - 1);
    r->hnext = s->table[k];
    s->table[k] = r;
    r->prev = s->tail;
    r->next = NULL;
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    r->listed = 1;
    s->count++;
    /* forget the oldest ended handlers beyond the limit (running ones stay) */
    srv_rec *x = s->head;
    size_t looked = 0;
    while (s->count > s->max_handlers && x && looked++ < 64) {
        srv_rec *nx = x->next;
        pthread_mutex_lock(&x->lock);
        int ended = x->ended;
        pthread_mutex_unlock(&x->lock);
        if (ended)
            table_remove(s, x);
        x = nx;
    }
    return 0;
}

/* The record called id with a reference for the caller (rec_unref), or NULL. */
static srv_rec *lookup(wf_server *s, const char *id)
{
    pthread_mutex_lock(&s->lock);
    srv_rec *r = table_find(s, id);
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* ------------------------------------------------------------ events as envelopes */

static int is_builtin(const wf_event_type *t, int *which)
{
    wf_registry *reg = wf_event_type_registry(t);
    for (int i = 0; i < WF_BUILTIN_COUNT; i++) {
        if (wf_registry_builtin(reg, (wf_builtin_type)i) == t) {
            *which = i;
            return 1;
        }
    }
    return 0;
}

static int is_internal_type(const wf_event_type *t)
{
    int b;
    return is_builtin(t, &b) &&
           (b == WF_UNHANDLED_EVENT || b == WF_STEP_STATE_CHANGED || b == WF_WORKFLOW_IDLE_EVENT);
}

/*
 * The reference's EventEnvelopeWithMetadata: value (the fields), type (the
 * class name), types (the parents, nearest first, or null), qualified_name
 * (workflows.events.X for the built-ins, PLUGIN.X for the plugin's types).
 * *qn_off: where the qualified_name member begins.
 */
static int write_envelope(wf_json_buf *b, const wf_event *ev, const char *plugin, uint32_t *qn_off)
{
    const wf_event_type *t = wf_event_type_of(ev);
    put(b, "{\"value\":");
    int rc = wf_json_write_fields(b, ev);
    if (rc < 0)
        return rc;
    put(b, ",\"type\":");
    put_str(b, wf_event_type_name(t));
    put(b, ",\"types\":");
    int n = 0;
    if (is_internal_type(t)) {
        put(b, "[\"InternalDispatchEvent\"]");
        n = 1;
    } else {
        for (const wf_event_type *p = wf_event_type_parent(t); p; p = wf_event_type_parent(p)) {
            put(b, n++ ? "," : "[");
            put_str(b, wf_event_type_name(p));
        }
        if (n)
            put(b, "]");
        else
            put(b, "null");
    }
    if (qn_off)
        *qn_off = (uint32_t)b->len;
    put(b, ",\"qualified_name\":");
    int which;
    char qn[320];
    snprintf(qn, sizeof qn, "%s.%s", is_builtin(t, &which) ? "workflows.events" : plugin,
             wf_event_type_name(t));
    put_str(b, qn);
    put(b, "}");
    return b->oom ? WF_ENOMEM : 0;
}

/* ------------------------------------------------------------ the reader of a run */

/*
 * Reads the run's stream into the record's log until the terminal event,
 * then sets the final status. Runs on a connection thread (POST .../run) or
 * a reader thread of its own (run-nowait), never on an executor worker.
 */
static void pump(srv_rec *r)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    for (;;) {
        wf_event *ev = NULL;
        if (wf_handler_next_event(r->h, -1, &ev) < 0)
            break; /* WF_ECLOSED: the terminal event was read */
        const wf_event_type *t = wf_event_type_of(ev);
        int terminal = wf_event_type_is_stop(t);
        srv_entry e = {0};
        wf_json_buf_reset(&b);
        if (write_envelope(&b, ev, r->w->plugin, &e.qn_off) == 0) {
            e.text = malloc(b.len + 1);
            if (e.text) {
                memcpy(e.text, b.data, b.len + 1);
                e.len = (uint32_t)b.len;
                e.internal = is_internal_type(t);
            }
        }
        wf_event_release(ev);
        pthread_mutex_lock(&r->lock);
        if (e.text && r->n_log == r->cap_log) {
            size_t cap = r->cap_log ? r->cap_log * 2 : 16;
            srv_entry *nl = realloc(r->log, cap * sizeof *nl);
            if (nl) {
                r->log = nl;
                r->cap_log = cap;
            }
        }
        if (e.text && r->n_log < r->cap_log)
            r->log[r->n_log++] = e;
        else
            free(e.text);
        r->updated_at = now_s();
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        if (terminal)
            break;
    }
    wf_event *res = NULL;
    int rc = wf_handler_wait(r->h, -1, &res);
    int status;
    char *error = NULL, *result = NULL, *compat = NULL;
    if (rc == 0) {
        status = ST_COMPLETED;
        wf_json_buf_reset(&b);
        if (write_envelope(&b, res, r->w->plugin, NULL) == 0)
            result = strdup(b.data);
        wf_json_buf_reset(&b);
        wf_value v;
        int which;
        int plain_stop = is_builtin(wf_event_type_of(res), &which) && which == WF_STOP_EVENT;
        if (plain_stop && wf_event_lookup(res, "result", &v) == 0)
            wf_json_write_value(&b, v);
        else
            wf_json_write_fields(&b, res);
        if (!b.oom && b.data)
            compat = strdup(b.data);
    } else {
        int code = 0;
        const char *step = NULL, *m = NULL;
        wf_handler_error(r->h, &code, &step, &m);
        status = rc == WF_ECANCELLED ? ST_CANCELLED : ST_FAILED;
        char text[2048];
        if (rc == WF_ECANCELLED)
            snprintf(text, sizeof text, "the run was cancelled");
        else if (rc == WF_ERUNTIMEOUT)
            snprintf(text, sizeof text, "timed out: %s", m ? m : wf_strerror(rc));
        else if (step)
            snprintf(text, sizeof text, "step '%s' failed: %s (%s)%s%s", step, wf_strerror(code),
                     wf_err_name(code), m ? ": " : "", m ? m : "");
        else
            snprintf(text, sizeof text, "%s%s%s", wf_strerror(rc), m ? ": " : "", m ? m : "");
        error = strdup(text);
    }
    wf_event_release(res);
    wf_json_buf_free(&b);
    pthread_mutex_lock(&r->lock);
    r->status = status;
    r->error = error;
    r->result = result;
    r->result_compat = compat;
    r->completed_at = r->updated_at = now_s();
    r->ended = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

typedef struct pump_arg {
    wf_server *s;
    srv_rec *r;
} pump_arg;

static void *pump_main(void *arg)
{
    pump_arg *a = arg;
    pump(a->r);
    rec_unref(a->r);
    pthread_mutex_lock(&a->s->lock);
    if (--a->s->pumps == 0)
        pthread_cond_broadcast(&a->s->pumps_cond);
    pthread_mutex_unlock(&a->s->lock);
    free(a);
    return NULL;
}

/* ------------------------------------------------------------ handler JSON */

/* The reference's HandlerData. compat: GET /results' form of result. */
static void write_handler(wf_json_buf *b, srv_rec *r, int compat)
{
    pthread_mutex_lock(&r->lock);
    put(b, "{\"handler_id\":");
    put_str(b, r->id);
    put(b, ",\"workflow_name\":");
    put_str(b, r->w->name);
    put(b, ",\"run_id\":");
    put_str(b, r->run_id);
    put(b, ",\"error\":");
    put_str(b, r->error);
    put(b, ",\"result\":");
    const char *res = compat ? r->result_compat : r->result;
    put(b, res ? res : "null");
    put(b, ",\"status\":");
    put_str(b, status_names[r->status]);
    put(b, ",\"started_at\":");
    put_time(b, r->started_at);
    put(b, ",\"updated_at\":");
    put_time(b, r->updated_at);
    put(b, ",\"completed_at\":");
    put_time(b, r->ended ? r->completed_at : 0);
    put(b, "}");
    pthread_mutex_unlock(&r->lock);
}

static int http_status_of(srv_rec *r)
{
    pthread_mutex_lock(&r->lock);
    int st = r->ended ? r->status : ST_RUNNING;
    pthread_mutex_unlock(&r->lock);
    return st == ST_RUNNING ? 202 : st == ST_COMPLETED ? 200 : 500;
}

/* ------------------------------------------------------------ responses */

typedef struct conn_state {
    char *body;
    size_t len, cap;
    int too_big;
} conn_state;

static void cors(struct MHD_Connection *c, struct MHD_Response *resp)
{
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true");
        MHD_add_response_header(resp, "Vary", "Origin");
    }
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *data, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    if (type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    cors(c, resp);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, wf_json_buf *b)
{
    if (b->oom)
        return reply(c, 500, "application/json", "{\"detail\":\"out of memory\"}", 26);
    return reply(c, status, "application/json", b->data ? b->data : "", b->len);
}

/* {"detail": text}, the reference's error body. */
static enum MHD_Result reply_detail(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result reply_detail(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    wf_json_buf b;
    wf_json_buf_init(&b);
    put(&b, "{\"detail\":");
    put_str(&b, text);
    put(&b, "}");
    enum MHD_Result r = reply_json(c, status, &b);
    wf_json_buf_free(&b);
    return r;
}

static const srv_wf *find_wf(wf_server *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n_wfs; i++)
        if (strlen(s->wfs[i].name) == len && memcmp(s->wfs[i].name, name, len) == 0)
            return &s->wfs[i];
    return NULL;
}

static int query_true(struct MHD_Connection *c, const char *key, int dflt)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    if (v == NULL)
        return dflt;
    return strcasecmp(v, "true") == 0;
}

/* ------------------------------------------------------------ workflows */

static enum MHD_Result get_workflows(wf_server *s, struct MHD_Connection *c)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    put(&b, "{\"workflows\":[");
    for (size_t i = 0; i < s->n_wfs; i++) {
        if (i)
            put(&b, ",");
        put_str(&b, s->wfs[i].name);
    }
    put(&b, "]}");
    enum MHD_Result r = reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return r;
}

/*
 * A JSON schema for an event type. wf types declare no fields, so any object;
 * the built-ins whose fields are fixed name them (the debugger UI builds its
 * "Send Event" form from the properties).
 */
static void put_schema(wf_json_buf *b, const wf_event_type *t)
{
    put(b, "{\"title\":");
    put_str(b, wf_event_type_name(t));
    put(b, ",\"type\":\"object\",\"properties\":");
    int which = -1;
    is_builtin(t, &which);
    if (which == WF_HUMAN_RESPONSE_EVENT)
        put(b, "{\"response\":{\"title\":\"Response\",\"type\":\"string\"}},\"required\":["
               "\"response\"]");
    else if (which == WF_INPUT_REQUIRED_EVENT)
        put(b, "{\"prefix\":{\"title\":\"Prefix\",\"type\":\"string\"}}");
    else if (which == WF_STOP_EVENT)
        put(b, "{\"result\":{\"title\":\"Result\"}}");
    else
        put(b, "{}");
    put(b, ",\"additionalProperties\":true}");
}

static enum MHD_Result get_schema(const srv_wf *w, struct MHD_Connection *c)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    put(&b, "{\"start\":");
    put_schema(&b, wf_workflow_start_type(w->wf));
    put(&b, ",\"stop\":");
    put_schema(&b, wf_workflow_stop_type(w->wf));
    put(&b, "}");
    enum MHD_Result r = reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return r;
}

static enum MHD_Result get_events_list(const srv_wf *w, struct MHD_Connection *c)
{
    wf_registry *reg = wf_workflow_registry(w->wf);
    wf_json_buf b;
    wf_json_buf_init(&b);
    put(&b, "{\"events\":[");
    int n = 0;
    for (size_t i = 0; i < wf_registry_count(reg); i++) {
        const wf_event_type *t = wf_registry_type_at(reg, i);
        if (t == NULL || is_internal_type(t))
            continue;
        if (n++)
            put(&b, ",");
        put_schema(&b, t);
    }
    put(&b, "]}");
    enum MHD_Result r = reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return r;
}

static void put_type_chain(wf_json_buf *b, const wf_event_type *t)
{
    put(b, "[");
    for (int n = 0; t; t = wf_event_type_parent(t), n++) {
        if (n)
            put(b, ",");
        put_str(b, wf_event_type_name(t));
    }
    put(b, "]");
}

/* The reference's WorkflowGraph: step and event nodes, edges between them. */
static enum MHD_Result get_representation(const srv_wf *w, struct MHD_Connection *c)
{
    wf_workflow *wf = w->wf;
    wf_registry *reg = wf_workflow_registry(wf);
    size_t nt = wf_registry_count(reg), ns = wf_workflow_step_count(wf);
    char *used = calloc(nt ? nt : 1, 1);
    if (used == NULL)
        return reply_detail(c, 500, "out of memory");
    wf_json_buf b;
    wf_json_buf_init(&b);
    put(&b, "{\"graph\":{\"name\":");
    put_str(&b, w->name);
    put(&b, ",\"description\":null,\"nodes\":[");
    int n = 0;
    for (size_t i = 0; i < ns; i++) {
        const wf_event_type *const *acc, *const *em;
        size_t na, ne;
        wf_workflow_step_types(wf, i, 0, &acc, &na);
        wf_workflow_step_types(wf, i, 1, &em, &ne);
        for (size_t k = 0; k < na; k++)
            used[wf_event_type_id(acc[k])] = 1;
        for (size_t k = 0; k < ne; k++)
            used[wf_event_type_id(em[k])] = 1;
        if (n++)
            put(&b, ",");
        put(&b, "{\"id\":");
        put_str(&b, wf_workflow_step_name(wf, i));
        put(&b, ",\"label\":");
        put_str(&b, wf_workflow_step_name(wf, i));
        put(&b, ",\"node_type\":\"step\",\"description\":null}");
    }
    for (size_t id = 0; id < nt; id++) {
        if (!used[id])
            continue;
        const wf_event_type *t = wf_registry_type_at(reg, id);
        put(&b, ",{\"id\":");
        put_str(&b, wf_event_type_name(t));
        put(&b, ",\"label\":");
        put_str(&b, wf_event_type_name(t));
        put(&b, ",\"node_type\":\"event\",\"event_type\":");
        put_str(&b, wf_event_type_name(t));
        put(&b, ",\"event_types\":");
        put_type_chain(&b, t);
        put(&b, ",\"event_schema\":null,\"produced_by\":[");
        int m = 0;
        for (size_t i = 0; i < ns; i++) {
            const wf_event_type *const *em;
            size_t ne;
            wf_workflow_step_types(wf, i, 1, &em, &ne);
            for (size_t k = 0; k < ne; k++) {
                if (em[k] == t) {
                    if (m++)
                        put(&b, ",");
                    put_str(&b, wf_workflow_step_name(wf, i));
                    break;
                }
            }
        }
        put(&b, "]}");
    }
    put(&b, "],\"edges\":[");
    n = 0;
    for (size_t i = 0; i < ns; i++) {
        for (int dir = 0; dir < 2; dir++) {
            const wf_event_type *const *ts;
            size_t nn;
            wf_workflow_step_types(wf, i, dir, &ts, &nn);
            for (size_t k = 0; k < nn; k++) {
                if (n++)
                    put(&b, ",");
                put(&b, "{\"source\":");
                put_str(&b, dir ? wf_workflow_step_name(wf, i) : wf_event_type_name(ts[k]));
                put(&b, ",\"target\":");
                put_str(&b, dir ? wf_event_type_name(ts[k]) : wf_workflow_step_name(wf, i));
                put(&b, ",\"label\":null}");
            }
        }
    }
    put(&b, "]}}");
    free(used);
    enum MHD_Result r = reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return r;
}

/* ------------------------------------------------------------ runs */

/* Parses the run body; 0 or an HTTP status with *detail set (static or malloc'd in *freeme). */
static int start_run(wf_server *s, const srv_wf *w, conn_state *cs, srv_rec **out, char *detail,
                     size_t dlen)
{
    json_t *body = NULL;
    char *msg = NULL;
    if (cs->len == 0) {
        body = json_object(); /* the reference wants a body; an empty one means {} here */
    } else {
        body = wf__json_load(cs->body, cs->len, &msg);
        if (body == NULL) {
            snprintf(detail, dlen, "Invalid JSON body: %s", msg ? msg : "malformed");
            wf_json_free_message(msg);
            return 400;
        }
    }
    if (!json_is_object(body)) {
        json_decref(body);
        snprintf(detail, dlen, "Error processing request body: the body must be a JSON object");
        return 400;
    }
    json_t *ctx = json_object_get(body, "context");
    if (ctx && !json_is_null(ctx) && !(json_is_object(ctx) && json_object_size(ctx) == 0)) {
        json_decref(body);
        snprintf(detail, dlen,
                 "Context API is disabled. Set accept_context_api=True on "
                 "WorkflowServer to enable it.");
        return 400;
    }
    json_t *start = json_object_get(body, "start_event");
    if (start == NULL || json_is_null(start))
        start = json_object_get(body, "kwargs");
    json_t *parsed = NULL;
    if (json_is_string(start)) { /* a JSON-encoded string, as the reference accepts */
        parsed = wf__json_load(json_string_value(start), json_string_length(start), NULL);
        if (parsed)
            start = parsed;
    }
    json_t *empty = NULL;
    if (start == NULL || json_is_null(start))
        start = empty = json_object();
    wf_event *ev = NULL;
    int rc = wf__json_start(w->wf, start, &ev, &msg);
    json_decref(parsed);
    json_decref(empty);
    if (rc < 0) {
        json_decref(body);
        snprintf(detail, dlen, "Validation error for 'start_event': %s",
                 msg ? msg : wf_strerror(rc));
        wf_json_free_message(msg);
        return 400;
    }
    const char *want = json_string_value(json_object_get(body, "handler_id"));
    srv_rec *r = calloc(1, sizeof *r);
    if (r == NULL) {
        json_decref(body);
        wf_event_release(ev);
        snprintf(detail, dlen, "out of memory");
        return 500;
    }
    if (want && *want && strlen(want) < sizeof r->id)
        strcpy(r->id, want);
    else
        new_id(r->id);
    json_decref(body);
    r->w = w;
    atomic_init(&r->refs, 2); /* the table's and the caller's */
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->started_at = r->updated_at = now_s();

    /* a handler_id of a running run is refused; of an ended one, the new run replaces it */
    pthread_mutex_lock(&s->lock);
    srv_rec *old = table_find(s, r->id);
    if (old) {
        pthread_mutex_lock(&old->lock);
        int running = !old->ended;
        pthread_mutex_unlock(&old->lock);
        if (running) {
            pthread_mutex_unlock(&s->lock);
            snprintf(detail, dlen, "Handler %s is already running", r->id);
            wf_event_release(ev);
            atomic_store(&r->refs, 1);
            rec_unref(r);
            return 409;
        }
        table_remove(s, old);
    }
    pthread_mutex_unlock(&s->lock);

    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.stream_internal = 1;
    pthread_mutex_lock(&s->inject_lock);
    rc = wf_run_start_ex(s->ex, w->wf, NULL, ev, &rp, &r->h, &msg);
    pthread_mutex_unlock(&s->inject_lock);
    if (rc < 0) {
        snprintf(detail, dlen, "Error running workflow: %s", msg ? msg : wf_strerror(rc));
        wf_free(msg);
        atomic_store(&r->refs, 1);
        rec_unref(r);
        return 500;
    }
    snprintf(r->run_id, sizeof r->run_id, "%llu", (unsigned long long)wf_handler_run_id(r->h));
    pthread_mutex_lock(&s->lock);
    if (atomic_load(&s->stopping))
        wf_handler_cancel(r->h); /* missed by the shutdown's sweep */
    rc = table_insert(s, r);
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) {
        wf_handler_cancel(r->h);
        atomic_store(&r->refs, 1);
        rec_unref(r);
        snprintf(detail, dlen, "out of memory");
        return 500;
    }
    *out = r;
    return 0;
}

static enum MHD_Result post_run(wf_server *s, const srv_wf *w, struct MHD_Connection *c,
                                conn_state *cs, int wait)
{
    char detail[4096];
    srv_rec *r = NULL;
    int st = start_run(s, w, cs, &r, detail, sizeof detail);
    if (st)
        return reply_detail(c, (unsigned)st, "%s", detail);
    if (wait) {
        pump(r);
    } else {
        pump_arg *a = malloc(sizeof *a);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        pthread_t t;
        int ok = 0;
        if (a) {
            a->s = s;
            a->r = r;
            atomic_fetch_add(&r->refs, 1);
            pthread_mutex_lock(&s->lock);
            s->pumps++;
            pthread_mutex_unlock(&s->lock);
            ok = pthread_create(&t, &attr, pump_main, a) == 0;
            if (!ok) {
                pthread_mutex_lock(&s->lock);
                s->pumps--;
                pthread_mutex_unlock(&s->lock);
                rec_unref(r);
                free(a);
            }
        }
        pthread_attr_destroy(&attr);
        if (!ok) {
            wf_handler_cancel(r->h);
            pump(r); /* ends at once: the run is cancelled */
        }
    }
    wf_json_buf b;
    wf_json_buf_init(&b);
    write_handler(&b, r, 0);
    unsigned status = 200;
    if (wait) {
        pthread_mutex_lock(&r->lock);
        status = r->status == ST_COMPLETED ? 200 : 500;
        pthread_mutex_unlock(&r->lock);
    }
    rec_unref(r);
    enum MHD_Result ret = reply_json(c, status, &b);
    wf_json_buf_free(&b);
    return ret;
}

/* ------------------------------------------------------------ handlers */

static enum MHD_Result get_handler(wf_server *s, struct MHD_Connection *c, const char *id,
                                   int compat)
{
    srv_rec *r = lookup(s, id);
    if (r == NULL)
        return reply_detail(c, 404, "Handler not found");
    wf_json_buf b;
    wf_json_buf_init(&b);
    write_handler(&b, r, compat);
    enum MHD_Result ret = reply_json(c, (unsigned)http_status_of(r), &b);
    rec_unref(r);
    wf_json_buf_free(&b);
    return ret;
}

typedef struct filter {
    const char *status[8];
    const char *wf[32];
    int n_status, n_wf;
    int has_status, has_wf;
} filter;

static enum MHD_Result collect_filter(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    filter *f = cls;
    if (value == NULL || *value == 0)
        return MHD_YES;
    if (strcmp(key, "status") == 0) {
        f->has_status = 1;
        if (f->n_status < 8)
            f->status[f->n_status++] = value;
    } else if (strcmp(key, "workflow_name") == 0) {
        f->has_wf = 1;
        if (f->n_wf < 32)
            f->wf[f->n_wf++] = value;
    }
    return MHD_YES;
}

static enum MHD_Result get_handlers(wf_server *s, struct MHD_Connection *c)
{
    filter f = {0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_filter, &f);
    wf_json_buf b;
    wf_json_buf_init(&b);
    put(&b, "{\"handlers\":[");
    int n = 0;
    pthread_mutex_lock(&s->lock);
    for (srv_rec *r = s->head; r; r = r->next) {
        if (f.has_status) {
            pthread_mutex_lock(&r->lock);
            const char *st = status_names[r->ended ? r->status : ST_RUNNING];
            pthread_mutex_unlock(&r->lock);
            int ok = 0;
            for (int i = 0; i < f.n_status; i++)
                ok |= strcmp(f.status[i], st) == 0;
            if (!ok)
                continue;
        }
        if (f.has_wf) {
            int ok = 0;
            for (int i = 0; i < f.n_wf; i++)
                ok |= strcmp(f.wf[i], r->w->name) == 0;
            if (!ok)
                continue;
        }
        if (n++)
            put(&b, ",");
        write_handler(&b, r, 0);
    }
    pthread_mutex_unlock(&s->lock);
    put(&b, "]}");
    enum MHD_Result ret = reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return ret;
}

static enum MHD_Result post_cancel(wf_server *s, struct MHD_Connection *c, const char *id)
{
    int purge = query_true(c, "purge", 0);
    srv_rec *r = lookup(s, id);
    if (r == NULL)
        return reply_detail(c, 404, "Handler not found");
    pthread_mutex_lock(&s->inject_lock);
    wf_handler_cancel(r->h); /* WF_ESTATE when it had ended: nothing to do */
    pthread_mutex_unlock(&s->inject_lock);
    if (purge) {
        pthread_mutex_lock(&s->lock);
        if (r->listed)
            table_remove(s, r);
        pthread_mutex_unlock(&s->lock);
    }
    rec_unref(r);
    const char *body = purge ? "{\"status\":\"deleted\"}" : "{\"status\":\"cancelled\"}";
    return reply(c, 200, "application/json", body, strlen(body));
}

static enum MHD_Result post_event(wf_server *s, struct MHD_Connection *c, const char *id,
                                  conn_state *cs)
{
    char *msg = NULL;
    json_t *body = wf__json_load(cs->body ? cs->body : "", cs->len, &msg);
    if (body == NULL || !json_is_object(body)) {
        enum MHD_Result ret =
            reply_detail(c, 400, "Error processing request: %s",
                         msg ? msg : "the body must be a JSON object {\"event\": ...}");
        wf_json_free_message(msg);
        json_decref(body);
        return ret;
    }
    json_t *evj = json_object_get(body, "event");
    if (evj == NULL || json_is_null(evj) || (json_is_string(evj) && !*json_string_value(evj)) ||
        (json_is_object(evj) && json_object_size(evj) == 0)) {
        json_decref(body);
        return reply_detail(c, 400, "Event data is required");
    }
    json_t *step = json_object_get(body, "step");
    srv_rec *r = lookup(s, id);
    if (r == NULL) {
        json_decref(body);
        return reply_detail(c, 404, "Handler not found");
    }
    pthread_mutex_lock(&r->lock);
    int ended = r->ended;
    pthread_mutex_unlock(&r->lock);
    enum MHD_Result ret;
    json_t *parsed = NULL, *env = NULL;
    wf_event *ev = NULL;
    if (ended) {
        ret = reply_detail(c, 409, "Workflow already completed");
        goto out;
    }
    if (json_is_string(evj)) { /* a JSON-encoded envelope, for backward compatibility */
        parsed = wf__json_load(json_string_value(evj), json_string_length(evj), NULL);
        evj = parsed;
    }
    if (!json_is_object(evj)) {
        ret = reply_detail(c, 400,
                           "Failed to deserialize event. Must be a json object, or "
                           "stringified json object");
        goto out;
    }
    json_t *type = json_object_get(evj, "type");
    json_t *value = json_object_get(evj, "value");
    if (value == NULL)
        value = json_object_get(evj, "data");
    if (!json_is_string(type)) {
        ret = reply_detail(c, 400,
                           "Failed to deserialize event: an event needs a string member "
                           "\"type\" (the event's class name)");
        goto out;
    }
    wf_registry *reg = wf_workflow_registry(r->w->wf);
    if (wf_registry_find(reg, json_string_value(type)) == NULL ||
        is_internal_type(wf_registry_find(reg, json_string_value(type)))) {
        wf_json_buf b;
        wf_json_buf_init(&b);
        for (size_t i = 0, n = 0; i < wf_registry_count(reg); i++) {
            const wf_event_type *t = wf_registry_type_at(reg, i);
            if (t && !is_internal_type(t)) {
                if (n++)
                    put(&b, ", ");
                put(&b, wf_event_type_name(t));
            }
        }
        ret = reply_detail(c, 400, "Invalid event type: %s. Expected one of %s",
                           json_string_value(type), b.data ? b.data : "");
        wf_json_buf_free(&b);
        goto out;
    }
    env = json_pack("{s:O}", "type", type);
    if (env && value && !json_is_null(value))
        json_object_set(env, "value", value);
    int rc = env ? wf__json_event_envelope(reg, env, &ev, &msg) : WF_ENOMEM;
    if (rc < 0) {
        ret = reply_detail(c, 400, "Failed to deserialize event: %s", msg ? msg : wf_strerror(rc));
        wf_json_free_message(msg);
        goto out;
    }
    pthread_mutex_lock(&s->inject_lock);
    rc = wf_handler_send_event(r->h, ev, json_string_value(step));
    pthread_mutex_unlock(&s->inject_lock);
    ev = NULL;
    if (rc == WF_ESTATE)
        ret = reply_detail(c, 409, "Workflow already completed");
    else if (rc == WF_ENOTFOUND || rc == WF_ETYPE)
        ret = reply_detail(c, 400, "Cannot send the event to step '%s': %s",
                           json_string_value(step) ? json_string_value(step) : "", wf_strerror(rc));
    else if (rc < 0)
        ret = reply_detail(c, 500, "Error sending the event: %s", wf_strerror(rc));
    else
        ret = reply(c, 200, "application/json", "{\"status\":\"sent\"}", 17);
out:
    wf_event_release(ev);
    json_decref(env);
    json_decref(parsed);
    json_decref(body);
    rec_unref(r);
    return ret;
}

/* ------------------------------------------------------------ event streams */

typedef struct stream_rd {
    wf_server *s;
    srv_rec *r;
    int64_t next; /* sequence number of the next entry to look at */
    int internal, sse, qn;
    int fd;
    char *buf; /* the text of the event being sent */
    size_t len, off, cap;
} stream_rd;

static int peer_gone(int fd)
{
    if (fd < 0)
        return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* With r->lock held: formats entry e into rd->buf. */
static int format_entry(stream_rd *rd, int64_t seq, const srv_entry *e)
{
    size_t need = e->len + 96;
    if (need > rd->cap) {
        char *nb = realloc(rd->buf, need);
        if (nb == NULL)
            return -1;
        rd->buf = nb;
        rd->cap = need;
    }
    size_t n = 0;
    if (rd->sse)
        n = (size_t)sprintf(rd->buf, "id: %lld\ndata: ", (long long)seq);
    if (rd->qn) {
        memcpy(rd->buf + n, e->text, e->len);
        n += e->len;
    } else {
        memcpy(rd->buf + n, e->text, e->qn_off);
        n += e->qn_off;
        memcpy(rd->buf + n, ",\"qualified_name\":null}", 23);
        n += 23;
    }
    memcpy(rd->buf + n, rd->sse ? "\n\n" : "\n", rd->sse ? 2 : 1);
    n += rd->sse ? 2 : 1;
    rd->len = n;
    rd->off = 0;
    return 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    stream_rd *rd = cls;
    if (rd->off == rd->len) {
        srv_rec *r = rd->r;
        pthread_mutex_lock(&r->lock);
        for (;;) {
            int got = 0;
            while (rd->next < (int64_t)r->n_log) {
                const srv_entry *e = &r->log[rd->next];
                int64_t seq = rd->next++;
                if (e->internal && !rd->internal)
                    continue;
                if (format_entry(rd, seq, e) < 0) {
                    pthread_mutex_unlock(&r->lock);
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                }
                got = 1;
                break;
            }
            if (got)
                break;
            if (r->ended) {
                pthread_mutex_unlock(&r->lock);
                return MHD_CONTENT_READER_END_OF_STREAM;
            }
            if (atomic_load(&rd->s->stopping)) {
                pthread_mutex_unlock(&r->lock);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            /* wake now and then to notice a reader that went away */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 250 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) == ETIMEDOUT && peer_gone(rd->fd)) {
                pthread_mutex_unlock(&r->lock);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        pthread_mutex_unlock(&r->lock);
    }
    size_t n = rd->len - rd->off;
    if (n > max)
        n = max;
    memcpy(out, rd->buf + rd->off, n);
    rd->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    stream_rd *rd = cls;
    rec_unref(rd->r);
    free(rd->buf);
    free(rd);
}

static enum MHD_Result get_events(wf_server *s, struct MHD_Connection *c, const char *id)
{
    int sse = query_true(c, "sse", 1);
    int internal = query_true(c, "include_internal", 0);
    int qn = query_true(c, "include_qualified_name", 1);
    const char *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after_sequence");
    int now = after == NULL || strcasecmp(after, "now") == 0;
    long long after_seq = -1;
    if (!now) {
        char *end;
        errno = 0;
        after_seq = strtoll(after, &end, 10);
        if (errno || end == after || *end)
            return reply_detail(c, 400, "Invalid after_sequence: '%s'", after);
    }
    if (sse) { /* the Last-Event-ID header of a reconnecting EventSource wins */
        const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
        if (last) {
            char *end;
            errno = 0;
            long long v = strtoll(last, &end, 10);
            if (!errno && end != last && !*end) {
                after_seq = v;
                now = 0;
            }
        }
    }
    srv_rec *r = lookup(s, id);
    if (r == NULL)
        return reply_detail(c, 404, "Handler not found");
    pthread_mutex_lock(&r->lock);
    if (now)
        after_seq = (long long)r->n_log - 1;
    if (after_seq < -1)
        after_seq = -1;
    int done = r->ended && after_seq + 1 >= (long long)r->n_log;
    pthread_mutex_unlock(&r->lock);
    if (done) { /* the run ended and every event was read */
        rec_unref(r);
        return reply(c, 204, NULL, "", 0);
    }
    stream_rd *rd = calloc(1, sizeof *rd);
    if (rd == NULL) {
        rec_unref(r);
        return reply_detail(c, 500, "out of memory");
    }
    rd->s = s;
    rd->r = r;
    rd->next = after_seq + 1;
    rd->internal = internal;
    rd->sse = sse;
    rd->qn = qn;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    rd->fd = ci ? ci->connect_fd : -1;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                  stream_read, rd, stream_free);
    if (resp == NULL) {
        stream_free(rd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            sse ? "text/event-stream" : "application/x-ndjson");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    cors(c, resp);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ------------------------------------------------------------ the debugger UI */

static const char index_html[] =
    "<!doctype html>\n<html lang=\"en\">\n  <head>\n    <meta charset=\"UTF-8\" />\n"
    "    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\" />\n"
    "    <title>workflow-debugger</title>\n"
    "    <script type=\"module\" crossorigin src=\"/app.js\"></script>\n"
    "    <link rel=\"stylesheet\" crossorigin href=\"/app.css\">\n  </head>\n  <body>\n"
    "    <div id=\"root\"></div>\n  </body>\n</html>\n";

static const char no_ui_html[] =
    "<!doctype html>\n<html><head><title>wf serve</title></head><body>\n"
    "<p>wf serve: the debugger UI is not installed. Install it with\n"
    "<code>npm install @llamaindex/workflow-debugger@0.2.42</code> and start\n"
    "<code>wf serve --ui node_modules/@llamaindex/workflow-debugger/dist</code>.</p>\n"
    "</body></html>\n";

static const char *mime_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    static const char *const map[][2] = {
        {".js", "text/javascript"},   {".mjs", "text/javascript"},   {".css", "text/css"},
        {".html", "text/html"},       {".json", "application/json"}, {".svg", "image/svg+xml"},
        {".png", "image/png"},        {".woff2", "font/woff2"},      {".woff", "font/woff"},
        {".map", "application/json"}, {".ico", "image/x-icon"},      {".wasm", "application/wasm"}};
    if (dot)
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (strcmp(dot, map[i][0]) == 0)
                return map[i][1];
    return "application/octet-stream";
}

static enum MHD_Result get_static(wf_server *s, struct MHD_Connection *c, const char *url)
{
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
        if (s->ui_dir == NULL)
            return reply(c, 200, "text/html; charset=utf-8", no_ui_html, sizeof no_ui_html - 1);
        return reply(c, 200, "text/html; charset=utf-8", index_html, sizeof index_html - 1);
    }
    if (s->ui_dir == NULL || strstr(url, "..") || strlen(url) > 512)
        return reply_detail(c, 404, "Not Found");
    char path[1100];
    snprintf(path, sizeof path, "%s%s", s->ui_dir, url);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return reply_detail(c, 404, "Not Found");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (resp == NULL) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, mime_of(path));
    cors(c, resp);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ------------------------------------------------------------ routing */

/* Splits "/a/b/c" into at most 4 segments (pointers into copy). */
static int split(char *copy, char *seg[4])
{
    int n = 0;
    char *p = copy;
    if (*p == '/')
        p++;
    while (*p && n < 4) {
        seg[n++] = p;
        char *sl = strchr(p, '/');
        if (sl == NULL)
            break;
        *sl = 0;
        p = sl + 1;
        if (*p == 0)
            break;
        if (n == 4)
            return 5; /* too many */
    }
    return n;
}

static enum MHD_Result route(wf_server *s, struct MHD_Connection *c, const char *url,
                             const char *method, conn_state *cs)
{
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    if (strcmp(method, "OPTIONS") == 0) { /* CORS preflight */
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        if (resp == NULL)
            return MHD_NO;
        cors(c, resp);
        MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                                "GET, POST, PUT, DELETE, OPTIONS, PATCH, HEAD");
        const char *rh =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", rh ? rh : "*");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    char copy[1024];
    if (strlen(url) >= sizeof copy)
        return reply_detail(c, 404, "Not Found");
    strcpy(copy, url);
    char *seg[4] = {0};
    int n = split(copy, seg);
    int known = 1; /* the path is an API route (for 405 instead of 404) */
    if (n == 1 && strcmp(seg[0], "health") == 0) {
        if (get)
            return reply(c, 200, "application/json", "{\"status\":\"healthy\"}", 20);
    } else if (n == 1 && strcmp(seg[0], "workflows") == 0) {
        if (get)
            return get_workflows(s, c);
    } else if (n == 1 && strcmp(seg[0], "handlers") == 0) {
        if (get)
            return get_handlers(s, c);
    } else if (n == 3 && strcmp(seg[0], "workflows") == 0) {
        const char *op = seg[2];
        int is_post = strcmp(op, "run") == 0 || strcmp(op, "run-nowait") == 0;
        int is_get = strcmp(op, "schema") == 0 || strcmp(op, "representation") == 0 ||
                     strcmp(op, "events") == 0;
        if (!is_post && !is_get)
            return reply_detail(c, 404, "Not Found");
        if ((is_post && !post) || (is_get && !get))
            return reply_detail(c, 405, "Method Not Allowed");
        const srv_wf *w = find_wf(s, seg[1], strlen(seg[1]));
        if (w == NULL)
            return reply_detail(c, 404, is_post ? "Workflow not found" : "Workflow '%s' not found",
                                seg[1]);
        if (strcmp(op, "run") == 0)
            return post_run(s, w, c, cs, 1);
        if (strcmp(op, "run-nowait") == 0)
            return post_run(s, w, c, cs, 0);
        if (strcmp(op, "schema") == 0)
            return get_schema(w, c);
        if (strcmp(op, "representation") == 0)
            return get_representation(w, c);
        return get_events_list(w, c);
    } else if (n == 2 && strcmp(seg[0], "results") == 0) {
        if (get)
            return get_handler(s, c, seg[1], 1);
    } else if (n == 2 && strcmp(seg[0], "events") == 0) {
        if (get)
            return get_events(s, c, seg[1]);
        if (post)
            return post_event(s, c, seg[1], cs);
    } else if (n == 2 && strcmp(seg[0], "handlers") == 0) {
        if (get)
            return get_handler(s, c, seg[1], 0);
    } else if (n == 3 && strcmp(seg[0], "handlers") == 0 && strcmp(seg[2], "cancel") == 0) {
        if (post)
            return post_cancel(s, c, seg[1]);
    } else {
        known = 0;
    }
    if (known)
        return reply_detail(c, 405, "Method Not Allowed");
    if (get)
        return get_static(s, c, url);
    return reply_detail(c, 404, "Not Found");
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)version;
    wf_server *s = cls;
    conn_state *cs = *con_cls;
    if (cs == NULL) {
        cs = calloc(1, sizeof *cs);
        if (cs == NULL)
            return MHD_NO;
        *con_cls = cs;
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        /* A body over the limit is read and dropped, then refused: a client still
         * sending when the connection closes would not see the answer. Past
         * 64 times the limit, the answer goes at once. */
        unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
        if (n > s->body_limit) {
            cs->too_big = 1;
            if (n / 64 > s->body_limit)
                return reply_detail(c, 413, "Request body too large (limit %zu bytes)",
                                    s->body_limit);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cs->too_big) {
            if (cs->len + *upload_size > s->body_limit) {
                cs->too_big = 1;
            } else {
                if (cs->len + *upload_size + 1 > cs->cap) {
                    size_t cap = cs->cap ? cs->cap : 1024;
                    while (cap < cs->len + *upload_size + 1)
                        cap *= 2;
                    char *nb = realloc(cs->body, cap);
                    if (nb == NULL)
                        return MHD_NO;
                    cs->body = nb;
                    cs->cap = cap;
                }
                memcpy(cs->body + cs->len, upload, *upload_size);
                cs->len += *upload_size;
                cs->body[cs->len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (cs->too_big)
        return reply_detail(c, 413, "Request body too large (limit %zu bytes)", s->body_limit);
    return route(s, c, url, method, cs);
}

static void completed_cb(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    conn_state *cs = *con_cls;
    if (cs) {
        free(cs->body);
        free(cs);
        *con_cls = NULL;
    }
}

/* ------------------------------------------------------------ the server */

void wf_server_params_init(wf_server_params *p)
{
    memset(p, 0, sizeof *p);
    p->host = "127.0.0.1";
    p->port = 8080;
    p->body_limit = 1 << 20;
    p->max_handlers = 10000;
    p->max_connections = 2048;
}

static int fail(char **message, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char **message, int rc, const char *fmt, ...)
{
    if (message) {
        char text[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        *message = strdup(text);
    }
    return rc;
}

int wf_server_new(wf_server **out, const wf_server_params *p, char **message)
{
    if (message)
        *message = NULL;
    *out = NULL;
    wf_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return WF_ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->inject_lock, NULL);
    pthread_cond_init(&s->pumps_cond, NULL);
    s->body_limit = p->body_limit;
    s->max_handlers = p->max_handlers ? p->max_handlers : 1;
    int rc = 0;
    size_t total = 0;
    for (size_t i = 0; i < p->n_plugins; i++)
        total += wf_plugin_workflow_count(p->plugins[i]);
    s->wfs = calloc(total ? total : 1, sizeof *s->wfs);
    if (s->wfs == NULL) {
        rc = WF_ENOMEM;
        goto err;
    }
    for (size_t i = 0; i < p->n_plugins; i++) {
        for (size_t k = 0; k < wf_plugin_workflow_count(p->plugins[i]); k++) {
            const char *name = wf_plugin_workflow_name(p->plugins[i], k);
            char *msg = NULL;
            wf_workflow *wf;
            if ((rc = wf_plugin_workflow(p->plugins[i], name, &wf, &msg)) < 0 ||
                (rc = wf_workflow_freeze(wf, &msg)) < 0) {
                fail(message, rc, "workflow '%s': %s", name, msg ? msg : wf_strerror(rc));
                wf_free(msg);
                goto err;
            }
            if (find_wf(s, name, strlen(name))) {
                rc = fail(message, WF_EEXIST, "two plugins serve a workflow called '%s'", name);
                goto err;
            }
            s->wfs[s->n_wfs].name = name;
            s->wfs[s->n_wfs].wf = wf;
            s->wfs[s->n_wfs].plugin = wf_plugin_name(p->plugins[i]);
            s->n_wfs++;
        }
    }
    if (p->ui_dir) {
        struct stat st;
        char app[1100];
        snprintf(app, sizeof app, "%s/app.js", p->ui_dir);
        if (stat(app, &st) == 0)
            s->ui_dir = strdup(p->ui_dir);
    }
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = p->threads;
    if ((rc = wf_executor_new(&s->ex, &ep)) < 0) {
        fail(message, rc, "cannot start the executor: %s", wf_strerror(rc));
        goto err;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(p->port);
    if (inet_pton(AF_INET, p->host ? p->host : "127.0.0.1", &addr.sin_addr) != 1) {
        rc = fail(message, WF_EINVAL, "'%s' is not an IPv4 address", p->host);
        goto err;
    }
    /* poll(), not select(): past FD_SETSIZE (1024) descriptors select() cannot wait */
    s->d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ITC,
        p->port, NULL, NULL, access_cb, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(p->max_connections ? p->max_connections : 2048),
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024), MHD_OPTION_NOTIFY_COMPLETED,
        completed_cb, s, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024U, MHD_OPTION_END);
    if (s->d == NULL) {
        rc = fail(message, WF_ENOTFOUND, "cannot listen on %s:%u", p->host, (unsigned)p->port);
        goto err;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    if (di && getsockname(di->listen_fd, (struct sockaddr *)&got, &gl) == 0)
        s->port = ntohs(got.sin_port);
    else
        s->port = p->port;
    *out = s;
    return 0;
err:
    wf_server_free(s);
    return rc;
}

uint16_t wf_server_port(const wf_server *s)
{
    return s->port;
}

static void cancel_all(wf_server *s)
{
    pthread_mutex_lock(&s->lock);
    for (srv_rec *r = s->head; r; r = r->next) {
        wf_handler_cancel(r->h);
        pthread_mutex_lock(&r->lock);
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

void wf_server_free(wf_server *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stopping, 1);
    if (s->d) {
        MHD_socket ls = MHD_quiesce_daemon(s->d); /* ours to close, after the stop */
        cancel_all(s); /* ends the waits of POST .../run and the streams */
        MHD_stop_daemon(s->d);
        if (ls != MHD_INVALID_SOCKET)
            close(ls);
    }
    cancel_all(s);
    pthread_mutex_lock(&s->lock);
    while (s->pumps)
        pthread_cond_wait(&s->pumps_cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    wf_executor_free(s->ex);
    while (s->head) {
        pthread_mutex_lock(&s->lock);
        table_remove(s, s->head);
        pthread_mutex_unlock(&s->lock);
    }
    free(s->table);
    free(s->wfs);
    free(s->ui_dir);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->inject_lock);
    pthread_cond_destroy(&s->pumps_cond);
    free(s);
}
