/*
 * test_coord.c: coordination: collect_events (order, concurrency, buffers).
 * Ports of the reference's collect scenarios.
 */
#include "harness.h"

#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

static const wf_event_type *T_START, *T_STOP, *T_A, *T_B, *T_PAIR;

static wf_workflow *new_wf(const char *name)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, name, NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "A", NULL, &T_A), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "B", NULL, &T_B), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Pair", NULL, &T_PAIR), 0);
    return wf;
}

static void add(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *a1,
                const wf_event_type *a2, const wf_event_type *e1, const wf_event_type *e2,
                uint32_t workers)
{
    const wf_event_type *acc[2] = {a1, a2};
    const wf_event_type *em[2] = {e1, e2};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = a2 ? 2 : 1;
    p.emits = em;
    p.n_emits = e2 ? 2 : 1;
    if (workers)
        p.num_workers = workers;
    cr_assert_eq(wf_workflow_add_step(wf, name, fn, &p, NULL), 0);
}

static wf_event *ev_i(const wf_event_type *t, int64_t i)
{
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, t, "i", wf_value_int(i)), 0);
    return e;
}

static int64_t geti(const wf_event *e)
{
    int64_t v = -1;
    wf_value_get_int(wf_event_get(e, "i", wf_value_nil()), &v);
    return v;
}

static wf_executor *exec_n(uint32_t n)
{
    wf_executor_params p;
    wf_executor_params_init(&p);
    p.threads = n;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &p), 0);
    return ex;
}

/* ---- order: [A, B] whatever the arrival order ---- */

static int send_b_then_a(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(wf_ctx_send_event(ctx, ev_i(T_B, 2), NULL), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, ev_i(T_A, 1), NULL), 0);
    return 0;
}

static int collect_ab(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *want[] = {T_A, T_B};
    wf_event *got[2];
    int rc = wf_ctx_collect_events(ctx, in, want, 2, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    cr_assert_eq(rc, 0);
    char s[32];
    snprintf(s, sizeof s, "%s,%s", wf_event_type_name_of(got[0]), wf_event_type_name_of(got[1]));
    wf_event_release(got[0]);
    wf_event_release(got[1]);
    wf_value v;
    cr_assert_eq(wf_value_string(&v, s), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

Test(coord, collect_returns_events_in_the_order_asked, .timeout = 60)
{
    for (uint32_t threads = 1; threads <= 2; threads++) {
        wf_workflow *wf = new_wf("collect");
        add(wf, "start", send_b_then_a, T_START, NULL, T_A, T_B, 0);
        add(wf, "collect", collect_ab, T_A, T_B, T_STOP, NULL, 1);
        wf_executor *ex = exec_n(threads);
        wf_event *s, *res;
        cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
        cr_assert_eq(wf_run(ex, wf, NULL, s, -1, &res), 0);
        const char *r;
        cr_assert_eq(wf_value_get_string(wf_event_result(res), &r, NULL), 0);
        cr_assert_str_eq(r, "A,B");
        wf_event_release(res);
        wf_executor_free(ex);
        wf_workflow_free(wf);
    }
}

/* ---- 10,000 events under num_workers 4: every event handed out once ---- */

#define HALF 5000
static _Atomic uint8_t handed[2 * HALF];
static atomic_int pairs;

static int fan_pairs(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int i = 0; i < HALF; i++) {
        cr_assert_eq(wf_ctx_send_event(ctx, ev_i(T_A, i), NULL), 0);
        cr_assert_eq(wf_ctx_send_event(ctx, ev_i(T_B, HALF + i), NULL), 0);
    }
    return 0;
}

static int collect_pair(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *want[] = {T_A, T_B};
    wf_event *got[2];
    int rc = wf_ctx_collect_events(ctx, in, want, 2, "pairs", got);
    if (rc == WF_EAGAIN)
        return 0;
    cr_assert_eq(rc, 0);
    cr_assert_eq(wf_event_type_of(got[0]), T_A);
    cr_assert_eq(wf_event_type_of(got[1]), T_B);
    for (int k = 0; k < 2; k++) {
        int64_t i = geti(got[k]);
        cr_assert(i >= 0 && i < 2 * HALF);
        atomic_fetch_add(&handed[i], 1);
        wf_event_release(got[k]);
    }
    *out = ev_i(T_PAIR, 0);
    return 0;
}

static int count_pairs(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    if (atomic_fetch_add(&pairs, 1) + 1 == HALF)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(HALF));
    return 0;
}

Test(coord, collect_under_several_workers_hands_out_each_event_once, .timeout = 120)
{
    wf_workflow *wf = new_wf("pairs");
    add(wf, "fan", fan_pairs, T_START, NULL, T_A, T_B, 0);
    add(wf, "collect", collect_pair, T_A, T_B, T_PAIR, NULL, 4);
    add(wf, "count", count_pairs, T_PAIR, NULL, T_STOP, NULL, 1);
    wf_executor *ex = exec_n(4);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, s, -1, NULL), 0);
    wf_executor_free(ex);
    for (int i = 0; i < 2 * HALF; i++)
        cr_assert_eq(atomic_load(&handed[i]), 1, "event %d handed out %d times", i,
                     atomic_load(&handed[i]));
    wf_workflow_free(wf);
}

/* ---- same type twice, buffers apart, errors ---- */

static int collect_two_a(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *want[] = {T_A, T_A};
    wf_event *got[2];
    /* a B here is not expected */
    if (wf_event_type_of(in) == T_B) {
        cr_assert_eq(wf_ctx_collect_events(ctx, in, want, 2, NULL, got), WF_ETYPE);
        return 0;
    }
    int rc = wf_ctx_collect_events(ctx, in, want, 2, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    cr_assert_eq(rc, 0);
    int64_t v = geti(got[0]) * 10 + geti(got[1]); /* arrival order */
    wf_event_release(got[0]);
    wf_event_release(got[1]);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(v));
}

static int send_b_a1_a2(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(wf_ctx_send_event(ctx, ev_i(T_B, 9), NULL), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, ev_i(T_A, 1), NULL), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, ev_i(T_A, 2), NULL), 0);
    return 0;
}

Test(coord, same_type_listed_twice_binds_in_arrival_order, .timeout = 60)
{
    wf_workflow *wf = new_wf("twice");
    add(wf, "start", send_b_a1_a2, T_START, NULL, T_A, T_B, 0);
    add(wf, "collect", collect_two_a, T_A, T_B, T_STOP, NULL, 1);
    wf_executor *ex = exec_n(2);
    wf_event *s, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, s, -1, &res), 0);
    int64_t v;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
    cr_assert_eq(v, 12, "first, second");
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, collect_outside_a_step_is_refused)
{
    wf_workflow *wf = new_wf("outside");
    add(wf, "collect", collect_ab, T_START, NULL, T_STOP, NULL, 1);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    wf_event *e = ev_i(T_A, 1);
    const wf_event_type *want[] = {T_A};
    wf_event *got[1];
    cr_assert_eq(wf_ctx_collect_events(ctx, e, want, 1, NULL, got), WF_ESTATE);
    cr_assert_eq(wf_ctx_collect_events(ctx, e, want, 0, NULL, got), WF_EINVAL);
    cr_assert_eq(wf_ctx_collect_events(NULL, e, want, 1, NULL, got), WF_EINVAL);
    wf_event_release(e);
    wf_ctx_free(ctx);
    wf_workflow_free(wf);
}

/* ---- human in the loop: InputRequiredEvent out, HumanResponseEvent in ---- */

static const wf_event_type *T_IR, *T_HR, *T_REPLY;

static wf_workflow *hitl_wf(const char *name)
{
    wf_workflow *wf = new_wf(name);
    T_IR = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    T_HR = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Reply", NULL, &T_REPLY), 0);
    return wf;
}

static const char *sfield(const wf_event *e, const char *k)
{
    const char *s = NULL;
    wf_value_get_string(wf_event_get(e, k, wf_value_nil()), &s, NULL);
    return s;
}

static wf_event *ev_s(const wf_event_type *t, const char *k, const char *v)
{
    wf_value s;
    cr_assert_eq(wf_value_string(&s, v), 0);
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, t, k, s), 0);
    return e;
}

static int ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    *out = ev_s(T_IR, "prefix", "what is the answer?");
    return 0;
}

static int answer(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_value r;
    cr_assert_eq(wf_value_string(&r, sfield(in, "response")), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, r);
}

Test(coord, human_in_the_loop_round_trip, .timeout = 60)
{
    wf_workflow *wf = hitl_wf("hitl");
    add(wf, "ask", ask, T_START, NULL, T_IR, NULL, 0);
    add(wf, "answer", answer, T_HR, NULL, T_STOP, NULL, 0);
    char *msg = NULL;
    cr_assert_eq(wf_workflow_validate(wf, &msg), 0, "%s", msg ? msg : "");
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_eq(wf_event_type_of(e), T_IR, "InputRequiredEvent is streamed by itself");
    cr_assert_str_eq(sfield(e, "prefix"), "what is the answer?");
    wf_event_release(e);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "42"), NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    const char *r;
    cr_assert_eq(wf_value_get_string(wf_event_result(res), &r, NULL), 0);
    cr_assert_str_eq(r, "42");
    cr_assert_eq(wf_handler_unhandled(h), 0);
    wf_event_release(res);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- wait_for_event: requirements, replay, waiter event once, timeout ---- */

static atomic_int waiter_runs;

static int wait_reply7(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&waiter_runs, 1);
    wf_value req;
    cr_assert_eq(wf_value_map_new(&req, 1), 0);
    cr_assert_eq(wf_value_map_set(&req, "id", wf_value_int(7)), 0);
    wf_event *got = NULL;
    int rc = wf_ctx_wait_for_event(ctx, T_REPLY, req, ev_s(T_IR, "prefix", "id 7 please"), NULL,
                                   WF_NO_TIMEOUT, &got);
    wf_value_release(req);
    if (rc == WF_SUSPEND)
        return WF_SUSPEND;
    cr_assert_eq(rc, 0);
    cr_assert_eq(wf_event_type_of(got), T_REPLY);
    int64_t id = 0;
    wf_value_get_int(wf_event_get(got, "id", wf_value_nil()), &id);
    wf_event_release(got);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(id));
}

static wf_event *reply(int64_t id)
{
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, T_REPLY, "id", wf_value_int(id)), 0);
    return e;
}

Test(coord, wait_for_event_with_requirements_and_replay, .timeout = 60)
{
    atomic_store(&waiter_runs, 0);
    wf_workflow *wf = hitl_wf("waiter");
    add(wf, "waits", wait_reply7, T_START, NULL, T_STOP, NULL, 0);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    /* The waiter event is streamed when the waiter is registered. */
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_eq(wf_event_type_of(e), T_IR);
    cr_assert_str_eq(sfield(e, "prefix"), "id 7 please");
    wf_event_release(e);
    /* A Reply with another id does not wake the step (nobody else takes it). */
    cr_assert_eq(wf_handler_send_event(h, reply(3), NULL), 0);
    while (wf_handler_unhandled(h) < 1)
        ;
    cr_assert_eq(wf_handler_status(h), WF_RUN_RUNNING);
    cr_assert_eq(atomic_load(&waiter_runs), 1);
    cr_assert_eq(wf_handler_send_event(h, reply(7), NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t id;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &id), 0);
    cr_assert_eq(id, 7);
    wf_event_release(res);
    cr_assert_eq(atomic_load(&waiter_runs), 2, "the step ran again from the top, once");
    cr_assert_eq(wf_handler_unhandled(h), 1, "the matching event went to the waiter");
    /* the waiter event came once: next is the StopEvent */
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert(wf_event_type_is_stop(wf_event_type_of(e)));
    wf_event_release(e);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

static int wait_with_timeout(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&waiter_runs, 1);
    wf_event *got = NULL;
    int rc = wf_ctx_wait_for_event(ctx, T_REPLY, wf_value_nil(), NULL, "w", 20, &got);
    if (rc == WF_SUSPEND)
        return WF_SUSPEND;
    cr_assert_eq(rc, WF_ETIMEDOUT);
    cr_assert_null(got);
    wf_value v;
    cr_assert_eq(wf_value_string(&v, "timed out"), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

Test(coord, waiter_timeout_reruns_the_step, .timeout = 60)
{
    atomic_store(&waiter_runs, 0);
    wf_workflow *wf = hitl_wf("waiter-timeout");
    add(wf, "waits", wait_with_timeout, T_START, NULL, T_STOP, NULL, 0);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = exec_n(2);
    wf_event *s, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, s, -1, &res), 0);
    const char *r;
    cr_assert_eq(wf_value_get_string(wf_event_result(res), &r, NULL), 0);
    cr_assert_str_eq(r, "timed out");
    cr_assert_eq(atomic_load(&waiter_runs), 2);
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

static int wait_for_human(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *got = NULL;
    int rc = wf_ctx_wait_for_event(ctx, T_HR, wf_value_nil(), ev_s(T_IR, "prefix", "name?"), NULL,
                                   WF_NO_TIMEOUT, &got);
    if (rc == WF_SUSPEND)
        return WF_SUSPEND;
    cr_assert_eq(rc, 0);
    wf_value r;
    cr_assert_eq(wf_value_string(&r, sfield(got, "response")), 0);
    wf_event_release(got);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, r);
}

Test(coord, human_in_the_loop_through_wait_for_event, .timeout = 60)
{
    wf_workflow *wf = hitl_wf("hitl-wait");
    add(wf, "asks", wait_for_human, T_START, NULL, T_STOP, NULL, 0);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_str_eq(sfield(e, "prefix"), "name?");
    wf_event_release(e);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "Ada"), NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    const char *r;
    cr_assert_eq(wf_value_get_string(wf_event_result(res), &r, NULL), 0);
    cr_assert_str_eq(r, "Ada");
    wf_event_release(res);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

static int suspend_without_waiting(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return WF_SUSPEND;
}

Test(coord, suspend_without_a_waiter_fails_the_run, .timeout = 60)
{
    wf_workflow *wf = hitl_wf("bad-suspend");
    add(wf, "s", suspend_without_waiting, T_START, NULL, T_STOP, NULL, 0);
    wf_executor *ex = exec_n(1);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    cr_assert_eq(wf_handler_error(h, &code, NULL, NULL), 0);
    cr_assert_eq(code, WF_ESTATE);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/*
 * ---- parallel invocations waiting alike (no waiter id) each get their own
 * waiter: the reference's test_parallel_identical_implicit_waiters_are_not_
 * collapsed and test_parallel_implicit_waiters_survive_snapshot_resume ----
 */

static const wf_event_type *T_WAITEV, *T_WDONE;

static int dispatch3(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    static const char *const names[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(wf_ctx_send_event(ctx, ev_s(T_WAITEV, "name", names[i]), NULL), 0);
    return 0;
}

/* u != NULL: the waiter event names the branch ("approve a"); else they are identical. */
static int wait_branch(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, u ? "approve %s" : "approve", sfield(in, "name"));
    wf_event *got = NULL;
    int rc = wf_ctx_wait_for_event(ctx, T_HR, wf_value_nil(), ev_s(T_IR, "prefix", prefix), NULL,
                                   WF_NO_TIMEOUT, &got);
    if (rc == WF_SUSPEND)
        return WF_SUSPEND;
    cr_assert_eq(rc, 0);
    char both[128];
    snprintf(both, sizeof both, "%s=%s", sfield(in, "name"), sfield(got, "response"));
    wf_event_release(got);
    *out = ev_s(T_WDONE, "r", both);
    return 0;
}

static int collect3(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *types[3] = {T_WDONE, T_WDONE, T_WDONE};
    wf_event *evs[3];
    int rc = wf_ctx_collect_events(ctx, in, types, 3, NULL, evs);
    if (rc == WF_EAGAIN)
        return 0;
    cr_assert_eq(rc, 0);
    /* the branches answer in any order: the result lists them sorted */
    const char *r[3];
    for (int i = 0; i < 3; i++)
        r[i] = sfield(evs[i], "r");
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (strcmp(r[j], r[i]) < 0) {
                const char *x = r[i];
                r[i] = r[j];
                r[j] = x;
            }
    char all[256];
    snprintf(all, sizeof all, "%s %s %s", r[0], r[1], r[2]);
    wf_value v;
    cr_assert_eq(wf_value_string(&v, all), 0);
    for (int i = 0; i < 3; i++)
        wf_event_release(evs[i]);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

static wf_workflow *implicit_wf(const char *name, int distinct)
{
    wf_workflow *wf = hitl_wf(name);
    cr_assert_eq(wf_workflow_event_type(wf, "WaitEv", NULL, &T_WAITEV), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "WaitDone", NULL, &T_WDONE), 0);
    add(wf, "dispatch", dispatch3, T_START, NULL, T_WAITEV, NULL, 0);
    const wf_event_type *acc[1] = {T_WAITEV};
    const wf_event_type *em[1] = {T_WDONE};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    p.num_workers = 3;
    cr_assert_eq(
        wf_workflow_add_step(wf, "wait_branch", wait_branch, &p, distinct ? (void *)1 : NULL), 0);
    add(wf, "collect", collect3, T_WDONE, NULL, T_STOP, NULL, 0);
    wf_workflow_set_validation(wf, 0);
    wf_workflow_set_timeout(wf, 20000); /* a lost waiter shows as a timeout, not a hang */
    return wf;
}

/* Reads the stream until n InputRequiredEvents came; returns their prefixes, sorted, joined. */
static void read_requests(wf_handler *h, int n, char *out, size_t cap)
{
    char got[8][64];
    int k = 0;
    while (k < n) {
        wf_event *e;
        cr_assert_eq(wf_handler_next_event(h, -1, &e), 0, "the run ended before %d requests", n);
        if (wf_event_type_of(e) == T_IR && k < 8)
            snprintf(got[k++], sizeof got[0], "%s", sfield(e, "prefix"));
        wf_event_release(e);
    }
    for (int i = 0; i < k; i++)
        for (int j = i + 1; j < k; j++)
            if (strcmp(got[j], got[i]) < 0) {
                char x[64];
                memcpy(x, got[i], sizeof x);
                memcpy(got[i], got[j], sizeof x);
                memcpy(got[j], x, sizeof x);
            }
    out[0] = 0;
    for (int i = 0; i < k; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? "|" : "", got[i]);
}

static void expect_result(wf_handler *h, const char *want)
{
    wf_event *res = NULL;
    int rc = wf_handler_wait(h, -1, &res);
    const char *msg = NULL;
    if (rc != 0)
        wf_handler_error(h, NULL, NULL, &msg);
    cr_assert_eq(rc, 0, "the run did not complete: %s", msg ? msg : "");
    const char *r;
    cr_assert_eq(wf_value_get_string(wf_event_result(res), &r, NULL), 0);
    cr_assert_str_eq(r, want);
    wf_event_release(res);
}

Test(coord, parallel_identical_implicit_waiters_are_not_collapsed, .timeout = 60)
{
    wf_workflow *wf = implicit_wf("implicit-waiters", 0);
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    char prefixes[256];
    read_requests(h, 3, prefixes, sizeof prefixes);
    cr_assert_str_eq(prefixes, "approve|approve|approve", "one request per waiting invocation");
    /* one answer satisfies every waiter of its type */
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "approved"), NULL), 0);
    expect_result(h, "a=approved b=approved c=approved");
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, parallel_implicit_waiters_survive_snapshot_resume, .timeout = 60)
{
    wf_workflow *wf = implicit_wf("implicit-waiters-resume", 1);
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    cr_assert_eq(wf_run_start(ex, wf, ctx, s, &h), 0);
    char prefixes[256];
    read_requests(h, 3, prefixes, sizeof prefixes);
    cr_assert_str_eq(prefixes, "approve a|approve b|approve c");
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    void *bytes;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &bytes, &len), 0);
    wf_ctx_free(ctx);

    wf_ctx *back;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, bytes, len, 0, &back, &msg), 0, "%s", msg ? msg : "");
    wf_free(bytes);
    cr_assert_eq(wf_run_resume(ex, wf, back, NULL, &h, &msg), 0, "%s", msg ? msg : "");
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "approved"), NULL), 0);
    expect_result(h, "a=approved b=approved c=approved");
    wf_handler_free(h);
    wf_ctx_free(back);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- a step's return value that is not a result names what it returned ---- */

static int returns_seven(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 7;
}

Test(coord, a_step_returning_an_unknown_positive_value_fails_naming_it, .timeout = 60)
{
    wf_workflow *wf = hitl_wf("bad-return");
    add(wf, "seven", returns_seven, T_START, NULL, T_STOP, NULL, 0);
    wf_executor *ex = exec_n(1);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    const char *step, *msg;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, WF_ESTATE);
    cr_assert_str_eq(step, "seven");
    cr_assert(strstr(msg, "returned 7") != NULL, "message: %s", msg);
    cr_assert(strstr(msg, "WF_PENDING, which needs") == NULL, "message: %s", msg);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- misuse that would deadlock is refused: waiting forever from a worker, freeing from a step
 * ---- */

static wf_executor *misuse_ex;
static wf_workflow *misuse_inner;
static atomic_int misuse_rc_wait, misuse_rc_run;

static int inner_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

static int waits_on_own_executor(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *start = wf_workflow_builtin(misuse_inner, WF_START_EVENT);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, start, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(misuse_ex, misuse_inner, NULL, s, &h), 0);
    atomic_store(&misuse_rc_wait, wf_handler_wait(h, -1, NULL));
    cr_assert(strstr(wf_last_error_message(), "without a timeout") != NULL, "%s",
              wf_last_error_message());
    cr_assert_eq(wf_handler_wait(h, 10000, NULL), 0, "with a timeout the wait is allowed");
    wf_handler_free(h);
    cr_assert_eq(wf_event_new(&s, start, 0), 0);
    atomic_store(&misuse_rc_run, wf_run(misuse_ex, misuse_inner, NULL, s, -1, NULL));
    wf_executor_free(misuse_ex); /* refused: it would wait for this very thread */
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(2));
}

Test(coord, waiting_forever_or_freeing_from_a_worker_is_refused, .timeout = 60)
{
    misuse_inner = hitl_wf("inner");
    add(misuse_inner, "inner", inner_step, T_START, NULL, T_STOP, NULL, 0);
    wf_workflow *wf = hitl_wf("outer");
    add(wf, "outer", waits_on_own_executor, T_START, NULL, T_STOP, NULL, 0);
    misuse_ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_event *res = NULL;
    cr_assert_eq(wf_run(misuse_ex, wf, NULL, s, -1, &res), 0);
    wf_event_release(res);
    cr_assert_eq(atomic_load(&misuse_rc_wait), WF_ESTATE);
    cr_assert_eq(atomic_load(&misuse_rc_run), WF_ESTATE);
    /* the executor survived the refused free and still runs */
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    cr_assert_eq(wf_run(misuse_ex, wf, NULL, s, -1, NULL), 0);
    wf_executor_free(misuse_ex);
    wf_workflow_free(wf);
    wf_workflow_free(misuse_inner);
}

/* ---- stream_internal: StepStateChanged, WorkflowIdleEvent, UnhandledEvent ---- */

static const char *field_s(const wf_event *e, const char *k)
{
    const char *s = NULL;
    wf_value_get_string(wf_event_get(e, k, wf_value_nil()), &s, NULL);
    return s;
}

/* One line per streamed event: "Type" or "StepStateChanged:step:state:in:out". */
static void describe(const wf_event *e, char *buf, size_t cap)
{
    const char *tn = wf_event_type_name_of(e);
    if (strcmp(tn, "StepStateChanged") == 0) {
        const char *out = field_s(e, "output_event_name");
        const char *wid = field_s(e, "worker_id");
        cr_assert(wid && strncmp(wid, "worker ", 7) == 0, "worker_id %s", wid ? wid : "(none)");
        snprintf(buf, cap, "%s:%s:%s:%s:%s", tn, field_s(e, "name"), field_s(e, "step_state"),
                 field_s(e, "input_event_name"), out ? out : "-");
    } else if (strcmp(tn, "UnhandledEvent") == 0) {
        int idle = -1;
        wf_value_get_bool(wf_event_get(e, "idle", wf_value_nil()), &idle);
        snprintf(buf, cap, "%s:%s:%s:%d", tn, field_s(e, "event_type"),
                 field_s(e, "qualified_name"), idle);
    } else {
        snprintf(buf, cap, "%s", tn);
    }
}

/* Reads until (and including) an event whose description starts with stop; appends to log. */
static void read_until(wf_handler *h, const char *stop, char *log, size_t cap)
{
    for (;;) {
        wf_event *e;
        cr_assert_eq(wf_handler_next_event(h, -1, &e), 0, "stream ended; so far: %s", log);
        char d[256];
        describe(e, d, sizeof d);
        wf_event_release(e);
        snprintf(log + strlen(log), cap - strlen(log), "%s\n", d);
        if (strncmp(d, stop, strlen(stop)) == 0)
            return;
    }
}

Test(coord, internal_events_follow_a_run_through_a_wait, .timeout = 60)
{
    wf_workflow *wf = hitl_wf("internal");
    add(wf, "asks", wait_for_human, T_START, NULL, T_STOP, NULL, 0);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = exec_n(2);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.stream_internal = 1;
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &h, NULL), 0);
    char log[4096] = "";
    read_until(h, "WorkflowIdleEvent", log, sizeof log);
    cr_assert_str_eq(log, "StepStateChanged:asks:running:StartEvent:-\n"
                          "InputRequiredEvent\n"
                          "StepStateChanged:asks:not_running:StartEvent:-\n"
                          "WorkflowIdleEvent\n");
    /* an event nobody takes, while idle */
    log[0] = 0;
    cr_assert_eq(wf_handler_send_event(h, ev_i(T_A, 1), NULL), 0);
    read_until(h, "UnhandledEvent", log, sizeof log);
    cr_assert_str_eq(log, "UnhandledEvent:A:A:1\n");
    /* the answer: the step runs again and stops the run */
    log[0] = 0;
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "Ada"), NULL), 0);
    read_until(h, "StopEvent", log, sizeof log);
    cr_assert_str_eq(log,
                     "StepStateChanged:asks:running:StartEvent:-\n"
                     "StepStateChanged:asks:not_running:StartEvent:StopEvent\n"
                     "StopEvent\n",
                     "no second idle event, and the terminal last");
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

static int always_fails(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_ctx_set_error(ctx, "no luck");
    return WF_EINTERNAL;
}

Test(coord, workflow_failed_event_says_attempts_and_elapsed_time, .timeout = 60)
{
    wf_workflow *wf = hitl_wf("fails");
    wf_retry_policy *pol;
    cr_assert_eq(wf_retry_policy_constant(&pol, 3, 0), 0);
    const wf_event_type *acc[1] = {T_START};
    const wf_event_type *em[1] = {T_STOP};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    p.retry = pol;
    cr_assert_eq(wf_workflow_add_step(wf, "fails", always_fails, &p, NULL), 0);
    wf_retry_policy_free(pol);
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_str_eq(wf_event_type_name_of(e), "WorkflowFailedEvent");
    cr_assert_str_eq(field_s(e, "step_name"), "fails");
    cr_assert_str_eq(field_s(e, "error"), "no luck");
    uint64_t att = 0;
    cr_assert_eq(wf_value_get_uint(wf_event_get(e, "attempts", wf_value_nil()), &att), 0);
    cr_assert_eq(att, 3);
    double el = -1;
    cr_assert_eq(wf_value_get_double(wf_event_get(e, "elapsed_seconds", wf_value_nil()), &el), 0);
    cr_assert(el >= 0, "elapsed %g", el);
    wf_event_release(e);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- wf_ctx_running_steps ---- */

static sem_t rs_in, rs_out;

static int running_check(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_value names, first;
    cr_assert_eq(wf_ctx_running_steps(ctx, &names), 0);
    cr_assert_eq(wf_value_len(names), 1, "only this step runs");
    cr_assert_eq(wf_value_array_at(names, 0, &first), 0);
    const char *s;
    cr_assert_eq(wf_value_get_string(first, &s, NULL), 0);
    cr_assert_str_eq(s, "check");
    wf_value_release(names);
    sem_post(&rs_in);  /* the test looks from outside now */
    sem_wait(&rs_out); /* and lets the step go */
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

Test(coord, running_steps_names_the_steps_in_progress, .timeout = 60)
{
    sem_init(&rs_in, 0, 0);
    sem_init(&rs_out, 0, 0);
    wf_workflow *wf = hitl_wf("running-steps");
    add(wf, "check", running_check, T_START, NULL, T_STOP, NULL, 0);
    wf_executor *ex = exec_n(2);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    wf_value names;
    cr_assert_eq(wf_ctx_running_steps(ctx, &names), WF_ESTATE, "no run yet");
    cr_assert_eq(wf_ctx_running_steps(NULL, &names), WF_EINVAL);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, ctx, s, &h), 0);
    sem_wait(&rs_in);
    cr_assert_eq(wf_ctx_running_steps(ctx, &names), 0);
    cr_assert_eq(wf_value_len(names), 1);
    wf_value_release(names);
    sem_post(&rs_out);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    cr_assert_eq(wf_ctx_running_steps(ctx, &names), WF_ESTATE, "the run ended");
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- num_concurrent_runs: at most n active runs, the others wait in order ---- */

static atomic_int nc_active, nc_max, nc_started;
static int nc_order[16];
static sem_t nc_go, nc_in, nc_done;
static int nc_block;

static int nc_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int cur = atomic_fetch_add(&nc_active, 1) + 1;
    int m = atomic_load(&nc_max);
    while (cur > m && !atomic_compare_exchange_weak(&nc_max, &m, cur))
        ;
    int k = atomic_fetch_add(&nc_started, 1);
    if (k < 16)
        nc_order[k] = (int)geti(in);
    if (nc_block) {
        sem_post(&nc_in);
        sem_wait(&nc_go);
    }
    atomic_fetch_sub(&nc_active, 1);
    if (nc_block)
        sem_post(&nc_done);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(geti(in)));
}

static wf_workflow *nc_wf(uint32_t limit, int block)
{
    atomic_store(&nc_active, 0);
    atomic_store(&nc_max, 0);
    atomic_store(&nc_started, 0);
    nc_block = block;
    sem_init(&nc_go, 0, 0);
    sem_init(&nc_in, 0, 0);
    sem_init(&nc_done, 0, 0);
    wf_workflow *wf = new_wf("limited");
    add(wf, "step", nc_step, T_START, NULL, T_STOP, NULL, 0);
    cr_assert_eq(wf_workflow_set_num_concurrent_runs(wf, limit), 0);
    cr_assert_eq(wf_workflow_num_concurrent_runs(wf), limit);
    return wf;
}

/* h's run ends with a StopEvent whose result is the int want. */
static void expect_int_result(wf_handler *h, int64_t want)
{
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t got = -1;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &got), 0);
    cr_assert_eq(got, want);
    wf_event_release(res);
}

Test(coord, one_concurrent_run_at_a_time_in_the_order_started, .timeout = 60)
{
    wf_workflow *wf = nc_wf(1, 0);
    wf_executor *ex = exec_n(2);
    wf_handler *h[5];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, i), &h[i]), 0);
    for (int i = 0; i < 5; i++) {
        expect_int_result(h[i], i);
        wf_handler_free(h[i]);
    }
    cr_assert_eq(atomic_load(&nc_max), 1);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(nc_order[i], i, "run %d started as number %d", nc_order[i], i);
    cr_assert_eq(wf_workflow_set_num_concurrent_runs(wf, 3), WF_EFROZEN);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, two_concurrent_runs_never_more, .timeout = 60)
{
    wf_workflow *wf = nc_wf(2, 1);
    wf_executor *ex = exec_n(3);
    wf_handler *h[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, i), &h[i]), 0);
    /* two inside at once, then one more each time one leaves */
    sem_wait(&nc_in);
    sem_wait(&nc_in);
    for (int i = 2; i < 8; i++) {
        sem_post(&nc_go);
        sem_wait(&nc_in);
    }
    sem_post(&nc_go);
    sem_post(&nc_go);
    for (int i = 0; i < 8; i++) {
        expect_int_result(h[i], i);
        wf_handler_free(h[i]);
    }
    cr_assert_eq(atomic_load(&nc_max), 2, "at most two at once, and two do run at once: %d",
                 atomic_load(&nc_max));
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, a_waiting_run_can_be_cancelled_and_never_runs, .timeout = 60)
{
    wf_workflow *wf = nc_wf(1, 1);
    wf_executor *ex = exec_n(2);
    wf_handler *first, *waiting, *later;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, 0), &first), 0);
    sem_wait(&nc_in); /* the first holds the only place */
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, 1), &waiting), 0);
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, 2), &later), 0);
    cr_assert_eq(wf_handler_status(waiting), WF_RUN_RUNNING);
    cr_assert_eq(wf_handler_cancel(waiting), 0);
    cr_assert_eq(wf_handler_wait(waiting, -1, NULL), WF_ECANCELLED);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(waiting, -1, &e), 0);
    cr_assert_str_eq(wf_event_type_name_of(e), "WorkflowCancelledEvent");
    wf_event_release(e);
    sem_post(&nc_go);
    expect_int_result(first, 0);
    sem_wait(&nc_in); /* the later run has the place now */
    sem_post(&nc_go);
    expect_int_result(later, 2);
    cr_assert_eq(atomic_load(&nc_started), 2, "the cancelled run never ran");
    cr_assert_eq(nc_order[1], 2);
    wf_handler_free(first);
    wf_handler_free(waiting);
    wf_handler_free(later);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, a_resumed_run_waits_for_its_place_too, .timeout = 60)
{
    wf_workflow *wf = nc_wf(1, 1);
    wf_executor *ex = exec_n(2);
    wf_ctx *cx;
    cr_assert_eq(wf_ctx_new(&cx, wf), 0);
    wf_handler *hx, *h0, *hr;
    /* a run cut while its step is in progress, parked in cx */
    cr_assert_eq(wf_run_start(ex, wf, cx, ev_i(T_START, 7), &hx), 0);
    sem_wait(&nc_in);
    cr_assert_eq(wf_handler_cancel(hx), 0);
    sem_post(&nc_go); /* what it returns now is dropped: the run ended at the cut */
    sem_wait(&nc_done); /* its step body is over too (the run's place was freed at the cut) */
    cr_assert_eq(wf_handler_wait(hx, -1, NULL), WF_ECANCELLED);
    wf_handler_free(hx);
    /* another run holds the only place; the resumed one waits for it */
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, 0), &h0), 0);
    sem_wait(&nc_in);
    char *msg = NULL;
    cr_assert_eq(wf_run_resume(ex, wf, cx, NULL, &hr, &msg), 0, "%s", msg ? msg : "");
    cr_assert_eq(wf_handler_status(hr), WF_RUN_RUNNING);
    sem_post(&nc_go);
    expect_int_result(h0, 0);
    sem_wait(&nc_in); /* the resumed run's step runs again (it was in progress) */
    sem_post(&nc_go);
    expect_int_result(hr, 7);
    cr_assert_eq(atomic_load(&nc_max), 1);
    wf_handler_free(h0);
    wf_handler_free(hr);
    wf_ctx_free(cx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- async steps: completion tokens ---- */

#define ASYNC_N 10000
static wf_completion *tokens[ASYNC_N];
static atomic_int ntokens, claimed;
static int
    async_mode; /* 0: hand the token out, 1: complete before returning, 2: pend then return 0 */

static int async_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_completion *c;
    cr_assert_eq(wf_ctx_pend(ctx, &c), 0);
    wf_completion *again;
    cr_assert_eq(wf_ctx_pend(ctx, &again), WF_EEXIST);
    if (async_mode == 1) {
        wf_event *stop;
        cr_assert_eq(wf_event_new_stop(&stop, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                       wf_value_int(geti(in))),
                     0);
        cr_assert_eq(wf_completion_complete(c, stop), 0);
        return WF_PENDING;
    }
    /* claim a slot, fill it, then publish: readers wait on ntokens */
    tokens[atomic_fetch_add(&claimed, 1)] = c;
    atomic_fetch_add(&ntokens, 1);
    return async_mode == 2 ? 0 : WF_PENDING;
}

static wf_workflow *async_wf(wf_retry_policy *retry)
{
    wf_workflow *wf = new_wf("async");
    const wf_event_type *acc[] = {T_START};
    const wf_event_type *em[] = {T_STOP};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    p.retry = retry;
    cr_assert_eq(wf_workflow_add_step(wf, "io", async_step, &p, NULL), 0);
    wf_retry_policy_free(retry);
    return wf;
}

static wf_event *stop_i(wf_handler *h, int64_t v)
{
    wf_event *e;
    cr_assert_eq(wf_event_new_stop(&e, wf_workflow_registry(wf_ctx_workflow(wf_handler_ctx(h))),
                                   NULL, wf_value_int(v)),
                 0);
    return e;
}

Test(coord, ten_thousand_pending_invocations_hold_no_worker, .timeout = 120)
{
    async_mode = 0;
    atomic_store(&ntokens, 0);
    atomic_store(&claimed, 0);
    wf_workflow *wf = async_wf(NULL);
    wf_executor *ex = exec_n(2);
    static wf_handler *hs[ASYNC_N];
    for (int i = 0; i < ASYNC_N; i++)
        cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, i), &hs[i]), 0);
    /* All 10,000 are pending at once on two workers: none of them holds one. */
    while (atomic_load(&ntokens) < ASYNC_N)
        ;
    for (int i = 0; i < ASYNC_N; i++)
        cr_assert_eq(wf_handler_status(hs[i]), WF_RUN_RUNNING);
    /* Complete them from this thread, in reverse. */
    for (int i = ASYNC_N - 1; i >= 0; i--)
        cr_assert_eq(wf_completion_complete(tokens[i], stop_i(hs[0], i)), 0);
    long sum = 0;
    for (int i = 0; i < ASYNC_N; i++) {
        wf_event *res;
        cr_assert_eq(wf_handler_wait(hs[i], -1, &res), 0);
        int64_t v;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
        sum += v;
        wf_event_release(res);
        wf_handler_free(hs[i]);
    }
    cr_assert_eq(sum, (long)ASYNC_N * (ASYNC_N - 1) / 2, "every token completed its own run");
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, completion_before_the_step_returns, .timeout = 60)
{
    async_mode = 1;
    wf_workflow *wf = async_wf(NULL);
    wf_executor *ex = exec_n(2);
    wf_event *res;
    cr_assert_eq(wf_run(ex, wf, NULL, ev_i(T_START, 5), -1, &res), 0);
    int64_t v;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
    cr_assert_eq(v, 5);
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, cancel_reaches_a_pending_invocation, .timeout = 60)
{
    async_mode = 0;
    atomic_store(&ntokens, 0);
    atomic_store(&claimed, 0);
    wf_workflow *wf = async_wf(NULL);
    wf_executor *ex = exec_n(2);
    wf_handler *h, *h2;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, 1), &h), 0);
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, 2), &h2), 0);
    while (atomic_load(&ntokens) < 2)
        ;
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    /* one token belongs to the cancelled run: its completion is dropped safely */
    int cancelled = 0, ok = 0;
    for (int i = 0; i < 2; i++) {
        int rc = wf_completion_complete(tokens[i], stop_i(h2, 7));
        cancelled += rc == WF_ECANCELLED;
        ok += rc == 0;
    }
    cr_assert_eq(cancelled, 1);
    cr_assert_eq(ok, 1);
    cr_assert_eq(wf_handler_wait(h2, -1, NULL), 0);
    wf_handler_free(h);
    wf_handler_free(h2);
    /* a run whose executor shuts down with a token outstanding */
    atomic_store(&ntokens, 0);
    atomic_store(&claimed, 0);
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, 3), &h), 0);
    while (atomic_load(&ntokens) < 1)
        ;
    cr_assert(!wf_completion_cancelled(tokens[0]));
    wf_executor_free(ex);
    cr_assert(wf_completion_cancelled(tokens[0]));
    cr_assert_eq(wf_completion_fail(tokens[0], -1, "too late"), WF_ECANCELLED);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    wf_workflow_free(wf);
}

Test(coord, async_failure_is_retried, .timeout = 60)
{
    async_mode = 0;
    atomic_store(&ntokens, 0);
    atomic_store(&claimed, 0);
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 3, 0), 0);
    wf_workflow *wf = async_wf(p);
    wf_executor *ex = exec_n(2);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev_i(T_START, 1), &h), 0);
    while (atomic_load(&ntokens) < 1)
        ;
    cr_assert_eq(wf_completion_fail(tokens[0], -5, "io error"), 0);
    while (atomic_load(&ntokens) < 2) /* the retry pends again */
        ;
    cr_assert_eq(wf_completion_complete(tokens[1], stop_i(h, 9)), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t v;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
    cr_assert_eq(v, 9);
    wf_event_release(res);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, a_token_of_a_step_that_did_not_pend_is_void, .timeout = 60)
{
    async_mode = 2;
    atomic_store(&ntokens, 0);
    atomic_store(&claimed, 0);
    wf_workflow *wf = async_wf(NULL);
    wf_executor *ex = exec_n(1);
    wf_handler *h;
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = 20;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev_i(T_START, 1), &rp, &h, NULL), 0);
    while (atomic_load(&ntokens) < 1)
        ;
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ERUNTIMEOUT);
    /* The run can time out while the step has not returned yet (a worker
     * paused past 20 ms); a completion then would be an early one (0). The
     * executor's end joins its workers: the step has returned and voided
     * its token, which stays for its completer. */
    wf_handler_free(h);
    wf_executor_free(ex);
    cr_assert_eq(wf_completion_complete(tokens[0], NULL), WF_ECANCELLED);
    wf_workflow_free(wf);
}

/* ---- multi-event joins ---- */

static const wf_event_type *T_H, *T_BODY, *T_F;

static int send_parts(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    /* arrival order: footer, body, header */
    cr_assert_eq(wf_ctx_send_event(ctx, ev_s(T_F, "text", "f"), NULL), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, ev_s(T_BODY, "text", "b"), NULL), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, ev_s(T_H, "text", "h"), NULL), 0);
    return 0;
}

static int join_concat(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    cr_assert_eq(evs[0], in);
    char s[64] = "";
    for (size_t i = 0; i < n; i++) {
        if (u && i)
            strcat(s, ",");
        strcat(s, sfield(evs[i], "text"));
    }
    wf_value v;
    cr_assert_eq(wf_value_string(&v, s), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

static void add_join(wf_workflow *wf, const wf_event_type *const *acc, uint32_t n, void *u)
{
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = n;
    p.emits = &T_STOP;
    p.n_emits = 1;
    p.join = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "join", join_concat, &p, u), 0);
}

static const char *run_for_string(wf_workflow *wf, char *buf, size_t cap)
{
    wf_executor *ex = exec_n(2);
    wf_event *s, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, s, -1, &res), 0);
    const char *r;
    cr_assert_eq(wf_value_get_string(wf_event_result(res), &r, NULL), 0);
    snprintf(buf, cap, "%s", r);
    wf_event_release(res);
    wf_executor_free(ex);
    return buf;
}

Test(coord, join_fires_with_one_of_each_in_declared_order, .timeout = 60)
{
    wf_workflow *wf = new_wf("join");
    cr_assert_eq(wf_workflow_event_type(wf, "Header", NULL, &T_H), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Body", NULL, &T_BODY), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Footer", NULL, &T_F), 0);
    const wf_event_type *sent[] = {T_H, T_BODY, T_F};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = sent;
    p.n_emits = 3;
    cr_assert_eq(wf_workflow_add_step(wf, "parts", send_parts, &p, NULL), 0);
    add_join(wf, sent, 3, NULL);
    char buf[64];
    cr_assert_str_eq(run_for_string(wf, buf, sizeof buf), "hbf");
    wf_workflow_free(wf);
}

static int send_two(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(wf_ctx_send_event(ctx, ev_s(T_A, "text", "first"), NULL), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, ev_s(T_A, "text", "second"), NULL), 0);
    return 0;
}

Test(coord, same_type_join_slots_bind_in_arrival_order, .timeout = 60)
{
    wf_workflow *wf = new_wf("join2");
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = &T_A;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "two", send_two, &p, NULL), 0);
    const wf_event_type *acc[] = {T_A, T_A};
    add_join(wf, acc, 2, (void *)1);
    char buf[64];
    cr_assert_str_eq(run_for_string(wf, buf, sizeof buf), "first,second");
    wf_workflow_free(wf);
}

static atomic_int join_fired;

static int count_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(wf_event_type_of(evs[0]), T_A);
    cr_assert_eq(wf_event_type_of(evs[1]), T_B);
    cr_assert_eq(geti(evs[0]) + HALF, geti(evs[1]), "pairs bind in arrival order");
    if (atomic_fetch_add(&join_fired, 1) + 1 == HALF)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(HALF));
    return 0;
}

Test(coord, repeated_sets_fire_the_join_again, .timeout = 60)
{
    atomic_store(&join_fired, 0);
    wf_workflow *wf = new_wf("join-many");
    add(wf, "fan", fan_pairs, T_START, NULL, T_A, T_B, 0);
    const wf_event_type *acc[] = {T_A, T_B};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 2;
    p.emits = &T_STOP;
    p.n_emits = 1;
    p.join = 1;
    p.num_workers = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "join", count_join, &p, NULL), 0);
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, s, -1, NULL), 0);
    cr_assert_eq(atomic_load(&join_fired), HALF);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- blocking steps ---- */

static sem_t gate;
static atomic_int blocked_in;

static int blocks(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&blocked_in, 1);
    while (sem_wait(&gate) != 0) /* a real blocking call */
        ;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

static int quick(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(2));
}

static wf_workflow *one_step_wf(const char *name, wf_step_fn fn, int blocking)
{
    wf_workflow *wf = new_wf(name);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = &T_STOP;
    p.n_emits = 1;
    p.blocking = blocking;
    cr_assert_eq(wf_workflow_add_step(wf, "s", fn, &p, NULL), 0);
    return wf;
}

Test(coord, blocking_steps_do_not_stall_the_workers, .timeout = 60)
{
    cr_assert_eq(sem_init(&gate, 0, 0), 0);
    wf_workflow *slow = one_step_wf("slow", blocks, 1);
    wf_workflow *fast = one_step_wf("fast", quick, 0);
    wf_executor *ex = exec_n(1); /* one worker only */
    wf_event *s1, *s2, *res;
    cr_assert_eq(wf_event_new(&s1, wf_workflow_builtin(slow, WF_START_EVENT), 0), 0);
    cr_assert_eq(wf_event_new(&s2, wf_workflow_builtin(fast, WF_START_EVENT), 0), 0);
    wf_handler *h1, *h2;
    cr_assert_eq(wf_run_start(ex, slow, NULL, s1, &h1), 0);
    while (atomic_load(&blocked_in) < 1)
        ;
    /* The single worker is free while the blocking step waits. */
    cr_assert_eq(wf_run_start(ex, fast, NULL, s2, &h2), 0);
    cr_assert_eq(wf_handler_wait(h2, -1, &res), 0);
    wf_event_release(res);
    sem_post(&gate);
    cr_assert_eq(wf_handler_wait(h1, -1, &res), 0);
    int64_t v;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
    cr_assert_eq(v, 1);
    wf_event_release(res);
    wf_handler_free(h1);
    wf_handler_free(h2);
    wf_executor_free(ex);
    wf_workflow_free(slow);
    wf_workflow_free(fast);
    sem_destroy(&gate);
}

/* ---- list fan-out and its join ---- */

static const wf_event_type *T_ITEM, *T_RES, *T_OUTER, *T_MID;
static atomic_int list_joins;
static int list_n;

static int split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *evs[16];
    for (int i = 0; i < list_n; i++)
        evs[i] = ev_i(T_ITEM, i);
    return wf_ctx_emit_list(ctx, evs, (size_t)list_n, T_RES);
}

static int work_all(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t i = geti(in);
    if (u == (void *)1 && i % 2 == 0)
        return 0; /* even branches emit nothing: they drop out */
    *out = ev_i(T_RES, i);
    return 0;
}

static int list_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&list_joins, 1);
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    char s[128] = "[";
    for (size_t i = 0; i < n; i++) {
        char num[24];
        snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)geti(evs[i]));
        strcat(s, num);
    }
    strcat(s, "]");
    wf_value v;
    cr_assert_eq(wf_value_string(&v, s), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

/* split (emits a list of Items) -> work (num_workers work_workers, 0: the default) -> join_fn */
static wf_workflow *list_wf_steps(wf_step_fn split_fn, void *work_mode, uint32_t work_workers,
                                  wf_step_fn join_fn)
{
    wf_workflow *wf = new_wf("list");
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &T_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Res", NULL, &T_RES), 0);
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = 1;
    p.n_emits = 1;
    p.accepts = &T_START;
    p.emits = &T_ITEM;
    cr_assert_eq(wf_workflow_add_step(wf, "split", split_fn, &p, NULL), 0);
    p.accepts = &T_ITEM;
    p.emits = &T_RES;
    uint32_t dflt = p.num_workers;
    if (work_workers > 0)
        p.num_workers = work_workers;
    cr_assert_eq(wf_workflow_add_step(wf, "work", work_all, &p, work_mode), 0);
    p.num_workers = dflt;
    p.accepts = &T_RES;
    p.emits = &T_STOP;
    p.join_list = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "join", join_fn, &p, NULL), 0);
    return wf;
}

static wf_workflow *list_wf_split(wf_step_fn split_fn, void *work_mode)
{
    return list_wf_steps(split_fn, work_mode, 0, list_join);
}

static wf_workflow *list_wf(void *work_mode)
{
    return list_wf_split(split, work_mode);
}

static void expect_list(void *mode, int n, const char *want)
{
    atomic_store(&list_joins, 0);
    list_n = n;
    wf_workflow *wf = list_wf(mode);
    char *msg = NULL;
    cr_assert_eq(wf_workflow_validate(wf, &msg), 0, "%s", msg ? msg : "");
    char buf[128];
    cr_assert_str_eq(run_for_string(wf, buf, sizeof buf), want);
    cr_assert_eq(atomic_load(&list_joins), 1, "the join fires exactly once");
    wf_workflow_free(wf);
}

/* the type of another workflow's registry with Res's id; the refusals seen */
static const wf_event_type *T_FOREIGN_RES;
static int list_refusals[2];

/* split, after two refused lists: one collected by no join, one of a type of another registry */
static int split_after_refusals(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *evs[1] = {ev_i(T_ITEM, 0)};
    list_refusals[0] = wf_ctx_emit_list(ctx, evs, 1, T_ITEM);
    evs[0] = ev_i(T_ITEM, 0);
    list_refusals[1] = wf_ctx_emit_list(ctx, evs, 1, T_FOREIGN_RES);
    return split(ctx, in, out, u);
}

/*
 * wf_ctx_emit_list finds its join by the collected type (a table built at
 * freeze): a type no list join collects is refused, and so is a type of
 * another registry that has the collected type's id there; the events are
 * released, and the step's next list joins as usual.
 */
Test(coord, a_list_no_join_collects_is_refused, .timeout = 60)
{
    wf_workflow *other = new_wf("other"); /* first: new_wf sets the globals to the last one */
    const wf_event_type *foreign_item;
    cr_assert_eq(wf_workflow_event_type(other, "Item", NULL, &foreign_item), 0);
    cr_assert_eq(wf_workflow_event_type(other, "Res", NULL, &T_FOREIGN_RES), 0);
    list_n = 2;
    wf_workflow *wf = list_wf_split(split_after_refusals, NULL);
    cr_assert_eq(wf_event_type_id(T_FOREIGN_RES), wf_event_type_id(T_RES));
    cr_assert_neq(wf_event_type_registry(T_FOREIGN_RES), wf_workflow_registry(wf));
    list_refusals[0] = list_refusals[1] = 1;
    char buf[128];
    cr_assert_str_eq(run_for_string(wf, buf, sizeof buf), "[0,1]");
    cr_assert_eq(list_refusals[0], WF_ENOTFOUND, "Item: no list join collects it");
    cr_assert_eq(list_refusals[1], WF_ENOTFOUND, "another registry's Res");
    wf_workflow_free(wf);
    wf_workflow_free(other);
}

Test(coord, list_fan_out_joins_once_in_branch_order, .timeout = 60)
{
    expect_list(NULL, 5, "[0,1,2,3,4]");
}

Test(coord, empty_list_joins_with_nothing, .timeout = 60)
{
    expect_list(NULL, 0, "[]");
}

/*
 * ---- a list longer than a batch ----
 * A list of one type to one step is delivered in batches of
 * WF__SEND_BATCH (64) while the rest is made: 300 items are five batches,
 * whose first branches may run (on 2 workers) and resolve while the
 * emitter makes the next. The join sees every answer once, in branch
 * order, with the branches that emit nothing left out.
 */
#define LONG_LIST 300

static int split_long(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *evs[LONG_LIST];
    for (int i = 0; i < LONG_LIST; i++)
        evs[i] = ev_i(T_ITEM, i);
    return wf_ctx_emit_list(ctx, evs, LONG_LIST, T_RES);
}

/* The answers' count if they are the branches' in order (every one, or the odd ones), else -1. */
static int join_long(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&list_joins, 1);
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    int step = n == LONG_LIST ? 1 : 2, first = n == LONG_LIST ? 0 : 1;
    int64_t ok = (int64_t)n;
    for (size_t i = 0; i < n; i++)
        if (geti(evs[i]) != first + (int64_t)i * step)
            ok = -1;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(ok));
}

static void long_list(uint32_t threads, uint32_t workers, void *work_mode, int64_t want)
{
    atomic_store(&list_joins, 0);
    wf_workflow *wf = list_wf_steps(split_long, work_mode, workers, join_long);
    wf_executor *ex = exec_n(threads);
    for (int k = 0; k < 20; k++) {
        wf_event *s, *res;
        cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
        cr_assert_eq(wf_run(ex, wf, NULL, s, -1, &res), 0);
        int64_t got = 0;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &got), 0);
        cr_assert_eq(got, want, "run %d: the join's answers in branch order", k);
        wf_event_release(res);
    }
    cr_assert_eq(atomic_load(&list_joins), 20, "the join fires exactly once a run");
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(coord, a_list_longer_than_a_batch_joins_in_branch_order, .timeout = 120)
{
    long_list(2, 4, NULL, LONG_LIST);          /* the default bound: a queue */
    long_list(2, 1u << 30, NULL, LONG_LIST);   /* no practical bound: count shards */
    long_list(1, 1u << 30, NULL, LONG_LIST);   /* one worker: kept slots */
    long_list(2, 4, (void *)1, LONG_LIST / 2); /* even branches drop out */
    long_list(1, 1u << 30, (void *)1, LONG_LIST / 2);
}

Test(coord, branches_that_emit_nothing_drop_out, .timeout = 60)
{
    expect_list((void *)1, 6, "[1,3,5]");
}

static int outer_split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *evs[2] = {ev_i(T_OUTER, 1), ev_i(T_OUTER, 2)};
    return wf_ctx_emit_list(ctx, evs, 2, T_MID);
}

static int inner_split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t k = geti(in);
    wf_event *evs[3] = {ev_i(T_ITEM, k * 10 + 1), ev_i(T_ITEM, k * 10 + 2),
                        ev_i(T_ITEM, k * 10 + 3)};
    return wf_ctx_emit_list(ctx, evs, 3, T_RES);
}

static int inner_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(wf_event_type_of(in), T_OUTER, "the origin is the inner split's input");
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += geti(evs[i]);
    *out = ev_i(T_MID, sum);
    return 0;
}

Test(coord, nested_fan_outs_are_tracked_per_level, .timeout = 60)
{
    atomic_store(&list_joins, 0);
    wf_workflow *wf = new_wf("nested");
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &T_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Res", NULL, &T_RES), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Outer", NULL, &T_OUTER), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Mid", NULL, &T_MID), 0);
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = 1;
    p.n_emits = 1;
    p.accepts = &T_START;
    p.emits = &T_OUTER;
    cr_assert_eq(wf_workflow_add_step(wf, "outer_split", outer_split, &p, NULL), 0);
    p.accepts = &T_OUTER;
    p.emits = &T_ITEM;
    cr_assert_eq(wf_workflow_add_step(wf, "inner_split", inner_split, &p, NULL), 0);
    p.accepts = &T_ITEM;
    p.emits = &T_RES;
    cr_assert_eq(wf_workflow_add_step(wf, "work", work_all, &p, NULL), 0);
    p.accepts = &T_RES;
    p.emits = &T_MID;
    p.join_list = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "inner_join", inner_join, &p, NULL), 0);
    p.accepts = &T_MID;
    p.emits = &T_STOP;
    cr_assert_eq(wf_workflow_add_step(wf, "outer_join", list_join, &p, NULL), 0);
    char *msg = NULL;
    cr_assert_eq(wf_workflow_validate(wf, &msg), 0, "%s", msg ? msg : "");
    char buf[128];
    /* (11+12+13), (21+22+23) */
    cr_assert_str_eq(run_for_string(wf, buf, sizeof buf), "[36,66]");
    cr_assert_eq(atomic_load(&list_joins), 1);
    wf_workflow_free(wf);
}

/*
 * ---- every way a branch's event can be routed ----
 * Item: one task (it takes the emitter's unit of its branch); Res: the
 * collect type itself (resolves the branch as it is emitted); Dup: two
 * steps (two tasks; dup_a answers, dup_b emits nothing); Stray: a sink
 * that emits nothing (the branch drops out).
 */
static const wf_event_type *T_DUP, *T_STRAY;

static int mixed_split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *evs[8] = {ev_i(T_ITEM, 1), ev_i(T_RES, 2),  ev_i(T_DUP, 3), ev_i(T_STRAY, 4),
                        ev_i(T_DUP, 5),  ev_i(T_ITEM, 6), ev_i(T_RES, 7), ev_i(T_STRAY, 8)};
    return wf_ctx_emit_list(ctx, evs, 8, T_RES);
}

static int dup_a(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    *out = ev_i(T_RES, geti(in));
    return 0;
}

static int emits_nothing(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

Test(coord, a_branch_event_to_one_step_to_two_to_none_or_the_join_itself, .timeout = 120)
{
    atomic_store(&list_joins, 0);
    wf_workflow *wf = new_wf("mixed");
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &T_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Res", NULL, &T_RES), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Dup", NULL, &T_DUP), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Stray", NULL, &T_STRAY), 0);
    const wf_event_type *split_emits[] = {T_ITEM, T_RES, T_DUP, T_STRAY};
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = 1;
    p.accepts = &T_START;
    p.emits = split_emits;
    p.n_emits = 4;
    cr_assert_eq(wf_workflow_add_step(wf, "split", mixed_split, &p, NULL), 0);
    p.n_emits = 1;
    p.accepts = &T_ITEM;
    p.emits = &T_RES;
    cr_assert_eq(wf_workflow_add_step(wf, "work", work_all, &p, NULL), 0);
    p.accepts = &T_DUP;
    cr_assert_eq(wf_workflow_add_step(wf, "dup_a", dup_a, &p, NULL), 0);
    p.n_emits = 0;
    p.emits = NULL;
    cr_assert_eq(wf_workflow_add_step(wf, "dup_b", emits_nothing, &p, NULL), 0);
    p.accepts = &T_STRAY;
    cr_assert_eq(wf_workflow_add_step(wf, "sink", emits_nothing, &p, NULL), 0);
    p.accepts = &T_RES;
    p.emits = &T_STOP;
    p.n_emits = 1;
    p.join_list = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "join", list_join, &p, NULL), 0);
    char *msg = NULL;
    cr_assert_eq(wf_workflow_validate(wf, &msg), 0, "%s", msg ? msg : "");
    /* many runs on 2 threads: the branches' tasks race the emitter's loop */
    for (int k = 0; k < 200; k++) {
        char buf[128];
        cr_assert_str_eq(run_for_string(wf, buf, sizeof buf), "[1,2,3,5,6,7]", "run %d", k);
    }
    cr_assert_eq(atomic_load(&list_joins), 200, "the join fires exactly once a run");
    wf_workflow_free(wf);
}

/* ---- a recursion of list fan-outs through steps with no num_workers limit ---- */

#define TREE_DEPTH 10

/* A Node carries depth left * 2^20 + index in "i"; a leaf's result is its index. */
static int tree_split(wf_ctx *ctx, int64_t d, int64_t i)
{
    wf_event *evs[2] = {ev_i(T_ITEM, (d - 1) << 20 | (2 * i)),
                        ev_i(T_ITEM, (d - 1) << 20 | (2 * i + 1))};
    return wf_ctx_emit_list(ctx, evs, 2, T_RES);
}

static int tree_root(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return tree_split(ctx, TREE_DEPTH, 0);
}

static int tree_node(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t v = geti(in), d = v >> 20, i = v & ((1 << 20) - 1);
    if (d == 0) {
        *out = ev_i(T_RES, i);
        return 0;
    }
    return tree_split(ctx, d, i);
}

static int tree_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    cr_assert_eq(n, 2);
    int64_t sum = geti(evs[0]) + geti(evs[1]);
    if (wf_event_type_of(in) == T_START)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(sum));
    *out = ev_i(T_RES, sum);
    return 0;
}

static void unbounded_recursion(uint32_t threads)
{
    wf_workflow *wf = new_wf("tree");
    cr_assert_eq(wf_workflow_event_type(wf, "Node", NULL, &T_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Res", NULL, &T_RES), 0);
    wf_step_params p;
    wf_step_params_init(&p);
    const wf_event_type *root_emits[] = {T_ITEM};
    const wf_event_type *node_emits[] = {T_ITEM, T_RES};
    const wf_event_type *join_emits[] = {T_RES, T_STOP};
    p.n_accepts = 1;
    p.accepts = &T_START;
    p.emits = root_emits;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "root", tree_root, &p, NULL), 0);
    p.num_workers = 1u << 30; /* no limit: the counts are kept per worker */
    p.accepts = &T_ITEM;
    p.emits = node_emits;
    p.n_emits = 2;
    cr_assert_eq(wf_workflow_add_step(wf, "node", tree_node, &p, NULL), 0);
    p.accepts = &T_RES;
    p.emits = join_emits;
    p.join_list = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "join", tree_join, &p, NULL), 0);
    wf_executor *ex = exec_n(threads);
    for (int round = 0; round < 20; round++) {
        wf_event *s, *res;
        cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
        wf_handler *h, *cancelled;
        cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
        cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
        cr_assert_eq(wf_run_start(ex, wf, NULL, s, &cancelled), 0);
        wf_handler_cancel(cancelled); /* its tasks are dropped wherever they are */
        cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
        int64_t sum;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
        cr_assert_eq(sum, (int64_t)(1 << TREE_DEPTH) * ((1 << TREE_DEPTH) - 1) / 2);
        wf_event_release(res);
        wf_handler_wait(cancelled, -1, NULL);
        wf_handler_free(cancelled);
        wf_handler_free(h);
    }
    wf_executor_free(ex); /* returns once every run has quiesced */
    wf_workflow_free(wf);
}

Test(coord, a_recursion_through_unbounded_steps_joins_every_node, .timeout = 120)
{
    unbounded_recursion(3);
}

/*
 * On one worker, which keeps the slots of the steps without a bound
 * (wf__kept): the sums hold, and every run quiesces (the executor's free
 * waits for it), the cancelled one too.
 */
Test(coord, a_recursion_on_one_worker_keeps_and_gives_back_its_slots, .timeout = 120)
{
    unbounded_recursion(1);
}

/* ---- wait_for_event, then a failure and a retry (the reference's
 * test_implicit_waiter_survives_retry) ---- */

static atomic_int retry_wait_attempts;

static int ask_then_fail_once(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *got = NULL;
    int rc = wf_ctx_wait_for_event(ctx, T_HR, wf_value_nil(), ev_s(T_IR, "prefix", "name?"), NULL,
                                   WF_NO_TIMEOUT, &got);
    if (rc == WF_SUSPEND)
        return WF_SUSPEND;
    cr_assert_eq(rc, 0);
    if (atomic_fetch_add(&retry_wait_attempts, 1) == 0) {
        wf_event_release(got);
        (void)wf_ctx_set_error(ctx, "transient failure after acquiring the waiter");
        return WF_ESTEP;
    }
    wf_value r;
    cr_assert_eq(wf_value_string(&r, sfield(got, "response")), 0);
    wf_event_release(got);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, r);
}

/*
 * A retry is the same invocation, a new attempt: the answer it waited for
 * survives until the invocation ends, so the retry gets it again and the
 * human is asked once (as the reference).
 */
Test(coord, a_retry_after_wait_for_event_gets_the_same_answer, .timeout = 60)
{
    wf_workflow *wf = hitl_wf("hitl-retry");
    const wf_event_type *acc = T_START, *em = T_STOP;
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &acc;
    p.n_accepts = 1;
    p.emits = &em;
    p.n_emits = 1;
    wf_retry_policy *retry;
    cr_assert_eq(wf_retry_policy_constant(&retry, 3, 0), 0);
    p.retry = retry;
    cr_assert_eq(wf_workflow_add_step(wf, "ask", ask_then_fail_once, &p, NULL), 0);
    wf_retry_policy_free(retry);
    wf_workflow_set_validation(wf, 0);
    atomic_store(&retry_wait_attempts, 0);
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = 20000; /* a second prompt nobody answers would hang the run */
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &h, NULL), 0);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_str_eq(sfield(e, "prefix"), "name?");
    wf_event_release(e);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "once"), NULL), 0);
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    const char *r;
    cr_assert_eq(wf_value_get_string(wf_event_result(res), &r, NULL), 0);
    cr_assert_str_eq(r, "once");
    wf_event_release(res);
    cr_assert_eq(atomic_load(&retry_wait_attempts), 2, "one failure, then one success");
    /* the stream holds no second InputRequiredEvent: asked once */
    int prompts = 0;
    while (wf_handler_next_event(h, -1, &e) == 0) {
        prompts += wf_event_type_of(e) == T_IR;
        wf_event_release(e);
    }
    cr_assert_eq(prompts, 0);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- kept slots (wf__kept, engine.h): one worker keeps a bounded step's slot ---- */

static atomic_long kept_rounds;
static sem_t kept_sem;
static int64_t kept_limit = INT64_MAX; /* the ring stops at this count */

/* gate (num_workers 1): Start -> A; Pair (from the test) -> Stop 7 */
static int kept_gate(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    if (wf_event_type_of(in) == T_START) {
        *out = ev_i(T_A, 0);
        return 0;
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(7));
}

/* A -> B -> A ... (until kept_limit, or the run ends); the 1000th round tells the test */
static int kept_ping(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    if (atomic_fetch_add(&kept_rounds, 1) == 1000)
        sem_post(&kept_sem);
    if (geti(in) >= kept_limit)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(geti(in)));
    *out = ev_i(wf_event_type_of(in) == T_A ? T_B : T_A, geti(in) + 1);
    return 0;
}

/* A -> nothing: the chain ends here */
static int kept_sink(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)ctx;
    (void)in;
    (void)out;
    (void)u;
    sem_post(&kept_sem);
    return 0;
}

/* Runs gate + (ring or sink) on one worker; after the signal, Pair must reach the gate. */
static void kept_scenario(int ring)
{
    wf_workflow *wf = new_wf("kept");
    cr_assert_eq(wf_workflow_set_validation(wf, 0), 0); /* Pair comes from the test */
    add(wf, "gate", kept_gate, T_START, T_PAIR, T_A, T_STOP, 1);
    if (ring) {
        add(wf, "ping", kept_ping, T_A, NULL, T_B, NULL, 0);
        add(wf, "pong", kept_ping, T_B, NULL, T_A, NULL, 0);
    } else {
        add(wf, "sink", kept_sink, T_A, NULL, T_B, NULL, 0);
    }
    atomic_store(&kept_rounds, 0);
    cr_assert_eq(sem_init(&kept_sem, 0, 0), 0);
    wf_executor *ex = exec_n(1);
    wf_event *start;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start, &h), 0);
    while (sem_wait(&kept_sem) != 0) /* the gate has run and finished: its slot may be kept */
        ;
    cr_assert_eq(wf_handler_send_event(h, ev_i(T_PAIR, 0), NULL), 0);
    expect_int_result(h, 7);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    sem_destroy(&kept_sem);
}

/*
 * The worker keeps the gate's slot (num_workers 1) while its chain goes round
 * two other steps for ever: an event from outside for the gate waits in its
 * queue only until the worker gives its kept slots back (every
 * FAIRNESS_TICK tasks). Without that, the run never ends (the timeout).
 */
Test(coord, a_kept_slot_lets_an_outside_event_in_while_the_chain_goes_on, .timeout = 60)
{
    kept_scenario(1);
}

/*
 * The chain ends (the sink emits nothing) with the gate's slot kept: the
 * worker gives it back before it idles, so an event from outside for the
 * gate runs. Without that, it would wait in the queue of an idle executor.
 */
Test(coord, a_chain_that_ends_gives_its_kept_slots_back, .timeout = 60)
{
    kept_scenario(0);
}

/*
 * A live snapshot of a run whose one worker keeps slots of its steps (a
 * ring that never ends a chain): the cut counts a step's tasks without the
 * kept slots (no task behind them), or it would wait for tasks that do not
 * exist while the worker waits at its gate. The image holds the ring's one
 * event: resumed, the ring goes on to the same end.
 */
static void kept_live(uint32_t ring_workers)
{
    wf_workflow *wf = new_wf("kept-live");
    cr_assert_eq(wf_workflow_set_validation(wf, 0), 0);
    add(wf, "gate", kept_gate, T_START, T_PAIR, T_A, T_STOP, 1);
    add(wf, "ping", kept_ping, T_A, NULL, T_B, T_STOP, ring_workers);
    add(wf, "pong", kept_ping, T_B, NULL, T_A, T_STOP, ring_workers);
    atomic_store(&kept_rounds, 0);
    kept_limit = 200000;
    cr_assert_eq(sem_init(&kept_sem, 0, 0), 0);
    wf_executor *ex = exec_n(1);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    wf_event *start;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, ctx, start, &h), 0);
    while (sem_wait(&kept_sem) != 0)
        ;
    void *buf = NULL;
    size_t len = 0;
    wf_save_info info;
    int rc = wf_ctx_save_ex(ctx, &buf, &len, &info);
    expect_int_result(h, kept_limit);
    wf_handler_free(h);
    cr_assert_eq(rc, 0, "the cut: %s", wf_last_error_message());
    cr_assert(info.live, "cut while the ring ran");

    wf_ctx *loaded;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &loaded, NULL), 0);
    wf_free(buf);
    cr_assert_eq(wf_run_resume(ex, wf, loaded, NULL, &h, NULL), 0);
    expect_int_result(h, kept_limit); /* resumed from the cut, the ring reaches its end */
    wf_handler_free(h);
    wf_ctx_free(loaded);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    sem_destroy(&kept_sem);
    kept_limit = INT64_MAX;
}

Test(coord, a_live_snapshot_leaves_kept_slots_out, .timeout = 60)
{
    kept_live(0); /* the default num_workers: bounded steps */
}

/*
 * The same with ring steps without a bound: their kept slots are in the
 * worker's count shard, and the cut leaves them out of the shards' sum.
 */
Test(coord, a_live_snapshot_leaves_kept_slots_of_unbounded_steps_out, .timeout = 60)
{
    kept_live(1u << 30);
}
