/*
 * context.h: the per-run context: its store and the calls steps make.
 *
 * A context belongs to one workflow. It holds the store (a map of wf_values
 * addressed by dotted paths) and, while a run uses it, that run's state. One
 * run at a time: starting a run on a context that is running is WF_EBUSY.
 * A context reused for the next run keeps its store (the quick start counts
 * runs this way).
 *
 * The store is guarded by a reader-writer lock: readers run in parallel, a
 * writer (wf_ctx_set, wf_ctx_edit_state) is alone. Values are immutable, so
 * a value read from the store stays valid and unchanged whatever happens to
 * the store afterwards.
 *
 * Step calls (send_event, write_event_to_stream, set_error, ...) act on the
 * invocation that the calling thread is running; wf finds it itself (as
 * Python's contextvars do), so the same wf_ctx pointer is used everywhere.
 */
#ifndef WF_CONTEXT_H
#define WF_CONTEXT_H

#include <wf/common.h>
#include <wf/value.h>
#include <wf/event.h>
#include <wf/workflow.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A new, idle context for wf (takes a reference on wf). Caller owns: wf_ctx_free. */
WF_API int wf_ctx_new(wf_ctx **out, wf_workflow *wf);
/** Drops the caller's reference (a run holds its own while it lasts). NULL is fine. */
WF_API void wf_ctx_free(wf_ctx *ctx);
/** A new reference, for wf_ctx_free. */
WF_API wf_ctx *wf_ctx_retain(wf_ctx *ctx);
/** The workflow. Borrowed: valid while the context is. */
WF_API wf_workflow *wf_ctx_workflow(const wf_ctx *ctx);
/** 1 while a run uses the context. Any thread. */
WF_API int wf_ctx_is_running(const wf_ctx *ctx);
/**
 * 1 when the context holds a run that can be continued with wf_run_resume:
 * its run was cancelled, or it was loaded from a snapshot taken mid-run.
 * Any thread.
 */
WF_API int wf_ctx_is_resumable(const wf_ctx *ctx);

/* ---- the store: any thread, any time ---- */

/**
 * The value at a dotted path ("a.b.c": keys of nested maps). Caller owns *out
 * (wf_value_release). WF_ENOTFOUND when a part is missing, WF_EKIND when a
 * part that should be a map is not, WF_EINVAL for an empty path or part.
 */
WF_API int wf_ctx_get(wf_ctx *ctx, const char *path, wf_value *out);
/** Like wf_ctx_get, but a missing path gives dflt (retained) instead of an error. */
WF_API int wf_ctx_get_default(wf_ctx *ctx, const char *path, wf_value dflt, wf_value *out);
/**
 * Sets the value at path, creating missing intermediate maps. Takes ownership
 * of val. WF_EKIND when an intermediate part exists and is not a map.
 */
WF_API int wf_ctx_set(wf_ctx *ctx, const char *path, wf_value val);
/** Removes the value at path. WF_ENOTFOUND when absent. */
WF_API int wf_ctx_delete(wf_ctx *ctx, const char *path);
/**
 * The whole state (a map), caller owns *out. A consistent snapshot: later
 * changes never show in it.
 */
WF_API int wf_ctx_state(wf_ctx *ctx, wf_value *out);

/**
 * An edit of the whole state: fn receives an owned reference to the state
 * map in *state and may change it with the wf_value calls or replace it (it
 * must leave a map there). If fn returns 0 the result becomes the new state
 * in one step; otherwise nothing changes and fn's code is returned.
 * Runs under the store's write lock: readers see the old or the new state,
 * never a half; fn must not call the store of the same context.
 */
typedef int (*wf_edit_fn)(wf_value *state, void *user);
WF_API int wf_ctx_edit_state(wf_ctx *ctx, wf_edit_fn fn, void *user);

/* ---- calls made from inside a step ---- */

/**
 * Emits ev from the calling step. The returned event is routed first, then
 * the sent ones in send order, when the step returns; except that a step
 * with no retry policy and no error handler that sends many events has them
 * routed in send order in batches of 64 as it sends them (so their
 * receivers start at once and they never all exist together): the returned
 * event then follows those batches, and a failure of the step no longer
 * takes back the batches already routed. target: NULL for every
 * step that accepts the type, or a step name (WF_ENOTFOUND if no such step,
 * WF_ETYPE if it does not accept the type). Takes ownership of ev.
 * From outside a step (no invocation on this thread) it acts like
 * wf_handler_send_event on the context's current run (WF_ESTATE if none).
 */
WF_API int wf_ctx_send_event(wf_ctx *ctx, wf_event *ev, const char *target);
/**
 * Publishes ev on the run's stream (see wf_handler_next_event). Takes
 * ownership. WF_ESTATE when the context has no run; after the run ended the
 * event is dropped and 0 returned (late emissions never reach the stream).
 * A full stream drops it and counts it (wf_handler_stream_dropped): 0;
 * WF_ENOMEM when the stream's buffer could not be allocated (dropped too).
 */
WF_API int wf_ctx_write_event_to_stream(wf_ctx *ctx, wf_event *ev);
/**
 * The names of the steps of the context's run that have invocations in
 * progress (running, or pending on an async token), in definition order, as
 * an array of strings in *out (caller owns: wf_value_release). A step
 * suspended in wf_ctx_wait_for_event is not in progress; inside a step, its
 * own step is. The reference's get_running_steps. WF_ESTATE when the context
 * has no run, WF_EINVAL for NULL. Any thread.
 */
WF_API int wf_ctx_running_steps(wf_ctx *ctx, wf_value *out);
/**
 * A step's own spans, under its step span in traces (OpenTelemetry and the
 * observers: WF_OBS_SPAN_* records). wf_ctx_span_begin opens a child span
 * named name (copied) of the innermost span this invocation opened and has
 * not ended, or of the step span; *span gets its number within the
 * invocation (>= 1). Attributes go on an open span; wf_ctx_span_end ends it
 * with error (0 or a negative code) and message (copied, may be NULL) for
 * its status. Spans left open end with the step. With no observer nothing
 * is recorded (the calls stay valid). Only from the step's body, on the
 * thread running it: WF_ESTATE elsewhere; WF_EINVAL for NULLs or a span
 * number this invocation did not open; WF_ENOMEM.
 */
WF_API int wf_ctx_span_begin(wf_ctx *ctx, const char *name, uint32_t *span);
WF_API int wf_ctx_span_attr_str(wf_ctx *ctx, uint32_t span, const char *key, const char *value);
WF_API int wf_ctx_span_attr_int(wf_ctx *ctx, uint32_t span, const char *key, int64_t value);
WF_API int wf_ctx_span_end(wf_ctx *ctx, uint32_t span, int32_t error, const char *message);
/**
 * Buffers in (retained) for the calling step under buffer_id (NULL: ""), per
 * run. When one event of each of types[0..n) is buffered (a type listed k
 * times needs k events), returns 0 and puts them in events[0..n) in the order
 * of types (caller owns each: wf_event_release), removing them from the
 * buffer; otherwise WF_EAGAIN (the step then usually returns with no event).
 * Same-type events are handed out in arrival order; several invocations of
 * the step may collect at once and every buffered event is handed out once.
 * Cost: O(1) per call while the same types array is passed (what each type
 * needs is computed once per array: keep the array, as a static or in the
 * step's user data, rather than rebuilding it per call); O(n) when a set is
 * complete.
 * WF_ETYPE if in's type is not in types, WF_ESTATE outside a step.
 */
WF_API int wf_ctx_collect_events(wf_ctx *ctx, const wf_event *in, const wf_event_type *const *types,
                                 size_t n, const char *buffer_id, wf_event **events);
/**
 * Waits, inside a step, for an event of exactly type whose fields equal every
 * entry of requirements (a map, borrowed; nil for none).
 *
 * The first call registers a waiter (id waiter_id, or one derived from type
 * and requirements), streams waiter_event once (this is how a step asks a
 * human; takes ownership of it, may be NULL) and returns WF_SUSPEND: the step
 * must then return WF_SUSPEND. Its events sent so far are routed; its worker
 * is free. When a matching event arrives (routed by any step or sent through
 * the handler) the step runs again from the top with its original input
 * event, and this call now returns 0 with the event in *ev (caller owns). The
 * event is not also routed to this step the normal way. After timeout_ms
 * (WF_NO_TIMEOUT: never) the step runs again and the call returns
 * WF_ETIMEDOUT.
 *
 * Replay: everything the step did before the wait happens again on the second
 * run (store writes, sends, outside calls), as in the reference; keep steps
 * that wait idempotent up to the wait.
 */
WF_API int wf_ctx_wait_for_event(wf_ctx *ctx, const wf_event_type *type, wf_value requirements,
                                 wf_event *waiter_event, const char *waiter_id, int64_t timeout_ms,
                                 wf_event **ev);
/**
 * Async steps. Inside a step, wf_ctx_pend gives a completion token; the step
 * hands it to whatever does the work (an I/O loop, another thread) and
 * returns WF_PENDING. No worker thread is held meanwhile; the invocation
 * still counts against num_workers. Any thread then finishes it exactly once
 * with wf_completion_complete (the returned event, or NULL) or
 * wf_completion_fail (an error: retries and error handlers apply as for a
 * step's own failure); events given to wf_completion_send before are routed
 * after the returned one. Completing before the step has returned is fine.
 * If the run ends first (stop, timeout, cancel), the token is detached:
 * completing it then only frees it and returns WF_ECANCELLED. The token is
 * freed by the finishing call in every case; never use it afterwards.
 */
typedef struct wf_completion wf_completion;
/** A token for the calling invocation (one per invocation: WF_EEXIST). WF_ESTATE outside a step. */
WF_API int wf_ctx_pend(wf_ctx *ctx, wf_completion **out);
/** Queues ev (takes ownership) for routing at completion; target as wf_ctx_send_event. */
WF_API int wf_completion_send(wf_completion *c, wf_event *ev, const char *target);
/** Finishes with ev as the returned event (takes ownership; may be NULL). Frees c. */
WF_API int wf_completion_complete(wf_completion *c, wf_event *ev);
/** Finishes with a failure (code < 0; message copied, may be NULL). Frees c. */
WF_API int wf_completion_fail(wf_completion *c, int code, const char *message);
/** 1 once the run has ended (the completer may stop its work early). Any thread. */
WF_API int wf_completion_cancelled(const wf_completion *c);

/**
 * List fan-out: emits the n events evs[0..n) as n branches (takes ownership
 * of them all, also on failure) whose results the join_list step accepting
 * `collect` receives together, once. A branch is the event and everything
 * that descends from it (the events its steps emit, their retries, waits and
 * pending completions, and nested fan-outs). A branch *resolves* when the
 * first event of type `collect` descends from it (that event is its result;
 * it is not routed to the join step otherwise) or when nothing of it is left
 * running or queued without such an event (it drops out). When every branch
 * has resolved the join step runs once with the results in branch order
 * (dropped branches leave no entry); n = 0 runs it at once with none.
 * WF_ENOTFOUND if no join_list step accepts collect; WF_ESTATE outside a step.
 */
WF_API int wf_ctx_emit_list(wf_ctx *ctx, wf_event **evs, size_t n, const wf_event_type *collect);

/**
 * In a join step (wf_step_params.join), the set of events it fires on, in the
 * order of its accepts; in a join_list step, the results of the fan-out in
 * branch order (possibly none). *events borrowed for the invocation, *n its
 * length. WF_ENOTFOUND in other steps, WF_ESTATE outside a step.
 */
WF_API int wf_ctx_join_events(const wf_ctx *ctx, const wf_event *const **events, size_t *n);

/** Sets the message reported with the error the calling step is about to return. Copied. */
WF_API int wf_ctx_set_error(wf_ctx *ctx, const char *message);
/** 1 once the context's current run has ended (stop, failure, timeout, cancel). */
WF_API int wf_ctx_is_cancelled(const wf_ctx *ctx);
/** The current run's id, 0 when none. */
WF_API uint64_t wf_ctx_run_id(const wf_ctx *ctx);
/** The name of the step the calling thread runs for this context, or NULL. Borrowed. */
WF_API const char *wf_ctx_step_name(const wf_ctx *ctx);
/** The attempt number of the calling invocation (1 for the first execution), or 0. */
WF_API uint32_t wf_ctx_attempt(const wf_ctx *ctx);
/**
 * The failure that led to this retry: its code and message (borrowed: valid
 * during the invocation; NULL when the step set none). WF_ENOTFOUND on a
 * first attempt, WF_ESTATE outside a step.
 */
WF_API int wf_ctx_last_error(const wf_ctx *ctx, int *code, const char **message);

#ifdef __cplusplus
}
#endif

#endif
