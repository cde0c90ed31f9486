/*
 * internal.h: structures and helpers shared by the files of lib/, serialize/
 * and executor/. Never installed. Internal names are wf__*.
 */
#ifndef WF_INTERNAL_H
#define WF_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <wf/wf.h>

#include "text.h"

#define WF__HIDDEN      __attribute__((visibility("hidden")))
#define WF__LIKELY(x)   __builtin_expect(!!(x), 1)
#define WF__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WF__CACHELINE   64
#define WF__ALIGNED     __attribute__((aligned(WF__CACHELINE)))
/*
 * Thread-locals of the hot path. In a shared library the default model
 * calls __tls_get_addr on every access (~10% of a step's cost, measured);
 * initial-exec is one %fs-relative load. Its price is a slot in the static
 * TLS block, which glibc reserves room for even when the library is
 * dlopen()ed (optional_static_tls, 512 bytes; wf uses ~100).
 */
#define WF__TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* ------------------------------------------------------------------ errors */

/*
 * Sets the calling thread's wf_last_error_message() (printf format, cut at
 * 1 KiB) and returns code, so a failing path reads
 * `return wf__set_error(WF_EINVAL, "wf_x: name is empty");`. Never
 * allocates. Start the message with the public call's name.
 */
int wf__set_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), cold));

/* ------------------------------------------------------------------ alloc */

/* Every allocation goes through the hooks (lib/alloc.c). */
void *wf__malloc(size_t n);
void *wf__calloc(size_t n, size_t size);
void *wf__realloc(void *p, size_t n);
void wf__free_mem(void *p);
char *wf__strdup(const char *s);
/* Zeroed, cache-line aligned memory (for structures with WF__ALIGNED fields). */
void *wf__malloc_aligned(size_t n);
void wf__free_aligned(void *p);
char *wf__strndup(const char *s, size_t n);

/*
 * Per-thread block cache for the hot path (events, tasks, groups, small
 * allocations): size classes of 32 to 512 bytes (lib/alloc.c), carved from
 * 16 KiB slabs, so a block costs its size and nothing more (a malloc'ed
 * 64-byte block takes 80 bytes in glibc). wf__cache_alloc returns a block of
 * at least n bytes and its class in *cls (WF__CLS_HEAP for larger blocks,
 * which come from the hooks); wf__cache_free takes the class back. A block
 * may be freed on another thread than the one that allocated it. The fast
 * paths (a pop and a push on the thread's list) are inline.
 */
#define WF__CLS_HEAP 0xff
#define WF__NCLS     11
#define WF__CLS_TASK 10  /* the executor's tasks: 64 bytes, a class of their own (alloc.c) */
#define WF__BATCH    256 /* blocks moved between a thread and the depot at once */
/* wf__tcache.room's index mask: above every class, and so is WF__CLS_HEAP masked with it */
#define WF__ROOM_MASK 15
_Static_assert(WF__NCLS <= WF__ROOM_MASK && (WF__CLS_HEAP & WF__ROOM_MASK) >= WF__NCLS,
               "a class's room and the heap's are apart");

typedef struct wf__block {
    struct wf__block *next;       /* within a list or batch */
    struct wf__block *next_batch; /* first block of a batch in the depot */
    uint32_t n;                   /* blocks in the batch (first block only) */
} wf__block;

typedef struct wf__tcache {
    wf__block *head[WF__NCLS];
    /*
     * Per class, how many more blocks the list takes before a free spills
     * (2 * WF__BATCH less its length; below 1: full). 0 until the thread
     * registers, and always 0 past WF__NCLS, where WF__CLS_HEAP lands
     * (masked with WF__ROOM_MASK): an inline free makes one test.
     */
    int32_t room[WF__ROOM_MASK + 1];
    char *bump[WF__NCLS], *bump_end[WF__NCLS]; /* the rest of the thread's current slab */
    int registered;                            /* its exit gives the blocks back */
} wf__tcache;

extern WF__TLS wf__tcache wf__tc;
extern const uint8_t wf__cls_by8[65]; /* class of a block of n <= 512 bytes: [(n + 7) / 8] */
void *wf__cache_refill(size_t n, int c, uint8_t *cls);
void wf__cache_spill(void *p, uint8_t cls);
/* The calling thread's cached blocks go to the depot (alloc.c: slabs then can be trimmed). */
void wf__alloc_flush(void);
/* Asks every thread to flush when it next goes idle (wf__alloc_idle: cheap unless asked). */
void wf__alloc_flush_request(void);
/* The calling thread goes idle: flushes if asked since its last flush (1), else 0. */
int wf__alloc_idle(void);

#ifdef WF_NO_ALLOC_CACHE
/*
 * -Dalloc_cache=false (the sanitizer phase): every block comes from and goes
 * back to the allocation hooks, so AddressSanitizer sees a block used after
 * its free, and the allocation-failure sweep reaches every allocation.
 */
static inline void *wf__cache_alloc(size_t n, uint8_t *cls)
{
    return wf__cache_refill(n, -1, cls);
}
static inline void *wf__cache_alloc_cls(int c)
{
    uint8_t cls;
    (void)c; /* only tasks (64 bytes) are taken by class */
    return wf__cache_refill(64, -1, &cls);
}
static inline void wf__cache_free(void *p, uint8_t cls)
{
    (void)cls;
    if (p)
        wf__cache_spill(p, WF__CLS_HEAP);
}
static inline void *wf__cache_alloc_cached(size_t n, uint8_t *cls)
{
    (void)n;
    (void)cls;
    return NULL;
}
#else
/*
 * A block from the thread's cache only, or NULL (then the caller takes its
 * slow path): no call in it, so that a constructor's usual case is a leaf.
 */
static inline void *wf__cache_alloc_cached(size_t n, uint8_t *cls)
{
    if (WF__UNLIKELY(n > 512))
        return NULL;
    int c = wf__cls_by8[(n + 7) >> 3];
    wf__block *b = wf__tc.head[c];
    if (WF__UNLIKELY(b == NULL))
        return NULL;
    *cls = (uint8_t)c;
    wf__tc.head[c] = b->next;
    wf__tc.room[c]++;
    return b;
}
static inline void *wf__cache_alloc(size_t n, uint8_t *cls)
{
    if (WF__UNLIKELY(n > 512))
        return wf__cache_refill(n, -1, cls);
    int c = wf__cls_by8[(n + 7) >> 3];
    wf__block *b = wf__tc.head[c];
    if (WF__UNLIKELY(b == NULL))
        return wf__cache_refill(n, c, cls);
    *cls = (uint8_t)c;
    wf__tc.head[c] = b->next;
    wf__tc.room[c]++;
    return b;
}

/* A block of class c (the one of its size, or WF__CLS_TASK). */
static inline void *wf__cache_alloc_cls(int c)
{
    wf__block *b = wf__tc.head[c];
    if (WF__UNLIKELY(b == NULL)) {
        uint8_t cls;
        return wf__cache_refill(0, c, &cls);
    }
    wf__tc.head[c] = b->next;
    wf__tc.room[c]++;
    return b;
}

static inline void wf__cache_free(void *p, uint8_t cls)
{
    if (p == NULL)
        return;
    if (WF__UNLIKELY(wf__tc.room[cls & WF__ROOM_MASK] <= 0)) {
        wf__cache_spill(p, cls); /* a big block, a full list, an unregistered thread */
        return;
    }
    wf__block *b = p;
    b->next = wf__tc.head[cls];
    wf__tc.head[cls] = b;
    wf__tc.room[cls]--;
}
#endif

/*
 * Mutexes guarding short sections that several workers take (the run list,
 * the timers, the injection overflow) spin a little before sleeping: a futex
 * round trip costs ~10 us here, the sections a few dozen ns.
 */
static inline void wf__mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
}

/*
 * A mutex in one futex word (Drepper's "mutex2": 0 free, 1 taken, 2 taken
 * with sleepers), for small objects made per run, where a pthread mutex's
 * 40 bytes and its init count: an uncontended take is one CAS, a give one
 * exchange. Spins a little before sleeping. Zeroed memory is a free lock.
 */
typedef struct wf__lock {
    _Atomic uint32_t w;
} wf__lock;
void wf__lock_slow(wf__lock *l);
void wf__lock_wake(wf__lock *l);
static inline void wf__lock_take(wf__lock *l)
{
    uint32_t free_ = 0;
    if (!atomic_compare_exchange_strong_explicit(&l->w, &free_, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        wf__lock_slow(l);
}
static inline void wf__lock_give(wf__lock *l)
{
    if (atomic_exchange_explicit(&l->w, 0, memory_order_release) == 2)
        wf__lock_wake(l);
}

/*
 * Unlinks node from a doubly linked list with prev/next fields and a `listed`
 * flag (an unlisted node is left alone).
 */
#define WF__DLIST_UNLINK(head, node)                                                               \
    do {                                                                                           \
        if ((node)->listed) {                                                                      \
            if ((node)->prev)                                                                      \
                (node)->prev->next = (node)->next;                                                 \
            else                                                                                   \
                (head) = (node)->next;                                                             \
            if ((node)->next)                                                                      \
                (node)->next->prev = (node)->prev;                                                 \
            (node)->listed = 0;                                                                    \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------- strings */

/* A growable NUL-terminated string; on allocation failure it latches oom. */
typedef struct wf__buf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
} wf__buf;

void wf__buf_init(wf__buf *b);
void wf__buf_free(wf__buf *b);
void wf__buf_append_slow(wf__buf *b, const char *s, size_t n);
/* Appends n bytes of s (the text stays NUL-terminated); on OOM, b->oom and nothing more. */
static inline void wf__buf_append(wf__buf *b, const char *s, size_t n)
{
    if (__builtin_expect(b->len + n < b->cap, 1)) { /* cap is 0 once oom */
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = 0;
        return;
    }
    wf__buf_append_slow(b, s, n);
}
void wf__buf_puts(wf__buf *b, const char *s);
void wf__buf_printf(wf__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Decimal integers and string literals, without a format to parse (exporters' hot paths). */
void wf__buf_u64(wf__buf *b, uint64_t v);
void wf__buf_i64(wf__buf *b, int64_t v);
#define wf__buf_lit(b, s) wf__buf_append((b), "" s, sizeof(s) - 1)
/* Hands the string to the caller (wf_free); NULL and WF_ENOMEM if oom. */
int wf__buf_take(wf__buf *b, char **out);

/* graph.c: how DOT and Mermaid spell a graph's parts (the execution drawing uses them too). */
typedef struct wf__graph_style {
    void (*quote)(wf__buf *b, const char *s);
    const char *step_open, *step_close;   /* around the quoted step name; %u: its index */
    const char *event_open, *event_close; /* around the quoted type name; %u id, %s colour/class */
    const char *colour[3];                /* plain event, start event, stop event */
    const char *accept, *emit, *fails;    /* edges: %u ids */
    const char *footer;
} wf__graph_style;
extern const wf__graph_style wf__graph_dot, wf__graph_mermaid;
/* The child workflows wf's steps declare, drawn in st's syntax (lib/children.c). */
void wf__graph_children(const wf_workflow *wf, const wf__graph_style *st, wf__buf *b);
/* Lets go of a step's declared child workflows (lib/children.c). */
struct wf__step;
void wf__step_children_free(struct wf__step *s);
void wf__dot_str(wf__buf *b, const char *s); /* a DOT double-quoted string */
void wf__mm_str(wf__buf *b, const char *s);  /* a Mermaid label in double quotes */

/* ----------------------------------------------------------------- values */

/* The header of every heap value block. refs is atomic (relaxed inc, acq_rel dec). */
typedef struct wf__obj {
    _Atomic uint32_t refs;
    uint32_t kind; /* wf_kind */
} wf__obj;

/*
 * An empty map that is never freed, shared by every context that has not
 * written its store yet (lib/context.c): its count starts at 2^30, so a
 * retain and release of it (a reader's copy) balance and it is never
 * unique (a write to it copies). The context's own reference is not
 * counted: the context drops it without a release (wf__value_is_empty_map).
 */
wf_value wf__value_empty_map(void);
int wf__value_is_empty_map(wf_value v);

/* ----------------------------------------------------------------- events */

struct wf_event_type {
    char *name;
    const wf_event_type *parent;
    wf_registry *reg;
    uint32_t id;
    uint32_t depth; /* 0 for a root type */
    int is_stop;    /* StopEvent or a subtype */
    int is_input;   /* InputRequiredEvent or a subtype (streamed when emitted) */
    struct wf_schema *schema; /* schema.c: its own schema, or NULL */
    _Atomic int has_schema;   /* schema.c: it or an ancestor has one (checked when set) */
    /*
     * Declared fields (wf_event_type_add_field): WF_EVENT_MAX_FIELDS records
     * allocated with the first, never moved; added under the registry's
     * lock, ndecl published after the record (release).
     */
    struct wf_event_field *decl;
    _Atomic uint32_t ndecl;
    wf_value name_v;       /* the name as a string value, shared (StepStateChanged's fields) */
};

struct wf_event_field {
    /*
     * key and klen as an event's field (wf__field) starts, so that a new
     * event copies them in one move: the key NUL-padded, or a long one's
     * name pointer (the event borrows it).
     */
    char key[12]; /* WF__KEY_INLINE */
    uint32_t klen;
    const wf_event_type *type;
    uint32_t index;
    char *name; /* the key, NUL-terminated */
};

/* schema.c */
int wf__schema_check_set(const wf_event_type *type, const char *key, wf_value val);
void wf__schema_type_free(wf_event_type *t);
static inline int wf__type_has_schema(const wf_event_type *t)
{
    return atomic_load_explicit(&((wf_event_type *)t)->has_schema, memory_order_relaxed);
}
/* At emission: defaults and required fields of ev's schemas (0 when it has none). */
static inline int wf__event_check_emit(wf_event *ev)
{
    return WF__UNLIKELY(wf__type_has_schema(wf_event_type_of(ev))) ? wf_event_check(ev) : 0;
}

struct wf_registry {
    _Atomic uint32_t refs;
    pthread_mutex_t lock;  /* guards types, n, cap */
    wf_event_type **types; /* by id; entries never move once added */
    _Atomic uint32_t n;
    uint32_t cap;
    /* StepStateChanged's step_state values, shared: preparing, running, not_running */
    wf_value step_states[3];
};

/*
 * Keys of up to WF__KEY_INLINE-1 bytes live inside the field; a longer key is
 * a heap copy whose pointer takes the first bytes of key. 32 bytes a field
 * (a union of the two would be 16 bytes, and the field 40).
 */
#define WF__KEY_INLINE 12
_Static_assert(sizeof(((struct wf_event_field *)0)->key) == WF__KEY_INLINE,
               "a declared field holds its key as an event's field does");

typedef struct wf__field {
    char key[WF__KEY_INLINE];
    uint32_t klen;
    wf_value val;
} wf__field;
_Static_assert(offsetof(struct wf_event_field, key) == offsetof(wf__field, key) &&
                   offsetof(struct wf_event_field, klen) == offsetof(wf__field, klen) &&
                   offsetof(wf__field, val) == sizeof(((wf__field *)0)->key) + sizeof(uint32_t),
               "a declared field starts as an event's field");

static inline char *wf__field_heap_key(const wf__field *f)
{
    char *p;
    __builtin_memcpy(&p, f->key, sizeof p);
    return p;
}

#define WF__EV_FROZEN      1u
#define WF__EV_FIELDS_HEAP 2u /* the fields are in a separate allocation */
/*
 * Set only by the constructors that know it (wf_event_new1/new2 with scalar
 * values and short keys), cleared by any later change: every field has an
 * inline key and a scalar value, so releasing the event frees one block.
 */
#define WF__EV_PLAIN 4u

/*
 * An event: a 24-byte header, then its fields; once they outgrow the block
 * (WF__EV_FIELDS_HEAP) the first bytes after the header point to a heap
 * array. A one-field event is 56 bytes, so a pending event and its task
 * take 120 (wf__ev_fields finds the fields).
 */
struct wf_event {
    _Atomic uint32_t refs;
    uint16_t flags;
    uint8_t cls;    /* cache class of this block */
    uint8_t nslots; /* fields 0..nslots-1 are its type's declared ones, in order; a long
                       key of theirs points to the declaration's (not freed with the event) */
    uint32_t nfields;
    uint32_t cap;
    const wf_event_type *type;
    wf__field inline_fields[]; /* at least 8 bytes: room for the heap pointer */
};

static inline wf__field *wf__ev_fields(const wf_event *ev)
{
    if (WF__UNLIKELY(ev->flags & WF__EV_FIELDS_HEAP)) {
        wf__field *f;
        __builtin_memcpy(&f, ev->inline_fields, sizeof f);
        return f;
    }
    return (wf__field *)ev->inline_fields;
}

/*
 * wf_event_freeze inline for the library's own calls (one per routed
 * event): only the sole owner of an unfrozen event writes its flags.
 */
static inline void wf__event_freeze(wf_event *ev)
{
    if (ev && !(ev->flags & WF__EV_FROZEN))
        ev->flags |= WF__EV_FROZEN;
}
#define wf_event_freeze(ev) wf__event_freeze(ev)

/*
 * wf_event_release inline for the library's hot paths (a finished
 * invocation's input): the sole owner of a plain event frees its block
 * here; anything else takes the function.
 */
static inline void wf__event_release(wf_event *ev)
{
    if (WF__LIKELY(ev != NULL) && atomic_load_explicit(&ev->refs, memory_order_acquire) == 1 &&
        WF__LIKELY(ev->flags & WF__EV_PLAIN)) {
        wf__cache_free(ev, ev->cls);
        return;
    }
    wf_event_release(ev);
}

void wf__registry_retain(wf_registry *reg);

static inline const char *wf__field_key(const wf__field *f)
{
    return f->klen < WF__KEY_INLINE ? f->key : wf__field_heap_key(f);
}

/* --------------------------------------------------------------- workflow */

typedef struct wf__step {
    char *name;
    wf_value name_v; /* the name as a string value, shared (StepStateChanged's fields) */
    uint32_t index;
    wf_step_fn fn;
    void *user;
    void (*user_free)(void *user);
    const wf_event_type **accepts;
    uint32_t n_accepts;
    const wf_event_type **emits;
    uint32_t n_emits;
    uint32_t num_workers;
    int accept_subtypes;
    const wf_retry_policy *retry;
    char **error_of; /* names this error handler covers */
    uint32_t n_error_of;
    int error_of_all;
    uint32_t max_recoveries;
    /* resolved when frozen: */
    int32_t handler; /* index of the step handling this one's failures, or -1 */
    uint32_t skip_checks; /* WF__CHECK_* bits skipped for this step alone */
    int is_handler;  /* some step's failures come here */
    int needs_clock; /* retry or handler: time the first attempt */
    int join;        /* accepts is a tuple */
    int blocking;    /* runs on the blocking pool */
    int join_list;   /* joins list fan-outs of its accepted type */
    struct wf__step_res *res; /* resource.c: the resources it declares, or NULL */
    uint32_t take;            /* join_list: Take(n), 0: all (fanout.c) */
    /* child workflows it declares (lib/children.c): retained, NULL for the workflow itself */
    struct wf_workflow **children;
    uint32_t n_children;
} wf__step;

#define WF__CHECK_REACHABILITY 1u
#define WF__CHECK_TERMINAL     2u
#define WF__CHECK_DEAD_END     4u

/*
 * The calling thread's shard number (threads take numbers in turn on their
 * first call; taken modulo a table's shard count). Defined in alloc.c.
 */
extern WF__TLS uint32_t wf__tls_shard;
uint32_t wf__thread_shard_slow(void);
static inline uint32_t wf__thread_shard(void)
{
    uint32_t i = wf__tls_shard;
    return WF__LIKELY(i != UINT32_MAX) ? i : wf__thread_shard_slow();
}

/*
 * A reference on wf counted in the calling thread's shard (the caller holds
 * one already), and its release in the releasing thread's (workflow.c).
 */
void wf__workflow_retain_local(wf_workflow *wf);
void wf__workflow_release_local(wf_workflow *wf);

/* Reference shards of a workflow (threads take them modulo); see struct wf_workflow. */
#define WF__WF_REF_SHARDS 8
#define WF__REFS_KILLED   (1ull << 62)

struct wf_workflow {
    char *name;
    wf_registry *reg;
    wf__step **steps; /* pointers stable; order of addition */
    uint32_t n_steps;
    uint32_t cap_steps;
    int64_t timeout_ms;
    uint32_t max_runs; /* num_concurrent_runs per executor, 0: no limit */
    int validation;
    uint32_t skip_checks; /* WF__CHECK_* bits */

    pthread_mutex_t lock; /* guards freezing and the cached validation */
    _Atomic int frozen;   /* set (release) once the fields below are built */
    const wf_event_type *start_type;
    const wf_event_type *stop_type;
    /* routing: steps accepting type id t are route_steps[route_off[t] .. route_off[t+1]) */
    uint32_t n_route_types;
    uint32_t *route_off;
    uint32_t *route_steps;
    uint32_t *join_of;     /* type id -> the list join step collecting it (UINT32_MAX: none) */
    _Atomic int validated; /* 0 unknown, 1 passed, -1 failed (written under lock; 1 is final) */
    char *validation_msg; /* report of the failed run-start validation */
    struct wf__resources *res;      /* resource.c: declared resources, or NULL */
    struct wf_schema *state_schema; /* schema.c: the store's schema, or NULL */
    /*
     * Last, a cache line past the fields every run and invocation reads, the
     * references. refs counts the global ones (wf_workflow_retain): on a
     * line with steps or route_off it would pass that line between cores.
     * A context (one per run) counts its reference in per-thread shards
     * instead (wf__workflow_retain_local, a line each): threads that start
     * and end runs of one workflow at once pass no line between their
     * cores. The last global release ends the split (WF__REFS_KILLED,
     * workflow.c): refs takes the shards' sum, and the workflow is freed
     * when refs is down to the flag alone.
     */
    char refs_pad[WF__CACHELINE];
    _Atomic uint64_t refs;
    struct {
        _Atomic uint64_t n; /* references taken less dropped here (mod 2^63); bit 63: killed */
        char pad[WF__CACHELINE - sizeof(uint64_t)];
    } shard_refs[WF__WF_REF_SHARDS];
};

/* schema.c: the state schema (no-ops without one) */
int wf__state_defaults(const wf_workflow *wf, wf_value *state);
int wf__state_check_set(const wf_workflow *wf, const char *path, wf_value val);
int wf__state_check(const wf_workflow *wf, wf_value state);

/* The steps that receive an event of type t (frozen workflow). */
void wf__workflow_route_slow(const wf_workflow *wf, const wf_event_type *t, const uint32_t **steps,
                             uint32_t *n, uint32_t *scratch, uint32_t scratch_cap);
static inline void wf__workflow_route(const wf_workflow *wf, const wf_event_type *t,
                                      const uint32_t **steps, uint32_t *n, uint32_t *scratch,
                                      uint32_t scratch_cap)
{
    if (WF__LIKELY(t->id < wf->n_route_types)) {
        uint32_t a = wf->route_off[t->id];
        *steps = wf->route_steps + a;
        *n = wf->route_off[t->id + 1] - a;
        return;
    }
    wf__workflow_route_slow(wf, t, steps, n, scratch, scratch_cap);
}
/* The list join step that collects events of type collect (UINT32_MAX: none). */
uint32_t wf__workflow_join_scan(const wf_workflow *wf, const wf_event_type *collect);
static inline uint32_t wf__workflow_join_of(const wf_workflow *wf, const wf_event_type *collect)
{
    if (WF__LIKELY(collect->id < wf->n_route_types && collect->reg == wf->reg)) /* the table */
        return wf->join_of[collect->id];
    return wf__workflow_join_scan(wf, collect);
}
/* 1 if step s accepts events of type t (exact, or subtype when it opted in). */
int wf__step_accepts(const wf__step *s, const wf_event_type *t);
wf__step *wf__workflow_find_step(const wf_workflow *wf, const char *name);
/* Freeze + run-start validation according to the workflow's settings (cached). */
int wf__workflow_prepare(wf_workflow *wf, char **message);

/* validate.c: append problems to b (one per line); return the number found. */
int wf__validate_definition(const wf_workflow *wf, const wf_event_type **start,
                            const wf_event_type **stop, wf__buf *b);
int wf__validate_run(const wf_workflow *wf, uint32_t skip_checks, wf__buf *b);

/* ---------------------------------------------------------------- context */

struct wf__run;

struct wf_ctx {
    _Atomic uint32_t refs;
    /* The run using the context, or NULL: written under run_lock, read atomically. */
    wf__lock run_lock; /* 112 bytes in all: a 128-byte block with the allocation header */
    wf_workflow *wf;
    pthread_rwlock_t lock; /* guards state */
    wf_value state;        /* a map */
    _Atomic(struct wf__run *) run;
    /*
     * A run's bookkeeping parked in the context (msgpack, the "run" map of a
     * snapshot): left by a cancel or loaded from a snapshot taken mid-run;
     * wf_run_resume continues it. Under run_lock.
     */
    void *parked;
    size_t parked_len;
};

int wf__ctx_replace_state(wf_ctx *ctx, wf_value state);
/* Replaces the parked run (takes bytes; NULL clears it). */
void wf__ctx_park(wf_ctx *ctx, void *bytes, size_t len);
/* Takes the parked run out of the context (caller owns *bytes), or 0 if there is none. */
int wf__ctx_unpark(wf_ctx *ctx, void **bytes, size_t *len);
/*
 * A live snapshot of the context's run (executor/cut.c): the "run" map of
 * a snapshot in *bytes. WF_ESTATE if no run is in flight.
 */
int wf__ctx_capture(wf_ctx *ctx, void **bytes, size_t *len, int64_t *pause_ns);
/* Decodes a parked run against wf without starting it: 0 or why not. */
int wf__run_check(wf_workflow *wf, const void *bytes, size_t len, char **message);
/* A copy of the parked run (caller owns *bytes): 1, or 0 when none, or WF_ENOMEM. */
int wf__ctx_parked_copy(wf_ctx *ctx, void **bytes, size_t *len);

#endif
