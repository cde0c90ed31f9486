/*
 * durable.h: durable runs (issue 14, docs/DURABILITY.md "Durable runs").
 *
 * A store (wf/store.h) attached to an executor makes the runs started with
 * wf_run_start_durable recoverable: each has a caller-chosen run id (unique
 * in the store; without a store, unique among the process's durable runs
 * in memory), its start event and every event sent to it from outside are
 * journaled, a checkpoint (a live cut, wf_ctx_save) is taken of it every
 * checkpoint_ms, and its result is reported only once it is durable. After
 * a crash, wf_executor_recover continues the runs in flight from their last
 * checkpoint and the events journaled after it. Steps that ran after that
 * checkpoint run again (at-least-once); wf_ctx_invocation_key gives them a
 * key that is the same each time, so they can de-duplicate their effects.
 */
#ifndef WF_DURABLE_H
#define WF_DURABLE_H

#include <wf/common.h>
#include <wf/event.h>
#include <wf/run.h>
#include <wf/store.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Durable-run parameters. Fill with wf_durable_params_init; only grows at the end. */
typedef struct wf_durable_params {
    /** ms between checkpoints of a durable run that changed. Default 10. */
    uint32_t checkpoint_ms;
    /** ms between lease renewals (wf_store_renew); keep it under lease_ms / 3. Default 5000. */
    uint32_t renew_ms;
    /**
     * Idle release: a run whose checkpoint has not changed for this many ms
     * and that has nothing to run (it waits for an outside event: nothing
     * queued or in progress, no retry or async step pending, no waiter with
     * a timeout) is released: its checkpoint is durable, it becomes
     * WF_STORE_RELEASED in the store and leaves memory (its handlers report
     * WF_ECANCELLED). wf_durable_send to its id loads it again. 0 (default): never.
     */
    uint32_t idle_release_ms;
} wf_durable_params;

WF_API void wf_durable_params_init(wf_durable_params *p);

/**
 * Attaches store (borrowed: it must outlive ex; free the executor first) to
 * ex and starts ex's checkpoint thread. Once per executor: WF_ESTATE for a
 * second attach. params may be NULL.
 */
WF_API int wf_executor_attach_store(wf_executor *ex, wf_store *store,
                                    const wf_durable_params *params);

/**
 * wf_run_start_ex for a durable run named run_id (1 to 1024 bytes, copied).
 * WF_EEXIST when the id is in use (in the store, or by a run in memory);
 * with a store, the run is created there (leased to this store's owner),
 * its context's store (ctx given) is checkpointed and its start event
 * journaled before the run starts. Same ownership as wf_run_start_ex.
 */
WF_API int wf_run_start_durable(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, const char *run_id,
                                wf_event *start_event, const wf_run_params *params,
                                wf_handler **out, char **message);

/** What wf_executor_recover did. */
typedef struct wf_recover_info {
    uint32_t resumed; /**< runs continued in this executor */
    uint32_t busy;    /**< runs another live owner holds (lease): try again later */
    uint32_t failed;  /**< runs that could not be continued (first reason in *message) */
    /**
     * Runs whose start was not durable when their process died (created,
     * but neither a checkpoint holding the run nor the start event
     * committed): removed from the store, their ids free again.
     */
    uint32_t forgotten;
} wf_recover_info;

/**
 * Continues the runs in flight in ex's store (running or waiting) whose
 * workflow is one of wfs[0..n) (by name) and whose lease is free or ours:
 * each is claimed, loaded from its last checkpoint, the events journaled
 * after it are sent again, and it goes on in ex. A run whose checkpoint
 * does not fit its workflow (a step it no longer has: WF_EMISMATCH) or
 * whose workflow is not given is left as it is in the store and counted
 * in failed (*message, optional, caller owns: the first reason). Returns
 * 0, or an error of the store. info may be NULL.
 */
WF_API int wf_executor_recover(wf_executor *ex, wf_workflow *const *wfs, size_t n,
                               wf_recover_info *info, char **message);

/**
 * A handler for the durable run run_id in memory in ex (from any thread):
 * status, wait, result, send (journaled), cancel; wf_handler_free it.
 * WF_ENOTFOUND when no such run is in memory in ex (it finished: see
 * wf_durable_result; or it is not recovered yet).
 */
WF_API int wf_handler_open(wf_executor *ex, const char *run_id, wf_handler **out);

/** Durable runs of ex in memory now (released ones are not). */
WF_API uint64_t wf_durable_in_memory(wf_executor *ex);

/**
 * Sends ev (taken, also on failure) to the durable run run_id in memory in
 * ex, or not in memory but loadable: released, or in flight with a free
 * lease or this store owner's, of a workflow ex has started or recovered
 * runs of (it is claimed and loaded from the store first, as
 * wf_executor_recover would). Journaled before it is delivered, so a
 * recovery delivers it again if no checkpoint after it committed.
 * WF_EBUSY: another owner holds the run's lease (another live process; the
 * message, wf_last_error_message, names the owner and the lease expiry) or
 * another executor of this process has it in memory; WF_ESTATE: the run
 * has finished; WF_ENOTFOUND: the store has no such run; or as
 * wf_handler_send_event. Any thread but the store's writer.
 */
WF_API int wf_durable_send(wf_executor *ex, const char *run_id, wf_event *ev, const char *target);

/**
 * The durable result of run_id from ex's store: *status a wf_run_status,
 * *result (optional, caller owns) the terminal event (a StopEvent, or the
 * WorkflowFailed/TimedOut/Cancelled event) decoded in wf's registry.
 * WF_EAGAIN while it runs, WF_ENOTFOUND, WF_ESTATE without a store.
 */
WF_API int wf_durable_result(wf_executor *ex, wf_workflow *wf, const char *run_id,
                             wf_run_status *status, wf_event **result);

/**
 * The durable stream of a durable run, read from the store by run id (any
 * thread, also for a run of another process or one that has finished).
 * Every event a durable run with a store streams (what its handler's
 * wf_handler_next_event gives, internal notifications included when
 * stream_internal is set) is journaled with its number in the run's stream:
 * 0, 1, 2, ... per run. The numbers of the committed events have no gap
 * and no duplicate, also across a crash: steps that run again after a
 * recovery stream again, under new numbers. A reader sees committed events
 * only (each within checkpoint_ms plus a commit round of being streamed:
 * a run's records are appended 64 at a time or at the next checkpoint
 * pass, and always before its result), in number order; after the last event of a finished run comes its terminal event
 * (the StopEvent, or the failed/timed-out/cancelled event), numbered after
 * the last streamed one, then WF_ECLOSED. Events the handler's ring drops
 * (full, or stream_capacity 0) are journaled all the same: the ring bounds
 * the live consumer's memory, not the durable stream.
 */
typedef struct wf_durable_stream wf_durable_stream;

/**
 * Opens the durable stream of run_id in ex's store from the event numbered
 * cursor (0: the first; a cursor a previous reader's
 * wf_durable_stream_cursor returned: from there on). wf's registry decodes
 * the events (a reference is kept). WF_ENOTFOUND: no such run in the
 * store; WF_ERANGE: cursor is past the committed end (the number of
 * committed events, plus one for a finished run's terminal event);
 * WF_ESTATE: ex has no store; WF_EINVAL. Caller owns *out:
 * wf_durable_stream_free, before ex's store is freed. Any thread.
 */
WF_API int wf_durable_stream_open(wf_executor *ex, wf_workflow *wf, const char *run_id,
                                  uint64_t cursor, wf_durable_stream **out);

/**
 * The next committed event of the stream (caller owns *ev:
 * wf_event_release) and its number in *seq (optional), waiting up to
 * timeout_ms (-1 forever; it polls the store, every 1 to 20 ms) while the
 * run goes on. WF_ETIMEDOUT: nothing new in time (call again);
 * WF_ECLOSED: the run finished and its terminal event was given;
 * WF_ECORRUPT: the journal's stream records are out of order. One thread
 * at a time per reader.
 */
WF_API int wf_durable_stream_next(wf_durable_stream *s, int64_t timeout_ms, wf_event **ev,
                                  uint64_t *seq);

/** The number of the next event s gives: a cursor to open another reader at. */
WF_API uint64_t wf_durable_stream_cursor(const wf_durable_stream *s);

/** Frees s (NULL is fine). */
WF_API void wf_durable_stream_free(wf_durable_stream *s);

/**
 * The idempotency key of the calling step's invocation into buf:
 * "run_id/step/h/attempt" (wf_store_idempotency_key) where h is a 64-bit
 * hash of the input event (type and fields) and attempt the retry attempt.
 * The same before and after a recovery, different per retry attempt; two
 * invocations of one step on equal events in one run share it (give such
 * events a distinguishing field). A run without an id uses its number.
 * Returns the length, WF_ERANGE (cap too small), WF_ESTATE outside a step
 * of ctx's run.
 */
WF_API int wf_ctx_invocation_key(const wf_ctx *ctx, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
