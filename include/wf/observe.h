/*
 * observe.h: instrumentation of an executor, and the built-in exporters.
 *
 * An observer receives one record per thing that happened: runs starting and
 * ending, step invocations starting and ending, events emitted, routed,
 * dropped or unhandled, stream writes, waiters suspending and resuming,
 * retries, steals and parks. Several observers can watch one executor.
 *
 * Cost: with no observer installed the executor pays one predictable branch
 * per hook. With one, the thread where the thing happened writes a small
 * fixed-size record into its own lock-free ring (per worker; threads outside
 * the pool share one ring under a lock) and goes on; one exporter thread per
 * executor drains the rings and calls the observers. Workers never block on
 * an observer or on I/O. When a ring is full the record is dropped and
 * counted (wf_executor_observe_stats), never silently lost.
 *
 * Records of one thread arrive in the order that thread wrote them; records
 * of different threads arrive roughly in time order (sort by ts_ns for an
 * exact order).
 *
 * A step invocation that ends without anything else recorded by its thread
 * in between (the usual case) travels as one record: its STEP_START, its
 * STEP_END, the event it returned (EVENT_EMIT) and that event's first
 * EVENT_ROUTE, delivered as those four records in that order when it ends.
 * A step that is still running after about a millisecond has its
 * STEP_START delivered while it runs (wf_executor_observe_flush delivers the
 * STEP_START of every running step), and never a second time.
 */
#ifndef WF_OBSERVE_H
#define WF_OBSERVE_H

#include <stdio.h>
#include <wf/common.h>
#include <wf/run.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What a record reports. The comment lists the fields set besides kind, ts_ns, thread. */
typedef enum wf_obs_kind {
    WF_OBS_RUN_START = 0,       /* run_id, workflow; a child run (wf/child.h): value = the parent
                                   run id, event_id = the parent invocation's STEP_START event_id */
    WF_OBS_RUN_END = 1,         /* run_id, workflow, status (wf_run_status), error, step (the failed
                                   one or NULL), message, dur_ns (since RUN_START) */
    WF_OBS_STEP_START = 2,      /* run_id, workflow, step, event_type (input), event_id (the input
                                   delivery's id: pairs with its EVENT_ROUTE), attempt */
    WF_OBS_STEP_END = 3,        /* as STEP_START, plus dur_ns and error (0, a WF_E* code, or
                                   WF_SUSPEND / WF_PENDING for an invocation that goes on later),
                                   message (a failure's message or NULL) */
    WF_OBS_EVENT_EMIT = 4,      /* an event returned or sent (at the send: a failed attempt's
                                   sends are then dropped): run_id, workflow, step (the emitting
                                   step; NULL: from outside the run, e.g. a handler send or the
                                   start event), event_type */
    WF_OBS_EVENT_ROUTE = 5,     /* an event queued for one step: run_id, workflow, step (the
                                   target), event_type, event_id (pairs with the STEP_START that
                                   consumes it), value (the step's waiting events after it) */
    WF_OBS_EVENT_DROP = 6,      /* an event dropped because the run had ended: run_id, workflow,
                                   step (its target, or NULL), event_type */
    WF_OBS_EVENT_UNHANDLED = 7, /* an event no step accepts: run_id, workflow, event_type */
    WF_OBS_STREAM_WRITE = 8,    /* run_id, workflow, step (NULL outside a step), event_type,
                                   value (1 if the stream was full and dropped it) */
    WF_OBS_WAIT_SUSPEND = 9,    /* a step waits for an event: run_id, workflow, step,
                                   event_type (awaited), event_id (waiter id) */
    WF_OBS_WAIT_RESUME = 10,    /* the awaited event arrived (error 0) or the wait timed out or
                                   was cancelled (error): as WAIT_SUSPEND, dur_ns */
    WF_OBS_RETRY = 11,          /* a failed invocation will run again: run_id, workflow, step,
                                   event_type, attempt (the one that failed), error, message, value
                                   (delay in ms before the next attempt) */
    WF_OBS_STEAL = 12,          /* thread stole value tasks from worker victim */
    WF_OBS_PARK = 13,           /* thread (a worker) found nothing to do and sleeps */
    WF_OBS_UNPARK = 14,         /* thread (a worker) woke up: dur_ns asleep */
    /*
     * A step's own child spans (wf_ctx_span_begin, _attr_*, _end).
     * Written by the thread running the invocation, between its STEP_START
     * and STEP_END: run_id, workflow, step, event_id and attempt as the
     * invocation's STEP_START, span (its number in the invocation, >= 1).
     */
    WF_OBS_SPAN_BEGIN = 15, /* + parent_span (0: the step's span), name */
    WF_OBS_SPAN_ATTR = 16,  /* + name (the key), str (a string value) or value (an integer) */
    WF_OBS_SPAN_END = 17,   /* + error, message (a failure's) */
    WF_OBS_KIND_COUNT
} wf_obs_kind;

/** Bit of kind k in wf_observer.kinds. */
#define WF_OBS_BIT(k) (1u << (k))
/** Every kind. */
#define WF_OBS_ALL ((1u << WF_OBS_KIND_COUNT) - 1u)

/** wf_obs_record.thread for a thread outside the worker pool. */
#define WF_OBS_OUTSIDE UINT32_MAX

/**
 * One record. Strings are borrowed for the duration of the callback (copy
 * what you keep); absent ones are NULL.
 */
typedef struct wf_obs_record {
    wf_obs_kind kind;
    /**
     * Worker index (0 .. threads-1), threads + i for blocking thread i,
     * threads + blocking_threads + i for a thread outside the pool running a
     * run's first step (wf_run_params.run_here), or WF_OBS_OUTSIDE.
     */
    uint32_t thread;
    /** When, in ns of CLOCK_MONOTONIC (add wf_obs_clock_offset_ns for Unix time). */
    int64_t ts_ns;
    uint64_t run_id;
    const char *workflow;
    const char *step;
    const char *event_type;
    /** Pairs an EVENT_ROUTE with the STEP_START that consumes it; a waiter id for waits. */
    uint64_t event_id;
    /** 1 for the first execution of an invocation. */
    uint32_t attempt;
    /** RUN_END: the wf_run_status. */
    uint32_t status;
    /** 0 or an error code. */
    int32_t error;
    const char *message;
    int64_t dur_ns;
    /** Kind-specific (see wf_obs_kind). */
    int64_t value;
    /** STEAL: the victim worker. */
    uint32_t victim;
    /** The executor's worker count: thread >= workers (and not OUTSIDE) is a blocking thread. */
    uint32_t workers;
    /** SPAN_*: the child span's number within its invocation (>= 1). */
    uint32_t span;
    /** SPAN_BEGIN: the enclosing child span's number, 0 for the step's own span. */
    uint32_t parent_span;
    /** SPAN_BEGIN: the span's name; SPAN_ATTR: the attribute's key. */
    const char *name;
    /** SPAN_ATTR: a string value (NULL: the integer in value). */
    const char *str;
    /**
     * RUN_START: the W3C trace context the run joins ("00-<32 hex trace
     * id>-<16 hex parent span id>-<2 hex flags>", from the run's parameters),
     * or NULL: a trace of its own (wf_run_params.traceparent).
     */
    const char *traceparent;
} wf_obs_record;

/**
 * An observer. record is called on the executor's exporter thread, one
 * record at a time, never concurrently for one executor; it must not call
 * back into the executor (no waits on runs). flush (optional) is called
 * after each batch of records and when wf_executor_observe_flush asks.
 * user_free (optional) is called with user when the observer is removed
 * (wf_executor_unobserve or wf_executor_free).
 */
typedef struct wf_observer {
    void (*record)(const wf_obs_record *r, void *user);
    void (*flush)(void *user);
    void (*user_free)(void *user);
    void *user;
    /** WF_OBS_BIT mask of the kinds wanted; 0 means WF_OBS_ALL. */
    uint32_t kinds;
} wf_observer;

/**
 * Installs an observer (copied; its user is owned by the executor from now
 * on, freed with user_free). Records start with the things that happen after
 * this call. *id (optional) names it for wf_executor_unobserve. The first
 * observer starts the exporter thread. WF_EINVAL without a record callback,
 * WF_EOVERFLOW past 16 observers, WF_ESHUTDOWN while the executor is being
 * freed. Not from an observer's callback (the exporter thread).
 */
WF_API int wf_executor_observe(wf_executor *ex, const wf_observer *obs, uint32_t *id);
/**
 * Removes an observer after delivering it every record written before this
 * call; calls its user_free. WF_ENOTFOUND for an unknown id. Not from the
 * observer's own callback.
 */
WF_API int wf_executor_unobserve(wf_executor *ex, uint32_t id);
/**
 * Waits until every record written before this call has been delivered to
 * the observers, then calls their flush. Not from an observer's callback.
 */
WF_API int wf_executor_observe_flush(wf_executor *ex);

/** Counters of the instrumentation. */
typedef struct wf_obs_stats {
    uint64_t written;   /* records written to the rings */
    uint64_t delivered; /* records handed to the observers */
    uint64_t dropped;   /* records lost because a ring was full */
} wf_obs_stats;
WF_API void wf_executor_observe_stats(wf_executor *ex, wf_obs_stats *out);

/** CLOCK_REALTIME - CLOCK_MONOTONIC in ns, read once per process. */
WF_API int64_t wf_obs_clock_offset_ns(void);
/** The name of a kind ("step_start"), or "?" */
WF_API const char *wf_obs_kind_name(wf_obs_kind kind);

/* ---- built-in exporters: each returns an observer to pass to wf_executor_observe ---- */

/** Exporter options. Fill with wf_exporter_params_init; only grows at the end. */
typedef struct wf_exporter_params {
    /**
     * Output file, owned by the exporter (fclose'd when removed) unless
     * keep_open; taken over also when the exporter's constructor fails.
     */
    FILE *out;
    int keep_open;
    /** OTLP: the service.name resource attribute (default "wf"). Copied. */
    const char *service_name;
    /** OTLP: the service.version resource attribute (NULL: none). Copied. */
    const char *service_version;
    /**
     * Prometheus: a file (copied path) rewritten atomically at each flush: the
     * exposition goes to a temporary file beside it ("PATH.XXXXXX", mode
     * 0644), renamed over PATH, so a reader such as node_exporter's textfile
     * collector never sees half a file. Instead of, or besides, out.
     */
    const char *path;
} wf_exporter_params;
WF_API void wf_exporter_params_init(wf_exporter_params *p);

/**
 * Perfetto / Chrome trace event JSON: a slice per step invocation on its
 * thread's track, flow arrows from the routing of an event to the
 * invocation that consumed it, counters of the steps' waiting events, waits
 * as async slices, runs as async slices. The file is complete (a JSON
 * document) once the observer is removed; load it in ui.perfetto.dev.
 */
WF_API int wf_exporter_perfetto(wf_observer *out, const wf_exporter_params *p);
/**
 * OpenTelemetry: one span per run (the root) and one per step invocation
 * (its child), written as OTLP/JSON lines (one TracesData object per line,
 * the OpenTelemetry Collector's otlpjsonfile receiver format).
 *
 * Attributes: the resource has service.name (p->service_name, default
 * "wf"), service.version (p->service_version, if set), telemetry.sdk.name
 * "wf" and telemetry.sdk.version. Spans have wf.run_id, wf.workflow,
 * wf.step, wf.event_type, wf.attempt, wf.outcome (steps) or wf.status
 * (runs); a failed one has wf.error and error.type (the WF_E* name, or the
 * decimal code of a step's own error code) and status ERROR with the
 * message; other spans leave the status unset. Identifiers are exact:
 * trace and span ids are hex (as OTLP/JSON wants), wf.run_id is a
 * stringValue (decimal), never an intValue that a JavaScript or jq reader
 * would round above 2^53; wf.attempt and wf.delay_ms are intValue.
 */
WF_API int wf_exporter_otlp_json(wf_observer *out, const wf_exporter_params *p);

/**
 * Where wf_exporter_otlp_proto hands its OTLP requests. send gets one
 * encoded ExportTraceServiceRequest (protobuf; body borrowed for the call)
 * holding n_spans spans, at each flush and whenever 256 spans are pending,
 * on the executor's exporter thread: it must not block for long (copy the
 * bytes and send them from a thread of its own, as libwf-otlp's
 * wf_otlp_http does). It returns 0, or a negative code when it refused the
 * request (its spans are then counted as lost). user_free (optional) runs
 * once with user, after the last send, when the observer is removed (or
 * when wf_exporter_otlp_proto fails).
 */
typedef struct wf_otlp_sender {
    int (*send)(const void *body, size_t len, uint32_t n_spans, void *user);
    void (*user_free)(void *user);
    void *user;
} wf_otlp_sender;

/**
 * The spans of wf_exporter_otlp_json, encoded as OTLP protobuf and handed
 * to sender (copied; its user is owned by the observer from now on, also
 * when this call fails). p is optional: p->out, if set, also gets the JSON
 * lines; p->service_name, p->service_version. WF_EINVAL without a sender
 * or a send function. The OTLP/HTTP transport (TLS, retries, gzip) is
 * libwf-otlp's wf_exporter_otlp_http (<wf/otlp_http.h>, pkg-config
 * wf-otlp), built on this.
 */
WF_API int wf_exporter_otlp_proto(wf_observer *out, const wf_otlp_sender *sender,
                                  const wf_exporter_params *p);
/**
 * Prometheus text exposition (format 0.0.4) of the executor's counters and
 * step duration histograms, rendered at each flush of the observer (after
 * each batch of records, at wf_executor_observe_flush, and when the
 * observer is removed), to:
 *  - p->path, atomically (temporary file + rename; see wf_exporter_params);
 *  - p->out, written over from its start (pass a regular file; a reader
 *    may see it half-written: prefer path);
 *  - memory, always: wf_exporter_prometheus_text.
 * p NULL: memory only, for a program serving /metrics itself. WF_EINVAL
 * for a p with neither out nor path.
 */
WF_API int wf_exporter_prometheus(wf_observer *out, const wf_exporter_params *p);
/**
 * The latest exposition of a Prometheus exporter: obs is the observer that
 * wf_exporter_prometheus filled (the caller's copy of it is fine). The
 * exposition as of the observer's last flush (call
 * wf_executor_observe_flush first for up-to-date values; before any
 * record, every family at 0). Caller owns *text: wf_free. WF_EINVAL when
 * obs is not a Prometheus exporter. Any thread, while the observer is
 * installed (not after wf_executor_unobserve or wf_executor_free removed
 * it).
 */
WF_API int wf_exporter_prometheus_text(const wf_observer *obs, char **text);
/**
 * A human-readable line per step invocation (and per run end, retry,
 * unhandled or dropped event) through a logger callback: wf never prints.
 */
WF_API int wf_exporter_log(wf_observer *out, wf_log_fn log, void *log_user);

/* ---- the most recent execution, drawn ---- */

/**
 * What runs went through: per run (the 64 most recent runs are kept), the
 * invocations of each step and the events of each type routed to each step.
 * Reference-counted: the observer holds one reference, the caller gets one.
 */
typedef struct wf_execution wf_execution;
/** An observer filling a new wf_execution (*exe: caller owns, wf_execution_release). */
WF_API int wf_exporter_execution(wf_observer *out, wf_execution **exe);
WF_API void wf_execution_release(wf_execution *exe);
/**
 * Draws run run_id (0: the run that ended last) of wf as Graphviz DOT
 * (mermaid 0) or a Mermaid flowchart (mermaid 1): the workflow graph of
 * wf_workflow_to_dot with only the steps and events the run went through,
 * edges labelled with counts. WF_ENOTFOUND if the run is not (or no longer)
 * recorded. Call after wf_executor_observe_flush. Caller owns *out: wf_free.
 */
WF_API int wf_execution_draw(wf_execution *exe, const wf_workflow *wf, uint64_t run_id, int mermaid,
                             char **out);

#ifdef __cplusplus
}
#endif

#endif
