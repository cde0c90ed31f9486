/*
 * invoke.c: running a task: one invocation of a step (its context calls
 * find it through wf__tls_inv), what it returns and sends, its failure
 * (retry, error handler, or the run's end), claimed batches (the events a
 * finishing invocation took off its step's queue run in its slot, their
 * emissions held and routed together), and the engine hand-over of a chain.
 *
 * The per-thread state below belongs to the thread running the task; the
 * invocation (wf__inv) lives on that thread's stack. Nothing here is shared
 * without the routing's own protocol (route.c) or a run's locks.
 */
#include "engine.h"

#include <wf/observe.h>

#include <stdio.h>
#include <string.h>

WF__TLS wf__inv *wf__tls_inv;
WF__TLS uint16_t wf__tls_lineage;
WF__TLS wf__group *wf__tls_group;
WF__TLS uint32_t wf__tls_branch;
/*
 * Engine hand-over (a chain costs no run-wide atomics): while the single
 * task of `wf__tls_handoff_run` routes what its step returned, a delivery
 * that wakes a step (count 0 -> 1) and lands in this worker's bypass slot
 * takes no engine unit; wf__tls_handoff records the debt. Nobody else can
 * run a bypass task, and the routing task still holds its own step's unit,
 * so the run cannot quiesce meanwhile. When the task finishes, its step's
 * unit passes to the woken step if the task was its step's last (count
 * 1 -> 0: no engine operation at all), else the debt is paid first
 * (wf__finish_slot_owed, engine.h).
 */
WF__TLS wf__run *wf__tls_handoff_run;
WF__TLS wf__run *wf__tls_handoff;

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
    if (WF__UNLIKELY(inv->errmsg != NULL))
        wf__free_mem(inv->errmsg);
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
        wf__emit_sent(run, d->evs, d->targets, d->n);
    d->n = 0;
}

static void defer_done(deferred *d)
{
    if (d->evs != d->inl_evs) {
        wf__free_mem(d->evs);
        wf__free_mem(d->targets);
    }
}

void wf__inv_flush_sent(wf__inv *inv)
{
    wf__run *run = inv->run;
    wf__slot_dirty(run); /* visible effects: a live snapshot waits for the task's end */
    if (inv->defer)
        defer_flush(run, inv->defer); /* earlier invocations of the batch come first */
    wf__emit_sent(run, inv->sent, inv->targets, inv->nsent);
    inv->nsent = 0;
}

/* Routes an invocation's emissions now, or holds them in d (when not NULL). */
static inline __attribute__((always_inline)) void route_emissions(wf__run *run, wf_event *out,
                                                                  wf__inv *inv, deferred *d)
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
                wf__fail_nomem(run, inv->task->step, "routing an event");
            return;
        }
        defer_flush(run, d);
    }
    if (out)
        wf__emit(run, out, -1);
    if (inv->nsent)
        wf__emit_sent(run, inv->sent, inv->targets, inv->nsent);
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
void wf__step_failed(wf__run *run, const wf__task *t, int rc, const char *msg, int64_t started)
{
    const wf__step *step = run->wf->steps[t->step];
    if (step->handler >= 0 && !wf__run_ended(run)) {
        const wf__step *h = run->wf->steps[step->handler];
        if (t->flags < h->max_recoveries) {
            wf_event *fe = failed_event(run, t, rc, msg, started);
            if (fe) {
                uint16_t saved = wf__tls_lineage;
                wf__tls_lineage = (uint16_t)(t->flags + 1);
                wf_event_freeze(fe);
                int r = wf__deliver(run, (uint32_t)step->handler, fe);
                wf__tls_lineage = saved;
                if (r == 0)
                    return;
            }
        }
    }
    /* the WorkflowFailedEvent says how many attempts, and how long since the first */
    const wf__retry_info *ri = t->arg;
    int64_t first = (ri && ri->first_ns) ? ri->first_ns : started;
    wf__tls_fail_attempts = t->attempt;
    wf__tls_fail_elapsed_ns = first ? wf__now_ns() - first : -1;
    wf__end_run(run, WF_RUN_FAILED, NULL, rc, step->name, msg ? msg : wf_strerror(rc));
    wf__tls_fail_attempts = 0;
}

/* A step returned a positive value that is not a result it may return here. */
static __attribute__((cold, noinline)) void bad_return(wf__run *run, const wf__step *step, int rc)
{
    char msg[384];
    if (rc == WF_SUSPEND)
        snprintf(msg, sizeof msg,
                 "step '%s' returned WF_SUSPEND without waiting for an event "
                 "(wf_ctx_wait_for_event)",
                 step->name);
    else if (rc == WF_PENDING)
        snprintf(msg, sizeof msg,
                 "step '%s' returned WF_PENDING without an async token (wf_ctx_pend)", step->name);
    else
        snprintf(msg, sizeof msg,
                 "step '%s' returned %d, which is not a step result (0, a negative WF_E* "
                 "code, WF_SUSPEND or WF_PENDING)",
                 step->name, rc);
    wf__end_run(run, WF_RUN_FAILED, NULL, WF_ESTATE, step->name, msg);
}

/* The returned event failed its schema check: the step fails with its message. */
static __attribute__((noinline, cold)) int schema_failed(wf__inv *inv, int rc)
{
    if (rc < 0) {
        wf__free_mem(inv->errmsg);
        inv->errmsg = wf__strdup(wf_last_error_message());
    }
    return rc;
}

static inline __attribute__((always_inline)) int invoke(wf__run *run, wf__task *t, deferred *d,
                                                        int handoff)
{
    wf__step *step = run->wf->steps[t->step];
    unsigned slow = wf__run_slow(run);
    if (WF__UNLIKELY(slow & WF__RUN_FENCED) &&
        wf__fence_passed(run, step->name, "the step was not started"))
        return 0;
    wf__inv inv;
    inv.run = run;
    inv.step = step;
    inv.task = t;
    inv.sent = inv.inl_sent;
    inv.targets = inv.inl_targets;
    inv.capsent = 8;
    memset(&inv.nsent, 0,
           offsetof(wf__inv, span_depth) + sizeof inv.span_depth - offsetof(wf__inv, nsent));
    inv.defer = d;
    wf__inv *prev = wf__tls_inv;
    wf__tls_inv = &inv;
    wf_event *out = NULL;
    /* The clock is read only for steps that can retry (elapsed time of stops). */
    int64_t started =
        (step->needs_clock && (t->arg == NULL || ((wf__retry_info *)t->arg)->first_ns == 0))
            ? wf__now_ns()
            : 0;
    /* inv.obs_t0 nonzero: observed (the start time; 1: dropped); nothing kept live across */
    uint32_t obs = wf__obs_mask(run->ex);
    if (WF__UNLIKELY(obs)) {
        if (wf__obs_drop_inv(run->ex, obs))
            inv.obs_t0 = 1; /* in the drop window: no clock read */
        else if (!wf__hook_before_fast(run, t, &inv, obs))
            wf__hook_before(run, t, &inv, obs);
    }
    if (WF__UNLIKELY(slow & WF__RUN_INTERNAL))
        wf__internal_step_state(run, t->step, "running", t->ev->type, NULL);
    int rc = WF__UNLIKELY(step->res != NULL) ? wf__resources_enter(&inv) : 0;
    if (WF__LIKELY(rc == 0))
        rc = step->fn(run->ctx, t->ev, &out, step->user);
    if (WF__UNLIKELY(rc == 0 && out != NULL && wf__type_has_schema(out->type)))
        rc = schema_failed(&inv, wf_event_check(out)); /* the returned event's schema */
    if (WF__UNLIKELY(inv.res != NULL))
        wf__resources_leave(&inv);
    wf__tls_inv = prev;
    wf__slot_dirty(run);
    slow = wf__run_slow(run); /* a fence may have come meanwhile */
    if (WF__UNLIKELY(slow & WF__RUN_INTERNAL))
        wf__internal_step_state(run, t->step, "not_running", t->ev->type,
                                rc == 0 && out ? out->type : NULL);
    if (WF__UNLIKELY(inv.obs_t0)) {
        obs = wf__obs_mask(run->ex); /* observers may have changed meanwhile */
        if (inv.obs_t0 == 1)
            wf__obs_drop_inv_end(obs, rc, out);
        else if (!wf__hook_after_fast(run, t, &inv, rc, out, obs))
            wf__hook_after(run, t, &inv, rc, out, obs);
    }
    if (WF__LIKELY(rc == 0)) {
        if (WF__UNLIKELY(slow & WF__RUN_FENCED) &&
            wf__fence_passed(run, step->name, "what the step returned was dropped")) {
            wf_event_release(out);
            inv_release_sent(&inv);
        } else {
            wf__tls_handoff_run = handoff ? run : NULL;
            route_emissions(run, out, &inv, d);
            wf__tls_handoff_run = NULL;
        }
    } else if (rc == WF_PENDING && inv.token) {
        /* The invocation goes on elsewhere: its token now owns the task and the slot. */
        wf_event_release(out);
        route_emissions(run, NULL, &inv, d);
        inv.token->started = started;
        /*
         * The rest of a claimed batch is not the token's (the caller saw it
         * before): from the arm on, the task may be completed and freed by
         * another thread at any moment, so nothing touches it after.
         */
        t->chain = NULL;
        if (WF__UNLIKELY(inv.took_waiter)) /* its retries would not ask again: not kept */
            wf__waiters_drop_taken(run, t);
        int armed = wf__token_arm(inv.token); /* 0: it was completed already, and routed */
        inv_cleanup(&inv);
        if (WF__UNLIKELY(inv.obs_t0)) {
            wf__obs_settle();
            wf__tls_obs_now = 0;
        }
        return armed;
    } else if (rc == WF_SUSPEND && inv.suspended) {
        /* Sent events still go out (as in the reference); the step runs again later. */
        wf_event_release(out);
        route_emissions(run, NULL, &inv, d);
    } else if (rc < 0 && wf__maybe_retry(run, t, rc, inv.errmsg, started)) {
        /* Emissions of a failed attempt are dropped: the retry starts afresh. */
        wf_event_release(out);
        inv_release_sent(&inv);
        inv.took_waiter = 0; /* the retry takes the same waiters' outcomes again */
    } else {
        wf_event_release(out);
        inv_release_sent(&inv);
        if (d)
            defer_flush(run, d); /* what earlier invocations emitted still counts */
        if (rc > 0) {
            bad_return(run, step, rc);
        } else {
            wf__step_failed(run, t, rc, inv.errmsg, started);
        }
    }
    if (inv.token) /* pended, then returned something else: the token is void */
        wf__token_abandon(inv.token);
    if (WF__UNLIKELY(inv.took_waiter) && !(rc == WF_SUSPEND && inv.suspended))
        wf__waiters_drop_taken(run, t); /* the invocation is over */
    inv_cleanup(&inv);
    if (WF__UNLIKELY(inv.obs_t0)) {
        wf__obs_settle();
        wf__tls_obs_now = 0;
    }
    return 0;
}

static void run_batch(wf__run *run, wf__task *t, uint32_t s, uint32_t shard, wf__slot *slot);

/* invoke for the rare callers: one copy of it out of line. */
static __attribute__((noinline)) int invoke_outlined(wf__run *run, wf__task *t, deferred *d,
                                                     int handoff)
{
    return invoke(run, t, d, handoff);
}

void wf__task_run(wf__worker *w, wf__task *t)
{
again:
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
    if (WF__UNLIKELY(wf__slot_enter(slot, run, t)))
        return; /* held for a snapshot; it runs when the snapshot is done */
    if (t->chain == NULL) {
        int pended = 0;
        if (!wf__run_ended(run)) {
            wf__tls_lineage = t->flags;
            wf__tls_group = t->u.group;
            wf__tls_branch = t->pad;
            pended = invoke(run, t, NULL, 1);
            wf__tls_lineage = 0;
            wf__tls_group = NULL;
        }
        if (!pended) {
            wf__slot_dirty(run);
            wf__drop_task(t);
            wf__finish_or_keep(run, s, shard);
        }
        wf__slot_leave(slot);
        /*
         * The task it handed over (a chain's next step, in the bypass slot)
         * runs here, as the worker's loop would run it next, unless the
         * loop's fairness tick is due.
         */
        if (w != NULL && (t = w->bypass) != NULL && (w->tick + 1) % WF__FAIRNESS_TICK != 0) {
            w->bypass = NULL;
            w->tick++;
            goto again;
        }
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
        wf__task *nx = t->chain; /* read first: a pended t is not ours after invoke */
        if (!wf__run_ended(run)) {
            /* held emissions are routed with the highest lineage of the batch */
            lineage = t->flags > lineage ? t->flags : lineage;
            wf__tls_lineage = lineage;
            if (WF__UNLIKELY(t->u.group != NULL)) {
                /* a branch's emissions must count before its task ends: no holding */
                wf__tls_group = t->u.group;
                wf__tls_branch = t->pad;
                pended = invoke_outlined(run, t, NULL, 0);
                wf__tls_group = NULL;
            } else {
                pended = invoke_outlined(run, t, &d, 0);
            }
        }
        if (pended) {
            /*
             * The slot now belongs to the pending invocation; the rest of the
             * batch was claimed off the count, so it goes back through it.
             */
            defer_flush(run, &d);
            defer_done(&d);
            wf__tls_lineage = 0;
            while (nx) {
                wf__task *n2 = nx->chain;
                nx->chain = NULL;
                if (wf__run_ended(run))
                    wf__drop_task(nx);
                else if (wf__deliver_task(run, nx) < 0) /* nx is gone */
                    wf__fail_nomem(run, s, "re-queuing the rest of a claimed batch");
                nx = n2;
            }
            wf__slot_leave(slot);
            return;
        }
        wf__slot_dirty(run);
        wf__drop_task(t);
        t = nx;
        if (t && WF__UNLIKELY(atomic_load_explicit(&run->gate, memory_order_relaxed))) {
            /* a snapshot waits: route what the batch holds, park the rest of it */
            wf__tls_lineage = lineage;
            defer_flush(run, &d);
            wf__tls_lineage = 0;
            defer_done(&d);
            if (wf__slot_enter(slot, run, t)) /* clean again on the rest of the batch */
                return;
            d.evs = d.inl_evs;
            d.targets = d.inl_targets;
            d.n = 0;
            d.cap = 32;
            lineage = 0;
        }
    }
    wf__tls_lineage = lineage;
    defer_flush(run, &d);
    wf__tls_lineage = 0;
    defer_done(&d);
    wf__finish_slot(run, s, shard);
    wf__slot_leave(slot);
}
