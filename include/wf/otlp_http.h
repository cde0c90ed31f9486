/*
 * otlp_http.h: the OpenTelemetry exporter over OTLP/HTTP (protobuf), in its
 * own library, libwf-otlp (pkg-config wf-otlp), built on libcurl when
 * libcurl is found (meson option otlp_http, a feature, auto by default).
 *
 * Why a library of its own: libcurl brings TLS, HTTP/2, compression and
 * name resolution libraries with it; a program that links wf only to run
 * workflows should not load them. libwf-otlp uses nothing but wf's public
 * API (wf_exporter_otlp_proto encodes the spans; this library sends them).
 * Not included by <wf/wf.h>.
 *
 * Sending: the exporter (on the executor's exporter thread) hands each
 * encoded request to a bounded queue; one sender thread per wf_otlp_http
 * POSTs them with one libcurl handle (keep-alive: the connection is
 * reused), gzip-compressed (Content-Encoding: gzip), with a User-Agent
 * ("wf-otlp/VERSION" and libcurl's), over http:// or https:// (TLS
 * verified against the system's CAs, or ca_file). A request that gets 429
 * or a 5xx answer, or no answer (connection refused or reset, timeout), is
 * sent again after an exponential backoff with jitter (honouring a
 * Retry-After header, up to backoff_max_ms), up to max_attempts times; then
 * it is dropped and counted. Other answers (4xx) drop it at once. A full
 * queue drops the new request and counts its spans. Nothing blocks the
 * executor: the exporter thread only copies bytes into the queue.
 *
 * Memory: this library allocates with the C library's malloc, not through
 * wf_set_alloc_hooks (libcurl does the same).
 */
#ifndef WF_OTLP_HTTP_H
#define WF_OTLP_HTTP_H

#include <wf/common.h>
#include <wf/observe.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A sender of OTLP/HTTP requests, shared by its observers (reference-counted). */
typedef struct wf_otlp_http wf_otlp_http;

/** Options. Fill with wf_otlp_http_params_init; the struct only grows at the end. */
typedef struct wf_otlp_http_params {
    /** "http(s)://host[:port]/path", e.g. "http://127.0.0.1:4318/v1/traces". Required; copied. */
    const char *endpoint;
    /** Requests waiting to be sent at most (default 64); beyond, new ones are dropped. */
    uint32_t queue_max;
    /** Sends of one request at most, the first included (default 5). */
    uint32_t max_attempts;
    /** Backoff before the first retry (default 500 ms), doubling up to backoff_max_ms (default 10
     * s). */
    int64_t backoff_min_ms;
    int64_t backoff_max_ms;
    /** Per request: connecting, sending and the answer (default 10 s). */
    int64_t timeout_ms;
    /** Nonzero (the default): gzip the body (Content-Encoding: gzip). */
    int32_t gzip;
    /** NULL: "wf-otlp/VERSION libcurl/VERSION". Copied. */
    const char *user_agent;
    /** Extra request headers, "Name: value" lines separated by '\n' (e.g. authorization). Copied.
     */
    const char *headers;
    /** PEM file of CA certificates for https (NULL: the system's). Copied. */
    const char *ca_file;
    /** Nonzero: do not verify the server's certificate (for tests only). */
    int32_t insecure;
} wf_otlp_http_params;

/** Fills p with the defaults (endpoint NULL). */
WF_API void wf_otlp_http_params_init(wf_otlp_http_params *p);

/**
 * A sender for p->endpoint; starts its thread. WF_EINVAL for a missing
 * endpoint or one that is not http:// or https://, or bad numbers;
 * WF_ENOMEM. Caller owns *out: wf_otlp_http_free. Any thread.
 */
WF_API int wf_otlp_http_new(wf_otlp_http **out, const wf_otlp_http_params *p);

/**
 * An OpenTelemetry exporter (the spans of wf_exporter_otlp_json) that sends
 * through h: pass *out to wf_executor_observe. The observer holds its own
 * reference to h. ep is optional (service_name, service_version; ep->out,
 * if set, also gets the JSON lines). Any thread.
 */
WF_API int wf_otlp_http_observer(wf_otlp_http *h, wf_observer *out, const wf_exporter_params *ep);

/** Counters of a sender. */
typedef struct wf_otlp_http_stats {
    uint64_t requests_sent;    /* answered 2xx */
    uint64_t spans_sent;       /* in those requests */
    uint64_t retries;          /* sends after the first of a request */
    uint64_t requests_dropped; /* queue full, out of attempts, refused (4xx) or memory */
    uint64_t spans_dropped;    /* in those requests */
    uint32_t queued;           /* waiting or being sent now */
} wf_otlp_http_stats;

/** A snapshot of h's counters. Any thread. */
WF_API void wf_otlp_http_stats_get(wf_otlp_http *h, wf_otlp_http_stats *out);

/**
 * Waits until every request queued so far has been sent or dropped, or
 * timeout_ms passed (< 0: no limit): 0 or WF_ETIMEDOUT. Call
 * wf_executor_observe_flush first so the exporter has handed over its
 * pending spans. Any thread but the executor's exporter thread.
 */
WF_API int wf_otlp_http_drain(wf_otlp_http *h, int64_t timeout_ms);

/**
 * Drops the caller's reference. When the last one goes (the caller's and
 * every observer's: the executor drops an observer's when it is removed),
 * the sender tries each request still queued once more, without retries,
 * and stops its thread. NULL is fine. Any thread but h's observers'.
 */
WF_API void wf_otlp_http_free(wf_otlp_http *h);

/**
 * Shortcut: a sender for endpoint with the default options, and its
 * observer, which holds the only reference (the sender stops when the
 * observer is removed). Takes ep->out as wf_exporter_otlp_proto does.
 */
WF_API int wf_exporter_otlp_http(wf_observer *out, const char *endpoint,
                                 const wf_exporter_params *ep);

#ifdef __cplusplus
}
#endif

#endif
