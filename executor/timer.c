/*
 * timer.c: one timer thread per executor over sharded timers.
 *
 * Run timeouts (and retry delays and waiter timeouts) are embedded
 * wf__timer records. A timer is armed in the arming thread's shard
 * (wf__timer_shard: a lock, a binary min-heap, and a FIFO per duration for
 * timers that share one, such as every run timeout of a workflow: O(1) to
 * arm and cancel); a cancel takes the shard the timer was armed in. So
 * threads that start and end runs at once pass no lock between cores but
 * their own shard's.
 *
 * The timer thread looks at every shard, fires what is due (outside the
 * locks) and sleeps on a condition variable until the earliest deadline
 * it saw (ex->timer_wake_at). An arm signals it only for an earlier
 * deadline: the arm reads timer_wake_at after its shard is unlocked; the
 * thread sets it to INT64_MAX before it looks, so an arm it may not have
 * seen takes timer_lock, and an arm that came while it looked (the lock
 * let go around a timer's fn) leaves timer_poked for it to look again
 * before it sleeps. The common case (a 45 s run timeout armed behind
 * earlier ones, or after their runs ended and cancelled them) costs no
 * wake-up and no executor-wide lock.
 */
#include "exec.h"

#include <errno.h>
#include <time.h>

int64_t wf__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void heap_swap(wf__timer_shard *sh, uint32_t a, uint32_t b)
{
    wf__timer *t = sh->heap[a];
    sh->heap[a] = sh->heap[b];
    sh->heap[b] = t;
    sh->heap[a]->heap_index = a;
    sh->heap[b]->heap_index = b;
}

static void sift_up(wf__timer_shard *sh, uint32_t i)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (sh->heap[p]->deadline_ns <= sh->heap[i]->deadline_ns)
            break;
        heap_swap(sh, i, p);
        i = p;
    }
}

static void sift_down(wf__timer_shard *sh, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < sh->heap_n && sh->heap[l]->deadline_ns < sh->heap[m]->deadline_ns)
            m = l;
        if (r < sh->heap_n && sh->heap[r]->deadline_ns < sh->heap[m]->deadline_ns)
            m = r;
        if (m == i)
            return;
        heap_swap(sh, i, m);
        i = m;
    }
}

static void heap_remove(wf__timer_shard *sh, uint32_t i)
{
    wf__timer *t = sh->heap[i];
    uint32_t last = --sh->heap_n;
    if (i != last) {
        sh->heap[i] = sh->heap[last];
        sh->heap[i]->heap_index = i;
        sift_down(sh, i);
        sift_up(sh, i);
    }
    t->heap_index = WF__TIMER_IDLE;
}

static void fifo_unlink(wf__timer_shard *sh, wf__timer *t)
{
    wf__timer_fifo *f = &sh->fifos[t->fifo];
    if (t->prev)
        t->prev->next = t->next;
    else
        f->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        f->tail = t->prev;
    t->prev = t->next = NULL;
    t->heap_index = WF__TIMER_IDLE;
}

/* Takes t out of its shard (its lock held). */
static void unlink_timer(wf__timer_shard *sh, wf__timer *t)
{
    if (t->heap_index == WF__TIMER_FIFO)
        fifo_unlink(sh, t);
    else
        heap_remove(sh, t->heap_index);
}

/* The earliest timer armed in sh, or NULL (its lock held). */
static wf__timer *earliest(wf__timer_shard *sh)
{
    wf__timer *e = sh->heap_n ? sh->heap[0] : NULL;
    for (uint32_t i = 0; i < sh->nfifos; i++) {
        wf__timer *h = sh->fifos[i].head;
        if (h && (e == NULL || h->deadline_ns < e->deadline_ns))
            e = h;
    }
    return e;
}

/* The calling thread's shard (threads take them in turn). */
static inline uint32_t my_shard(void)
{
    return wf__thread_shard() % WF__TIMER_SHARDS;
}

/* After t (deadline) went into its shard: wakes the timer thread if it sleeps past it. */
static void poke(struct wf_executor *ex, int64_t deadline)
{
    atomic_thread_fence(memory_order_seq_cst); /* the shard's update, then the look (see the top) */
    if (deadline >= atomic_load_explicit(&ex->timer_wake_at, memory_order_seq_cst))
        return;
    pthread_mutex_lock(&ex->timer_lock);
    int wake = deadline < atomic_load_explicit(&ex->timer_wake_at, memory_order_relaxed);
    if (wake) {
        atomic_store_explicit(&ex->timer_wake_at, deadline, memory_order_relaxed);
        ex->timer_poked = 1;
    }
    pthread_mutex_unlock(&ex->timer_lock);
    if (wake)
        pthread_cond_signal(&ex->timer_cond);
}

int wf__timer_arm_after(struct wf_executor *ex, wf__timer *t, int64_t duration_ns)
{
    int64_t deadline = wf__now_ns() + duration_ns;
    uint32_t si = my_shard();
    wf__timer_shard *sh = &ex->tshards[si];
    wf__lock_take(&sh->lock);
    uint32_t i = 0;
    while (i < sh->nfifos && sh->fifos[i].duration_ns != duration_ns)
        i++;
    if (i == sh->nfifos) {
        if (sh->nfifos == WF__TIMER_FIFOS) {
            wf__lock_give(&sh->lock);
            return wf__timer_arm(ex, t, deadline);
        }
        sh->fifos[i].duration_ns = duration_ns;
        sh->fifos[i].head = sh->fifos[i].tail = NULL;
        sh->nfifos++;
    }
    wf__timer_fifo *f = &sh->fifos[i];
    t->deadline_ns = deadline;
    t->heap_index = WF__TIMER_FIFO;
    t->fifo = (uint16_t)i;
    t->shard = (uint16_t)si;
    t->next = NULL;
    t->prev = f->tail;
    if (f->tail)
        f->tail->next = t;
    else
        f->head = t;
    f->tail = t;
    wf__lock_give(&sh->lock);
    poke(ex, deadline);
    return 0;
}

int wf__timer_arm(struct wf_executor *ex, wf__timer *t, int64_t deadline_ns)
{
    uint32_t si = my_shard();
    wf__timer_shard *sh = &ex->tshards[si];
    wf__lock_take(&sh->lock);
    if (sh->heap_n == sh->heap_cap) {
        uint32_t cap = sh->heap_cap ? sh->heap_cap * 2 : 256;
        wf__timer **h = wf__realloc(sh->heap, cap * sizeof *h);
        if (h == NULL) {
            wf__lock_give(&sh->lock);
            return WF_ENOMEM;
        }
        sh->heap = h;
        sh->heap_cap = cap;
    }
    t->deadline_ns = deadline_ns;
    t->shard = (uint16_t)si;
    t->heap_index = sh->heap_n;
    sh->heap[sh->heap_n++] = t;
    sift_up(sh, t->heap_index);
    wf__lock_give(&sh->lock);
    poke(ex, deadline_ns);
    return 0;
}

int wf__timer_cancel(struct wf_executor *ex, wf__timer *t)
{
    wf__timer_shard *sh = &ex->tshards[t->shard];
    wf__lock_take(&sh->lock);
    int armed = t->heap_index != WF__TIMER_IDLE;
    if (armed)
        unlink_timer(sh, t);
    wf__lock_give(&sh->lock);
    return armed;
}

/*
 * With timer_lock held: fires every due timer of every shard (the locks let
 * go around each fn) and gives the earliest deadline left (INT64_MAX: none).
 */
static int64_t fire_due(struct wf_executor *ex)
{
    int64_t next = INT64_MAX;
    for (uint32_t i = 0; i < WF__TIMER_SHARDS && !ex->timer_stop; i++) {
        wf__timer_shard *sh = &ex->tshards[i];
        for (;;) {
            wf__lock_take(&sh->lock);
            wf__timer *t = earliest(sh);
            if (t == NULL || t->deadline_ns > wf__now_ns()) {
                if (t && t->deadline_ns < next)
                    next = t->deadline_ns;
                wf__lock_give(&sh->lock);
                break;
            }
            unlink_timer(sh, t);
            wf__lock_give(&sh->lock);
            pthread_mutex_unlock(&ex->timer_lock);
            t->fn(t, t->arg);
            pthread_mutex_lock(&ex->timer_lock);
        }
    }
    return next;
}

static void *timer_main(void *arg)
{
    struct wf_executor *ex = arg;
    pthread_mutex_lock(&ex->timer_lock);
    while (!ex->timer_stop) {
        ex->timer_poked = 0;
        /* looking: an arm from now on takes timer_lock (see the top) */
        atomic_store_explicit(&ex->timer_wake_at, INT64_MAX, memory_order_seq_cst);
        int64_t next = fire_due(ex);
        if (ex->timer_stop)
            break;
        if (ex->timer_poked)
            continue; /* an arm came while the lock was let go: look again */
        atomic_store_explicit(&ex->timer_wake_at, next, memory_order_relaxed);
        if (next == INT64_MAX) {
            pthread_cond_wait(&ex->timer_cond, &ex->timer_lock);
        } else {
            struct timespec ts = {(time_t)(next / 1000000000), (long)(next % 1000000000)};
            pthread_cond_timedwait(&ex->timer_cond, &ex->timer_lock, &ts);
        }
    }
    pthread_mutex_unlock(&ex->timer_lock);
    return NULL;
}

int wf__timers_start(struct wf_executor *ex)
{
    ex->timer_stop = 0;
    atomic_store(&ex->timer_wake_at, INT64_MAX);
    if (pthread_create(&ex->timer_thread, NULL, timer_main, ex) != 0)
        return WF_ENOMEM;
    return 0;
}

void wf__timers_stop(struct wf_executor *ex)
{
    pthread_mutex_lock(&ex->timer_lock);
    ex->timer_stop = 1;
    pthread_mutex_unlock(&ex->timer_lock);
    pthread_cond_signal(&ex->timer_cond);
    pthread_join(ex->timer_thread, NULL);
}
