/*
 * common.c: what every exporter shares: kind names, the clock offset, the
 * exporter parameters, JSON string escaping, an interning pool and a hash
 * map.
 */
#include "export.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char *const kind_names[WF_OBS_KIND_COUNT] = {
    "run_start",   "run_end",    "step_start",      "step_end",     "event_emit",
    "event_route", "event_drop", "event_unhandled", "stream_write", "wait_suspend",
    "wait_resume", "retry",      "steal",           "park",         "unpark",
    "span_begin",  "span_attr",  "span_end",
};

const char *wf_obs_kind_name(wf_obs_kind kind)
{
    if ((unsigned)kind >= WF_OBS_KIND_COUNT)
        return "?";
    return kind_names[kind];
}

static int64_t ts_ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t clock_offset;
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

static void read_offset(void)
{
    /*
     * The realtime reading sits between two monotonic ones; of a few tries
     * keep the one with the narrowest bracket (the least preempted), and
     * take its midpoint.
     */
    int64_t best_gap = INT64_MAX;
    for (int i = 0; i < 5; i++) {
        int64_t m0 = ts_ns(CLOCK_MONOTONIC);
        int64_t r = ts_ns(CLOCK_REALTIME);
        int64_t m1 = ts_ns(CLOCK_MONOTONIC);
        if (m1 - m0 < best_gap) {
            best_gap = m1 - m0;
            clock_offset = r - (m0 + (m1 - m0) / 2);
        }
    }
}

int64_t wf_obs_clock_offset_ns(void)
{
    pthread_once(&clock_once, read_offset);
    return clock_offset;
}

void wf_exporter_params_init(wf_exporter_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------ JSON text */

static void buf_sink(void *ctx, const char *s, size_t n)
{
    wf__buf_append(ctx, s, n);
}

void wf__exp_json_chars(wf__buf *b, const char *s)
{
    if (s)
        wf__json_escape(s, strlen(s), buf_sink, b);
}

int wf__exp_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = wf__utf8_len(p, SIZE_MAX);
        if (n == 0)
            return 0;
        p += n;
    }
    return 1;
}

void wf__exp_utf8_fix(wf__buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = wf__utf8_len(p, SIZE_MAX);
        if (n == 0) {
            wf__buf_puts(b, "\xef\xbf\xbd"); /* U+FFFD */
            p++;
        } else {
            wf__buf_append(b, (const char *)p, n);
            p += n;
        }
    }
}

void wf__exp_json_str(wf__buf *b, const char *s)
{
    wf__buf_append(b, "\"", 1);
    wf__exp_json_chars(b, s);
    wf__buf_append(b, "\"", 1);
}

/* ------------------------------------------------------- output files */

int wf__exp_write(FILE *f, const wf__buf *b)
{
    if (f == NULL || b->oom || b->len == 0)
        return 0;
    return fwrite(b->data, 1, b->len, f) == b->len ? 0 : -1;
}

void wf__exp_close(FILE *f, int keep_open)
{
    if (f == NULL)
        return;
    if (keep_open)
        fflush(f);
    else
        fclose(f);
}

/* ------------------------------------------------------------- strings */

static uint64_t str_hash(const char *s)
{
    return wf__hash(s, strlen(s));
}

static int pool_grow(wf__exp_pool *p)
{
    size_t cap = p->cap ? p->cap * 2 : 64;
    char **slots = wf__calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < p->cap; i++) {
        char *s = p->slots[i];
        if (s == NULL)
            continue;
        size_t j = str_hash(s) & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = s;
    }
    wf__free_mem(p->slots);
    p->slots = slots;
    p->cap = cap;
    return 0;
}

const char *wf__exp_intern(wf__exp_pool *p, const char *s)
{
    if (s == NULL)
        return NULL;
    if (p->cap) {
        size_t j = str_hash(s) & (p->cap - 1);
        for (; p->slots[j]; j = (j + 1) & (p->cap - 1))
            if (strcmp(p->slots[j], s) == 0)
                return p->slots[j];
    }
    /* At most half full: probes stay short. */
    if ((p->n + 1) * 2 > p->cap && pool_grow(p) < 0)
        return NULL;
    char *copy = wf__strdup(s);
    if (copy == NULL)
        return NULL;
    size_t j = str_hash(s) & (p->cap - 1);
    while (p->slots[j])
        j = (j + 1) & (p->cap - 1);
    p->slots[j] = copy;
    p->n++;
    return copy;
}

void wf__exp_pool_free(wf__exp_pool *p)
{
    for (size_t i = 0; i < p->cap; i++)
        wf__free_mem(p->slots[i]);
    wf__free_mem(p->slots);
    memset(p, 0, sizeof *p);
}

/* ---------------------------------------------------------------- maps */

static size_t key_hash(const wf__exp_key *k)
{
    uint64_t h = wf__exp_mix(k->k[0]);
    h = wf__exp_mix(h ^ k->k[1]);
    h = wf__exp_mix(h ^ k->k[2]);
    h = wf__exp_mix(h ^ k->k[3]);
    return (size_t)h;
}

static int key_eq(const wf__exp_key *a, const wf__exp_key *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

void wf__exp_map_init(wf__exp_map *m, size_t vsize, size_t limit)
{
    memset(m, 0, sizeof *m);
    m->vsize = vsize;
    m->limit = limit;
}

void wf__exp_map_free(wf__exp_map *m)
{
    wf__free_mem(m->keys);
    wf__free_mem(m->vals);
    wf__free_mem(m->used);
    wf__exp_map_init(m, m->vsize, m->limit);
}

static size_t find_slot(const wf__exp_map *m, const wf__exp_key *key, int *found)
{
    size_t j = key_hash(key) & (m->cap - 1);
    for (; m->used[j]; j = (j + 1) & (m->cap - 1)) {
        if (key_eq(&m->keys[j], key)) {
            *found = 1;
            return j;
        }
    }
    *found = 0;
    return j;
}

void *wf__exp_map_get(const wf__exp_map *m, const wf__exp_key *key)
{
    if (m->cap == 0)
        return NULL;
    int found;
    size_t j = find_slot(m, key, &found);
    return found ? m->vals + j * m->vsize : NULL;
}

static int map_grow(wf__exp_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    wf__exp_key *keys = wf__malloc(cap * sizeof *keys);
    unsigned char *vals = wf__malloc(cap * m->vsize);
    uint8_t *used = wf__calloc(cap, 1);
    if (keys == NULL || vals == NULL || used == NULL) {
        wf__free_mem(keys);
        wf__free_mem(vals);
        wf__free_mem(used);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i])
            continue;
        size_t j = key_hash(&m->keys[i]) & (cap - 1);
        while (used[j])
            j = (j + 1) & (cap - 1);
        used[j] = 1;
        keys[j] = m->keys[i];
        memcpy(vals + j * m->vsize, m->vals + i * m->vsize, m->vsize);
    }
    wf__free_mem(m->keys);
    wf__free_mem(m->vals);
    wf__free_mem(m->used);
    m->keys = keys;
    m->vals = vals;
    m->used = used;
    m->cap = cap;
    return 0;
}

void *wf__exp_map_put(wf__exp_map *m, const wf__exp_key *key, int *created)
{
    int found = 0;
    size_t j = 0;
    if (created)
        *created = 0;
    if (m->cap) {
        j = find_slot(m, key, &found);
        if (found)
            return m->vals + j * m->vsize;
    }
    if (m->limit && m->n >= m->limit)
        return NULL;
    /* At most 3/4 full. */
    if ((m->n + 1) * 4 > m->cap * 3) {
        if (map_grow(m) < 0)
            return NULL;
        j = find_slot(m, key, &found);
    }
    m->used[j] = 1;
    m->keys[j] = *key;
    memset(m->vals + j * m->vsize, 0, m->vsize);
    m->n++;
    if (created)
        *created = 1;
    return m->vals + j * m->vsize;
}

void wf__exp_map_del(wf__exp_map *m, const wf__exp_key *key)
{
    if (m->cap == 0)
        return;
    int found;
    size_t i = find_slot(m, key, &found);
    if (!found)
        return;
    /*
     * Backward-shift: move later entries of the probe sequence into the hole
     * when their home slot does not lie (cyclically) between the hole and
     * them, so every entry stays reachable from its home without tombstones.
     */
    size_t mask = m->cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->used[j])
            break;
        size_t home = key_hash(&m->keys[j]) & mask;
        int between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (between)
            continue;
        m->keys[i] = m->keys[j];
        memcpy(m->vals + i * m->vsize, m->vals + j * m->vsize, m->vsize);
        i = j;
    }
    m->used[i] = 0;
    m->n--;
}

void *wf__exp_map_at(const wf__exp_map *m, size_t slot, wf__exp_key *key)
{
    if (slot >= m->cap || !m->used[slot])
        return NULL;
    if (key)
        *key = m->keys[slot];
    return m->vals + slot * m->vsize;
}

/* ---------------------------------------------------------------- misc */

const char *wf__exp_outcome(int32_t error)
{
    if (error == 0)
        return "ok";
    if (error == WF_SUSPEND)
        return "suspended";
    if (error == WF_PENDING)
        return "pending";
    return "failed";
}

const char *wf__exp_status_name(uint32_t status)
{
    switch (status) {
    case WF_RUN_RUNNING:
        return "running";
    case WF_RUN_DONE:
        return "done";
    case WF_RUN_FAILED:
        return "failed";
    case WF_RUN_TIMED_OUT:
        return "timed_out";
    case WF_RUN_CANCELLED:
        return "cancelled";
    default:
        return "unknown";
    }
}

uint64_t wf__exp_random64(void)
{
    uint64_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        return r;
    /* No entropy yet (early boot) or no syscall: unique enough for trace ids. */
    static _Atomic uint64_t counter;
    uint64_t x = (uint64_t)ts_ns(CLOCK_REALTIME) ^ ((uint64_t)ts_ns(CLOCK_MONOTONIC) << 17) ^
                 (uint64_t)(uintptr_t)&r ^ (atomic_fetch_add(&counter, 1) << 48);
    return wf__exp_mix(x);
}
