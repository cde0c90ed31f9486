/*
 * value.h: dynamic values for event fields and context state.
 *
 * A wf_value is a 16-byte tagged value passed by value. Its kinds map one to
 * one onto msgpack types: nil, bool, int (signed 64-bit), uint (unsigned
 * 64-bit), double, string (UTF-8, length-counted), bytes, array, map (string
 * keys, insertion order kept).
 *
 * Scalars (nil, bool, int, uint, double) carry their payload inline: building
 * one never allocates and never fails. String, bytes, array and map point to
 * an immutable heap block shared by reference count; copying the struct
 * copies a *borrowed* reference, wf_value_retain() makes an *owned* one.
 *
 * Ownership: a wf_value you own must be given up exactly once, either by
 * handing it to a call that "takes ownership" or by wf_value_release().
 * Releasing a scalar does nothing, so code can treat all kinds alike.
 *
 * Immutability and copy-on-write: a shared block is never changed. The
 * mutating calls (wf_value_array_push, wf_value_map_set, ...) change a block
 * in place only while the caller holds its only reference; otherwise they
 * first make a shallow copy and repoint the caller's value at it. So values
 * can be passed between threads freely, and a reader never sees a change.
 *
 * Threads: any thread may call any function here; a single wf_value variable
 * must not be mutated by two threads at once (the blocks it points to are
 * safe to share).
 */
#ifndef WF_VALUE_H
#define WF_VALUE_H

#include <wf/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The kind of a value. Values are stable ABI. */
typedef enum wf_kind {
    WF_NIL = 0,
    WF_BOOL = 1,
    WF_INT = 2,
    WF_UINT = 3,
    WF_DOUBLE = 4,
    WF_STRING = 5,
    WF_BYTES = 6,
    WF_ARRAY = 7,
    WF_MAP = 8
} wf_kind;

struct wf__obj;

/** A dynamic value. Read it through the accessors; the layout is stable ABI. */
typedef struct wf_value {
    uint32_t kind; /* a wf_kind */
    uint32_t reserved;
    union {
        int32_t b;
        int64_t i;
        uint64_t u;
        double d;
        struct wf__obj *obj; /* string, bytes, array, map */
    } as;
} wf_value;

/* ---- scalars: never allocate, never fail ---- */
WF_API wf_value wf_value_nil(void);
WF_API wf_value wf_value_bool(int b);
WF_API wf_value wf_value_int(int64_t i);
WF_API wf_value wf_value_uint(uint64_t u);
WF_API wf_value wf_value_double(double d);

/* ---- heap kinds: caller owns *out on success (release with wf_value_release) ---- */

/** A string copied from the NUL-terminated s (UTF-8 is not checked). WF_EINVAL if s is NULL. */
WF_API int wf_value_string(wf_value *out, const char *s);
/** A string copied from len bytes at s (may contain NUL bytes). */
WF_API int wf_value_string_n(wf_value *out, const char *s, size_t len);
/** Bytes copied from len bytes at p (p may be NULL when len is 0). */
WF_API int wf_value_bytes(wf_value *out, const void *p, size_t len);
/** An empty array with room for capacity items. */
WF_API int wf_value_array_new(wf_value *out, size_t capacity);
/** An empty map with room for capacity entries. */
WF_API int wf_value_map_new(wf_value *out, size_t capacity);

/** Makes an owned reference: returns v itself, its block's count raised. */
WF_API wf_value wf_value_retain(wf_value v);
/** Gives up an owned reference. Scalars: nothing happens. */
WF_API void wf_value_release(wf_value v);

/* ---- reading ---- */
WF_API wf_kind wf_value_kind(wf_value v);
WF_API int wf_value_is_nil(wf_value v);

/** WF_EKIND unless v is a bool. */
WF_API int wf_value_get_bool(wf_value v, int *out);
/** Accepts int, and uint up to INT64_MAX (WF_ERANGE above); WF_EKIND otherwise. */
WF_API int wf_value_get_int(wf_value v, int64_t *out);
/** Accepts uint, and int >= 0 (WF_ERANGE below); WF_EKIND otherwise. */
WF_API int wf_value_get_uint(wf_value v, uint64_t *out);
/** Accepts double, int and uint (converted); WF_EKIND otherwise. */
WF_API int wf_value_get_double(wf_value v, double *out);
/**
 * A string's bytes: *s is borrowed (valid while v is), NUL-terminated, and
 * *len (if not NULL) gets its length in bytes. WF_EKIND unless a string.
 */
WF_API int wf_value_get_string(wf_value v, const char **s, size_t *len);
/** A bytes value's content: *p borrowed like wf_value_get_string. */
WF_API int wf_value_get_bytes(wf_value v, const void **p, size_t *len);

/** Number of items (array), entries (map) or bytes (string, bytes); 0 for scalars. */
WF_API size_t wf_value_len(wf_value v);

/** Item i of an array; *out borrowed (valid while v is). WF_EKIND, WF_ERANGE. */
WF_API int wf_value_array_at(wf_value v, size_t i, wf_value *out);
/** The value under key in a map; *out borrowed. WF_EKIND, WF_ENOTFOUND. */
WF_API int wf_value_map_get(wf_value v, const char *key, wf_value *out);
/** Like wf_value_map_get with a length-counted key. */
WF_API int wf_value_map_get_n(wf_value v, const char *key, size_t klen, wf_value *out);
/**
 * Entry i of a map in insertion order: *key borrowed (NUL-terminated, valid
 * while v is), *klen optional, *val borrowed. WF_EKIND, WF_ERANGE.
 */
WF_API int wf_value_map_at(wf_value v, size_t i, const char **key, size_t *klen, wf_value *val);

/**
 * Deep equality. int and uint compare by numeric value (msgpack decodes every
 * non-negative integer as uint); every other kind only equals its own kind
 * (1 != 1.0). Doubles compare with ==, so NaN is unequal to itself.
 * Maps are equal when they hold the same keys with equal values, in any order.
 */
WF_API int wf_value_equal(wf_value a, wf_value b);

/* ---- building and copy-on-write changes (the value must be owned) ---- */

/** Appends item to the array *arr. Takes ownership of item. WF_EKIND, WF_ENOMEM. */
WF_API int wf_value_array_push(wf_value *arr, wf_value item);
/** Replaces item i of *arr. Takes ownership of item. WF_EKIND, WF_ERANGE, WF_ENOMEM. */
WF_API int wf_value_array_set(wf_value *arr, size_t i, wf_value item);
/**
 * Sets key to val in the map *map, replacing an existing entry in place
 * (keeping its position) or appending a new one. Takes ownership of val.
 * WF_EINVAL for a NULL key, WF_EKIND, WF_ENOMEM.
 */
WF_API int wf_value_map_set(wf_value *map, const char *key, wf_value val);
/** Like wf_value_map_set with a length-counted key. */
WF_API int wf_value_map_set_n(wf_value *map, const char *key, size_t klen, wf_value val);
/** Removes key from *map (later entries keep their order). WF_ENOTFOUND if absent. */
WF_API int wf_value_map_remove(wf_value *map, const char *key);

/**
 * Writes a JSON-like rendering of v into buf (at most cap bytes, always
 * NUL-terminated when cap > 0) and returns the length the full rendering
 * needs, like snprintf. Bytes render as base64 strings, non-finite doubles as
 * null, a string's bytes that are not well-formed UTF-8 as U+FFFD (so the
 * text is always valid JSON). For logs and tests.
 */
WF_API size_t wf_value_format(wf_value v, char *buf, size_t cap);

/*
 * Inline scalars. The scalar constructors, wf_value_kind and the integer and
 * double readers are also defined inline here, so that a step building and
 * reading scalars makes no call into the library for them (a call through
 * the shared library's PLT costs a step of the chain benchmark about 5% of
 * its instructions). They behave exactly as the exported functions above,
 * which stay (for bindings, and for taking their address: the macros are
 * function-like, so `&wf_value_int` and `(wf_value_int)(1)` name the
 * function); a reader's unusual case (a NULL output, another kind, a range
 * error) calls it. Define WF_NO_INLINE before including wf.h for the calls.
 */
#if !defined(WF_NO_INLINE) && !defined(WF__VALUE_IMPL)
static inline wf_value wf__value_scalar(uint32_t kind, uint64_t bits)
{
    wf_value v;
    v.kind = kind;
    v.reserved = 0;
    v.as.u = bits;
    return v;
}
static inline wf_value wf__value_int(int64_t i)
{
    return wf__value_scalar(WF_INT, (uint64_t)i);
}
static inline wf_value wf__value_uint(uint64_t u)
{
    return wf__value_scalar(WF_UINT, u);
}
static inline wf_value wf__value_bool(int b)
{
    return wf__value_scalar(WF_BOOL, b != 0);
}
static inline wf_value wf__value_double(double d)
{
    wf_value v = wf__value_scalar(WF_DOUBLE, 0);
    v.as.d = d;
    return v;
}
static inline wf_kind wf__value_kind(wf_value v)
{
    return (wf_kind)v.kind;
}
static inline int wf__value_is_nil(wf_value v)
{
    return v.kind == WF_NIL;
}
static inline int wf__value_get_int(wf_value v, int64_t *out)
{
    if (v.kind == WF_INT && out != 0) {
        *out = v.as.i;
        return 0;
    }
    return (wf_value_get_int)(v, out);
}
static inline int wf__value_get_uint(wf_value v, uint64_t *out)
{
    if (v.kind == WF_UINT && out != 0) {
        *out = v.as.u;
        return 0;
    }
    return (wf_value_get_uint)(v, out);
}
static inline int wf__value_get_double(wf_value v, double *out)
{
    if (v.kind == WF_DOUBLE && out != 0) {
        *out = v.as.d;
        return 0;
    }
    return (wf_value_get_double)(v, out);
}
#define wf_value_nil()              wf__value_scalar(WF_NIL, 0)
#define wf_value_bool(b)            wf__value_bool(b)
#define wf_value_int(i)             wf__value_int(i)
#define wf_value_uint(u)            wf__value_uint(u)
#define wf_value_double(d)          wf__value_double(d)
#define wf_value_kind(v)            wf__value_kind(v)
#define wf_value_is_nil(v)          wf__value_is_nil(v)
#define wf_value_get_int(v, out)    wf__value_get_int(v, out)
#define wf_value_get_uint(v, out)   wf__value_get_uint(v, out)
#define wf_value_get_double(v, out) wf__value_get_double(v, out)
#endif

#ifdef __cplusplus
}
#endif

#endif
