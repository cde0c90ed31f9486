/*
 * pthread.c: the hand-written baseline. One FIFO of tasks (a growable ring
 * of {function, two arguments}) guarded by one mutex and one condition
 * variable, shared by `threads` worker threads: the thing people write by
 * hand. The same workloads as the wf programs with the same per-item work
 * (../work.h), the same checks and the same JSON lines ("impl":"pthread").
 * Every step, item, result and join is one task through the queue.
 *
 *   chain     a step task pushes the task of the next step (five step
 *             functions in a cycle) until n steps have run.
 *   fanout    a producer task pushes n item tasks; each computes its item and
 *             pushes a result task; result tasks add into the sum (an atomic:
 *             the collector has no state but the sum) and the n-th ends the
 *             round.
 *   parallel  the same with ~1 us of computation per item.
 *   tree      a split task pushes the two children of an inner node; a leaf
 *             stores its value and counts its parent down; the child that
 *             completes a parent pushes the parent's join task, which sums
 *             the two children and counts its own parent down in turn.
 *
 * The main thread pushes the first task and sleeps until the last one ends
 * the round. One warm-up round per process first (the ring then has its
 * full size). Usage: peer_pthread --bench chain|fanout|parallel|tree [--n N]
 *                    [--depth D] [--threads T] [--iters I] [--warmup W]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../common.h"
#include "../work.h"

typedef void (*task_fn)(long a, long b);

typedef struct {
    task_fn fn;
    long a, b;
} task;

/* The queue: every field is guarded by mu. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    task *ring;
    size_t cap, head, len; /* cap is a power of two */
    int quit;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, 0};

/* End of a round: guarded by done_mu. */
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int round_done;

static void push(task_fn fn, long a, long b)
{
    pthread_mutex_lock(&q.mu);
    if (q.len == q.cap) {
        size_t ncap = q.cap ? q.cap * 2 : 1024;
        task *r = malloc(ncap * sizeof *r);
        if (r == NULL)
            abort();
        for (size_t i = 0; i < q.len; i++)
            r[i] = q.ring[(q.head + i) & (q.cap - 1)];
        free(q.ring);
        q.ring = r;
        q.cap = ncap;
        q.head = 0;
    }
    q.ring[(q.head + q.len) & (q.cap - 1)] = (task){fn, a, b};
    q.len++;
    pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&q.mu);
        while (q.len == 0 && !q.quit)
            pthread_cond_wait(&q.cv, &q.mu);
        if (q.len == 0) {
            pthread_mutex_unlock(&q.mu);
            return NULL;
        }
        task t = q.ring[q.head];
        q.head = (q.head + 1) & (q.cap - 1);
        q.len--;
        pthread_mutex_unlock(&q.mu);
        t.fn(t.a, t.b);
    }
}

static void finish_round(void)
{
    pthread_mutex_lock(&done_mu);
    round_done = 1;
    pthread_cond_signal(&done_cv);
    pthread_mutex_unlock(&done_mu);
}

/* Pushes the first task and waits for the round to end; returns seconds. */
static double run_round(task_fn first, long a, long b)
{
    round_done = 0;
    double t0 = bench_now();
    push(first, a, b);
    pthread_mutex_lock(&done_mu);
    while (!round_done)
        pthread_cond_wait(&done_cv, &done_mu);
    pthread_mutex_unlock(&done_mu);
    return bench_now() - t0;
}

/* ---- chain ---- */

static long limit;
static long chain_got;

static void ring_step(long i, long n);

static void ring_next(long i, long n)
{
    n++;
    if (n >= limit) {
        chain_got = n;
        finish_round();
        return;
    }
    push(ring_step, (i + 1) % 5, n);
}

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

static void ring_step(long i, long n)
{
    static void (*const steps[5])(long) = {step0, step1, step2, step3, step4};
    steps[i](n);
}

/* ---- fanout and parallel ---- */

static long n_items, iters;
static int parallel;
static atomic_uint_fast64_t fan_sum;
static atomic_long fan_count;

static void fan_collect(long v, long unused)
{
    (void)unused;
    atomic_fetch_add_explicit(&fan_sum, (uint64_t)v, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&fan_count, 1, memory_order_acq_rel) + 1 == n_items)
        finish_round();
}

static void fan_work(long i, long unused)
{
    (void)unused;
    uint64_t v = parallel ? bench_par_work((uint64_t)i, iters) : bench_fan_work((uint64_t)i);
    push(fan_collect, (long)v, 0);
}

static void fan_produce(long n, long unused)
{
    (void)unused;
    for (long i = 0; i < n; i++)
        push(fan_work, i, 0);
}

/* ---- tree: heap order, node k has children 2k+1 and 2k+2 ---- */

static uint64_t *tree_value;    /* per node, written once */
static atomic_int *tree_pending; /* per inner node: children left */
static long tree_depth;

static void tree_join(long p, long unused);

static void tree_complete(long k)
{
    if (k == 0) {
        finish_round();
        return;
    }
    long p = (k - 1) / 2;
    if (atomic_fetch_sub_explicit(&tree_pending[p], 1, memory_order_acq_rel) == 1)
        push(tree_join, p, 0);
}

static void tree_join(long p, long unused)
{
    (void)unused;
    tree_value[p] = tree_value[2 * p + 1] + tree_value[2 * p + 2];
    tree_complete(p);
}

/* a = heap index, b = position within the level; the depth follows from a. */
static void tree_split(long k, long index)
{
    long level = 63 - __builtin_clzl((unsigned long)k + 1);
    if (level == tree_depth) {
        tree_value[k] = bench_fan_work((uint64_t)index);
        tree_complete(k);
        return;
    }
    push(tree_split, 2 * k + 1, 2 * index);
    push(tree_split, 2 * k + 2, 2 * index + 1);
}

int main(int argc, char **argv)
{
    const char *bench = bench_arg_str(argc, argv, "--bench", "chain");
    long threads = bench_arg(argc, argv, "--threads", 1);
    long warmup = bench_arg(argc, argv, "--warmup", 1);
    iters = bench_arg(argc, argv, "--iters", BENCH_PAR_ITERS);
    tree_depth = bench_arg(argc, argv, "--depth", 20);
    parallel = strcmp(bench, "parallel") == 0;
    long n = bench_arg(argc, argv, "--n", parallel ? 100000 : 1000000);
    int is_chain = strcmp(bench, "chain") == 0, is_tree = strcmp(bench, "tree") == 0;
    if (threads < 1 || n < 1 || tree_depth < 0 || tree_depth > 40)
        return 2;
    if (!is_chain && !is_tree && !parallel && strcmp(bench, "fanout") != 0) {
        fprintf(stderr, "peer_pthread: unknown --bench %s\n", bench);
        return 2;
    }
    if (is_tree) {
        n = bench_tree_nodes(tree_depth);
        tree_value = calloc((size_t)n, sizeof *tree_value);
        tree_pending = malloc(((size_t)1 << tree_depth) * sizeof *tree_pending);
        if (tree_value == NULL || tree_pending == NULL)
            return 1;
    }
    limit = n_items = n; /* set before the workers start: they read them unlocked */
    pthread_t *tids = malloc((size_t)threads * sizeof *tids);
    if (tids == NULL)
        return 1;
    for (long t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, worker, NULL) != 0)
            return 1;
    uint64_t expect = 0;
    if (is_tree)
        expect = bench_tree_expect(tree_depth);
    else if (!is_chain)
        for (long i = 0; i < n; i++)
            expect += parallel ? bench_par_work((uint64_t)i, iters) : bench_fan_work((uint64_t)i);
    double dt = 0;
    int ok = 1;
    for (long round = 0; round <= warmup; round++) {
        if (is_chain) {
            chain_got = -1;
            dt = run_round(ring_step, 0, 0);
            ok = ok && chain_got == n;
        } else if (is_tree) {
            double t0 = bench_now();
            long inner = (1L << tree_depth) - 1;
            for (long i = 0; i < inner; i++)
                atomic_store_explicit(&tree_pending[i], 2, memory_order_relaxed);
            double setup = bench_now() - t0;
            dt = setup + run_round(tree_split, 0, 0);
            ok = ok && tree_value[0] == expect;
        } else {
            atomic_store(&fan_sum, 0);
            atomic_store(&fan_count, 0);
            dt = run_round(fan_produce, n, 0);
            ok = ok && atomic_load(&fan_sum) == expect;
        }
    }
    pthread_mutex_lock(&q.mu);
    q.quit = 1;
    pthread_cond_broadcast(&q.cv);
    pthread_mutex_unlock(&q.mu);
    for (long t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    char extra[64] = "";
    if (is_tree)
        snprintf(extra, sizeof extra, ",\"depth\":%ld", tree_depth);
    else if (parallel)
        snprintf(extra, sizeof extra, ",\"iters\":%ld", iters);
    bench_report(bench, "pthread", threads, n, dt, n, ok, extra);
    free(tids);
    free(q.ring);
    free(tree_value);
    free(tree_pending);
    return ok ? 0 : 1;
}
