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
#include "server_impl.h"

/* ------------------------------------------------------------ small helpers */

double wf__srv_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* n digits of v into p (most significant first). */
static char *put_digits(char *p, long v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + n;
}

/*
 * Python's datetime.isoformat() of an aware UTC time (32 characters and a
 * NUL). Digits by hand: three per handler answer, snprintf showed in the
 * profile of POST /run.
 */
void wf__srv_iso_time(double t, char out[64])
{
    time_t sec = (time_t)t;
    long us = (long)((t - (double)sec) * 1e6);
    if (us > 999999)
        us = 999999;
    /*
     * The civil date of the day number by arithmetic (H. Hinnant's
     * civil_from_days), not gmtime_r: glibc's takes its time-zone lock,
     * three times a handler answer from every HTTP thread.
     */
    long long days = (long long)sec / 86400, rem = (long long)sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    long long z = days + 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    long mday = (long)(doy - (153 * mp + 2) / 5 + 1);
    long mon = (long)(mp < 10 ? mp + 3 : mp - 9);
    long year = (long)(yoe + era * 400 + (mon <= 2));
    char *p = put_digits(out, year, 4);
    *p++ = '-';
    p = put_digits(p, mon, 2);
    *p++ = '-';
    p = put_digits(p, mday, 2);
    *p++ = 'T';
    p = put_digits(p, (long)(rem / 3600), 2);
    *p++ = ':';
    p = put_digits(p, (long)(rem / 60 % 60), 2);
    *p++ = ':';
    p = put_digits(p, (long)(rem % 60), 2);
    *p++ = '.';
    p = put_digits(p, us, 6);
    memcpy(p, "+00:00", 7);
}

/*
 * A 10-character id of [A-Za-z0-9], as the reference's nanoid. The random
 * bytes come from a per-thread buffer refilled 256 bytes at a time: one
 * getrandom() call per request showed in POST /run's profile.
 */
void wf__srv_new_id(char out[11])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    static _Thread_local unsigned char r[256];
    static _Thread_local size_t used = sizeof r;
    size_t n = 0;
    while (n < 10) {
        if (used == sizeof r) {
            if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
                /* no entropy source: the time and a counter are unique enough here */
                static atomic_uint ctr;
                unsigned long long x = (unsigned long long)(wf__srv_now_s() * 1e6) ^
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

void wf__srv_put(wf_json_buf *b, const char *s)
{
    wf_json_buf_append(b, s, strlen(s));
}

void wf__srv_put_str(wf_json_buf *b, const char *s)
{
    if (s)
        wf_json_write_string(b, s, strlen(s));
    else
        wf__srv_put(b, "null");
}

static void put_time(wf_json_buf *b, double t)
{
    if (t <= 0) {
        wf__srv_put(b, "null");
        return;
    }
    char iso[64];
    wf__srv_iso_time(t, iso);
    wf__srv_put_str(b, iso);
}

/* ------------------------------------------------------------ records */

void wf__srv_rec_unref(srv_rec *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (size_t i = 0; i < r->n_log; i++)
        wf_event_release(r->log[i].ev);
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
srv_rec *wf__srv_table_find(wf_server *s, const char *id)
{
    if (s->table_cap == 0)
        return NULL;
    for (srv_rec *r = s->table[id_hash(id) & (s->table_cap - 1)]; r; r = r->hnext)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

/* With s->lock held: unlinks r from the table and the list, drops the table's reference. */
void wf__srv_table_remove(wf_server *s, srv_rec *r)
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
    wf__srv_rec_unref(r);
}

/* With s->lock held: takes the caller's reference. WF_ENOMEM. */
int wf__srv_table_insert(wf_server *s, srv_rec *r)
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
            wf__srv_table_remove(s, x);
        x = nx;
    }
    return 0;
}

/* The record called id with a reference for the caller (wf__srv_rec_unref), or NULL. */
srv_rec *wf__srv_lookup(wf_server *s, const char *id)
{
    pthread_mutex_lock(&s->lock);
    srv_rec *r = wf__srv_table_find(s, id);
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* ------------------------------------------------------------ handler JSON */

/* The reference's HandlerData. compat: GET /results' form of result. */
void wf__srv_write_handler(wf_json_buf *b, srv_rec *r, int compat)
{
    pthread_mutex_lock(&r->lock);
    wf__srv_put(b, "{\"handler_id\":");
    wf__srv_put_str(b, r->id);
    wf__srv_put(b, ",\"workflow_name\":");
    wf__srv_put_str(b, r->w->name);
    wf__srv_put(b, ",\"run_id\":");
    wf__srv_put_str(b, r->run_id);
    wf__srv_put(b, ",\"error\":");
    wf__srv_put_str(b, r->error);
    wf__srv_put(b, ",\"result\":");
    const char *res = compat ? r->result_compat : r->result;
    wf__srv_put(b, res ? res : "null");
    wf__srv_put(b, ",\"status\":");
    wf__srv_put_str(b, status_names[r->status]);
    wf__srv_put(b, ",\"started_at\":");
    put_time(b, r->started_at);
    wf__srv_put(b, ",\"updated_at\":");
    put_time(b, r->updated_at);
    wf__srv_put(b, ",\"completed_at\":");
    put_time(b, r->ended ? r->completed_at : 0);
    wf__srv_put(b, "}");
    pthread_mutex_unlock(&r->lock);
}

int wf__srv_http_status_of(srv_rec *r)
{
    pthread_mutex_lock(&r->lock);
    int st = r->ended ? r->status : ST_RUNNING;
    pthread_mutex_unlock(&r->lock);
    return st == ST_RUNNING ? 202 : st == ST_COMPLETED ? 200 : 500;
}

/* ------------------------------------------------------------ responses */

void wf__srv_cors(struct MHD_Connection *c, struct MHD_Response *resp)
{
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true");
        MHD_add_response_header(resp, "Vary", "Origin");
    }
}

enum MHD_Result wf__srv_reply(struct MHD_Connection *c, unsigned status, const char *type,
                              const char *data, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    if (type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    wf__srv_cors(c, resp);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Hands b's memory to the response (no copy); b is left empty. */
enum MHD_Result wf__srv_reply_json(struct MHD_Connection *c, unsigned status, wf_json_buf *b)
{
    if (b->oom || b->data == NULL)
        return b->oom ? wf__srv_reply(c, 500, "application/json",
                                      "{\"detail\":\"out of memory\"}", 26)
                      : wf__srv_reply(c, status, "application/json", "", 0);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(b->len, b->data, free);
    if (resp == NULL)
        return MHD_NO; /* b keeps its memory: the caller frees it */
    wf_json_buf_init(b);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    wf__srv_cors(c, resp);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* {"detail": text}, the reference's error body. */
enum MHD_Result wf__srv_reply_detail(struct MHD_Connection *c, unsigned status, const char *fmt,
                                     ...) __attribute__((format(printf, 3, 4)));
enum MHD_Result wf__srv_reply_detail(struct MHD_Connection *c, unsigned status, const char *fmt,
                                     ...)
{
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf__srv_put(&b, "{\"detail\":");
    wf__srv_put_str(&b, text);
    wf__srv_put(&b, "}");
    enum MHD_Result r = wf__srv_reply_json(c, status, &b);
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

int wf__srv_query_true(struct MHD_Connection *c, const char *key, int dflt)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    if (v == NULL)
        return dflt;
    return strcasecmp(v, "true") == 0;
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
        wf__srv_cors(c, resp);
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
        return wf__srv_reply_detail(c, 404, "Not Found");
    strcpy(copy, url);
    char *seg[4] = {0};
    int n = split(copy, seg);
    int known = 1; /* the path is an API route (for 405 instead of 404) */
    if (n == 1 && strcmp(seg[0], "health") == 0) {
        if (get)
            return wf__srv_reply(c, 200, "application/json", "{\"status\":\"healthy\"}", 20);
    } else if (n == 1 && strcmp(seg[0], "workflows") == 0) {
        if (get)
            return wf__srv_get_workflows(s, c);
    } else if (n == 1 && strcmp(seg[0], "handlers") == 0) {
        if (get)
            return wf__srv_get_handlers(s, c);
    } else if (n == 3 && strcmp(seg[0], "workflows") == 0) {
        const char *op = seg[2];
        int is_post = strcmp(op, "run") == 0 || strcmp(op, "run-nowait") == 0;
        int is_get = strcmp(op, "schema") == 0 || strcmp(op, "representation") == 0 ||
                     strcmp(op, "events") == 0;
        if (!is_post && !is_get)
            return wf__srv_reply_detail(c, 404, "Not Found");
        if ((is_post && !post) || (is_get && !get))
            return wf__srv_reply_detail(c, 405, "Method Not Allowed");
        const srv_wf *w = find_wf(s, seg[1], strlen(seg[1]));
        if (w == NULL)
            return wf__srv_reply_detail(
                c, 404, is_post ? "Workflow not found" : "Workflow '%s' not found", seg[1]);
        if (strcmp(op, "run") == 0)
            return wf__srv_post_run(s, w, c, cs, 1);
        if (strcmp(op, "run-nowait") == 0)
            return wf__srv_post_run(s, w, c, cs, 0);
        if (strcmp(op, "schema") == 0)
            return wf__srv_get_schema(w, c);
        if (strcmp(op, "representation") == 0)
            return wf__srv_get_representation(w, c);
        return wf__srv_get_events_list(w, c);
    } else if (n == 2 && strcmp(seg[0], "results") == 0) {
        if (get)
            return wf__srv_get_handler(s, c, seg[1], 1);
    } else if (n == 2 && strcmp(seg[0], "events") == 0) {
        if (get)
            return wf__srv_get_events(s, c, seg[1]);
        if (post)
            return wf__srv_post_event(s, c, seg[1], cs);
    } else if (n == 2 && strcmp(seg[0], "handlers") == 0) {
        if (get)
            return wf__srv_get_handler(s, c, seg[1], 0);
    } else if (n == 3 && strcmp(seg[0], "handlers") == 0 && strcmp(seg[2], "cancel") == 0) {
        if (post)
            return wf__srv_post_cancel(s, c, seg[1]);
    } else {
        known = 0;
    }
    if (known)
        return wf__srv_reply_detail(c, 405, "Method Not Allowed");
    if (get)
        return wf__srv_get_static(s, c, url);
    return wf__srv_reply_detail(c, 404, "Not Found");
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
                return wf__srv_reply_detail(c, 413, "Request body too large (limit %zu bytes)",
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
        return wf__srv_reply_detail(c, 413, "Request body too large (limit %zu bytes)",
                                    s->body_limit);
    return route(s, c, url, method, cs);
}

static void completed_cb(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    conn_state *cs = *con_cls;
    if (cs) {
        if (cs->run) { /* closed while it waited for its run */
            pthread_mutex_lock(&cs->run->lock);
            if (cs->run->resume == c)
                cs->run->resume = NULL;
            pthread_mutex_unlock(&cs->run->lock);
            wf__srv_rec_unref(cs->run);
        }
        if (cs->counted)
            wf__srv_unsuspended((wf_server *)cls);
        free(cs->body);
        free(cs);
        *con_cls = NULL;
    }
}

/*
 * Bytes of libmicrohttpd's per-connection memory pool: the request line and
 * headers, the read buffer and the response headers (bodies are copied out
 * by access_cb). libmicrohttpd zeroes the whole pool between two requests
 * of a keep-alive connection: at its default of 32 KiB that memset was 6%
 * of the server's CPU under POST /run (docs/PERFORMANCE.md). Request
 * headers beyond it are refused with 431.
 */
#define CONN_POOL_BYTES (16u * 1024u)

/* Seconds an idle connection stays open (see the daemon's start). */
#define IDLE_TIMEOUT_S 10

/* ------------------------------------------------------------ suspended connections */

/* Suspends c unless the server is stopping: 1 suspended (counted), 0 not. */
int wf__srv_suspend(wf_server *s, struct MHD_Connection *c)
{
    atomic_fetch_add(&s->suspended, 1);
    if (atomic_load(&s->no_suspend)) { /* stopping */
        wf__srv_unsuspended(s);
        return 0;
    }
    MHD_suspend_connection(c);
    return 1;
}

/* A suspended connection is back in one of our callbacks (or closed). */
void wf__srv_unsuspended(wf_server *s)
{
    if (atomic_fetch_sub(&s->suspended, 1) == 1 && atomic_load(&s->no_suspend)) {
        pthread_mutex_lock(&s->susp_lock); /* the shutdown waits: see the struct */
        pthread_cond_broadcast(&s->susp_cond);
        pthread_mutex_unlock(&s->susp_lock);
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
    p->first_step_here = 1;
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
    pthread_mutex_init(&s->susp_lock, NULL);
    pthread_cond_init(&s->susp_cond, NULL);
    s->body_limit = p->body_limit;
    s->max_handlers = p->max_handlers ? p->max_handlers : 1;
    s->run_here = p->first_step_here != 0;
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
    if (p->store && (rc = wf__srv_durable_start(s, p->store, message)) < 0)
        goto err;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(p->port);
    if (inet_pton(AF_INET, p->host ? p->host : "127.0.0.1", &addr.sin_addr) != 1) {
        rc = fail(message, WF_EINVAL, "'%s' is not an IPv4 address", p->host);
        goto err;
    }
    /*
     * epoll and a pool of threads, one a core: no thread per connection,
     * and no connection thread ever waits. A POST .../run and a stream
     * reader with nothing to send are suspended until the run resumes them
     * (streams.c); on 2 cores this cost about 40% less server CPU per run
     * than a thread per connection (docs/PERFORMANCE.md).
     */
    /*
     * In this mode libmicrohttpd 0.9.75 does not always close a connection
     * whose client shut its side down (garbage, or a request and a
     * half-close): an idle connection is closed after IDLE_TIMEOUT_S.
     * Suspended ones (a waiting POST .../run, a stream reader) do not time
     * out.
     */
    long cores = p->http_threads ? (long)p->http_threads : sysconf(_SC_NPROCESSORS_ONLN);
    s->d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC, p->port, NULL, NULL,
        access_cb, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)(cores > 1 ? cores : 1), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(p->max_connections ? p->max_connections : 2048),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_POOL_BYTES, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024U, MHD_OPTION_END);
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
        atomic_store(&s->no_suspend, 1);
        wf__srv_durable_stop(s); /* a store: its runs stay in flight there, not cancelled */
        cancel_all(s); /* ends the runs: their ends resume what waits for them */
        /* MHD_stop_daemon aborts with a connection still suspended: wait for them */
        pthread_mutex_lock(&s->susp_lock);
        while (atomic_load(&s->suspended)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&s->susp_cond, &s->susp_lock, &ts) == ETIMEDOUT) {
                pthread_mutex_unlock(&s->susp_lock);
                cancel_all(s); /* a run started since the first sweep */
                pthread_mutex_lock(&s->susp_lock);
            }
        }
        pthread_mutex_unlock(&s->susp_lock);
        MHD_stop_daemon(s->d);
        if (ls != MHD_INVALID_SOCKET)
            close(ls);
    }
    wf__srv_durable_stop(s); /* (when it failed to start the daemon) */
    cancel_all(s);
    pthread_mutex_lock(&s->lock); /* the reader threads end with their runs */
    while (atomic_load(&s->pumps))
        pthread_cond_wait(&s->pumps_cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    wf_executor_free(s->ex); /* after the cancels: every on_done has run */
    while (s->head) {
        pthread_mutex_lock(&s->lock);
        wf__srv_table_remove(s, s->head);
        pthread_mutex_unlock(&s->lock);
    }
    free(s->table);
    free(s->wfs);
    free(s->ui_dir);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->inject_lock);
    pthread_cond_destroy(&s->pumps_cond);
    pthread_mutex_destroy(&s->susp_lock);
    pthread_cond_destroy(&s->susp_cond);
    free(s);
}
