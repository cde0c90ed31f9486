/*
 * run.h: the executor, runs, handlers and the event stream.
 *
 * An executor is a pool of worker threads (per-worker work-stealing deques, a
 * shared injection queue, idle workers park) and one timer thread. Any number
 * of runs of any workflows share it; two executors in one process share
 * nothing.
 *
 * wf_run_start() returns at once with a handler; the run executes on the
 * pool. The handler waits for the result, streams events, sends events into
 * the run, cancels it, and gives its id and context.
 */
#ifndef WF_RUN_H
#define WF_RUN_H

#include <wf/common.h>
#include <wf/value.h>
#include <wf/event.h>
#include <wf/workflow.h>
#include <wf/context.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wf_executor wf_executor;
typedef struct wf_handler wf_handler;

/** Executor parameters. Fill with wf_executor_params_init; only grows at the end. */
typedef struct wf_executor_params {
    /** Worker threads; 0 (default) = the number of online cores. */
    uint32_t threads;
    /** How long an idle worker spins looking for work before it parks, in µs. Default 50. */
    uint32_t spin_us;
    /** Optional logger (any thread calls it) and its user pointer. */
    wf_log_fn log;
    void *log_user;
    /** Threads of the pool that runs blocking steps (default 4; started on first use). */
    uint32_t blocking_threads;
    /**
     * Observation (wf/observe.h): records each thread's ring holds before
     * records are dropped, 64 bytes each, allocated on the thread's first
     * record. Rounded up to a power of two, 64 to 2^24; default 4096 (a
     * step invocation usually takes one). Larger rings ride out longer
     * bursts faster than the observers take them.
     */
    uint32_t observe_buffer;
} wf_executor_params;

WF_API void wf_executor_params_init(wf_executor_params *p);

/** Starts the workers. params may be NULL for the defaults. Caller owns: wf_executor_free. */
WF_API int wf_executor_new(wf_executor **out, const wf_executor_params *params);
/**
 * Shuts down: cancels the runs still active (each ends as cancelled, its
 * handler reports WF_ECANCELLED), waits for invocations in progress to
 * return, joins the threads and frees the executor. Handlers stay valid until
 * wf_handler_free. Must not be called from a thread of ex itself (a step,
 * an on_done callback): it would wait for that very thread, so such a call
 * is refused (logged at WF_LOG_ERROR, the executor left running). NULL is
 * fine.
 */
WF_API void wf_executor_free(wf_executor *ex);
/** Number of worker threads. */
WF_API uint32_t wf_executor_threads(const wf_executor *ex);

/** Value of wf_run_params.timeout_ms meaning "the workflow's timeout". */
#define WF_TIMEOUT_DEFAULT (-2)

/** How a run ended. */
typedef enum wf_run_status {
    WF_RUN_RUNNING = 0,
    WF_RUN_DONE = 1,      /* a StopEvent: the result is there */
    WF_RUN_FAILED = 2,    /* a step failed; see wf_handler_error */
    WF_RUN_TIMED_OUT = 3, /* the run timeout expired */
    WF_RUN_CANCELLED = 4  /* wf_handler_cancel or executor shutdown */
} wf_run_status;

/**
 * Called once when a run ends, on an executor thread. Must not block. It may
 * free the handler (wf_handler_free), also while the wf_run_start_ex that
 * started the run has not returned yet.
 */
typedef void (*wf_done_fn)(wf_handler *h, void *user);

/** Run parameters. Fill with wf_run_params_init; only grows at the end. */
typedef struct wf_run_params {
    /** ms, WF_NO_TIMEOUT, or WF_TIMEOUT_DEFAULT (default: the workflow's). */
    int64_t timeout_ms;
    /**
     * Stream capacity in events (default 4096). When the stream is full,
     * further non-terminal events are dropped and counted
     * (wf_handler_stream_dropped); the terminal event always gets through.
     * 0 disables streaming: nothing is kept except the terminal event.
     */
    uint32_t stream_capacity;
    /**
     * Nonzero: also stream the reference's internal notifications (its
     * stream_events(expose_internal=True)). Default 0. They are:
     * - StepStateChanged {name, step_state, worker_id, input_event_name,
     *   output_event_name}: step_state "preparing" (an event queued behind
     *   num_workers), "running" (an invocation starts), "not_running" (it
     *   returned; output_event_name: the type it returned, if any);
     *   worker_id "worker N", "blocking N" or "outside".
     * - WorkflowIdleEvent {}: the run went idle: nothing runs or waits to
     *   run, and a step waits for an event (wf_ctx_wait_for_event); once per
     *   idle period (a "running" StepStateChanged ends it).
     * - UnhandledEvent {event_type, qualified_name, step_name (nil), idle}:
     *   an event no step accepts (always counted: wf_handler_unhandled).
     */
    int32_t stream_internal;
    /** Optional end-of-run callback and its user pointer (see wf_done_fn). */
    wf_done_fn on_done;
    void *on_done_user;
    /**
     * A W3C trace context the run joins ("00-<32 hex>-<16 hex>-<2 hex>",
     * copied), or NULL (default): the run's traces start a trace of their
     * own. The run's RUN_START record carries it (wf_obs_record.traceparent);
     * the OpenTelemetry exporters put the run's spans in that trace, the run
     * span under the caller's span. WF_EINVAL at start when malformed.
     */
    const char *traceparent;
    /**
     * The run's fence: a wf_clock_ns() time, or 0 (default: none). No step
     * of the run starts at or after it, and what a step returns (or
     * completes, wf_completion) at or after it is dropped: the run then
     * ends cancelled (WF_RUN_CANCELLED: wf_handler_wait gives WF_ECANCELLED,
     * wf_handler_error the code WF_ELEASE and the step), and in a step that
     * is still running wf_ctx_is_cancelled turns true. For a process that
     * runs a run under a lease (the cluster's workers): the fence is the
     * time its lease is sure to hold until, renewed with wf_handler_fence
     * as the lease is, so that a process that stalled past its lease starts
     * nothing of a run another process may have taken over. WF_EINVAL when
     * negative. Runs without a fence pay nothing for it.
     */
    int64_t fence_ns;
    /**
     * Nonzero: the start event's first invocation runs on the calling
     * thread, before wf_run_start_ex returns, instead of on a worker; what
     * it returns or sends goes to the executor as usual (and a run whose
     * first step ends it, ends before the call returns: its on_done runs on
     * the calling thread). For a server whose runs are short (wf serve): a
     * request costs no hand-off to a worker and back. The calling thread is
     * held for that step. Default 0. Ignored on a thread of an executor (a
     * step starting a run), for a blocking step (wf_step_params.blocking: the
     * blocking pool runs it), for a run waiting for its place
     * (num_concurrent_runs), and when more than WF_RUN_HERE_THREADS (8)
     * threads run a first step at once: the worker takes it then.
     */
    int32_t run_here;
} wf_run_params;

/** Threads that can run a first step at once (wf_run_params.run_here). */
#define WF_RUN_HERE_THREADS 8

WF_API void wf_run_params_init(wf_run_params *p);

/**
 * Starts a run of wf with start_event (takes ownership, also on failure; it
 * must be of the workflow's start type) on the context ctx (NULL: a new one).
 * A start event discards a run parked in ctx (see wf_run_resume); a NULL
 * start_event resumes it instead.
 * The workflow is frozen and validated (unless validation is off) first:
 * WF_EVALIDATION, with the report in *message if message is not NULL
 * (caller owns: wf_free).
 * WF_EBUSY if ctx is running, WF_ETYPE for a start event of another type,
 * WF_EMISMATCH if ctx belongs to another workflow, WF_ESHUTDOWN.
 * On success the caller owns *out: wf_handler_free. Any thread but a worker
 * of ex blocked on the result.
 */
WF_API int wf_run_start_ex(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, wf_event *start_event,
                           const wf_run_params *params, wf_handler **out, char **message);
/**
 * Continues the run parked in ctx (a cancelled run, or one loaded with
 * wf_ctx_load from a snapshot taken mid-run) without a new start event:
 * its queued events are queued again, the events that were in progress when
 * it was saved run again (at-least-once), waiters, collect and join buffers,
 * list fan-outs and pending retries are restored (retry and waiter timers
 * re-armed for the time they had left), and the run timeout starts afresh.
 * WF_ESTATE if ctx holds no parked run, WF_EFORMAT / WF_ENOTFOUND /
 * WF_EMISMATCH if the parked run does not fit wf (*message says why); the
 * parked run stays in ctx when resuming fails. Same ownership as
 * wf_run_start_ex.
 */
WF_API int wf_run_resume(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx,
                         const wf_run_params *params, wf_handler **out, char **message);
/** wf_run_start_ex with default parameters and no message. */
WF_API int wf_run_start(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, wf_event *start_event,
                        wf_handler **out);
/**
 * Starts a run and waits for it (wait timeout: wait_ms, or -1 forever).
 * Returns what wf_handler_wait returns; *result as there. The handler is
 * freed (an unfinished run goes on, detached). With wait_ms -1 on a worker
 * thread of ex (from a step) it would wait for the very workers it holds:
 * WF_ESTATE, nothing started (the start event is released).
 */
WF_API int wf_run(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, wf_event *start_event,
                  int64_t wait_ms, wf_event **result);

/* ---- the handler: any thread ---- */

/**
 * Waits up to timeout_ms (-1 forever, 0 poll) for the run to end. Returns 0
 * when it ended with a StopEvent (its subtypes included) and, if result is
 * not NULL, gives the StopEvent (caller owns: wf_event_release);
 * WF_ESTEP when a step failed (wf_handler_error tells which), WF_ERUNTIMEOUT,
 * WF_ECANCELLED, or WF_ETIMEDOUT if the run is still going. Waiting
 * forever (-1) for a running run from a worker thread of the run's executor
 * (a step) could never end: WF_ESTATE at once (give a timeout, or use an
 * async step, wf_ctx_pend).
 */
WF_API int wf_handler_wait(wf_handler *h, int64_t timeout_ms, wf_event **result);
/** The current status, without waiting. */
WF_API wf_run_status wf_handler_status(const wf_handler *h);
/**
 * Why the run failed or timed out: the error code a step returned (or
 * WF_ERUNTIMEOUT / WF_ECANCELLED), the step's name (NULL if none; for a
 * timeout the first active step, or the step waiting for an event when
 * none runs), and a message (for a timeout it names the active steps). Borrowed: valid while
 * the handler is. Returns WF_ESTATE while running, 0 otherwise.
 */
WF_API int wf_handler_error(const wf_handler *h, int *code, const char **step,
                            const char **message);
/** The run id (unique within the executor, nonzero). */
WF_API uint64_t wf_handler_run_id(const wf_handler *h);
/** The run's context. Borrowed: valid while the handler is (wf_ctx_retain to keep it). */
WF_API wf_ctx *wf_handler_ctx(const wf_handler *h);
/**
 * Sends ev into the run (takes ownership): to every accepting step (target
 * NULL) or one step (WF_ENOTFOUND, WF_ETYPE as wf_ctx_send_event).
 * WF_ESTATE when the run has ended.
 */
WF_API int wf_handler_send_event(wf_handler *h, wf_event *ev, const char *target);
/**
 * Cancels the run: WorkflowCancelledEvent is streamed, waiters get
 * WF_ECANCELLED, the context stays valid. What the run had not done yet
 * (queued and in-progress events, waiters, buffers, retries) is parked in
 * the context at the moment of the cancel: wf_ctx_save writes it and
 * wf_run_resume continues it. 0, or WF_ESTATE if it had ended.
 */
WF_API int wf_handler_cancel(wf_handler *h);
/**
 * Gives a run started without an end callback (one opened by id with
 * wf_handler_open, a recovered run) the callback fn, as
 * wf_run_params.on_done would have: called once, when the run ends, on an
 * executor thread; when it has ended already, now, on the calling thread.
 * So nothing needs a thread that waits for the run's end. 0, WF_EBUSY if
 * the run has an end callback, WF_EINVAL for NULL h or fn. fn may free the
 * handler: after this returns, h may be gone if fn frees it.
 */
WF_API int wf_handler_on_done(wf_handler *h, wf_done_fn fn, void *user);
/**
 * Sets the run's fence (see wf_run_params.fence_ns) to deadline_ns, a
 * wf_clock_ns() time; 0 removes it. Renewing a lease is calling this with a
 * later time before the fence passes. 0, WF_ESTATE if the run has ended,
 * WF_EINVAL for a NULL handler or a negative time.
 */
WF_API int wf_handler_fence(wf_handler *h, int64_t deadline_ns);
/** The clock of fences: CLOCK_MONOTONIC in ns. */
WF_API int64_t wf_clock_ns(void);
/**
 * The next streamed event (caller owns: wf_event_release), waiting up to
 * timeout_ms (-1 forever). Events come in the order each producer wrote
 * them; the terminal event (StopEvent or subtype) comes last, after which
 * WF_ECLOSED. WF_ETIMEDOUT when nothing came in time. One consumer only:
 * a call from a second thread while one waits is WF_EBUSY.
 */
WF_API int wf_handler_next_event(wf_handler *h, int64_t timeout_ms, wf_event **ev);
/** Events the stream dropped because it was full. */
WF_API uint64_t wf_handler_stream_dropped(const wf_handler *h);
/** Events no step accepted (each also an UnhandledEvent notification). */
WF_API uint64_t wf_handler_unhandled(const wf_handler *h);
/**
 * Frees the handler. A run still going continues detached and its result is
 * dropped. NULL is fine.
 */
WF_API void wf_handler_free(wf_handler *h);

#ifdef __cplusplus
}
#endif

#endif
