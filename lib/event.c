/*
 * event.c: the type registry and events.
 */
#include "internal.h"

#include <string.h>

static const char *const builtin_names[WF_BUILTIN_COUNT] = {
    "StartEvent",
    "StopEvent",
    "InputRequiredEvent",
    "HumanResponseEvent",
    "StepFailedEvent",
    "WorkflowTimedOutEvent",
    "WorkflowCancelledEvent",
    "WorkflowFailedEvent",
    "UnhandledEvent",
    "StepStateChanged",
    "WorkflowIdleEvent",
};

/* ---------------------------------------------------------------- registry */

static int add_locked(wf_registry *reg, const char *name, const wf_event_type *parent,
                      const wf_event_type **out)
{
    uint32_t n = atomic_load_explicit(&reg->n, memory_order_relaxed);
    if (n == reg->cap) {
        uint32_t cap = reg->cap ? reg->cap * 2 : 32;
        wf_event_type **t = wf__realloc(reg->types, cap * sizeof *t);
        if (t == NULL)
            return WF_ENOMEM;
        reg->types = t;
        reg->cap = cap;
    }
    wf_event_type *t = wf__calloc(1, sizeof *t);
    if (t == NULL)
        return WF_ENOMEM;
    t->name = wf__strdup(name);
    if (t->name == NULL || wf_value_string(&t->name_v, name) < 0) {
        wf__free_mem(t->name);
        wf__free_mem(t);
        return WF_ENOMEM;
    }
    t->parent = parent;
    t->reg = reg;
    t->id = n;
    t->depth = parent ? parent->depth + 1 : 0;
    t->is_stop = parent ? parent->is_stop : 0;
    t->is_input = parent ? parent->is_input : 0;
    if (parent && wf__type_has_schema(parent))
        atomic_store_explicit(&t->has_schema, 1, memory_order_relaxed); /* schema.c */
    reg->types[n] = t;
    atomic_store_explicit(&reg->n, n + 1, memory_order_release);
    *out = t;
    return 0;
}

static const wf_event_type *find_locked(const wf_registry *reg, const char *name)
{
    uint32_t n = atomic_load_explicit(&reg->n, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(reg->types[i]->name, name) == 0)
            return reg->types[i];
    return NULL;
}

int wf_registry_new(wf_registry **out)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = NULL;
    wf_registry *reg = wf__calloc(1, sizeof *reg);
    if (reg == NULL)
        return WF_ENOMEM;
    atomic_init(&reg->refs, 1);
    atomic_init(&reg->n, 0);
    pthread_mutex_init(&reg->lock, NULL);
    for (int i = 0; i < WF_BUILTIN_COUNT; i++) {
        const wf_event_type *parent = NULL;
        if (i >= WF_WORKFLOW_TIMED_OUT_EVENT && i <= WF_WORKFLOW_FAILED_EVENT)
            parent = reg->types[WF_STOP_EVENT];
        const wf_event_type *t;
        if (add_locked(reg, builtin_names[i], parent, &t) < 0) {
            wf_registry_free(reg);
            return WF_ENOMEM;
        }
        if (i == WF_STOP_EVENT)
            ((wf_event_type *)t)->is_stop = 1;
        if (i == WF_INPUT_REQUIRED_EVENT)
            ((wf_event_type *)t)->is_input = 1;
    }
    /*
     * StepStateChanged's fields, declared (the engine builds one per step
     * state with wf_event_new_fields from shared string values), and the
     * three step_state values.
     */
    static const char *const ssc_fields[5] = {"name", "step_state", "worker_id", "input_event_name",
                                              "output_event_name"};
    static const char *const states[3] = {"preparing", "running", "not_running"};
    for (int i = 0; i < 5; i++) {
        const wf_event_field *f;
        if (wf_event_type_add_field(reg->types[WF_STEP_STATE_CHANGED], ssc_fields[i], &f) < 0) {
            wf_registry_free(reg);
            return WF_ENOMEM;
        }
    }
    for (int i = 0; i < 3; i++)
        if (wf_value_string(&reg->step_states[i], states[i]) < 0) {
            wf_registry_free(reg);
            return WF_ENOMEM;
        }
    *out = reg;
    return 0;
}

void wf__registry_retain(wf_registry *reg)
{
    atomic_fetch_add_explicit(&reg->refs, 1, memory_order_relaxed);
}

void wf_registry_free(wf_registry *reg)
{
    if (reg == NULL || atomic_fetch_sub_explicit(&reg->refs, 1, memory_order_acq_rel) != 1)
        return;
    uint32_t n = atomic_load(&reg->n);
    for (uint32_t i = 0; i < n; i++) {
        wf__schema_type_free(reg->types[i]);
        wf_event_field *d = reg->types[i]->decl;
        for (uint32_t k = 0; d && k < atomic_load(&reg->types[i]->ndecl); k++)
            wf__free_mem(d[k].name);
        wf__free_mem(d);
        wf__free_mem(reg->types[i]->name);
        wf_value_release(reg->types[i]->name_v);
        wf__free_mem(reg->types[i]);
    }
    wf__free_mem(reg->types);
    for (int i = 0; i < 3; i++)
        wf_value_release(reg->step_states[i]);
    pthread_mutex_destroy(&reg->lock);
    wf__free_mem(reg);
}

int wf_registry_add(wf_registry *reg, const char *name, const wf_event_type *parent,
                    const wf_event_type **out)
{
    if (out)
        *out = NULL;
    if (reg == NULL || name == NULL || out == NULL)
        return wf__set_error(WF_EINVAL, "wf_registry_add: %s is NULL",
                             reg == NULL    ? "reg"
                             : name == NULL ? "name"
                                            : "out");
    size_t len = strlen(name);
    if (len == 0 || len > 255)
        return wf__set_error(WF_EINVAL, "wf_registry_add: a type name must be 1 to 255 bytes");
    if (parent && parent->reg != reg)
        return wf__set_error(
            WF_EINVAL, "wf_registry_add: type \"%s\": its parent \"%s\" is of another registry",
            name, parent->name);
    pthread_mutex_lock(&reg->lock);
    int rc = 0;
    const wf_event_type *t = find_locked(reg, name);
    if (t) {
        if (t->parent == parent)
            *out = t;
        else
            rc = WF_EEXIST;
    } else {
        rc = add_locked(reg, name, parent, out);
    }
    pthread_mutex_unlock(&reg->lock);
    if (rc == WF_EEXIST)
        wf__set_error(rc, "wf_registry_add: type \"%s\" exists with another parent", name);
    return rc;
}

const wf_event_type *wf_registry_find(const wf_registry *reg, const char *name)
{
    if (reg == NULL || name == NULL)
        return NULL;
    wf_registry *r = (wf_registry *)reg;
    pthread_mutex_lock(&r->lock);
    const wf_event_type *t = find_locked(r, name);
    pthread_mutex_unlock(&r->lock);
    return t;
}

const wf_event_type *wf_registry_builtin(const wf_registry *reg, wf_builtin_type which)
{
    if (reg == NULL || (int)which < 0 || which >= WF_BUILTIN_COUNT)
        return NULL;
    /* Built-ins are added first and never move: no lock needed. */
    return reg->types[which];
}

size_t wf_registry_count(const wf_registry *reg)
{
    return reg ? atomic_load_explicit(&reg->n, memory_order_acquire) : 0;
}

const wf_event_type *wf_registry_type_at(const wf_registry *reg, size_t i)
{
    if (reg == NULL || i >= wf_registry_count(reg))
        return NULL;
    /* Entries never move once added, and n is published after the entry (acquire above). */
    wf_registry *r = (wf_registry *)reg;
    pthread_mutex_lock(&r->lock);
    const wf_event_type *t = r->types[i];
    pthread_mutex_unlock(&r->lock);
    return t;
}

/* ------------------------------------------------------------------- types */

const char *wf_event_type_name(const wf_event_type *t)
{
    return t ? t->name : NULL;
}

const wf_event_type *wf_event_type_parent(const wf_event_type *t)
{
    return t ? t->parent : NULL;
}

uint32_t wf_event_type_id(const wf_event_type *t)
{
    return t ? t->id : UINT32_MAX;
}

wf_registry *wf_event_type_registry(const wf_event_type *t)
{
    return t ? t->reg : NULL;
}

int wf_event_type_is(const wf_event_type *t, const wf_event_type *ancestor)
{
    if (t == NULL || ancestor == NULL)
        return 0;
    while (t && t->depth >= ancestor->depth) {
        if (t == ancestor)
            return 1;
        t = t->parent;
    }
    return 0;
}

int wf_event_type_is_stop(const wf_event_type *t)
{
    return t ? t->is_stop : 0;
}

/* ---------------------------------------------------------- declared fields */

int wf_event_type_add_field(const wf_event_type *t, const char *key, const wf_event_field **out)
{
    if (out)
        *out = NULL;
    if (t == NULL || key == NULL || out == NULL)
        return wf__set_error(WF_EINVAL, "wf_event_type_add_field: %s is NULL",
                             t == NULL     ? "t"
                             : key == NULL ? "key"
                                           : "out");
    size_t klen = strlen(key);
    if (klen == 0 || klen > 255)
        return wf__set_error(WF_EINVAL, "wf_event_type_add_field: a key must be 1 to 255 bytes");
    wf_event_type *type = (wf_event_type *)t;
    pthread_mutex_lock(&type->reg->lock);
    uint32_t n = atomic_load_explicit(&type->ndecl, memory_order_relaxed);
    int rc = 0;
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(type->decl[i].name, key) == 0) {
            *out = &type->decl[i];
            goto done;
        }
    if (n == WF_EVENT_MAX_FIELDS) {
        rc = wf__set_error(WF_ERANGE, "wf_event_type_add_field: type \"%s\" has %d fields already",
                           type->name, WF_EVENT_MAX_FIELDS);
        goto done;
    }
    if (type->decl == NULL &&
        (type->decl = wf__calloc(WF_EVENT_MAX_FIELDS, sizeof *type->decl)) == NULL) {
        rc = WF_ENOMEM;
        goto done;
    }
    wf_event_field *f = &type->decl[n];
    if ((f->name = wf__strndup(key, klen)) == NULL) {
        rc = WF_ENOMEM;
        goto done;
    }
    f->type = type;
    f->index = n;
    f->klen = (uint32_t)klen;
    memset(f->key, 0, sizeof f->key);
    if (klen < WF__KEY_INLINE)
        memcpy(f->key, key, klen);
    else /* as an event's field holds a long key (events borrow the name: put_declared) */
        memcpy(f->key, &f->name, sizeof f->name);
    atomic_store_explicit(&type->ndecl, n + 1, memory_order_release);
    *out = f;
done:
    pthread_mutex_unlock(&type->reg->lock);
    return rc;
}

size_t wf_event_type_field_count(const wf_event_type *t)
{
    return t ? atomic_load_explicit(&((wf_event_type *)t)->ndecl, memory_order_acquire) : 0;
}

const char *wf_event_field_key(const wf_event_field *f)
{
    return f ? f->name : NULL;
}

uint32_t wf_event_field_index(const wf_event_field *f)
{
    return f ? f->index : UINT32_MAX;
}

/* ------------------------------------------------------------------ events */

/*
 * Inline: the constructors pass a constant capacity, so the size class
 * folds. cached: from the thread's cache only (NULL when it is empty: the
 * caller's slow path allocates), for constructors whose usual case is a leaf.
 */
static inline __attribute__((always_inline)) wf_event *ev_alloc_from(const wf_event_type *type,
                                                                     uint32_t cap, int cached)
{
    uint8_t cls;
    size_t fields = (size_t)cap * sizeof(wf__field);
    size_t size = sizeof(wf_event) + (fields < sizeof(void *) ? sizeof(void *) : fields);
    wf_event *ev = cached ? wf__cache_alloc_cached(size, &cls) : wf__cache_alloc(size, &cls);
    if (ev == NULL)
        return NULL;
    atomic_init(&ev->refs, 1);
    ev->flags = 0;
    ev->cls = cls;
    ev->nslots = 0;
    ev->nfields = 0;
    ev->cap = cap;
    ev->type = type;
    return ev;
}

static inline __attribute__((always_inline)) wf_event *ev_alloc(const wf_event_type *type,
                                                                uint32_t cap)
{
    return ev_alloc_from(type, cap, 0);
}

static inline void field_clear(wf__field *f)
{
    if (WF__UNLIKELY(f->klen >= WF__KEY_INLINE))
        wf__free_mem(wf__field_heap_key(f));
    if (f->val.kind >= WF_STRING) /* scalars hold nothing */
        wf_value_release(f->val);
}

/*
 * Copies a key that fits in the field (the usual one) into f, with its
 * length in the same pass and without library calls: that length, or 0
 * when the key is empty or too long for the field (field_add then).
 */
static inline __attribute__((always_inline)) uint32_t key_put(wf__field *f, const char *key)
{
    uint32_t klen = 0;
    while (klen < WF__KEY_INLINE && (f->key[klen] = key[klen]) != 0)
        klen++;
    return klen < WF__KEY_INLINE ? klen : 0;
}

/*
 * A new field at the end (the caller made room and knows the key is not
 * there yet): the length and the copy of a short key in one pass, without
 * library calls.
 */
static int field_add(wf_event *ev, const char *key, wf_value val)
{
    wf__field *f = &wf__ev_fields(ev)[ev->nfields];
    size_t klen = 0;
    while (klen < WF__KEY_INLINE && (f->key[klen] = key[klen]) != 0)
        klen++;
    if (klen == WF__KEY_INLINE) {
        klen += strlen(key + WF__KEY_INLINE);
        char *heap = klen <= UINT32_MAX - 1 ? wf__strndup(key, klen) : NULL;
        if (heap == NULL) {
            wf_value_release(val);
            return klen <= UINT32_MAX - 1 ? WF_ENOMEM : WF_EINVAL;
        }
        memcpy(f->key, &heap, sizeof heap);
    } else if (klen == 0) {
        wf_value_release(val);
        return WF_EINVAL;
    }
    f->klen = (uint32_t)klen;
    f->val = val;
    ev->nfields++;
    return 0;
}

static wf__field *find_field(const wf_event *ev, const char *key, size_t klen)
{
    wf__field *fields = wf__ev_fields(ev);
    for (uint32_t i = 0; i < ev->nfields; i++) {
        wf__field *f = &fields[i];
        if (f->klen == klen && memcmp(wf__field_key(f), key, klen) == 0)
            return f;
    }
    return NULL;
}

/*
 * The field named by the NUL-terminated key: the lookup of every step's
 * input, so no strlen or memcmp call. An inline key is NUL-terminated
 * within its 12 bytes, so comparing up to the NUL decides it.
 */
/* find_field_str's search once a long key is met, from f on. */
static __attribute__((noinline)) wf__field *find_field_from(wf__field *f, wf__field *end,
                                                            const char *key)
{
    for (; f < end; f++)
        if (strcmp(wf__field_key(f), key) == 0)
            return f;
    return NULL;
}

/*
 * Only inline keys are compared here, without calls (so the lookup keeps no
 * registers to save); the first long key hands the rest to find_field_from.
 */
static inline __attribute__((always_inline)) wf__field *find_field_str(const wf_event *ev,
                                                                       const char *key)
{
    wf__field *f = wf__ev_fields(ev), *end = f + ev->nfields;
    char c0 = key[0];
    for (; f < end; f++) {
        uint32_t n = f->klen;
        if (WF__UNLIKELY(n >= WF__KEY_INLINE))
            return find_field_from(f, end, key);
        /*
         * An inline key has n >= 1 bytes, none of them NUL: key[k] is read
         * only after key[0..k-1] matched them, so never past key's end.
         */
        if (f->key[0] != c0)
            continue;
        uint32_t k = 1;
        while (k < n && f->key[k] == key[k])
            k++;
        if (k == n && key[n] == 0)
            return f;
    }
    return NULL;
}

/* The two keys of n (< WF__KEY_INLINE) bytes are equal. */
static inline int key_eq(const char *a, const char *b, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++)
        if (a[k] != b[k])
            return 0;
    return 1;
}

/* Adds or replaces a field; takes val (released on failure). */
static int ev_set(wf_event *ev, const char *key, wf_value val)
{
    ev->flags &= (uint16_t)~WF__EV_PLAIN;
    size_t klen = strlen(key);
    if (klen == 0 || klen > UINT32_MAX - 1) {
        wf_value_release(val);
        return WF_EINVAL;
    }
    wf__field *f = ev->nfields ? find_field(ev, key, klen) : NULL;
    if (f) {
        wf_value_release(f->val);
        f->val = val;
        return 0;
    }
    if (ev->nfields == ev->cap) {
        uint32_t cap = ev->cap ? ev->cap * 2 : 4;
        wf__field *nf;
        if (ev->flags & WF__EV_FIELDS_HEAP) {
            nf = wf__realloc(wf__ev_fields(ev), cap * sizeof *nf);
        } else {
            nf = wf__malloc(cap * sizeof *nf);
            if (nf)
                memcpy(nf, ev->inline_fields, ev->nfields * sizeof *nf);
        }
        if (nf == NULL) {
            wf_value_release(val);
            return WF_ENOMEM;
        }
        memcpy(ev->inline_fields, &nf, sizeof nf); /* the inline fields are moved out */
        ev->cap = cap;
        ev->flags |= WF__EV_FIELDS_HEAP;
    }
    return field_add(ev, key, val);
}

int wf_event_new(wf_event **out, const wf_event_type *type, size_t capacity)
{
    if (out == NULL)
        return wf__set_error(WF_EINVAL, "wf_event_new: out is NULL");
    *out = NULL;
    if (type == NULL || capacity > 1u << 20)
        return wf__set_error(WF_EINVAL, type ? "wf_event_new: capacity above 2^20 fields"
                                             : "wf_event_new: type is NULL");
    wf_event *ev = ev_alloc(type, (uint32_t)capacity);
    if (ev == NULL)
        return WF_ENOMEM;
    *out = ev;
    return 0;
}

/* wf_event_new1's other cases: bad arguments, a schema, no key, a long key, no memory. */
static __attribute__((noinline)) int new1_slow(wf_event **out, const wf_event_type *type,
                                               const char *key, wf_value val)
{
    if (out == NULL || type == NULL) {
        if (out)
            *out = NULL;
        wf_value_release(val);
        return wf__set_error(WF_EINVAL, "wf_event_new1: %s is NULL", out ? "type" : "out");
    }
    *out = NULL;
    if (WF__UNLIKELY(wf__type_has_schema(type)) && key) {
        int rc = wf__schema_check_set(type, key, val);
        if (rc < 0) {
            wf_value_release(val);
            return rc;
        }
    }
    wf_event *ev = ev_alloc(type, key ? 1 : 0);
    if (ev == NULL) {
        wf_value_release(val);
        return WF_ENOMEM;
    }
    if (key) {
        wf__field *f = ev->inline_fields;
        uint32_t klen = key_put(f, key);
        if (WF__LIKELY(klen != 0)) {
            f->klen = klen;
            f->val = val;
            ev->nfields = 1;
            if (val.kind < WF_STRING)
                ev->flags = WF__EV_PLAIN;
        } else {
            int rc = field_add(ev, key, val); /* an empty event has room for it */
            if (rc < 0) {
                wf_event_release(ev);
                return rc;
            }
        }
    } else {
        ev->flags = WF__EV_PLAIN;
    }
    *out = ev;
    return 0;
}

/* The usual case a leaf without a stack frame: a key that fits the field, no schema. */
int wf_event_new1(wf_event **out, const wf_event_type *type, const char *key, wf_value val)
{
    if (WF__UNLIKELY(out == NULL || type == NULL || key == NULL || wf__type_has_schema(type)))
        return new1_slow(out, type, key, val);
    wf_event *ev = ev_alloc_from(type, 1, 1);
    if (WF__UNLIKELY(ev == NULL))
        return new1_slow(out, type, key, val); /* an empty cache, or no memory */
    wf__field *f = ev->inline_fields;
    uint32_t klen = key_put(f, key);
    if (WF__UNLIKELY(klen == 0)) { /* empty or long: the general path */
        wf__cache_free(ev, ev->cls);
        return new1_slow(out, type, key, val);
    }
    f->klen = klen;
    f->val = val;
    ev->nfields = 1;
    if (val.kind < WF_STRING)
        ev->flags = WF__EV_PLAIN;
    *out = ev;
    return 0;
}

int wf_event_new2(wf_event **out, const wf_event_type *type, const char *k1, wf_value v1,
                  const char *k2, wf_value v2)
{
    if (out == NULL || type == NULL || k1 == NULL || k2 == NULL) {
        if (out)
            *out = NULL;
        wf_value_release(v1);
        wf_value_release(v2);
        return wf__set_error(WF_EINVAL, "wf_event_new2: %s is NULL",
                             out == NULL    ? "out"
                             : type == NULL ? "type"
                                            : "a key");
    }
    *out = NULL;
    if (WF__UNLIKELY(wf__type_has_schema(type))) {
        int rc = wf__schema_check_set(type, k1, v1);
        if (rc == 0)
            rc = wf__schema_check_set(type, k2, v2);
        if (rc < 0) {
            wf_value_release(v1);
            wf_value_release(v2);
            return rc;
        }
    }
    wf_event *ev = ev_alloc(type, 2);
    if (ev == NULL) {
        wf_value_release(v1);
        wf_value_release(v2);
        return WF_ENOMEM;
    }
    /* Two short distinct keys (the usual case): two copies and a few stores. */
    wf__field *f = ev->inline_fields;
    uint32_t l1 = key_put(&f[0], k1), l2 = key_put(&f[1], k2);
    if (WF__LIKELY(l1 != 0 && l2 != 0 && (l1 != l2 || !key_eq(f[0].key, f[1].key, l1)))) {
        f[0].klen = l1;
        f[0].val = v1;
        f[1].klen = l2;
        f[1].val = v2;
        ev->nfields = 2;
        if (v1.kind < WF_STRING && v2.kind < WF_STRING)
            ev->flags = WF__EV_PLAIN;
        *out = ev;
        return 0;
    }
    int rc = field_add(ev, k1, v1);
    if (rc < 0) {
        wf_value_release(v2);
        wf_event_release(ev);
        return rc;
    }
    rc = find_field_str(ev, k2) ? ev_set(ev, k2, v2) : field_add(ev, k2, v2);
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    *out = ev;
    return 0;
}

static void release_values(const wf_value *vals, size_t n)
{
    for (size_t i = 0; vals && i < n; i++)
        wf_value_release(vals[i]);
}

/* Fills a new event's n slots from the declaration and vals (taken). */
static inline __attribute__((always_inline)) void
put_declared(wf_event *ev, const wf_event_field *decl, const wf_value *vals, size_t n)
{
    wf__field *f = ev->inline_fields;
    uint16_t plain = WF__EV_PLAIN;
    for (size_t i = 0; i < n; i++) {
        /* key and klen in one move (a long key: the registry's, never freed as i < nslots) */
        memcpy(&f[i], &decl[i], offsetof(wf__field, val));
        f[i].val = vals[i];
        if (vals[i].kind >= WF_STRING)
            plain = 0;
    }
    ev->nfields = (uint32_t)n;
    ev->nslots = (uint8_t)n;
    ev->flags = plain;
}

/*
 * wf_event_new_fields' other cases: bad arguments, a schema to check, no
 * memory. Out of line, so that the usual case is a leaf with no stack frame.
 */
static __attribute__((noinline)) int new_fields_slow(wf_event **out, const wf_event_type *type,
                                                     const wf_value *vals, size_t n)
{
    if (out == NULL || type == NULL || (vals == NULL && n > 0)) {
        release_values(vals, n);
        return wf__set_error(WF_EINVAL, "wf_event_new_fields: %s is NULL",
                             out == NULL    ? "out"
                             : type == NULL ? "type"
                                            : "vals");
    }
    uint32_t nd = atomic_load_explicit(&((wf_event_type *)type)->ndecl, memory_order_acquire);
    if (n != nd) {
        release_values(vals, n);
        return wf__set_error(WF_EINVAL,
                             "wf_event_new_fields: type \"%s\" declares %u fields, not %zu",
                             type->name, (unsigned)nd, n);
    }
    const wf_event_field *decl = type->decl;
    if (wf__type_has_schema(type)) {
        for (size_t i = 0; i < n; i++) {
            int rc = wf__schema_check_set(type, decl[i].name, vals[i]);
            if (rc < 0) {
                release_values(vals, n);
                return rc;
            }
        }
    }
    wf_event *ev = ev_alloc(type, (uint32_t)n);
    if (ev == NULL) {
        release_values(vals, n);
        return WF_ENOMEM;
    }
    put_declared(ev, decl, vals, n);
    *out = ev;
    return 0;
}

int wf_event_new_fields(wf_event **out, const wf_event_type *type, const wf_value *vals, size_t n)
{
    if (WF__UNLIKELY(out == NULL || type == NULL || (vals == NULL && n > 0)))
        return new_fields_slow(out, type, vals, n);
    *out = NULL;
    wf_event_type *t = (wf_event_type *)type;
    if (WF__UNLIKELY(n != atomic_load_explicit(&t->ndecl, memory_order_acquire) ||
                     wf__type_has_schema(type)))
        return new_fields_slow(out, type, vals, n);
    wf_event *ev = ev_alloc_from(type, (uint32_t)n, 1);
    if (WF__UNLIKELY(ev == NULL))
        return new_fields_slow(out, type, vals, n); /* an empty cache, or no memory */
    put_declared(ev, t->decl, vals, n);
    *out = ev;
    return 0;
}

int wf_event_new_stop(wf_event **out, const wf_registry *reg, const wf_event_type *type,
                      wf_value result)
{
    if (type == NULL)
        type = reg ? reg->types[WF_STOP_EVENT] : NULL;
    if (type == NULL || !type->is_stop) {
        if (out)
            *out = NULL;
        wf_value_release(result);
        if (type == NULL)
            return wf__set_error(WF_EINVAL, "wf_event_new_stop: no type and no registry");
        return wf__set_error(WF_EINVAL, "wf_event_new_stop: \"%s\" is not a stop event type",
                             type->name);
    }
    return wf_event_new1(out, type, "result", result);
}

int wf_event_set(wf_event *ev, const char *key, wf_value val)
{
    if (ev == NULL || key == NULL) {
        wf_value_release(val);
        return wf__set_error(WF_EINVAL, "wf_event_set: %s is NULL", ev ? "key" : "ev");
    }
    if ((ev->flags & WF__EV_FROZEN) || atomic_load_explicit(&ev->refs, memory_order_acquire) != 1) {
        wf_value_release(val);
        return wf__set_error(WF_EFROZEN, "wf_event_set: the %s event is %s: copy it to change it",
                             ev->type->name, (ev->flags & WF__EV_FROZEN) ? "frozen" : "shared");
    }
    if (WF__UNLIKELY(wf__type_has_schema(ev->type))) {
        int rc = wf__schema_check_set(ev->type, key, val);
        if (rc < 0) {
            wf_value_release(val);
            return rc;
        }
    }
    return ev_set(ev, key, val);
}

void(wf_event_freeze)(wf_event *ev)
{
    /* Only the sole owner of an unfrozen event writes flags, so no race. */
    if (ev && !(ev->flags & WF__EV_FROZEN))
        ev->flags |= WF__EV_FROZEN;
}

int wf_event_is_frozen(const wf_event *ev)
{
    return ev ? (ev->flags & WF__EV_FROZEN) != 0 : 0;
}

wf_event *wf_event_retain(const wf_event *ev)
{
    wf_event *e = (wf_event *)ev;
    if (e)
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    return e;
}

void wf_event_release(wf_event *ev)
{
    if (ev == NULL)
        return;
    /*
     * The sole owner (the usual case: one step's input) frees without a
     * read-modify-write: with one reference, nobody else can take another.
     */
    if (atomic_load_explicit(&ev->refs, memory_order_acquire) != 1 &&
        atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (WF__LIKELY(ev->flags & WF__EV_PLAIN)) { /* nothing but the block to free */
        wf__cache_free(ev, ev->cls);
        return;
    }
    wf__field *fields = wf__ev_fields(ev);
    for (uint32_t i = 0; i < ev->nfields; i++) {
        if (i < ev->nslots) { /* a declared field: a long key is the declaration's */
            if (fields[i].val.kind >= WF_STRING)
                wf_value_release(fields[i].val);
        } else {
            field_clear(&fields[i]);
        }
    }
    if (ev->flags & WF__EV_FIELDS_HEAP)
        wf__free_mem(fields);
    wf__cache_free(ev, ev->cls);
}

const wf_event_type *wf_event_type_of(const wf_event *ev)
{
    return ev ? ev->type : NULL;
}

const char *wf_event_type_name_of(const wf_event *ev)
{
    return ev ? ev->type->name : NULL;
}

wf_value wf_event_get(const wf_event *ev, const char *key, wf_value dflt)
{
    if (ev == NULL || key == NULL)
        return dflt;
    wf__field *f = find_field_str(ev, key);
    return f ? f->val : dflt;
}

/* wf_event_get_field of an event of another type (or one that lacks the slot): by name. */
static __attribute__((noinline)) wf_value get_field_by_name(const wf_event *ev,
                                                            const wf_event_field *f, wf_value dflt)
{
    wf__field *x = find_field_str(ev, f->name);
    return x ? x->val : dflt;
}

wf_value wf_event_get_field(const wf_event *ev, const wf_event_field *f, wf_value dflt)
{
    if (WF__UNLIKELY(ev == NULL || f == NULL))
        return dflt;
    if (WF__LIKELY(ev->type == f->type && f->index < ev->nslots))
        return wf__ev_fields(ev)[f->index].val;
    return get_field_by_name(ev, f, dflt); /* a tail call: the usual case stays a leaf */
}

int wf_event_lookup(const wf_event *ev, const char *key, wf_value *out)
{
    if (ev == NULL || key == NULL || out == NULL)
        return WF_EINVAL;
    wf__field *f = find_field_str(ev, key);
    if (f == NULL)
        return WF_ENOTFOUND;
    *out = f->val;
    return 0;
}

int wf_event_has(const wf_event *ev, const char *key)
{
    return ev && key && find_field_str(ev, key) != NULL;
}

size_t wf_event_field_count(const wf_event *ev)
{
    return ev ? ev->nfields : 0;
}

int wf_event_field_at(const wf_event *ev, size_t i, const char **key, wf_value *val)
{
    if (ev == NULL)
        return wf__set_error(WF_EINVAL, "wf_event_field_at: ev is NULL");
    if (i >= ev->nfields)
        return wf__set_error(WF_ERANGE, "wf_event_field_at: index %zu, %u fields", i,
                             (unsigned)ev->nfields);
    if (key)
        *key = wf__field_key(&wf__ev_fields(ev)[i]);
    if (val)
        *val = wf__ev_fields(ev)[i].val;
    return 0;
}

wf_value wf_event_result(const wf_event *ev)
{
    return wf_event_get(ev, "result", wf_value_nil());
}

int wf_event_equal(const wf_event *a, const wf_event *b)
{
    if (a == b)
        return 1;
    if (a == NULL || b == NULL || a->type != b->type || a->nfields != b->nfields)
        return 0;
    for (uint32_t i = 0; i < a->nfields; i++) {
        const wf__field *f = &wf__ev_fields(a)[i];
        const wf__field *g = find_field(b, wf__field_key(f), f->klen);
        if (g == NULL || !wf_value_equal(f->val, g->val))
            return 0;
    }
    return 1;
}
