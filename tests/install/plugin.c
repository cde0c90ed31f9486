/* plugin.c: the minimal plugin of docs/CLI.md, built by check_install.sh with
 * nothing but `pkg-config --cflags --libs wf` and run by the installed wf. */
#include <wf/wf.h>

static int hello(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)in;
    (void)user;
    wf_value r;
    int rc = wf_value_string(&r, "hello");
    if (rc < 0)
        return rc;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, r);
}

static int build_hello(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    int rc = wf_workflow_new(out, "hello", reg);
    if (rc < 0)
        return rc;
    const wf_event_type *start = wf_registry_builtin(reg, WF_START_EVENT);
    const wf_event_type *stop = wf_registry_builtin(reg, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &start;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    return wf_workflow_add_step(*out, "hello", hello, &p, NULL);
}

static const wf_plugin_workflow_def workflows[] = {
    {"hello", "Says hello", build_hello, NULL},
};
WF_PLUGIN_DEFINE("hello", "A minimal plugin", workflows)
