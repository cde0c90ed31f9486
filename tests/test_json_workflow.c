/*
 * test_json_workflow.c: libwf-json's workflow calls (json/workflow.c): the
 * representation (nodes, edges, event schemas, resources, num_workers, the
 * external step), JSON Schemas of event types, config resources (loaded,
 * selected and checked when the workflow is frozen; given to steps), and
 * start events from JSON checked against the start type's schema.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wf/json.h>
#include <wf/wf.h>

static const wf_event_type *T_START, *T_STOP, *T_ORDER;

static wf_value parse(const char *text)
{
    wf_value v;
    char *msg = NULL;
    cr_assert_eq(wf_json_parse_value(text, strlen(text), &v, &msg), 0, "%s", msg ? msg : "");
    return v;
}

static wf_value at(wf_value v, const char *key)
{
    wf_value out = wf_value_nil();
    cr_assert_eq(wf_value_map_get(v, key, &out), 0, "no '%s'", key);
    return out;
}

static const char *s_of(wf_value v)
{
    const char *s = NULL;
    size_t n;
    cr_assert_eq(wf_value_get_string(v, &s, &n), 0);
    return s;
}

/* The node with id, or nil. */
static wf_value node(wf_value rep, const char *id)
{
    wf_value nodes = at(rep, "nodes");
    for (size_t i = 0; i < wf_value_len(nodes); i++) {
        wf_value n;
        wf_value_array_at(nodes, i, &n);
        if (strcmp(s_of(at(n, "id")), id) == 0)
            return n;
    }
    return wf_value_nil();
}

static int has_edge(wf_value rep, const char *src, const char *dst, const char *label)
{
    wf_value edges = at(rep, "edges");
    for (size_t i = 0; i < wf_value_len(edges); i++) {
        wf_value e;
        wf_value_array_at(edges, i, &e);
        wf_value l = at(e, "label");
        if (strcmp(s_of(at(e, "source")), src) == 0 && strcmp(s_of(at(e, "target")), dst) == 0 &&
            (label ? wf_value_kind(l) == WF_STRING && strcmp(s_of(l), label) == 0
                   : wf_value_is_nil(l)))
            return 1;
    }
    return 0;
}

static int nop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)ctx;
    (void)in;
    (void)out;
    (void)u;
    return 0;
}

static int nop_factory(wf_ctx *ctx, void **out, void *u)
{
    (void)ctx;
    (void)u;
    *out = NULL;
    return 0;
}

static wf_workflow *rep_wf(void)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "shop", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    const wf_event_type *ask = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    const wf_event_type *answer = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Order", NULL, &T_ORDER), 0);
    wf_schema *s;
    cr_assert_eq(wf_schema_new(&s), 0);
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = WF_INT;
    f.required = 1;
    cr_assert_eq(wf_schema_add_field(s, "id", &f), 0);
    wf_schema_field_init(&f);
    f.kind = WF_ARRAY;
    f.elem_kind = WF_STRING;
    f.has_default = 1;
    cr_assert_eq(wf_value_array_new(&f.dflt, 0), 0);
    cr_assert_eq(wf_schema_add_field(s, "tags", &f), 0);
    wf_value_release(f.dflt);
    cr_assert_eq(wf_event_type_set_schema(T_ORDER, s), 0);
    wf_schema_free(s);

    wf_resource_params rp;
    wf_resource_params_init(&rp);
    rp.scope = WF_RESOURCE_WORKFLOW;
    cr_assert_eq(wf_workflow_add_resource(wf, "cfg", nop_factory, &rp, NULL), 0);
    const char *deps[] = {"cfg"};
    rp.scope = WF_RESOURCE_RUN;
    rp.depends = deps;
    rp.n_depends = 1;
    cr_assert_eq(wf_workflow_add_resource(wf, "db", nop_factory, &rp, NULL), 0);

    const char *uses[] = {"db"};
    const wf_event_type *e1[] = {T_ORDER, ask};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = e1;
    p.n_emits = 2;
    p.num_workers = 3;
    p.resources = uses;
    p.n_resources = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "take_order", nop, &p, NULL), 0);
    wf_step_params_init(&p);
    const wf_event_type *a2[] = {T_ORDER, answer};
    p.accepts = a2;
    p.n_accepts = 2;
    p.emits = &T_STOP;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "ship", nop, &p, NULL), 0);
    return wf;
}

Test(json_workflow, representation_has_nodes_edges_schemas_and_resources)
{
    wf_workflow *wf = rep_wf();
    wf_json_buf b;
    wf_json_buf_init(&b);
    cr_assert_eq(wf_json_write_representation(&b, wf), 0);
    wf_value rep = parse(b.data);
    cr_assert_str_eq(s_of(at(rep, "name")), "shop");
    cr_assert_str_eq(s_of(at(rep, "start_event")), "StartEvent");

    wf_value step = node(rep, "take_order");
    cr_assert_str_eq(s_of(at(step, "node_type")), "step");
    int64_t nw = 0;
    cr_assert_eq(wf_value_get_int(at(step, "num_workers"), &nw), 0);
    cr_assert_eq(nw, 3);

    wf_value order = node(rep, "Order");
    cr_assert_str_eq(s_of(at(order, "node_type")), "event");
    wf_value schema = at(order, "event_schema");
    cr_assert_str_eq(s_of(at(schema, "title")), "Order");
    wf_value id = at(at(schema, "properties"), "id");
    cr_assert_str_eq(s_of(at(id, "type")), "integer");
    wf_value tags = at(at(schema, "properties"), "tags");
    cr_assert_str_eq(s_of(at(at(tags, "items"), "type")), "string");
    cr_assert_eq(wf_value_len(at(tags, "default")), 0);
    wf_value producer = wf_value_nil();
    cr_assert_eq(wf_value_array_at(at(order, "produced_by"), 0, &producer), 0);
    cr_assert_str_eq(s_of(producer), "take_order");
    cr_assert(wf_value_is_nil(at(node(rep, "StartEvent"), "event_schema")));

    wf_value db = node(rep, "resource_db");
    cr_assert_str_eq(s_of(at(db, "node_type")), "resource");
    cr_assert_str_eq(s_of(at(db, "scope")), "run");
    cr_assert_str_eq(s_of(at(node(rep, "resource_cfg"), "scope")), "workflow");
    cr_assert_str_eq(s_of(at(node(rep, "external_step"), "node_type")), "external");

    cr_assert(has_edge(rep, "StartEvent", "take_order", NULL));
    cr_assert(has_edge(rep, "take_order", "Order", NULL));
    cr_assert(has_edge(rep, "Order", "ship", NULL));
    cr_assert(has_edge(rep, "take_order", "resource_db", "db"));
    cr_assert(has_edge(rep, "resource_db", "resource_cfg", "cfg"));
    cr_assert(has_edge(rep, "InputRequiredEvent", "external_step", NULL));
    cr_assert(has_edge(rep, "external_step", "HumanResponseEvent", NULL));
    wf_value_release(rep);
    wf_json_buf_free(&b);
    wf_workflow_free(wf);
}

/* ---- config resources ---- */

static char cfg_path[64];

static void write_cfg(const char *text)
{
    snprintf(cfg_path, sizeof cfg_path, "/tmp/wf-cfg-XXXXXX.json");
    int fd = mkstemps(cfg_path, 5);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int use_cfg(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in;
    (void)u;
    void *r = NULL;
    int rc = wf_ctx_resource(ctx, "llm", &r);
    if (rc < 0)
        return rc;
    const wf_value *cfg = r;
    wf_value model = wf_value_nil();
    cr_assert_eq(wf_value_map_get(*cfg, "model", &model), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_retain(model));
}

static wf_schema *llm_schema(void)
{
    wf_schema *s;
    cr_assert_eq(wf_schema_new(&s), 0);
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = WF_STRING;
    f.required = 1;
    cr_assert_eq(wf_schema_add_field(s, "model", &f), 0);
    return s;
}

static wf_workflow *cfg_wf(const char *selector, int with_schema)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "cfg", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_schema *s = with_schema ? llm_schema() : NULL;
    cr_assert_eq(wf_json_add_config_resource(wf, "llm", cfg_path, selector, s), 0);
    wf_schema_free(s);
    const char *uses[] = {"llm"};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = &T_STOP;
    p.n_emits = 1;
    p.resources = uses;
    p.n_resources = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "use", use_cfg, &p, NULL), 0);
    return wf;
}

Test(json_workflow, a_config_resource_is_loaded_checked_and_given_to_steps, .timeout = 60)
{
    write_cfg("{\"agents\": {\"llm\": {\"model\": \"m1\", \"temperature\": 0.5}}}");
    wf_workflow *wf = cfg_wf("agents.llm", 1);
    char *msg = NULL;
    cr_assert_eq(wf_workflow_validate(wf, &msg), 0, "%s", msg ? msg : "");
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *start, *res = NULL;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, start, -1, &res), 0);
    cr_assert_str_eq(s_of(wf_event_result(res)), "m1");
    wf_event_release(res);
    wf_executor_free(ex);

    wf_json_buf b;
    wf_json_buf_init(&b);
    cr_assert_eq(wf_json_write_representation(&b, wf), 0);
    wf_value rep = parse(b.data);
    wf_value n = node(rep, "resource_llm");
    cr_assert_str_eq(s_of(at(n, "node_type")), "resource_config");
    cr_assert_str_eq(s_of(at(n, "path_selector")), "agents.llm");
    cr_assert_str_eq(s_of(at(at(n, "config_value"), "model")), "m1");
    wf_value model = at(at(at(n, "config_schema"), "properties"), "model");
    cr_assert_str_eq(s_of(at(model, "type")), "string");
    wf_value_release(rep);
    wf_json_buf_free(&b);
    wf_workflow_free(wf);
    unlink(cfg_path);
}

static void expect_invalid(const char *selector, int with_schema, const char *needle)
{
    wf_workflow *wf = cfg_wf(selector, with_schema);
    char *msg = NULL;
    cr_assert_eq(wf_workflow_validate(wf, &msg), WF_EVALIDATION);
    cr_assert(msg && strstr(msg, "Resource 'llm'") && strstr(msg, needle), "%s", msg ? msg : "");
    wf_free(msg);
    wf_workflow_free(wf);
}

Test(json_workflow, config_resource_errors_fail_validation_naming_it)
{
    write_cfg("{\"agents\": {\"llm\": {\"model\": 3}, \"list\": [1]}}");
    expect_invalid("agents.nope", 0, "expected an object at 'agents.nope'");
    expect_invalid("agents.list", 0, "expected an object at 'agents.list'");
    expect_invalid("agents.llm", 1, "agents.llm.model: expected string, got int");
    unlink(cfg_path);
    expect_invalid("agents.llm", 0, "cannot read JSON");
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "x", NULL), 0);
    cr_assert_eq(wf_json_add_config_resource(wf, "c", "/tmp/config.yaml", NULL, NULL), WF_EINVAL);
    wf_workflow_free(wf);
}

/* ---- start events from JSON ---- */

Test(json_workflow, start_events_from_json_are_checked_against_the_schema)
{
    wf_workflow *wf = rep_wf();
    wf_schema *s;
    cr_assert_eq(wf_schema_new(&s), 0);
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = WF_STRING;
    f.required = 1;
    cr_assert_eq(wf_schema_add_field(s, "query", &f), 0);
    wf_schema_field_init(&f);
    f.kind = WF_INT;
    f.has_default = 1;
    f.dflt = wf_value_int(10);
    cr_assert_eq(wf_schema_add_field(s, "limit", &f), 0);
    cr_assert_eq(wf_event_type_set_schema(T_START, s), 0);
    wf_schema_free(s);

    wf_event *ev = NULL;
    char *msg = NULL;
    cr_assert_eq(wf_json_parse_start(wf, "{}", 2, &ev, &msg), WF_EFORMAT);
    cr_assert(msg && strstr(msg, "StartEvent.query: required field missing"), "%s", msg);
    wf_json_free_message(msg);
    msg = NULL;
    const char *bad = "{\"query\": 7}";
    cr_assert_eq(wf_json_parse_start(wf, bad, strlen(bad), &ev, &msg), WF_EKIND);
    cr_assert(msg && strstr(msg, "StartEvent.query: expected string, got int"), "%s", msg);
    wf_json_free_message(msg);
    msg = NULL;
    const char *good = "{\"query\": \"shoes\"}";
    cr_assert_eq(wf_json_parse_start(wf, good, strlen(good), &ev, &msg), 0, "%s", msg ? msg : "");
    int64_t limit = 0;
    cr_assert_eq(wf_value_get_int(wf_event_get(ev, "limit", wf_value_nil()), &limit), 0);
    cr_assert_eq(limit, 10, "the default");
    wf_event_release(ev);

    /* the schema is in the representation */
    wf_json_buf b;
    wf_json_buf_init(&b);
    cr_assert_eq(wf_json_write_schema(&b, T_START), 0);
    wf_value js = parse(b.data);
    wf_value req = at(js, "required");
    cr_assert_eq(wf_value_len(req), 1);
    wf_value r0;
    wf_value_array_at(req, 0, &r0);
    cr_assert_str_eq(s_of(r0), "query");
    wf_value_release(js);
    wf_json_buf_free(&b);
    wf_workflow_free(wf);
}

/* ---- child workflows a step declares ---- */

/* "id/node_type,..." of every node, then "source>target:label,..." of every edge, in order. */
static void rep_lists(wf_value rep, char *nodes, char *edges, size_t cap)
{
    nodes[0] = edges[0] = 0;
    wf_value ns = at(rep, "nodes"), es = at(rep, "edges");
    for (size_t i = 0; i < wf_value_len(ns); i++) {
        wf_value n = wf_value_nil();
        cr_assert_eq(wf_value_array_at(ns, i, &n), 0);
        size_t len = strlen(nodes);
        snprintf(nodes + len, cap - len, "%s%s/%s", i ? "," : "", s_of(at(n, "id")),
                 s_of(at(n, "node_type")));
    }
    for (size_t i = 0; i < wf_value_len(es); i++) {
        wf_value e = wf_value_nil();
        cr_assert_eq(wf_value_array_at(es, i, &e), 0);
        wf_value label = at(e, "label");
        size_t len = strlen(edges);
        snprintf(edges + len, cap - len, "%s%s>%s:%s", i ? "," : "", s_of(at(e, "source")),
                 s_of(at(e, "target")), wf_value_is_nil(label) ? "-" : s_of(label));
    }
}

Test(json_workflow, representation_has_the_child_workflows_steps_declare)
{
    wf_workflow *child, *wf;
    cr_assert_eq(wf_workflow_new(&child, "helper", NULL), 0);
    const wf_event_type *cs = wf_workflow_builtin(child, WF_START_EVENT);
    const wf_event_type *ce = wf_workflow_builtin(child, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &cs;
    p.n_accepts = 1;
    p.emits = &ce;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(child, "work", nop, &p, NULL), 0);
    cr_assert_eq(wf_workflow_new(&wf, "boss", NULL), 0);
    const wf_event_type *s = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *e = wf_workflow_builtin(wf, WF_STOP_EVENT), *mid;
    cr_assert_eq(wf_workflow_event_type(wf, "Mid", NULL, &mid), 0);
    p.accepts = &s;
    p.emits = &mid;
    cr_assert_eq(wf_workflow_add_step(wf, "plan", nop, &p, NULL), 0);
    p.accepts = &mid;
    p.emits = &e;
    cr_assert_eq(wf_workflow_add_step(wf, "act", nop, &p, NULL), 0);
    cr_assert_eq(wf_workflow_declare_child(wf, "plan", child), 0);
    cr_assert_eq(wf_workflow_declare_child(wf, "act", child), 0);
    cr_assert_eq(wf_workflow_declare_child(wf, "act", wf), 0); /* a recursion */

    wf_json_buf b;
    wf_json_buf_init(&b);
    cr_assert_eq(wf_json_write_representation(&b, wf), 0);
    wf_value rep = parse(b.data);
    char nodes[1024], edges[1024];
    rep_lists(rep, nodes, edges, sizeof nodes);
    /* one node per child workflow, after the step that first declares it */
    cr_assert_str_eq(nodes, "plan/step,StartEvent/event,Mid/event,workflow_helper/workflow,"
                            "act/step,StopEvent/event,workflow_boss/workflow");
    cr_assert_str_eq(edges, "plan>Mid:-,StartEvent>plan:-,plan>workflow_helper:runs,"
                            "act>StopEvent:-,Mid>act:-,act>workflow_helper:runs,"
                            "act>workflow_boss:runs");
    wf_value h = node(rep, "workflow_helper");
    cr_assert_str_eq(s_of(at(h, "label")), "helper");
    cr_assert(wf_value_is_nil(at(h, "description")));
    wf_value_release(rep);
    wf_json_buf_free(&b);

    /* the child's own representation has no workflow node */
    wf_json_buf_init(&b);
    cr_assert_eq(wf_json_write_representation(&b, child), 0);
    cr_assert_null(strstr(b.data, "\"node_type\":\"workflow\""));
    wf_json_buf_free(&b);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}
