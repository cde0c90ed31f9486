/*
 * routes.c: wf serve's routes on workflows, runs and handlers (their JSON
 * shapes are the reference server's, docs/CLI.md), and the debugger UI's
 * files. Locks as server.c says: the server lock before a record's lock.
 */
#include "server_impl.h"

/* ------------------------------------------------------------ workflows */

enum MHD_Result wf__srv_get_workflows(wf_server *s, struct MHD_Connection *c)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf__srv_put(&b, "{\"workflows\":[");
    for (size_t i = 0; i < s->n_wfs; i++) {
        if (i)
            wf__srv_put(&b, ",");
        wf__srv_put_str(&b, s->wfs[i].name);
    }
    wf__srv_put(&b, "]}");
    enum MHD_Result r = wf__srv_reply_json(c, 200, &b);
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
    for (const wf_event_type *a = t; a; a = wf_event_type_parent(a))
        if (wf_event_type_schema(a)) {
            wf_json_write_schema(b, t); /* a declared schema (schema.h) */
            return;
        }
    wf__srv_put(b, "{\"title\":");
    wf__srv_put_str(b, wf_event_type_name(t));
    wf__srv_put(b, ",\"type\":\"object\",\"properties\":");
    int which = -1;
    wf__srv_is_builtin(t, &which);
    if (which == WF_HUMAN_RESPONSE_EVENT)
        wf__srv_put(b, "{\"response\":{\"title\":\"Response\",\"type\":\"string\"}},\"required\":["
                       "\"response\"]");
    else if (which == WF_INPUT_REQUIRED_EVENT)
        wf__srv_put(b, "{\"prefix\":{\"title\":\"Prefix\",\"type\":\"string\"}}");
    else if (which == WF_STOP_EVENT)
        wf__srv_put(b, "{\"result\":{\"title\":\"Result\"}}");
    else
        wf__srv_put(b, "{}");
    wf__srv_put(b, ",\"additionalProperties\":true}");
}

enum MHD_Result wf__srv_get_schema(const srv_wf *w, struct MHD_Connection *c)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf__srv_put(&b, "{\"start\":");
    put_schema(&b, wf_workflow_start_type(w->wf));
    wf__srv_put(&b, ",\"stop\":");
    put_schema(&b, wf_workflow_stop_type(w->wf));
    wf__srv_put(&b, "}");
    enum MHD_Result r = wf__srv_reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return r;
}

enum MHD_Result wf__srv_get_events_list(const srv_wf *w, struct MHD_Connection *c)
{
    wf_registry *reg = wf_workflow_registry(w->wf);
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf__srv_put(&b, "{\"events\":[");
    int n = 0;
    for (size_t i = 0; i < wf_registry_count(reg); i++) {
        const wf_event_type *t = wf_registry_type_at(reg, i);
        if (t == NULL || wf__srv_is_internal_type(t))
            continue;
        if (n++)
            wf__srv_put(&b, ",");
        put_schema(&b, t);
    }
    wf__srv_put(&b, "]}");
    enum MHD_Result r = wf__srv_reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return r;
}

/* The reference's {"graph": WorkflowGraph}, built by libwf-json (wf_json_write_representation). */
enum MHD_Result wf__srv_get_representation(const srv_wf *w, struct MHD_Connection *c)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf__srv_put(&b, "{\"graph\":");
    int rc = wf_json_write_representation(&b, w->wf);
    wf__srv_put(&b, "}");
    enum MHD_Result r =
        rc < 0 ? wf__srv_reply_detail(c, 500, wf_strerror(rc)) : wf__srv_reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return r;
}

/* ------------------------------------------------------------ runs */

#ifdef WF_HAVE_YAJL
#include "flat.h"

/*
 * The start event of a body that is exactly {"start_event": OBJECT} with a
 * flat OBJECT (the clients' usual run request), without jansson's tree:
 * flat.c takes OBJECT only when the general path (wf__json_start) would
 * give the very same event (test json_flat), and anything else about the
 * body (other members, a handler_id, whitespace flat.c does not take) goes
 * to the general path, which also words every error. 1 with *ev, else 0.
 */
static int flat_body(const srv_wf *w, const char *b, size_t n, wf_event **ev)
{
    static _Thread_local void *arena; /* yajl's memory, kept by this HTTP thread */
    static const char key[] = "\"start_event\"";
    size_t i = 0;
    while (i < n && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t'))
        i++;
    if (i == n || b[i++] != '{')
        return 0;
    while (i < n && b[i] == ' ')
        i++;
    if (n - i < sizeof key - 1 || memcmp(b + i, key, sizeof key - 1) != 0)
        return 0;
    i += sizeof key - 1;
    while (i < n && b[i] == ' ')
        i++;
    if (i == n || b[i++] != ':')
        return 0;
    while (i < n && b[i] == ' ')
        i++;
    size_t e = n; /* the body's closing brace: after it, only whitespace */
    while (e > i && (b[e - 1] == ' ' || b[e - 1] == '\n' || b[e - 1] == '\r' || b[e - 1] == '\t'))
        e--;
    if (e == i || b[e - 1] != '}')
        return 0;
    e--;
    wf_value id;
    int has_id;
    int rc = cli_flat_start(wf_workflow_start_type(w->wf), b + i, e - i, &arena, ev, &id, &has_id);
    wf_value_release(id);
    return rc == 1;
}
#endif

/* Parses the run body; 0 or an HTTP status with *detail set (static or malloc'd in *freeme). */
static int start_run(wf_server *s, const srv_wf *w, conn_state *cs, int wait, srv_rec **out,
                     char *detail, size_t dlen)
{
    json_t *body = NULL;
    char *msg = NULL;
    wf_event *ev = NULL;
    int rc;
#ifdef WF_HAVE_YAJL
    if (cs->len > 0 && flat_body(w, cs->body, cs->len, &ev)) {
        body = json_object(); /* no handler_id, no context: the body had start_event only */
        if (body == NULL) {
            wf_event_release(ev);
            snprintf(detail, dlen, "out of memory");
            return 500;
        }
        goto parsed;
    }
#endif
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
    rc = wf__json_start(w->wf, start, &ev, &msg);
    json_decref(parsed);
    json_decref(empty);
    if (rc < 0) {
        json_decref(body);
        snprintf(detail, dlen, "Validation error for 'start_event': %s",
                 msg ? msg : wf_strerror(rc));
        wf_json_free_message(msg);
        return 400;
    }
#ifdef WF_HAVE_YAJL
parsed:;
#endif
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
        wf__srv_new_id(r->id);
    json_decref(body);
    r->w = w;
    atomic_init(&r->refs, 3); /* the table's, the caller's and the run's on_done */
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->started_at = r->updated_at = wf__srv_now_s();

    /* a handler_id of a running run is refused; of an ended one, the new run replaces it */
    pthread_mutex_lock(&s->lock);
    srv_rec *old = wf__srv_table_find(s, r->id);
    if (old) {
        pthread_mutex_lock(&old->lock);
        int running = !old->ended;
        pthread_mutex_unlock(&old->lock);
        if (running || s->store) { /* with a store, an id is a durable run's for good */
            pthread_mutex_unlock(&s->lock);
            snprintf(detail, dlen, running ? "Handler %s is already running"
                                           : "Handler %s already exists in the store", r->id);
            wf_event_release(ev);
            atomic_store(&r->refs, 1);
            wf__srv_rec_unref(r);
            return 409;
        }
        wf__srv_table_remove(s, old);
    }
    pthread_mutex_unlock(&s->lock);

    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.stream_internal = 1;
    rp.on_done = wf__srv_on_done;
    rp.on_done_user = r;
    /*
     * POST .../run (not run-nowait, which answers at once): the run's first
     * step runs here, on this HTTP thread, as the reference runs its steps
     * on its event loop, so a run that its first step ends (the quick
     * start) is answered without a hand-off to a worker and back; what the
     * step emits goes to the executor. A blocking step (wf_step_params
     * .blocking: I/O, a model call) still goes to the blocking pool. Not
     * under inject_lock (a step must not hold the other HTTP threads up):
     * what it injects meets at most the other HTTP threads'.
     */
    rp.run_here = s->run_here && wait;
    if (!rp.run_here)
        pthread_mutex_lock(&s->inject_lock);
    if (s->store) /* durable (durable.c): the handler id is the run id */
        rc = s->ex ? wf_run_start_durable(s->ex, w->wf, NULL, r->id, ev, &rp, &r->h, &msg)
                   : (wf_event_release(ev), WF_ECANCELLED);
    else
        rc = wf_run_start_ex(s->ex, w->wf, NULL, ev, &rp, &r->h, &msg);
    if (!rp.run_here)
        pthread_mutex_unlock(&s->inject_lock);
    if (rc < 0) { /* on_done will not come */
        int taken = rc == WF_EEXIST; /* in the store, not in the table */
        snprintf(detail, dlen, taken ? "Handler %s already exists in the store"
                                     : "Error running workflow: %s",
                 taken ? r->id : msg ? msg : wf_strerror(rc));
        wf_free(msg);
        atomic_store(&r->refs, 1);
        wf__srv_rec_unref(r);
        return taken ? 409 : rc == WF_ECANCELLED ? 503 : 500;
    }
    snprintf(r->run_id, sizeof r->run_id, "%llu", (unsigned long long)wf_handler_run_id(r->h));
    pthread_mutex_lock(&s->lock);
    if (atomic_load(&s->stopping))
        wf_handler_cancel(r->h); /* missed by the shutdown's sweep */
    rc = wf__srv_table_insert(s, r);
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) { /* not in the table: the caller's and the table's references go, on_done's stays */
        wf_handler_cancel(r->h);
        wf__srv_rec_unref(r);
        wf__srv_rec_unref(r);
        snprintf(detail, dlen, "out of memory");
        return 500;
    }
    *out = r;
    return 0;
}

enum MHD_Result wf__srv_post_run(wf_server *s, const srv_wf *w, struct MHD_Connection *c,
                                 conn_state *cs, int wait)
{
    char detail[4096];
    srv_rec *r = cs->run; /* resumed: the run it waited for has ended */
    cs->run = NULL;
    if (cs->counted) {
        cs->counted = 0;
        wf__srv_unsuspended(s);
    }
    int st = r ? 0 : start_run(s, w, cs, wait, &r, detail, sizeof detail);
    if (st)
        return wf__srv_reply_detail(c, (unsigned)st, "%s", detail);
    if (wait) { /* the connection waits suspended; the run's end resumes it (streams.c) */
        pthread_mutex_lock(&r->lock);
        if (!r->ended) {
            r->resume = c;
            cs->run = r;
            if (wf__srv_suspend(s, c)) {
                cs->counted = 1;
                pthread_mutex_unlock(&r->lock);
                return MHD_YES;
            }
            /* stopping: its run was cancelled, it ends at once; wait here */
            r->resume = NULL;
            cs->run = NULL;
            while (!r->ended)
                pthread_cond_wait(&r->cond, &r->lock);
        }
        pthread_mutex_unlock(&r->lock);
    }
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf__srv_write_handler(&b, r, 0);
    unsigned status = 200;
    if (wait) {
        pthread_mutex_lock(&r->lock);
        status = r->status == ST_COMPLETED ? 200 : 500;
        pthread_mutex_unlock(&r->lock);
    }
    wf__srv_rec_unref(r);
    enum MHD_Result ret = wf__srv_reply_json(c, status, &b);
    wf_json_buf_free(&b);
    return ret;
}

/* ------------------------------------------------------------ handlers */

enum MHD_Result wf__srv_get_handler(wf_server *s, struct MHD_Connection *c, const char *id,
                                    int compat)
{
    srv_rec *r = wf__srv_lookup(s, id);
    if (r == NULL)
        return wf__srv_reply_detail(c, 404, "Handler not found");
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf__srv_write_handler(&b, r, compat);
    enum MHD_Result ret = wf__srv_reply_json(c, (unsigned)wf__srv_http_status_of(r), &b);
    wf__srv_rec_unref(r);
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

enum MHD_Result wf__srv_get_handlers(wf_server *s, struct MHD_Connection *c)
{
    filter f = {0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_filter, &f);
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf__srv_put(&b, "{\"handlers\":[");
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
            wf__srv_put(&b, ",");
        wf__srv_write_handler(&b, r, 0);
    }
    pthread_mutex_unlock(&s->lock);
    wf__srv_put(&b, "]}");
    enum MHD_Result ret = wf__srv_reply_json(c, 200, &b);
    wf_json_buf_free(&b);
    return ret;
}

enum MHD_Result wf__srv_post_cancel(wf_server *s, struct MHD_Connection *c, const char *id)
{
    int purge = wf__srv_query_true(c, "purge", 0);
    srv_rec *r = wf__srv_lookup(s, id);
    if (r == NULL)
        return wf__srv_reply_detail(c, 404, "Handler not found");
    if (r->h == NULL && !r->ended) { /* released in the store (durable.c) */
        wf__srv_rec_unref(r);
        return wf__srv_reply_detail(c, 409, "Handler %s is released in the store: send it an "
                                            "event first, or cancel it with wf runs cancel", id);
    }
    pthread_mutex_lock(&s->inject_lock);
    wf_handler_cancel(r->h); /* WF_ESTATE when it had ended: nothing to do */
    pthread_mutex_unlock(&s->inject_lock);
    if (purge) {
        pthread_mutex_lock(&s->lock);
        if (r->listed)
            wf__srv_table_remove(s, r);
        pthread_mutex_unlock(&s->lock);
    }
    wf__srv_rec_unref(r);
    const char *body = purge ? "{\"status\":\"deleted\"}" : "{\"status\":\"cancelled\"}";
    return wf__srv_reply(c, 200, "application/json", body, strlen(body));
}

enum MHD_Result wf__srv_post_event(wf_server *s, struct MHD_Connection *c, const char *id,
                                   conn_state *cs)
{
    char *msg = NULL;
    json_t *body = wf__json_load(cs->body ? cs->body : "", cs->len, &msg);
    if (body == NULL || !json_is_object(body)) {
        enum MHD_Result ret =
            wf__srv_reply_detail(c, 400, "Error processing request: %s",
                                 msg ? msg : "the body must be a JSON object {\"event\": ...}");
        wf_json_free_message(msg);
        json_decref(body);
        return ret;
    }
    json_t *evj = json_object_get(body, "event");
    if (evj == NULL || json_is_null(evj) || (json_is_string(evj) && !*json_string_value(evj)) ||
        (json_is_object(evj) && json_object_size(evj) == 0)) {
        json_decref(body);
        return wf__srv_reply_detail(c, 400, "Event data is required");
    }
    json_t *step = json_object_get(body, "step");
    srv_rec *r = wf__srv_lookup(s, id);
    if (r == NULL) {
        json_decref(body);
        return wf__srv_reply_detail(c, 404, "Handler not found");
    }
    pthread_mutex_lock(&r->lock);
    int ended = r->ended;
    pthread_mutex_unlock(&r->lock);
    enum MHD_Result ret;
    json_t *parsed = NULL, *env = NULL;
    wf_event *ev = NULL;
    if (ended) {
        ret = wf__srv_reply_detail(c, 409, "Workflow already completed");
        goto out;
    }
    if (json_is_string(evj)) { /* a JSON-encoded envelope, for backward compatibility */
        parsed = wf__json_load(json_string_value(evj), json_string_length(evj), NULL);
        evj = parsed;
    }
    if (!json_is_object(evj)) {
        ret = wf__srv_reply_detail(c, 400,
                                   "Failed to deserialize event. Must be a json object, or "
                                   "stringified json object");
        goto out;
    }
    json_t *type = json_object_get(evj, "type");
    json_t *value = json_object_get(evj, "value");
    if (value == NULL)
        value = json_object_get(evj, "data");
    if (!json_is_string(type)) {
        ret = wf__srv_reply_detail(c, 400,
                                   "Failed to deserialize event: an event needs a string member "
                                   "\"type\" (the event's class name)");
        goto out;
    }
    wf_registry *reg = wf_workflow_registry(r->w->wf);
    if (wf_registry_find(reg, json_string_value(type)) == NULL ||
        wf__srv_is_internal_type(wf_registry_find(reg, json_string_value(type)))) {
        wf_json_buf b;
        wf_json_buf_init(&b);
        for (size_t i = 0, n = 0; i < wf_registry_count(reg); i++) {
            const wf_event_type *t = wf_registry_type_at(reg, i);
            if (t && !wf__srv_is_internal_type(t)) {
                if (n++)
                    wf__srv_put(&b, ", ");
                wf__srv_put(&b, wf_event_type_name(t));
            }
        }
        ret = wf__srv_reply_detail(c, 400, "Invalid event type: %s. Expected one of %s",
                                   json_string_value(type), b.data ? b.data : "");
        wf_json_buf_free(&b);
        goto out;
    }
    env = json_pack("{s:O}", "type", type);
    if (env && value && !json_is_null(value))
        json_object_set(env, "value", value);
    int rc = env ? wf__json_event_envelope(reg, env, &ev, &msg) : WF_ENOMEM;
    if (rc < 0) {
        ret = wf__srv_reply_detail(c, 400, "Failed to deserialize event: %s",
                                   msg ? msg : wf_strerror(rc));
        wf_json_free_message(msg);
        goto out;
    }
    if (r->h == NULL) { /* released in the store: the event loads it (durable.c) */
        rc = wf__srv_durable_send(s, r, ev, json_string_value(step));
    } else {
        pthread_mutex_lock(&s->inject_lock);
        rc = wf_handler_send_event(r->h, ev, json_string_value(step));
        pthread_mutex_unlock(&s->inject_lock);
    }
    ev = NULL;
    if (rc == WF_ESTATE)
        ret = wf__srv_reply_detail(c, 409, "Workflow already completed");
    else if (rc == WF_EBUSY)
        ret = wf__srv_reply_detail(c, 409, "Handler %s is held by another process: %s", id,
                                   wf_last_error_message());
    else if (rc == WF_ECANCELLED)
        ret = wf__srv_reply_detail(c, 503, "The server is stopping");
    else if (rc == WF_ENOTFOUND || rc == WF_ETYPE)
        ret = wf__srv_reply_detail(c, 400, "Cannot send the event to step '%s': %s",
                                   json_string_value(step) ? json_string_value(step) : "",
                                   wf_strerror(rc));
    else if (rc < 0)
        ret = wf__srv_reply_detail(c, 500, "Error sending the event: %s", wf_strerror(rc));
    else
        ret = wf__srv_reply(c, 200, "application/json", "{\"status\":\"sent\"}", 17);
out:
    wf_event_release(ev);
    json_decref(env);
    json_decref(parsed);
    json_decref(body);
    wf__srv_rec_unref(r);
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

enum MHD_Result wf__srv_get_static(wf_server *s, struct MHD_Connection *c, const char *url)
{
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
        if (s->ui_dir == NULL)
            return wf__srv_reply(c, 200, "text/html; charset=utf-8", no_ui_html,
                                 sizeof no_ui_html - 1);
        return wf__srv_reply(c, 200, "text/html; charset=utf-8", index_html, sizeof index_html - 1);
    }
    if (s->ui_dir == NULL || strstr(url, "..") || strlen(url) > 512)
        return wf__srv_reply_detail(c, 404, "Not Found");
    char path[1100];
    snprintf(path, sizeof path, "%s%s", s->ui_dir, url);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return wf__srv_reply_detail(c, 404, "Not Found");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (resp == NULL) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, mime_of(path));
    wf__srv_cors(c, resp);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}
