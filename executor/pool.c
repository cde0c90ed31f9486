/*
 * pool.c: the worker pool: per-worker deques with a bypass slot, the
 * injection queue, stealing, spinning and parking.
 *
 * Idle protocol (Go's scheduler, in small): a worker that finds nothing
 * becomes a "spinner" for spin_us, then registers as idle, re-checks every
 * queue and parks on a futex. Whoever makes work available checks, after a
 * full fence, whether nobody spins and somebody is idle, and only then wakes
 * one worker. The fence on both sides (push then load counters; register
 * then re-check queues) makes a lost wake-up impossible, and a busy pool
 * pays one load per push.
 */
#include "exec.h"

#include <wf/observe.h>

#include <ck_pr.h>
#include <errno.h>
#include <sched.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

WF__TLS wf__worker *wf__tls_worker;
WF__TLS wf__slot *wf__tls_slot;
WF__TLS wf__task **wf__tls_capture;
WF__TLS const void *wf__tls_capture_run;

/* ------------------------------------------------------ asymmetric fences */

int wf__membarrier_ok;
static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;

#ifndef MEMBARRIER_CMD_PRIVATE_EXPEDITED
#define MEMBARRIER_CMD_PRIVATE_EXPEDITED          (1 << 3)
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#endif

static void membarrier_register(void)
{
#if !WF__TSAN && defined(SYS_membarrier)
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
        wf__membarrier_ok = 1;
#endif
}

/* Once per process, before the first executor's threads start. */
int wf__membarrier_init(void)
{
    pthread_once(&membarrier_once, membarrier_register);
    return wf__membarrier_ok;
}

void wf__fence_heavy(void)
{
#if !WF__TSAN && defined(SYS_membarrier)
    if (wf__membarrier_ok && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
#endif
    atomic_thread_fence(memory_order_seq_cst);
}

wf__worker *wf__current_worker(void)
{
    return wf__tls_worker;
}

/* ------------------------------------------------------------------- futex */

static void futex_wait(_Atomic int *addr, int val)
{
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic int *addr)
{
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ------------------------------------------------------------------- waking */

static void wake_one(struct wf_executor *ex)
{
    pthread_mutex_lock(&ex->idle_lock);
    if (ex->idle_top == 0) {
        pthread_mutex_unlock(&ex->idle_lock);
        return;
    }
    wf__worker *w = &ex->workers[ex->idle_stack[--ex->idle_top]];
    atomic_fetch_sub(&ex->n_idle, 1);
    /* The woken worker starts as a spinner, so concurrent pushers don't wake more. */
    atomic_fetch_add(&ex->n_spinning, 1);
    atomic_store(&w->parked, 0);
    pthread_mutex_unlock(&ex->idle_lock);
    futex_wake(&w->parked);
}

/*
 * Called after making work visible. The push and the load of n_idle below
 * must not be reordered against a parking worker's raise of n_idle and its
 * re-check of the queues (park), or the work could sit in a deque while
 * its only possible taker sleeps. That is a Dekker pair, made asymmetric
 * like the live snapshot's (wf__fence_light, exec.h): the pusher, on every
 * push, pays a compiler barrier (a full fence without membarrier(2)); the
 * parker, which is about to sleep anyway, pays wf__fence_heavy between its
 * raise and its re-check. Either the load here sees the raise, or the
 * re-check sees the push. It was a locked instruction on every deque push
 * (half of one per node of the tree at 1 thread).
 */
static inline void notify(struct wf_executor *ex)
{
#if WF__TSAN
    WF__FENCE_BEFORE_LOAD(&ex->n_idle);
#else
    wf__fence_light();
#endif
    if (atomic_load_explicit(&ex->n_idle, memory_order_relaxed) != 0 &&
        atomic_load_explicit(&ex->n_spinning, memory_order_relaxed) == 0)
        wake_one(ex);
}

/* --------------------------------------------------------------- injection */

/*
 * Runs, events and completions submitted from outside the pool land here.
 * It was a ck_ring (MPMC): a producer that reserved a slot and was
 * preempted before publishing it kept every later producer spinning in
 * ck_ring's enqueue (it waits for p_tail to reach its slot), so 8 outside
 * threads on 2 cores started 238 runs a second (bench_inject). Now a
 * producer's only shared write is one CAS on the head, and a failed CAS
 * means another producer made progress. Workers take the whole list at
 * once (an exchange: no ABA) and keep its older tasks in their own deque.
 */
void wf__inject(struct wf_executor *ex, wf__task *t)
{
    WF__HB_RELEASE(t);
    wf__task *h = atomic_load_explicit(&ex->inject_head, memory_order_relaxed);
    do
        atomic_store_explicit(&t->next, h, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&ex->inject_head, &h, t, memory_order_release,
                                                  memory_order_relaxed));
    notify(ex);
}

/* Every injected task, newest first (linked by next), or NULL. */
static wf__task *inject_take_all(struct wf_executor *ex)
{
    if (atomic_load_explicit(&ex->inject_head, memory_order_relaxed) == NULL)
        return NULL;
    wf__task *l = atomic_exchange_explicit(&ex->inject_head, NULL, memory_order_acquire);
    for (wf__task *t = l; t; t = atomic_load_explicit(&t->next, memory_order_relaxed))
        WF__HB_ACQUIRE(t);
    return l;
}

/*
 * The oldest injected task. On a worker the others go to its deque, pushed
 * newest first so that it takes them oldest first (idle workers steal them
 * from the other end); elsewhere (the executor's last drain) they go back.
 */
static wf__task *inject_pop(struct wf_executor *ex)
{
    wf__task *l = inject_take_all(ex);
    if (l == NULL)
        return NULL;
    wf__worker *w = wf__tls_worker;
    int mine = w != NULL && w->ex == ex;
    int pushed = 0;
    for (;;) {
        wf__task *nx = atomic_load_explicit(&l->next, memory_order_relaxed);
        if (nx == NULL)
            break;
        if (mine && wf__deque_push(&w->deque, l) == 0)
            pushed = 1;
        else
            wf__inject(ex, l);
        l = nx;
    }
    if (pushed)
        notify(ex);
    return l;
}

static int inject_nonempty(struct wf_executor *ex)
{
    return atomic_load_explicit(&ex->inject_head, memory_order_relaxed) != NULL;
}

/* ---------------------------------------------------------------- schedule */

void wf__schedule_slow(struct wf_executor *ex, wf__task *t)
{
    wf__worker *w = wf__tls_worker;
    if (w == NULL || w->ex != ex) {
        wf__task **cap = wf__tls_capture;
        if (WF__UNLIKELY(cap != NULL) && *cap == NULL && t->kind == WF__TASK_INVOKE &&
            (const void *)t->run == wf__tls_capture_run) {
            *cap = t; /* wf_run_params.run_here: the caller runs it (wf__run_here) */
            return;
        }
        wf__inject(ex, t);
        return;
    }
    if (w->bypass == NULL) {
        w->bypass = t;
        return;
    }
    if (WF__UNLIKELY(wf__deque_push(&w->deque, t) < 0)) {
        wf__inject(ex, t); /* out of memory for a bigger deque: the ring takes it */
        return;
    }
    notify(ex);
}

/* ------------------------------------------------------------ blocking pool */

/*
 * Steps that block (a synchronous HTTP call, a database driver) run here, so
 * a worker never sleeps in a system call with runnable events behind it. A
 * plain mutex and condition variable: these invocations are slow by nature.
 */
static void *blocking_main(void *arg)
{
    wf__slot *slot = arg;
    struct wf_executor *ex = slot->ex;
    wf__tls_slot = slot;
    pthread_mutex_lock(&ex->blk_lock);
    for (;;) {
        wf__task *t = ex->blk_head;
        if (t == NULL) {
            if (ex->blk_stop)
                break;
            ex->blk_idle++;
            pthread_cond_wait(&ex->blk_cond, &ex->blk_lock);
            ex->blk_idle--;
            continue;
        }
        ex->blk_head = atomic_load_explicit(&t->next, memory_order_relaxed);
        if (ex->blk_head == NULL)
            ex->blk_tail = NULL;
        pthread_mutex_unlock(&ex->blk_lock);
        wf__task_run(NULL, t);
        pthread_mutex_lock(&ex->blk_lock);
    }
    pthread_mutex_unlock(&ex->blk_lock);
    return NULL;
}

void wf__blocking_submit(struct wf_executor *ex, wf__task *t)
{
    atomic_store_explicit(&t->next, NULL, memory_order_relaxed);
    pthread_mutex_lock(&ex->blk_lock);
    if (ex->blk_tail)
        atomic_store_explicit(&ex->blk_tail->next, t, memory_order_relaxed);
    else
        ex->blk_head = t;
    ex->blk_tail = t;
    if (ex->blk_idle == 0 && ex->blk_started < ex->blk_max &&
        pthread_create(&ex->blk_threads[ex->blk_started], NULL, blocking_main,
                       &ex->blk_slots[ex->blk_started]) == 0)
        ex->blk_started++;
    else
        pthread_cond_signal(&ex->blk_cond);
    /* with no thread at all (creation failed), a worker runs it rather than never */
    int none = ex->blk_started == 0;
    if (none) {
        ex->blk_head = ex->blk_tail = NULL;
    }
    pthread_mutex_unlock(&ex->blk_lock);
    if (none)
        wf__inject(ex, t);
}

/*
 * wf_run_params.run_here: t (the first invocation of a run, scheduled from
 * this thread outside the pool and kept) runs here, in a guest slot, as a
 * blocking thread would run it: what it schedules is injected. The
 * thread's task state is saved and given back, the caller may be inside a
 * callback of its own. WF_EBUSY when every guest slot is taken (the caller
 * injects t then).
 */
int wf__run_here(struct wf_executor *ex, wf__task *t)
{
    uint32_t g = 0;
    for (;; g++) {
        if (g == WF_RUN_HERE_THREADS)
            return WF_EBUSY;
        uint8_t free_ = 0;
        if (atomic_load_explicit(&ex->guest[g].busy, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong_explicit(&ex->guest[g].busy, &free_, 1,
                                                    memory_order_acquire, memory_order_relaxed))
            break;
    }
    wf__slot *saved = wf__tls_slot;
    wf__tls_slot = &ex->blk_slots[ex->blk_max + g];
    wf__task_run(NULL, t);
    wf__tls_slot = saved;
    atomic_store_explicit(&ex->guest[g].busy, 0, memory_order_release);
    return 0;
}

/*
 * For a live snapshot (cut.c): takes the tasks of run that wait in the
 * pool's queues (the workers' deques, the injection queue, the blocking
 * queue) and gives them back linked by next. The workers that would pick them
 * up may all be waiting for that very snapshot to end (a task about to route
 * waits while the gate is closed), so the snapshot fetches them itself.
 * Tasks of other runs go to the injection queue. Returns how many it took.
 */
uint32_t wf__pool_take_run(struct wf_executor *ex, const void *run, wf__task **out)
{
    wf__task *mine = NULL, *others = NULL;
    uint32_t n = 0;
#define SORT(t)                                                                                    \
    do {                                                                                           \
        if ((t)->kind == WF__TASK_INVOKE && (void *)(t)->run == run) {                             \
            atomic_store_explicit(&(t)->next, mine, memory_order_relaxed);                         \
            mine = (t);                                                                            \
            n++;                                                                                   \
        } else {                                                                                   \
            atomic_store_explicit(&(t)->next, others, memory_order_relaxed);                       \
            others = (t);                                                                          \
        }                                                                                          \
    } while (0)
    for (uint32_t i = 0; i < ex->nworkers; i++) {
        wf__deque *dq = &ex->workers[i].deque;
        /* bounded: the owner may keep pushing tasks of other runs */
        int64_t budget = wf__deque_size(dq) + 16;
        while (budget-- > 0) {
            int lost;
            wf__task *t = wf__deque_steal(dq, &lost);
            if (t == NULL) {
                if (lost)
                    continue;
                break;
            }
            SORT(t);
        }
    }
    for (wf__task *t = inject_take_all(ex), *nx; t; t = nx) {
        nx = atomic_load_explicit(&t->next, memory_order_relaxed);
        SORT(t);
    }
#undef SORT
    pthread_mutex_lock(&ex->blk_lock);
    wf__task *prev = NULL;
    for (wf__task *t = ex->blk_head, *nx; t; t = nx) {
        nx = atomic_load_explicit(&t->next, memory_order_relaxed);
        if (t->kind == WF__TASK_INVOKE && (void *)t->run == run) {
            if (prev)
                atomic_store_explicit(&prev->next, nx, memory_order_relaxed);
            else
                ex->blk_head = nx;
            if (ex->blk_tail == t)
                ex->blk_tail = prev;
            atomic_store_explicit(&t->next, mine, memory_order_relaxed);
            mine = t;
            n++;
        } else {
            prev = t;
        }
    }
    pthread_mutex_unlock(&ex->blk_lock);
    while (others) {
        wf__task *nx = atomic_load_explicit(&others->next, memory_order_relaxed);
        wf__inject(ex, others);
        others = nx;
    }
    *out = mine;
    return n;
}

/*
 * The calling worker is about to wait (for a live snapshot, or for a run in
 * wf_handler_wait): its bypass task goes to its deque, where the snapshot
 * or a thief can reach it, and an idle worker is woken to take it.
 */
void wf__pool_spill_bypass(void)
{
    wf__worker *w = wf__tls_worker;
    if (w == NULL || w->bypass == NULL)
        return;
    wf__task *t = w->bypass;
    w->bypass = NULL;
    if (wf__deque_push(&w->deque, t) < 0)
        wf__inject(w->ex, t); /* it notifies */
    else
        notify(w->ex);
}

static void blocking_stop(struct wf_executor *ex)
{
    pthread_mutex_lock(&ex->blk_lock);
    ex->blk_stop = 1;
    pthread_cond_broadcast(&ex->blk_cond);
    uint32_t n = ex->blk_started;
    pthread_mutex_unlock(&ex->blk_lock);
    for (uint32_t i = 0; i < n; i++)
        pthread_join(ex->blk_threads[i], NULL);
}

/* ----------------------------------------------------------------- workers */

static inline uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Steals up to half of a victim's deque into ours (one CAS per item), returns the first. */
static wf__task *steal_from(wf__worker *w, wf__worker *v)
{
    int lost;
    wf__task *first = wf__deque_steal(&v->deque, &lost);
    if (first == NULL)
        return NULL;
    int64_t more = wf__deque_size(&v->deque) / 2, got = 1;
    for (int64_t i = 0; i < more; i++) {
        wf__task *t = wf__deque_steal(&v->deque, &lost);
        if (t == NULL)
            break;
        got++;
        if (wf__deque_push(&w->deque, t) < 0) {
            wf__inject(w->ex, t);
            break;
        }
    }
    if (wf__obs_on(w->ex, WF_OBS_STEAL)) {
        wf__obs_rec r = {.kind = WF_OBS_STEAL,
                         .step = WF__OBS_NO_STEP,
                         .type = WF__OBS_NO_TYPE,
                         .dv = got,
                         .attempt = v->index};
        wf__obs_write(w->ex, &r);
    }
    return first;
}

static wf__task *steal(wf__worker *w)
{
    struct wf_executor *ex = w->ex;
    uint32_t n = ex->nworkers;
    if (n < 2)
        return NULL;
    uint32_t start = xorshift(&w->rng) % n;
    for (uint32_t k = 0; k < n; k++) {
        wf__worker *v = &ex->workers[(start + k) % n];
        if (v == w)
            continue;
        wf__task *t = steal_from(w, v);
        if (t)
            return t;
    }
    return NULL;
}

static int any_work(struct wf_executor *ex)
{
    if (inject_nonempty(ex))
        return 1;
    for (uint32_t i = 0; i < ex->nworkers; i++)
        if (wf__deque_size(&ex->workers[i].deque) > 0)
            return 1;
    return 0;
}

static wf__task *find_work(wf__worker *w)
{
    wf__task *t = wf__deque_take(&w->deque);
    if (t)
        return t;
    t = inject_pop(w->ex);
    if (t)
        return t;
    return steal(w);
}

static void park(wf__worker *w)
{
    struct wf_executor *ex = w->ex;
    pthread_mutex_lock(&ex->idle_lock);
    atomic_store(&w->parked, 1);
    ex->idle_stack[ex->idle_top++] = w->index;
    atomic_fetch_add(&ex->n_idle, 1);
    pthread_mutex_unlock(&ex->idle_lock);
    /*
     * The raise of n_idle before the re-check, against pushers that only
     * pass wf__fence_light in notify: every running thread passes a full
     * barrier here (membarrier), so a push it made before is seen below, or
     * its notify after sees n_idle raised.
     */
    wf__fence_heavy();
    if (any_work(ex) || atomic_load(&ex->stopping)) {
        /* Take ourselves off the idle stack unless a waker already did. */
        pthread_mutex_lock(&ex->idle_lock);
        if (atomic_load(&w->parked)) {
            for (uint32_t i = 0; i < ex->idle_top; i++) {
                if (ex->idle_stack[i] == w->index) {
                    ex->idle_stack[i] = ex->idle_stack[--ex->idle_top];
                    break;
                }
            }
            atomic_fetch_sub(&ex->n_idle, 1);
            atomic_store(&w->parked, 0);
            atomic_fetch_add(&ex->n_spinning, 1);
        }
        pthread_mutex_unlock(&ex->idle_lock);
        return;
    }
    int64_t t0 = 0;
    if (wf__obs_on(ex, WF_OBS_PARK)) {
        wf__obs_rec r = {.kind = WF_OBS_PARK, .step = WF__OBS_NO_STEP, .type = WF__OBS_NO_TYPE};
        wf__obs_write(ex, &r);
        t0 = r.ts;
    }
    wf__alloc_idle(); /* its cached blocks go home if asked (alloc.c) */
    while (atomic_load(&w->parked))
        futex_wait(&w->parked, 1);
    /* wake_one counted us as spinning */
    if (wf__obs_on(ex, WF_OBS_UNPARK)) {
        wf__obs_rec r = {.kind = WF_OBS_UNPARK,
                         .step = WF__OBS_NO_STEP,
                         .type = WF__OBS_NO_TYPE,
                         .ts = wf__obs_now()};
        r.dv = t0 ? r.ts - t0 : 0;
        wf__obs_write(ex, &r);
    }
}

static void *worker_main(void *arg)
{
    wf__worker *w = arg;
    struct wf_executor *ex = w->ex;
    wf__tls_worker = w;
    wf__tls_slot = &w->slot;
    atomic_fetch_add(&ex->n_spinning, 1);
    int spinning = 1;
    for (;;) {
        wf__task *t = w->bypass;
        if (t) {
            w->bypass = NULL;
            /* Fairness: a chain fed through the bypass must not starve older work. */
            if (WF__UNLIKELY(++w->tick % WF__FAIRNESS_TICK == 0)) {
                if (wf__tls_nkept)
                    wf__kept_flush(1); /* kept slots go back (a bounded step's queue may wait) */
                wf__task *o = inject_pop(ex);
                if (o == NULL) {
                    int lost;
                    o = wf__deque_steal(&w->deque, &lost);
                }
                if (o) {
                    if (wf__deque_push(&w->deque, t) < 0)
                        wf__inject(ex, t);
                    else
                        notify(ex);
                    t = o;
                }
            }
        } else {
            if (WF__UNLIKELY(wf__tls_nkept >= WF__KEPT_BOUNDED)) {
                /* the chain ended: bounded steps' kept slots go back (may wake an event here) */
                wf__kept_flush(0);
                t = w->bypass;
                w->bypass = NULL;
            }
            if (t == NULL)
                t = find_work(w);
            if (t == NULL && WF__UNLIKELY(wf__tls_nkept)) {
                /* no work: the slots of steps without a bound go back too */
                wf__kept_flush(1);
                t = w->bypass;
                w->bypass = NULL;
                if (t == NULL)
                    t = find_work(w);
            }
        }
        if (t) {
            if (spinning) {
                spinning = 0;
                /* The last spinner to find work wakes another to look for more. */
                if (atomic_fetch_sub(&ex->n_spinning, 1) == 1)
                    notify(ex);
            }
            wf__task_run(w, t);
            continue;
        }
        if (atomic_load_explicit(&ex->stopping, memory_order_acquire))
            break;
        if (!spinning) {
            spinning = 1;
            atomic_fetch_add(&ex->n_spinning, 1);
        }
        /* Spin a while before parking: a park/wake round trip costs ~10 µs here. */
        int64_t until = wf__now_ns() + (int64_t)ex->spin_us * 1000;
        while (t == NULL && wf__now_ns() < until &&
               !atomic_load_explicit(&ex->stopping, memory_order_relaxed)) {
            for (int i = 0; i < 32 && t == NULL; i++) {
                ck_pr_stall();
                t = find_work(w);
            }
            /*
             * On a shared machine a spinner may hold the very core its
             * busy sibling (or whoever feeds it) was preempted from:
             * yield it between rounds. Parallel at 2 threads with another
             * process on one core: 0.79 of the time without (5 pairs).
             */
            if (t == NULL)
                sched_yield();
        }
        if (t) {
            spinning = 0;
            if (atomic_fetch_sub(&ex->n_spinning, 1) == 1)
                notify(ex);
            wf__task_run(w, t);
            continue;
        }
        if (WF__UNLIKELY(wf__tls_nkept)) {
            /* kept slots of a run a live snapshot holds: never parked with (it may end the run) */
            sched_yield();
            continue;
        }
        atomic_fetch_sub(&ex->n_spinning, 1);
        spinning = 0;
        park(w);
        spinning = 1; /* parked workers come back counted as spinners */
    }
    if (spinning)
        atomic_fetch_sub(&ex->n_spinning, 1);
    wf__kept_flush(1); /* none: the last round ran out of work */
    wf__tls_worker = NULL;
    wf__tls_slot = NULL;
    return NULL;
}

/* --------------------------------------------------------------- executor */

void wf_executor_params_init(wf_executor_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->spin_us = 50;
    p->blocking_threads = 4;
    p->observe_buffer = 4096;
}

void wf__log(struct wf_executor *ex, wf_log_level lvl, const char *fmt, ...)
{
    if (ex == NULL || ex->log == NULL)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ex->log(lvl, buf, ex->log_user);
}

static void ex_destroy(struct wf_executor *ex)
{
    if (ex->workers) {
        for (uint32_t i = 0; i < ex->nworkers; i++)
            wf__deque_destroy(&ex->workers[i].deque);
    }
    wf__free_aligned(ex->workers);
    wf__free_mem(ex->idle_stack);
    for (uint32_t i = 0; i < WF__TIMER_SHARDS; i++)
        wf__free_mem(ex->tshards[i].heap);
    wf__free_mem(ex->blk_threads);
    wf__free_aligned(ex->blk_slots);
    if (ex->worker_ids) {
        for (uint32_t i = 0; i <= ex->nworkers + ex->blk_max + WF_RUN_HERE_THREADS; i++)
            wf_value_release(ex->worker_ids[i]);
        wf__free_mem(ex->worker_ids);
    }
    pthread_mutex_destroy(&ex->blk_lock);
    pthread_cond_destroy(&ex->blk_cond);
    pthread_mutex_destroy(&ex->idle_lock);
    pthread_mutex_destroy(&ex->timer_lock);
    pthread_cond_destroy(&ex->timer_cond);
    pthread_mutex_destroy(&ex->runs_lock);
    pthread_cond_destroy(&ex->runs_cond);
    wf__free_aligned(ex);
}

int wf_executor_new(wf_executor **out, const wf_executor_params *params)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = NULL;
    wf_executor_params defaults;
    if (params == NULL) {
        wf_executor_params_init(&defaults);
        params = &defaults;
    }
    uint32_t n = params->threads;
    if (n == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (uint32_t)c : 1;
    }
    if (n > 1024)
        return WF_EINVAL;
    struct wf_executor *ex = wf__malloc_aligned(sizeof *ex);
    if (ex == NULL)
        return WF_ENOMEM;
    wf__mutex_init(&ex->idle_lock);
    wf__mutex_init(&ex->timer_lock);
    wf__mutex_init(&ex->runs_lock);
    pthread_mutex_init(&ex->blk_lock, NULL);
    pthread_cond_init(&ex->blk_cond, NULL);
    ex->blk_max = params->blocking_threads;
    ex->obs_buffer = params->observe_buffer;
    atomic_init(&ex->durable, NULL);
    pthread_cond_init(&ex->runs_cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ex->timer_cond, &ca);
    pthread_condattr_destroy(&ca);
    ex->nworkers = n;
    ex->spin_us = params->spin_us;
    ex->log = params->log;
    ex->log_user = params->log_user;
    atomic_init(&ex->next_run_id, 1);
    static _Atomic uint64_t executors;
    ex->gen = atomic_fetch_add(&executors, 1) + 1;
    ex->workers = wf__malloc_aligned(n * sizeof *ex->workers);
    ex->idle_stack = wf__calloc(n, sizeof *ex->idle_stack);
    ex->blk_threads = wf__calloc(ex->blk_max ? ex->blk_max : 1, sizeof *ex->blk_threads);
    ex->blk_slots = wf__malloc_aligned(((size_t)ex->blk_max + WF_RUN_HERE_THREADS) *
                                       sizeof *ex->blk_slots); /* zeroed */
    if (ex->workers == NULL || ex->idle_stack == NULL ||
        ex->blk_threads == NULL || ex->blk_slots == NULL) {
        ex_destroy(ex);
        return WF_ENOMEM;
    }
    wf__membarrier_init();
    for (uint32_t i = 0; i < ex->blk_max + WF_RUN_HERE_THREADS; i++) {
        ex->blk_slots[i].ex = ex;
        ex->blk_slots[i].index = n + i;
    }
    uint32_t nids = n + ex->blk_max + WF_RUN_HERE_THREADS + 1;
    ex->worker_ids = wf__calloc(nids, sizeof *ex->worker_ids);
    if (ex->worker_ids == NULL) {
        ex_destroy(ex);
        return WF_ENOMEM;
    }
    for (uint32_t i = 0; i < nids; i++) {
        char id[32];
        if (i < n)
            snprintf(id, sizeof id, "worker %u", i);
        else if (i < n + ex->blk_max)
            snprintf(id, sizeof id, "blocking %u", i - n);
        else
            snprintf(id, sizeof id, "outside");
        if (wf_value_string(&ex->worker_ids[i], id) < 0) {
            ex_destroy(ex);
            return WF_ENOMEM;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        wf__worker *w = &ex->workers[i];
        w->ex = ex;
        w->index = i;
        w->slot.ex = ex;
        w->slot.index = i;
        w->rng = 0x9e3779b9u * (i + 1);
        atomic_init(&w->parked, 0);
        if (wf__deque_init(&w->deque, 1024) < 0) {
            ex_destroy(ex);
            return WF_ENOMEM;
        }
    }
    if (wf__timers_start(ex) < 0) {
        ex_destroy(ex);
        return WF_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (pthread_create(&ex->workers[i].thread, NULL, worker_main, &ex->workers[i]) != 0) {
            atomic_store(&ex->stopping, 1);
            for (uint32_t j = 0; j < i; j++) {
                while (atomic_load(&ex->n_idle))
                    wake_one(ex);
                pthread_join(ex->workers[j].thread, NULL);
            }
            wf__timers_stop(ex);
            ex_destroy(ex);
            return WF_ENOMEM;
        }
    }
    *out = ex;
    return 0;
}

uint32_t wf_executor_threads(const wf_executor *ex)
{
    return ex ? ex->nworkers : 0;
}

void wf_executor_free(wf_executor *ex)
{
    if (ex == NULL)
        return;
    if (wf__own_thread(ex)) {
        /* it would wait for the very thread it runs on: refuse, loudly, rather than hang */
        wf__log(ex, WF_LOG_ERROR,
                "wf_executor_free called from a thread of the same executor (a step or an "
                "on_done callback): refused, the executor is left running; free it from "
                "another thread");
        return;
    }
    /* durable runs: a last checkpoint; they stay in flight in the store (durable.c) */
    wf__durable_close(ex);
    /* Cancel what still runs, then wait until every run's tasks are gone. */
    wf__runs_cancel_all(ex);
    pthread_mutex_lock(&ex->runs_lock);
    while (wf__runs_live(ex) > 0) /* shutting_down is set: each lowering broadcasts */
        pthread_cond_wait(&ex->runs_cond, &ex->runs_lock);
    pthread_mutex_unlock(&ex->runs_lock);

    blocking_stop(ex);
    atomic_store(&ex->stopping, 1);
    for (uint32_t i = 0; i < ex->nworkers; i++) {
        /* wake everyone until all have seen the flag */
        while (atomic_load(&ex->n_idle))
            wake_one(ex);
    }
    for (uint32_t i = 0; i < ex->nworkers; i++) {
        pthread_join(ex->workers[i].thread, NULL);
        while (atomic_load(&ex->n_idle))
            wake_one(ex);
    }
    wf__timers_stop(ex);
    wf__obs_shutdown(ex); /* every thread that writes records is gone */
    /* Tasks left behind (CALL tasks of ended runs) have nothing to free but themselves. */
    wf__task *t, *nx;
    while ((t = inject_take_all(ex)) != NULL)
        for (; t; t = nx) {
            nx = atomic_load_explicit(&t->next, memory_order_relaxed);
            wf__task_run(NULL, t);
        }
    ex_destroy(ex);
}
