/*
 * handler.c: the caller's side of a run (a wf_handler is the run itself):
 * wait for the result, status and error, send an event from outside,
 * cancel, and the run's stream: the writer (wf__stream_push, for steps and
 * the engine) and the one reader (wf_handler_next_event).
 *
 * Shared fields, all under run->mu: the stream ring (sbuf, scap, shead,
 * scount), terminal and terminal_given, reader_busy, sleepers, and the
 * outcome (status, result, err_*) published once by wf__end_run (status
 * last, with a release store: a reader that finds it set needs no lock);
 * run->wake (a futex word bumped under mu) wakes readers and waiters.
 * run->dropped is atomic.
 */
#include "engine.h"

#include <limits.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

/*
 * mu held: sleeps until wf__handler_wake or the deadline (CLOCK_MONOTONIC
 * ns, -1: none), mu let go meanwhile. As a condition variable's wait, it may
 * return early: the caller looks again. The word is read under mu and only
 * bumped under mu, so a wake between the unlock and the sleep is not lost
 * (the futex sees the word changed and returns at once).
 */
static void handler_sleep(wf__run *run, int64_t deadline)
{
    uint32_t seen = atomic_load_explicit(&run->wake, memory_order_relaxed);
    struct timespec ts = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
    run->sleepers++;
    wf__lock_give(&run->mu);
    /* FUTEX_WAIT_BITSET: an absolute CLOCK_MONOTONIC deadline */
    syscall(SYS_futex, (uint32_t *)&run->wake, FUTEX_WAIT_BITSET_PRIVATE, seen,
            deadline >= 0 ? &ts : NULL, NULL, FUTEX_BITSET_MATCH_ANY);
    wf__lock_take(&run->mu);
    run->sleepers--;
}

void wf__handler_wake(wf__run *run)
{
    if (run->sleepers == 0)
        return;
    atomic_fetch_add_explicit(&run->wake, 1, memory_order_relaxed);
    syscall(SYS_futex, (uint32_t *)&run->wake, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/*
 * 0: kept (or the run had ended), 1: the stream was full and dropped it
 * (counted), WF_ENOMEM: its buffer could not be allocated (counted as
 * dropped too; the caller decides whether the run can go on without it).
 */
int wf__stream_push(wf__run *run, wf_event *ev)
{
    wf_event_freeze(ev);
    if (run->dur && !wf__run_ended(run))
        wf__durable_stream(run, ev); /* the durable stream, numbered (durable.c) */
    if (run->cold && run->cold->stream_to && !wf__run_ended(run))
        wf__child_forward(run, ev); /* a child workflow's stream goes to its parent's too */
    wf__lock_take(&run->mu);
    if (wf__run_ended(run) || run->scap == 0) {
        int dropped = !wf__run_ended(run);
        if (dropped)
            atomic_fetch_add(&run->dropped, 1);
        wf__lock_give(&run->mu);
        wf_event_release(ev);
        return dropped;
    }
    if (run->sbuf == NULL) {
        run->sbuf = wf__malloc(run->scap * sizeof *run->sbuf);
        if (run->sbuf == NULL) {
            atomic_fetch_add(&run->dropped, 1);
            wf__lock_give(&run->mu);
            wf_event_release(ev);
            return WF_ENOMEM;
        }
    }
    if (run->scount == run->scap) {
        atomic_fetch_add(&run->dropped, 1);
        wf__lock_give(&run->mu);
        wf_event_release(ev);
        return 1;
    }
    run->sbuf[(run->shead + run->scount) % run->scap] = ev;
    run->scount++;
    wf__handler_wake(run);
    wf__lock_give(&run->mu);
    return 0;
}

static int status_code(int status)
{
    switch (status) {
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
    int st = atomic_load_explicit(&run->status, memory_order_acquire);
    if (st != WF_RUN_RUNNING) { /* published: the outcome is immutable, no lock needed */
        if (st == WF_RUN_DONE && result)
            *result = wf_event_retain(run->result);
        return status_code(st);
    }
    if (wf__own_thread(run->ex) == 1) {
        /* a worker waiting for its own executor forever: it may be the one needed */
        if (timeout_ms < 0)
            return wf__set_error(WF_ESTATE,
                                 "wf_handler_wait: waiting without a timeout on a worker of the "
                                 "run's own executor could never end (give a timeout, or pend "
                                 "the step: wf_ctx_pend)");
        /* a task in this worker's hands only it could run: let others take it */
        wf__pool_spill_bypass();
    }
    int64_t deadline = timeout_ms < 0 ? -1 : wf__now_ns() + timeout_ms * 1000000;
    wf__lock_take(&run->mu);
    while (run->status == WF_RUN_RUNNING) {
        if (deadline >= 0 && wf__now_ns() >= deadline)
            break;
        handler_sleep(run, deadline);
    }
    int rc = status_code(run->status);
    if (rc == 0 && result)
        *result = wf_event_retain(run->result);
    wf__lock_give(&run->mu);
    return rc;
}

wf_run_status wf_handler_status(const wf_handler *h)
{
    wf__run *run = (wf__run *)h;
    if (run == NULL)
        return WF_RUN_RUNNING;
    return (wf_run_status)atomic_load_explicit(&run->status, memory_order_acquire);
}

int wf_handler_error(const wf_handler *h, int *code, const char **step, const char **message)
{
    wf__run *run = (wf__run *)h;
    if (run == NULL)
        return WF_EINVAL;
    if (atomic_load_explicit(&run->status, memory_order_acquire) == WF_RUN_RUNNING)
        return WF_ESTATE;
    /* Written once before status was published (release); immutable since. */
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
int wf__resolve_target(const wf_workflow *wf, const wf_event *ev, const char *target, int32_t *idx)
{
    *idx = -1;
    int rc = wf__event_check_emit((wf_event *)ev); /* the event's schema (schema.c) */
    if (rc < 0)
        return rc;
    if (target == NULL)
        return 0;
    wf__step *s = wf__workflow_find_step(wf, target);
    if (s == NULL)
        return wf__set_error(WF_ENOTFOUND, "workflow '%s' has no step '%s'", wf->name, target);
    if (s->join_list)
        return wf__set_error(WF_ETYPE,
                             "step '%s' joins a list fan-out: it takes events through "
                             "wf_ctx_emit_list, not a targeted send",
                             target);
    if (!wf__step_accepts(s, ev->type))
        return wf__set_error(WF_ETYPE, "step '%s' does not accept '%s'", target, ev->type->name);
    *idx = (int32_t)s->index;
    return 0;
}

/* Sends ev into run from outside any of its invocations. Takes ev. */
int wf__send_outside(wf__run *run, wf_event *ev, const char *target)
{
    if (ev->type->reg != run->wf->reg) {
        int rc = wf__set_error(WF_EINVAL,
                               "event type '%s' belongs to another registry than "
                               "workflow '%s'",
                               ev->type->name, run->wf->name);
        wf_event_release(ev);
        return rc;
    }
    int32_t idx;
    int rc = wf__resolve_target(run->wf, ev, target, &idx);
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    if (wf__run_ended(run) || !wf__engine_try_ref(run)) {
        wf_event_release(ev);
        return wf__set_error(WF_ESTATE, "run %llu has ended: the event was dropped",
                             (unsigned long long)run->id);
    }
    int o = wf__outside_enter(run);
    wf__hook_emit_outside(run, ev);
    wf__emit(run, ev, idx);
    wf__outside_exit(run, o);
    wf__engine_unref(run);
    return 0;
}

int wf_handler_send_event(wf_handler *h, wf_event *ev, const char *target)
{
    if (h == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    if (((wf__run *)h)->dur) /* journaled first (durable.c) */
        return wf__durable_send((wf__run *)h, ev, target);
    return wf__send_outside((wf__run *)h, ev, target);
}

int wf_handler_on_done(wf_handler *h, wf_done_fn fn, void *user)
{
    wf__run *run = (wf__run *)h;
    if (run == NULL || fn == NULL)
        return wf__set_error(WF_EINVAL, "wf_handler_on_done: %s is NULL", run ? "fn" : "h");
    wf__lock_take(&run->mu);
    if (run->on_done) {
        wf__lock_give(&run->mu);
        return wf__set_error(WF_EBUSY, "wf_handler_on_done: run %llu has an end callback",
                             (unsigned long long)run->id);
    }
    /* the end publishes its status and reads on_done under mu (wf__end_publish) */
    int ended = atomic_load_explicit(&run->status, memory_order_acquire) != WF_RUN_RUNNING;
    if (!ended) {
        run->on_done = fn;
        run->on_done_user = user;
    }
    wf__lock_give(&run->mu);
    if (ended)
        fn(h, user);
    return 0;
}

int wf_handler_cancel(wf_handler *h)
{
    wf__run *run = (wf__run *)h;
    if (run == NULL)
        return WF_EINVAL;
    if (wf__run_ended(run))
        return WF_ESTATE;
    pthread_mutex_lock(&run->ex->runs_lock);
    int waiting = run->waiting;
    pthread_mutex_unlock(&run->ex->runs_lock);
    if (waiting) { /* it never started (num_concurrent_runs): nothing to cut */
        int o = wf__outside_enter(run);
        int ended = wf__end_run(run, WF_RUN_CANCELLED, NULL, WF_ECANCELLED, NULL, NULL);
        wf__outside_exit(run, o);
        if (ended && run->never_started && run->cold->held_resume) {
            /* the run it was to resume goes back into its context, to resume later */
            wf__ctx_park(run->ctx, run->cold->held_resume, run->cold->held_resume_len);
            run->cold->held_resume = NULL;
        }
        return ended ? 0 : WF_ESTATE;
    }
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
    int ended = wf__end_run(run, WF_RUN_CANCELLED, NULL, WF_ECANCELLED, NULL, NULL);
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
    wf__lock_take(&run->mu);
    if (run->reader_busy) {
        wf__lock_give(&run->mu);
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
        handler_sleep(run, deadline);
    }
    run->reader_busy = 0;
    wf__lock_give(&run->mu);
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
        wf__run_release((wf__run *)h);
}

/* ------------------------------------------------ internal notifications */

/*
 * Who runs the calling thread's work, as the reference's worker_id: "worker
 * N", "blocking N", or "outside" (a thread outside the pool, also one that
 * runs a first step: wf_run_params.run_here). A shared string value.
 */
static wf_value worker_id(const wf__run *run)
{
    const struct wf_executor *ex = run->ex;
    const wf__slot *s = wf__tls_slot;
    uint32_t last = ex->nworkers + ex->blk_max + WF_RUN_HERE_THREADS;
    uint32_t i = s && s->ex == ex && s->index < last ? s->index : last;
    return wf_value_retain(ex->worker_ids[i]);
}

/*
 * A StepStateChanged notification: its fields declared on the built-in type
 * (event.c) and filled with shared string values (the step's and the
 * types' names, the state, the worker): one allocation, no copies.
 */
__attribute__((cold)) void wf__internal_step_state(wf__run *run, uint32_t step, const char *state,
                                                   const wf_event_type *in,
                                                   const wf_event_type *out)
{
    if (state[0] == 'r') /* running: the end of an idle period */
        atomic_store_explicit(&run->idle_sent, 0, memory_order_relaxed);
    int which = state[0] == 'p' ? 0 : state[0] == 'r' ? 1 : 2;
    wf_value v[5] = {wf_value_retain(run->wf->steps[step]->name_v),
                     wf_value_retain(run->reg->step_states[which]), worker_id(run),
                     wf_value_retain(in->name_v),
                     out ? wf_value_retain(out->name_v) : wf_value_nil()};
    wf_event *ev;
    if (wf_event_new_fields(&ev, run->reg->types[WF_STEP_STATE_CHANGED], v, 5) < 0) {
        atomic_fetch_add(&run->dropped, 1); /* a notification: counted as dropped */
        return;
    }
    (void)wf__stream_push(run, ev);
}

/* Nothing runs or waits to run, and a step waits for an event. */
int wf__run_idle(wf__run *run)
{
    if (wf__run_ended(run) || atomic_load(&run->nwaiting) == 0)
        return 0;
    for (uint32_t i = 0; i < run->nsteps; i++)
        if (wf__step_count(run, i) != 0)
            return 0;
    wf__lock_take(&run->mu);
    int retrying = run->retries != NULL;
    wf__lock_give(&run->mu);
    wf__lock_take(&run->collect_lock);
    int pending = run->pending != NULL;
    wf__lock_give(&run->collect_lock);
    return !retrying && !pending;
}

__attribute__((cold)) void wf__internal_idle_check(wf__run *run)
{
    if (!wf__run_idle(run) || atomic_exchange(&run->idle_sent, 1))
        return;
    wf_event *ev;
    if (wf_event_new(&ev, run->reg->types[WF_WORKFLOW_IDLE_EVENT], 0) == 0)
        (void)wf__stream_push(run, ev);
    else
        atomic_fetch_add(&run->dropped, 1);
}
