/*
 * recover.c: wf_executor_recover, the runs in flight in an executor's
 * store continued after a crash or a restart (docs/DURABILITY.md,
 * "Recovery").
 *
 * Owns nothing shared: it lists the store's runs in flight, claims each
 * (the store's lease), loads its last checkpoint (wf_ctx_load), reads the
 * journal after it (the WF_STORE_REC_SEND records: the start event when
 * the checkpoint holds no run yet, then the events sent from outside) and
 * starts or resumes the run as a durable run of durable.c's table, whose
 * locks it uses through durable_impl.h.
 */
#include "durable_impl.h"

#include <string.h>

typedef struct found {
    char **ids, **wfs;
    size_t n, cap;
    int nomem;
} found;

static int each_run(const wf_store_run_info *info, void *user)
{
    found *f = user;
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 256;
        char **a = wf__realloc(f->ids, nc * sizeof *a);
        if (a)
            f->ids = a;
        char **b = a ? wf__realloc(f->wfs, nc * sizeof *b) : NULL;
        if (b)
            f->wfs = b;
        if (a == NULL || b == NULL) {
            f->nomem = 1;
            return 1;
        }
        f->cap = nc;
    }
    f->ids[f->n] = wf__strdup(info->run_id);
    f->wfs[f->n] = wf__strdup(info->workflow ? info->workflow : "");
    if (f->ids[f->n] == NULL || f->wfs[f->n] == NULL) {
        wf__free_mem(f->ids[f->n]);
        wf__free_mem(f->wfs[f->n]);
        f->nomem = 1;
        return 1;
    }
    f->n++;
    return 0;
}

typedef struct sends {
    const wf_registry *reg;
    wf_event **evs;
    char **targets;
    size_t n, cap;
    int rc;
    char *msg;
} sends;

static int each_rec(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    (void)seq;
    sends *s = user;
    if (kind != WF_STORE_REC_SEND)
        return 0;
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 8;
        wf_event **a = wf__realloc(s->evs, nc * sizeof *a);
        if (a)
            s->evs = a;
        char **b = a ? wf__realloc(s->targets, nc * sizeof *b) : NULL;
        if (b)
            s->targets = b;
        if (a == NULL || b == NULL) {
            s->rc = WF_ENOMEM;
            return 1;
        }
        s->cap = nc;
    }
    s->rc = wf__send_decode(s->reg, data, len, &s->evs[s->n], &s->targets[s->n], &s->msg);
    if (s->rc < 0)
        return 1;
    s->n++;
    return 0;
}

static void sends_free(sends *s, size_t from)
{
    for (size_t i = from; i < s->n; i++) {
        wf_event_release(s->evs[i]);
        wf__free_mem(s->targets[i]);
    }
    wf__free_mem(s->evs);
    wf__free_mem(s->targets);
    wf__free_mem(s->msg);
}

static void note(char **message, uint32_t *failed, const char *fmt, const char *a, const char *b,
                 const char *c)
{
    (*failed)++;
    if (message == NULL || *message)
        return;
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + strlen(c) + 1;
    *message = wf__malloc(n);
    if (*message)
        snprintf(*message, n, fmt, a, b, c);
}

/* Continues one run: 1 resumed, 0 busy (leased), 2 forgotten, < 0 failed (message). */
int wf__recover_one(struct wf_executor *ex, wf_store *store, wf_workflow *wf, const char *run_id,
                    char **why)
{
    wf_store_run_info ci = {0};
    int rc = wf_store_claim(store, run_id, &ci);
    int waiting = ci.status == WF_STORE_WAITING;
    wf_store_run_info_clear(&ci);
    if (rc == WF_ELEASE)
        return 0;
    if (rc < 0) {
        *why = wf__strdup(wf_err_name(rc));
        return rc;
    }
    void *ck = NULL;
    size_t cklen = 0;
    uint64_t from = 0;
    rc = wf_store_get_checkpoint(store, run_id, &ck, &cklen, &from);
    if (rc == WF_ENOTFOUND) {
        rc = 0;
        from = 0;
    }
    wf_ctx *ctx = NULL;
    if (rc == 0 && ck)
        rc = wf_ctx_load(wf, ck, cklen, 0, &ctx, why);
    else if (rc == 0)
        rc = wf_ctx_new(&ctx, wf);
    wf_free(ck);
    if (rc < 0) {
        if (*why == NULL)
            *why = wf__strdup(wf_err_name(rc));
        return rc;
    }
    sends s = {.reg = wf->reg};
    uint64_t next = 0;
    rc = wf_store_read_journal(store, run_id, from, 0, each_rec, &s, &next);
    if (rc == 0)
        rc = s.rc;
    if (rc < 0) {
        *why = s.msg ? s.msg : wf__strdup(wf_err_name(rc));
        s.msg = NULL;
        sends_free(&s, 0);
        wf_ctx_free(ctx);
        return rc;
    }
    wf__lock_take(&ctx->run_lock);
    int parked = ctx->parked != NULL;
    wf__lock_give(&ctx->run_lock);
    if (!parked && s.n == 0) {
        /* its start never became durable: as if it had never been started */
        sends_free(&s, 0);
        wf_ctx_free(ctx);
        rc = wf_store_remove(store, run_id);
        if (rc < 0) {
            *why = wf__strdup(wf_err_name(rc));
            return rc;
        }
        return 2;
    }
    wf__drun *d = wf__drun_new(run_id, ex, store);
    if (d) {
        d->waiting = waiting; /* as the store shows it */
        d->sknown = 0;        /* its stream goes on after the committed events (dstream.c) */
    }
    rc = d ? wf__drun_insert(d) : WF_ENOMEM;
    if (rc < 0) {
        wf__drun_free(d);
        sends_free(&s, 0);
        wf_ctx_free(ctx);
        *why = wf__strdup(rc == WF_EEXIST ? "its id is in use in memory" : wf_err_name(rc));
        return rc;
    }
    wf_handler *h = NULL;
    size_t used = 0;
    char *m = NULL;
    pthread_mutex_lock(&d->m); /* no checkpoint before the journaled events are in */
    wf__tls_durable = d;
    if (parked) {
        rc = wf_run_resume(ex, wf, ctx, NULL, &h, &m);
    } else {
        rc = wf_run_start_ex(ex, wf, ctx, s.evs[0], NULL, &h, &m);
        used = 1; /* taken, also on failure */
    }
    wf__tls_durable = NULL;
    wf_ctx_free(ctx); /* the run holds it */
    if (rc < 0) {
        pthread_mutex_unlock(&d->m);
        wf__durable_run_free(d);
        sends_free(&s, used);
        *why = m ? m : wf__strdup(wf_err_name(rc));
        return rc;
    }
    wf_free(m);
    for (size_t i = used; i < s.n; i++) { /* journaled already: delivered again, not journaled */
        int r = wf__durable_deliver(d, (wf__run *)h, s.evs[i], s.targets[i]);
        if (r < 0 && r != WF_ESTATE)
            wf__log(ex, WF_LOG_WARN, "recovering run '%s': a journaled event was refused: %s",
                    run_id, wf_err_name(r));
        wf__free_mem(s.targets[i]);
    }
    s.n = 0;
    sends_free(&s, 0);
    /* Unlocked first: once the table holds the run, it may end and be freed
     * (d with it) before this thread runs again; until then h's reference
     * keeps both. */
    pthread_mutex_unlock(&d->m);
    wf__drun_attach(d, (wf__run *)h); /* the table takes the handler's reference */
    return 1;
}

/*
 * The runs found are recovered by 64 threads at once: wf_store_claim
 * waits for a commit round, and claims made together share one.
 */
#define RECOVER_THREADS 64

typedef struct rjob {
    struct wf_executor *ex;
    wf_store *store;
    wf_workflow *const *wfs;
    size_t nwfs;
    found *f;
    _Atomic size_t next;
    pthread_mutex_t mu; /* info, message */
    wf_recover_info *info;
    char **message;
} rjob;

static void *recover_worker(void *arg)
{
    rjob *j = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->f->n)
            return NULL;
        const char *id = j->f->ids[i], *wname = j->f->wfs[i];
        if (wf__drun_listed(id))
            continue; /* in memory here already */
        wf_workflow *wf = NULL;
        for (size_t k = 0; k < j->nwfs && wf == NULL; k++)
            if (j->wfs[k] && strcmp(j->wfs[k]->name, wname) == 0)
                wf = j->wfs[k];
        char *why = NULL;
        int r = wf ? wf__recover_one(j->ex, j->store, wf, id, &why) : WF_ENOTFOUND;
        pthread_mutex_lock(&j->mu);
        if (wf == NULL)
            note(j->message, &j->info->failed, "run '%s': workflow '%s' was not given%s", id,
                 wname, "");
        else if (r == 1)
            j->info->resumed++;
        else if (r == 0)
            j->info->busy++;
        else if (r == 2)
            j->info->forgotten++;
        else if (r == WF_EEXIST)
            ; /* a send by id loaded it meanwhile (durable.c): in memory here, not a failure */
        else
            note(j->message, &j->info->failed, "run '%s' (workflow '%s') not recovered: %s", id,
                 wname, why ? why : "?");
        pthread_mutex_unlock(&j->mu);
        wf__free_mem(why);
    }
}

int wf_executor_recover(wf_executor *ex, wf_workflow *const *wfs, size_t n, wf_recover_info *info,
                        char **message)
{
    if (message)
        *message = NULL;
    wf_recover_info local;
    if (info == NULL)
        info = &local;
    memset(info, 0, sizeof *info);
    if (ex == NULL || (n && wfs == NULL))
        return wf__set_error(WF_EINVAL, "wf_executor_recover: NULL argument");
    wf__durable *du = wf__durable_of(ex);
    if (du == NULL)
        return wf__set_error(WF_ESTATE, "wf_executor_recover: the executor has no store");
    for (size_t k = 0; k < n; k++)
        if (wfs[k] && wf__durable_know(du, wfs[k]) < 0)
            return WF_ENOMEM;
    found f = {0};
    uint64_t cursor = 0;
    int rc;
    do {
        rc = wf_store_list(du->store,
                           WF_STORE_MASK(WF_STORE_RUNNING) | WF_STORE_MASK(WF_STORE_WAITING),
                           cursor, 1000, each_run, &f, &cursor);
    } while (rc == 0 && cursor && !f.nomem);
    if (rc == 0 && f.nomem)
        rc = WF_ENOMEM;
    if (rc == 0 && f.n) {
        rjob j = {.ex = ex, .store = du->store, .wfs = wfs, .nwfs = n, .f = &f, .info = info,
                  .message = message};
        atomic_init(&j.next, 0);
        pthread_mutex_init(&j.mu, NULL);
        pthread_t th[RECOVER_THREADS];
        size_t nt = 0;
        size_t want = f.n < RECOVER_THREADS ? f.n : RECOVER_THREADS;
        while (nt + 1 < want && pthread_create(&th[nt], NULL, recover_worker, &j) == 0)
            nt++;
        recover_worker(&j); /* and this thread */
        for (size_t i = 0; i < nt; i++)
            pthread_join(th[i], NULL);
        pthread_mutex_destroy(&j.mu);
    }
    for (size_t i = 0; i < f.n; i++) {
        wf__free_mem(f.ids[i]);
        wf__free_mem(f.wfs[i]);
    }
    wf__free_mem(f.ids);
    wf__free_mem(f.wfs);
    return rc;
}
