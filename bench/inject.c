/*
 * inject.c: runs submitted from outside the pool, as `wf serve` does: P
 * client threads (not workers) each start a one-step run, wait for its
 * result, and start the next, n runs in all. Every start and every result
 * crosses the executor's injection queue, from P threads at once (64, as a
 * server's connection threads). ns_per_event is per run; runs_per_s the
 * throughput. Verified: every run returns its own number.
 * Usage: inject [--n N] [--threads T] [--clients P]
 */
#include <pthread.h>
#include <stdatomic.h>

#include <wf/wf.h>

#include "common.h"

static const wf_event_type *T_START;
static wf_executor *ex;
static wf_workflow *wf;
static atomic_long next_run, ok_runs;
static long total;

static int echo(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_event_get(in, "i", wf_value_int(-1)));
}

static void *client(void *arg)
{
    (void)arg;
    for (;;) {
        long i = atomic_fetch_add(&next_run, 1);
        if (i >= total)
            return NULL;
        wf_event *s, *res = NULL;
        if (wf_event_new1(&s, T_START, "i", wf_value_int(i)) < 0)
            return NULL;
        int64_t v = -1;
        if (wf_run(ex, wf, NULL, s, -1, &res) == 0 &&
            wf_value_get_int(wf_event_result(res), &v) == 0 && v == i)
            atomic_fetch_add(&ok_runs, 1);
        wf_event_release(res);
    }
}

static double round_of(long n, long clients)
{
    pthread_t th[1024];
    total = n;
    atomic_store(&next_run, 0);
    atomic_store(&ok_runs, 0);
    double t0 = bench_now();
    for (long c = 0; c < clients; c++)
        pthread_create(&th[c], NULL, client, NULL);
    for (long c = 0; c < clients; c++)
        pthread_join(th[c], NULL);
    return bench_now() - t0;
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, "--n", 200000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    long clients = bench_arg(argc, argv, "--clients", 64);
    if (n <= 0 || clients < 1 || clients > 1024 || wf_workflow_new(&wf, "inject", NULL) < 0)
        return 1;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    if (wf_workflow_add_step(wf, "echo", echo, &p, NULL) < 0)
        return 1;
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    round_of(n / 10 > 0 ? n / 10 : 1, clients); /* warm-up */
    double dt = round_of(n, clients);
    int verified = atomic_load(&ok_runs) == n;
    char extra[96];
    snprintf(extra, sizeof extra, ",\"clients\":%ld,\"runs_per_s\":%.0f", clients, (double)n / dt);
    bench_report("inject", "wf", threads, n, dt, n, verified, extra);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return verified ? 0 : 1;
}
