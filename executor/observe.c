/*
 * observe.c: the executor side of observation (include/wf/observe.h).
 *
 * Hooks in the run engine (hooks.c) and pool.c test ex->obs_mask (one relaxed load of a word
 * nobody writes while the observers stay the same) and, when the kind is
 * wanted, fill a wf__obs_rec and call wf__obs_write. The record goes into a
 * single-producer ring of the calling thread (one per worker and per
 * blocking thread, indexed by the thread's slot; threads outside the pool
 * share one ring under a mutex). One exporter thread per executor drains
 * the rings in rounds, resolves names and calls the observers. A full ring
 * drops the record and counts it. Nothing a worker does waits for the
 * exporter: the exporter sleeps on a futex with a timeout, and a producer
 * wakes it only when it sees it asleep (a missed wake costs at most the
 * timeout, never a record).
 *
 * Names: a record keeps pointers to its workflow and event type. Every
 * workflow a record names is held (retained) by the executor before the
 * record is written and released when the executor is freed, so the
 * exporter can read names even after the user freed the workflow. A
 * thread writing a record about a run holds that run, so the workflow is
 * alive at that moment.
 */
#include "exec.h"

#include <cpuid.h>
#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <wf/observe.h>

#define OBS_RING_DEFAULT 4096u /* records per thread ring (64 B each) */
#define OBS_RING_MIN     64u
#define OBS_RING_MAX     (1u << 24)
#define OBS_MAX          16u
#define OBS_NAME_CACHE   64u        /* type names the exporter remembers */
#define OBS_SHOW_NS      1000000LL  /* ns: a step running longer has its STEP_START delivered */
#define OBS_BATCH_NS     200000LL   /* ns: exporter sleep after a small batch */
#define OBS_IDLE_MIN     1000000LL  /* ns: exporter sleep when idle, doubling... */
#define OBS_IDLE_MAX     20000000LL /* ...up to this: the most a record waits when few come */

typedef wf__obs_ring obs_ring;

typedef struct obs_entry {
    wf_observer o;
    uint32_t id;
} obs_entry;

struct wf__obs {
    struct wf_executor *ex;
    uint64_t ring_size; /* records per ring: a power of two */
    obs_ring *rings;
    uint32_t nrings;          /* workers + blocking threads + 1 (outside, last) */
    uint64_t *cursor, *limit; /* exporter's: per ring, next and end of the round */
    uint8_t *show;            /* exporter's: per ring, its held STEP_START to deliver */
    wf__obs_rec **base;       /* exporter's: per ring, its records (read once a round: the
                                 pointer sits on the producer's line) */
    /* exporter's: type names by (workflow, id); off the producers' first line */
    struct {
        const wf_workflow *wf;
        uint32_t id;
        const char *name;
    } names[OBS_NAME_CACHE] WF__ALIGNED;
    pthread_mutex_t outside_lock;

    /* observers, rounds: under lock (the exporter holds it while it delivers) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    obs_entry obs[OBS_MAX];
    uint32_t nobs;
    uint32_t next_id;
    uint64_t round_started, round_done;
    int kick, stop;
    uint64_t delivered;
    pthread_t thread;
    int started;
    /*
     * futex word: 1 while the exporter sleeps. Every record reads it, so it
     * has a line to itself: the exporter's counters (delivered, rounds) are
     * written all the time and would pull it across cores per record.
     */
    _Atomic int sleeping WF__ALIGNED;
    /* drain rounds that gave slots back: a thread's drop window ends at the next (wf__obs_tls) */
    _Atomic uint32_t drained;
    char sleeping_pad[WF__CACHELINE - sizeof(_Atomic int) - sizeof(_Atomic uint32_t)];
    double ns_per_tick; /* exporter's: the TSC's rate as measured so far */

    /* held workflows */
    pthread_mutex_t wf_lock;
    const wf_workflow **wfs;
    uint32_t nwfs, capwfs;
};

/* ------------------------------------------------------------- the clock */

int wf__obs_tsc;
static int64_t tsc_base_ns, tsc_base_ticks;
static double tsc_ns_per_tick;
static pthread_once_t tsc_once = PTHREAD_ONCE_INIT;

/*
 * Once per process: use the TSC if the CPU says it is invariant, with its
 * rate measured against CLOCK_MONOTONIC over 2 ms (each exporter refines it
 * over longer spans as it goes).
 */
static void tsc_calibrate(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u)
        return;
    __get_cpuid(0x80000007u, &a, &b, &c, &d);
    if (!(d & (1u << 8))) /* invariant TSC */
        return;
    int64_t t0 = wf__now_ns(), c0 = (int64_t)__builtin_ia32_rdtsc();
    int64_t t1, c1;
    do {
        t1 = wf__now_ns();
        c1 = (int64_t)__builtin_ia32_rdtsc();
    } while (t1 - t0 < 2000000);
    if (c1 <= c0)
        return;
    tsc_base_ns = t0;
    tsc_base_ticks = c0;
    tsc_ns_per_tick = (double)(t1 - t0) / (double)(c1 - c0);
    wf__obs_tsc = 1;
#endif
}

/* The exporter's conversions (rate: its own refinement of tsc_ns_per_tick). */
static int64_t to_ns(const struct wf__obs *o, int64_t t)
{
    if (!wf__obs_tsc)
        return t;
    return tsc_base_ns + (int64_t)((double)(t - tsc_base_ticks) * o->ns_per_tick);
}

static int64_t dur_ns(const struct wf__obs *o, int64_t d)
{
    return wf__obs_tsc ? (int64_t)((double)d * o->ns_per_tick) : d;
}

/* Each round: the rate over everything since the base, once that is more than 100 ms. */
static void refine(struct wf__obs *o)
{
#if defined(__x86_64__)
    if (!wf__obs_tsc)
        return;
    int64_t t = wf__now_ns(), c = (int64_t)__builtin_ia32_rdtsc();
    if (t - tsc_base_ns > 100000000 && c > tsc_base_ticks)
        o->ns_per_tick = (double)(t - tsc_base_ns) / (double)(c - tsc_base_ticks);
#else
    (void)o;
#endif
}

static long futex(_Atomic int *w, int op, int val, const struct timespec *ts)
{
    return syscall(SYS_futex, (int *)w, op, val, ts, NULL, 0);
}

static inline struct wf__obs *obs_get(struct wf_executor *ex)
{
    return __atomic_load_n(&ex->obs, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------ producers */

/* Keeps wf alive until the executor goes (once per workflow); 0, or WF_ENOMEM. */
static int hold(struct wf__obs *o, const wf_workflow *wf)
{
    int rc = 0;
    pthread_mutex_lock(&o->wf_lock);
    uint32_t i = 0;
    while (i < o->nwfs && o->wfs[i] != wf)
        i++;
    if (i == o->nwfs) {
        if (o->nwfs == o->capwfs) {
            uint32_t cap = o->capwfs ? o->capwfs * 2 : 8;
            const wf_workflow **n = wf__realloc((void *)o->wfs, cap * sizeof *n);
            if (n == NULL)
                rc = WF_ENOMEM;
            else {
                o->wfs = n;
                o->capwfs = cap;
            }
        }
        if (rc == 0)
            o->wfs[o->nwfs++] = wf_workflow_retain((wf_workflow *)wf);
    }
    pthread_mutex_unlock(&o->wf_lock);
    return rc;
}

/* The records a ring record stands for (what observers get, and the counts). */
static inline unsigned rec_count(const wf__obs_rec *r)
{
    if (r->kind == WF__OBS_STEP)
        return 2u + !!(r->flags & WF__OBS_F_OUT) + !!(r->flags & WF__OBS_F_ROUTED);
    return 1u + (r->flags & WF__OBS_F_EMITTED);
}

/* The calling thread's own ring in ex, or NULL (a thread outside the pool). */
static inline obs_ring *own_ring(struct wf__obs *o, struct wf_executor *ex)
{
    wf__slot *sl = wf__tls_slot;
    return sl && sl->ex == ex ? &o->rings[sl->index] : NULL;
}

/*
 * The next slot of rg for a record naming wf (its producer only, or under
 * outside_lock), or NULL: the ring is full, the record (n of them) dropped
 * and counted. The slot is not the exporter's until publish().
 */
static wf__obs_rec *reserve(struct wf__obs *o, obs_ring *rg, const wf_workflow **wf, unsigned n)
{
    if (WF__UNLIKELY(rg->recs == NULL)) {
        /* a thread's ring is made on its first record (published by the head's release) */
        rg->recs = wf__malloc(o->ring_size * sizeof(wf__obs_rec));
        if (rg->recs == NULL) {
            wf__obs_count_dropped(rg, n);
            return NULL;
        }
    }
    if (*wf && *wf != rg->last_wf) {
        if (hold(o, *wf) == 0)
            rg->last_wf = *wf;
        else
            *wf = NULL; /* out of memory: the record names no workflow */
    }
    uint64_t h = atomic_load_explicit(&rg->head, memory_order_relaxed);
    if (WF__UNLIKELY(h - rg->tail_cache >= o->ring_size)) {
        /*
         * Full as far as we know. The tail's cache line is the exporter's:
         * re-reading it on every record would cost a cross-core miss per
         * record exactly when the exporter is behind, so only every 64th.
         */
        if ((rg->full_checks++ & 63) == 0)
            rg->tail_cache = atomic_load_explicit(&rg->tail, memory_order_acquire);
        if (h - rg->tail_cache >= o->ring_size) {
            wf__obs_count_dropped(rg, n);
            return NULL;
        }
    }
    return &rg->recs[h & (o->ring_size - 1)];
}

/* The reserved slot (standing for n records) goes to the exporter. */
static void publish(struct wf__obs *o, obs_ring *rg, unsigned n)
{
    wf__obs_publish_to(o, rg, o->ring_size - 1, &o->sleeping, n);
}

/*
 * The exporter sleeps (until its timeout, at most OBS_IDLE_MAX) and rg
 * looks half full (head: its head): wake it then, not at every record (a
 * wake is a system call of a few microseconds; a missed one costs at most
 * the timeout).
 */
__attribute__((noinline)) void wf__obs_wake(struct wf__obs *o, obs_ring *rg, uint64_t head)
{
    /* tail_cache may be old (it is read when the ring looks full): look again */
    rg->tail_cache = atomic_load_explicit(&rg->tail, memory_order_acquire);
    if (head - rg->tail_cache >= o->ring_size / 2 && atomic_exchange(&o->sleeping, 0))
        futex(&o->sleeping, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static void write_rec(struct wf_executor *ex, wf__obs_rec *r)
{
    struct wf__obs *o = obs_get(ex);
    if (o == NULL) {
        wf__free_mem(r->message);
        return;
    }
    if (r->ts == 0)
        r->ts = wf__obs_now();
    obs_ring *rg = own_ring(o, ex);
    int outside = rg == NULL;
    if (outside) {
        rg = &o->rings[o->nrings - 1];
        pthread_mutex_lock(&o->outside_lock);
    }
    unsigned n = rec_count(r);
    wf__obs_rec *slot = reserve(o, rg, &r->wf, n);
    if (slot) {
        *slot = *r;
        publish(o, rg, n);
    } else {
        wf__free_mem(r->message);
    }
    if (outside)
        pthread_mutex_unlock(&o->outside_lock);
}

/* What the calling thread holds back (see wf__obs_tls). */
enum {
    HELD_NONE = WF__HELD_NONE,
    HELD_START = WF__HELD_START,
    HELD_OUT = WF__HELD_OUT,
    HELD_EMIT = WF__HELD_EMIT
};
WF__TLS wf__obs_tls wf__obs_held;
#define tls_held wf__obs_held

void wf__obs_undefer(void)
{
    if (tls_held.state != HELD_NONE) {
        tls_held.state = HELD_NONE;
        if (tls_held.slot)
            publish(tls_held.o, tls_held.rg, rec_count(tls_held.slot));
    }
}

/*
 * The calling thread's own ring in ex, or NULL (outside the pool, or no
 * observation). Cached in tls_held: a pool thread serves one executor for
 * its life, and the rings live until the executor's threads are gone.
 */
static inline obs_ring *my_ring(struct wf_executor *ex)
{
    if (WF__LIKELY(tls_held.ex == ex))
        return tls_held.rg;
    struct wf__obs *o = obs_get(ex);
    obs_ring *rg = o ? own_ring(o, ex) : NULL;
    if (rg) {
        tls_held.ex = ex;
        tls_held.o = o;
        tls_held.rg = rg;
        tls_held.mask = o->ring_size - 1;
        tls_held.drained = &o->drained;
        tls_held.sleeping = &o->sleeping;
    }
    return rg;
}

/* The next slot of the calling thread's ring rg for a record of wf, or NULL (dropped, counted). */
static inline wf__obs_rec *next_slot(obs_ring *rg, const wf_workflow *wf)
{
    uint64_t h = atomic_load_explicit(&rg->head, memory_order_relaxed);
    uint64_t size = tls_held.o->ring_size;
    /* last_wf is set once the ring exists */
    if (WF__LIKELY(wf == rg->last_wf && wf && h - rg->tail_cache < size)) {
        wf__obs_rec *s = &rg->recs[h & (size - 1)];
        s->wf = wf;
        return s;
    }
    wf__obs_rec *s = reserve(tls_held.o, rg, &wf, 1);
    if (s)
        s->wf = wf;
    return s;
}

/*
 * Holds a slot of the calling thread's ring for a record of run_id (state
 * and content left to the caller; slot NULL if the ring is full: one
 * record dropped, counted): 0, or -1 if the thread has no ring of its own.
 */
static int hold_slot(struct wf_executor *ex, const wf_workflow *wf, uint64_t run_id)
{
    wf__obs_undefer();
    obs_ring *rg = my_ring(ex);
    if (rg == NULL)
        return -1;
    tls_held.slot = next_slot(rg, wf);
    tls_held.run_id = run_id;
    return 0;
}

int64_t wf__obs_step_begin(struct wf_executor *ex, const struct wf_workflow *wf, uint64_t run_id,
                           uint32_t step, uint32_t type, uint32_t attempt, uint64_t event_id)
{
    if (WF__UNLIKELY(tls_held.state != HELD_NONE))
        wf__obs_undefer();
    obs_ring *rg = my_ring(ex);
    if (WF__UNLIKELY(rg == NULL)) {
        wf__obs_rec r = {.kind = WF_OBS_STEP_START,
                         .step = (uint16_t)step,
                         .type = type,
                         .attempt = attempt,
                         .ts = wf__obs_now(),
                         .run_id = run_id,
                         .wf = wf,
                         .event_id = event_id};
        write_rec(ex, &r);
        return r.ts;
    }
    /* After a drop window the ring looks full: this is when to read its tail again. */
    uint32_t drained = atomic_load_explicit(tls_held.drained, memory_order_acquire);
    uint64_t h = atomic_load_explicit(&rg->head, memory_order_relaxed);
    if (WF__UNLIKELY(h - rg->tail_cache > tls_held.mask))
        rg->tail_cache = atomic_load_explicit(&rg->tail, memory_order_acquire);
    wf__obs_rec *s = next_slot(rg, wf);
    if (WF__UNLIKELY(s == NULL)) {
        /* full (its START counted): the invocation is dropped, and the next ones */
        tls_held.drop_left = WF__OBS_DROP_WINDOW - 1;
        tls_held.drained_seen = drained;
        return 1;
    }
    return wf__obs_hold_start(&tls_held, rg, s, run_id, step, type, attempt, event_id);
}

int wf__obs_route_held(struct wf_executor *ex, uint64_t run_id, const void *ev, uint32_t step,
                       uint64_t event_id, uint32_t waiting)
{
    if ((tls_held.state != HELD_OUT && tls_held.state != HELD_EMIT) || tls_held.ex != ex ||
        tls_held.run_id != run_id || tls_held.out_ev != ev)
        return 0;
    if (wf__obs_route_fast(ex, run_id, ev, step, event_id, waiting))
        return 1;
    wf__obs_rec *s = tls_held.slot;
    if (s == NULL) { /* an emit held without a slot (the ring was full) */
        wf__obs_count_dropped(tls_held.rg, 1);
        tls_held.state = HELD_NONE;
        return 1;
    }
    if (tls_held.state == HELD_EMIT) {
        /* the emit rides on the routing's record */
        s->kind = WF_OBS_EVENT_ROUTE;
        s->flags = WF__OBS_F_EMITTED;
        s->step = (uint16_t)step;
        s->attempt = tls_held.emit_step;
        s->event_id = event_id;
        s->dv = waiting;
        wf__obs_undefer();
        return 1;
    }
    /* its STEP record, whose fields the routing does not fit: it goes on its own */
    wf__obs_undefer();
    return 0;
}

void wf__obs_end(struct wf_executor *ex, wf__obs_rec *end, uint32_t out_type)
{
    if ((end->error != 0 || end->message != NULL) && tls_held.state == HELD_START &&
        tls_held.ex == ex && tls_held.run_id == end->run_id && tls_held.event_id == end->event_id) {
        /* a failure (no emit): the STEP record carries the error and its message */
        wf__obs_rec *s = tls_held.slot;
        s->kind = WF__OBS_STEP;
        s->dv = end->dv;
        s->error = end->error;
        s->message = end->message;
        wf__obs_undefer();
        return;
    }
    wf__obs_write(ex, end);
    if (out_type == WF__OBS_NO_TYPE)
        return;
    /* its emit, held back for its routing */
    if (hold_slot(ex, end->wf, end->run_id) < 0) {
        wf__obs_rec em = {.kind = WF_OBS_EVENT_EMIT,
                          .step = end->step,
                          .type = out_type,
                          .ts = end->ts,
                          .run_id = end->run_id,
                          .wf = end->wf};
        write_rec(ex, &em);
        return;
    }
    wf__obs_rec *s = tls_held.slot;
    if (s) {
        const wf_workflow *wf = s->wf;
        memset(s, 0, sizeof *s);
        s->kind = WF_OBS_EVENT_EMIT;
        s->step = end->step;
        s->type = out_type;
        s->ts = end->ts;
        s->run_id = end->run_id;
        s->wf = wf;
    }
    tls_held.emit_step = end->step;
    tls_held.state = HELD_EMIT;
}

void wf__obs_write(struct wf_executor *ex, wf__obs_rec *r)
{
    if (WF__UNLIKELY(tls_held.state != HELD_NONE))
        wf__obs_undefer(); /* (a routing that goes with it came by wf__obs_route_held) */
    write_rec(ex, r);
}

/* ------------------------------------------------------------- exporter */

/*
 * The name of type id in wf's registry. The registry's array may move when
 * it grows, so it is read under its lock; a small cache (exporter thread
 * only) keeps that off the common path. Names never move nor go while the
 * executor holds the workflow.
 */
static const char *type_name(struct wf__obs *o, const wf_workflow *wf, uint32_t id)
{
    if (wf == NULL || id == WF__OBS_NO_TYPE)
        return NULL;
    uint32_t h = (uint32_t)(((uintptr_t)wf >> 6) * 31u + id) & (OBS_NAME_CACHE - 1);
    if (o->names[h].wf == wf && o->names[h].id == id)
        return o->names[h].name;
    wf_registry *reg = wf->reg;
    const char *name = NULL;
    pthread_mutex_lock(&reg->lock);
    if (id < atomic_load(&reg->n))
        name = reg->types[id]->name;
    pthread_mutex_unlock(&reg->lock);
    o->names[h].wf = wf;
    o->names[h].id = id;
    o->names[h].name = name;
    return name;
}

/* Gives pub to every observer that wants its kind. */
static void give(struct wf__obs *o, const wf_obs_record *pub)
{
    for (uint32_t i = 0; i < o->nobs; i++) {
        uint32_t k = o->obs[i].o.kinds ? o->obs[i].o.kinds : WF_OBS_ALL;
        if (k & (1u << pub->kind))
            o->obs[i].o.record(pub, o->obs[i].o.user);
    }
    o->delivered++;
}

static const char *step_name(const wf_workflow *wf, uint32_t s)
{
    return wf && s != WF__OBS_NO_STEP && s < wf->n_steps ? wf->steps[s]->name : NULL;
}

/*
 * A WF__OBS_STEP record: the records it stands for, in the order they
 * happened (shown: its STEP_START was delivered while the step ran).
 */
static void deliver_step(struct wf__obs *o, const wf__obs_rec *r, wf_obs_record *pub, int shown)
{
    int routed = (r->flags & WF__OBS_F_ROUTED) != 0;
    int64_t dur = routed ? r->dv & (((int64_t)1 << WF__OBS_DUR_BITS) - 1) : r->dv;
    uint32_t ret = routed ? (uint32_t)r->error & 0xffffu : (uint32_t)r->error;
    pub->kind = WF_OBS_STEP_START;
    pub->attempt = r->attempt;
    if (!shown)
        give(o, pub);
    pub->kind = WF_OBS_STEP_END;
    pub->ts_ns = to_ns(o, r->ts + dur);
    pub->dur_ns = dur_ns(o, dur);
    if (!(r->flags & WF__OBS_F_RET)) {
        pub->error = r->error;
        pub->message = r->message;
        give(o, pub);
        return;
    }
    give(o, pub);
    pub->event_type = type_name(o, r->wf, ret);
    pub->event_id = 0;
    pub->attempt = 0;
    pub->dur_ns = 0;
    if (r->flags & WF__OBS_F_OUT) {
        pub->kind = WF_OBS_EVENT_EMIT;
        give(o, pub);
    }
    if (routed) {
        pub->kind = WF_OBS_EVENT_ROUTE;
        pub->step = step_name(r->wf, (uint32_t)r->error >> 16);
        pub->event_id = r->route_id;
        pub->value = (int64_t)((uint64_t)r->dv >> WF__OBS_DUR_BITS);
        give(o, pub);
    }
}

/* shown: r's STEP_START was delivered already, from the held slot (drain()). */
static void deliver(struct wf__obs *o, wf__obs_rec *r, uint32_t ring, int shown)
{
    wf_obs_record pub;
    memset(&pub, 0, sizeof pub);
    pub.kind = (wf_obs_kind)r->kind;
    pub.thread = ring == o->nrings - 1 ? WF_OBS_OUTSIDE : ring;
    pub.ts_ns = to_ns(o, r->ts);
    pub.run_id = r->run_id;
    if (r->wf) {
        pub.workflow = r->wf->name;
        pub.step = step_name(r->wf, r->step);
        pub.event_type = type_name(o, r->wf, r->type);
    }
    pub.event_id = r->event_id;
    pub.workers = o->ex->nworkers;
    if (r->kind == WF__OBS_STEP) {
        deliver_step(o, r, &pub, shown);
        if (!(r->flags & WF__OBS_F_RET)) {
            wf__free_mem(r->message);
            r->message = NULL;
        }
        return;
    }
    if (shown && r->kind == WF_OBS_STEP_START)
        return; /* delivered while its step ran */
    pub.error = r->error;
    pub.message = r->message;
    switch (pub.kind) {
    case WF_OBS_RUN_END:
        pub.status = r->attempt;
        pub.dur_ns = dur_ns(o, r->dv);
        break;
    case WF_OBS_RUN_START: /* message: the run's traceparent */
        pub.traceparent = r->message;
        pub.message = NULL;
        pub.value = r->dv; /* a child run's parent run id, else 0 */
        break;
    case WF_OBS_SPAN_BEGIN: /* dv: span << 32 | parent; message: the name */
        pub.attempt = r->attempt;
        pub.span = (uint32_t)((uint64_t)r->dv >> 32);
        pub.parent_span = (uint32_t)r->dv;
        pub.name = r->message;
        pub.message = NULL;
        break;
    case WF_OBS_SPAN_ATTR: /* error: the span; message: key (\0 string value); dv: integer */
        pub.attempt = r->attempt;
        pub.span = (uint32_t)r->error;
        pub.error = 0;
        pub.name = r->message;
        pub.message = NULL;
        if ((r->flags & WF__OBS_F_STR) && r->message)
            pub.str = r->message + strlen(r->message) + 1;
        else
            pub.value = r->dv;
        break;
    case WF_OBS_SPAN_END: /* dv: the span; error, message: its status */
        pub.attempt = r->attempt;
        pub.span = (uint32_t)r->dv;
        break;
    case WF_OBS_STEAL:
        pub.victim = r->attempt;
        pub.value = r->dv;
        break;
    case WF_OBS_STEP_END:
    case WF_OBS_WAIT_RESUME:
    case WF_OBS_UNPARK:
        pub.attempt = r->attempt;
        pub.dur_ns = dur_ns(o, r->dv);
        break;
    default:
        pub.attempt = r->attempt;
        pub.value = r->dv;
        break;
    }
    if (r->flags & WF__OBS_F_EMITTED) { /* its emit first, as the producer saw it */
        wf_obs_record em = pub;
        em.kind = WF_OBS_EVENT_EMIT;
        em.step = step_name(r->wf, r->attempt);
        em.event_id = 0;
        em.attempt = 0;
        em.value = 0;
        give(o, &em);
        pub.attempt = 0;
    }
    give(o, &pub);
    wf__free_mem(r->message);
    r->message = NULL;
}

/* The STEP_START of r, a slot still held by its thread: only its start fields are read. */
static void show_start(struct wf__obs *o, const wf__obs_rec *r, uint32_t ring)
{
    wf_obs_record pub;
    memset(&pub, 0, sizeof pub);
    pub.kind = WF_OBS_STEP_START;
    pub.thread = ring == o->nrings - 1 ? WF_OBS_OUTSIDE : ring;
    pub.ts_ns = to_ns(o, r->ts);
    pub.run_id = r->run_id;
    if (r->wf) {
        pub.workflow = r->wf->name;
        pub.step = step_name(r->wf, r->step);
        pub.event_type = type_name(o, r->wf, r->type);
    }
    pub.event_id = r->event_id;
    pub.attempt = r->attempt;
    pub.workers = o->ex->nworkers;
    give(o, &pub);
}

/*
 * One round (lock held): everything written before it started is delivered,
 * the rings merged by time (each ring is in its thread's order already), so
 * that within a round an event's routing comes before the step it feeds even
 * when two threads wrote them.
 */
static uint64_t drain(struct wf__obs *o, int kicked)
{
    uint64_t n = 0, mask = o->ring_size - 1;
    uint64_t *t = o->cursor, *h = o->limit;
    /*
     * A step running for longer than OBS_SHOW_NS (any, when kicked by a
     * flush) gets its STEP_START delivered now, from the slot its thread
     * holds (its start fields are final: see wf__obs_rec); the slot's
     * record, when published, is then delivered without it.
     */
    int64_t show_before =
        kicked ? INT64_MAX
               : wf__obs_now() - (int64_t)(OBS_SHOW_NS / (wf__obs_tsc ? o->ns_per_tick : 1.0));
    wf__obs_rec **base = o->base;
    for (uint32_t i = 0; i < o->nrings; i++) {
        obs_ring *rg = &o->rings[i];
        t[i] = atomic_load_explicit(&rg->tail, memory_order_relaxed);
        h[i] = atomic_load_explicit(&rg->head, memory_order_acquire);
        o->show[i] = atomic_load_explicit(&rg->held, memory_order_acquire) == h[i] + 1;
        /* made before the first head or held that says there are records (read only then) */
        base[i] = h[i] || o->show[i] ? rg->recs : NULL;
        o->show[i] = o->show[i] && rg->shown != h[i] && base[i][h[i] & mask].ts <= show_before;
    }
    for (;;) {
        uint32_t best = UINT32_MAX;
        int64_t bts = 0;
        for (uint32_t i = 0; i < o->nrings; i++) {
            if (t[i] == h[i] && !o->show[i])
                continue;
            int64_t ts = base[i][t[i] & mask].ts;
            if (best == UINT32_MAX || ts < bts) {
                best = i;
                bts = ts;
            }
        }
        if (best == UINT32_MAX)
            break;
        obs_ring *rg = &o->rings[best];
        wf__obs_rec *r = &base[best][t[best] & mask];
        if (t[best] == h[best]) { /* the held start */
            show_start(o, r, best);
            rg->shown = h[best];
            o->show[best] = 0;
            n++;
            continue;
        }
        deliver(o, r, best, rg->shown == t[best]);
        t[best]++;
        /* give slots back in batches: the tail's line is read by the producer */
        if ((t[best] & 255) == 0)
            atomic_store_explicit(&rg->tail, t[best], memory_order_release);
        n++;
    }
    for (uint32_t i = 0; i < o->nrings; i++)
        atomic_store_explicit(&o->rings[i].tail, t[i], memory_order_release);
    if (n) /* after the tails: a thread that sees it sees them */
        atomic_store_explicit(&o->drained,
                              atomic_load_explicit(&o->drained, memory_order_relaxed) + 1,
                              memory_order_release);
    return n;
}

static void flush_observers(struct wf__obs *o)
{
    for (uint32_t i = 0; i < o->nobs; i++)
        if (o->obs[i].o.flush)
            o->obs[i].o.flush(o->obs[i].o.user);
}

static void *exporter_main(void *arg)
{
    struct wf__obs *o = arg;
    int64_t idle = OBS_IDLE_MIN;
    pthread_mutex_lock(&o->lock);
    for (;;) {
        int stop = o->stop;
        int kicked = o->kick;
        o->kick = 0;
        uint64_t r = ++o->round_started;
        refine(o);
        uint64_t n = drain(o, kicked || stop);
        if (n || kicked)
            flush_observers(o);
        o->round_done = r;
        pthread_cond_broadcast(&o->cond);
        if (stop)
            break;
        if (n >= o->ring_size / 4) { /* busy: keep up */
            idle = OBS_IDLE_MIN;
            continue;
        }
        if (o->kick || o->stop)
            continue;
        /*
         * Little or nothing came: sleep until a ring is half full, a flush
         * wakes us, or the timeout. Draining right behind a producer would
         * pull every line of its ring across cores as soon as it is written
         * (and back for its next lap); in batches the hardware streams them.
         */
        int64_t wait = n ? OBS_BATCH_NS : idle;
        idle = n ? OBS_IDLE_MIN : (idle * 2 > OBS_IDLE_MAX ? OBS_IDLE_MAX : idle * 2);
        atomic_store(&o->sleeping, 1);
        pthread_mutex_unlock(&o->lock);
        struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
        futex(&o->sleeping, FUTEX_WAIT_PRIVATE, 1, &ts);
        atomic_store(&o->sleeping, 0);
        pthread_mutex_lock(&o->lock);
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

static void wake_exporter(struct wf__obs *o)
{
    atomic_store(&o->sleeping, 0);
    futex(&o->sleeping, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/* Waits (lock held) until a round that started after now has ended. */
static void wait_round(struct wf__obs *o)
{
    uint64_t target = o->round_started + 1;
    o->kick = 1;
    wake_exporter(o);
    while (o->round_done < target) {
        pthread_cond_wait(&o->cond, &o->lock);
        if (o->round_done < target && o->round_started < target) {
            o->kick = 1;
            wake_exporter(o);
        }
    }
}

/* --------------------------------------------------------------- set-up */

static void obs_destroy(struct wf__obs *o)
{
    if (o == NULL)
        return;
    if (o->rings) {
        for (uint32_t i = 0; i < o->nrings; i++) {
            obs_ring *rg = &o->rings[i];
            if (rg->recs == NULL)
                continue;
            uint64_t h = atomic_load(&rg->head);
            for (uint64_t t = atomic_load(&rg->tail); t != h; t++) {
                wf__obs_rec *r = &rg->recs[t & (o->ring_size - 1)];
                if (!(r->kind == WF__OBS_STEP && (r->flags & WF__OBS_F_RET)))
                    wf__free_mem(r->message);
            }
            wf__free_mem(rg->recs);
        }
        wf__free_aligned(o->rings);
    }
    wf__free_mem(o->cursor);
    wf__free_mem(o->limit);
    wf__free_mem(o->show);
    wf__free_mem(o->base);
    for (uint32_t i = 0; i < o->nwfs; i++)
        wf_workflow_free((wf_workflow *)o->wfs[i]);
    wf__free_mem((void *)o->wfs);
    pthread_mutex_destroy(&o->outside_lock);
    pthread_mutex_destroy(&o->lock);
    pthread_mutex_destroy(&o->wf_lock);
    pthread_cond_destroy(&o->cond);
    wf__free_aligned(o);
}

static struct wf__obs *obs_create(struct wf_executor *ex)
{
    pthread_once(&tsc_once, tsc_calibrate);
    struct wf__obs *o = wf__malloc_aligned(sizeof *o); /* zeroed; lines as laid out */
    if (o == NULL)
        return NULL;
    o->ns_per_tick = tsc_ns_per_tick;
    o->ex = ex;
    uint64_t want = ex->obs_buffer ? ex->obs_buffer : OBS_RING_DEFAULT;
    o->ring_size = OBS_RING_MIN;
    while (o->ring_size < want && o->ring_size < OBS_RING_MAX)
        o->ring_size *= 2;
    o->next_id = 1;
    pthread_mutex_init(&o->outside_lock, NULL);
    pthread_mutex_init(&o->lock, NULL);
    pthread_mutex_init(&o->wf_lock, NULL);
    pthread_cond_init(&o->cond, NULL);
    atomic_init(&o->sleeping, 0);
    o->nrings = ex->nworkers + ex->blk_max + WF_RUN_HERE_THREADS + 1;
    o->rings = wf__malloc_aligned(o->nrings * sizeof *o->rings);
    o->cursor = wf__calloc(o->nrings, sizeof *o->cursor);
    o->limit = wf__calloc(o->nrings, sizeof *o->limit);
    o->show = wf__calloc(o->nrings, 1);
    o->base = wf__calloc(o->nrings, sizeof *o->base);
    if (o->rings == NULL || o->cursor == NULL || o->limit == NULL || o->show == NULL ||
        o->base == NULL) {
        obs_destroy(o);
        return NULL;
    }
    memset(o->rings, 0, o->nrings * sizeof *o->rings);
    for (uint32_t i = 0; i < o->nrings; i++) {
        atomic_init(&o->rings[i].head, 0);
        atomic_init(&o->rings[i].tail, 0);
        atomic_init(&o->rings[i].dropped, 0);
        atomic_init(&o->rings[i].merged, 0);
        atomic_init(&o->rings[i].held, 0);
        o->rings[i].shown = UINT64_MAX;
    }
    /* the outside ring now (its writers take a lock); the threads' on their first record */
    o->rings[o->nrings - 1].recs = wf__malloc(o->ring_size * sizeof(wf__obs_rec));
    if (o->rings[o->nrings - 1].recs == NULL) {
        obs_destroy(o);
        return NULL;
    }
    if (pthread_create(&o->thread, NULL, exporter_main, o) != 0) {
        obs_destroy(o);
        return NULL;
    }
    o->started = 1;
    return o;
}

static void update_mask(struct wf_executor *ex, struct wf__obs *o)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < o->nobs; i++)
        m |= o->obs[i].o.kinds ? o->obs[i].o.kinds : WF_OBS_ALL;
    atomic_store_explicit(&ex->obs_mask, m & WF_OBS_ALL, memory_order_release);
}

WF_API int wf_executor_observe(wf_executor *ex, const wf_observer *obs, uint32_t *id)
{
    if (ex == NULL || obs == NULL || obs->record == NULL)
        return WF_EINVAL;
    /* the first observer makes the rings and the exporter (runs_lock: one maker) */
    pthread_mutex_lock(&ex->runs_lock);
    struct wf__obs *o = obs_get(ex);
    if (o == NULL) {
        if (ex->shutting_down) {
            pthread_mutex_unlock(&ex->runs_lock);
            return WF_ESHUTDOWN;
        }
        o = obs_create(ex);
        if (o == NULL) {
            pthread_mutex_unlock(&ex->runs_lock);
            return WF_ENOMEM;
        }
        __atomic_store_n(&ex->obs, o, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&ex->runs_lock);
    pthread_mutex_lock(&o->lock);
    if (o->nobs == OBS_MAX) {
        pthread_mutex_unlock(&o->lock);
        return WF_EOVERFLOW;
    }
    obs_entry *e = &o->obs[o->nobs++];
    e->o = *obs;
    e->id = o->next_id++;
    if (id)
        *id = e->id;
    update_mask(ex, o);
    pthread_mutex_unlock(&o->lock);
    return 0;
}

WF_API int wf_executor_unobserve(wf_executor *ex, uint32_t id)
{
    if (ex == NULL)
        return WF_EINVAL;
    struct wf__obs *o = obs_get(ex);
    if (o == NULL)
        return WF_ENOTFOUND;
    pthread_mutex_lock(&o->lock);
    uint32_t i = 0;
    while (i < o->nobs && o->obs[i].id != id)
        i++;
    if (i == o->nobs) {
        pthread_mutex_unlock(&o->lock);
        return WF_ENOTFOUND;
    }
    /* deliver what was written before the call, then take it out */
    wait_round(o);
    i = 0;
    while (i < o->nobs && o->obs[i].id != id)
        i++;
    if (i == o->nobs) { /* removed by another caller meanwhile */
        pthread_mutex_unlock(&o->lock);
        return WF_ENOTFOUND;
    }
    wf_observer gone = o->obs[i].o;
    memmove(&o->obs[i], &o->obs[i + 1], (o->nobs - i - 1) * sizeof o->obs[0]);
    o->nobs--;
    update_mask(ex, o);
    pthread_mutex_unlock(&o->lock);
    if (gone.flush)
        gone.flush(gone.user);
    if (gone.user_free)
        gone.user_free(gone.user);
    return 0;
}

WF_API int wf_executor_observe_flush(wf_executor *ex)
{
    if (ex == NULL)
        return WF_EINVAL;
    struct wf__obs *o = obs_get(ex);
    if (o == NULL)
        return 0;
    pthread_mutex_lock(&o->lock);
    wait_round(o);
    pthread_mutex_unlock(&o->lock);
    return 0;
}

WF_API void wf_executor_observe_stats(wf_executor *ex, wf_obs_stats *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    struct wf__obs *o = ex ? obs_get(ex) : NULL;
    if (o == NULL)
        return;
    for (uint32_t i = 0; i < o->nrings; i++) {
        out->written += atomic_load(&o->rings[i].head) + atomic_load(&o->rings[i].merged);
        out->dropped += atomic_load(&o->rings[i].dropped);
    }
    pthread_mutex_lock(&o->lock);
    out->delivered = o->delivered;
    pthread_mutex_unlock(&o->lock);
}

void wf__obs_shutdown(struct wf_executor *ex)
{
    struct wf__obs *o = obs_get(ex);
    if (o == NULL)
        return;
    atomic_store(&ex->obs_mask, 0);
    pthread_mutex_lock(&o->lock);
    o->stop = 1; /* the exporter drains once more, then ends */
    pthread_mutex_unlock(&o->lock);
    wake_exporter(o);
    pthread_join(o->thread, NULL);
    for (uint32_t i = 0; i < o->nobs; i++)
        if (o->obs[i].o.user_free)
            o->obs[i].o.user_free(o->obs[i].o.user);
    o->nobs = 0;
    __atomic_store_n(&ex->obs, NULL, __ATOMIC_RELEASE);
    obs_destroy(o);
}
