/*
 * child.h: child workflows. A step starts a run of another workflow on the
 * same executor and awaits it without holding a worker (the async step
 * machinery of wf_ctx_pend); the step's invocation ends when the child run
 * ends, with the child's result event or its error. A snapshot of the parent
 * holds each waiting child of a declared workflow whole, and a resume
 * continues both (docs/SEMANTICS.md, "Child workflows").
 */
#ifndef WF_CHILD_H
#define WF_CHILD_H

#include <wf/common.h>
#include <wf/event.h>
#include <wf/workflow.h>
#include <wf/context.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Turns a child's result into the parent step's returned event. result is
 * the child's StopEvent (borrowed: valid during the call); set *out to the
 * event the step returns (the parent takes ownership; NULL: the step returns
 * nothing) and return 0, or return a negative WF_E* code: the step fails
 * with it (its retry policy applies). Called once, on an executor thread,
 * when the child ends with a result and the parent run is still going; must
 * not block.
 */
typedef int (*wf_child_result_fn)(const wf_event *result, wf_event **out, void *user);

/** Child run parameters. Fill with wf_child_params_init; only grows at the end. */
typedef struct wf_child_params {
    /** The child run's timeout: ms, WF_NO_TIMEOUT or WF_TIMEOUT_DEFAULT (default: the child
     * workflow's). */
    int64_t timeout_ms;
    /**
     * Nonzero: every event the child streams (its steps' wf_ctx_write_event_to_stream,
     * its input-required events, its internal notifications when asked) also
     * goes into the parent run's stream, in the child's order; a nested
     * child forwards through its parent to the top. The child's terminal
     * event is not forwarded (its result is the step's). Default 0.
     */
    int32_t forward_stream;
    /**
     * Optional: maps the child's result to the step's returned event (see
     * wf_child_result_fn). NULL (default): the child's StopEvent itself is
     * returned, which must then be an event type of the parent workflow's
     * registry (else the step fails with WF_ETYPE) and, being a StopEvent,
     * ends the parent run with it.
     */
    wf_child_result_fn on_result;
    void *user;
    /** Called exactly once with user when the child's record is freed (optional). */
    void (*user_free)(void *user);
    /**
     * Optional: set to the child run's context when it starts (NULL on an
     * error); the caller owns that reference (release with wf_ctx_free).
     * Through it, events can be sent into the child from outside
     * (wf_ctx_send_event: answering its wait_for_event) and its store read.
     */
    wf_ctx **context;
} wf_child_params;

WF_API void wf_child_params_init(wf_child_params *p);

/**
 * Starts a run of child (a workflow on the parent's registry or another)
 * with start_event (takes ownership, also on failure) on a fresh context,
 * on the executor of the calling step's run, and ties the calling
 * invocation to it: on success returns WF_PENDING, which the step returns
 * (`return wf_ctx_run_child(ctx, ...);`). No worker is held while the child
 * runs; the invocation still counts against the step's num_workers.
 *
 * When the child ends:
 * - with a result: the step returns it (or what params->on_result makes
 *   of it); events the step sent before are routed after it, as for any step;
 * - failed, timed out or cancelled: the step fails with the child's code
 *   (WF_ESTEP codes of its steps as they returned them, WF_ERUNTIMEOUT,
 *   WF_ECANCELLED) and a message naming the child workflow and its failing
 *   step; the parent step's retry policy and error handler apply (a retry
 *   runs the step again, which starts a new child).
 * When the parent run ends first (stop, failure, timeout, cancel, executor
 * shutdown), the child is cancelled, and its children in turn.
 *
 * The child counts against its own workflow's num_concurrent_runs: it may
 * wait for a place, holding no thread, as the parent does. Observation: the
 * child's RUN_START record has value = the parent's run id and event_id =
 * the event_id of the parent invocation's STEP_START (see wf/observe.h);
 * the OTLP exporter puts the child's spans under that invocation's span.
 *
 * Snapshots: a snapshot of the parent (wf_ctx_save, wf_handler_cancel)
 * taken while the child runs nests the child's own snapshot in the
 * awaiting invocation, if step declares child's workflow
 * (wf_workflow_declare_child; else the child is not saved). On resume the
 * invocation runs again (at-least-once), and this call, given the same
 * workflow, resumes that saved child instead of starting one: start_event
 * is released, params apply as given now. Given another workflow (or one
 * whose definition changed) it fails with WF_EMISMATCH and the saved child
 * is dropped; a retry starts afresh.
 *
 * One child per invocation (it uses the invocation's completion token):
 * WF_EEXIST after wf_ctx_pend or another wf_ctx_run_child. WF_EINVAL for
 * NULL ctx, child or start_event or bad params; WF_ESTATE outside a step of
 * ctx's run; WF_ETYPE for a start event not of child's start type;
 * WF_EVALIDATION for an invalid child workflow; WF_ECANCELLED when the parent
 * run has ended; WF_ESHUTDOWN. On an error nothing was started (the step
 * usually returns the error: `return wf_ctx_run_child(...)` fails it).
 * Only from the step's body, on the thread running it.
 */
WF_API int wf_ctx_run_child(wf_ctx *ctx, wf_workflow *child, wf_event *start_event,
                            const wf_child_params *params);

/**
 * Declares that step (by name) of wf runs child workflow child, for
 * drawings and representations (wf_workflow_to_dot and _to_mermaid draw
 * it as a node the step "runs", libwf-json's representation as a
 * "workflow" node), and for snapshots: a waiting child of a declared
 * workflow is saved with its parent and resumed with it (wf_ctx_run_child),
 * and loading a snapshot refuses a nested child of a workflow its step does
 * not declare. Running a child does not need it. child
 * is retained (a workflow declaring itself, a recursion, is not); a
 * declaration that would close a longer cycle (child declares wf, perhaps
 * through others) is refused with WF_EINVAL. Declaring the same child
 * twice is a no-op. WF_EINVAL for NULLs, WF_ENOTFOUND for an unknown step,
 * WF_EFROZEN once wf is frozen. On the thread building wf.
 */
WF_API int wf_workflow_declare_child(wf_workflow *wf, const char *step, wf_workflow *child);
/** How many child workflows step declares (0 for an unknown step or NULLs). */
WF_API size_t wf_workflow_child_count(const wf_workflow *wf, const char *step);
/**
 * The i-th child workflow step declares, in declaration order, or NULL past
 * the end. Borrowed: valid while wf is.
 */
WF_API const wf_workflow *wf_workflow_child_at(const wf_workflow *wf, const char *step, size_t i);

#ifdef __cplusplus
}
#endif

#endif
