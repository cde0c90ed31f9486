/*
 * retries.c: a failed invocation's next attempt. The step's policy
 * (lib/retry.c) decides; a retry is a new task for the same input event
 * (attempt + 1, its first-attempt time and last error in a wf__retry_info)
 * re-delivered by a timer, so no worker waits out the delay.
 *
 * Shared fields: run->retries (the armed retries, a list) under run->mu; an
 * armed retry holds one engine unit, given back when it fires or is
 * cancelled at the run's end. Once its timer is armed the new task belongs
 * to the timer: it may run, and the run end, at once.
 */
#include "engine.h"

#include <wf/observe.h>

#include <stdio.h>
#include <string.h>

/* ----------------------------------------------------------------- retries */

void wf__retry_fire(wf__timer *tm, void *arg)
{
    (void)tm;
    wf__retry_timer *rt = arg;
    wf__run *run = rt->run;
    int o = wf__outside_enter(run);
    wf__lock_take(&run->mu);
    WF__DLIST_UNLINK(run->retries, rt);
    wf__lock_give(&run->mu);
    wf__task *t = rt->t;
    wf__free_mem(rt);
    uint32_t s = t->step;
    if (wf__run_ended(run))
        wf__drop_task(t);
    else if (wf__deliver_task(run, t) < 0) /* t is gone */
        wf__fail_nomem(run, s, "re-queuing a retry");
    wf__outside_exit(run, o);
    wf__engine_unref(run); /* the retry's unit */
}

/* Disarms the run's pending retries (the run ended). */
void wf__retries_cancel(wf__run *run)
{
    wf__retry_timer *done = NULL;
    wf__lock_take(&run->mu);
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
    wf__lock_give(&run->mu);
    while (done) {
        wf__retry_timer *nx = done->next;
        wf__drop_task(done->t);
        wf__free_mem(done);
        wf__engine_unref(run); /* never the last: the caller holds the running unit */
        done = nx;
    }
}

wf__retry_info *wf__retry_info_for(const wf__retry_info *old)
{
    wf__retry_info *ri = wf__calloc(1, sizeof *ri);
    if (ri == NULL || old == NULL)
        return ri;
    ri->inv = old->inv;
    ri->first_ns = old->first_ns;
    ri->last_error = old->last_error;
    if (old->last_msg && (ri->last_msg = wf__strdup(old->last_msg)) == NULL)
        goto fail;
    if (old->joined) {
        ri->tuple = wf__malloc((old->ntuple ? old->ntuple : 1) * sizeof *ri->tuple);
        if (ri->tuple == NULL)
            goto fail;
        for (uint32_t i = 0; i < old->ntuple; i++)
            ri->tuple[i] = wf_event_retain(old->tuple[i]);
        ri->ntuple = old->ntuple;
        ri->joined = 1;
    }
    return ri;
fail:
    wf__free_mem(ri->last_msg);
    wf__free_mem(ri);
    return NULL;
}

/* The retry cannot be scheduled: the run fails with WF_ENOMEM naming the step (never a hang). */
static int retry_nomem(wf__run *run, const wf__task *t)
{
    wf__fail_nomem(run, t->step, "scheduling a retry");
    return 1;
}

/*
 * Asks the step's policy about a failure of t; when it says retry, arms a
 * timer that re-delivers the same event (attempt + 1) and returns 1. When
 * the retry cannot be scheduled (out of memory) the run fails with
 * WF_ENOMEM and it returns 1 too: the failure is dealt with either way.
 */
int wf__maybe_retry(wf__run *run, wf__task *t, int rc, const char *msg, int64_t started)
{
    const wf__step *step = run->wf->steps[t->step];
    if (step->retry == NULL || wf__run_ended(run))
        return 0;
    wf__retry_info *old = t->arg;
    int64_t first = (old && old->first_ns) ? old->first_ns : started;
    wf_retry_state st;
    st.attempt = t->attempt;
    st.error = rc;
    st.elapsed_ms = (wf__now_ns() - first) / 1000000;
    st.seed = (run->id * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)t->step << 32) ^ t->attempt;
    st.message = msg;
    int64_t delay = 0;
    if (wf_retry_policy_next(step->retry, &st, &delay) <= 0)
        return 0;
    wf__task *n = wf__task_alloc();
    /* a join step retries with the same set; the invocation keeps its number */
    wf__retry_info *ri = wf__retry_info_for(old);
    wf__retry_timer *rt = wf__calloc(1, sizeof *rt);
    char *last = msg ? wf__strdup(msg) : NULL;
    if (n == NULL || ri == NULL || rt == NULL || (msg && last == NULL)) {
        wf__task_free(n);
        wf__retry_info_free(ri);
        wf__free_mem(rt);
        wf__free_mem(last);
        return retry_nomem(run, t);
    }
    ri->first_ns = first;
    ri->last_error = rc;
    wf__free_mem(ri->last_msg);
    ri->last_msg = last;
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
        wf__branch_add(n->u.group, n->pad);
    /* before the timer is armed: the next attempt may run (and the run end) at once */
    if (wf__obs_on(run->ex, WF_OBS_RETRY)) {
        wf__obs_rec r = {0};
        wf__hook_rec(run, WF_OBS_RETRY, t->step, t->ev->type, 0, &r);
        r.attempt = t->attempt;
        r.error = rc;
        r.message = wf__hook_strdup(msg ? msg : wf_strerror(rc));
        r.dv = delay;
        wf__obs_write(run->ex, &r);
    }
    rt->run = run;
    rt->t = n;
    rt->tm.heap_index = WF__TIMER_IDLE;
    rt->tm.fn = wf__retry_fire;
    rt->tm.arg = rt;
    wf__engine_ref(run); /* held by the armed retry; the failing slot still holds one */
    /*
     * Said before the timer is armed: from then on n belongs to the timer
     * and may run, end and be recycled at once (the run stays: the failing
     * slot still holds its unit).
     */
    wf__log(run->ex, WF_LOG_DEBUG, "run %llu: step %s failed (%d), attempt %u in %lld ms",
            (unsigned long long)run->id, step->name, rc, t->attempt + 1, (long long)delay);
    wf__lock_take(&run->mu);
    wf__run_had(run, WF__HAD_RETRIES);
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
    wf__lock_give(&run->mu);
    if (!armed) {
        wf__drop_task(n);
        wf__free_mem(rt);
        wf__engine_unref(run);
        return retry_nomem(run, t);
    }
    return 1;
}
