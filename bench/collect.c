/*
 * collect.c: fan-out then collect_events fan-in. One step sends n Item events;
 * a worker step (num_workers = threads) turns each into a Result; a collector
 * waits with wf_ctx_collect_events for n Results (one expected-types array of
 * length n, as the reference's collect_events([Result] * n)) and stops with
 * their sum. Verified against the closed form. Linear in n (the Python
 * reference recounts its buffer per event: quadratic).
 * Usage: collect [--n N] [--threads T]
 */
#include <stdlib.h>

#include <wf/wf.h>

#include "common.h"

static const wf_event_type *T_ITEM, *T_RESULT;
static const wf_event_type **expected; /* n times Result */
static wf_event **got;
static long n_items;

static int fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    for (long i = 0; i < n_items; i++) {
        wf_event *e;
        int rc = wf_event_new1(&e, T_ITEM, "i", wf_value_int(i));
        if (rc < 0 || (rc = wf_ctx_send_event(ctx, e, NULL)) < 0)
            return rc;
    }
    return 0;
}

static int work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int64_t i = 0;
    wf_value_get_int(wf_event_get(in, "i", wf_value_int(0)), &i);
    return wf_event_new1(out, T_RESULT, "v", wf_value_int(i % 1000));
}

static int collect(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int rc = wf_ctx_collect_events(ctx, in, expected, (size_t)n_items, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    int64_t sum = 0;
    for (long i = 0; i < n_items; i++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(got[i], "v", wf_value_int(0)), &v);
        sum += v;
        wf_event_release(got[i]);
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(sum));
}

int main(int argc, char **argv)
{
    n_items = bench_arg(argc, argv, "--n", 1000000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    wf_workflow *wf;
    if (n_items <= 0 || wf_workflow_new(&wf, "collect", NULL) < 0)
        return 1;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Item", NULL, &T_ITEM);
    wf_workflow_event_type(wf, "Result", NULL, &T_RESULT);
    expected = malloc((size_t)n_items * sizeof *expected);
    got = malloc((size_t)n_items * sizeof *got);
    if (expected == NULL || got == NULL)
        return 1;
    for (long i = 0; i < n_items; i++)
        expected[i] = T_RESULT;
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = 1;
    p.n_emits = 1;
    p.accepts = &start;
    p.emits = &T_ITEM;
    wf_workflow_add_step(wf, "fan", fan, &p, NULL);
    p.accepts = &T_ITEM;
    p.emits = &T_RESULT;
    p.num_workers = (uint32_t)threads;
    wf_workflow_add_step(wf, "work", work, &p, NULL);
    p.accepts = &T_RESULT;
    p.emits = &stop;
    p.num_workers = 1; /* one collector: its events arrive in claimed batches */
    wf_workflow_add_step(wf, "collect", collect, &p, NULL);
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    wf_executor *ex;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    int64_t expect = 0;
    for (long i = 0; i < n_items; i++)
        expect += i % 1000;
    double dt = 0;
    int ok = 1;
    for (int round = 0; round < 2; round++) { /* round 0 warms the allocator */
        wf_event *s;
        wf_event_new(&s, start, 0);
        double t0 = bench_now();
        wf_event *res = NULL;
        int rc = wf_run(ex, wf, NULL, s, -1, &res);
        dt = bench_now() - t0;
        int64_t v = -1;
        if (rc == 0)
            wf_value_get_int(wf_event_result(res), &v);
        wf_event_release(res);
        ok = ok && rc == 0 && v == expect;
    }
    bench_report("collect", "wf", threads, n_items, dt, n_items, ok, "");
    wf_executor_free(ex);
    wf_workflow_free(wf);
    free(expected);
    free(got);
    return ok ? 0 : 1;
}
