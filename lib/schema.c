/*
 * schema.c: schemas (schema.h): building them, checking values, event types'
 * schemas (kinds checked as fields are set, defaults and required fields at
 * emission) and the context store's state schema (defaults of a fresh
 * context, kinds of writes at declared paths).
 *
 * Locks: a schema is built on one thread and frozen when attached; from then
 * on it is read-only and shared. An event type's schema and its has_schema
 * flag (set on the type and its registered descendants, inherited by types
 * registered later) are written once, under the registry's lock, before
 * events of the type are built (the rule schema.h states); relaxed atomics
 * only so that the checks on the hot path cost one plain load.
 */
#include "internal.h"

#include <wf/schema.h>

#include <stdio.h>
#include <string.h>

typedef struct sfield {
    char *name;
    wf_schema_field f; /* f.fields and f.dflt hold their own references */
} sfield;

struct wf_schema {
    _Atomic uint32_t refs;
    int frozen;
    uint32_t n;
    uint32_t cap;
    sfield *v;
};

void wf_schema_field_init(wf_schema_field *f)
{
    if (f == NULL)
        return;
    memset(f, 0, sizeof *f);
    f->kind = WF_SCHEMA_ANY;
    f->elem_kind = WF_SCHEMA_ANY;
    f->dflt = wf_value_nil();
}

int wf_schema_new(wf_schema **out)
{
    if (out == NULL)
        return WF_EINVAL;
    wf_schema *s = wf__calloc(1, sizeof *s);
    *out = s;
    if (s == NULL)
        return WF_ENOMEM;
    atomic_init(&s->refs, 1);
    return 0;
}

static wf_schema *schema_retain(const wf_schema *s)
{
    if (s)
        atomic_fetch_add_explicit(&((wf_schema *)s)->refs, 1, memory_order_relaxed);
    return (wf_schema *)s;
}

wf_schema *wf_schema_retain(wf_schema *s)
{
    return schema_retain(s);
}

void wf_schema_free(wf_schema *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < s->n; i++) {
        wf__free_mem(s->v[i].name);
        wf_value_release(s->v[i].f.dflt);
        wf_schema_free((wf_schema *)s->v[i].f.fields);
    }
    wf__free_mem(s->v);
    wf__free_mem(s);
}

static void schema_freeze(const wf_schema *s)
{
    if (s == NULL || s->frozen)
        return;
    ((wf_schema *)s)->frozen = 1;
    for (uint32_t i = 0; i < s->n; i++)
        schema_freeze(s->v[i].f.fields);
}

const char *wf_schema_kind_name(int32_t kind)
{
    static const char *const names[] = {"nil",    "bool",  "int",   "uint", "double",
                                        "string", "bytes", "array", "map"};
    if (kind == WF_SCHEMA_ANY)
        return "any";
    return (kind >= 0 && kind <= WF_MAP) ? names[kind] : "?";
}

static int kind_valid(int32_t k)
{
    return k == WF_SCHEMA_ANY || (k >= WF_NIL && k <= WF_MAP);
}

/* Lax kind matching (schema.h). */
static int kind_ok(int32_t want, int nullable, wf_value v)
{
    wf_kind k = wf_value_kind(v);
    if (want == WF_SCHEMA_ANY || (int32_t)k == want)
        return 1;
    if (k == WF_NIL)
        return nullable;
    int64_t i;
    uint64_t u;
    switch (want) {
    case WF_DOUBLE:
        return k == WF_INT || k == WF_UINT;
    case WF_INT:
        return k == WF_UINT && wf_value_get_uint(v, &u) == 0 && u <= (uint64_t)INT64_MAX;
    case WF_UINT:
        return k == WF_INT && wf_value_get_int(v, &i) == 0 && i >= 0;
    default:
        return 0;
    }
}

/* A field path for messages: "Type.a.items[3]". */
typedef struct spath {
    char s[256];
    size_t len;
} spath;

static size_t path_push(spath *p, const char *fmt, const char *name, size_t idx)
{
    size_t saved = p->len;
    int n = name ? snprintf(p->s + p->len, sizeof p->s - p->len, fmt, name)
                 : snprintf(p->s + p->len, sizeof p->s - p->len, fmt, idx);
    if (n > 0)
        p->len = p->len + (size_t)n < sizeof p->s ? p->len + (size_t)n : sizeof p->s - 1;
    return saved;
}

static void path_pop(spath *p, size_t saved)
{
    p->len = saved;
    p->s[saved] = 0;
}

static int check_record(const wf_schema *s, wf_value map, spath *p);

static int check_elem(const wf_schema_field *f, wf_value e, spath *p)
{
    if (!kind_ok(f->elem_kind, 0, e))
        return wf__set_error(WF_EKIND, "%s: expected %s, got %s", p->s,
                             wf_schema_kind_name(f->elem_kind),
                             wf_schema_kind_name((int32_t)wf_value_kind(e)));
    if (f->fields && wf_value_kind(e) == WF_MAP)
        return check_record(f->fields, e, p);
    return 0;
}

static int check_value(const wf_schema_field *f, wf_value v, spath *p)
{
    if (!kind_ok(f->kind, f->nullable, v))
        return wf__set_error(WF_EKIND, "%s: expected %s%s, got %s", p->s,
                             wf_schema_kind_name(f->kind), f->nullable ? " or nil" : "",
                             wf_schema_kind_name((int32_t)wf_value_kind(v)));
    wf_kind k = wf_value_kind(v);
    if (k == WF_ARRAY && (f->elem_kind != WF_SCHEMA_ANY || f->fields)) {
        size_t n = wf_value_len(v);
        for (size_t i = 0; i < n; i++) {
            wf_value e;
            wf_value_array_at(v, i, &e);
            size_t saved = path_push(p, "[%zu]", NULL, i);
            int rc = check_elem(f, e, p);
            path_pop(p, saved);
            if (rc < 0)
                return rc;
        }
    } else if (k == WF_MAP && f->kind == WF_MAP && f->fields && f->elem_kind == WF_SCHEMA_ANY) {
        return check_record(f->fields, v, p); /* a nested record */
    } else if (k == WF_MAP && (f->elem_kind != WF_SCHEMA_ANY || f->fields)) {
        size_t n = wf_value_len(v);
        for (size_t i = 0; i < n; i++) {
            const char *key;
            size_t klen;
            wf_value e;
            wf_value_map_at(v, i, &key, &klen, &e);
            size_t saved = path_push(p, "[%s]", key, 0);
            int rc = check_elem(f, e, p);
            path_pop(p, saved);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static int check_record(const wf_schema *s, wf_value map, spath *p)
{
    for (uint32_t i = 0; i < s->n; i++) {
        const sfield *sf = &s->v[i];
        wf_value v;
        size_t saved = path_push(p, ".%s", sf->name, 0);
        int rc = 0;
        if (wf_value_map_get(map, sf->name, &v) == 0)
            rc = check_value(&sf->f, v, p);
        else if (sf->f.required)
            rc = wf__set_error(WF_EFORMAT, "%s: required field missing", p->s);
        path_pop(p, saved);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int name_ok(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    return len >= 1 && len <= 255 && strchr(name, '.') == NULL;
}

int wf_schema_add_field(wf_schema *s, const char *name, const wf_schema_field *f)
{
    wf_schema_field dflt;
    if (f == NULL) {
        wf_schema_field_init(&dflt);
        f = &dflt;
    }
    if (s == NULL || !name_ok(name))
        return wf__set_error(WF_EINVAL,
                             "wf_schema_add_field: a schema and a name of 1..255 bytes without "
                             "'.' are needed");
    if (s->frozen)
        return wf__set_error(WF_EFROZEN, "wf_schema_add_field: '%s': the schema is attached", name);
    if (!kind_valid(f->kind) || !kind_valid(f->elem_kind))
        return wf__set_error(WF_EINVAL, "wf_schema_add_field: '%s': bad kind", name);
    if (f->fields && f->kind != WF_MAP && f->kind != WF_ARRAY && f->kind != WF_SCHEMA_ANY)
        return wf__set_error(WF_EINVAL,
                             "wf_schema_add_field: '%s': a nested schema needs a map or an array "
                             "field",
                             name);
    if (f->fields && f->kind == WF_ARRAY && f->elem_kind != WF_MAP)
        return wf__set_error(WF_EINVAL,
                             "wf_schema_add_field: '%s': an array's nested schema needs elem_kind "
                             "WF_MAP",
                             name);
    for (uint32_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].name, name) == 0)
            return wf__set_error(WF_EEXIST, "wf_schema_add_field: '%s' already declared", name);
    if (f->has_default) {
        spath p = {{0}, 0};
        path_push(&p, "default of '%s'", name, 0);
        if (check_value(f, f->dflt, &p) < 0) {
            char why[320]; /* the message lives where the next one is written */
            snprintf(why, sizeof why, "%s", wf_last_error_message());
            return wf__set_error(WF_EINVAL, "wf_schema_add_field: %s", why);
        }
    }
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 8;
        sfield *v = wf__realloc(s->v, cap * sizeof *v);
        if (v == NULL)
            return WF_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    sfield *sf = &s->v[s->n];
    if ((sf->name = wf__strdup(name)) == NULL)
        return WF_ENOMEM;
    sf->f = *f;
    sf->f.fields = schema_retain(f->fields);
    sf->f.dflt = f->has_default ? wf_value_retain(f->dflt) : wf_value_nil();
    s->n++;
    return 0;
}

size_t wf_schema_field_count(const wf_schema *s)
{
    return s ? s->n : 0;
}

int wf_schema_field_at(const wf_schema *s, size_t i, const char **name, const wf_schema_field **f)
{
    if (s == NULL)
        return WF_EINVAL;
    if (i >= s->n)
        return WF_ERANGE;
    if (name)
        *name = s->v[i].name;
    if (f)
        *f = &s->v[i].f;
    return 0;
}

int wf_schema_check(const wf_schema *s, wf_value map, const char *what)
{
    if (s == NULL)
        return WF_EINVAL;
    spath p = {{0}, 0};
    path_push(&p, "%s", what ? what : "value", 0);
    if (wf_value_kind(map) != WF_MAP)
        return wf__set_error(WF_EKIND, "%s: expected map, got %s", p.s,
                             wf_schema_kind_name((int32_t)wf_value_kind(map)));
    return check_record(s, map, &p);
}

/* ---------------------------------------------------------- event types */

static const sfield *find_field(const wf_schema *s, const char *name)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].name, name) == 0)
            return &s->v[i];
    return NULL;
}

int wf_event_type_set_schema(const wf_event_type *t, wf_schema *s)
{
    if (t == NULL || s == NULL)
        return wf__set_error(WF_EINVAL, "wf_event_type_set_schema: NULL argument");
    wf_event_type *mt = (wf_event_type *)t;
    wf_registry *reg = mt->reg;
    pthread_mutex_lock(&reg->lock);
    if (mt->schema) {
        pthread_mutex_unlock(&reg->lock);
        return wf__set_error(WF_EEXIST, "wf_event_type_set_schema: '%s' has a schema", t->name);
    }
    schema_freeze(s);
    mt->schema = schema_retain(s);
    uint32_t n = atomic_load_explicit(&reg->n, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        if (wf_event_type_is(reg->types[i], t) && reg->types[i]->depth >= t->depth)
            atomic_store_explicit(&reg->types[i]->has_schema, 1, memory_order_relaxed);
    pthread_mutex_unlock(&reg->lock);
    return 0;
}

const wf_schema *wf_event_type_schema(const wf_event_type *t)
{
    return t ? t->schema : NULL;
}

void wf__schema_type_free(wf_event_type *t)
{
    wf_schema_free(t->schema);
}

int wf__schema_check_set(const wf_event_type *type, const char *key, wf_value val)
{
    for (const wf_event_type *t = type; t; t = t->parent) {
        const sfield *sf = t->schema ? find_field(t->schema, key) : NULL;
        if (sf == NULL)
            continue;
        spath p = {{0}, 0};
        path_push(&p, "%s", type->name, 0);
        path_push(&p, ".%s", key, 0);
        int rc = check_value(&sf->f, val, &p);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int wf_event_check(wf_event *ev)
{
    if (ev == NULL)
        return WF_EINVAL;
    const wf_event_type *type = wf_event_type_of(ev);
    if (!atomic_load_explicit(&type->has_schema, memory_order_relaxed))
        return 0;
    for (const wf_event_type *t = type; t; t = t->parent) {
        const wf_schema *s = t->schema;
        for (uint32_t i = 0; s && i < s->n; i++) {
            const sfield *sf = &s->v[i];
            spath p = {{0}, 0};
            path_push(&p, "%s", type->name, 0);
            path_push(&p, ".%s", sf->name, 0);
            wf_value v;
            int rc = 0;
            if (wf_event_lookup(ev, sf->name, &v) == 0)
                rc = check_value(&sf->f, v, &p);
            else if (sf->f.has_default)
                rc = wf_event_is_frozen(ev)
                         ? wf__set_error(WF_EFROZEN, "%s: missing, and the event is frozen", p.s)
                         : wf_event_set(ev, sf->name, wf_value_retain(sf->f.dflt));
            else if (sf->f.required)
                rc = wf__set_error(WF_EFORMAT, "%s: required field missing", p.s);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------- state */

int wf_workflow_set_state_schema(wf_workflow *wf, wf_schema *s)
{
    if (wf == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_set_state_schema: wf is NULL");
    if (atomic_load_explicit(&wf->frozen, memory_order_acquire))
        return wf__set_error(WF_EFROZEN, "wf_workflow_set_state_schema: '%s' is frozen", wf->name);
    schema_freeze(s);
    wf_schema *old = wf->state_schema;
    wf->state_schema = schema_retain(s);
    wf_schema_free(old);
    return 0;
}

const wf_schema *wf_workflow_state_schema(const wf_workflow *wf)
{
    return wf ? wf->state_schema : NULL;
}

/* The defaults of s as a new map in *out (nested schemas' defaults as nested maps). */
static int defaults_of(const wf_schema *s, wf_value *out)
{
    int rc = wf_value_map_new(out, s->n);
    for (uint32_t i = 0; rc == 0 && i < s->n; i++) {
        const sfield *sf = &s->v[i];
        if (sf->f.has_default) {
            rc = wf_value_map_set(out, sf->name, wf_value_retain(sf->f.dflt));
        } else if (sf->f.fields && sf->f.kind == WF_MAP && sf->f.elem_kind == WF_SCHEMA_ANY) {
            wf_value sub;
            if ((rc = defaults_of(sf->f.fields, &sub)) == 0) {
                if (wf_value_len(sub))
                    rc = wf_value_map_set(out, sf->name, sub);
                else
                    wf_value_release(sub);
            }
        }
    }
    if (rc < 0)
        wf_value_release(*out);
    return rc;
}

int wf__state_defaults(const wf_workflow *wf, wf_value *state)
{
    if (wf->state_schema == NULL)
        return 0;
    wf_value d;
    int rc = defaults_of(wf->state_schema, &d);
    if (rc < 0)
        return rc;
    wf_value_release(*state);
    *state = d;
    return 0;
}

int wf__state_check_set(const wf_workflow *wf, const char *path, wf_value val)
{
    const wf_schema *s = wf->state_schema;
    if (s == NULL)
        return 0;
    spath p = {{0}, 0};
    path_push(&p, "%s", "state", 0);
    const char *part = path;
    for (;;) {
        const char *dot = strchr(part, '.');
        size_t n = dot ? (size_t)(dot - part) : strlen(part);
        const sfield *sf = NULL;
        for (uint32_t i = 0; i < s->n && sf == NULL; i++)
            if (strlen(s->v[i].name) == n && memcmp(s->v[i].name, part, n) == 0)
                sf = &s->v[i];
        if (sf == NULL)
            return 0; /* not declared: any value */
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)n, part);
        path_push(&p, ".%s", name, 0);
        if (dot == NULL)
            return check_value(&sf->f, val, &p);
        if (sf->f.kind != WF_SCHEMA_ANY && sf->f.kind != WF_MAP)
            return wf__set_error(WF_EKIND, "%s: declared %s, cannot hold '%s'", p.s,
                                 wf_schema_kind_name(sf->f.kind), dot + 1);
        part = dot + 1;
        if (sf->f.elem_kind != WF_SCHEMA_ANY) {
            /* a map of elements: the next part is a key */
            dot = strchr(part, '.');
            path_push(&p, ".%s", part, 0);
            if (dot == NULL)
                return check_elem(&sf->f, val, &p);
            if (sf->f.fields == NULL)
                return 0;
            part = dot + 1;
        } else if (sf->f.fields == NULL) {
            return 0; /* an undeclared map: anything below */
        }
        s = sf->f.fields;
    }
}

int wf__state_check(const wf_workflow *wf, wf_value state)
{
    return wf->state_schema ? wf_schema_check(wf->state_schema, state, "state") : 0;
}
