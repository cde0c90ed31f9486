/*
 * timer.c: one timer thread per executor over a binary min-heap.
 *
 * Run timeouts (and later retry delays and waiter timeouts) are embedded
 * wf__timer records; arming and cancelling are O(log n) under one mutex.
 * The thread sleeps on a condition variable until the earliest deadline and
 * is only signalled when a new timer is due before the time it sleeps until
 * (ex->timer_wake_at), so the common case (a 45 s run timeout armed behind
 * earlier ones, or after the earlier ones' runs ended and cancelled them)
 * costs no wake-up.
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

static void heap_swap(struct wf_executor *ex, uint32_t a, uint32_t b)
{
    wf__timer *t = ex->heap[a];
    ex->heap[a] = ex->heap[b];
    ex->heap[b] = t;
    ex->heap[a]->heap_index = a;
    ex->heap[b]->heap_index = b;
}

static void sift_up(struct wf_executor *ex, uint32_t i)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (ex->heap[p]->deadline_ns <= ex->heap[i]->deadline_ns)
            break;
        heap_swap(ex, i, p);
        i = p;
    }
}

static void sift_down(struct wf_executor *ex, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < ex->heap_n && ex->heap[l]->deadline_ns < ex->heap[m]->deadline_ns)
            m = l;
        if (r < ex->heap_n && ex->heap[r]->deadline_ns < ex->heap[m]->deadline_ns)
            m = r;
        if (m == i)
            return;
        heap_swap(ex, i, m);
        i = m;
    }
}

static void heap_remove(struct wf_executor *ex, uint32_t i)
{
    wf__timer *t = ex->heap[i];
    uint32_t last = --ex->heap_n;
    if (i != last) {
        ex->heap[i] = ex->heap[last];
        ex->heap[i]->heap_index = i;
        sift_down(ex, i);
        sift_up(ex, i);
    }
    t->heap_index = WF__TIMER_IDLE;
}

static void fifo_unlink(struct wf_executor *ex, wf__timer *t)
{
    wf__timer_fifo *f = &ex->fifos[t->fifo];
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

/* The earliest armed timer, or NULL (timer lock held). */
static wf__timer *earliest(struct wf_executor *ex)
{
    wf__timer *e = ex->heap_n ? ex->heap[0] : NULL;
    for (uint32_t i = 0; i < ex->nfifos; i++) {
        wf__timer *h = ex->fifos[i].head;
        if (h && (e == NULL || h->deadline_ns < e->deadline_ns))
            e = h;
    }
    return e;
}

int wf__timer_arm_after(struct wf_executor *ex, wf__timer *t, int64_t duration_ns)
{
    int64_t deadline = wf__now_ns() + duration_ns;
    pthread_mutex_lock(&ex->timer_lock);
    uint32_t i = 0;
    while (i < ex->nfifos && ex->fifos[i].duration_ns != duration_ns)
        i++;
    if (i == ex->nfifos) {
        if (ex->nfifos == WF__TIMER_FIFOS) {
            pthread_mutex_unlock(&ex->timer_lock);
            return wf__timer_arm(ex, t, deadline);
        }
        ex->fifos[i].duration_ns = duration_ns;
        ex->fifos[i].head = ex->fifos[i].tail = NULL;
        ex->nfifos++;
    }
    wf__timer_fifo *f = &ex->fifos[i];
    t->deadline_ns = deadline;
    t->heap_index = WF__TIMER_FIFO;
    t->fifo = i;
    t->next = NULL;
    t->prev = f->tail;
    if (f->tail)
        f->tail->next = t;
    else
        f->head = t;
    f->tail = t;
    int wake = deadline < ex->timer_wake_at;
    if (wake)
        ex->timer_wake_at = deadline;
    pthread_mutex_unlock(&ex->timer_lock);
    if (wake)
        pthread_cond_signal(&ex->timer_cond);
    return 0;
}

int wf__timer_arm(struct wf_executor *ex, wf__timer *t, int64_t deadline_ns)
{
    pthread_mutex_lock(&ex->timer_lock);
    if (ex->heap_n == ex->heap_cap) {
        uint32_t cap = ex->heap_cap ? ex->heap_cap * 2 : 1024;
        wf__timer **h = wf__realloc(ex->heap, cap * sizeof *h);
        if (h == NULL) {
            pthread_mutex_unlock(&ex->timer_lock);
            return WF_ENOMEM;
        }
        ex->heap = h;
        ex->heap_cap = cap;
    }
    t->deadline_ns = deadline_ns;
    t->heap_index = ex->heap_n;
    ex->heap[ex->heap_n++] = t;
    sift_up(ex, t->heap_index);
    int first = deadline_ns < ex->timer_wake_at;
    if (first)
        ex->timer_wake_at = deadline_ns;
    pthread_mutex_unlock(&ex->timer_lock);
    if (first)
        pthread_cond_signal(&ex->timer_cond);
    return 0;
}

int wf__timer_cancel(struct wf_executor *ex, wf__timer *t)
{
    pthread_mutex_lock(&ex->timer_lock);
    int armed = t->heap_index != WF__TIMER_IDLE;
    if (t->heap_index == WF__TIMER_FIFO)
        fifo_unlink(ex, t);
    else if (armed)
        heap_remove(ex, t->heap_index);
    pthread_mutex_unlock(&ex->timer_lock);
    return armed;
}

static void *timer_main(void *arg)
{
    struct wf_executor *ex = arg;
    pthread_mutex_lock(&ex->timer_lock);
    while (!ex->timer_stop) {
        wf__timer *t = earliest(ex);
        if (t == NULL) {
            ex->timer_wake_at = INT64_MAX;
            pthread_cond_wait(&ex->timer_cond, &ex->timer_lock);
            continue;
        }
        int64_t now = wf__now_ns();
        if (t->deadline_ns > now) {
            ex->timer_wake_at = t->deadline_ns;
            struct timespec ts = {(time_t)(t->deadline_ns / 1000000000),
                                  (long)(t->deadline_ns % 1000000000)};
            pthread_cond_timedwait(&ex->timer_cond, &ex->timer_lock, &ts);
            continue;
        }
        if (t->heap_index == WF__TIMER_FIFO)
            fifo_unlink(ex, t);
        else
            heap_remove(ex, t->heap_index);
        pthread_mutex_unlock(&ex->timer_lock);
        t->fn(t, t->arg);
        pthread_mutex_lock(&ex->timer_lock);
    }
    pthread_mutex_unlock(&ex->timer_lock);
    return NULL;
}

int wf__timers_start(struct wf_executor *ex)
{
    ex->timer_stop = 0;
    ex->timer_wake_at = INT64_MAX;
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
