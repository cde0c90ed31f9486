/*
 * test_resource.c: resources (resource.h): the three scopes, made once per
 * run under concurrent invocations (also under TSan), dependency chains,
 * declared-only access, validation errors naming the culprits, a failing
 * factory failing the step (and a retry policy recovering from it).
 */
#include "harness.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

#define N_ITEMS 200

static atomic_int made, freed, done_items;
static int fail_first; /* the factory fails while made <= fail_first */

typedef struct res {
    int id;
    struct res *dep;
} res;

static int factory(wf_ctx *ctx, void **out, void *user)
{
    (void)user;
    int id = atomic_fetch_add(&made, 1) + 1;
    if (id <= fail_first) {
        wf_ctx_set_error(ctx, "cannot connect");
        return -77;
    }
    /* widen the window in which other invocations ask for it (no sleep: spin) */
    for (volatile int i = 0; i < 20000; i++)
        ;
    res *r = malloc(sizeof *r);
    r->id = id;
    r->dep = NULL;
    *out = r;
    return 0;
}

static int dep_factory(wf_ctx *ctx, void **out, void *user)
{
    int rc = factory(ctx, out, user);
    if (rc < 0)
        return rc;
    void *cfg = NULL;
    cr_assert_eq(wf_ctx_resource(ctx, "cfg", &cfg), 0, "a factory gets its declared dependency");
    cr_assert_not_null(cfg);
    void *other = NULL;
    cr_assert_eq(wf_ctx_resource(ctx, "top", &other), WF_ENOTFOUND, "not declared by this factory");
    ((res *)*out)->dep = cfg;
    return 0;
}

static void res_free(void *r, void *user)
{
    (void)user;
    atomic_fetch_add(&freed, 1);
    free(r);
}

static const wf_event_type *T_START, *T_STOP, *T_ITEM;

static int fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)in;
    (void)out;
    (void)user;
    for (int i = 0; i < N_ITEMS; i++) {
        wf_event *e;
        cr_assert_eq(wf_event_new1(&e, T_ITEM, "i", wf_value_int(i)), 0);
        cr_assert_eq(wf_ctx_send_event(ctx, e, NULL), 0);
    }
    return 0;
}

static const char *use_name = "db";

static int work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)in;
    (void)user;
    void *r = NULL;
    int rc = wf_ctx_resource(ctx, use_name, &r);
    if (rc < 0)
        return rc;
    cr_assert_not_null(r);
    void *undeclared;
    cr_assert_eq(wf_ctx_resource(ctx, "nope", &undeclared), WF_ENOTFOUND);
    if (atomic_fetch_add(&done_items, 1) + 1 == N_ITEMS)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(((res *)r)->id));
    return 0;
}

static wf_workflow *make_wf(int32_t scope, const char *const *uses, uint32_t nuses,
                            wf_retry_policy *retry)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "res", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &T_ITEM), 0);
    wf_step_params sp;
    wf_step_params_init(&sp);
    sp.accepts = &T_START;
    sp.n_accepts = 1;
    sp.emits = &T_ITEM;
    sp.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "fan", fan, &sp, NULL), 0);
    wf_step_params_init(&sp);
    sp.accepts = &T_ITEM;
    sp.n_accepts = 1;
    sp.emits = &T_STOP;
    sp.n_emits = 1;
    sp.num_workers = 8;
    sp.resources = uses;
    sp.n_resources = nuses;
    sp.retry = retry;
    cr_assert_eq(wf_workflow_add_step(wf, "work", work, &sp, NULL), 0);
    wf_resource_params rp;
    wf_resource_params_init(&rp);
    rp.scope = scope;
    rp.free = res_free;
    cr_assert_eq(wf_workflow_add_resource(wf, "db", factory, &rp, NULL), 0);
    return wf;
}

static void reset(void)
{
    atomic_store(&made, 0);
    atomic_store(&freed, 0);
    atomic_store(&done_items, 0);
    fail_first = 0;
    use_name = "db";
}

static wf_event *start_ev(void)
{
    wf_event *e;
    cr_assert_eq(wf_event_new(&e, T_START, 0), 0);
    return e;
}

static const char *const uses_db[] = {"db"};

Test(resource, run_scope_is_made_once_per_run_under_concurrency, .timeout = 120)
{
    reset();
    wf_workflow *wf = make_wf(WF_RESOURCE_RUN, uses_db, 1, NULL);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 4;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    for (int round = 1; round <= 3; round++) {
        atomic_store(&done_items, 0);
        wf_event *result = NULL;
        cr_assert_eq(wf_run(ex, wf, NULL, start_ev(), -1, &result), 0);
        int64_t id = 0;
        cr_assert_eq(wf_value_get_int(wf_event_result(result), &id), 0);
        cr_assert_eq(id, round, "each run makes its own, once (run %d)", round);
        cr_assert_eq(atomic_load(&made), round);
        wf_event_release(result);
    }
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&freed), 3, "each run's resource freed with the run");
    wf_workflow_free(wf);
}

Test(resource, invocation_scope_is_fresh_per_invocation, .timeout = 120)
{
    reset();
    wf_workflow *wf = make_wf(WF_RESOURCE_INVOCATION, uses_db, 1, NULL);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, start_ev(), -1, NULL), 0);
    cr_assert_eq(atomic_load(&made), N_ITEMS);
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&freed), N_ITEMS, "freed when each step function returned");
    wf_workflow_free(wf);
}

Test(resource, workflow_scope_is_shared_across_runs, .timeout = 120)
{
    reset();
    wf_workflow *wf = make_wf(WF_RESOURCE_WORKFLOW, uses_db, 1, NULL);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    for (int round = 0; round < 2; round++) {
        atomic_store(&done_items, 0);
        cr_assert_eq(wf_run(ex, wf, NULL, start_ev(), -1, NULL), 0);
    }
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&made), 1);
    cr_assert_eq(atomic_load(&freed), 0, "lives as long as the workflow");
    wf_workflow_free(wf);
    cr_assert_eq(atomic_load(&freed), 1);
}

Test(resource, a_chain_makes_dependencies_first, .timeout = 120)
{
    reset();
    wf_workflow *wf = make_wf(WF_RESOURCE_RUN, NULL, 0, NULL);
    /* step "work" uses "top", which depends on "db" (run) and "cfg" (workflow) */
    wf_resource_params rp;
    wf_resource_params_init(&rp);
    rp.free = res_free;
    rp.scope = WF_RESOURCE_WORKFLOW;
    cr_assert_eq(wf_workflow_add_resource(wf, "cfg", factory, &rp, NULL), 0);
    const char *deps[] = {"db", "cfg"};
    rp.scope = WF_RESOURCE_RUN;
    rp.depends = deps;
    rp.n_depends = 2;
    cr_assert_eq(wf_workflow_add_resource(wf, "top", dep_factory, &rp, NULL), 0);
    wf_workflow_free(wf);

    /* the same, with the step declaring "top" */
    reset();
    const char *const uses_top[] = {"top"};
    wf = make_wf(WF_RESOURCE_RUN, uses_top, 1, NULL);
    rp.scope = WF_RESOURCE_WORKFLOW;
    rp.depends = NULL;
    rp.n_depends = 0;
    cr_assert_eq(wf_workflow_add_resource(wf, "cfg", factory, &rp, NULL), 0);
    rp.scope = WF_RESOURCE_RUN;
    rp.depends = deps;
    rp.n_depends = 2;
    cr_assert_eq(wf_workflow_add_resource(wf, "top", dep_factory, &rp, NULL), 0);
    use_name = "top";
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *result = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, start_ev(), -1, &result), 0);
    int64_t id = 0;
    cr_assert_eq(wf_value_get_int(wf_event_result(result), &id), 0);
    cr_assert_eq(id, 3, "db and cfg first (1, 2), then top (3)");
    cr_assert_eq(atomic_load(&made), 3);
    wf_event_release(result);
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&freed), 2, "the run's two; cfg lives with the workflow");
    size_t n = 0;
    const char *const *names = NULL;
    cr_assert_eq(wf_workflow_step_resources(wf, 1, &names, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(names[0], "top");
    cr_assert_eq(wf_workflow_resource_count(wf), 3);
    wf_workflow_free(wf);
    cr_assert_eq(atomic_load(&freed), 3);
}

static int nop_factory(wf_ctx *ctx, void **out, void *user)
{
    (void)ctx;
    (void)user;
    *out = NULL;
    return 0;
}

static char *freeze_report(wf_workflow *wf)
{
    char *msg = NULL;
    cr_assert_eq(wf_workflow_freeze(wf, &msg), WF_EVALIDATION);
    cr_assert_not_null(msg);
    return msg;
}

Test(resource, validation_names_unknown_names_cycles_and_scopes)
{
    reset();
    const char *const uses[] = {"db", "ghost"};
    wf_workflow *wf = make_wf(WF_RESOURCE_RUN, uses, 2, NULL);
    wf_resource_params rp;
    wf_resource_params_init(&rp);
    const char *a_deps[] = {"b"}, *b_deps[] = {"a"}, *c_deps[] = {"missing"}, *w_deps[] = {"db"};
    rp.depends = a_deps;
    rp.n_depends = 1;
    cr_assert_eq(wf_workflow_add_resource(wf, "a", nop_factory, &rp, NULL), 0);
    rp.depends = b_deps;
    cr_assert_eq(wf_workflow_add_resource(wf, "b", nop_factory, &rp, NULL), 0);
    rp.depends = c_deps;
    cr_assert_eq(wf_workflow_add_resource(wf, "c", nop_factory, &rp, NULL), 0);
    rp.depends = w_deps;
    rp.scope = WF_RESOURCE_WORKFLOW;
    cr_assert_eq(wf_workflow_add_resource(wf, "w", nop_factory, &rp, NULL), 0);
    cr_assert_eq(wf_workflow_add_resource(wf, "w", nop_factory, &rp, NULL), WF_EEXIST);
    cr_assert_eq(wf_workflow_add_resource(wf, "x", NULL, &rp, NULL), WF_EINVAL);
    rp.scope = 9;
    cr_assert_eq(wf_workflow_add_resource(wf, "x", nop_factory, &rp, NULL), WF_EINVAL);
    char *msg = freeze_report(wf);
    cr_assert(strstr(msg, "Step 'work' uses resource 'ghost'") != NULL, "%s", msg);
    cr_assert(strstr(msg, "'c' depends on unknown resource 'missing'") != NULL, "%s", msg);
    cr_assert(strstr(msg, "cycle: 'a' -> 'b' -> 'a'") != NULL, "%s", msg);
    cr_assert(strstr(msg, "'w' (scope workflow) depends on 'db'") != NULL, "%s", msg);
    wf_free(msg);
    wf_workflow_free(wf);
}

static int bad_check(char **message, void *user)
{
    (void)user;
    *message = wf_strdup_message("no such file: cfg.json");
    return WF_ENOTFOUND;
}

Test(resource, a_failing_check_fails_freezing)
{
    reset();
    wf_workflow *wf = make_wf(WF_RESOURCE_RUN, uses_db, 1, NULL);
    wf_resource_params rp;
    wf_resource_params_init(&rp);
    rp.check = bad_check;
    cr_assert_eq(wf_workflow_add_resource(wf, "cfg", nop_factory, &rp, NULL), 0);
    char *msg = freeze_report(wf);
    cr_assert(strstr(msg, "Resource 'cfg': no such file: cfg.json") != NULL, "%s", msg);
    wf_free(msg);
    wf_workflow_free(wf);
}

Test(resource, a_failing_factory_fails_the_step, .timeout = 60)
{
    reset();
    fail_first = 1000000;
    wf_workflow *wf = make_wf(WF_RESOURCE_RUN, uses_db, 1, NULL);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_ev(), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code = 0;
    const char *step = NULL, *message = NULL;
    cr_assert_eq(wf_handler_error(h, &code, &step, &message), 0);
    cr_assert_eq(code, -77, "the factory's own code");
    cr_assert_str_eq(step, "work");
    cr_assert_not_null(message);
    cr_assert(strstr(message, "resource 'db': cannot connect") != NULL, "%s", message);
    wf_handler_free(h);
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&freed), 0, "nothing made, nothing freed");
    wf_workflow_free(wf);
}

Test(resource, a_retry_policy_retries_a_failing_factory, .timeout = 60)
{
    reset();
    fail_first = 2;
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 5, 1), 0);
    wf_workflow *wf = make_wf(WF_RESOURCE_RUN, uses_db, 1, p);
    wf_retry_policy_free(p);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *result = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, start_ev(), -1, &result), 0);
    int64_t id = 0;
    cr_assert_eq(wf_value_get_int(wf_event_result(result), &id), 0);
    cr_assert_eq(id, 3, "two failures not cached, the third call made it");
    wf_event_release(result);
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&freed), 1);
    wf_workflow_free(wf);
}

Test(resource, outside_a_step_is_an_error)
{
    reset();
    wf_workflow *wf = make_wf(WF_RESOURCE_RUN, uses_db, 1, NULL);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    void *r;
    cr_assert_eq(wf_ctx_resource(ctx, "db", &r), WF_ESTATE);
    cr_assert_eq(wf_ctx_resource(ctx, NULL, &r), WF_EINVAL);
    wf_ctx_free(ctx);
    wf_workflow_free(wf);
}

/* ---- snapshots: resources are made again on resume ---- */

static const wf_event_type *T_GO;

static int waiter(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)in;
    (void)user;
    void *r = NULL;
    cr_assert_eq(wf_ctx_resource(ctx, "db", &r), 0);
    wf_event *ask;
    cr_assert_eq(wf_event_new(&ask,
                              wf_registry_builtin(wf_workflow_registry(wf_ctx_workflow(ctx)),
                                                  WF_INPUT_REQUIRED_EVENT),
                              0),
                 0);
    wf_event *go = NULL;
    int rc = wf_ctx_wait_for_event(ctx, T_GO, wf_value_nil(), ask, "go", WF_NO_TIMEOUT, &go);
    if (rc != 0)
        return rc;
    wf_event_release(go);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(((res *)r)->id));
}

Test(resource, a_resumed_run_makes_its_resources_again, .timeout = 60)
{
    reset();
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "resume", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Go", NULL, &T_GO), 0);
    cr_assert_eq(wf_workflow_set_validation(wf, 0), 0); /* Go comes from outside */
    wf_step_params sp;
    wf_step_params_init(&sp);
    sp.accepts = &T_START;
    sp.n_accepts = 1;
    sp.emits = &T_STOP;
    sp.n_emits = 1;
    sp.resources = uses_db;
    sp.n_resources = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "wait", waiter, &sp, NULL), 0);
    wf_resource_params rp;
    wf_resource_params_init(&rp);
    rp.free = res_free;
    cr_assert_eq(wf_workflow_add_resource(wf, "db", factory, &rp, NULL), 0);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, ctx, start_ev(), &h), 0);
    wf_event *ev = NULL;
    cr_assert_eq(wf_handler_next_event(h, -1, &ev), 0, "the step asks: it waits now");
    wf_event_release(ev);
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    cr_assert_eq(atomic_load(&made), 1);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    wf_ctx *loaded;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &loaded, NULL), 0);
    wf_free(buf);
    cr_assert_eq(wf_run_resume(ex, wf, loaded, NULL, &h, NULL), 0);
    wf_event *go;
    cr_assert_eq(wf_event_new(&go, T_GO, 0), 0);
    /* the waiter was restored with the run: Go wakes the step, which runs again */
    cr_assert_eq(wf_handler_send_event(h, go, NULL), 0);
    wf_event *result = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &result), 0);
    int64_t id = 0;
    cr_assert_eq(wf_value_get_int(wf_event_result(result), &id), 0);
    cr_assert_eq(id, 2, "the resumed run made its own");
    wf_event_release(result);
    wf_handler_free(h);
    wf_ctx_free(loaded);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&freed), 2);
    wf_workflow_free(wf);
}
