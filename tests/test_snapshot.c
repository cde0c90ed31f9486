/*
 * test_snapshot.c: live snapshots and resume: the reference's scenarios
 * (human in the loop across a cancel, parallel resume, a waiter with
 * requirements), contexts in each state, another process finishing a run.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

static const wf_event_type *T_START, *T_STOP, *T_IR, *T_HR, *T_WORK, *T_DONE, *T_ANS;

static wf_workflow *new_wf(const char *name)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, name, NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    T_IR = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    T_HR = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Work", NULL, &T_WORK), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Done", NULL, &T_DONE), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Answer", NULL, &T_ANS), 0);
    return wf;
}

static void add(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *acc1,
                const wf_event_type *em1, const wf_event_type *em2, uint32_t workers)
{
    const wf_event_type *acc[1] = {acc1};
    const wf_event_type *em[2] = {em1, em2};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = em2 ? 2 : 1;
    if (workers)
        p.num_workers = workers;
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

static wf_event *ev_s(const wf_event_type *t, const char *k, const char *v)
{
    wf_value s;
    cr_assert_eq(wf_value_string(&s, v), 0);
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, t, k, s), 0);
    return e;
}

static const char *result_str(const wf_event *res)
{
    const char *r = NULL;
    wf_value_get_string(wf_event_result(res), &r, NULL);
    return r;
}

static char *json_of(const void *buf, size_t len)
{
    char *json = NULL, *msg = NULL;
    cr_assert_eq(wf_snapshot_to_json(buf, len, &json, &msg), 0, "%s", msg ? msg : "");
    return json;
}

/* ---- human in the loop across a cancel (the reference's test) ---- */

static atomic_int n_ask, n_answer;

static int ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&n_ask, 1);
    *out = ev_s(T_IR, "prefix", "Enter a number: ");
    return 0;
}

static int answer(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&n_answer, 1);
    wf_value r;
    const char *s = NULL;
    wf_value_get_string(wf_event_get(in, "response", wf_value_nil()), &s, NULL);
    cr_assert_eq(wf_value_string(&r, s ? s : "?"), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, r);
}

static wf_workflow *hitl_wf(void)
{
    wf_workflow *wf = new_wf("HumanInTheLoop");
    add(wf, "step1", ask, T_START, T_IR, NULL, 0);
    add(wf, "step2", answer, T_HR, T_STOP, NULL, 0);
    return wf;
}

Test(snapshot, human_in_the_loop_resumes_after_cancel_in_a_fresh_context, .timeout = 60)
{
    atomic_store(&n_ask, 0);
    atomic_store(&n_answer, 0);
    wf_workflow *wf = hitl_wf();
    wf_executor *ex = exec_n(2);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    wf_event *e;
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_eq(wf_event_type_of(e), T_IR);
    wf_event_release(e);
    /* save when InputRequiredEvent arrives, then cancel */
    void *buf;
    size_t len;
    wf_save_info info;
    cr_assert_eq(wf_ctx_save_ex(wf_handler_ctx(h), &buf, &len, &info), 0);
    cr_assert(info.running && info.live, "a live cut of the run in flight");
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    /* load in a fresh context, resume, answer */
    wf_ctx *ctx;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, &msg), 0, "%s", msg ? msg : "");
    cr_assert(wf_ctx_is_resumable(ctx));
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, &msg), 0, "%s", msg ? msg : "");
    cr_assert(!wf_ctx_is_resumable(ctx), "the parked run is live again");
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "42"), NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_str_eq(result_str(res), "42");
    cr_assert_eq(atomic_load(&n_ask), 1, "step1 ran once");
    cr_assert_eq(atomic_load(&n_answer), 1, "step2 ran once");
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(snapshot, cancel_parks_the_run_in_its_context, .timeout = 60)
{
    wf_workflow *wf = hitl_wf();
    wf_executor *ex = exec_n(2);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    wf_event *s, *e, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, ctx, s, &h), 0);
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    wf_event_release(e);
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_cancel(h), WF_ESTATE, "only once");
    wf_handler_free(h);
    cr_assert(!wf_ctx_is_running(ctx));
    cr_assert(wf_ctx_is_resumable(ctx));
    /* saved after the cancel: the snapshot says running and holds the run */
    void *buf;
    size_t len;
    wf_save_info info;
    cr_assert_eq(wf_ctx_save_ex(ctx, &buf, &len, &info), 0);
    cr_assert(info.running && !info.live);
    char *json = json_of(buf, len);
    cr_assert(strstr(json, "\"running\":true") != NULL, "%s", json);
    wf_free(json);
    wf_free(buf);
    /* the same context continues (a NULL start event resumes) */
    cr_assert_eq(wf_run_start(ex, wf, ctx, NULL, &h), 0);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "7"), NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_str_eq(result_str(res), "7");
    wf_event_release(res);
    wf_handler_free(h);
    /* nothing left to resume; a new start event starts afresh */
    char *msg = NULL;
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, &msg), WF_ESTATE);
    cr_assert_str_eq(msg, "the context holds no run to resume");
    wf_free(msg);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- parallel resume: 4 invocations in flight at the cut ---- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open_flag;
static int inside;

static int fan4(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int i = 0; i < 4; i++) {
        wf_event *w;
        cr_assert_eq(wf_event_new1(&w, T_WORK, "i", wf_value_int(i)), 0);
        cr_assert_eq(wf_ctx_send_event(ctx, w, NULL), 0);
    }
    return 0;
}

static int slow_work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    pthread_mutex_lock(&gate_mu);
    inside++;
    pthread_cond_broadcast(&gate_cv);
    while (!gate_open_flag)
        pthread_cond_wait(&gate_cv, &gate_mu);
    inside--;
    pthread_mutex_unlock(&gate_mu);
    int64_t i = -1;
    wf_value_get_int(wf_event_get(in, "i", wf_value_nil()), &i);
    return wf_event_new1(out, T_DONE, "i", wf_value_int(i));
}

static int gather4(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *want[] = {T_DONE, T_DONE, T_DONE, T_DONE};
    wf_event *got[4];
    int rc = wf_ctx_collect_events(ctx, in, want, 4, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    cr_assert_eq(rc, 0);
    int64_t sum = 0;
    for (int i = 0; i < 4; i++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(got[i], "i", wf_value_nil()), &v);
        sum += v;
        wf_event_release(got[i]);
    }
    cr_assert_eq(sum, 0 + 1 + 2 + 3, "each item exactly once");
    wf_value r;
    cr_assert_eq(wf_value_string(&r, "Done"), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, r);
}

Test(snapshot, parallel_invocations_in_flight_resume_and_finish, .timeout = 60)
{
    wf_workflow *wf = new_wf("Parallel");
    add(wf, "fan", fan4, T_START, T_WORK, NULL, 0);
    add(wf, "work", slow_work, T_WORK, T_DONE, NULL, 4);
    add(wf, "gather", gather4, T_DONE, T_STOP, NULL, 0);
    gate_open_flag = 0;
    inside = 0;
    wf_executor *ex = exec_n(4);
    wf_event *s, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    pthread_mutex_lock(&gate_mu);
    while (inside < 4)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    /* the four invocations are running: the cut records them in progress */
    void *buf;
    size_t len;
    wf_save_info info;
    cr_assert_eq(wf_ctx_save_ex(wf_handler_ctx(h), &buf, &len, &info), 0);
    cr_assert(info.live);
    char *json = json_of(buf, len);
    cr_assert(strstr(json, "\"in_progress\":4") != NULL, "%s", json);
    wf_free(json);
    cr_assert_eq(wf_handler_cancel(h), 0);
    pthread_mutex_lock(&gate_mu);
    gate_open_flag = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    /* a fresh executor and context re-run the four and finish */
    wf_executor *ex2 = exec_n(2);
    wf_ctx *ctx;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, &msg), 0, "%s", msg ? msg : "");
    cr_assert_eq(wf_run_resume(ex2, wf, ctx, NULL, &h, &msg), 0, "%s", msg ? msg : "");
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_str_eq(result_str(res), "Done");
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_executor_free(ex2);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- a waiter with requirements survives a snapshot ---- */

static int wait_for_7(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_value req;
    cr_assert_eq(wf_value_map_new(&req, 1), 0);
    cr_assert_eq(wf_value_map_set(&req, "id", wf_value_int(7)), 0);
    wf_event *ask_ev = ev_s(T_IR, "prefix", "answer 7");
    wf_event *got;
    int rc = wf_ctx_wait_for_event(ctx, T_ANS, req, ask_ev, "w7", WF_NO_TIMEOUT, &got);
    wf_value_release(req);
    if (rc == WF_SUSPEND)
        return rc;
    cr_assert_eq(rc, 0);
    wf_value v = wf_value_retain(wf_event_get(got, "text", wf_value_nil()));
    wf_event_release(got);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

Test(snapshot, a_waiter_with_requirements_survives, .timeout = 60)
{
    wf_workflow *wf = new_wf("Waiter");
    add(wf, "wait", wait_for_7, T_START, T_STOP, T_IR, 0);
    wf_executor *ex = exec_n(2);
    wf_event *s, *e, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    cr_assert_eq(wf_event_type_of(e), T_IR, "the waiter's event is streamed");
    wf_event_release(e);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(wf_handler_ctx(h), &buf, &len), 0);
    char *json = json_of(buf, len);
    cr_assert(strstr(json, "\"w7\"") != NULL && strstr(json, "{\"id\":7}") != NULL, "%s", json);
    wf_free(json);
    cr_assert_eq(wf_handler_cancel(h), 0);
    wf_handler_free(h);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, NULL), 0);
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, NULL), 0);
    wf_event *a;
    cr_assert_eq(wf_event_new2(&a, T_ANS, "id", wf_value_int(6), "text", wf_value_nil()), 0);
    cr_assert_eq(wf_handler_send_event(h, a, NULL), 0);
    wf_value t;
    cr_assert_eq(wf_value_string(&t, "seven"), 0);
    cr_assert_eq(wf_event_new2(&a, T_ANS, "id", wf_value_int(7), "text", t), 0);
    cr_assert_eq(wf_handler_send_event(h, a, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_str_eq(result_str(res), "seven", "only the event meeting the requirements");
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- collect buffers survive: two of three arrived before the cut ---- */

static int gather_hr(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *want[] = {T_HR, T_HR, T_HR};
    wf_event *got[3];
    int rc = wf_ctx_collect_events(ctx, in, want, 3, "answers", got);
    if (rc == WF_EAGAIN)
        return 0;
    cr_assert_eq(rc, 0);
    char s[64] = "";
    for (int i = 0; i < 3; i++) {
        const char *r = NULL;
        wf_value_get_string(wf_event_get(got[i], "response", wf_value_nil()), &r, NULL);
        strncat(s, r ? r : "?", sizeof s - strlen(s) - 1);
        wf_event_release(got[i]);
    }
    wf_value v;
    cr_assert_eq(wf_value_string(&v, s), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

static int noop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

Test(snapshot, collect_buffers_survive, .timeout = 60)
{
    wf_workflow *wf = new_wf("Collect");
    add(wf, "start", noop, T_START, T_STOP, NULL, 0);
    add(wf, "gather", gather_hr, T_HR, T_STOP, NULL, 1); /* one at a time: arrival order */
    wf_executor *ex = exec_n(2);
    wf_event *s, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "a"), NULL), 0);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "b"), NULL), 0);
    /* whatever has or has not run yet, the cut holds both exactly once */
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(wf_handler_ctx(h), &buf, &len), 0);
    cr_assert_eq(wf_handler_cancel(h), 0);
    wf_handler_free(h);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, NULL), 0);
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, NULL), 0);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "c"), NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_str_eq(result_str(res), "abc");
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- a pending retry survives with its attempt count ---- */

static atomic_int flaky_calls;

static int flaky(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_fetch_add(&flaky_calls, 1);
    uint32_t attempt = wf_ctx_attempt(ctx);
    if (attempt == 1)
        return WF_ESTEP;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_uint(attempt));
}

Test(snapshot, a_pending_retry_survives_with_its_attempt, .timeout = 60)
{
    wf_workflow *wf = new_wf("Retry");
    wf_retry_policy *pol;
    cr_assert_eq(wf_retry_policy_constant(&pol, 3, 1500), 0, "3 attempts, 1.5 s apart");
    const wf_event_type *acc[] = {T_START};
    const wf_event_type *em[] = {T_STOP};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    p.retry = pol;
    cr_assert_eq(wf_workflow_add_step(wf, "flaky", flaky, &p, NULL), 0);
    atomic_store(&flaky_calls, 0);
    wf_executor *ex = exec_n(2);
    wf_event *s, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    void *buf = NULL;
    size_t len = 0;
    /* cut until the first attempt has failed and its retry is armed */
    for (;;) {
        wf_save_info info;
        cr_assert_eq(wf_ctx_save_ex(wf_handler_ctx(h), &buf, &len, &info), 0);
        const char *why = NULL;
        int code = 0;
        wf_handler_error(h, &code, NULL, &why);
        cr_assert(info.live, "the retry is 1.5 s away: the run is still in flight (%d %s)",
                  wf_handler_status(h), why ? why : "");
        char *json = json_of(buf, len);
        int armed = strstr(json, "\"retries\":[[") != NULL;
        wf_free(json);
        if (armed)
            break;
        wf_free(buf);
        sched_yield();
    }
    cr_assert_eq(wf_handler_cancel(h), 0);
    wf_handler_free(h);
    cr_assert_eq(atomic_load(&flaky_calls), 1);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, NULL), 0);
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    uint64_t attempt = 0;
    cr_assert_eq(wf_value_get_uint(wf_event_result(res), &attempt), 0);
    cr_assert_eq(attempt, 2, "the retry ran as attempt 2, its count survived");
    cr_assert_eq(atomic_load(&flaky_calls), 2, "nothing else re-ran");
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_executor_free(ex);
    wf_retry_policy_free(pol);
    wf_workflow_free(wf);
}

/* ---- contexts at rest and the migration of format 1 ---- */

Test(snapshot, a_version_1_document_is_migrated)
{
    wf_workflow *wf = hitl_wf();
    wf_value doc, st;
    cr_assert_eq(wf_value_map_new(&doc, 6), 0);
    wf_value v;
    cr_assert_eq(wf_value_string(&v, "wf-snapshot"), 0);
    cr_assert_eq(wf_value_map_set(&doc, "magic", v), 0);
    cr_assert_eq(wf_value_map_set(&doc, "version", wf_value_uint(1)), 0);
    cr_assert_eq(wf_value_string(&v, "HumanInTheLoop"), 0);
    cr_assert_eq(wf_value_map_set(&doc, "workflow", v), 0);
    cr_assert_eq(wf_value_map_set(&doc, "fingerprint", wf_value_uint(wf_workflow_fingerprint(wf))),
                 0);
    cr_assert_eq(wf_value_map_set(&doc, "running", wf_value_bool(0)), 0);
    cr_assert_eq(wf_value_map_new(&st, 1), 0);
    cr_assert_eq(wf_value_map_set(&st, "k", wf_value_int(5)), 0);
    cr_assert_eq(wf_value_map_set(&doc, "state", st), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_value_to_msgpack(doc, &buf, &len), 0);
    wf_ctx *ctx;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, &msg), 0, "%s", msg ? msg : "");
    wf_value got;
    int64_t k = 0;
    cr_assert_eq(wf_ctx_get(ctx, "k", &got), 0);
    cr_assert_eq(wf_value_get_int(got, &k), 0);
    cr_assert_eq(k, 5);
    wf_value_release(got);
    cr_assert(!wf_ctx_is_resumable(ctx));
    /* saved again, it is the current version (4) */
    void *b2;
    size_t l2;
    cr_assert_eq(wf_ctx_save(ctx, &b2, &l2), 0);
    char *json = json_of(b2, l2);
    cr_assert(strstr(json, "\"version\":4") != NULL, "%s", json);
    wf_free(json);
    wf_free(b2);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_value_release(doc);
    wf_workflow_free(wf);
}

Test(snapshot, a_run_for_another_definition_is_refused_by_name, .timeout = 60)
{
    wf_workflow *wf = hitl_wf();
    wf_executor *ex = exec_n(2);
    wf_event *s, *e;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    wf_event_release(e);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(wf_handler_ctx(h), &buf, &len), 0);
    cr_assert_eq(wf_handler_cancel(h), 0);
    wf_handler_free(h);
    /* a definition whose steps have other names: refused even when mismatch is allowed */
    wf_workflow *other = new_wf("HumanInTheLoop");
    add(other, "first", ask, T_START, T_IR, NULL, 0);
    add(other, "second", answer, T_HR, T_STOP, NULL, 0);
    wf_ctx *ctx;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(other, buf, len, 0, &ctx, &msg), WF_EMISMATCH);
    wf_free(msg);
    msg = NULL;
    cr_assert_eq(wf_ctx_load(other, buf, len, WF_LOAD_ALLOW_MISMATCH, &ctx, &msg), WF_EMISMATCH);
    cr_assert_str_eq(msg, "the snapshot's step 'step1' is not in workflow 'HumanInTheLoop'");
    wf_free(msg);
    /* every truncation of a running snapshot fails cleanly */
    for (size_t n = 0; n < len; n++)
        cr_assert_eq(wf_ctx_load(wf, buf, n, 0, &ctx, NULL), WF_EFORMAT, "prefix %zu", n);
    wf_free(buf);
    wf_workflow_free(other);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- another process finishes the run ---- */

#ifdef SNAP_CHILD
Test(snapshot, another_process_loads_the_file_and_finishes, .timeout = 60)
{
    wf_workflow *wf = hitl_wf();
    wf_executor *ex = exec_n(2);
    wf_event *s, *e;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    wf_event_release(e);
    cr_assert_eq(wf_handler_cancel(h), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(wf_handler_ctx(h), &buf, &len), 0);
    wf_handler_free(h);
    char path[] = "/tmp/wf-snapshot-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    cr_assert_eq(fwrite(buf, 1, len, f), len);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s 42", SNAP_CHILD, path);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    char line[128] = "";
    cr_assert(fgets(line, sizeof line, p) != NULL);
    int status = pclose(p);
    remove(path);
    cr_assert_eq(status, 0);
    cr_assert_str_eq(line, "result 42 step1 0 step2 1\n", "the child ran only step2");
    wf_free(buf);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}
#endif

/* ---- a resumed event runs as the attempt it was ---- */

static atomic_uint seen_attempt;

static int note_attempt(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    atomic_store(&seen_attempt, wf_ctx_attempt(ctx));
    wf_value r;
    cr_assert_eq(wf_value_string(&r, "ok"), 0);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, r);
}

Test(snapshot, a_queued_event_resumes_as_its_first_attempt, .timeout = 60)
{
    wf_workflow *wf = new_wf("Attempt");
    add(wf, "start", ask, T_START, T_IR, NULL, 0);
    add(wf, "answer", note_attempt, T_HR, T_STOP, NULL, 0);
    wf_executor *ex = exec_n(2);
    wf_event *s, *e, *res;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    wf_event_release(e);
    cr_assert_eq(wf_handler_cancel(h), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(wf_handler_ctx(h), &buf, &len), 0);
    wf_handler_free(h);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, NULL), 0);
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, NULL), 0);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "x"), NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_eq(atomic_load(&seen_attempt), 1);
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- a run written by another program, and what the decoder says about a bad one ---- */

static wf_value str_v(const char *s)
{
    wf_value v;
    cr_assert_eq(wf_value_string(&v, s), 0);
    return v;
}

static wf_value arr_v(int n, const wf_value *items)
{
    wf_value a;
    cr_assert_eq(wf_value_array_new(&a, (size_t)n), 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(wf_value_array_push(&a, items[i]), 0);
    return a;
}

/* A snapshot of HumanInTheLoop with one HumanResponseEvent queued for step2 (step index sidx). */
static void hand_written(wf_workflow *wf, uint64_t sidx, void **buf, size_t *len)
{
    wf_value doc, run, fields, state;
    cr_assert_eq(wf_value_map_new(&doc, 7), 0);
    cr_assert_eq(wf_value_map_set(&doc, "magic", str_v("wf-snapshot")), 0);
    cr_assert_eq(wf_value_map_set(&doc, "version", wf_value_uint(2)), 0);
    cr_assert_eq(wf_value_map_set(&doc, "workflow", str_v("HumanInTheLoop")), 0);
    cr_assert_eq(wf_value_map_set(&doc, "fingerprint", wf_value_uint(wf_workflow_fingerprint(wf))),
                 0);
    cr_assert_eq(wf_value_map_set(&doc, "running", wf_value_bool(1)), 0);
    cr_assert_eq(wf_value_map_new(&state, 0), 0);
    cr_assert_eq(wf_value_map_set(&doc, "state", state), 0);
    cr_assert_eq(wf_value_map_new(&run, 8), 0);
    wf_value steps[] = {str_v("step1"), str_v("step2")};
    cr_assert_eq(wf_value_map_set(&run, "steps", arr_v(2, steps)), 0);
    wf_value types[] = {str_v("HumanResponseEvent")};
    cr_assert_eq(wf_value_map_set(&run, "types", arr_v(1, types)), 0);
    cr_assert_eq(wf_value_map_new(&fields, 1), 0);
    cr_assert_eq(wf_value_map_set(&fields, "response", str_v("42")), 0);
    wf_value task[] = {wf_value_uint(sidx), wf_value_uint(0), fields};
    wf_value tasks[] = {arr_v(3, task)};
    cr_assert_eq(wf_value_map_set(&run, "tasks", arr_v(1, tasks)), 0);
    const char *empty[] = {"retries", "waiters", "buffers", "groups"};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(wf_value_map_set(&run, empty[i], arr_v(0, NULL)), 0);
    cr_assert_eq(wf_value_map_set(&doc, "run", run), 0);
    cr_assert_eq(wf_value_to_msgpack(doc, buf, len), 0);
    wf_value_release(doc);
}

Test(snapshot, a_run_written_by_another_program_resumes, .timeout = 60)
{
    atomic_store(&n_ask, 0);
    atomic_store(&n_answer, 0);
    wf_workflow *wf = hitl_wf();
    wf_executor *ex = exec_n(2);
    void *buf;
    size_t len;
    hand_written(wf, 1, &buf, &len);
    wf_ctx *ctx;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, &msg), 0, "%s", msg ? msg : "");
    wf_handler *h;
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, &msg), 0, "%s", msg ? msg : "");
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    cr_assert_str_eq(result_str(res), "42");
    cr_assert_eq(atomic_load(&n_ask), 0, "step1 had nothing to do");
    cr_assert_eq(atomic_load(&n_answer), 1);
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(snapshot, a_bad_run_is_refused_naming_its_field_and_offset, .timeout = 60)
{
    wf_workflow *wf = hitl_wf();
    void *buf;
    size_t len;
    hand_written(wf, 7, &buf, &len); /* the workflow has 2 steps */
    wf_ctx *ctx;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, &msg), WF_EFORMAT);
    size_t off = 0;
    cr_assert_eq(
        sscanf(msg, "malformed snapshot: run.tasks[0] at offset %zu: bad step or type index", &off),
        1, "%s", msg);
    cr_assert(off < len && ((const unsigned char *)buf)[off] == 7,
              "the offset is the document's, at the step index: %s", msg);
    wf_free(msg);
    wf_free(buf);
    wf_workflow_free(wf);
}

/* ---- the store of a live snapshot is the store at the cut ---- */

static pthread_mutex_t tally_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tally_cv = PTHREAD_COND_INITIALIZER;
static int tally_hold, tally_held;

static int add_one(wf_value *state, void *u)
{
    wf_value n;
    uint64_t c = 0;
    if (wf_value_map_get(*state, "count", &n) == 0)
        wf_value_get_uint(n, &c);
    return wf_value_map_set(state, "count", wf_value_uint(c + 1));
}

static int tally(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    pthread_mutex_lock(&tally_mu);
    tally_held = 1;
    pthread_cond_broadcast(&tally_cv);
    while (tally_hold)
        pthread_cond_wait(&tally_cv, &tally_mu);
    pthread_mutex_unlock(&tally_mu);
    return wf_ctx_edit_state(ctx, add_one, NULL);
}

static uint64_t uint_at(wf_value map, const char *k1, const char *k2)
{
    wf_value v;
    uint64_t u = 0;
    cr_assert_eq(wf_value_map_get(map, k1, &v), 0, "%s", k1);
    if (k2)
        cr_assert_eq(wf_value_map_get(v, k2, &v), 0, "%s", k2);
    cr_assert_eq(wf_value_get_uint(v, &u), 0);
    return u;
}

Test(snapshot, a_live_snapshot_holds_the_store_as_it_was_at_the_cut, .timeout = 60)
{
    enum { N = 100000 };
    wf_workflow *wf = new_wf("Tally");
    add(wf, "start", noop, T_START, T_WORK, NULL, 0);
    add(wf, "tally", tally, T_WORK, T_STOP, NULL, 1); /* counts in the store, one at a time */
    wf_executor *ex = exec_n(2);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    cr_assert_eq(wf_ctx_set(ctx, "count", wf_value_uint(0)), 0);
    tally_hold = 1;
    tally_held = 0;
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, ctx, s, &h), 0);
    for (int i = 0; i < N; i++) {
        wf_event *w;
        cr_assert_eq(wf_event_new1(&w, T_WORK, "i", wf_value_int(i)), 0);
        cr_assert_eq(wf_handler_send_event(h, w, NULL), 0);
    }
    pthread_mutex_lock(&tally_mu);
    while (!tally_held)
        pthread_cond_wait(&tally_cv, &tally_mu);
    tally_hold = 0; /* the events flow while the cut is taken and encoded */
    pthread_cond_broadcast(&tally_cv);
    pthread_mutex_unlock(&tally_mu);
    void *buf;
    size_t len;
    wf_save_info info;
    cr_assert_eq(wf_ctx_save_ex(ctx, &buf, &len, &info), 0);
    cr_assert(info.live, "the run was in flight");
    wf_value doc, run;
    cr_assert_eq(wf_value_from_msgpack(buf, len, &doc, NULL, NULL), 0);
    uint64_t counted = uint_at(doc, "state", "count");
    cr_assert_eq(wf_value_map_get(doc, "run", &run), 0);
    uint64_t queued = uint_at(run, "counters", "queued");
    uint64_t running = uint_at(run, "counters", "in_progress");
    /*
     * Every event is counted in the store or still in the run, once; only
     * one in progress may be both (it runs again on resume: at-least-once).
     */
    cr_assert(counted + queued + running >= N && counted + queued <= N,
              "store %llu, queued %llu, in progress %llu of %d", (unsigned long long)counted,
              (unsigned long long)queued, (unsigned long long)running, N);
    wf_value_release(doc);
    cr_assert_eq(wf_handler_cancel(h), 0);
    wf_handler_free(h);
    wf_free(buf);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* The deepest value the store can hold saves, loads and prints; one deeper is refused at save. */
Test(snapshot, deepest_store_value_round_trips)
{
    wf_workflow *wf = hitl_wf();
    for (int levels = WF_MSGPACK_MAX_DEPTH - 1; levels <= WF_MSGPACK_MAX_DEPTH; levels++) {
        wf_value v = wf_value_int(7);
        for (int i = 0; i < levels; i++) {
            wf_value a;
            cr_assert_eq(wf_value_array_new(&a, 1), 0);
            cr_assert_eq(wf_value_array_push(&a, v), 0);
            v = a;
        }
        wf_ctx *ctx;
        cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
        cr_assert_eq(wf_ctx_set(ctx, "deep", v), 0);
        void *buf = NULL;
        size_t len = 0;
        int rc = wf_ctx_save(ctx, &buf, &len);
        if (levels == WF_MSGPACK_MAX_DEPTH) {
            /* the store's map is a level of its own */
            cr_assert_eq(rc, WF_ERANGE, "refused when written, not when read");
        } else {
            cr_assert_eq(rc, 0);
            wf_ctx *back;
            char *msg = NULL;
            cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &back, &msg), 0, "%s", msg ? msg : "");
            wf_value got;
            cr_assert_eq(wf_ctx_get(back, "deep", &got), 0);
            for (int i = 0; i < levels; i++) {
                wf_value in;
                cr_assert_eq(wf_value_array_at(got, 0, &in), 0, "level %d", i);
                got = in;
            }
            int64_t x = 0;
            cr_assert_eq(wf_value_get_int(got, &x), 0);
            cr_assert_eq(x, 7);
            char *json = NULL;
            cr_assert_eq(wf_snapshot_to_json(buf, len, &json, &msg), 0, "%s", msg ? msg : "");
            wf_free(json);
            wf_ctx_free(back);
        }
        wf_free(buf);
        wf_ctx_free(ctx);
    }
    wf_workflow_free(wf);
}

/* ---- cancelled in the middle of a list fan-out: resumed, every branch joins once ---- */

#define MID_FAN 32
static atomic_int mid_release, mid_blocked;

static int mid_split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *evs[MID_FAN];
    for (int i = 0; i < MID_FAN; i++)
        cr_assert_eq(wf_event_new1(&evs[i], T_WORK, "v", wf_value_int(i + 1)), 0);
    return wf_ctx_emit_list(ctx, evs, MID_FAN, T_DONE);
}

static int mid_work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t v = 0;
    wf_value_get_int(wf_event_get(in, "v", wf_value_int(0)), &v);
    if (v <= 2 && !atomic_load(&mid_release)) { /* the first two hold their workers */
        atomic_fetch_add(&mid_blocked, 1);
        while (!atomic_load(&mid_release))
            sched_yield();
    }
    return wf_event_new1(out, T_DONE, "v", wf_value_int(v * 10));
}

static int mid_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    cr_assert_eq(n, MID_FAN, "every branch joined once");
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(evs[i], "v", wf_value_int(0)), &v);
        sum += v;
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(sum));
}

Test(snapshot, cancelled_mid_list_fan_out_resumes_exactly, .timeout = 60)
{
    atomic_store(&mid_release, 0);
    atomic_store(&mid_blocked, 0);
    wf_workflow *wf = new_wf("MidFan");
    add(wf, "split", mid_split, T_START, T_WORK, NULL, 0);
    add(wf, "work", mid_work, T_WORK, T_DONE, NULL, 2);
    const wf_event_type *acc[1] = {T_DONE};
    const wf_event_type *em[1] = {T_STOP};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    p.join_list = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "join", mid_join, &p, NULL), 0);
    wf_executor *ex = exec_n(3);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, NULL, s, &h), 0);
    while (atomic_load(&mid_blocked) < 2) /* both work slots taken, the rest queued */
        sched_yield();
    cr_assert_eq(wf_handler_cancel(h), 0);
    atomic_store(&mid_release, 1);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(wf_handler_ctx(h), &buf, &len), 0);
    char *json = json_of(buf, len);
    cr_assert(strstr(json, "\"in_progress\":2") != NULL, "the two held invocations: %s", json);
    cr_assert(strstr(json, "\"queued\":30") != NULL, "the other branches queued: %s", json);
    wf_free(json);
    wf_handler_free(h);

    wf_ctx *ctx;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &ctx, &msg), 0, "%s", msg ? msg : "");
    wf_free(buf);
    cr_assert_eq(wf_run_resume(ex, wf, ctx, NULL, &h, &msg), 0, "%s", msg ? msg : "");
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t sum = 0;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
    cr_assert_eq(sum, 10 * MID_FAN * (MID_FAN + 1) / 2, "each branch once");
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/*
 * ---- corruption is detected, never resumed: every single-bit flip and every
 * truncation of a sealed snapshot is WF_EFORMAT (the CRC-32C seal) ----
 */

static void expect_every_flip_and_cut_refused(wf_workflow *wf, const void *buf, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    cr_assert_not_null(c);
    for (size_t i = 0; i < len * 8; i++) {
        memcpy(c, buf, len);
        c[i / 8] ^= (uint8_t)(1u << (i % 8));
        wf_ctx *x = NULL;
        char *m = NULL;
        int rc = wf_ctx_load(wf, c, len, 0, &x, &m);
        cr_assert_eq(rc, WF_EFORMAT, "bit %zu of %zu flipped: %s (%s)", i, len * 8, wf_err_name(rc),
                     m ? m : "");
        cr_assert_null(x);
        wf_free(m);
        char *j = NULL;
        cr_assert_eq(wf_snapshot_to_json(c, len, &j, NULL), WF_EFORMAT, "bit %zu: json", i);
    }
    for (size_t n = 0; n < len; n++) {
        wf_ctx *x = NULL;
        int rc = wf_ctx_load(wf, buf, n, 0, &x, NULL);
        cr_assert_eq(rc, WF_EFORMAT, "cut to %zu of %zu bytes: %s", n, len, wf_err_name(rc));
        cr_assert_null(x);
    }
    free(c);
}

Test(snapshot, every_bit_flip_and_truncation_is_refused, .timeout = 120)
{
    wf_workflow *wf = new_wf("Sealed");
    add(wf, "start", ask, T_START, T_IR, NULL, 0);
    add(wf, "answer", note_attempt, T_HR, T_STOP, NULL, 0);
    /* at rest: the store only */
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    cr_assert_eq(wf_ctx_set(ctx, "user.name", str_v("Ada")), 0);
    cr_assert_eq(wf_ctx_set(ctx, "n", wf_value_int(-7)), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    expect_every_flip_and_cut_refused(wf, buf, len);
    wf_free(buf);
    /* running: a run parked after cancel, with its store */
    wf_executor *ex = exec_n(2);
    wf_event *s, *e;
    cr_assert_eq(wf_event_new(&s, T_START, 0), 0);
    wf_handler *h;
    cr_assert_eq(wf_run_start(ex, wf, ctx, s, &h), 0);
    cr_assert_eq(wf_handler_next_event(h, -1, &e), 0);
    wf_event_release(e);
    cr_assert_eq(wf_handler_cancel(h), 0);
    wf_handler_free(h);
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    expect_every_flip_and_cut_refused(wf, buf, len);
    /* intact, it loads and resumes */
    wf_ctx *back;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &back, NULL), 0);
    cr_assert_eq(wf_run_resume(ex, wf, back, NULL, &h, NULL), 0);
    cr_assert_eq(wf_handler_send_event(h, ev_s(T_HR, "response", "x"), NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    wf_ctx_free(back);
    wf_free(buf);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(snapshot, a_version_2_document_without_a_seal_still_loads)
{
    wf_workflow *wf = new_wf("Unsealed");
    add(wf, "start", ask, T_START, T_IR, NULL, 0);
    add(wf, "answer", note_attempt, T_HR, T_STOP, NULL, 0);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    cr_assert_eq(wf_ctx_set(ctx, "k", wf_value_int(9)), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    /* what wf wrote before seals: the same map, version 2, nothing after it */
    wf_value doc;
    size_t used = 0;
    cr_assert_eq(wf_value_from_msgpack(buf, len, &doc, &used, NULL), 0);
    cr_assert_eq(used, len - 5, "the seal is five bytes after the map");
    cr_assert_eq(wf_value_map_set(&doc, "version", wf_value_uint(2)), 0);
    void *old;
    size_t olen;
    cr_assert_eq(wf_value_to_msgpack(doc, &old, &olen), 0);
    wf_ctx *back;
    char *m = NULL;
    cr_assert_eq(wf_ctx_load(wf, old, olen, 0, &back, &m), 0, "%s", m ? m : "");
    wf_value got;
    int64_t k = 0;
    cr_assert_eq(wf_ctx_get(back, "k", &got), 0);
    cr_assert_eq(wf_value_get_int(got, &k), 0);
    cr_assert_eq(k, 9);
    wf_value_release(got);
    /* but a version 3 document without its seal is corrupt */
    cr_assert_eq(wf_value_map_set(&doc, "version", wf_value_uint(3)), 0);
    void *bare;
    size_t blen;
    cr_assert_eq(wf_value_to_msgpack(doc, &bare, &blen), 0);
    wf_ctx *x = NULL;
    cr_assert_eq(wf_ctx_load(wf, bare, blen, 0, &x, &m), WF_EFORMAT);
    cr_assert(strstr(m, "checksum") != NULL, "%s", m);
    wf_free(m);
    wf_free(bare);
    wf_free(old);
    wf_value_release(doc);
    wf_ctx_free(back);
    wf_ctx_free(ctx);
    wf_free(buf);
    wf_workflow_free(wf);
}
