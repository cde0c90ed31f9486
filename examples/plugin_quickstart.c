/*
 * plugin_quickstart.c: the quick start as a wf plugin (quickstart.so).
 *
 *     wf run quickstart.so --input '{"data": "Hello, world!"}'
 *
 * The workflow is examples/quickstart_step.h's, built on the plugin's
 * registry. Built with nothing but `pkg-config --cflags --libs wf`.
 */
#include <wf/wf.h>

#include "quickstart_step.h"

static int build_quickstart(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    /* on the plugin's registry, so that its event types are the plugin's */
    int rc = quickstart_workflow_on(reg, out);
    if (rc == 0 && (rc = wf_workflow_set_timeout(*out, 10000)) < 0) {
        wf_workflow_free(*out);
        *out = NULL;
    }
    return rc;
}

static const wf_plugin_workflow_def workflows[] = {
    {"MyWorkflow", "The LlamaIndex quick start: counts runs, reports the data's length",
     build_quickstart, NULL},
};

WF_PLUGIN_DEFINE("quickstart", "The quick-start workflow", workflows)
