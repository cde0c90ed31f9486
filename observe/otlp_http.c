/*
 * otlp_http.c: libwf-otlp, the OTLP/HTTP sender over libcurl (see
 * <wf/otlp_http.h>). Only wf's public API is used: wf_exporter_otlp_proto
 * hands this file encoded requests, which it queues and sends from a thread
 * of its own.
 *
 * Locking: one mutex per sender guards the queue, the counters, the stop
 * flag and refs' last drop; the sender thread waits on `work` (new request,
 * stop, or the end of a backoff), wf_otlp_http_drain on `idle`. The curl
 * handle belongs to the sender thread alone.
 */
#include <wf/otlp_http.h>

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

typedef struct request {
    struct request *next;
    char *body; /* encoded (and gzipped when asked) */
    size_t len;
    uint32_t n_spans;
} request;

struct wf_otlp_http {
    atomic_uint refs;
    /* options, fixed at creation */
    char *endpoint, *user_agent, *ca_file;
    struct curl_slist *headers;
    uint32_t queue_max, max_attempts;
    int64_t backoff_min_ms, backoff_max_ms, timeout_ms;
    int gzip, insecure;
    uint64_t rng; /* jitter; the sender thread's */

    pthread_mutex_t lock;
    pthread_cond_t work;   /* a request, stop, or a backoff's end (monotonic clock) */
    pthread_cond_t idle;   /* the queue emptied and nothing is in flight */
    request *head, *tail;  /* guarded by lock */
    uint32_t queued;       /* guarded by lock: in the list or in flight */
    int stop;              /* guarded by lock */
    wf_otlp_http_stats st; /* guarded by lock (queued mirrored at read) */
    pthread_t thread;
};

/* ------------------------------------------------------------- helpers */

static char *dup_str(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = (*s += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* body gzipped into *out (malloc'd): 0, or -1 when memory ran out. */
static int gzip_body(const void *body, size_t len, char **out, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong cap = deflateBound(&z, (uLong)len);
    char *buf = malloc(cap ? cap : 1);
    if (buf == NULL) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)(uintptr_t)body;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)buf;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t n = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

/* ------------------------------------------------------------ sending */

static size_t discard(char *p, size_t size, size_t n, void *user)
{
    (void)p;
    (void)user;
    return size * n;
}

enum { SENT, RETRY, GIVE_UP };

/* One POST of r: SENT, RETRY (with the server's Retry-After in *after_ms, or -1) or GIVE_UP. */
static int post(wf_otlp_http *h, CURL *c, const request *r, int64_t *after_ms)
{
    *after_ms = -1;
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->len);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        /* No answer: connection refused or reset, timeout, TLS... worth another try. */
        return (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) ? GIVE_UP : RETRY;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300)
        return SENT;
    if (status == 429 || (status >= 500 && status < 600)) {
        curl_off_t after = -1;
        if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0)
            *after_ms = (int64_t)after * 1000;
        return RETRY;
    }
    (void)h;
    return GIVE_UP; /* the request itself was refused: sending it again would not help */
}

/* Waits ms on the work condition, or until stop: 1 if stopped. Under lock. */
static int backoff_wait(wf_otlp_http *h, int64_t ms)
{
    int64_t until = now_ms() + ms;
    struct timespec ts;
    ts.tv_sec = (time_t)(until / 1000);
    ts.tv_nsec = (long)(until % 1000) * 1000000;
    while (!h->stop && now_ms() < until)
        if (pthread_cond_timedwait(&h->work, &h->lock, &ts) == ETIMEDOUT)
            break;
    return h->stop;
}

/* Sends r with its retries; returns SENT or GIVE_UP. Called without the lock. */
static int deliver(wf_otlp_http *h, CURL *c, const request *r)
{
    int64_t backoff = h->backoff_min_ms;
    for (uint32_t attempt = 1;; attempt++) {
        int64_t after;
        int rc = post(h, c, r, &after);
        if (rc != RETRY)
            return rc;
        pthread_mutex_lock(&h->lock);
        int stopping = h->stop;
        if (attempt >= h->max_attempts || stopping) {
            pthread_mutex_unlock(&h->lock);
            return GIVE_UP;
        }
        /* Full jitter on the upper half: [backoff/2, backoff]. */
        int64_t wait = backoff / 2 + (int64_t)(next_rand(&h->rng) % (uint64_t)(backoff / 2 + 1));
        if (after > wait)
            wait = after < h->backoff_max_ms ? after : h->backoff_max_ms;
        h->st.retries++;
        stopping = backoff_wait(h, wait);
        pthread_mutex_unlock(&h->lock);
        if (stopping)
            return GIVE_UP;
        backoff = backoff * 2 < h->backoff_max_ms ? backoff * 2 : h->backoff_max_ms;
    }
}

static CURL *make_handle(wf_otlp_http *h)
{
    CURL *c = curl_easy_init();
    if (c == NULL)
        return NULL;
    curl_easy_setopt(c, CURLOPT_URL, h->endpoint);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, h->user_agent);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* a library thread: no SIGALRM */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (h->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
    if (h->insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return c;
}

static void *sender_main(void *arg)
{
    wf_otlp_http *h = arg;
    CURL *c = make_handle(h);
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (h->head == NULL && !h->stop)
            pthread_cond_wait(&h->work, &h->lock);
        request *r = h->head;
        if (r == NULL)
            break; /* stopped and empty */
        h->head = r->next;
        if (h->head == NULL)
            h->tail = NULL;
        pthread_mutex_unlock(&h->lock);
        int rc = c ? deliver(h, c, r) : GIVE_UP;
        pthread_mutex_lock(&h->lock);
        if (rc == SENT) {
            h->st.requests_sent++;
            h->st.spans_sent += r->n_spans;
        } else {
            h->st.requests_dropped++;
            h->st.spans_dropped += r->n_spans;
        }
        h->queued--;
        if (h->queued == 0)
            pthread_cond_broadcast(&h->idle);
        free(r->body);
        free(r);
    }
    pthread_mutex_unlock(&h->lock);
    if (c)
        curl_easy_cleanup(c);
    return NULL;
}

/* ------------------------------------------------------- the exporter side */

/* wf_otlp_sender.send: on the exporter thread; copies the request into the queue. */
static int enqueue(const void *body, size_t len, uint32_t n_spans, void *user)
{
    wf_otlp_http *h = user;
    request *r = calloc(1, sizeof *r);
    int ok = r != NULL;
    if (ok) {
        r->n_spans = n_spans;
        if (h->gzip) {
            ok = gzip_body(body, len, &r->body, &r->len) == 0;
        } else if ((r->body = malloc(len ? len : 1)) != NULL) {
            memcpy(r->body, body, len);
            r->len = len;
        } else {
            ok = 0;
        }
    }
    pthread_mutex_lock(&h->lock);
    if (!ok || h->queued >= h->queue_max || h->stop) {
        h->st.requests_dropped++;
        h->st.spans_dropped += n_spans;
        pthread_mutex_unlock(&h->lock);
        if (r)
            free(r->body);
        free(r);
        return ok ? WF_EOVERFLOW : WF_ENOMEM;
    }
    if (h->tail)
        h->tail->next = r;
    else
        h->head = r;
    h->tail = r;
    h->queued++;
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static void destroy(wf_otlp_http *h)
{
    pthread_mutex_lock(&h->lock);
    h->stop = 1;
    pthread_cond_broadcast(&h->work);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->work);
    pthread_cond_destroy(&h->idle);
    curl_slist_free_all(h->headers);
    free(h->endpoint);
    free(h->user_agent);
    free(h->ca_file);
    free(h);
}

static void release(void *user)
{
    wf_otlp_http *h = user;
    if (h && atomic_fetch_sub(&h->refs, 1) == 1)
        destroy(h);
}

/* ----------------------------------------------------------------- API */

void wf_otlp_http_params_init(wf_otlp_http_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->queue_max = 64;
    p->max_attempts = 5;
    p->backoff_min_ms = 500;
    p->backoff_max_ms = 10000;
    p->timeout_ms = 10000;
    p->gzip = 1;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;

static void curl_init(void)
{
    curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

/* Splits "A: b\nC: d" into a header list appended to *list: 0 or -1. */
static int add_headers(struct curl_slist **list, const char *lines)
{
    while (lines && *lines) {
        const char *end = strchr(lines, '\n');
        size_t n = end ? (size_t)(end - lines) : strlen(lines);
        if (n && lines[n - 1] == '\r')
            n--;
        if (n) {
            char *line = malloc(n + 1);
            if (line == NULL)
                return -1;
            memcpy(line, lines, n);
            line[n] = 0;
            struct curl_slist *l = curl_slist_append(*list, line);
            free(line);
            if (l == NULL)
                return -1;
            *list = l;
        }
        lines = end ? end + 1 : NULL;
    }
    return 0;
}

int wf_otlp_http_new(wf_otlp_http **out, const wf_otlp_http_params *p)
{
    if (out)
        *out = NULL;
    const char *host = NULL;
    if (p && p->endpoint && strncmp(p->endpoint, "http://", 7) == 0)
        host = p->endpoint + 7;
    else if (p && p->endpoint && strncmp(p->endpoint, "https://", 8) == 0)
        host = p->endpoint + 8;
    if (out == NULL || host == NULL || host[0] == 0 || host[0] == '/' || p->queue_max == 0 ||
        p->max_attempts == 0 || p->backoff_min_ms < 1 || p->backoff_max_ms < p->backoff_min_ms ||
        p->timeout_ms < 1)
        return WF_EINVAL;
    pthread_once(&curl_once, curl_init);
    if (!curl_ok)
        return WF_ENOMEM;
    wf_otlp_http *h = calloc(1, sizeof *h);
    if (h == NULL)
        return WF_ENOMEM;
    char ua[128];
    if (p->user_agent == NULL) {
        const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
        snprintf(ua, sizeof ua, "wf-otlp/%s libcurl/%s", wf_version_string(), v->version);
    }
    h->endpoint = dup_str(p->endpoint);
    h->user_agent = dup_str(p->user_agent ? p->user_agent : ua);
    h->ca_file = dup_str(p->ca_file);
    int ok = h->endpoint && h->user_agent && (p->ca_file == NULL || h->ca_file);
    if (ok) {
        static const char *const fixed[] = {"Content-Type: application/x-protobuf",
                                            "Content-Encoding: gzip", "Expect:"};
        for (size_t i = 0; ok && i < 3; i++) {
            if (i == 1 && !p->gzip)
                continue;
            struct curl_slist *l = curl_slist_append(h->headers, fixed[i]);
            ok = l != NULL;
            if (ok)
                h->headers = l;
        }
        ok = ok && add_headers(&h->headers, p->headers) == 0;
    }
    h->queue_max = p->queue_max;
    h->max_attempts = p->max_attempts;
    h->backoff_min_ms = p->backoff_min_ms;
    h->backoff_max_ms = p->backoff_max_ms;
    h->timeout_ms = p->timeout_ms;
    h->gzip = p->gzip != 0;
    h->insecure = p->insecure != 0;
    h->rng = (uint64_t)now_ms() ^ (uint64_t)(uintptr_t)h;
    atomic_init(&h->refs, 1);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->work, &ca);
    pthread_cond_init(&h->idle, &ca);
    pthread_condattr_destroy(&ca);
    if (!ok || pthread_create(&h->thread, NULL, sender_main, h) != 0) {
        pthread_mutex_destroy(&h->lock);
        pthread_cond_destroy(&h->work);
        pthread_cond_destroy(&h->idle);
        curl_slist_free_all(h->headers);
        free(h->endpoint);
        free(h->user_agent);
        free(h->ca_file);
        free(h);
        return WF_ENOMEM;
    }
    *out = h;
    return 0;
}

int wf_otlp_http_observer(wf_otlp_http *h, wf_observer *out, const wf_exporter_params *ep)
{
    if (h == NULL) {
        if (ep && ep->out && !ep->keep_open)
            fclose(ep->out); /* taken over even when refused, as wf_exporter_otlp_proto does */
        return WF_EINVAL;
    }
    atomic_fetch_add(&h->refs, 1);
    wf_otlp_sender s = {enqueue, release, h};
    return wf_exporter_otlp_proto(out, &s, ep); /* calls release when it fails */
}

void wf_otlp_http_stats_get(wf_otlp_http *h, wf_otlp_http_stats *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    *out = h->st;
    out->queued = h->queued;
    pthread_mutex_unlock(&h->lock);
}

int wf_otlp_http_drain(wf_otlp_http *h, int64_t timeout_ms)
{
    if (h == NULL)
        return WF_EINVAL;
    int64_t until = timeout_ms < 0 ? 0 : now_ms() + timeout_ms;
    struct timespec ts;
    ts.tv_sec = (time_t)(until / 1000);
    ts.tv_nsec = (long)(until % 1000) * 1000000;
    int rc = 0;
    pthread_mutex_lock(&h->lock);
    while (h->queued > 0 && rc == 0) {
        if (timeout_ms < 0)
            pthread_cond_wait(&h->idle, &h->lock);
        else if (pthread_cond_timedwait(&h->idle, &h->lock, &ts) == ETIMEDOUT && h->queued > 0)
            rc = WF_ETIMEDOUT;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

void wf_otlp_http_free(wf_otlp_http *h)
{
    release(h);
}

int wf_exporter_otlp_http(wf_observer *out, const char *endpoint, const wf_exporter_params *ep)
{
    wf_otlp_http_params p;
    wf_otlp_http_params_init(&p);
    p.endpoint = endpoint;
    wf_otlp_http *h;
    int rc = wf_otlp_http_new(&h, &p);
    if (rc < 0) {
        if (ep && ep->out && !ep->keep_open)
            fclose(ep->out);
        return rc;
    }
    rc = wf_otlp_http_observer(h, out, ep);
    wf_otlp_http_free(h); /* the observer holds the only reference now */
    return rc;
}
