/*
 * test_schema.c: typed events and typed state (schema.h): kinds checked
 * when fields are set (nested array/map elements and records, lax numbers,
 * nullable), required fields and defaults at emission (a step's returned
 * event, sends, the start event), subtypes, and the state schema (defaults
 * of a fresh context, writes of the wrong kind, edits, snapshot loading).
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

static wf_value str(const char *s)
{
    wf_value v;
    cr_assert_eq(wf_value_string(&v, s), 0);
    return v;
}

static int has(const char *needle)
{
    return strstr(wf_last_error_message(), needle) != NULL;
}

/* Order {id: int required, qty: double = 1.0, tags: [string], meta: {k: string required},
 * note: string nullable} */
static wf_schema *order_schema(void)
{
    wf_schema *meta, *s;
    cr_assert_eq(wf_schema_new(&meta), 0);
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = WF_STRING;
    f.required = 1;
    cr_assert_eq(wf_schema_add_field(meta, "k", &f), 0);
    cr_assert_eq(wf_schema_new(&s), 0);
    wf_schema_field_init(&f);
    f.kind = WF_INT;
    f.required = 1;
    cr_assert_eq(wf_schema_add_field(s, "id", &f), 0);
    cr_assert_eq(wf_schema_add_field(s, "id", &f), WF_EEXIST);
    wf_schema_field_init(&f);
    f.kind = WF_DOUBLE;
    f.has_default = 1;
    f.dflt = wf_value_double(1.0);
    cr_assert_eq(wf_schema_add_field(s, "qty", &f), 0);
    wf_schema_field_init(&f);
    f.kind = WF_ARRAY;
    f.elem_kind = WF_STRING;
    cr_assert_eq(wf_schema_add_field(s, "tags", &f), 0);
    wf_schema_field_init(&f);
    f.kind = WF_MAP;
    f.fields = meta;
    cr_assert_eq(wf_schema_add_field(s, "meta", &f), 0);
    wf_schema_free(meta); /* the field holds its own reference */
    wf_schema_field_init(&f);
    f.kind = WF_STRING;
    f.nullable = 1;
    cr_assert_eq(wf_schema_add_field(s, "note", &f), 0);
    return s;
}

static const wf_event_type *T_ORDER, *T_SUB;

static wf_registry *order_registry(void)
{
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    cr_assert_eq(wf_registry_add(reg, "Order", NULL, &T_ORDER), 0);
    cr_assert_eq(wf_registry_add(reg, "SubOrder", T_ORDER, &T_SUB), 0);
    wf_schema *s = order_schema();
    cr_assert_eq(wf_event_type_set_schema(T_ORDER, s), 0);
    cr_assert_eq(wf_event_type_set_schema(T_ORDER, s), WF_EEXIST);
    wf_schema_free(s);
    return reg;
}

Test(schema, bad_declarations_are_refused)
{
    wf_schema *s;
    cr_assert_eq(wf_schema_new(&s), 0);
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = 42;
    cr_assert_eq(wf_schema_add_field(s, "x", &f), WF_EINVAL);
    wf_schema_field_init(&f);
    cr_assert_eq(wf_schema_add_field(s, "a.b", &f), WF_EINVAL, "no dots: paths use them");
    f.kind = WF_INT;
    f.has_default = 1;
    f.dflt = str("seven");
    cr_assert_eq(wf_schema_add_field(s, "x", &f), WF_EINVAL, "a default of another kind");
    cr_assert(has("default of 'x': expected int, got string"), "%s", wf_last_error_message());
    wf_value_release(f.dflt);
    wf_schema_field_init(&f);
    f.kind = WF_STRING;
    f.fields = s;
    cr_assert_eq(wf_schema_add_field(s, "y", &f), WF_EINVAL, "nested schema on a string");
    cr_assert_eq(wf_schema_field_count(s), 0);
    wf_schema_free(s);
}

Test(schema, kinds_are_checked_when_fields_are_set)
{
    wf_registry *reg = order_registry();
    wf_event *ev;
    cr_assert_eq(wf_event_new1(&ev, T_ORDER, "id", str("seven")), WF_EKIND);
    cr_assert_null(ev);
    cr_assert(has("Order.id: expected int, got string"), "%s", wf_last_error_message());
    cr_assert_eq(wf_event_new2(&ev, T_ORDER, "id", wf_value_int(1), "qty", str("x")), WF_EKIND);
    cr_assert(has("Order.qty: expected double, got string"), "%s", wf_last_error_message());

    cr_assert_eq(wf_event_new1(&ev, T_ORDER, "id", wf_value_uint(7)), 0, "a uint fits an int");
    cr_assert_eq(wf_event_set(ev, "qty", wf_value_int(3)), 0, "an int is a number");
    wf_value tags;
    cr_assert_eq(wf_value_array_new(&tags, 2), 0);
    cr_assert_eq(wf_value_array_push(&tags, str("a")), 0);
    cr_assert_eq(wf_value_array_push(&tags, wf_value_int(2)), 0);
    cr_assert_eq(wf_event_set(ev, "tags", tags), WF_EKIND);
    cr_assert(has("Order.tags[1]: expected string, got int"), "%s", wf_last_error_message());
    wf_value meta;
    cr_assert_eq(wf_value_map_new(&meta, 1), 0);
    cr_assert_eq(wf_value_map_set(&meta, "other", wf_value_int(1)), 0);
    cr_assert_eq(wf_event_set(ev, "meta", wf_value_retain(meta)), WF_EFORMAT);
    cr_assert(has("Order.meta.k: required field missing"), "%s", wf_last_error_message());
    cr_assert_eq(wf_value_map_set(&meta, "k", wf_value_bool(1)), 0);
    cr_assert_eq(wf_event_set(ev, "meta", wf_value_retain(meta)), WF_EKIND);
    cr_assert(has("Order.meta.k: expected string, got bool"), "%s", wf_last_error_message());
    cr_assert_eq(wf_value_map_set(&meta, "k", str("v")), 0);
    cr_assert_eq(wf_event_set(ev, "meta", meta), 0);
    cr_assert_eq(wf_event_set(ev, "note", wf_value_nil()), 0, "nullable");
    cr_assert_eq(wf_event_set(ev, "qty", wf_value_nil()), WF_EKIND, "not nullable");
    cr_assert_eq(wf_event_set(ev, "extra", str("kept")), 0, "undeclared fields are allowed");
    cr_assert_eq(wf_event_check(ev), 0);
    wf_event_release(ev);
    wf_registry_free(reg);
}

Test(schema, declared_fields_are_checked_when_built)
{
    wf_registry *reg = order_registry();
    const wf_event_field *fid, *fqty;
    cr_assert_eq(wf_event_type_add_field(T_ORDER, "id", &fid), 0);
    cr_assert_eq(wf_event_type_add_field(T_ORDER, "qty", &fqty), 0);
    wf_event *ev;
    wf_value bad[2] = {wf_value_int(1), str("x")}; /* the string is released on failure */
    cr_assert_eq(wf_event_new_fields(&ev, T_ORDER, bad, 2), WF_EKIND);
    cr_assert_null(ev);
    cr_assert(has("Order.qty: expected double, got string"), "%s", wf_last_error_message());
    wf_value good[2] = {wf_value_uint(7), wf_value_int(3)};
    cr_assert_eq(wf_event_new_fields(&ev, T_ORDER, good, 2), 0);
    cr_assert_eq(wf_event_check(ev), 0);
    int64_t id = 0;
    cr_assert_eq(wf_value_get_int(wf_event_get_field(ev, fid, wf_value_nil()), &id), 0);
    cr_assert_eq(id, 7);
    wf_event_release(ev);
    wf_registry_free(reg);
}

Test(schema, check_fills_defaults_and_names_missing_required_fields)
{
    wf_registry *reg = order_registry();
    wf_event *ev;
    cr_assert_eq(wf_event_new(&ev, T_ORDER, 0), 0);
    cr_assert_eq(wf_event_check(ev), WF_EFORMAT);
    cr_assert(has("Order.id: required field missing"), "%s", wf_last_error_message());
    cr_assert_eq(wf_event_set(ev, "id", wf_value_int(1)), 0);
    cr_assert_eq(wf_event_check(ev), 0);
    double q = 0;
    cr_assert_eq(wf_value_get_double(wf_event_get(ev, "qty", wf_value_nil()), &q), 0);
    cr_assert(q == 1.0, "the default");
    wf_event_release(ev);

    /* a subtype is checked against its parent's schema */
    cr_assert_eq(wf_event_new1(&ev, T_SUB, "id", str("x")), WF_EKIND);
    cr_assert(has("SubOrder.id: expected int"), "%s", wf_last_error_message());
    cr_assert_eq(wf_event_new(&ev, T_SUB, 0), 0);
    cr_assert_eq(wf_event_check(ev), WF_EFORMAT);
    wf_event_release(ev);
    wf_registry_free(reg);
}

/* ---- at emission ---- */

static const wf_event_type *T_START, *T_STOP;
static int emit_mode; /* 0: return a bad Order, 1: send a bad Order, 2: good Order */

static int first(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in;
    (void)u;
    if (emit_mode == 1) {
        wf_event *bad;
        cr_assert_eq(wf_event_new(&bad, T_ORDER, 0), 0);
        int rc = wf_ctx_send_event(ctx, bad, NULL);
        cr_assert_eq(rc, WF_EFORMAT);
        cr_assert(has("Order.id: required field missing"), "%s", wf_last_error_message());
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(-1));
    }
    if (emit_mode == 2)
        return wf_event_new1(out, T_ORDER, "id", wf_value_int(5));
    return wf_event_new(out, T_ORDER, 0);
}

static int second(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    /* the default was filled in at emission */
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_retain(wf_event_get(in, "qty", wf_value_nil())));
}

static wf_workflow *order_wf(void)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "orders", NULL), 0);
    wf_registry *reg = wf_workflow_registry(wf);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_registry_add(reg, "Order", NULL, &T_ORDER), 0);
    wf_schema *s = order_schema();
    cr_assert_eq(wf_event_type_set_schema(T_ORDER, s), 0);
    wf_schema_free(s);
    const wf_event_type *e1[] = {T_ORDER, T_STOP};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = e1;
    p.n_emits = 2;
    cr_assert_eq(wf_workflow_add_step(wf, "first", first, &p, NULL), 0);
    p.accepts = &T_ORDER;
    p.emits = &T_STOP;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "second", second, &p, NULL), 0);
    return wf;
}

Test(schema, a_returned_event_is_checked_at_emission, .timeout = 60)
{
    wf_workflow *wf = order_wf();
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *start, *res = NULL;

    emit_mode = 0;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start, &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    const char *step, *msg;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, WF_EFORMAT);
    cr_assert_str_eq(step, "first");
    cr_assert(msg && strstr(msg, "Order.id: required field missing"), "%s", msg ? msg : "");
    wf_handler_free(h);

    emit_mode = 1;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, start, -1, &res), 0,
                 "the send was refused, the step went on");
    wf_event_release(res);

    emit_mode = 2;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, start, -1, &res), 0);
    double q = 0;
    cr_assert_eq(wf_value_get_double(wf_event_result(res), &q), 0);
    cr_assert(q == 1.0, "the receiver saw the default");
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(schema, the_start_event_is_checked, .timeout = 60)
{
    wf_workflow *wf = order_wf();
    wf_schema *s;
    cr_assert_eq(wf_schema_new(&s), 0);
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = WF_STRING;
    f.required = 1;
    cr_assert_eq(wf_schema_add_field(s, "query", &f), 0);
    cr_assert_eq(wf_event_type_set_schema(T_START, s), 0);
    cr_assert_eq(wf_schema_add_field(s, "late", &f), WF_EFROZEN, "attached: frozen");
    wf_schema_free(s);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *start;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    wf_handler *h = NULL;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start, &h), WF_EFORMAT);
    cr_assert(has("StartEvent.query: required field missing"), "%s", wf_last_error_message());
    cr_assert_null(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- state ---- */

static wf_workflow *state_wf(int with_schema)
{
    wf_workflow *wf = order_wf();
    if (!with_schema)
        return wf;
    wf_schema *user, *s;
    cr_assert_eq(wf_schema_new(&user), 0);
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = WF_STRING;
    f.has_default = 1;
    f.dflt = str("anon");
    cr_assert_eq(wf_schema_add_field(user, "name", &f), 0);
    wf_value_release(f.dflt);
    cr_assert_eq(wf_schema_new(&s), 0);
    wf_schema_field_init(&f);
    f.kind = WF_INT;
    f.has_default = 1;
    f.dflt = wf_value_int(0);
    cr_assert_eq(wf_schema_add_field(s, "counter", &f), 0);
    wf_schema_field_init(&f);
    f.kind = WF_MAP;
    f.fields = user;
    cr_assert_eq(wf_schema_add_field(s, "user", &f), 0);
    wf_schema_field_init(&f);
    f.kind = WF_MAP;
    f.elem_kind = WF_DOUBLE;
    cr_assert_eq(wf_schema_add_field(s, "scores", &f), 0);
    cr_assert_eq(wf_workflow_set_state_schema(wf, s), 0);
    cr_assert(wf_workflow_state_schema(wf) == s);
    wf_schema_free(user);
    wf_schema_free(s);
    return wf;
}

static int set_counter_string(wf_value *state, void *u)
{
    (void)u;
    return wf_value_map_set(state, "counter", str("many"));
}

Test(schema, state_starts_from_defaults_and_refuses_wrong_kinds)
{
    wf_workflow *wf = state_wf(1);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    wf_value v;
    int64_t n = -1;
    cr_assert_eq(wf_ctx_get(ctx, "counter", &v), 0);
    cr_assert_eq(wf_value_get_int(v, &n), 0);
    cr_assert_eq(n, 0);
    const char *s;
    size_t len;
    cr_assert_eq(wf_ctx_get(ctx, "user.name", &v), 0, "nested defaults");
    cr_assert_eq(wf_value_get_string(v, &s, &len), 0);
    cr_assert_str_eq(s, "anon");
    wf_value_release(v);

    cr_assert_eq(wf_ctx_set(ctx, "counter", str("x")), WF_EKIND);
    cr_assert(has("state.counter: expected int, got string"), "%s", wf_last_error_message());
    cr_assert_eq(wf_ctx_set(ctx, "user.name", wf_value_int(3)), WF_EKIND);
    cr_assert(has("state.user.name: expected string, got int"), "%s", wf_last_error_message());
    cr_assert_eq(wf_ctx_set(ctx, "scores.alice", str("high")), WF_EKIND);
    cr_assert(has("state.scores.alice: expected double, got string"), "%s",
              wf_last_error_message());
    cr_assert_eq(wf_ctx_set(ctx, "counter.deeper", wf_value_int(1)), WF_EKIND);
    cr_assert_eq(wf_ctx_set(ctx, "scores.alice", wf_value_int(9)), 0);
    cr_assert_eq(wf_ctx_set(ctx, "counter", wf_value_int(2)), 0);
    cr_assert_eq(wf_ctx_set(ctx, "free.form", str("anything")), 0, "undeclared paths are free");
    cr_assert_eq(wf_ctx_edit_state(ctx, set_counter_string, NULL), WF_EKIND);
    cr_assert_eq(wf_ctx_get(ctx, "counter", &v), 0);
    cr_assert_eq(wf_value_get_int(v, &n), 0);
    cr_assert_eq(n, 2, "a refused edit changes nothing");
    wf_ctx_free(ctx);
    wf_workflow_free(wf);
}

Test(schema, a_snapshot_is_checked_against_the_state_schema)
{
    wf_workflow *plain = state_wf(0), *typed = state_wf(1);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, plain), 0);
    cr_assert_eq(wf_ctx_set(ctx, "counter", str("many")), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    wf_ctx *loaded = NULL;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(typed, buf, len, 0, &loaded, &msg), WF_EMISMATCH);
    cr_assert_null(loaded);
    cr_assert(msg && strstr(msg, "state.counter: expected int, got string"), "%s", msg ? msg : "");
    wf_free(msg);
    wf_free(buf);
    cr_assert_eq(wf_ctx_set(ctx, "counter", wf_value_int(4)), 0);
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    cr_assert_eq(wf_ctx_load(typed, buf, len, 0, &loaded, NULL), 0);
    wf_ctx_free(loaded);
    wf_free(buf);
    wf_ctx_free(ctx);
    wf_workflow_free(plain);
    wf_workflow_free(typed);
}
