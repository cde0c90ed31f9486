/*
 * fence.c: a run's fence (wf_run_params.fence_ns, wf_handler_fence). A
 * process that runs a run under a lease held elsewhere (the cluster's
 * worker: docs/CLUSTER.md) gives each run the time its lease is sure to
 * hold until, and renews it as it writes the lease again. Before a step
 * starts, and before a returned step's emissions are routed, the engine
 * compares the clock with the fence: past it, the step does not start (or
 * what it returned is dropped) and the run ends cancelled with WF_ELEASE.
 * So a process that stalled (SIGSTOP, a long pause, a cut network) past its
 * lease runs no step of a run that another process may have taken over
 * meanwhile, even before it learns that its lease was lost; a step that was
 * in progress sees wf_ctx_is_cancelled turn true.
 *
 * Runs without a fence pay nothing: the check is a bit of the byte every
 * invocation reads anyway (WF__RUN_FENCED in run->internal); the clock is
 * read only for fenced runs.
 */
#include "engine.h"

#include <wf/run.h>

#include <stdio.h>

int64_t wf_clock_ns(void)
{
    return wf__now_ns();
}

int wf__fence_passed(wf__run *run, const char *step, const char *what)
{
    int64_t fence = atomic_load_explicit(&run->fence_ns, memory_order_relaxed);
    int64_t now = wf__now_ns();
    if (fence == 0 || now < fence)
        return 0;
    char msg[200];
    snprintf(msg, sizeof msg, "the run's fence passed %lld ms ago (its lease may be another's): %s",
             (long long)((now - fence) / 1000000), what);
    wf__end_run(run, WF_RUN_CANCELLED, NULL, WF_ELEASE, step, msg);
    return 1;
}

int wf__fence_due(const wf__run *run)
{
    int64_t fence = atomic_load_explicit(&((wf__run *)run)->fence_ns, memory_order_relaxed);
    return fence != 0 && wf__now_ns() >= fence;
}

int wf_handler_fence(wf_handler *h, int64_t deadline_ns)
{
    wf__run *run = (wf__run *)h;
    if (run == NULL || deadline_ns < 0)
        return wf__set_error(WF_EINVAL, "wf_handler_fence: %s",
                             run == NULL ? "NULL handler" : "a negative deadline");
    if (wf__run_ended(run))
        return WF_ESTATE;
    atomic_store_explicit(&run->fence_ns, deadline_ns, memory_order_relaxed);
    if (deadline_ns && !(wf__run_slow(run) & WF__RUN_FENCED))
        atomic_fetch_or_explicit(&run->internal, (uint8_t)WF__RUN_FENCED, memory_order_relaxed);
    return 0;
}
