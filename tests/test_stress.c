/*
 * test_stress.c: thousands of concurrent runs with fan-out, random step
 * delays and cancellations. Every run must end exactly once; a run that
 * completes must have seen every fanned-out event exactly once (its
 * collector sums them: a lost event never completes the run, a duplicate
 * completes it early with the wrong sum). Meant to run under TSan and ASan.
 */
#include "harness.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

#if (defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)) && !defined(WF_STRESS_FULL)
#define RUNS 600
#else
#define RUNS 3000
#endif
#define FAN 40

static const wf_event_type *T_START, *T_STOP, *T_ITEM, *T_DONE;

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352d;
    x ^= x >> 15;
    x *= 0x846ca68b;
    x ^= x >> 16;
    return x;
}

static void busy(uint32_t n)
{
    volatile uint32_t s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += i;
}

static int fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t base = 0;
    wf_value_get_int(wf_event_get(in, "base", wf_value_int(0)), &base);
    for (int i = 0; i < FAN; i++) {
        wf_event *e;
        cr_assert_eq(wf_event_new1(&e, T_ITEM, "v", wf_value_int(base + i)), 0);
        if (wf_ctx_send_event(ctx, e, NULL) < 0)
            return WF_EINTERNAL;
    }
    return 0;
}

static int worker(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t v = 0;
    wf_value_get_int(wf_event_get(in, "v", wf_value_int(0)), &v);
    busy(mix((uint32_t)v) % 2000);
    return wf_event_new1(out, T_DONE, "v", wf_value_int(v));
}

static int collect(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    /* num_workers 1: read-modify-write of the store without a race */
    wf_value s, c;
    int64_t sum = 0, count = 0, v = 0;
    wf_ctx_get_default(ctx, "sum", wf_value_int(0), &s);
    wf_ctx_get_default(ctx, "count", wf_value_int(0), &c);
    wf_value_get_int(s, &sum);
    wf_value_get_int(c, &count);
    wf_value_get_int(wf_event_get(in, "v", wf_value_int(0)), &v);
    sum += v;
    count++;
    wf_ctx_set(ctx, "sum", wf_value_int(sum));
    wf_ctx_set(ctx, "count", wf_value_int(count));
    if (count == FAN)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(sum));
    return 0;
}

typedef struct {
    atomic_int done_calls;
    int status;
} slot;

static slot slots[RUNS];

static void on_done(wf_handler *h, void *user)
{
    slot *s = user;
    atomic_fetch_add(&s->done_calls, 1);
    s->status = wf_handler_status(h);
}

/*
 * start -> fan (emits Item) -> work (num_workers 3, emits the result type)
 * -> gather (gather_workers; a join_list step when join_list).
 */
/* num_workers of the pipelines' work step (2^30 and more: no limit, counts kept per worker) */
static uint32_t work_workers = 3;

static wf_workflow *pipeline(const char *result_name, const wf_event_type **result,
                             wf_step_fn fan_fn, wf_step_fn work_fn, wf_step_fn gather_fn,
                             uint32_t gather_workers, int join_list)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "stress", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &T_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, result_name, NULL, result), 0);
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = 1;
    p.n_emits = 1;
    p.accepts = &T_START;
    p.emits = &T_ITEM;
    cr_assert_eq(wf_workflow_add_step(wf, "fan", fan_fn, &p, NULL), 0);
    p.accepts = &T_ITEM;
    p.emits = result;
    p.num_workers = work_workers;
    cr_assert_eq(wf_workflow_add_step(wf, "work", work_fn, &p, NULL), 0);
    p.accepts = result;
    p.emits = &T_STOP;
    p.num_workers = gather_workers;
    p.join_list = join_list;
    cr_assert_eq(wf_workflow_add_step(wf, "gather", gather_fn, &p, NULL), 0);
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    return wf;
}

static wf_workflow *build(void)
{
    return pipeline("Done", &T_DONE, fan, worker, collect, 1, 0);
}

Test(stress, concurrent_runs_fanout_cancel, .timeout = 600)
{
    wf_workflow *wf = build();
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 4; /* more workers than cores: preemption in the middle of everything */
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_handler **hs = calloc(RUNS, sizeof *hs);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.on_done = on_done;
    rp.stream_capacity = 8;
    int cancelled_by_us[RUNS] = {0};
    for (int i = 0; i < RUNS; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int((int64_t)i * 1000)), 0);
        rp.on_done_user = &slots[i];
        cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &hs[i], NULL), 0);
        /* Cancel some runs at once and some a little later, while others run. */
        if (mix((uint32_t)i) % 7 == 0)
            cancelled_by_us[i] = wf_handler_cancel(hs[i]) == 0;
        if (i >= 10 && mix((uint32_t)i * 3) % 11 == 0)
            cancelled_by_us[i - 10] |= wf_handler_cancel(hs[i - 10]) == 0;
    }
    int completed = 0, cancelled = 0;
    for (int i = 0; i < RUNS; i++) {
        wf_event *res = NULL;
        int rc = wf_handler_wait(hs[i], -1, &res);
        if (rc == 0) {
            int64_t sum = 0, want = 0;
            cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
            for (int k = 0; k < FAN; k++)
                want += (int64_t)i * 1000 + k;
            cr_assert_eq(sum, want, "run %d: sum %lld, expected %lld", i, (long long)sum,
                         (long long)want);
            cr_assert_not(cancelled_by_us[i], "run %d completed after a successful cancel", i);
            completed++;
        } else {
            cr_assert_eq(rc, WF_ECANCELLED, "run %d ended with %s", i, wf_err_name(rc));
            cr_assert(cancelled_by_us[i], "run %d cancelled by nobody", i);
            cancelled++;
        }
        wf_event_release(res);
    }
    wf_executor_free(ex);
    for (int i = 0; i < RUNS; i++) {
        cr_assert_eq(atomic_load(&slots[i].done_calls), 1, "run %d ended %d times", i,
                     atomic_load(&slots[i].done_calls));
        wf_handler_free(hs[i]);
    }
    cr_assert(completed > 0 && cancelled > 0, "completed %d cancelled %d", completed, cancelled);
    cr_assert_eq(completed + cancelled, RUNS);
    free(hs);
    wf_workflow_free(wf);
}

/* Shutdown while runs are busy: every run still ends exactly once. */
Test(stress, shutdown_with_runs_in_flight, .timeout = 600)
{
    wf_workflow *wf = build();
    for (int round = 0; round < 20; round++) {
        wf_executor_params ep;
        wf_executor_params_init(&ep);
        ep.threads = 3;
        wf_executor *ex;
        cr_assert_eq(wf_executor_new(&ex, &ep), 0);
        wf_handler *hs[50];
        wf_run_params rp;
        wf_run_params_init(&rp);
        rp.on_done = on_done;
        for (int i = 0; i < 50; i++) {
            atomic_store(&slots[i].done_calls, 0);
            wf_event *s;
            cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int(i)), 0);
            rp.on_done_user = &slots[i];
            cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &hs[i], NULL), 0);
        }
        wf_executor_free(ex);
        for (int i = 0; i < 50; i++) {
            cr_assert_eq(atomic_load(&slots[i].done_calls), 1);
            int rc = wf_handler_wait(hs[i], 0, NULL);
            cr_assert(rc == 0 || rc == WF_ECANCELLED, "%s", wf_err_name(rc));
            wf_handler_free(hs[i]);
        }
    }
    wf_workflow_free(wf);
}

/* ---- fan-out into collect_events, many runs at once ---- */

#if (defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)) && !defined(WF_STRESS_FULL)
#define JOIN_RUNS 200
#define JOIN_FAN  200
#else
#define JOIN_RUNS 1000
#define JOIN_FAN  1000
#endif

static const wf_event_type *T_RES;
static const wf_event_type *join_spec[JOIN_FAN];

static int jfan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t base = 0;
    wf_value_get_int(wf_event_get(in, "base", wf_value_int(0)), &base);
    for (int i = 0; i < JOIN_FAN; i++) {
        wf_event *e;
        cr_assert_eq(wf_event_new1(&e, T_ITEM, "v", wf_value_int(base + i)), 0);
        if (wf_ctx_send_event(ctx, e, NULL) < 0)
            return WF_EINTERNAL;
    }
    return 0;
}

static int jwork(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t v = 0;
    wf_value_get_int(wf_event_get(in, "v", wf_value_int(0)), &v);
    busy(mix((uint32_t)v) % 500);
    return wf_event_new1(out, T_RES, "v", wf_value_int(v));
}

static int jcollect(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *got[JOIN_FAN];
    int rc = wf_ctx_collect_events(ctx, in, join_spec, JOIN_FAN, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    cr_assert_eq(rc, 0);
    int64_t sum = 0;
    for (int i = 0; i < JOIN_FAN; i++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(got[i], "v", wf_value_int(0)), &v);
        sum += v;
        wf_event_release(got[i]);
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(sum));
}

Test(stress, runs_fanning_out_into_collect, .timeout = 900)
{
    /* two collectors race on the buffer */
    wf_workflow *wf = pipeline("Res", &T_RES, jfan, jwork, jcollect, 2, 0);
    for (int i = 0; i < JOIN_FAN; i++)
        join_spec[i] = T_RES;
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 3;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_handler **hs = calloc(JOIN_RUNS, sizeof *hs);
    for (int i = 0; i < JOIN_RUNS; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int((int64_t)i * 10000)), 0);
        cr_assert_eq(wf_run_start(ex, wf, NULL, s, &hs[i]), 0);
    }
    for (int i = 0; i < JOIN_RUNS; i++) {
        wf_event *res = NULL;
        cr_assert_eq(wf_handler_wait(hs[i], -1, &res), 0, "run %d", i);
        int64_t sum = 0, want = 0;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
        for (int k = 0; k < JOIN_FAN; k++)
            want += (int64_t)i * 10000 + k;
        cr_assert_eq(sum, want, "run %d: every event collected exactly once", i);
        wf_event_release(res);
        wf_handler_free(hs[i]);
    }
    free(hs);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- the same through list fan-outs and a join_list step ---- */

static int lsplit(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t base = 0;
    wf_value_get_int(wf_event_get(in, "base", wf_value_int(0)), &base);
    wf_event *evs[JOIN_FAN];
    for (int i = 0; i < JOIN_FAN; i++)
        cr_assert_eq(wf_event_new1(&evs[i], T_ITEM, "v", wf_value_int(base + i)), 0);
    return wf_ctx_emit_list(ctx, evs, JOIN_FAN, T_RES);
}

static int ljoin(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    cr_assert_eq(n, JOIN_FAN);
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(evs[i], "v", wf_value_int(0)), &v);
        sum += v;
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(sum));
}

Test(stress, runs_fanning_out_into_list_joins, .timeout = 900)
{
    wf_workflow *wf = pipeline("Res", &T_RES, lsplit, jwork, ljoin, 1, 1);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 3;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_handler **hs = calloc(JOIN_RUNS, sizeof *hs);
    for (int i = 0; i < JOIN_RUNS; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int((int64_t)i * 10000)), 0);
        cr_assert_eq(wf_run_start(ex, wf, NULL, s, &hs[i]), 0);
        if (i % 9 == 4) /* some runs end while their branches are in flight */
            wf_handler_cancel(hs[i]);
    }
    int done = 0;
    for (int i = 0; i < JOIN_RUNS; i++) {
        wf_event *res = NULL;
        int rc = wf_handler_wait(hs[i], -1, &res);
        if (rc == 0) {
            int64_t sum = 0, want = 0;
            cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
            for (int k = 0; k < JOIN_FAN; k++)
                want += (int64_t)i * 10000 + k;
            cr_assert_eq(sum, want, "run %d: every branch joined once", i);
            done++;
        } else {
            cr_assert_eq(rc, WF_ECANCELLED, "run %d: %s", i, wf_err_name(rc));
        }
        wf_event_release(res);
        wf_handler_free(hs[i]);
    }
    cr_assert(done > JOIN_RUNS / 2);
    free(hs);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ---- live snapshots at random moments, each resumed elsewhere ---- */

#define SNAP_RUNS 1000
#define SNAP_FAN  64
#define BURST_FAN 1000
/* the list fan-out's width: SNAP_FAN, or BURST_FAN in the back-to-back snapshot test */
static int snap_fan = SNAP_FAN;

static int ssplit(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t base = 0;
    wf_value_get_int(wf_event_get(in, "base", wf_value_int(0)), &base);
    wf_event *evs[BURST_FAN];
    for (int i = 0; i < snap_fan; i++)
        cr_assert_eq(wf_event_new1(&evs[i], T_ITEM, "v", wf_value_int(base + i)), 0);
    return wf_ctx_emit_list(ctx, evs, (size_t)snap_fan, T_RES);
}

static int sjoin(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event *const *evs;
    size_t n;
    cr_assert_eq(wf_ctx_join_events(ctx, &evs, &n), 0);
    cr_assert_eq(n, (size_t)snap_fan, "every branch joined exactly once");
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(evs[i], "v", wf_value_int(0)), &v);
        sum += v;
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(sum));
}

static int swork(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t v = 0;
    wf_value_get_int(wf_event_get(in, "v", wf_value_int(0)), &v);
    busy(mix((uint32_t)v) % 20000); /* ~5 us: runs last long enough to be cut mid-way */
    return wf_event_new1(out, T_RES, "v", wf_value_int(v));
}

typedef struct snap_job {
    wf_handler **hs;
    _Atomic int started;
    _Atomic int cut; /* snapshots taken so far: runs start at most 8 ahead of them */
    void *buf[SNAP_RUNS];
    size_t len[SNAP_RUNS];
    int live[SNAP_RUNS];
} snap_job;

static void *snapper(void *arg)
{
    snap_job *j = arg;
    uint32_t r = 12345;
    for (int i = 0; i < SNAP_RUNS; i++) {
        while (atomic_load(&j->started) <= i)
            sched_yield();
        r = mix(r + (uint32_t)i);
        busy(r % 4096); /* a random moment of run i */
        wf_save_info info;
        cr_assert_eq(wf_ctx_save_ex(wf_handler_ctx(j->hs[i]), &j->buf[i], &j->len[i], &info), 0);
        j->live[i] = info.live;
        atomic_store(&j->cut, i + 1);
    }
    return NULL;
}

/*
 * Two workers for a step allowed three at once: both workers can be waiting
 * at the gate (about to route) while the run's next task sits in a deque.
 * The cut must fetch that task itself, or it would wait forever (this test
 * then hangs until the runner's timeout). Snapshots back to back, each of
 * every tenth resumed elsewhere with the exact result.
 */
typedef struct burst {
    wf_handler *h;
    _Atomic int done;
    void *buf[64];
    size_t len[64];
    int n, taken;
} burst;

static void *burst_snapper(void *arg)
{
    burst *b = arg;
    while (!atomic_load(&b->done)) {
        void *buf;
        size_t len;
        wf_save_info info;
        cr_assert_eq(wf_ctx_save_ex(wf_handler_ctx(b->h), &buf, &len, &info), 0);
        if (info.live && b->taken++ % 10 == 0 && b->n < 64) {
            b->buf[b->n] = buf;
            b->len[b->n++] = len;
        } else {
            wf_free(buf);
        }
    }
    return NULL;
}

Test(stress, live_snapshots_with_every_worker_at_the_gate, .timeout = 900)
{
    wf_workflow *wf = pipeline("Res", &T_RES, ssplit, swork, sjoin, 1, 1);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2; /* work allows 3 at once */
    wf_executor *ex, *ex2;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    cr_assert_eq(wf_executor_new(&ex2, &ep), 0);
    int resumed = 0;
    snap_fan = BURST_FAN; /* runs long enough for many cuts each */
    for (int i = 0; i < 40; i++) {
        burst b = {0};
        wf_event *s;
        cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int((int64_t)i * 1000)), 0);
        cr_assert_eq(wf_run_start(ex, wf, NULL, s, &b.h), 0);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, burst_snapper, &b), 0);
        wf_event *res = NULL;
        cr_assert_eq(wf_handler_wait(b.h, -1, &res), 0, "run %d", i);
        atomic_store(&b.done, 1);
        pthread_join(th, NULL);
        int64_t want = 0, sum = 0;
        for (int k = 0; k < BURST_FAN; k++)
            want += (int64_t)i * 1000 + k;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
        cr_assert_eq(sum, want, "run %d itself", i);
        wf_event_release(res);
        wf_handler_free(b.h);
        for (int k = 0; k < b.n; k++) {
            wf_ctx *ctx;
            char *msg = NULL;
            cr_assert_eq(wf_ctx_load(wf, b.buf[k], b.len[k], 0, &ctx, &msg), 0, "%s",
                         msg ? msg : "");
            wf_handler *h;
            cr_assert_eq(wf_run_resume(ex2, wf, ctx, NULL, &h, &msg), 0, "%s", msg ? msg : "");
            cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
            cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
            cr_assert_eq(sum, want, "run %d, snapshot %d resumed", i, k);
            wf_event_release(res);
            wf_handler_free(h);
            wf_ctx_free(ctx);
            wf_free(b.buf[k]);
            resumed++;
        }
    }
    snap_fan = SNAP_FAN;
    cr_assert(resumed > 0, "some cuts were taken mid-run");
    wf_executor_free(ex2);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

static void snapshots_resume_exactly(uint32_t gather_workers)
{
    wf_workflow *wf = pipeline("Res", &T_RES, ssplit, swork, sjoin, gather_workers, 1);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 3;
    wf_executor *ex, *ex2;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    cr_assert_eq(wf_executor_new(&ex2, &ep), 0);
    snap_job *j = calloc(1, sizeof *j);
    j->hs = calloc(SNAP_RUNS, sizeof *j->hs);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, snapper, j), 0);
    for (int i = 0; i < SNAP_RUNS; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int((int64_t)i * 1000)), 0);
        while (atomic_load(&j->cut) + 8 < i)
            sched_yield();
        cr_assert_eq(wf_run_start(ex, wf, NULL, s, &j->hs[i]), 0);
        atomic_store(&j->started, i + 1);
    }
    pthread_join(th, NULL);
    int live = 0;
    for (int i = 0; i < SNAP_RUNS; i++) {
        int64_t want = 0;
        for (int k = 0; k < SNAP_FAN; k++)
            want += (int64_t)i * 1000 + k;
        /* the cut did not disturb the run itself */
        wf_event *res = NULL;
        cr_assert_eq(wf_handler_wait(j->hs[i], -1, &res), 0);
        int64_t sum = 0;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
        cr_assert_eq(sum, want, "run %d itself", i);
        wf_event_release(res);
        wf_handler_free(j->hs[i]);
        if (!j->live[i]) { /* it had ended: a context at rest */
            wf_free(j->buf[i]);
            continue;
        }
        live++;
        /* the snapshot, resumed in a fresh context on another executor, gives the same */
        wf_ctx *ctx;
        char *msg = NULL;
        cr_assert_eq(wf_ctx_load(wf, j->buf[i], j->len[i], 0, &ctx, &msg), 0, "%s", msg ? msg : "");
        wf_handler *h;
        cr_assert_eq(wf_run_resume(ex2, wf, ctx, NULL, &h, &msg), 0, "%s", msg ? msg : "");
        cr_assert_eq(wf_handler_wait(h, -1, &res), 0, "resumed run %d", i);
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
        cr_assert_eq(sum, want, "resumed run %d: nothing lost, nothing twice", i);
        wf_event_release(res);
        wf_handler_free(h);
        wf_ctx_free(ctx);
        wf_free(j->buf[i]);
    }
    cr_assert(live > 0, "some cuts were taken mid-run");
    free(j->hs);
    free(j);
    wf_executor_free(ex2);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(stress, live_snapshots_at_random_moments_resume_exactly, .timeout = 900)
{
    work_workers = 3;
    snapshots_resume_exactly(1);
}

Test(stress, live_snapshots_of_unbounded_steps_resume_exactly, .timeout = 900)
{
    work_workers = 1u << 30; /* counted per worker */
    snapshots_resume_exactly(1u << 30);
}

/* ------------------------------------------------------------- observation */

#define OBS_WAVE 5
#define OBS_RUNS (RUNS / 4)

/* Per run: the step starts and ends and the routings an observer saw. */
typedef struct obs_count {
    uint64_t run_id;
    uint32_t starts, ends, routes;
} obs_count;

typedef struct obs_tally {
    obs_count runs[2 * OBS_RUNS]; /* open addressing by run id (only the exporter writes) */
    uint64_t records;
} obs_tally;

static obs_count *tally_of(obs_tally *t, uint64_t run_id)
{
    for (uint32_t i = mix((uint32_t)run_id) % (2 * OBS_RUNS);; i = (i + 1) % (2 * OBS_RUNS)) {
        if (t->runs[i].run_id == run_id || t->runs[i].run_id == 0) {
            t->runs[i].run_id = run_id;
            return &t->runs[i];
        }
    }
}

static void tally_record(const wf_obs_record *r, void *user)
{
    obs_tally *t = user;
    t->records++;
    if (r->run_id == 0)
        return;
    obs_count *c = tally_of(t, r->run_id);
    c->starts += r->kind == WF_OBS_STEP_START;
    c->ends += r->kind == WF_OBS_STEP_END;
    c->routes += r->kind == WF_OBS_EVENT_ROUTE;
}

typedef struct flusher {
    wf_executor *ex;
    atomic_int stop;
    int flushes, swaps;
} flusher;

/* Flushes without pause (each shows the starts of the running steps) and swaps a second observer.
 */
static void *flush_loop(void *arg)
{
    flusher *f = arg;
    static obs_tally extra;
    uint32_t id = 0;
    while (!atomic_load(&f->stop)) {
        cr_assert_eq(wf_executor_observe_flush(f->ex), 0);
        f->flushes++;
        if (f->flushes % 8 == 0) {
            if (id) {
                cr_assert_eq(wf_executor_unobserve(f->ex, id), 0);
                id = 0;
            } else {
                wf_observer o = {
                    .record = tally_record, .user = &extra, .kinds = WF_OBS_BIT(WF_OBS_STEP_END)};
                cr_assert_eq(wf_executor_observe(f->ex, &o, &id), 0);
            }
            f->swaps++;
        }
    }
    if (id)
        cr_assert_eq(wf_executor_unobserve(f->ex, id), 0);
    return NULL;
}

/*
 * Observed runs on more workers than cores while another thread flushes
 * (delivering the starts of running steps from the slots their threads
 * hold) and adds and removes an observer: every record written is
 * delivered once; with nothing dropped, each run's every step invocation
 * starts once and ends once, and every event consumed was routed.
 */
Test(stress, observed_runs_with_flushes_deliver_each_record_once, .timeout = 900)
{
    work_workers = 3;
    wf_workflow *wf = build();
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 4;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    static obs_tally tally;
    memset(&tally, 0, sizeof tally);
    /* not the pool's parks and steals: they go on after the last flush */
    wf_observer o = {.record = tally_record,
                     .user = &tally,
                     .kinds = WF_OBS_ALL & ~(WF_OBS_BIT(WF_OBS_PARK) | WF_OBS_BIT(WF_OBS_UNPARK) |
                                             WF_OBS_BIT(WF_OBS_STEAL))};
    cr_assert_eq(wf_executor_observe(ex, &o, NULL), 0);
    flusher f = {.ex = ex};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, flush_loop, &f), 0);
    uint64_t ids[OBS_RUNS];
    for (int w = 0; w < OBS_RUNS; w += OBS_WAVE) { /* in waves: the rings need not overflow */
        wf_handler *hs[OBS_WAVE];
        for (int i = w; i < w + OBS_WAVE && i < OBS_RUNS; i++) {
            wf_event *s;
            cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int(i)), 0);
            cr_assert_eq(wf_run_start(ex, wf, NULL, s, &hs[i - w]), 0);
            ids[i] = wf_handler_run_id(hs[i - w]);
        }
        for (int i = w; i < w + OBS_WAVE && i < OBS_RUNS; i++) {
            cr_assert_eq(wf_handler_wait(hs[i - w], -1, NULL), 0);
            wf_handler_free(hs[i - w]);
        }
    }
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    wf_obs_stats st;
    wf_executor_observe_stats(ex, &st);
    cr_assert_eq(st.written, st.delivered, "written %llu delivered %llu",
                 (unsigned long long)st.written, (unsigned long long)st.delivered);
    cr_assert(f.flushes > 0 && tally.records > 0);
    if (st.dropped == 0) { /* a starved exporter may drop: then the sums above are all */
        for (int i = 0; i < OBS_RUNS; i++) {
            obs_count *c = tally_of(&tally, ids[i]);
            /* fan once, work FAN times, collect FAN times */
            cr_assert_eq(c->starts, 1 + 2 * FAN, "run %d: %u starts", i, c->starts);
            cr_assert_eq(c->ends, 1 + 2 * FAN, "run %d: %u ends", i, c->ends);
            cr_assert_eq(c->routes, 1 + 2 * FAN, "run %d: %u routings", i, c->routes);
        }
    }
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/*
 * ---- retries by the hundred thousand: each failed attempt's next task is
 * handed to a timer (zero delay) while other workers run and end the
 * attempts before it; every item must be retried until it succeeds, and
 * every run must come out with the exact sum. Under TSan this is the
 * regression test for the retry path reading a task after its hand-over.
 */

static atomic_long retried;

static int flaky(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t v = 0;
    wf_value_get_int(wf_event_get(in, "v", wf_value_int(0)), &v);
    uint32_t fails = mix((uint32_t)v) % 4; /* 0 to 3 failed attempts before it succeeds */
    if (wf_ctx_attempt(ctx) <= fails) {
        atomic_fetch_add_explicit(&retried, 1, memory_order_relaxed);
        wf_ctx_set_error(ctx, "flaky");
        return WF_EINTERNAL;
    }
    return wf_event_new1(out, T_DONE, "v", wf_value_int(v));
}

Test(stress, retries_by_the_hundred_thousand, .timeout = 900)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "retry-stress", NULL), 0);
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &T_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Done", NULL, &T_DONE), 0);
    wf_retry_policy *pol;
    cr_assert_eq(wf_retry_policy_constant(&pol, 4, 0), 0);
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = 1;
    p.n_emits = 1;
    p.accepts = &T_START;
    p.emits = &T_ITEM;
    cr_assert_eq(wf_workflow_add_step(wf, "fan", fan, &p, NULL), 0);
    p.accepts = &T_ITEM;
    p.emits = &T_DONE;
    p.num_workers = 4;
    p.retry = pol;
    cr_assert_eq(wf_workflow_add_step(wf, "flaky", flaky, &p, NULL), 0);
    p.accepts = &T_DONE;
    p.emits = &T_STOP;
    p.num_workers = 1;
    p.retry = NULL;
    cr_assert_eq(wf_workflow_add_step(wf, "gather", collect, &p, NULL), 0);
    wf_retry_policy_free(pol);
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);

    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 4;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_handler **hs = calloc(RUNS, sizeof *hs);
    for (int i = 0; i < RUNS; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int((int64_t)i * 1000)), 0);
        cr_assert_eq(wf_run_start(ex, wf, NULL, s, &hs[i]), 0);
    }
    long want_retries = 0;
    for (int i = 0; i < RUNS; i++) {
        wf_event *res = NULL;
        int rc = wf_handler_wait(hs[i], -1, &res);
        const char *msg = NULL;
        if (rc)
            wf_handler_error(hs[i], NULL, NULL, &msg);
        cr_assert_eq(rc, 0, "run %d: %s (%s)", i, wf_err_name(rc), msg ? msg : "");
        int64_t sum = 0, want = 0;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
        for (int k = 0; k < FAN; k++) {
            want += (int64_t)i * 1000 + k;
            want_retries += mix((uint32_t)(i * 1000 + k)) % 4;
        }
        cr_assert_eq(sum, want, "run %d: sum %lld, expected %lld", i, (long long)sum,
                     (long long)want);
        wf_event_release(res);
        wf_handler_free(hs[i]);
    }
    cr_assert_eq(atomic_load(&retried), want_retries, "every failed attempt was retried once");
    wf_executor_free(ex);
    free(hs);
    wf_workflow_free(wf);
}

/*
 * ---- num_concurrent_runs under load: thousands of runs of a workflow
 * limited to 3 active runs, some cancelled while they wait or run: never
 * more than 3 active at once, every run ends exactly once, and every run
 * that completes has the right sum ----
 */

#define LIMIT 3
static atomic_int lim_active, lim_max;
static atomic_int lim_started[RUNS];

static int counted_fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t base = 0;
    wf_value_get_int(wf_event_get(in, "base", wf_value_int(0)), &base);
    if (atomic_exchange(&lim_started[base / 1000], 1) == 0) {
        int cur = atomic_fetch_add(&lim_active, 1) + 1;
        int m = atomic_load(&lim_max);
        while (cur > m && !atomic_compare_exchange_weak(&lim_max, &m, cur))
            ;
    }
    return fan(ctx, in, out, u);
}

typedef struct {
    int index;
    atomic_int ends;
} lim_slot;

static lim_slot lim_slots[RUNS];

static void lim_done(wf_handler *h, void *user)
{
    lim_slot *s = user;
    atomic_fetch_add(&s->ends, 1);
    /* before the next run takes the place: on_done runs before it starts */
    if (atomic_load(&lim_started[s->index]))
        atomic_fetch_sub(&lim_active, 1);
}

Test(stress, limited_concurrent_runs_with_cancels, .timeout = 900)
{
    wf_workflow *wf = pipeline("Done", &T_DONE, counted_fan, worker, collect, 1, 0);
    cr_assert_eq(wf_workflow_set_num_concurrent_runs(wf, LIMIT), 0);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 4;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_handler **hs = calloc(RUNS, sizeof *hs);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.on_done = lim_done;
    rp.stream_capacity = 8;
    int cancelled = 0;
    for (int i = 0; i < RUNS; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new1(&s, T_START, "base", wf_value_int((int64_t)i * 1000)), 0);
        lim_slots[i].index = i;
        rp.on_done_user = &lim_slots[i];
        cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &hs[i], NULL), 0);
        if (mix((uint32_t)i) % 9 == 0)
            cancelled += wf_handler_cancel(hs[i]) == 0;
        if (i >= 20 && mix((uint32_t)i * 7) % 13 == 0)
            cancelled += wf_handler_cancel(hs[i - 20]) == 0;
    }
    int completed = 0, ended_cancelled = 0;
    for (int i = 0; i < RUNS; i++) {
        wf_event *res = NULL;
        int rc = wf_handler_wait(hs[i], -1, &res);
        if (rc == 0) {
            int64_t sum = 0, want = 0;
            cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
            for (int k = 0; k < FAN; k++)
                want += (int64_t)i * 1000 + k;
            cr_assert_eq(sum, want, "run %d", i);
            completed++;
        } else {
            cr_assert_eq(rc, WF_ECANCELLED, "run %d: %s", i, wf_err_name(rc));
            ended_cancelled++;
        }
        wf_event_release(res);
    }
    wf_executor_free(ex);
    for (int i = 0; i < RUNS; i++) {
        cr_assert_eq(atomic_load(&lim_slots[i].ends), 1, "run %d ended %d times", i,
                     atomic_load(&lim_slots[i].ends));
        wf_handler_free(hs[i]);
    }
    cr_assert_eq(ended_cancelled, cancelled);
    cr_assert_eq(completed + ended_cancelled, RUNS);
    cr_assert(atomic_load(&lim_max) <= LIMIT, "%d runs were active at once", atomic_load(&lim_max));
    cr_assert_eq(atomic_load(&lim_active), 0);
    free(hs);
    wf_workflow_free(wf);
}

/*
 * Many threads outside the pool start runs and wait for them at once (wf
 * serve's connection threads): every start and every result crosses the
 * injection queue from 32 producers on 2 workers, and each run must return
 * its own number. The queue used to make later producers wait for an
 * earlier one that was preempted (a convoy of seconds); now it must not.
 */
static const wf_event_type *inj_start;
static wf_executor *inj_ex;
static wf_workflow *inj_wf;
static atomic_long inj_next, inj_ok;
#define INJ_CLIENTS 32
#define INJ_RUNS    (RUNS * 4)

static int inj_echo(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_event_get(in, "i", wf_value_int(-1)));
}

static void *inj_client(void *arg)
{
    (void)arg;
    for (;;) {
        long i = atomic_fetch_add(&inj_next, 1);
        if (i >= INJ_RUNS)
            return NULL;
        wf_event *s, *res = NULL;
        if (wf_event_new1(&s, inj_start, "i", wf_value_int(i)) < 0)
            return NULL;
        int64_t v = -1;
        if (wf_run(inj_ex, inj_wf, NULL, s, 60000, &res) == 0 &&
            wf_value_get_int(wf_event_result(res), &v) == 0 && v == i)
            atomic_fetch_add(&inj_ok, 1);
        wf_event_release(res);
    }
}

Test(stress, many_outside_threads_start_runs_at_once, .timeout = 900)
{
    cr_assert_eq(wf_workflow_new(&inj_wf, "inject", NULL), 0);
    inj_start = wf_workflow_builtin(inj_wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(inj_wf, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &inj_start;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(inj_wf, "echo", inj_echo, &p, NULL), 0);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2;
    cr_assert_eq(wf_executor_new(&inj_ex, &ep), 0);
    pthread_t th[INJ_CLIENTS];
    for (int c = 0; c < INJ_CLIENTS; c++)
        cr_assert_eq(pthread_create(&th[c], NULL, inj_client, NULL), 0);
    for (int c = 0; c < INJ_CLIENTS; c++)
        pthread_join(th[c], NULL);
    cr_assert_eq(atomic_load(&inj_ok), INJ_RUNS, "%ld of %d runs returned their own number",
                 atomic_load(&inj_ok), INJ_RUNS);
    wf_executor_free(inj_ex);
    wf_workflow_free(inj_wf);
}

/*
 * Child workflows (wf_ctx_run_child): parents fan out to steps that each run
 * a child workflow (a quarter of those children run a grandchild), the
 * children queue behind their workflow's num_concurrent_runs, forward their
 * stream, and the test cancels parents while their children run, finish or
 * wait for a place. Every parent ends once, a completed one with the exact
 * sum of its children's results, and every child record is freed once
 * (its user_free), whoever won the race.
 */
#define CH_PARENTS RUNS
#define CH_FAN     3
static const wf_event_type *CH_START, *CH_ITEM, *CH_DONE, *CH_CSTART, *CH_NOTE;
static wf_workflow *ch_child;
static atomic_int ch_calls, ch_started, ch_freed;
static atomic_int ch_ends[CH_PARENTS];
static const wf_event_type *ch_want[CH_FAN];

static void ch_user_free(void *u)
{
    atomic_fetch_add(&ch_freed, 1);
}

static int ch_to_stop(const wf_event *result, wf_event **out, void *user)
{
    /* a grandchild's result becomes its parent child's own StopEvent */
    return wf_event_new_stop(out, wf_workflow_registry(ch_child), NULL,
                             wf_value_retain(wf_event_result(result)));
}

static int ch_to_done(const wf_event *result, wf_event **out, void *user)
{
    return wf_event_new1(out, CH_DONE, "v", wf_value_retain(wf_event_result(result)));
}

static int ch_run(wf_ctx *ctx, wf_workflow *child, int64_t i, int64_t depth, wf_child_result_fn fn)
{
    wf_event *s;
    int rc = wf_event_new2(&s, CH_CSTART, "i", wf_value_int(i), "depth", wf_value_int(depth));
    if (rc < 0)
        return rc;
    wf_child_params p;
    wf_child_params_init(&p);
    p.on_result = fn;
    p.forward_stream = (i & 1) != 0;
    p.user_free = ch_user_free;
    atomic_fetch_add(&ch_calls, 1); /* user_free runs once per call, started or not */
    rc = wf_ctx_run_child(ctx, child, s, &p);
    if (rc == WF_PENDING)
        atomic_fetch_add(&ch_started, 1);
    return rc;
}

static int ch_work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t i = 0, depth = 0;
    wf_value_get_int(wf_event_get(in, "i", wf_value_nil()), &i);
    wf_value_get_int(wf_event_get(in, "depth", wf_value_nil()), &depth);
    busy(mix((uint32_t)i) % 2000);
    wf_event *note;
    if (wf_event_new1(&note, CH_NOTE, "i", wf_value_int(i)) == 0)
        (void)wf_ctx_write_event_to_stream(ctx, note);
    if (depth == 0 && mix((uint32_t)i * 3) % 4 == 0)
        return ch_run(ctx, ch_child, i, 1, ch_to_stop);
    return wf_event_new_stop(out, wf_workflow_registry(ch_child), NULL, wf_value_int(2 * i));
}

static int ch_fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t base = 0;
    wf_value_get_int(wf_event_get(in, "base", wf_value_nil()), &base);
    for (int k = 0; k < CH_FAN; k++) {
        wf_event *e;
        int rc = wf_event_new1(&e, CH_ITEM, "i", wf_value_int(base + k));
        if (rc == 0)
            rc = wf_ctx_send_event(ctx, e, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int ch_spawn(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t i = 0;
    wf_value_get_int(wf_event_get(in, "i", wf_value_nil()), &i);
    return ch_run(ctx, ch_child, i, 0, ch_to_done);
}

static int ch_collect(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *const *want = ch_want; /* filled before any run starts */
    wf_event *got[CH_FAN];
    int rc = wf_ctx_collect_events(ctx, in, want, CH_FAN, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    int64_t sum = 0;
    for (int k = 0; k < CH_FAN; k++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(got[k], "v", wf_value_nil()), &v);
        sum += v;
        wf_event_release(got[k]);
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(sum));
}

static void ch_step(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *acc,
                    const wf_event_type *em, uint32_t workers)
{
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &acc;
    p.n_accepts = 1;
    p.emits = &em;
    p.n_emits = 1;
    if (workers)
        p.num_workers = workers;
    cr_assert_eq(wf_workflow_add_step(wf, name, fn, &p, NULL), 0);
}

static void ch_done(wf_handler *h, void *user)
{
    atomic_fetch_add(&ch_ends[(intptr_t)user], 1);
}

Test(stress, child_workflows_with_cancels, .timeout = 900)
{
    cr_assert_eq(wf_workflow_new(&ch_child, "stress_child", NULL), 0);
    CH_CSTART = wf_workflow_builtin(ch_child, WF_START_EVENT);
    cr_assert_eq(wf_workflow_event_type(ch_child, "Note", NULL, &CH_NOTE), 0);
    ch_step(ch_child, "work", ch_work, CH_CSTART, wf_workflow_builtin(ch_child, WF_STOP_EVENT), 0);
    cr_assert_eq(wf_workflow_set_num_concurrent_runs(ch_child, 64), 0);
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "stress_parent", NULL), 0);
    CH_START = wf_workflow_builtin(wf, WF_START_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &CH_ITEM), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Done", NULL, &CH_DONE), 0);
    ch_step(wf, "fan", ch_fan, CH_START, CH_ITEM, 0);
    ch_step(wf, "spawn", ch_spawn, CH_ITEM, CH_DONE, 0);
    for (int k = 0; k < CH_FAN; k++)
        ch_want[k] = CH_DONE;
    ch_step(wf, "collect", ch_collect, CH_DONE, wf_workflow_builtin(wf, WF_STOP_EVENT), 0);
    /* declared: snapshots of a parent (its cancels, the live saves below) nest its children */
    cr_assert_eq(wf_workflow_declare_child(wf, "spawn", ch_child), 0);
    cr_assert_eq(wf_workflow_declare_child(ch_child, "work", ch_child), 0); /* its grandchildren */

    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 4;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_handler **hs = calloc(CH_PARENTS, sizeof *hs);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.on_done = ch_done;
    rp.stream_capacity = 16; /* forwarded notes mostly overflow it: counted, never blocking */
    int cancelled = 0;
    for (int i = 0; i < CH_PARENTS; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new1(&s, CH_START, "base", wf_value_int((int64_t)i * 1000)), 0);
        rp.on_done_user = (void *)(intptr_t)i;
        cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &hs[i], NULL), 0);
        if (mix((uint32_t)i) % 7 == 0)
            cancelled += wf_handler_cancel(hs[i]) == 0;
        if (i >= 10 && mix((uint32_t)i * 5) % 5 == 0)
            cancelled += wf_handler_cancel(hs[i - 10]) == 0;
        if (i >= 5 && mix((uint32_t)i * 3) % 4 == 0) {
            /* a live save while its children run and end: it loads, children nested */
            void *buf = NULL;
            size_t len = 0;
            cr_assert_eq(wf_ctx_save(wf_handler_ctx(hs[i - 5]), &buf, &len), 0);
            wf_ctx *lc = NULL;
            char *msg = NULL;
            cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &lc, &msg), 0, "%s", msg ? msg : "");
            wf_ctx_free(lc);
            wf_free(buf);
        }
    }
    int completed = 0, ended_cancelled = 0;
    for (int i = 0; i < CH_PARENTS; i++) {
        wf_event *res = NULL;
        int rc = wf_handler_wait(hs[i], -1, &res);
        if (rc == 0) {
            int64_t sum = 0, want = 0;
            cr_assert_eq(wf_value_get_int(wf_event_result(res), &sum), 0);
            for (int k = 0; k < CH_FAN; k++)
                want += 2 * ((int64_t)i * 1000 + k);
            cr_assert_eq(sum, want, "parent %d", i);
            completed++;
        } else {
            cr_assert_eq(rc, WF_ECANCELLED, "parent %d: %s", i, wf_err_name(rc));
            ended_cancelled++;
        }
        wf_event_release(res);
    }
    wf_executor_free(ex);
    for (int i = 0; i < CH_PARENTS; i++) {
        cr_assert_eq(atomic_load(&ch_ends[i]), 1, "parent %d ended %d times", i,
                     atomic_load(&ch_ends[i]));
        wf_handler_free(hs[i]);
    }
    cr_assert_eq(ended_cancelled, cancelled);
    cr_assert_eq(completed + ended_cancelled, CH_PARENTS);
    cr_assert(completed > 0 && ended_cancelled > 0);
    cr_assert(atomic_load(&ch_started) >= completed * CH_FAN);
    cr_assert_eq(atomic_load(&ch_freed), atomic_load(&ch_calls), "%d freed, %d calls, %d started",
                 atomic_load(&ch_freed), atomic_load(&ch_calls), atomic_load(&ch_started));
    free(hs);
    wf_workflow_free(wf);
    wf_workflow_free(ch_child);
}
