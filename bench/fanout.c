/*
 * fanout.c: one step sends n events to a worker step (num_workers = the
 * executor's threads); each worker invocation does a little arithmetic and
 * emits a Done event; a collector (num_workers 1) sums them and stops at n.
 * Verified: the sum equals the closed form. ns_per_event is per fanned-out item.
 * Usage: fanout [--n N] [--threads T] [--warmup W]
 *
 * Built a second time with BENCH_PARALLEL as bench_parallel: the same shape
 * with ~1 us of real computation per item (bench_par_work, --iters), the
 * workload where a second thread must help. It also reports work_ns, the
 * measured serial cost of one item's computation.
 */
#include <wf/wf.h>

#include "common.h"
#include "work.h"

#ifdef BENCH_PARALLEL
#define BENCH_NAME "parallel"
#else
#define BENCH_NAME "fanout"
#endif

static const wf_event_type *T_ITEM, *T_DONE;
static long n_items;
static long iters; /* parallel only */

typedef struct {
    long count;
    uint64_t sum;
} collector;

static uint64_t work(uint64_t i)
{
#ifdef BENCH_PARALLEL
    return bench_par_work(i, iters);
#else
    return bench_fan_work(i);
#endif
}

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

static int worker(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int64_t i = 0;
    wf_value_get_int(wf_event_get(in, "i", wf_value_int(0)), &i);
    return wf_event_new1(out, T_DONE, "v", wf_value_uint(work((uint64_t)i)));
}

static int collect(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    collector *c = user; /* num_workers 1: invocations never overlap */
    uint64_t v = 0;
    wf_value_get_uint(wf_event_get(in, "v", wf_value_uint(0)), &v);
    c->sum += v;
    if (++c->count == n_items)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_uint(c->sum));
    return 0;
}

int main(int argc, char **argv)
{
    n_items = bench_arg(argc, argv, "--n", 1000000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    iters = bench_arg(argc, argv, "--iters", BENCH_PAR_ITERS);
    wf_workflow *wf;
    if (wf_workflow_new(&wf, BENCH_NAME, NULL) < 0)
        return 1;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Item", NULL, &T_ITEM);
    wf_workflow_event_type(wf, "Done", NULL, &T_DONE);
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = 1;
    p.n_emits = 1;
    p.accepts = &start;
    p.emits = &T_ITEM;
    wf_workflow_add_step(wf, "fan", fan, &p, NULL);
    p.accepts = &T_ITEM;
    p.emits = &T_DONE;
    p.num_workers = (uint32_t)threads;
    wf_workflow_add_step(wf, "worker", worker, &p, NULL);
    collector c = {0, 0};
    p.accepts = &T_DONE;
    p.emits = &stop;
    p.num_workers = 1;
    wf_workflow_add_step(wf, "collect", collect, &p, &c);
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    wf_executor *ex;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    uint64_t expect = 0;
    double w0 = bench_now();
    for (long i = 0; i < n_items; i++)
        expect += work((uint64_t)i);
    double work_ns = (bench_now() - w0) * 1e9 / (double)(n_items ? n_items : 1);
    /* Round 0 warms the allocator (first touch of fresh pages is slow here). */
    long warmup = bench_arg(argc, argv, "--warmup", 1);
    double dt = 0;
    int ok = 1;
    for (long round = 0; round <= warmup; round++) {
        c.count = 0;
        c.sum = 0;
        wf_event *s;
        wf_event_new(&s, start, 0);
        double t0 = bench_now();
        wf_event *res = NULL;
        int rc = wf_run(ex, wf, NULL, s, -1, &res);
        dt = bench_now() - t0;
        uint64_t got = 0;
        if (rc == 0)
            wf_value_get_uint(wf_event_result(res), &got);
        wf_event_release(res);
        ok = ok && rc == 0 && got == expect;
    }
    char extra[64] = "";
#ifdef BENCH_PARALLEL
    snprintf(extra, sizeof extra, ",\"iters\":%ld,\"work_ns\":%.1f", iters, work_ns);
#else
    (void)work_ns;
#endif
    bench_report(BENCH_NAME, "wf", threads, n_items, dt, n_items, ok, extra);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return ok ? 0 : 1;
}
