/*
 * otlp.h: the spans of the OpenTelemetry exporter, shared by its JSON
 * writer (otlp.c) and its optional OTLP/HTTP protobuf sender (otlp_http.c).
 */
#ifndef WF_OBS_OTLP_H
#define WF_OBS_OTLP_H

#include "export.h"

/* A string (s) or integer (i) attribute; strings are borrowed. */
typedef struct wf__otlp_attr {
    const char *key;
    int is_int;
    int64_t i;
    const char *s;
} wf__otlp_attr;

typedef struct wf__otlp_event {
    uint64_t time_ns; /* Unix */
    const char *name;
    wf__otlp_attr attrs[6];
    uint32_t n_attrs;
    char *owned; /* a copied string some attribute points to (wf__free_mem) */
} wf__otlp_event;

/* One span, everything borrowed for the call it is passed to. */
typedef struct wf__otlp_span {
    uint64_t trace_id[2]; /* high, low: 32 hex digits in that order */
    uint64_t span_id;
    uint64_t parent_id; /* 0: a root span */
    const char *name;
    uint64_t start_ns, end_ns; /* Unix */
    const wf__otlp_attr *attrs;
    uint32_t n_attrs;
    const wf__otlp_event *events;
    uint32_t n_events;
    uint32_t dropped_events;
    int status_code; /* 0 unset, 2 error */
    const char *status_message;
} wf__otlp_span;

void wf__otlp_trace_id(const uint64_t seed[2], uint64_t run_id, uint64_t out[2]);
uint64_t wf__otlp_run_span_id(const uint64_t seed[2], uint64_t run_id);
/* Appends s as an OTLP/JSON Span object. */
void wf__otlp_span_json(wf__buf *b, const wf__otlp_span *s);

/*
 * A second destination for the spans (OTLP/HTTP); the exporter takes
 * ownership of it (also when wf__otlp_new fails). With a sink, params->out
 * may be NULL.
 */
typedef struct wf__otlp_sink wf__otlp_sink;
int wf__otlp_new(wf_observer *out, const wf_exporter_params *params, wf__otlp_sink *sink);

#ifdef WF_OTLP_HTTP
void wf__otlp_sink_add(wf__otlp_sink *s, const wf__otlp_span *span);
void wf__otlp_sink_flush(wf__otlp_sink *s);
void wf__otlp_sink_free(wf__otlp_sink *s);
#else
static inline void wf__otlp_sink_add(wf__otlp_sink *s, const wf__otlp_span *span)
{
    (void)s;
    (void)span;
}
static inline void wf__otlp_sink_flush(wf__otlp_sink *s)
{
    (void)s;
}
static inline void wf__otlp_sink_free(wf__otlp_sink *s)
{
    (void)s;
}
#endif

#endif
