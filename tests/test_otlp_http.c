/*
 * test_otlp_http.c: libwf-otlp's OTLP/HTTP sender against a receiver the
 * test starts on a free loopback port: gzip bodies, User-Agent and extra
 * headers, retries on 503 and 429 then success, no retry on 400, one
 * connection kept alive, a receiver that is down (every span counted as
 * dropped), and an executor's real spans end to end. The receiver answers
 * from a script of statuses; waits are on the sender's drain (a condition),
 * never on the clock.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <wf/otlp_http.h>
#include <wf/wf.h>

#ifndef cr_assert_geq /* not in the in-process harness */
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#endif

/* =========================================================== receiver */

#define MAX_REQ 64

typedef struct receiver {
    int fd, port, stop[2];
    pthread_t th;
    pthread_mutex_t lock;
    int status[MAX_REQ]; /* the answer to request i (0: 200) */
    const char *extra;   /* an extra response header line, or NULL */
    int n_req, n_conn;
    char *body[MAX_REQ];
    size_t len[MAX_REQ];
    char head[MAX_REQ][1024]; /* the request's header block */
} receiver;

/* Reads until the request's header block and body are in buf: 1, or 0 when the peer closed. */
static int read_request(receiver *s, int c, char *buf, size_t cap, size_t *have, size_t *hlen,
                        size_t *blen)
{
    for (;;) {
        char *end = memmem(buf, *have, "\r\n\r\n", 4);
        if (end) {
            *hlen = (size_t)(end + 4 - buf);
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            *blen = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
            if (*have >= *hlen + *blen)
                return 1;
        }
        struct pollfd p[2] = {{.fd = c, .events = POLLIN}, {.fd = s->stop[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 || p[1].revents)
            return 0;
        cr_assert(*have < cap, "request too large");
        ssize_t k = recv(c, buf + *have, cap - *have, 0);
        if (k <= 0)
            return 0;
        *have += (size_t)k;
    }
}

static void serve_conn(receiver *s, int c)
{
    static char buf[1 << 20];
    size_t have = 0, hlen, blen;
    while (read_request(s, c, buf, sizeof buf, &have, &hlen, &blen)) {
        pthread_mutex_lock(&s->lock);
        int i = s->n_req++;
        cr_assert(i < MAX_REQ);
        size_t h = hlen < sizeof s->head[i] - 1 ? hlen : sizeof s->head[i] - 1;
        memcpy(s->head[i], buf, h);
        s->head[i][h] = 0;
        s->body[i] = malloc(blen ? blen : 1);
        memcpy(s->body[i], buf + hlen, blen);
        s->len[i] = blen;
        int status = s->status[i] ? s->status[i] : 200;
        char resp[256];
        int n = snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: 0\r\n%s\r\n", status,
                         status != 200 && s->extra ? s->extra : "");
        pthread_mutex_unlock(&s->lock);
        cr_assert_eq(send(c, resp, (size_t)n, MSG_NOSIGNAL), n);
        memmove(buf, buf + hlen + blen, have - hlen - blen);
        have -= hlen + blen;
    }
}

static void *serve(void *arg)
{
    receiver *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN},
                              {.fd = s->stop[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 || p[1].revents)
            return NULL;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        pthread_mutex_lock(&s->lock);
        s->n_conn++;
        pthread_mutex_unlock(&s->lock);
        serve_conn(s, c);
        close(c);
    }
}

static int bind_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void receiver_start(receiver *s, const int *statuses, int n)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < n; i++)
        s->status[i] = statuses[i];
    s->fd = bind_loopback(&s->port);
    cr_assert_eq(listen(s->fd, 8), 0);
    cr_assert_eq(pipe(s->stop), 0);
    pthread_mutex_init(&s->lock, NULL);
    cr_assert_eq(pthread_create(&s->th, NULL, serve, s), 0);
}

static void receiver_stop(receiver *s)
{
    cr_assert_eq(write(s->stop[1], "x", 1), 1);
    pthread_join(s->th, NULL);
    close(s->fd);
    close(s->stop[0]);
    close(s->stop[1]);
    for (int i = 0; i < s->n_req; i++)
        free(s->body[i]);
    pthread_mutex_destroy(&s->lock);
}

/* ============================================================ helpers */

/* Fast backoff for tests: 1 ms, at most 4 ms. */
static wf_otlp_http *sender(const receiver *s, int port, uint32_t queue_max, uint32_t attempts)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", s ? s->port : port);
    wf_otlp_http_params p;
    wf_otlp_http_params_init(&p);
    p.endpoint = url;
    p.queue_max = queue_max;
    p.max_attempts = attempts;
    p.backoff_min_ms = 1;
    p.backoff_max_ms = 4;
    p.headers = "X-Tenant: t1\nX-Other: o";
    wf_otlp_http *h;
    cr_assert_eq(wf_otlp_http_new(&h, &p), 0);
    return h;
}

/* One run of one failed step: two spans (the step's, the run's), handed over by the flush. */
static void one_run(const wf_observer *o, uint64_t run_id)
{
    const int64_t t0 = 1000000000;
    wf_obs_record r[4];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 4; i++) {
        r[i].run_id = run_id;
        r[i].workflow = "QuickTest";
        r[i].workers = 1;
        r[i].ts_ns = t0 + i * 1000;
    }
    r[0].kind = WF_OBS_RUN_START;
    r[0].thread = WF_OBS_OUTSIDE;
    r[1].kind = WF_OBS_STEP_START;
    r[1].step = "think";
    r[1].event_type = "StartEvent";
    r[1].event_id = 7;
    r[1].attempt = 1;
    r[2] = r[1];
    r[2].kind = WF_OBS_STEP_END;
    r[2].dur_ns = 1000;
    r[2].error = WF_ESTEP;
    r[2].message = "boom";
    r[3].kind = WF_OBS_RUN_END;
    r[3].thread = WF_OBS_OUTSIDE;
    r[3].status = WF_RUN_FAILED;
    r[3].error = WF_ESTEP;
    r[3].step = "think";
    r[3].dur_ns = 3000;
    for (int i = 0; i < 4; i++)
        if (o->kinds == 0 || (o->kinds & WF_OBS_BIT(r[i].kind)))
            o->record(&r[i], o->user);
    o->flush(o->user);
}

/* A gzip body inflated (malloc'd, *n bytes). */
static char *gunzip(const char *body, size_t len, size_t *n)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    cr_assert_eq(inflateInit2(&z, 15 + 16), Z_OK);
    size_t cap = 1 << 20;
    char *out = malloc(cap);
    z.next_in = (Bytef *)body;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    cr_assert_eq(inflate(&z, Z_FINISH), Z_STREAM_END, "not a whole gzip stream");
    *n = z.total_out;
    inflateEnd(&z);
    return out;
}

static int has_header(const receiver *s, int i, const char *line)
{
    return strcasestr(s->head[i], line) != NULL;
}

static void drain(wf_otlp_http *h)
{
    /* A guard against a hang, not a timing assertion: the sends take milliseconds. */
    cr_assert_eq(wf_otlp_http_drain(h, 60000), 0);
}

/* ============================================================== tests */

Test(otlp_http, bad_parameters)
{
    wf_otlp_http_params p;
    wf_otlp_http_params_init(&p);
    wf_otlp_http *h = (wf_otlp_http *)1;
    cr_assert_eq(wf_otlp_http_new(&h, &p), WF_EINVAL, "no endpoint");
    cr_assert_null(h);
    const char *bad[] = {"ftp://127.0.0.1/", "http://", "https:///v1/traces", "127.0.0.1:4318"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p.endpoint = bad[i];
        cr_assert_eq(wf_otlp_http_new(&h, &p), WF_EINVAL, "%s", bad[i]);
    }
    p.endpoint = "http://127.0.0.1:1/v1/traces";
    p.queue_max = 0;
    cr_assert_eq(wf_otlp_http_new(&h, &p), WF_EINVAL);
    wf_observer o;
    cr_assert_eq(wf_otlp_http_observer(NULL, &o, NULL), WF_EINVAL);
    cr_assert_eq(wf_exporter_otlp_http(&o, "nope://", NULL), WF_EINVAL);
    wf_otlp_http_free(NULL);
}

Test(otlp_http, retries_on_503_then_sends_gzip, .timeout = 120)
{
    receiver s;
    receiver_start(&s, (const int[]){503, 503, 200}, 3);
    wf_otlp_http *h = sender(&s, 0, 8, 5);
    wf_observer o;
    wf_exporter_params ep;
    wf_exporter_params_init(&ep);
    ep.service_name = "svc-retry";
    cr_assert_eq(wf_otlp_http_observer(h, &o, &ep), 0);
    one_run(&o, 1);
    drain(h);
    wf_otlp_http_stats st;
    wf_otlp_http_stats_get(h, &st);
    cr_assert_eq(st.retries, 2);
    cr_assert_eq(st.requests_sent, 1);
    cr_assert_eq(st.spans_sent, 2);
    cr_assert_eq(st.requests_dropped, 0);
    cr_assert_eq(st.queued, 0);
    pthread_mutex_lock(&s.lock);
    cr_assert_eq(s.n_req, 3, "two refusals, then the one accepted");
    for (int i = 0; i < 3; i++) {
        cr_assert(has_header(&s, i, "\r\nContent-Encoding: gzip\r\n"), "%s", s.head[i]);
        cr_assert(has_header(&s, i, "\r\nContent-Type: application/x-protobuf\r\n"));
        cr_assert(has_header(&s, i, "\r\nUser-Agent: wf-otlp/"), "%s", s.head[i]);
        cr_assert(has_header(&s, i, "\r\nX-Tenant: t1\r\n") &&
                  has_header(&s, i, "\r\nX-Other: o\r\n"));
        cr_assert(strncmp(s.head[i], "POST /v1/traces HTTP/1.1\r\n", 26) == 0, "%s", s.head[i]);
        cr_assert_eq(s.len[i], s.len[0]);
        cr_assert(memcmp(s.body[i], s.body[0], s.len[0]) == 0, "the same request each time");
    }
    size_t n;
    char *pb = gunzip(s.body[2], s.len[2], &n);
    cr_assert(memmem(pb, n, "svc-retry", 9) && memmem(pb, n, "QuickTest", 9) &&
              memmem(pb, n, "think", 5) && memmem(pb, n, "error.type", 10));
    free(pb);
    pthread_mutex_unlock(&s.lock);
    o.user_free(o.user);
    wf_otlp_http_free(h);
    receiver_stop(&s);
}

Test(otlp_http, retries_on_429_honouring_retry_after_up_to_the_cap, .timeout = 120)
{
    receiver s;
    receiver_start(&s, (const int[]){429, 200}, 2);
    s.extra = "Retry-After: 1\r\n"; /* 1 s, capped at backoff_max_ms (4 ms) */
    wf_otlp_http *h = sender(&s, 0, 8, 5);
    wf_observer o;
    cr_assert_eq(wf_otlp_http_observer(h, &o, NULL), 0);
    one_run(&o, 1);
    drain(h);
    wf_otlp_http_stats st;
    wf_otlp_http_stats_get(h, &st);
    cr_assert_eq(st.retries, 1);
    cr_assert_eq(st.requests_sent, 1);
    o.user_free(o.user);
    wf_otlp_http_free(h);
    receiver_stop(&s);
}

Test(otlp_http, a_refused_request_is_not_retried, .timeout = 120)
{
    receiver s;
    receiver_start(&s, (const int[]){400}, 1);
    wf_otlp_http *h = sender(&s, 0, 8, 5);
    wf_observer o;
    cr_assert_eq(wf_otlp_http_observer(h, &o, NULL), 0);
    one_run(&o, 1);
    drain(h);
    wf_otlp_http_stats st;
    wf_otlp_http_stats_get(h, &st);
    cr_assert_eq(st.retries, 0);
    cr_assert_eq(st.requests_dropped, 1);
    cr_assert_eq(st.spans_dropped, 2);
    pthread_mutex_lock(&s.lock);
    cr_assert_eq(s.n_req, 1);
    pthread_mutex_unlock(&s.lock);
    o.user_free(o.user);
    wf_otlp_http_free(h);
    receiver_stop(&s);
}

Test(otlp_http, one_connection_kept_alive, .timeout = 120)
{
    receiver s;
    receiver_start(&s, NULL, 0);
    wf_otlp_http *h = sender(&s, 0, 8, 5);
    wf_observer o;
    cr_assert_eq(wf_otlp_http_observer(h, &o, NULL), 0);
    for (uint64_t run = 1; run <= 3; run++) {
        one_run(&o, run);
        drain(h);
    }
    pthread_mutex_lock(&s.lock);
    cr_assert_eq(s.n_req, 3);
    cr_assert_eq(s.n_conn, 1, "keep-alive: %d connections for 3 requests", s.n_conn);
    pthread_mutex_unlock(&s.lock);
    wf_otlp_http_stats st;
    wf_otlp_http_stats_get(h, &st);
    cr_assert_eq(st.spans_sent, 6);
    o.user_free(o.user);
    wf_otlp_http_free(h);
    receiver_stop(&s);
}

Test(otlp_http, receiver_down_counts_every_span_dropped, .timeout = 120)
{
    int port, fd = bind_loopback(&port);
    close(fd); /* nothing listens there: connections are refused */
    wf_otlp_http *h = sender(NULL, port, 2, 3);
    wf_observer o;
    cr_assert_eq(wf_otlp_http_observer(h, &o, NULL), 0);
    for (uint64_t run = 1; run <= 6; run++)
        one_run(&o, run); /* the queue (2) overflows while the first is retried */
    drain(h);
    wf_otlp_http_stats st;
    wf_otlp_http_stats_get(h, &st);
    cr_assert_eq(st.requests_sent, 0);
    cr_assert_eq(st.requests_dropped, 6);
    cr_assert_eq(st.spans_dropped, 12);
    cr_assert_geq(st.retries, 2, "the first request is retried up to its attempts");
    o.user_free(o.user);
    wf_otlp_http_free(h);
}

/* -------------------------------------------- with a real executor */

static int finish_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in;
    (void)u;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(42));
}

Test(otlp_http, an_executor_s_spans_end_to_end, .timeout = 120)
{
    receiver s;
    receiver_start(&s, NULL, 0);
    wf_otlp_http *h = sender(&s, 0, 64, 5);
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "EndToEnd", NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "only", finish_step, &p, NULL), 0);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_observer o;
    cr_assert_eq(wf_otlp_http_observer(h, &o, NULL), 0);
    uint32_t id;
    cr_assert_eq(wf_executor_observe(ex, &o, &id), 0);
    for (int i = 0; i < 3; i++) {
        wf_event *start;
        cr_assert_eq(wf_event_new(&start, acc[0], 0), 0);
        wf_event *result = NULL;
        cr_assert_eq(wf_run(ex, wf, NULL, start, -1, &result), 0);
        wf_event_release(result);
    }
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    drain(h);
    wf_otlp_http_stats st;
    wf_otlp_http_stats_get(h, &st);
    cr_assert_eq(st.spans_sent, 6, "3 runs, 3 step invocations");
    cr_assert_eq(wf_executor_unobserve(ex, id), 0);
    wf_otlp_http_free(h); /* the last reference went with the observer */
    pthread_mutex_lock(&s.lock);
    size_t n = 0;
    char *pb = s.n_req ? gunzip(s.body[0], s.len[0], &n) : NULL;
    cr_assert(pb && memmem(pb, n, "EndToEnd", 8));
    free(pb);
    pthread_mutex_unlock(&s.lock);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    receiver_stop(&s);
}
