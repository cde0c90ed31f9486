/*
 * workflow.h: workflow definitions, steps, validation, graph export.
 *
 * A workflow is a name, a set of steps, the registry of its event types, a
 * default run timeout and validation settings. It is built on one thread,
 * then frozen (by wf_workflow_freeze, wf_workflow_validate or the first run):
 * from then on it is immutable and may be used by any number of runs on any
 * threads at once. Freezing computes the routing table (event type -> steps)
 * once; no run ever compares type names.
 */
#ifndef WF_WORKFLOW_H
#define WF_WORKFLOW_H

#include <wf/common.h>
#include <wf/value.h>
#include <wf/event.h>
#include <wf/retry.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wf_workflow wf_workflow;
typedef struct wf_ctx wf_ctx;

/**
 * A step. Called on an executor thread with the run's context and the input
 * event (borrowed for the call; wf_event_retain it to keep it).
 * Return 0 with *out set to an event to emit (wf takes ownership) or left
 * NULL to emit nothing; or a negative error code (any value: WF_E* or your
 * own) to fail, with an optional message set by wf_ctx_set_error(); or
 * WF_SUSPEND / WF_PENDING as the coordination calls describe.
 * *out is NULL on entry. An event left in *out together with an error is
 * released by wf.
 */
typedef int (*wf_step_fn)(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user);

/** Step declaration. Fill with wf_step_params_init; the struct only grows at the end. */
typedef struct wf_step_params {
    /** Types the step accepts (n_accepts >= 1). Copied by wf_workflow_add_step. */
    const wf_event_type *const *accepts;
    /** Types the step may emit (for validation and drawing). Copied. */
    const wf_event_type *const *emits;
    uint32_t n_accepts;
    uint32_t n_emits;
    /**
     * Invocations of this step that may run at once in one run. Default 4;
     * >= 1. 2^30 or more means no limit (as TBB's flow::unlimited): such a
     * step shares no counter between workers.
     */
    uint32_t num_workers;
    /** Nonzero: the step also receives subtypes of what it accepts. Default 0. */
    int32_t accept_subtypes;
    /** Retry policy (retry.h), or NULL for none. The workflow keeps its own reference. */
    const wf_retry_policy *retry;
    /** Runs exactly once on user when the workflow is freed (if added). May be NULL. */
    void (*user_free)(void *user);
    /**
     * Error handling: when the steps named in error_of[0..n_error_of) fail
     * (after their retries), this step receives a StepFailedEvent instead of
     * the run failing; error_of_all makes it the handler of every step no
     * other handler names. It must accept StepFailedEvent. Names are copied.
     * The StepFailedEvent has fields step_name, error_code, error (message,
     * when the step set one), attempts, elapsed_ms (from the first attempt),
     * input_event_type and input (a map of the failed input's fields).
     */
    const char *const *error_of;
    uint32_t n_error_of;
    int32_t error_of_all;
    /**
     * How many times a lineage (the events that descend from one another) may
     * recover through this handler (default 1); a further failure fails the
     * run. A failing error handler fails the run with its own error.
     */
    uint32_t max_recoveries;
    /**
     * Nonzero: accepts is a tuple. The step fires once one event of each
     * listed type has arrived (a type listed k times takes k events, bound in
     * arrival order) and again for every further complete set. It is invoked
     * with the first event of the set as its input; wf_ctx_join_events gives
     * the whole set in the order of accepts.
     */
    int32_t join;
    /**
     * Nonzero: the step may block in system calls; its invocations run on the
     * executor's separate, bounded blocking pool (wf_executor_params
     * .blocking_threads) so they never stall the work-stealing workers.
     */
    int32_t blocking;
    /**
     * Nonzero: the step joins list fan-outs (wf_ctx_emit_list) of the type it
     * accepts (n_accepts must be 1). It never receives single events of that
     * type; it is invoked once per fan-out, when every branch has resolved,
     * with the fan-out's origin (the input of the step that emitted the list)
     * as its input, and wf_ctx_join_events gives the branches' results.
     * Exclusive with join (wf_workflow_add_step refuses both).
     */
    int32_t join_list;
    /**
     * Graph checks to skip for this step alone (the reference's per-step
     * skip_graph_checks): "reachability" (the step may be unreachable on
     * purpose) and "dead_end" (it may have no path to a stop event); each
     * name copied. Other names are WF_EINVAL at wf_workflow_add_step.
     */
    const char *const *skip_graph_checks;
    uint32_t n_skip_graph_checks;
    /**
     * Names of the workflow's resources this step uses (resource.h), made
     * before the step function runs and given by wf_ctx_resource; copied.
     * Unknown names are reported when the workflow is frozen.
     */
    const char *const *resources;
    uint32_t n_resources;
    /**
     * join_list steps only (WF_EINVAL otherwise): the reference's
     * Collect(Take(n)). 0 (default) joins every branch's result once all
     * have resolved. n >= 1: the step fires once, on the n-th result to
     * arrive, with the first n results in arrival order; results that
     * arrive after that are dropped (those branches keep running, their
     * other events are routed as usual, but never reach this step); if the
     * fan-out resolves with fewer than n results the step fires then with
     * those it has. A snapshot keeps which results arrived but not their
     * order: after a resume, results from before the snapshot come first,
     * in branch order.
     */
    uint32_t take;
} wf_step_params;

/** Fills p with the defaults: no types, num_workers 4, exact routing, no retry, no handler. */
WF_API void wf_step_params_init(wf_step_params *p);

/** Timeout value meaning "no timeout". */
#define WF_NO_TIMEOUT (-1)
/** The default run timeout, 45 s as in the Python reference. */
#define WF_DEFAULT_TIMEOUT_MS 45000

/**
 * A new workflow called name on registry reg (the workflow takes a reference;
 * NULL makes a private registry, see wf_workflow_registry). Caller owns:
 * wf_workflow_free. Any thread; the workflow is then built on one thread.
 */
WF_API int wf_workflow_new(wf_workflow **out, const char *name, wf_registry *reg);
/**
 * Drops the caller's reference. Runs keep their own, so a workflow may be
 * freed while its runs go on; the last reference frees it and runs every
 * step's user_free. NULL is fine.
 */
WF_API void wf_workflow_free(wf_workflow *wf);
/** A new reference (for wf_workflow_free). */
WF_API wf_workflow *wf_workflow_retain(wf_workflow *wf);

/** The name. Borrowed. */
WF_API const char *wf_workflow_name(const wf_workflow *wf);
/** The registry. Borrowed: valid while the workflow is. */
WF_API wf_registry *wf_workflow_registry(const wf_workflow *wf);
/** Shortcut for wf_registry_add on the workflow's registry. */
WF_API int wf_workflow_event_type(wf_workflow *wf, const char *name, const wf_event_type *parent,
                                  const wf_event_type **out);
/** Shortcut for wf_registry_builtin on the workflow's registry. */
WF_API const wf_event_type *wf_workflow_builtin(const wf_workflow *wf, wf_builtin_type which);

/**
 * Adds a step. Names are unique, 1..255 bytes. Types must belong to the
 * workflow's registry. WF_EEXIST for a duplicate name, WF_EINVAL for bad
 * params (no accepted type, num_workers 0, a NULL type, join and join_list
 * both set), WF_EFROZEN after freezing; wf_last_error_message() says which. On failure user_free is
 * not called and the caller keeps user.
 */
WF_API int wf_workflow_add_step(wf_workflow *wf, const char *name, wf_step_fn fn,
                                const wf_step_params *params, void *user);

/** Default run timeout in ms, or WF_NO_TIMEOUT. Runs may override it. */
WF_API int wf_workflow_set_timeout(wf_workflow *wf, int64_t timeout_ms);
WF_API int64_t wf_workflow_timeout(const wf_workflow *wf);
/**
 * The reference's num_concurrent_runs: at most n runs of this workflow are
 * active at once on one executor (0, the default: no limit). A run started
 * (or resumed) beyond that waits, holding no thread, in FIFO order, and
 * starts when an active one ends; its handler works meanwhile (status
 * WF_RUN_RUNNING; wf_handler_cancel ends it as cancelled before it ever
 * ran). Its run timeout starts when it starts. Before the workflow is
 * frozen (WF_EFROZEN after). Not thread-safe with other definition calls.
 */
WF_API int wf_workflow_set_num_concurrent_runs(wf_workflow *wf, uint32_t n);
WF_API uint32_t wf_workflow_num_concurrent_runs(const wf_workflow *wf);
/** Run-start validation on (default) or off. Definition checks always run. */
WF_API int wf_workflow_set_validation(wf_workflow *wf, int enabled);
/**
 * Skips a graph check by name: "reachability", "terminal_event" or
 * "dead_end". WF_EINVAL for any other name.
 */
WF_API int wf_workflow_skip_check(wf_workflow *wf, const char *check);

/**
 * Freezes the definition after the definition-time checks (there are steps;
 * exactly one start type; exactly one stop type) and builds the routing
 * table. Idempotent. On failure returns WF_EVALIDATION and, if message is not
 * NULL, a text naming every culprit (caller owns: wf_free).
 */
WF_API int wf_workflow_freeze(wf_workflow *wf, char **message);
/**
 * Freezes, then runs every run-start check (regardless of
 * wf_workflow_set_validation) except the skipped graph checks. Returns 0 or
 * WF_EVALIDATION with the report in *message (all problems found, one per
 * line; caller owns: wf_free).
 */
WF_API int wf_workflow_validate(wf_workflow *wf, char **message);

/* ---- introspection (after freezing unless said otherwise) ---- */
WF_API size_t wf_workflow_step_count(const wf_workflow *wf);
/** Step i's name, borrowed; NULL past the end. Any time. */
WF_API const char *wf_workflow_step_name(const wf_workflow *wf, size_t i);
/**
 * The types step i accepts (emits 0) or declares it emits (emits 1), in
 * declaration order: *types borrowed (valid while the workflow is), *n their
 * number. WF_ERANGE past the last step. Any time.
 */
WF_API int wf_workflow_step_types(const wf_workflow *wf, size_t i, int emits,
                                  const wf_event_type *const **types, size_t *n);
/** Step i's num_workers, 0 past the last step. Any time. */
WF_API uint32_t wf_workflow_step_num_workers(const wf_workflow *wf, size_t i);
/** The start event type (accepted by the start step), or NULL before freezing. */
WF_API const wf_event_type *wf_workflow_start_type(const wf_workflow *wf);
/** The stop event type (emitted by the steps that end runs), or NULL before freezing. */
WF_API const wf_event_type *wf_workflow_stop_type(const wf_workflow *wf);

/* ---- graph export: all possible flows ---- */

/**
 * Graphviz DOT text: steps as boxes, events as ellipses (start event green,
 * stop events red), edges event -> step (accepts) and step -> event (emits).
 * Caller owns *out: wf_free. Any time.
 */
WF_API int wf_workflow_to_dot(const wf_workflow *wf, char **out);
/** The same graph as a Mermaid flowchart. Caller owns *out: wf_free. */
WF_API int wf_workflow_to_mermaid(const wf_workflow *wf, char **out);

#ifdef __cplusplus
}
#endif

#endif
