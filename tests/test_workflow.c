/*
 * test_workflow.c: workflow definitions: steps, parameters, freezing,
 * introspection, user data lifetime.
 */
#include "harness.h"

#include <pthread.h>
#include <string.h>

#include <wf/wf.h>

static int nop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

static int freed;
static void count_free(void *u)
{
    freed += (int)(intptr_t)u;
}

static wf_step_params params(const wf_event_type **acc, const wf_event_type **em)
{
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    return p;
}

Test(workflow, defaults)
{
    wf_step_params p;
    wf_step_params_init(&p);
    cr_assert_eq(p.num_workers, 4);
    cr_assert_eq(p.accept_subtypes, 0);
    cr_assert_null(p.retry);
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "W", NULL), 0);
    cr_assert_str_eq(wf_workflow_name(wf), "W");
    cr_assert_eq(wf_workflow_timeout(wf), WF_DEFAULT_TIMEOUT_MS);
    cr_assert_eq(WF_DEFAULT_TIMEOUT_MS, 45000);
    cr_assert_not_null(wf_workflow_registry(wf));
    cr_assert_eq(wf_workflow_step_count(wf), 0);
    cr_assert_null(wf_workflow_start_type(wf));
    wf_workflow_free(wf);
}

Test(workflow, bad_arguments)
{
    wf_workflow *wf = (wf_workflow *)1;
    cr_assert_eq(wf_workflow_new(&wf, "", NULL), WF_EINVAL);
    cr_assert_null(wf);
    cr_assert_eq(wf_workflow_new(&wf, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_workflow_new(NULL, "x", NULL), WF_EINVAL);
    wf_workflow_free(NULL);
}

Test(workflow, add_step_errors)
{
    wf_workflow *wf, *other;
    cr_assert_eq(wf_workflow_new(&wf, "W", NULL), 0);
    cr_assert_eq(wf_workflow_new(&other, "O", NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    const wf_event_type *foreign[] = {wf_workflow_builtin(other, WF_START_EVENT)};
    wf_step_params p = params(acc, em);
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), 0);
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), WF_EEXIST);
    cr_assert_eq(wf_workflow_add_step(wf, "", nop, &p, NULL), WF_EINVAL);
    cr_assert_eq(wf_workflow_add_step(wf, "t", NULL, &p, NULL), WF_EINVAL);
    cr_assert_eq(wf_workflow_add_step(wf, "t", nop, NULL, NULL), WF_EINVAL);
    wf_step_params q = p;
    q.n_accepts = 0;
    cr_assert_eq(wf_workflow_add_step(wf, "t", nop, &q, NULL), WF_EINVAL);
    q = p;
    q.num_workers = 0;
    cr_assert_eq(wf_workflow_add_step(wf, "t", nop, &q, NULL), WF_EINVAL);
    q = p;
    q.accepts = foreign;
    cr_assert_eq(wf_workflow_add_step(wf, "t", nop, &q, NULL), WF_EINVAL);
    const wf_event_type *nulls[] = {NULL};
    q = p;
    q.emits = nulls;
    cr_assert_eq(wf_workflow_add_step(wf, "t", nop, &q, NULL), WF_EINVAL);
    cr_assert_eq(wf_workflow_step_count(wf), 1);
    wf_workflow_free(other);
    wf_workflow_free(wf);
}

Test(workflow, frozen_after_freeze)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "W", NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p = params(acc, em);
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), 0);
    cr_assert_eq(wf_workflow_freeze(wf, NULL), 0);
    cr_assert_eq(wf_workflow_freeze(wf, NULL), 0); /* idempotent */
    cr_assert_eq(wf_workflow_add_step(wf, "t", nop, &p, NULL), WF_EFROZEN);
    cr_assert_eq(wf_workflow_set_timeout(wf, 10), WF_EFROZEN);
    cr_assert_eq(wf_workflow_set_validation(wf, 0), WF_EFROZEN);
    cr_assert_eq(wf_workflow_skip_check(wf, "dead_end"), WF_EFROZEN);
    cr_assert_eq(wf_workflow_start_type(wf), acc[0]);
    cr_assert_eq(wf_workflow_stop_type(wf), em[0]);
    cr_assert_str_eq(wf_workflow_step_name(wf, 0), "s");
    cr_assert_null(wf_workflow_step_name(wf, 1));
    wf_workflow_free(wf);
}

Test(workflow, timeouts)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "W", NULL), 0);
    cr_assert_eq(wf_workflow_set_timeout(wf, WF_NO_TIMEOUT), 0);
    cr_assert_eq(wf_workflow_timeout(wf), WF_NO_TIMEOUT);
    cr_assert_eq(wf_workflow_set_timeout(wf, 0), 0);
    cr_assert_eq(wf_workflow_set_timeout(wf, -5), WF_EINVAL);
    cr_assert_eq(wf_workflow_timeout(wf), 0);
    wf_workflow_free(wf);
}

Test(workflow, user_free_runs_once_and_not_on_failure)
{
    freed = 0;
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "W", NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p = params(acc, em);
    p.user_free = count_free;
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, (void *)1), 0);
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, (void *)100), WF_EEXIST);
    cr_assert_eq(wf_workflow_add_step(wf, "t", nop, &p, (void *)10), 0);
    wf_workflow *ref = wf_workflow_retain(wf);
    wf_workflow_free(wf);
    cr_assert_eq(freed, 0, "freed while a reference remains");
    wf_workflow_free(ref);
    cr_assert_eq(freed, 11);
}

Test(workflow, shared_registry)
{
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    wf_workflow *a, *b;
    cr_assert_eq(wf_workflow_new(&a, "A", reg), 0);
    cr_assert_eq(wf_workflow_new(&b, "B", reg), 0);
    cr_assert_eq(wf_workflow_registry(a), reg);
    cr_assert_eq(wf_workflow_registry(b), reg);
    const wf_event_type *t1, *t2;
    cr_assert_eq(wf_workflow_event_type(a, "Shared", NULL, &t1), 0);
    cr_assert_eq(wf_workflow_event_type(b, "Shared", NULL, &t2), 0);
    cr_assert_eq(t1, t2);
    wf_registry_free(reg); /* the workflows keep it alive */
    cr_assert_str_eq(wf_event_type_name(t1), "Shared");
    wf_workflow_free(a);
    cr_assert_eq(wf_registry_find(wf_workflow_registry(b), "Shared"), t1);
    wf_workflow_free(b);
}

Test(workflow, routing_table_uses_types_registered_later_for_subtype_steps, .timeout = 30)
{
    /* A subtype registered after freezing still reaches a step that opted in. */
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "W", NULL), 0);
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *acc[] = {start};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p = params(acc, em);
    p.accept_subtypes = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), 0);
    cr_assert_eq(wf_workflow_freeze(wf, NULL), 0);
    const wf_event_type *late;
    cr_assert_eq(wf_workflow_event_type(wf, "LateStart", start, &late), 0);
    cr_assert_eq(wf_workflow_start_type(wf), start);
    cr_assert(wf_event_type_is(late, start));
    wf_workflow_free(wf);
}

Test(workflow, join_and_join_list_are_exclusive)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "W", NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p = params(acc, em);
    p.join = 1;
    p.join_list = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "both", nop, &p, NULL), WF_EINVAL);
    cr_assert(strstr(wf_last_error_message(), "join and join_list are exclusive"), "message: %s",
              wf_last_error_message());
    cr_assert(strstr(wf_last_error_message(), "\"both\""));
    cr_assert_eq(wf_workflow_step_count(wf), 0);
    p.join = 0;
    cr_assert_eq(wf_workflow_add_step(wf, "list", nop, &p, NULL), 0);
    wf_workflow_free(wf);
}

static void *fail_in_thread(void *arg)
{
    (void)arg;
    wf_workflow *wf = NULL;
    /* This thread's failure must not change the main thread's message. */
    if (wf_workflow_new(&wf, "", NULL) != WF_EINVAL)
        return (void *)1;
    return strstr(wf_last_error_message(), "wf_workflow_new") ? NULL : (void *)1;
}

Test(workflow, last_error_message_names_the_problem_per_thread)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "W", NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p = params(acc, em);
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), 0);
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), WF_EEXIST);
    cr_assert_str_eq(wf_last_error_message(),
                     "wf_workflow_add_step: workflow \"W\" already has a step \"s\"");
    pthread_t th;
    void *res = (void *)1;
    cr_assert_eq(pthread_create(&th, NULL, fail_in_thread, NULL), 0);
    pthread_join(th, &res);
    cr_assert_null(res);
    cr_assert(strstr(wf_last_error_message(), "already has a step"), "changed by another thread");
    /* A success leaves it as it was. */
    cr_assert_eq(wf_workflow_set_timeout(wf, 5), 0);
    cr_assert(strstr(wf_last_error_message(), "already has a step"));
    cr_assert_eq(wf_workflow_skip_check(wf, "nonsense"), WF_EINVAL);
    cr_assert(strstr(wf_last_error_message(), "unknown check \"nonsense\""));
    wf_workflow_free(wf);
}
