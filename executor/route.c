/*
 * route.c: emit and deliver: an event's way from the step that emitted it
 * to the invocations of the steps that accept it.
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
 * spins for those few instructions. Steps without a limit count in shards
 * instead (WF__UNBOUNDED, engine.h). On an executor of one worker, that
 * worker may keep a finished invocation's slot for the next event it
 * delivers to the step (wf__kept, engine.h): the count then stays as if
 * the invocation had finished later.
 *
 * Shared fields and what guards them:
 *   step_state.count    atomic (CAS to take a slot, fetch_sub to give it)
 *   step_state.pendq    created once by CAS; push lock-free (exchange on
 *                       tail), pop under pendq.lock (an atomic_flag)
 *   run->shards         atomic counters, each written by one thread's shard
 *   wf__tls_kept        the worker's own (thread-local)
 *   run->nwaiting       atomic; waiters themselves under collect_lock (wait.c)
 *   run->unhandled      atomic
 * The per-thread wf__tls_lineage, wf__tls_group/branch and the hand-over
 * (wf__tls_handoff*) belong to the routing thread (invoke.c sets them).
 */
#include "engine.h"

#include <wf/observe.h>

#include <stdio.h>

/* ------------------------------------------------------- pending queues */

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

/*
 * EVENT_ROUTE of t (waiting: the events queued behind it at its step): in
 * the thread's drop window counted inline; else the first routing of the
 * event the thread's last invocation returned goes into its STEP record
 * (wf__obs_route_held, by wf__obs_route_fast), others on their own record.
 */
__attribute__((always_inline)) static inline void hook_route(wf__run *run, const wf__task *t,
                                                             uint32_t waiting)
{
    if (!wf__obs_drop_rec(run->ex))
        wf__hook_route_rec(run, t, waiting);
}

/* ---------------------------------------------------------------- delivery */

void wf__drop_task_owning(wf__task *t)
{
    if (t->u.group != NULL)
        wf__branch_done(t->run, t->u.group, t->pad);
    wf__event_release(t->ev); /* inline: the plain sole owner frees here */
    if (t->arg)
        wf__retry_info_free(t->arg);
    wf__task_free(t);
}

void wf__retry_info_free(wf__retry_info *ri)
{
    if (ri == NULL)
        return;
    for (uint32_t i = 0; i < ri->ntuple; i++)
        wf__event_release(ri->tuple[i]);
    if (!ri->tuple_inline)
        wf__free_mem(ri->tuple);
    if (ri->last_msg) /* (a join's record has neither: no calls) */
        wf__free_mem(ri->last_msg);
    if (ri->child)
        wf__child_saved_free(ri->child);
    wf__free_mem(ri);
}

/* Events a finishing invocation claims at once from a busy step's queue. */
#define CLAIM_MAX 8

/* The count shard of the calling thread for run (see WF__UNBOUNDED). */
static inline uint32_t my_shard(const wf__run *run)
{
    wf__worker *w = wf__tls_worker;
    if (w && w->ex == run->ex && w->index + 1 < run->nshards)
        return w->index;
    return run->nshards - 1;
}

/*
 * n slots of step s (without a bound) counted in shard go back: the shard
 * going to 0 gives its engine unit back (which may free the run).
 */
static void shard_release(wf__run *run, uint32_t s, uint32_t shard, uint32_t n)
{
    if (atomic_fetch_sub_explicit(wf__shard_ctr(run, shard, s), n, memory_order_acq_rel) == n) {
        if (WF__UNLIKELY(wf__run_slow(run) & WF__RUN_INTERNAL)) /* its unit is still held here */
            wf__internal_idle_check(run);
        wf__engine_unref(run); /* may free the run */
    }
}

WF__TLS wf__kept wf__tls_kept[WF__KEPT_MAX];
WF__TLS uint32_t wf__tls_nkept;

void wf__kept_flush(int all)
{
    wf__slot *slot = wf__tls_slot;
    for (uint32_t i = 0, left = wf__tls_nkept % WF__KEPT_BOUNDED; i < WF__KEPT_MAX && left; i++) {
        wf__kept *k = &wf__tls_kept[i];
        wf__run *run = k->run;
        if (run == NULL)
            continue;
        left--;
        if (!all && run->steps[k->step].keep < WF__KEPT_BOUNDED && !wf__run_ended(run))
            continue; /* nothing queues behind a step without a bound */
        /*
         * Like a task's effects (wf__slot_enter, wf__slot_dirty): announced
         * in the slot (without a task), then the gate looked at. A live
         * snapshot either waits for this give-back to end, or this one
         * sees its gate and leaves the slots kept (the cut counts them so).
         */
        if (slot) {
            atomic_store_explicit(&slot->task, NULL, memory_order_relaxed);
            atomic_store_explicit(&slot->state, (uintptr_t)run | WF__SLOT_DIRTY,
                                  memory_order_release);
            wf__fence_light();
        }
        if (atomic_load_explicit(&run->gate, memory_order_acquire)) {
            if (slot)
                atomic_store_explicit(&slot->state, 0, memory_order_release);
            continue;
        }
        uint32_t s = k->step;
        uint32_t n = atomic_load_explicit(&run->steps[s].kept, memory_order_relaxed);
        atomic_store_explicit(&run->steps[s].kept, 0, memory_order_relaxed);
        k->run = NULL;
        wf__tls_nkept -= run->steps[s].keep;
        /* the last of them may free the run: nothing of it is read after */
        if (run->steps[s].workers >= WF__UNBOUNDED)
            shard_release(run, s, WF__KEPT_SHARD, n); /* nothing waits: all at once */
        else
            while (n--) /* each may start an event the step's queue holds */
                wf__finish_slot(run, s, WF__KEPT_SHARD);
        if (slot)
            atomic_store_explicit(&slot->state, 0, memory_order_release);
    }
}

/*
 * One invocation of step s finished (or a dropped event released its slot).
 * When events wait, the slot passes to the next one; besides, the finisher
 * claims up to CLAIM_MAX-1 more of the waiting events that nobody owes yet
 * (those counted above num_workers) by taking them off the count, and runs
 * them in the same slot one after the other. Concurrency stays within
 * num_workers, and a busy step touches its shared count and queue lock once
 * per batch instead of once per event.
 */
void wf__finish_slot(wf__run *run, uint32_t s, uint32_t shard)
{
    wf__step_state *ss = &run->steps[s];
    /* Read before giving the unit up: afterwards the run may be freed by others. */
    uint32_t w = ss->workers;
    if (w >= WF__UNBOUNDED) {
        shard_release(run, s, shard, 1);
        return;
    }
    for (;;) {
        uint32_t n = atomic_fetch_sub_explicit(&ss->count, 1, memory_order_acq_rel);
        if (n == 1) {
            if (WF__UNLIKELY(wf__run_slow(run) & WF__RUN_INTERNAL)) /* its unit is still held here */
                wf__internal_idle_check(run);
            wf__engine_unref(run); /* may free the run */
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
        if (!wf__run_ended(run)) {
            wf__run_schedule(run, t);
            return;
        }
        /* The run is over: drop them; the first one's slot is released next round. */
        while (t) {
            wf__task *nx = t->chain;
            wf__drop_task(t);
            t = nx;
        }
    }
}

/* An engine unit for a counter that went 0 -> 1 by delivering t (see wf__tls_handoff). */
static inline void woke(wf__run *run, wf__task *t)
{
    if (wf__tls_handoff_run == run && wf__tls_handoff == NULL && !run->steps[t->step].blocking &&
        wf__bypass_try(run->ex, t)) {
        wf__tls_handoff = run;
        return;
    }
    wf__engine_ref(run);
    wf__run_schedule(run, t);
}

/* Delivers a prepared INVOKE task (owned) through step t->step's count. */
static inline __attribute__((always_inline)) int deliver_task(wf__run *run, wf__task *t)
{
    wf__step_state *ss = &run->steps[t->step];
    uint32_t w = ss->workers;
    if (w >= WF__UNBOUNDED) {
        if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE))
            hook_route(run, t, 0);
        t->shard = (uint8_t)my_shard(run);
        if (wf__tls_nkept != 0 && wf__kept_take(run, t->step)) {
            wf__run_schedule(run, t); /* a slot this worker kept in its shard (wf__kept) */
            return 0;
        }
        _Atomic uint32_t *ctr = wf__shard_ctr(run, t->shard, t->step);
        if (atomic_fetch_add_explicit(ctr, 1, memory_order_acq_rel) == 0)
            woke(run, t);
        else
            wf__run_schedule(run, t);
        return 0;
    }
    uint32_t c = atomic_load_explicit(&ss->count, memory_order_relaxed);
    if (wf__tls_nkept != 0 && c <= w && wf__kept_take(run, t->step)) {
        /* a slot this thread kept (wf__kept); no event waits in the queue */
        if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE))
            hook_route(run, t, 0);
        wf__run_schedule(run, t);
        return 0;
    }
    while (c < w) {
        if (atomic_compare_exchange_weak_explicit(&ss->count, &c, c + 1, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE))
                hook_route(run, t, 0);
            if (c == 0)
                woke(run, t);
            else
                wf__run_schedule(run, t);
            return 0;
        }
    }
    wf__pendq *q = pendq_get(ss);
    if (WF__UNLIKELY(q == NULL)) {
        wf__drop_task(t);
        return WF_ENOMEM;
    }
    if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE)) /* before the push: then t may run and go */
        hook_route(run, t, atomic_load_explicit(&ss->count, memory_order_relaxed) + 1 - w);
    if (WF__UNLIKELY(wf__run_slow(run) & WF__RUN_INTERNAL))
        wf__internal_step_state(run, t->step, "preparing", t->ev->type, NULL);
    pendq_push(q, t);
    uint32_t n = atomic_fetch_add_explicit(&ss->count, 1, memory_order_acq_rel);
    if (n == 0)
        wf__engine_ref(run);
    if (n < w)
        wf__run_schedule(run, pendq_take(q, 1));
    return 0;
}

int wf__deliver_task(wf__run *run, wf__task *t)
{
    return deliver_task(run, t);
}

/* Delivers ev (owned) to step s. Returns 0 or WF_ENOMEM (ev released). */
static inline __attribute__((always_inline)) int deliver(wf__run *run, uint32_t s, wf_event *ev)
{
    if (WF__UNLIKELY(run->steps[s].join))
        return wf__join_deliver(run, s, ev);
    wf__task *t = wf__task_alloc();
    if (WF__UNLIKELY(t == NULL)) {
        wf_event_release(ev);
        return WF_ENOMEM;
    }
    wf__task_invoke_init(t, run, s, ev);
    wf__tag_task(t);
    return deliver_task(run, t);
}

int wf__deliver(wf__run *run, uint32_t s, wf_event *ev)
{
    return deliver(run, s, ev);
}

/*
 * Delivers k events (owned) to step s with one exchange on the pending queue
 * and one add on the count: a step that sends many events to the same step
 * (a fan-out) pays the shared cache lines once per batch, not per event.
 */
static int deliver_batch(wf__run *run, uint32_t s, wf_event **evs, uint32_t k)
{
    if (k == 1)
        return wf__deliver(run, s, evs[0]);
    wf__task *first = NULL, *last = NULL;
    uint32_t made = 0;
    for (; made < k; made++) {
        wf__task *t = wf__task_alloc();
        if (WF__UNLIKELY(t == NULL))
            break;
        wf__task_invoke_init(t, run, s, evs[made]);
        wf__tag_task(t);
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
    int rc2 = wf__deliver_chain(run, s, first, last, made);
    return rc < 0 ? rc : rc2;
}

int wf__deliver_chain(wf__run *run, uint32_t s, wf__task *first, wf__task *last, uint32_t made)
{
    wf__step_state *ss = &run->steps[s];
    uint32_t w = ss->workers;
    if (wf__obs_on(run->ex, WF_OBS_EVENT_ROUTE)) {
        uint32_t c0 = atomic_load_explicit(&ss->count, memory_order_relaxed), i = 0;
        for (wf__task *t = first; t; t = atomic_load_explicit(&t->next, memory_order_relaxed), i++)
            hook_route(run, t, w < WF__UNBOUNDED && c0 + i + 1 > w ? c0 + i + 1 - w : 0);
    }
    if (w >= WF__UNBOUNDED) { /* all of them start, counted in this thread's shard */
        uint32_t sh = my_shard(run);
        uint32_t kept = 0; /* the first ones take the slots this worker keeps (wf__kept) */
        for (wf__task *t = first; t; t = atomic_load_explicit(&t->next, memory_order_relaxed)) {
            t->shard = (uint8_t)sh;
            if (wf__tls_nkept != 0 && wf__kept_take(run, s))
                kept++;
        }
        if (kept < made && atomic_fetch_add_explicit(wf__shard_ctr(run, sh, s), made - kept,
                                                     memory_order_acq_rel) == 0)
            wf__engine_ref(run);
        while (first) {
            wf__task *t = first;
            first = atomic_load_explicit(&t->next, memory_order_relaxed);
            wf__run_schedule(run, t);
        }
        return 0;
    }
    /* Free slots first: those tasks start directly. */
    uint32_t c = atomic_load_explicit(&ss->count, memory_order_relaxed);
    while (c < w && first) {
        uint32_t m = w - c < made ? w - c : made;
        if (!atomic_compare_exchange_weak_explicit(&ss->count, &c, c + m, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        if (c == 0)
            wf__engine_ref(run);
        for (uint32_t i = 0; i < m; i++) {
            wf__task *t = first;
            first = atomic_load_explicit(&t->next, memory_order_relaxed);
            wf__run_schedule(run, t);
        }
        made -= m;
        c += m;
    }
    if (first == NULL)
        return 0;
    wf__pendq *q = pendq_get(ss);
    if (WF__UNLIKELY(q == NULL)) {
        while (first) {
            wf__task *t = first;
            first = atomic_load_explicit(&t->next, memory_order_relaxed);
            wf__drop_task(t);
        }
        return WF_ENOMEM;
    }
    if (WF__UNLIKELY(wf__run_slow(run) & WF__RUN_INTERNAL))
        for (wf__task *t = first; t; t = atomic_load_explicit(&t->next, memory_order_relaxed))
            wf__internal_step_state(run, s, "preparing", t->ev->type, NULL);
    wf__task *prev = atomic_exchange_explicit(&q->tail, last, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, first, memory_order_release);
    uint32_t n = atomic_fetch_add_explicit(&ss->count, made, memory_order_acq_rel);
    if (n == 0)
        wf__engine_ref(run);
    for (uint32_t i = n; i < w && i < n + made; i++)
        wf__run_schedule(run, pendq_take(q, 1));
    return 0;
}

static void notify_unhandled(wf__run *run, wf_event *ev)
{
    atomic_fetch_add(&run->unhandled, 1);
    if (wf__obs_on(run->ex, WF_OBS_EVENT_UNHANDLED))
        wf__hook_event(run, WF_OBS_EVENT_UNHANDLED, WF__OBS_NO_STEP, ev->type, 0);
    wf__log(run->ex, WF_LOG_DEBUG, "run %llu: no step accepts %s; event dropped",
            (unsigned long long)run->id, ev->type->name);
    if (run->stream_internal) {
        wf_value name, qname;
        wf_event *n = NULL;
        if (wf_value_string(&name, ev->type->name) == 0 &&
            wf_event_new1(&n, run->wf->reg->types[WF_UNHANDLED_EVENT], "event_type", name) == 0) {
            /* C has no modules: the qualified name is the name */
            if (wf_value_string(&qname, ev->type->name) < 0 ||
                wf_event_set(n, "qualified_name", qname) < 0 ||
                wf_event_set(n, "step_name", wf_value_nil()) < 0 ||
                wf_event_set(n, "idle", wf_value_bool(wf__run_idle(run))) < 0) {
                wf_event_release(n);
                n = NULL;
                atomic_fetch_add(&run->dropped, 1);
            }
            if (n)
                wf__stream_push(run, n);
        }
    }
    wf_event_release(ev);
}

/* ---------------------------------------------------------------- routing */

/* ev (owned) to each of steps[0..n), n > 1: 0 or WF_ENOMEM. */
static __attribute__((noinline)) int deliver_to_many(wf__run *run, const uint32_t *steps,
                                                     uint32_t n, wf_event *ev)
{
    /* several tasks: each adds its unit, a list fan-out emitter's stays its own */
    wf__group *held = wf__tls_held;
    wf__tls_held = NULL;
    int rc = 0;
    for (uint32_t i = 0; i + 1 < n && rc == 0; i++)
        rc = wf__deliver(run, steps[i], wf_event_retain(ev));
    if (rc == 0)
        rc = wf__deliver(run, steps[n - 1], ev);
    else
        wf_event_release(ev);
    wf__tls_held = held;
    return rc;
}

/* wf__emit's every case (its common one has a path of its own). */
static __attribute__((noinline)) void emit_general(wf__run *run, wf_event *ev, int32_t target)
{
    if (WF__UNLIKELY(wf__type_has_schema(ev->type)) && wf_event_check(ev) < 0) {
        /* an emission no caller could be told about (list fan-out, completion): the run fails */
        char msg[320];
        snprintf(msg, sizeof msg, "%s", wf_last_error_message());
        wf_event_release(ev);
        wf__end_run(run, WF_RUN_FAILED, NULL, WF_EFORMAT, NULL, msg);
        return;
    }
    wf_event_freeze(ev);
    if (wf__run_ended(run)) {
        if (wf__obs_on(run->ex, WF_OBS_EVENT_DROP))
            wf__hook_event(run, WF_OBS_EVENT_DROP, target >= 0 ? (uint32_t)target : WF__OBS_NO_STEP,
                           ev->type, 0);
        wf_event_release(ev);
        return;
    }
    const wf_event_type *t = ev->type;
    if (WF__UNLIKELY(t->reg != run->reg)) {
        char msg[320];
        snprintf(msg, sizeof msg, "event type '%s' belongs to another registry", t->name);
        wf_event_release(ev);
        wf__end_run(run, WF_RUN_FAILED, NULL, WF_ETYPE, NULL, msg);
        return;
    }
    if (WF__UNLIKELY(t->is_stop)) {
        wf__end_run(run, WF_RUN_DONE, ev, 0, NULL, NULL);
        return;
    }
    if (WF__UNLIKELY(wf__tls_group != NULL) && t == wf__tls_group->collect &&
        wf__branch_result(run, wf__tls_group, wf__tls_branch, ev))
        return; /* the branch's result: it resolved the branch and goes to the join only */
    int input_required = t->is_input;
    if (WF__UNLIKELY(input_required) && wf__stream_push(run, wf_event_retain(ev)) < 0) {
        /* nobody would ever see the request: the run cannot go on */
        wf_event_release(ev);
        wf__fail_nomem(run, WF__NO_STEP, "streaming an InputRequiredEvent");
        return;
    }
    uint32_t excluded[16];
    uint32_t nex = 0;
    if (WF__UNLIKELY(atomic_load_explicit(&run->nwaiting, memory_order_acquire) != 0))
        nex = wf__waiters_match(run, ev, excluded, 16);
    int rc = 0;
    if (target >= 0) {
        int skip = 0;
        for (uint32_t k = 0; k < nex; k++)
            skip |= excluded[k] == (uint32_t)target;
        if (skip)
            wf_event_release(ev);
        else
            rc = wf__deliver(run, (uint32_t)target, ev);
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
        if (WF__UNLIKELY(n > 1)) {
            rc = deliver_to_many(run, steps, n, ev);
        } else {
            rc = deliver(run, steps[0], ev);
        }
    }
    if (WF__UNLIKELY(rc < 0))
        wf__fail_nomem(run, WF__NO_STEP, "routing an event");
}

/*
 * Routes ev (owned) from inside the run. target: a step index or -1. The
 * common case first, decided with the checks emit_general would make, in
 * one frame without its arrays: an event that is not a stop, a request
 * for input, of this registry, with no schema, of a type that exactly one
 * step accepts, while the run goes on with no waiters, emitted outside a
 * list fan-out's branch; or there a branch's result.
 */
void wf__emit(wf__run *run, wf_event *ev, int32_t target)
{
    const wf_event_type *t = ev->type;
    if (WF__LIKELY(target < 0 && wf__type_plain(run, t))) {
        wf__group *g = wf__tls_group;
        if (WF__UNLIKELY(g != NULL)) {
            /* a branch's result (a tree's leaf) goes to its join only */
            if (t == g->collect && !wf__run_ended(run)) {
                wf_event_freeze(ev);
                if (wf__branch_result(run, g, wf__tls_branch, ev))
                    return;
            }
        } else {
            int32_t s = wf__route_one(run, t);
            if (s >= 0) {
                wf_event_freeze(ev);
                if (WF__UNLIKELY(deliver(run, (uint32_t)s, ev) < 0))
                    wf__fail_nomem(run, WF__NO_STEP, "routing an event");
                return;
            }
        }
    }
    emit_general(run, ev, target);
}

/*
 * Routes the events a step sent, in order. Runs of consecutive events that
 * go to one and the same step (a fan-out) are delivered as one batch; the
 * order each step sees is unchanged.
 */
void wf__emit_sent(wf__run *run, wf_event **evs, const int32_t *targets, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        if (wf__run_ended(run)) {
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
                wf__fail_nomem(run, WF__NO_STEP, "routing events");
                return;
            }
            i = j;
        } else {
            wf__emit(run, evs[i], targets[i]);
            i++;
        }
    }
}
