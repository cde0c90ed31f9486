/*
 * durable_chain.c: the chain workload (chain.c) as durable runs: R runs,
 * each passing an event around five steps until it has run n / R step
 * invocations, on an executor with a SQLite store attached (group commit
 * every 10 ms, synchronous=FULL; checkpoints every --checkpoint-ms), against
 * the same runs without a store, interleaved: plain, durable, plain, ...
 * (--reps pairs after a warm-up pair). Prints one row per side (medians of
 * the pairs) and the median ratio of durable to plain time.
 * A step completion of a durable run is durable once a checkpoint taken
 * after it has committed (docs/DURABILITY.md).
 * --stream K: every K-th step also writes an event to the run's stream (on
 * both sides; a durable run journals it as a numbered stream record, the
 * plain run only puts it in its handler's ring): the cost of the durable
 * stream is the ratio with --stream 1 over the ratio with --stream 0.
 * Usage: durable_chain [--n N] [--runs R] [--threads T] [--reps K]
 *                      [--checkpoint-ms MS] [--stream K] [--dir DIR]
 */
#include <wf/wf.h>

#include "common.h"
#include <stdlib.h>
#include <unistd.h>

static const wf_event_type *ring_types[5];
static long per_run;
static long stream_every;
static const wf_event_type *tick_type;

static int ring_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int i = (int)(intptr_t)user;
    int64_t n = 0;
    wf_value_get_int(wf_event_get(in, "n", wf_value_int(0)), &n);
    n++;
    if (stream_every && n % stream_every == 0) {
        wf_event *t;
        int rc = wf_event_new1(&t, tick_type, "n", wf_value_int(n));
        if (rc == 0)
            rc = wf_ctx_write_event_to_stream(ctx, t);
        if (rc < 0)
            return rc;
    }
    if (n >= per_run)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(n));
    return wf_event_new1(out, ring_types[(i + 1) % 5], "n", wf_value_int(n));
}

static int start_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    return wf_event_new1(out, ring_types[0], "n", wf_value_int(0));
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One round: R runs at once; seconds, or -1 on a failure. */
static double round_once(wf_executor *ex, wf_workflow *wf, long runs, int durable, long round)
{
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    wf_handler **hs = calloc((size_t)runs, sizeof *hs);
    double t0 = bench_now();
    for (long r = 0; r < runs; r++) {
        wf_event *s;
        wf_event_new(&s, start, 0);
        int rc;
        if (durable) {
            char id[64];
            snprintf(id, sizeof id, "chain-%ld-%ld", round, r);
            rc = wf_run_start_durable(ex, wf, NULL, id, s, NULL, &hs[r], NULL);
        } else {
            rc = wf_run_start(ex, wf, NULL, s, &hs[r]);
        }
        if (rc < 0)
            return -1;
    }
    int ok = 1;
    for (long r = 0; r < runs; r++) {
        wf_event *res = NULL;
        int64_t got = -1;
        if (wf_handler_wait(hs[r], -1, &res) == 0)
            wf_value_get_int(wf_event_result(res), &got);
        ok = ok && got == per_run;
        wf_event_release(res);
        wf_handler_free(hs[r]);
    }
    double dt = bench_now() - t0;
    free(hs);
    return ok ? dt : -1;
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, "--n", 1000000);
    long runs = bench_arg(argc, argv, "--runs", 16);
    long threads = bench_arg(argc, argv, "--threads", 2);
    long reps = bench_arg(argc, argv, "--reps", 3);
    long ck = bench_arg(argc, argv, "--checkpoint-ms", 10);
    stream_every = bench_arg(argc, argv, "--stream", 0);
    const char *dir = bench_arg_str(argc, argv, "--dir", "/tmp");
    per_run = n / runs;
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "chain", NULL) < 0)
        return 1;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "Ring%d", i);
        wf_workflow_event_type(wf, name, NULL, &ring_types[i]);
    }
    wf_workflow_event_type(wf, "Tick", NULL, &tick_type);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &start;
    p.n_accepts = 1;
    p.emits = &ring_types[0];
    p.n_emits = 1;
    wf_workflow_add_step(wf, "start", start_step, &p, NULL);
    for (int i = 0; i < 5; i++) {
        const wf_event_type *em[2] = {ring_types[(i + 1) % 5], stop};
        p.accepts = &ring_types[i];
        p.emits = em;
        p.n_emits = 2;
        char name[16];
        snprintf(name, sizeof name, "step%d", i);
        if (wf_workflow_add_step(wf, name, ring_step, &p, (void *)(intptr_t)i) < 0)
            return 1;
    }
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);

    char db[512];
    snprintf(db, sizeof db, "%s/wf-durable-chain-%d.db", dir, (int)getpid());
    wf_store_params sp;
    wf_store_params_init(&sp); /* INTERVAL, 10 ms, synchronous=FULL */
    wf_store *store;
    char *msg = NULL;
    if (wf_store_open_sqlite(&store, db, &sp, &msg) < 0) {
        fprintf(stderr, "durable_chain: %s\n", msg ? msg : "cannot open the store");
        return 1;
    }
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    wf_executor *plain, *dur;
    if (wf_executor_new(&plain, &ep) < 0 || wf_executor_new(&dur, &ep) < 0)
        return 1;
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.checkpoint_ms = (uint32_t)ck;
    if (wf_executor_attach_store(dur, store, &dp) < 0)
        return 1;

    double *tp = calloc((size_t)reps, sizeof *tp), *td = calloc((size_t)reps, sizeof *td);
    double *ratio = calloc((size_t)reps, sizeof *ratio);
    int ok = 1;
    for (long k = -1; k < reps; k++) { /* k = -1: the warm-up pair */
        double a = round_once(plain, wf, runs, 0, k + 1);
        double b = round_once(dur, wf, runs, 1, k + 1);
        ok = ok && a > 0 && b > 0;
        if (k >= 0) {
            tp[k] = a;
            td[k] = b;
            ratio[k] = b / a;
        }
    }
    qsort(tp, (size_t)reps, sizeof *tp, cmp);
    qsort(td, (size_t)reps, sizeof *td, cmp);
    qsort(ratio, (size_t)reps, sizeof *ratio, cmp);
    long steps = per_run * runs;
    char extra[200];
    snprintf(extra, sizeof extra, ",\"runs\":%ld,\"store\":false,\"stream_every\":%ld", runs,
             stream_every);
    bench_report("durable_chain", "wf", threads, steps, tp[reps / 2], steps, ok, extra);
    snprintf(extra, sizeof extra,
             ",\"runs\":%ld,\"store\":true,\"commit_ms\":10,\"checkpoint_ms\":%ld,"
             "\"ratio_to_plain\":%.3f,\"stream_every\":%ld",
             runs, ck, ratio[reps / 2], stream_every);
    bench_report("durable_chain", "wf-durable", threads, steps, td[reps / 2], steps, ok, extra);
    wf_executor_free(dur);
    wf_executor_free(plain);
    wf_store_free(store);
    wf_workflow_free(wf);
    char side[600];
    unlink(db);
    snprintf(side, sizeof side, "%s-wal", db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db);
    unlink(side);
    free(tp);
    free(td);
    free(ratio);
    return ok ? 0 : 1;
}
