/*
 * codec_impl.h: the msgpack codec's internals, shared by codec.c, snapshot.c
 * and the executor's live snapshots. Never installed.
 *
 * Encoding goes through msgpack-c's packer. Decoding reads the bytes
 * directly with the cursor below: first wf__rd_check walks the structure
 * (every length against the bytes left, nesting, string keys), then the
 * readers take the items in order, still checking every bound and kind, and
 * build values and events straight from the bytes: no object tree, no
 * intermediate copies.
 */
#ifndef WF_CODEC_IMPL_H
#define WF_CODEC_IMPL_H

#include "internal.h"

#include <msgpack.h>
#include <string.h>

/* A msgpack_packer writer appending to a wf__buf. */
int wf__buf_write(void *data, const char *p, size_t n);
/* Hands b's bytes to the caller (*buf, *len) when rc is 0; frees them otherwise. */
int wf__buf_finish(wf__buf *b, int rc, void **buf, size_t *len);
int wf__pack_value(msgpack_packer *pk, wf_value v, int depth);
/* An event's fields as one map. */
int wf__pack_fields(msgpack_packer *pk, const wf_event *ev);

/* ---------------------------------------------------------------- reading */

/*
 * A cursor over msgpack bytes. A failed read leaves the cursor where it was
 * and returns -1 (the caller knows what it expected and says so through
 * wf__rd_fail); the first failure's reason and document offset stay in why
 * and at for the message.
 */
typedef struct wf__rd {
    const uint8_t *p;
    size_t len;      /* bytes at p */
    size_t off;      /* the next byte */
    size_t base;     /* where p[0] is in the document, for messages */
    const char *why; /* the first problem found (a static string), or NULL */
    size_t at;       /* its offset in the document */
} wf__rd;

static inline void wf__rd_init(wf__rd *r, const void *p, size_t len, size_t base)
{
    r->p = p;
    r->len = p ? len : 0;
    r->off = 0;
    r->base = base;
    r->why = NULL;
    r->at = 0;
}

/* Notes why the document is refused (the first reason wins): WF_EFORMAT. */
static inline int wf__rd_fail(wf__rd *r, const char *why)
{
    if (r->why == NULL) {
        r->why = why;
        r->at = r->base + r->off;
    }
    return WF_EFORMAT;
}

static inline size_t wf__rd_left(const wf__rd *r)
{
    return r->len - r->off;
}

static inline uint64_t wf__rd_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* The next byte, or -1 at the end. */
static inline int wf__rd_peek(const wf__rd *r)
{
    return r->off < r->len ? r->p[r->off] : -1;
}

/* 1 and consumed if the next item is nil, else 0. */
static inline int wf__rd_nil(wf__rd *r)
{
    if (wf__rd_peek(r) != 0xc0)
        return 0;
    r->off++;
    return 1;
}

/*
 * An integer, as msgpack-c reads one: *neg is 0 for a value >= 0 (*u holds
 * it, whatever type packed it), 1 for a negative one (*i holds it).
 */
static inline int wf__rd_integer(wf__rd *r, uint64_t *u, int64_t *i, int *neg)
{
    int c = wf__rd_peek(r);
    if (c < 0)
        return -1;
    if (c <= 0x7f) {
        *u = (uint64_t)c;
        *neg = 0;
        r->off++;
        return 0;
    }
    if (c >= 0xe0) {
        *i = (int8_t)c;
        *neg = 1;
        r->off++;
        return 0;
    }
    if (c < 0xcc || c > 0xd3)
        return -1;
    /* 0xcc..0xcf: uint 8..64, 0xd0..0xd3: int 8..64 */
    int sign = c >= 0xd0, w = 1 << (c - (sign ? 0xd0 : 0xcc));
    if (wf__rd_left(r) < 1 + (size_t)w)
        return -1;
    uint64_t v = wf__rd_be(r->p + r->off + 1, w);
    r->off += 1 + (size_t)w;
    if (sign) {
        int64_t s = w == 1 ? (int8_t)v : w == 2 ? (int16_t)v : w == 4 ? (int32_t)v : (int64_t)v;
        if (s < 0) {
            *i = s;
            *neg = 1;
            return 0;
        }
        v = (uint64_t)s;
    }
    *u = v;
    *neg = 0;
    return 0;
}

/* A non-negative integer below limit. */
static inline int wf__rd_u32(wf__rd *r, uint32_t limit, uint32_t *out)
{
    size_t at = r->off;
    uint64_t u;
    int64_t i;
    int neg;
    if (wf__rd_integer(r, &u, &i, &neg) < 0 || neg || u >= limit) {
        r->off = at;
        return -1;
    }
    *out = (uint32_t)u;
    return 0;
}

/* Any integer that fits an int64_t. */
static inline int wf__rd_i64(wf__rd *r, int64_t *out)
{
    size_t at = r->off;
    uint64_t u;
    int64_t i;
    int neg;
    if (wf__rd_integer(r, &u, &i, &neg) < 0 || (!neg && u > INT64_MAX)) {
        r->off = at;
        return -1;
    }
    *out = neg ? i : (int64_t)u;
    return 0;
}

/* A header of kind str (is_bin 0) or bin (1): *p and *n its body. */
static inline int wf__rd_strbin(wf__rd *r, int is_bin, const char **s, uint32_t *n)
{
    int c = wf__rd_peek(r);
    size_t head = 1;
    uint64_t len;
    if (!is_bin && c >= 0xa0 && c <= 0xbf) {
        len = (uint64_t)c & 0x1f;
    } else {
        int w;
        if (c == (is_bin ? 0xc4 : 0xd9))
            w = 1;
        else if (c == (is_bin ? 0xc5 : 0xda))
            w = 2;
        else if (c == (is_bin ? 0xc6 : 0xdb))
            w = 4;
        else
            return -1;
        if (wf__rd_left(r) < 1 + (size_t)w)
            return -1;
        len = wf__rd_be(r->p + r->off + 1, w);
        head += (size_t)w;
    }
    if (len > wf__rd_left(r) - head)
        return -1;
    *s = (const char *)r->p + r->off + head;
    *n = (uint32_t)len;
    r->off += head + (size_t)len;
    return 0;
}

static inline int wf__rd_str(wf__rd *r, const char **s, uint32_t *n)
{
    return wf__rd_strbin(r, 0, s, n);
}

/*
 * An array (is_map 0) or map (1) header. The count is checked against the
 * bytes left (every item takes one byte at least), so it bounds what a
 * caller allocates for it.
 */
static inline int wf__rd_container(wf__rd *r, int is_map, uint32_t *n)
{
    int c = wf__rd_peek(r);
    size_t head = 1;
    uint64_t items;
    if (c >= (is_map ? 0x80 : 0x90) && c <= (is_map ? 0x8f : 0x9f)) {
        items = (uint64_t)c & 0x0f;
    } else {
        int w;
        if (c == (is_map ? 0xde : 0xdc))
            w = 2;
        else if (c == (is_map ? 0xdf : 0xdd))
            w = 4;
        else
            return -1;
        if (wf__rd_left(r) < 1 + (size_t)w)
            return -1;
        items = wf__rd_be(r->p + r->off + 1, w);
        head += (size_t)w;
    }
    if (items * (is_map ? 2u : 1u) > wf__rd_left(r) - head)
        return -1;
    *n = (uint32_t)items;
    r->off += head;
    return 0;
}

static inline int wf__rd_array(wf__rd *r, uint32_t *n)
{
    return wf__rd_container(r, 0, n);
}

static inline int wf__rd_map(wf__rd *r, uint32_t *n)
{
    return wf__rd_container(r, 1, n);
}

/*
 * Walks one item (and everything inside it) checking every header and
 * length against the bytes left, nesting (WF_MSGPACK_MAX_DEPTH) and that
 * map keys are strings; extension types and 0xc1 are refused. On success
 * the cursor is just past the item. This is also how an item is skipped.
 */
int wf__rd_check(wf__rd *r);
/*
 * Levels a document wraps around values: a snapshot's map, its run map, the
 * task list, a task and its fields before a field's value. Values themselves
 * are held to WF_MSGPACK_MAX_DEPTH by their reader (wf__rd_value), which the
 * writer matches; whole-document readers allow this much more.
 */
#define WF__DOC_DEPTH 8
int wf__value_from_msgpack(const void *buf, size_t len, int doc_levels, wf_value *out, size_t *used,
                           char **message);
/*
 * Reads one value into *out (caller owns), or only checks it when out is
 * NULL: kinds, bounds, nesting and unique map keys, without allocating a
 * value. WF_EFORMAT (why in r) or WF_ENOMEM.
 */
int wf__rd_value(wf__rd *r, wf_value *out, int depth);
/*
 * Reads an event's fields (a map of unique names of 1 to 255 bytes without
 * NUL) as an event of type t (*out caller owned, unfrozen), or only checks
 * them when out is NULL.
 */
int wf__rd_fields(wf__rd *r, const wf_event_type *t, wf_event **out);
/* Where a map's entry is: its value is bytes [at, end) of the cursor (at 0: absent). */
typedef struct wf__rd_key {
    const char *name;
    size_t at, end;
    /*
     * Set by the caller: when this is the map's last entry, its value is not
     * walked here but taken to run to the end of the bytes; whoever reads it
     * reads it whole and checks that it ends there (a big run map is then
     * walked once, not twice).
     */
    int tail;
} wf__rd_key;
/*
 * Reads a map, noting where the value of each key in keys[0..n) is; every
 * value is checked (wf__rd_check) but a tail one, a key given twice is
 * refused.
 */
int wf__rd_keys(wf__rd *r, wf__rd_key *keys, uint32_t n);
/* "<what> at offset N: <why>" for r's failure (caller owns; NULL out of memory). */
char *wf__rd_message(const wf__rd *r, const char *what);

/*
 * executor/resume.c: checks the "run" map of a snapshot, doc[off .. off + len)
 * (it must span exactly that), against wf without building anything
 * (messages give offsets in doc). With build set it also builds what a
 * resume would, and frees it (the fuzzer holds the two to agreeing).
 */
int wf__run_check_doc(wf_workflow *wf, const void *doc, size_t off, size_t len, int build,
                      char **message);
/*
 * executor/cut.c: a live cut of a context's run, held (events retained) to
 * be encoded after the run has gone on. wf__ctx_cut: WF_ESTATE when no run
 * is in flight; *cut caller owns (wf__cut_free); *state (optional) the
 * store as it was at the cut (caller owns; nil when a writer held it then:
 * read it after). wf__cut_encode appends the run map to b, once.
 */
typedef struct wf__cut wf__cut;
int wf__ctx_cut(wf_ctx *ctx, wf__cut **cut, int64_t *pause_ns, wf_value *state);
int wf__cut_encode(wf__cut *cut, wf__buf *b);
void wf__cut_free(wf__cut *cut);
/* Makes room for n more bytes in b (0, or WF_ENOMEM with b->oom set). */
int wf__buf_reserve(wf__buf *b, size_t n);

#endif
