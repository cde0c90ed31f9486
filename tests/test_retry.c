/*
 * test_retry.c: retry policies (their arithmetic, deterministic jitter) and
 * retries on the executor (attempts, last error, giving up, cancel while a
 * retry waits, the step's slot free meanwhile).
 */
#include "harness.h"

#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

static wf_retry_state st(uint32_t attempt, int32_t error, int64_t elapsed, uint64_t seed)
{
    wf_retry_state s = {attempt, error, elapsed, seed, NULL};
    return s;
}

static int64_t next(const wf_retry_policy *p, wf_retry_state s)
{
    int64_t d = -1;
    return wf_retry_policy_next(p, &s, &d) ? d : -1;
}

Test(retry, stop_after_attempt_counts_executions)
{
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 3, 5), 0);
    cr_assert_eq(next(p, st(1, -1, 0, 0)), 5);
    cr_assert_eq(next(p, st(2, -1, 0, 0)), 5);
    cr_assert_eq(next(p, st(3, -1, 0, 0)), -1, "3 executions in total, then give up");
    wf_retry_policy_free(p);
    wf_retry_stop *s;
    cr_assert_eq(wf_retry_stop_after_attempt(&s, 0), WF_EINVAL);
}

Test(retry, exponential_is_clamped)
{
    wf_retry_wait *w;
    wf_retry_stop *s;
    cr_assert_eq(wf_retry_wait_exponential(&w, 100, 150, 1000), 0);
    cr_assert_eq(wf_retry_stop_after_attempt(&s, 100), 0);
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_new(&p, NULL, w, s), 0);
    const int64_t want[] = {150, 200, 400, 800, 1000, 1000};
    for (uint32_t a = 1; a <= 6; a++)
        cr_assert_eq(next(p, st(a, -1, 0, 0)), want[a - 1], "attempt %u", a);
    wf_retry_policy_free(p);
    cr_assert_eq(wf_retry_wait_exponential(&w, 1, 10, 5), WF_EINVAL);
}

Test(retry, jitter_is_deterministic_and_bounded)
{
    wf_retry_wait *w;
    wf_retry_stop *s;
    cr_assert_eq(wf_retry_wait_random(&w, 10, 20), 0);
    cr_assert_eq(wf_retry_stop_after_attempt(&s, 100), 0);
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_new(&p, NULL, w, s), 0);
    int seen[11] = {0};
    for (uint64_t seed = 0; seed < 1000; seed++) {
        int64_t d = next(p, st(1, -1, 0, seed));
        cr_assert(d >= 10 && d <= 20, "%lld", (long long)d);
        cr_assert_eq(next(p, st(1, -1, 0, seed)), d, "same seed, same delay");
        seen[d - 10]++;
    }
    for (int i = 0; i <= 10; i++)
        cr_assert(seen[i] > 0, "value %d never drawn", 10 + i);
    wf_retry_policy_free(p);
}

Test(retry, chain_and_sum)
{
    wf_retry_wait *a, *b, *c, *chain, *sum, *fixed;
    cr_assert_eq(wf_retry_wait_fixed(&a, 1), 0);
    cr_assert_eq(wf_retry_wait_fixed(&b, 2), 0);
    cr_assert_eq(wf_retry_wait_fixed(&c, 3), 0);
    wf_retry_wait *parts[] = {a, b, c};
    cr_assert_eq(wf_retry_wait_chain(&chain, parts, 3), 0);
    cr_assert_eq(wf_retry_wait_fixed(&fixed, 100), 0);
    cr_assert_eq(wf_retry_wait_sum(&sum, chain, fixed), 0);
    wf_retry_stop *s;
    cr_assert_eq(wf_retry_stop_after_attempt(&s, 10), 0);
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_new(&p, NULL, sum, s), 0);
    cr_assert_eq(next(p, st(1, -1, 0, 0)), 101);
    cr_assert_eq(next(p, st(2, -1, 0, 0)), 102);
    cr_assert_eq(next(p, st(3, -1, 0, 0)), 103);
    cr_assert_eq(next(p, st(7, -1, 0, 0)), 103, "the last wait repeats");
    wf_retry_policy_free(p);
}

Test(retry, conditions_and_stop_combinators)
{
    const int32_t codes[] = {-100, -200};
    wf_retry_cond *on, *never, *any;
    cr_assert_eq(wf_retry_cond_on_codes(&on, codes, 2), 0);
    cr_assert_eq(wf_retry_cond_never(&never), 0);
    cr_assert_eq(wf_retry_cond_any(&any, on, never), 0);
    wf_retry_stop *attempts, *delay, *either;
    cr_assert_eq(wf_retry_stop_after_attempt(&attempts, 5), 0);
    cr_assert_eq(wf_retry_stop_after_delay(&delay, 1000), 0);
    cr_assert_eq(wf_retry_stop_any(&either, attempts, delay), 0);
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_new(&p, any, NULL, either), 0);
    cr_assert_eq(next(p, st(1, -100, 0, 0)), 0);
    cr_assert_eq(next(p, st(1, -200, 0, 0)), 0);
    cr_assert_eq(next(p, st(1, -300, 0, 0)), -1, "other codes are not retried");
    cr_assert_eq(next(p, st(5, -100, 0, 0)), -1, "attempts exhausted");
    cr_assert_eq(next(p, st(2, -100, 1000, 0)), -1, "delay exhausted");
    wf_retry_policy_free(p);

    wf_retry_cond *always, *never2, *all;
    cr_assert_eq(wf_retry_cond_always(&always), 0);
    cr_assert_eq(wf_retry_cond_never(&never2), 0);
    cr_assert_eq(wf_retry_cond_all(&all, always, never2), 0);
    wf_retry_stop *a1, *a2, *both;
    cr_assert_eq(wf_retry_stop_after_attempt(&a1, 2), 0);
    cr_assert_eq(wf_retry_stop_after_delay(&a2, 50), 0);
    cr_assert_eq(wf_retry_stop_all(&both, a1, a2), 0);
    cr_assert_eq(wf_retry_policy_new(&p, all, NULL, both), 0);
    cr_assert_eq(next(p, st(1, -1, 0, 0)), -1, "never and always: never");
    wf_retry_policy_free(p);
    /* NULL parts are refused and what was given is released */
    cr_assert_eq(wf_retry_cond_any(&any, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_retry_policy_new(&p, NULL, NULL, NULL), WF_EINVAL);
}

static wf_retry_state stm(uint32_t attempt, int64_t elapsed, const char *message)
{
    wf_retry_state s = {attempt, -1, elapsed, 7, message};
    return s;
}

static wf_retry_policy *policy(wf_retry_cond *c, wf_retry_wait *w, wf_retry_stop *s)
{
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_new(&p, c, w, s), 0);
    return p;
}

static wf_retry_stop *never(void)
{
    wf_retry_stop *s;
    cr_assert_eq(wf_retry_stop_never(&s), 0);
    return s;
}

Test(retry, message_conditions_and_negation)
{
    wf_retry_cond *c;
    cr_assert_eq(wf_retry_cond_message_contains(&c, "timeout"), 0);
    wf_retry_policy *p = policy(c, NULL, never());
    cr_assert_eq(next(p, stm(1, 0, "upstream timeout, try again")), 0);
    cr_assert_eq(next(p, stm(1, 0, "bad request")), -1);
    cr_assert_eq(next(p, stm(1, 0, NULL)), -1, "no message never contains");
    wf_retry_policy_free(p);

    cr_assert_eq(wf_retry_cond_message_matches(&c, "^HTTP (429|5[0-9][0-9])", 0), 0);
    p = policy(c, NULL, never());
    cr_assert_eq(next(p, stm(1, 0, "HTTP 503 from the model")), 0);
    cr_assert_eq(next(p, stm(1, 0, "HTTP 404")), -1);
    cr_assert_eq(next(p, stm(1, 0, "http 503")), -1, "case matters without REG_ICASE");
    wf_retry_policy_free(p);
    cr_assert_eq(wf_retry_cond_message_matches(&c, "^http 5", REG_ICASE), 0);
    p = policy(c, NULL, never());
    cr_assert_eq(next(p, stm(1, 0, "HTTP 503")), 0);
    wf_retry_policy_free(p);

    /* retry_if_not: everything but a fatal message */
    wf_retry_cond *fatal, *not_fatal;
    cr_assert_eq(wf_retry_cond_message_contains(&fatal, "fatal"), 0);
    cr_assert_eq(wf_retry_cond_not(&not_fatal, fatal), 0);
    p = policy(not_fatal, NULL, never());
    cr_assert_eq(next(p, stm(1, 0, "fatal: disk gone")), -1);
    cr_assert_eq(next(p, stm(1, 0, "flaky")), 0);
    cr_assert_eq(next(p, stm(1, 0, NULL)), 0);
    wf_retry_policy_free(p);

    cr_assert_eq(wf_retry_cond_message_matches(&c, "([unclosed", 0), WF_EINVAL);
    cr_assert_null(c);
    cr_assert_eq(wf_retry_cond_message_matches(&c, "x", 12345), WF_EINVAL);
    cr_assert_eq(wf_retry_cond_message_contains(&c, NULL), WF_EINVAL);
    cr_assert_eq(wf_retry_cond_not(&c, NULL), WF_EINVAL);
}

Test(retry, incrementing_and_random_exponential_waits)
{
    wf_retry_wait *w;
    cr_assert_eq(wf_retry_wait_incrementing(&w, 100, 50, 220), 0);
    wf_retry_policy *p = policy(NULL, w, never());
    cr_assert_eq(next(p, stm(1, 0, NULL)), 100);
    cr_assert_eq(next(p, stm(2, 0, NULL)), 150);
    cr_assert_eq(next(p, stm(3, 0, NULL)), 200);
    cr_assert_eq(next(p, stm(4, 0, NULL)), 220, "capped");
    wf_retry_policy_free(p);
    cr_assert_eq(wf_retry_wait_incrementing(&w, -1, 50, 220), WF_EINVAL);

    cr_assert_eq(wf_retry_wait_random_exponential(&w, 10, 5, 70), 0);
    p = policy(NULL, w, never());
    for (uint32_t a = 1; a <= 8; a++) {
        int64_t hi = 10 * (1 << (a - 1));
        if (hi > 70)
            hi = 70;
        for (uint64_t seed = 0; seed < 200; seed++) {
            wf_retry_state s = {a, -1, 0, seed, NULL};
            int64_t d = next(p, s);
            cr_assert(d >= 5 && d <= (hi < 5 ? 5 : hi), "attempt %u: %lld", a, (long long)d);
            cr_assert_eq(next(p, s), d, "deterministic for a seed");
        }
    }
    wf_retry_policy_free(p);
    cr_assert_eq(wf_retry_wait_random_exponential(&w, 1, 10, 5), WF_EINVAL);
}

Test(retry, stop_before_delay_and_never)
{
    wf_retry_wait *w;
    wf_retry_stop *s;
    cr_assert_eq(wf_retry_wait_fixed(&w, 40), 0);
    cr_assert_eq(wf_retry_stop_before_delay(&s, 100), 0);
    wf_retry_policy *p = policy(NULL, w, s);
    cr_assert_eq(next(p, stm(1, 0, NULL)), 40);
    cr_assert_eq(next(p, stm(2, 59, NULL)), 40, "59 + 40 < 100");
    cr_assert_eq(next(p, stm(3, 60, NULL)), -1, "the next attempt would start at 100");
    wf_retry_policy_free(p);
    p = policy(NULL, NULL, never());
    cr_assert_eq(next(p, stm(1000000, 1000000000, NULL)), 0);
    wf_retry_policy_free(p);
    cr_assert_eq(wf_retry_stop_before_delay(&s, -1), WF_EINVAL);
}

static int freed_user;
static void count_free(void *u)
{
    (*(int *)u)++;
}

/* retry the first two attempts with 3 ms and 6 ms, then stop; only for "again" */
static int64_t custom(const wf_retry_state *s, void *user)
{
    cr_assert_eq(user, &freed_user);
    if (s->message == NULL || strcmp(s->message, "again") != 0 || s->attempt > 2)
        return -1;
    return 3 * (int64_t)s->attempt;
}

Test(retry, a_callback_policy_decides)
{
    wf_retry_policy *p;
    freed_user = 0;
    cr_assert_eq(wf_retry_policy_callback(&p, custom, &freed_user, count_free), 0);
    cr_assert_eq(next(p, stm(1, 0, "again")), 3);
    cr_assert_eq(next(p, stm(2, 0, "again")), 6);
    cr_assert_eq(next(p, stm(3, 0, "again")), -1);
    cr_assert_eq(next(p, stm(1, 0, "other")), -1);
    wf_retry_policy *q = wf_retry_policy_retain(p);
    wf_retry_policy_free(p);
    cr_assert_eq(freed_user, 0, "still referenced");
    wf_retry_policy_free(q);
    cr_assert_eq(freed_user, 1, "user_free runs once");
    cr_assert_eq(wf_retry_policy_callback(&p, NULL, &freed_user, count_free), WF_EINVAL);
    cr_assert_eq(freed_user, 2, "and on failure too");
}

/* ------------------------------------------------------------ on the executor */

static const wf_event_type *T_START, *T_STOP, *T_OTHER;
static atomic_int calls;
static int fail_until; /* attempts that fail */
static int64_t seen_last_error;
static char seen_last_msg[64];

static int flaky(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int n = atomic_fetch_add(&calls, 1) + 1;
    cr_assert_eq(wf_ctx_attempt(ctx), (uint32_t)n);
    int code;
    const char *msg;
    if (n == 1) {
        cr_assert_eq(wf_ctx_last_error(ctx, &code, &msg), WF_ENOTFOUND);
    } else {
        cr_assert_eq(wf_ctx_last_error(ctx, &code, &msg), 0);
        seen_last_error = code;
        snprintf(seen_last_msg, sizeof seen_last_msg, "%s", msg ? msg : "");
    }
    if (n <= fail_until) {
        char m[32];
        snprintf(m, sizeof m, "failure %d", n);
        wf_ctx_set_error(ctx, m);
        return -1000 - n;
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(n));
}

static wf_workflow *flaky_wf(wf_retry_policy *p, uint32_t workers)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "flaky", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_step_params sp;
    wf_step_params_init(&sp);
    sp.accepts = &T_START;
    sp.n_accepts = 1;
    sp.emits = &T_STOP;
    sp.n_emits = 1;
    sp.retry = p;
    sp.num_workers = workers;
    cr_assert_eq(wf_workflow_add_step(wf, "flaky", flaky, &sp, NULL), 0);
    wf_retry_policy_free(p); /* the workflow keeps its own reference */
    return wf;
}

static wf_event *start_ev(void)
{
    wf_event *e;
    cr_assert_eq(wf_event_new(&e, T_START, 0), 0);
    return e;
}

Test(retry, step_recovers_on_a_later_attempt, .timeout = 60)
{
    atomic_store(&calls, 0);
    fail_until = 2;
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 5, 1), 0);
    wf_workflow *wf = flaky_wf(p, 4);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_run(ex, wf, NULL, start_ev(), -1, &res), 0);
    int64_t n;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(atomic_load(&calls), 3);
    cr_assert_eq(seen_last_error, -1002);
    cr_assert_str_eq(seen_last_msg, "failure 2");
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(retry, gives_up_after_exactly_three_executions_with_the_last_error, .timeout = 60)
{
    atomic_store(&calls, 0);
    fail_until = 100;
    wf_retry_wait *w;
    wf_retry_stop *s;
    cr_assert_eq(wf_retry_wait_exponential(&w, 1, 0, 4), 0);
    cr_assert_eq(wf_retry_stop_after_attempt(&s, 3), 0);
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_new(&p, NULL, w, s), 0);
    wf_workflow *wf = flaky_wf(p, 1);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_ev(), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    const char *step, *msg;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, -1003);
    cr_assert_str_eq(step, "flaky");
    cr_assert_str_eq(msg, "failure 3");
    cr_assert_eq(atomic_load(&calls), 3);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* the engine hands the step's message to the policy: "failure N" retried while N < 3 */
static int64_t until_third(const wf_retry_state *s, void *user)
{
    cr_assert_not_null(s->message);
    return strcmp(s->message, "failure 3") == 0 ? -1 : 1;
}

Test(retry, the_policy_sees_the_steps_message, .timeout = 60)
{
    atomic_store(&calls, 0);
    fail_until = 100;
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_callback(&p, until_third, NULL, NULL), 0);
    wf_workflow *wf = flaky_wf(p, 1);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_ev(), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    cr_assert_eq(atomic_load(&calls), 3);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(retry, codes_not_listed_fail_at_once, .timeout = 60)
{
    atomic_store(&calls, 0);
    fail_until = 100;
    const int32_t codes[] = {-5};
    wf_retry_cond *c;
    wf_retry_stop *s;
    cr_assert_eq(wf_retry_cond_on_codes(&c, codes, 1), 0);
    cr_assert_eq(wf_retry_stop_after_attempt(&s, 10), 0);
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_new(&p, c, NULL, s), 0);
    wf_workflow *wf = flaky_wf(p, 1);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, start_ev(), -1, NULL), WF_ESTEP);
    cr_assert_eq(atomic_load(&calls), 1);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(retry, cancel_disarms_a_waiting_retry, .timeout = 60)
{
    /* A retry an hour away: cancel and shutdown must not wait for it. */
    atomic_store(&calls, 0);
    fail_until = 100;
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 5, 3600 * 1000), 0);
    wf_workflow *wf = flaky_wf(p, 1);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start_ev(), &h), 0);
    while (atomic_load(&calls) < 1)
        ;
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_executor_free(ex);
    cr_assert_eq(atomic_load(&calls), 1);
    wf_handler_free(h);
    wf_workflow_free(wf);
}

static int fails_once_or_stops(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    if (wf_event_type_of(in) == T_START) {
        /* the first event: fail; its retry is an hour away */
        if (wf_ctx_attempt(ctx) == 1) {
            wf_event *other;
            cr_assert_eq(wf_event_new(&other, T_OTHER, 0), 0);
            cr_assert_eq(wf_ctx_send_event(ctx, other, NULL), 0);
        }
        return -1;
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(7));
}

Test(retry, a_waiting_retry_does_not_hold_the_slot, .timeout = 60)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "slot", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Other", NULL, &T_OTHER), 0);
    const wf_event_type *acc[] = {T_START, T_OTHER};
    const wf_event_type *em[] = {T_OTHER, T_STOP};
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 5, 3600 * 1000), 0);
    wf_step_params sp;
    wf_step_params_init(&sp);
    sp.accepts = acc;
    sp.n_accepts = 2;
    sp.emits = em;
    sp.n_emits = 2;
    sp.num_workers = 1;
    sp.retry = p;
    cr_assert_eq(wf_workflow_add_step(wf, "only", fails_once_or_stops, &sp, NULL), 0);
    wf_retry_policy_free(p);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    /*
     * The sent event is dropped with the failed attempt, so the run would end
     * only by its retry, an hour away... unless the failing attempt's sends
     * counted. They do not: the run times out instead, quickly.
     */
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = 50;
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, start_ev(), &rp, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ERUNTIMEOUT);
    /* Now an outside event for the same single-slot step goes through at once. */
    wf_handler_free(h);
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, start_ev(), NULL, &h, NULL), 0);
    wf_event *other;
    cr_assert_eq(wf_event_new(&other, T_OTHER, 0), 0);
    cr_assert_eq(wf_handler_send_event(h, other, NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0, "the slot was free while the retry waited");
    wf_event_release(res);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ------------------------------------------------------------ error handlers */

static const wf_event_type *T_FAILED, *T_AGAIN;
static atomic_int handler_calls, explode_calls;

static int explode(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&explode_calls, 1);
    wf_ctx_set_error(ctx, "bad");
    return -7;
}

static const char *str_field(const wf_event *e, const char *k)
{
    const char *s = NULL;
    wf_value_get_string(wf_event_get(e, k, wf_value_nil()), &s, NULL);
    return s;
}

static int recover(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&handler_calls, 1);
    cr_assert_eq(wf_event_type_of(in), T_FAILED);
    int64_t code = 0;
    uint64_t attempts = 0;
    cr_assert_eq(wf_value_get_int(wf_event_get(in, "error_code", wf_value_nil()), &code), 0);
    cr_assert_eq(code, -7);
    cr_assert_str_eq(str_field(in, "step_name"), "explode");
    cr_assert_str_eq(str_field(in, "error"), "bad");
    cr_assert_str_eq(str_field(in, "input_event_type"), "StartEvent");
    cr_assert_eq(wf_value_get_uint(wf_event_get(in, "attempts", wf_value_nil()), &attempts), 0);
    wf_value input, x;
    cr_assert_eq(wf_event_lookup(in, "input", &input), 0);
    int64_t xv = 0;
    cr_assert_eq(wf_value_map_get(input, "x", &x), 0);
    cr_assert_eq(wf_value_get_int(x, &xv), 0);
    cr_assert_eq(xv, 41);
    if (u == (void *)1) {
        wf_ctx_set_error(ctx, "the handler gave up");
        return -99;
    }
    if (u == (void *)2) { /* loop back into the failing step */
        wf_event *again;
        cr_assert_eq(wf_event_new1(&again, T_START, "x", wf_value_int(41)), 0);
        *out = again;
        return 0;
    }
    char msg[64];
    snprintf(msg, sizeof msg, "recovered from %s after %llu attempts: %s",
             str_field(in, "step_name"), (unsigned long long)attempts, str_field(in, "error"));
    wf_value v;
    cr_assert_eq(wf_value_string(&v, msg), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

static wf_workflow *handled_wf(void *mode, uint32_t max_recoveries, wf_retry_policy *p)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "handled", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    T_FAILED = wf_workflow_builtin(wf, WF_STEP_FAILED_EVENT);
    wf_step_params sp;
    wf_step_params_init(&sp);
    sp.accepts = &T_START;
    sp.n_accepts = 1;
    sp.emits = &T_STOP;
    sp.n_emits = 1;
    sp.retry = p;
    cr_assert_eq(wf_workflow_add_step(wf, "explode", explode, &sp, NULL), 0);
    wf_retry_policy_free(p);
    const char *covers[] = {"explode"};
    const wf_event_type *em[] = {T_STOP, T_START};
    wf_step_params hp;
    wf_step_params_init(&hp);
    hp.accepts = &T_FAILED;
    hp.n_accepts = 1;
    hp.emits = em;
    hp.n_emits = 2;
    hp.error_of = covers;
    hp.n_error_of = 1;
    hp.max_recoveries = max_recoveries;
    cr_assert_eq(wf_workflow_add_step(wf, "recover", recover, &hp, mode), 0);
    return wf;
}

static wf_event *start41(void)
{
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, T_START, "x", wf_value_int(41)), 0);
    return e;
}

Test(retry, error_handler_recovers_with_a_stop_event, .timeout = 60)
{
    atomic_store(&handler_calls, 0);
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 2, 0), 0);
    wf_workflow *wf = handled_wf(NULL, 1, p);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_run(ex, wf, NULL, start41(), -1, &res), 0);
    const char *s;
    cr_assert_eq(wf_value_get_string(wf_event_result(res), &s, NULL), 0);
    cr_assert_str_eq(s, "recovered from explode after 2 attempts: bad");
    cr_assert_eq(atomic_load(&handler_calls), 1);
    wf_event_release(res);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(retry, a_failing_handler_fails_the_run_with_its_own_error, .timeout = 60)
{
    wf_workflow *wf = handled_wf((void *)1, 1, NULL);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, start41(), &h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    int code;
    const char *step, *msg;
    cr_assert_eq(wf_handler_error(h, &code, &step, &msg), 0);
    cr_assert_eq(code, -99);
    cr_assert_str_eq(step, "recover");
    cr_assert_str_eq(msg, "the handler gave up");
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(retry, max_recoveries_counts_per_lineage, .timeout = 60)
{
    for (uint32_t max = 1; max <= 3; max++) {
        atomic_store(&handler_calls, 0);
        atomic_store(&explode_calls, 0);
        wf_workflow *wf = handled_wf((void *)2, max, NULL);
        wf_executor *ex;
        cr_assert_eq(wf_executor_new(&ex, NULL), 0);
        wf_handler *h;
        cr_assert_eq(wf_run_start(ex, wf, NULL, start41(), &h), 0);
        cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
        int code;
        const char *step;
        cr_assert_eq(wf_handler_error(h, &code, &step, NULL), 0);
        cr_assert_eq(code, -7, "the step's own error once recoveries are spent");
        cr_assert_str_eq(step, "explode");
        cr_assert_eq(atomic_load(&handler_calls), (int)max);
        cr_assert_eq(atomic_load(&explode_calls), (int)max + 1);
        wf_handler_free(h);
        wf_executor_free(ex);
        wf_workflow_free(wf);
    }
}

static void expect_definition_error(wf_workflow *wf, const char *want)
{
    char *msg = NULL;
    cr_assert_eq(wf_workflow_freeze(wf, &msg), WF_EVALIDATION);
    cr_assert_not_null(msg);
    cr_assert_str_eq(msg, want);
    wf_free(msg);
}

static void add_handler(wf_workflow *wf, const char *name, const char *const *covers, uint32_t n,
                        int all, int accepts_failed)
{
    const wf_event_type *acc[] = {accepts_failed ? T_FAILED : T_AGAIN};
    wf_step_params hp;
    wf_step_params_init(&hp);
    hp.accepts = acc;
    hp.n_accepts = 1;
    hp.emits = &T_STOP;
    hp.n_emits = 1;
    hp.error_of = covers;
    hp.n_error_of = n;
    hp.error_of_all = all;
    cr_assert_eq(wf_workflow_add_step(wf, name, recover, &hp, NULL), 0);
}

static wf_workflow *base_wf(void)
{
    wf_workflow *wf = handled_wf(NULL, 1, NULL); /* "recover" covers "explode" */
    cr_assert_eq(wf_workflow_event_type(wf, "Again", NULL, &T_AGAIN), 0);
    return wf;
}

Test(retry, error_handler_validation)
{
    wf_workflow *wf = base_wf();
    add_handler(wf, "all1", NULL, 0, 1, 1);
    add_handler(wf, "all2", NULL, 0, 1, 1);
    expect_definition_error(
        wf, "Only one step may handle the errors of every step, found 'all1' and 'all2'.");
    wf_workflow_free(wf);

    wf = base_wf();
    const char *unknown[] = {"nope"};
    add_handler(wf, "h", unknown, 1, 0, 1);
    expect_definition_error(wf, "Error handler 'h' names unknown step 'nope'.");
    wf_workflow_free(wf);

    wf = base_wf();
    const char *self[] = {"h"};
    add_handler(wf, "h", self, 1, 0, 1);
    expect_definition_error(wf, "Error handler 'h' cannot handle its own errors.");
    wf_workflow_free(wf);

    wf = base_wf();
    const char *twice[] = {"explode"};
    add_handler(wf, "h", twice, 1, 0, 1);
    expect_definition_error(wf,
                            "Step 'explode' has more than one error handler: 'recover' and 'h'.");
    wf_workflow_free(wf);

    wf = base_wf();
    add_handler(wf, "deaf", NULL, 0, 1, 0);
    expect_definition_error(wf, "Error handler 'deaf' must accept StepFailedEvent.");
    wf_workflow_free(wf);
}

Test(retry, next_without_a_policy_is_an_error)
{
    wf_retry_state s = st(1, WF_ESTEP, 0, 1);
    int64_t d = 77;
    cr_assert_eq(wf_retry_policy_next(NULL, &s, &d), WF_EINVAL);
    cr_assert_eq(d, 0);
    cr_assert(strstr(wf_last_error_message(), "wf_retry_policy_next"));
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 3, 0), 0);
    cr_assert_eq(wf_retry_policy_next(p, NULL, &d), WF_EINVAL);
    cr_assert_eq(wf_retry_policy_next(p, &s, &d), 1);
    wf_retry_policy_free(p);
}
