/*
 * durable.c: wf serve with a run store (wf_server_params.store, wf serve
 * --store): every run started through the API is a durable run whose run
 * id is its handler id, so it outlives the process. At startup the store's
 * runs of the served workflows become handler records again:
 *   - in flight, ours (this server's owner; a restart after a stop or a
 *     crash): recovered into the executor and continued, a live record;
 *   - ended: a record with the stored status and result (GET /results);
 *   - released (idle, waiting for an event; left by wf run --store, say) or
 *     held by another owner: a record without a handler, "running"; an
 *     event posted to it loads it (wf_durable_send) and the record is
 *     replaced by a live one.
 * A recovered or loaded run has no on_done of ours (the engine's recovery
 * starts it): wf_handler_on_done gives it ours, so no thread waits for any
 * run, however many are recovered. At shutdown the executor is freed before anything is cancelled:
 * the runs in flight are checkpointed and stay in flight in the store
 * (wf_server_free's cancel would finish them as cancelled).
 */
#include "server_impl.h"

static srv_rec *rec_new(const srv_wf *w, const char *id)
{
    srv_rec *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    snprintf(r->id, sizeof r->id, "%s", id);
    r->w = w;
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->started_at = r->updated_at = wf__srv_now_s();
    return r;
}

/* With s->lock held: r in the table, replacing a record of its id. Takes a reference. */
static int put_rec(wf_server *s, srv_rec *r)
{
    srv_rec *old = wf__srv_table_find(s, r->id);
    if (old)
        wf__srv_table_remove(s, old);
    return wf__srv_table_insert(s, r);
}

/*
 * The durable run id in memory in s->ex as a live record (replacing one of
 * its id), whose end is seen by our on_done (wf_handler_on_done). 0,
 * WF_ENOTFOUND (not in memory), WF_ENOMEM.
 */
static int adopt(wf_server *s, const srv_wf *w, const char *id)
{
    srv_rec *r = rec_new(w, id);
    if (r == NULL)
        return WF_ENOMEM;
    int rc = wf_handler_open(s->ex, id, &r->h);
    if (rc < 0) {
        wf__srv_rec_unref(r);
        return rc;
    }
    snprintf(r->run_id, sizeof r->run_id, "%llu", (unsigned long long)wf_handler_run_id(r->h));
    atomic_store(&r->refs, 2); /* the table's and on_done's */
    pthread_mutex_lock(&s->lock);
    rc = put_rec(s, r);
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) {
        wf__srv_rec_unref(r);
        wf__srv_rec_unref(r);
        return rc;
    }
    /* a run that ended meanwhile is finished here, now */
    if ((rc = wf_handler_on_done(r->h, wf__srv_on_done, r)) < 0) {
        wf__srv_rec_unref(r); /* on_done's: it stays "running" in the table */
        return rc;
    }
    return 0;
}

/* A record of an ended run from the store: its status, error and result. */
static srv_rec *ended_rec(wf_server *s, const srv_wf *w, const wf_store_run_info *in)
{
    srv_rec *r = rec_new(w, in->run_id);
    if (r == NULL)
        return NULL;
    snprintf(r->run_id, sizeof r->run_id, "%s", in->run_id);
    r->started_at = (double)in->created_ms / 1000.0;
    r->updated_at = r->completed_at = (double)in->updated_ms / 1000.0;
    r->ended = 1;
    r->end_seen = 1;
    wf_run_status status = WF_RUN_FAILED;
    wf_event *res = NULL;
    int rc = wf_durable_result(s->ex, w->wf, in->run_id, &status, &res);
    wf_json_buf b;
    wf_json_buf_init(&b);
    if (rc == 0 && status == WF_RUN_DONE && res) {
        r->status = ST_COMPLETED;
        if (wf__srv_envelope(&b, res, w->plugin) == 0 && b.data)
            r->result = strdup(b.data);
        wf_json_buf_reset(&b);
        wf_value v;
        int which;
        if (wf__srv_is_builtin(wf_event_type_of(res), &which) && which == WF_STOP_EVENT &&
            wf_event_lookup(res, "result", &v) == 0)
            wf_json_write_value(&b, v);
        else
            wf_json_write_fields(&b, res);
        if (!b.oom && b.data)
            r->result_compat = strdup(b.data);
    } else {
        r->status = status == WF_RUN_CANCELLED ? ST_CANCELLED : ST_FAILED;
        if (res)
            wf_json_write_event(&b, res);
        char text[2048];
        snprintf(text, sizeof text, "%s (stored)%s%.*s",
                 status == WF_RUN_CANCELLED   ? "the run was cancelled"
                 : status == WF_RUN_TIMED_OUT ? "timed out"
                 : rc < 0                     ? wf_strerror(rc)
                                              : "the run failed",
                 b.len ? ": " : "", (int)b.len, b.data ? b.data : "");
        r->error = strdup(text);
    }
    wf_json_buf_free(&b);
    wf_event_release(res);
    return r;
}

typedef struct load_state {
    wf_server *s;
    int rc;
    int counting;         /* the first pass: counts the ended runs */
    uint64_t ended, skip; /* ended runs seen; the oldest ones not loaded */
} load_state;

static const srv_wf *served(wf_server *s, const char *name)
{
    for (size_t i = 0; name && i < s->n_wfs; i++)
        if (strcmp(s->wfs[i].name, name) == 0)
            return &s->wfs[i];
    return NULL;
}

static int load_one(const wf_store_run_info *in, void *user)
{
    load_state *ls = user;
    wf_server *s = ls->s;
    const srv_wf *w = served(s, in->workflow);
    if (w == NULL || in->run_id == NULL || strlen(in->run_id) >= sizeof ((srv_rec *)0)->id)
        return 0; /* not ours to serve, or an id no handler can have */
    if (in->status >= WF_STORE_DONE && ls->ended++ < ls->skip)
        return 0; /* more ended runs than --max-handlers keeps: the oldest stay in the store */
    if (ls->counting)
        return 0;
    int rc = adopt(s, w, in->run_id);
    if (rc == 0)
        return 0;
    if (rc != WF_ENOTFOUND) {
        ls->rc = rc;
        return 1;
    }
    srv_rec *r;
    if (in->status >= WF_STORE_DONE) {
        r = ended_rec(s, w, in);
    } else { /* released, or another owner's: no handler until an event loads it */
        r = rec_new(w, in->run_id);
        if (r) {
            snprintf(r->run_id, sizeof r->run_id, "%s", in->run_id);
            r->started_at = (double)in->created_ms / 1000.0;
            r->updated_at = (double)in->updated_ms / 1000.0;
        }
    }
    pthread_mutex_lock(&s->lock);
    rc = r ? put_rec(s, r) : WF_ENOMEM;
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) {
        wf__srv_rec_unref(r);
        ls->rc = rc;
        return 1;
    }
    return 0;
}

int wf__srv_durable_start(wf_server *s, wf_store *st, char **message)
{
    s->store = st;
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    int rc = wf_executor_attach_store(s->ex, st, &dp);
    if (rc < 0) {
        if (message)
            *message = strdup("cannot attach the store to the executor");
        return rc;
    }
    wf_workflow **wfs = calloc(s->n_wfs ? s->n_wfs : 1, sizeof *wfs);
    if (wfs == NULL)
        return WF_ENOMEM;
    for (size_t i = 0; i < s->n_wfs; i++)
        wfs[i] = s->wfs[i].wf;
    wf_recover_info ri;
    char *msg = NULL;
    rc = wf_executor_recover(s->ex, wfs, s->n_wfs, &ri, &msg);
    free(wfs);
    if (rc < 0) {
        if (message) {
            char text[2048];
            snprintf(text, sizeof text, "recovering the store's runs: %s",
                     msg ? msg : wf_strerror(rc));
            *message = strdup(text);
        }
        wf_free(msg);
        return rc;
    }
    wf_free(msg); /* runs that could not be continued stay in the store, as they were */
    /* two passes: the count of ended runs, then the runs, the ended ones
     * from the newest s->max_handlers on (each costs a read and a decode) */
    load_state ls = {s, 0, 1, 0, 0};
    uint64_t cursor = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            ls.counting = 0;
            ls.skip = ls.ended > s->max_handlers ? ls.ended - s->max_handlers : 0;
            ls.ended = 0;
            cursor = 0;
        }
        do {
            rc = wf_store_list(st, pass ? WF_STORE_MASK_ALL : WF_STORE_MASK_ALL & ~WF_STORE_MASK_INFLIGHT,
                               cursor, 1000, load_one, &ls, &cursor);
        } while (rc == 0 && ls.rc == 0 && cursor);
        if (rc == 0)
            rc = ls.rc;
        if (rc < 0)
            break;
    }
    if (rc < 0 && message)
        *message = strdup("loading the store's runs");
    return rc;
}

int wf__srv_durable_send(wf_server *s, srv_rec *r, wf_event *ev, const char *step)
{
    pthread_mutex_lock(&s->inject_lock);
    /* another POST loaded it meanwhile: the live record of its id takes the event */
    srv_rec *cur = wf__srv_lookup(s, r->id);
    if (cur && cur->h) {
        int rc = wf_handler_send_event(cur->h, ev, step);
        pthread_mutex_unlock(&s->inject_lock);
        wf__srv_rec_unref(cur);
        return rc;
    }
    wf__srv_rec_unref(cur);
    int rc = s->ex ? wf_durable_send(s->ex, r->id, ev, step) : (wf_event_release(ev), WF_ECANCELLED);
    if (rc == 0)
        rc = adopt(s, r->w, r->id);
    /* WF_ENOTFOUND: loaded and ended at once; the store has its result */
    if (rc == WF_ENOTFOUND) {
        wf_store_run_info in;
        memset(&in, 0, sizeof in);
        if (wf_store_get_run(s->store, r->id, &in) == 0 && in.status >= WF_STORE_DONE) {
            srv_rec *e = ended_rec(s, r->w, &in);
            pthread_mutex_lock(&s->lock);
            rc = e ? put_rec(s, e) : WF_ENOMEM;
            pthread_mutex_unlock(&s->lock);
            if (rc < 0)
                wf__srv_rec_unref(e);
        }
        wf_store_run_info_clear(&in);
    }
    pthread_mutex_unlock(&s->inject_lock);
    return rc;
}

void wf__srv_durable_stop(wf_server *s)
{
    if (s->store == NULL)
        return;
    /* ends every run of the executor without finishing it in the store */
    pthread_mutex_lock(&s->inject_lock);
    wf_executor *ex = s->ex;
    s->ex = NULL;
    pthread_mutex_unlock(&s->inject_lock);
    wf_executor_free(ex); /* the runs' ends (on_done) have all come when it returns */
}
