/*
 * badplug.c: broken plugins for the CLI tests, one per define:
 *   BAD_NOSYM  a shared object without the entry symbol
 *   BAD_ABI    wf_plugin_v1 returning ABI version 2
 *   BAD_V2     only a wf_plugin_v2 symbol (a plugin for a newer wf)
 */
#include <wf/wf.h>

#if defined(BAD_NOSYM)
WF_API int not_a_plugin(void);
WF_API int not_a_plugin(void)
{
    return 42;
}
#else
static int build(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)reg;
    (void)out;
    (void)user;
    return WF_ENOTSUP;
}
static const wf_plugin_workflow_def workflows[] = {{"x", NULL, build, NULL}};
static const wf_plugin_def def = {2, 0, "bad", NULL, workflows, 1};
#if defined(BAD_ABI)
WF_API const wf_plugin_def *wf_plugin_v1(void);
WF_API const wf_plugin_def *wf_plugin_v1(void)
{
    return &def;
}
#else
WF_API const wf_plugin_def *wf_plugin_v2(void);
WF_API const wf_plugin_def *wf_plugin_v2(void)
{
    return &def;
}
#endif
#endif
