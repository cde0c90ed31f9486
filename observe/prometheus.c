/*
 * prometheus.c: the Prometheus text exposition format (version 0.0.4).
 *
 * Counters and histograms are kept per label set in one map whose keys are
 * (family, interned label values): interning makes equal strings the same
 * pointer, so a record costs one hash lookup and no string comparison. The
 * exposition is rendered at each flush and at removal, sorted by family and
 * label values (stable output, easy to diff). Where it goes:
 *  - params->path: a temporary file beside it ("PATH.XXXXXX", which a
 *    textfile collector ignores as it does not end in .prom), then renamed
 *    over PATH, so a reader (node_exporter) sees the whole previous
 *    exposition or the whole new one, never a part;
 *  - params->out: written over the previous one (rewind, write, truncate;
 *    a reader can catch it half-written: prefer path); a stream that cannot
 *    seek (a pipe) gets one exposition after the other;
 *  - always: the latest exposition stays in memory for
 *    wf_exporter_prometheus_text, published under a mutex (the one thing
 *    another thread reads).
 */
#include "export.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Label sets at most (beyond: dropped and counted in wf_exporter_lost_total). */
#define MAX_SERIES 65536

enum family {
    F_RUNS_STARTED,
    F_RUNS_ENDED,
    F_STEP_INVOCATIONS,
    F_STEP_DURATION,
    F_EVENTS_ROUTED,
    F_EVENTS_DROPPED,
    F_EVENTS_UNHANDLED,
    F_STREAM_DROPPED,
    F_QUEUE_DEPTH,
    F_RETRIES,
    F_STEALS,
    F_PARKS,
    F_LOST,
    F_COUNT
};

typedef struct family_def {
    const char *name, *type, *help;
    const char *labels[3];
} family_def;

static const family_def families[F_COUNT] = {
    {"wf_runs_started_total", "counter", "Runs started.", {"workflow"}},
    {"wf_runs_ended_total",
     "counter",
     "Runs ended, by status (done, failed, timed_out, cancelled).",
     {"workflow", "status"}},
    {"wf_step_invocations_total",
     "counter",
     "Step invocations ended, by outcome (ok, failed, suspended, pending).",
     {"workflow", "step", "outcome"}},
    {"wf_step_duration_seconds",
     "histogram",
     "Duration of step invocations.",
     {"workflow", "step"}},
    {"wf_events_routed_total",
     "counter",
     "Events queued for a step.",
     {"workflow", "event_type", "step"}},
    {"wf_events_dropped_total",
     "counter",
     "Events dropped because their run had ended.",
     {"workflow", "event_type"}},
    {"wf_events_unhandled_total",
     "counter",
     "Events that no step accepts.",
     {"workflow", "event_type"}},
    {"wf_stream_events_dropped_total",
     "counter",
     "Events not written to a full run stream.",
     {"workflow"}},
    {"wf_step_queue_depth",
     "gauge",
     "Events waiting for a step after the last one routed to it (in its run).",
     {"workflow", "step"}},
    {"wf_retries_total",
     "counter",
     "Failed step invocations that will run again.",
     {"workflow", "step"}},
    {"wf_steals_total", "counter", "Steals of tasks between workers.", {NULL}},
    {"wf_parks_total", "counter", "Times a worker found nothing to do and slept.", {NULL}},
    {"wf_exporter_lost_total",
     "counter",
     "Updates this exporter could not store (out of memory or too many label sets).",
     {NULL}},
};

/* Bucket upper bounds: 1 us .. 10 s, 1-2.5-5 per decade. */
#define NB 22
static const uint64_t bucket_ns[NB] = {
    1000,      2500,      5000,       10000,      25000,       50000,        100000,   250000,
    500000,    1000000,   2500000,    5000000,    10000000,    25000000,     50000000, 100000000,
    250000000, 500000000, 1000000000, 2500000000, 5000000000u, 10000000000u,
};
static const char *const bucket_le[NB] = {
    "1e-06",  "2.5e-06", "5e-06",  "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025",
    "0.0005", "0.001",   "0.0025", "0.005", "0.01",    "0.025", "0.05",   "0.1",
    "0.25",   "0.5",     "1",      "2.5",   "5",       "10",
};

typedef struct series {
    uint64_t count;       /* counters; a histogram's observations */
    uint64_t sum_ns;      /* histograms */
    int64_t gauge;        /* gauges */
    uint64_t buckets[NB]; /* histograms, not cumulative */
} series;

typedef struct prom {
    FILE *out;
    int keep_open;
    int seekable;
    char *path; /* written atomically (NULL: none) */
    uint64_t lost;
    wf__exp_pool names;
    wf__exp_map series; /* (family, label values...) -> series */
    wf__buf text;
    pthread_mutex_t lock; /* guards published */
    char *published;      /* the latest complete exposition (wf_exporter_prometheus_text) */
} prom;

/* The series of family f with labels a, b, c (interned). NULL when it cannot be stored. */
static series *get(prom *p, enum family f, const char *a, const char *b, const char *c)
{
    wf__exp_key k = {{f, (uint64_t)(uintptr_t)a, (uint64_t)(uintptr_t)b, (uint64_t)(uintptr_t)c}};
    series *s = wf__exp_map_put(&p->series, &k, NULL);
    if (s == NULL)
        p->lost++;
    return s;
}

/*
 * Interned label values. A value that cannot be stored makes the update
 * fail (rather than be counted under the empty label value).
 */
static const char empty[] = "";

static int label(prom *p, const char *s, const char **out)
{
    if (s == NULL || *s == 0) { /* one series for absent and empty values */
        *out = empty;
        return 0;
    }
    if (wf__exp_utf8_valid(s)) {
        *out = wf__exp_intern(&p->names, s);
    } else {
        /*
         * The exposition is UTF-8: repair the value before interning it, so
         * two values that repair the same are one series, not a duplicate.
         */
        wf__buf fixed;
        wf__buf_init(&fixed);
        wf__exp_utf8_fix(&fixed, s);
        *out = fixed.oom ? NULL : wf__exp_intern(&p->names, fixed.data);
        wf__buf_free(&fixed);
    }
    if (*out == NULL) {
        p->lost++;
        return -1;
    }
    return 0;
}

static void count(prom *p, enum family f, const char *a, const char *b, const char *c)
{
    series *s = get(p, f, a, b, c);
    if (s)
        s->count++;
}

static void prom_record(const wf_obs_record *r, void *user)
{
    prom *p = user;
    const char *wf, *step, *type;
    if (r->kind == WF_OBS_STEAL) {
        count(p, F_STEALS, NULL, NULL, NULL);
        return;
    }
    if (r->kind == WF_OBS_PARK) {
        count(p, F_PARKS, NULL, NULL, NULL);
        return;
    }
    if (label(p, r->workflow, &wf) < 0 || label(p, r->step, &step) < 0 ||
        label(p, r->event_type, &type) < 0)
        return;
    series *s;
    switch (r->kind) {
    case WF_OBS_RUN_START:
        count(p, F_RUNS_STARTED, wf, NULL, NULL);
        break;
    case WF_OBS_RUN_END:
        count(p, F_RUNS_ENDED, wf, wf__exp_status_name(r->status), NULL);
        break;
    case WF_OBS_STEP_END:
        count(p, F_STEP_INVOCATIONS, wf, step, wf__exp_outcome(r->error));
        if ((s = get(p, F_STEP_DURATION, wf, step, NULL)) != NULL) {
            uint64_t d = r->dur_ns > 0 ? (uint64_t)r->dur_ns : 0;
            s->count++;
            s->sum_ns += d;
            for (int i = 0; i < NB; i++) {
                if (d <= bucket_ns[i]) {
                    s->buckets[i]++;
                    break;
                }
            }
        }
        break;
    case WF_OBS_EVENT_ROUTE:
        count(p, F_EVENTS_ROUTED, wf, type, step);
        if ((s = get(p, F_QUEUE_DEPTH, wf, step, NULL)) != NULL)
            s->gauge = r->value;
        break;
    case WF_OBS_EVENT_DROP:
        count(p, F_EVENTS_DROPPED, wf, type, NULL);
        break;
    case WF_OBS_EVENT_UNHANDLED:
        count(p, F_EVENTS_UNHANDLED, wf, type, NULL);
        break;
    case WF_OBS_STREAM_WRITE:
        if (r->value == 1)
            count(p, F_STREAM_DROPPED, wf, NULL, NULL);
        break;
    case WF_OBS_RETRY:
        count(p, F_RETRIES, wf, step, NULL);
        break;
    default:
        break;
    }
}

/* ---------------------------------------------------------- rendering */

/* A label value: backslash, double quote and line feed are escaped. */
static void label_value(wf__buf *b, const char *s)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
        if (esc) {
            wf__buf_append(b, run, (size_t)(s - run));
            wf__buf_puts(b, esc);
            run = s + 1;
        }
    }
    wf__buf_append(b, run, (size_t)(s - run));
}

/* name{l1="v1",...[,le="x"]} */
static void sample_name(wf__buf *b, const char *name, const char *suffix, const family_def *d,
                        const wf__exp_key *k, const char *le)
{
    wf__buf_puts(b, name);
    wf__buf_puts(b, suffix);
    int n = 0;
    for (int i = 0; i < 3 && d->labels[i]; i++) {
        wf__buf_puts(b, n++ ? "," : "{");
        wf__buf_puts(b, d->labels[i]);
        wf__buf_puts(b, "=\"");
        label_value(b, (const char *)(uintptr_t)k->k[i + 1]);
        wf__buf_puts(b, "\"");
    }
    if (le) {
        wf__buf_puts(b, n++ ? "," : "{");
        wf__buf_printf(b, "le=\"%s\"", le);
    }
    if (n)
        wf__buf_puts(b, "}");
}

typedef struct row {
    wf__exp_key key;
    const series *s;
} row;

static int cmp_row(const void *x, const void *y)
{
    const row *a = x, *b = y;
    if (a->key.k[0] != b->key.k[0])
        return a->key.k[0] < b->key.k[0] ? -1 : 1;
    for (int i = 1; i < 4; i++) {
        const char *sa = (const char *)(uintptr_t)a->key.k[i];
        const char *sb = (const char *)(uintptr_t)b->key.k[i];
        int c = strcmp(sa ? sa : "", sb ? sb : "");
        if (c)
            return c;
    }
    return 0;
}

static void render(prom *p, wf__buf *b)
{
    row *rows = p->series.n ? wf__malloc(p->series.n * sizeof *rows) : NULL;
    size_t n = 0;
    if (rows) {
        for (size_t i = 0; i < p->series.cap; i++) {
            const series *s = wf__exp_map_at(&p->series, i, &rows[n].key);
            if (s)
                rows[n++].s = s;
        }
        qsort(rows, n, sizeof *rows, cmp_row);
    } else if (p->series.n) {
        p->lost++; /* no room to sort: this exposition has only the totals */
    }
    size_t at = 0;
    for (int f = 0; f < F_COUNT; f++) {
        const family_def *d = &families[f];
        wf__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name, d->type);
        if (d->labels[0] == NULL) {
            /* A plain counter always has its one sample, 0 included. */
            wf__exp_key k = {{(uint64_t)f, 0, 0, 0}};
            const series *s = wf__exp_map_get(&p->series, &k);
            uint64_t v = s ? s->count : 0;
            if (f == F_LOST)
                v += p->lost;
            wf__buf_printf(b, "%s %" PRIu64 "\n", d->name, v);
        }
        for (; at < n && rows[at].key.k[0] == (uint64_t)f; at++) {
            const wf__exp_key *k = &rows[at].key;
            const series *s = rows[at].s;
            if (d->labels[0] == NULL)
                continue;
            if (f == F_STEP_DURATION) {
                uint64_t cum = 0;
                for (int i = 0; i < NB; i++) {
                    cum += s->buckets[i];
                    sample_name(b, d->name, "_bucket", d, k, bucket_le[i]);
                    wf__buf_printf(b, " %" PRIu64 "\n", cum);
                }
                sample_name(b, d->name, "_bucket", d, k, "+Inf");
                wf__buf_printf(b, " %" PRIu64 "\n", s->count);
                sample_name(b, d->name, "_sum", d, k, NULL);
                wf__buf_printf(b, " %" PRIu64 ".%09" PRIu64 "\n", s->sum_ns / 1000000000,
                               s->sum_ns % 1000000000);
                sample_name(b, d->name, "_count", d, k, NULL);
                wf__buf_printf(b, " %" PRIu64 "\n", s->count);
            } else {
                sample_name(b, d->name, "", d, k, NULL);
                if (f == F_QUEUE_DEPTH)
                    wf__buf_printf(b, " %" PRId64 "\n", s->gauge);
                else
                    wf__buf_printf(b, " %" PRIu64 "\n", s->count);
            }
        }
    }
    wf__free_mem(rows);
}

/* Writes b to p->path through a temporary file and a rename: 0 or -1. */
static int write_atomic(const prom *p, const wf__buf *b)
{
    size_t n = strlen(p->path);
    char *tmp = wf__malloc(n + 8);
    if (tmp == NULL)
        return -1;
    memcpy(tmp, p->path, n);
    memcpy(tmp + n, ".XXXXXX", 8);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        wf__free_mem(tmp);
        return -1;
    }
    int ok = fchmod(fd, 0644) == 0; /* mkstemp's 0600 would hide it from a collector's user */
    for (size_t off = 0; ok && off < b->len;) {
        ssize_t k = write(fd, b->data + off, b->len - off);
        if (k < 0)
            ok = 0;
        else
            off += (size_t)k;
    }
    if (close(fd) != 0)
        ok = 0;
    if (ok && rename(tmp, p->path) != 0)
        ok = 0;
    if (!ok)
        unlink(tmp);
    wf__free_mem(tmp);
    return ok ? 0 : -1;
}

/* Makes b's text the one wf_exporter_prometheus_text hands out. */
static void publish(prom *p, const wf__buf *b)
{
    char *copy = wf__strndup(b->data ? b->data : "", b->len);
    if (copy == NULL) {
        p->lost++;
        return;
    }
    pthread_mutex_lock(&p->lock);
    char *old = p->published;
    p->published = copy;
    pthread_mutex_unlock(&p->lock);
    wf__free_mem(old);
}

static void prom_flush(void *user)
{
    prom *p = user;
    wf__buf *b = &p->text;
    b->len = 0;
    b->oom = 0;
    render(p, b);
    if (b->oom) {
        /* A partial exposition would lie: keep the previous one. */
        p->lost++;
        return;
    }
    publish(p, b);
    if (p->path && write_atomic(p, b) < 0)
        p->lost++;
    if (p->out == NULL)
        return;
    if (p->seekable && fseek(p->out, 0, SEEK_SET) != 0)
        p->seekable = 0;
    if (wf__exp_write(p->out, b) < 0) {
        p->lost++;
        return;
    }
    fflush(p->out);
    if (p->seekable && ftruncate(fileno(p->out), (off_t)b->len) != 0)
        p->lost++;
}

static void prom_free(void *user)
{
    prom *p = user;
    prom_flush(p);
    wf__exp_close(p->out, p->keep_open);
    wf__exp_pool_free(&p->names);
    wf__exp_map_free(&p->series);
    wf__buf_free(&p->text);
    pthread_mutex_destroy(&p->lock);
    wf__free_mem(p->published);
    wf__free_mem(p->path);
    wf__free_mem(p);
}

int wf_exporter_prometheus(wf_observer *out, const wf_exporter_params *params)
{
    FILE *f = params ? params->out : NULL;
    int keep = params ? params->keep_open : 0;
    const char *path = params ? params->path : NULL;
    if (out == NULL || (params && f == NULL && (path == NULL || path[0] == 0))) {
        wf__exp_close(f, keep); /* taken over even when refused */
        return WF_EINVAL;
    }
    memset(out, 0, sizeof *out);
    prom *p = wf__calloc(1, sizeof *p);
    if (p == NULL || (path && (p->path = wf__strdup(path)) == NULL)) {
        wf__free_mem(p);
        wf__exp_close(f, keep);
        return WF_ENOMEM;
    }
    p->out = f;
    p->keep_open = keep;
    p->seekable = f && ftell(f) >= 0;
    pthread_mutex_init(&p->lock, NULL);
    wf__exp_map_init(&p->series, sizeof(series), MAX_SERIES);
    wf__buf_init(&p->text);
    /* Nothing recorded yet is an exposition too (every family at 0). */
    render(p, &p->text);
    if (!p->text.oom)
        p->published = wf__strndup(p->text.data, p->text.len);
    if (p->published == NULL) {
        p->out = NULL;
        wf__free_mem(p->path);
        p->path = NULL;
        prom_free(p);
        wf__exp_close(f, keep);
        return WF_ENOMEM;
    }
    out->record = prom_record;
    out->flush = prom_flush;
    out->user_free = prom_free;
    out->user = p;
    out->kinds = WF_OBS_ALL & ~(WF_OBS_BIT(WF_OBS_STEP_START) | WF_OBS_BIT(WF_OBS_EVENT_EMIT) |
                                WF_OBS_BIT(WF_OBS_WAIT_SUSPEND) | WF_OBS_BIT(WF_OBS_WAIT_RESUME) |
                                WF_OBS_BIT(WF_OBS_UNPARK));
    return 0;
}

int wf_exporter_prometheus_text(const wf_observer *obs, char **text)
{
    if (text)
        *text = NULL;
    if (obs == NULL || text == NULL || obs->record != prom_record || obs->user == NULL)
        return WF_EINVAL;
    prom *p = obs->user;
    pthread_mutex_lock(&p->lock);
    *text = wf__strdup(p->published);
    pthread_mutex_unlock(&p->lock);
    return *text ? 0 : WF_ENOMEM;
}
