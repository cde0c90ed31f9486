/*
 * run.c: the run engine: routing, per-step concurrency limits, the end of a
 * run, the handler, the stream, and the step-side context calls.
 *
 * Per step and run, `count` is the number of events accepted for the step
 * and not yet finished (running invocations plus waiting events). An event
 * for a step whose count is below num_workers starts an invocation directly
 * (CAS count+1); otherwise it is pushed on the step's pending queue (a
 * Vyukov MPSC queue: producers never wait) and *then* counted. Whoever moves
 * count from below num_workers, or a finishing invocation that sees more
 * than num_workers, owes one invocation and pops one waiting event. So at
 * most num_workers invocations run, and no event waits while a slot is free.
 * The owed pop may meet a producer between its exchange and its link; it
 * spins for those few instructions.
 *
 * Lifetime: `refs` counts the handler and the engine; `engine` counts what
 * keeps the run busy in the executor: 1 until the run ends, 1 per step with
 * a nonzero count, 1 for an armed timeout, 1 per outside caller inside a
 * send. When it reaches 0 the run is quiescent: no task of it exists and the
 * executor forgets it. Tasks themselves hold no reference, so a chain of
 * invocations touches no shared counter beyond its own step's.
 */

#include "run_impl.h"

#include <wf/observe.h>

#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static WF__TLS wf__inv *tls_inv;
/*
 * The lineage of what the calling thread routes now: how many error-handler
 * recoveries the emitting invocation's input descends from (task->flags).
 */
static WF__TLS uint16_t tls_lineage;
/* The list fan-out branch of what the calling thread routes now (task->u.group, ->pad). */
static WF__TLS wf__group *tls_group;
static WF__TLS uint32_t tls_branch;
/*
 * Engine hand-over (a chain costs no run-wide atomics): while the single
 * task of `tls_handoff_run` routes what its step returned, a delivery that
 * wakes a step (count 0 -> 1) and lands in this worker's bypass slot takes
 * no engine unit; tls_handoff records the debt. Nobody else can run a
 * bypass task, and the routing task still holds its own step's unit, so the
 * run cannot quiesce meanwhile. When the task finishes, its step's unit
 * passes to the woken step if the task was its step's last (count 1 -> 0:
 * no engine operation at all), else the debt is paid (engine_ref) first.
 */
static WF__TLS wf__run *tls_handoff_run;
static WF__TLS wf__run *tls_handoff;

static void branch_add(wf__group *g, uint32_t b);
static void branch_done(wf__run *run, wf__group *g, uint32_t b);

/* A new task joins the branch being routed. */
static inline void tag_task(wf__task *t)
{
    t->u.group = tls_group;
    t->pad = tls_branch;
    if (WF__UNLIKELY(tls_group != NULL))
        branch_add(tls_group, tls_branch);
}

static int end_run(wf__run *run, int status, wf_event *result, int code, const char *step,
                   const char *msg);
static inline void slot_dirty(wf__run *run);
static void retries_cancel(struct wf__run *run);
static void tokens_detach(struct wf__run *run);
static void token_abandon(wf_completion *c);
static int token_arm(wf_completion *c);
static void waiters_cancel(struct wf__run *run);

/* ------------------------------------------------------------ observation */

/*
 * The time of the current invocation's end, while its emissions are routed:
 * their EMIT and ROUTE records take it instead of reading the clock again
 * (~25 ns a read here). 0 outside.
 */
static WF__TLS int64_t tls_obs_now;

/* The id pairing an EVENT_ROUTE with the STEP_START of its task. */
static inline uint64_t obs_task_id(const wf__task *t)
{
    return (uint64_t)(uintptr_t)t ^ ((uint64_t)(uintptr_t)t->ev << 17);
}

/* The type id of a type in run's registry, or WF__OBS_NO_TYPE (another registry's). */
static inline uint32_t obs_type(const wf__run *run, const wf_event_type *type)
{
    return type && type->reg == run->wf->reg ? type->id : WF__OBS_NO_TYPE;
}

static void obs_rec(wf__run *run, unsigned kind, uint32_t step, const wf_event_type *type,
                    int64_t ts, wf__obs_rec *r)
{
    r->kind = (uint8_t)kind;
    r->step = step < WF__OBS_NO_STEP ? (uint16_t)step : WF__OBS_NO_STEP;
    /* by id in the workflow's registry (an event of another registry is named by none) */
    r->type = obs_type(run, type);
    r->ts = ts;
    r->run_id = run->id;
    r->wf = run->wf;
}

static char *obs_strdup(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *c = wf__malloc(n);
    if (c)
        memcpy(c, s, n);
    return c;
}

/* obs_before's general path: the start on its own (no STEP_END wanted, or no ring of its own). */
__attribute__((noinline)) static void obs_before_slow(wf__run *run, const wf__task *t, wf__inv *inv,
                                                      uint32_t obs)
{
    int64_t t0 = wf__obs_now();
    inv->obs_t0 = t0;
    if (!(obs & WF_OBS_BIT(WF_OBS_STEP_START)))
        return;
    wf__obs_rec r = {0};
    obs_rec(run, WF_OBS_STEP_START, t->step, t->ev->type, t0, &r);
    r.attempt = t->attempt;
    r.event_id = obs_task_id(t);
    wf__obs_write(run->ex, &r);
}

/*
 * An observed invocation of t starts: inv->obs_t0 is its start time (1:
 * the thread's ring is full, its records are dropped and no clock is
 * read). Its STEP_START is held back when its end is wanted too.
 */
__attribute__((noinline)) static void obs_before(wf__run *run, const wf__task *t, wf__inv *inv,
                                                 uint32_t obs)
{
    uint32_t both = WF_OBS_BIT(WF_OBS_STEP_START) | WF_OBS_BIT(WF_OBS_STEP_END);
    if (WF__LIKELY((obs & both) == both)) {
        inv->obs_t0 = wf__obs_step_begin(run->ex, run->wf, run->id, t->step,
                                         obs_type(run, t->ev->type), t->attempt, obs_task_id(t));
        return;
    }
    obs_before_slow(run, t, inv, obs);
}

/* The EMIT of the event an invocation of t returned, on its own record. */
__attribute__((noinline)) static void obs_emit_alone(wf__run *run, const wf__task *t,
                                                     const wf_event *out, int64_t now)
{
    wf__obs_rec r = {0};
    obs_rec(run, WF_OBS_EVENT_EMIT, t->step, out->type, now, &r);
    wf__obs_write(run->ex, &r);
}

/*
 * An invocation of t returned rc (and out), the general way: its STEP_END
 * and the returned event's EVENT_EMIT (usually obs_after_fast).
 */
__attribute__((noinline)) static void obs_after(wf__run *run, const wf__task *t, const wf__inv *inv,
                                                int rc, const wf_event *out, uint32_t obs)
{
    int emits = (obs & WF_OBS_BIT(WF_OBS_EVENT_EMIT)) && rc == 0 && out;
    uint32_t out_type = emits ? obs_type(run, out->type) : WF__OBS_NO_TYPE;
    int64_t now = wf__obs_now();
    tls_obs_now = now; /* the routing's records take it */
    if (obs & WF_OBS_BIT(WF_OBS_STEP_END)) {
        wf__obs_rec r = {0};
        obs_rec(run, WF_OBS_STEP_END, t->step, t->ev->type, now, &r);
        r.error = rc;
        r.attempt = t->attempt;
        r.event_id = obs_task_id(t);
        r.dv = now - inv->obs_t0;
        r.message = rc < 0 ? obs_strdup(inv->errmsg ? inv->errmsg : wf_strerror(rc)) : NULL;
        wf__obs_end(run->ex, &r, out_type);
        if (out_type != WF__OBS_NO_TYPE) {
            wf__obs_held.out_ev = out; /* its emit is held back for its first routing */
            return;
        }
    }
    if (emits) /* on its own: no STEP_END wanted, or a type of another registry */
        obs_emit_alone(run, t, out, now);
}

/* obs_before's usual case (wf__obs_begin_fast): 1 if done. */
__attribute__((noinline)) static int obs_before_fast(wf__run *run, const wf__task *t, wf__inv *inv,
                                                     uint32_t obs)
{
    uint32_t both = WF_OBS_BIT(WF_OBS_STEP_START) | WF_OBS_BIT(WF_OBS_STEP_END);
    if ((obs & both) != both)
        return 0;
    inv->obs_t0 = wf__obs_begin_fast(run->ex, run->wf, run->id, t->step, obs_type(run, t->ev->type),
                                     t->attempt, obs_task_id(t));
    return inv->obs_t0 != 0;
}

/* obs_after's usual case (wf__obs_end_fast): 1 if done. */
__attribute__((noinline)) static int obs_after_fast(wf__run *run, const wf__task *t,
                                                    const wf__inv *inv, int rc, const wf_event *out,
                                                    uint32_t obs)
{
    if (rc != 0 || !(obs & WF_OBS_BIT(WF_OBS_STEP_END)))
        return 0;
    int emits = out && (obs & WF_OBS_BIT(WF_OBS_EVENT_EMIT));
    uint32_t ret_type =
        out && (obs & (WF_OBS_BIT(WF_OBS_EVENT_EMIT) | WF_OBS_BIT(WF_OBS_EVENT_ROUTE)))
            ? obs_type(run, out->type)
            : WF__OBS_NO_TYPE;
    if (emits && ret_type == WF__OBS_NO_TYPE) /* another registry's type: its emit on its own */
        return 0;
    int64_t now;
    if (!wf__obs_end_fast(run->ex, run->id, obs_task_id(t), inv->obs_t0, ret_type, emits, &now))
        return 0;
    if (ret_type != WF__OBS_NO_TYPE) {
        wf__obs_held.out_ev = out; /* its first routing goes with the STEP record */
        tls_obs_now = now;         /* the routing's records take it */
    }
    return 1;
}

/* EVENT_EMIT from outside the run's steps (start event, handler send). */
static void obs_emit_outside(wf__run *run, const wf_event *ev)
{
    if (wf__obs_on(run->ex, WF_OBS_EVENT_EMIT)) {
        wf__obs_rec r = {0};
        obs_rec(run, WF_OBS_EVENT_EMIT, WF__OBS_NO_STEP, ev->type, 0, &r);
        wf__obs_write(run->ex, &r);
    }
}

/* EVENT_ROUTE of t to its step; waiting: the step's events queued behind it. */
__attribute__((noinline)) static void obs_route_rec(wf__run *run, const wf__task *t,
                                                    uint32_t waiting)
{
    if (wf__obs_route_held(run->ex, run->id, t->ev, t->step, obs_task_id(t), waiting))
        return;
    wf__obs_rec r = {0};
    obs_rec(run, WF_OBS_EVENT_ROUTE, t->step, t->ev->type, tls_obs_now, &r);
    r.event_id = obs_task_id(t);
    r.dv = waiting;
    wf__obs_write(run->ex, &r);
}

/*
 * EVENT_ROUTE of t (waiting: the events queued behind it at its step): in
 * the thread's drop window counted inline; else the first routing of the
 * event the thread's last invocation returned goes into its STEP record
 * (wf__obs_route_held, by wf__obs_route_fast), others on their own record.
 */
__attribute__((always_inline)) static inline void obs_route(wf__run *run, const wf__task *t,
                                                            uint32_t waiting)
{
    if (!wf__obs_drop_rec(run->ex))
        obs_route_rec(run, t, waiting);
}

/* A record about one event: DROP, UNHANDLED, STREAM_WRITE. */
__attribute__((cold, noinline)) static void obs_event(wf__run *run, unsigned kind, uint32_t step, const wf_event_type *type,
                      int64_t value)
{
    wf__obs_rec r = {0};
    obs_rec(run, kind, step, type, 0, &r);
    r.dv = value;
    wf__obs_write(run->ex, &r);
}

/* ------------------------------------------------------------ ref counting */

void wf__collect_free(wf__collect *c)
{
    while (c) {
        wf__collect *nx = c->next;
        for (uint32_t i = 0; i < c->nq; i++) {
            wf__cq *q = &c->qs[i];
            for (uint32_t k = 0; k < q->len; k++)
                wf_event_release(q->ring[(q->head + k) % q->cap]);
            wf__free_mem(q->ring);
        }
        wf__free_mem(c->qs);
        wf__free_mem(c->id);
        wf__free_mem(c);
        c = nx;
    }
}

static void drop_task(wf__task *t);

static void waiters_free(wf__waiter *w)
{
    while (w) {
        wf__waiter *nx = w->next;
        if (w->task)
            drop_task(w->task);
        wf_event_release(w->got);
        wf_value_release(w->req);
        wf__free_mem(w->id);
        wf__free_mem(w);
        w = nx;
    }
}

wf__group *wf__group_new(uint32_t n)
{
    /* the group, then result[n], outstanding[n], resolved[n]: one cached block for small n */
    size_t size = sizeof(wf__group) +
                  (size_t)n * (sizeof(wf_event *) + sizeof(_Atomic uint32_t) + sizeof(_Atomic int));
    uint8_t cls;
    wf__group *g = wf__cache_alloc(size, &cls);
    if (g == NULL)
        return NULL;
    memset(g, 0, size);
    g->cls = cls;
    g->n = n;
    g->result = (wf_event **)(g + 1);
    g->outstanding = (_Atomic uint32_t *)(g->result + n);
    g->resolved = (_Atomic int *)(g->outstanding + n);
    atomic_init(&g->open, n);
    return g;
}

static void group_free(wf__group *g)
{
    for (uint32_t i = 0; i < g->n; i++)
        wf_event_release(g->result[i]);
    wf_event_release(g->origin);
    wf__cache_free(g, g->cls);
}

/* A branch closed (or a hold went): the last one frees the group. */
static inline void group_close(wf__group *g)
{
    if (atomic_fetch_sub_explicit(&g->open, 1, memory_order_acq_rel) == 1)
        group_free(g);
}

void wf__groups_free(wf__group *g)
{
    while (g) {
        wf__group *nx = g->next_in_run;
        group_free(g);
        g = nx;
    }
}

static void run_free(wf__run *run)
{
    /* waiters' tasks may belong to fan-out branches: free them before the groups */
    waiters_free(run->waiters);
    wf__collect_free(run->collect);
    pthread_mutex_destroy(&run->collect_lock);
    pthread_mutex_destroy(&run->snap_lock);
    pthread_mutex_destroy(&run->snap_mu);
    pthread_rwlock_destroy(&run->outside);
    for (uint32_t i = 0; i < run->nsteps; i++) {
        wf__pendq *q = atomic_load(&run->steps[i].pendq);
        wf__free_mem(q);
    }
    for (uint32_t i = 0; i < run->scount; i++)
        wf_event_release(run->sbuf[(run->shead + i) % run->scap]);
    wf__free_mem(run->sbuf);
    wf_event_release(run->terminal);
    wf_event_release(run->result);
    wf__free_mem(run->err_step);
    wf__free_mem(run->err_msg);
    wf__free_aligned((void *)run->shards);
    pthread_mutex_destroy(&run->mu);
    pthread_cond_destroy(&run->cv);
    wf_ctx_free(run->ctx);
    wf_workflow_free(run->wf);
    wf__free_mem(run);
}

static void run_release(wf__run *run)
{
    if (atomic_fetch_sub_explicit(&run->refs, 1, memory_order_acq_rel) == 1)
        run_free(run);
}

static inline void engine_ref(wf__run *run)
{
    atomic_fetch_add_explicit(&run->engine, 1, memory_order_relaxed);
}

/* Takes an engine reference unless the run is already quiescent. */
static int engine_try_ref(wf__run *run)
{
    uint32_t e = atomic_load(&run->engine);
    while (e != 0)
        if (atomic_compare_exchange_weak(&run->engine, &e, e + 1))
            return 1;
    return 0;
}

static void engine_unref(wf__run *run)
{
    if (atomic_fetch_sub_explicit(&run->engine, 1, memory_order_acq_rel) != 1)
        return;
    struct wf_executor *ex = run->ex;
    pthread_mutex_lock(&ex->runs_lock);
    if (--ex->live_runs == 0)
        pthread_cond_broadcast(&ex->runs_cond);
    pthread_mutex_unlock(&ex->runs_lock);
    run_release(run);
}

static inline int run_ended(const wf__run *run)
{
    return atomic_load_explicit(&((wf__run *)run)->ended, memory_order_acquire);
}

/* --------------------------------------------------------- pending queues */

static wf__pendq *pendq_get(wf__step_state *ss)
{
    wf__pendq *q = atomic_load_explicit(&ss->pendq, memory_order_acquire);
    if (WF__LIKELY(q != NULL))
        return q;
    wf__pendq *n = wf__calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    atomic_init(&n->stub.next, NULL);
    atomic_init(&n->tail, &n->stub);
    n->head = &n->stub;
    atomic_flag_clear(&n->lock);
    if (atomic_compare_exchange_strong(&ss->pendq, &q, n))
        return n;
    wf__free_mem(n);
    return q;
}

static void pendq_push(wf__pendq *q, wf__task *t)
{
    atomic_store_explicit(&t->next, NULL, memory_order_relaxed);
    wf__task *prev = atomic_exchange_explicit(&q->tail, t, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, t, memory_order_release);
}

/* Single consumer (q->lock held). NULL if empty or a push is half-way. */
static wf__task *pendq_pop(wf__pendq *q)
{
    wf__task *head = q->head;
    wf__task *next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (head == &q->stub) {
        if (next == NULL)
            return NULL;
        q->head = next;
        head = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next) {
        q->head = next;
        return head;
    }
    if (atomic_load_explicit(&q->tail, memory_order_acquire) != head)
        return NULL;
    pendq_push(q, &q->stub);
    next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (next) {
        q->head = next;
        return head;
    }
    return NULL;
}

/*
 * Pops n events that the count protocol guarantees are there (or about to be:
 * a producer may be between its exchange and its link) and chains them.
 */
static wf__task *pendq_take(wf__pendq *q, uint32_t n)
{
    while (atomic_flag_test_and_set_explicit(&q->lock, memory_order_acquire))
        __builtin_ia32_pause();
    wf__task *first = NULL, *last = NULL;
    for (uint32_t i = 0; i < n; i++) {
        wf__task *t;
        while ((t = pendq_pop(q)) == NULL)
            __builtin_ia32_pause();
        /* its event was written on the producer's core: fetch it while we chase the rest */
        __builtin_prefetch(t->ev);
        t->chain = NULL;
        if (last)
            last->chain = t;
        else
            first = t;
        last = t;
    }
    atomic_flag_clear_explicit(&q->lock, memory_order_release);
    return first;
}

/* ---------------------------------------------------------------- delivery */

static void drop_task(wf__task *t)
{
    if (WF__UNLIKELY(t->kind == WF__TASK_INVOKE && t->u.group != NULL))
        branch_done(t->run, t->u.group, t->pad);
    wf_event_release(t->ev);
    if (t->kind == WF__TASK_INVOKE && t->arg) {
        wf__retry_info *ri = t->arg;
        for (uint32_t i = 0; i < ri->ntuple; i++)
            wf_event_release(ri->tuple[i]);
        if (!ri->tuple_inline)
            wf__free_mem(ri->tuple);
        wf__free_mem(ri->last_msg);
        wf__free_mem(ri);
    }
    wf__task_free(t);
}

/* Steps declared blocking run on the executor's blocking pool, not on a worker. */
static inline void run_schedule(wf__run *run, wf__task *t)
{
    if (WF__UNLIKELY(run->steps[t->step].blocking))
        wf__blocking_submit(run->ex, t);
    else
        wf__schedule(run->ex, t);
}

/* Events a finishing invocation claims at once from a busy step's queue. */
#define CLAIM_MAX 8

/*
 * One invocation of step s finished (or a dropped event released its slot).
 * When events wait, the slot passes to the next one; besides, the finisher
 * claims up to CLAIM_MAX-1 more of the waiting events that nobody owes yet
 * (those counted above num_workers) by taking them off the count, and runs
 * them in the same slot one after the other. Concurrency stays within
 * num_workers, and a busy step touches its shared count and queue lock once
 * per batch instead of once per event.
 */
/* The count shard of the calling thread for run (see WF__UNBOUNDED). */
static inline uint32_t my_shard(const wf__run *run)
{
    wf__worker *w = wf__tls_worker;
    if (w && w->ex == run->ex && w->index + 1 < run->nshards)
        return w->index;
    return run->nshards - 1;
}

static inline _Atomic uint32_t *shard_ctr(wf__run *run, uint32_t shard, uint32_t s)
{
    return &run->shards[shard * run->shard_stride + run->steps[s].col];
}

/* The counter a task of step s counted in `shard` is in. */
static inline _Atomic uint32_t *slot_ctr(wf__run *run, uint32_t s, uint32_t shard)
{
    wf__step_state *ss = &run->steps[s];
    return ss->workers < WF__UNBOUNDED ? &ss->count : shard_ctr(run, shard, s);
}

static void finish_slot(wf__run *run, uint32_t s, uint32_t shard)
{
    wf__step_state *ss = &run->steps[s];
    /* Read before giving the unit up: afterwards the run may be freed by others. */
    uint32_t w = ss->workers;
    if (w >= WF__UNBOUNDED) {
        if (atomic_fetch_sub_explicit(shard_ctr(run, shard, s), 1, memory_order_acq_rel) == 1)
            engine_unref(run); /* may free the run */
        return;
    }
    for (;;) {
        uint32_t n = atomic_fetch_sub_explicit(&ss->count, 1, memory_order_acq_rel);
        if (n == 1) {
            engine_unref(run); /* may free the run */
            return;
        }
        if (n <= w)
            return; /* run memory must not be touched any more */
        uint32_t extra = 0;
        uint32_t c = atomic_load_explicit(&ss->count, memory_order_relaxed);
        while (c > w) {
            extra = c - w < CLAIM_MAX - 1 ? c - w : CLAIM_MAX - 1;
            if (atomic_compare_exchange_weak_explicit(&ss->count, &c, c - extra,
                                                      memory_order_acq_rel, memory_order_relaxed))
                break;
            extra = 0;
        }
        wf__task *t = pendq_take(atomic_load_explicit(&ss->pendq, memory_order_acquire), 1 + extra);
        if (!run_ended(run)) {
            run_schedule(run, t);
            return;
        }
        /* The run is over: drop them; the first one's slot is released next round. */
        while (t) {
            wf__task *nx = t->chain;
            drop_task(t);
            t = nx;
        }
    }
}

/* finish_slot for a single task that may owe an engine unit (see tls_handoff). */
static void finish_slot_owed(wf__run *run, uint32_t s, uint32_t shard)
{
    if (WF__LIKELY(tls_handoff == NULL)) {
        finish_slot(run, s, shard);
        return;
    }
    tls_handoff = NULL;
    uint32_t one = 1;
    if (atomic_compare_exchange_strong_explicit(slot_ctr(run, s, shard), &one, 0,
                                                memory_order_acq_rel, memory_order_relaxed))
        return; /* the last of its step (or shard): its engine unit is the woken step's now */
    engine_ref(run);
    finish_slot(run, s, shard);
}

/* An engine unit for a counter that went 0 -> 1 by delivering t (see tls_handoff). */
static inline void woke(wf__run *run, wf__task *t)
{
    if (tls_handoff_run == run && tls_handoff == NULL && !run->steps[t->step].blocking &&
        wf__bypass_try(run->ex, t)) {
        tls_handoff = run;
        return;
    }
    engine_ref(run);
    run_schedule(run, t);
}

/* Delivers a prepared INVOKE task (owned) through step t->step's count. */
static int deliver_task(wf__run *run, wf__task *t)
{
    wf__step_state *ss = &run->steps[t->step];
    uint32_t w = ss->workers;
    if (w >= WF__UNBOUNDED) {
        if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE))
            obs_route(run, t, 0);
        t->shard = (uint8_t)my_shard(run);
        _Atomic uint32_t *ctr = shard_ctr(run, t->shard, t->step);
        if (atomic_fetch_add_explicit(ctr, 1, memory_order_acq_rel) == 0)
            woke(run, t);
        else
            run_schedule(run, t);
        return 0;
    }
    uint32_t c = atomic_load_explicit(&ss->count, memory_order_relaxed);
    while (c < w) {
        if (atomic_compare_exchange_weak_explicit(&ss->count, &c, c + 1, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE))
                obs_route(run, t, 0);
            if (c == 0)
                woke(run, t);
            else
                run_schedule(run, t);
            return 0;
        }
    }
    wf__pendq *q = pendq_get(ss);
    if (WF__UNLIKELY(q == NULL)) {
        drop_task(t);
        return WF_ENOMEM;
    }
    if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE)) /* before the push: then t may run and go */
        obs_route(run, t, atomic_load_explicit(&ss->count, memory_order_relaxed) + 1 - w);
    pendq_push(q, t);
    uint32_t n = atomic_fetch_add_explicit(&ss->count, 1, memory_order_acq_rel);
    if (n == 0)
        engine_ref(run);
    if (n < w)
        run_schedule(run, pendq_take(q, 1));
    return 0;
}

static int join_deliver(wf__run *run, uint32_t s, wf_event *ev);

/* Delivers ev (owned) to step s. Returns 0 or WF_ENOMEM (ev released). */
static int deliver(wf__run *run, uint32_t s, wf_event *ev)
{
    if (WF__UNLIKELY(run->steps[s].join))
        return join_deliver(run, s, ev);
    wf__task *t = wf__task_alloc();
    if (WF__UNLIKELY(t == NULL)) {
        wf_event_release(ev);
        return WF_ENOMEM;
    }
    t->kind = WF__TASK_INVOKE;
    t->run = run;
    t->ev = ev;
    t->step = s;
    t->arg = NULL;
    t->flags = tls_lineage;
    tag_task(t);
    return deliver_task(run, t);
}

/*
 * Delivers k events (owned) to step s with one exchange on the pending queue
 * and one add on the count: a step that sends many events to the same step
 * (a fan-out) pays the shared cache lines once per batch, not per event.
 */
static int deliver_batch(wf__run *run, uint32_t s, wf_event **evs, uint32_t k)
{
    if (k == 1)
        return deliver(run, s, evs[0]);
    wf__step_state *ss = &run->steps[s];
    uint32_t w = ss->workers;
    wf__task *first = NULL, *last = NULL;
    uint32_t made = 0;
    for (; made < k; made++) {
        wf__task *t = wf__task_alloc();
        if (WF__UNLIKELY(t == NULL))
            break;
        t->kind = WF__TASK_INVOKE;
        t->run = run;
        t->ev = evs[made];
        t->step = s;
        t->arg = NULL;
        t->flags = tls_lineage;
        tag_task(t);
        atomic_store_explicit(&t->next, NULL, memory_order_relaxed);
        if (last)
            atomic_store_explicit(&last->next, t, memory_order_relaxed);
        else
            first = t;
        last = t;
    }
    int rc = 0;
    if (made < k) {
        for (uint32_t i = made; i < k; i++)
            wf_event_release(evs[i]);
        rc = WF_ENOMEM;
    }
    if (made == 0)
        return rc;
    if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE)) {
        uint32_t c0 = atomic_load_explicit(&ss->count, memory_order_relaxed), i = 0;
        for (wf__task *t = first; t; t = atomic_load_explicit(&t->next, memory_order_relaxed), i++)
            obs_route(run, t, c0 + i + 1 > w ? c0 + i + 1 - w : 0);
    }
    if (w >= WF__UNBOUNDED) { /* all of them start, counted in this thread's shard */
        uint32_t sh = my_shard(run);
        for (wf__task *t = first; t; t = atomic_load_explicit(&t->next, memory_order_relaxed))
            t->shard = (uint8_t)sh;
        if (atomic_fetch_add_explicit(shard_ctr(run, sh, s), made, memory_order_acq_rel) == 0)
            engine_ref(run);
        while (first) {
            wf__task *t = first;
            first = atomic_load_explicit(&t->next, memory_order_relaxed);
            run_schedule(run, t);
        }
        return rc;
    }
    /* Free slots first: those tasks start directly. */
    uint32_t c = atomic_load_explicit(&ss->count, memory_order_relaxed);
    while (c < w && first) {
        uint32_t m = w - c < made ? w - c : made;
        if (!atomic_compare_exchange_weak_explicit(&ss->count, &c, c + m, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        if (c == 0)
            engine_ref(run);
        for (uint32_t i = 0; i < m; i++) {
            wf__task *t = first;
            first = atomic_load_explicit(&t->next, memory_order_relaxed);
            run_schedule(run, t);
        }
        made -= m;
        c += m;
    }
    if (first == NULL)
        return rc;
    wf__pendq *q = pendq_get(ss);
    if (WF__UNLIKELY(q == NULL)) {
        while (first) {
            wf__task *t = first;
            first = atomic_load_explicit(&t->next, memory_order_relaxed);
            drop_task(t);
        }
        return WF_ENOMEM;
    }
    wf__task *prev = atomic_exchange_explicit(&q->tail, last, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, first, memory_order_release);
    uint32_t n = atomic_fetch_add_explicit(&ss->count, made, memory_order_acq_rel);
    if (n == 0)
        engine_ref(run);
    for (uint32_t i = n; i < w && i < n + made; i++)
        run_schedule(run, pendq_take(q, 1));
    return rc;
}

/* ----------------------------------------------------------------- stream */

/* 0: kept (or the run had ended), 1: the stream was full and dropped it. */
static int stream_push(wf__run *run, wf_event *ev)
{
    wf_event_freeze(ev);
    pthread_mutex_lock(&run->mu);
    if (run_ended(run) || run->scap == 0) {
        int dropped = !run_ended(run);
        if (dropped)
            atomic_fetch_add(&run->dropped, 1);
        pthread_mutex_unlock(&run->mu);
        wf_event_release(ev);
        return dropped;
    }
    if (run->sbuf == NULL) {
        run->sbuf = wf__malloc(run->scap * sizeof *run->sbuf);
        if (run->sbuf == NULL) {
            atomic_fetch_add(&run->dropped, 1);
            pthread_mutex_unlock(&run->mu);
            wf_event_release(ev);
            return 1;
        }
    }
    if (run->scount == run->scap) {
        atomic_fetch_add(&run->dropped, 1);
        pthread_mutex_unlock(&run->mu);
        wf_event_release(ev);
        return 1;
    }
    run->sbuf[(run->shead + run->scount) % run->scap] = ev;
    run->scount++;
    if (run->sleepers)
        pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
    return 0;
}

static void notify_unhandled(wf__run *run, wf_event *ev)
{
    atomic_fetch_add(&run->unhandled, 1);
    if (wf__obs_on(run->ex, WF_OBS_EVENT_UNHANDLED))
        obs_event(run, WF_OBS_EVENT_UNHANDLED, WF__OBS_NO_STEP, ev->type, 0);
    wf__log(run->ex, WF_LOG_DEBUG, "run %llu: no step accepts %s; event dropped",
            (unsigned long long)run->id, ev->type->name);
    if (run->stream_internal) {
        wf_value name;
        wf_event *n = NULL;
        if (wf_value_string(&name, ev->type->name) == 0 &&
            wf_event_new1(&n, run->wf->reg->types[WF_UNHANDLED_EVENT], "event_type", name) == 0)
            stream_push(run, n);
    }
    wf_event_release(ev);
}

/* ---------------------------------------------------------------- waiters */

static int req_match(const wf_value req, const wf_event *ev)
{
    if (wf_value_kind(req) != WF_MAP)
        return 1;
    size_t n = wf_value_len(req);
    for (size_t i = 0; i < n; i++) {
        const char *k;
        wf_value want, have;
        if (wf_value_map_at(req, i, &k, NULL, &want) < 0 || wf_event_lookup(ev, k, &have) < 0 ||
            !wf_value_equal(want, have))
            return 0;
    }
    return 1;
}

/* A waiter's timer: the wait gives up, the step runs again and sees WF_ETIMEDOUT. */
static void waiter_fire(wf__timer *tm, void *arg)
{
    (void)tm;
    wf__waiter *w = arg;
    wf__run *run = w->run;
    wf__task *t = NULL;
    int o = wf__outside_enter(run);
    pthread_mutex_lock(&run->collect_lock);
    if (w->state == W_WAITING) {
        w->state = W_TIMED_OUT;
        atomic_fetch_sub(&run->nwaiting, 1);
        t = w->task;
        w->task = NULL;
    }
    w->timer_live = 0;
    int orphan = w->orphan;
    pthread_mutex_unlock(&run->collect_lock);
    if (orphan) {
        w->next = NULL;
        waiters_free(w);
    }
    if (t) {
        if (run_ended(run))
            drop_task(t);
        else if (deliver_task(run, t) < 0)
            end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, NULL, "out of memory resuming a step");
    }
    wf__outside_exit(run, o);
    engine_unref(run); /* the timer's unit */
}

/* Disarms w's timer if armed (coord lock held); 1 if this removed an armed timer. */
static int waiter_disarm(wf__run *run, wf__waiter *w)
{
    if (!w->timer_live || !wf__timer_cancel(run->ex, &w->tm))
        return 0;
    w->timer_live = 0;
    return 1;
}

/*
 * Gives ev to every waiting waiter it satisfies and queues their steps to run
 * again; excluded[] gets those steps (the event is not also routed to them).
 * Returns how many.
 */
static uint32_t waiters_match(wf__run *run, const wf_event *ev, uint32_t *excluded, uint32_t cap)
{
    wf__waiter *hit[16];
    uint32_t n = 0;
    pthread_mutex_lock(&run->collect_lock);
    for (wf__waiter *w = run->waiters; w && n < 16 && n < cap; w = w->next) {
        if (w->state != W_WAITING || w->type != ev->type || !req_match(w->req, ev))
            continue;
        w->state = W_RESOLVED;
        w->got = wf_event_retain(ev);
        atomic_fetch_sub(&run->nwaiting, 1);
        excluded[n] = w->step;
        hit[n++] = w;
    }
    wf__task *tasks[16];
    uint32_t disarmed = 0;
    for (uint32_t i = 0; i < n; i++) {
        /* hit[i] stays in the list until its step runs again and takes the event */
        tasks[i] = hit[i]->task;
        hit[i]->task = NULL;
        disarmed += (uint32_t)waiter_disarm(run, hit[i]);
    }
    pthread_mutex_unlock(&run->collect_lock);
    for (uint32_t i = 0; i < disarmed; i++)
        engine_unref(run); /* never the last: the caller routes inside the run */
    for (uint32_t i = 0; i < n; i++)
        if (deliver_task(run, tasks[i]) < 0)
            end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, NULL, "out of memory resuming a step");
    return n;
}

/* Disarms the waiters' timers (the run ended). */
static void waiters_cancel(wf__run *run)
{
    uint32_t dropped = 0;
    pthread_mutex_lock(&run->collect_lock);
    for (wf__waiter *w = run->waiters; w; w = w->next)
        dropped += (uint32_t)waiter_disarm(run, w);
    pthread_mutex_unlock(&run->collect_lock);
    for (uint32_t i = 0; i < dropped; i++)
        engine_unref(run); /* never the last: the caller holds the running unit */
}

/* ---------------------------------------------------------------- routing */

/* Routes ev (owned) from inside the run. target: a step index or -1. */
static void group_fire(wf__run *run, wf__group *g);

static void emit(wf__run *run, wf_event *ev, int32_t target)
{
    wf_event_freeze(ev);
    if (run_ended(run)) {
        if (wf__obs_on(run->ex, WF_OBS_EVENT_DROP))
            obs_event(run, WF_OBS_EVENT_DROP, target >= 0 ? (uint32_t)target : WF__OBS_NO_STEP,
                      ev->type, 0);
        wf_event_release(ev);
        return;
    }
    const wf_event_type *t = ev->type;
    if (WF__UNLIKELY(t->reg != run->reg)) {
        char msg[320];
        snprintf(msg, sizeof msg, "event type '%s' belongs to another registry", t->name);
        wf_event_release(ev);
        end_run(run, WF_RUN_FAILED, NULL, WF_ETYPE, NULL, msg);
        return;
    }
    if (WF__UNLIKELY(t->is_stop)) {
        end_run(run, WF_RUN_DONE, ev, 0, NULL, NULL);
        return;
    }
    if (WF__UNLIKELY(tls_group != NULL) && t == tls_group->collect) {
        /* the branch's result: it resolves the branch and goes to the join only */
        wf__group *g = tls_group;
        int expected = 0;
        if (atomic_compare_exchange_strong(&g->resolved[tls_branch], &expected, 1)) {
            g->result[tls_branch] = ev;
            if (atomic_fetch_sub(&g->unresolved, 1) == 1)
                group_fire(run, g);
            return;
        }
    }
    int input_required = t->is_input;
    if (WF__UNLIKELY(input_required))
        stream_push(run, wf_event_retain(ev));
    uint32_t excluded[16];
    uint32_t nex = 0;
    if (WF__UNLIKELY(atomic_load_explicit(&run->nwaiting, memory_order_acquire) != 0))
        nex = waiters_match(run, ev, excluded, 16);
    int rc = 0;
    if (target >= 0) {
        int skip = 0;
        for (uint32_t k = 0; k < nex; k++)
            skip |= excluded[k] == (uint32_t)target;
        if (skip)
            wf_event_release(ev);
        else
            rc = deliver(run, (uint32_t)target, ev);
    } else {
        const uint32_t *steps;
        uint32_t n;
        uint32_t scratch[64];
        wf__workflow_route(run->wf, t, &steps, &n, scratch, 64);
        uint32_t live[64];
        if (WF__UNLIKELY(nex > 0)) {
            /* the event went to waiters of those steps instead */
            uint32_t m = 0;
            for (uint32_t i = 0; i < n && m < 64; i++) {
                int skip = 0;
                for (uint32_t k = 0; k < nex; k++)
                    skip |= excluded[k] == steps[i];
                if (!skip)
                    live[m++] = steps[i];
            }
            steps = live;
            n = m;
            if (n == 0) {
                wf_event_release(ev);
                return;
            }
        }
        if (n == 0) {
            if (input_required)
                wf_event_release(ev);
            else
                notify_unhandled(run, ev);
            return;
        }
        for (uint32_t i = 0; i + 1 < n && rc == 0; i++)
            rc = deliver(run, steps[i], wf_event_retain(ev));
        if (rc == 0)
            rc = deliver(run, steps[n - 1], ev);
        else
            wf_event_release(ev);
    }
    if (WF__UNLIKELY(rc < 0))
        end_run(run, WF_RUN_FAILED, NULL, rc, NULL, "out of memory while routing an event");
}

/*
 * Routes the events a step sent, in order. Runs of consecutive events that
 * go to one and the same step (a fan-out) are delivered as one batch; the
 * order each step sees is unchanged.
 */
static void emit_sent(wf__run *run, wf_event **evs, const int32_t *targets, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        if (run_ended(run)) {
            for (; i < n; i++)
                wf_event_release(evs[i]);
            return;
        }
        /* How far does a run of events for one single step go? */
        int32_t dest = -1;
        uint32_t j = i;
        if (atomic_load_explicit(&run->nwaiting, memory_order_acquire) != 0)
            j = n + 1; /* waiters look at every event: no batches now */
        const wf_event_type *prev = NULL;
        for (; j < n; j++) {
            const wf_event_type *t = evs[j]->type;
            if (t == prev && targets[j] == targets[j - 1])
                continue; /* decided as the one before it (a fan-out: every one) */
            if (t->reg != run->reg || t->is_stop || t->is_input)
                break;
            int32_t d = targets[j];
            if (d < 0) {
                const uint32_t *steps;
                uint32_t k;
                uint32_t scratch[4];
                wf__workflow_route(run->wf, t, &steps, &k, scratch, 4);
                if (k != 1)
                    break;
                d = (int32_t)steps[0];
            }
            if ((j > i && d != dest) || run->steps[d].join)
                break;
            dest = d;
            prev = t;
        }
        if (j <= n && j - i >= 2) {
            int rc = deliver_batch(run, (uint32_t)dest, evs + i, j - i);
            if (WF__UNLIKELY(rc < 0)) {
                for (uint32_t m = j; m < n; m++)
                    wf_event_release(evs[m]);
                end_run(run, WF_RUN_FAILED, NULL, rc, NULL, "out of memory while routing an event");
                return;
            }
            i = j;
        } else {
            emit(run, evs[i], targets[i]);
            i++;
        }
    }
}

/* ------------------------------------------------------------ end of a run */

static wf_event *terminal_event(wf__run *run, int status, const char *msg, const char *step,
                                int code, wf_value active)
{
    wf_registry *reg = run->wf->reg;
    wf_event *ev = NULL;
    wf_value v;
    switch (status) {
    case WF_RUN_CANCELLED:
        (void)wf_event_new(&ev, reg->types[WF_WORKFLOW_CANCELLED_EVENT], 0);
        break;
    case WF_RUN_TIMED_OUT:
        if (wf_event_new(&ev, reg->types[WF_WORKFLOW_TIMED_OUT_EVENT], 2) == 0) {
            (void)wf_event_set(ev, "timeout", wf_value_double((double)run->timeout_ms / 1000.0));
            if (!wf_value_is_nil(active))
                (void)wf_event_set(ev, "active_steps", active);
            active = wf_value_nil();
        }
        break;
    case WF_RUN_FAILED:
        if (wf_event_new(&ev, reg->types[WF_WORKFLOW_FAILED_EVENT], 3) == 0) {
            if (step && wf_value_string(&v, step) == 0)
                (void)wf_event_set(ev, "step_name", v);
            (void)wf_event_set(ev, "error_code", wf_value_int(code));
            if (msg && wf_value_string(&v, msg) == 0)
                (void)wf_event_set(ev, "error", v);
        }
        break;
    default:
        break;
    }
    wf_value_release(active);
    if (ev)
        wf_event_freeze(ev);
    return ev;
}

/*
 * Ends the run exactly once: publishes the outcome, frees the context for
 * the next run, streams the terminal event, wakes waiters, calls on_done.
 * Takes result (the StopEvent for WF_RUN_DONE). Returns 1 if this call ended
 * the run, 0 if it had ended already.
 */
static int end_run(wf__run *run, int status, wf_event *result, int code, const char *step,
                   const char *msg)
{
    char tmsg[1024];
    wf_value active = wf_value_nil();
    if (status == WF_RUN_TIMED_OUT) {
        /*
         * Name the steps that are busy now, before the run is marked ended:
         * after that their invocations see it and return.
         */
        if (atomic_load(&run->ended))
            return 0;
        int n = snprintf(tmsg, sizeof tmsg, "Operation timed out after %g seconds",
                         (double)run->timeout_ms / 1000.0);
        const char *sep = "; active steps: ";
        if (wf_value_array_new(&active, 4) < 0)
            active = wf_value_nil();
        for (uint32_t i = 0; i < run->nsteps && n > 0 && (size_t)n < sizeof tmsg; i++) {
            if (wf__step_count(run, i) == 0)
                continue;
            n += snprintf(tmsg + n, sizeof tmsg - (size_t)n, "%s%s", sep, run->wf->steps[i]->name);
            sep = ", ";
            wf_value name;
            if (!wf_value_is_nil(active) && wf_value_string(&name, run->wf->steps[i]->name) == 0)
                (void)wf_value_array_push(&active, name);
        }
        msg = tmsg;
        code = WF_ERUNTIMEOUT;
    }
    int expected = 0;
    if (!atomic_compare_exchange_strong(&run->ended, &expected, 1)) {
        wf_event_release(result);
        wf_value_release(active);
        return 0;
    }
    struct wf_executor *ex = run->ex;
    if (run->timeout_ms >= 0 && wf__timer_cancel(ex, &run->timeout))
        engine_unref(run); /* cannot be the last: we still hold the running unit */
    retries_cancel(run);
    waiters_cancel(run);
    tokens_detach(run);

    pthread_mutex_lock(&ex->runs_lock);
    WF__DLIST_UNLINK(ex->runs_head, run);
    pthread_mutex_unlock(&ex->runs_lock);

    if (status == WF_RUN_CANCELLED) {
        code = WF_ECANCELLED;
        msg = "the run was cancelled";
    }
    if (wf__obs_on(ex, WF_OBS_RUN_END)) {
        wf__obs_rec r = {0};
        uint32_t si = WF__OBS_NO_STEP;
        for (uint32_t i = 0; step && i < run->nsteps && si == WF__OBS_NO_STEP; i++)
            if (strcmp(run->wf->steps[i]->name, step) == 0)
                si = i;
        obs_rec(run, WF_OBS_RUN_END, si, NULL, wf__obs_now(), &r);
        r.attempt = (uint32_t)status;
        r.error = status == WF_RUN_DONE ? 0 : code;
        r.message = status == WF_RUN_DONE ? NULL : obs_strdup(msg);
        r.dv = run->obs_t0 ? r.ts - run->obs_t0 : 0;
        wf__obs_write(ex, &r);
    }
    wf_event *term = status == WF_RUN_DONE ? wf_event_retain(result)
                                           : terminal_event(run, status, msg, step, code, active);

    wf_ctx *ctx = run->ctx;
    pthread_mutex_lock(&ctx->run_lock);
    if (atomic_load(&ctx->run) == run)
        atomic_store_explicit(&ctx->run, NULL, memory_order_release);
    pthread_mutex_unlock(&ctx->run_lock);

    /* what this thread holds back of the run goes out before anyone learns it ended */
    if (WF__UNLIKELY(wf__obs_mask(ex)))
        wf__obs_settle();

    pthread_mutex_lock(&run->mu);
    run->result = result;
    run->err_code = code;
    run->err_step = step ? wf__strdup(step) : NULL;
    run->err_msg = msg ? wf__strdup(msg) : NULL;
    run->terminal = term;
    run->status = status;
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);

    if (run->on_done)
        run->on_done((wf_handler *)run, run->on_done_user);
    engine_unref(run); /* the running unit */
    return 1;
}

/* ---------------------------------------------------------- running tasks */

static void inv_release_sent(wf__inv *inv)
{
    for (uint32_t i = 0; i < inv->nsent; i++)
        wf_event_release(inv->sent[i]);
    inv->nsent = 0;
}

static void inv_cleanup(wf__inv *inv)
{
    if (inv->sent != inv->inl_sent) {
        wf__free_mem(inv->sent);
        wf__free_mem(inv->targets);
    }
    wf__free_mem(inv->errmsg);
}

/* ----------------------------------------------------------------- retries */

static void retry_fire(wf__timer *tm, void *arg)
{
    (void)tm;
    wf__retry_timer *rt = arg;
    wf__run *run = rt->run;
    int o = wf__outside_enter(run);
    pthread_mutex_lock(&run->mu);
    WF__DLIST_UNLINK(run->retries, rt);
    pthread_mutex_unlock(&run->mu);
    wf__task *t = rt->t;
    wf__free_mem(rt);
    uint32_t s = t->step;
    if (run_ended(run))
        drop_task(t);
    else if (deliver_task(run, t) < 0) /* t is gone */
        end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, run->wf->steps[s]->name,
                "out of memory re-queuing a retry");
    wf__outside_exit(run, o);
    engine_unref(run); /* the retry's unit */
}

/* Disarms the run's pending retries (the run ended). */
static void retries_cancel(wf__run *run)
{
    wf__retry_timer *done = NULL;
    pthread_mutex_lock(&run->mu);
    wf__retry_timer *rt = run->retries;
    while (rt) {
        wf__retry_timer *nx = rt->next;
        if (wf__timer_cancel(run->ex, &rt->tm)) {
            WF__DLIST_UNLINK(run->retries, rt);
            rt->next = done;
            done = rt;
        }
        /* otherwise it is firing now: retry_fire drops it */
        rt = nx;
    }
    pthread_mutex_unlock(&run->mu);
    while (done) {
        wf__retry_timer *nx = done->next;
        drop_task(done->t);
        wf__free_mem(done);
        engine_unref(run); /* never the last: the caller holds the running unit */
        done = nx;
    }
}

/*
 * Asks the step's policy about a failure of t; when it says retry, arms a
 * timer that re-delivers the same event (attempt + 1) and returns 1.
 */
static int maybe_retry(wf__run *run, wf__task *t, int rc, const char *msg, int64_t started)
{
    const wf__step *step = run->wf->steps[t->step];
    if (step->retry == NULL || run_ended(run))
        return 0;
    wf__retry_info *old = t->arg;
    int64_t first = (old && old->first_ns) ? old->first_ns : started;
    wf_retry_state st;
    st.attempt = t->attempt;
    st.error = rc;
    st.elapsed_ms = (wf__now_ns() - first) / 1000000;
    st.seed = (run->id * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)t->step << 32) ^ t->attempt;
    int64_t delay = 0;
    if (!wf_retry_policy_next(step->retry, &st, &delay))
        return 0;
    wf__task *n = wf__task_alloc();
    wf__retry_info *ri = wf__calloc(1, sizeof *ri);
    wf__retry_timer *rt = wf__calloc(1, sizeof *rt);
    if (n == NULL || ri == NULL || rt == NULL) {
        wf__task_free(n);
        wf__free_mem(ri);
        wf__free_mem(rt);
        return 0; /* cannot retry: the failure stands */
    }
    ri->first_ns = first;
    ri->last_error = rc;
    ri->last_msg = msg ? wf__strdup(msg) : NULL;
    if (old && old->joined) { /* a join step retries with the same set */
        ri->tuple = wf__malloc((old->ntuple ? old->ntuple : 1) * sizeof *ri->tuple);
        if (ri->tuple == NULL) {
            wf__free_mem(ri->last_msg);
            wf__free_mem(ri);
            wf__task_free(n);
            wf__free_mem(rt);
            return 0;
        }
        for (uint32_t i = 0; i < old->ntuple; i++)
            ri->tuple[i] = wf_event_retain(old->tuple[i]);
        ri->ntuple = old->ntuple;
    }
    ri->joined = old ? old->joined : 0;
    n->kind = WF__TASK_INVOKE;
    n->run = run;
    n->ev = wf_event_retain(t->ev);
    n->step = t->step;
    n->attempt = t->attempt + 1;
    n->arg = ri;
    n->flags = t->flags;
    n->u.group = t->u.group; /* the same branch */
    n->pad = t->pad;
    if (n->u.group)
        branch_add(n->u.group, n->pad);
    /* before the timer is armed: the next attempt may run (and the run end) at once */
    if (wf__obs_on(run->ex, WF_OBS_RETRY)) {
        wf__obs_rec r = {0};
        obs_rec(run, WF_OBS_RETRY, t->step, t->ev->type, 0, &r);
        r.attempt = t->attempt;
        r.error = rc;
        r.message = obs_strdup(msg ? msg : wf_strerror(rc));
        r.dv = delay;
        wf__obs_write(run->ex, &r);
    }
    rt->run = run;
    rt->t = n;
    rt->tm.heap_index = WF__TIMER_IDLE;
    rt->tm.fn = retry_fire;
    rt->tm.arg = rt;
    engine_ref(run); /* held by the armed retry; the failing slot still holds one */
    pthread_mutex_lock(&run->mu);
    rt->next = run->retries;
    if (run->retries)
        run->retries->prev = rt;
    run->retries = rt;
    rt->listed = 1;
    int armed = wf__timer_arm(run->ex, &rt->tm, wf__now_ns() + delay * 1000000) == 0;
    if (!armed) {
        run->retries = rt->next;
        if (rt->next)
            rt->next->prev = NULL;
    }
    pthread_mutex_unlock(&run->mu);
    if (!armed) {
        drop_task(n);
        wf__free_mem(rt);
        engine_unref(run);
        return 0;
    }
    wf__log(run->ex, WF_LOG_DEBUG, "run %llu: step %s failed (%d), attempt %u in %lld ms",
            (unsigned long long)run->id, step->name, rc, n->attempt, (long long)delay);
    return 1;
}

/*
 * Emissions of the invocations that share a slot (a claimed batch), held
 * until the batch ends so that their events reach the next step as one
 * delivery instead of one contended hand-over each. Order is kept (per
 * invocation: returned event, then sent ones; invocations in turn); a stop
 * event is never held: it flushes what is held and ends the run at once.
 */
typedef struct deferred {
    wf_event **evs;
    int32_t *targets;
    uint32_t n, cap;
    wf_event *inl_evs[32];
    int32_t inl_targets[32];
} deferred;

static int defer_push(deferred *d, wf_event *ev, int32_t target)
{
    if (d->n == d->cap) {
        uint32_t cap = d->cap * 2;
        wf_event **e = wf__malloc(cap * sizeof *e);
        int32_t *t = wf__malloc(cap * sizeof *t);
        if (e == NULL || t == NULL) {
            wf__free_mem(e);
            wf__free_mem(t);
            return WF_ENOMEM;
        }
        memcpy(e, d->evs, d->n * sizeof *e);
        memcpy(t, d->targets, d->n * sizeof *t);
        if (d->evs != d->inl_evs) {
            wf__free_mem(d->evs);
            wf__free_mem(d->targets);
        }
        d->evs = e;
        d->targets = t;
        d->cap = cap;
    }
    d->evs[d->n] = ev;
    d->targets[d->n] = target;
    d->n++;
    return 0;
}

static void defer_flush(wf__run *run, deferred *d)
{
    if (d->n)
        emit_sent(run, d->evs, d->targets, d->n);
    d->n = 0;
}

static void defer_done(deferred *d)
{
    if (d->evs != d->inl_evs) {
        wf__free_mem(d->evs);
        wf__free_mem(d->targets);
    }
}

/*
 * Events a step sends are routed in batches of SEND_BATCH while it runs, so
 * that a step sending many (a fan-out) has its receivers start at once
 * instead of holding every event until it returns. Not for steps with a
 * retry policy or an error handler: a failed attempt's emissions are dropped
 * (SEMANTICS.md), so theirs wait for the outcome.
 */
#define SEND_BATCH 64

static void inv_flush_sent(wf__inv *inv)
{
    wf__run *run = inv->run;
    slot_dirty(run); /* visible effects: a live snapshot waits for the task's end */
    if (inv->defer)
        defer_flush(run, inv->defer); /* earlier invocations of the batch come first */
    emit_sent(run, inv->sent, inv->targets, inv->nsent);
    inv->nsent = 0;
}

/* Routes an invocation's emissions now, or holds them in d (when not NULL). */
static void route_emissions(wf__run *run, wf_event *out, wf__inv *inv, deferred *d)
{
    if (d) {
        int stop = out && out->type->is_stop;
        for (uint32_t i = 0; i < inv->nsent && !stop; i++)
            stop = inv->sent[i]->type->is_stop;
        if (!stop) {
            int ok = 1;
            if (out) {
                wf_event_freeze(out);
                ok = defer_push(d, out, -1) == 0;
                if (!ok)
                    wf_event_release(out);
            }
            for (uint32_t i = 0; i < inv->nsent; i++) {
                if (ok && defer_push(d, inv->sent[i], inv->targets[i]) == 0)
                    continue;
                ok = 0;
                wf_event_release(inv->sent[i]);
            }
            inv->nsent = 0;
            if (!ok)
                end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, inv->step->name,
                        "out of memory while routing an event");
            return;
        }
        defer_flush(run, d);
    }
    if (out)
        emit(run, out, -1);
    if (inv->nsent)
        emit_sent(run, inv->sent, inv->targets, inv->nsent);
    inv->nsent = 0;
}

/* The StepFailedEvent for a failure of t (NULL when out of memory). */
static wf_event *failed_event(wf__run *run, const wf__task *t, int rc, const char *msg,
                              int64_t started)
{
    const wf__step *step = run->wf->steps[t->step];
    const wf__retry_info *ri = t->arg;
    int64_t first = (ri && ri->first_ns) ? ri->first_ns : started;
    wf_event *fe;
    if (wf_event_new(&fe, run->wf->reg->types[WF_STEP_FAILED_EVENT], 8) < 0)
        return NULL;
    wf_value v;
    int ok = wf_value_string(&v, step->name) == 0 && wf_event_set(fe, "step_name", v) == 0;
    ok = ok && wf_event_set(fe, "error_code", wf_value_int(rc)) == 0;
    if (ok && msg)
        ok = wf_value_string(&v, msg) == 0 && wf_event_set(fe, "error", v) == 0;
    ok = ok && wf_event_set(fe, "attempts", wf_value_uint(t->attempt)) == 0;
    ok = ok && wf_event_set(fe, "elapsed_ms",
                            wf_value_int(first ? (wf__now_ns() - first) / 1000000 : 0)) == 0;
    ok = ok && wf_value_string(&v, t->ev->type->name) == 0 &&
         wf_event_set(fe, "input_event_type", v) == 0;
    wf_value input;
    ok = ok && wf_value_map_new(&input, t->ev->nfields) == 0;
    const wf__field *fields = wf__ev_fields(t->ev);
    for (uint32_t i = 0; ok && i < t->ev->nfields; i++) {
        wf_value fv = wf_value_retain(fields[i].val);
        ok = wf_value_map_set(&input, wf__field_key(&fields[i]), fv) == 0;
    }
    ok = ok && wf_event_set(fe, "input", input) == 0;
    if (!ok) {
        wf_event_release(fe);
        return NULL;
    }
    return fe;
}

/*
 * A step failed for good (its retries, if any, are spent): its error handler
 * gets a StepFailedEvent while the lineage has recoveries left; otherwise the
 * run fails with the step's error.
 */
static void step_failed(wf__run *run, const wf__task *t, int rc, const char *msg, int64_t started)
{
    const wf__step *step = run->wf->steps[t->step];
    if (step->handler >= 0 && !run_ended(run)) {
        const wf__step *h = run->wf->steps[step->handler];
        if (t->flags < h->max_recoveries) {
            wf_event *fe = failed_event(run, t, rc, msg, started);
            if (fe) {
                uint16_t saved = tls_lineage;
                tls_lineage = (uint16_t)(t->flags + 1);
                wf_event_freeze(fe);
                int r = deliver(run, (uint32_t)step->handler, fe);
                tls_lineage = saved;
                if (r == 0)
                    return;
            }
        }
    }
    end_run(run, WF_RUN_FAILED, NULL, rc, step->name, msg ? msg : wf_strerror(rc));
}

static int invoke(wf__run *run, wf__task *t, deferred *d, int handoff)
{
    wf__step *step = run->wf->steps[t->step];
    wf__inv inv;
    inv.run = run;
    inv.step = step;
    inv.task = t;
    inv.sent = inv.inl_sent;
    inv.targets = inv.inl_targets;
    inv.nsent = 0;
    inv.capsent = 8;
    inv.errmsg = NULL;
    inv.suspended = 0;
    inv.token = NULL;
    inv.defer = d;
    wf__inv *prev = tls_inv;
    tls_inv = &inv;
    wf_event *out = NULL;
    /* The clock is read only for steps that can retry (elapsed time of stops). */
    int64_t started =
        (step->needs_clock && (t->arg == NULL || ((wf__retry_info *)t->arg)->first_ns == 0))
            ? wf__now_ns()
            : 0;
    inv.obs_t0 = 0; /* nonzero: observed (the start time; 1: dropped); nothing kept live across */
    uint32_t obs = wf__obs_mask(run->ex);
    if (WF__UNLIKELY(obs)) {
        if (wf__obs_drop_inv(run->ex, obs))
            inv.obs_t0 = 1; /* in the drop window: no clock read */
        else if (!obs_before_fast(run, t, &inv, obs))
            obs_before(run, t, &inv, obs);
    }
    int rc = step->fn(run->ctx, t->ev, &out, step->user);
    tls_inv = prev;
    slot_dirty(run);
    if (WF__UNLIKELY(inv.obs_t0)) {
        obs = wf__obs_mask(run->ex); /* observers may have changed meanwhile */
        if (inv.obs_t0 == 1)
            wf__obs_drop_inv_end(obs, rc, out);
        else if (!obs_after_fast(run, t, &inv, rc, out, obs))
            obs_after(run, t, &inv, rc, out, obs);
    }
    if (WF__LIKELY(rc == 0)) {
        tls_handoff_run = handoff ? run : NULL;
        route_emissions(run, out, &inv, d);
        tls_handoff_run = NULL;
    } else if (rc == WF_PENDING && inv.token) {
        /* The invocation goes on elsewhere: its token now owns the task and the slot. */
        wf_event_release(out);
        route_emissions(run, NULL, &inv, d);
        inv.token->started = started;
        int armed = token_arm(inv.token); /* 0: it was completed already, and routed */
        inv_cleanup(&inv);
        if (WF__UNLIKELY(inv.obs_t0)) {
            wf__obs_settle();
            tls_obs_now = 0;
        }
        return armed;
    } else if (rc == WF_SUSPEND && inv.suspended) {
        /* Sent events still go out (as in the reference); the step runs again later. */
        wf_event_release(out);
        route_emissions(run, NULL, &inv, d);
    } else if (rc < 0 && maybe_retry(run, t, rc, inv.errmsg, started)) {
        /* Emissions of a failed attempt are dropped: the retry starts afresh. */
        wf_event_release(out);
        inv_release_sent(&inv);
    } else {
        wf_event_release(out);
        inv_release_sent(&inv);
        if (d)
            defer_flush(run, d); /* what earlier invocations emitted still counts */
        if (rc > 0) {
            end_run(run, WF_RUN_FAILED, NULL, WF_ESTATE, step->name,
                    rc == WF_SUSPEND ? "a step returned WF_SUSPEND without waiting for an event"
                                     : "a step returned WF_PENDING, which needs an async token");
        } else {
            step_failed(run, t, rc, inv.errmsg, started);
        }
    }
    if (inv.token) /* pended, then returned something else: the token is void */
        token_abandon(inv.token);
    inv_cleanup(&inv);
    if (WF__UNLIKELY(inv.obs_t0)) {
        wf__obs_settle();
        tls_obs_now = 0;
    }
    return 0;
}

/*
 * The live-snapshot protocol of a task runner (see run_impl.h): announce the
 * run in the slot, then look at the gate; hold the task while a snapshot is
 * being taken. Costs two stores, a compiler barrier and a load per task.
 */
static void gate_wait(wf__run *run)
{
    wf__pool_spill_bypass(); /* the snapshot may need that task: let it reach it */
    int g;
    for (int i = 0; (g = atomic_load_explicit(&run->gate, memory_order_acquire)) != 0; i++) {
        if (i < 128)
            __builtin_ia32_pause();
        else
            syscall(SYS_futex, (int *)&run->gate, FUTEX_WAIT_PRIVATE, g, NULL, NULL, 0);
    }
}

/* The gate is closed: park t (and its chain) on the run, unless it opened meanwhile. */
static int slot_hold(wf__slot *slot, wf__run *run, wf__task *t)
{
    pthread_mutex_lock(&run->snap_lock);
    int closed = atomic_load_explicit(&run->gate, memory_order_relaxed);
    if (closed) {
        atomic_store_explicit(&t->next, run->held, memory_order_relaxed);
        run->held = t;
        atomic_store_explicit(&slot->state, 0, memory_order_release);
    }
    pthread_mutex_unlock(&run->snap_lock);
    return closed;
}

/* 1 if t was held for a snapshot (the slot is free again). */
static inline int slot_enter(wf__slot *slot, wf__run *run, wf__task *t)
{
    if (slot == NULL)
        return 0;
    atomic_store_explicit(&slot->task, t, memory_order_release);
    atomic_store_explicit(&slot->state, (uintptr_t)run, memory_order_release);
    wf__fence_light();
    if (WF__LIKELY(!atomic_load_explicit(&run->gate, memory_order_acquire)))
        return 0;
    return slot_hold(slot, run, t);
}

/*
 * The task is about to make something visible to the run (route, finish its
 * slot, touch coordination state): wait while a snapshot is being taken.
 */
static inline void slot_dirty(wf__run *run)
{
    wf__slot *slot = wf__tls_slot;
    if (slot == NULL || atomic_load_explicit(&slot->state, memory_order_relaxed) != (uintptr_t)run)
        return; /* already dirty, or not this run's task */
    for (;;) {
        atomic_store_explicit(&slot->state, (uintptr_t)run | WF__SLOT_DIRTY, memory_order_release);
        wf__fence_light();
        if (WF__LIKELY(!atomic_load_explicit(&run->gate, memory_order_acquire)))
            return;
        atomic_store_explicit(&slot->state, (uintptr_t)run, memory_order_release);
        gate_wait(run);
    }
}

static inline void slot_leave(wf__slot *slot)
{
    if (slot)
        atomic_store_explicit(&slot->state, 0, memory_order_release);
}

int wf__outside_enter(wf__run *run)
{
    wf__slot *slot = wf__tls_slot;
    if (slot &&
        atomic_load_explicit(&slot->state, memory_order_relaxed) == ((uintptr_t)run | WF__SLOT_DIRTY))
        return 0; /* inside one of the run's tasks, already past the gate */
    pthread_rwlock_rdlock(&run->outside);
    return 1;
}

void wf__outside_exit(wf__run *run, int entered)
{
    if (entered)
        pthread_rwlock_unlock(&run->outside);
}

static void run_batch(wf__run *run, wf__task *t, uint32_t s, uint32_t shard, wf__slot *slot);

void wf__task_run(wf__worker *w, wf__task *t)
{
    (void)w;
    if (t->kind == WF__TASK_CALL) {
        void (*fn)(void *) = t->u.fn;
        void *arg = t->arg;
        wf__task_free(t);
        fn(arg);
        return;
    }
    wf__run *run = t->run;
    uint32_t s = t->step;
    uint32_t shard = t->shard; /* a batch (bounded steps only) has one slot of one count */
    wf__slot *slot = wf__tls_slot;
    if (WF__UNLIKELY(slot_enter(slot, run, t)))
        return; /* held for a snapshot; it runs when the snapshot is done */
    if (t->chain == NULL) {
        int pended = 0;
        if (!run_ended(run)) {
            tls_lineage = t->flags;
            tls_group = t->u.group;
            tls_branch = t->pad;
            pended = invoke(run, t, NULL, 1);
            tls_lineage = 0;
            tls_group = NULL;
        }
        if (!pended) {
            slot_dirty(run);
            drop_task(t);
            finish_slot_owed(run, s, shard);
        }
        slot_leave(slot);
        return;
    }
    run_batch(run, t, s, shard, slot);
}

/*
 * t and the events chained to it share one slot of step s. Apart from the
 * single-task path, whose stack frame it would otherwise enlarge.
 */
static __attribute__((noinline)) void run_batch(wf__run *run, wf__task *t, uint32_t s,
                                                uint32_t shard, wf__slot *slot)
{
    deferred d;
    d.evs = d.inl_evs;
    d.targets = d.inl_targets;
    d.n = 0;
    d.cap = 32;
    uint16_t lineage = 0;
    while (t) {
        int pended = 0;
        if (!run_ended(run)) {
            /* held emissions are routed with the highest lineage of the batch */
            lineage = t->flags > lineage ? t->flags : lineage;
            tls_lineage = lineage;
            if (WF__UNLIKELY(t->u.group != NULL)) {
                /* a branch's emissions must count before its task ends: no holding */
                tls_group = t->u.group;
                tls_branch = t->pad;
                pended = invoke(run, t, NULL, 0);
                tls_group = NULL;
            } else {
                pended = invoke(run, t, &d, 0);
            }
        }
        wf__task *nx = t->chain;
        if (pended) {
            /*
             * The slot now belongs to the pending invocation; the rest of the
             * batch was claimed off the count, so it goes back through it.
             */
            t->chain = NULL;
            defer_flush(run, &d);
            defer_done(&d);
            tls_lineage = 0;
            while (nx) {
                wf__task *n2 = nx->chain;
                nx->chain = NULL;
                if (run_ended(run))
                    drop_task(nx);
                else if (deliver_task(run, nx) < 0) /* nx is gone */
                    end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, NULL,
                            "out of memory re-queuing events");
                nx = n2;
            }
            slot_leave(slot);
            return;
        }
        slot_dirty(run);
        drop_task(t);
        t = nx;
        if (t && WF__UNLIKELY(atomic_load_explicit(&run->gate, memory_order_relaxed))) {
            /* a snapshot waits: route what the batch holds, park the rest of it */
            tls_lineage = lineage;
            defer_flush(run, &d);
            tls_lineage = 0;
            defer_done(&d);
            if (slot_enter(slot, run, t)) /* clean again on the rest of the batch */
                return;
            d.evs = d.inl_evs;
            d.targets = d.inl_targets;
            d.n = 0;
            d.cap = 32;
            lineage = 0;
        }
    }
    tls_lineage = lineage;
    defer_flush(run, &d);
    tls_lineage = 0;
    defer_done(&d);
    finish_slot(run, s, shard);
    slot_leave(slot);
}

/* --------------------------------------------------------------- starting */

void wf_run_params_init(wf_run_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->timeout_ms = WF_TIMEOUT_DEFAULT;
    p->stream_capacity = 4096;
}

static void on_timeout(wf__timer *tm, void *arg)
{
    (void)tm;
    wf__run *run = arg;
    int o = wf__outside_enter(run);
    end_run(run, WF_RUN_TIMED_OUT, NULL, WF_ERUNTIMEOUT, NULL, NULL);
    wf__outside_exit(run, o);
    engine_unref(run); /* the timer's unit */
}

int wf__run_create(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params,
                   wf__run **out)
{
    *out = NULL;
    uint32_t ns = wf->n_steps;
    wf__run *run = wf__calloc(1, sizeof *run + ns * sizeof(wf__step_state));
    if (run == NULL)
        return WF_ENOMEM;
    int rc;
    if (ctx) {
        wf_ctx_retain(ctx);
    } else if ((rc = wf_ctx_new(&ctx, wf)) < 0) {
        wf__free_mem(run);
        return rc;
    }
    pthread_mutex_lock(&ctx->run_lock);
    if (atomic_load(&ctx->run) != NULL) {
        pthread_mutex_unlock(&ctx->run_lock);
        wf_ctx_free(ctx);
        wf__free_mem(run);
        return WF_EBUSY;
    }
    atomic_store_explicit(&ctx->run, run, memory_order_release);
    /* a run parked in the context is continued by this one, or discarded by a fresh start */
    void *parked = ctx->parked;
    ctx->parked = NULL;
    ctx->parked_len = 0;
    pthread_mutex_unlock(&ctx->run_lock);
    wf__free_mem(parked);

    atomic_init(&run->refs, 2); /* the handler and the engine */
    atomic_init(&run->engine, 1);
    atomic_init(&run->ended, 0);
    atomic_init(&run->dropped, 0);
    atomic_init(&run->unhandled, 0);
    atomic_init(&run->gate, 0);
    run->ex = ex;
    run->wf = wf_workflow_retain(wf);
    run->reg = wf->reg;
    run->ctx = ctx;
    run->timeout_ms =
        params->timeout_ms == WF_TIMEOUT_DEFAULT ? wf->timeout_ms : params->timeout_ms;
    run->timeout.heap_index = WF__TIMER_IDLE;
    run->timeout.fn = on_timeout;
    run->timeout.arg = run;
    run->status = WF_RUN_RUNNING;
    run->scap = params->stream_capacity;
    run->stream_internal = params->stream_internal != 0;
    run->on_done = params->on_done;
    run->on_done_user = params->on_done_user;
    wf__mutex_init(&run->mu);
    wf__mutex_init(&run->collect_lock);
    pthread_mutex_init(&run->snap_lock, NULL);
    pthread_mutex_init(&run->snap_mu, NULL);
    pthread_rwlock_init(&run->outside, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&run->cv, &ca);
    pthread_condattr_destroy(&ca);
    run->nsteps = ns;
    uint32_t ncols = 0;
    for (uint32_t i = 0; i < ns; i++) {
        atomic_init(&run->steps[i].count, 0);
        run->steps[i].workers = wf->steps[i]->num_workers;
        atomic_init(&run->steps[i].pendq, NULL);
        run->steps[i].col = run->steps[i].workers >= WF__UNBOUNDED ? ncols++ : UINT32_MAX;
        run->steps[i].join = wf->steps[i]->join != 0;
        run->steps[i].blocking = wf->steps[i]->blocking != 0;
    }
    if (ncols) {
        /* one row of cache lines per shard (task->shard is a byte: 255 workers, then shared) */
        run->nshards = (ex->nworkers < 255 ? ex->nworkers : 255) + 1;
        run->shard_stride =
            (ncols + WF__CACHELINE / 4 - 1) / (WF__CACHELINE / 4) * (WF__CACHELINE / 4);
        run->shards =
            wf__malloc_aligned((size_t)run->nshards * run->shard_stride * sizeof *run->shards);
        if (run->shards == NULL) {
            pthread_mutex_lock(&ctx->run_lock);
            atomic_store(&ctx->run, NULL);
            pthread_mutex_unlock(&ctx->run_lock);
            run->ex = NULL;
            run_free(run);
            return WF_ENOMEM;
        }
    }
    run->id = atomic_fetch_add(&ex->next_run_id, 1);

    pthread_mutex_lock(&ex->runs_lock);
    if (ex->shutting_down) {
        pthread_mutex_unlock(&ex->runs_lock);
        pthread_mutex_lock(&ctx->run_lock);
        atomic_store(&ctx->run, NULL);
        pthread_mutex_unlock(&ctx->run_lock);
        run->ex = NULL;
        run_free(run);
        return WF_ESHUTDOWN;
    }
    run->next = ex->runs_head;
    if (ex->runs_head)
        ex->runs_head->prev = run;
    ex->runs_head = run;
    run->listed = 1;
    ex->live_runs++;
    pthread_mutex_unlock(&ex->runs_lock);

    *out = run;
    if (wf__obs_on(ex, WF_OBS_RUN_START) || wf__obs_on(ex, WF_OBS_RUN_END)) {
        wf__obs_rec r = {0};
        obs_rec(run, WF_OBS_RUN_START, WF__OBS_NO_STEP, NULL, wf__obs_now(), &r);
        run->obs_t0 = r.ts;
        if (wf__obs_on(ex, WF_OBS_RUN_START))
            wf__obs_write(ex, &r);
    }
    if (run->timeout_ms >= 0) {
        engine_ref(run);
        if (wf__timer_arm_after(ex, &run->timeout, run->timeout_ms * 1000000) < 0) {
            engine_unref(run);
            end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, NULL, "out of memory arming the timeout");
        }
    }
    return 0;
}

/* Checks the parameters common to starting and resuming a run. */
int wf__run_params_check(wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params,
                         char **message)
{
    if (params->timeout_ms < 0 && params->timeout_ms != WF_NO_TIMEOUT &&
        params->timeout_ms != WF_TIMEOUT_DEFAULT)
        return WF_EINVAL;
    int rc = wf__workflow_prepare(wf, message);
    if (rc < 0)
        return rc;
    if (ctx && ctx->wf != wf)
        return WF_EMISMATCH;
    return 0;
}

int wf_run_start_ex(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, wf_event *start,
                    const wf_run_params *params, wf_handler **out, char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = NULL;
    if (ex == NULL || wf == NULL || out == NULL) {
        wf_event_release(start);
        return WF_EINVAL;
    }
    if (start == NULL) /* a context saved mid-run continues where it was */
        return wf_run_resume(ex, wf, ctx, params, out, message);
    wf_run_params defaults;
    if (params == NULL) {
        wf_run_params_init(&defaults);
        params = &defaults;
    }
    int rc = wf__run_params_check(wf, ctx, params, message);
    if (rc == 0 && (start->type->reg != wf->reg || !wf_event_type_is(start->type, wf->start_type)))
        rc = WF_ETYPE;
    wf__run *run = NULL;
    if (rc == 0)
        rc = wf__run_create(ex, wf, ctx, params, &run);
    if (rc < 0) {
        wf_event_release(start);
        return rc;
    }
    *out = (wf_handler *)run;
    int o = wf__outside_enter(run);
    obs_emit_outside(run, start);
    emit(run, start, -1);
    wf__outside_exit(run, o);
    return 0;
}

int wf_run_start(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, wf_event *start_event,
                 wf_handler **out)
{
    return wf_run_start_ex(ex, wf, ctx, start_event, NULL, out, NULL);
}

int wf_run(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, wf_event *start_event, int64_t wait_ms,
           wf_event **result)
{
    if (result)
        *result = NULL;
    wf_handler *h;
    int rc = wf_run_start(ex, wf, ctx, start_event, &h);
    if (rc < 0)
        return rc;
    rc = wf_handler_wait(h, wait_ms, result);
    wf_handler_free(h);
    return rc;
}

void wf__runs_cancel_all(struct wf_executor *ex)
{
    for (;;) {
        pthread_mutex_lock(&ex->runs_lock);
        ex->shutting_down = 1;
        wf__run *run = ex->runs_head;
        if (run)
            atomic_fetch_add(&run->refs, 1);
        pthread_mutex_unlock(&ex->runs_lock);
        if (run == NULL)
            return;
        int o = wf__outside_enter(run);
        end_run(run, WF_RUN_CANCELLED, NULL, WF_ECANCELLED, NULL, NULL);
        wf__outside_exit(run, o);
        run_release(run);
    }
}

/* ---------------------------------------------------------------- handler */

static int deadline_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline)
{
    if (deadline < 0)
        return pthread_cond_wait(cv, mu);
    struct timespec ts = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
    return pthread_cond_timedwait(cv, mu, &ts);
}

static int status_code(const wf__run *run)
{
    switch (run->status) {
    case WF_RUN_DONE:
        return 0;
    case WF_RUN_FAILED:
        return WF_ESTEP;
    case WF_RUN_TIMED_OUT:
        return WF_ERUNTIMEOUT;
    case WF_RUN_CANCELLED:
        return WF_ECANCELLED;
    default:
        return WF_ETIMEDOUT;
    }
}

int wf_handler_wait(wf_handler *h, int64_t timeout_ms, wf_event **result)
{
    if (result)
        *result = NULL;
    wf__run *run = (wf__run *)h;
    if (run == NULL)
        return WF_EINVAL;
    int64_t deadline = timeout_ms < 0 ? -1 : wf__now_ns() + timeout_ms * 1000000;
    pthread_mutex_lock(&run->mu);
    while (run->status == WF_RUN_RUNNING) {
        if (deadline >= 0 && wf__now_ns() >= deadline)
            break;
        run->sleepers++;
        deadline_wait(&run->cv, &run->mu, deadline);
        run->sleepers--;
    }
    int rc = status_code(run);
    if (rc == 0 && result)
        *result = wf_event_retain(run->result);
    pthread_mutex_unlock(&run->mu);
    return rc;
}

wf_run_status wf_handler_status(const wf_handler *h)
{
    wf__run *run = (wf__run *)h;
    if (run == NULL)
        return WF_RUN_RUNNING;
    pthread_mutex_lock(&run->mu);
    int s = run->status;
    pthread_mutex_unlock(&run->mu);
    return (wf_run_status)s;
}

int wf_handler_error(const wf_handler *h, int *code, const char **step, const char **message)
{
    wf__run *run = (wf__run *)h;
    if (run == NULL)
        return WF_EINVAL;
    pthread_mutex_lock(&run->mu);
    int st = run->status;
    pthread_mutex_unlock(&run->mu);
    if (st == WF_RUN_RUNNING)
        return WF_ESTATE;
    /* Written once before status was published; immutable since. */
    if (code)
        *code = run->err_code;
    if (step)
        *step = run->err_step;
    if (message)
        *message = run->err_msg;
    return 0;
}

uint64_t wf_handler_run_id(const wf_handler *h)
{
    return h ? ((const wf__run *)h)->id : 0;
}

wf_ctx *wf_handler_ctx(const wf_handler *h)
{
    return h ? ((const wf__run *)h)->ctx : NULL;
}

/* Checks a target and resolves it to a step index (-1 for broadcast). */
static int resolve_target(const wf_workflow *wf, const wf_event *ev, const char *target,
                          int32_t *idx)
{
    *idx = -1;
    if (target == NULL)
        return 0;
    wf__step *s = wf__workflow_find_step(wf, target);
    if (s == NULL)
        return WF_ENOTFOUND;
    if (!wf__step_accepts(s, ev->type) || s->join_list)
        return WF_ETYPE;
    *idx = (int32_t)s->index;
    return 0;
}

/* Sends ev into run from outside any of its invocations. Takes ev. */
static int send_outside(wf__run *run, wf_event *ev, const char *target)
{
    if (ev->type->reg != run->wf->reg) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    int32_t idx;
    int rc = resolve_target(run->wf, ev, target, &idx);
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    if (run_ended(run) || !engine_try_ref(run)) {
        wf_event_release(ev);
        return WF_ESTATE;
    }
    int o = wf__outside_enter(run);
    obs_emit_outside(run, ev);
    emit(run, ev, idx);
    wf__outside_exit(run, o);
    engine_unref(run);
    return 0;
}

int wf_handler_send_event(wf_handler *h, wf_event *ev, const char *target)
{
    if (h == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    return send_outside((wf__run *)h, ev, target);
}

int wf_handler_cancel(wf_handler *h)
{
    wf__run *run = (wf__run *)h;
    if (run == NULL)
        return WF_EINVAL;
    if (run_ended(run))
        return WF_ESTATE;
    /* park what is left at the cut in the context, and end the run there */
    void *bytes;
    size_t len;
    int rc = wf__run_capture(run, 1, &bytes, &len, NULL);
    if (rc == 0 || rc == WF_ESTATE)
        return rc;
    /* it cannot be parked (from a step of the run, out of memory): cancel all the same */
    wf__log(run->ex, WF_LOG_WARN, "run %llu: cancelled without parking its state (%s)",
            (unsigned long long)run->id, wf_strerror(rc));
    int o = wf__outside_enter(run);
    int ended = end_run(run, WF_RUN_CANCELLED, NULL, WF_ECANCELLED, NULL, NULL);
    wf__outside_exit(run, o);
    return ended ? 0 : WF_ESTATE;
}

int wf_handler_next_event(wf_handler *h, int64_t timeout_ms, wf_event **ev)
{
    if (ev)
        *ev = NULL;
    wf__run *run = (wf__run *)h;
    if (run == NULL || ev == NULL)
        return WF_EINVAL;
    int64_t deadline = timeout_ms < 0 ? -1 : wf__now_ns() + timeout_ms * 1000000;
    pthread_mutex_lock(&run->mu);
    if (run->reader_busy) {
        pthread_mutex_unlock(&run->mu);
        return WF_EBUSY;
    }
    run->reader_busy = 1;
    int rc;
    for (;;) {
        if (run->scount > 0) {
            *ev = run->sbuf[run->shead];
            run->shead = (run->shead + 1) % run->scap;
            run->scount--;
            rc = 0;
            break;
        }
        if (run->status != WF_RUN_RUNNING) {
            if (!run->terminal_given && run->terminal) {
                run->terminal_given = 1;
                *ev = wf_event_retain(run->terminal);
                rc = 0;
            } else {
                rc = WF_ECLOSED;
            }
            break;
        }
        if (deadline >= 0 && wf__now_ns() >= deadline) {
            rc = WF_ETIMEDOUT;
            break;
        }
        run->sleepers++;
        deadline_wait(&run->cv, &run->mu, deadline);
        run->sleepers--;
    }
    run->reader_busy = 0;
    pthread_mutex_unlock(&run->mu);
    return rc;
}

uint64_t wf_handler_stream_dropped(const wf_handler *h)
{
    return h ? atomic_load(&((wf__run *)h)->dropped) : 0;
}

uint64_t wf_handler_unhandled(const wf_handler *h)
{
    return h ? atomic_load(&((wf__run *)h)->unhandled) : 0;
}

void wf_handler_free(wf_handler *h)
{
    if (h)
        run_release((wf__run *)h);
}

/* ---------------------------------------------------- step-side ctx calls */

/* The invocation of ctx running on this thread, if any. */
static wf__inv *inv_of(const wf_ctx *ctx)
{
    wf__inv *inv = tls_inv;
    return (inv && inv->run->ctx == ctx) ? inv : NULL;
}

/* The context's current run with a reference (run_release), or NULL. */
static wf__run *ctx_run_ref(wf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->run_lock);
    wf__run *run = atomic_load(&ctx->run);
    if (run)
        atomic_fetch_add(&run->refs, 1);
    pthread_mutex_unlock(&ctx->run_lock);
    return run;
}

int wf_ctx_send_event(wf_ctx *ctx, wf_event *ev, const char *target)
{
    if (ctx == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    wf__inv *inv = inv_of(ctx);
    if (inv == NULL) {
        wf__run *run = ctx_run_ref(ctx);
        if (run == NULL) {
            wf_event_release(ev);
            return WF_ESTATE;
        }
        int rc = send_outside(run, ev, target);
        run_release(run);
        return rc;
    }
    if (ev->type->reg != ctx->wf->reg) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    int32_t idx;
    int rc = resolve_target(ctx->wf, ev, target, &idx);
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    if (wf__obs_on(inv->run->ex, WF_OBS_EVENT_EMIT)) { /* sent now, whenever it is routed */
        wf__obs_rec r = {0};
        obs_rec(inv->run, WF_OBS_EVENT_EMIT, inv->task->step, ev->type, 0, &r);
        wf__obs_write(inv->run->ex, &r);
    }
    if (inv->nsent == inv->capsent) {
        uint32_t cap = inv->capsent * 2;
        wf_event **s;
        int32_t *tg;
        if (inv->sent == inv->inl_sent) {
            s = wf__malloc(cap * sizeof *s);
            tg = wf__malloc(cap * sizeof *tg);
            if (s == NULL || tg == NULL) {
                wf__free_mem(s);
                wf__free_mem(tg);
                wf_event_release(ev);
                return WF_ENOMEM;
            }
            memcpy(s, inv->sent, inv->nsent * sizeof *s);
            memcpy(tg, inv->targets, inv->nsent * sizeof *tg);
        } else {
            s = wf__realloc(inv->sent, cap * sizeof *s);
            if (s == NULL) {
                wf_event_release(ev);
                return WF_ENOMEM;
            }
            inv->sent = s;
            tg = wf__realloc(inv->targets, cap * sizeof *tg);
            if (tg == NULL) {
                wf_event_release(ev);
                return WF_ENOMEM;
            }
        }
        inv->sent = s;
        inv->targets = tg;
        inv->capsent = cap;
    }
    wf_event_freeze(ev);
    inv->sent[inv->nsent] = ev;
    inv->targets[inv->nsent] = idx;
    inv->nsent++;
    if (WF__UNLIKELY(inv->nsent >= SEND_BATCH) && !inv->step->needs_clock)
        inv_flush_sent(inv);
    return 0;
}

int wf_ctx_write_event_to_stream(wf_ctx *ctx, wf_event *ev)
{
    if (ctx == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    const wf_event_type *type = ev->type;
    wf__inv *inv = inv_of(ctx);
    if (inv) {
        int full = stream_push(inv->run, ev);
        if (wf__obs_on(inv->run->ex, WF_OBS_STREAM_WRITE))
            obs_event(inv->run, WF_OBS_STREAM_WRITE, inv->task->step, type, full);
        return 0;
    }
    wf__run *run = ctx_run_ref(ctx);
    if (run == NULL) {
        wf_event_release(ev);
        return WF_ESTATE;
    }
    int full = stream_push(run, ev);
    if (wf__obs_on(run->ex, WF_OBS_STREAM_WRITE))
        obs_event(run, WF_OBS_STREAM_WRITE, WF__OBS_NO_STEP, type, full);
    run_release(run);
    return 0;
}

int wf_ctx_set_error(wf_ctx *ctx, const char *message)
{
    wf__inv *inv = inv_of(ctx);
    if (inv == NULL || message == NULL)
        return inv ? WF_EINVAL : WF_ESTATE;
    char *m = wf__strdup(message);
    if (m == NULL)
        return WF_ENOMEM;
    wf__free_mem(inv->errmsg);
    inv->errmsg = m;
    return 0;
}

int wf_ctx_is_cancelled(const wf_ctx *ctx)
{
    if (ctx == NULL)
        return 1;
    wf__inv *inv = inv_of(ctx);
    if (inv)
        return run_ended(inv->run);
    return atomic_load(&((wf_ctx *)ctx)->run) == NULL;
}

uint64_t wf_ctx_run_id(const wf_ctx *ctx)
{
    if (ctx == NULL)
        return 0;
    wf__inv *inv = inv_of(ctx);
    if (inv)
        return inv->run->id;
    wf__run *run = ctx_run_ref((wf_ctx *)ctx);
    if (run == NULL)
        return 0;
    uint64_t id = run->id;
    run_release(run);
    return id;
}

const char *wf_ctx_step_name(const wf_ctx *ctx)
{
    wf__inv *inv = inv_of(ctx);
    return inv ? inv->step->name : NULL;
}

uint32_t wf_ctx_attempt(const wf_ctx *ctx)
{
    wf__inv *inv = inv_of(ctx);
    return inv ? inv->task->attempt : 0;
}

int wf_ctx_last_error(const wf_ctx *ctx, int *code, const char **message)
{
    wf__inv *inv = inv_of(ctx);
    if (inv == NULL)
        return WF_ESTATE;
    const wf__retry_info *ri = inv->task->arg;
    if (ri == NULL || inv->task->attempt < 2)
        return WF_ENOTFOUND;
    if (code)
        *code = ri->last_error;
    if (message)
        *message = ri->last_msg;
    return 0;
}

/* ------------------------------------------------------------- collect */

static wf__cq *cq_find(wf__collect *c, const wf_event_type *t, int create)
{
    for (uint32_t i = 0; i < c->nq; i++)
        if (c->qs[i].type == t)
            return &c->qs[i];
    if (!create)
        return NULL;
    if (c->nq == c->capq) {
        uint32_t cap = c->capq ? c->capq * 2 : 4;
        wf__cq *n = wf__realloc(c->qs, cap * sizeof *n);
        if (n == NULL)
            return NULL;
        c->qs = n;
        c->capq = cap;
    }
    wf__cq *q = &c->qs[c->nq++];
    memset(q, 0, sizeof *q);
    q->type = t;
    return q;
}

static int cq_push(wf__cq *q, wf_event *ev)
{
    if (q->len == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 8;
        wf_event **r = wf__malloc(cap * sizeof *r);
        if (r == NULL)
            return WF_ENOMEM;
        for (uint32_t k = 0; k < q->len; k++)
            r[k] = q->ring[(q->head + k) % q->cap];
        wf__free_mem(q->ring);
        q->ring = r;
        q->head = 0;
        q->cap = cap;
    }
    q->ring[(q->head + q->len) % q->cap] = ev;
    q->len++;
    return 0;
}

static wf_event *cq_pop(wf__cq *q)
{
    wf_event *ev = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return ev;
}

int wf_ctx_collect_events(wf_ctx *ctx, const wf_event *in, const wf_event_type *const *types,
                          size_t n, const char *buffer_id, wf_event **events)
{
    if (ctx == NULL || in == NULL || types == NULL || n == 0 || events == NULL)
        return WF_EINVAL;
    wf__inv *inv = inv_of(ctx);
    if (inv == NULL)
        return WF_ESTATE;
    const char *id = buffer_id ? buffer_id : "";
    wf__run *run = inv->run;
    uint32_t step = inv->task->step;
    slot_dirty(run);
    pthread_mutex_lock(&run->collect_lock);
    wf__collect *c = run->collect;
    while (c && (c->step != step || c->id == NULL || strcmp(c->id, id) != 0))
        c = c->next;
    int rc = 0;
    if (c == NULL) {
        c = wf__calloc(1, sizeof *c);
        if (c == NULL || (c->id = wf__strdup(id)) == NULL) {
            wf__free_mem(c);
            rc = WF_ENOMEM;
            goto out;
        }
        c->step = step;
        c->next = run->collect;
        run->collect = c;
    }
    if (c->spec != (const void *)types || c->spec_n != n || c->spec_first != types[0] ||
        c->spec_last != types[n - 1]) {
        /* a new spec: recount what each type needs (O(n), once per spec) */
        for (uint32_t k = 0; k < c->nq; k++)
            c->qs[k].need = 0;
        for (size_t i = 0; i < n; i++) {
            wf__cq *tq = types[i] ? cq_find(c, types[i], 1) : NULL;
            if (tq == NULL) {
                c->spec = NULL;
                rc = types[i] ? WF_ENOMEM : WF_EINVAL;
                goto out;
            }
            tq->need++;
        }
        c->nreq = c->satisfied = 0;
        for (uint32_t k = 0; k < c->nq; k++) {
            c->nreq += c->qs[k].need > 0;
            c->satisfied += c->qs[k].need > 0 && c->qs[k].len >= c->qs[k].need;
        }
        c->spec = types;
        c->spec_n = n;
        c->spec_first = types[0];
        c->spec_last = types[n - 1];
    }
    wf__cq *q = cq_find(c, in->type, 0);
    if (q == NULL || q->need == 0) {
        rc = WF_ETYPE; /* not one of the expected types */
        goto out;
    }
    if (cq_push(q, wf_event_retain(in)) < 0) {
        wf_event_release((wf_event *)in);
        rc = WF_ENOMEM;
        goto out;
    }
    if (q->need && q->len == q->need)
        c->satisfied++;
    if (c->satisfied < c->nreq) {
        rc = WF_EAGAIN;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        wf__cq *tq = cq_find(c, types[i], 0);
        events[i] = cq_pop(tq);
        if (tq->len + 1 == tq->need) /* dropped below its need */
            c->satisfied--;
    }
out:
    pthread_mutex_unlock(&run->collect_lock);
    return rc;
}

/* ----------------------------------------------------------- wait_for_event */

int wf_ctx_wait_for_event(wf_ctx *ctx, const wf_event_type *type, wf_value requirements,
                          wf_event *waiter_event, const char *waiter_id, int64_t timeout_ms,
                          wf_event **ev)
{
    if (ev)
        *ev = NULL;
    if (ctx == NULL || type == NULL || ev == NULL ||
        (wf_value_kind(requirements) != WF_MAP && !wf_value_is_nil(requirements)) ||
        (timeout_ms < 0 && timeout_ms != WF_NO_TIMEOUT)) {
        wf_event_release(waiter_event);
        return WF_EINVAL;
    }
    wf__inv *inv = inv_of(ctx);
    if (inv == NULL) {
        wf_event_release(waiter_event);
        return WF_ESTATE;
    }
    wf__run *run = inv->run;
    uint32_t step = inv->task->step;
    /* A stable id, so that the step run again finds its waiter. */
    char idbuf[512];
    if (waiter_id == NULL) {
        int n = snprintf(idbuf, sizeof idbuf, "%s:", type->name);
        if (n > 0 && (size_t)n < sizeof idbuf)
            wf_value_format(requirements, idbuf + n, sizeof idbuf - (size_t)n);
        waiter_id = idbuf;
    }
    slot_dirty(run);
    pthread_mutex_lock(&run->collect_lock);
    wf__waiter **pp = &run->waiters, *w;
    while ((w = *pp) != NULL && (w->step != step || strcmp(w->id, waiter_id) != 0))
        pp = &w->next;
    if (w && w->state != W_WAITING) {
        *pp = w->next;
        int rc = w->state == W_RESOLVED ? 0 : WF_ETIMEDOUT;
        *ev = w->got;
        w->got = NULL;
        if (wf__obs_on(run->ex, WF_OBS_WAIT_RESUME)) {
            wf__obs_rec r = {0};
            obs_rec(run, WF_OBS_WAIT_RESUME, step, w->type, wf__obs_now(), &r);
            r.event_id = (uint64_t)(uintptr_t)w;
            r.error = rc;
            r.dv = w->obs_t0 ? r.ts - w->obs_t0 : 0;
            wf__obs_write(run->ex, &r);
        }
        int disarmed = waiter_disarm(run, w);
        /* a callback still running frees w itself when it is done */
        w->orphan = w->timer_live;
        int free_now = !w->orphan;
        pthread_mutex_unlock(&run->collect_lock);
        if (disarmed)
            engine_unref(run);
        if (free_now) {
            w->next = NULL;
            waiters_free(w);
        }
        wf_event_release(waiter_event);
        return rc;
    }
    if (w) { /* already waiting (the step ran for another event meanwhile) */
        pthread_mutex_unlock(&run->collect_lock);
        wf_event_release(waiter_event);
        inv->suspended = 1;
        return WF_SUSPEND;
    }
    w = wf__calloc(1, sizeof *w);
    wf__task *t = wf__task_alloc();
    if (w == NULL || t == NULL || (w->id = wf__strdup(waiter_id)) == NULL) {
        pthread_mutex_unlock(&run->collect_lock);
        wf__free_mem(w);
        wf__task_free(t);
        wf_event_release(waiter_event);
        return WF_ENOMEM;
    }
    t->kind = WF__TASK_INVOKE;
    t->run = run;
    t->ev = wf_event_retain(inv->task->ev);
    t->step = step;
    t->attempt = inv->task->attempt;
    t->flags = inv->task->flags;
    t->arg = NULL;
    t->u.group = inv->task->u.group; /* the waiting step stays in its branch */
    t->pad = inv->task->pad;
    if (t->u.group)
        branch_add(t->u.group, t->pad);
    w->run = run;
    w->step = step;
    w->state = W_WAITING;
    w->type = type;
    w->req = wf_value_retain(requirements);
    w->task = t;
    w->timeout_ms = timeout_ms;
    w->tm.heap_index = WF__TIMER_IDLE;
    w->tm.fn = waiter_fire;
    w->tm.arg = w;
    w->next = run->waiters;
    run->waiters = w;
    atomic_fetch_add(&run->nwaiting, 1);
    if (wf__obs_on(run->ex, WF_OBS_WAIT_SUSPEND)) {
        wf__obs_rec r = {0};
        obs_rec(run, WF_OBS_WAIT_SUSPEND, step, type, wf__obs_now(), &r);
        r.event_id = (uint64_t)(uintptr_t)w;
        w->obs_t0 = r.ts;
        wf__obs_write(run->ex, &r);
    }
    if (timeout_ms >= 0) {
        engine_ref(run); /* held by the armed timer */
        if (wf__timer_arm(run->ex, &w->tm, wf__now_ns() + timeout_ms * 1000000) < 0) {
            w->timeout_ms = WF_NO_TIMEOUT;
            engine_unref(run);
        } else {
            w->timer_live = 1;
        }
    }
    pthread_mutex_unlock(&run->collect_lock);
    if (waiter_event)
        stream_push(run, waiter_event); /* once per waiter id: only when it is created */
    inv->suspended = 1;
    return WF_SUSPEND;
}

/* ------------------------------------------------------------- async steps */

static void token_free(wf_completion *c)
{
    for (uint32_t i = 0; i < c->nsent; i++)
        wf_event_release(c->sent[i]);
    wf__free_mem(c->sent);
    wf__free_mem(c->targets);
    wf_event_release(c->out);
    wf__free_mem(c->errmsg);
    pthread_mutex_destroy(&c->lock);
    wf__run *run = c->run;
    wf__free_mem(c);
    run_release(run);
}

static void token_unlist(wf__run *run, wf_completion *c)
{
    WF__DLIST_UNLINK(run->pending, c);
}

/*
 * Routes a completion's result for its task, as invoke would have, then
 * releases the task and its slot. Called once, by whoever finishes last.
 */
static void token_finish(wf_completion *c)
{
    wf__run *run = c->run;
    wf__task *t = c->task;
    uint32_t s = t->step, shard = t->shard;
    if (!run_ended(run)) {
        uint16_t saved = tls_lineage;
        tls_lineage = t->flags;
        if (c->rc == 0) {
            if (c->out)
                emit(run, c->out, -1);
            c->out = NULL;
            if (c->nsent)
                emit_sent(run, c->sent, c->targets, c->nsent);
            c->nsent = 0;
        } else if (!maybe_retry(run, t, c->rc, c->errmsg, c->started)) {
            step_failed(run, t, c->rc, c->errmsg, c->started);
        }
        tls_lineage = saved;
    }
    c->task = NULL;
    drop_task(t);
    finish_slot(run, s, shard);
}

/* invoke saw WF_PENDING: 1 if the token now owns task and slot, 0 if it completed early. */
static int token_arm(wf_completion *c)
{
    wf__run *run = c->run;
    pthread_mutex_lock(&run->collect_lock);
    pthread_mutex_lock(&c->lock);
    int early = c->state == TOK_EARLY;
    if (!early) {
        c->state = TOK_ARMED;
        c->next = run->pending;
        c->prev = NULL;
        if (run->pending)
            run->pending->prev = c;
        run->pending = c;
        c->listed = 1;
    }
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&run->collect_lock);
    if (!early)
        return 1;
    /* routed here; the caller then drops nothing: token_finish took the task */
    token_finish(c);
    token_free(c);
    return 1;
}

/* The step pended but returned something else: the token is void. */
static void token_abandon(wf_completion *c)
{
    pthread_mutex_lock(&c->lock);
    int early = c->state == TOK_EARLY;
    c->state = TOK_DETACHED;
    c->task = NULL; /* invoke's caller drops it */
    pthread_mutex_unlock(&c->lock);
    if (early)
        token_free(c); /* its completer is done with it */
}

/* The run ended: pending invocations give their slots back; tokens stay for their completers. */
static void tokens_detach(wf__run *run)
{
    for (;;) {
        pthread_mutex_lock(&run->collect_lock);
        wf_completion *c = run->pending;
        wf__task *t = NULL;
        if (c) {
            token_unlist(run, c);
            pthread_mutex_lock(&c->lock);
            if (c->state == TOK_ARMED) {
                c->state = TOK_DETACHED;
                t = c->task;
                c->task = NULL;
            }
            pthread_mutex_unlock(&c->lock);
        }
        pthread_mutex_unlock(&run->collect_lock);
        if (c == NULL)
            return;
        if (t) {
            uint32_t s = t->step, shard = t->shard;
            drop_task(t);
            finish_slot(run, s, shard); /* never quiesces: the caller holds the running unit */
        }
    }
}

int wf_ctx_pend(wf_ctx *ctx, wf_completion **out)
{
    if (out)
        *out = NULL;
    if (ctx == NULL || out == NULL)
        return WF_EINVAL;
    wf__inv *inv = inv_of(ctx);
    if (inv == NULL)
        return WF_ESTATE;
    if (inv->token)
        return WF_EEXIST;
    wf_completion *c = wf__calloc(1, sizeof *c);
    if (c == NULL)
        return WF_ENOMEM;
    wf__mutex_init(&c->lock);
    c->state = TOK_CREATED;
    c->run = inv->run;
    atomic_fetch_add(&inv->run->refs, 1);
    c->task = inv->task;
    inv->token = c;
    *out = c;
    return 0;
}

int wf_completion_send(wf_completion *c, wf_event *ev, const char *target)
{
    if (c == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    wf__run *run = c->run;
    int32_t idx;
    int rc = ev->type->reg != run->wf->reg ? WF_EINVAL : resolve_target(run->wf, ev, target, &idx);
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    wf_event_freeze(ev);
    pthread_mutex_lock(&c->lock);
    if (c->state == TOK_DETACHED) {
        pthread_mutex_unlock(&c->lock);
        wf_event_release(ev);
        return WF_ECANCELLED;
    }
    if (c->nsent == c->capsent) {
        uint32_t cap = c->capsent ? c->capsent * 2 : 8;
        wf_event **e = wf__realloc(c->sent, cap * sizeof *e);
        if (e)
            c->sent = e;
        int32_t *t = e ? wf__realloc(c->targets, cap * sizeof *t) : NULL;
        if (t)
            c->targets = t;
        if (e == NULL || t == NULL) {
            pthread_mutex_unlock(&c->lock);
            wf_event_release(ev);
            return WF_ENOMEM;
        }
        c->capsent = cap;
    }
    c->sent[c->nsent] = ev;
    c->targets[c->nsent] = idx;
    c->nsent++;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* Completes with rc (0: ev is the returned event); consumes the token. */
static int token_complete(wf_completion *c, wf_event *ev, int rc, const char *msg)
{
    pthread_mutex_lock(&c->lock);
    int state = c->state;
    if (state == TOK_CREATED) {
        /* before the step even returned: keep the result for invoke */
        c->out = ev;
        c->rc = rc;
        c->errmsg = msg ? wf__strdup(msg) : NULL;
        c->state = TOK_EARLY;
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    pthread_mutex_unlock(&c->lock);
    if (state == TOK_DETACHED) {
        wf_event_release(ev);
        token_free(c);
        return WF_ECANCELLED;
    }
    /* ARMED: take it off the run's list, unless the run's end is detaching it right now */
    wf__run *run = c->run;
    int o = wf__outside_enter(run);
    pthread_mutex_lock(&run->collect_lock);
    pthread_mutex_lock(&c->lock);
    int mine = c->state == TOK_ARMED;
    if (mine) {
        c->state = TOK_EARLY; /* finished: nobody else touches task or slot */
        token_unlist(run, c);
    }
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&run->collect_lock);
    if (!mine) {
        wf__outside_exit(run, o);
        wf_event_release(ev);
        token_free(c);
        return WF_ECANCELLED;
    }
    c->out = ev;
    c->rc = rc;
    c->errmsg = msg ? wf__strdup(msg) : NULL;
    int ended = run_ended(run);
    token_finish(c);
    wf__outside_exit(run, o);
    token_free(c);
    return ended ? WF_ECANCELLED : 0;
}

int wf_completion_complete(wf_completion *c, wf_event *ev)
{
    if (c == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    if (ev)
        wf_event_freeze(ev);
    return token_complete(c, ev, 0, NULL);
}

int wf_completion_fail(wf_completion *c, int code, const char *message)
{
    if (c == NULL)
        return WF_EINVAL;
    if (code >= 0)
        code = WF_EINVAL;
    return token_complete(c, NULL, code, message);
}

int wf_completion_cancelled(const wf_completion *c)
{
    return c == NULL || run_ended(c->run);
}

/* ------------------------------------------------------------------ joins */

static wf__cq *cq_find(wf__collect *c, const wf_event_type *t, int create);
static int cq_push(wf__cq *q, wf_event *ev);
static wf_event *cq_pop(wf__cq *q);

/*
 * A join step's arrivals wait in a per-run buffer (the collect buffers, with
 * a NULL id); each complete set becomes one invocation.
 */
static int join_deliver(wf__run *run, uint32_t s, wf_event *ev)
{
    const wf__step *step = run->wf->steps[s];
    pthread_mutex_lock(&run->collect_lock);
    wf__collect *c = run->collect;
    while (c && (c->step != s || c->id != NULL))
        c = c->next;
    if (c == NULL) {
        c = wf__calloc(1, sizeof *c);
        if (c == NULL) {
            pthread_mutex_unlock(&run->collect_lock);
            wf_event_release(ev);
            return WF_ENOMEM;
        }
        c->step = s;
        c->next = run->collect;
        run->collect = c;
    }
    /* ev goes to the slot of its type (exact, or the accepted ancestor) */
    const wf_event_type *slot = NULL;
    for (uint32_t i = 0; i < step->n_accepts && slot == NULL; i++)
        if (step->accepts[i] == ev->type ||
            (step->accept_subtypes && wf_event_type_is(ev->type, step->accepts[i])))
            slot = step->accepts[i];
    wf__cq *q = slot ? cq_find(c, slot, 1) : NULL;
    if (q == NULL || cq_push(q, ev) < 0) {
        pthread_mutex_unlock(&run->collect_lock);
        wf_event_release(ev);
        return WF_ENOMEM;
    }
    for (uint32_t i = 0; i < step->n_accepts; i++) {
        uint32_t need = 0;
        for (uint32_t j = 0; j < step->n_accepts; j++)
            need += step->accepts[j] == step->accepts[i];
        wf__cq *tq = cq_find(c, step->accepts[i], 0);
        if (tq == NULL || tq->len < need) {
            pthread_mutex_unlock(&run->collect_lock);
            return 0; /* not complete yet */
        }
    }
    wf_event **tuple = wf__malloc(step->n_accepts * sizeof *tuple);
    wf__retry_info *ri = wf__calloc(1, sizeof *ri);
    wf__task *t = wf__task_alloc();
    if (tuple == NULL || ri == NULL || t == NULL) {
        pthread_mutex_unlock(&run->collect_lock);
        wf__free_mem(tuple);
        wf__free_mem(ri);
        wf__task_free(t);
        return WF_ENOMEM; /* the events stay buffered */
    }
    for (uint32_t i = 0; i < step->n_accepts; i++)
        tuple[i] = cq_pop(cq_find(c, step->accepts[i], 0));
    pthread_mutex_unlock(&run->collect_lock);
    ri->tuple = tuple;
    ri->ntuple = step->n_accepts;
    ri->joined = 1;
    t->kind = WF__TASK_INVOKE;
    t->run = run;
    t->ev = wf_event_retain(tuple[0]);
    t->step = s;
    t->arg = ri;
    t->flags = tls_lineage;
    tag_task(t);
    return deliver_task(run, t);
}

int wf_ctx_join_events(const wf_ctx *ctx, const wf_event *const **events, size_t *n)
{
    if (events == NULL || n == NULL)
        return WF_EINVAL;
    wf__inv *inv = inv_of(ctx);
    if (inv == NULL)
        return WF_ESTATE;
    const wf__retry_info *ri = inv->task->arg;
    if (ri == NULL || !ri->joined)
        return WF_ENOTFOUND;
    *events = (const wf_event *const *)ri->tuple;
    *n = ri->ntuple;
    return 0;
}

/* ---------------------------------------------------------- list fan-out */

static void branch_add(wf__group *g, uint32_t b)
{
    atomic_fetch_add_explicit(&g->outstanding[b], 1, memory_order_relaxed);
}

static void branch_done(wf__run *run, wf__group *g, uint32_t b)
{
    if (atomic_fetch_sub_explicit(&g->outstanding[b], 1, memory_order_acq_rel) != 1)
        return;
    /* nothing of branch b is left: without a result it drops out */
    int expected = 0;
    if (atomic_compare_exchange_strong(&g->resolved[b], &expected, 2) &&
        atomic_fetch_sub(&g->unresolved, 1) == 1)
        group_fire(run, g);
    /* after the join fired: whoever closes the last branch frees the group */
    group_close(g);
}

/* Every branch resolved: the join step runs once, in the parent's branch. */
static void group_fire(wf__run *run, wf__group *g)
{
    if (run_ended(run))
        goto done;
    uint32_t m = 0;
    for (uint32_t i = 0; i < g->n; i++)
        m += g->result[i] != NULL;
    /* the joined list lives in the side record's block */
    wf__retry_info *ri = wf__malloc(sizeof *ri + (m ? m : 1) * sizeof(wf_event *));
    wf__task *t = wf__task_alloc();
    if (ri == NULL || t == NULL) {
        wf__free_mem(ri);
        wf__task_free(t);
        end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, run->wf->steps[g->join_step]->name,
                "out of memory joining a list fan-out");
        goto done;
    }
    memset(ri, 0, sizeof *ri);
    wf_event **list = (wf_event **)(ri + 1);
    m = 0;
    for (uint32_t i = 0; i < g->n; i++) {
        if (g->result[i]) {
            list[m++] = g->result[i];
            g->result[i] = NULL;
        }
    }
    ri->tuple = list;
    ri->tuple_inline = 1;
    ri->ntuple = m;
    ri->joined = 1;
    t->kind = WF__TASK_INVOKE;
    t->run = run;
    t->ev = wf_event_retain(g->origin);
    t->step = g->join_step;
    t->arg = ri;
    t->flags = g->lineage;
    /* the unit the group held on its parent branch passes to the join task */
    t->u.group = g->parent;
    t->pad = g->parent_branch;
    if (deliver_task(run, t) < 0)
        end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, NULL, "out of memory joining a list");
    return;
done:
    if (g->parent)
        branch_done(run, g->parent, g->parent_branch);
}

int wf_ctx_emit_list(wf_ctx *ctx, wf_event **evs, size_t n, const wf_event_type *collect)
{
    wf__inv *inv = ctx ? inv_of(ctx) : NULL;
    int rc = 0;
    if (ctx == NULL || collect == NULL || (evs == NULL && n > 0))
        rc = WF_EINVAL;
    else if (inv == NULL)
        rc = WF_ESTATE;
    uint32_t join = UINT32_MAX;
    if (rc == 0) {
        const wf_workflow *wf = inv->run->wf;
        for (uint32_t i = 0; i < wf->n_steps && join == UINT32_MAX; i++)
            if (wf->steps[i]->join_list && wf->steps[i]->accepts[0] == collect)
                join = i;
        if (join == UINT32_MAX)
            rc = WF_ENOTFOUND;
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (evs[i] == NULL || evs[i]->type->reg != wf->reg)
                rc = WF_EINVAL;
        if (rc == 0 && n > UINT32_MAX / 2)
            rc = WF_ERANGE;
    }
    wf__group *g = NULL;
    if (rc == 0 && (g = wf__group_new((uint32_t)n)) == NULL)
        rc = WF_ENOMEM;
    if (rc < 0) {
        for (size_t i = 0; evs && i < n; i++)
            wf_event_release(evs[i]);
        return rc;
    }
    wf__run *run = inv->run;
    slot_dirty(run);
    g->parent = inv->task->u.group;
    g->parent_branch = inv->task->pad;
    g->join_step = join;
    g->collect = collect;
    g->origin = wf_event_retain(inv->task->ev);
    g->lineage = inv->task->flags;
    atomic_init(&g->unresolved, (uint32_t)n);
    if (g->parent)
        branch_add(g->parent, g->parent_branch); /* the parent branch waits for this join */
    if (n == 0) {
        group_fire(run, g); /* [] joins with [] at once */
        group_free(g);      /* no branch ever refers to it */
        return 0;
    }
    /*
     * Each branch starts with one unit held here, so none can finish (and
     * drop out, or free the group) before all are delivered; the units go
     * when the loop is done.
     */
    for (uint32_t i = 0; i < n; i++)
        atomic_init(&g->outstanding[i], 1);
    wf__group *saved_g = tls_group;
    uint32_t saved_b = tls_branch;
    int64_t obs_now = wf__obs_on(run->ex, WF_OBS_EVENT_EMIT) ? wf__obs_now() : 0;
    for (uint32_t i = 0; i < n; i++) {
        wf_event_freeze(evs[i]);
        if (obs_now) {
            wf__obs_rec r = {0};
            obs_rec(run, WF_OBS_EVENT_EMIT, inv->task->step, evs[i]->type, obs_now, &r);
            wf__obs_write(run->ex, &r);
        }
        tls_group = g;
        tls_branch = i;
        emit(run, evs[i], -1);
    }
    tls_group = saved_g;
    tls_branch = saved_b;
    /* the last of these may free g */
    for (uint32_t i = 0; i < n; i++)
        branch_done(run, g, i);
    return 0;
}

/* ------------------------------------------------------ services for live.c */

void wf__drop_task(wf__task *t)
{
    drop_task(t);
}

int wf__deliver_task(wf__run *run, wf__task *t)
{
    return deliver_task(run, t);
}

void wf__run_schedule(wf__run *run, wf__task *t)
{
    run_schedule(run, t);
}

int wf__end_run(wf__run *run, int status, wf_event *result, int code, const char *step,
                const char *msg)
{
    return end_run(run, status, result, code, step, msg);
}

void wf__run_emit(wf__run *run, wf_event *ev, int32_t target)
{
    emit(run, ev, target);
}

void wf__branch_add(wf__group *g, uint32_t b)
{
    branch_add(g, b);
}

void wf__branch_done(wf__run *run, wf__group *g, uint32_t b)
{
    branch_done(run, g, b);
}

void wf__group_close(wf__group *g)
{
    group_close(g);
}

wf__cq *wf__cq_find(wf__collect *c, const wf_event_type *t, int create)
{
    return cq_find(c, t, create);
}

int wf__cq_push(wf__cq *q, wf_event *ev)
{
    return cq_push(q, ev);
}

void wf__retry_fire(wf__timer *tm, void *arg)
{
    retry_fire(tm, arg);
}

void wf__waiter_fire(wf__timer *tm, void *arg)
{
    waiter_fire(tm, arg);
}

void wf__engine_ref(wf__run *run)
{
    engine_ref(run);
}

void wf__engine_unref(wf__run *run)
{
    engine_unref(run);
}

void wf__run_release(wf__run *run)
{
    run_release(run);
}
