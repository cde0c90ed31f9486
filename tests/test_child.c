/*
 * test_child.c: child workflows (wf_ctx_run_child): results, mapping,
 * argument errors, a failing child and the parent's retry, the parent's
 * cancel and timeout reaching the child, a child's timeout, stream
 * forwarding, nesting 3 deep, a fan-out of children, num_concurrent_runs
 * on one worker, the observation link, and a parent parked with a child
 * in progress then resumed.
 */
#include "harness.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

static wf_executor *exec_n(uint32_t n)
{
    wf_executor_params p;
    wf_executor_params_init(&p);
    p.threads = n;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &p), 0);
    return ex;
}

static void add(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *acc,
                const wf_event_type *em, uint32_t workers, void *user)
{
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &acc;
    p.n_accepts = 1;
    p.emits = &em;
    p.n_emits = 1;
    if (workers)
        p.num_workers = workers;
    cr_assert_eq(wf_workflow_add_step(wf, name, fn, &p, user), 0);
}

static int64_t field_i(const wf_event *e, const char *key)
{
    int64_t v = -1;
    wf_value_get_int(wf_event_get(e, key, wf_value_nil()), &v);
    return v;
}

static wf_event *start_i(wf_workflow *wf, int64_t i)
{
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, wf_workflow_builtin(wf, WF_START_EVENT), "i", wf_value_int(i)),
                 0);
    return e;
}

static wf_event *stop_i(wf_ctx *ctx, int64_t i)
{
    wf_event *e = NULL;
    (void)wf_event_new_stop(&e, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, wf_value_int(i));
    return e;
}

/* ---- a child: doubles "i"; fails for i < 0 ---- */

static int double_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t i = field_i(in, "i");
    if (i < 0) {
        (void)wf_ctx_set_error(ctx, "negative input");
        return WF_ESTEP;
    }
    *out = stop_i(ctx, 2 * i);
    return *out ? 0 : WF_ENOMEM;
}

static wf_workflow *doubler(wf_registry *reg)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "doubler", reg), 0);
    add(wf, "double", double_step, wf_workflow_builtin(wf, WF_START_EVENT),
        wf_workflow_builtin(wf, WF_STOP_EVENT), 0, NULL);
    return wf;
}

/* on_result: the child's result + 1 as the parent's StopEvent */
static int plus_one(const wf_event *result, wf_event **out, void *user)
{
    const wf_registry *reg = user;
    return wf_event_new_stop(out, reg, NULL, wf_value_int(field_i(result, "result") + 1));
}

typedef struct parent_cfg {
    wf_workflow *child;
    wf_child_params params;
    int64_t offset; /* added to the parent's input for the child's */
} parent_cfg;

static int parent_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    parent_cfg *cfg = u;
    wf_event *s;
    int rc = wf_event_new1(&s, wf_workflow_builtin(cfg->child, WF_START_EVENT), "i",
                           wf_value_int(field_i(in, "i") + cfg->offset));
    if (rc < 0)
        return rc;
    return wf_ctx_run_child(ctx, cfg->child, s, &cfg->params);
}

static wf_workflow *parent_of(parent_cfg *cfg, wf_registry *reg, wf_retry_policy *retry)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "parent", reg), 0);
    const wf_event_type *acc = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *em = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &acc;
    p.n_accepts = 1;
    p.emits = &em;
    p.n_emits = 1;
    p.retry = retry;
    cr_assert_eq(wf_workflow_add_step(wf, "spawn", parent_step, &p, cfg), 0);
    wf_retry_policy_free(retry);
    return wf;
}

static int64_t result_of(wf_event *stop)
{
    int64_t v = field_i(stop, "result");
    wf_event_release(stop);
    return v;
}

Test(child, result_mapped_by_on_result)
{
    wf_executor *ex = exec_n(2);
    wf_workflow *child = doubler(NULL);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);
    wf_workflow *wf = parent_of(&cfg, NULL, NULL);
    cfg.params.on_result = plus_one;
    cfg.params.user = wf_workflow_registry(wf);
    wf_event *res = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, start_i(wf, 20), -1, &res), 0);
    cr_assert_eq(result_of(res), 41);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}

Test(child, shared_registry_result_is_returned)
{
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    wf_executor *ex = exec_n(2);
    wf_workflow *child = doubler(reg);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);
    wf_workflow *wf = parent_of(&cfg, reg, NULL);
    wf_event *res = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, start_i(wf, 5), -1, &res), 0);
    cr_assert_eq(result_of(res), 10); /* the child's StopEvent stops the parent */
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
    wf_registry_free(reg);
}

Test(child, other_registry_without_mapping_fails_the_step)
{
    wf_executor *ex = exec_n(2);
    wf_workflow *child = doubler(NULL);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);
    wf_workflow *wf = parent_of(&cfg, NULL, NULL);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_i(wf, 1), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    const char *step, *msg;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, WF_ETYPE);
    cr_assert_str_eq(step, "spawn");
    cr_assert(strstr(msg, "doubler") != NULL, "%s", msg);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}

static int map_fails(const wf_event *result, wf_event **out, void *user)
{
    return WF_ERANGE;
}

Test(child, on_result_error_fails_the_step)
{
    wf_executor *ex = exec_n(2);
    wf_workflow *child = doubler(NULL);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);
    cfg.params.on_result = map_fails;
    wf_workflow *wf = parent_of(&cfg, NULL, NULL);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_i(wf, 1), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    cr_assert_eq(wf_handler_error(h, &code, NULL, NULL), 0);
    cr_assert_eq(code, WF_ERANGE);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}

/* ---- argument errors, checked inside a step and reported back as its result ---- */

static wf_workflow *g_child, *g_invalid;
static atomic_int g_free_calls;

static void count_free(void *u)
{
    atomic_fetch_add(&g_free_calls, 1);
}

static int errors_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int codes[8];
    wf_event *s;
    wf_event_new1(&s, wf_workflow_builtin(g_child, WF_START_EVENT), "i", wf_value_int(1));
    codes[0] = wf_ctx_run_child(NULL, g_child, s, NULL);
    wf_event_new1(&s, wf_workflow_builtin(g_child, WF_START_EVENT), "i", wf_value_int(1));
    codes[1] = wf_ctx_run_child(ctx, NULL, s, NULL);
    codes[2] = wf_ctx_run_child(ctx, g_child, NULL, NULL);
    /* a start event of the wrong type: a StartEvent of another registry */
    wf_event_new1(&s, wf_workflow_builtin(g_invalid, WF_START_EVENT), "i", wf_value_int(1));
    codes[3] = wf_ctx_run_child(ctx, g_child, s, NULL);
    wf_event_new1(&s, wf_workflow_builtin(g_invalid, WF_START_EVENT), "i", wf_value_int(1));
    wf_child_params p;
    wf_child_params_init(&p);
    p.user_free = count_free;
    codes[4] = wf_ctx_run_child(ctx, g_invalid, s, &p);
    /* a bad timeout */
    wf_event_new1(&s, wf_workflow_builtin(g_child, WF_START_EVENT), "i", wf_value_int(1));
    wf_child_params_init(&p);
    p.timeout_ms = -7;
    codes[5] = wf_ctx_run_child(ctx, g_child, s, &p);
    /* one that works, then a second one in the same invocation */
    wf_event_new1(&s, wf_workflow_builtin(g_child, WF_START_EVENT), "i", wf_value_int(1));
    codes[6] = wf_ctx_run_child(ctx, g_child, s, NULL);
    wf_event_new1(&s, wf_workflow_builtin(g_child, WF_START_EVENT), "i", wf_value_int(1));
    codes[7] = wf_ctx_run_child(ctx, g_child, s, NULL);
    wf_value list = wf_value_nil();
    (void)wf_value_array_new(&list, 8);
    for (int i = 0; i < 8; i++)
        (void)wf_value_array_push(&list, wf_value_int(codes[i]));
    (void)wf_ctx_set(ctx, "codes", list);
    return codes[6]; /* WF_PENDING: the child that started finishes the step */
}

static int unhandled_emit(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

Test(child, argument_errors)
{
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    wf_executor *ex = exec_n(2);
    g_child = doubler(reg);
    /* invalid: its only step emits an event nothing accepts, and no step stops it */
    cr_assert_eq(wf_workflow_new(&g_invalid, "invalid", NULL), 0);
    const wf_event_type *orphan;
    cr_assert_eq(wf_workflow_event_type(g_invalid, "Orphan", NULL, &orphan), 0);
    add(g_invalid, "nowhere", unhandled_emit, wf_workflow_builtin(g_invalid, WF_START_EVENT),
        orphan, 0, NULL);
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "errors", reg), 0);
    add(wf, "try", errors_step, wf_workflow_builtin(wf, WF_START_EVENT),
        wf_workflow_builtin(wf, WF_STOP_EVENT), 0, NULL);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);

    /* outside a step */
    wf_event *s = start_i(g_child, 1);
    cr_assert_eq(wf_ctx_run_child(ctx, g_child, s, NULL), WF_ESTATE);

    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, ctx, start_i(wf, 0), &h), 0);
    wf_event *res = NULL;
    int wrc = wf_handler_wait(h, -1, &res);
    const char *emsg = NULL;
    (void)wf_handler_error(h, NULL, NULL, &emsg);
    cr_assert_eq(wrc, 0, "%s", emsg ? emsg : "");
    cr_assert_eq(result_of(res), 2); /* the child that started */
    wf_value codes;
    cr_assert_eq(wf_ctx_get(ctx, "codes", &codes), 0);
    int want[8] = {WF_EINVAL,      WF_EINVAL, WF_EINVAL,  WF_ETYPE,
                   WF_EVALIDATION, WF_EINVAL, WF_PENDING, WF_EEXIST};
    for (size_t i = 0; i < 8; i++) {
        int64_t c = 0;
        wf_value item;
        cr_assert_eq(wf_value_array_at(codes, i, &item), 0);
        cr_assert_eq(wf_value_get_int(item, &c), 0);
        cr_assert_eq(c, want[i], "code %zu: %lld, want %d", i, (long long)c, want[i]);
    }
    wf_value_release(codes);
    cr_assert_eq(atomic_load(&g_free_calls), 1); /* user_free ran once, also on failure */
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(g_child);
    wf_workflow_free(g_invalid);
    wf_registry_free(reg);
}

/* ---- a failing child fails the parent step; the parent's retry starts a new child ---- */

static atomic_int tries;

static int flaky_parent(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    parent_cfg *cfg = u;
    int n = atomic_fetch_add(&tries, 1);
    wf_event *s;
    int rc = wf_event_new1(&s, wf_workflow_builtin(cfg->child, WF_START_EVENT), "i",
                           wf_value_int(n < 2 ? -1 : 21)); /* the first two children fail */
    if (rc < 0)
        return rc;
    return wf_ctx_run_child(ctx, cfg->child, s, &cfg->params);
}

Test(child, child_failure_is_the_step_error_and_retries_apply)
{
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    wf_executor *ex = exec_n(2);
    wf_workflow *child = doubler(reg);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);

    /* without a retry policy: the step fails with the child's error */
    wf_workflow *wf = parent_of(&cfg, reg, NULL);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_i(wf, -3), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    const char *step, *msg;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, WF_ESTEP);
    cr_assert_str_eq(step, "spawn");
    cr_assert(strstr(msg, "child workflow 'doubler'") != NULL, "%s", msg);
    cr_assert(strstr(msg, "'double'") != NULL, "%s", msg);
    cr_assert(strstr(msg, "negative input") != NULL, "%s", msg);
    wf_handler_free(h);
    wf_workflow_free(wf);

    /* with one: attempts 1 and 2 fail in the child, attempt 3 succeeds */
    wf_retry_stop *stop;
    cr_assert_eq(wf_retry_stop_after_attempt(&stop, 5), 0);
    wf_retry_policy *pol;
    cr_assert_eq(wf_retry_policy_new(&pol, NULL, NULL, stop), 0);
    cr_assert_eq(wf_workflow_new(&wf, "flaky", reg), 0);
    const wf_event_type *acc = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *em = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &acc;
    p.n_accepts = 1;
    p.emits = &em;
    p.n_emits = 1;
    p.retry = pol;
    cr_assert_eq(wf_workflow_add_step(wf, "spawn", flaky_parent, &p, &cfg), 0);
    wf_retry_policy_free(pol);
    wf_event *res = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, start_i(wf, 0), -1, &res), 0);
    cr_assert_eq(result_of(res), 42);
    cr_assert_eq(atomic_load(&tries), 3);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
    wf_registry_free(reg);
}

/* ---- a child that pends until the test lets it go: cancel and timeout reach it ---- */

static sem_t hang_in;
static wf_completion *hang_tok;

static int hang_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_completion *c;
    int rc = wf_ctx_pend(ctx, &c);
    if (rc < 0)
        return rc;
    hang_tok = c;
    sem_post(&hang_in);
    return WF_PENDING;
}

/* Completes the hanging child's token once its run has ended: it only frees it (0 when the
 * step had not returned yet: the token then completes early, routing nothing). */
static void hang_release(void)
{
    int rc = wf_completion_complete(hang_tok, NULL);
    cr_assert(rc == WF_ECANCELLED || rc == 0, "%d", rc);
}

static wf_workflow *hanger(wf_registry *reg)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "hanger", reg), 0);
    add(wf, "hang", hang_step, wf_workflow_builtin(wf, WF_START_EVENT),
        wf_workflow_builtin(wf, WF_STOP_EVENT), 0, NULL);
    cr_assert_eq(wf_workflow_set_timeout(wf, WF_NO_TIMEOUT), 0);
    return wf;
}

Test(child, parent_cancel_cancels_the_child)
{
    sem_init(&hang_in, 0, 0);
    wf_executor *ex = exec_n(2);
    wf_workflow *child = hanger(NULL);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);
    wf_workflow *wf = parent_of(&cfg, NULL, NULL);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_i(wf, 1), &h), 0);
    sem_wait(&hang_in);
    cr_assert_eq(wf_completion_cancelled(hang_tok), 0);
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    /* the child ended with its parent */
    cr_assert_eq(wf_completion_cancelled(hang_tok), 1);
    hang_release();
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}

Test(child, parent_timeout_cancels_the_child)
{
    sem_init(&hang_in, 0, 0);
    wf_executor *ex = exec_n(2);
    wf_workflow *child = hanger(NULL);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);
    wf_workflow *wf = parent_of(&cfg, NULL, NULL);
    cr_assert_eq(wf_workflow_set_timeout(wf, 50), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_i(wf, 1), &h), 0);
    sem_wait(&hang_in);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ERUNTIMEOUT);
    cr_assert_eq(wf_completion_cancelled(hang_tok), 1);
    hang_release();
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}

Test(child, child_timeout_fails_the_step)
{
    sem_init(&hang_in, 0, 0);
    wf_executor *ex = exec_n(2);
    wf_workflow *child = hanger(NULL);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);
    cfg.params.timeout_ms = 30;
    wf_workflow *wf = parent_of(&cfg, NULL, NULL);
    cr_assert_eq(wf_workflow_set_timeout(wf, WF_NO_TIMEOUT), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_i(wf, 1), &h), 0);
    sem_wait(&hang_in);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    const char *msg;
    cr_assert_eq(wf_handler_error(h, &code, NULL, &msg), 0);
    cr_assert_eq(code, WF_ERUNTIMEOUT);
    cr_assert(strstr(msg, "timed out") != NULL, "%s", msg);
    hang_release();
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}

/* ---- nesting 3 deep, with the stream forwarded to the top ---- */

static wf_workflow *g_nest;
static const wf_event_type *T_NOTE;
static int g_nest_hang; /* the deepest pends (the hang token) instead of answering */
static sem_t nest_started;

static int nest_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t depth = field_i(in, "i");
    wf_event *note;
    int rc = wf_event_new1(&note, T_NOTE, "depth", wf_value_int(depth));
    if (rc == 0)
        rc = wf_ctx_write_event_to_stream(ctx, note);
    if (rc < 0)
        return rc;
    if (depth == 3) {
        if (g_nest_hang)
            return hang_step(ctx, in, out, u);
        *out = stop_i(ctx, 1000);
        return 0;
    }
    wf_event *s;
    rc = wf_event_new1(&s, wf_workflow_builtin(g_nest, WF_START_EVENT), "i",
                       wf_value_int(depth + 1));
    if (rc < 0)
        return rc;
    wf_child_params p;
    wf_child_params_init(&p);
    p.forward_stream = 1;
    rc = wf_ctx_run_child(ctx, g_nest, s, &p);
    sem_post(&nest_started); /* its child is known to it: a cancel from now on reaches it at once */
    return rc;
}

static wf_workflow *nest_wf(void)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "nest", NULL), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Note", NULL, &T_NOTE), 0);
    add(wf, "level", nest_step, wf_workflow_builtin(wf, WF_START_EVENT),
        wf_workflow_builtin(wf, WF_STOP_EVENT), 0, NULL);
    cr_assert_eq(wf_workflow_set_timeout(wf, WF_NO_TIMEOUT), 0);
    return wf;
}

Test(child, nested_three_deep_streams_to_the_top)
{
    wf_executor *ex = exec_n(2);
    g_nest = nest_wf();
    g_nest_hang = 0;
    sem_init(&nest_started, 0, 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, g_nest, NULL, start_i(g_nest, 0), &h), 0);
    /* depth 0 .. 3, each level's note before the level below it starts */
    for (int64_t want = 0; want <= 3; want++) {
        wf_event *ev = NULL;
        cr_assert_eq(wf_handler_next_event(h, -1, &ev), 0);
        cr_assert_eq(field_i(ev, "depth"), want);
        wf_event_release(ev);
    }
    wf_event *ev = NULL;
    cr_assert_eq(wf_handler_next_event(h, -1, &ev), 0);
    cr_assert(wf_event_type_is(wf_event_type_of(ev), wf_workflow_builtin(g_nest, WF_STOP_EVENT)));
    cr_assert_eq(field_i(ev, "result"), 1000); /* the grandchild's result, returned up */
    wf_event_release(ev);
    cr_assert_eq(wf_handler_next_event(h, -1, &ev), WF_ECLOSED);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(g_nest);
}

Test(child, nested_cancel_reaches_the_deepest)
{
    sem_init(&hang_in, 0, 0);
    wf_executor *ex = exec_n(2);
    g_nest = nest_wf();
    g_nest_hang = 1;
    sem_init(&nest_started, 0, 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, g_nest, NULL, start_i(g_nest, 0), &h), 0);
    sem_wait(&hang_in);
    for (int i = 0; i < 3; i++)
        sem_wait(&nest_started);
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    cr_assert_eq(wf_completion_cancelled(hang_tok), 1);
    hang_release();
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(g_nest);
}

/* ---- a fan-out of children collected by the parent ---- */

#define FAN 300
static const wf_event_type *T_ITEM, *T_DONE;
static wf_workflow *g_fan_child;

static int fan_start(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int64_t i = 0; i < FAN; i++) {
        wf_event *e;
        int rc = wf_event_new1(&e, T_ITEM, "i", wf_value_int(i));
        if (rc == 0)
            rc = wf_ctx_send_event(ctx, e, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int to_done(const wf_event *result, wf_event **out, void *user)
{
    return wf_event_new1(out, T_DONE, "i", wf_value_int(field_i(result, "result")));
}

static int fan_spawn(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *s;
    int rc = wf_event_new1(&s, wf_workflow_builtin(g_fan_child, WF_START_EVENT), "i",
                           wf_value_int(field_i(in, "i")));
    if (rc < 0)
        return rc;
    wf_child_params p;
    wf_child_params_init(&p);
    p.on_result = to_done;
    return wf_ctx_run_child(ctx, g_fan_child, s, &p);
}

static int64_t fan_sum, fan_seen; /* the collect step runs one at a time */

static int fan_collect(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    fan_sum += field_i(in, "i");
    if (++fan_seen == FAN)
        *out = stop_i(ctx, fan_sum);
    return 0;
}

static wf_workflow *fan_wf(void)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "fan", NULL), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &T_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Done", NULL, &T_DONE), 0);
    add(wf, "start", fan_start, wf_workflow_builtin(wf, WF_START_EVENT), T_ITEM, 0, NULL);
    add(wf, "spawn", fan_spawn, T_ITEM, T_DONE, 64, NULL);
    add(wf, "collect", fan_collect, T_DONE, wf_workflow_builtin(wf, WF_STOP_EVENT), 1, NULL);
    return wf;
}

static void run_fan(uint32_t threads, uint32_t child_limit)
{
    wf_executor *ex = exec_n(threads);
    g_fan_child = doubler(NULL);
    if (child_limit)
        cr_assert_eq(wf_workflow_set_num_concurrent_runs(g_fan_child, child_limit), 0);
    wf_workflow *wf = fan_wf();
    fan_sum = fan_seen = 0;
    wf_event *res = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, start_i(wf, 0), -1, &res), 0);
    cr_assert_eq(result_of(res), (int64_t)FAN * (FAN - 1)); /* sum of 2i */
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(g_fan_child);
}

Test(child, fan_out_of_children)
{
    run_fan(2, 0);
}

/* 64 parents' invocations wait on children that queue behind a limit of 2 on one worker */
Test(child, queued_children_do_not_hold_the_worker)
{
    run_fan(1, 2);
}

/* ---- the observation link: the child's RUN_START names its parent ---- */

static pthread_mutex_t obs_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t obs_child_parent, obs_child_event, obs_parent_step_event, obs_parent_run;

static void obs_record(const wf_obs_record *r, void *user)
{
    pthread_mutex_lock(&obs_mu);
    if (r->kind == WF_OBS_RUN_START && r->workflow && strcmp(r->workflow, "doubler") == 0) {
        obs_child_parent = (uint64_t)r->value;
        obs_child_event = r->event_id;
    }
    if (r->kind == WF_OBS_RUN_START && r->workflow && strcmp(r->workflow, "parent") == 0)
        obs_parent_run = r->run_id;
    if (r->kind == WF_OBS_STEP_START && r->step && strcmp(r->step, "spawn") == 0)
        obs_parent_step_event = r->event_id;
    pthread_mutex_unlock(&obs_mu);
}

Test(child, observation_links_child_to_parent_step)
{
    wf_executor *ex = exec_n(2);
    wf_observer obs = {.record = obs_record};
    uint32_t id;
    cr_assert_eq(wf_executor_observe(ex, &obs, &id), 0);
    wf_workflow *child = doubler(NULL);
    parent_cfg cfg = {.child = child};
    wf_child_params_init(&cfg.params);
    wf_workflow *wf = parent_of(&cfg, NULL, NULL);
    cfg.params.on_result = plus_one;
    cfg.params.user = wf_workflow_registry(wf);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_i(wf, 1), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    pthread_mutex_lock(&obs_mu);
    cr_assert_eq(obs_parent_run, wf_handler_run_id(h));
    cr_assert_eq(obs_child_parent, wf_handler_run_id(h));
    cr_assert_neq(obs_child_event, 0);
    cr_assert_eq(obs_child_event, obs_parent_step_event);
    pthread_mutex_unlock(&obs_mu);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}

/* ---- a parent parked while its child waits, saved, loaded and resumed ---- */

Test(child, parent_parked_with_a_child_in_progress_resumes)
{
    sem_init(&hang_in, 0, 0);
    wf_executor *ex = exec_n(2);
    g_nest = nest_wf();
    g_nest_hang = 1;
    sem_init(&nest_started, 0, 0);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, g_nest), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, g_nest, ctx, start_i(g_nest, 0), &h), 0);
    sem_wait(&hang_in);
    for (int i = 0; i < 3; i++)
        sem_wait(&nest_started);
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    hang_release();
    wf_handler_free(h);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    wf_ctx_free(ctx);
    cr_assert_eq(wf_ctx_load(g_nest, buf, len, 0, &ctx, NULL), 0);
    wf_free(buf);

    /* the step that waited on its child runs again (at-least-once) and starts the chain anew */
    g_nest_hang = 0;
    char *msg = NULL;
    cr_assert_eq(wf_run_resume(ex, g_nest, ctx, NULL, &h, &msg), 0, "%s", msg ? msg : "");
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_eq(result_of(res), 1000);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(g_nest);
}

/* ---- a parent saved while its children wait for a human: the children are in its snapshot ---- */

#define HITL_MAX 4
static const wf_event_type *T_ANSWER, *T_HITEM, *T_HDONE;
static atomic_int ask_suspends;
static sem_t ask_waiting, hitl_started;
static wf_ctx *_Atomic hitl_ctx[HITL_MAX]; /* each child's context, by its input "i" */
static wf_workflow *g_asker;

/* the child: waits for an Answer, then stops with 100 * i + the answer's v */
static int ask_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *ans = NULL;
    int rc = wf_ctx_wait_for_event(ctx, T_ANSWER, wf_value_nil(), NULL, NULL, WF_NO_TIMEOUT, &ans);
    if (rc == WF_SUSPEND) {
        atomic_fetch_add(&ask_suspends, 1);
        sem_post(&ask_waiting);
        return WF_SUSPEND;
    }
    if (rc < 0)
        return rc;
    *out = stop_i(ctx, 100 * field_i(in, "i") + field_i(ans, "v"));
    wf_event_release(ans);
    return *out ? 0 : WF_ENOMEM;
}

static wf_workflow *asker_wf(int variant)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "asker", NULL), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Answer", NULL, &T_ANSWER), 0);
    add(wf, "ask", ask_step, wf_workflow_builtin(wf, WF_START_EVENT),
        wf_workflow_builtin(wf, WF_STOP_EVENT), 0, NULL);
    if (variant) /* another definition of the same name: another fingerprint */
        add(wf, "other", ask_step, T_ANSWER, wf_workflow_builtin(wf, WF_STOP_EVENT), 0, NULL);
    return wf;
}

/* the child's result as the parent's event: a StopEvent (single) or a Done (fan-out) */
static int hitl_result(const wf_event *result, wf_event **out, void *user)
{
    const wf_registry *reg = user;
    if (T_HDONE && wf_event_type_registry(T_HDONE) == reg)
        return wf_event_new1(out, T_HDONE, "i", wf_value_int(field_i(result, "result")));
    return wf_event_new_stop(out, reg, NULL, wf_value_int(field_i(result, "result")));
}

static int delegate_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t i = field_i(in, "i");
    wf_event *s;
    int rc = wf_event_new1(&s, wf_workflow_builtin(g_asker, WF_START_EVENT), "i", wf_value_int(i));
    if (rc < 0)
        return rc;
    wf_ctx *cctx = NULL;
    wf_child_params p;
    wf_child_params_init(&p);
    p.on_result = hitl_result;
    p.user = (void *)wf_workflow_registry(wf_ctx_workflow(ctx));
    p.context = &cctx;
    rc = wf_ctx_run_child(ctx, g_asker, s, &p);
    if (rc == WF_PENDING) {
        cr_assert_not_null(cctx);
        wf_ctx_free(atomic_exchange(&hitl_ctx[i % HITL_MAX], cctx));
        sem_post(&hitl_started);
    }
    return rc;
}

static int hitl_split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t n = field_i(in, "n");
    wf_event *evs[HITL_MAX];
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(wf_event_new1(&evs[i], T_HITEM, "i", wf_value_int(i)), 0);
    return wf_ctx_emit_list(ctx, evs, (size_t)n, T_HDONE);
}

static int hitl_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event *const *evs;
    size_t n;
    int64_t sum = 0;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    for (size_t k = 0; k < n; k++)
        sum += field_i(evs[k], "i");
    *out = stop_i(ctx, sum);
    return 0;
}

/* fanout 0: start -> delegate (one child); else start -> split -> n x delegate -> join */
static wf_workflow *hitl_parent(int fanout, int declare, wf_workflow *child)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "hitl_parent", NULL), 0);
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    T_HITEM = T_HDONE = NULL;
    if (!fanout) {
        add(wf, "delegate", delegate_step, start, stop, 0, NULL);
    } else {
        const wf_event_type *item, *done;
        cr_assert_eq(wf_workflow_event_type(wf, "HItem", NULL, &item), 0);
        cr_assert_eq(wf_workflow_event_type(wf, "HDone", NULL, &done), 0);
        add(wf, "split", hitl_split, start, item, 0, NULL);
        add(wf, "delegate", delegate_step, item, done, 0, NULL);
        wf_step_params p;
        wf_step_params_init(&p);
        p.accepts = &done;
        p.n_accepts = 1;
        p.emits = &stop;
        p.n_emits = 1;
        p.join_list = 1;
        cr_assert_eq(wf_workflow_add_step(wf, "join", hitl_join, &p, NULL), 0);
        T_HITEM = item;
        T_HDONE = done;
    }
    if (declare)
        cr_assert_eq(wf_workflow_declare_child(wf, "delegate", child), 0);
    return wf;
}

static void hitl_reset(void)
{
    atomic_store(&ask_suspends, 0);
    sem_init(&ask_waiting, 0, 0);
    sem_init(&hitl_started, 0, 0);
    for (int i = 0; i < HITL_MAX; i++)
        wf_ctx_free(atomic_exchange(&hitl_ctx[i], NULL));
}

/* Runs the parent until its n children wait for their answers, saves it, shuts the executor down.
 */
static void *hitl_save(wf_workflow *wf, int n, size_t *len)
{
    hitl_reset();
    wf_executor *ex = exec_n(2);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    wf_event *s;
    cr_assert_eq(wf_event_new1(&s, wf_workflow_builtin(wf, WF_START_EVENT), "i", wf_value_int(7)),
                 0);
    if (n > 1)
        cr_assert_eq(wf_event_set(s, "n", wf_value_int(n)), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, ctx, s, &h), 0);
    for (int i = 0; i < n; i++)
        sem_wait(&ask_waiting);
    void *buf;
    wf_save_info info;
    cr_assert_eq(wf_ctx_save_ex(ctx, &buf, len, &info), 0);
    cr_assert(info.live);
    wf_executor_free(ex); /* the parent and its children are cancelled */
    int rc = wf_handler_wait(h, 0, NULL);
    cr_assert_eq(wf_handler_status(h), WF_RUN_CANCELLED, "%d", rc);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    cr_assert_eq(atomic_load(&ask_suspends), n);
    return buf;
}

/* Resumes the saved parent on a new executor, answers each child, returns the parent's result. */
static int64_t hitl_resume(wf_workflow *wf, void *buf, size_t len, int n)
{
    hitl_reset();
    wf_executor *ex = exec_n(2);
    wf_ctx *ctx;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, &msg), 0, "%s", msg ? msg : "");
    wf_handler *h;
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, &msg), 0, "%s", msg ? msg : "");
    /* each awaiting step runs again and takes up its saved child */
    for (int i = 0; i < n; i++)
        sem_wait(&hitl_started);
    for (int i = 0; i < n; i++) {
        wf_event *a;
        cr_assert_eq(wf_event_new1(&a, T_ANSWER, "v", wf_value_int(i + 1)), 0);
        wf_ctx *cctx = atomic_load(&hitl_ctx[n > 1 ? i : 7 % HITL_MAX]);
        cr_assert_not_null(cctx);
        cr_assert_eq(wf_ctx_send_event(cctx, a, NULL), 0);
    }
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    /* the children went on from their waits: none asked again */
    cr_assert_eq(atomic_load(&ask_suspends), 0);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    hitl_reset();
    return result_of(res);
}

Test(child, parent_saved_with_a_waiting_child_resumes_both)
{
    g_asker = asker_wf(0);
    wf_workflow *wf = hitl_parent(0, 1, g_asker);
    size_t len;
    void *buf = hitl_save(wf, 1, &len);
    /* the child is in the document: its workflow's name, nested in the parent's task */
    char *json = NULL;
    cr_assert_eq(wf_snapshot_to_json(buf, len, &json, NULL), 0);
    cr_assert(strstr(json, "\"asker\"") != NULL, "%s", json);
    wf_free(json);
    cr_assert_eq(hitl_resume(wf, buf, len, 1), 700 + 1);
    wf_free(buf);
    wf_workflow_free(wf);
    wf_workflow_free(g_asker);
}

Test(child, fan_out_of_waiting_children_saved_and_resumed)
{
    g_asker = asker_wf(0);
    wf_workflow *wf = hitl_parent(1, 1, g_asker);
    size_t len;
    void *buf = hitl_save(wf, 3, &len);
    /* child i answers i + 1: 100 i + i + 1, summed over 0..2 */
    cr_assert_eq(hitl_resume(wf, buf, len, 3), 306);
    wf_free(buf);
    wf_workflow_free(wf);
    wf_workflow_free(g_asker);
}

Test(child, undeclared_child_is_not_nested_and_starts_again)
{
    g_asker = asker_wf(0);
    wf_workflow *wf = hitl_parent(0, 0, g_asker);
    size_t len;
    void *buf = hitl_save(wf, 1, &len);
    char *json = NULL;
    cr_assert_eq(wf_snapshot_to_json(buf, len, &json, NULL), 0);
    cr_assert(strstr(json, "\"asker\"") == NULL, "%s", json);
    wf_free(json);
    /* resumed: the step starts a new child, which asks again */
    hitl_reset();
    wf_executor *ex = exec_n(2);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, NULL), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, NULL), 0);
    sem_wait(&ask_waiting);
    cr_assert_eq(atomic_load(&ask_suspends), 1);
    wf_event *a;
    cr_assert_eq(wf_event_new1(&a, T_ANSWER, "v", wf_value_int(2)), 0);
    cr_assert_eq(wf_ctx_send_event(atomic_load(&hitl_ctx[7 % HITL_MAX]), a, NULL), 0);
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_eq(result_of(res), 702);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    hitl_reset();
    wf_free(buf);
    wf_workflow_free(wf);
    wf_workflow_free(g_asker);
}

Test(child, nested_child_the_resumer_does_not_know_is_refused)
{
    g_asker = asker_wf(0);
    wf_workflow *wf = hitl_parent(0, 1, g_asker);
    size_t len;
    void *buf = hitl_save(wf, 1, &len);
    wf_ctx *ctx = NULL;
    char *msg = NULL;
    /* a resumer whose step does not declare the child workflow */
    wf_workflow *plain = hitl_parent(0, 0, g_asker);
    cr_assert_eq(wf_ctx_load(plain, buf, len, 0, &ctx, &msg), WF_EMISMATCH);
    cr_assert_null(ctx);
    cr_assert_str_eq(msg, "snapshot: run.tasks[0]: step 'delegate' awaits child workflow 'asker', "
                          "which it does not declare (wf_workflow_declare_child): its state "
                          "cannot be resumed");
    wf_free(msg);
    msg = NULL;
    /* one that declares another definition under the child's name */
    wf_workflow *other = asker_wf(1);
    wf_workflow *changed = hitl_parent(0, 1, other);
    cr_assert_eq(wf_ctx_load(changed, buf, len, 0, &ctx, &msg), WF_EMISMATCH);
    cr_assert_null(ctx);
    cr_assert_str_eq(msg, "snapshot: run.tasks[0]: child workflow 'asker' of step 'delegate' does "
                          "not match its definition (fingerprint)");
    wf_free(msg);
    wf_free(buf);
    wf_workflow_free(plain);
    wf_workflow_free(changed);
    wf_workflow_free(other);
    wf_workflow_free(wf);
    wf_workflow_free(g_asker);
}

/* ---- drawings: the child workflows steps declare ---- */

static int nop_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

/* drawn: first (StartEvent -> Mid) and second (Mid -> StopEvent); both run drawn_child, second
 * also itself */
static wf_workflow *drawn_wf(wf_workflow **child)
{
    cr_assert_eq(wf_workflow_new(child, "drawn_child", NULL), 0);
    add(*child, "work", nop_step, wf_workflow_builtin(*child, WF_START_EVENT),
        wf_workflow_builtin(*child, WF_STOP_EVENT), 0, NULL);
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "drawn", NULL), 0);
    const wf_event_type *mid;
    cr_assert_eq(wf_workflow_event_type(wf, "Mid", NULL, &mid), 0);
    add(wf, "first", nop_step, wf_workflow_builtin(wf, WF_START_EVENT), mid, 0, NULL);
    add(wf, "second", nop_step, mid, wf_workflow_builtin(wf, WF_STOP_EVENT), 0, NULL);
    cr_assert_eq(wf_workflow_declare_child(wf, "first", *child), 0);
    cr_assert_eq(wf_workflow_declare_child(wf, "second", *child), 0);
    cr_assert_eq(wf_workflow_declare_child(wf, "second", wf), 0);
    cr_assert_eq(wf_workflow_declare_child(wf, "second", wf), 0); /* twice: once */
    cr_assert_eq(wf_workflow_child_count(wf, "second"), 2);
    return wf;
}

Test(child, drawings_show_declared_children)
{
    wf_workflow *child;
    wf_workflow *wf = drawn_wf(&child);
    char *dot;
    cr_assert_eq(wf_workflow_to_dot(wf, &dot), 0);
    /* a node per declaration (a box3d), a dotted edge "runs" from the step to it */
    cr_assert_str_eq(
        dot,
        "digraph \"drawn\" {\n"
        "  rankdir=TB;\n"
        "  node [fontname=\"Helvetica\"];\n"
        "  step_0 [label=\"first\", shape=box, style=filled, fillcolor=\"#ADD8E6\"];\n"
        "  step_1 [label=\"second\", shape=box, style=filled, fillcolor=\"#ADD8E6\"];\n"
        "  event_0 [label=\"StartEvent\", shape=ellipse, style=filled, fillcolor=\"#90EE90\"];\n"
        "  event_1 [label=\"StopEvent\", shape=ellipse, style=filled, fillcolor=\"#FFA07A\"];\n"
        "  event_11 [label=\"Mid\", shape=ellipse, style=filled, fillcolor=\"#E8E8E8\"];\n"
        "  event_0 -> step_0;\n"
        "  step_0 -> event_11;\n"
        "  event_11 -> step_1;\n"
        "  step_1 -> event_1;\n"
        "  child_0_0 [label=\"drawn_child\", shape=box3d, style=filled, fillcolor=\"#D8BFD8\"];\n"
        "  step_0 -> child_0_0 [style=dotted, label=\"runs\"];\n"
        "  child_1_0 [label=\"drawn_child\", shape=box3d, style=filled, fillcolor=\"#D8BFD8\"];\n"
        "  step_1 -> child_1_0 [style=dotted, label=\"runs\"];\n"
        "  child_1_1 [label=\"drawn\", shape=box3d, style=filled, fillcolor=\"#D8BFD8\"];\n"
        "  step_1 -> child_1_1 [style=dotted, label=\"runs\"];\n"
        "}");
    wf_free(dot);
    char *mm;
    cr_assert_eq(wf_workflow_to_mermaid(wf, &mm), 0);
    cr_assert_str_eq(mm, "flowchart TD\n"
                         "    step_0[\"first\"]:::step\n"
                         "    step_1[\"second\"]:::step\n"
                         "    event_0([\"StartEvent\"]):::startEvent\n"
                         "    event_1([\"StopEvent\"]):::stopEvent\n"
                         "    event_11([\"Mid\"]):::event\n"
                         "    event_0 --> step_0\n"
                         "    step_0 --> event_11\n"
                         "    event_11 --> step_1\n"
                         "    step_1 --> event_1\n"
                         "    child_0_0[[\"drawn_child\"]]:::childWorkflow\n"
                         "    step_0 -. runs .-> child_0_0\n"
                         "    child_1_0[[\"drawn_child\"]]:::childWorkflow\n"
                         "    step_1 -. runs .-> child_1_0\n"
                         "    child_1_1[[\"drawn\"]]:::childWorkflow\n"
                         "    step_1 -. runs .-> child_1_1\n"
                         "    classDef childWorkflow fill:#D8BFD8,color:#000000,stroke:#333333\n"
                         "    classDef step fill:#ADD8E6,color:#000000,stroke:#333333\n"
                         "    classDef event fill:#E8E8E8,color:#000000,stroke:#333333\n"
                         "    classDef startEvent fill:#90EE90,color:#000000,stroke:#333333\n"
                         "    classDef stopEvent fill:#FFA07A,color:#000000,stroke:#333333");
    wf_free(mm);
    /* the child's own drawing has no children */
    cr_assert_eq(wf_workflow_to_mermaid(child, &mm), 0);
    cr_assert_null(strstr(mm, "child_"));
    wf_free(mm);
    wf_workflow_free(wf);
    wf_workflow_free(child);
}
