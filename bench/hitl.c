/*
 * hitl.c: n runs suspended on wait_for_event (each asked a human through an
 * InputRequiredEvent), then all answered with HumanResponseEvents. Prints
 * answers per second and the memory each waiting run holds (resident set
 * growth while all n wait, divided by n). Verified: every run returns its
 * own answer. Usage: hitl [--n N] [--threads T]
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <wf/wf.h>

#include "common.h"

static const wf_event_type *T_HR, *T_IR;
static atomic_long asked;

static long rss_kb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    wf_event *q = NULL;
    wf_value prefix;
    if (wf_value_string(&prefix, "approve?") == 0)
        wf_event_new1(&q, T_IR, "prefix", prefix);
    wf_event *answer = NULL;
    int rc =
        wf_ctx_wait_for_event(ctx, T_HR, wf_value_nil(), q, "approval", WF_NO_TIMEOUT, &answer);
    if (rc == WF_SUSPEND) {
        atomic_fetch_add(&asked, 1);
        return WF_SUSPEND;
    }
    if (rc < 0)
        return rc;
    wf_value v = wf_value_retain(wf_event_get(answer, "response", wf_value_nil()));
    wf_event_release(answer);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, "--n", 100000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    wf_workflow *wf;
    if (n <= 0 || wf_workflow_new(&wf, "hitl", NULL) < 0)
        return 1;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    T_HR = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    T_IR = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &start;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    wf_workflow_add_step(wf, "ask", ask, &p, NULL);
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    wf_workflow_set_validation(wf, 0);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    wf_executor *ex;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    wf_handler **hs = calloc((size_t)n, sizeof *hs);
    if (hs == NULL)
        return 1;
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.stream_capacity = 4; /* the question is streamed; nobody reads it here */
    long before = rss_kb();
    for (long i = 0; i < n; i++) {
        wf_event *s;
        if (wf_event_new(&s, start, 0) < 0 ||
            wf_run_start_ex(ex, wf, NULL, s, &rp, &hs[i], NULL) < 0)
            return 1;
    }
    while (atomic_load(&asked) < n) /* every run is suspended, no worker busy */
        usleep(1000);
    long waiting = rss_kb();
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        wf_event *ans;
        if (wf_event_new1(&ans, T_HR, "response", wf_value_int(i)) < 0 ||
            wf_handler_send_event(hs[i], ans, NULL) < 0)
            return 1;
    }
    long ok = 0;
    for (long i = 0; i < n; i++) {
        wf_event *res = NULL;
        int64_t v = -1;
        if (wf_handler_wait(hs[i], -1, &res) == 0 &&
            wf_value_get_int(wf_event_result(res), &v) == 0 && v == i)
            ok++;
        wf_event_release(res);
        wf_handler_free(hs[i]);
    }
    double dt = bench_now() - t0;
    char extra[160];
    snprintf(extra, sizeof extra, ",\"answers_per_s\":%.0f,\"bytes_per_waiting_run\":%.0f",
             (double)n / dt, (double)(waiting - before) * 1024.0 / (double)n);
    bench_report("hitl", "wf", threads, n, dt, n, ok == n, extra);
    free(hs);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return ok == n ? 0 : 1;
}
