/*
 * streams.c: wf serve's event side: the reader of a run (pump: the run's
 * stream into its record's numbered log, by whoever needs it: the run's
 * on_done, a reader thread while stream readers wait) and GET /events/{id}
 * as SSE or NDJSON (an MHD
 * callback response that copies one logged event at a time as its bounded
 * write buffer drains). Locks as server.c says: a record's lock guards its
 * log and state.
 */
#include "server_impl.h"

/* ------------------------------------------------------------ events as envelopes */

int wf__srv_is_builtin(const wf_event_type *t, int *which)
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

int wf__srv_is_internal_type(const wf_event_type *t)
{
    int b;
    return wf__srv_is_builtin(t, &b) &&
           (b == WF_UNHANDLED_EVENT || b == WF_STEP_STATE_CHANGED || b == WF_WORKFLOW_IDLE_EVENT);
}

/*
 * The reference's EventEnvelopeWithMetadata: value (the fields), type (the
 * class name), types (the parents, nearest first, or null), qualified_name
 * (workflows.events.X for the built-ins, PLUGIN.X for the plugin's types).
 * qn = 0: qualified_name null (include_qualified_name=false).
 */
static int write_envelope(wf_json_buf *b, const wf_event *ev, const char *plugin, int qn)
{
    const wf_event_type *t = wf_event_type_of(ev);
    wf__srv_put(b, "{\"value\":");
    int rc = wf_json_write_fields(b, ev);
    if (rc < 0)
        return rc;
    wf__srv_put(b, ",\"type\":");
    wf__srv_put_str(b, wf_event_type_name(t));
    wf__srv_put(b, ",\"types\":");
    int n = 0;
    if (wf__srv_is_internal_type(t)) {
        wf__srv_put(b, "[\"InternalDispatchEvent\"]");
        n = 1;
    } else {
        for (const wf_event_type *p = wf_event_type_parent(t); p; p = wf_event_type_parent(p)) {
            wf__srv_put(b, n++ ? "," : "[");
            wf__srv_put_str(b, wf_event_type_name(p));
        }
        if (n)
            wf__srv_put(b, "]");
        else
            wf__srv_put(b, "null");
    }
    wf__srv_put(b, ",\"qualified_name\":");
    if (!qn) {
        wf__srv_put(b, "null}");
        return b->oom ? WF_ENOMEM : 0;
    }
    int which;
    const char *pre = wf__srv_is_builtin(t, &which) ? "workflows.events" : plugin;
    const char *name = wf_event_type_name(t);
    size_t pl = strlen(pre), nl = strlen(name);
    char qname[320];
    if (pl + 1 + nl < sizeof qname) { /* no snprintf: one per streamed event */
        memcpy(qname, pre, pl);
        qname[pl] = '.';
        memcpy(qname + pl + 1, name, nl + 1);
    } else {
        snprintf(qname, sizeof qname, "%s.%s", pre, name);
    }
    wf__srv_put_str(b, qname);
    wf__srv_put(b, "}");
    return b->oom ? WF_ENOMEM : 0;
}

/* ------------------------------------------------------------ the reader of a run */

/*
 * A run's stream goes into its record's log lazily, by whoever needs it,
 * and never with a thread of its own waiting for each event (on 2 cores a
 * wake-up per streamed event was most of a POST /run's cost):
 * - when the run ends, its on_done callback (wf__srv_on_done, on an
 *   executor thread) drains the stream, which then holds everything, and
 *   records the final status, error and result; POST /run waits for that
 *   one signal;
 * - while stream readers (GET /events) of a running run wait, suspended, a
 *   reader thread of the run pumps the stream (250 ms at a time) and
 *   resumes them when the log grows;
 * - GET /events from "now" first drains what the stream holds.
 * One pumper at a time (r->pumping, under r->lock): the handler has one
 * reader. When on_done comes while someone else pumps, it leaves the end
 * to that pumper (r->end_seen), which finishes it before letting go.
 */

typedef struct stream_rd {
    wf_server *s;
    srv_rec *r;
    int64_t next; /* sequence number of the next entry to look at */
    int internal, sse, qn;
    int fd;
    struct MHD_Connection *c;
    struct stream_rd *wnext; /* in r->waiters while suspended; under r->lock */
    int waiting;
    int counted; /* suspended, not yet back in stream_read: in the server's count */
    char *buf; /* the text of the event being sent */
    size_t len, off, cap;
} stream_rd;

/*
 * With r->lock held: resumes the suspended stream readers of r (the log
 * grew, the run ended, or the reader thread's 250 ms tick: a reader that
 * hung up notices it when it runs).
 */
static void wake_readers(srv_rec *r)
{
    for (stream_rd *rd = r->waiters; rd; rd = rd->wnext) {
        rd->waiting = 0;
        MHD_resume_connection(rd->c);
    }
    r->waiters = NULL;
}

/*
 * Reads events into the log, waiting up to timeout_ms for the first (0: only
 * what is there). What the stream holds goes in in batches, one lock of the
 * record (and one wake-up of its readers) a batch, not an event.
 */
static void pump_some(srv_rec *r, wf_handler *h, int64_t timeout_ms)
{
    enum { BATCH = 32 };
    for (int first = 1;; first = 0) {
        srv_entry got[BATCH];
        int n = 0, terminal = 0;
        while (n < BATCH && !terminal) {
            wf_event *ev = NULL;
            if (wf_handler_next_event(h, first && n == 0 ? timeout_ms : 0, &ev) < 0)
                break; /* WF_ETIMEDOUT: nothing now; WF_ECLOSED: the terminal event was read */
            const wf_event_type *t = wf_event_type_of(ev);
            terminal = wf_event_type_is_stop(t);
            got[n++] = (srv_entry){.ev = ev, .internal = wf__srv_is_internal_type(t),
                                   .terminal = terminal};
        }
        if (n == 0)
            return;
        double now = wf__srv_now_s();
        pthread_mutex_lock(&r->lock);
        if (r->n_log + (size_t)n > r->cap_log) {
            size_t cap = r->cap_log ? r->cap_log : 16;
            while (cap < r->n_log + (size_t)n)
                cap *= 2;
            srv_entry *nl = realloc(r->log, cap * sizeof *nl);
            if (nl) {
                r->log = nl;
                r->cap_log = cap;
            }
        }
        for (int k = 0; k < n; k++) {
            if (r->n_log < r->cap_log)
                r->log[r->n_log++] = got[k];
            else
                wf_event_release(got[k].ev); /* out of memory: the log misses it (the stream goes on) */
        }
        r->updated_at = now;
        pthread_cond_broadcast(&r->cond);
        wake_readers(r);
        pthread_mutex_unlock(&r->lock);
        if (terminal || n < BATCH)
            return;
    }
}

/* The run ended and its stream was drained: its final status, error and result. */
static void finish(srv_rec *r, wf_handler *h, wf_json_buf *b_)
{
    wf_json_buf b = *b_;
    wf_event *res = NULL;
    int rc = wf_handler_wait(h, 0, &res); /* it ended: does not wait */
    int status;
    char *error = NULL, *result = NULL, *compat = NULL;
    if (rc == 0) {
        status = ST_COMPLETED;
        wf_json_buf_reset(&b);
        if (write_envelope(&b, res, r->w->plugin, 1) == 0)
            result = strdup(b.data);
        wf_json_buf_reset(&b);
        wf_value v;
        int which;
        int plain_stop =
            wf__srv_is_builtin(wf_event_type_of(res), &which) && which == WF_STOP_EVENT;
        if (plain_stop && wf_event_lookup(res, "result", &v) == 0)
            wf_json_write_value(&b, v);
        else
            wf_json_write_fields(&b, res);
        if (!b.oom && b.data)
            compat = strdup(b.data);
    } else {
        int code = 0;
        const char *step = NULL, *m = NULL;
        wf_handler_error(h, &code, &step, &m);
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
    *b_ = b; /* it may have grown */
    pthread_mutex_lock(&r->lock);
    r->status = status;
    r->error = error;
    r->result = result;
    r->result_compat = compat;
    r->completed_at = r->updated_at = wf__srv_now_s();
    r->ended = 1;
    if (r->resume) { /* POST .../run: its connection answers now */
        MHD_resume_connection(r->resume);
        r->resume = NULL;
    }
    wake_readers(r);
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}


/*
 * With r->lock held and nobody pumping: pumps (the lock let go meanwhile)
 * and, once on_done has come, finishes the record. Returns with the lock.
 */
void wf__srv_pump_turn(srv_rec *r, wf_handler *h, int64_t timeout_ms)
{
    r->pumping = 1;
    pthread_mutex_unlock(&r->lock);
    pump_some(r, h, timeout_ms);
    pthread_mutex_lock(&r->lock);
    while (r->end_seen && !r->ended) {
        pthread_mutex_unlock(&r->lock);
        pump_some(r, h, 0); /* the run ended: everything is there */
        wf_json_buf b;
        wf_json_buf_init(&b);
        finish(r, h, &b);
        wf_json_buf_free(&b);
        pthread_mutex_lock(&r->lock);
    }
    r->pumping = 0;
    pthread_cond_broadcast(&r->cond);
}

void wf__srv_on_done(wf_handler *h, void *user)
{
    srv_rec *r = user;
    pthread_mutex_lock(&r->lock);
    r->end_seen = 1;
    if (!r->pumping)
        wf__srv_pump_turn(r, h, 0);
    pthread_mutex_unlock(&r->lock);
    wf__srv_rec_unref(r); /* on_done's reference (start_run) */
}

/* ------------------------------------------------------------ event streams */


static int peer_gone(int fd)
{
    if (fd < 0)
        return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* With r->lock held: formats entry e (sequence number seq) into rd->buf. */
static int format_entry(stream_rd *rd, int64_t seq, const srv_entry *e)
{
    wf_json_buf b = {.data = rd->buf, .cap = rd->cap};
    if (rd->sse) {
        char pre[48];
        int n = snprintf(pre, sizeof pre, "id: %lld\ndata: ", (long long)seq);
        wf_json_buf_append(&b, pre, (size_t)n);
    }
    int rc = write_envelope(&b, e->ev, rd->r->w->plugin, rd->qn);
    wf_json_buf_append(&b, rd->sse ? "\n\n" : "\n", rd->sse ? 2 : 1);
    rd->buf = b.data; /* it may have grown; freed with the reader */
    rd->cap = b.cap;
    if (rc < 0 || b.oom)
        return -1;
    rd->len = b.len;
    rd->off = 0;
    return 0;
}

/*
 * The thread that reads a running run's stream while stream readers wait
 * for it: the readers are suspended connections (libmicrohttpd's threads
 * never wait), resumed when the log grows, when the run ends and every
 * 250 ms. It ends with the run or when its last reader has gone.
 */
typedef struct reader_arg {
    wf_server *s;
    srv_rec *r;
} reader_arg;

static void *reader_main(void *arg)
{
    reader_arg *a = arg;
    srv_rec *r = a->r;
    wf_server *s = a->s;
    free(a);
    pthread_mutex_lock(&r->lock);
    while (!r->ended && r->n_readers > 0) {
        if (!r->pumping) {
            wf__srv_pump_turn(r, r->h, 250);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 250 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
        wake_readers(r);
    }
    wake_readers(r);
    r->reader_thread = 0;
    pthread_mutex_unlock(&r->lock);
    wf__srv_rec_unref(r);
    pthread_mutex_lock(&s->lock);
    if (atomic_fetch_sub(&s->pumps, 1) == 1)
        pthread_cond_broadcast(&s->pumps_cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* With r->lock held: a reader thread for r unless it has one. 0, or -1 when none could start. */
static int need_reader_thread(wf_server *s, srv_rec *r)
{
    if (r->reader_thread)
        return 0;
    reader_arg *a = malloc(sizeof *a);
    if (a == NULL)
        return -1;
    a->s = s;
    a->r = r;
    atomic_fetch_add(&r->refs, 1);
    atomic_fetch_add(&s->pumps, 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    int rc = pthread_create(&t, &attr, reader_main, a);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(a);
        atomic_fetch_sub(&r->refs, 1); /* the caller holds another */
        pthread_mutex_lock(&s->lock);
        if (atomic_fetch_sub(&s->pumps, 1) == 1)
            pthread_cond_broadcast(&s->pumps_cond);
        pthread_mutex_unlock(&s->lock);
        return -1;
    }
    r->reader_thread = 1;
    return 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    stream_rd *rd = cls;
    if (rd->counted) {
        rd->counted = 0;
        wf__srv_unsuspended(rd->s);
    }
    if (rd->off == rd->len) {
        srv_rec *r = rd->r;
        pthread_mutex_lock(&r->lock);
        int got = 0;
        while (rd->next < (int64_t)r->n_log) {
            const srv_entry *e = &r->log[rd->next];
            /*
             * The stop event goes out with the final status: a client that
             * read it and asks for the handler sees it ended (finish wakes
             * this reader).
             */
            if (e->terminal && !r->ended)
                break;
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
        if (!got) {
            if (r->ended) {
                pthread_mutex_unlock(&r->lock);
                return MHD_CONTENT_READER_END_OF_STREAM;
            }
            if (atomic_load(&rd->s->stopping) || peer_gone(rd->fd) ||
                need_reader_thread(rd->s, r) < 0) {
                pthread_mutex_unlock(&r->lock);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            /* nothing yet: wait suspended, never in this thread */
            if (!wf__srv_suspend(rd->s, rd->c)) { /* stopping */
                pthread_mutex_unlock(&r->lock);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            rd->counted = 1;
            rd->wnext = r->waiters;
            r->waiters = rd;
            rd->waiting = 1;
            pthread_mutex_unlock(&r->lock);
            return 0;
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
    srv_rec *r = rd->r;
    pthread_mutex_lock(&r->lock);
    if (rd->waiting) {
        for (stream_rd **p = &r->waiters; *p; p = &(*p)->wnext)
            if (*p == rd) {
                *p = rd->wnext;
                break;
            }
    }
    r->n_readers--;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (rd->counted)
        wf__srv_unsuspended(rd->s);
    wf__srv_rec_unref(r);
    free(rd->buf);
    free(rd);
}

enum MHD_Result wf__srv_get_events(wf_server *s, struct MHD_Connection *c, const char *id)
{
    int sse = wf__srv_query_true(c, "sse", 1);
    int internal = wf__srv_query_true(c, "include_internal", 0);
    int qn = wf__srv_query_true(c, "include_qualified_name", 1);
    const char *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after_sequence");
    int now = after == NULL || strcasecmp(after, "now") == 0;
    long long after_seq = -1;
    if (!now) {
        char *end;
        errno = 0;
        after_seq = strtoll(after, &end, 10);
        if (errno || end == after || *end)
            return wf__srv_reply_detail(c, 400, "Invalid after_sequence: '%s'", after);
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
    srv_rec *r = wf__srv_lookup(s, id);
    if (r == NULL)
        return wf__srv_reply_detail(c, 404, "Handler not found");
    if (r->h == NULL && !r->ended) { /* released in the store (durable.c): nothing streams */
        wf__srv_rec_unref(r);
        return wf__srv_reply(c, 204, NULL, "", 0);
    }
    pthread_mutex_lock(&r->lock);
    if (now && !r->ended && !r->pumping)
        wf__srv_pump_turn(r, r->h, 0); /* "now" counts what the run streamed so far */
    if (now)
        after_seq = (long long)r->n_log - 1;
    if (after_seq < -1)
        after_seq = -1;
    int done = r->ended && after_seq + 1 >= (long long)r->n_log;
    pthread_mutex_unlock(&r->lock);
    if (done) { /* the run ended and every event was read */
        wf__srv_rec_unref(r);
        return wf__srv_reply(c, 204, NULL, "", 0);
    }
    stream_rd *rd = calloc(1, sizeof *rd);
    if (rd == NULL) {
        wf__srv_rec_unref(r);
        return wf__srv_reply_detail(c, 500, "out of memory");
    }
    rd->s = s;
    rd->r = r;
    rd->c = c;
    rd->next = after_seq + 1;
    rd->internal = internal;
    rd->sse = sse;
    rd->qn = qn;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    rd->fd = ci ? ci->connect_fd : -1;
    pthread_mutex_lock(&r->lock);
    r->n_readers++; /* stream_free takes it back */
    pthread_mutex_unlock(&r->lock);
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
    wf__srv_cors(c, resp);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

int wf__srv_envelope(wf_json_buf *b, const wf_event *ev, const char *plugin)
{
    return write_envelope(b, ev, plugin, 1);
}
