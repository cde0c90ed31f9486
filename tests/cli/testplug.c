/*
 * testplug.c: workflows for the wf command's tests (tests/cli/wf.bats).
 *   echo    stops with a map of the start event's fields (JSON round trips)
 *   fail    fails with WF_EINVAL and a message when "fail" is true, else echoes
 *   sleepy  waits for an event that never comes (no InputRequiredEvent): times out
 *   gate    echoes, but a start event with "wait": true waits for an event
 *           that never comes (for interrupting a batch with runs in flight);
 *           its timeout is 0.3 s (--timeout none overrides it)
 *   typed   echoes an Order (a StartEvent with a schema: "qty" a required int,
 *           "note" an optional string)
 *   twice   asks two questions (InputRequiredEvent "first?", then "second?",
 *           in two steps) and stops with "ANSWER1+ANSWER2"
 *   gated   streams Busy, then blocks in its step until a line can be read
 *           from the file (a FIFO) named by the input's "gate"; stops with it
 *           (a run in progress to SIGKILL, continued by a rerun)
 */
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

static int echo(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    wf_value m;
    int rc = wf_value_map_new(&m, wf_event_field_count(in));
    for (size_t i = 0; rc == 0 && i < wf_event_field_count(in); i++) {
        const char *k;
        wf_value v;
        wf_event_field_at(in, i, &k, &v);
        rc = wf_value_map_set(&m, k, wf_value_retain(v));
    }
    if (rc < 0)
        return rc;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, m);
}

static int fail(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int b = 0;
    if (wf_value_get_bool(wf_event_get(in, "fail", wf_value_nil()), &b) == 0 && b) {
        wf_ctx_set_error(ctx, "asked to fail");
        return WF_EINVAL;
    }
    return echo(ctx, in, out, user);
}

static int sleepy(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)in;
    (void)out;
    (void)user;
    wf_registry *reg = wf_workflow_registry(wf_ctx_workflow(ctx));
    /* tell the tests the run is going (once: the wait below never returns) */
    wf_event *note = NULL;
    if (wf_event_new1(&note, wf_registry_find(reg, "Sleeping"), NULL, wf_value_nil()) == 0)
        wf_ctx_write_event_to_stream(ctx, note);
    const wf_event_type *never = wf_registry_find(reg, "Never");
    wf_event *ev = NULL;
    int rc = wf_ctx_wait_for_event(ctx, never, wf_value_nil(), NULL, "never", WF_NO_TIMEOUT, &ev);
    wf_event_release(ev);
    return rc == 0 ? WF_EINVAL : rc;
}

static int gate(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int b = 0;
    if (wf_value_get_bool(wf_event_get(in, "wait", wf_value_nil()), &b) == 0 && b)
        return sleepy(ctx, in, out, user);
    return echo(ctx, in, out, user);
}

static int one_step(wf_registry *reg, const char *name, wf_step_fn fn, wf_workflow **out)
{
    int rc = wf_workflow_new(out, name, reg);
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
    return wf_workflow_add_step(*out, name, fn, &p, NULL);
}

static int build_echo(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    return one_step(reg, "echo", echo, out);
}

static int build_fail(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    return one_step(reg, "fail", fail, out);
}

static int build_sleepy(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    const wf_event_type *never;
    int rc = wf_registry_add(reg, "Never", NULL, &never);
    if (rc == 0)
        rc = wf_registry_add(reg, "Sleeping", NULL, &never);
    if (rc == 0)
        rc = one_step(reg, "sleepy", sleepy, out);
    if (rc == 0)
        rc = wf_workflow_set_validation(*out, 0); /* Never is consumed, never produced */
    return rc;
}

static int build_gate(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    const wf_event_type *never;
    int rc = wf_registry_add(reg, "Never", NULL, &never);
    if (rc == 0)
        rc = wf_registry_add(reg, "Sleeping", NULL, &never);
    if (rc == 0)
        rc = one_step(reg, "gate", gate, out);
    if (rc == 0)
        rc = wf_workflow_set_validation(*out, 0);
    /* the workflow's timeout: what a run recovered from a store gets */
    if (rc == 0)
        rc = wf_workflow_set_timeout(*out, 300);
    return rc;
}

static int build_typed(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    const wf_event_type *order;
    int rc = wf_registry_add(reg, "Order", wf_registry_builtin(reg, WF_START_EVENT), &order);
    if (rc < 0)
        return rc;
    wf_schema *s = NULL;
    if ((rc = wf_schema_new(&s)) < 0)
        return rc;
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = WF_INT;
    f.required = 1;
    rc = wf_schema_add_field(s, "qty", &f);
    wf_schema_field_init(&f);
    f.kind = WF_STRING;
    if (rc == 0)
        rc = wf_schema_add_field(s, "note", &f);
    if (rc == 0)
        rc = wf_event_type_set_schema(order, s);
    wf_schema_free(s);
    if (rc < 0)
        return rc;
    if ((rc = wf_workflow_new(out, "typed", reg)) < 0)
        return rc;
    const wf_event_type *accepts[] = {order};
    const wf_event_type *emits[] = {wf_registry_builtin(reg, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = 1;
    return wf_workflow_add_step(*out, "typed", echo, &p, NULL);
}

/* Asks prefix and waits for a HumanResponseEvent; *answer its "response". */
static int ask(wf_ctx *ctx, const char *prefix, const char **answer, wf_event **ev)
{
    wf_registry *reg = wf_workflow_registry(wf_ctx_workflow(ctx));
    wf_event *q = NULL;
    wf_value p;
    int rc = wf_value_string(&p, prefix);
    if (rc == 0)
        rc = wf_event_new1(&q, wf_registry_builtin(reg, WF_INPUT_REQUIRED_EVENT), "prefix", p);
    if (rc < 0)
        return rc;
    rc = wf_ctx_wait_for_event(ctx, wf_registry_builtin(reg, WF_HUMAN_RESPONSE_EVENT),
                               wf_value_nil(), q, prefix, WF_NO_TIMEOUT, ev);
    if (rc != 0)
        return rc; /* WF_SUSPEND: asked */
    *answer = "";
    (void)wf_value_get_string(wf_event_get(*ev, "response", wf_value_nil()), answer, NULL);
    return 0;
}

static int twice_first(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)in;
    (void)user;
    const char *a;
    wf_event *ev = NULL;
    int rc = ask(ctx, "first?", &a, &ev);
    if (rc != 0)
        return rc;
    wf_value v;
    if ((rc = wf_value_string(&v, a)) == 0)
        rc = wf_event_new1(out, wf_registry_find(wf_workflow_registry(wf_ctx_workflow(ctx)), "Asked"),
                           "a", v);
    wf_event_release(ev);
    return rc;
}

static int twice_second(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    const char *a = "", *b;
    wf_event *ev = NULL;
    int rc = ask(ctx, "second?", &b, &ev);
    if (rc != 0)
        return rc;
    (void)wf_value_get_string(wf_event_get(in, "a", wf_value_nil()), &a, NULL);
    char text[256];
    snprintf(text, sizeof text, "%s+%s", a, b);
    wf_event_release(ev);
    wf_value v;
    if ((rc = wf_value_string(&v, text)) < 0)
        return rc;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

static int build_twice(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    const wf_event_type *asked;
    int rc = wf_registry_add(reg, "Asked", NULL, &asked);
    if (rc == 0)
        rc = wf_workflow_new(out, "twice", reg);
    if (rc < 0)
        return rc;
    const wf_event_type *start[] = {wf_registry_builtin(reg, WF_START_EVENT)};
    const wf_event_type *mid[] = {asked};
    const wf_event_type *stop[] = {wf_registry_builtin(reg, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = start;
    p.n_accepts = 1;
    p.emits = mid;
    p.n_emits = 1;
    if ((rc = wf_workflow_add_step(*out, "first", twice_first, &p, NULL)) < 0)
        return rc;
    p.accepts = mid;
    p.emits = stop;
    if ((rc = wf_workflow_add_step(*out, "second", twice_second, &p, NULL)) < 0)
        return rc;
    return wf_workflow_set_timeout(*out, WF_NO_TIMEOUT);
}

static int gated(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    wf_registry *reg = wf_workflow_registry(wf_ctx_workflow(ctx));
    const char *path = NULL;
    if (wf_value_get_string(wf_event_get(in, "gate", wf_value_nil()), &path, NULL) < 0) {
        wf_ctx_set_error(ctx, "the start event needs a string field 'gate'");
        return WF_EINVAL;
    }
    wf_event *note = NULL;
    if (wf_event_new1(&note, wf_registry_find(reg, "Busy"), NULL, wf_value_nil()) == 0)
        wf_ctx_write_event_to_stream(ctx, note);
    FILE *f = fopen(path, "r"); /* a FIFO: blocks until the test writes */
    char line[128] = "";
    if (f == NULL || fgets(line, sizeof line, f) == NULL) {
        if (f)
            fclose(f);
        wf_ctx_set_error(ctx, "cannot read the gate");
        return WF_EIO;
    }
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    wf_value v;
    int rc = wf_value_string(&v, line);
    if (rc < 0)
        return rc;
    return wf_event_new_stop(out, reg, NULL, v);
}

static int build_gated(wf_registry *reg, wf_workflow **out, void *user)
{
    (void)user;
    const wf_event_type *busy;
    int rc = wf_registry_add(reg, "Busy", NULL, &busy);
    if (rc == 0)
        rc = one_step(reg, "gated", gated, out);
    if (rc == 0)
        rc = wf_workflow_set_timeout(*out, WF_NO_TIMEOUT);
    return rc;
}

static const wf_plugin_workflow_def workflows[] = {
    {"echo", "Stops with the start event's fields", build_echo, NULL},
    {"fail", "Fails when the input has \"fail\": true", build_fail, NULL},
    {"sleepy", "Waits for ever (for timeouts and Ctrl-C)", build_sleepy, NULL},
    {"gate", "Echoes, or with \"wait\": true waits for ever", build_gate, NULL},
    {"typed", "Echoes an Order: a start event with a schema", build_typed, NULL},
    {"twice", "Asks two questions, one a step, and stops with both answers", build_twice, NULL},
    {"gated", "Blocks in its step until a line comes through the FIFO 'gate'", build_gated, NULL},
};

WF_PLUGIN_DEFINE("testplug", "Workflows for the CLI tests", workflows)
