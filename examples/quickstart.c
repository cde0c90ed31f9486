/*
 * quickstart.c: the LlamaIndex quick start in C.
 *
 * One step reads the start event's "data", counts its runs in the context
 * store and stops with a message. The same context is used for two runs, so
 * the count persists: the second run prints "Processed 2 times".
 */
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

#include "quickstart_step.h"

static int run_once(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, const char *data)
{
    wf_value v;
    wf_event *start;
    int rc = wf_value_string(&v, data);
    if (rc == 0)
        rc = wf_event_new1(&start, wf_workflow_builtin(wf, WF_START_EVENT), "data", v);
    if (rc < 0)
        return rc;
    wf_event *result = NULL;
    rc = wf_run(ex, wf, ctx, start, 10000, &result);
    if (rc < 0)
        return rc;
    const char *s;
    if (wf_value_get_string(wf_event_result(result), &s, NULL) == 0)
        printf("Workflow result: %s\n", s);
    wf_event_release(result);
    return 0;
}

int main(void)
{
    wf_workflow *wf = NULL;
    wf_executor *ex = NULL;
    wf_ctx *ctx = NULL;
    int rc = quickstart_workflow(&wf);
    if (rc < 0)
        goto fail;
    if ((rc = wf_workflow_set_timeout(wf, 10000)) < 0)
        goto fail;
    if ((rc = wf_executor_new(&ex, NULL)) < 0)
        goto fail;
    if ((rc = wf_ctx_new(&ctx, wf)) < 0)
        goto fail;
    if ((rc = run_once(ex, wf, ctx, "Hello, world!")) < 0)
        goto fail;
    if ((rc = run_once(ex, wf, ctx, "Hello, world!Hello, world!")) < 0)
        goto fail;
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return 0;
fail:
    fprintf(stderr, "quickstart: %s (%s)\n", wf_strerror(rc), wf_err_name(rc));
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return 1;
}
