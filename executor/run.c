/*
 * run.c: a run's life: creating it, ending it exactly once, its lifetime
 * counts, the run timeout, and starting a run (wf_run_start*, wf_run).
 *
 * Lifetime: `refs` counts the handler and the engine (plus short-lived
 * holders: a completion token, a context call from outside, a snapshot);
 * `engine` counts what keeps the run busy in the executor: 1 until the run
 * ends, 1 per step with a nonzero count (or count shard), 1 for an armed
 * timeout, retry or waiter timer, 1 per outside caller inside a send. When
 * it reaches 0 the run is quiescent: no task of it exists and the executor
 * forgets it. Tasks themselves hold no reference, so a chain of invocations
 * touches no shared counter beyond its own step's.
 *
 * Shared fields: refs and engine are atomics; ended goes 0 -> 1 once (CAS)
 * and whoever wins publishes the outcome under run->mu (handler.c reads
 * it); the runs not yet ended are listed in the creating thread's shard
 * (ex->rshards: prev, next, listed under the shard's lock, with its live
 * count), limited workflows' bookkeeping under ex->runs_lock (taken before
 * a shard's lock); ctx->run under ctx->run_lock.
 *
 * The timeout: a block of its own holding the timer (wf__tmo), made when
 * the run has one, so that a run without (many wait for a human) does not
 * carry 48 bytes of timer, and the run of a one-step workflow fits a
 * 512-byte block of the thread caches. */
#include "engine.h"

#include <wf/observe.h>

#include "../observe/otlp.h" /* wf__otlp_traceparent */

#include <stdio.h>
#include <string.h>
#include <time.h>

WF__TLS uint32_t wf__tls_fail_attempts;
WF__TLS int64_t wf__tls_fail_elapsed_ns;

/* ------------------------------------------------------------- lifetime */

typedef struct wf__tmo {
    wf__timer tm; /* fn on_timeout, arg the run */
    uint8_t cls;
} wf__tmo;

static void run_free(wf__run *run)
{
    if (run->tmo) /* disarmed (a firing on_timeout holds the run, not the block) */
        wf__cache_free(run->tmo, run->tmo->cls);
    wf__durable_run_free(run->dur);
    /* waiters' tasks may belong to fan-out branches: free them before the groups */
    wf__waiters_free(run->waiters);
    wf__collect_free(run->collect);
    wf__snap_free(atomic_load_explicit(&run->snap, memory_order_acquire));
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
    wf__resources_run_free(run);
    wf__child_detach(run);
    if (run->cold) {
        wf_event_release(run->cold->held_start);
        wf__free_mem(run->cold->held_resume);
        wf__free_mem(run->cold->traceparent);
        wf__free_mem(run->cold);
    }
    wf_ctx_free(run->ctx); /* and with it, the workflow run->wf borrowed */
    wf__free_mem(run);
}

void wf__run_release(wf__run *run)
{
    if (atomic_fetch_sub_explicit(&run->refs, 1, memory_order_acq_rel) == 1)
        run_free(run);
}

/* Takes an engine reference unless the run is already quiescent. */
int wf__engine_try_ref(wf__run *run)
{
    uint32_t e = atomic_load(&run->engine);
    while (e != 0)
        if (atomic_compare_exchange_weak(&run->engine, &e, e + 1))
            return 1;
    return 0;
}

void wf__engine_unref(wf__run *run)
{
    if (atomic_fetch_sub_explicit(&run->engine, 1, memory_order_acq_rel) != 1)
        return;
    struct wf_executor *ex = run->ex;
    atomic_fetch_sub_explicit(&ex->rshards[run->rshard].live, 1, memory_order_seq_cst);
    /*
     * Only the executor's end waits for the counts, after it set
     * shutting_down: the lowering above, then this look (both seq_cst), so
     * either the waiter's sum sees the lowering or this sees the flag.
     */
    if (atomic_load_explicit(&ex->shutting_down, memory_order_seq_cst)) {
        pthread_mutex_lock(&ex->runs_lock); /* a waiter sums under it before it sleeps */
        pthread_cond_broadcast(&ex->runs_cond);
        pthread_mutex_unlock(&ex->runs_lock);
    }
    wf__run_release(run);
}

uint64_t wf__runs_live(struct wf_executor *ex)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < WF__RUN_SHARDS; i++)
        n += atomic_load_explicit(&ex->rshards[i].live, memory_order_seq_cst);
    return n;
}

/* ---------------------------------------------------- num_concurrent_runs */

/* A limited workflow's runs on one executor (ex->limiters, under runs_lock). */
typedef struct wf__limiter {
    struct wf__limiter *next;
    const wf_workflow *wf; /* not retained: the entry lives while it has runs */
    uint32_t active;
    wf__run *head, *tail; /* waiting, oldest first */
} wf__limiter;

/* runs_lock held. NULL: none (or out of memory making it). */
static wf__limiter *limiter_of(struct wf_executor *ex, const wf_workflow *wf, int create)
{
    wf__limiter *l = ex->limiters;
    while (l && l->wf != wf)
        l = l->next;
    if (l == NULL && create && (l = wf__calloc(1, sizeof *l)) != NULL) {
        l->wf = wf;
        l->next = ex->limiters;
        ex->limiters = l;
    }
    return l;
}

static void limiter_drop_if_idle(struct wf_executor *ex, wf__limiter *l)
{
    if (l->active || l->head)
        return;
    wf__limiter **pp = &ex->limiters;
    while (*pp != l)
        pp = &(*pp)->next;
    *pp = l->next;
    wf__free_mem(l);
}

/*
 * runs_lock held: a run of a limited workflow is created. 0: it is active
 * now (counted); 1: it waits (at the end of the FIFO); WF_ENOMEM.
 */
static int limiter_enter(struct wf_executor *ex, wf__run *run)
{
    wf__limiter *l = limiter_of(ex, run->wf, 1);
    if (l == NULL)
        return WF_ENOMEM;
    if (l->active < run->wf->max_runs) {
        l->active++;
        run->limited = 1;
        return 0;
    }
    run->waiting = 1;
    run->cold->next_waiting = NULL;
    if (l->tail)
        l->tail->cold->next_waiting = run;
    else
        l->head = run;
    l->tail = run;
    return 1;
}

/*
 * runs_lock held: run ended. An active one gives its place to the oldest
 * waiting run, returned with a reference (the caller starts it outside the
 * lock: wf__run_go, then wf__run_release); a waiting one leaves the FIFO.
 */
static wf__run *limiter_leave(struct wf_executor *ex, wf__run *run)
{
    wf__limiter *l = limiter_of(ex, run->wf, 0);
    wf__run *next = NULL;
    if (l == NULL)
        return NULL;
    if (run->waiting) {
        wf__run **pp = &l->head, *prev = NULL;
        while (*pp && *pp != run) {
            prev = *pp;
            pp = &(*pp)->cold->next_waiting;
        }
        if (*pp == run) {
            *pp = run->cold->next_waiting;
            if (l->tail == run)
                l->tail = prev;
        }
        run->waiting = 0;
        run->never_started = 1;
    } else if (run->limited) {
        run->limited = 0;
        l->active--;
        if (!ex->shutting_down && l->head) {
            next = l->head;
            l->head = next->cold->next_waiting;
            if (l->head == NULL)
                l->tail = NULL;
            next->waiting = 0;
            next->limited = 1;
            l->active++;
            atomic_fetch_add(&next->refs, 1);
        }
    }
    limiter_drop_if_idle(ex, l);
    return next;
}

static void on_timeout(wf__timer *tm, void *arg);

static void arm_timeout(wf__run *run)
{
    if (run->timeout_ms < 0)
        return;
    uint8_t cls;
    wf__tmo *k = wf__cache_alloc(sizeof *k, &cls);
    if (k == NULL) {
        wf__fail_nomem(run, WF__NO_STEP, "arming the run's timeout");
        return;
    }
    memset(k, 0, sizeof *k);
    k->cls = cls;
    k->tm.heap_index = WF__TIMER_IDLE;
    k->tm.fn = on_timeout;
    k->tm.arg = run;
    /*
     * Under run->mu, as end_timeout: a run is listed before this, so the
     * executor's end (or a parent's) may end it meanwhile on another
     * thread; then it is not armed, else the end cancels it after (the
     * timer's shard and links are never read half-written).
     */
    wf__lock_take(&run->mu);
    run->tmo = k;
    int rc = 0;
    if (!wf__run_ended(run)) {
        wf__engine_ref(run);
        if ((rc = wf__timer_arm_after(run->ex, &k->tm, run->timeout_ms * 1000000)) < 0)
            wf__engine_unref(run);
    }
    wf__lock_give(&run->mu);
    if (rc < 0)
        wf__fail_nomem(run, WF__NO_STEP, "arming the run's timeout");
}

/* The run ends: its timeout is disarmed (its block is freed with the run). */
static void end_timeout(wf__run *run)
{
    wf__lock_take(&run->mu); /* after the CAS on ended: see arm_timeout */
    int cancelled = run->tmo && wf__timer_cancel(run->ex, &run->tmo->tm);
    wf__lock_give(&run->mu);
    if (cancelled)
        wf__engine_unref(run); /* cannot be the last: we still hold the running unit */
}

void wf__run_go(wf__run *run)
{
    /* only this thread holds these now: the run left the FIFO under runs_lock */
    wf__run_cold *cold = run->cold;
    wf_event *start = cold->held_start;
    void *bytes = cold->held_resume;
    size_t len = cold->held_resume_len;
    cold->held_start = NULL;
    cold->held_resume = NULL;
    if (wf__run_ended(run)) { /* cancelled between leaving the FIFO and now */
        wf_event_release(start);
        wf__free_mem(bytes);
        return;
    }
    arm_timeout(run);
    if (start) {
        int o = wf__outside_enter(run);
        wf__hook_emit_outside(run, start);
        wf__emit(run, start, -1);
        wf__outside_exit(run, o);
    } else if (bytes && wf__resume_held(run, bytes, len) < 0) {
        wf__fail_nomem(run, WF__NO_STEP, "resuming a run that waited for its place");
    }
}

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
        if (wf_event_new(&ev, reg->types[WF_WORKFLOW_FAILED_EVENT], 5) == 0) {
            if (step && wf_value_string(&v, step) == 0)
                (void)wf_event_set(ev, "step_name", v);
            (void)wf_event_set(ev, "error_code", wf_value_int(code));
            if (msg && wf_value_string(&v, msg) == 0)
                (void)wf_event_set(ev, "error", v);
            /* as the reference: attempts and elapsed_seconds, nil when not a step's failure */
            uint32_t att = wf__tls_fail_attempts;
            int64_t el = wf__tls_fail_elapsed_ns;
            (void)wf_event_set(ev, "attempts", att ? wf_value_uint(att) : wf_value_nil());
            (void)wf_event_set(ev, "elapsed_seconds",
                               att && el >= 0 ? wf_value_double((double)el / 1e9) : wf_value_nil());
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
int wf__end_run(wf__run *run, int status, wf_event *result, int code, const char *step,
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
            if (step == NULL)
                step = run->wf->steps[i]->name; /* wf_handler_error's step: the first active */
        }
        if (step == NULL) {
            /* nothing runs: the run was waiting for an event (human in the loop) */
            wf__lock_take(&run->collect_lock);
            for (wf__waiter *w = run->waiters; w; w = w->next)
                if (w->state == W_WAITING)
                    step = run->wf->steps[w->step]->name; /* the oldest is last */
            wf__lock_give(&run->collect_lock);
            if (step && n > 0 && (size_t)n < sizeof tmsg)
                snprintf(tmsg + n, sizeof tmsg - (size_t)n, "; waiting for an event: %s", step);
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
    end_timeout(run);
    unsigned had = atomic_load(&run->had); /* after the CAS on ended (see WF__HAD_RETRIES) */
    if (had & WF__HAD_RETRIES)
        wf__retries_cancel(run);
    if (had & WF__HAD_WAITERS)
        wf__waiters_cancel(run);
    if (had & WF__HAD_TOKENS)
        wf__tokens_detach(run);
    if (had & WF__HAD_CHILDREN)
        wf__children_cancel(run);

    wf__run_shard *sh = &ex->rshards[run->rshard];
    wf__lock_take(&sh->lock);
    WF__DLIST_UNLINK(sh->head, run);
    wf__lock_give(&sh->lock);
    wf__run *next = NULL;
    if (run->wf->max_runs) {
        pthread_mutex_lock(&ex->runs_lock);
        next = (run->limited || run->waiting) ? limiter_leave(ex, run) : NULL;
        pthread_mutex_unlock(&ex->runs_lock);
    }

    if (status == WF_RUN_CANCELLED && code != WF_ELEASE) { /* a fence (fence.c) says why */
        code = WF_ECANCELLED;
        msg = "the run was cancelled";
    }
    if (wf__obs_on(ex, WF_OBS_RUN_END)) {
        wf__obs_rec r = {0};
        uint32_t si = WF__OBS_NO_STEP;
        for (uint32_t i = 0; step && i < run->nsteps && si == WF__OBS_NO_STEP; i++)
            if (strcmp(run->wf->steps[i]->name, step) == 0)
                si = i;
        wf__hook_rec(run, WF_OBS_RUN_END, si, NULL, wf__obs_now(), &r);
        r.attempt = (uint32_t)status;
        r.error = status == WF_RUN_DONE ? 0 : code;
        r.message = status == WF_RUN_DONE ? NULL : wf__hook_strdup(msg);
        r.dv = run->obs_t0 ? r.ts - run->obs_t0 : 0;
        wf__obs_write(ex, &r);
    }
    wf_event *term = status == WF_RUN_DONE ? wf_event_retain(result)
                                           : terminal_event(run, status, msg, step, code, active);

    wf_ctx *ctx = run->ctx;
    wf__lock_take(&ctx->run_lock);
    if (atomic_load(&ctx->run) == run)
        atomic_store_explicit(&ctx->run, NULL, memory_order_release);
    wf__lock_give(&ctx->run_lock);

    /* what this thread holds back of the run goes out before anyone learns it ended */
    if (WF__UNLIKELY(wf__obs_mask(ex)))
        wf__obs_settle();

    /* a durable run reports its outcome once its result is durable (durable.c) */
    if (run->dur && wf__durable_end(run, status, result, code, step, msg, term, next))
        return 1;
    wf__end_publish(run, status, result, code, step, msg, term, next);
    return 1;
}

void wf__end_publish(wf__run *run, int status, wf_event *result, int code, const char *step,
                     const char *msg, wf_event *term, wf__run *next)
{
    wf__lock_take(&run->mu);
    run->result = result;
    run->err_code = code;
    run->err_step = step ? wf__strdup(step) : NULL;
    run->err_msg = msg ? wf__strdup(msg) : NULL;
    run->terminal = term;
    atomic_store_explicit(&run->status, status, memory_order_release); /* last: see wf__run.status */
    wf__handler_wake(run);
    /* read with the status published, under mu: wf_handler_on_done sets it under mu too */
    wf_done_fn done = run->on_done;
    void *done_user = run->on_done_user;
    wf__lock_give(&run->mu);

    if (done)
        done((wf_handler *)run, done_user);
    if (next) { /* its place goes to the oldest run waiting for one */
        wf__run_go(next);
        wf__run_release(next);
    }
    wf__engine_unref(run); /* the running unit */
}

int wf__fail_nomem(wf__run *run, uint32_t step, const char *doing)
{
    const char *name = NULL;
    if (step < run->nsteps)
        name = run->wf->steps[step]->name;
    else if (wf__tls_inv && wf__tls_inv->run == run)
        name = wf__tls_inv->step->name;
    char msg[384];
    if (name)
        snprintf(msg, sizeof msg, "out of memory %s (step '%s')", doing, name);
    else
        snprintf(msg, sizeof msg, "out of memory %s", doing);
    return wf__end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, name, msg);
}

/* -------------------------------------------------------------- starting */

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
    wf__end_run(run, WF_RUN_TIMED_OUT, NULL, WF_ERUNTIMEOUT, NULL, NULL);
    wf__outside_exit(run, o);
    wf__engine_unref(run); /* the timer's unit */
}

/*
 * Run ids: unique on their executor, rising on each thread. A thread takes
 * a block of ids at a time, so that threads starting runs at once do not
 * pass the counter's line between cores on every run.
 */
#define WF__RUN_ID_BLOCK 64
static WF__TLS struct {
    uint64_t gen, next, end; /* the block [next, end) of executor gen */
} tls_ids;

static uint64_t next_id(struct wf_executor *ex)
{
    if (WF__UNLIKELY(tls_ids.gen != ex->gen || tls_ids.next == tls_ids.end)) {
        tls_ids.gen = ex->gen;
        tls_ids.next = atomic_fetch_add_explicit(&ex->next_run_id, WF__RUN_ID_BLOCK,
                                                 memory_order_relaxed);
        tls_ids.end = tls_ids.next + WF__RUN_ID_BLOCK;
    }
    return tls_ids.next++;
}

/*
 * A one-step run's block (the run, its step, wf__malloc's 16-byte header)
 * fits the 384-byte class: past it, a run waiting for input costs 136
 * bytes more (issue 19's 1 KiB a waiting run). Move a field to wf__run_cold
 * rather than grow this.
 */
_Static_assert(sizeof(wf__run) + sizeof(wf__step_state) + 16 <= 384,
               "wf__run outgrew the 384-byte block of a one-step run");

wf__run_cold *wf__run_cold_make(wf__run *run)
{
    if (run->cold == NULL)
        run->cold = wf__calloc(1, sizeof *run->cold);
    return run->cold;
}

int wf__run_create(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params,
                   wf_event *start, void *resume, size_t resume_len, wf__run **out)
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
    if (WF__UNLIKELY(ctx->wf != wf)) { /* the callers checked (wf__run_params_check) */
        wf_ctx_free(ctx);
        wf__free_mem(run);
        return wf__set_error(WF_EMISMATCH, "the context belongs to workflow '%s', not '%s'",
                             ctx->wf->name, wf->name);
    }
    wf__lock_take(&ctx->run_lock);
    if (atomic_load(&ctx->run) != NULL) {
        wf__lock_give(&ctx->run_lock);
        wf_ctx_free(ctx);
        wf__free_mem(run);
        return wf__set_error(WF_EBUSY, "the context already has a run in flight");
    }
    atomic_store_explicit(&ctx->run, run, memory_order_release);
    /* a run parked in the context is continued by this one, or discarded by a fresh start */
    void *parked = ctx->parked;
    ctx->parked = NULL;
    ctx->parked_len = 0;
    wf__lock_give(&ctx->run_lock);
    wf__free_mem(parked);

    atomic_init(&run->refs, 2); /* the handler and the engine */
    atomic_init(&run->engine, 1);
    atomic_init(&run->ended, 0);
    atomic_init(&run->dropped, 0);
    atomic_init(&run->unhandled, 0);
    atomic_init(&run->gate, 0);
    atomic_init(&run->next_inv, 1);
    run->dur = wf__tls_durable; /* a durable run being started (durable.c) */
    run->ex = ex;
    /*
     * Borrowed from the context, which holds a reference for as long as
     * the run holds the context (wf__run_params_check made ctx->wf == wf):
     * runs started at once from several threads do not pass the
     * workflow's count between cores twice more.
     */
    run->wf = wf;
    run->reg = wf->reg;
    run->ctx = ctx;
    run->timeout_ms =
        params->timeout_ms == WF_TIMEOUT_DEFAULT ? wf->timeout_ms : params->timeout_ms;
    atomic_init(&run->fence_ns, params->fence_ns);
    atomic_init(&run->status, WF_RUN_RUNNING);
    atomic_init(&run->wake, 0);
    run->scap = params->stream_capacity;
    run->stream_internal = params->stream_internal != 0;
    if (((wf->max_runs || params->traceparent) && wf__run_cold_make(run) == NULL) ||
        (params->traceparent &&
         (run->cold->traceparent = wf__strdup(params->traceparent)) == NULL) ||
        wf__child_attach(run) < 0) {
        wf__lock_take(&ctx->run_lock);
        atomic_store(&ctx->run, NULL);
        wf__lock_give(&ctx->run_lock);
        wf_ctx_free(ctx);
        if (run->cold) {
            wf__free_mem(run->cold->traceparent);
            wf__free_mem(run->cold);
        }
        wf__free_mem(run);
        return WF_ENOMEM;
    }
    atomic_init(&run->internal, (uint8_t)((run->stream_internal ? WF__RUN_INTERNAL : 0) |
                                          (params->fence_ns ? WF__RUN_FENCED : 0)));
    run->on_done = params->on_done;
    run->on_done_user = params->on_done_user;
    atomic_init(&run->outside, 0);
    atomic_init(&run->snap, NULL);
    run->nsteps = ns;
    uint32_t ncols = 0;
    for (uint32_t i = 0; i < ns; i++) {
        atomic_init(&run->steps[i].count, 0);
        atomic_init(&run->steps[i].kept, 0);
        run->steps[i].workers = wf->steps[i]->num_workers;
        atomic_init(&run->steps[i].pendq, NULL);
        run->steps[i].col = run->steps[i].workers >= WF__UNBOUNDED ? ncols++ : UINT32_MAX;
        run->steps[i].join = wf->steps[i]->join != 0;
        run->steps[i].blocking = wf->steps[i]->blocking != 0;
        /* kept slots (wf__kept, engine.h): a step that does not block, on one worker */
        run->steps[i].keep = run->steps[i].blocking || ex->nworkers != 1 ? 0
                             : run->steps[i].workers >= WF__UNBOUNDED    ? WF__KEPT_UNIT_UNBOUNDED
                                                                         : WF__KEPT_UNIT_BOUNDED;
    }
    if (ncols) {
        /* one row of cache lines per shard (task->shard is a byte: 255 workers, then shared) */
        run->nshards = (ex->nworkers < 255 ? ex->nworkers : 255) + 1;
        run->shard_stride =
            (ncols + WF__CACHELINE / 4 - 1) / (WF__CACHELINE / 4) * (WF__CACHELINE / 4);
        run->shards =
            wf__malloc_aligned((size_t)run->nshards * run->shard_stride * sizeof *run->shards);
        if (run->shards == NULL) {
            wf__lock_take(&ctx->run_lock);
            atomic_store(&ctx->run, NULL);
            wf__lock_give(&ctx->run_lock);
            run->ex = NULL;
            run_free(run);
            return WF_ENOMEM;
        }
    }
    run->id = next_id(ex);

    /* the creating thread's shard; a limited workflow's runs also take runs_lock (first) */
    uint32_t si = wf__thread_shard() % WF__RUN_SHARDS;
    wf__run_shard *sh = &ex->rshards[si];
    if (wf->max_runs)
        pthread_mutex_lock(&ex->runs_lock);
    wf__lock_take(&sh->lock);
    if (atomic_load_explicit(&ex->shutting_down, memory_order_relaxed)) {
        wf__lock_give(&sh->lock);
        if (wf->max_runs)
            pthread_mutex_unlock(&ex->runs_lock);
        wf__lock_take(&ctx->run_lock);
        atomic_store(&ctx->run, NULL);
        wf__lock_give(&ctx->run_lock);
        run->ex = NULL;
        run_free(run);
        return wf__set_error(WF_ESHUTDOWN, "the executor is shutting down");
    }
    int waits = 0;
    if (wf->max_runs) {
        /* what it starts from goes into the run before anyone can pop it */
        run->cold->held_start = start;
        run->cold->held_resume = resume;
        run->cold->held_resume_len = resume_len;
        if ((waits = limiter_enter(ex, run)) <= 0) {
            run->cold->held_start = NULL;
            run->cold->held_resume = NULL;
        }
        if (waits < 0) {
            wf__lock_give(&sh->lock);
            pthread_mutex_unlock(&ex->runs_lock);
            wf__lock_take(&ctx->run_lock);
            atomic_store(&ctx->run, NULL);
            wf__lock_give(&ctx->run_lock);
            run->ex = NULL;
            run_free(run);
            return WF_ENOMEM;
        }
    }
    run->rshard = si;
    run->next = sh->head;
    if (sh->head)
        sh->head->prev = run;
    sh->head = run;
    run->listed = 1;
    atomic_fetch_add_explicit(&sh->live, 1, memory_order_relaxed);
    wf__lock_give(&sh->lock);
    if (wf->max_runs)
        pthread_mutex_unlock(&ex->runs_lock);

    *out = run;
    if (wf__obs_on(ex, WF_OBS_RUN_START) || wf__obs_on(ex, WF_OBS_RUN_END)) {
        wf__obs_rec r = {0};
        wf__hook_rec(run, WF_OBS_RUN_START, WF__OBS_NO_STEP, NULL, wf__obs_now(), &r);
        run->obs_t0 = r.ts;
        if (wf__obs_on(ex, WF_OBS_RUN_START)) {
            const wf__run_cold *cold = run->cold;
            /* the trace it joins, or NULL */
            r.message = cold ? wf__hook_strdup(cold->traceparent) : NULL;
            /* a child run: its parent's step (child.c) */
            r.dv = cold ? (int64_t)cold->parent_run_id : 0;
            r.event_id = cold ? cold->parent_event_id : 0;
            wf__obs_write(ex, &r);
        }
    }
    if (waits)
        return 1; /* it starts when a place is free (wf__run_go) */
    arm_timeout(run);
    return 0;
}

/* Checks the parameters common to starting and resuming a run. */
int wf__run_params_check(wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params, char **message)
{
    if (params->timeout_ms < 0 && params->timeout_ms != WF_NO_TIMEOUT &&
        params->timeout_ms != WF_TIMEOUT_DEFAULT)
        return wf__set_error(WF_EINVAL,
                             "run timeout %lld ms: give a duration, WF_NO_TIMEOUT or "
                             "WF_TIMEOUT_DEFAULT",
                             (long long)params->timeout_ms);
    if (params->fence_ns < 0)
        return wf__set_error(WF_EINVAL, "run fence %lld ns: give a wf_clock_ns() time, or 0",
                             (long long)params->fence_ns);
    uint64_t trace[2], parent;
    if (params->traceparent && wf__otlp_traceparent(params->traceparent, trace, &parent) < 0)
        return wf__set_error(WF_EINVAL,
                             "traceparent '%.64s' is not a W3C trace context "
                             "(00-<32 hex>-<16 hex>-<2 hex>)",
                             params->traceparent);
    int rc = wf__workflow_prepare(wf, message);
    if (rc < 0)
        return rc;
    if (ctx && ctx->wf != wf)
        return wf__set_error(WF_EMISMATCH, "the context belongs to workflow '%s', not '%s'",
                             ctx->wf->name, wf->name);
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
        rc = wf__set_error(WF_ETYPE, "workflow '%s' starts with '%s', not '%s'", wf->name,
                           wf->start_type ? wf->start_type->name : "?", start->type->name);
    if (rc == 0)
        rc = wf__event_check_emit(start); /* the start event's schema (schema.c) */
    wf__run *run = NULL;
    if (rc == 0)
        rc = wf__run_create(ex, wf, ctx, params, start, NULL, 0, &run);
    if (rc < 0) {
        wf_event_release(start);
        return rc;
    }
    *out = (wf_handler *)run;
    if (WF__UNLIKELY(wf__tls_table_ref)) { /* wf_run_start_durable: the table's reference */
        atomic_fetch_add_explicit(&run->refs, 1, memory_order_relaxed);
        wf__tls_table_ref = 0;
    }
    if (rc == 1)
        return 0; /* waiting for its place (num_concurrent_runs): the run holds start */
    /* An on_done callback may free the caller's handler on a worker before
     * this returns (wf batch, wf serve do): a reference of our own keeps the
     * run until the outside section is left. */
    int pin = params && params->on_done;
    if (pin)
        atomic_fetch_add_explicit(&run->refs, 1, memory_order_relaxed);
    /*
     * run_here from a thread outside the pool: the first invocation that
     * routing schedules is kept instead of injected, and runs below.
     */
    wf__task *here = NULL;
    int capture = params->run_here && wf__tls_slot == NULL && wf__tls_capture == NULL;
    if (capture) {
        wf__tls_capture = &here;
        wf__tls_capture_run = run;
    }
    int o = wf__outside_enter(run);
    wf__hook_emit_outside(run, start);
    wf__emit(run, start, -1);
    wf__outside_exit(run, o);
    if (capture) {
        wf__tls_capture = NULL;
        wf__tls_capture_run = NULL;
    }
    if (here && wf__run_here(ex, here) < 0)
        wf__inject(ex, here); /* every guest slot taken: a worker runs it */
    if (pin)
        wf__run_release(run);
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
    if (ex && wait_ms < 0 && wf__own_thread(ex) == 1) {
        /* waiting forever on a worker of ex: refused before anything starts */
        wf_event_release(start_event);
        return wf__set_error(WF_ESTATE, "wf_run: waiting without a timeout on a worker of the "
                                        "same executor could never end (give a timeout)");
    }
    wf_handler *h;
    int rc = wf_run_start(ex, wf, ctx, start_event, &h);
    if (rc < 0)
        return rc;
    rc = wf_handler_wait(h, wait_ms, result);
    wf_handler_free(h);
    return rc;
}

/*
 * A run of ex not yet ended, with a reference: one without a parent when
 * there is one (parents first: their ends cancel their children, a child's
 * first would fail them), else any; NULL when none is left.
 */
static wf__run *pick_run(struct wf_executor *ex)
{
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < WF__RUN_SHARDS; i++) {
            wf__run_shard *sh = &ex->rshards[i];
            wf__lock_take(&sh->lock);
            wf__run *run = sh->head;
            while (pass == 0 && run && wf__run_parent_id(run))
                run = run->next;
            if (run)
                atomic_fetch_add(&run->refs, 1);
            wf__lock_give(&sh->lock);
            if (run)
                return run;
        }
    }
    return NULL;
}

void wf__runs_cancel_all(struct wf_executor *ex)
{
    pthread_mutex_lock(&ex->runs_lock);
    atomic_store_explicit(&ex->shutting_down, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&ex->runs_lock);
    for (;;) {
        wf__run *run = pick_run(ex);
        if (run == NULL)
            return;
        int o = wf__outside_enter(run);
        wf__end_run(run, WF_RUN_CANCELLED, NULL, WF_ECANCELLED, NULL, NULL);
        wf__outside_exit(run, o);
        wf__run_release(run);
    }
}
