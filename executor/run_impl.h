/*
 * run_impl.h: the run engine's structures, shared by run.c (the engine) and
 * live.c (live snapshots and resume). Never installed.
 */
#ifndef WF_RUN_IMPL_H
#define WF_RUN_IMPL_H

#include "exec.h"

typedef struct wf__pendq {
    _Atomic(wf__task *) tail;
    wf__task *head;   /* consumer side, under lock */
    atomic_flag lock; /* serialises consumers */
    wf__task stub;
} wf__pendq;

/* Bookkeeping of a retried event: kept with its task (task->arg). */
typedef struct wf__retry_info {
    int64_t first_ns; /* when the first execution started */
    int32_t last_error;
    char *last_msg;
    wf_event **tuple; /* a join step's set of events (owned), or NULL */
    uint32_t ntuple;
    int joined;       /* a join's set (possibly empty) is there */
    int tuple_inline; /* tuple points into this block (not freed on its own) */
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
    wf__timer tm;
    int timer_live; /* armed and its callback not finished (coord lock) */
    int orphan;     /* taken off the list while its callback runs: it frees w */
    int64_t obs_t0; /* when it started waiting, if observed */
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
    int64_t started; /* for retry and handler timing */
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
    struct wf__group *next_in_run; /* a decoded run's groups before attach (live.c) */
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
    _Atomic uint32_t count; /* bounded steps (see run.c) */
    uint32_t workers;
    _Atomic(wf__pendq *) pendq; /* created on first need */
    uint32_t col;               /* an unbounded step's column in run->shards */
    uint8_t join;               /* copies of the step's flags, on the line routing touches */
    uint8_t blocking;
} wf__step_state;

typedef struct wf__run {
    _Atomic uint32_t refs;
    _Atomic uint32_t engine;
    _Atomic int ended; /* 0 -> 1 exactly once */
    uint64_t id;
    int64_t obs_t0; /* RUN_START time when observed, else 0 */
    struct wf_executor *ex;
    wf_workflow *wf;
    const wf_registry *reg; /* wf->reg, read on every emission */
    wf_ctx *ctx;
    wf__timer timeout;
    int64_t timeout_ms;

    /* the outcome: written by the one that ended the run, then published under mu */
    int status; /* wf_run_status, under mu */
    wf_event *result;
    int err_code;
    char *err_step;
    char *err_msg;

    /* stream and waiting, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wf_event **sbuf;
    uint32_t scap;
    uint32_t shead;
    uint32_t scount;
    wf_event *terminal;
    int terminal_given;
    int reader_busy;
    int sleepers;
    _Atomic uint64_t dropped;
    _Atomic uint64_t unhandled;
    int stream_internal;
    wf_done_fn on_done;
    void *on_done_user;
    wf__retry_timer *retries;     /* armed retries, under mu */
    pthread_mutex_t collect_lock; /* guards collect and waiters */
    wf__collect *collect;
    wf__waiter *waiters;
    wf_completion *pending;    /* async invocations waiting for completion */
    _Atomic uint32_t nwaiting; /* waiters in W_WAITING: emit looks only when nonzero */

    /*
     * Live snapshots (live.c). While gate is 1, a task runner that picks up a
     * task of this run holds it (held, chained through next, under
     * snap_lock) instead of running it, and one about to make an effect
     * visible waits for the gate to open; outside paths take `outside` for
     * reading, the snapshot for writing. snap_mu orders snapshots.
     */
    _Atomic int gate;
    pthread_mutex_t snap_lock;
    wf__task *held;
    pthread_rwlock_t outside;
    pthread_mutex_t snap_mu;

    /* the executor's list of runs not ended, under ex->runs_lock */
    struct wf__run *prev, *next;
    int listed;

    /* unbounded steps' counts: shard i, column c at shards[i * shard_stride + c] */
    _Atomic uint32_t *shards;
    uint32_t nshards; /* workers (at most 255) + 1 shared */
    uint32_t shard_stride;

    uint32_t nsteps;
    wf__step_state steps[];
} wf__run;

/* Events accepted by step s and not finished (the sum of its shards when unbounded). */
static inline uint32_t wf__step_count(wf__run *run, uint32_t s)
{
    const wf__step_state *ss = &run->steps[s];
    if (ss->workers < WF__UNBOUNDED)
        return atomic_load_explicit(&run->steps[s].count, memory_order_acquire);
    uint32_t n = 0;
    for (uint32_t i = 0; i < run->nshards; i++)
        n += atomic_load_explicit(&run->shards[i * run->shard_stride + ss->col],
                                  memory_order_acquire);
    return n;
}

/* The invocation running on this thread (like Python's contextvars). */
typedef struct wf__inv {
    wf__run *run;
    wf__step *step;
    wf__task *task;
    wf_event **sent;
    int32_t *targets;
    uint32_t nsent;
    uint32_t capsent;
    char *errmsg;
    int suspended;          /* a waiter was registered: WF_SUSPEND is expected */
    wf_completion *token;   /* wf_ctx_pend was called: WF_PENDING is expected */
    struct deferred *defer; /* emissions held for the claimed batch it runs in, or NULL */
    int64_t obs_t0;         /* observed: when it started (observation clock), else 0 */
    wf_event *inl_sent[8];
    int32_t inl_targets[8];
} wf__inv;

/* ---- run.c's services for live.c ---- */

static inline int wf__run_ended(const wf__run *run)
{
    return atomic_load_explicit(&((wf__run *)run)->ended, memory_order_acquire);
}

/* Frees a task and what it owns (its event, retry info, its branch unit). */
void wf__drop_task(wf__task *t);
/* Delivers a prepared INVOKE task (owned) through its step's count. */
int wf__deliver_task(wf__run *run, wf__task *t);
/* Schedules a task whose slot is taken (a worker or the blocking pool). */
void wf__run_schedule(wf__run *run, wf__task *t);
/* Ends the run once (see run.c). */
int wf__end_run(wf__run *run, int status, wf_event *result, int code, const char *step,
                const char *msg);
/* Routes ev (owned) into the run as an event from outside. */
void wf__run_emit(wf__run *run, wf_event *ev, int32_t target);
void wf__branch_add(wf__group *g, uint32_t b);
void wf__branch_done(wf__run *run, wf__group *g, uint32_t b);
wf__cq *wf__cq_find(wf__collect *c, const wf_event_type *t, int create);
int wf__cq_push(wf__cq *q, wf_event *ev);
void wf__retry_fire(wf__timer *tm, void *arg);
void wf__waiter_fire(wf__timer *tm, void *arg);
void wf__engine_ref(wf__run *run);
void wf__run_release(wf__run *run);
void wf__engine_unref(wf__run *run);
/* Frees a list of collect buffers. */
void wf__collect_free(wf__collect *c);
/*
 * A group of n branches in one block, zeroed, open = n (NULL: out of
 * memory); wf__groups_free frees a list of groups no task refers to
 * (through next_in_run: a decoded run's, when it is not attached).
 */
wf__group *wf__group_new(uint32_t n);
void wf__groups_free(wf__group *g);
/* Gives up one of g->open (a closed branch, or a hold): the last frees g. */
void wf__group_close(wf__group *g);
/* The checks common to starting and resuming a run (freezes and validates wf). */
int wf__run_params_check(wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params,
                         char **message);
/*
 * A new run of wf on ctx (a run parked in ctx is dropped from it), registered with the executor and its timeout
 * armed, with nothing delivered yet (wf_run_start_ex's first half).
 */
int wf__run_create(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params,
                   wf__run **out);

/* ---- live snapshots (live.c) ---- */

/*
 * Takes a consistent cut of a running run and encodes its bookkeeping into
 * *doc_run (a msgpack map, see docs/SNAPSHOT.md). WF_ESTATE if the run ended
 * before the cut (the caller saves the context at rest instead). When cancel
 * is set, the run is cancelled at the cut (nothing after it runs).
 */
int wf__run_capture(wf__run *run, int cancel, void **bytes, size_t *len, int64_t *pause_ns);
/* Outside paths (timers, handlers, completions) around what they route. */
int wf__outside_enter(wf__run *run);
void wf__outside_exit(wf__run *run, int entered);

#endif
