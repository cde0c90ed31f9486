/*
 * wf: LlamaIndex-style workflows on a work-stealing executor.
 *
 * common.h: export macro, error codes, version, allocation hooks.
 *
 * Conventions used by every header of wf:
 *  - Functions that can fail return int: 0 on success or a negative WF_E*
 *    code. wf_strerror() and wf_err_name() describe a code.
 *  - Constructors take their output first: int wf_x_new(wf_x **out, ...),
 *    paired with void wf_x_free(wf_x *) which accepts NULL.
 *  - Ownership is stated on every function: "borrowed" (valid until ...),
 *    "takes ownership" (always, also when the call fails, so a caller never
 *    has to clean up after a failed hand-over), "caller owns" (release with
 *    ...).
 *  - Threads: every function says which threads may call it.
 */
#ifndef WF_COMMON_H
#define WF_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <wf/version.h>

#if defined(_WIN32)
#define WF_API __declspec(dllexport)
#elif defined(__GNUC__)
#define WF_API __attribute__((visibility("default")))
#else
#define WF_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The error table: X(name, value, message). Values are stable ABI.
 */
#define WF_ERRORS(X)                                                                               \
    X(WF_ENOMEM, -1, "out of memory")                                                              \
    X(WF_EINVAL, -2, "invalid argument")                                                           \
    X(WF_EKIND, -3, "value has another kind")                                                      \
    X(WF_ENOTFOUND, -4, "not found")                                                               \
    X(WF_EEXIST, -5, "already exists")                                                             \
    X(WF_ERANGE, -6, "out of range")                                                               \
    X(WF_EFROZEN, -7, "object is frozen and can no longer be changed")                             \
    X(WF_EBUSY, -8, "busy: the context is already running")                                        \
    X(WF_EAGAIN, -9, "not ready yet")                                                              \
    X(WF_ETIMEDOUT, -10, "wait timed out")                                                         \
    X(WF_EVALIDATION, -11, "workflow validation failed")                                           \
    X(WF_ETYPE, -12, "event type not accepted")                                                    \
    X(WF_ESTEP, -13, "a step failed")                                                              \
    X(WF_ERUNTIMEOUT, -14, "the run timed out")                                                    \
    X(WF_ECANCELLED, -15, "the run was cancelled")                                                 \
    X(WF_ECLOSED, -16, "closed: nothing more will come")                                           \
    X(WF_ESTATE, -17, "not allowed in the current state")                                          \
    X(WF_ENOTSUP, -18, "not supported")                                                            \
    X(WF_EFORMAT, -19, "malformed data")                                                           \
    X(WF_EVERSION, -20, "unsupported format version")                                              \
    X(WF_EMISMATCH, -21, "does not match the workflow definition")                                 \
    X(WF_ESHUTDOWN, -22, "the executor is shutting down")                                          \
    X(WF_EOVERFLOW, -23, "capacity exceeded")                                                      \
    X(WF_EINTERNAL, -24, "internal error")                                                         \
    X(WF_ELEASE, -25, "held by another owner's lease")                                             \
    X(WF_ECORRUPT, -26, "stored data is corrupt")                                                  \
    X(WF_EIO, -27, "storage I/O error")

/** Error codes (negative). 0 is success. */
typedef enum wf_err {
    WF_OK = 0,
#define WF__ERR_ENUM(name, value, msg) name = value,
    WF_ERRORS(WF__ERR_ENUM)
#undef WF__ERR_ENUM
        WF__ELAST = -28
} wf_err;

/** Positive results a step function may return besides 0 (see workflow.h). */
enum {
    /** The step suspended on wf_ctx_wait_for_event(); it runs again later. */
    WF_SUSPEND = 1,
    /** The step handed its work to a completion token (async step). */
    WF_PENDING = 2
};

/**
 * A static English message for an error code ("unknown error" for codes not
 * in the table). Borrowed: valid forever. Any thread.
 */
WF_API const char *wf_strerror(int err);

/** The symbolic name of an error code ("WF_ENOMEM"), or "WF_E?" if unknown. */
WF_API const char *wf_err_name(int err);

/**
 * A message naming what was wrong in the calling thread's most recent wf
 * call that failed and set one (as dlerror() or sqlite3_errmsg()), e.g.
 * "wf_workflow_add_step: step \"b\": join and join_list are exclusive".
 * "" when no call of this thread has set one yet. Per thread: a failure in
 * another thread never changes it. Borrowed: valid, and unchanged, until
 * the calling thread's next wf call that fails; copy it to keep it.
 * Calls that succeed leave it as it was, and so do failing calls that do
 * not set one: read it right after a failed call of the list below.
 *
 * Calls that set it when they fail (every failure except WF_ENOMEM, and
 * except WF_ENOTFOUND from the lookups, a normal outcome):
 *  - workflow definition: wf_workflow_new, wf_workflow_add_step,
 *    wf_workflow_event_type, wf_workflow_set_timeout,
 *    wf_workflow_set_validation, wf_workflow_skip_check; wf_workflow_freeze
 *    and wf_workflow_validate (WF_EVALIDATION: the validation report, the
 *    same text as their *message, cut at 1 KiB);
 *  - event types and events: wf_registry_add, wf_event_new, wf_event_new1,
 *    wf_event_new2, wf_event_new_stop, wf_event_set, wf_event_field_at;
 *  - values: wf_value_get_bool, _int, _uint, _double, _string, _bytes
 *    (WF_EKIND names the kind found and the one asked for; WF_ERANGE),
 *    wf_value_array_at, wf_value_map_at, wf_value_map_get(_n),
 *    wf_value_array_push, wf_value_array_set, wf_value_map_set(_n),
 *    wf_value_map_remove (WF_EKIND, WF_ERANGE, WF_EINVAL);
 *  - retry policies: wf_retry_policy_next.
 *  - runs and handlers: wf_run_start(_ex), wf_run_resume (WF_EBUSY,
 *    WF_ETYPE, WF_EMISMATCH, WF_ESHUTDOWN, a bad timeout), wf_run and
 *    wf_handler_wait refusing to wait forever on a worker (WF_ESTATE),
 *    wf_handler_send_event and wf_ctx_send_event (WF_ENOTFOUND: no such
 *    step; WF_ETYPE: the step does not accept the type; WF_EINVAL: another
 *    registry; WF_ESTATE: the run ended), wf_completion_send;
 *  - step-side calls made outside a step (WF_ESTATE): wf_ctx_collect_events,
 *    wf_ctx_join_events, wf_ctx_wait_for_event, wf_ctx_pend,
 *    wf_ctx_write_event_to_stream, wf_ctx_running_steps.
 * Other calls (snapshots, the executor) return only their code for now (the
 * snapshot calls give their message through their char **message). Any
 * thread.
 */
WF_API const char *wf_last_error_message(void);

/** The library's version, e.g. "0.1.0". Borrowed: valid forever. Any thread. */
WF_API const char *wf_version_string(void);

/** The library's version as (major << 16) | (minor << 8) | patch. */
WF_API uint32_t wf_version(void);

/**
 * Allocation hooks. All memory wf allocates goes through these (the per-thread
 * caches of the hot path get their blocks from them too). Every function gets
 * the user pointer given at installation.
 */
typedef struct wf_alloc_hooks {
    void *(*malloc_fn)(size_t size, void *user);
    void *(*realloc_fn)(void *ptr, size_t size, void *user);
    void (*free_fn)(void *ptr, void *user);
    void *user;
} wf_alloc_hooks;

/**
 * Installs allocation hooks. One-time init: only before wf has allocated
 * anything in this process, else WF_EBUSY. NULL restores the libc functions
 * under the same rule. Any one thread, before any other wf call.
 */
WF_API int wf_set_alloc_hooks(const wf_alloc_hooks *hooks);

/**
 * Gives the memory that wf keeps cached for reuse back to the allocation
 * hooks: every slab (16 KiB holding small blocks) whose blocks are all free
 * and in the calling thread's or the shared cache. Other threads' caches
 * join the shared one when those threads exit. Optional: for leak checkers,
 * or after a burst. Any thread.
 */
WF_API void wf_alloc_trim(void);

/** Frees memory that wf handed to the caller (strings such as messages). NULL is fine. */
WF_API void wf_free(void *ptr);

/**
 * Log levels and the optional logger. wf never prints: it reports through
 * return codes and, when one is installed, this callback.
 */
typedef enum wf_log_level {
    WF_LOG_ERROR = 0,
    WF_LOG_WARN = 1,
    WF_LOG_INFO = 2,
    WF_LOG_DEBUG = 3
} wf_log_level;

/** A logger: msg is borrowed for the duration of the call. Called from any thread. */
typedef void (*wf_log_fn)(wf_log_level level, const char *msg, void *user);

#ifdef __cplusplus
}
#endif

#endif
