/*
 * plugin_hitl.c: a human-in-the-loop workflow as a wf plugin (hitl.so).
 *
 * "approval": the step asks a human through an InputRequiredEvent
 * {prefix: "Approve <item>?"} and waits for a HumanResponseEvent; it stops
 * with "<item>: approved" when the response field is "yes", else
 * "<item>: rejected". With wf:
 *
 *     wf run hitl.so --input '{"item": "invoice 7"}'             # exit 4: waiting
 *     wf run hitl.so --input '{"item": "invoice 7"}' --respond '{"response": "yes"}'
 *
 * The step waits with wf_ctx_wait_for_event, so it runs again from the top
 * when the answer comes (replay: it does nothing before the wait that could
 * not be repeated).
 */
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

static int ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    wf_registry *reg = wf_workflow_registry(wf_ctx_workflow(ctx));
    const char *item = "item";
    (void)wf_value_get_string(wf_event_get(in, "item", wf_value_nil()), &item, NULL);
    char text[256];
    snprintf(text, sizeof text, "Approve %s?", item);
    wf_event *question = NULL;
    wf_value prefix;
    int rc = wf_value_string(&prefix, text);
    if (rc == 0)
        rc = wf_event_new1(&question, wf_registry_builtin(reg, WF_INPUT_REQUIRED_EVENT), "prefix",
                           prefix);
    if (rc < 0)
        return rc;
    wf_event *answer = NULL;
    rc = wf_ctx_wait_for_event(ctx, wf_registry_builtin(reg, WF_HUMAN_RESPONSE_EVENT),
                               wf_value_nil(), question, "approval", WF_NO_TIMEOUT, &answer);
    if (rc != 0)
        return rc; /* WF_SUSPEND: asked; or an error */
    const char *resp = "";
    (void)wf_value_get_string(wf_event_get(answer, "response", wf_value_nil()), &resp, NULL);
    snprintf(text, sizeof text, "%s: %s", item, strcmp(resp, "yes") == 0 ? "approved" : "rejected");
    wf_event_release(answer);
    wf_value result;
    if ((rc = wf_value_string(&result, text)) < 0)
        return rc;
    return wf_event_new_stop(out, reg, NULL, result);
}

static int build_approval(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    int rc = wf_workflow_new(out, "approval", reg);
    if (rc < 0)
        return rc;
    const wf_event_type *accepts[] = {wf_registry_builtin(reg, WF_START_EVENT)};
    const wf_event_type *emits[] = {wf_registry_builtin(reg, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = 1;
    if ((rc = wf_workflow_add_step(*out, "ask", ask, &p, NULL)) == 0)
        rc = wf_workflow_set_timeout(*out, WF_NO_TIMEOUT);
    return rc;
}

static const wf_plugin_workflow_def workflows[] = {
    {"approval", "Asks a human to approve an item (InputRequiredEvent / HumanResponseEvent)",
     build_approval, NULL},
};

WF_PLUGIN_DEFINE("hitl", "A human-in-the-loop workflow", workflows)
