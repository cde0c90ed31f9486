/*
 * flat.c: wf batch's start events from flat JSON lines without a DOM.
 *
 * jansson builds a tree of every line (an object, its hash table, a string
 * per key and value, each allocated) before json.c walks it into an event:
 * ~7,500 instructions for a 35-byte line, 40% of a quick-start batch
 * (docs/PERFORMANCE.md, "wf batch without a DOM"). Most batch inputs are one
 * flat object of scalars, so this parses such a line with yajl's callbacks
 * (Debian libyajl-dev) straight into the event: one pass, no tree.
 *
 * It takes only what it can decide exactly as the general path
 * (wf__json_load + wf__json_start, json.c) would, and hands everything
 * else back (0), so results and error messages stay the general path's:
 *  - lines with a byte outside printable ASCII (UTF-8, control characters,
 *    tabs) or a \u escape of a surrogate: jansson's UTF-8 and escape rules
 *    are stricter than yajl's;
 *  - anything but one object whose members are null, booleans, numbers or
 *    strings (nested values, the {"type", "value"} envelope, $bytes and
 *    the like go to json.c);
 *  - anything but spaces after the object (yajl keeps a partial token
 *    there as input to come);
 *  - numbers that are not strict JSON or do not fit (jansson's "too big
 *    integer", real overflow);
 *  - an empty key, a key with NUL or over 255 bytes, a repeated key;
 *  - any failure to build the event (a schema refusal, a missing required
 *    field: the general path words the message).
 * tests/test_json.c (json::flat_lines_parse_as_the_general_path) checks
 * the two against each other over random and hand-written lines.
 */
#include "flat.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

/* ------------------------------------------------- yajl's memory */

/*
 * yajl allocates its handle, lexer and buffers for every parse; they come
 * from the calling thread's bump arena (the caller keeps it: one a thread),
 * emptied before the next line (a block's size is kept before it, for
 * realloc). Past the arena, or under AddressSanitizer, malloc.
 */
#if defined(__SANITIZE_ADDRESS__)
#define FLAT_ARENA 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FLAT_ARENA 0
#endif
#endif
#ifndef FLAT_ARENA
#define FLAT_ARENA 1
#endif

#define ARENA_BYTES 8192u

typedef struct arena {
    size_t used;
    _Alignas(16) unsigned char mem[ARENA_BYTES];
} arena;

static int in_arena(const arena *a, const void *p)
{
    return a && (const unsigned char *)p >= a->mem && (const unsigned char *)p < a->mem + ARENA_BYTES;
}

static void *ar_malloc(void *ctx, size_t n)
{
    arena *a = ctx;
    size_t need = ((n + 15) & ~(size_t)15) + 16;
    if (a && n < ARENA_BYTES && a->used + need <= ARENA_BYTES) {
        unsigned char *p = a->mem + a->used;
        a->used += need;
        *(size_t *)p = n;
        return p + 16;
    }
    return malloc(n);
}

static void ar_free(void *ctx, void *p)
{
    if (!in_arena(ctx, p))
        free(p);
}

static void *ar_realloc(void *ctx, void *p, size_t n)
{
    if (p == NULL)
        return ar_malloc(ctx, n);
    if (!in_arena(ctx, p))
        return realloc(p, n);
    size_t old = *(size_t *)((unsigned char *)p - 16);
    if (n <= old)
        return p;
    void *q = ar_malloc(ctx, n);
    if (q)
        memcpy(q, p, old);
    return q;
}

void cli_flat_arena_free(void *a)
{
    free(a);
}

/* ------------------------------------------------- the callbacks */

typedef struct flat {
    const wf_event_type *type;
    wf_event *ev;
    int depth; /* 0 before the object, 1 in it, 2 after it */
    int refuse; /* hand the line back */
    int nomem;
    char key[256];
    wf_value id;
    int has_id;
    yajl_handle h;
    size_t end; /* the offset just past the object's closing brace */
} flat;

static int set_field(flat *f, wf_value v)
{
    if (f->depth != 1 || f->key[0] == 0) {
        wf_value_release(v);
        f->refuse = 1;
        return 0;
    }
    if (strcmp(f->key, "id") == 0) {
        wf_value_release(f->id);
        f->id = wf_value_retain(v);
        f->has_id = 1;
    }
    size_t before = wf_event_field_count(f->ev);
    int rc = wf_event_set(f->ev, f->key, v);
    if (rc < 0 || wf_event_field_count(f->ev) == before) { /* refused, or a repeated key */
        f->nomem = rc == WF_ENOMEM;
        f->refuse = 1;
        return 0;
    }
    f->key[0] = 0;
    return 1;
}

static int cb_null(void *ctx)
{
    return set_field(ctx, wf_value_nil());
}

static int cb_boolean(void *ctx, int b)
{
    return set_field(ctx, wf_value_bool(b != 0));
}

/* Strict JSON number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? ; *real if . or e. */
static int number_ok(const char *s, size_t n, int *real)
{
    size_t i = 0;
    *real = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return 0;
    if (s[i] == '0')
        i++;
    else if (s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return 0;
    if (i < n && s[i] == '.') {
        *real = 1;
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        *real = 1;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i == n;
}

static int cb_number(void *ctx, const char *s, size_t n)
{
    flat *f = ctx;
    char buf[64];
    int real;
    if (n >= sizeof buf || !number_ok(s, n, &real)) {
        f->refuse = 1;
        return 0;
    }
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end = NULL;
    errno = 0;
    if (!real) {
        long long v = strtoll(buf, &end, 10);
        if (errno || end != buf + n) { /* past int64: jansson's "too big integer" */
            f->refuse = 1;
            return 0;
        }
        return set_field(f, wf_value_int(v));
    }
    double d = strtod(buf, &end);
    if (errno || end != buf + n) { /* out of range, or a locale's decimal point */
        f->refuse = 1;
        return 0;
    }
    return set_field(f, wf_value_double(d));
}

static int cb_string(void *ctx, const unsigned char *s, size_t n)
{
    flat *f = ctx;
    wf_value v;
    if (wf_value_string_n(&v, (const char *)s, n) < 0) {
        f->nomem = 1;
        f->refuse = 1;
        return 0;
    }
    return set_field(f, v);
}

static int cb_start_map(void *ctx)
{
    flat *f = ctx;
    if (f->depth != 0) { /* nested: json.c's */
        f->refuse = 1;
        return 0;
    }
    f->depth = 1;
    if (wf_event_new(&f->ev, f->type, 4) < 0) {
        f->nomem = 1;
        f->refuse = 1;
        return 0;
    }
    return 1;
}

static int cb_map_key(void *ctx, const unsigned char *k, size_t n)
{
    flat *f = ctx;
    if (f->depth != 1 || n == 0 || n >= sizeof f->key || memchr(k, 0, n)) {
        f->refuse = 1;
        return 0;
    }
    memcpy(f->key, k, n);
    f->key[n] = 0;
    return 1;
}

static int cb_end_map(void *ctx)
{
    flat *f = ctx;
    f->depth = 2;
    /* yajl takes a partial token after the value (an unterminated string) as more input to
     * come: what follows the brace is checked here instead (only spaces may) */
    f->end = yajl_get_bytes_consumed(f->h);
    return 1;
}

static int cb_start_array(void *ctx)
{
    ((flat *)ctx)->refuse = 1;
    return 0;
}

static const yajl_callbacks callbacks = {
    .yajl_null = cb_null,
    .yajl_boolean = cb_boolean,
    .yajl_number = cb_number,
    .yajl_string = cb_string,
    .yajl_start_map = cb_start_map,
    .yajl_map_key = cb_map_key,
    .yajl_end_map = cb_end_map,
    .yajl_start_array = cb_start_array,
};

/* 1 when the line has only printable ASCII and no \u escape of a surrogate (\uD800-\uDFFF). */
static int plain_ascii(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c < 0x20 || c >= 0x7f)
            return 0;
        if (c == '\\' && i + 3 < n && s[i + 1] == 'u' && (s[i + 2] == 'd' || s[i + 2] == 'D') &&
            strchr("89abcdefABCDEF", s[i + 3]) != NULL && s[i + 3] != 0)
            return 0;
        if (c == '\\') /* an escape: its second byte is not a backslash that starts one */
            i++;
    }
    return 1;
}

int cli_flat_start(const wf_event_type *type, const char *s, size_t n, void **arena_slot,
                   wf_event **out, wf_value *id, int *has_id)
{
    *out = NULL;
    *id = wf_value_nil();
    *has_id = 0;
    if (type == NULL || !plain_ascii((const unsigned char *)s, n))
        return 0;
    arena *a = NULL;
    if (FLAT_ARENA && arena_slot) {
        if (*arena_slot == NULL)
            *arena_slot = malloc(sizeof(arena));
        a = *arena_slot;
        if (a)
            a->used = 0;
    }
    yajl_alloc_funcs af = {ar_malloc, ar_realloc, ar_free, a};
    flat f;
    f.type = type;
    f.ev = NULL;
    f.depth = 0;
    f.refuse = 0;
    f.nomem = 0;
    f.key[0] = 0;
    f.id = wf_value_nil();
    f.has_id = 0;
    f.end = 0;
    yajl_handle h = f.h = yajl_alloc(&callbacks, &af, &f);
    if (h == NULL)
        return WF_ENOMEM;
    int ok = yajl_parse(h, (const unsigned char *)s, n) == yajl_status_ok &&
             yajl_complete_parse(h) == yajl_status_ok && !f.refuse && f.depth == 2;
    yajl_free(h);
    for (size_t i = f.end; ok && i < n; i++)
        ok = s[i] == ' ';
    if (ok && wf_event_check(f.ev) < 0) /* required fields, defaults: json.c words it */
        ok = 0;
    if (!ok) {
        wf_event_release(f.ev);
        wf_value_release(f.id);
        return f.nomem ? WF_ENOMEM : 0;
    }
    *out = f.ev;
    *id = f.id;
    *has_id = f.has_id;
    return 1;
}
