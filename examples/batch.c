/*
 * batch.c: 100,000 runs of the quick-start workflow through one executor.
 *
 * Every run gets its own context; all are started at once (they share only
 * the workflow definition and the pool), an on_done callback counts them, and
 * the program prints the throughput. Usage: batch [runs] [threads]
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wf/wf.h>

static int qs_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
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
    char msg[128];
    snprintf(msg, sizeof msg, "Processed %lld times, data length: %zu", (long long)n, len);
    wf_value result;
    if ((rc = wf_value_string(&result, msg)) < 0)
        return rc;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, result);
}

static atomic_long done_ok;

static void on_done(wf_handler *h, void *user)
{
    (void)user;
    if (wf_handler_status(h) == WF_RUN_DONE)
        atomic_fetch_add(&done_ok, 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long runs = argc > 1 ? atol(argv[1]) : 100000;
    unsigned threads = argc > 2 ? (unsigned)atoi(argv[2]) : 0;
    if (runs <= 0) {
        fprintf(stderr, "usage: batch [runs] [threads]\n");
        return 2;
    }
    wf_workflow *wf;
    wf_executor *ex;
    int rc = wf_workflow_new(&wf, "MyWorkflow", NULL);
    if (rc < 0)
        goto fail;
    const wf_event_type *accepts[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *emits[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = 1;
    if ((rc = wf_workflow_add_step(wf, "my_step", qs_step, &p, NULL)) < 0)
        goto fail;
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = threads;
    if ((rc = wf_executor_new(&ex, &ep)) < 0)
        goto fail;

    wf_handler **hs = calloc((size_t)runs, sizeof *hs);
    if (hs == NULL)
        return 1;
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.on_done = on_done;
    rp.stream_capacity = 0;
    double t0 = now_s();
    for (long i = 0; i < runs; i++) {
        wf_value v;
        wf_event *start;
        if ((rc = wf_value_string(&v, "Hello, world!")) < 0 ||
            (rc = wf_event_new1(&start, accepts[0], "data", v)) < 0 ||
            (rc = wf_run_start_ex(ex, wf, NULL, start, &rp, &hs[i], NULL)) < 0)
            goto fail;
    }
    long ok = 0;
    for (long i = 0; i < runs; i++) {
        wf_event *res = NULL;
        if (wf_handler_wait(hs[i], -1, &res) == 0) {
            const char *s;
            if (wf_value_get_string(wf_event_result(res), &s, NULL) == 0 &&
                strcmp(s, "Processed 1 times, data length: 13") == 0)
                ok++;
        }
        wf_event_release(res);
        wf_handler_free(hs[i]);
    }
    double dt = now_s() - t0;
    free(hs);
    printf("batch: %ld runs on %u threads in %.3f s: %.0f runs/s (%ld correct results, %ld "
           "on_done)\n",
           runs, wf_executor_threads(ex), dt, (double)runs / dt, ok, atomic_load(&done_ok));
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return ok == runs ? 0 : 1;
fail:
    fprintf(stderr, "batch: %s (%s)\n", wf_strerror(rc), wf_err_name(rc));
    return 1;
}
