/*
 * runs.c: n short runs of the quick-start workflow (each with its own
 * context) with up to --window runs in flight; an on_done callback checks
 * every result and frees the handler. Prints runs_per_s as well.
 * Usage: runs [--n N] [--threads T] [--window W] [--clients C] [--run-here 0|1]
 * --clients C: C threads submit the runs (n/C each, window/C in flight
 * each); 1 (default): the main thread.
 * --run-here 1: wf_run_params.run_here, the run's first invocation (here the
 * whole quick start) on the submitting thread instead of a worker; reported
 * as bench "runs_here".
 */
#include <pthread.h>
#include <stdatomic.h>

#include <wf/wf.h>

#include "common.h"
#include "../examples/quickstart_step.h"

static const wf_event_type *T_START;

/* A submitting thread: its runs, its window, the completions of its runs. */
typedef struct client {
    wf_executor *ex;
    wf_workflow *wf;
    wf_run_params rp;
    long n, window;
    atomic_long done;
    atomic_long ok; /* per client: the checks pass no line between the clients' cores */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int waiting;
    int failed;
} __attribute__((aligned(64))) client; /* a client's counters on lines of its own */

static void on_done(wf_handler *h, void *user)
{
    client *c = user;
    wf_event *res = NULL;
    if (wf_handler_wait(h, 0, &res) == 0) {
        const char *s;
        if (wf_value_get_string(wf_event_result(res), &s, NULL) == 0 &&
            strcmp(s, "Processed 1 times, data length: 13") == 0)
            atomic_fetch_add(&c->ok, 1);
    }
    wf_event_release(res);
    wf_handler_free(h);
    atomic_fetch_add(&c->done, 1);
    pthread_mutex_lock(&c->mu);
    if (c->waiting)
        pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Waits until fewer than `most` of c's runs are in flight (of `started`). */
static void wait_below(client *c, long started, long most)
{
    while (started - atomic_load(&c->done) >= most) {
        pthread_mutex_lock(&c->mu);
        c->waiting = 1;
        if (started - atomic_load(&c->done) >= most)
            pthread_cond_wait(&c->cv, &c->mu);
        c->waiting = 0;
        pthread_mutex_unlock(&c->mu);
    }
}

static void *submit(void *arg)
{
    client *c = arg;
    for (long i = 0; i < c->n; i++) {
        wait_below(c, i, c->window);
        wf_value v;
        wf_event *s;
        wf_handler *h;
        if (wf_value_string(&v, "Hello, world!") < 0 || wf_event_new1(&s, T_START, "data", v) < 0 ||
            wf_run_start_ex(c->ex, c->wf, NULL, s, &c->rp, &h, NULL) < 0) {
            c->failed = 1;
            wait_below(c, i, 1);
            return NULL;
        }
    }
    wait_below(c, c->n, 1); /* all of its runs done */
    return NULL;
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, "--n", 1000000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    long window = bench_arg(argc, argv, "--window", 10000);
    long nclients = bench_arg(argc, argv, "--clients", 1);
    if (nclients < 1 || nclients > 64 || window < 1) {
        fprintf(stderr, "runs: --clients is 1..64 and --window at least 1\n");
        return 2;
    }
    wf_workflow *wf;
    if (quickstart_workflow(&wf) < 0)
        return 1;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    wf_executor *ex;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    client *cs = aligned_alloc(64, (size_t)nclients * sizeof *cs);
    if (cs)
        memset(cs, 0, (size_t)nclients * sizeof *cs);
    pthread_t *tids = calloc((size_t)nclients, sizeof *tids);
    if (cs == NULL || tids == NULL)
        return 1;
    int run_here = bench_arg(argc, argv, "--run-here", 0) != 0;
    for (long k = 0; k < nclients; k++) {
        client *c = &cs[k];
        c->ex = ex;
        c->wf = wf;
        wf_run_params_init(&c->rp);
        c->rp.on_done = on_done;
        c->rp.on_done_user = c;
        c->rp.stream_capacity = 0;
        c->rp.run_here = run_here;
        c->n = n / nclients + (k < n % nclients ? 1 : 0);
        c->window = window / nclients > 0 ? window / nclients : 1;
        atomic_init(&c->done, 0);
        atomic_init(&c->ok, 0);
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
    }
    double t0 = bench_now();
    int failed = 0;
    if (nclients == 1) {
        submit(&cs[0]); /* on the main thread, as before --clients */
    } else {
        for (long k = 0; k < nclients; k++)
            if (pthread_create(&tids[k], NULL, submit, &cs[k]) != 0)
                return 1;
        for (long k = 0; k < nclients; k++)
            pthread_join(tids[k], NULL);
    }
    double dt = bench_now() - t0;
    long ok = 0;
    for (long k = 0; k < nclients; k++) {
        failed |= cs[k].failed;
        ok += atomic_load(&cs[k].ok);
    }
    char extra[128];
    snprintf(extra, sizeof extra, ",\"runs_per_s\":%.0f,\"window\":%ld,\"clients\":%ld,\"run_here\":%d",
             (double)n / dt, window, nclients, run_here);
    int good = !failed && ok == n;
    bench_report(run_here ? "runs_here" : "runs", "wf", threads, n, dt, n, good, extra);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    free(cs);
    free(tids);
    return good ? 0 : 1;
}
