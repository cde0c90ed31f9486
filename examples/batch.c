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

#include "quickstart_step.h"

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
    int rc = quickstart_workflow(&wf);
    if (rc < 0)
        goto fail;
    const wf_event_type *start_type = wf_workflow_builtin(wf, WF_START_EVENT);
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
            (rc = wf_event_new1(&start, start_type, "data", v)) < 0 ||
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
