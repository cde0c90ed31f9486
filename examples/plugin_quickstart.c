/*
 * plugin_quickstart.c: the quick start as a wf plugin (quickstart.so).
 *
 *     wf run quickstart.so --input '{"data": "Hello, world!"}'
 *
 * Also a second workflow, "failing", whose step fails when the start event
 * has "fail": true (for the CLI's tests and for trying error output).
 * Built with nothing but `pkg-config --cflags --libs wf`.
 */
#include <wf/wf.h>

#include "quickstart_step.h"

static int build_quickstart(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    /* the shared step builds a workflow on a private registry; keep the plugin's */
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
    if ((rc = wf_workflow_add_step(*out, "my_step", quickstart_step, &p, NULL)) == 0)
        rc = wf_workflow_set_timeout(*out, 10000);
    return rc;
}

static const wf_plugin_workflow_def workflows[] = {
    {"MyWorkflow", "The LlamaIndex quick start: counts runs, reports the data's length",
     build_quickstart, NULL},
};

WF_PLUGIN_DEFINE("quickstart", "The quick-start workflow", workflows)
