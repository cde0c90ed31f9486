/*
 * cluster_flow.h: the workflows the cluster test, its worker processes and
 * the cluster bench share (one definition, so fingerprints match).
 *  - "cflow": StartEvent{n} -> fan sends Item{n, i} for i = 1..3 -> work
 *    (fails the first attempt of i == 2: retried) -> Part{v = 10 n + i} ->
 *    join collects three Parts -> ask waits for HumanResponseEvent{response}
 *    (streams an InputRequiredEvent{prefix: "run <n>"}) -> StopEvent{result =
 *    sum of the parts + response}. Right result for n answered with r:
 *    30 n + 6 + r.
 *  - "chain5": StartEvent{n} -> five steps each adding 1 -> StopEvent{n + 5}.
 *  - "gated": StartEvent{n} -> enter (a blocking step: waits until the file
 *    $WF_GATE/open exists, or its run is cancelled) -> Mid{n} -> finish ->
 *    StopEvent{n + 1}. Each invocation appends lines to $WF_GATE/log, one
 *    write each: "begin N PID STEP" as it starts, "effect N PID STEP" for its
 *    side effect (idempotency key N/STEP), "cancel N PID STEP" when it saw its
 *    run cancelled at the gate or as the gate opened (no effect). The cluster test reads the log to
 *    see which worker process ran which step of which run, in what order.
 * cflow_variant != 0 builds "cflow" with a sixth step: another definition
 * under the same name (for the fingerprint check).
 */
#ifndef WF_TEST_CLUSTER_FLOW_H
#define WF_TEST_CLUSTER_FLOW_H

#include <wf/wf.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const wf_event_type *CF_ITEM, *CF_PART, *CF_MID, *CF_HR, *CF_IR;

static int cf_fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)out, (void)user;
    int64_t n = 0;
    wf_value_get_int(wf_event_get(in, "n", wf_value_int(0)), &n);
    for (int64_t i = 1; i <= 3; i++) {
        wf_event *e;
        int rc = wf_event_new2(&e, CF_ITEM, "n", wf_value_int(n), "i", wf_value_int(i));
        if (rc < 0 || (rc = wf_ctx_send_event(ctx, e, NULL)) < 0)
            return rc;
    }
    return 0;
}

static int cf_work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    int64_t n = 0, i = 0;
    wf_value_get_int(wf_event_get(in, "n", wf_value_int(0)), &n);
    wf_value_get_int(wf_event_get(in, "i", wf_value_int(0)), &i);
    if (i == 2 && wf_ctx_attempt(ctx) == 1)
        return WF_EIO; /* a transient failure: the retry policy runs it again */
    return wf_event_new2(out, CF_PART, "n", wf_value_int(n), "v", wf_value_int(10 * n + i));
}

static int cf_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    static const wf_event_type *types[3];
    types[0] = types[1] = types[2] = CF_PART;
    wf_event *got[3];
    int rc = wf_ctx_collect_events(ctx, in, types, 3, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    int64_t sum = 0, n = 0;
    for (int k = 0; k < 3; k++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(got[k], "v", wf_value_int(0)), &v);
        wf_value_get_int(wf_event_get(got[k], "n", wf_value_int(0)), &n);
        sum += v;
        wf_event_release(got[k]);
    }
    return wf_event_new2(out, CF_MID, "n", wf_value_int(n), "sum", wf_value_int(sum));
}

static int cf_ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    int64_t n = 0, sum = 0;
    wf_value_get_int(wf_event_get(in, "n", wf_value_int(0)), &n);
    wf_value_get_int(wf_event_get(in, "sum", wf_value_int(0)), &sum);
    wf_event *q = NULL;
    wf_value prefix;
    char text[48];
    snprintf(text, sizeof text, "run %lld", (long long)n);
    if (wf_value_string(&prefix, text) == 0)
        wf_event_new1(&q, CF_IR, "prefix", prefix);
    wf_event *answer = NULL;
    int rc = wf_ctx_wait_for_event(ctx, CF_HR, wf_value_nil(), q, "answer", WF_NO_TIMEOUT, &answer);
    if (rc == WF_SUSPEND)
        return WF_SUSPEND;
    if (rc < 0)
        return rc;
    int64_t r = 0;
    wf_value_get_int(wf_event_get(answer, "response", wf_value_int(0)), &r);
    wf_event_release(answer);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(sum + r));
}

static int cf_extra(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)ctx, (void)in, (void)out, (void)user;
    return 0;
}

static int cf_add(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int64_t n = 0;
    wf_value_get_int(wf_event_get(in, "n", wf_value_int(0)), &n);
    const wf_event_type *next = user;
    if (next == NULL)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(n + 1));
    return wf_event_new1(out, next, "n", wf_value_int(n + 1));
}

static int cf_step(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *acc,
                   const wf_event_type *emits, const wf_retry_policy *retry, void *user)
{
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &acc;
    p.n_accepts = 1;
    if (emits) {
        p.emits = &emits;
        p.n_emits = 1;
    }
    p.retry = retry;
    return wf_workflow_add_step(wf, name, fn, &p, user);
}

static wf_workflow *cflow_new(int variant)
{
    wf_workflow *wf = NULL;
    if (wf_workflow_new(&wf, "cflow", NULL) < 0)
        return NULL;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    CF_HR = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    CF_IR = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    wf_workflow_event_type(wf, "Item", NULL, &CF_ITEM);
    wf_workflow_event_type(wf, "Part", NULL, &CF_PART);
    wf_workflow_event_type(wf, "Mid", NULL, &CF_MID);
    wf_retry_policy *retry = NULL;
    wf_retry_policy_constant(&retry, 3, 0);
    int rc = cf_step(wf, "fan", cf_fan, start, CF_ITEM, NULL, NULL);
    rc = rc ? rc : cf_step(wf, "work", cf_work, CF_ITEM, CF_PART, retry, NULL);
    rc = rc ? rc : cf_step(wf, "join", cf_join, CF_PART, CF_MID, NULL, NULL);
    rc = rc ? rc : cf_step(wf, "ask", cf_ask, CF_MID, stop, NULL, NULL);
    if (variant && rc == 0)
        rc = cf_step(wf, "extra", cf_extra, CF_HR, NULL, NULL, NULL);
    wf_retry_policy_free(retry);
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    wf_workflow_set_validation(wf, 0);
    if (rc < 0) {
        wf_workflow_free(wf);
        return NULL;
    }
    return wf;
}

static void gate_log(const char *what, int64_t n, const char *step)
{
    const char *dir = getenv("WF_GATE");
    if (dir == NULL)
        return;
    char path[512], line[128];
    snprintf(path, sizeof path, "%s/log", dir);
    int len =
        snprintf(line, sizeof line, "%s %lld %ld %s\n", what, (long long)n, (long)getpid(), step);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)len) != len)
            abort(); /* the test reads this log: a short line would mislead it */
        close(fd);
    }
}

static int gate_open(void)
{
    const char *dir = getenv("WF_GATE");
    char path[512];
    snprintf(path, sizeof path, "%s/open", dir ? dir : ".");
    return access(path, F_OK) == 0;
}

static int gf_enter(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    const wf_event_type *mid = user;
    int64_t n = 0;
    wf_value_get_int(wf_event_get(in, "n", wf_value_int(0)), &n);
    gate_log("begin", n, "enter");
    while (!gate_open()) {
        if (wf_ctx_is_cancelled(ctx)) {
            gate_log("cancel", n, "enter");
            return 0;
        }
        struct timespec ts = {0, 1000000L}; /* the step's own wait, not the test's */
        nanosleep(&ts, NULL);
    }
    if (wf_ctx_is_cancelled(ctx)) { /* as a real step would, before its effect */
        gate_log("cancel", n, "enter");
        return 0;
    }
    gate_log("effect", n, "enter");
    return wf_event_new1(out, mid, "n", wf_value_int(n));
}

static int gf_finish(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    int64_t n = 0;
    wf_value_get_int(wf_event_get(in, "n", wf_value_int(0)), &n);
    gate_log("begin", n, "finish");
    gate_log("effect", n, "finish");
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(n + 1));
}

static inline wf_workflow *gated_new(void)
{
    wf_workflow *wf = NULL;
    if (wf_workflow_new(&wf, "gated", NULL) < 0)
        return NULL;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    const wf_event_type *mid = NULL;
    wf_workflow_event_type(wf, "GMid", NULL, &mid);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &start;
    p.n_accepts = 1;
    p.emits = &mid;
    p.n_emits = 1;
    p.blocking = 1; /* it sleeps until the gate opens: off the work-stealing workers */
    int rc = wf_workflow_add_step(wf, "enter", gf_enter, &p, (void *)mid);
    rc = rc ? rc : cf_step(wf, "finish", gf_finish, mid, stop, NULL, NULL);
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    if (rc < 0) {
        wf_workflow_free(wf);
        return NULL;
    }
    return wf;
}

static wf_workflow *chain5_new(void)
{
    wf_workflow *wf = NULL;
    if (wf_workflow_new(&wf, "chain5", NULL) < 0)
        return NULL;
    const wf_event_type *t[6];
    t[0] = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    char name[16];
    for (int i = 1; i < 5; i++) {
        snprintf(name, sizeof name, "S%d", i);
        wf_workflow_event_type(wf, name, NULL, &t[i]);
    }
    int rc = 0;
    for (int i = 0; i < 5 && rc == 0; i++) {
        snprintf(name, sizeof name, "s%d", i);
        rc = cf_step(wf, name, cf_add, t[i], i < 4 ? t[i + 1] : stop, NULL,
                     i < 4 ? (void *)t[i + 1] : NULL);
    }
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    if (rc < 0) {
        wf_workflow_free(wf);
        return NULL;
    }
    return wf;
}

#endif
