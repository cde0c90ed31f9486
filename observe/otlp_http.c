/*
 * otlp_http.c: the OpenTelemetry exporter's spans sent over OTLP/HTTP as
 * protobuf (built with -Dotlp_http=true).
 *
 * The protobuf encoder is written by hand for the few messages needed
 * (opentelemetry/proto/collector/trace/v1 ExportTraceServiceRequest and what
 * it holds), so wf takes no new dependency. Each span is encoded when the
 * exporter hands it over (as a ScopeSpans.spans entry); a flush wraps the
 * pending ones in one request and POSTs it over a fresh connection, on the
 * exporter thread, with timeouts. A request that fails is dropped (and
 * counted), not retried: the executor's records must keep flowing.
 *
 * Protobuf strings must be UTF-8 (receivers reject the message otherwise):
 * invalid bytes are written as U+FFFD.
 */
#include "export.h"
#include "otlp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PENDING_SPANS 256
#define TIMEOUT_MS        5000

struct wf__otlp_sink {
    char *host, *port, *path; /* of the endpoint */
    char *service;
    wf__buf pending; /* encoded ScopeSpans.spans fields */
    uint32_t n_pending;
    uint64_t sent, lost; /* spans */
};

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

static void put_span(wf__buf *b, unsigned field, const wf__otlp_span *s)
{
    put_len(b, field, span_size(s));
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
 *   resource = 1: Resource { attributes = 1: service.name },
 *   scope_spans = 2: ScopeSpans { scope = 1: { name = 1, version = 2 }, spans = 2 ... } } }
 */
static void put_request(wf__buf *b, const char *service, const wf__buf *spans)
{
    wf__otlp_attr svc = {"service.name", 0, 0, service};
    size_t resource = len_field(1, kv_size(&svc));
    size_t scope = str_field(1, "wf") + str_field(2, wf_version_string());
    size_t scope_spans = len_field(1, scope) + spans->len;
    size_t resource_spans = len_field(1, resource) + len_field(2, scope_spans);
    put_len(b, 1, resource_spans);
    put_len(b, 1, resource);
    put_kv(b, 1, &svc);
    put_len(b, 2, scope_spans);
    put_len(b, 1, scope);
    put_str(b, 1, "wf");
    put_str(b, 2, wf_version_string());
    wf__buf_append(b, spans->data, spans->len);
}

/* ---------------------------------------------------------------- HTTP */

/* Waits until fd is ready for events; 0, or -1 on timeout or error. */
static int wait_fd(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    int rc;
    do
        rc = poll(&p, 1, TIMEOUT_MS);
    while (rc < 0 && errno == EINTR);
    return rc == 1 ? 0 : -1;
}

static int dial(const wf__otlp_sink *s)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai, *a;
    if (getaddrinfo(s->host, s->port, &hints, &ai) != 0)
        return -1;
    int fd = -1;
    for (a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0)
            continue;
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS && wait_fd(fd, POLLOUT) == 0) {
            int err = 0;
            socklen_t len = sizeof err;
            rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 ? 0 : -1;
        }
        if (rc < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT) < 0)
                return -1;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* POSTs body; 0 when the endpoint answered 2xx. */
static int post(const wf__otlp_sink *s, const wf__buf *body)
{
    int fd = dial(s);
    if (fd < 0)
        return -1;
    wf__buf head;
    wf__buf_init(&head);
    wf__buf_printf(&head,
                   "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/x-protobuf\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                   s->path, s->host, s->port, body->len);
    int rc = head.oom ? -1 : send_all(fd, head.data, head.len);
    wf__buf_free(&head);
    if (rc == 0)
        rc = send_all(fd, body->data, body->len);
    /* The status line is enough: "HTTP/1.1 200 ..." */
    char reply[64];
    size_t got = 0;
    while (rc == 0 && got < 12) {
        ssize_t k = recv(fd, reply + got, sizeof reply - 1 - got, 0);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLIN) < 0)
                rc = -1;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            rc = -1;
        else
            got += (size_t)k;
    }
    close(fd);
    if (rc < 0)
        return -1;
    reply[got] = 0;
    return strncmp(reply, "HTTP/1.", 7) == 0 && reply[9] == '2' ? 0 : -1;
}

/* -------------------------------------------------------------- the sink */

void wf__otlp_sink_flush(wf__otlp_sink *s)
{
    if (s == NULL || s->n_pending == 0)
        return;
    wf__buf body;
    wf__buf_init(&body);
    if (!s->pending.oom)
        put_request(&body, s->service, &s->pending);
    if (s->pending.oom || body.oom || post(s, &body) < 0)
        s->lost += s->n_pending;
    else
        s->sent += s->n_pending;
    wf__buf_free(&body);
    s->pending.len = 0;
    s->pending.oom = 0;
    s->n_pending = 0;
}

void wf__otlp_sink_add(wf__otlp_sink *s, const wf__otlp_span *span)
{
    size_t len0 = s->pending.len;
    put_span(&s->pending, 2, span);
    if (s->pending.oom) {
        s->pending.oom = 0;
        s->pending.len = len0;
        s->lost++;
        return;
    }
    if (++s->n_pending >= MAX_PENDING_SPANS)
        wf__otlp_sink_flush(s);
}

void wf__otlp_sink_free(wf__otlp_sink *s)
{
    if (s == NULL)
        return;
    wf__otlp_sink_flush(s);
    wf__buf_free(&s->pending);
    wf__free_mem(s->host);
    wf__free_mem(s->port);
    wf__free_mem(s->path);
    wf__free_mem(s->service);
    wf__free_mem(s);
}

/* http://host[:port][/path], host possibly [v6]; the path defaults to /v1/traces. */
static int parse_endpoint(wf__otlp_sink *s, const char *url)
{
    if (url == NULL || strncmp(url, "http://", 7) != 0)
        return WF_EINVAL; /* https would need TLS: not here */
    const char *h = url + 7, *end;
    if (*h == '[') {
        end = strchr(h, ']');
        if (end == NULL)
            return WF_EINVAL;
        s->host = wf__strndup(h + 1, (size_t)(end - h - 1));
        end++;
    } else {
        end = h + strcspn(h, ":/");
        s->host = wf__strndup(h, (size_t)(end - h));
    }
    const char *port = "80", *pend = end;
    if (*end == ':') {
        port = end + 1;
        pend = port + strcspn(port, "/");
    }
    s->port = *end == ':' ? wf__strndup(port, (size_t)(pend - port)) : wf__strdup(port);
    s->path = wf__strdup(*pend ? pend : "/v1/traces");
    if (s->host == NULL || s->port == NULL || s->path == NULL)
        return WF_ENOMEM;
    if (*s->host == 0 || *s->port == 0 || strspn(s->port, "0123456789") != strlen(s->port))
        return WF_EINVAL;
    return 0;
}

int wf_exporter_otlp_http(wf_observer *out, const char *endpoint, const wf_exporter_params *params)
{
    wf__otlp_sink *s = wf__calloc(1, sizeof *s);
    int rc = s ? parse_endpoint(s, endpoint) : WF_ENOMEM;
    if (rc == 0) {
        const char *svc = params && params->service_name ? params->service_name : "wf";
        s->service = wf__strdup(svc);
        rc = s->service ? 0 : WF_ENOMEM;
    }
    if (rc < 0) {
        wf__otlp_sink_free(s);
        if (params)
            wf__exp_close(params->out, params->keep_open); /* taken over even when refused */
        return rc;
    }
    wf__buf_init(&s->pending);
    return wf__otlp_new(out, params, s);
}
