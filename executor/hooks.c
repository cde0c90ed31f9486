/*
 * hooks.c: the run engine's observation hooks (the executor's side of the
 * observers is observe.c). Every hook is behind a test of the executor's
 * observer mask (wf__obs_on, wf__obs_mask) at its call site, so a run that
 * nobody observes pays one load per hook site. The usual invocation's
 * records go the inline way (wf__obs_begin_fast / wf__obs_end_fast: its
 * start held, its end merged with the first routing of the event it
 * returned); the others are written one record each.
 *
 * Shared state: wf__tls_obs_now (this thread's, no lock), and
 * wf__obs_held (observe.c's per-thread held record).
 */
#include "engine.h"

#include <wf/observe.h>

#include <string.h>

WF__TLS int64_t wf__tls_obs_now;

char *wf__hook_strdup(const char *s)
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
__attribute__((noinline)) static void hook_before_slow(wf__run *run, const wf__task *t,
                                                       wf__inv *inv, uint32_t obs)
{
    int64_t t0 = wf__obs_now();
    inv->obs_t0 = t0;
    if (!(obs & WF_OBS_BIT(WF_OBS_STEP_START)))
        return;
    wf__obs_rec r = {0};
    wf__hook_rec(run, WF_OBS_STEP_START, t->step, t->ev->type, t0, &r);
    r.attempt = t->attempt;
    r.event_id = wf__hook_task_id(t);
    wf__obs_write(run->ex, &r);
}

/*
 * An observed invocation of t starts: inv->obs_t0 is its start time (1:
 * the thread's ring is full, its records are dropped and no clock is
 * read). Its STEP_START is held back when its end is wanted too.
 */
__attribute__((noinline)) void wf__hook_before(wf__run *run, const wf__task *t, wf__inv *inv,
                                               uint32_t obs)
{
    uint32_t both = WF_OBS_BIT(WF_OBS_STEP_START) | WF_OBS_BIT(WF_OBS_STEP_END);
    if (WF__LIKELY((obs & both) == both)) {
        inv->obs_t0 =
            wf__obs_step_begin(run->ex, run->wf, run->id, t->step, wf__hook_type(run, t->ev->type),
                               t->attempt, wf__hook_task_id(t));
        return;
    }
    hook_before_slow(run, t, inv, obs);
}

/* The EMIT of the event an invocation of t returned, on its own record. */
__attribute__((noinline)) static void hook_emit_alone(wf__run *run, const wf__task *t,
                                                      const wf_event *out, int64_t now)
{
    wf__obs_rec r = {0};
    wf__hook_rec(run, WF_OBS_EVENT_EMIT, t->step, out->type, now, &r);
    wf__obs_write(run->ex, &r);
}

/*
 * An invocation of t returned rc (and out), the general way: its STEP_END
 * and the returned event's EVENT_EMIT (usually obs_after_fast).
 */
__attribute__((noinline)) void wf__hook_after(wf__run *run, const wf__task *t, const wf__inv *inv,
                                              int rc, const wf_event *out, uint32_t obs)
{
    int emits = (obs & WF_OBS_BIT(WF_OBS_EVENT_EMIT)) && rc == 0 && out;
    uint32_t out_type = emits ? wf__hook_type(run, out->type) : WF__OBS_NO_TYPE;
    int64_t now = wf__obs_now();
    wf__tls_obs_now = now; /* the routing's records take it */
    if (obs & WF_OBS_BIT(WF_OBS_STEP_END)) {
        wf__obs_rec r = {0};
        wf__hook_rec(run, WF_OBS_STEP_END, t->step, t->ev->type, now, &r);
        r.error = rc;
        r.attempt = t->attempt;
        r.event_id = wf__hook_task_id(t);
        r.dv = now - inv->obs_t0;
        r.message = rc < 0 ? wf__hook_strdup(inv->errmsg ? inv->errmsg : wf_strerror(rc)) : NULL;
        wf__obs_end(run->ex, &r, out_type);
        if (out_type != WF__OBS_NO_TYPE) {
            wf__obs_held.out_ev = out; /* its emit is held back for its first routing */
            return;
        }
    }
    if (emits) /* on its own: no STEP_END wanted, or a type of another registry */
        hook_emit_alone(run, t, out, now);
}

/* obs_before's usual case (wf__obs_begin_fast): 1 if done. */
__attribute__((noinline)) int wf__hook_before_fast(wf__run *run, const wf__task *t, wf__inv *inv,
                                                   uint32_t obs)
{
    uint32_t both = WF_OBS_BIT(WF_OBS_STEP_START) | WF_OBS_BIT(WF_OBS_STEP_END);
    if ((obs & both) != both)
        return 0;
    inv->obs_t0 =
        wf__obs_begin_fast(run->ex, run->wf, run->id, t->step, wf__hook_type(run, t->ev->type),
                           t->attempt, wf__hook_task_id(t));
    return inv->obs_t0 != 0;
}

/* obs_after's usual case (wf__obs_end_fast): 1 if done. */
__attribute__((noinline)) int wf__hook_after_fast(wf__run *run, const wf__task *t,
                                                  const wf__inv *inv, int rc, const wf_event *out,
                                                  uint32_t obs)
{
    if (rc != 0 || !(obs & WF_OBS_BIT(WF_OBS_STEP_END)))
        return 0;
    int emits = out && (obs & WF_OBS_BIT(WF_OBS_EVENT_EMIT));
    uint32_t ret_type =
        out && (obs & (WF_OBS_BIT(WF_OBS_EVENT_EMIT) | WF_OBS_BIT(WF_OBS_EVENT_ROUTE)))
            ? wf__hook_type(run, out->type)
            : WF__OBS_NO_TYPE;
    if (emits && ret_type == WF__OBS_NO_TYPE) /* another registry's type: its emit on its own */
        return 0;
    int64_t now;
    if (!wf__obs_end_fast(run->ex, run->id, wf__hook_task_id(t), inv->obs_t0, ret_type, emits,
                          &now))
        return 0;
    if (ret_type != WF__OBS_NO_TYPE) {
        wf__obs_held.out_ev = out; /* its first routing goes with the STEP record */
        wf__tls_obs_now = now;     /* the routing's records take it */
    }
    return 1;
}

/* EVENT_EMIT from outside the run's steps (start event, handler send). */
void wf__hook_emit_outside(wf__run *run, const wf_event *ev)
{
    if (wf__obs_on(run->ex, WF_OBS_EVENT_EMIT)) {
        wf__obs_rec r = {0};
        wf__hook_rec(run, WF_OBS_EVENT_EMIT, WF__OBS_NO_STEP, ev->type, 0, &r);
        wf__obs_write(run->ex, &r);
    }
}

/* EVENT_ROUTE of t to its step; waiting: the step's events queued behind it. */
__attribute__((noinline)) void wf__hook_route_rec(wf__run *run, const wf__task *t, uint32_t waiting)
{
    if (wf__obs_route_held(run->ex, run->id, t->ev, t->step, wf__hook_task_id(t), waiting))
        return;
    wf__obs_rec r = {0};
    wf__hook_rec(run, WF_OBS_EVENT_ROUTE, t->step, t->ev->type, wf__tls_obs_now, &r);
    r.event_id = wf__hook_task_id(t);
    r.dv = waiting;
    wf__obs_write(run->ex, &r);
}

/* A record about one event: DROP, UNHANDLED, STREAM_WRITE. */
__attribute__((cold, noinline)) void wf__hook_event(wf__run *run, unsigned kind, uint32_t step,
                                                    const wf_event_type *type, int64_t value)
{
    wf__obs_rec r = {0};
    wf__hook_rec(run, kind, step, type, 0, &r);
    r.dv = value;
    wf__obs_write(run->ex, &r);
}
