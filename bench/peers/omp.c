/*
 * omp.c: the OpenMP tasks peer (gcc -fopenmp, libgomp). The same workloads
 * as the wf programs with the same per-item work (../work.h), the same checks
 * and the same JSON lines ("impl":"omp"). Everything runs in one parallel
 * region of `threads` threads, started by a single thread.
 *
 *   chain     each step is a task that creates the task of the next step
 *             (five step functions in a cycle) until n steps have run.
 *   fanout    one task creates n tasks (the producer); each computes its item
 *             and adds it into a task reduction (the gather).
 *   parallel  the same with ~1 us of computation per item.
 *   tree      recursive tasks: a node creates one task per child and joins
 *             them with taskwait, then sums their values.
 *
 * libgomp runs a new task at once in the creating thread when more than 64
 * per thread are queued; that throttling is part of what is measured.
 * One warm-up round per process first.
 * Usage: peer_omp --bench chain|fanout|parallel|tree [--n N] [--depth D]
 *                 [--threads T] [--iters I] [--warmup W]
 */
#include <stdint.h>

#include <omp.h>

#include "../common.h"
#include "../work.h"

static long chain_limit, chain_got;

static void ring_step(int i, long n);

static void ring_next(int i, long n)
{
    n++;
    if (n >= chain_limit) {
        chain_got = n;
        return;
    }
#pragma omp task firstprivate(i, n)
    ring_step((i + 1) % 5, n);
}

/* Five steps in a cycle, as in wf's chain: each is its own function. */
static void step0(long n)
{
    ring_next(0, n);
}
static void step1(long n)
{
    ring_next(1, n);
}
static void step2(long n)
{
    ring_next(2, n);
}
static void step3(long n)
{
    ring_next(3, n);
}
static void step4(long n)
{
    ring_next(4, n);
}

static void ring_step(int i, long n)
{
    static void (*const steps[5])(long) = {step0, step1, step2, step3, step4};
    steps[i](n);
}

static double run_chain(long threads, long n, int *ok)
{
    chain_limit = n;
    chain_got = -1;
    double t0 = bench_now();
#pragma omp parallel num_threads(threads)
#pragma omp single
    {
#pragma omp task
        ring_step(0, 0);
    }
    double dt = bench_now() - t0;
    *ok = chain_got == n;
    return dt;
}

static double run_fan(long threads, long n, long iters, int parallel, int *ok)
{
    uint64_t expect = 0;
    for (long i = 0; i < n; i++)
        expect += parallel ? bench_par_work((uint64_t)i, iters) : bench_fan_work((uint64_t)i);
    uint64_t sum = 0;
    double t0 = bench_now();
#pragma omp parallel num_threads(threads)
#pragma omp single
    {
#pragma omp taskgroup task_reduction(+ : sum)
        for (long i = 0; i < n; i++) {
#pragma omp task firstprivate(i) in_reduction(+ : sum)
            sum += parallel ? bench_par_work((uint64_t)i, iters) : bench_fan_work((uint64_t)i);
        }
    }
    double dt = bench_now() - t0;
    *ok = sum == expect;
    return dt;
}

static uint64_t tree(long depth, uint64_t index)
{
    if (depth == 0)
        return bench_fan_work(index);
    uint64_t a = 0, b = 0;
#pragma omp task shared(a)
    a = tree(depth - 1, 2 * index);
#pragma omp task shared(b)
    b = tree(depth - 1, 2 * index + 1);
#pragma omp taskwait
    return a + b;
}

static double run_tree(long threads, long depth, int *ok)
{
    uint64_t got = 0;
    double t0 = bench_now();
#pragma omp parallel num_threads(threads)
#pragma omp single
    got = tree(depth, 0);
    double dt = bench_now() - t0;
    *ok = got == bench_tree_expect(depth);
    return dt;
}

int main(int argc, char **argv)
{
    const char *bench = bench_arg_str(argc, argv, "--bench", "chain");
    long threads = bench_arg(argc, argv, "--threads", 1);
    long warmup = bench_arg(argc, argv, "--warmup", 1);
    long iters = bench_arg(argc, argv, "--iters", BENCH_PAR_ITERS);
    long depth = bench_arg(argc, argv, "--depth", 20);
    int is_par = strcmp(bench, "parallel") == 0;
    long n = bench_arg(argc, argv, "--n", is_par ? 100000 : 1000000);
    if (threads < 1 || n < 1 || depth < 0 || depth > 40)
        return 2;
    omp_set_dynamic(0);
    if (strcmp(bench, "tree") == 0)
        n = bench_tree_nodes(depth);
    double dt = 0;
    int ok = 1;
    for (long round = 0; round <= warmup; round++) {
        int r = 0;
        if (strcmp(bench, "chain") == 0)
            dt = run_chain(threads, n, &r);
        else if (strcmp(bench, "fanout") == 0 || is_par)
            dt = run_fan(threads, n, iters, is_par, &r);
        else if (strcmp(bench, "tree") == 0)
            dt = run_tree(threads, depth, &r);
        else {
            fprintf(stderr, "peer_omp: unknown --bench %s\n", bench);
            return 2;
        }
        ok = ok && r;
    }
    char extra[64] = "";
    if (strcmp(bench, "tree") == 0)
        snprintf(extra, sizeof extra, ",\"depth\":%ld", depth);
    else if (is_par)
        snprintf(extra, sizeof extra, ",\"iters\":%ld", iters);
    bench_report(bench, "omp", threads, n, dt, n, ok, extra);
    return ok ? 0 : 1;
}
