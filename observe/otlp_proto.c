/*
 * otlp_proto.c: the OpenTelemetry exporter's spans as OTLP protobuf (an
 * ExportTraceServiceRequest), for wf_exporter_otlp_proto's sender (the
 * OTLP/HTTP exporter of libwf-otlp sends them).
 *
 * The protobuf encoder is written by hand for the few messages needed
 * (opentelemetry/proto/collector/trace/v1 ExportTraceServiceRequest and what
 * it holds), so wf takes no new dependency. Each span is encoded when the
 * exporter hands it over (as a ScopeSpans.spans entry); a request wraps the
 * pending ones.
 *
 * Protobuf strings must be UTF-8 (receivers reject the message otherwise):
 * invalid bytes are written as U+FFFD.
 */
#include "export.h"
#include "otlp.h"

#include <string.h>

/* ------------------------------------------------------------ protobuf */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2 };

static size_t vsize(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void put_varint(wf__buf *b, uint64_t v)
{
    char tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (char)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (char)v;
    wf__buf_append(b, tmp, n);
}

static void put_tag(wf__buf *b, unsigned field, unsigned wt)
{
    put_varint(b, (uint64_t)field << 3 | wt);
}

static size_t tag_size(unsigned field)
{
    return vsize((uint64_t)field << 3);
}

/* A length-delimited field's size: tag, length, payload. */
static size_t len_field(unsigned field, size_t payload)
{
    return tag_size(field) + vsize(payload) + payload;
}

static void put_len(wf__buf *b, unsigned field, size_t payload)
{
    put_tag(b, field, WT_LEN);
    put_varint(b, payload);
}

/* The length of s once invalid UTF-8 is repaired (each bad byte: 3 bytes of U+FFFD). */
static size_t str_len(const char *s)
{
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        size_t k = wf__utf8_len(p, SIZE_MAX);
        n += k ? k : 3;
        p += k ? k : 1;
    }
    return n;
}

static size_t str_field(unsigned field, const char *s)
{
    return len_field(field, str_len(s));
}

static void put_str(wf__buf *b, unsigned field, const char *s)
{
    put_len(b, field, str_len(s));
    wf__exp_utf8_fix(b, s ? s : "");
}

static void put_fixed64(wf__buf *b, unsigned field, uint64_t v)
{
    char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (char)(v >> (8 * i));
    put_tag(b, field, WT_I64);
    wf__buf_append(b, le, 8);
}

static void put_id(wf__buf *b, unsigned field, const uint64_t *words, int n)
{
    char be[16];
    for (int w = 0; w < n; w++)
        for (int i = 0; i < 8; i++)
            be[w * 8 + i] = (char)(words[w] >> (56 - 8 * i));
    put_len(b, field, (size_t)n * 8);
    wf__buf_append(b, be, (size_t)n * 8);
}

/* AnyValue: string_value = 1, int_value = 3 */
static size_t any_size(const wf__otlp_attr *a)
{
    return a->is_int ? tag_size(3) + vsize((uint64_t)a->i) : str_field(1, a->s);
}

/* KeyValue: key = 1, value = 2 */
static size_t kv_size(const wf__otlp_attr *a)
{
    return str_field(1, a->key) + len_field(2, any_size(a));
}

static void put_kv(wf__buf *b, unsigned field, const wf__otlp_attr *a)
{
    put_len(b, field, kv_size(a));
    put_str(b, 1, a->key);
    put_len(b, 2, any_size(a));
    if (a->is_int) {
        put_tag(b, 3, WT_VARINT);
        put_varint(b, (uint64_t)a->i); /* int64: two's complement in 10 bytes when negative */
    } else {
        put_str(b, 1, a->s);
    }
}

/* Span.Event: time_unix_nano = 1 (fixed64), name = 2, attributes = 3 */
static size_t event_size(const wf__otlp_event *e)
{
    size_t n = tag_size(1) + 8 + str_field(2, e->name);
    for (uint32_t i = 0; i < e->n_attrs; i++)
        n += len_field(3, kv_size(&e->attrs[i]));
    return n;
}

/* Status: message = 2, code = 3 */
static size_t status_size(const wf__otlp_span *s)
{
    return (s->status_message ? str_field(2, s->status_message) : 0) + tag_size(3) +
           vsize((uint64_t)s->status_code);
}

/*
 * Span: trace_id = 1, span_id = 2, parent_span_id = 4, name = 5, kind = 6,
 * start_time_unix_nano = 7, end_time_unix_nano = 8 (fixed64), attributes = 9,
 * events = 11, dropped_events_count = 12, status = 15
 */
static size_t span_size(const wf__otlp_span *s)
{
    size_t n = len_field(1, 16) + len_field(2, 8) + (s->parent_id ? len_field(4, 8) : 0) +
               str_field(5, s->name) + tag_size(6) + 1 + 2 * (tag_size(7) + 8);
    for (uint32_t i = 0; i < s->n_attrs; i++)
        n += len_field(9, kv_size(&s->attrs[i]));
    for (uint32_t i = 0; i < s->n_events; i++)
        n += len_field(11, event_size(&s->events[i]));
    if (s->dropped_events)
        n += tag_size(12) + vsize(s->dropped_events);
    if (s->status_code)
        n += len_field(15, status_size(s));
    return n;
}

void wf__otlp_span_pb(wf__buf *b, const wf__otlp_span *s)
{
    put_len(b, 2, span_size(s)); /* ScopeSpans.spans */
    put_id(b, 1, s->trace_id, 2);
    put_id(b, 2, &s->span_id, 1);
    if (s->parent_id)
        put_id(b, 4, &s->parent_id, 1);
    put_str(b, 5, s->name);
    put_tag(b, 6, WT_VARINT);
    put_varint(b, 1); /* SPAN_KIND_INTERNAL */
    put_fixed64(b, 7, s->start_ns);
    put_fixed64(b, 8, s->end_ns);
    for (uint32_t i = 0; i < s->n_attrs; i++)
        put_kv(b, 9, &s->attrs[i]);
    for (uint32_t i = 0; i < s->n_events; i++) {
        const wf__otlp_event *e = &s->events[i];
        put_len(b, 11, event_size(e));
        put_fixed64(b, 1, e->time_ns);
        put_str(b, 2, e->name);
        for (uint32_t k = 0; k < e->n_attrs; k++)
            put_kv(b, 3, &e->attrs[k]);
    }
    if (s->dropped_events) {
        put_tag(b, 12, WT_VARINT);
        put_varint(b, s->dropped_events);
    }
    if (s->status_code) {
        put_len(b, 15, status_size(s));
        if (s->status_message)
            put_str(b, 2, s->status_message);
        put_tag(b, 3, WT_VARINT);
        put_varint(b, (uint64_t)s->status_code);
    }
}

/*
 * ExportTraceServiceRequest { resource_spans = 1: ResourceSpans {
 *   resource = 1: Resource { attributes = 1 ... },
 *   scope_spans = 2: ScopeSpans { scope = 1: { name = 1, version = 2 }, spans = 2 ... } } }
 */
void wf__otlp_request_pb(wf__buf *b, const wf__otlp_attr *res, uint32_t n_res, const wf__buf *spans)
{
    size_t resource = 0;
    for (uint32_t i = 0; i < n_res; i++)
        resource += len_field(1, kv_size(&res[i]));
    size_t scope = str_field(1, "wf") + str_field(2, wf_version_string());
    size_t scope_spans = len_field(1, scope) + spans->len;
    size_t resource_spans = len_field(1, resource) + len_field(2, scope_spans);
    put_len(b, 1, resource_spans);
    put_len(b, 1, resource);
    for (uint32_t i = 0; i < n_res; i++)
        put_kv(b, 1, &res[i]);
    put_len(b, 2, scope_spans);
    put_len(b, 1, scope);
    put_str(b, 1, "wf");
    put_str(b, 2, wf_version_string());
    wf__buf_append(b, spans->data, spans->len);
}
