/*
 * wait.c: wait_for_event. A step that waits registers a waiter (type,
 * requirements, id) holding a copy of its task, and returns WF_SUSPEND; an
 * event that matches resolves the waiter and the task is delivered again
 * (the step runs from the top and this time the wait returns the event). A
 * waiter with a timeout has a timer that resolves it as timed out.
 *
 * Shared fields: run->waiters and each waiter's state, task, got, timer_live
 * and orphan under run->collect_lock; run->nwaiting is an atomic count of
 * the waiters in W_WAITING, so routing looks at the list only when it is
 * nonzero. An armed waiter timer holds one engine unit.
 */
#include "engine.h"

#include <wf/observe.h>

#include <stdio.h>
#include <string.h>

void wf__waiters_free(wf__waiter *w)
{
    while (w) {
        wf__waiter *nx = w->next;
        if (w->task)
            wf__drop_task(w->task);
        wf_event_release(w->got);
        wf_value_release(w->req);
        wf__free_mem(w->id);
        wf__free_mem(w->tm);
        wf__free_mem(w);
        w = nx;
    }
}

int wf__waiter_req_match(const wf_value req, const wf_event *ev)
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
void wf__waiter_fire(wf__timer *tm, void *arg)
{
    (void)tm;
    wf__waiter *w = arg;
    wf__run *run = w->run;
    wf__task *t = NULL;
    int o = wf__outside_enter(run);
    wf__lock_take(&run->collect_lock);
    if (w->state == W_WAITING) {
        w->state = W_TIMED_OUT;
        atomic_fetch_sub(&run->nwaiting, 1);
        t = w->task;
        w->task = NULL;
    }
    w->timer_live = 0;
    int orphan = w->orphan;
    wf__lock_give(&run->collect_lock);
    if (orphan) {
        w->next = NULL;
        wf__waiters_free(w);
    }
    if (t) {
        uint32_t s = t->step;
        if (wf__run_ended(run))
            wf__drop_task(t);
        else if (wf__deliver_task(run, t) < 0)
            wf__fail_nomem(run, s, "resuming a step whose wait timed out");
    }
    wf__outside_exit(run, o);
    wf__engine_unref(run); /* the timer's unit */
}

/* Disarms w's timer if armed (coord lock held); 1 if this removed an armed timer. */
static int waiter_disarm(wf__run *run, wf__waiter *w)
{
    if (!w->timer_live || !wf__timer_cancel(run->ex, w->tm))
        return 0;
    w->timer_live = 0;
    return 1;
}

/*
 * Gives ev to every waiting waiter it satisfies and queues their steps to run
 * again; excluded[] gets those steps (the event is not also routed to them).
 * Returns how many.
 */
uint32_t wf__waiters_match(wf__run *run, const wf_event *ev, uint32_t *excluded, uint32_t cap)
{
    wf__waiter *hit[16];
    uint32_t n = 0;
    wf__lock_take(&run->collect_lock);
    for (wf__waiter *w = run->waiters; w && n < 16 && n < cap; w = w->next) {
        if (w->state != W_WAITING || w->type != ev->type || !wf__waiter_req_match(w->req, ev))
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
    wf__lock_give(&run->collect_lock);
    for (uint32_t i = 0; i < disarmed; i++)
        wf__engine_unref(run); /* never the last: the caller routes inside the run */
    for (uint32_t i = 0; i < n; i++)
        if (wf__deliver_task(run, tasks[i]) < 0)
            wf__fail_nomem(run, excluded[i], "resuming a step whose wait was answered");
    return n;
}

/* Disarms the waiters' timers (the run ended). */
void wf__waiters_cancel(wf__run *run)
{
    uint32_t dropped = 0;
    wf__lock_take(&run->collect_lock);
    for (wf__waiter *w = run->waiters; w; w = w->next)
        dropped += (uint32_t)waiter_disarm(run, w);
    wf__lock_give(&run->collect_lock);
    for (uint32_t i = 0; i < dropped; i++)
        wf__engine_unref(run); /* never the last: the caller holds the running unit */
}

void wf__waiters_drop_taken(wf__run *run, const wf__task *t)
{
    const wf__retry_info *ri = t->arg;
    uint64_t invno = ri ? ri->inv : 0;
    wf__waiter *gone = NULL;
    uint32_t disarmed = 0;
    wf__lock_take(&run->collect_lock);
    for (wf__waiter **pp = &run->waiters, *w; (w = *pp) != NULL;) {
        if (!w->taken || w->step != t->step || w->inv != invno) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        disarmed += (uint32_t)waiter_disarm(run, w);
        /* a callback still running frees w itself when it is done */
        w->orphan = w->timer_live;
        if (!w->orphan) {
            w->next = gone;
            gone = w;
        }
    }
    wf__lock_give(&run->collect_lock);
    for (uint32_t i = 0; i < disarmed; i++)
        wf__engine_unref(run); /* never the last: the caller's invocation holds its step's unit */
    wf__waiters_free(gone);
}

/* The waiter of step with id (collect_lock held), or NULL. */
static wf__waiter *waiter_find(wf__run *run, uint32_t step, const char *id)
{
    wf__waiter *w = run->waiters;
    while (w && (w->step != step || strcmp(w->id, id) != 0))
        w = w->next;
    return w;
}

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
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL) {
        wf_event_release(waiter_event);
        return wf__set_error(WF_ESTATE,
                             "wf_ctx_wait_for_event: not called from a step of this context's run");
    }
    wf__run *run = inv->run;
    uint32_t step = inv->task->step;
    const wf__retry_info *tri = inv->task->arg;
    wf__slot_dirty(run);
    wf__lock_take(&run->collect_lock);
    /*
     * A stable id, so that the step run again finds its waiter: without one
     * given, the type and requirements plus the invocation's number, so
     * that parallel invocations waiting alike each get their own waiter (as
     * the reference since 2.22.1). A waiter saved without a number (an
     * older snapshot) keeps its id.
     */
    char idbuf[512];
    uint64_t invno = 0;
    if (waiter_id == NULL) {
        int n = snprintf(idbuf, sizeof idbuf, "%s:", type->name);
        if (n > 0 && (size_t)n < sizeof idbuf)
            wf_value_format(requirements, idbuf + n, sizeof idbuf - (size_t)n);
        waiter_id = idbuf;
        invno = tri ? tri->inv : 0;
        if (invno == 0 && waiter_find(run, step, idbuf) == NULL)
            invno = atomic_fetch_add_explicit(&run->next_inv, 1, memory_order_relaxed);
        size_t len = strlen(idbuf);
        if (invno && len + 24 < sizeof idbuf)
            snprintf(idbuf + len, sizeof idbuf - len, "#%llu", (unsigned long long)invno);
    }
    wf__waiter **pp = &run->waiters, *w;
    while ((w = *pp) != NULL && (w->step != step || strcmp(w->id, waiter_id) != 0))
        pp = &w->next;
    if (w && w->state != W_WAITING) {
        /*
         * A step that may retry keeps what it took until the invocation
         * ends (wf__waiters_drop_taken): a retry of it is the same
         * invocation and gets the same answer, rather than ask again (as the
         * reference). Other steps let go of it now.
         */
        int keep = inv->step->retry != NULL;
        int rc = w->state == W_RESOLVED ? 0 : WF_ETIMEDOUT;
        *ev = keep ? wf_event_retain(w->got) : w->got;
        if (!keep) {
            *pp = w->next;
            w->got = NULL;
        } else if (w->taken) {
            inv->took_waiter = 1;
            wf__lock_give(&run->collect_lock);
            wf_event_release(waiter_event);
            return rc;
        } else {
            w->taken = 1;
            w->inv = tri ? tri->inv : 0;
            inv->took_waiter = 1;
        }
        if (wf__obs_on(run->ex, WF_OBS_WAIT_RESUME)) {
            wf__obs_rec r = {0};
            wf__hook_rec(run, WF_OBS_WAIT_RESUME, step, w->type, wf__obs_now(), &r);
            r.event_id = (uint64_t)(uintptr_t)w;
            r.error = rc;
            r.dv = w->obs_t0 ? r.ts - w->obs_t0 : 0;
            wf__obs_write(run->ex, &r);
        }
        int disarmed = waiter_disarm(run, w);
        /* let go of: a callback still running frees w itself when it is done */
        int free_now = 0;
        if (!keep) {
            w->orphan = w->timer_live;
            free_now = !w->orphan;
        }
        wf__lock_give(&run->collect_lock);
        if (disarmed)
            wf__engine_unref(run);
        if (free_now) {
            w->next = NULL;
            wf__waiters_free(w);
        }
        wf_event_release(waiter_event);
        return rc;
    }
    if (w) { /* already waiting (the step ran for another event meanwhile) */
        wf__lock_give(&run->collect_lock);
        wf_event_release(waiter_event);
        inv->suspended = 1;
        return WF_SUSPEND;
    }
    w = wf__calloc(1, sizeof *w);
    wf__timer *tm = timeout_ms >= 0 ? wf__calloc(1, sizeof *tm) : NULL;
    wf__task *t = wf__task_alloc();
    /* the step runs again as the same invocation: its set, retry record and number go along */
    wf__retry_info *ri = (tri || invno) ? wf__retry_info_for(tri) : NULL;
    if (w == NULL || t == NULL || ((tri || invno) && ri == NULL) || (timeout_ms >= 0 && !tm) ||
        (w->id = wf__strdup(waiter_id)) == NULL) {
        wf__lock_give(&run->collect_lock);
        wf__free_mem(tm);
        wf__free_mem(w);
        wf__task_free(t);
        wf__retry_info_free(ri);
        wf_event_release(waiter_event);
        return WF_ENOMEM;
    }
    if (invno)
        ri->inv = invno;
    t->kind = WF__TASK_INVOKE;
    t->run = run;
    t->ev = wf_event_retain(inv->task->ev);
    t->step = step;
    t->attempt = inv->task->attempt;
    t->flags = inv->task->flags;
    t->arg = ri;
    t->u.group = inv->task->u.group; /* the waiting step stays in its branch */
    t->pad = inv->task->pad;
    if (t->u.group)
        wf__branch_add(t->u.group, t->pad);
    w->run = run;
    w->step = step;
    w->state = W_WAITING;
    w->type = type;
    w->req = wf_value_retain(requirements);
    w->task = t;
    w->timeout_ms = timeout_ms;
    w->tm = tm;
    if (tm) {
        tm->heap_index = WF__TIMER_IDLE;
        tm->fn = wf__waiter_fire;
        tm->arg = w;
    }
    wf__run_had(run, WF__HAD_WAITERS);
    w->next = run->waiters;
    run->waiters = w;
    wf__task *answered = NULL;
    if (WF__UNLIKELY(run->dur != NULL) &&
        (w->got = wf__durable_take_held(run, type, requirements)) != NULL) {
        /* sent before this wait (a step run again after a recovery): answered now */
        w->state = W_RESOLVED;
        w->task = NULL;
        answered = t;
    } else {
        atomic_fetch_add(&run->nwaiting, 1);
    }
    if (wf__obs_on(run->ex, WF_OBS_WAIT_SUSPEND)) {
        wf__obs_rec r = {0};
        wf__hook_rec(run, WF_OBS_WAIT_SUSPEND, step, type, wf__obs_now(), &r);
        r.event_id = (uint64_t)(uintptr_t)w;
        w->obs_t0 = r.ts;
        wf__obs_write(run->ex, &r);
    }
    int nomem = 0;
    if (timeout_ms >= 0 && answered == NULL) {
        wf__engine_ref(run); /* held by the armed timer */
        if (wf__timer_arm(run->ex, w->tm, wf__now_ns() + timeout_ms * 1000000) < 0) {
            w->timeout_ms = WF_NO_TIMEOUT;
            nomem = 1; /* a wait that can never time out would hang: the run fails below */
        } else {
            w->timer_live = 1;
        }
    }
    wf__lock_give(&run->collect_lock);
    if (nomem) {
        wf__fail_nomem(run, step, "arming the timeout of a wait_for_event");
        wf__engine_unref(run); /* never the last: this invocation holds its step's unit */
        wf_event_release(waiter_event);
        return WF_ENOMEM;
    }
    /* once per waiter id: only when it is created; a request nobody sees would hang */
    if (waiter_event && wf__stream_push(run, waiter_event) < 0) {
        wf__fail_nomem(run, step, "streaming the waiter event of a wait_for_event");
        return WF_ENOMEM;
    }
    if (answered && wf__deliver_task(run, answered) < 0)
        wf__fail_nomem(run, step, "resuming a step whose wait was answered");
    inv->suspended = 1;
    return WF_SUSPEND;
}
