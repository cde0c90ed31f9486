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

static const wf_event_type *T_START;
static atomic_long done, ok;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int main_waiting;

static int qs_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    wf_value count;
    int rc = wf_ctx_get_default(ctx, "count", wf_value_int(0), &count);
    int64_t n = 0;
    if (rc < 0 || (rc = wf_value_get_int(count, &n)) < 0)
        return rc;
    if ((rc = wf_ctx_set(ctx, "count", wf_value_int(++n))) < 0)
        return rc;
    size_t len = 0;
    const char *data;
    if (wf_value_get_string(wf_event_get(in, "data", wf_value_nil()), &data, &len) < 0)
        return WF_EINVAL;
    char msg[96];
    snprintf(msg, sizeof msg, "Processed %lld times, data length: %zu", (long long)n, len);
    wf_value result;
    if ((rc = wf_value_string(&result, msg)) < 0)
        return rc;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, result);
}

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
    if (wf_workflow_new(&wf, "MyWorkflow", NULL) < 0)
        return 1;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    wf_workflow_add_step(wf, "my_step", qs_step, &p, NULL);
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
