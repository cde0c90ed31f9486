/*
 * quickstart_step.h: the quick start's one step, shared by the quick start,
 * the batch demo and the runs benchmark. It counts runs in the context store
 * and stops with "Processed N times, data length: L".
 */
#ifndef WF_QUICKSTART_STEP_H
#define WF_QUICKSTART_STEP_H

#include <stdio.h>

#include <wf/wf.h>

static int quickstart_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    wf_value count;
    int rc = wf_ctx_get_default(ctx, "count", wf_value_int(0), &count);
    if (rc < 0)
        return rc;
    int64_t n = 0;
    if ((rc = wf_value_get_int(count, &n)) < 0)
        return rc;
    n++;
    if ((rc = wf_ctx_set(ctx, "count", wf_value_int(n))) < 0)
        return rc;

    size_t len = 0;
    const char *data;
    if (wf_value_get_string(wf_event_get(in, "data", wf_value_nil()), &data, &len) < 0) {
        wf_ctx_set_error(ctx, "the start event needs a string field 'data'");
        return WF_EINVAL;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "Processed %lld times, data length: %zu", (long long)n, len);
    wf_value result;
    if ((rc = wf_value_string(&result, msg)) < 0)
        return rc;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, result);
}

/*
 * Defines the quick-start workflow (one step on StartEvent -> StopEvent) on
 * registry reg (NULL: a private one).
 */
static inline int quickstart_workflow_on(wf_registry *reg, wf_workflow **out)
{
    int rc = wf_workflow_new(out, "MyWorkflow", reg);
    if (rc < 0)
        return rc;
    const wf_event_type *accepts[] = {wf_workflow_builtin(*out, WF_START_EVENT)};
    const wf_event_type *emits[] = {wf_workflow_builtin(*out, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = 1;
    if ((rc = wf_workflow_add_step(*out, "my_step", quickstart_step, &p, NULL)) < 0) {
        wf_workflow_free(*out);
        *out = NULL;
    }
    return rc;
}

static inline int quickstart_workflow(wf_workflow **out)
{
    return quickstart_workflow_on(NULL, out);
}

#endif
