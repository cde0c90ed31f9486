/*
 * test_take.c: Take(n) on list fan-out joins (wf_step_params.take): fires
 * once on the n-th result with the first n in arrival order, drops later
 * results, fires with fewer when the fan-out resolves first; a stress run
 * (also under TSan) checks it fires exactly once with distinct results.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

static const wf_event_type *T_START, *T_STOP, *T_ITEM, *T_RES, *T_JOINED, *T_DONE;

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

static int list_n;
static atomic_int joins;
static char joined[256];

/* the tokens of the pended branches, filled by the async "work" step */
static pthread_mutex_t tok_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tok_cv = PTHREAD_COND_INITIALIZER;
static wf_completion *tokens[16];
static int ntokens;
static int received[16]; /* branches in the order their tokens came */

static int split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in;
    (void)out;
    (void)u;
    wf_event *evs[64];
    for (int i = 0; i < list_n; i++)
        evs[i] = ev_i(T_ITEM, i);
    return wf_ctx_emit_list(ctx, evs, (size_t)list_n, T_RES);
}

static int work_async(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)out;
    (void)u;
    wf_completion *c;
    cr_assert_eq(wf_ctx_pend(ctx, &c), 0);
    pthread_mutex_lock(&tok_mu);
    tokens[geti(in)] = c;
    received[ntokens++] = (int)geti(in);
    pthread_cond_broadcast(&tok_cv);
    pthread_mutex_unlock(&tok_mu);
    return WF_PENDING;
}

/* The result type comes through the step's user pointer, not the global: the
 * run ends on the take-th result while other branches may still be running,
 * and the next round rewrites T_RES for its own workflow. */
static int work_now(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)ctx;
    *out = ev_i((const wf_event_type *)u, geti(in));
    return 0;
}

static int join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in;
    (void)u;
    atomic_fetch_add(&joins, 1);
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    char s[256] = "[";
    for (size_t i = 0; i < n; i++) {
        char num[24];
        snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)geti(evs[i]));
        strcat(s, num);
    }
    strcat(s, "]");
    snprintf(joined, sizeof joined, "%s", s);
    *out = ev_i(T_JOINED, (int64_t)n);
    return 0;
}

/* Joined ends the run in the stress test; with the async work, "Done" from the test does */
static int finish(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    if (u == (void *)1 &&
        wf_event_type_of(in) == T_JOINED) /* the test sees the join, then sends Done */
        return wf_ctx_write_event_to_stream(ctx, wf_event_retain(in));
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(atomic_load(&joins)));
}

static wf_workflow *take_wf(uint32_t take, wf_step_fn work, int wait_done)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "take", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &T_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Res", NULL, &T_RES), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Joined", NULL, &T_JOINED), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Done", NULL, &T_DONE), 0);
    cr_assert_eq(wf_workflow_set_validation(wf, 0), 0); /* "Done" comes from the test */
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = 1;
    p.n_emits = 1;
    p.accepts = &T_START;
    p.emits = &T_ITEM;
    cr_assert_eq(wf_workflow_add_step(wf, "split", split, &p, NULL), 0);
    p.accepts = &T_ITEM;
    p.emits = &T_RES;
    p.num_workers = 16;
    cr_assert_eq(wf_workflow_add_step(wf, "work", work, &p, (void *)T_RES), 0);
    p.accepts = &T_RES;
    p.emits = &T_JOINED;
    p.join_list = 1;
    p.take = take;
    cr_assert_eq(wf_workflow_add_step(wf, "join", join, &p, NULL), 0);
    wf_step_params_init(&p);
    const wf_event_type *fin[] = {T_JOINED, T_DONE};
    p.accepts = fin;
    p.n_accepts = 2;
    p.emits = &T_STOP;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "finish", finish, &p, (void *)(intptr_t)wait_done), 0);
    return wf;
}

static wf_completion *held[16];

static void await_token(int i)
{
    pthread_mutex_lock(&tok_mu);
    while (tokens[i] == NULL)
        pthread_cond_wait(&tok_cv, &tok_mu);
    held[i] = tokens[i];
    tokens[i] = NULL;
    pthread_mutex_unlock(&tok_mu);
}

/* Reads the stream until the join's Joined event (the join has run). */
static void await_joined(wf_handler *h)
{
    for (;;) {
        wf_event *e = NULL;
        cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
        int joined_now = wf_event_type_of(e) == T_JOINED;
        wf_event_release(e);
        if (joined_now)
            return;
    }
}

static void reset(int n)
{
    list_n = n;
    atomic_store(&joins, 0);
    joined[0] = 0;
    memset(tokens, 0, sizeof tokens);
    memset(held, 0, sizeof held);
    ntokens = 0;
}

/*
 * Runs the async workflow on one worker with list_n branches, completing
 * them in a chosen order: order[k] indexes the tokens in the order they
 * came. One worker runs the work steps one after another, so every step but
 * the one whose token came last has returned (its token armed) when all
 * tokens are in: completing those routes the result on this thread before
 * wf_completion_complete returns. The last one is always completed last.
 * Returns the number of joins.
 */
static int64_t run_in_order(uint32_t take, const int *order, char *names, size_t cap)
{
    wf_workflow *wf = take_wf(take, work_async, 1);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 1;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_handler *h;
    wf_event *start;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    cr_assert_eq(wf_run_start(ex, wf, NULL, start, &h), 0);
    for (int i = 0; i < list_n; i++)
        await_token(i); /* every branch's token */
    pthread_mutex_lock(&tok_mu);
    int got[16];
    memcpy(got, received, sizeof got);
    pthread_mutex_unlock(&tok_mu);
    names[0] = 0;
    for (int k = 0; k < list_n; k++) {
        int b = got[k == list_n - 1 ? list_n - 1 : order[k]];
        size_t l = strlen(names);
        snprintf(names + l, cap - l, "%s%d", k ? "," : "", b);
        cr_assert_eq(wf_completion_complete(held[b], ev_i(T_RES, b)), 0);
    }
    await_joined(h);
    cr_assert_eq(wf_handler_send_event(h, ev_i(T_DONE, 0), NULL), 0);
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t v = -1;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
    wf_event_release(res);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return v;
}

/* The first `take` of the completion order, as the join should list them. */
static void expect_prefix(const char *done, int take)
{
    char want[64] = "[";
    const char *p = done;
    for (int k = 0; k < take && *p; k++) {
        const char *comma = strchr(p, ',');
        size_t l = comma ? (size_t)(comma - p) : strlen(p);
        strncat(want, p, l);
        p += l + (comma != NULL);
        if (k + 1 < take && *p)
            strcat(want, ",");
    }
    strcat(want, "]");
    cr_assert_str_eq(joined, want, "completed %s", done);
}

Test(take, fires_on_the_nth_arrival_with_the_first_n_in_arrival_order, .timeout = 60)
{
    reset(5);
    const int order[] = {2, 0, 3, 1};
    char done[64];
    cr_assert_eq(run_in_order(2, order, done, sizeof done), 1, "the join fired exactly once");
    expect_prefix(done, 2); /* arrival order; the other three were dropped */
}

Test(take, fires_with_fewer_when_the_fan_out_resolves_first, .timeout = 60)
{
    reset(4);
    const int order[] = {1, 2, 0};
    char done[64];
    cr_assert_eq(run_in_order(5, order, done, sizeof done), 1);
    expect_prefix(done, 4);
}

Test(take, take_one_is_the_fastest, .timeout = 60)
{
    reset(4);
    const int order[] = {2, 1, 0};
    char done[64];
    cr_assert_eq(run_in_order(1, order, done, sizeof done), 1);
    expect_prefix(done, 1);
}

static int nop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)ctx;
    (void)in;
    (void)out;
    (void)u;
    return 0;
}

Test(take, take_needs_a_join_list_step)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "bad", NULL), 0);
    const wf_event_type *s = wf_workflow_builtin(wf, WF_START_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &s;
    p.n_accepts = 1;
    p.take = 2;
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), WF_EINVAL);
    cr_assert(strstr(wf_last_error_message(), "take applies to join_list steps") != NULL);
    wf_workflow_free(wf);
}

Test(take, stress_fires_once_with_distinct_results, .timeout = 300)
{
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 4;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    for (int round = 0; round < 60; round++) {
        uint32_t take = (uint32_t)(round % 9) + 1;
        reset(8 + round % 40);
        wf_workflow *wf = take_wf(take, work_now, 0);
        wf_event *start, *res = NULL;
        cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
        cr_assert_eq(wf_run(ex, wf, NULL, start, -1, &res), 0);
        int64_t v = -1;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
        wf_event_release(res);
        cr_assert_eq(v, 1, "round %d: fired once", round);
        /* distinct branch numbers, take of them */
        int seen[64] = {0}, count = 0;
        for (const char *p = joined + 1; *p && *p != ']';) {
            int b = (int)strtol(p, (char **)&p, 10);
            cr_assert(b >= 0 && b < list_n);
            cr_assert_eq(seen[b], 0, "round %d: branch %d twice", round, b);
            seen[b] = 1;
            count++;
            if (*p == ',')
                p++;
        }
        cr_assert_eq(count, (int)take, "round %d: %s", round, joined);
        wf_workflow_free(wf);
    }
    wf_executor_free(ex);
}

/*
 * The async take(2) workflow of three branches on one worker, with a
 * context (for snapshots), started; returns when every branch's token is in.
 */
static wf_handler *start_three(wf_workflow **wf, wf_executor **ex, wf_ctx **ctx)
{
    reset(3);
    *wf = take_wf(2, work_async, 1);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 1;
    cr_assert_eq(wf_executor_new(ex, &ep), 0);
    cr_assert_eq(wf_ctx_new(ctx, *wf), 0);
    wf_handler *h;
    wf_event *start;
    cr_assert_eq(wf_event_new(&start, T_START, 0), 0);
    cr_assert_eq(wf_run_start(*ex, *wf, *ctx, start, &h), 0);
    for (int i = 0; i < 3; i++)
        await_token(i);
    return h;
}

/* Done to the resumed run (its join has run): one join, of branches a then b; frees h. */
static void finish_one_join(wf_handler *h, int a, int b, const char *why)
{
    cr_assert_eq(wf_handler_send_event(h, ev_i(T_DONE, 0), NULL), 0);
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t v = -1;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &v), 0);
    cr_assert_eq(v, 1, "%s", why);
    char want[32];
    snprintf(want, sizeof want, "[%d,%d]", a, b);
    cr_assert_str_eq(joined, want);
    wf_event_release(res);
    wf_handler_free(h);
}

Test(take, a_snapshot_keeps_what_arrived_and_the_join_fires_once, .timeout = 120)
{
    wf_workflow *wf;
    wf_executor *ex;
    wf_ctx *ctx;
    wf_handler *h = start_three(&wf, &ex, &ctx);
    int first = received[0]; /* armed: the second and third came after it returned */
    cr_assert_eq(wf_completion_complete(held[first], ev_i(T_RES, first)), 0);
    held[first] = NULL;
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    for (int i = 0; i < 3; i++)
        if (held[i])
            wf_completion_complete(held[i], NULL); /* detached: only freed */
    cr_assert_eq(atomic_load(&joins), 0, "one result of two: no join yet");
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    wf_ctx *loaded;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &loaded, NULL), 0);
    wf_free(buf);

    /* the two unfinished branches run again; the first result is kept */
    pthread_mutex_lock(&tok_mu);
    memset(tokens, 0, sizeof tokens);
    memset(held, 0, sizeof held);
    ntokens = 0;
    pthread_mutex_unlock(&tok_mu);
    cr_assert_eq(wf_run_resume(ex, wf, loaded, NULL, &h, NULL), 0);
    int rest[2], k = 0;
    for (int i = 0; i < 3; i++)
        if (i != first)
            rest[k++] = i;
    await_token(rest[0]);
    await_token(rest[1]);
    int second = received[0], third = received[1];
    cr_assert_eq(wf_completion_complete(held[second], ev_i(T_RES, second)), 0);
    /* the second result fired the join (its invocation runs on the worker) */
    cr_assert_eq(wf_completion_complete(held[third], ev_i(T_RES, third)), 0);
    await_joined(h);
    finish_one_join(h, first, second, "fired once, across the snapshot");
    wf_ctx_free(loaded);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/*
 * The join fired on its take-th result and ran while a branch is still out:
 * the group lives on, its origin now the join task's (saved as nil). A
 * snapshot of that state resumes with the join fired (the late result is
 * dropped, no second join); the same document in a workflow whose join
 * takes every result (no Take(n)) is refused: an unfired join without its
 * origin could not run.
 */
Test(take, a_snapshot_after_the_join_fired_resumes_it_fired, .timeout = 120)
{
    wf_workflow *wf;
    wf_executor *ex;
    wf_ctx *ctx;
    wf_handler *h = start_three(&wf, &ex, &ctx);
    int first = received[0], second = received[1], late = received[2];
    cr_assert_eq(wf_completion_complete(held[first], ev_i(T_RES, first)), 0);
    cr_assert_eq(wf_completion_complete(held[second], ev_i(T_RES, second)), 0);
    held[first] = held[second] = NULL;
    await_joined(h); /* fired and ran; the late branch is still pending */
    cr_assert_eq(atomic_load(&joins), 1);
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    wf_completion_complete(held[late], NULL); /* detached: only freed */
    held[late] = NULL;
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);

    /* a join without Take(n) cannot have fired with a branch unresolved */
    wf_workflow *all = take_wf(0, work_async, 1);
    wf_ctx *bad = NULL;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(all, buf, len, 0, &bad, &msg), WF_EFORMAT);
    cr_assert_null(bad);
    cr_assert(msg != NULL && strstr(msg, "origin is nil only once its join has fired") != NULL,
              "%s", msg ? msg : "(no message)");
    wf_free(msg);
    wf_workflow_free(all);

    /* take_wf rewrote the types: the workflow of the document again */
    wf_workflow_free(wf);
    wf = take_wf(2, work_async, 1);
    wf_ctx *loaded;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &loaded, NULL), 0);
    wf_free(buf);
    pthread_mutex_lock(&tok_mu);
    memset(tokens, 0, sizeof tokens);
    ntokens = 0;
    pthread_mutex_unlock(&tok_mu);
    cr_assert_eq(wf_run_resume(ex, wf, loaded, NULL, &h, NULL), 0);
    await_token(late); /* the late branch runs again */
    cr_assert_eq(wf_completion_complete(held[late], ev_i(T_RES, late)), 0);
    finish_one_join(h, first, second, "the join fired once, before the snapshot");
    wf_ctx_free(loaded);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}
