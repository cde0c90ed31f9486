/*
 * test_run.c: runs on the executor: routing, broadcast, order, num_workers,
 * sends routed in batches, stop semantics, errors, timeout, cancel, unhandled
 * events, context reuse, targeted sends, the stream, many runs at once,
 * shutdown.
 *
 * Synchronisation in these tests is by atomics and the handler's own waits,
 * never by sleeping.
 */
#include "harness.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

/* ------------------------------------------------------------- helpers */

static wf_workflow *new_wf(const char *name)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, name, NULL), 0);
    return wf;
}

static const wf_event_type *type(wf_workflow *wf, const char *name)
{
    const wf_event_type *t;
    cr_assert_eq(wf_workflow_event_type(wf, name, NULL, &t), 0);
    return t;
}

static const wf_event_type *builtin(wf_workflow *wf, wf_builtin_type b)
{
    return wf_workflow_builtin(wf, b);
}

static void add_step(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *acc,
                     const wf_event_type *e1, const wf_event_type *e2, uint32_t workers, void *user)
{
    const wf_event_type *accepts[] = {acc};
    const wf_event_type *emits[2] = {e1, e2};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = e2 ? 2 : (e1 ? 1 : 0);
    if (workers)
        p.num_workers = workers;
    cr_assert_eq(wf_workflow_add_step(wf, name, fn, &p, user), 0, "add_step %s", name);
}

static wf_executor *new_ex(uint32_t threads)
{
    wf_executor_params p;
    wf_executor_params_init(&p);
    p.threads = threads;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &p), 0);
    return ex;
}

static wf_event *ev0(const wf_event_type *t)
{
    wf_event *e;
    cr_assert_eq(wf_event_new(&e, t, 0), 0);
    return e;
}

static wf_event *ev_int(const wf_event_type *t, const char *k, int64_t v)
{
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, t, k, wf_value_int(v)), 0);
    return e;
}

static int64_t get_int(const wf_event *e, const char *k)
{
    int64_t v = -1;
    wf_value_get_int(wf_event_get(e, k, wf_value_nil()), &v);
    return v;
}

static int stop_with_int(wf_ctx *ctx, wf_event **out, int64_t v)
{
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(v));
}

static int64_t result_int(wf_event *res)
{
    int64_t v = -1;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
    return v;
}

/* A shared event-type table for the steps below (set per test). */
static const wf_event_type *T_A, *T_B, *T_C, *T_X, *T_STOP, *T_START;

/* ------------------------------------------------------- chain routing */

static int s_start_to_a(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return wf_event_new1(out, T_A, "n", wf_value_int(get_int(in, "n") + 1));
}
static int s_a_to_b(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return wf_event_new1(out, T_B, "n", wf_value_int(get_int(in, "n") * 10));
}
static int s_b_to_stop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return stop_with_int(ctx, out, get_int(in, "n") + 3);
}

static wf_workflow *chain_wf(void)
{
    wf_workflow *wf = new_wf("chain");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    T_B = type(wf, "B");
    add_step(wf, "start", s_start_to_a, T_START, T_A, NULL, 0, NULL);
    add_step(wf, "a", s_a_to_b, T_A, T_B, NULL, 0, NULL);
    add_step(wf, "b", s_b_to_stop, T_B, T_STOP, NULL, 0, NULL);
    return wf;
}

Test(run, chain_routes_by_type_and_returns_result)
{
    wf_workflow *wf = chain_wf();
    wf_executor *ex = new_ex(2);
    wf_event *res = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, ev_int(T_START, "n", 4), -1, &res), 0);
    cr_assert_eq(result_int(res), (4 + 1) * 10 + 3);
    cr_assert(wf_event_type_is_stop(wf_event_type_of(res)));
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(run, single_thread_executor_works)
{
    wf_workflow *wf = chain_wf();
    wf_executor *ex = new_ex(1);
    cr_assert_eq(wf_executor_threads(ex), 1);
    for (int i = 0; i < 100; i++) {
        wf_event *res = NULL;
        cr_assert_eq(wf_run(ex, wf, NULL, ev_int(T_START, "n", i), -1, &res), 0);
        cr_assert_eq(result_int(res), (i + 1) * 10 + 3);
        wf_event_release(res);
    }
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(run, wrong_start_type_is_rejected)
{
    wf_workflow *wf = chain_wf();
    wf_executor *ex = new_ex(1);
    wf_handler *h = NULL;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_A), &h), WF_ETYPE);
    cr_assert_null(h);
    cr_assert_eq(wf_run_start(ex, wf, NULL, NULL, &h), WF_EINVAL);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(run, invalid_workflow_is_reported_at_start)
{
    wf_workflow *wf = new_wf("bad");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    /* emits A, which nobody consumes */
    add_step(wf, "start", s_start_to_a, T_START, T_A, T_STOP, 0, NULL);
    wf_executor *ex = new_ex(1);
    wf_handler *h = NULL;
    char *msg = NULL;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), NULL, &h, &msg), WF_EVALIDATION);
    cr_assert_not_null(msg);
    cr_assert(strstr(msg, "A") != NULL, "message: %s", msg);
    wf_free(msg);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ------------------------------------------------------------ broadcast */

static atomic_int bc_calls[2];

static int s_emit_x(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    *out = ev_int(T_X, "v", 7);
    return 0;
}
static int s_bc(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int idx = (int)(intptr_t)u;
    atomic_fetch_add(&bc_calls[idx], 1);
    cr_assert_eq(get_int(in, "v"), 7);
    *out = ev_int(idx ? T_B : T_A, "v", idx);
    return 0;
}
static int s_bc_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    /* Count arrivals in the store; the second one stops. */
    wf_value v;
    wf_ctx_get_default(ctx, "seen", wf_value_int(0), &v);
    int64_t n = 0;
    wf_value_get_int(v, &n);
    wf_ctx_set(ctx, "seen", wf_value_int(n + 1));
    if (n + 1 == 2)
        return stop_with_int(ctx, out, 2);
    return 0;
}

Test(run, broadcast_reaches_every_accepting_step)
{
    wf_workflow *wf = new_wf("broadcast");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_X = type(wf, "X");
    T_A = type(wf, "A");
    T_B = type(wf, "B");
    add_step(wf, "start", s_emit_x, T_START, T_X, NULL, 0, NULL);
    add_step(wf, "left", s_bc, T_X, T_A, NULL, 0, (void *)0);
    add_step(wf, "right", s_bc, T_X, T_B, NULL, 0, (void *)1);
    const wf_event_type *acc[] = {T_A, T_B};
    const wf_event_type *em[] = {T_STOP};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 2;
    p.emits = em;
    p.n_emits = 1;
    p.num_workers = 1; /* the store update is then race-free */
    cr_assert_eq(wf_workflow_add_step(wf, "join", s_bc_join, &p, NULL), 0);
    wf_executor *ex = new_ex(2);
    wf_event *res = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, ev0(T_START), -1, &res), 0);
    cr_assert_eq(result_int(res), 2);
    cr_assert_eq(atomic_load(&bc_calls[0]), 1);
    cr_assert_eq(atomic_load(&bc_calls[1]), 1);
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---------------------------------------------------------------- order */

static int s_return_and_send(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(wf_ctx_send_event(ctx, ev_int(T_A, "i", 2), NULL), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, ev_int(T_A, "i", 3), NULL), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, ev_int(T_A, "i", 4), NULL), 0);
    *out = ev_int(T_A, "i", 1);
    return 0;
}
static int s_record(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_value log;
    cr_assert_eq(wf_ctx_get_default(ctx, "log", wf_value_nil(), &log), 0);
    if (wf_value_is_nil(log))
        cr_assert_eq(wf_value_array_new(&log, 4), 0);
    cr_assert_eq(wf_value_array_push(&log, wf_value_int(get_int(in, "i"))), 0);
    size_t n = wf_value_len(log);
    cr_assert_eq(wf_ctx_set(ctx, "log", log), 0);
    if (n == 4)
        return stop_with_int(ctx, out, 0);
    return 0;
}

Test(run, returned_event_routes_before_sent_ones_in_send_order)
{
    for (uint32_t threads = 1; threads <= 2; threads++) {
        wf_workflow *wf = new_wf("order");
        T_START = builtin(wf, WF_START_EVENT);
        T_STOP = builtin(wf, WF_STOP_EVENT);
        T_A = type(wf, "A");
        add_step(wf, "start", s_return_and_send, T_START, T_A, NULL, 0, NULL);
        add_step(wf, "record", s_record, T_A, T_STOP, NULL, 1, NULL);
        wf_executor *ex = new_ex(threads);
        wf_ctx *ctx;
        cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
        cr_assert_eq(wf_run(ex, wf, ctx, ev0(T_START), -1, NULL), 0);
        wf_value log, item;
        cr_assert_eq(wf_ctx_get(ctx, "log", &log), 0);
        cr_assert_eq(wf_value_len(log), 4);
        for (size_t i = 0; i < 4; i++) {
            int64_t v;
            cr_assert_eq(wf_value_array_at(log, i, &item), 0);
            cr_assert_eq(wf_value_get_int(item, &v), 0);
            cr_assert_eq(v, (int64_t)i + 1, "threads %u position %zu got %lld", threads, i,
                         (long long)v);
        }
        wf_value_release(log);
        wf_ctx_free(ctx);
        wf_executor_free(ex);
        wf_workflow_free(wf);
    }
}

/*
 * A step that sends many events (no retry policy, no error handler) has them
 * routed in batches of 64 as it sends them; its returned event follows the
 * batches routed before it returned.
 */
#define MANY_SENT 150
static int64_t many_log[MANY_SENT + 1];
static atomic_int many_n;

static int s_send_many(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int i = 0; i < MANY_SENT; i++)
        cr_assert_eq(wf_ctx_send_event(ctx, ev_int(T_A, "i", i), NULL), 0);
    *out = ev_int(T_A, "i", 1000);
    return 0;
}
static int s_log_many(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int n = atomic_fetch_add(&many_n, 1); /* num_workers 1: one at a time */
    cr_assert(n <= MANY_SENT);
    many_log[n] = get_int(in, "i");
    if (n == MANY_SENT)
        return stop_with_int(ctx, out, n + 1);
    return 0;
}

Test(run, many_sent_events_route_in_batches_of_64_as_they_are_sent)
{
    for (uint32_t threads = 1; threads <= 2; threads++) {
        atomic_store(&many_n, 0);
        wf_workflow *wf = new_wf("many");
        T_START = builtin(wf, WF_START_EVENT);
        T_STOP = builtin(wf, WF_STOP_EVENT);
        T_A = type(wf, "A");
        add_step(wf, "start", s_send_many, T_START, T_A, NULL, 0, NULL);
        add_step(wf, "log", s_log_many, T_A, T_STOP, NULL, 1, NULL);
        wf_executor *ex = new_ex(threads);
        wf_event *res = NULL;
        cr_assert_eq(wf_run(ex, wf, NULL, ev0(T_START), -1, &res), 0);
        cr_assert_eq(result_int(res), MANY_SENT + 1);
        /* two batches (0..127) went out while the step ran, then its returned event */
        for (int k = 0; k <= MANY_SENT; k++) {
            int64_t want = k < 128 ? k : (k == 128 ? 1000 : k - 1);
            cr_assert_eq(many_log[k], want, "threads %u position %d got %lld", threads, k,
                         (long long)many_log[k]);
        }
        wf_event_release(res);
        wf_executor_free(ex);
        wf_workflow_free(wf);
    }
}

static int s_send_many_fail_once(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int attempt = (int)wf_ctx_attempt(ctx);
    for (int i = 0; i < MANY_SENT; i++)
        cr_assert_eq(wf_ctx_send_event(ctx, ev_int(T_A, "i", attempt), NULL), 0);
    return attempt == 1 ? WF_EINVAL : 0;
}
static int s_count_attempts(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(get_int(in, "i"), 2, "an event sent by the failed attempt was routed");
    if (atomic_fetch_add(&many_n, 1) + 1 == MANY_SENT)
        return stop_with_int(ctx, out, MANY_SENT);
    return 0;
}

Test(run, a_step_that_can_retry_holds_its_sent_events_until_it_succeeds)
{
    atomic_store(&many_n, 0);
    wf_workflow *wf = new_wf("many-retry");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    wf_retry_policy *rp;
    cr_assert_eq(wf_retry_policy_constant(&rp, 2, 0), 0);
    const wf_event_type *acc[] = {T_START};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = &T_A;
    p.n_emits = 1;
    p.retry = rp;
    cr_assert_eq(wf_workflow_add_step(wf, "start", s_send_many_fail_once, &p, NULL), 0);
    wf_retry_policy_free(rp);
    add_step(wf, "count", s_count_attempts, T_A, T_STOP, NULL, 0, NULL);
    wf_executor *ex = new_ex(2);
    wf_event *res = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, ev0(T_START), -1, &res), 0);
    cr_assert_eq(result_int(res), MANY_SENT);
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ----------------------------------------------------------- num_workers */

static atomic_int nw_inflight, nw_max, nw_done;
#define NW_EVENTS 400

static int s_fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int i = 0; i < NW_EVENTS; i++)
        cr_assert_eq(wf_ctx_send_event(ctx, ev_int(T_A, "i", i), NULL), 0);
    return 0;
}
static int s_limited(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int now = atomic_fetch_add(&nw_inflight, 1) + 1;
    int m = atomic_load(&nw_max);
    while (now > m && !atomic_compare_exchange_weak(&nw_max, &m, now))
        ;
    /* Some work, so invocations overlap when the limit allows it. */
    volatile uint64_t x = 0;
    for (int i = 0; i < 20000; i++)
        x += (uint64_t)i * 2654435761u;
    atomic_fetch_sub(&nw_inflight, 1);
    if (atomic_fetch_add(&nw_done, 1) + 1 == NW_EVENTS)
        return stop_with_int(ctx, out, NW_EVENTS);
    return 0;
}

static void run_limit(uint32_t limit)
{
    atomic_store(&nw_inflight, 0);
    atomic_store(&nw_max, 0);
    atomic_store(&nw_done, 0);
    wf_workflow *wf = new_wf("limits");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    add_step(wf, "fan", s_fan, T_START, T_A, NULL, 0, NULL);
    add_step(wf, "limited", s_limited, T_A, T_STOP, NULL, limit, NULL);
    wf_executor *ex = new_ex(4);
    wf_event *res = NULL;
    cr_assert_eq(wf_run(ex, wf, NULL, ev0(T_START), -1, &res), 0);
    cr_assert_eq(result_int(res), NW_EVENTS);
    cr_assert_eq(atomic_load(&nw_done), NW_EVENTS);
    cr_assert(atomic_load(&nw_max) <= (int)limit, "max in flight %d > num_workers %u",
              atomic_load(&nw_max), limit);
    cr_assert(atomic_load(&nw_max) >= 1);
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(run, num_workers_one_serialises, .timeout = 60)
{
    run_limit(1);
}

Test(run, num_workers_two_is_never_exceeded, .timeout = 60)
{
    run_limit(2);
}

/* ------------------------------------------------- stop: late emissions */

static atomic_int late_downstream;
static atomic_int slow_started;

static int s_split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(wf_ctx_send_event(ctx, ev0(T_B), NULL), 0); /* to slow */
    *out = ev0(T_A);                                         /* to stopper */
    return 0;
}
static int s_stopper(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    /* Wait until slow is running, so it is caught in flight. */
    while (!atomic_load(&slow_started))
        ;
    return stop_with_int(ctx, out, 99);
}
static int s_slow(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_store(&slow_started, 1);
    while (!wf_ctx_is_cancelled(ctx))
        ;
    /* The run is over: everything emitted now must vanish. */
    wf_ctx_write_event_to_stream(ctx, ev_int(T_C, "late", 1));
    wf_ctx_send_event(ctx, ev0(T_C), NULL);
    *out = ev0(T_C);
    return 0;
}
static int s_downstream(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&late_downstream, 1);
    return 0;
}

Test(run, stop_ends_run_once_and_drops_late_emissions, .timeout = 60)
{
    wf_workflow *wf = new_wf("late");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    T_B = type(wf, "B");
    T_C = type(wf, "C");
    add_step(wf, "split", s_split, T_START, T_A, T_B, 0, NULL);
    add_step(wf, "stopper", s_stopper, T_A, T_STOP, NULL, 0, NULL);
    add_step(wf, "slow", s_slow, T_B, T_C, NULL, 0, NULL);
    add_step(wf, "downstream", s_downstream, T_C, NULL, NULL, 0, NULL);
    wf_workflow_skip_check(wf, "terminal_event");
    wf_workflow_skip_check(wf, "dead_end");
    wf_executor *ex = new_ex(2);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_START), &h), 0);
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_eq(result_int(res), 99);
    wf_event_release(res);
    /* The stream: only the StopEvent, then closed. */
    wf_event *e = NULL;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert(wf_event_type_is_stop(wf_event_type_of(e)));
    wf_event_release(e);
    cr_assert_eq(wf_handler_next_event(h, -1, &e), WF_ECLOSED);
    cr_assert_eq(wf_handler_cancel(h), WF_ESTATE);
    /* Drain the executor: slow has returned by then. */
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&late_downstream), 0);
    cr_assert_eq(wf_handler_next_event(h, 0, &e), WF_ECLOSED);
    wf_handler_free(h);
    wf_workflow_free(wf);
}

/* ----------------------------------------------------------- step error */

static int s_fail(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(wf_ctx_set_error(ctx, "boom: the model refused"), 0);
    *out = ev0(T_A); /* released by wf, not routed */
    return -42;
}

Test(run, step_error_fails_the_run_with_code_step_and_message)
{
    wf_workflow *wf = new_wf("fails");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    add_step(wf, "explode", s_fail, T_START, T_A, NULL, 0, NULL);
    add_step(wf, "after", s_b_to_stop, T_A, T_STOP, NULL, 0, NULL);
    wf_executor *ex = new_ex(2);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_START), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    cr_assert_eq(wf_handler_status(h), WF_RUN_FAILED);
    int code;
    const char *step, *msg;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, -42);
    cr_assert_str_eq(step, "explode");
    cr_assert_str_eq(msg, "boom: the model refused");
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_str_eq(wf_event_type_name_of(e), "WorkflowFailedEvent");
    const char *s;
    cr_assert_eq(wf_value_get_string(wf_event_get(e, "step_name", wf_value_nil()), &s, NULL), 0);
    cr_assert_str_eq(s, "explode");
    wf_event_release(e);
    cr_assert_eq(wf_handler_next_event(h, -1, &e), WF_ECLOSED);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* -------------------------------------------------- timeout and cancel */

static int s_until_cancelled(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_store(&slow_started, 1);
    while (!wf_ctx_is_cancelled(ctx))
        ;
    return 0;
}

static wf_workflow *spin_wf(void)
{
    wf_workflow *wf = new_wf("spin");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    add_step(wf, "spinner", s_until_cancelled, T_START, T_STOP, NULL, 0, NULL);
    return wf;
}

Test(run, timeout_names_active_steps, .timeout = 60)
{
    wf_workflow *wf = spin_wf();
    wf_executor *ex = new_ex(2);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = 50;
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), &rp, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ERUNTIMEOUT);
    int code;
    const char *msg, *step = NULL;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, WF_ERUNTIMEOUT);
    cr_assert_not_null(step, "a timeout names its first active step");
    cr_assert_str_eq(step, "spinner");
    cr_assert(strstr(msg, "timed out after 0.05 seconds") != NULL, "%s", msg);
    cr_assert(strstr(msg, "spinner") != NULL, "%s", msg);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_str_eq(wf_event_type_name_of(e), "WorkflowTimedOutEvent");
    wf_value steps, first;
    cr_assert_eq(wf_event_lookup(e, "active_steps", &steps), 0);
    cr_assert_eq(wf_value_array_at(steps, 0, &first), 0);
    const char *s;
    cr_assert_eq(wf_value_get_string(first, &s, NULL), 0);
    cr_assert_str_eq(s, "spinner");
    wf_event_release(e);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/*
 * The timer thread sleeps until the deadline it knows of and is signalled
 * only for an earlier one: a short timeout armed behind a long one, or after
 * the long one's run ended (its timer cancelled, the thread still asleep
 * until its deadline), must still fire on time. Without the signal either
 * wait below sleeps for the hour and the test times out.
 */
static wf_handler *start_spinner(wf_executor *ex, wf_workflow *wf, int64_t timeout_ms)
{
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = timeout_ms;
    wf_handler *h = NULL;
    atomic_store(&slow_started, 0);
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), &rp, &h, NULL), 0);
    while (!atomic_load(&slow_started))
        sched_yield();
    return h;
}

Test(run, a_short_timeout_fires_on_time_behind_a_long_or_cancelled_one, .timeout = 60)
{
    wf_workflow *wf = spin_wf();
    wf_executor *ex = new_ex(2);
    /* behind a long one still armed */
    wf_handler *hour = start_spinner(ex, wf, 3600 * 1000);
    wf_handler *brief = start_spinner(ex, wf, 50);
    cr_assert_eq(wf_handler_wait(brief, -1, NULL), WF_ERUNTIMEOUT);
    cr_assert_eq(wf_handler_status(hour), WF_RUN_RUNNING);
    wf_handler_free(brief);
    /* after the long one was cancelled: the thread still sleeps until its deadline */
    cr_assert_eq(wf_handler_cancel(hour), 0);
    cr_assert_eq(wf_handler_wait(hour, -1, NULL), WF_ECANCELLED);
    wf_handler_free(hour);
    brief = start_spinner(ex, wf, 50);
    cr_assert_eq(wf_handler_wait(brief, -1, NULL), WF_ERUNTIMEOUT);
    int code = 0;
    cr_assert_eq(wf_handler_error(brief, &code, NULL, NULL), 0);
    cr_assert_eq(code, WF_ERUNTIMEOUT);
    wf_handler_free(brief);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(run, wait_timeout_is_not_run_timeout, .timeout = 60)
{
    wf_workflow *wf = spin_wf();
    wf_executor *ex = new_ex(2);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_START), &h), 0);
    cr_assert_eq(wf_handler_wait(h, 0, NULL), WF_ETIMEDOUT);
    cr_assert_eq(wf_handler_wait(h, 5, NULL), WF_ETIMEDOUT);
    cr_assert_eq(wf_handler_status(h), WF_RUN_RUNNING);
    cr_assert_eq(wf_handler_error(h, NULL, NULL, NULL), WF_ESTATE);
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(run, cancel_streams_cancelled_event_and_keeps_ctx_usable, .timeout = 60)
{
    wf_workflow *wf = spin_wf();
    wf_executor *ex = new_ex(2);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    cr_assert_eq(wf_ctx_set(ctx, "kept", wf_value_int(5)), 0);
    wf_handler *h;
    atomic_store(&slow_started, 0);
    cr_assert_eq(wf_run_start(ex, wf, ctx, ev0(T_START), &h), 0);
    cr_assert(wf_ctx_is_running(ctx));
    while (!atomic_load(&slow_started))
        ;
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_str_eq(wf_event_type_name_of(e), "WorkflowCancelledEvent");
    wf_event_release(e);
    cr_assert_not(wf_ctx_is_running(ctx));
    wf_value v;
    cr_assert_eq(wf_ctx_get(ctx, "kept", &v), 0);
    int64_t n;
    cr_assert_eq(wf_value_get_int(v, &n), 0);
    cr_assert_eq(n, 5);
    /* A new run on the same context. */
    wf_handler *h2;
    cr_assert_eq(wf_run_start(ex, wf, ctx, ev0(T_START), &h2), 0);
    cr_assert_eq(wf_handler_cancel(h2), 0);
    cr_assert_eq(wf_handler_wait(h2, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h2);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---------------------------------------------------- context reuse */

static int s_count(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_value v;
    wf_ctx_get_default(ctx, "count", wf_value_int(0), &v);
    int64_t n = 0;
    wf_value_get_int(v, &n);
    wf_ctx_set(ctx, "count", wf_value_int(n + 1));
    return stop_with_int(ctx, out, n + 1);
}

Test(run, ctx_reuse_keeps_store_and_running_ctx_is_busy, .timeout = 60)
{
    wf_workflow *wf = new_wf("count");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    add_step(wf, "count", s_count, T_START, T_STOP, NULL, 0, NULL);
    wf_executor *ex = new_ex(2);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    for (int i = 1; i <= 3; i++) {
        wf_event *res;
        cr_assert_eq(wf_run(ex, wf, ctx, ev0(T_START), -1, &res), 0);
        cr_assert_eq(result_int(res), i);
        wf_event_release(res);
    }
    /* A context of another workflow is refused. */
    wf_workflow *other = spin_wf();
    wf_handler *h = NULL;
    cr_assert_eq(wf_run_start(ex, other, ctx, ev0(T_START), &h), WF_EMISMATCH);
    /* Busy: a spinning run holds its context. */
    wf_ctx *c2;
    cr_assert_eq(wf_ctx_new(&c2, other), 0);
    cr_assert_eq(wf_run_start(ex, other, c2, ev0(T_START), &h), 0);
    wf_handler *h2 = NULL;
    cr_assert_eq(wf_run_start(ex, other, c2, ev0(T_START), &h2), WF_EBUSY);
    cr_assert_null(h2);
    wf_handler_cancel(h);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    wf_ctx_free(c2);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(other);
    wf_workflow_free(wf);
}

/* ------------------------------------------------------------ unhandled */

static int s_emit_orphan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *stop;
    stop_with_int(ctx, &stop, 1);
    cr_assert_eq(wf_ctx_send_event(ctx, stop, NULL), 0);
    *out = ev0(T_X); /* nobody accepts X; routed first, so reported before the stop */
    return 0;
}

Test(run, unhandled_event_is_reported_and_dropped)
{
    wf_workflow *wf = new_wf("orphan");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_X = type(wf, "Orphan");
    add_step(wf, "start", s_emit_orphan, T_START, T_STOP, NULL, 0, NULL);
    wf_executor *ex = new_ex(1);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.stream_internal = 1;
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), &rp, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    cr_assert_eq(wf_handler_unhandled(h), 1);
    wf_event *e;
    /* the internal stream also has the step's StepStateChanged events */
    do {
        cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
        if (strcmp(wf_event_type_name_of(e), "StepStateChanged") != 0)
            break;
        wf_event_release(e);
    } while (1);
    cr_assert_str_eq(wf_event_type_name_of(e), "UnhandledEvent");
    const char *s;
    cr_assert_eq(wf_value_get_string(wf_event_get(e, "event_type", wf_value_nil()), &s, NULL), 0);
    cr_assert_str_eq(s, "Orphan");
    wf_event_release(e);
    do {
        cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
        if (strcmp(wf_event_type_name_of(e), "StepStateChanged") != 0)
            break;
        wf_event_release(e);
    } while (1);
    cr_assert_str_eq(wf_event_type_name_of(e), "StopEvent");
    wf_event_release(e);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ------------------------------------------------------ targeted sends */

static atomic_int target_errors_checked;

static int s_targets(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(wf_ctx_send_event(ctx, ev0(T_A), "no_such_step"), WF_ENOTFOUND);
    cr_assert_str_eq(wf_last_error_message(), "workflow 'targets' has no step 'no_such_step'");
    cr_assert_eq(wf_ctx_send_event(ctx, ev0(T_B), "on_a"), WF_ETYPE);
    cr_assert_str_eq(wf_last_error_message(), "step 'on_a' does not accept 'B'");
    cr_assert_eq(wf_ctx_send_event(ctx, NULL, NULL), WF_EINVAL);
    atomic_store(&target_errors_checked, 1);
    /* to one of the two steps accepting A only */
    cr_assert_eq(wf_ctx_send_event(ctx, ev0(T_A), "on_a2"), 0);
    return 0;
}
static int s_on_a(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return stop_with_int(ctx, out, (int64_t)(intptr_t)u);
}

Test(run, targeted_send_reaches_one_step_and_checks_target)
{
    wf_workflow *wf = new_wf("targets");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    T_B = type(wf, "B");
    add_step(wf, "start", s_targets, T_START, T_A, NULL, 0, NULL);
    add_step(wf, "on_a", s_on_a, T_A, T_STOP, NULL, 0, (void *)1);
    add_step(wf, "on_a2", s_on_a, T_A, T_STOP, NULL, 0, (void *)2);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = new_ex(2);
    wf_event *res;
    cr_assert_eq(wf_run(ex, wf, NULL, ev0(T_START), -1, &res), 0);
    cr_assert_eq(result_int(res), 2);
    cr_assert(atomic_load(&target_errors_checked));
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

static int s_nothing(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

Test(run, handler_send_event_into_a_waiting_run)
{
    wf_workflow *wf = new_wf("external");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    T_B = type(wf, "B");
    add_step(wf, "start", s_nothing, T_START, NULL, NULL, 0, NULL);
    add_step(wf, "on_a", s_on_a, T_A, T_STOP, NULL, 0, (void *)5);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = new_ex(2);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_START), &h), 0);
    cr_assert_eq(wf_handler_send_event(h, ev0(T_A), "nope"), WF_ENOTFOUND);
    cr_assert_str_eq(wf_last_error_message(), "workflow 'external' has no step 'nope'");
    cr_assert_eq(wf_handler_send_event(h, ev0(T_B), "on_a"), WF_ETYPE);
    cr_assert_str_eq(wf_last_error_message(), "step 'on_a' does not accept 'B'");
    cr_assert_eq(wf_handler_send_event(h, ev0(T_A), NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_eq(result_int(res), 5);
    wf_event_release(res);
    cr_assert_eq(wf_handler_send_event(h, ev0(T_A), NULL), WF_ESTATE);
    cr_assert(wf_handler_run_id(h) != 0);
    cr_assert_not_null(wf_handler_ctx(h));
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* --------------------------------------------------------------- stream */

#define STREAM_N 100

static int s_writer(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int i = 0; i < STREAM_N; i++)
        cr_assert_eq(wf_ctx_write_event_to_stream(ctx, ev_int(T_A, "i", i)), 0);
    return 0; /* the run ends by an event sent from outside */
}

typedef struct {
    wf_handler *h;
    atomic_int got;
    int order_ok;
    int closed;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    a->order_ok = 1;
    for (;;) {
        wf_event *e;
        int rc = wf_handler_next_event(a->h, -1, &e);
        if (rc == WF_ECLOSED) {
            a->closed = 1;
            break;
        }
        if (rc < 0)
            break;
        if (wf_event_type_of(e) == T_A) {
            if (get_int(e, "i") != atomic_load(&a->got))
                a->order_ok = 0;
            atomic_fetch_add(&a->got, 1);
        }
        wf_event_release(e);
    }
    return NULL;
}

Test(run, stream_in_order_then_terminal_then_closed_single_consumer, .timeout = 60)
{
    wf_workflow *wf = new_wf("stream");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    T_B = type(wf, "B");
    add_step(wf, "writer", s_writer, T_START, NULL, NULL, 0, NULL);
    add_step(wf, "finish", s_on_a, T_B, T_STOP, NULL, 0, (void *)1);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = new_ex(2);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_START), &h), 0);
    reader_arg ra = {.h = h};
    atomic_init(&ra.got, 0);
    pthread_t th;
    pthread_create(&th, NULL, reader, &ra);
    /*
     * Once the reader has every written event the stream is empty, so a
     * second consumer can take nothing: it either finds the reader waiting
     * (WF_EBUSY) or times out at once and tries again.
     */
    while (atomic_load(&ra.got) < STREAM_N)
        ;
    int busy_seen = 0;
    for (;;) {
        wf_event *e = NULL;
        int rc = wf_handler_next_event(h, 0, &e);
        cr_assert(rc == WF_EBUSY || rc == WF_ETIMEDOUT, "second consumer got %d", rc);
        if (rc == WF_EBUSY) {
            busy_seen = 1;
            break;
        }
    }
    cr_assert(busy_seen);
    cr_assert_eq(wf_handler_send_event(h, ev0(T_B), NULL), 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&ra.got), STREAM_N);
    cr_assert(ra.order_ok);
    cr_assert(ra.closed);
    cr_assert_eq(wf_handler_stream_dropped(h), 0);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(run, full_stream_drops_and_counts_but_keeps_terminal, .timeout = 60)
{
    wf_workflow *wf = new_wf("stream");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    T_B = type(wf, "B");
    add_step(wf, "writer", s_writer, T_START, NULL, NULL, 0, NULL);
    add_step(wf, "finish", s_on_a, T_B, T_STOP, NULL, 0, (void *)1);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = new_ex(1);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.stream_capacity = 10;
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), &rp, &h, NULL), 0);
    /* The writer's stream events are all written before the outside event is handled. */
    while (wf_handler_stream_dropped(h) < STREAM_N - 10)
        ;
    cr_assert_eq(wf_handler_send_event(h, ev0(T_B), NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    int got = 0;
    wf_event *e;
    while (wf_handler_next_event(h, -1, &e) == 0) {
        if (wf_event_type_of(e) == T_A) {
            cr_assert_eq(get_int(e, "i"), got);
            got++;
        } else {
            cr_assert(wf_event_type_is_stop(wf_event_type_of(e)));
        }
        wf_event_release(e);
    }
    cr_assert_eq(got, 10);
    cr_assert_eq(wf_handler_stream_dropped(h), STREAM_N - 10);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ------------------------------------------------------------ many runs */

static atomic_long many_done;
static void count_done(wf_handler *h, void *u)
{
    if (wf_handler_status(h) == WF_RUN_DONE)
        atomic_fetch_add(&many_done, 1);
}

Test(run, hundred_thousand_concurrent_runs, .timeout = 240)
{
    wf_workflow *wf = chain_wf();
    wf_executor *ex = new_ex(2);
    const long N = 100000;
    wf_handler **hs = calloc((size_t)N, sizeof *hs);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.on_done = count_done;
    rp.stream_capacity = 0;
    for (long i = 0; i < N; i++)
        cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev_int(T_START, "n", i), &rp, &hs[i], NULL), 0);
    for (long i = 0; i < N; i++) {
        wf_event *res;
        cr_assert_eq(wf_handler_wait(hs[i], -1, &res), 0);
        cr_assert_eq(result_int(res), (i + 1) * 10 + 3);
        wf_event_release(res);
        wf_handler_free(hs[i]);
    }
    free(hs);
    /*
     * on_done runs after the outcome is published (a waiter may return
     * first): the executor's end joins its workers, so every call is over.
     */
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&many_done), N);
    wf_workflow_free(wf);
}

/* -------------------------------------------------------------- shutdown */

Test(run, executor_free_cancels_active_runs_and_handlers_stay_valid, .timeout = 60)
{
    wf_workflow *wf = spin_wf();
    wf_executor *ex = new_ex(2);
    wf_handler *h[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_START), &h[i]), 0);
    wf_executor_free(ex);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(wf_handler_wait(h[i], 0, NULL), WF_ECANCELLED);
        cr_assert_eq(wf_handler_send_event(h[i], ev0(T_START), NULL), WF_ESTATE);
        wf_handler_free(h[i]);
    }
    wf_workflow_free(wf);
}

/*
 * Runs are listed in the shard of the thread that started them: 12 threads
 * start 40 spinning runs each (more threads than shards), some end by
 * themselves meanwhile (cancelled by their starter); the executor's end
 * finds and cancels every other one in every shard, and returns only once
 * all are quiescent.
 */
typedef struct many_arg {
    wf_executor *ex;
    wf_workflow *wf;
    wf_handler *h[40];
    int bad;
} many_arg;

static void *start_spinners(void *arg)
{
    many_arg *a = arg;
    for (int i = 0; i < 40; i++) {
        if (wf_run_start(a->ex, a->wf, NULL, ev0(T_START), &a->h[i]) < 0) {
            a->h[i] = NULL;
            a->bad++;
        } else if (i % 4 == 0 && wf_handler_cancel(a->h[i]) < 0) {
            a->bad++;
        }
    }
    return NULL;
}

Test(run, executor_free_cancels_runs_started_from_many_threads, .timeout = 120)
{
    wf_workflow *wf = spin_wf();
    wf_executor *ex = new_ex(2);
    enum { T = 12 };
    pthread_t th[T];
    many_arg *args = calloc(T, sizeof *args);
    cr_assert_not_null(args);
    for (int k = 0; k < T; k++) {
        args[k].ex = ex;
        args[k].wf = wf;
        cr_assert_eq(pthread_create(&th[k], NULL, start_spinners, &args[k]), 0);
    }
    for (int k = 0; k < T; k++) {
        pthread_join(th[k], NULL);
        cr_assert_eq(args[k].bad, 0, "thread %d could not start or cancel", k);
    }
    wf_executor_free(ex);
    for (int k = 0; k < T; k++) {
        for (int i = 0; i < 40; i++) {
            cr_assert_eq(wf_handler_status(args[k].h[i]), WF_RUN_CANCELLED, "run %d of thread %d", i,
                         k);
            cr_assert_eq(wf_handler_wait(args[k].h[i], 0, NULL), WF_ECANCELLED);
            wf_handler_free(args[k].h[i]);
        }
    }
    free(args);
    wf_workflow_free(wf);
}

/*
 * Run ids: threads take blocks of them; ids stay unique on an executor and
 * rise on each thread, also when one thread alternates between two
 * executors (each has its own ids).
 */
typedef struct ids_arg {
    wf_executor *ex[2];
    wf_workflow *wf;
    uint64_t ids[2][600];
    int n[2];
    int bad;
} ids_arg;

/* 600 runs: every third on the second executor, the others on the first */
static void *start_for_ids(void *arg)
{
    ids_arg *a = arg;
    for (int i = 0; i < 600; i++) {
        int e = i % 3 == 0;
        wf_handler *h;
        if (wf_run_start(a->ex[e], a->wf, NULL, ev_int(T_START, "n", 1), &h) < 0) {
            a->bad++;
            continue;
        }
        a->ids[e][a->n[e]++] = wf_handler_run_id(h);
        if (wf_handler_wait(h, -1, NULL) != 0)
            a->bad++;
        wf_handler_free(h);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

Test(run, run_ids_are_unique_per_executor_and_rise_per_thread, .timeout = 120)
{
    wf_workflow *wf = chain_wf();
    wf_executor *a = new_ex(2), *b = new_ex(1);
    enum { T = 6 };
    pthread_t th[T];
    ids_arg *args = calloc(T, sizeof *args);
    cr_assert_not_null(args);
    for (int k = 0; k < T; k++) {
        args[k].ex[0] = a;
        args[k].ex[1] = b;
        args[k].wf = wf;
        cr_assert_eq(pthread_create(&th[k], NULL, start_for_ids, &args[k]), 0);
    }
    for (int k = 0; k < T; k++) {
        pthread_join(th[k], NULL);
        cr_assert_eq(args[k].bad, 0, "thread %d", k);
    }
    uint64_t *all = malloc(sizeof *all * T * 600);
    cr_assert_not_null(all);
    for (int e = 0; e < 2; e++) {
        int m = 0;
        for (int k = 0; k < T; k++) {
            cr_assert_eq(args[k].n[e], e ? 200 : 400);
            for (int i = 0; i < args[k].n[e]; i++) {
                cr_assert(args[k].ids[e][i] != 0);
                if (i)
                    cr_assert(args[k].ids[e][i] > args[k].ids[e][i - 1],
                              "executor %d, thread %d: id %llu after %llu", e, k,
                              (unsigned long long)args[k].ids[e][i],
                              (unsigned long long)args[k].ids[e][i - 1]);
                all[m++] = args[k].ids[e][i];
            }
        }
        qsort(all, (size_t)m, sizeof *all, cmp_u64);
        for (int i = 1; i < m; i++)
            cr_assert_neq(all[i], all[i - 1], "executor %d: id %llu given twice", e,
                          (unsigned long long)all[i]);
    }
    free(all);
    free(args);
    wf_executor_free(a);
    wf_executor_free(b);
    wf_workflow_free(wf);
}

Test(run, two_executors_do_not_interfere, .timeout = 60)
{
    wf_workflow *wf = chain_wf();
    wf_executor *a = new_ex(1), *b = new_ex(2);
    wf_handler *ha, *hb;
    cr_assert_eq(wf_run_start(a, wf, NULL, ev_int(T_START, "n", 1), &ha), 0);
    cr_assert_eq(wf_run_start(b, wf, NULL, ev_int(T_START, "n", 2), &hb), 0);
    wf_executor_free(a);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(hb, -1, &res), 0);
    cr_assert_eq(result_int(res), 33);
    wf_event_release(res);
    int rc = wf_handler_wait(ha, -1, &res);
    cr_assert(rc == 0 || rc == WF_ECANCELLED);
    if (rc == 0)
        wf_event_release(res);
    wf_handler_free(ha);
    wf_handler_free(hb);
    wf_executor_free(b);
    wf_workflow_free(wf);
}

/* ----------------------------------------- stop inside a claimed batch */

static atomic_int batch_calls;

static int s_fan100(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int i = 0; i < 100; i++)
        cr_assert_eq(wf_ctx_send_event(ctx, ev_int(T_A, "i", i), NULL), 0);
    return 0;
}

static int s_third_stops(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int n = atomic_fetch_add(&batch_calls, 1) + 1;
    if (n == 3)
        return stop_with_int(ctx, out, get_int(in, "i"));
    *out = ev_int(T_B, "i", n); /* held until the batch ends, then dropped */
    return 0;
}

Test(run, no_invocation_starts_after_a_stop_in_a_busy_step, .timeout = 60)
{
    for (uint32_t threads = 1; threads <= 2; threads++) {
        atomic_store(&batch_calls, 0);
        atomic_store(&late_downstream, 0);
        wf_workflow *wf = new_wf("batch-stop");
        T_START = builtin(wf, WF_START_EVENT);
        T_STOP = builtin(wf, WF_STOP_EVENT);
        T_A = type(wf, "A");
        T_B = type(wf, "B");
        add_step(wf, "fan", s_fan100, T_START, T_A, NULL, 0, NULL);
        add_step(wf, "serial", s_third_stops, T_A, T_B, T_STOP, 1, NULL);
        add_step(wf, "after", s_downstream, T_B, NULL, NULL, 0, NULL);
        wf_workflow_skip_check(wf, "dead_end");
        wf_executor *ex = new_ex(threads);
        wf_event *res;
        cr_assert_eq(wf_run(ex, wf, NULL, ev0(T_START), -1, &res), 0);
        cr_assert_eq(result_int(res), 2, "the third event (i = 2) stops the run");
        wf_event_release(res);
        wf_executor_free(ex);
        cr_assert_eq(atomic_load(&batch_calls), 3, "%d invocations ran", atomic_load(&batch_calls));
        /* B events emitted before the stop in the same batch were routed first */
        cr_assert(atomic_load(&late_downstream) <= 2);
        wf_workflow_free(wf);
    }
}

/* ---- wf_test_run: the reference's WorkflowTestRunner ---- */

static const wf_event_type *TR_MID;

static int tr_first(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    cr_assert_eq(wf_ctx_set(ctx, "seen", wf_value_int(1)), 0);
    cr_assert_eq(wf_ctx_write_event_to_stream(ctx, ev0(TR_MID)), 0);
    *out = ev0(TR_MID);
    return 0;
}

static int tr_second(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    if (u)
        return WF_EINTERNAL;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(42));
}

Test(run, test_runner_collects_counts_and_keeps_the_context, .timeout = 60)
{
    wf_workflow *wf = new_wf("tested");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    TR_MID = type(wf, "Mid");
    add_step(wf, "first", tr_first, T_START, TR_MID, NULL, 0, NULL);
    add_step(wf, "second", tr_second, TR_MID, T_STOP, NULL, 0, NULL);
    wf_executor *ex = new_ex(2);
    wf_test_result r;
    cr_assert_eq(wf_test_run(ex, wf, ev0(T_START), NULL, &r), 0);
    cr_assert_eq(r.rc, 0);
    int64_t v = 0;
    cr_assert_eq(wf_value_get_int(wf_event_result(r.result), &v), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(wf_test_result_count(&r, "Mid"), 1,
                 "the written one (the returned one is routed)");
    cr_assert_eq(wf_test_result_count(&r, "StepStateChanged"), 4, "running and not_running twice");
    cr_assert_eq(wf_test_result_count(&r, "StopEvent"), 1);
    cr_assert_str_eq(wf_event_type_name_of(r.events[r.n_events - 1]), "StopEvent", "terminal last");
    cr_assert_not_null(wf_test_result_find(&r, "Mid"));
    cr_assert_null(wf_test_result_find(&r, "Nope"));
    wf_value seen;
    cr_assert_eq(wf_ctx_get(r.ctx, "seen", &seen), 0, "the context as the run left it");
    wf_value_release(seen);
    wf_test_result_free(&r);
    wf_test_result_free(&r); /* a freed result is zeroed: freeing it again is harmless */
    /* without internal events, and excluding a type */
    wf_test_params p;
    wf_test_params_init(&p);
    p.expose_internal = 0;
    const char *ex_names[] = {"Mid"};
    p.exclude = ex_names;
    p.n_exclude = 1;
    cr_assert_eq(wf_test_run(ex, wf, ev0(T_START), &p, &r), 0);
    cr_assert_eq(r.n_events, 1, "only the StopEvent is left");
    wf_test_result_free(&r);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(run, test_runner_reports_a_failure, .timeout = 60)
{
    wf_workflow *wf = new_wf("tested-fail");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    TR_MID = type(wf, "Mid");
    add_step(wf, "first", tr_first, T_START, TR_MID, NULL, 0, NULL);
    add_step(wf, "second", tr_second, TR_MID, T_STOP, NULL, 0, (void *)1);
    wf_executor *ex = new_ex(2);
    wf_test_result r;
    cr_assert_eq(wf_test_run(ex, wf, ev0(T_START), NULL, &r), 0);
    cr_assert_eq(r.rc, WF_ESTEP);
    cr_assert_null(r.result);
    cr_assert_eq(r.error_code, WF_EINTERNAL);
    cr_assert_str_eq(r.error_step, "second");
    cr_assert_eq(wf_test_result_count(&r, "WorkflowFailedEvent"), 1);
    wf_test_result_free(&r);
    cr_assert_eq(wf_test_run(NULL, wf, ev0(T_START), NULL, &r), WF_EINVAL);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ------------------------------------------------------------ fences */

/*
 * fence_first holds until the test says go (fence_go), and records whether
 * the run looked cancelled to it then; fence_second counts its invocations.
 */
static atomic_int fence_entered, fence_go, fence_saw_cancel, fence_second_calls;

static int s_fence_first(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in;
    (void)u;
    atomic_store(&fence_entered, 1);
    while (!atomic_load(&fence_go))
        ;
    atomic_store(&fence_saw_cancel, wf_ctx_is_cancelled(ctx));
    *out = ev0(T_A);
    return 0;
}

static int s_fence_second(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in;
    (void)u;
    atomic_fetch_add(&fence_second_calls, 1);
    return stop_with_int(ctx, out, 7);
}

static wf_workflow *fence_wf(void)
{
    atomic_store(&fence_entered, 0);
    atomic_store(&fence_go, 0);
    atomic_store(&fence_saw_cancel, -1);
    atomic_store(&fence_second_calls, 0);
    wf_workflow *wf = new_wf("fenced");
    T_START = builtin(wf, WF_START_EVENT);
    T_STOP = builtin(wf, WF_STOP_EVENT);
    T_A = type(wf, "A");
    add_step(wf, "first", s_fence_first, T_START, T_A, NULL, 0, NULL);
    add_step(wf, "second", s_fence_second, T_A, T_STOP, NULL, 0, NULL);
    return wf;
}

/*
 * A step in progress when its run's fence passes (a process that stalled
 * past its lease): the step sees its run cancelled, what it returns is
 * dropped, no further step starts, and the run ends cancelled, its error
 * WF_ELEASE naming the step.
 */
Test(run, a_run_whose_fence_passed_starts_no_further_step, .timeout = 60)
{
    wf_workflow *wf = fence_wf();
    wf_executor *ex = new_ex(2);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.fence_ns = wf_clock_ns() + 3600 * (int64_t)1000000000; /* an hour: it holds */
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), &rp, &h, NULL), 0);
    while (!atomic_load(&fence_entered))
        ;
    /* the lease is not renewed: the fence is now behind the clock */
    cr_assert_eq(wf_handler_fence(h, wf_clock_ns()), 0);
    atomic_store(&fence_go, 1);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    cr_assert_eq(wf_handler_status(h), WF_RUN_CANCELLED);
    int code = 0;
    const char *step = NULL, *msg = NULL;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, WF_ELEASE);
    cr_assert_str_eq(step, "first");
    cr_assert(msg && strstr(msg, "fence"), "message: %s", msg ? msg : "(null)");
    wf_executor_free(ex); /* joins the workers: nothing of the run is left to start */
    cr_assert_eq(atomic_load(&fence_saw_cancel), 1);
    cr_assert_eq(atomic_load(&fence_second_calls), 0);
    cr_assert_eq(wf_handler_fence(h, 0), WF_ESTATE);
    wf_handler_free(h);
    wf_workflow_free(wf);
}

/* A fence that already passed when the run starts: no step runs at all. */
Test(run, a_run_started_past_its_fence_runs_nothing, .timeout = 60)
{
    wf_workflow *wf = fence_wf();
    atomic_store(&fence_go, 1);
    wf_executor *ex = new_ex(2);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.fence_ns = wf_clock_ns();
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), &rp, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    const char *step = NULL;
    int code = 0;
    cr_assert_eq(wf_handler_error(h, &code, &step, NULL), 0);
    cr_assert_eq(code, WF_ELEASE);
    cr_assert_str_eq(step, "first");
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&fence_entered), 0);
    cr_assert_eq(atomic_load(&fence_second_calls), 0);
    wf_handler_free(h);
    wf_workflow_free(wf);
}

/*
 * A fence renewed ahead of the clock, or removed, changes nothing: the run
 * finishes with its result, and its steps never see it cancelled. Bad
 * fences are refused with WF_EINVAL.
 */
Test(run, a_renewed_or_removed_fence_lets_the_run_finish, .timeout = 60)
{
    wf_workflow *wf = fence_wf();
    wf_executor *ex = new_ex(2);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.fence_ns = -1;
    wf_handler *h = NULL;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), &rp, &h, NULL), WF_EINVAL);
    cr_assert_null(h);
    for (int removed = 0; removed < 2; removed++) {
        atomic_store(&fence_entered, 0);
        atomic_store(&fence_go, 0);
        rp.fence_ns = wf_clock_ns() + 3600 * (int64_t)1000000000;
        cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev0(T_START), &rp, &h, NULL), 0);
        while (!atomic_load(&fence_entered))
            ;
        cr_assert_eq(wf_handler_fence(h, -5), WF_EINVAL);
        cr_assert_eq(wf_handler_fence(NULL, 1), WF_EINVAL);
        cr_assert_eq(wf_handler_fence(h, removed ? 0 : rp.fence_ns + 1000000000), 0);
        atomic_store(&fence_go, 1);
        wf_event *res = NULL;
        cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
        cr_assert_eq(result_int(res), 7);
        wf_event_release(res);
        cr_assert_eq(atomic_load(&fence_saw_cancel), 0);
        cr_assert_eq(wf_handler_fence(h, 0), WF_ESTATE);
        wf_handler_free(h);
    }
    cr_assert_eq(atomic_load(&fence_second_calls), 2);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ------------------------------------------------ a late end callback */

static atomic_int late_done_calls, late_done_status, late_done_user_ok;

static void late_done(wf_handler *h, void *user)
{
    atomic_fetch_add(&late_done_calls, 1);
    atomic_store(&late_done_status, (int)wf_handler_status(h));
    atomic_store(&late_done_user_ok, user == (void *)&late_done_calls);
}

/*
 * wf_handler_on_done on a run started without one: called once at its end
 * (set while a step holds it), or at once on the calling thread when the
 * run has ended already; a second callback is refused, NULLs are WF_EINVAL.
 */
Test(run, a_late_end_callback_is_called_once, .timeout = 60)
{
    wf_workflow *wf = fence_wf();
    wf_executor *ex = new_ex(2);
    atomic_store(&late_done_calls, 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_START), &h), 0);
    while (!atomic_load(&fence_entered))
        ;
    cr_assert_eq(wf_handler_on_done(NULL, late_done, NULL), WF_EINVAL);
    cr_assert_eq(wf_handler_on_done(h, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_handler_on_done(h, late_done, (void *)&late_done_calls), 0);
    cr_assert_eq(wf_handler_on_done(h, late_done, (void *)&late_done_calls), WF_EBUSY);
    cr_assert_eq(atomic_load(&late_done_calls), 0, "called before the run ended");
    atomic_store(&fence_go, 1);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    wf_executor_free(ex); /* joins the workers: the end and its callback are over */
    cr_assert_eq(atomic_load(&late_done_calls), 1);
    cr_assert_eq(atomic_load(&late_done_status), WF_RUN_DONE);
    cr_assert(atomic_load(&late_done_user_ok));

    /* ended already: called now, here */
    ex = new_ex(1);
    atomic_store(&fence_go, 1);
    atomic_store(&late_done_calls, 0);
    cr_assert_eq(wf_run_start(ex, wf, NULL, ev0(T_START), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    cr_assert_eq(wf_handler_on_done(h, late_done, (void *)&late_done_calls), 0);
    cr_assert_eq(atomic_load(&late_done_calls), 1);
    cr_assert_eq(atomic_load(&late_done_status), WF_RUN_DONE);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* -------------------------------------------------- run_here */

/*
 * wf_run_params.run_here: the first step runs on the thread that starts the
 * run. Each caller marks itself in a thread-local; a step compares it with
 * the caller's mark that the start event carries.
 */
static _Thread_local int64_t tl_mark;
static atomic_int here_now, here_max, here_count, away_count, here_linger;

static int here_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t caller = 0;
    wf_value_get_int(wf_event_get(in, "caller", wf_value_int(-1)), &caller);
    int here = tl_mark != 0 && tl_mark == caller;
    if (here) {
        int now = atomic_fetch_add(&here_now, 1) + 1;
        int m = atomic_load(&here_max);
        while (now > m && !atomic_compare_exchange_weak(&here_max, &m, now))
            ;
        atomic_fetch_add(&here_count, 1);
        for (int k = atomic_load(&here_linger); k > 0; k--)
            sched_yield(); /* let the other callers in meanwhile */
    } else {
        atomic_fetch_add(&away_count, 1);
    }
    const wf_event_type *next = u;
    int rc = next ? wf_event_new1(out, next, "first_here", wf_value_int(here))
                  : wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                      wf_value_int(here));
    if (here)
        atomic_fetch_sub(&here_now, 1);
    return rc;
}

static int second_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t first = -1;
    wf_value_get_int(wf_event_get(in, "first_here", wf_value_int(-1)), &first);
    /* the second step is a worker's: this thread has no caller's mark */
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(first * 10 + (tl_mark == 0)));
}

static _Thread_local int tl_done_here;
static void done_mark(wf_handler *h, void *user)
{
    (void)h;
    tl_done_here = 1;
    atomic_store((atomic_int *)user, 1);
}

static wf_handler *start_marked(wf_executor *ex, wf_workflow *wf, const wf_event_type *start,
                                int run_here, wf_done_fn done, void *user)
{
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.run_here = run_here;
    rp.on_done = done;
    rp.on_done_user = user;
    wf_handler *h = NULL;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, ev_int(start, "caller", tl_mark), &rp, &h, NULL), 0);
    return h;
}

/* Waits for h's result, an int: want; frees h. */
static void expect_int_result(wf_handler *h, int64_t want, const char *what)
{
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0, "%s", what);
    cr_assert_eq(wf_event_result(res).as.i, want, "%s", what);
    wf_event_release(res);
    wf_handler_free(h);
}

Test(run, run_here_runs_the_first_step_on_the_calling_thread, .timeout = 60)
{
    wf_workflow *wf = new_wf("here");
    const wf_event_type *start = builtin(wf, WF_START_EVENT), *stop = builtin(wf, WF_STOP_EVENT);
    add_step(wf, "first", here_step, start, stop, NULL, 0, NULL);
    wf_executor *ex = new_ex(2);
    tl_mark = 1;
    atomic_int done = 0;
    tl_done_here = 0;
    /* the first step ends the run: over before wf_run_start_ex returns, on_done here */
    wf_handler *h = start_marked(ex, wf, start, 1, done_mark, &done);
    cr_assert(atomic_load(&done), "the run ended in the call");
    cr_assert(tl_done_here, "its on_done ran on this thread");
    cr_assert_eq(wf_handler_status(h), WF_RUN_DONE);
    expect_int_result(h, 1, "the step ran on the calling thread");
    /* without run_here, a worker runs it */
    expect_int_result(start_marked(ex, wf, start, 0, NULL, NULL), 0, "a worker ran the step");
    wf_executor_free(ex);
    wf_workflow_free(wf);
    tl_mark = 0;
}

Test(run, run_here_hands_what_the_first_step_emits_to_the_workers, .timeout = 60)
{
    wf_workflow *wf = new_wf("here2");
    const wf_event_type *start = builtin(wf, WF_START_EVENT), *stop = builtin(wf, WF_STOP_EVENT);
    const wf_event_type *mid = type(wf, "Mid");
    add_step(wf, "first", here_step, start, mid, NULL, 0, (void *)mid);
    add_step(wf, "second", second_step, mid, stop, NULL, 0, NULL);
    wf_executor *ex = new_ex(2);
    tl_mark = 2;
    for (int i = 0; i < 100; i++)
        expect_int_result(start_marked(ex, wf, start, 1, NULL, NULL), 11,
                          "first here (1), second on a worker (1)");
    wf_executor_free(ex);
    wf_workflow_free(wf);
    tl_mark = 0;
}

Test(run, run_here_leaves_a_blocking_first_step_to_the_blocking_pool, .timeout = 60)
{
    wf_workflow *wf = new_wf("here3");
    const wf_event_type *start = builtin(wf, WF_START_EVENT), *stop = builtin(wf, WF_STOP_EVENT);
    const wf_event_type *accepts[] = {start}, *emits[] = {stop};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = 1;
    p.blocking = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "blocking_first", here_step, &p, NULL), 0);
    wf_executor *ex = new_ex(2);
    tl_mark = 3;
    expect_int_result(start_marked(ex, wf, start, 1, NULL, NULL), 0,
                      "a blocking step runs in the blocking pool");
    wf_executor_free(ex);
    wf_workflow_free(wf);
    tl_mark = 0;
}

/* 16 threads start runs with run_here at once: never more than WF_RUN_HERE_THREADS run here. */
typedef struct here_arg {
    wf_executor *ex;
    wf_workflow *wf;
    const wf_event_type *start;
    int index, bad;
} here_arg;

static void *here_caller(void *arg)
{
    here_arg *a = arg;
    tl_mark = 100 + a->index;
    for (int i = 0; i < 300; i++) {
        wf_run_params rp;
        wf_run_params_init(&rp);
        rp.run_here = 1;
        wf_event *s;
        wf_handler *h;
        if (wf_event_new1(&s, a->start, "caller", wf_value_int(tl_mark)) < 0 ||
            wf_run_start_ex(a->ex, a->wf, NULL, s, &rp, &h, NULL) < 0) {
            a->bad++;
            continue;
        }
        wf_event *res;
        if (wf_handler_wait(h, -1, &res) != 0)
            a->bad++;
        wf_event_release(res);
        wf_handler_free(h);
    }
    return NULL;
}

Test(run, run_here_from_many_threads_at_once_uses_at_most_its_guest_slots, .timeout = 120)
{
    wf_workflow *wf = new_wf("here4");
    const wf_event_type *start = builtin(wf, WF_START_EVENT), *stop = builtin(wf, WF_STOP_EVENT);
    add_step(wf, "first", here_step, start, stop, NULL, 0, NULL);
    wf_executor *ex = new_ex(2);
    atomic_store(&here_max, 0);
    atomic_store(&here_count, 0);
    atomic_store(&away_count, 0);
    atomic_store(&here_linger, 20);
    enum { N = 16 };
    pthread_t th[N];
    here_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (here_arg){ex, wf, start, i, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, here_caller, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].bad, 0, "caller %d: every run ran to its result", i);
    }
    cr_assert_eq(atomic_load(&here_count) + atomic_load(&away_count), N * 300);
    cr_assert(atomic_load(&here_count) > 0, "some first steps ran on their callers");
    cr_assert(atomic_load(&here_max) <= WF_RUN_HERE_THREADS,
                  "%d first steps ran on their callers at once", atomic_load(&here_max));
    atomic_store(&here_linger, 0);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}
