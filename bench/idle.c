/*
 * idle.c: idle release. --runs durable runs each wait for an answer from
 * outside; with idle_release_ms 50 they are checkpointed, released in the
 * store and leave memory. Measures, per released run (after minus before,
 * over the runs, after a first round that warms every cache): the heap in
 * use in every malloc arena (malloc_info; after wf_alloc_trim and
 * malloc_trim, once the heap has stopped shrinking: a released run's last
 * references go a moment after it left the durable table), the part of it
 * wf allocated (counted by allocation hooks), the main arena alone
 * (mallinfo2) and the resident set (/proc/self/statm); then the time until
 * all are released, and answers per second to released runs (each sent by
 * id from --senders threads: the run is claimed, loaded and continued).
 * IDLE_MALLOC_STATS=1 prints malloc_stats() after the release;
 * IDLE_EXIT_RELEASED=S exits S seconds after it (for heaptrack: what is
 * still allocated then).
 * Usage: idle [--runs N] [--threads T] [--senders S] [--dir DIR]
 */
#include <wf/wf.h>

#include "common.h"
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Heap bytes in use in every malloc arena (mallinfo2 sees the main arena
 * only, and the workers and the store's writer allocate in their own):
 * malloc_info's totals after the last heap, system + mmapped - free.
 */
static double heap_in_use(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return 0;
    malloc_info(0, f);
    fclose(f);
    const char *t = buf, *h;
    while ((h = strstr(t, "</heap>")) != NULL)
        t = h + 7;
    double fast = 0, rest = 0, mmapped = 0, current = 0;
    const char *q;
    if ((q = strstr(t, "<total type=\"fast\"")) && (q = strstr(q, "size=\"")))
        fast = atof(q + 6);
    if ((q = strstr(t, "<total type=\"rest\"")) && (q = strstr(q, "size=\"")))
        rest = atof(q + 6);
    if ((q = strstr(t, "<total type=\"mmap\"")) && (q = strstr(q, "size=\"")))
        mmapped = atof(q + 6);
    if ((q = strstr(t, "<system type=\"current\"")) && (q = strstr(q, "size=\"")))
        current = atof(q + 6);
    free(buf);
    return current + mmapped - fast - rest;
}

/* Bytes wf holds from malloc (its allocation hooks count them). */
static atomic_llong wf_bytes;

static void *h_malloc(size_t n, void *u)
{
    (void)u;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&wf_bytes, (long long)malloc_usable_size(p));
    return p;
}

static void *h_realloc(void *p, size_t n, void *u)
{
    (void)u;
    long long old = p ? (long long)malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q)
        atomic_fetch_add(&wf_bytes, (long long)malloc_usable_size(q) - old);
    return q;
}

static void h_free(void *p, void *u)
{
    (void)u;
    if (p)
        atomic_fetch_sub(&wf_bytes, (long long)malloc_usable_size(p));
    free(p);
}

/* Resident set size, bytes (/proc/self/statm). */
static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE);
}

static const wf_event_type *T_START, *T_ANSWER, *T_ASKED;
static wf_executor *ex;
static long runs;
static atomic_int bad;

static int ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    return wf_event_new(out, T_ASKED, 0);
}

static int join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    const wf_event_type *want[2] = {T_ASKED, T_ANSWER};
    wf_event *got[2];
    int rc = wf_ctx_collect_events(ctx, in, want, 2, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    wf_event_release(got[0]);
    wf_event_release(got[1]);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

typedef struct range {
    long from, to;
} range;

static const char *prefix = "idle";

static void *send_range(void *arg)
{
    range *r = arg;
    char id[32];
    for (long k = r->from; k < r->to; k++) {
        snprintf(id, sizeof id, "%s-%ld", prefix, k);
        wf_event *e;
        wf_event_new(&e, T_ANSWER, 0);
        if (wf_durable_send(ex, id, e, NULL) < 0)
            atomic_fetch_add(&bad, 1);
    }
    return NULL;
}

typedef struct cycle_out {
    double per_run, per_run_live, t_started, t_released, t_answered, t_done;
    double heap_per_run, rss_per_run, heap_per_live_run, wf_per_run;
    int ok;
} cycle_out;

/* Starts runs, waits until all are released, answers them all, waits until all are done. */
static cycle_out cycle(wf_workflow *wf, long senders)
{
    cycle_out o = {0};
    wf_alloc_trim(); /* wf's block cache keeps freed blocks for reuse: hand them back first */
    malloc_trim(0);
    size_t before = mallinfo2().uordblks;
    double hbefore = heap_in_use(), rbefore = rss_bytes();
    double wbefore = (double)atomic_load(&wf_bytes);
    double t0 = bench_now();
    char id[32];
    for (long k = 0; k < runs; k++) {
        snprintf(id, sizeof id, "%s-%ld", prefix, k);
        wf_event *st;
        wf_event_new(&st, T_START, 0);
        wf_handler *h;
        if (wf_run_start_durable(ex, wf, NULL, id, st, NULL, &h, NULL) < 0)
            return o;
        wf_handler_free(h);
    }
    o.t_started = bench_now() - t0;
    size_t peak = mallinfo2().uordblks;
    double hpeak = heap_in_use();
    while (wf_durable_in_memory(ex) > 0) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    o.t_released = bench_now() - t0;
    /*
     * Out of the table is not yet freed: a released run's last references
     * (the checkpoint pass's, the engine's running unit) go a moment later.
     * Wait until the heap stops shrinking (4 readings 100 ms apart within 64 KiB).
     */
    for (double prev = heap_in_use(), now;; prev = now) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        wf_alloc_trim();
        now = heap_in_use();
        static int calm = 0;
        calm = prev - now < 65536 ? calm + 1 : 0;
        if (calm >= 4) {
            calm = 0;
            break;
        }
    }
    wf_alloc_trim();
    malloc_trim(0);
    size_t after = mallinfo2().uordblks;
    o.heap_per_run = (heap_in_use() - hbefore) / (double)runs;
    o.heap_per_live_run = (hpeak - hbefore) / (double)runs;
    o.rss_per_run = (rss_bytes() - rbefore) / (double)runs;
    o.wf_per_run = ((double)atomic_load(&wf_bytes) - wbefore) / (double)runs;
    if (getenv("IDLE_MALLOC_STATS"))
        malloc_stats();
    if (getenv("IDLE_EXIT_RELEASED")) { /* for heaptrack: what is still allocated now */
        sleep((unsigned)atoi(getenv("IDLE_EXIT_RELEASED")));
        _exit(0);
    }
    o.per_run = ((double)after - (double)before) / (double)runs;
    o.per_run_live = ((double)peak - (double)before) / (double)runs;
    double t1 = bench_now();
    pthread_t *th = calloc((size_t)senders, sizeof *th);
    range *rs = calloc((size_t)senders, sizeof *rs);
    for (long i = 0; i < senders; i++) {
        rs[i] = (range){runs * i / senders, runs * (i + 1) / senders};
        pthread_create(&th[i], NULL, send_range, &rs[i]);
    }
    for (long i = 0; i < senders; i++)
        pthread_join(th[i], NULL);
    o.t_answered = bench_now() - t1;
    o.ok = atomic_load(&bad) == 0;
    for (long k = 0; k < runs && o.ok; k++) {
        snprintf(id, sizeof id, "%s-%ld", prefix, k);
        wf_handler *h;
        if (wf_handler_open(ex, id, &h) == 0) {
            o.ok = wf_handler_wait(h, -1, NULL) == 0;
            wf_handler_free(h);
        }
    }
    o.t_done = bench_now() - t1;
    free(th);
    free(rs);
    return o;
}

int main(int argc, char **argv)
{
    static const wf_alloc_hooks hooks = {h_malloc, h_realloc, h_free, NULL};
    if (wf_set_alloc_hooks(&hooks) < 0)
        return 1;
    runs = bench_arg(argc, argv, "--runs", 100000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    long senders = bench_arg(argc, argv, "--senders", 64);
    const char *dir = bench_arg_str(argc, argv, "--dir", "/tmp");
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "idle", NULL) < 0)
        return 1;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Answer", NULL, &T_ANSWER);
    wf_workflow_event_type(wf, "Asked", NULL, &T_ASKED);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = &T_ASKED;
    p.n_emits = 1;
    wf_workflow_add_step(wf, "ask", ask, &p, NULL);
    const wf_event_type *acc[2] = {T_ASKED, T_ANSWER};
    p.accepts = acc;
    p.n_accepts = 2;
    p.emits = &stop;
    wf_workflow_add_step(wf, "join", join, &p, NULL);
    wf_workflow_set_validation(wf, 0);
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);

    char db[512];
    snprintf(db, sizeof db, "%s/wf-idle-%d.db", dir, (int)getpid());
    wf_store *s;
    char *msg = NULL;
    if (wf_store_open_sqlite(&s, db, NULL, &msg) < 0) {
        fprintf(stderr, "idle: %s\n", msg ? msg : "cannot open the store");
        return 1;
    }
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.idle_release_ms = 50;
    if (wf_executor_attach_store(ex, s, &dp) < 0)
        return 1;
    prefix = "warm";
    cycle_out w = cycle(wf, senders);
    prefix = "idle";
    cycle_out o = cycle(wf, senders);
    int ok = w.ok && o.ok;
    char extra[800];
    snprintf(extra, sizeof extra,
             ",\"runs\":%ld,\"heap_bytes_per_released_run\":%.1f,\"heap_bytes_per_live_run\":%.1f,"
             "\"main_arena_bytes_per_released_run\":%.1f,\"rss_bytes_per_released_run\":%.1f,"
             "\"wf_bytes_per_released_run\":%.1f,\"first_round_heap_bytes_per_released_run\":%.1f,"
             "\"first_round_rss_bytes_per_released_run\":%.1f,"
             "\"first_round_wf_bytes_per_released_run\":%.1f,"
             "\"start_s\":%.3f,\"all_released_s\":%.3f,\"answers_per_s\":%.0f,\"answer_s\":%.3f,"
             "\"senders\":%ld",
             runs, o.heap_per_run, o.heap_per_live_run, o.per_run, o.rss_per_run, o.wf_per_run,
             w.heap_per_run, w.rss_per_run, w.wf_per_run, o.t_started, o.t_released,
             (double)runs / o.t_answered, o.t_done, senders);
    bench_report("idle", "wf-durable", threads, runs, o.t_done, runs, ok, extra);
    wf_executor_free(ex);
    wf_store_free(s);
    wf_workflow_free(wf);
    char side[600];
    unlink(db);
    snprintf(side, sizeof side, "%s-wal", db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db);
    unlink(side);
    return ok ? 0 : 1;
}
