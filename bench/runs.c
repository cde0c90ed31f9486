/*
 * runs.c: n short runs of the quick-start workflow (each with its own
 * context) with up to --window runs in flight; an on_done callback checks
 * every result and frees the handler. Prints runs_per_s as well.
 * Usage: runs [--n N] [--threads T] [--window W]
 */
#include <pthread.h>
#include <stdatomic.h>

#include <wf/wf.h>

#include "common.h"
#include "../examples/quickstart_step.h"

static const wf_event_type *T_START;
static atomic_long done, ok;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int main_waiting;

static void on_done(wf_handler *h, void *user)
{
    wf_event *res = NULL;
    if (wf_handler_wait(h, 0, &res) == 0) {
        const char *s;
        if (wf_value_get_string(wf_event_result(res), &s, NULL) == 0 &&
            strcmp(s, "Processed 1 times, data length: 13") == 0)
            atomic_fetch_add(&ok, 1);
    }
    wf_event_release(res);
    wf_handler_free(h);
    atomic_fetch_add(&done, 1);
    pthread_mutex_lock(&mu);
    if (main_waiting)
        pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, "--n", 1000000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    long window = bench_arg(argc, argv, "--window", 10000);
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
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.on_done = on_done;
    rp.stream_capacity = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        while (i - atomic_load(&done) >= window) {
            pthread_mutex_lock(&mu);
            main_waiting = 1;
            if (i - atomic_load(&done) >= window)
                pthread_cond_wait(&cv, &mu);
            main_waiting = 0;
            pthread_mutex_unlock(&mu);
        }
        wf_value v;
        wf_event *s;
        wf_handler *h;
        if (wf_value_string(&v, "Hello, world!") < 0 || wf_event_new1(&s, T_START, "data", v) < 0 ||
            wf_run_start_ex(ex, wf, NULL, s, &rp, &h, NULL) < 0)
            return 1;
    }
    while (atomic_load(&done) < n) {
        pthread_mutex_lock(&mu);
        main_waiting = 1;
        if (atomic_load(&done) < n)
            pthread_cond_wait(&cv, &mu);
        main_waiting = 0;
        pthread_mutex_unlock(&mu);
    }
    double dt = bench_now() - t0;
    char extra[64];
    snprintf(extra, sizeof extra, ",\"runs_per_s\":%.0f,\"window\":%ld", (double)n / dt, window);
    bench_report("runs", "wf", threads, n, dt, n, atomic_load(&ok) == n, extra);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return atomic_load(&ok) == n ? 0 : 1;
}
