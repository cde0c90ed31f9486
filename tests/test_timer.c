/*
 * test_timer.c: the executor's timers alone (white-box: links the library's
 * objects). Timers are armed in the arming thread's shard and cancelled in
 * theirs; the timer thread looks at every shard. Threads arm and cancel at
 * once: every timer fires exactly once unless its cancel took it first; an
 * earlier deadline armed from any shard, or from a timer's own fn, wakes a
 * timer thread asleep behind a long one (a lost wake-up hangs the test
 * until its timeout).
 */
#include "harness.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "exec.h"

static struct wf_executor *new_ex(void)
{
    wf_executor_params p;
    wf_executor_params_init(&p);
    p.threads = 1;
    wf_executor *ex = NULL;
    cr_assert_eq(wf_executor_new(&ex, &p), 0);
    return (struct wf_executor *)ex;
}

/* Fires counted, with a condition variable the test waits on. */
typedef struct fired {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long n;
} fired;

static void fired_init(fired *f)
{
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->n = 0;
}

static void fired_wait(fired *f, long n)
{
    pthread_mutex_lock(&f->mu);
    while (f->n < n)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

static void fired_destroy(fired *f)
{
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
}

typedef struct tm_rec {
    wf__timer tm;
    atomic_int fires;
    int cancelled; /* wf__timer_cancel took it before it fired */
    fired *f;
} tm_rec;

static void on_fire(wf__timer *t, void *arg)
{
    (void)t;
    tm_rec *r = arg;
    atomic_fetch_add(&r->fires, 1);
    pthread_mutex_lock(&r->f->mu);
    r->f->n++;
    pthread_cond_broadcast(&r->f->cv);
    pthread_mutex_unlock(&r->f->mu);
}

static void rec_init(tm_rec *r, fired *f)
{
    memset(&r->tm, 0, sizeof r->tm);
    r->tm.heap_index = WF__TIMER_IDLE;
    r->tm.fn = on_fire;
    r->tm.arg = r;
    atomic_init(&r->fires, 0);
    r->cancelled = 0;
    r->f = f;
}

enum { ARMERS = 4, PER = 3000 };

typedef struct armer {
    struct wf_executor *ex;
    tm_rec *recs;
    int k;
    long cancelled;
    int failed;
} armer;

/*
 * Arms PER timers: FIFO timers of two durations and heap timers of
 * scattered deadlines, all within a few milliseconds; cancels every third.
 */
static void *arm_many(void *arg)
{
    armer *a = arg;
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(a->k + 1);
    for (int i = 0; i < PER; i++) {
        tm_rec *r = &a->recs[i];
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int rc;
        if (i % 2 == 0)
            rc = wf__timer_arm_after(a->ex, &r->tm, (int64_t)(1 + i % 4) * 500000);
        else
            rc = wf__timer_arm(a->ex, &r->tm, wf__now_ns() + (int64_t)(x % 3000000));
        if (rc != 0)
            a->failed = 1;
        if (i % 3 == 0 && wf__timer_cancel(a->ex, &r->tm)) {
            r->cancelled = 1;
            a->cancelled++;
        }
    }
    return NULL;
}

Test(timer, threads_arm_and_cancel_at_once_each_timer_fires_once_or_never, .timeout = 120)
{
    struct wf_executor *ex = new_ex();
    fired f;
    fired_init(&f);
    tm_rec *recs = calloc((size_t)ARMERS * PER, sizeof *recs);
    cr_assert_not_null(recs);
    for (int i = 0; i < ARMERS * PER; i++)
        rec_init(&recs[i], &f);
    armer a[ARMERS];
    pthread_t th[ARMERS];
    for (int k = 0; k < ARMERS; k++) {
        a[k] = (armer){.ex = ex, .recs = recs + (size_t)k * PER, .k = k};
        cr_assert_eq(pthread_create(&th[k], NULL, arm_many, &a[k]), 0);
    }
    long cancelled = 0;
    for (int k = 0; k < ARMERS; k++) {
        pthread_join(th[k], NULL);
        cr_assert_eq(a[k].failed, 0, "armer %d could not arm", k);
        cancelled += a[k].cancelled;
    }
    cr_assert(cancelled > 0, "no cancel came before its timer fired: the test proves less");
    fired_wait(&f, (long)ARMERS * PER - cancelled);
    for (int i = 0; i < ARMERS * PER; i++) {
        int n = atomic_load(&recs[i].fires);
        cr_assert_eq(n, recs[i].cancelled ? 0 : 1, "timer %d (cancelled %d) fired %d times", i,
                     recs[i].cancelled, n);
        cr_assert_eq(recs[i].tm.heap_index, WF__TIMER_IDLE);
        cr_assert_eq(wf__timer_cancel(ex, &recs[i].tm), 0, "timer %d: a second cancel", i);
    }
    wf_executor_free((wf_executor *)ex);
    free(recs);
    fired_destroy(&f);
}

typedef struct arm_one {
    struct wf_executor *ex;
    tm_rec *r;
    int64_t in_ns;
    int heap;
} arm_one;

static void *arm_from_here(void *arg)
{
    arm_one *a = arg;
    if (a->heap)
        wf__timer_arm(a->ex, &a->r->tm, wf__now_ns() + a->in_ns);
    else
        wf__timer_arm_after(a->ex, &a->r->tm, a->in_ns);
    return NULL;
}

/*
 * The timer thread sleeps behind a 10-minute timer armed by this thread;
 * short ones armed from other threads (other shards), one in a FIFO and
 * one in a heap, must wake it.
 */
Test(timer, an_earlier_deadline_from_another_shard_wakes_the_timer_thread, .timeout = 60)
{
    struct wf_executor *ex = new_ex();
    fired f;
    fired_init(&f);
    tm_rec longr, s1, s2;
    rec_init(&longr, &f);
    rec_init(&s1, &f);
    rec_init(&s2, &f);
    cr_assert_eq(wf__timer_arm_after(ex, &longr.tm, (int64_t)600 * 1000000000), 0);
    arm_one a1 = {ex, &s1, 2000000, 0}, a2 = {ex, &s2, 3000000, 1};
    pthread_t t1, t2;
    cr_assert_eq(pthread_create(&t1, NULL, arm_from_here, &a1), 0);
    pthread_join(t1, NULL);
    cr_assert_eq(pthread_create(&t2, NULL, arm_from_here, &a2), 0);
    pthread_join(t2, NULL);
    cr_assert_neq(s1.tm.shard, longr.tm.shard, "the threads shared a shard: the test proves less");
    fired_wait(&f, 2);
    cr_assert_eq(atomic_load(&s1.fires), 1);
    cr_assert_eq(atomic_load(&s2.fires), 1);
    cr_assert_eq(atomic_load(&longr.fires), 0);
    cr_assert_eq(wf__timer_cancel(ex, &longr.tm), 1);
    wf_executor_free((wf_executor *)ex);
    fired_destroy(&f);
}

/*
 * A timer whose fn arms a short one on the timer thread's own shard while
 * the thread looks at the shards: the firing timer sits in a later shard
 * than the thread's, so the thread has looked at the new one's shard
 * already and must look again (timer_poked) before it sleeps behind the
 * long timer.
 */
static tm_rec chained;
static struct wf_executor *chain_ex;
static int64_t chain_in_ns;

static void on_fire_chain(wf__timer *t, void *arg)
{
    wf__timer_arm(chain_ex, &chained.tm, wf__now_ns() + chain_in_ns);
    on_fire(t, arg);
}

typedef struct prober {
    tm_rec *probe, *first;
    int above;   /* the shard to beat */
    int shard;   /* the prober's */
} prober;

/* Takes a shard (arms and cancels a probe); arms first from it when it is above `above`. */
static void *probe_and_arm(void *arg)
{
    prober *p = arg;
    wf__timer_arm(chain_ex, &p->probe->tm, wf__now_ns() + (int64_t)600 * 1000000000);
    p->shard = p->probe->tm.shard;
    wf__timer_cancel(chain_ex, &p->probe->tm);
    if (p->shard > p->above)
        wf__timer_arm(chain_ex, &p->first->tm, wf__now_ns() + 1000000);
    return NULL;
}

Test(timer, a_timer_armed_by_a_firing_timer_in_a_shard_looked_at_fires_behind_a_long_one,
     .timeout = 60)
{
    struct wf_executor *ex = new_ex();
    chain_ex = ex;
    fired f;
    fired_init(&f);
    tm_rec longr, warm, first, probe;
    rec_init(&longr, &f);
    rec_init(&warm, &f);
    rec_init(&first, &f);
    rec_init(&probe, &f);
    rec_init(&chained, &f);
    cr_assert_eq(wf__timer_arm_after(ex, &longr.tm, (int64_t)600 * 1000000000), 0);
    /* the timer thread takes its shard: warm's fn arms chained (600 s) from it */
    warm.tm.fn = on_fire_chain;
    chain_in_ns = (int64_t)600 * 1000000000;
    rec_init(&chained, &f);
    cr_assert_eq(wf__timer_arm(ex, &warm.tm, wf__now_ns() + 1000000), 0);
    fired_wait(&f, 1);
    int thread_shard = chained.tm.shard;
    cr_assert_eq(wf__timer_cancel(ex, &chained.tm), 1);
    /* first, from a thread whose shard comes after the timer thread's */
    rec_init(&chained, &f);
    chain_in_ns = 2000000;
    first.tm.fn = on_fire_chain;
    int shard = -1;
    for (int tries = 0; tries < 2 * WF__TIMER_SHARDS && shard <= thread_shard; tries++) {
        if (thread_shard == WF__TIMER_SHARDS - 1)
            break; /* no shard after it */
        prober p = {&probe, &first, thread_shard, -1};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, probe_and_arm, &p), 0);
        pthread_join(th, NULL);
        shard = p.shard;
        rec_init(&probe, &f);
    }
    if (shard <= thread_shard) /* the timer thread took the last shard: first from here */
        cr_assert_eq(wf__timer_arm(ex, &first.tm, wf__now_ns() + 1000000), 0);
    fired_wait(&f, 3); /* warm, first, then the one first's fn armed */
    cr_assert_eq(atomic_load(&first.fires), 1);
    cr_assert_eq(atomic_load(&chained.fires), 1);
    cr_assert_eq(atomic_load(&longr.fires), 0);
    cr_assert_eq(wf__timer_cancel(ex, &longr.tm), 1);
    wf_executor_free((wf_executor *)ex);
    fired_destroy(&f);
}
