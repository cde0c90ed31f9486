/*
 * otlp.h: the spans of the OpenTelemetry exporter, shared by its JSON
 * writer (otlp.c) and its protobuf encoder (otlp_proto.c).
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
/* A W3C traceparent's trace id and parent span id: 0, or WF_EINVAL when malformed or all zero. */
int wf__otlp_traceparent(const char *tp, uint64_t trace[2], uint64_t *parent);
/* Appends s as an OTLP/JSON Span object. */
void wf__otlp_span_json(wf__buf *b, const wf__otlp_span *s);

/* otlp_proto.c: a span as an encoded ScopeSpans.spans field, appended to b. */
void wf__otlp_span_pb(wf__buf *b, const wf__otlp_span *s);
/* An ExportTraceServiceRequest: resource attributes res, the encoded spans. */
void wf__otlp_request_pb(wf__buf *b, const wf__otlp_attr *res, uint32_t n_res,
                         const wf__buf *spans);

#endif
