/*
 * engine.h: the run engine's structures and the calls its files share.
 * Never installed. The engine is split by job; each file opens with what it
 * owns and which lock or atomic guards each shared field:
 *
 *   run.c         a run's life: create, the end (exactly once), lifetime
 *                 counts (refs, engine units), the run timeout, starting
 *   route.c       emit and deliver: routing, per-step counts and pending
 *                 queues, batch delivery, unhandled events
 *   invoke.c      running a task: an invocation, its emissions, claimed
 *                 batches, the engine hand-over, failures
 *   retries.c     a failed invocation's next attempt and its timer
 *   handler.c     the caller's side: wait, status, errors, send, cancel,
 *                 and the run's stream (writer and reader)
 *   ctx_calls.c   the step-side context calls (send, stream, errors, ids)
 *   collect.c     collect_events buffers and tuple joins
 *   fanout.c      list fan-out groups and their joins
 *   wait.c        wait_for_event: waiters, their timers, matching
 *   completion.c  async steps: completion tokens
 *   hooks.c       the engine's observation hooks
 *   cut.c         live snapshots: the consistent cut and its encoding, and
 *                 the gate protocol task runners follow
 *   resume.c      a run decoded from a snapshot and continued
 *
 * Internals shared between these files are wf__ functions declared below;
 * the few on the hot path are static inline here.
 */
#ifndef WF_ENGINE_H
#define WF_ENGINE_H

#include "exec.h"

typedef struct wf__pendq {
    _Atomic(wf__task *) tail;
    wf__task *head;   /* consumer side, under lock */
    atomic_flag lock; /* serialises consumers */
    wf__task stub;
} wf__pendq;

/*
 * A child workflow saved with the invocation that awaited it (resume.c
 * decodes it from a snapshot; child.c resumes it): its workflow's name,
 * fingerprint and snapshot, all owned.
 */
typedef struct wf__child_saved {
    char *wf;
    uint64_t fp;
    void *doc;
    size_t len;
} wf__child_saved;
void wf__child_saved_free(wf__child_saved *cs);

/* Bookkeeping of a retried event: kept with its task (task->arg). */
typedef struct wf__retry_info {
    int64_t first_ns; /* when the first execution started */
    int32_t last_error;
    char *last_msg;
    wf_event **tuple; /* a join step's set of events (owned), or NULL */
    uint32_t ntuple;
    int joined;       /* a join's set (possibly empty) is there */
    int tuple_inline; /* tuple points into this block (not freed on its own) */
    /*
     * The invocation's number in its run (0: none given yet): the same for
     * every task of one invocation (its retries, its runs again after a
     * wait), so that implicit waiter ids of parallel invocations differ.
     */
    uint64_t inv;
    /*
     * A resumed invocation that awaited a child workflow when it was saved:
     * the child, which its wf_ctx_run_child resumes instead of starting
     * afresh (child.c), or NULL. Owned; not carried to the invocation's
     * other tasks (a retry starts afresh).
     */
    wf__child_saved *child;
} wf__retry_info;

/* A retry waiting for its not-before time: the task and its timer. */
typedef struct wf__retry_timer {
    wf__timer tm;
    struct wf__run *run;
    wf__task *t;
    struct wf__retry_timer *prev, *next; /* the run's list, under run->mu */
    int listed;
} wf__retry_timer;

/* collect_events: per run, step and buffer id, a FIFO of events per type. */
typedef struct wf__cq {
    const wf_event_type *type;
    wf_event **ring;
    uint32_t head, len, cap;
    uint32_t need; /* events of this type a complete set takes (collect spec) */
} wf__cq;

/*
 * The spec (expected types) is cached by the caller's array and length, so a
 * call that repeats it costs O(1): one queue push and, when that queue just
 * reached its need, one more satisfied type. Only a complete set costs O(n).
 */
typedef struct wf__collect {
    struct wf__collect *next;
    uint32_t step;
    char *id;
    wf__cq *qs;
    uint32_t nq, capq;
    const void *spec; /* the types array the need counts were computed for */
    size_t spec_n;
    const wf_event_type *spec_first, *spec_last; /* a cheap check the array still holds it */
    uint32_t nreq;                               /* queues with need > 0 */
    uint32_t satisfied;                          /* of those, how many hold at least need events */
} wf__collect;

/* wait_for_event: a suspended invocation waiting for a matching event. */
enum { W_WAITING = 0, W_RESOLVED = 1, W_TIMED_OUT = 2 };
typedef struct wf__waiter {
    struct wf__waiter *next;
    struct wf__run *run;
    uint32_t step;
    int state; /* under coord_lock */
    char *id;
    const wf_event_type *type;
    wf_value req;   /* a map of required field values, or nil */
    wf__task *task; /* the invocation to run again (input event, attempt) */
    wf_event *got;  /* the event that resolved it */
    int64_t timeout_ms;
    wf__timer *tm;   /* its timer (owned), only when it has a timeout: most waits have none */
    int timer_live;  /* tm armed and its callback not finished (coord lock) */
    uint16_t orphan; /* taken off the list while its callback runs: it frees w */
    uint16_t taken;  /* see inv below */
    /*
     * Its step (one with a retry policy) ran again and took its outcome
     * (got): it stays, resolved, until that invocation ends, so that a
     * retry of it gets the same answer (wf__waiters_drop_taken); inv: that
     * invocation's number, or 0. taken shares orphan's word (both under
     * the coord lock).
     */
    int64_t obs_t0; /* when it started waiting, if observed */
    uint64_t inv;
} wf__waiter;

/* An invocation handed to a completion token (async step). */
/*
 * CREATED: wf_ctx_pend was called, the step has not returned yet. ARMED: it
 * returned WF_PENDING; the token owns task and slot. EARLY: completed before
 * the step returned; the result waits in the token for invoke to route it.
 * DETACHED: the run ended (or the step did not return WF_PENDING); a later
 * completion only frees the token.
 */
enum { TOK_CREATED = 0, TOK_ARMED = 1, TOK_EARLY = 2, TOK_DETACHED = 3 };
struct wf_completion {
    int state;                         /* under lock */
    struct wf__run *run;               /* a reference (refs) until the token is finished */
    wf__task *task;                    /* the invocation: its slot stays taken until completion */
    struct wf_completion *prev, *next; /* the run's pending list, under coord lock */
    int listed;
    pthread_mutex_t lock; /* guards state, sent and the result */
    wf_event **sent;
    int32_t *targets;
    uint32_t nsent, capsent;
    wf_event *out; /* the completion's returned event (EARLY) */
    int rc;        /* its result: 0 or an error (EARLY) */
    char *errmsg;
    int64_t started;         /* for retry and handler timing */
    struct wf__child *child; /* the child run awaited (child.c), or NULL; set before it is armed */
};

/*
 * A list fan-out: n branches whose tasks carry (group, branch) in task->u.group
 * and task->pad. outstanding[b] counts the live tasks of branch b (plus one
 * per nested group of it, plus the emitter's unit while it delivers);
 * resolved[b] goes 0 -> 1 (result found) or 0 -> 2 (dropped out) once; when
 * unresolved reaches 0 the join step runs. Once outstanding[b] is 0 it never
 * rises again (only a holder of a unit adds one), so a branch "closes" once;
 * open counts the branches not closed yet (plus the decoder's hold while a
 * resumed run is attached), and whoever brings it to 0 frees the group: no
 * task refers to it any more and its join has fired. So a group lives as long
 * as its branches, not as long as the run, and nothing run-wide is touched.
 * One block holds the group and its three arrays (wf__group_new).
 */
typedef struct wf__group {
    struct wf__group *next_in_run; /* a decoded run's groups before attach (resume.c) */
    struct wf__group *parent;      /* nested fan-out: the branch it belongs to */
    uint32_t parent_branch;
    uint32_t join_step;
    const wf_event_type *collect;
    wf_event *origin;
    uint16_t lineage;
    uint8_t cls; /* its block's cache class */
    uint32_t n;
    _Atomic uint32_t unresolved;
    _Atomic uint32_t open;
    _Atomic uint32_t *outstanding;
    _Atomic int *resolved;
    wf_event **result;
    struct wf__take *take; /* the join step's Take(n) state (fanout.c), NULL: join all */
} wf__group;

/*
 * num_workers at or above this: no limit. Such a step's count is only there
 * for the run's lifetime and for snapshots, so it is kept in shards, one per
 * worker (each on its own cache lines) plus one shared by every other thread:
 * a task is counted in the shard of the thread that delivers it and uncounted
 * from that same shard (task->shard) wherever it ends, so two workers running
 * a recursion never write one counter. A shard going 0 -> 1 takes an engine
 * unit, 1 -> 0 gives it back. The count is the sum of the shards.
 */
#define WF__UNBOUNDED (1u << 30)

typedef struct wf__step_state {
    _Atomic uint32_t count; /* bounded steps (see route.c) */
    uint32_t workers;
    _Atomic(wf__pendq *) pendq; /* created on first need */
    uint32_t col;               /* an unbounded step's column in run->shards */
    uint8_t join;               /* copies of the step's flags, on the line routing touches */
    uint8_t blocking;
    uint8_t keep; /* a worker may keep its slot (wf__kept): 0, or its entry's unit */
    /*
     * Of count (unbounded: of the worker's shard, WF__KEPT_SHARD), the
     * slots the executor's one worker keeps (wf__kept): no
     * task behind them. Written by that worker only (relaxed), never while
     * a live snapshot holds the run's gate; wf__step_count leaves them out.
     * A byte (the struct's padding: a one-step run's block stays 384
     * bytes): at most 255 are kept.
     */
    _Atomic uint8_t kept;
} wf__step_state;

typedef struct wf__run {
    _Atomic uint32_t refs;
    _Atomic uint32_t engine;
    _Atomic int ended;   /* 0 -> 1 exactly once */
    uint8_t stream_internal; /* fields are ordered to leave no padding (see PERFORMANCE.md) */
    /*
     * num_concurrent_runs (run.c), under ex->runs_lock: limited, the run
     * counts against its workflow's limit; waiting, it waits for a free
     * place (cold->next_waiting: its limiter's FIFO), holding its start
     * event or the parked bytes to resume from (cold->held_*, owned; taken
     * when it starts). Here, in a word with no atomic field: the compiler
     * may read limited and waiting with one wider load.
     */
    uint8_t limited;
    uint8_t waiting;
    uint8_t never_started; /* it ended while waiting (its held_* are the ender's) */
    uint64_t id;
    int64_t obs_t0; /* RUN_START time when observed, else 0 */
    struct wf_executor *ex;
    wf_workflow *wf;
    const wf_registry *reg;    /* wf->reg, read on every emission */
    /*
     * The rare work of an invocation, in one byte every invocation reads:
     * WF__RUN_INTERNAL (stream_internal: step-state notifications) and
     * WF__RUN_FENCED (it has a fence: fence.c). Atomic (relaxed): a fence is
     * set while the run goes on.
     */
    _Atomic uint8_t internal;
    _Atomic uint8_t idle_sent; /* a WorkflowIdleEvent went out since the last "running" */
    _Atomic uint8_t had;       /* WF__HAD_* bits: what the run's end must walk (wf__run_had) */
    wf_ctx *ctx;
    struct wf__tmo *tmo; /* its timeout's timer (run.c), NULL: none */
    int64_t timeout_ms;
    /*
     * The run's fence (fence.c): no step starts, and no step's result is
     * routed, at or after this CLOCK_MONOTONIC time in ns; 0: none. Read only
     * when WF__RUN_FENCED is set in internal.
     */
    _Atomic int64_t fence_ns;

    /*
     * the outcome: written by the one that ended the run, then published
     * under mu by status (a release store: readers that find it set read the
     * rest without the lock; immutable from then on)
     */
    _Atomic int status; /* wf_run_status */
    int err_code;
    wf_event *result;
    char *err_step;
    char *err_msg;

    /*
     * stream and waiting, under mu. Threads that block on the handler
     * (wf_handler_wait, wf_handler_next_event) sleep on the futex word wake,
     * which is bumped under mu (handler.c: handler_sleep, handler_wake): no
     * condition variable is made or destroyed for the runs nobody waits on.
     * mu and collect_lock are one-word futex locks (wf__lock, internal.h),
     * free when zeroed: nothing to initialize or destroy per run, 8 bytes
     * where two pthread mutexes took 80.
     */
    wf__lock mu;
    _Atomic uint32_t wake;
    uint32_t nsteps;
    wf__lock collect_lock; /* guards collect and waiters (here: no hole) */
    wf_event **sbuf;
    uint32_t scap;
    uint32_t shead;
    uint32_t scount;
    int terminal_given;
    wf_event *terminal;
    int reader_busy;
    int sleepers;
    _Atomic uint64_t dropped;
    _Atomic uint64_t unhandled;
    wf_done_fn on_done;
    void *on_done_user;
    struct wf__drun *dur;         /* a durable run's record (durable.c), or NULL */
    wf__retry_timer *retries;     /* armed retries, under mu */
    wf__collect *collect;
    wf__waiter *waiters;
    wf_completion *pending;    /* async invocations waiting for completion */
    _Atomic uint64_t next_inv; /* the next invocation number (wf__retry_info.inv) */
    _Atomic uint32_t nwaiting; /* waiters in W_WAITING: emit looks only when nonzero */

    /*
     * Live snapshots (cut.c). While gate is 1, a task runner that picks up a
     * task of this run holds it (snap->held, chained through next, under
     * snap->lock) instead of running it, and one about to make an effect
     * visible waits for the gate to open; outside paths take `outside` for
     * reading, the snapshot for writing (a reader-preferring lock in one
     * futex word, cut.c). snap->mu orders snapshots. snap is made by the
     * first snapshot of the run (published once by CAS, before the gate
     * first closes): most runs are never snapshotted and carry no mutex
     * for it.
     */
    _Atomic int gate;
    _Atomic uint32_t outside;
    /*
     * Two halves of the word after outside: 8 bytes more in wf__run and a
     * one-step run (344 + 24 for its step + wf__malloc's 16-byte header =
     * 384) takes a 512-byte block instead of a 384-byte one (bench_hitl:
     * 942 -> 1,079 bytes a waiting run, measured).
     */
    uint16_t listed; /* in its shard's list of runs not ended (prev, next), under the shard's lock */
    uint16_t rshard; /* that shard (ex->rshards), fixed at create */
    _Atomic(struct wf__snap *) snap;
    struct wf__run *prev, *next;

    /* what few runs use, or NULL (wf__run_cold; set while the run is created, then fixed) */
    struct wf__run_cold *cold;

    /* unbounded steps' counts: shard i, column c at shards[i * shard_stride + c] */
    _Atomic uint32_t *shards;
    uint32_t nshards; /* workers (at most 255) + 1 shared */
    uint32_t shard_stride;

    /* resources.c: the run-scoped resources, published once by CAS (NULL: none made yet) */
    _Atomic(struct wf__res_run *) res;
    /*
     * Child workflows (child.c): children, the child runs its steps started
     * and not ended, under collect_lock (a child run's own links to its
     * parent are in cold).
     */
    struct wf__child *children;

    wf__step_state steps[];
} wf__run;

/*
 * The fields of a run that few runs use, in a block of their own made while
 * the run is created, only when one of them is needed (wf__run_cold_make):
 * a run of a workflow with num_concurrent_runs, a run with a trace parent,
 * a child run. Keeping them out of wf__run lets a one-step run take a
 * 384-byte block (PERFORMANCE.md, round 2 part 4).
 */
typedef struct wf__run_cold {
    /* num_concurrent_runs (run.c), under ex->runs_lock: see wf__run.limited */
    struct wf__run *next_waiting;
    wf_event *held_start;
    void *held_resume;
    size_t held_resume_len;
    char *traceparent; /* wf_run_params.traceparent, copied; for RUN_START */
    /*
     * A child run (child.c): stream_to (its parent, a reference: its stream
     * is forwarded there, or NULL) and parent_* (for its RUN_START record),
     * set while it is created, read-only after.
     */
    struct wf__run *stream_to;
    uint64_t parent_run_id;
    uint64_t parent_event_id;
} wf__run_cold;

/* run->cold, made if it is not yet (only while the run is created): NULL when out of memory. */
wf__run_cold *wf__run_cold_make(wf__run *run);
static inline uint64_t wf__run_parent_id(const wf__run *run)
{
    return run->cold ? run->cold->parent_run_id : 0;
}

/*
 * What a run ever had, so that its end walks only the lists that may hold
 * something (most runs have no retry, waiter, token or child: four lock
 * pairs saved per run). A bit is set, never cleared, by whoever adds the
 * first entry, inside the list's lock and before it looks at run->ended
 * (wf__run_had); the end reads the bits after its CAS on ended. Both are
 * sequentially consistent, so either the adder sees the run ended or the
 * end sees the bit; an entry added with the bit seen clear by the end is
 * one added after the end's walk, which every list already handles (its
 * timer finds the run ended, its child is cancelled by its starter).
 */
#define WF__HAD_RETRIES  1u
#define WF__HAD_WAITERS  2u
#define WF__HAD_TOKENS   4u
#define WF__HAD_CHILDREN 8u

/* Events accepted by step s and not finished (the sum of its shards when unbounded). */
static inline uint32_t wf__step_count(wf__run *run, uint32_t s)
{
    const wf__step_state *ss = &run->steps[s];
    uint32_t n = 0;
    if (ss->workers < WF__UNBOUNDED)
        n = atomic_load_explicit(&ss->count, memory_order_acquire);
    else
        for (uint32_t i = 0; i < run->nshards; i++)
            n += atomic_load_explicit(&run->shards[i * run->shard_stride + ss->col],
                                      memory_order_acquire);
    uint32_t k = atomic_load_explicit(&ss->kept, memory_order_relaxed); /* wf__kept: no tasks */
    return n > k ? n - k : 0;
}

/* The invocation running on this thread (like Python's contextvars). */
typedef struct wf__inv {
    wf__run *run;
    wf__step *step;
    wf__task *task;
    wf_event **sent;
    int32_t *targets;
    uint32_t capsent;
    /* nsent .. took_waiter: zero when the invocation starts (one memset, a few wide stores) */
    uint32_t nsent;
    char *errmsg;
    wf_completion *token;    /* wf_ctx_pend was called: WF_PENDING is expected */
    int64_t obs_t0;          /* observed: when it started (observation clock), else 0 */
    struct wf__res_inv *res; /* resources.c: this invocation's own resources, or NULL */
    int suspended;           /* a waiter was registered: WF_SUSPEND is expected */
    int took_waiter;         /* wait.c: it took a waiter's outcome (see wf__waiter.taken) */
    uint32_t span_next;      /* wf_ctx_span_*: the last span number given */
    uint32_t span_depth;     /* open spans on span_open (deeper ones are not tracked) */
    struct deferred *defer;  /* emissions held for the claimed batch it runs in, or NULL */
    uint32_t span_open[8];
    wf_event *inl_sent[8];
    int32_t inl_targets[8];
} wf__inv;

static inline int wf__run_ended(const wf__run *run)
{
    return atomic_load_explicit(&((wf__run *)run)->ended, memory_order_acquire);
}

#define WF__RUN_INTERNAL 1u
#define WF__RUN_FENCED   2u

/* The run's WF__RUN_* bits (one relaxed byte load). */
static inline unsigned wf__run_slow(const wf__run *run)
{
    return atomic_load_explicit(&((wf__run *)run)->internal, memory_order_relaxed);
}

/* fence.c: the fence passed (read the clock): ends the run (WF_ELEASE) and gives 1, else 0. */
int wf__fence_passed(wf__run *run, const char *step, const char *what);
/* 1 when run has a fence and the clock is past it (ends nothing: wf_ctx_is_cancelled). */
int wf__fence_due(const wf__run *run);
/* 1 when run has a fence that passed (the run is ended then); 0 for runs without one. */
static inline int wf__run_fenced(wf__run *run, const char *step, const char *what)
{
    return WF__UNLIKELY(wf__run_slow(run) & WF__RUN_FENCED) && wf__fence_passed(run, step, what);
}

static inline void wf__run_had(wf__run *run, unsigned bit)
{
    if (!(atomic_load(&run->had) & bit))
        atomic_fetch_or(&run->had, (uint8_t)bit);
}

/* ------------------------------------------------------- per-thread state */

/* The invocation running on this thread (like Python's contextvars); set by invoke.c. */
extern WF__TLS wf__inv *wf__tls_inv;
/*
 * The lineage of what the calling thread routes now: how many error-handler
 * recoveries the emitting invocation's input descends from (task->flags).
 */
extern WF__TLS uint16_t wf__tls_lineage;
/* The list fan-out branch of what the calling thread routes now (task->u.group, ->pad). */
extern WF__TLS wf__group *wf__tls_group;
extern WF__TLS uint32_t wf__tls_branch;
/*
 * wf_ctx_emit_list's unit of branch wf__tls_held_b of wf__tls_held while it
 * routes that branch's event (fanout.c): the one task made for it takes the
 * unit over instead of adding one (wf__tag_task). NULL when taken, or while
 * an event goes to several steps (wf__emit: after the first of those tasks
 * is out, a second add would not be a holder's).
 */
extern WF__TLS wf__group *wf__tls_held;
extern WF__TLS uint32_t wf__tls_held_b;
/* The engine hand-over of a chain (invoke.c and route.c; see invoke.c). */
extern WF__TLS wf__run *wf__tls_handoff_run;
extern WF__TLS wf__run *wf__tls_handoff;
/*
 * The time of the current invocation's end, while its emissions are routed:
 * their EMIT and ROUTE records take it instead of reading the clock again
 * (~25 ns a read here). 0 outside (hooks.c).
 */
extern WF__TLS int64_t wf__tls_obs_now;
/*
 * A step's failure about to end its run (run.c, set by wf__step_failed):
 * the attempts made and the time since the first (-1: not timed), for the
 * WorkflowFailedEvent. 0 attempts: not a step's failure.
 */
extern WF__TLS uint32_t wf__tls_fail_attempts;
extern WF__TLS int64_t wf__tls_fail_elapsed_ns;

/* The invocation of ctx running on this thread, if any. */
static inline wf__inv *wf__inv_of(const wf_ctx *ctx)
{
    wf__inv *inv = wf__tls_inv;
    return (inv && inv->run->ctx == ctx) ? inv : NULL;
}

/* ------------------------------------------------------ run.c: lifetime */

static inline void wf__engine_ref(wf__run *run)
{
    atomic_fetch_add_explicit(&run->engine, 1, memory_order_relaxed);
}
/* Takes an engine unit unless the run is already quiescent: 1 if taken. */
int wf__engine_try_ref(wf__run *run);
/* Gives an engine unit back; the last one retires the run (may free it). */
void wf__engine_unref(wf__run *run);
/* Gives a reference (refs) back; the last one frees the run. */
void wf__run_release(wf__run *run);
/*
 * Ends the run exactly once: publishes the outcome, frees the context for
 * the next run, streams the terminal event, wakes waiters, calls on_done.
 * Takes result (the StopEvent for WF_RUN_DONE). Returns 1 if this call ended
 * the run, 0 if it had ended already.
 */
int wf__end_run(wf__run *run, int status, wf_event *result, int code, const char *step,
                const char *msg);
/*
 * wf__end_run's last part: publishes the outcome (takes result and term),
 * calls on_done, starts next (a run waiting for the place), gives the
 * running unit back. A durable run calls it once its result is durable.
 */
void wf__end_publish(wf__run *run, int status, wf_event *result, int code, const char *step,
                     const char *msg, wf_event *term, wf__run *next);
/*
 * The run fails with WF_ENOMEM: "out of memory <doing> (step 'name')", the
 * step being step (an index) or, for WF__NO_STEP, the calling thread's
 * invocation's when it is one of run's. Every allocation failure that
 * would leave a run unable to go on ends it this way: none may become a
 * hang. Returns what wf__end_run returns.
 */
#define WF__NO_STEP UINT32_MAX
int wf__fail_nomem(wf__run *run, uint32_t step, const char *doing);
/*
 * Starts a run that waited for its place (num_concurrent_runs): arms its
 * timeout and routes its start event, or decodes and attaches the run it
 * resumes (resume.c: wf__resume_held).
 */
void wf__run_go(wf__run *run);
int wf__resume_held(wf__run *run, void *bytes, size_t len);
/* The checks common to starting and resuming a run (freezes and validates wf). */
int wf__run_params_check(wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params, char **message);
/*
 * A new run of wf on ctx (a run parked in ctx is dropped from it), registered
 * with the executor and its timeout armed, with nothing delivered yet
 * (wf_run_start_ex's first half): 0. Or, when its workflow's
 * num_concurrent_runs places are all taken, 1: it waits for one, and it has
 * taken start (or resume, the parked bytes: owned) to start from then. On
 * an error (< 0) neither is taken.
 */
int wf__run_create(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params,
                   wf_event *start, void *resume, size_t resume_len, wf__run **out);

/* ------------------------------------------------- durable.c: durable runs */

/* The durable record wf__run_create gives the run it creates on this thread (or NULL). */
extern WF__TLS struct wf__drun *wf__tls_durable;
/*
 * Set by wf_run_start_durable around wf_run_start_ex: the run it creates
 * gets one more reference (the durable table's) at once, before its start
 * event can make it end, and the flag is cleared to say so.
 */
extern WF__TLS int wf__tls_table_ref;
/*
 * The run ends: 1 if durable.c took over the publishing (the result is
 * queued to the store; wf__end_publish runs once it is durable), 0 if the
 * caller publishes now. Takes result and term when it returns 1.
 */
int wf__durable_end(wf__run *run, int status, wf_event *result, int code, const char *step,
                    const char *msg, wf_event *term, wf__run *next);
/* wf_handler_send_event on a durable run: journaled, then delivered. */
int wf__durable_send(wf__run *run, wf_event *ev, const char *target);
/* The run is freed: so is its durable record (NULL is fine). */
void wf__durable_run_free(struct wf__drun *d);
/* ev (borrowed, frozen) is streamed by a durable run: journaled as a numbered stream record. */
void wf__durable_stream(wf__run *run, const wf_event *ev);
/*
 * A new waiter of run (collect_lock held): an event sent from outside
 * before it that matches type and req, held by the run (owned), or NULL.
 */
wf_event *wf__durable_take_held(wf__run *run, const wf_event_type *type, wf_value req);
/* ev satisfies a waiter's requirements (wait.c). */
int wf__waiter_req_match(const wf_value req, const wf_event *ev);

/* ------------------------------------------------- route.c: delivery */

/* Steps declared blocking run on the executor's blocking pool, not on a worker. */
static inline void wf__run_schedule(wf__run *run, wf__task *t)
{
    if (WF__UNLIKELY(run->steps[t->step].blocking))
        wf__blocking_submit(run->ex, t);
    else
        wf__schedule(run->ex, t);
}

/* wf__drop_task of an INVOKE task with a branch unit or retry info (route.c). */
void wf__drop_task_owning(wf__task *t);
/*
 * Frees a task and what it owns (its event, retry info, its branch unit);
 * one that owns no more than its event (a finished step's usual input)
 * here, without a call.
 */
static inline void wf__drop_task(wf__task *t)
{
    if (WF__UNLIKELY(t->kind == WF__TASK_INVOKE && (t->u.group != NULL || t->arg != NULL))) {
        wf__drop_task_owning(t);
        return;
    }
    wf__event_release(t->ev);
    wf__task_free(t);
}
/* Frees a task's side record and the events of its set (NULL is fine). */
void wf__retry_info_free(wf__retry_info *ri);
/* Delivers a prepared INVOKE task (owned) through step t->step's count. */
int wf__deliver_task(wf__run *run, wf__task *t);
/*
 * Delivers made prepared INVOKE tasks (owned, linked by next from first to
 * last, all of step s) with one add on the count: a batch. Returns 0 or
 * WF_ENOMEM (the tasks dropped).
 */
int wf__deliver_chain(wf__run *run, uint32_t s, wf__task *first, wf__task *last, uint32_t made);
/* Delivers ev (owned) to step s. Returns 0 or WF_ENOMEM (ev released). */
int wf__deliver(wf__run *run, uint32_t s, wf_event *ev);
/* One invocation of step s finished (counted in shard): its slot passes on. */
void wf__finish_slot(wf__run *run, uint32_t s, uint32_t shard);
/* The count shard `shard`'s counter of unbounded step s (see WF__UNBOUNDED). */
static inline _Atomic uint32_t *wf__shard_ctr(wf__run *run, uint32_t shard, uint32_t s)
{
    return &run->shards[shard * run->shard_stride + run->steps[s].col];
}
/* The counter a task of step s counted in `shard` is in. */
static inline _Atomic uint32_t *wf__slot_ctr(wf__run *run, uint32_t s, uint32_t shard)
{
    wf__step_state *ss = &run->steps[s];
    return ss->workers < WF__UNBOUNDED ? &ss->count : wf__shard_ctr(run, shard, s);
}
/*
 * wf__finish_slot for a single task that may owe an engine unit (see
 * wf__tls_handoff): the last of its step (or shard) passes its unit to the
 * step it woke (the chain's hand-over), without a call.
 */
static inline void wf__finish_slot_owed(wf__run *run, uint32_t s, uint32_t shard)
{
    if (WF__LIKELY(wf__tls_handoff != NULL)) {
        wf__tls_handoff = NULL;
        uint32_t one = 1;
        if (atomic_compare_exchange_strong_explicit(wf__slot_ctr(run, s, shard), &one, 0,
                                                    memory_order_acq_rel, memory_order_relaxed))
            return; /* its engine unit is the woken step's now */
        wf__engine_ref(run);
    }
    wf__finish_slot(run, s, shard);
}
/*
 * Kept slots. A worker that finishes an invocation may keep its step's slot
 * (the count's unit, and the engine unit a nonzero count holds) instead of
 * giving it back, and the next event it delivers to that step takes the
 * kept slot instead of a new one: a chain that comes back to the same
 * steps on one thread then writes no shared counter (the two locked
 * read-modify-writes of a step's count cost ~7 of a chain step's 33 ns
 * here). A kept slot is a finished invocation whose finish comes late:
 * counts, the engine's units and quiescence stay consistent. Kept only
 * where being late holds nobody up: a step on an executor of one worker,
 * where no other worker could run the step meanwhile
 * (wf__step_state.keep), never a blocking step, nor in a run with the
 * internal stream or a fence. A step without a bound (WF__UNBOUNDED) keeps
 * slots counted in the worker's own shard only (WF__KEPT_SHARD), and takes
 * them for deliveries it counts there. The worker gives a bounded step's
 * kept slots back (wf__kept_flush) when its chain ends (nothing in its
 * bypass slot), and every kept slot when it runs out of work, every
 * WF__FAIRNESS_TICK tasks (events an outside thread queued for the step then
 * start, as they would after the chain's hand-over) and when it stops (an
 * ended run's unbounded steps' kept slots may so delay its retirement:
 * at most WF__KEPT_MAX runs, until the worker idles or ticks); it
 * never parks with any; a delivery to a step whose queue holds events takes
 * no kept slot (they came first). What reads a step's count for its tasks
 * (a live snapshot, the steps in progress) leaves the kept ones out
 * (wf__step_state.kept); a kept slot of a run whose gate is closed stays
 * until it opens (the give-back follows the task runner's slot protocol).
 */
#define WF__KEPT_MAX 8 /* entries, by step index (direct-mapped: a look is one compare) */
/* The one worker's count shard (route.c, my_shard): an unbounded step's slots are kept there. */
#define WF__KEPT_SHARD 0
/*
 * Whose slots an entry holds; how many is the step's `kept` (the one
 * worker's alone). run is NULL when none: an entry never outlives them
 * (they hold the run).
 */
typedef struct wf__kept {
    wf__run *run;
    uint32_t step;
} wf__kept;
extern WF__TLS wf__kept wf__tls_kept[WF__KEPT_MAX];
/* Takes a slot of step s of run the calling thread keeps: 1, or 0 if it keeps none. */
static inline int wf__kept_take(wf__run *run, uint32_t s)
{
    wf__kept *k = &wf__tls_kept[s % WF__KEPT_MAX];
    if (k->run != run || k->step != s)
        return 0;
    wf__step_state *ss = &run->steps[s];
    uint8_t n = (uint8_t)(atomic_load_explicit(&ss->kept, memory_order_relaxed) - 1);
    atomic_store_explicit(&ss->kept, n, memory_order_relaxed);
    if (n == 0) {
        k->run = NULL;
        wf__tls_nkept -= ss->keep;
    }
    return 1;
}
/*
 * The end of a single task's invocation of step s (counted in shard): its
 * slot kept (see wf__kept), or given back with wf__finish_slot_owed.
 */
static inline void wf__finish_or_keep(wf__run *run, uint32_t s, uint32_t shard)
{
    wf__worker *w = wf__tls_worker;
    wf__step_state *ss = &run->steps[s];
    wf__kept *k = &wf__tls_kept[s % WF__KEPT_MAX];
    uint8_t n = atomic_load_explicit(&ss->kept, memory_order_relaxed);
    if (ss->keep && w != NULL && w->ex == run->ex &&
        (k->run == NULL || (k->run == run && k->step == s)) && n < UINT8_MAX &&
        wf__run_slow(run) == 0 &&
        !wf__run_ended(run) && /* (an ended run's slots only wait to retire it) */
        (ss->keep == WF__KEPT_UNIT_UNBOUNDED
             ? shard == WF__KEPT_SHARD
             : atomic_load_explicit(&ss->count, memory_order_relaxed) <= ss->workers)) {
        /*
         * (A bounded step: events in its queue start now, through
         * wf__finish_slot, instead. Without a bound: only a slot counted in
         * the worker's own shard, where a kept one is taken and given back.)
         */
        if (wf__tls_handoff != NULL) {
            /* a step this invocation woke took no engine unit: this slot does not pass one */
            wf__tls_handoff = NULL;
            wf__engine_ref(run);
        }
        if (k->run == NULL) {
            k->run = run;
            k->step = s;
            wf__tls_nkept += ss->keep;
        }
        atomic_store_explicit(&ss->kept, (uint8_t)(n + 1), memory_order_relaxed);
        return;
    }
    wf__finish_slot_owed(run, s, shard);
}
/*
 * An event of type t emitted in run needs routing and nothing else: not a
 * stop, not a request for input, of run's registry, without a schema.
 */
static inline int wf__type_plain(const wf__run *run, const wf_event_type *t)
{
    return !t->is_stop && !t->is_input && t->reg == run->reg && !wf__type_has_schema(t);
}
/*
 * The one step an event of plain type t goes to now (the run going on, no
 * waiters to look at it first), or -1 when it goes to none or several.
 */
static inline int32_t wf__route_one(wf__run *run, const wf_event_type *t)
{
    const wf_workflow *wf = run->wf;
    if (t->id >= wf->n_route_types)
        return -1;
    uint32_t a = wf->route_off[t->id];
    if (wf->route_off[t->id + 1] - a != 1 || wf__run_ended(run) ||
        atomic_load_explicit(&run->nwaiting, memory_order_acquire) != 0)
        return -1;
    return (int32_t)wf->route_steps[a];
}
/* Routes ev (owned) from inside the run (or as an event from outside). target: a step or -1. */
void wf__emit(wf__run *run, wf_event *ev, int32_t target);
/* Routes the events a step sent (owned), in order, runs for one step as one batch. */
void wf__emit_sent(wf__run *run, wf_event **evs, const int32_t *targets, uint32_t n);

/* ------------------------------------------------- invoke.c: invocations */

/*
 * Events a step sends are routed in batches of WF__SEND_BATCH while it runs, so
 * that a step sending many (a fan-out) has its receivers start at once
 * instead of holding every event until it returns. Not for steps with a
 * retry policy or an error handler: a failed attempt's emissions are dropped
 * (SEMANTICS.md), so theirs wait for the outcome.
 */
#define WF__SEND_BATCH 64

/* Routes what the invocation sent so far (a step sending many, while it runs). */
void wf__inv_flush_sent(wf__inv *inv);
/*
 * A step failed for good (its retries, if any, are spent): its error handler
 * gets a StepFailedEvent while the lineage has recoveries left; otherwise the
 * run fails with the step's error.
 */
void wf__step_failed(wf__run *run, const wf__task *t, int rc, const char *msg, int64_t started);

/* ------------------------------------------------- retries.c */

/*
 * Asks the step's policy about a failure of t; when it says retry, arms a
 * timer that re-delivers the same event (attempt + 1) and returns 1.
 */
int wf__maybe_retry(wf__run *run, wf__task *t, int rc, const char *msg, int64_t started);
/*
 * A side record for another task of the invocation whose task has old (NULL:
 * none): its joined set (retained), retry bookkeeping and invocation number
 * go along. NULL: out of memory.
 */
wf__retry_info *wf__retry_info_for(const wf__retry_info *old);
/* A retry's timer fired: the next attempt is delivered. */
void wf__retry_fire(wf__timer *tm, void *arg);
/* Disarms the run's pending retries (the run ended). */
void wf__retries_cancel(wf__run *run);

/* ------------------------------------------------- handler.c */

/* Puts ev (owned) on the run's stream: 0 kept (or the run had ended), 1 dropped (full), WF_ENOMEM.
 */
int wf__stream_push(wf__run *run, wf_event *ev);
/*
 * stream_internal (handler.c): a StepStateChanged of step (state "preparing",
 * "running" or "not_running"; out: the type returned, or NULL), and the
 * idle check made when a step's count reaches 0 (a WorkflowIdleEvent when
 * nothing runs and a waiter waits). Called only when WF__RUN_INTERNAL.
 */
void wf__internal_step_state(wf__run *run, uint32_t step, const char *state,
                             const wf_event_type *in, const wf_event_type *out);
void wf__internal_idle_check(wf__run *run);
/* Nothing of run runs or waits to run, and a step waits for an event (not ended). */
int wf__run_idle(wf__run *run);
/* mu held: wakes the threads blocked on the handler, if any (run->sleepers). */
void wf__handler_wake(wf__run *run);
/* Checks a target and resolves it to a step index (-1 for broadcast). */
int wf__resolve_target(const wf_workflow *wf, const wf_event *ev, const char *target, int32_t *idx);
/* Sends ev (owned) into run from outside any of its invocations. */
int wf__send_outside(wf__run *run, wf_event *ev, const char *target);

/* ------------------------------------------------- ctx_calls.c */

/* The context's current run with a reference (wf__run_release), or NULL. */
wf__run *wf__ctx_run_ref(wf_ctx *ctx);

/* ------------------------------------------------- collect.c: buffers, joins */

/* Frees a list of collect buffers. */
void wf__collect_free(wf__collect *c);
/* The queue of type t in c (create: make it if missing); NULL if missing or out of memory. */
wf__cq *wf__cq_find(wf__collect *c, const wf_event_type *t, int create);
int wf__cq_push(wf__cq *q, wf_event *ev);
wf_event *wf__cq_pop(wf__cq *q);
/* Delivers ev (owned) to the join step s: buffered until a set is complete. */
int wf__join_deliver(wf__run *run, uint32_t s, wf_event *ev);

/* ------------------------------------------------- fanout.c: list fan-out */

/*
 * A group of n branches in one block, zeroed, open = n (NULL: out of
 * memory); wf__groups_free frees a list of groups no task refers to
 * (through next_in_run: a decoded run's, when it is not attached).
 */
wf__group *wf__group_new(uint32_t n);
void wf__groups_free(wf__group *g);
/* Gives up one of g->open (a closed branch, or a hold): the last frees g. */
void wf__group_close(wf__group *g);
/* A task of branch b of g ended: the branch may drop out, the join fire, g go. */
void wf__branch_done(wf__run *run, wf__group *g, uint32_t b);
/* Every branch resolved: the join step runs once, in the parent's branch. */
void wf__group_fire(wf__run *run, wf__group *g);
/* Take(n) (join step s's take): g's state; WF_ENOMEM. resumed: rebuilt from resolved[]/result[]. */
int wf__take_init(wf__group *g, const wf__step *s, int resumed);
/* Branch b's result ev (owned) reached a Take(n) group (b's resolved[] already won). */
void wf__take_result(wf__run *run, wf__group *g, uint32_t b, wf_event *ev);
/* 1 if g is a Take(n) group whose join has fired. */
int wf__take_fired(wf__group *g);

/*
 * Gives up one unit of a count that only holders of a unit raise (a branch's
 * outstanding[], a group's open) or that each party lowers once (a group's
 * unresolved): 1 if it was the last. A holder that reads 1 is the only one
 * left, and nobody can raise it any more, so the last unit goes without a
 * locked read-modify-write (the acquire load still pairs with the others'
 * releasing decrements); the count is left at 0 for readers.
 */
static inline int wf__unit_drop(_Atomic uint32_t *c)
{
    if (atomic_load_explicit(c, memory_order_acquire) == 1) {
        atomic_store_explicit(c, 0, memory_order_relaxed);
        return 1;
    }
    return atomic_fetch_sub_explicit(c, 1, memory_order_acq_rel) == 1;
}

static inline void wf__branch_add(wf__group *g, uint32_t b)
{
    atomic_fetch_add_explicit(&g->outstanding[b], 1, memory_order_relaxed);
}

/*
 * ev (owned), of g's collect type, was emitted in branch b: 1 if it is the
 * branch's result (taken; the join may fire), 0 if b was resolved already.
 */
int wf__branch_result(wf__run *run, wf__group *g, uint32_t b, wf_event *ev);
/* A new task joins branch b of g, being routed (fanout.c): takes the emitter's unit or adds one. */
void wf__branch_join(wf__group *g, uint32_t b);

/* t (new) is the invocation of step s for ev (owned), in the lineage being routed. */
static inline void wf__task_invoke_init(wf__task *t, wf__run *run, uint32_t s, wf_event *ev)
{
    t->kind = WF__TASK_INVOKE;
    t->run = run;
    t->ev = ev;
    t->step = s;
    t->arg = NULL;
    t->flags = wf__tls_lineage;
}

/* A new task joins the branch being routed. */
static inline void wf__tag_task(wf__task *t)
{
    t->u.group = wf__tls_group;
    t->pad = wf__tls_branch;
    if (WF__UNLIKELY(wf__tls_group != NULL))
        wf__branch_join(wf__tls_group, wf__tls_branch);
}

/* ------------------------------------------------- wait.c: waiters */

/* Frees a list of waiters (and their tasks). */
void wf__waiters_free(wf__waiter *w);
/* A waiter's timer: the wait gives up, the step runs again and sees WF_ETIMEDOUT. */
void wf__waiter_fire(wf__timer *tm, void *arg);
/*
 * Gives ev to every waiting waiter it satisfies and queues their steps to run
 * again; excluded[] gets those steps (the event is not also routed to them).
 * Returns how many.
 */
uint32_t wf__waiters_match(wf__run *run, const wf_event *ev, uint32_t *excluded, uint32_t cap);
/* Disarms the waiters' timers (the run ended). */
void wf__waiters_cancel(wf__run *run);
/* The invocation of t ended for good (no retry, no wait pending): the waiters it took go. */
void wf__waiters_drop_taken(wf__run *run, const wf__task *t);

/* ------------------------------------------------- resources.c: resources */

/* Makes the resources the invocation's step declares: 0, or the failure (inv->errmsg says which).
 */
int wf__resources_enter(wf__inv *inv);
/* The step function returned: frees the invocation's own resources. */
void wf__resources_leave(wf__inv *inv);
/* Frees the run-scoped resources (the run is being freed). */
void wf__resources_run_free(wf__run *run);

/* ------------------------------------------------- completion.c: async steps */

/* invoke saw WF_PENDING: 1 if the token now owns task and slot (or completed and routed). */
int wf__token_arm(wf_completion *c);
/* The step pended but returned something else: the token is void. */
void wf__token_abandon(wf_completion *c);
/* The run ended: pending invocations give their slots back; tokens stay for their completers. */
void wf__tokens_detach(wf__run *run);

/* ------------------------------------------------- child.c: child workflows */

/* The run ended: the child runs its steps started are cancelled. */
void wf__children_cancel(wf__run *run);
/*
 * A run being created: links it to the parent step starting it on this
 * thread, if any (in run->cold, made for it). 0, or WF_ENOMEM.
 */
int wf__child_attach(wf__run *run);
/* A run being freed: lets go of its parent. */
void wf__child_detach(wf__run *run);
/*
 * The child run of a pending token's child record, with a reference
 * (wf__run_release), if step of parent declares its workflow (so that a
 * resumer knows it: wf_workflow_declare_child); else NULL. Caller holds
 * parent's collect_lock with the token armed.
 */
wf__run *wf__child_run_ref(struct wf__child *c, const wf__run *parent, uint32_t step);
/* A child's streamed event (borrowed) goes into its parent's stream too. */
void wf__child_forward(wf__run *run, wf_event *ev);
/*
 * Child runs that ended while this thread held an `outside` lock, whose
 * parents' tokens are completed once it holds none (wf__outside_exit calls
 * wf__child_drain), so a child's lock is never held while its parent's is
 * taken.
 */
extern WF__TLS struct wf__child *wf__tls_child_done;
void wf__child_drain(void);

/* ------------------------------------------------- hooks.c: observation */

/* The id pairing an EVENT_ROUTE with the STEP_START of its task. */
static inline uint64_t wf__hook_task_id(const wf__task *t)
{
    return (uint64_t)(uintptr_t)t ^ ((uint64_t)(uintptr_t)t->ev << 17);
}

/* The type id of a type in run's registry, or WF__OBS_NO_TYPE (another registry's). */
static inline uint32_t wf__hook_type(const wf__run *run, const wf_event_type *type)
{
    return type && type->reg == run->wf->reg ? type->id : WF__OBS_NO_TYPE;
}

/* Fills the common part of a record about run. */
static inline void wf__hook_rec(wf__run *run, unsigned kind, uint32_t step,
                                const wf_event_type *type, int64_t ts, wf__obs_rec *r)
{
    r->kind = (uint8_t)kind;
    r->step = step < WF__OBS_NO_STEP ? (uint16_t)step : WF__OBS_NO_STEP;
    /* by id in the workflow's registry (an event of another registry is named by none) */
    r->type = wf__hook_type(run, type);
    r->ts = ts;
    r->run_id = run->id;
    r->wf = run->wf;
}

/* A copy for a record's message (the exporter frees it); NULL for NULL. */
char *wf__hook_strdup(const char *s);
/* An observed invocation of t starts (inv->obs_t0: its start time). */
void wf__hook_before(wf__run *run, const wf__task *t, wf__inv *inv, uint32_t obs);
/* wf__hook_before's usual case: 1 if done. */
int wf__hook_before_fast(wf__run *run, const wf__task *t, wf__inv *inv, uint32_t obs);
/* An observed invocation of t returned rc (and out): its STEP_END and EVENT_EMIT. */
void wf__hook_after(wf__run *run, const wf__task *t, const wf__inv *inv, int rc,
                    const wf_event *out, uint32_t obs);
/* wf__hook_after's usual case: 1 if done. */
int wf__hook_after_fast(wf__run *run, const wf__task *t, const wf__inv *inv, int rc,
                        const wf_event *out, uint32_t obs);
/* EVENT_EMIT from outside the run's steps (start event, handler send). */
void wf__hook_emit_outside(wf__run *run, const wf_event *ev);
/* EVENT_ROUTE of t to its step (waiting: the events queued behind it). */
void wf__hook_route_rec(wf__run *run, const wf__task *t, uint32_t waiting);
/* A record about one event: DROP, UNHANDLED, STREAM_WRITE. */
void wf__hook_event(wf__run *run, unsigned kind, uint32_t step, const wf_event_type *type,
                    int64_t value);

/* ------------------------------------------------- cut.c: live snapshots */

/*
 * Takes a consistent cut of a running run and encodes its bookkeeping into
 * *doc_run (a msgpack map, see docs/SNAPSHOT.md). WF_ESTATE if the run ended
 * before the cut (the caller saves the context at rest instead). When cancel
 * is set, the run is cancelled at the cut (nothing after it runs).
 */
int wf__run_capture(wf__run *run, int cancel, void **bytes, size_t *len, int64_t *pause_ns);
/* A run's snapshot locks, made by its first snapshot (cut.c). */
typedef struct wf__snap {
    pthread_mutex_t lock; /* guards held */
    wf__task *held;
    pthread_mutex_t mu; /* orders the snapshots of the run */
} wf__snap;
/* Frees a run's snapshot locks (NULL is fine). */
void wf__snap_free(struct wf__snap *sn);
/* Outside paths (timers, handlers, completions) around what they route. */
int wf__outside_enter(wf__run *run);
void wf__outside_exit(wf__run *run, int entered);
/* 1 if the calling thread holds an `outside` lock (of any run). */
int wf__outside_held(void);
/* The gate protocol's slow paths (cut.c): wait for the gate to open; park a task. */
void wf__gate_wait(wf__run *run);
int wf__slot_hold(wf__slot *slot, wf__run *run, wf__task *t);

/*
 * The live-snapshot protocol of a task runner (see wf__run.gate): announce
 * the run in the slot, then look at the gate; hold the task while a
 * snapshot is being taken. Costs two stores, a compiler barrier and a load
 * per task. 1 if t was held for a snapshot (the slot is free again).
 */
static inline int wf__slot_enter(wf__slot *slot, wf__run *run, wf__task *t)
{
    if (slot == NULL)
        return 0;
    atomic_store_explicit(&slot->task, t, memory_order_release);
    atomic_store_explicit(&slot->state, (uintptr_t)run, memory_order_release);
    wf__fence_light();
    if (WF__LIKELY(!atomic_load_explicit(&run->gate, memory_order_acquire)))
        return 0;
    return wf__slot_hold(slot, run, t);
}

/*
 * The task is about to make something visible to the run (route, finish its
 * slot, touch coordination state): wait while a snapshot is being taken.
 */
static inline void wf__slot_dirty(wf__run *run)
{
    wf__slot *slot = wf__tls_slot;
    if (slot == NULL || atomic_load_explicit(&slot->state, memory_order_relaxed) != (uintptr_t)run)
        return; /* already dirty, or not this run's task */
    for (;;) {
        atomic_store_explicit(&slot->state, (uintptr_t)run | WF__SLOT_DIRTY, memory_order_release);
        wf__fence_light();
        if (WF__LIKELY(!atomic_load_explicit(&run->gate, memory_order_acquire)))
            return;
        atomic_store_explicit(&slot->state, (uintptr_t)run, memory_order_release);
        wf__gate_wait(run);
    }
}

static inline void wf__slot_leave(wf__slot *slot)
{
    if (slot)
        atomic_store_explicit(&slot->state, 0, memory_order_release);
}

#endif
