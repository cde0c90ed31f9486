/*
 * test_observe.c: the executor's observation hooks (include/wf/observe.h):
 * what each record says and in which order, on known workflows (a chain, a
 * failure, a retry, a cancel, a timeout, a wait for an event), several
 * observers and their kinds, unobserve, the drop counter, and names that
 * outlive the workflow.
 *
 * Records are read after wf_executor_observe_flush (which delivers every
 * record written before it); nothing here sleeps to synchronise.
 */
#include "harness.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

/* ------------------------------------------------------------ recorder */

typedef struct rec {
    wf_obs_kind kind;
    uint32_t thread;
    int64_t ts;
    uint64_t run_id;
    char workflow[32], step[32], type[32], message[128];
    uint64_t event_id;
    uint32_t attempt, status;
    int32_t error;
    int64_t dur, value;
    uint32_t span, parent_span;
    char name[32], str[32], traceparent[64];
} rec;

typedef struct recorder {
    pthread_mutex_t mu;
    rec *v;
    size_t n, cap;
    int flushes;
    int freed;
    /* optional gate: record() blocks while closed (to fill the rings) */
    pthread_cond_t cv;
    int gate_closed;
    int blocked; /* record() is waiting at the gate */
} recorder;

static void cp(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "");
}

static void rec_record(const wf_obs_record *r, void *user)
{
    recorder *o = user;
    pthread_mutex_lock(&o->mu);
    while (o->gate_closed) {
        o->blocked = 1;
        pthread_cond_broadcast(&o->cv);
        pthread_cond_wait(&o->cv, &o->mu);
    }
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 256;
        o->v = realloc(o->v, o->cap * sizeof *o->v);
        cr_assert_not_null(o->v);
    }
    rec *x = &o->v[o->n++];
    memset(x, 0, sizeof *x);
    x->kind = r->kind;
    x->thread = r->thread;
    x->ts = r->ts_ns;
    x->run_id = r->run_id;
    cp(x->workflow, sizeof x->workflow, r->workflow);
    cp(x->step, sizeof x->step, r->step);
    cp(x->type, sizeof x->type, r->event_type);
    cp(x->message, sizeof x->message, r->message);
    x->event_id = r->event_id;
    x->attempt = r->attempt;
    x->status = r->status;
    x->error = r->error;
    x->dur = r->dur_ns;
    x->value = r->value;
    x->span = r->span;
    x->parent_span = r->parent_span;
    cp(x->name, sizeof x->name, r->name);
    cp(x->str, sizeof x->str, r->str);
    cp(x->traceparent, sizeof x->traceparent, r->traceparent);
    pthread_cond_broadcast(&o->cv); /* for tests waiting for a record */
    pthread_mutex_unlock(&o->mu);
}

static void rec_flush(void *user)
{
    recorder *o = user;
    pthread_mutex_lock(&o->mu);
    o->flushes++;
    pthread_mutex_unlock(&o->mu);
}

static void rec_free(void *user)
{
    recorder *o = user;
    pthread_mutex_lock(&o->mu);
    o->freed++;
    pthread_mutex_unlock(&o->mu);
}

static recorder *recorder_new(void)
{
    recorder *o = calloc(1, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    return o;
}

static void recorder_del(recorder *o)
{
    free(o->v);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
}

/*
 * The kinds about runs. Workers park and steal whenever they like, so tests
 * that read the records after a flush leave those out: nothing is delivered
 * to them after the run's own records.
 */
#define RUN_KINDS                                                                                  \
    (WF_OBS_ALL & ~(WF_OBS_BIT(WF_OBS_PARK) | WF_OBS_BIT(WF_OBS_UNPARK) | WF_OBS_BIT(WF_OBS_STEAL)))

static uint32_t observe(wf_executor *ex, recorder *o, uint32_t kinds)
{
    wf_observer ob = {
        .record = rec_record, .flush = rec_flush, .user_free = rec_free, .user = o, .kinds = kinds};
    uint32_t id = 0;
    cr_assert_eq(wf_executor_observe(ex, &ob, &id), 0);
    cr_assert_neq(id, 0);
    return id;
}

/* Records of kind k (and of run run_id unless 0), in delivery order. */
static size_t find(recorder *o, wf_obs_kind k, uint64_t run_id, rec **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++)
        if (o->v[i].kind == k && (run_id == 0 || o->v[i].run_id == run_id)) {
            if (n < max)
                out[n] = &o->v[i];
            n++;
        }
    return n;
}

static size_t count(recorder *o, wf_obs_kind k, uint64_t run_id)
{
    return find(o, k, run_id, NULL, 0);
}

/* Position of the first record of kind k with step s in run run_id, or -1. */
static long pos(recorder *o, wf_obs_kind k, uint64_t run_id, const char *s)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->v[i].kind == k && o->v[i].run_id == run_id && (!s || !strcmp(o->v[i].step, s)))
            return (long)i;
    return -1;
}

/* ------------------------------------------------------------ workflows */

static const wf_event_type *T_START, *T_STOP, *T_A, *T_B, *T_REPLY, *T_IR;

static wf_workflow *new_wf(const char *name)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, name, NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    T_IR = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "A", NULL, &T_A), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "B", NULL, &T_B), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Reply", NULL, &T_REPLY), 0);
    return wf;
}

static void add(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *acc,
                const wf_event_type *emit, const wf_retry_policy *retry)
{
    const wf_event_type *accepts[] = {acc};
    const wf_event_type *emits[] = {emit};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = 1;
    p.retry = retry;
    cr_assert_eq(wf_workflow_add_step(wf, name, fn, &p, NULL), 0);
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

static int s_first(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return wf_event_new1(out, T_A, "v", wf_value_int(1));
}

static int s_second(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return wf_event_new1(out, T_B, "v", wf_value_int(2));
}

static int s_done(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(3));
}

static wf_workflow *chain_wf(void)
{
    wf_workflow *wf = new_wf("Chain");
    add(wf, "first", s_first, T_START, T_A, NULL);
    add(wf, "second", s_second, T_A, T_B, NULL);
    add(wf, "done", s_done, T_B, T_STOP, NULL);
    return wf;
}

static wf_handler *start(wf_executor *ex, wf_workflow *wf)
{
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    return h;
}

/* --------------------------------------------------------------- tests */

Test(observe, chain_records_each_step_in_order)
{
    wf_workflow *wf = chain_wf();
    wf_executor *ex = exec_n(1);
    recorder *o = recorder_new();
    uint32_t oid = observe(ex, o, RUN_KINDS);
    wf_handler *h = start(ex, wf);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    uint64_t id = wf_handler_run_id(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);

    /* one run start and end, DONE, with the workflow's name and a duration */
    rec *r[8];
    cr_assert_eq(find(o, WF_OBS_RUN_START, id, r, 8), 1);
    cr_assert_str_eq(r[0]->workflow, "Chain");
    cr_assert_eq(r[0]->thread, WF_OBS_OUTSIDE, "started from the test's thread");
    cr_assert_eq(find(o, WF_OBS_RUN_END, id, r, 8), 1);
    cr_assert_eq(r[0]->status, WF_RUN_DONE);
    cr_assert_eq(r[0]->error, 0);
    cr_assert(r[0]->dur >= 0);

    /* each step started and ended once, on worker 0, with its input type, attempt 1 */
    const char *steps[] = {"first", "second", "done"};
    const char *inputs[] = {"StartEvent", "A", "B"};
    for (int i = 0; i < 3; i++) {
        long a = pos(o, WF_OBS_STEP_START, id, steps[i]);
        long b = pos(o, WF_OBS_STEP_END, id, steps[i]);
        cr_assert(a >= 0 && b > a, "%s: start before end", steps[i]);
        cr_assert_str_eq(o->v[a].type, inputs[i]);
        cr_assert_eq(o->v[a].attempt, 1);
        cr_assert_eq(o->v[a].thread, 0);
        cr_assert_eq(o->v[b].error, 0);
        cr_assert(o->v[b].dur >= 0 && o->v[b].ts >= o->v[a].ts);
        cr_assert_eq(o->v[a].event_id, o->v[b].event_id);
        if (i > 0) /* the steps ran one after the other */
            cr_assert(a > pos(o, WF_OBS_STEP_END, id, steps[i - 1]));
    }
    cr_assert_eq(count(o, WF_OBS_STEP_START, id), 3);
    cr_assert_eq(count(o, WF_OBS_STEP_END, id), 3);

    /* emissions: the start event from outside, A by first, B by second, the stop by done */
    cr_assert_eq(find(o, WF_OBS_EVENT_EMIT, id, r, 8), 4);
    cr_assert_str_eq(r[0]->type, "StartEvent");
    cr_assert_str_eq(r[0]->step, "");
    cr_assert_str_eq(r[1]->type, "A");
    cr_assert_str_eq(r[1]->step, "first");
    cr_assert_str_eq(r[2]->type, "B");
    cr_assert_str_eq(r[2]->step, "second");
    cr_assert_str_eq(r[3]->type, "StopEvent");
    cr_assert_str_eq(r[3]->step, "done");

    /* each routing pairs with the start of the invocation it fed */
    cr_assert_eq(find(o, WF_OBS_EVENT_ROUTE, id, r, 8), 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(r[i]->step, steps[i]);
        long a = pos(o, WF_OBS_STEP_START, id, steps[i]);
        cr_assert_eq(r[i]->event_id, o->v[a].event_id, "route -> start of %s", steps[i]);
        cr_assert_eq(r[i]->value, 0, "nothing waits behind it");
    }

    /* unobserve delivers, flushes and frees the user once */
    wf_handler_free(h);
    cr_assert_eq(wf_executor_unobserve(ex, oid), 0);
    cr_assert_eq(o->freed, 1);
    cr_assert(o->flushes >= 1);
    cr_assert_eq(wf_executor_unobserve(ex, oid), WF_ENOTFOUND);
    wf_obs_stats st;
    wf_executor_observe_stats(ex, &st);
    cr_assert_eq(st.dropped, 0);
    cr_assert_eq(st.written, st.delivered);
    cr_assert_eq(st.delivered, o->n);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    recorder_del(o);
}

/* A step that runs until the test lets it go. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_entered, g_release;

static int s_block(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    pthread_mutex_lock(&g_mu);
    g_entered++;
    pthread_cond_broadcast(&g_cv);
    while (!g_release)
        pthread_cond_wait(&g_cv, &g_mu);
    g_release--;
    pthread_mutex_unlock(&g_mu);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(0));
}

static void release_one(void)
{
    pthread_mutex_lock(&g_mu);
    g_release++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

/*
 * An invocation's start and end usually go as one record, written when it
 * ends; a step that runs on still has its STEP_START delivered: by the
 * exporter once it has run for a while, and by a flush at once. Never twice.
 */
Test(observe, a_running_step_is_seen_before_it_ends, .timeout = 60)
{
    wf_workflow *wf = new_wf("Block");
    add(wf, "block", s_block, T_START, T_STOP, NULL);
    wf_executor *ex = exec_n(1);
    recorder *o = recorder_new();
    observe(ex, o, RUN_KINDS);
    g_entered = g_release = 0;

    /* 1: nobody flushes; the exporter delivers the start while the step waits */
    wf_handler *h = start(ex, wf);
    uint64_t id = wf_handler_run_id(h);
    pthread_mutex_lock(&o->mu);
    while (count(o, WF_OBS_STEP_START, id) == 0)
        pthread_cond_wait(&o->cv, &o->mu);
    cr_assert_eq(count(o, WF_OBS_STEP_END, id), 0, "it has not ended");
    pthread_mutex_unlock(&o->mu);
    release_one();
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    rec *r[4];
    cr_assert_eq(find(o, WF_OBS_STEP_START, id, r, 4), 1, "one start");
    uint64_t eid = r[0]->event_id;
    cr_assert_str_eq(r[0]->step, "block");
    cr_assert_str_eq(r[0]->type, "StartEvent");
    cr_assert_eq(r[0]->attempt, 1);
    cr_assert_eq(find(o, WF_OBS_STEP_END, id, r, 4), 1, "one end");
    cr_assert_eq(r[0]->event_id, eid);
    cr_assert(pos(o, WF_OBS_STEP_END, id, "block") > pos(o, WF_OBS_STEP_START, id, "block"));

    /* 2: a flush while the step runs delivers its start at once */
    h = start(ex, wf);
    id = wf_handler_run_id(h);
    pthread_mutex_lock(&g_mu);
    while (g_entered < 2)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    pthread_mutex_lock(&o->mu);
    cr_assert_eq(count(o, WF_OBS_STEP_START, id), 1, "the flush delivered the start");
    cr_assert_eq(count(o, WF_OBS_STEP_END, id), 0);
    pthread_mutex_unlock(&o->mu);
    release_one();
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    cr_assert_eq(count(o, WF_OBS_STEP_START, id), 1, "still one start");
    cr_assert_eq(count(o, WF_OBS_STEP_END, id), 1);
    cr_assert_eq(count(o, WF_OBS_EVENT_ROUTE, id), 1, "the start event's routing");
    wf_obs_stats st;
    wf_executor_observe_stats(ex, &st);
    cr_assert_eq(st.dropped, 0);
    cr_assert_eq(st.written, st.delivered);
    cr_assert_eq(st.delivered, o->n);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    recorder_del(o);
}

static int s_fail(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_ctx_set_error(ctx, "boom");
    return WF_EINVAL;
}

Test(observe, failure_is_reported_on_the_step_and_the_run)
{
    wf_workflow *wf = new_wf("Fails");
    add(wf, "first", s_first, T_START, T_A, NULL);
    add(wf, "bad", s_fail, T_A, T_STOP, NULL);
    wf_executor *ex = exec_n(2);
    recorder *o = recorder_new();
    observe(ex, o, RUN_KINDS);
    wf_handler *h = start(ex, wf);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ESTEP);
    uint64_t id = wf_handler_run_id(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    long e = pos(o, WF_OBS_STEP_END, id, "bad");
    cr_assert(e >= 0);
    cr_assert_eq(o->v[e].error, WF_EINVAL);
    cr_assert_str_eq(o->v[e].message, "boom");
    rec *r[2];
    cr_assert_eq(find(o, WF_OBS_RUN_END, id, r, 2), 1);
    cr_assert_eq(r[0]->status, WF_RUN_FAILED);
    cr_assert_eq(r[0]->error, WF_EINVAL);
    cr_assert_str_eq(r[0]->step, "bad");
    cr_assert_str_eq(r[0]->message, "boom");
    wf_handler_free(h);
    wf_executor_free(ex); /* removes the observer: user_free once */
    cr_assert_eq(o->freed, 1);
    wf_workflow_free(wf);
    recorder_del(o);
}

static atomic_int flaky_calls;

static int s_flaky(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    if (atomic_fetch_add(&flaky_calls, 1) == 0)
        return WF_EAGAIN;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

Test(observe, retry_then_second_attempt)
{
    atomic_store(&flaky_calls, 0);
    wf_workflow *wf = new_wf("Retries");
    wf_retry_policy *p;
    cr_assert_eq(wf_retry_policy_constant(&p, 3, 0), 0);
    add(wf, "flaky", s_flaky, T_START, T_STOP, p);
    wf_retry_policy_free(p);
    wf_executor *ex = exec_n(2);
    recorder *o = recorder_new();
    observe(ex, o,
            WF_OBS_BIT(WF_OBS_STEP_START) | WF_OBS_BIT(WF_OBS_STEP_END) | WF_OBS_BIT(WF_OBS_RETRY));
    wf_handler *h = start(ex, wf);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    uint64_t id = wf_handler_run_id(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    rec *r[4];
    size_t nretry = find(o, WF_OBS_RETRY, id, r, 4);
    cr_assert_eq(nretry, 1, "retry records: %zu of %zu (calls %d)", nretry, o->n,
                 atomic_load(&flaky_calls));
    cr_assert_eq(r[0]->attempt, 1);
    cr_assert_eq(r[0]->error, WF_EAGAIN);
    cr_assert_str_eq(r[0]->step, "flaky");
    cr_assert_eq(r[0]->value, 0, "no delay");
    cr_assert_eq(find(o, WF_OBS_STEP_START, id, r, 4), 2);
    cr_assert_eq(r[0]->attempt, 1);
    cr_assert_eq(r[1]->attempt, 2);
    cr_assert_eq(find(o, WF_OBS_STEP_END, id, r, 4), 2);
    cr_assert_eq(r[0]->error, WF_EAGAIN);
    cr_assert_eq(r[1]->error, 0);
    /* kinds not asked for are not delivered */
    cr_assert_eq(count(o, WF_OBS_RUN_START, 0), 0);
    cr_assert_eq(count(o, WF_OBS_EVENT_EMIT, 0), 0);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    recorder_del(o);
}

static atomic_int waiting;

static int s_wait(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *got = NULL;
    wf_event *ir;
    cr_assert_eq(wf_event_new(&ir, T_IR, 0), 0);
    int rc = wf_ctx_wait_for_event(ctx, T_REPLY, wf_value_nil(), ir, "w", WF_NO_TIMEOUT, &got);
    if (rc == WF_SUSPEND) {
        atomic_store(&waiting, 1);
        return WF_SUSPEND;
    }
    cr_assert_eq(rc, 0);
    wf_event_release(got);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

static int s_forever(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *got = NULL;
    int rc =
        wf_ctx_wait_for_event(ctx, T_REPLY, wf_value_nil(), NULL, "never", WF_NO_TIMEOUT, &got);
    if (rc == WF_SUSPEND)
        atomic_store(&waiting, 1);
    wf_event_release(got);
    return rc == WF_SUSPEND ? WF_SUSPEND : WF_EINVAL;
}

Test(observe, wait_suspends_and_resumes_stream_and_cancel)
{
    atomic_store(&waiting, 0);
    wf_workflow *wf = new_wf("Waits");
    add(wf, "asks", s_wait, T_START, T_STOP, NULL);
    wf_workflow_set_validation(wf, 0);
    wf_executor *ex = exec_n(2);
    recorder *o = recorder_new();
    observe(ex, o, RUN_KINDS);
    wf_handler *h = start(ex, wf);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0); /* the InputRequiredEvent */
    wf_event_release(e);
    while (!atomic_load(&waiting))
        ;
    wf_event *reply;
    cr_assert_eq(wf_event_new(&reply, T_REPLY, 0), 0);
    cr_assert_eq(wf_handler_send_event(h, reply, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    uint64_t id = wf_handler_run_id(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    rec *r[4];
    cr_assert_eq(find(o, WF_OBS_WAIT_SUSPEND, id, r, 4), 1);
    cr_assert_str_eq(r[0]->type, "Reply");
    cr_assert_str_eq(r[0]->step, "asks");
    uint64_t wid = r[0]->event_id;
    cr_assert_eq(find(o, WF_OBS_WAIT_RESUME, id, r, 4), 1);
    cr_assert_eq(r[0]->event_id, wid, "resume pairs with its suspend");
    cr_assert_eq(r[0]->error, 0);
    cr_assert(r[0]->dur >= 0);
    cr_assert(pos(o, WF_OBS_WAIT_SUSPEND, id, NULL) < pos(o, WF_OBS_WAIT_RESUME, id, NULL));
    /* the reply came from outside (the handler) */
    cr_assert_eq(find(o, WF_OBS_EVENT_EMIT, id, r, 4), 3);
    cr_assert_str_eq(r[1]->type, "Reply");
    cr_assert_eq(r[1]->thread, WF_OBS_OUTSIDE);
    /* the step's two invocations: suspended, then done */
    cr_assert_eq(find(o, WF_OBS_STEP_END, id, r, 4), 2);
    cr_assert_eq(r[0]->error, WF_SUSPEND);
    cr_assert_eq(r[1]->error, 0);
    wf_handler_free(h);

    /* a cancelled run */
    atomic_store(&waiting, 0);
    wf_workflow *wf2 = new_wf("Cancelled");
    add(wf2, "forever", s_forever, T_START, T_STOP, NULL);
    wf_workflow_set_validation(wf2, 0);
    h = start(ex, wf2);
    while (!atomic_load(&waiting))
        ;
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    id = wf_handler_run_id(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    cr_assert_eq(find(o, WF_OBS_RUN_END, id, r, 4), 1);
    cr_assert_eq(r[0]->status, WF_RUN_CANCELLED);
    cr_assert_eq(r[0]->error, WF_ECANCELLED);
    cr_assert_str_eq(r[0]->workflow, "Cancelled");
    wf_handler_free(h);

    /* a run that times out */
    atomic_store(&waiting, 0);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = 1;
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    cr_assert_eq(wf_run_start_ex(ex, wf2, NULL, s, &rp, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ERUNTIMEOUT);
    id = wf_handler_run_id(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    cr_assert_eq(find(o, WF_OBS_RUN_END, id, r, 4), 1);
    cr_assert_eq(r[0]->status, WF_RUN_TIMED_OUT);
    cr_assert_eq(r[0]->error, WF_ERUNTIMEOUT);
    cr_assert(strstr(r[0]->message, "timed out") != NULL, "%s", r[0]->message);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    wf_workflow_free(wf2);
    recorder_del(o);
}

/* A fan-out: one step emits N events to a worker step; two observers see the same. */
#define FAN 2000

static int s_fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int i = 0; i < FAN; i++) {
        wf_event *e;
        cr_assert_eq(wf_event_new1(&e, T_A, "v", wf_value_int(i)), 0);
        cr_assert_eq(wf_ctx_send_event(ctx, e, NULL), 0);
    }
    return 0;
}

static atomic_int fan_seen;

static int s_count(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    if (atomic_fetch_add(&fan_seen, 1) + 1 == FAN)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(FAN));
    return 0;
}

static wf_workflow *fan_wf(void)
{
    atomic_store(&fan_seen, 0);
    wf_workflow *wf = new_wf("Fan");
    add(wf, "fan", s_fan, T_START, T_A, NULL);
    add(wf, "count", s_count, T_A, T_STOP, NULL);
    wf_workflow_set_validation(wf, 0);
    return wf;
}

Test(observe, two_observers_see_every_record)
{
    wf_workflow *wf = fan_wf();
    wf_executor *ex = exec_n(2);
    recorder *a = recorder_new(), *b = recorder_new();
    observe(ex, a, RUN_KINDS);
    observe(ex, b, WF_OBS_BIT(WF_OBS_STEP_END));
    wf_handler *h = start(ex, wf);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    uint64_t id = wf_handler_run_id(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    wf_obs_stats st;
    wf_executor_observe_stats(ex, &st);
    if (st.dropped == 0) { /* a slow machine may drop: then the counts are checked below */
        cr_assert_eq(count(a, WF_OBS_STEP_END, id), FAN + 1);
        cr_assert_eq(count(b, WF_OBS_STEP_END, id), FAN + 1);
        cr_assert_eq(count(a, WF_OBS_EVENT_ROUTE, id), FAN + 1);
    }
    cr_assert_eq(st.written, st.delivered, "everything written was delivered");
    cr_assert_eq(count(b, WF_OBS_STEP_START, 0), 0);
    /* the queue depth grows behind the 4 busy workers of count */
    rec *r[FAN + 2];
    size_t n = find(a, WF_OBS_EVENT_ROUTE, id, r, FAN + 2);
    int64_t deepest = 0;
    for (size_t i = 0; i < n && i < FAN + 2; i++)
        deepest = r[i]->value > deepest ? r[i]->value : deepest;
    cr_assert(deepest > 0, "some events waited");
    wf_handler_free(h);
    wf_executor_free(ex);
    cr_assert_eq(a->freed, 1);
    cr_assert_eq(b->freed, 1);
    wf_workflow_free(wf);
    recorder_del(a);
    recorder_del(b);
}

Test(observe, full_rings_drop_and_count_and_names_outlive_the_workflow)
{
    wf_workflow *wf = fan_wf();
    wf_executor *ex = exec_n(1); /* one worker: every record of the run in one ring */
    recorder *o = recorder_new();
    observe(ex, o, RUN_KINDS);
    /* close the gate: the exporter blocks on the first record it delivers */
    pthread_mutex_lock(&o->mu);
    o->gate_closed = 1;
    pthread_mutex_unlock(&o->mu);
    wf_handler *h = start(ex, wf);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    uint64_t id = wf_handler_run_id(h);
    wf_handler_free(h);
    /* the workflow goes while its records wait: the executor keeps the names */
    wf_workflow_free(wf);
    pthread_mutex_lock(&o->mu);
    while (!o->blocked)
        pthread_cond_wait(&o->cv, &o->mu);
    o->gate_closed = 0;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    wf_obs_stats st;
    wf_executor_observe_stats(ex, &st);
    /* >= 4 records per event (emit, route, start, end) through a 4096-record ring */
    cr_assert(st.dropped > 0, "the rings overflowed");
    cr_assert_eq(st.written, st.delivered);
    cr_assert_eq(st.delivered, o->n);
    rec *r[1];
    cr_assert_eq(find(o, WF_OBS_RUN_START, id, r, 1), 1);
    cr_assert_str_eq(r[0]->workflow, "Fan");
    /*
     * Every record is either delivered or counted as dropped (a dropped
     * invocation counts its start, end, emit and routing, though none of
     * them was made): the run start and end; the start event's emit and
     * routing; fan's start and end, its FAN sends and their routings; FAN
     * invocations of count (start and end), the last emitting the stop.
     */
    cr_assert_eq(st.written + st.dropped, 2 + 2 + 2 + 2 * FAN + 2 * FAN + 1,
                 "%llu written + %llu dropped", (unsigned long long)st.written,
                 (unsigned long long)st.dropped);
    /*
     * Drained, the ring takes records again at once: a thread that found it
     * full drops for a while without looking (its drop window), but no
     * longer once the exporter has made room.
     */
    wf_workflow *cw = chain_wf();
    h = start(ex, cw);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    uint64_t id2 = wf_handler_run_id(h);
    wf_handler_free(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    wf_obs_stats st2;
    wf_executor_observe_stats(ex, &st2);
    cr_assert_eq(st2.dropped, st.dropped, "%llu more dropped",
                 (unsigned long long)(st2.dropped - st.dropped));
    cr_assert_eq(count(o, WF_OBS_STEP_START, id2), 3);
    cr_assert_eq(count(o, WF_OBS_STEP_END, id2), 3);
    cr_assert_eq(count(o, WF_OBS_RUN_END, id2), 1);
    wf_executor_free(ex);
    wf_workflow_free(cw);
    recorder_del(o);
}

/* A ring as large as the burst loses nothing, however long the observer takes. */
Test(observe, a_larger_buffer_rides_out_a_burst)
{
    wf_workflow *wf = fan_wf();
    wf_executor_params p;
    wf_executor_params_init(&p);
    cr_assert_eq(p.observe_buffer, 4096, "the default");
    p.threads = 1;
    p.observe_buffer = 10000; /* 16384 records a thread: the run makes about 8000 */
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &p), 0);
    recorder *o = recorder_new();
    observe(ex, o, RUN_KINDS);
    pthread_mutex_lock(&o->mu);
    o->gate_closed = 1; /* the exporter stops at the first record it delivers */
    pthread_mutex_unlock(&o->mu);
    wf_handler *h = start(ex, wf);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    pthread_mutex_lock(&o->mu);
    o->gate_closed = 0;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    wf_obs_stats st;
    wf_executor_observe_stats(ex, &st);
    cr_assert_eq(st.dropped, 0);
    cr_assert_eq(st.written, 2 + 2 + 2 + 2 * FAN + 2 * FAN + 1);
    cr_assert_eq(st.delivered, st.written);
    cr_assert_eq(o->n, st.delivered);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    recorder_del(o);
}

Test(observe, no_observer_no_records_and_bad_arguments)
{
    wf_executor *ex = exec_n(1);
    wf_observer none = {0};
    cr_assert_eq(wf_executor_observe(ex, &none, NULL), WF_EINVAL);
    cr_assert_eq(wf_executor_observe(NULL, &none, NULL), WF_EINVAL);
    cr_assert_eq(wf_executor_unobserve(ex, 5), WF_ENOTFOUND);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    wf_obs_stats st;
    wf_executor_observe_stats(ex, &st);
    cr_assert_eq(st.written + st.delivered + st.dropped, 0);
    /* an observer added and removed: nothing after it is recorded */
    recorder *o = recorder_new();
    uint32_t id = observe(ex, o, RUN_KINDS);
    cr_assert_eq(wf_executor_unobserve(ex, id), 0);
    size_t n0 = o->n; /* the worker may have parked meanwhile */
    wf_obs_stats st0;
    wf_executor_observe_stats(ex, &st0);
    wf_workflow *wf = chain_wf();
    wf_handler *h = start(ex, wf);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    cr_assert_eq(o->n, n0);
    cr_assert_eq(count(o, WF_OBS_RUN_START, 0), 0);
    wf_executor_observe_stats(ex, &st);
    cr_assert_eq(st.written, st0.written);
    /* 16 observers at most */
    recorder *many[17];
    for (int i = 0; i < 16; i++) {
        many[i] = recorder_new();
        observe(ex, many[i], WF_OBS_BIT(WF_OBS_PARK));
    }
    many[16] = recorder_new();
    wf_observer ob = {.record = rec_record, .user = many[16]};
    cr_assert_eq(wf_executor_observe(ex, &ob, NULL), WF_EOVERFLOW);
    wf_executor_free(ex);
    for (int i = 0; i < 16; i++) {
        cr_assert_eq(many[i]->freed, 1);
        recorder_del(many[i]);
    }
    recorder_del(many[16]);
    wf_workflow_free(wf);
    recorder_del(o);
}

/* ---- a step's own spans, and a run joining a caller's trace ---- */

static int s_spans(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    uint32_t fetch, parse, bad;
    cr_assert_eq(wf_ctx_span_begin(ctx, "fetch", &fetch), 0);
    cr_assert_eq(fetch, 1);
    cr_assert_eq(wf_ctx_span_attr_str(ctx, fetch, "url", "http://x/y"), 0);
    cr_assert_eq(wf_ctx_span_attr_int(ctx, fetch, "bytes", 1234), 0);
    cr_assert_eq(wf_ctx_span_begin(ctx, "parse", &parse), 0);
    cr_assert_eq(parse, 2);
    cr_assert_eq(wf_ctx_span_end(ctx, parse, WF_EFORMAT, "bad json"), 0);
    cr_assert_eq(wf_ctx_span_end(ctx, fetch, 0, NULL), 0);
    cr_assert_eq(wf_ctx_span_attr_int(ctx, 9, "k", 1), WF_EINVAL, "not opened here");
    cr_assert_eq(wf_ctx_span_begin(ctx, NULL, &bad), WF_EINVAL);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

Test(observe, a_steps_own_spans_and_the_callers_trace)
{
    wf_workflow *wf = new_wf("Spans");
    add(wf, "work", s_spans, T_START, T_STOP, NULL);
    wf_executor *ex = exec_n(1);
    recorder *o = recorder_new();
    observe(ex, o, RUN_KINDS);
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.traceparent = tp;
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    uint64_t id = wf_handler_run_id(h);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    rec *r[8];
    cr_assert_eq(find(o, WF_OBS_RUN_START, id, r, 8), 1);
    cr_assert_str_eq(r[0]->traceparent, tp);
    rec *st[2];
    cr_assert_eq(find(o, WF_OBS_STEP_START, id, st, 2), 1);
    cr_assert_eq(find(o, WF_OBS_SPAN_BEGIN, id, r, 8), 2);
    cr_assert_str_eq(r[0]->name, "fetch");
    cr_assert_eq(r[0]->span, 1);
    cr_assert_eq(r[0]->parent_span, 0, "under the step's own span");
    cr_assert_eq(r[0]->event_id, st[0]->event_id, "tied to its step invocation");
    cr_assert_str_eq(r[0]->step, "work");
    cr_assert_eq(r[0]->attempt, 1);
    cr_assert_str_eq(r[1]->name, "parse");
    cr_assert_eq(r[1]->parent_span, 1);
    cr_assert_eq(find(o, WF_OBS_SPAN_ATTR, id, r, 8), 2);
    cr_assert_str_eq(r[0]->name, "url");
    cr_assert_str_eq(r[0]->str, "http://x/y");
    cr_assert_str_eq(r[1]->name, "bytes");
    cr_assert_eq(r[1]->value, 1234);
    cr_assert_eq(r[1]->str[0], 0);
    cr_assert_eq(find(o, WF_OBS_SPAN_END, id, r, 8), 2);
    cr_assert_eq(r[0]->span, 2);
    cr_assert_eq(r[0]->error, WF_EFORMAT);
    cr_assert_str_eq(r[0]->message, "bad json");
    cr_assert_eq(r[1]->span, 1);
    cr_assert_eq(r[1]->error, 0);
    /* the spans come between the step's start and its end */
    cr_assert(pos(o, WF_OBS_SPAN_BEGIN, id, NULL) > pos(o, WF_OBS_STEP_START, id, NULL));
    cr_assert(pos(o, WF_OBS_SPAN_END, id, NULL) < pos(o, WF_OBS_STEP_END, id, NULL));
    wf_handler_free(h);
    /* a malformed trace context is refused at start, with a message */
    rp.traceparent = "00-nothex-01";
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &h, NULL), WF_EINVAL);
    cr_assert(strstr(wf_last_error_message(), "traceparent") != NULL);
    wf_executor_free(ex);
    recorder_del(o);
    wf_workflow_free(wf);
}

static int s_span_outside(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

Test(observe, spans_outside_a_step_are_refused)
{
    wf_workflow *wf = new_wf("NoSpans");
    add(wf, "work", s_span_outside, T_START, T_STOP, NULL);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    uint32_t sp;
    cr_assert_eq(wf_ctx_span_begin(ctx, "x", &sp), WF_ESTATE);
    cr_assert_eq(wf_ctx_span_end(ctx, 1, 0, NULL), WF_ESTATE);
    cr_assert_eq(wf_ctx_span_begin(NULL, "x", &sp), WF_EINVAL);
    wf_ctx_free(ctx);
    wf_workflow_free(wf);
}

Test(observe, otlp_puts_the_steps_spans_in_the_callers_trace)
{
    wf_workflow *wf = new_wf("SpansOtlp");
    add(wf, "work", s_spans, T_START, T_STOP, NULL);
    wf_executor *ex = exec_n(1);
    char *buf = NULL;
    size_t len = 0;
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = open_memstream(&buf, &len);
    cr_assert_not_null(p.out);
    wf_observer ob;
    cr_assert_eq(wf_exporter_otlp_json(&ob, &p), 0);
    uint32_t oid;
    cr_assert_eq(wf_executor_observe(ex, &ob, &oid), 0);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    cr_assert_eq(wf_executor_unobserve(ex, oid), 0); /* completes and closes the file */
    cr_assert_not_null(buf);
    cr_assert(strstr(buf, "\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\"") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\"parentSpanId\":\"00f067aa0ba902b7\"") != NULL,
              "the run span under the caller's");
    cr_assert(strstr(buf, "\"name\":\"fetch\"") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\"name\":\"parse\"") != NULL);
    cr_assert(strstr(buf, "\"http://x/y\"") != NULL, "the string attribute");
    cr_assert(strstr(buf, "bad json") != NULL, "the failed span's status message");
    free(buf);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}
