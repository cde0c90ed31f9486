/*
 * value.c: dynamic values.
 *
 * Blocks: a string or bytes block holds its length and the bytes followed by
 * a NUL; an array holds its items inline; a map holds its entries (key block,
 * value) inline in insertion order, plus, from 9 entries on, an open
 * addressing index of entry positions (linear probing, FNV-1a hashes cached
 * per entry) so lookups in large maps (a 10,000-key store) stay O(1).
 * Keys are string blocks, so copying a map for copy-on-write only retains.
 */
#define WF__VALUE_IMPL /* the exported scalar functions are defined here */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct str_block {
    wf__obj h;
    uint32_t hash; /* FNV-1a, computed when used as a key */
    uint32_t pad;
    size_t len;
    char data[];
} str_block;

typedef struct arr_block {
    wf__obj h;
    size_t len;
    size_t cap;
    wf_value items[];
} arr_block;

typedef struct map_entry {
    str_block *key;
    wf_value val;
} map_entry;

#define INDEX_FROM 9 /* maps this large get a hash index */
#define EMPTY_SLOT UINT32_MAX

typedef struct map_block {
    wf__obj h;
    uint32_t len;
    uint32_t cap;
    uint32_t *index; /* NULL, or index_cap slots of entry positions */
    uint32_t index_cap;
    uint32_t pad;
    map_entry e[];
} map_block;

static inline int is_heap(wf_value v)
{
    return v.kind >= WF_STRING && v.kind <= WF_MAP && v.as.obj != NULL;
}

static const char *kind_name(wf_kind k)
{
    static const char *const names[] = {"nil",      "a bool", "an int",   "a uint", "a double",
                                        "a string", "bytes",  "an array", "a map"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "of an unknown kind";
}

/* WF_EKIND, with the message naming what was found and what was asked for. */
static int kind_error(const char *fn, wf_kind found, const char *want)
{
    return wf__set_error(WF_EKIND, "%s: the value is %s, not %s", fn, kind_name(found), want);
}

/* ----------------------------------------------------------------- scalars */

wf_value wf_value_nil(void)
{
    wf_value v;
    memset(&v, 0, sizeof v);
    return v;
}

wf_value wf_value_bool(int b)
{
    wf_value v = wf_value_nil();
    v.kind = WF_BOOL;
    v.as.b = b != 0;
    return v;
}

wf_value wf_value_int(int64_t i)
{
    wf_value v = wf_value_nil();
    v.kind = WF_INT;
    v.as.i = i;
    return v;
}

wf_value wf_value_uint(uint64_t u)
{
    wf_value v = wf_value_nil();
    v.kind = WF_UINT;
    v.as.u = u;
    return v;
}

wf_value wf_value_double(double d)
{
    wf_value v = wf_value_nil();
    v.kind = WF_DOUBLE;
    v.as.d = d;
    return v;
}

/* ------------------------------------------------------------- heap kinds */

static str_block *str_new(uint32_t kind, const void *p, size_t n)
{
    if (n > SIZE_MAX - sizeof(str_block) - 1)
        return NULL;
    str_block *s = wf__malloc(sizeof *s + n + 1);
    if (s == NULL)
        return NULL;
    atomic_init(&s->h.refs, 1);
    s->h.kind = kind;
    s->hash = 0;
    s->pad = 0;
    s->len = n;
    if (n)
        memcpy(s->data, p, n);
    s->data[n] = 0;
    return s;
}

static wf_value from_obj(uint32_t kind, void *obj)
{
    wf_value v = wf_value_nil();
    v.kind = kind;
    v.as.obj = obj;
    return v;
}

int wf_value_string_n(wf_value *out, const char *s, size_t len)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = wf_value_nil();
    if (s == NULL && len > 0)
        return WF_EINVAL;
    str_block *b = str_new(WF_STRING, s, len);
    if (b == NULL)
        return WF_ENOMEM;
    *out = from_obj(WF_STRING, b);
    return 0;
}

int wf_value_string(wf_value *out, const char *s)
{
    if (s == NULL) {
        if (out)
            *out = wf_value_nil();
        return WF_EINVAL;
    }
    return wf_value_string_n(out, s, strlen(s));
}

int wf_value_bytes(wf_value *out, const void *p, size_t len)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = wf_value_nil();
    if (p == NULL && len > 0)
        return WF_EINVAL;
    str_block *b = str_new(WF_BYTES, p, len);
    if (b == NULL)
        return WF_ENOMEM;
    *out = from_obj(WF_BYTES, b);
    return 0;
}

static arr_block *arr_alloc(size_t cap)
{
    if (cap == 0)
        cap = 4;
    if (cap > (SIZE_MAX - sizeof(arr_block)) / sizeof(wf_value))
        return NULL;
    arr_block *a = wf__malloc(sizeof *a + cap * sizeof(wf_value));
    if (a == NULL)
        return NULL;
    atomic_init(&a->h.refs, 1);
    a->h.kind = WF_ARRAY;
    a->len = 0;
    a->cap = cap;
    return a;
}

int wf_value_array_new(wf_value *out, size_t capacity)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = wf_value_nil();
    arr_block *a = arr_alloc(capacity);
    if (a == NULL)
        return WF_ENOMEM;
    *out = from_obj(WF_ARRAY, a);
    return 0;
}

static map_block *map_alloc(uint32_t cap)
{
    if (cap == 0)
        cap = 4;
    map_block *m = wf__malloc(sizeof *m + (size_t)cap * sizeof(map_entry));
    if (m == NULL)
        return NULL;
    atomic_init(&m->h.refs, 1);
    m->h.kind = WF_MAP;
    m->len = 0;
    m->cap = cap;
    m->index = NULL;
    m->index_cap = 0;
    m->pad = 0;
    return m;
}

static map_block empty_map = {.h = {.refs = 1u << 30, .kind = WF_MAP}};

wf_value wf__value_empty_map(void)
{
    return from_obj(WF_MAP, &empty_map);
}

int wf__value_is_empty_map(wf_value v)
{
    return v.as.obj == &empty_map.h;
}

int wf_value_map_new(wf_value *out, size_t capacity)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = wf_value_nil();
    if (capacity > UINT32_MAX / 2)
        return WF_ERANGE;
    map_block *m = map_alloc((uint32_t)capacity);
    if (m == NULL)
        return WF_ENOMEM;
    *out = from_obj(WF_MAP, m);
    return 0;
}

/* ------------------------------------------------------------ ref counting */

wf_value wf_value_retain(wf_value v)
{
    if (is_heap(v))
        atomic_fetch_add_explicit(&v.as.obj->refs, 1, memory_order_relaxed);
    return v;
}

static void obj_free(wf__obj *o);

static inline void obj_release(wf__obj *o)
{
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
        obj_free(o);
}

static void obj_free(wf__obj *o)
{
    if (o->kind == WF_ARRAY) {
        arr_block *a = (arr_block *)o;
        for (size_t i = 0; i < a->len; i++)
            wf_value_release(a->items[i]);
    } else if (o->kind == WF_MAP) {
        map_block *m = (map_block *)o;
        for (uint32_t i = 0; i < m->len; i++) {
            obj_release(&m->e[i].key->h);
            wf_value_release(m->e[i].val);
        }
        wf__free_mem(m->index);
    }
    wf__free_mem(o);
}

void wf_value_release(wf_value v)
{
    if (is_heap(v))
        obj_release(v.as.obj);
}

/* ----------------------------------------------------------------- reading */

wf_kind wf_value_kind(wf_value v)
{
    return (wf_kind)v.kind;
}

int wf_value_is_nil(wf_value v)
{
    return v.kind == WF_NIL;
}

int wf_value_get_bool(wf_value v, int *out)
{
    if (out == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_get_bool: the output is NULL");
    if (v.kind != WF_BOOL)
        return kind_error("wf_value_get_bool", v.kind, "a bool");
    *out = v.as.b != 0;
    return 0;
}

int wf_value_get_int(wf_value v, int64_t *out)
{
    if (out == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_get_int: the output is NULL");
    if (v.kind == WF_INT) {
        *out = v.as.i;
        return 0;
    }
    if (v.kind == WF_UINT) {
        if (v.as.u > (uint64_t)INT64_MAX)
            return wf__set_error(WF_ERANGE, "wf_value_get_int: %llu does not fit in an int64_t",
                                 (unsigned long long)v.as.u);
        *out = (int64_t)v.as.u;
        return 0;
    }
    return kind_error("wf_value_get_int", v.kind, "an integer");
}

int wf_value_get_uint(wf_value v, uint64_t *out)
{
    if (out == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_get_uint: the output is NULL");
    if (v.kind == WF_UINT) {
        *out = v.as.u;
        return 0;
    }
    if (v.kind == WF_INT) {
        if (v.as.i < 0)
            return wf__set_error(WF_ERANGE, "wf_value_get_uint: %lld is negative",
                                 (long long)v.as.i);
        *out = (uint64_t)v.as.i;
        return 0;
    }
    return kind_error("wf_value_get_uint", v.kind, "an integer");
}

int wf_value_get_double(wf_value v, double *out)
{
    if (out == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_get_double: the output is NULL");
    switch (v.kind) {
    case WF_DOUBLE:
        *out = v.as.d;
        return 0;
    case WF_INT:
        *out = (double)v.as.i;
        return 0;
    case WF_UINT:
        *out = (double)v.as.u;
        return 0;
    default:
        return kind_error("wf_value_get_double", v.kind, "a number");
    }
}

int wf_value_get_string(wf_value v, const char **s, size_t *len)
{
    if (s == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_get_string: the output is NULL");
    if (v.kind != WF_STRING || v.as.obj == NULL)
        return kind_error("wf_value_get_string", v.kind, "a string");
    str_block *b = (str_block *)v.as.obj;
    *s = b->data;
    if (len)
        *len = b->len;
    return 0;
}

int wf_value_get_bytes(wf_value v, const void **p, size_t *len)
{
    if (p == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_get_bytes: the output is NULL");
    if (v.kind != WF_BYTES || v.as.obj == NULL)
        return kind_error("wf_value_get_bytes", v.kind, "bytes");
    str_block *b = (str_block *)v.as.obj;
    *p = b->data;
    if (len)
        *len = b->len;
    return 0;
}

size_t wf_value_len(wf_value v)
{
    if (!is_heap(v))
        return 0;
    switch (v.kind) {
    case WF_STRING:
    case WF_BYTES:
        return ((str_block *)v.as.obj)->len;
    case WF_ARRAY:
        return ((arr_block *)v.as.obj)->len;
    case WF_MAP:
        return ((map_block *)v.as.obj)->len;
    default:
        return 0;
    }
}

int wf_value_array_at(wf_value v, size_t i, wf_value *out)
{
    if (out == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_array_at: the output is NULL");
    if (v.kind != WF_ARRAY || v.as.obj == NULL)
        return kind_error("wf_value_array_at", v.kind, "an array");
    arr_block *a = (arr_block *)v.as.obj;
    if (i >= a->len)
        return wf__set_error(WF_ERANGE, "wf_value_array_at: index %zu, length %zu", i,
                             (size_t)a->len);
    *out = a->items[i];
    return 0;
}

/* Position of key in m, or -1. */
static int64_t map_find(const map_block *m, const char *key, size_t klen, uint32_t hash)
{
    if (m->index) {
        uint32_t mask = m->index_cap - 1;
        for (uint32_t s = hash & mask;; s = (s + 1) & mask) {
            uint32_t pos = m->index[s];
            if (pos == EMPTY_SLOT)
                return -1;
            const str_block *k = m->e[pos].key;
            if (k->hash == hash && k->len == klen && memcmp(k->data, key, klen) == 0)
                return pos;
        }
    }
    for (uint32_t i = 0; i < m->len; i++) {
        const str_block *k = m->e[i].key;
        if (k->len == klen && k->hash == hash && memcmp(k->data, key, klen) == 0)
            return i;
    }
    return -1;
}

int wf_value_map_get_n(wf_value v, const char *key, size_t klen, wf_value *out)
{
    if (out == NULL || (key == NULL && klen > 0))
        return wf__set_error(WF_EINVAL, "wf_value_map_get_n: the output or the key is NULL");
    if (v.kind != WF_MAP || v.as.obj == NULL)
        return kind_error("wf_value_map_get_n", v.kind, "a map");
    const map_block *m = (const map_block *)v.as.obj;
    int64_t pos = map_find(m, key, klen, wf__hash32(key, klen));
    if (pos < 0)
        return WF_ENOTFOUND;
    *out = m->e[pos].val;
    return 0;
}

int wf_value_map_get(wf_value v, const char *key, wf_value *out)
{
    if (key == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_map_get: the key is NULL");
    return wf_value_map_get_n(v, key, strlen(key), out);
}

int wf_value_map_at(wf_value v, size_t i, const char **key, size_t *klen, wf_value *val)
{
    if (v.kind != WF_MAP || v.as.obj == NULL)
        return kind_error("wf_value_map_at", v.kind, "a map");
    const map_block *m = (const map_block *)v.as.obj;
    if (i >= m->len)
        return wf__set_error(WF_ERANGE, "wf_value_map_at: index %zu, length %zu", i,
                             (size_t)m->len);
    if (key)
        *key = m->e[i].key->data;
    if (klen)
        *klen = m->e[i].key->len;
    if (val)
        *val = m->e[i].val;
    return 0;
}

int wf_value_equal(wf_value a, wf_value b)
{
    if (a.kind != b.kind) {
        if (a.kind == WF_INT && b.kind == WF_UINT)
            return a.as.i >= 0 && (uint64_t)a.as.i == b.as.u;
        if (a.kind == WF_UINT && b.kind == WF_INT)
            return b.as.i >= 0 && (uint64_t)b.as.i == a.as.u;
        return 0;
    }
    switch (a.kind) {
    case WF_NIL:
        return 1;
    case WF_BOOL:
        return (a.as.b != 0) == (b.as.b != 0);
    case WF_INT:
        return a.as.i == b.as.i;
    case WF_UINT:
        return a.as.u == b.as.u;
    case WF_DOUBLE:
        return a.as.d == b.as.d;
    case WF_STRING:
    case WF_BYTES: {
        const str_block *x = (const str_block *)a.as.obj, *y = (const str_block *)b.as.obj;
        return x == y || (x->len == y->len && memcmp(x->data, y->data, x->len) == 0);
    }
    case WF_ARRAY: {
        const arr_block *x = (const arr_block *)a.as.obj, *y = (const arr_block *)b.as.obj;
        if (x == y)
            return 1;
        if (x->len != y->len)
            return 0;
        for (size_t i = 0; i < x->len; i++)
            if (!wf_value_equal(x->items[i], y->items[i]))
                return 0;
        return 1;
    }
    case WF_MAP: {
        const map_block *x = (const map_block *)a.as.obj, *y = (const map_block *)b.as.obj;
        if (x == y)
            return 1;
        if (x->len != y->len)
            return 0;
        for (uint32_t i = 0; i < x->len; i++) {
            const str_block *k = x->e[i].key;
            int64_t pos = map_find(y, k->data, k->len, k->hash);
            if (pos < 0 || !wf_value_equal(x->e[i].val, y->e[pos].val))
                return 0;
        }
        return 1;
    }
    default:
        return 0;
    }
}

/* ------------------------------------------------------- copy-on-write */

static int unique(const wf__obj *o)
{
    return atomic_load_explicit(&((wf__obj *)o)->refs, memory_order_acquire) == 1;
}

/* Makes *v's array block uniquely owned with room for need items. */
static arr_block *arr_own(wf_value *v, size_t need)
{
    arr_block *a = (arr_block *)v->as.obj;
    if (unique(&a->h)) {
        if (need <= a->cap)
            return a;
        size_t cap = a->cap * 2 > need ? a->cap * 2 : need;
        if (cap > (SIZE_MAX - sizeof(arr_block)) / sizeof(wf_value))
            return NULL;
        arr_block *n = wf__realloc(a, sizeof *n + cap * sizeof(wf_value));
        if (n == NULL)
            return NULL;
        n->cap = cap;
        v->as.obj = &n->h;
        return n;
    }
    size_t cap = need > a->cap ? (a->cap * 2 > need ? a->cap * 2 : need) : a->cap;
    arr_block *n = arr_alloc(cap);
    if (n == NULL)
        return NULL;
    for (size_t i = 0; i < a->len; i++)
        n->items[i] = wf_value_retain(a->items[i]);
    n->len = a->len;
    obj_release(&a->h);
    v->as.obj = &n->h;
    return n;
}

int wf_value_array_push(wf_value *arr, wf_value item)
{
    if (arr == NULL || arr->kind != WF_ARRAY || arr->as.obj == NULL) {
        wf_value_release(item);
        return arr == NULL ? wf__set_error(WF_EINVAL, "wf_value_array_push: arr is NULL")
                           : kind_error("wf_value_array_push", arr->kind, "an array");
    }
    size_t len = ((arr_block *)arr->as.obj)->len;
    arr_block *a = arr_own(arr, len + 1);
    if (a == NULL) {
        wf_value_release(item);
        return WF_ENOMEM;
    }
    a->items[a->len++] = item;
    return 0;
}

int wf_value_array_set(wf_value *arr, size_t i, wf_value item)
{
    if (arr == NULL || arr->kind != WF_ARRAY || arr->as.obj == NULL) {
        wf_value_release(item);
        return arr == NULL ? wf__set_error(WF_EINVAL, "wf_value_array_set: arr is NULL")
                           : kind_error("wf_value_array_set", arr->kind, "an array");
    }
    if (i >= ((arr_block *)arr->as.obj)->len) {
        wf_value_release(item);
        return wf__set_error(WF_ERANGE, "wf_value_array_set: index %zu, length %zu", i,
                             (size_t)((arr_block *)arr->as.obj)->len);
    }
    arr_block *a = arr_own(arr, 0);
    if (a == NULL) {
        wf_value_release(item);
        return WF_ENOMEM;
    }
    wf_value_release(a->items[i]);
    a->items[i] = item;
    return 0;
}

/* (Re)builds the hash index of m for index_cap slots. */
static int index_build(map_block *m, uint32_t index_cap)
{
    uint32_t *idx = wf__malloc((size_t)index_cap * sizeof *idx);
    if (idx == NULL)
        return WF_ENOMEM;
    memset(idx, 0xff, (size_t)index_cap * sizeof *idx);
    uint32_t mask = index_cap - 1;
    for (uint32_t i = 0; i < m->len; i++) {
        uint32_t s = m->e[i].key->hash & mask;
        while (idx[s] != EMPTY_SLOT)
            s = (s + 1) & mask;
        idx[s] = i;
    }
    wf__free_mem(m->index);
    m->index = idx;
    m->index_cap = index_cap;
    return 0;
}

/* Makes *v's map block uniquely owned with room for need entries. */
static map_block *map_own(wf_value *v, uint32_t need)
{
    map_block *m = (map_block *)v->as.obj;
    if (unique(&m->h) && need <= m->cap)
        return m;
    uint32_t cap = m->cap;
    if (need > cap) {
        cap = cap * 2 > need ? cap * 2 : need;
        cap = cap < 4 ? 4 : cap; /* a map started small (a context's store) grows 1 -> 4 -> 8 */
    }
    if (unique(&m->h)) {
        map_block *n = wf__realloc(m, sizeof *n + (size_t)cap * sizeof(map_entry));
        if (n == NULL)
            return NULL;
        n->cap = cap;
        v->as.obj = &n->h;
        return n;
    }
    map_block *n = map_alloc(cap);
    if (n == NULL)
        return NULL;
    for (uint32_t i = 0; i < m->len; i++) {
        atomic_fetch_add_explicit(&m->e[i].key->h.refs, 1, memory_order_relaxed);
        n->e[i].key = m->e[i].key;
        n->e[i].val = wf_value_retain(m->e[i].val);
    }
    n->len = m->len;
    /* Without an index (out of memory) lookups fall back to a scan: still right. */
    if (m->index)
        (void)index_build(n, m->index_cap);
    obj_release(&m->h);
    v->as.obj = &n->h;
    return n;
}

int wf_value_map_set_n(wf_value *map, const char *key, size_t klen, wf_value val)
{
    if (map == NULL || (key == NULL && klen > 0) || key == NULL) {
        wf_value_release(val);
        return wf__set_error(WF_EINVAL, "wf_value_map_set_n: the map or the key is NULL");
    }
    if (map->kind != WF_MAP || map->as.obj == NULL) {
        wf_value_release(val);
        return kind_error("wf_value_map_set_n", (*map).kind, "a map");
    }
    uint32_t hash = wf__hash32(key, klen);
    map_block *m = (map_block *)map->as.obj;
    int64_t pos = map_find(m, key, klen, hash);
    if (pos >= 0) {
        m = map_own(map, 0);
        if (m == NULL) {
            wf_value_release(val);
            return WF_ENOMEM;
        }
        wf_value_release(m->e[pos].val);
        m->e[pos].val = val;
        return 0;
    }
    if (m->len >= UINT32_MAX / 4) {
        wf_value_release(val);
        return WF_ERANGE;
    }
    str_block *k = str_new(WF_STRING, key, klen);
    if (k == NULL) {
        wf_value_release(val);
        return WF_ENOMEM;
    }
    k->hash = hash;
    m = map_own(map, m->len + 1);
    if (m == NULL) {
        obj_release(&k->h);
        wf_value_release(val);
        return WF_ENOMEM;
    }
    /* Keep the index at most half full; build it once the map is large. */
    uint32_t want = m->index_cap;
    if (m->len + 1 >= INDEX_FROM && (uint64_t)(m->len + 1) * 2 > m->index_cap) {
        want = m->index_cap ? m->index_cap * 2 : 32;
        while ((uint64_t)(m->len + 1) * 2 > want)
            want *= 2;
    }
    m->e[m->len].key = k;
    m->e[m->len].val = val;
    m->len++;
    if (want != m->index_cap) {
        if (index_build(m, want) < 0) {
            m->len--;
            obj_release(&k->h);
            wf_value_release(val);
            return WF_ENOMEM;
        }
    } else if (m->index) {
        uint32_t mask = m->index_cap - 1;
        uint32_t s = hash & mask;
        while (m->index[s] != EMPTY_SLOT)
            s = (s + 1) & mask;
        m->index[s] = m->len - 1;
    }
    return 0;
}

int wf_value_map_set(wf_value *map, const char *key, wf_value val)
{
    if (key == NULL) {
        wf_value_release(val);
        return wf__set_error(WF_EINVAL, "wf_value_map_set: the key is NULL");
    }
    return wf_value_map_set_n(map, key, strlen(key), val);
}

int wf_value_map_remove(wf_value *map, const char *key)
{
    if (map == NULL || key == NULL)
        return wf__set_error(WF_EINVAL, "wf_value_map_remove: the map or the key is NULL");
    if (map->kind != WF_MAP || map->as.obj == NULL)
        return kind_error("wf_value_map_remove", (*map).kind, "a map");
    size_t klen = strlen(key);
    map_block *m = (map_block *)map->as.obj;
    int64_t pos = map_find(m, key, klen, wf__hash32(key, klen));
    if (pos < 0)
        return WF_ENOTFOUND;
    m = map_own(map, 0);
    if (m == NULL)
        return WF_ENOMEM;
    obj_release(&m->e[pos].key->h);
    wf_value_release(m->e[pos].val);
    memmove(&m->e[pos], &m->e[pos + 1], (m->len - (uint32_t)pos - 1) * sizeof(map_entry));
    m->len--;
    if (m->index && index_build(m, m->index_cap) < 0) {
        /* Without an index the linear scan still finds everything. */
        wf__free_mem(m->index);
        m->index = NULL;
        m->index_cap = 0;
    }
    return 0;
}

/* ------------------------------------------------------------ formatting */

typedef struct fmt {
    char *buf;
    size_t cap;
    size_t len;
} fmt;

static void put(fmt *f, const char *s, size_t n)
{
    if (f->len < f->cap) {
        size_t room = f->cap - f->len;
        memcpy(f->buf + f->len, s, n < room ? n : room);
    }
    f->len += n;
}

static void put_sink(void *ctx, const char *s, size_t n)
{
    put(ctx, s, n);
}

/* A JSON string (text.h: a byte that is not UTF-8 becomes U+FFFD). */
static void put_json_string(fmt *f, const char *s, size_t n)
{
    put(f, "\"", 1);
    wf__json_escape(s, n, put_sink, f);
    put(f, "\"", 1);
}

static void put_base64(fmt *f, const unsigned char *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    put(f, "\"", 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char o[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63], i + 1 < n ? tbl[(v >> 6) & 63] : '=',
                     i + 2 < n ? tbl[v & 63] : '='};
        put(f, o, 4);
    }
    put(f, "\"", 1);
}

static void format_value(fmt *f, wf_value v)
{
    char tmp[64];
    int n;
    switch (v.kind) {
    case WF_NIL:
        put(f, "null", 4);
        break;
    case WF_BOOL:
        if (v.as.b)
            put(f, "true", 4);
        else
            put(f, "false", 5);
        break;
    case WF_INT:
        n = snprintf(tmp, sizeof tmp, "%lld", (long long)v.as.i);
        put(f, tmp, (size_t)n);
        break;
    case WF_UINT:
        n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v.as.u);
        put(f, tmp, (size_t)n);
        break;
    case WF_DOUBLE:
        if (!isfinite(v.as.d)) {
            put(f, "null", 4);
            break;
        }
        n = snprintf(tmp, sizeof tmp, "%.17g", v.as.d);
        /* keep doubles recognisable as such: 1 prints as 1.0 */
        if (strspn(tmp, "-0123456789") == (size_t)n)
            n += snprintf(tmp + n, sizeof tmp - (size_t)n, ".0");
        put(f, tmp, (size_t)n);
        break;
    case WF_STRING: {
        const str_block *s = (const str_block *)v.as.obj;
        put_json_string(f, s->data, s->len);
        break;
    }
    case WF_BYTES: {
        const str_block *s = (const str_block *)v.as.obj;
        put_base64(f, (const unsigned char *)s->data, s->len);
        break;
    }
    case WF_ARRAY: {
        const arr_block *a = (const arr_block *)v.as.obj;
        put(f, "[", 1);
        for (size_t i = 0; i < a->len; i++) {
            if (i)
                put(f, ",", 1);
            format_value(f, a->items[i]);
        }
        put(f, "]", 1);
        break;
    }
    case WF_MAP: {
        const map_block *m = (const map_block *)v.as.obj;
        put(f, "{", 1);
        for (uint32_t i = 0; i < m->len; i++) {
            if (i)
                put(f, ",", 1);
            put_json_string(f, m->e[i].key->data, m->e[i].key->len);
            put(f, ":", 1);
            format_value(f, m->e[i].val);
        }
        put(f, "}", 1);
        break;
    }
    default:
        put(f, "null", 4);
    }
}

size_t wf_value_format(wf_value v, char *buf, size_t cap)
{
    fmt f = {buf, buf ? cap : 0, 0};
    format_value(&f, v);
    if (buf && cap > 0)
        buf[f.len < cap ? f.len : cap - 1] = 0;
    return f.len;
}
