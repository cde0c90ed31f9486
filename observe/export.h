/*
 * export.h: helpers shared by the exporters of observe/ (never installed).
 *
 * The exporters run on the executor's exporter thread, one record at a time
 * (observe.h), so none of these structures has a lock of its own; the one
 * structure that another thread reads (wf_execution) brings its own mutex.
 * Everything allocates through wf__malloc and reports a failure to its
 * caller, which drops what it could not store and counts it: an exporter
 * never crashes and never stops the executor because memory ran out.
 */
#ifndef WF_OBSERVE_EXPORT_H
#define WF_OBSERVE_EXPORT_H

#include "internal.h"

#include <stdio.h>
#include <wf/observe.h>

/* ------------------------------------------------------------ JSON text */

/*
 * Appends s as a JSON string, quotes included. NULL gives "". Control
 * characters are escaped and bytes that are not valid UTF-8 become U+FFFD:
 * step and event names come from users, and one bad byte must not make the
 * whole file unreadable for a strict parser.
 */
void wf__exp_json_str(wf__buf *b, const char *s);
/* The same without the surrounding quotes (to build a string piecewise). */
void wf__exp_json_chars(wf__buf *b, const char *s);

/* 1 if s is valid UTF-8. */
int wf__exp_utf8_valid(const char *s);
/* Appends s with every byte that is not valid UTF-8 replaced by U+FFFD. */
void wf__exp_utf8_fix(wf__buf *b, const char *s);

/* ------------------------------------------------------- output files */

/* Writes b's bytes to f (nothing for an empty or oom buffer); 0 or -1. */
int wf__exp_write(FILE *f, const wf__buf *b);
/* Closes f unless keep_open; flushes it either way. */
void wf__exp_close(FILE *f, int keep_open);

/* ------------------------------------------------------------- strings */

/*
 * An interning pool: one stable copy per distinct string, so records'
 * borrowed strings can be kept, compared by pointer and used as map keys.
 * wf__exp_intern(NULL) is NULL; NULL is also returned when memory ran out.
 */
typedef struct wf__exp_pool {
    char **slots; /* open addressing; NULL: free */
    size_t cap, n;
} wf__exp_pool;

const char *wf__exp_intern(wf__exp_pool *p, const char *s);
void wf__exp_pool_free(wf__exp_pool *p);

/* ---------------------------------------------------------------- maps */

/*
 * A hash map from a key of four 64-bit words to a fixed-size value (zeroed
 * on creation). Open addressing with backward-shift deletion, so no
 * tombstones pile up in a long-lived exporter. Values move when the map
 * grows or an entry is deleted: do not keep pointers to them across calls.
 */
typedef struct wf__exp_key {
    uint64_t k[4];
} wf__exp_key;

typedef struct wf__exp_map {
    wf__exp_key *keys;
    unsigned char *vals;
    uint8_t *used;
    size_t cap, n, vsize;
    size_t limit; /* entries at most (0: no limit) */
} wf__exp_map;

void wf__exp_map_init(wf__exp_map *m, size_t vsize, size_t limit);
void wf__exp_map_free(wf__exp_map *m);
/* The value of key, or NULL. */
void *wf__exp_map_get(const wf__exp_map *m, const wf__exp_key *key);
/*
 * The value of key, created (zeroed, *created = 1) if absent; NULL when
 * memory ran out or the map holds limit entries.
 */
void *wf__exp_map_put(wf__exp_map *m, const wf__exp_key *key, int *created);
void wf__exp_map_del(wf__exp_map *m, const wf__exp_key *key);
/* Iteration: slots 0 .. cap-1; wf__exp_map_at gives NULL for a free slot. */
void *wf__exp_map_at(const wf__exp_map *m, size_t slot, wf__exp_key *key);

static inline wf__exp_key wf__exp_key2(uint64_t a, uint64_t b)
{
    wf__exp_key k = {{a, b, 0, 0}};
    return k;
}

/* A 64-bit mix (splitmix64's finaliser): ids and hashes. */
static inline uint64_t wf__exp_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---------------------------------------------------------------- misc */

/* "ok", "failed", "suspended", "pending" for a STEP_END's error. */
const char *wf__exp_outcome(int32_t error);
/* "running", "done", "failed", "timed_out", "cancelled" or "unknown". */
const char *wf__exp_status_name(uint32_t status);
/* Random 64 bits for ids (getrandom, else a mix of clocks and addresses). */
uint64_t wf__exp_random64(void);

#endif
