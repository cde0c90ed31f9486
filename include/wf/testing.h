/*
 * testing.h: a test runner for users' workflows, as the reference's
 * WorkflowTestRunner: run a workflow once, collect every event it streams,
 * count them by type, and keep the result and the context for assertions.
 */
#ifndef WF_TESTING_H
#define WF_TESTING_H

#include <wf/run.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Test run parameters. Fill with wf_test_params_init; only grows at the end. */
typedef struct wf_test_params {
    /** The run's timeout in ms (default 10,000; WF_NO_TIMEOUT: none). */
    int64_t timeout_ms;
    /** Nonzero (the default): also collect internal events (StepStateChanged, ...). */
    int32_t expose_internal;
    /** A context to run on (borrowed; NULL, the default: a new one, kept in the result). */
    wf_ctx *ctx;
    /** Type names whose events are not collected (borrowed for the call; NULL: none). */
    const char *const *exclude;
    size_t n_exclude;
} wf_test_params;

WF_API void wf_test_params_init(wf_test_params *p);

/** What a test run gives. Release with wf_test_result_free. */
typedef struct wf_test_result {
    /** What wf_handler_wait returned: 0, WF_ESTEP, WF_ERUNTIMEOUT, WF_ECANCELLED. */
    int32_t rc;
    /** The StopEvent when rc is 0, else NULL (owned by the result). */
    wf_event *result;
    /** Every event streamed, in order, the terminal one last (owned by the result). */
    wf_event **events;
    size_t n_events;
    /** The context the run ran on (owned by the result unless params->ctx gave it). */
    wf_ctx *ctx;
    /** When the run failed or timed out: wf_handler_error's code, step and message (owned). */
    int32_t error_code;
    char *error_step;
    char *error_message;
    int32_t owns_ctx; /* internal: ctx is freed with the result */
} wf_test_result;

/**
 * Runs wf on ex with start (takes ownership, also on failure), reads its
 * whole stream and waits for its end. Returns 0 when the run was started
 * and ended (whatever its outcome, in out->rc), or the error of starting
 * it (WF_EVALIDATION: *out holds the message in error_message). out is
 * filled in both cases; release it with wf_test_result_free. Any thread
 * but a worker of ex.
 */
WF_API int wf_test_run(wf_executor *ex, wf_workflow *wf, wf_event *start,
                       const wf_test_params *params, wf_test_result *out);
/** How many collected events are of the type named type_name (exactly, not subtypes). */
WF_API size_t wf_test_result_count(const wf_test_result *r, const char *type_name);
/** The first collected event of that type, or NULL. Borrowed from r. */
WF_API const wf_event *wf_test_result_find(const wf_test_result *r, const char *type_name);
/** Releases what r holds (NULL and a zeroed result are fine). */
WF_API void wf_test_result_free(wf_test_result *r);

#ifdef __cplusplus
}
#endif

#endif
