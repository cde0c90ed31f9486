/*
 * test_graph.c: DOT and Mermaid export of all possible flows.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wf/wf.h>

static int nop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

static wf_workflow *wf;

static void add(const char *name, const wf_event_type *acc, const wf_event_type *e1,
                const wf_event_type *e2)
{
    const wf_event_type *accepts[] = {acc};
    const wf_event_type *emits[2] = {e1, e2};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = e2 ? 2 : 1;
    cr_assert_eq(wf_workflow_add_step(wf, name, nop, &p, NULL), 0);
}

static void setup(void)
{
    cr_assert_eq(wf_workflow_new(&wf, "Graph \"demo\"", NULL), 0);
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    const wf_event_type *a, *b;
    cr_assert_eq(wf_workflow_event_type(wf, "Query", NULL, &a), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "a\"b", NULL, &b), 0);
    add("start", start, a, NULL);
    add("think", a, b, stop);
    add("weird \"step\"", b, stop, NULL);
}

static void teardown(void)
{
    wf_workflow_free(wf);
}

TestSuite(graph, .init = setup, .fini = teardown);

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

Test(graph, dot_has_every_node_edge_and_colour)
{
    char *dot = NULL;
    cr_assert_eq(wf_workflow_to_dot(wf, &dot), 0);
    cr_assert(strncmp(dot, "digraph \"Graph \\\"demo\\\"\" {", 26) == 0, "%s", dot);
    /* three steps as boxes, four events as ellipses */
    cr_assert_eq(count(dot, "shape=box"), 3);
    cr_assert_eq(count(dot, "shape=ellipse"), 4);
    cr_assert(strstr(dot, "step_0 [label=\"start\", shape=box") != NULL);
    cr_assert(strstr(dot, "[label=\"weird \\\"step\\\"\", shape=box") != NULL);
    cr_assert(strstr(dot, "[label=\"a\\\"b\", shape=ellipse") != NULL);
    /* start green, stop red */
    cr_assert(strstr(dot, "event_0 [label=\"StartEvent\", shape=ellipse, style=filled, "
                          "fillcolor=\"#90EE90\"]") != NULL,
              "%s", dot);
    cr_assert(strstr(dot, "event_1 [label=\"StopEvent\", shape=ellipse, style=filled, "
                          "fillcolor=\"#FFA07A\"]") != NULL,
              "%s", dot);
    /* edges both ways: event -> step (accepts), step -> event (emits) */
    cr_assert(strstr(dot, "event_0 -> step_0;") != NULL);
    /* the first type after the built-ins */
    char s0_e[32], e_s1[32];
    snprintf(s0_e, sizeof s0_e, "step_0 -> event_%d;", WF_BUILTIN_COUNT);
    snprintf(e_s1, sizeof e_s1, "event_%d -> step_1;", WF_BUILTIN_COUNT);
    cr_assert(strstr(dot, s0_e) != NULL, "%s", dot);
    cr_assert(strstr(dot, e_s1) != NULL);
    cr_assert(strstr(dot, "step_1 -> event_1;") != NULL);
    cr_assert(strstr(dot, "step_2 -> event_1;") != NULL);
    cr_assert_eq(count(dot, "->"), 7);
    wf_free(dot);
}

Test(graph, mermaid_has_every_node_edge_and_class)
{
    char *mm = NULL;
    cr_assert_eq(wf_workflow_to_mermaid(wf, &mm), 0);
    cr_assert(strncmp(mm, "flowchart TD\n", 13) == 0);
    cr_assert(strstr(mm, "step_0[\"start\"]:::step") != NULL, "%s", mm);
    cr_assert(strstr(mm, "step_2[\"weird #quot;step#quot;\"]:::step") != NULL, "%s", mm);
    cr_assert(strstr(mm, "event_0([\"StartEvent\"]):::startEvent") != NULL);
    cr_assert(strstr(mm, "event_1([\"StopEvent\"]):::stopEvent") != NULL);
    cr_assert(strstr(mm, "([\"a#quot;b\"]):::event") != NULL);
    cr_assert(strstr(mm, "event_0 --> step_0") != NULL);
    cr_assert(strstr(mm, "step_1 --> event_1") != NULL);
    cr_assert_eq(count(mm, "-->"), 7);
    cr_assert(strstr(mm, "classDef startEvent") != NULL);
    cr_assert(strstr(mm, "classDef stopEvent") != NULL);
    wf_free(mm);
}

Test(graph, graphviz_accepts_the_dot)
{
    if (access("/usr/bin/dot", X_OK) != 0) {
        cr_skip_test("graphviz is not installed (apt-get install graphviz)");
    }
    char *dot = NULL;
    cr_assert_eq(wf_workflow_to_dot(wf, &dot), 0);
    char path[] = "/tmp/wf_graph_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(dot, f);
    fclose(f);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/dot -Tsvg %s -o /dev/null 2>&1", path);
    int rc = system(cmd);
    unlink(path);
    cr_assert_eq(rc, 0, "dot -Tsvg failed on:\n%s", dot);
    wf_free(dot);
}

Test(graph, null_arguments)
{
    char *out = (char *)1;
    cr_assert_eq(wf_workflow_to_dot(NULL, &out), WF_EINVAL);
    cr_assert_null(out);
    cr_assert_eq(wf_workflow_to_mermaid(wf, NULL), WF_EINVAL);
}
