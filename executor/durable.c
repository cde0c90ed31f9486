/*
 * durable.c: durable runs (include/wf/durable.h, docs/DURABILITY.md).
 *
 * Owns: the process's table of durable runs in memory (run id -> record),
 * each run's durable record (wf__drun), an executor's attached store and
 * its checkpoint thread (wf__durable), the journaling of start and sent
 * events, a durable run's end (its result put to the store, published once
 * durable), recovery, re-attach by id, and invocation keys.
 *
 * Recovery model: checkpoint + journal tail. A durable run's start event
 * and every event sent to it from outside are journaled (WF_STORE_REC_SEND)
 * before they are delivered; the checkpoint thread takes a live cut of each
 * durable run (wf_ctx_save) every checkpoint_ms and queues it
 * (wf_store_put_checkpoint). A checkpoint covers every record queued before
 * it; sends and checkpoints of one run are ordered by drun->m, so a send
 * journaled before a checkpoint was delivered before its cut. Recovery loads
 * the last checkpoint (wf_ctx_load, wf_run_resume: queued and in-progress
 * events, waiters, collect buffers, fan-outs, retries, the context store)
 * and sends the journaled events after it again.
 *
 * Locks: g_lock guards the table (buckets, drun->listed, drun->run,
 * drun->ended). drun->m orders a run's sends against its checkpoints; it
 * is never taken on a worker's way to end a run (the checkpoint's cut may
 * wait for that worker). du->mu guards du->stop. Lock order: drun->m, then
 * g_lock; never g_lock around a store call.
 */
#include "durable_impl.h"

#include <wf/durable.h>
#include <wf/snapshot.h>

#include <errno.h>
#include <string.h>
#include <time.h>

WF__TLS struct wf__drun *wf__tls_durable;
WF__TLS int wf__tls_table_ref;

/* ------------------------------------------------------------ the table */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static wf__drun **g_tab;
static size_t g_cap, g_n;
/* How many of the table's runs each executor has (wf_durable_in_memory), under g_lock. */
typedef struct excount {
    struct wf_executor *ex;
    uint64_t n;
} excount;
static excount *g_exn;
static size_t g_nexn, g_capexn;

static excount *excount_find_locked(const struct wf_executor *ex)
{
    for (size_t i = 0; i < g_nexn; i++)
        if (g_exn[i].ex == ex)
            return &g_exn[i];
    return NULL;
}

uint64_t wf__fnv(const void *p, size_t n, uint64_t h)
{
    return wf__hash_update(h, p, n); /* FNV-1a, lib/text.h */
}

static wf__drun *find_locked(const char *id, uint64_t h)
{
    if (g_cap == 0)
        return NULL;
    for (wf__drun *d = g_tab[h & (g_cap - 1)]; d; d = d->next)
        if (d->h == h && strcmp(d->run_id, id) == 0)
            return d;
    return NULL;
}

/*
 * The table's buckets become nc (g_lock held; nc 0: none). It grows at half
 * full and shrinks when an eighth full, so 100,000 runs idle-released keep
 * no table of their peak size.
 */
static int tab_resize_locked(size_t nc)
{
    wf__drun **nt = NULL;
    if (nc) {
        nt = wf__calloc(nc, sizeof *nt);
        if (nt == NULL)
            return WF_ENOMEM;
    }
    for (size_t i = 0; i < g_cap; i++)
        for (wf__drun *x = g_tab[i], *nx; x; x = nx) {
            nx = x->next;
            x->next = nt[x->h & (nc - 1)];
            nt[x->h & (nc - 1)] = x;
        }
    wf__free_mem(g_tab);
    g_tab = nt;
    g_cap = nc;
    return 0;
}

/* Lists d: 0, WF_EEXIST when its id is in use, WF_ENOMEM. */
int wf__drun_insert(wf__drun *d)
{
    pthread_mutex_lock(&g_lock);
    if (find_locked(d->run_id, d->h)) {
        pthread_mutex_unlock(&g_lock);
        return WF_EEXIST;
    }
    excount *ec = excount_find_locked(d->ex);
    if (ec == NULL && g_nexn == g_capexn) {
        size_t nc = g_capexn ? g_capexn * 2 : 4;
        excount *x = wf__realloc(g_exn, nc * sizeof *x);
        if (x == NULL) {
            pthread_mutex_unlock(&g_lock);
            return WF_ENOMEM;
        }
        g_exn = x;
        g_capexn = nc;
    }
    if (g_n + 1 > g_cap / 2 && tab_resize_locked(g_cap ? g_cap * 2 : 64) < 0) {
        pthread_mutex_unlock(&g_lock);
        return WF_ENOMEM;
    }
    if (ec == NULL) {
        ec = &g_exn[g_nexn++];
        *ec = (excount){d->ex, 0};
    }
    ec->n++;
    d->next = g_tab[d->h & (g_cap - 1)];
    g_tab[d->h & (g_cap - 1)] = d;
    d->listed = 1;
    g_n++;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

static void unlist_locked(wf__drun *d)
{
    if (!d->listed)
        return;
    for (wf__drun **pp = &g_tab[d->h & (g_cap - 1)]; *pp; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    d->listed = 0;
    g_n--;
    excount *ec = excount_find_locked(d->ex);
    if (ec && --ec->n == 0) {
        *ec = g_exn[--g_nexn];
        if (g_nexn == 0) {
            wf__free_mem(g_exn);
            g_exn = NULL;
            g_capexn = 0;
        }
    }
    if (g_n == 0)
        (void)tab_resize_locked(0);
    else if (g_cap > 64 && g_n < g_cap / 8)
        (void)tab_resize_locked(g_cap / 2); /* a quarter full after it; nothing if no memory */
}

wf__drun *wf__drun_new(const char *run_id, struct wf_executor *ex, wf_store *store)
{
    wf__drun *d = wf__calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->run_id = wf__strdup(run_id);
    if (d->run_id == NULL) {
        wf__free_mem(d);
        return NULL;
    }
    d->h = wf__fnv(run_id, strlen(run_id), FNV0);
    d->ex = ex;
    d->store = store;
    d->sknown = 1; /* a new run streams from 0; recover.c says otherwise */
    pthread_mutex_init(&d->m, NULL);
    pthread_mutex_init(&d->sm, NULL);
    return d;
}

int wf__drun_listed(const char *run_id)
{
    pthread_mutex_lock(&g_lock);
    int r = find_locked(run_id, wf__fnv(run_id, strlen(run_id), FNV0)) != NULL;
    pthread_mutex_unlock(&g_lock);
    return r;
}

void wf__drun_free(wf__drun *d)
{
    if (d == NULL)
        return;
    pthread_mutex_destroy(&d->m);
    pthread_mutex_destroy(&d->sm);
    for (uint32_t i = 0; i < d->nheld; i++)
        wf_event_release(d->held[i]);
    wf__free_mem(d->held);
    wf__free_mem(d->sbuf);
    wf__free_mem(d->soff);
    wf__free_mem(d->run_id);
    wf__free_mem(d);
}

void wf__durable_run_free(struct wf__drun *d)
{
    if (d == NULL)
        return;
    pthread_mutex_lock(&g_lock);
    unlist_locked(d);
    pthread_mutex_unlock(&g_lock);
    wf__drun_free(d);
}

/* Takes d off the table and gives its reference on the run back. */
static void drun_retire(wf__drun *d)
{
    pthread_mutex_lock(&g_lock);
    unlist_locked(d);
    wf__run *r = d->run;
    d->run = NULL;
    d->ended = 1;
    pthread_mutex_unlock(&g_lock);
    if (r)
        wf__run_release(r);
}

/* Publishes h as d's run unless it ended already (then h is released). */
void wf__drun_attach(wf__drun *d, wf__run *run)
{
    pthread_mutex_lock(&g_lock);
    int ended = d->ended;
    if (!ended)
        d->run = run;
    pthread_mutex_unlock(&g_lock);
    if (ended)
        wf__run_release(run);
}

wf__durable *wf__durable_of(struct wf_executor *ex)
{
    return atomic_load_explicit(&ex->durable, memory_order_acquire);
}

/* ------------------------------------------------------- send records */

/*
 * A WF_STORE_REC_SEND record: a big-endian u16 target length (0xffff: no
 * target, every accepting step), the target's bytes, then the event as
 * wf_event_to_msgpack writes it ([type name, {fields}]).
 */
static int send_encode(const wf_event *ev, const char *target, void **out, size_t *len)
{
    void *eb;
    size_t el;
    int rc = wf_event_to_msgpack(ev, &eb, &el);
    if (rc < 0)
        return rc;
    size_t tl = target ? strlen(target) : 0;
    if (tl >= 0xffff) {
        wf_free(eb);
        return wf__set_error(WF_EINVAL, "target step name too long");
    }
    unsigned char *b = wf__malloc(2 + tl + el);
    if (b == NULL) {
        wf_free(eb);
        return WF_ENOMEM;
    }
    unsigned t16 = target ? (unsigned)tl : 0xffffu;
    b[0] = (unsigned char)(t16 >> 8);
    b[1] = (unsigned char)t16;
    if (tl)
        memcpy(b + 2, target, tl);
    memcpy(b + 2 + tl, eb, el);
    wf_free(eb);
    *out = b;
    *len = 2 + tl + el;
    return 0;
}

int wf__send_decode(const wf_registry *reg, const void *data, size_t len, wf_event **ev,
                       char **target, char **message)
{
    const unsigned char *b = data;
    *ev = NULL;
    *target = NULL;
    if (len < 2)
        return WF_ECORRUPT;
    unsigned t16 = ((unsigned)b[0] << 8) | b[1];
    size_t tl = t16 == 0xffff ? 0 : t16;
    if (2 + tl > len)
        return WF_ECORRUPT;
    if (t16 != 0xffff) {
        *target = wf__malloc(tl + 1);
        if (*target == NULL)
            return WF_ENOMEM;
        memcpy(*target, b + 2, tl);
        (*target)[tl] = 0;
    }
    size_t used;
    int rc = wf_event_from_msgpack(reg, b + 2 + tl, len - 2 - tl, ev, &used, message);
    if (rc < 0) {
        wf__free_mem(*target);
        *target = NULL;
    }
    return rc;
}

static int journal_send(wf__drun *d, const wf_event *ev, const char *target)
{
    void *rec = NULL;
    size_t len = 0;
    int rc = send_encode(ev, target, &rec, &len);
    if (rc < 0)
        return rc;
    wf_store_rec r = {WF_STORE_REC_SEND, rec, len};
    rc = wf_store_append(d->store, d->run_id, &r, 1, NULL, NULL, NULL, NULL);
    wf__free_mem(rec);
    return rc;
}

/* --------------------------------------------------- held outside events */

/*
 * An event sent from outside that no step accepts is for a waiter
 * (wait_for_event). When none waits for it yet, e.g. the run was recovered
 * from a checkpoint cut before its step waited and the step has not run
 * again yet, the run holds it (d->held, under run->collect_lock) instead of
 * dropping it as unhandled: a new waiter takes it (wait.c). While a run
 * holds events its checkpoints are not written (one would cover their send
 * records, and the held events are not in the cut), so a crash meanwhile
 * delivers them again. Once the run has nothing left to run (no step can
 * still wait for them) or it ends, what it holds is reported unconsumed
 * (a warning naming the run and the type; then routed as unhandled:
 * wf_handler_unhandled, the UnhandledEvent notification) and dropped.
 */
static int hold_if_unrouted(wf__drun *d, wf__run *run, wf_event *ev)
{
    const wf_event_type *t = ev->type;
    if (d->store == NULL || t->reg != run->wf->reg || t->is_stop || t->is_input)
        return 0;
    const uint32_t *steps;
    uint32_t n;
    uint32_t scratch[4];
    wf__workflow_route(run->wf, t, &steps, &n, scratch, 4);
    if (n != 0)
        return 0;
    int held = 0;
    wf__lock_take(&run->collect_lock);
    int waited = 0;
    for (wf__waiter *w = run->waiters; w && !waited; w = w->next)
        waited = w->state == W_WAITING && w->type == t && wf__waiter_req_match(w->req, ev);
    if (!waited && !wf__run_ended(run)) {
        if (d->nheld == d->capheld) {
            uint32_t nc = d->capheld ? d->capheld * 2 : 4;
            wf_event **x = wf__realloc(d->held, nc * sizeof *x);
            if (x) {
                d->held = x;
                d->capheld = nc;
            }
        }
        if (d->nheld < d->capheld) { /* else out of memory: routed (reported unhandled) */
            d->held[d->nheld++] = ev;
            held = 1;
        }
    }
    wf__lock_give(&run->collect_lock);
    return held;
}

int wf__durable_deliver(wf__drun *d, wf__run *run, wf_event *ev, const char *target)
{
    if (target == NULL && hold_if_unrouted(d, run, ev))
        return 0;
    return wf__send_outside(run, ev, target);
}

wf_event *wf__durable_take_held(wf__run *run, const wf_event_type *type, wf_value req)
{
    wf__drun *d = run->dur;
    for (uint32_t i = 0; i < d->nheld; i++) {
        wf_event *ev = d->held[i];
        if (ev->type != type || !wf__waiter_req_match(req, ev))
            continue;
        memmove(&d->held[i], &d->held[i + 1], (d->nheld - i - 1) * sizeof *d->held);
        d->nheld--;
        return ev;
    }
    return NULL;
}

/* 1 if d's run holds events (checkpoint thread, run end). */
static int holds_events(wf__drun *d, wf__run *run)
{
    wf__lock_take(&run->collect_lock);
    int n = d->nheld != 0;
    wf__lock_give(&run->collect_lock);
    return n;
}

/*
 * What d's run holds is reported unconsumed and dropped: routed as an
 * event nobody handles when the run goes on (routed == 1), counted
 * unhandled when it ended.
 */
static void drop_held(wf__drun *d, wf__run *run, int routed)
{
    wf__lock_take(&run->collect_lock);
    wf_event **evs = d->held;
    uint32_t n = d->nheld;
    d->held = NULL;
    d->nheld = d->capheld = 0;
    wf__lock_give(&run->collect_lock);
    for (uint32_t i = 0; i < n; i++) {
        wf__log(d->ex, WF_LOG_WARN,
                "durable run '%s': event %s sent from outside was not consumed: no step accepts "
                "it and no step waited for it %s",
                d->run_id, evs[i]->type->name,
                routed ? "before the run had nothing left to run" : "before the run ended");
        if (routed) {
            (void)wf__send_outside(run, evs[i], NULL);
        } else {
            atomic_fetch_add(&run->unhandled, 1);
            wf_event_release(evs[i]);
        }
    }
    wf__free_mem(evs);
}

/* -------------------------------------------------------- attaching */

void wf_durable_params_init(wf_durable_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->checkpoint_ms = 10;
    p->renew_ms = 5000;
    p->idle_release_ms = 0;
}

static int64_t mono_ms(void)
{
    return wf__now_ns() / 1000000;
}

/*
 * Nothing of run runs or waits to run (no event queued or in progress, no
 * retry or async step pending): only an event from outside, or a waiter's
 * timeout, moves it on. The store shows such a run WAITING.
 */
static int run_waits_outside(wf__run *run)
{
    if (wf__run_ended(run))
        return 0;
    for (uint32_t i = 0; i < run->nsteps; i++)
        if (wf__step_count(run, i) != 0)
            return 0;
    wf__lock_take(&run->mu);
    int ok = run->retries == NULL;
    wf__lock_give(&run->mu);
    wf__lock_take(&run->collect_lock);
    ok = ok && run->pending == NULL;
    wf__lock_give(&run->collect_lock);
    return ok;
}

/* Nothing of run runs or waits to run, and nothing inside it can wake it (no timer). */
static int run_quiescent(wf__run *run)
{
    if (!run_waits_outside(run))
        return 0;
    wf__lock_take(&run->collect_lock);
    int ok = 1;
    for (wf__waiter *w = run->waiters; ok && w; w = w->next)
        if (w->state == W_WAITING && w->timeout_ms >= 0)
            ok = 0;
    wf__lock_give(&run->collect_lock);
    return ok;
}

/* The store's status of d follows run (under d->m): WAITING while it waits for the outside. */
static void note_waiting(wf__drun *d, int waiting)
{
    if (waiting == d->waiting)
        return;
    int rc = wf_store_set_status(d->store, d->run_id, waiting ? WF_STORE_WAITING : WF_STORE_RUNNING,
                                 NULL);
    if (rc == 0)
        d->waiting = waiting;
    else if (rc != WF_ESTATE) /* ESTATE: its result is queued, the status with it */
        wf__log(d->ex, WF_LOG_WARN, "durable run '%s': status not queued: %s", d->run_id,
                wf_err_name(rc));
}

/* Checkpoints d's run; 1 if it is idle long enough to be released (idle_ms > 0). */
static int checkpoint_one(wf__drun *d, wf__run *run, int force, uint32_t idle_ms)
{
    int idle = 0;
    /*
     * A run whose checkpoint did not change (waiting for an outside event,
     * or one long step in progress) is cut less often, down to every 64
     * passes, until an event is sent to it.
     */
    if (!atomic_exchange(&d->poked, 0) && d->skip && !force) {
        d->skip--;
        return 0;
    }
    pthread_mutex_lock(&d->m);
    if (WF__UNLIKELY(holds_events(d, run))) {
        if (!run_waits_outside(run)) {
            /* a step may still wait for them: no checkpoint covers their sends yet */
            d->skip = 0;
            pthread_mutex_unlock(&d->m);
            return 0;
        }
        drop_held(d, run, 1);
    }
    if (!wf__run_ended(run)) {
        void *b = NULL;
        size_t len = 0;
        int rc = wf_ctx_save(run->ctx, &b, &len);
        /* a cut of the live run only: once it ended, its result says all */
        if (rc == 0 && !wf__run_ended(run)) {
            uint64_t h = wf__fnv(b, len, FNV0);
            if (h == d->last_hash) {
                d->backoff = d->backoff ? (d->backoff < 64 ? d->backoff * 2 : 64) : 1;
                d->skip = d->backoff;
                int64_t now = mono_ms();
                if (d->quiet_since == 0)
                    d->quiet_since = now;
                else if (idle_ms && now - d->quiet_since >= idle_ms && run_quiescent(run))
                    idle = 1;
            } else {
                d->backoff = 0;
                d->quiet_since = 0;
                /*
                 * What the run streamed up to the cut goes before the
                 * checkpoint that covers it: the pass flushed before the
                 * cut, and a tick streamed in between was in the
                 * checkpoint but not in the journal (a crash then lost it
                 * for good: durable::stream_numbers_survive_a_sigkill).
                 */
                wf__stream_flush(d);
                rc = wf_store_put_checkpoint(d->store, d->run_id, b, len, NULL, NULL, NULL, NULL);
                if (rc == 0)
                    d->last_hash = h;
                else if (rc != WF_ESTATE)
                    wf__log(d->ex, WF_LOG_ERROR, "durable run '%s': checkpoint not queued: %s",
                            d->run_id, wf_err_name(rc));
            }
        } else if (rc < 0 && rc != WF_ESTATE) {
            wf__log(d->ex, WF_LOG_ERROR, "durable run '%s': checkpoint failed: %s", d->run_id,
                    wf_err_name(rc));
        }
        if (rc == 0)
            note_waiting(d, run_waits_outside(run));
        wf_free(b);
    }
    pthread_mutex_unlock(&d->m);
    return idle;
}

/*
 * Idle release of the runs picked (each with a reference). The release is
 * queued after the run's last checkpoint (wf_store_release_queued) and the
 * run leaves memory at once; the pass then commits the releases in one
 * round (wf_store_flush). A send by id meanwhile finds the run not in
 * memory and loads it: its claim is queued after the release, so it sees
 * the run released and its checkpoint committed. A crash before the round
 * leaves the run in flight with this owner's lease: the next process
 * recovers it. Up to 64 threads at once, for a store without queued
 * releases (each wf_store_release waits for its round).
 */
typedef struct pick {
    wf__drun *d;
    wf__run *run; /* a reference: d lives as long as its run */
} pick;

typedef struct release_job {
    pick *ps;
    size_t n;
    _Atomic size_t next;
    atomic_uint released;
} release_job;

/* A queued release's outcome (writer thread): a failure is logged, the run left memory anyway. */
typedef struct released_note {
    struct wf_executor *ex;
    char run_id[];
} released_note;

static void on_released(int rc, uint64_t ticket, void *user)
{
    (void)ticket;
    released_note *n = user;
    if (rc < 0) /* another owner took it (its lease expired): the run is theirs now */
        wf__log(n->ex, WF_LOG_WARN, "durable run '%s': idle release failed: %s", n->run_id,
                wf_err_name(rc));
    wf__free_mem(n);
}

static void release_one(wf__drun *d, wf__run *run)
{
    pthread_mutex_lock(&d->m); /* no send gets in meanwhile */
    if (!atomic_load(&d->poked) && run_quiescent(run)) {
        atomic_store(&d->releasing, 1);
        wf__stream_flush(d); /* before the store closes the run's journal */
        size_t idl = strlen(d->run_id) + 1;
        released_note *n = wf__malloc(sizeof *n + idl);
        int rc = WF_ENOMEM;
        if (n) {
            n->ex = d->ex;
            memcpy(n->run_id, d->run_id, idl);
            rc = wf_store_release_queued(d->store, d->run_id, on_released, n, NULL);
            if (rc < 0)
                wf__free_mem(n);
        }
        if (rc == 0) {
            (void)wf_handler_cancel((wf_handler *)run); /* ends it without a result */
        } else {
            atomic_store(&d->releasing, 0);
            wf__log(d->ex, WF_LOG_WARN, "durable run '%s': idle release failed: %s", d->run_id,
                    wf_err_name(rc));
        }
    }
    pthread_mutex_unlock(&d->m);
}

static void *release_worker(void *arg)
{
    release_job *j = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n)
            return NULL;
        release_one(j->ps[i].d, j->ps[i].run);
    }
}

static void release_all(pick *ps, size_t n)
{
    if (n == 0)
        return;
    release_job j = {.ps = ps, .n = n};
    atomic_init(&j.next, 1);
    /* queued releases take microseconds; a store that waits for a round gets helpers */
    int64_t t0 = wf__now_ns();
    release_one(ps[0].d, ps[0].run);
    int slow = wf__now_ns() - t0 > 1000000;
    pthread_t th[64];
    size_t nt = 0, want = !slow ? 1 : n < 64 ? n : 64;
    while (nt + 1 < want && pthread_create(&th[nt], NULL, release_worker, &j) == 0)
        nt++;
    release_worker(&j);
    for (size_t i = 0; i < nt; i++)
        pthread_join(th[i], NULL);
}

/* One checkpoint pass over ex's durable runs. */
static void checkpoint_pass(wf__durable *du, int force)
{
    pick *ps = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_cap; i++)
        for (wf__drun *d = g_tab[i]; d; d = d->next) {
            if (d->ex != du->ex || d->run == NULL || d->store == NULL)
                continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                pick *x = wf__realloc(ps, nc * sizeof *x);
                if (x == NULL)
                    goto out; /* this pass checkpoints fewer; the next tries again */
                ps = x;
                cap = nc;
            }
            atomic_fetch_add(&d->run->refs, 1);
            ps[n].d = d;
            ps[n++].run = d->run;
        }
out:
    pthread_mutex_unlock(&g_lock);
    /* the runs to release move to the front */
    size_t nidle = 0;
    uint32_t idle_ms = force ? 0 : du->p.idle_release_ms;
    for (size_t i = 0; i < n; i++) {
        wf__stream_flush(ps[i].d); /* its streamed events since the last pass */
        if (checkpoint_one(ps[i].d, ps[i].run, force, idle_ms)) {
            pick t = ps[nidle];
            ps[nidle++] = ps[i];
            ps[i] = t;
        }
    }
    release_all(ps, nidle);
    for (size_t i = 0; i < n; i++)
        wf__run_release(ps[i].run);
    wf__free_mem(ps);
    if (nidle) {
        /*
         * The releases commit (one round), and what the released runs left
         * in the threads' block caches goes home (the workers flush as they
         * park, the store's writer after this round), so wf_alloc_trim can
         * give their slabs back.
         */
        wf__alloc_flush_request();
        (void)wf_store_flush(du->store);
        wf__alloc_flush();
    }
}

static void *checkpoint_main(void *arg)
{
    wf__durable *du = arg;
    int64_t next_renew = mono_ms() + du->p.renew_ms;
    pthread_mutex_lock(&du->mu);
    while (!du->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)du->p.checkpoint_ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&du->cv, &du->mu, &ts);
        if (du->stop)
            break;
        pthread_mutex_unlock(&du->mu);
        checkpoint_pass(du, 0);
        if (mono_ms() >= next_renew) {
            uint32_t lost = 0;
            int rc = wf_store_renew(du->store, &lost);
            if (rc < 0 || lost)
                wf__log(du->ex, WF_LOG_WARN, "durable runs: lease renewal: %s, %u runs taken over",
                        rc < 0 ? wf_err_name(rc) : "ok", lost);
            next_renew = mono_ms() + du->p.renew_ms;
        }
        pthread_mutex_lock(&du->mu);
    }
    pthread_mutex_unlock(&du->mu);
    return NULL;
}

int wf_executor_attach_store(wf_executor *ex, wf_store *store, const wf_durable_params *params)
{
    if (ex == NULL || store == NULL)
        return wf__set_error(WF_EINVAL, "wf_executor_attach_store: NULL executor or store");
    wf__durable *du = wf__calloc(1, sizeof *du);
    if (du == NULL)
        return WF_ENOMEM;
    du->ex = ex;
    du->store = store;
    wf_durable_params_init(&du->p);
    if (params) {
        if (params->checkpoint_ms)
            du->p.checkpoint_ms = params->checkpoint_ms;
        if (params->renew_ms)
            du->p.renew_ms = params->renew_ms;
        du->p.idle_release_ms = params->idle_release_ms;
    }
    pthread_mutex_init(&du->mu, NULL);
    pthread_mutex_init(&du->wmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&du->cv, &ca);
    pthread_condattr_destroy(&ca);
    wf__durable *none = NULL;
    if (!atomic_compare_exchange_strong(&ex->durable, &none, du)) {
        pthread_mutex_destroy(&du->mu);
        pthread_cond_destroy(&du->cv);
        wf__free_mem(du);
        return wf__set_error(WF_ESTATE, "wf_executor_attach_store: the executor has a store");
    }
    if (pthread_create(&du->thread, NULL, checkpoint_main, du) != 0) {
        atomic_store(&ex->durable, NULL);
        pthread_mutex_destroy(&du->mu);
        pthread_cond_destroy(&du->cv);
        wf__free_mem(du);
        return wf__set_error(WF_ENOMEM, "wf_executor_attach_store: no checkpoint thread");
    }
    return 0;
}

void wf__durable_close(struct wf_executor *ex)
{
    wf__durable *du = atomic_exchange(&ex->durable, NULL);
    if (du == NULL)
        return;
    pthread_mutex_lock(&du->mu);
    du->stop = 1;
    pthread_cond_signal(&du->cv);
    pthread_mutex_unlock(&du->mu);
    pthread_join(du->thread, NULL);
    /* a last checkpoint: the runs stay in flight in the store for the next process */
    checkpoint_pass(du, 1);
    (void)wf_store_flush(du->store);
    for (size_t i = 0; i < du->nwfs; i++)
        wf_workflow_free(du->wfs[i]);
    wf__free_mem(du->wfs);
    pthread_mutex_destroy(&du->wmu);
    pthread_mutex_destroy(&du->mu);
    pthread_cond_destroy(&du->cv);
    wf__free_mem(du);
}

/* -------------------------------------------------------------- the end */

typedef struct pending_end {
    wf__run *run;
    int status, code;
    wf_event *result, *term;
    char *step, *msg;
    wf__run *next;
} pending_end;

static void publish_pending(pending_end *p)
{
    /*
     * Openable by id until its result is durable (this is the result's
     * commit callback, or its failure), then off the table before the
     * outcome is published: whoever learns it ended finds the id free of
     * memory and the result in the store. The engine's unit keeps the run.
     */
    drun_retire(p->run->dur);
    wf__end_publish(p->run, p->status, p->result, p->code, p->step, p->msg, p->term, p->next);
    wf__free_mem(p->step);
    wf__free_mem(p->msg);
    wf__free_mem(p);
}

static void on_result_durable(int rc, uint64_t ticket, void *user)
{
    (void)ticket;
    pending_end *p = user;
    if (rc < 0)
        wf__log(p->run->ex, WF_LOG_ERROR,
                "durable run '%s': its result could not be made durable (%s); reported anyway",
                p->run->dur->run_id, wf_err_name(rc));
    publish_pending(p);
}

static int32_t store_status(int status)
{
    switch (status) {
    case WF_RUN_DONE:
        return WF_STORE_DONE;
    case WF_RUN_TIMED_OUT:
        return WF_STORE_TIMED_OUT;
    case WF_RUN_CANCELLED:
        return WF_STORE_CANCELLED;
    default:
        return WF_STORE_FAILED;
    }
}

int wf__durable_end(wf__run *run, int status, wf_event *result, int code, const char *step,
                    const char *msg, wf_event *term, wf__run *next)
{
    wf__drun *d = run->dur;
    struct wf_executor *ex = run->ex;
    if (d->store == NULL) {
        drun_retire(d);
        return 0;
    }
    /* its streamed events go before its result (the store takes nothing after it) */
    wf__stream_flush(d);
    int closing = atomic_load(&ex->shutting_down);
    if ((closing || atomic_load(&d->releasing)) && status == WF_RUN_CANCELLED) {
        /*
         * shutdown: the run stays in flight for the next process (what it
         * holds is delivered again from the journal: no checkpoint covers
         * it); idle release: it is released
         */
        drun_retire(d);
        return 0;
    }
    if (WF__UNLIKELY(holds_events(d, run)))
        drop_held(d, run, 0);
    pending_end *p = wf__calloc(1, sizeof *p);
    void *data = NULL;
    size_t len = 0;
    if (p == NULL || (term && wf_event_to_msgpack(term, &data, &len) < 0)) {
        wf__free_mem(p);
        wf__log(ex, WF_LOG_ERROR, "durable run '%s': out of memory writing its result", d->run_id);
        drun_retire(d);
        return 0;
    }
    p->run = run;
    p->status = status;
    p->code = code;
    p->result = result;
    p->term = term;
    p->step = step ? wf__strdup(step) : NULL;
    p->msg = msg ? wf__strdup(msg) : NULL;
    p->next = next;
    /*
     * Not under d->m: the checkpoint thread may hold it while its cut waits
     * for this very task. A checkpoint queued after the result is refused
     * by the store (WF_ESTATE), one queued before is superseded by it.
     */
    int rc = wf_store_put_result(d->store, d->run_id, store_status(status), data, len,
                                 on_result_durable, p, NULL);
    wf_free(data);
    if (rc < 0) {
        wf__log(ex, WF_LOG_ERROR, "durable run '%s': result not queued (%s); reported anyway",
                d->run_id, wf_err_name(rc));
        publish_pending(p);
    }
    return 1;
}

/* ------------------------------------------------------------ sending */

int wf__durable_send(wf__run *run, wf_event *ev, const char *target)
{
    wf__drun *d = run->dur;
    if (d->store == NULL)
        return wf__send_outside(run, ev, target);
    int32_t idx;
    int rc = ev->type->reg != run->wf->reg ? WF_EINVAL
                                           : wf__resolve_target(run->wf, ev, target, &idx);
    if (rc < 0) /* refused as wf__send_outside would, before anything is journaled */
        return wf__send_outside(run, ev, target);
    pthread_mutex_lock(&d->m);
    if (atomic_load(&d->releasing)) { /* released: to the run loaded again by its id */
        pthread_mutex_unlock(&d->m);
        return wf_durable_send(run->ex, d->run_id, ev, target);
    }
    if (wf__run_ended(run)) {
        pthread_mutex_unlock(&d->m);
        wf_event_release(ev);
        return wf__set_error(WF_ESTATE, "durable run '%s' has ended: the event was dropped",
                             d->run_id);
    }
    note_waiting(d, 0); /* answered: RUNNING again, queued before the event */
    rc = journal_send(d, ev, target);
    atomic_store(&d->poked, 1);
    if (rc < 0) {
        pthread_mutex_unlock(&d->m);
        wf_event_release(ev);
        return wf__set_error(rc, "durable run '%s': the event could not be journaled: %s",
                             d->run_id, wf_err_name(rc));
    }
    rc = wf__durable_deliver(d, run, ev, target);
    pthread_mutex_unlock(&d->m);
    return rc;
}

/* ------------------------------------------------------------ starting */

static int check_id(const char *run_id)
{
    size_t n = run_id ? strlen(run_id) : 0;
    if (n == 0 || n > 1024)
        return wf__set_error(WF_EINVAL, "a durable run id is 1 to 1024 bytes");
    return 0;
}

static void set_msg(char **message, const char *fmt, const char *a, const char *b)
{
    if (message == NULL || *message)
        return;
    size_t n = strlen(fmt) + (a ? strlen(a) : 0) + (b ? strlen(b) : 0) + 1;
    *message = wf__malloc(n);
    if (*message)
        snprintf(*message, n, fmt, a ? a : "", b ? b : "");
}

int wf_run_start_durable(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, const char *run_id,
                         wf_event *start, const wf_run_params *params, wf_handler **out,
                         char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = NULL;
    int rc = (ex == NULL || wf == NULL || out == NULL || start == NULL)
                 ? wf__set_error(WF_EINVAL, "wf_run_start_durable: NULL argument")
                 : check_id(run_id);
    if (rc < 0) {
        wf_event_release(start);
        return rc;
    }
    wf__durable *du = wf__durable_of(ex);
    wf__drun *d = (du && wf__durable_know(du, wf) < 0) ? NULL
                                                       : wf__drun_new(run_id, ex, du ? du->store : NULL);
    if (d == NULL) {
        wf_event_release(start);
        return WF_ENOMEM;
    }
    rc = wf__drun_insert(d);
    if (rc < 0) {
        if (rc == WF_EEXIST)
            rc = wf__set_error(WF_EEXIST, "run id '%s' is in use by a run in memory", run_id);
        set_msg(message, "run id '%s%s' is in use", run_id, NULL);
        wf__drun_free(d);
        wf_event_release(start);
        return rc;
    }
    int created = 0;
    if (d->store) {
        rc = wf_store_create(d->store, run_id, wf->name, NULL);
        if (rc == WF_EEXIST) {
            rc = wf__set_error(WF_EEXIST, "run id '%s' is in use in the store", run_id);
            set_msg(message, "run id '%s' is in use in the store%s", run_id, NULL);
        }
        created = rc == 0;
        if (rc == 0 && ctx) { /* its store as the run starts */
            void *b = NULL;
            size_t len = 0;
            rc = wf_ctx_save(ctx, &b, &len);
            if (rc == 0) {
                rc = wf_store_put_checkpoint(d->store, run_id, b, len, NULL, NULL, NULL, NULL);
                wf_free(b);
            }
        }
        if (rc == 0)
            rc = journal_send(d, start, NULL); /* seq 0 (after a checkpoint: its first) */
    }
    if (rc == 0) {
        wf__tls_durable = d;
        wf__tls_table_ref = 1;
        rc = wf_run_start_ex(ex, wf, ctx, start, params, out, message);
        int took = !wf__tls_table_ref; /* the table's reference, taken before the start */
        wf__tls_table_ref = 0;
        wf__tls_durable = NULL;
        start = NULL;
        if (rc == 0) {
            /* not taken after the start returned: an on_done that frees the
             * handler could have freed an ended run by then */
            if (!took)
                atomic_fetch_add(&((wf__run *)*out)->refs, 1);
            wf__drun_attach(d, (wf__run *)*out);
        }
    }
    if (rc < 0) {
        wf_event_release(start);
        if (created)
            (void)wf_store_remove(d->store, run_id); /* the run never started */
        wf__durable_run_free(d);
        return rc;
    }
    return 0;
}

/* ---------------------------------------------------------- by run id */

int wf_handler_open(wf_executor *ex, const char *run_id, wf_handler **out)
{
    if (out)
        *out = NULL;
    if (ex == NULL || out == NULL)
        return WF_EINVAL;
    int rc = check_id(run_id);
    if (rc < 0)
        return rc;
    uint64_t h = wf__fnv(run_id, strlen(run_id), FNV0);
    pthread_mutex_lock(&g_lock);
    wf__drun *d = find_locked(run_id, h);
    wf__run *run = d && d->ex == ex ? d->run : NULL;
    if (run)
        atomic_fetch_add(&run->refs, 1);
    pthread_mutex_unlock(&g_lock);
    if (run == NULL)
        return wf__set_error(WF_ENOTFOUND, "no durable run '%s' in memory in this executor",
                             run_id);
    *out = (wf_handler *)run;
    return 0;
}

int wf__durable_know(wf__durable *du, wf_workflow *wf)
{
    pthread_mutex_lock(&du->wmu);
    for (size_t i = 0; i < du->nwfs; i++)
        if (du->wfs[i] == wf) {
            pthread_mutex_unlock(&du->wmu);
            return 0;
        }
    if (du->nwfs == du->capwfs) {
        size_t nc = du->capwfs ? du->capwfs * 2 : 8;
        wf_workflow **x = wf__realloc(du->wfs, nc * sizeof *x);
        if (x == NULL) {
            pthread_mutex_unlock(&du->wmu);
            return WF_ENOMEM;
        }
        du->wfs = x;
        du->capwfs = nc;
    }
    du->wfs[du->nwfs++] = wf_workflow_retain(wf);
    pthread_mutex_unlock(&du->wmu);
    return 0;
}

uint64_t wf_durable_in_memory(wf_executor *ex)
{
    pthread_mutex_lock(&g_lock);
    excount *ec = excount_find_locked(ex);
    uint64_t n = ec ? ec->n : 0;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* Loads (wakes) are serialised per id stripe: two senders never load one run twice. */
static pthread_mutex_t g_wake[64];
static pthread_once_t g_wake_once = PTHREAD_ONCE_INIT;

static void wake_init(void)
{
    for (int i = 0; i < 64; i++)
        pthread_mutex_init(&g_wake[i], NULL);
}

/* A handler for run_id, loading it from the store when it is released: 0, WF_ENOTFOUND, ... */
static int open_or_wake(wf_executor *ex, const char *run_id, wf_handler **h)
{
    int rc = wf_handler_open(ex, run_id, h);
    wf__durable *du = wf__durable_of(ex);
    if (rc != WF_ENOTFOUND || du == NULL)
        return rc;
    pthread_once(&g_wake_once, wake_init);
    pthread_mutex_t *wl = &g_wake[wf__fnv(run_id, strlen(run_id), FNV0) & 63];
    pthread_mutex_lock(wl);
    rc = wf_handler_open(ex, run_id, h); /* another sender may have loaded it */
    if (rc == WF_ENOTFOUND) {
        wf_store_run_info info = {0};
        int r = wf_store_get_run(du->store, run_id, &info);
        if (r == WF_ENOTFOUND) {
            rc = wf__set_error(WF_ENOTFOUND, "no durable run '%s' in memory or in the store",
                               run_id);
        } else if (r < 0) {
            rc = r;
        } else if (info.status >= WF_STORE_DONE) {
            rc = wf__set_error(WF_ESTATE, "durable run '%s' has finished (wf_durable_result)",
                               run_id);
        } else if (wf__drun_listed(run_id)) {
            rc = wf__set_error(WF_EBUSY, "durable run '%s' is in memory in another executor of "
                                         "this process", run_id);
        } else {
            /*
             * Released, or in flight and not in memory here: its lease is
             * free or ours (a run this store's owner left, not recovered
             * yet), or another owner's. The claim decides, as recovery does.
             */
            wf_workflow *wf = NULL;
            pthread_mutex_lock(&du->wmu);
            for (size_t i = 0; i < du->nwfs && wf == NULL; i++)
                if (info.workflow && strcmp(du->wfs[i]->name, info.workflow) == 0)
                    wf = du->wfs[i];
            pthread_mutex_unlock(&du->wmu);
            char *why = NULL;
            r = wf ? wf__recover_one(ex, du->store, wf, run_id, &why)
                   : info.owner ? 0 /* held, by whoever: its owner's business */
                                : WF_ENOTFOUND;
            if (r == 1 || r == WF_EEXIST) { /* EEXIST: wf_executor_recover loaded it meanwhile */
                rc = wf_handler_open(ex, run_id, h);
            } else if (r == 0 || r == WF_ELEASE) {
                wf_store_run_info now = {0};
                if (wf_store_get_run(du->store, run_id, &now) == 0) {
                    wf_store_run_info_clear(&info);
                    info = now;
                }
                rc = wf__set_error(WF_EBUSY,
                                   "durable run '%s' is owned by '%s' (another process; lease "
                                   "until %lld ms since the epoch): send it there, or after the "
                                   "lease expires",
                                   run_id, info.owner ? info.owner : "?",
                                   (long long)info.lease_until_ms);
            } else if (r == 2) {
                rc = wf__set_error(WF_ENOTFOUND, "durable run '%s' never durably started",
                                   run_id);
            } else if (r < 0) {
                rc = wf__set_error(r, "durable run '%s' could not be loaded: %s", run_id,
                                   wf ? (why ? why : wf_err_name(r))
                                      : "its workflow is not known to this executor (start "
                                        "or recover a run of it first)");
            }
            wf__free_mem(why);
        }
        wf_store_run_info_clear(&info);
    }
    pthread_mutex_unlock(wl);
    return rc;
}

int wf_durable_send(wf_executor *ex, const char *run_id, wf_event *ev, const char *target)
{
    wf_handler *h;
    int rc = ev ? open_or_wake(ex, run_id, &h) : WF_EINVAL;
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    rc = wf_handler_send_event(h, ev, target);
    wf_handler_free(h);
    return rc;
}

int wf_durable_result(wf_executor *ex, wf_workflow *wf, const char *run_id, wf_run_status *status,
                      wf_event **result)
{
    if (result)
        *result = NULL;
    if (ex == NULL || wf == NULL || status == NULL)
        return WF_EINVAL;
    int rc = check_id(run_id);
    if (rc < 0)
        return rc;
    wf__durable *du = wf__durable_of(ex);
    if (du == NULL)
        return wf__set_error(WF_ESTATE, "wf_durable_result: the executor has no store");
    int32_t st;
    void *data = NULL;
    size_t len = 0;
    rc = wf_store_get_result(du->store, run_id, &st, &data, &len);
    if (rc < 0)
        return rc;
    switch (st) {
    case WF_STORE_DONE:
        *status = WF_RUN_DONE;
        break;
    case WF_STORE_TIMED_OUT:
        *status = WF_RUN_TIMED_OUT;
        break;
    case WF_STORE_CANCELLED:
        *status = WF_RUN_CANCELLED;
        break;
    default:
        *status = WF_RUN_FAILED;
    }
    if (result && len) {
        size_t used;
        rc = wf_event_from_msgpack(wf->reg, data, len, result, &used, NULL);
    }
    wf_free(data);
    return rc;
}

/* ----------------------------------------------------- invocation keys */

int wf_ctx_invocation_key(const wf_ctx *ctx, char *buf, size_t cap)
{
    wf__inv *inv = ctx ? wf__inv_of(ctx) : NULL;
    if (inv == NULL || inv->task == NULL)
        return wf__set_error(WF_ESTATE, "wf_ctx_invocation_key: not inside a step of the run");
    if (buf == NULL)
        return WF_EINVAL;
    void *eb;
    size_t el;
    int rc = wf_event_to_msgpack(inv->task->ev, &eb, &el);
    if (rc < 0)
        return rc;
    uint64_t h = wf__fnv(eb, el, FNV0);
    wf_free(eb);
    char num[24];
    const char *rid = inv->run->dur ? inv->run->dur->run_id : NULL;
    if (rid == NULL) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)inv->run->id);
        rid = num;
    }
    return wf_store_idempotency_key(buf, cap, rid, inv->step->name, h, inv->task->attempt);
}
