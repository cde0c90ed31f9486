/*
 * exec.h: the executor's internals (pool, deque, timers, runs).
 */
#ifndef WF_EXEC_H
#define WF_EXEC_H

#include "internal.h"

#include <ck_ring.h>

#if defined(__SANITIZE_THREAD__)
#define WF__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WF__TSAN 1
#endif
#endif
#ifndef WF__TSAN
#define WF__TSAN 0
#endif

#if WF__TSAN
#include <sanitizer/tsan_interface.h>
/*
 * Concurrency Kit orders its ring with fences and volatile accesses, which
 * ThreadSanitizer does not model; these annotations state the
 * happens-before edge the ring provides (producer's writes to an item are
 * visible to the consumer that dequeues it).
 */
#define WF__HB_RELEASE(p) __tsan_release((void *)(p))
#define WF__HB_ACQUIRE(p) __tsan_acquire((void *)(p))
/*
 * TSan does not model stand-alone fences; a seq_cst read-modify-write of the
 * variable read next is what it understands (and is as strong on x86).
 */
#define WF__FENCE_BEFORE_LOAD(a) ((void)atomic_fetch_add_explicit((a), 0, memory_order_seq_cst))
#else
#define WF__FENCE_BEFORE_LOAD(a) atomic_thread_fence(memory_order_seq_cst)
#define WF__HB_RELEASE(p)        ((void)0)
#define WF__HB_ACQUIRE(p)        ((void)0)
#endif

/* ------------------------------------------------------------------ tasks */

struct wf__worker;
struct wf__run;
struct wf__group;

enum { WF__TASK_INVOKE = 0, WF__TASK_CALL = 1 };

/*
 * A unit of work. INVOKE: run step `step` of `run` on `ev` (the task owns one
 * reference on ev). CALL: fn(arg). `next` links tasks in the pending queues
 * (Vyukov MPSC, hence atomic) and in lists.
 */
typedef struct wf__task {
    _Atomic(struct wf__task *) next;
    struct wf__run *run;
    wf_event *ev;
    uint32_t step;
    uint32_t attempt;
    uint8_t kind;
    uint8_t shard; /* INVOKE of an unbounded step: the count shard it is counted in (route.c) */
    uint16_t flags;
    uint32_t pad;
    union {
        void (*fn)(void *arg);   /* CALL */
        struct wf__group *group; /* INVOKE: the list fan-out group of its branch, or NULL */
    } u;
    void *arg;
    /* INVOKE: events claimed in one go, run after this one in the same slot */
    struct wf__task *chain;
} wf__task;

/* A task from the calling thread's cache (tasks have a cache class of their own). */
static inline wf__task *wf__task_alloc(void)
{
    _Static_assert(sizeof(wf__task) <= 64, "a task fits its class");
    wf__task *t = wf__cache_alloc_cls(WF__CLS_TASK);
    if (t) {
        atomic_init(&t->next, NULL);
        t->chain = NULL;
        t->u.group = NULL;
        t->pad = 0; /* INVOKE: the branch */
        t->shard = 0;
        t->flags = 0;
        t->attempt = 1;
    }
    return t;
}

static inline void wf__task_free(wf__task *t)
{
    if (t)
        wf__cache_free(t, WF__CLS_TASK);
}

/* --------------------------------------------------------- chase-lev deque */

/*
 * A Chase-Lev work-stealing deque (Lê et al., PPoPP'13 orderings) on ck_pr.
 * The owner pushes and takes at the bottom; thieves steal at the top.
 * Reclamation: a grown buffer's old array is kept on a list and freed with
 * the deque, so a thief reading a stale array never touches freed memory;
 * the arrays double, so the retired ones together are smaller than the live
 * one.
 */
typedef struct wf__deque_array {
    int64_t size; /* power of two */
    struct wf__deque_array *retired;
    void *slot[];
} wf__deque_array;

typedef struct wf__deque {
    int64_t top WF__ALIGNED;    /* thieves CAS it */
    int64_t bottom WF__ALIGNED; /* written by the owner only */
    wf__deque_array *array;     /* owner writes (on growth), all read */
} wf__deque;

int wf__deque_init(wf__deque *d, int64_t size);
void wf__deque_destroy(wf__deque *d);
/* Owner only. WF_ENOMEM if growing failed (the item was not pushed). */
int wf__deque_push(wf__deque *d, void *item);
/* Owner only. NULL when empty. */
void *wf__deque_take(wf__deque *d);
/* Any thread. NULL when empty; *lost set when a race was lost (retry later). */
void *wf__deque_steal(wf__deque *d, int *lost);
/* Any thread; a racy estimate. */
int64_t wf__deque_size(const wf__deque *d);

/* ------------------------------------------------------------------ timers */

/* A timer, embedded in its owner. fn runs on the timer thread; keep it short. */
typedef struct wf__timer {
    int64_t deadline_ns;           /* CLOCK_MONOTONIC */
    uint32_t heap_index;           /* WF__TIMER_IDLE, WF__TIMER_FIFO or a heap slot (shard lock) */
    uint16_t fifo;                 /* which FIFO of its shard, when in one */
    uint16_t shard;                /* the shard it was armed in */
    struct wf__timer *prev, *next; /* FIFO links */
    void (*fn)(struct wf__timer *t, void *arg);
    void *arg;
} wf__timer;

#define WF__TIMER_IDLE  UINT32_MAX
#define WF__TIMER_FIFO  (UINT32_MAX - 1)
#define WF__TIMER_FIFOS 8

/*
 * Timers that share a duration (every run timeout of a workflow) expire in
 * the order they were armed, so they go in a FIFO per duration: O(1) to arm
 * and cancel. Others go in the heap.
 */
typedef struct wf__timer_fifo {
    int64_t duration_ns;
    wf__timer *head, *tail;
} wf__timer_fifo;

#define WF__RUN_SHARDS 8

/* The runs a shard of threads created and not yet ended (run.c). */
typedef struct wf__run_shard {
    wf__lock lock;
    struct wf__run *head; /* under lock: wf__run.prev, next, listed */
    _Atomic uint64_t live; /* its runs not quiescent yet (raised at create, lowered at the end) */
} __attribute__((aligned(WF__CACHELINE))) wf__run_shard;

/*
 * Timers are armed in the arming thread's shard (threads take shards in
 * turn), each with its own lock, heap and FIFOs: threads that start runs
 * at once (each arming and cancelling a run timeout) do not pass one lock
 * and one FIFO's tail between cores. The timer thread looks at every shard.
 */
#define WF__TIMER_SHARDS 8
typedef struct wf__timer_shard {
    wf__lock lock;
    uint32_t heap_n, heap_cap, nfifos;
    wf__timer **heap;
    wf__timer_fifo fifos[WF__TIMER_FIFOS];
} __attribute__((aligned(WF__CACHELINE))) wf__timer_shard;

int64_t wf__now_ns(void);

/* ------------------------------------------------------------------- pool */

/*
 * What a thread that runs tasks (a worker or a blocking-pool thread) is doing
 * for the run a live snapshot looks at (cut.c). state: 0 when between tasks,
 * else the run's address, with bit 0 set while the task has effects the run
 * can see (routing, finishing its slot, coordination calls): a snapshot waits
 * for those to end and records a task that has none as "in progress". task:
 * the task being run, valid while state names a run. A cache line each:
 * its thread writes it on every task, and the blocking and guest slots sit
 * side by side in one array (two guests running at once would pass a
 * shared line between cores on every invocation).
 */
typedef struct wf__slot {
    _Atomic uintptr_t state;
    _Atomic(struct wf__task *) task;
    struct wf_executor *ex; /* blocking-pool slots: their executor */
    uint32_t index;         /* workers 0..n-1, blocking threads n.. (observation rings) */
} __attribute__((aligned(WF__CACHELINE))) wf__slot;

#define WF__SLOT_DIRTY ((uintptr_t)1)

/* The calling thread's slot, or NULL (a thread outside the executor). */
extern WF__TLS wf__slot *wf__tls_slot;

/*
 * The asymmetric fence of live snapshots: a task runner stores its slot and
 * then reads the run's gate with only wf__fence_light (a compiler barrier when
 * membarrier(2) is available, else a full fence); the snapshot stores the
 * gate and then runs wf__fence_heavy (membarrier: every running thread of
 * the process passes a full barrier) before it reads the slots.
 */
extern int wf__membarrier_ok;
int wf__membarrier_init(void);
void wf__fence_heavy(void);
static inline void wf__fence_light(void)
{
#if WF__TSAN
    atomic_thread_fence(memory_order_seq_cst);
#else
    if (WF__LIKELY(wf__membarrier_ok))
        atomic_signal_fence(memory_order_seq_cst);
    else
        atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Every N tasks a worker looks at the injection queue and its deque's top before its bypass. */
#define WF__FAIRNESS_TICK 61

typedef struct wf__worker {
    struct wf_executor *ex;
    uint32_t index;
    wf__task *bypass; /* the next task, run before the deque (owner only) */
    uint32_t tick;    /* owner only: fairness counter */
    uint32_t rng;     /* owner only: victim choice */
    wf__deque deque;
    wf__slot slot;                  /* written by the owner only */
    _Atomic int parked WF__ALIGNED; /* futex word: 1 while parked */
    pthread_t thread;
} wf__worker;

struct wf_executor {
    wf__worker *workers;
    uint32_t nworkers;
    uint32_t spin_us;
    wf_log_fn log;
    void *log_user;

    /*
     * The injection queue (pool.c): a lock-free LIFO of tasks linked by
     * next. Producers push with a CAS and never wait for one another; a
     * worker takes the whole list with one exchange.
     */
    _Atomic(wf__task *) inject_head WF__ALIGNED;

    /* idle workers: n_spinning/n_idle atomics, the idle stack under idle_lock */
    _Atomic uint32_t n_spinning WF__ALIGNED;
    _Atomic uint32_t n_idle;
    pthread_mutex_t idle_lock;
    uint32_t *idle_stack;
    uint32_t idle_top;
    _Atomic int stopping;

    /* timers (timer.c): the shards, and the thread's sleep under timer_lock */
    wf__timer_shard tshards[WF__TIMER_SHARDS];
    pthread_mutex_t timer_lock;
    pthread_cond_t timer_cond;
    int timer_stop;   /* timer_lock */
    int timer_poked;  /* timer_lock: an earlier deadline came while the thread looked */
    /*
     * The deadline the timer thread sleeps until; INT64_MAX while it looks
     * at the shards (or sleeps with nothing armed). Arming takes timer_lock
     * and signals only for an earlier deadline; a cancelled timer leaves
     * it, so the thread wakes then for nothing at worst. Runs that arm a
     * timeout and end before it (all but a few) cost no lock but their
     * shard's and no wake-up.
     */
    _Atomic int64_t timer_wake_at;
    pthread_t timer_thread;

    /* the blocking pool: a locked FIFO and threads started on first use */
    pthread_mutex_t blk_lock;
    pthread_cond_t blk_cond;
    wf__task *blk_head, *blk_tail;
    pthread_t *blk_threads;
    /*
     * One per blocking thread, then WF_RUN_HERE_THREADS for threads outside
     * the pool that run a run's first invocation (wf_run_params.run_here):
     * a live snapshot and the observation rings see them as they see the
     * blocking threads'. guest: claimed by such a thread (CAS on busy),
     * a cache line each.
     */
    wf__slot *blk_slots;
    struct {
        _Atomic uint8_t busy;
    } __attribute__((aligned(WF__CACHELINE))) guest[WF_RUN_HERE_THREADS];
    /*
     * StepStateChanged's worker_id of each slot ("worker N", "blocking N",
     * for a guest "outside"), then "outside" itself: shared string values,
     * built once (handler.c).
     */
    wf_value *worker_ids;
    uint32_t blk_max, blk_started, blk_idle;
    uint32_t obs_buffer; /* wf_executor_params.observe_buffer, as given */
    int blk_stop;

    /* observation (observe.c): obs_mask is the hooks' one branch; rings etc. in obs */
    _Atomic uint32_t obs_mask WF__ALIGNED;
    struct wf__obs *obs;

    /*
     * runs (run.c): the runs not yet ended, in the creating thread's shard
     * (wf__run_shard), so that threads starting runs at once pass no lock
     * between cores. runs_lock: the limiters below, the observers' maker,
     * runs_cond (the executor's end waits there for every shard's live
     * count to reach 0).
     */
    pthread_mutex_t runs_lock;
    pthread_cond_t runs_cond;
    wf__run_shard rshards[WF__RUN_SHARDS];
    /* run ids: threads take blocks of WF__RUN_ID_BLOCK (run.c) */
    _Atomic uint64_t next_run_id;
    uint64_t gen; /* this executor among every one the process made (a thread's block names it) */
    /*
     * Set once, by the executor's end (wf__runs_cancel_all): no run is
     * created after it (a create looks under its shard's lock, the end
     * looks at each shard after setting it); from then on whoever lowers a
     * live count broadcasts runs_cond.
     */
    _Atomic int shutting_down;
    /* num_concurrent_runs: per limited workflow, its active and waiting runs (run.c), under runs_lock */
    struct wf__limiter *limiters;
    /* the attached store and its checkpoint thread (durable.c), or NULL */
    _Atomic(struct wf__durable *) durable;
};

/* wf_executor_free begins: last checkpoints, the checkpoint thread stops (durable.c). */
void wf__durable_close(struct wf_executor *ex);

/* The worker the calling thread is, or NULL. */
extern WF__TLS wf__worker *wf__tls_worker;
/*
 * Slots of finished invocations the calling worker keeps (wf__kept,
 * engine.h): its entries, counted in units of WF__KEPT_ANY, and those of
 * bounded steps (given back when a chain ends) again in WF__KEPT_BOUNDED
 * (at most WF__KEPT_MAX = 8 entries: the first count stays below it).
 */
extern WF__TLS uint32_t wf__tls_nkept;
#define WF__KEPT_ANY            1u
#define WF__KEPT_BOUNDED        16u
#define WF__KEPT_UNIT_UNBOUNDED WF__KEPT_ANY /* an entry's unit (wf__step_state.keep) */
#define WF__KEPT_UNIT_BOUNDED   (WF__KEPT_ANY | WF__KEPT_BOUNDED) /* a bounded step's */
/*
 * Gives the slots the calling thread keeps back (route.c): all of them, or
 * (all 0: a chain ended) those that must not wait for the worker to run out
 * of work: a bounded step's (events may queue behind them) and an ended
 * run's (they hold its quiescence up).
 */
void wf__kept_flush(int all);

/* 1 if the calling thread is one of ex's workers; 2 one of its blocking threads; else 0. */
static inline int wf__own_thread(const struct wf_executor *ex)
{
    const wf__slot *s = wf__tls_slot;
    if (s == NULL || s->ex != ex)
        return 0;
    return wf__tls_worker && wf__tls_worker->ex == ex ? 1 : 2;
}
wf__worker *wf__current_worker(void);
void wf__schedule_slow(struct wf_executor *ex, wf__task *t);
/*
 * wf_run_params.run_here: while set on a thread outside the pool, the first
 * invocation task of wf__tls_capture_run that is scheduled is kept in
 * *wf__tls_capture instead of injected (wf_run_start_ex then runs it).
 */
extern WF__TLS struct wf__task **wf__tls_capture;
extern WF__TLS const void *wf__tls_capture_run;
/* Runs t on the calling thread (outside the pool) in a guest slot: 0, or WF_EBUSY (none free). */
int wf__run_here(struct wf_executor *ex, struct wf__task *t);

/* Puts t in the calling worker's bypass slot when it is one of ex's and the slot is free. */
static inline int wf__bypass_try(struct wf_executor *ex, wf__task *t)
{
    wf__worker *w = wf__tls_worker;
    if (w == NULL || w->ex != ex || w->bypass != NULL)
        return 0;
    w->bypass = t;
    return 1;
}

/* Schedules t: on the caller's worker (bypass or deque) when it is one of ex's, else injected. */
static inline void wf__schedule(struct wf_executor *ex, wf__task *t)
{
    if (!wf__bypass_try(ex, t))
        wf__schedule_slow(ex, t);
}
/* Queues t for the blocking pool. */
void wf__blocking_submit(struct wf_executor *ex, wf__task *t);
/* Injects t from any thread. */
void wf__inject(struct wf_executor *ex, wf__task *t);
/* Live snapshots: take run's queued tasks out of the pool; spill the bypass before waiting. */
uint32_t wf__pool_take_run(struct wf_executor *ex, const void *run, wf__task **out);
void wf__pool_spill_bypass(void);
/* Runs one task (invoke.c). */
void wf__task_run(wf__worker *w, wf__task *t);

int wf__timer_arm(struct wf_executor *ex, wf__timer *t, int64_t deadline_ns);
/* Arms t to expire duration_ns from now (FIFO per duration when possible). */
int wf__timer_arm_after(struct wf_executor *ex, wf__timer *t, int64_t duration_ns);
/* 1 if the timer was armed and is now disarmed (its fn will not run), else 0. */
int wf__timer_cancel(struct wf_executor *ex, wf__timer *t);
int wf__timers_start(struct wf_executor *ex);
void wf__timers_stop(struct wf_executor *ex);

void wf__log(struct wf_executor *ex, wf_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------- observation */

/*
 * A record as the hooks write it into a ring (observe.c turns it into a
 * wf_obs_record). Names are resolved by the exporter thread: wf stays alive
 * (the executor holds every observed workflow until it is freed), types
 * belong to wf's registry, message is an owned copy (or NULL).
 */
typedef struct wf__obs_rec {
    uint8_t kind;     /* a wf_obs_kind, or WF__OBS_STEP */
    uint8_t flags;    /* WF__OBS_F_* */
    uint16_t step;    /* index in wf, WF__OBS_NO_STEP: none (or beyond 65534 steps) */
    int32_t error;    /* WF__OBS_STEP with WF__OBS_F_RET: the returned event's type id */
    uint32_t type;    /* type id in wf's registry, WF__OBS_NO_TYPE: none */
    uint32_t attempt; /* RUN_END: the status; STEAL: the victim; see WF__OBS_F_ROUTED */
    int64_t ts;       /* 0: wf__obs_write reads the clock */
    uint64_t run_id;
    const struct wf_workflow *wf;
    uint64_t event_id;
    int64_t dv; /* by kind: a duration (STEP, STEP_END, RUN_END, WAIT_RESUME, UNPARK) or a value */
    union {
        char *message;     /* owned */
        uint64_t route_id; /* WF__OBS_STEP with WF__OBS_F_ROUTED: the routing's event_id */
    };
} wf__obs_rec; /* one cache line: the ring's lines cross cores, so bytes count */
_Static_assert(sizeof(wf__obs_rec) == 64, "an observation record is one cache line");

/*
 * WF__OBS_STEP: a whole invocation in one record, as most are observed: its
 * STEP_START (ts) and STEP_END (ts + dv, error, message). With
 * WF__OBS_F_RET it returned an event, whose type id is in error (no error,
 * no message), and the record may also stand for that event's EVENT_EMIT
 * (WF__OBS_F_OUT) and its first EVENT_ROUTE (WF__OBS_F_ROUTED: the type
 * id in error's low 16 bits, the route's step in its high 16; dv's high 23
 * bits the events queued behind it; route_id its event_id). The start's
 * fields (ts, run_id, wf, step, type, attempt, event_id) are not written
 * again once held: the exporter may read them while the step runs. The
 * exporter gives observers the records it stands for.
 */
#define WF__OBS_STEP     0x40u
#define WF__OBS_F_OUT    2u
#define WF__OBS_F_ROUTED 4u
#define WF__OBS_F_RET    8u
/* SPAN_ATTR: message holds "key\0value" (else the integer is in dv) */
#define WF__OBS_F_STR    16u
#define WF__OBS_DUR_BITS 40

/*
 * A thread's observation ring (observe.c): the producer's line, then the
 * exporter's. Here for the hooks' inline drop path (wf__obs_drop_*).
 */
typedef struct wf__obs_ring {
    _Atomic uint64_t head WF__ALIGNED; /* producer */
    wf__obs_rec *recs;                 /* producer's first record makes it (outside: at once) */
    uint64_t tail_cache;               /* producer's view of tail */
    const struct wf_workflow *last_wf; /* producer's: the last workflow it made sure is held */
    _Atomic uint64_t dropped;          /* producer stores, anyone reads */
    _Atomic uint64_t merged;           /* producer stores: records standing for more than one */
    uint32_t full_checks;              /* producer's: tail re-read only every 64th full write */
    /*
     * head + 1 while the slot at head holds a STEP_START not yet published
     * (an invocation running): its start fields stay as written until the
     * slot is published, so the exporter may read them (observe.c, drain()).
     */
    _Atomic uint64_t held;
    _Atomic uint64_t tail WF__ALIGNED; /* consumer */
    uint64_t shown;                    /* exporter's: the slot whose START it delivered early */
} wf__obs_ring;

/*
 * What the calling thread holds back: a reserved, unpublished slot of its
 * own ring (always the one at its head) with an invocation's STEP_START
 * (WF__HELD_START), its STEP record waiting for the returned event's
 * routing (WF__HELD_OUT), or that event's EVENT_EMIT alone (WF__HELD_EMIT;
 * slot NULL if the ring was full: the emit was dropped, counted). ex, o,
 * rg, mask: the thread's ring, cached (a pool thread serves one executor
 * for its life).
 *
 * drop_left: the drop window. An invocation that finds the ring full opens
 * it: the thread's next drop_left invocations and every routing it makes
 * meanwhile are counted as dropped inline, without looking at the ring
 * (its tail is the exporter's cache line); the invocation after them looks
 * again, as does the first after the exporter's next drain round (*drained
 * no longer drained_seen: a flush ends every window). Nothing is held
 * while it is open.
 */
enum { WF__HELD_NONE, WF__HELD_START, WF__HELD_OUT, WF__HELD_EMIT };
#define WF__OBS_DROP_WINDOW 64
typedef struct wf__obs_tls {
    struct wf_executor *ex;
    struct wf__obs *o;
    wf__obs_ring *rg;
    uint64_t mask; /* the ring's size - 1 */
    uint32_t drop_left;
    uint32_t drained_seen;
    const _Atomic uint32_t *drained;
    _Atomic int *sleeping; /* the exporter's futex word */
    uint8_t state;
    uint16_t emit_step; /* WF__HELD_EMIT: the emitting step */
    wf__obs_rec *slot;
    uint64_t run_id;
    uint64_t event_id;  /* WF__HELD_START: the invocation's */
    const void *out_ev; /* WF__HELD_OUT, WF__HELD_EMIT: the returned event (set by the caller) */
} wf__obs_tls;
extern WF__TLS wf__obs_tls wf__obs_held;

#define WF__OBS_NO_STEP UINT16_MAX
#define WF__OBS_NO_TYPE UINT32_MAX

/*
 * Hooks: cheap test first (one relaxed load of a read-mostly word). A build
 * with -Dobserve_hooks=false (WF_NO_OBSERVE) compiles them out, to measure
 * what they cost when no observer is installed.
 */
static inline uint32_t wf__obs_mask(struct wf_executor *ex)
{
#ifdef WF_NO_OBSERVE
    (void)ex;
    return 0;
#else
    return atomic_load_explicit(&ex->obs_mask, memory_order_relaxed);
#endif
}
static inline int wf__obs_on(struct wf_executor *ex, unsigned kind)
{
    return WF__UNLIKELY(wf__obs_mask(ex) & (1u << kind)) != 0;
}
/*
 * The records' clock: the TSC's ticks where it runs at a constant rate
 * (invariant TSC: ~8 ns a read against ~25 for clock_gettime here), turned
 * into CLOCK_MONOTONIC ns by the exporter; else CLOCK_MONOTONIC itself.
 * Durations in records are in the same unit. Set before the first observer.
 */
extern int wf__obs_tsc;
__attribute__((always_inline)) static inline int64_t wf__obs_now(void)
{
#if defined(__x86_64__)
    if (WF__LIKELY(wf__obs_tsc))
        return (int64_t)__builtin_ia32_rdtsc();
#endif
    return wf__now_ns();
}

/* Writes r (ts filled if 0) into the calling thread's ring; owns r->message. */
void wf__obs_write(struct wf_executor *ex, wf__obs_rec *r);
/*
 * An observed invocation begins: its STEP_START, held back by the calling
 * thread so that its end makes the invocation one WF__OBS_STEP record (any
 * other record of the thread writes it first). Returns its start time, or
 * 1 if the thread's ring is full: then its STEP_START is counted as
 * dropped, the drop window opens (the rest is wf__obs_drop_inv_end's) and
 * no clock is read.
 */
int64_t wf__obs_step_begin(struct wf_executor *ex, const struct wf_workflow *wf, uint64_t run_id,
                           uint32_t step, uint32_t type, uint32_t attempt, uint64_t event_id);
/*
 * The general form (an error and its message, or nothing held): end is its
 * STEP_END; out_type: the type id of the event it returned, when its
 * EVENT_EMIT is wanted (held back for the event's first routing), else
 * WF__OBS_NO_TYPE.
 */
void wf__obs_end(struct wf_executor *ex, wf__obs_rec *end, uint32_t out_type);
/*
 * An EVENT_ROUTE of event ev: 1 if it is the first routing of the event
 * held (wf__obs_tls.out_ev, which the caller sets after the end) and went
 * with it (into the STEP record, or flagged WF__OBS_F_EMITTED with the
 * emitting step in attempt), else 0 (write it).
 */
int wf__obs_route_held(struct wf_executor *ex, uint64_t run_id, const void *ev, uint32_t step,
                       uint64_t event_id, uint32_t waiting);
#define WF__OBS_F_EMITTED 1u
/* Writes what the calling thread holds back (the invocation's routing is done). */
void wf__obs_undefer(void);
/*
 * The drop path, inline: in the calling thread's drop window (its ring was
 * full) an invocation's records and its routings are counted as dropped
 * here, without the calls.
 */
static inline void wf__obs_count_dropped(wf__obs_ring *rg, unsigned n)
{
    atomic_store_explicit(&rg->dropped,
                          atomic_load_explicit(&rg->dropped, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* The drop window's test (see wf__obs_tls): 1 if the calling thread's records in ex are dropped. */
static inline int wf__obs_in_window(wf__obs_tls *t, struct wf_executor *ex)
{
    if (t->drop_left == 0 || t->ex != ex)
        return 0;
    if (WF__UNLIKELY(atomic_load_explicit(t->drained, memory_order_relaxed) != t->drained_seen)) {
        t->drop_left = 0; /* the exporter made room since */
        return 0;
    }
    return 1;
}
/* A record of the calling thread in ex: 1 if it falls in the drop window (counted). */
static inline int wf__obs_drop_rec(struct wf_executor *ex)
{
    wf__obs_tls *t = &wf__obs_held;
    if (!wf__obs_in_window(t, ex))
        return 0;
    wf__obs_count_dropped(t->rg, 1);
    return 1;
}

/*
 * An invocation starts (obs: the observer mask): 1 if it falls in the
 * calling thread's drop window, its STEP_START counted as dropped (the
 * rest is counted by wf__obs_drop_inv_end). No clock is read for it.
 */
static inline int wf__obs_drop_inv(struct wf_executor *ex, uint32_t obs)
{
    wf__obs_tls *t = &wf__obs_held;
    if (!wf__obs_in_window(t, ex))
        return 0;
    t->drop_left--;
    if (obs & (1u << WF_OBS_STEP_START))
        wf__obs_count_dropped(t->rg, 1);
    return 1;
}

/*
 * A dropped invocation (wf__obs_drop_inv, or wf__obs_step_begin returned
 * 1) ended with rc, having returned out: its STEP_END and the EMIT of out
 * are counted (obs: the mask now). Its routings are counted as they come.
 */
static inline void wf__obs_drop_inv_end(uint32_t obs, int rc, const void *out)
{
    unsigned n =
        !!(obs & (1u << WF_OBS_STEP_END)) + (rc == 0 && out && (obs & (1u << WF_OBS_EVENT_EMIT)));
    if (n)
        wf__obs_count_dropped(wf__obs_held.rg, n);
}

/*
 * The usual observed invocation, inline (wf__obs_step_begin, wf__obs_end
 * and wf__obs_route_held are the long way), for a thread with a ring of
 * its own, room in it, nothing held and the workflow the ring last named:
 * its STEP_START held in the slot at the head, its end and the returned
 * event's first routing merged into it, then published. Each returns 0
 * when it is not that case: then the long way.
 */

/* Called by wf__obs_publish when the exporter sleeps and the ring is half full. */
void wf__obs_wake(struct wf__obs *o, wf__obs_ring *rg, uint64_t head);

/*
 * The slot at rg's head (standing for n records) goes to the exporter of o
 * (mask: the ring's size - 1; sleeping: o's futex word).
 */
static inline void wf__obs_publish_to(struct wf__obs *o, wf__obs_ring *rg, uint64_t mask,
                                      _Atomic int *sleeping, unsigned n)
{
    uint64_t h = atomic_load_explicit(&rg->head, memory_order_relaxed) + 1;
    if (n > 1)
        atomic_store_explicit(&rg->merged,
                              atomic_load_explicit(&rg->merged, memory_order_relaxed) + n - 1,
                              memory_order_relaxed);
    atomic_store_explicit(&rg->head, h, memory_order_release);
    if (WF__UNLIKELY(atomic_load_explicit(sleeping, memory_order_relaxed)) &&
        h - rg->tail_cache > mask / 2)
        wf__obs_wake(o, rg, h);
}
/* The same for the calling thread's own ring. */
static inline void wf__obs_publish(wf__obs_tls *t, unsigned n)
{
    wf__obs_publish_to(t->o, t->rg, t->mask, t->sleeping, n);
}

/*
 * Holds an invocation's STEP_START in s, the free slot at the head of the
 * calling thread's ring rg (its wf set by the caller): its start time.
 */
static inline int64_t wf__obs_hold_start(wf__obs_tls *t, wf__obs_ring *rg, wf__obs_rec *s,
                                         uint64_t run_id, uint32_t step, uint32_t type,
                                         uint32_t attempt, uint64_t event_id)
{
    int64_t t0 = wf__obs_now();
    s->kind = WF_OBS_STEP_START;
    s->flags = 0;
    s->step = (uint16_t)step;
    s->error = 0;
    s->type = type;
    s->attempt = attempt;
    s->ts = t0;
    s->run_id = run_id;
    s->event_id = event_id;
    s->dv = 0;
    s->message = NULL;
    /* the exporter may show it while the step runs (a plain store: x86 keeps the order) */
    atomic_store_explicit(&rg->held, atomic_load_explicit(&rg->head, memory_order_relaxed) + 1,
                          memory_order_release);
    t->slot = s;
    t->run_id = run_id;
    t->event_id = event_id;
    t->state = WF__HELD_START;
    return t0;
}

/* An invocation starts: its start time, or 0 (the long way: wf__obs_step_begin). */
static inline int64_t wf__obs_begin_fast(struct wf_executor *ex, const struct wf_workflow *wf,
                                         uint64_t run_id, uint32_t step, uint32_t type,
                                         uint32_t attempt, uint64_t event_id)
{
    wf__obs_tls *t = &wf__obs_held;
    if (t->ex != ex || t->state != WF__HELD_NONE || step >= WF__OBS_NO_STEP)
        return 0;
    wf__obs_ring *rg = t->rg;
    uint64_t h = atomic_load_explicit(&rg->head, memory_order_relaxed);
    if (WF__UNLIKELY(h - rg->tail_cache > t->mask || rg->last_wf != wf))
        return 0;
    wf__obs_rec *s = &rg->recs[h & t->mask];
    s->wf = wf;
    return wf__obs_hold_start(t, rg, s, run_id, step, type, attempt, event_id);
}

/*
 * It ended without error (t0: wf__obs_begin_fast's): 1 if its START was
 * still held, now its STEP record (*now: the end time); published unless
 * ret_type (the returned event's type id, its EVENT_EMIT wanted if
 * with_emit) makes it wait for that event's routing (wf__obs_route_fast;
 * the caller sets wf__obs_held.out_ev). 0: the long way.
 */
static inline int wf__obs_end_fast(struct wf_executor *ex, uint64_t run_id, uint64_t event_id,
                                   int64_t t0, uint32_t ret_type, int with_emit, int64_t *now)
{
    wf__obs_tls *t = &wf__obs_held;
    if (t->state != WF__HELD_START || t->ex != ex || t->run_id != run_id || t->event_id != event_id)
        return 0;
    wf__obs_rec *s = t->slot;
    int64_t t1 = wf__obs_now();
    *now = t1;
    s->kind = WF__OBS_STEP;
    s->dv = t1 - t0;
    if (ret_type != WF__OBS_NO_TYPE) {
        s->flags = WF__OBS_F_RET | (with_emit ? WF__OBS_F_OUT : 0);
        s->error = (int32_t)ret_type;
        t->state = WF__HELD_OUT;
    } else {
        t->state = WF__HELD_NONE;
        wf__obs_publish(t, 2);
    }
    return 1;
}

/*
 * An EVENT_ROUTE of ev to step (waiting: the events queued behind it): 1
 * if ev is the event returned by the invocation whose STEP record waits,
 * now merged into it and published; 0: the long way (wf__obs_route_held).
 */
static inline int wf__obs_route_fast(struct wf_executor *ex, uint64_t run_id, const void *ev,
                                     uint32_t step, uint64_t event_id, uint32_t waiting)
{
    wf__obs_tls *t = &wf__obs_held;
    if (t->state != WF__HELD_OUT || t->out_ev != ev || t->ex != ex || t->run_id != run_id)
        return 0;
    wf__obs_rec *s = t->slot;
    uint32_t type = (uint32_t)s->error; /* WF__OBS_F_RET: the returned event's */
    if (type > 0xffffu || step >= WF__OBS_NO_STEP || s->dv < 0 ||
        s->dv >= ((int64_t)1 << WF__OBS_DUR_BITS) || waiting >= (1u << (64 - WF__OBS_DUR_BITS - 1)))
        return 0;
    s->flags |= WF__OBS_F_ROUTED;
    s->error = (int32_t)(type | step << 16);
    s->dv |= (int64_t)waiting << WF__OBS_DUR_BITS;
    s->route_id = event_id;
    t->state = WF__HELD_NONE;
    wf__obs_publish(t, 3u + !!(s->flags & WF__OBS_F_OUT));
    return 1;
}

/* wf__obs_undefer when something is held (the check inline). */
static inline void wf__obs_settle(void)
{
    if (wf__obs_held.state != WF__HELD_NONE)
        wf__obs_undefer();
}

/* Executor teardown: last drain, observers removed, rings freed (threads joined). */
void wf__obs_shutdown(struct wf_executor *ex);

/* run.c: used by executor shutdown */
void wf__runs_cancel_all(struct wf_executor *ex);
/* Runs of ex not quiescent yet, over every shard. */
uint64_t wf__runs_live(struct wf_executor *ex);

#endif
