/*
 * cut.c: live snapshots of a running run: a consistent cut taken while the
 * executor goes on, copied into an image and encoded (resume.c reads it
 * back), and both sides of the gate protocol that makes the cut possible.
 *
 * The cut: the snapshot closes the run's gate. From then on a task runner
 * that picks up one of the run's tasks parks it on the run instead of running
 * it, and one whose task is about to make an effect visible (route its
 * emissions, finish its slot, touch a buffer or a waiter) waits for the gate
 * to open. The snapshot waits for the effects under way to end, takes the
 * run's `outside` lock for writing (timers, handler sends and completions
 * route under it for reading), and waits until every taken slot of every
 * step is accounted for: parked, in a worker's hands with nothing visible
 * done yet (in progress), or owned by an async completion token. Then
 * nothing of the run moves: it copies the bookkeeping (the image: events
 * retained, not copied) and opens the gate; the image is encoded while the
 * run goes on. The run's pause is that wait plus the copy (~15 ms for 10^6
 * queued events); other runs never stop.
 *
 * Every event is then exactly once: queued (a pending queue, a parked task,
 * the unstarted rest of a claimed batch), in progress (re-run on resume:
 * at-least-once), or consumed (its effects are all in).
 *
 * Shared fields: run->gate (atomic; 1 while a cut is taken, futex-woken
 * when it opens); run->snap (made by the first cut, published by CAS before
 * the gate first closes, so a runner that saw the gate closed finds it):
 * its held (tasks parked at the gate) under its lock, its mu ordering cuts
 * of one run; run->outside (a lock word: outside paths read, the cut
 * writes; see outside_rdlock); each worker's slot (state, task) is written
 * by its own thread and read by the cut.
 */
#include "engine.h"

#include "codec_impl.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/futex.h>

/* --------------------------------------------------------------- the cut */

static void relax(uint32_t *spins)
{
    if (++*spins < 256)
        __builtin_ia32_pause();
    else
        sched_yield();
}

/* Every slot of the executor (workers, then blocking threads, then guests: wf__run_here). */
static wf__slot *slot_at(struct wf_executor *ex, uint32_t i)
{
    return i < ex->nworkers ? &ex->workers[i].slot : &ex->blk_slots[i - ex->nworkers];
}

static uint32_t nslots(struct wf_executor *ex)
{
    return ex->nworkers + ex->blk_max + WF_RUN_HERE_THREADS;
}

/* ------------------------------------------------ the task runners' side */

/* A task runner meets a closed gate: it waits until the snapshot is done. */
void wf__gate_wait(wf__run *run)
{
    wf__pool_spill_bypass(); /* the snapshot may need that task: let it reach it */
    int g;
    for (int i = 0; (g = atomic_load_explicit(&run->gate, memory_order_acquire)) != 0; i++) {
        if (i < 128)
            __builtin_ia32_pause();
        else
            syscall(SYS_futex, (int *)&run->gate, FUTEX_WAIT_PRIVATE, g, NULL, NULL, 0);
    }
}

/* The run's snapshot locks: made by the first cut (NULL: none yet, or none could be made). */
static wf__snap *snap_make(wf__run *run)
{
    wf__snap *sn = atomic_load_explicit(&run->snap, memory_order_acquire);
    if (sn)
        return sn;
    if ((sn = wf__calloc(1, sizeof *sn)) == NULL)
        return NULL;
    pthread_mutex_init(&sn->lock, NULL);
    pthread_mutex_init(&sn->mu, NULL);
    wf__snap *none = NULL;
    if (atomic_compare_exchange_strong(&run->snap, &none, sn))
        return sn;
    wf__snap_free(sn); /* another cut made it first */
    return none;
}

void wf__snap_free(wf__snap *sn)
{
    if (sn == NULL)
        return;
    pthread_mutex_destroy(&sn->lock);
    pthread_mutex_destroy(&sn->mu);
    wf__free_mem(sn);
}

/* The gate is closed: park t (and its chain) on the run, unless it opened meanwhile. */
int wf__slot_hold(wf__slot *slot, wf__run *run, wf__task *t)
{
    /* the cut that closed the gate made it first (the gate was read with acquire) */
    wf__snap *sn = atomic_load_explicit(&run->snap, memory_order_acquire);
    pthread_mutex_lock(&sn->lock);
    int closed = atomic_load_explicit(&run->gate, memory_order_relaxed);
    if (closed) {
        atomic_store_explicit(&t->next, sn->held, memory_order_relaxed);
        sn->held = t;
        atomic_store_explicit(&slot->state, 0, memory_order_release);
    }
    pthread_mutex_unlock(&sn->lock);
    return closed;
}

/*
 * run->outside: a reader-preferring read-write lock in one word (as the
 * pthread rwlock it replaces, which took 56 bytes and an init per run):
 * the low bits count readers, OUT_W is set while the cut holds it, OUT_WAIT
 * while someone sleeps on the word. Readers are outside paths (a run's
 * start, a handler's send, a timer), many per run; the writer is a cut,
 * rare, and it waits for the readers in (as a reader-preferring rwlock
 * does, a reader already in may enter again: a reader waits only while the
 * writer holds it). Waiting is rare: a short spin, then the futex.
 */
#define OUT_W    0x40000000u
#define OUT_WAIT 0x80000000u
#define OUT_R    0x3fffffffu

static void outside_sleep(wf__run *run, uint32_t s, uint32_t *spins)
{
    if (++*spins < 128) {
        __builtin_ia32_pause();
        return;
    }
    /* announce a sleeper, then sleep unless the word changed meanwhile */
    if (!(s & OUT_WAIT) &&
        !atomic_compare_exchange_strong(&run->outside, &s, s | OUT_WAIT))
        return; /* it changed: look again */
    syscall(SYS_futex, (uint32_t *)&run->outside, FUTEX_WAIT_PRIVATE, s | OUT_WAIT, NULL, NULL, 0);
}

static void outside_wake(wf__run *run)
{
    syscall(SYS_futex, (uint32_t *)&run->outside, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static void outside_rdlock(wf__run *run)
{
    uint32_t s = atomic_load_explicit(&run->outside, memory_order_relaxed), spins = 0;
    for (;;) {
        if (s & OUT_W) {
            outside_sleep(run, s, &spins);
            s = atomic_load_explicit(&run->outside, memory_order_relaxed);
        } else if (atomic_compare_exchange_weak_explicit(&run->outside, &s, s + 1,
                                                         memory_order_acquire,
                                                         memory_order_relaxed)) {
            return;
        }
    }
}

static void outside_rdunlock(wf__run *run)
{
    uint32_t s = atomic_fetch_sub_explicit(&run->outside, 1, memory_order_release);
    if ((s & OUT_R) == 1 && (s & OUT_WAIT)) { /* the last reader out: a writer may wait */
        atomic_fetch_and_explicit(&run->outside, ~OUT_WAIT, memory_order_relaxed);
        outside_wake(run);
    }
}

static void outside_wrlock(wf__run *run)
{
    uint32_t s = atomic_load_explicit(&run->outside, memory_order_relaxed), spins = 0;
    for (;;) {
        if (s & (OUT_R | OUT_W)) {
            outside_sleep(run, s, &spins);
            s = atomic_load_explicit(&run->outside, memory_order_relaxed);
        } else if (atomic_compare_exchange_weak_explicit(&run->outside, &s, s | OUT_W,
                                                         memory_order_acquire,
                                                         memory_order_relaxed)) {
            return;
        }
    }
}

static void outside_wrunlock(wf__run *run)
{
    /* no reader enters while OUT_W is set: the word is OUT_W, maybe with OUT_WAIT */
    if (atomic_exchange_explicit(&run->outside, 0, memory_order_release) & OUT_WAIT)
        outside_wake(run);
}

/*
 * How many `outside` read locks the calling thread holds (of any runs). A
 * child run's end completes its parent's token only once its thread holds
 * none (child.c defers it to the last wf__outside_exit): a parent's end
 * takes its children's locks inside its own, so the other order must never
 * happen.
 */
static WF__TLS uint32_t tls_outside_depth;

int wf__outside_held(void)
{
    return tls_outside_depth != 0;
}

int wf__outside_enter(wf__run *run)
{
    wf__slot *slot = wf__tls_slot;
    if (slot && atomic_load_explicit(&slot->state, memory_order_relaxed) ==
                    ((uintptr_t)run | WF__SLOT_DIRTY))
        return 0; /* inside one of the run's tasks, already past the gate */
    outside_rdlock(run);
    tls_outside_depth++;
    return 1;
}

void wf__outside_exit(wf__run *run, int entered)
{
    if (!entered)
        return;
    outside_rdunlock(run);
    if (--tls_outside_depth == 0 && WF__UNLIKELY(wf__tls_child_done != NULL))
        wf__child_drain(); /* children that ended under the lock: their parents' tokens now */
}

/* ------------------------------------------------------------- the image */

/*
 * What the cut copies while the run is held, so that it can be encoded once
 * the run goes on: events are immutable and reference-counted, so they are
 * retained rather than copied; the bookkeeping around them (small) is
 * copied, with timers turned into the milliseconds they had left. The
 * common task (queued, first attempt, no lineage, fan-out group or retry
 * record) takes 16 bytes; the others carry an img_more.
 */
typedef struct img_task {
    wf_event *ev; /* retained */
    uint32_t step;
    uint32_t more; /* 0: the common case, else 1 + its index in img.more */
} img_task;

typedef struct img_more {
    uint32_t attempt;
    uint16_t lineage;
    uint8_t in_progress;
    uint8_t has_retry; /* the retry bookkeeping below is there */
    int64_t group;     /* index in the groups table, or -1 */
    uint32_t branch;
    int64_t ago_ms; /* since the first attempt, or -1 */
    int32_t last_error;
    char *last_msg;
    int joined;   /* a join's set: tuple[0 .. ntuple), retained */
    uint64_t inv; /* the invocation's number, or 0 */
    wf_event **tuple;
    uint32_t ntuple;
    /*
     * An async invocation awaiting a child workflow its step declares: the
     * child run (a reference) until img_children saves it, then its
     * workflow's name, fingerprint and snapshot (owned), task item 11.
     */
    wf__run *child_run;
    char *child_wf;
    uint64_t child_fp;
    void *child_doc;
    size_t child_len;
} img_more;

typedef struct img_waiter {
    uint32_t step;
    char *id;
    const wf_event_type *type;
    wf_value req; /* retained */
    int state;
    wf_event *got; /* retained, or NULL */
    int64_t timeout_ms;
    int64_t left_ms; /* -1: no timer */
    int has_task;
    img_task task;
} img_waiter;

typedef struct img_queue {
    const wf_event_type *type;
    uint32_t n;
    wf_event **evs; /* retained, oldest first */
} img_queue;

typedef struct img_buffer {
    uint32_t step;
    char *id; /* NULL: a join's arrivals */
    uint32_t nq;
    img_queue *qs;
} img_buffer;

typedef struct img_group {
    int64_t parent; /* index, or -1 */
    uint32_t parent_branch;
    uint32_t join_step;
    const wf_event_type *collect;
    wf_event *origin; /* retained */
    uint16_t lineage;
    uint32_t n;
    uint8_t *resolved;
    wf_event **result; /* retained, NULL where none */
} img_group;

typedef struct img_retry {
    int64_t left_ms;
    img_task task;
} img_retry;

/* The image (struct wf__cut: codec_impl.h hands it to snapshot.c by that name). */
typedef struct wf__cut {
    wf_workflow *wf; /* retained: the step names */
    /* the event types the image refers to, in the order the table is written */
    uint32_t *type_idx; /* by type id: 1 + index in types, 0: not there */
    uint32_t ntypes_reg;
    const wf_event_type **types;
    uint32_t ntypes;
    img_task *tasks; /* every step's, in the order they are encoded */
    uint32_t ntasks, cap_tasks;
    img_more *more;
    uint32_t nmore, cap_more;
    img_retry *retries;
    uint32_t nretries;
    img_waiter *waiters;
    uint32_t nwaiters;
    img_buffer *buffers;
    uint32_t nbuffers;
    img_group *groups;
    uint32_t ngroups;
    /*
     * The groups the copied tasks refer to, and their ancestors, in the order
     * first seen (a group lives while something refers to it: fanout.c frees it
     * when its last branch closes, so only the cut's tasks can reach it).
     */
    const wf__group **garr;
    uint32_t ngarr, cap_garr;
    uint64_t queued, in_progress, dropped, unhandled;
    int64_t timeout_ms;
    int rc; /* the first failure: out of memory, or a type registered meanwhile */
} img;

/* Pointer -> index, for the groups tasks refer to. */
typedef struct ptrmap {
    const void **keys;
    uint32_t *vals;
    uint32_t cap;
    uint32_t n;
} ptrmap;

static int ptrmap_init(ptrmap *m, uint32_t n)
{
    m->cap = 16;
    while (m->cap < n * 2)
        m->cap *= 2;
    m->n = 0;
    m->keys = wf__calloc(m->cap, sizeof *m->keys);
    m->vals = wf__calloc(m->cap, sizeof *m->vals);
    return m->keys && m->vals ? 0 : WF_ENOMEM;
}

static void ptrmap_free(ptrmap *m)
{
    wf__free_mem(m->keys);
    wf__free_mem(m->vals);
}

static uint32_t ptr_slot(const ptrmap *m, const void *p)
{
    uint32_t h = (uint32_t)(((uintptr_t)p >> 4) * 2654435761u) & (m->cap - 1);
    while (m->keys[h] && m->keys[h] != p)
        h = (h + 1) & (m->cap - 1);
    return h;
}

static void ptrmap_put(ptrmap *m, const void *p, uint32_t v)
{
    uint32_t h = ptr_slot(m, p);
    m->n += m->keys[h] == NULL;
    m->keys[h] = p;
    m->vals[h] = v;
}

/* Doubles the table when it would be more than half full. */
static int ptrmap_reserve(ptrmap *m)
{
    if ((m->n + 1) * 2 <= m->cap)
        return 0;
    ptrmap o = *m;
    if (ptrmap_init(m, o.cap) < 0) {
        ptrmap_free(m);
        *m = o;
        return WF_ENOMEM;
    }
    for (uint32_t i = 0; i < o.cap; i++)
        if (o.keys[i])
            ptrmap_put(m, o.keys[i], o.vals[i]);
    ptrmap_free(&o);
    return 0;
}

static int64_t ptrmap_get(const ptrmap *m, const void *p)
{
    if (p == NULL)
        return -1;
    uint32_t h = ptr_slot(m, p);
    return m->keys[h] ? (int64_t)m->vals[h] : -1;
}

static void img_fail(img *m, int rc)
{
    if (m->rc == 0)
        m->rc = rc;
}

/* The index of group g (first sight: g and its ancestors get the next ones), or -1. */
static int64_t img_group_ix(img *m, ptrmap *groups, const wf__group *g)
{
    if (g == NULL)
        return -1;
    int64_t ix = ptrmap_get(groups, g);
    if (ix >= 0)
        return ix;
    for (const wf__group *a = g; a && ptrmap_get(groups, a) < 0; a = a->parent) {
        if (m->ngarr == m->cap_garr) {
            uint32_t cap = m->cap_garr ? m->cap_garr * 2 : 16;
            const wf__group **n = wf__realloc((void *)m->garr, cap * sizeof *n);
            if (n == NULL) {
                img_fail(m, WF_ENOMEM);
                return -1;
            }
            m->garr = n;
            m->cap_garr = cap;
        }
        if (ptrmap_reserve(groups) < 0) {
            img_fail(m, WF_ENOMEM);
            return -1;
        }
        ptrmap_put(groups, a, m->ngarr);
        m->garr[m->ngarr++] = a;
    }
    return ptrmap_get(groups, g);
}

static void *img_calloc(img *m, size_t n, size_t size)
{
    void *p = wf__calloc(n ? n : 1, size);
    if (p == NULL)
        img_fail(m, WF_ENOMEM);
    return p;
}

static char *img_strdup(img *m, const char *s)
{
    char *d = s ? wf__strdup(s) : NULL;
    if (s && d == NULL)
        img_fail(m, WF_ENOMEM);
    return d;
}

/* Notes t in the type table, which the encoder writes before what uses it. */
static void img_type(img *m, const wf_event_type *t)
{
    if (t->id >= m->ntypes_reg) {
        img_fail(m, WF_ETYPE); /* registered after the cut began */
        return;
    }
    if (m->type_idx[t->id] == 0) {
        m->types[m->ntypes] = t;
        m->type_idx[t->id] = ++m->ntypes;
    }
}

/* ev retained, its type noted (NULL stays NULL). */
static wf_event *img_event(img *m, const wf_event *ev)
{
    if (ev)
        img_type(m, ev->type);
    return wf_event_retain(ev);
}

/* t as an image task (its event retained); in_progress: it had started. */
static void img_put(img *m, img_task *it, const wf__task *t, int in_progress, ptrmap *groups,
                    int64_t now)
{
    const wf__retry_info *ri = t->arg;
    int64_t group = img_group_ix(m, groups, t->u.group);
    int has_retry = ri && (ri->first_ns || ri->last_error || ri->last_msg);
    it->ev = img_event(m, t->ev);
    it->step = t->step;
    it->more = 0;
    if (!in_progress && t->attempt == 1 && t->flags == 0 && group < 0 && !has_retry &&
        !(ri && (ri->joined || ri->inv)))
        return;
    if (m->nmore == m->cap_more) {
        uint32_t cap = m->cap_more ? m->cap_more * 2 : 16;
        img_more *nm = wf__realloc(m->more, cap * sizeof *nm);
        if (nm == NULL) {
            img_fail(m, WF_ENOMEM);
            return;
        }
        m->more = nm;
        m->cap_more = cap;
    }
    img_more *mo = &m->more[m->nmore];
    memset(mo, 0, sizeof *mo);
    it->more = ++m->nmore;
    mo->attempt = t->attempt;
    mo->lineage = t->flags;
    mo->in_progress = (uint8_t)(in_progress != 0);
    mo->group = group;
    mo->branch = t->pad;
    mo->inv = ri ? ri->inv : 0;
    if (has_retry) {
        mo->has_retry = 1;
        mo->ago_ms = ri->first_ns ? (now - ri->first_ns) / 1000000 : -1;
        mo->last_error = ri->last_error;
        mo->last_msg = img_strdup(m, ri->last_msg);
    }
    if (ri && ri->joined) {
        mo->joined = 1;
        if ((mo->tuple = img_calloc(m, ri->ntuple, sizeof *mo->tuple)) != NULL) {
            for (uint32_t i = 0; i < ri->ntuple; i++)
                mo->tuple[i] = img_event(m, ri->tuple[i]);
            mo->ntuple = ri->ntuple;
        }
    }
}

static const img_more *img_more_of(const img *m, const img_task *it)
{
    return it->more ? &m->more[it->more - 1] : NULL;
}

static void img_add_task(img *m, const wf__task *t, int in_progress, ptrmap *groups, int64_t now)
{
    img_put(m, &m->tasks[m->ntasks++], t, in_progress, groups, now);
    if (in_progress)
        m->in_progress++;
    else
        m->queued++;
}

/* Forgets the tasks copied so far (the array stays, for another try). */
static void img_drop_tasks(img *m)
{
    for (uint32_t i = 0; i < m->ntasks; i++)
        wf_event_release(m->tasks[i].ev);
    for (uint32_t i = 0; i < m->nmore; i++) {
        for (uint32_t k = 0; k < m->more[i].ntuple; k++)
            wf_event_release(m->more[i].tuple[k]);
        wf__free_mem(m->more[i].tuple);
        wf__free_mem(m->more[i].last_msg);
        if (m->more[i].child_run)
            wf__run_release(m->more[i].child_run);
        wf__free_mem(m->more[i].child_wf);
        wf__free_mem(m->more[i].child_doc);
    }
    m->ntasks = m->nmore = 0;
    m->queued = m->in_progress = 0;
}

/*
 * Copies every task of the run, per step: in progress first (then the
 * unstarted rest of its claimed batch), async invocations waiting for their
 * completion, parked ones (oldest first), then the pending queue in order.
 * Caller holds snap->lock, outside for writing, collect_lock and mu; the gate
 * is closed and the dirty slots drained. 1 when every slot the steps' counts
 * say is taken is accounted for (or m->rc is set); 0 when not yet (a slot
 * may still flicker between clean and dirty: a runner reaching slot_dirty
 * stores the dirty bit, sees the gate and takes it back; its task stays
 * put): the caller lets go, then tries again. The slots are read once, into
 * inprog, and the copy follows that reading. have: nsteps counters.
 */
static int img_tasks(img *m, wf__run *run, wf__task **inprog, uint32_t *have, ptrmap *groups,
                     int64_t now)
{
    struct wf_executor *ex = run->ex;
    memset(have, 0, run->nsteps * sizeof *have);
    uint32_t nheld = 0;
    uint64_t n = 0; /* the tasks there are if the counts hold */
    wf__snap *sn = atomic_load_explicit(&run->snap, memory_order_relaxed); /* the cut's */
    for (wf__task *h = sn->held; h; h = atomic_load_explicit(&h->next, memory_order_relaxed)) {
        have[h->step]++;
        nheld++;
        for (wf__task *t = h; t; t = t->chain)
            n++;
    }
    for (uint32_t i = 0; i < nslots(ex); i++) {
        wf__slot *s = slot_at(ex, i);
        inprog[i] = NULL;
        if ((atomic_load_explicit(&s->state, memory_order_acquire) & ~WF__SLOT_DIRTY) ==
            (uintptr_t)run) {
            inprog[i] = atomic_load_explicit(&s->task, memory_order_relaxed);
            if (inprog[i] == NULL)
                continue; /* a worker giving kept slots back saw the gate (wf__kept_flush) */
            have[inprog[i]->step]++;
            for (wf__task *t = inprog[i]; t; t = t->chain)
                n++;
        }
    }
    for (wf_completion *c = run->pending; c; c = c->next)
        if (c->task) {
            have[c->task->step]++;
            n++;
        }
    for (uint32_t s = 0; s < run->nsteps; s++) {
        uint32_t c = wf__step_count(run, s);
        if (c < have[s])
            return 0;
        n += c - have[s]; /* queued */
    }
    if (n > m->cap_tasks) { /* more than estimated before the gate closed */
        img_task *nt = n <= UINT32_MAX ? wf__realloc(m->tasks, n * sizeof *nt) : NULL;
        if (nt == NULL) {
            img_fail(m, WF_ENOMEM);
            return 1;
        }
        m->tasks = nt;
        m->cap_tasks = (uint32_t)n;
    }
    /* held is a stack: the oldest parked chain is last */
    wf__task **held = img_calloc(m, nheld, sizeof *held);
    if (held == NULL)
        return 1;
    uint32_t k = nheld;
    for (wf__task *h = sn->held; h; h = atomic_load_explicit(&h->next, memory_order_relaxed))
        held[--k] = h;
    int ok = 1;
    for (uint32_t s = 0; s < run->nsteps && ok; s++) {
        for (uint32_t i = 0; i < nslots(ex); i++) {
            wf__task *t = inprog[i];
            if (t == NULL || t->step != s)
                continue;
            img_add_task(m, t, 1, groups, now);
            for (t = t->chain; t; t = t->chain)
                img_add_task(m, t, 0, groups, now); /* claimed with it, not started */
        }
        for (wf_completion *c = run->pending; c; c = c->next)
            if (c->task && c->task->step == s) {
                img_add_task(m, c->task, 1, groups, now);
                img_more *mo = m->tasks[m->ntasks - 1].more
                                   ? &m->more[m->tasks[m->ntasks - 1].more - 1]
                                   : NULL;
                if (c->child && mo) /* its child is saved once the run goes on */
                    mo->child_run = wf__child_run_ref(c->child, run, s);
            }
        for (uint32_t j = 0; j < nheld; j++)
            if (held[j]->step == s)
                for (wf__task *t = held[j]; t; t = t->chain)
                    img_add_task(m, t, 0, groups, now);
        /* the queue is read as it is copied: one walk of it, not two */
        wf__pendq *q = atomic_load_explicit(&run->steps[s].pendq, memory_order_acquire);
        uint32_t qlen = 0;
        for (wf__task *t = q ? q->head : NULL; t && ok;
             t = atomic_load_explicit(&t->next, memory_order_acquire)) {
            if (t == &q->stub)
                continue;
            if (m->ntasks == m->cap_tasks)
                ok = 0; /* longer than the count says */
            else
                img_add_task(m, t, 0, groups, now);
            qlen++;
        }
        ok = ok && have[s] + qlen == wf__step_count(run, s);
    }
    wf__free_mem(held);
    if (!ok)
        img_drop_tasks(m);
    return ok;
}

/* Copies the rest of the run: retries, waiters, buffers, groups, counters (same locks). */
static void img_rest(img *m, wf__run *run, ptrmap *groups, int64_t now)
{
    uint32_t nr = 0, nw = 0, nb = 0, ng = 0;
    for (wf__retry_timer *rt = run->retries; rt; rt = rt->next)
        nr++;
    if ((m->retries = img_calloc(m, nr, sizeof *m->retries)) != NULL) {
        for (wf__retry_timer *rt = run->retries; rt; rt = rt->next) {
            img_retry *r = &m->retries[m->nretries++];
            int64_t left = (rt->tm.deadline_ns - now) / 1000000;
            r->left_ms = left > 0 ? left : 0;
            img_put(m, &r->task, rt->t, 0, groups, now);
            m->queued++;
        }
    }
    for (wf__waiter *w = run->waiters; w; w = w->next)
        nw += !w->orphan;
    if ((m->waiters = img_calloc(m, nw, sizeof *m->waiters)) != NULL) {
        for (wf__waiter *w = run->waiters; w; w = w->next) {
            if (w->orphan)
                continue;
            img_waiter *iw = &m->waiters[m->nwaiters++];
            iw->step = w->step;
            iw->id = img_strdup(m, w->id);
            iw->type = w->type;
            img_type(m, w->type);
            iw->req = wf_value_retain(w->req);
            iw->state = w->state;
            iw->got = img_event(m, w->got);
            iw->timeout_ms = w->timeout_ms;
            iw->left_ms = -1;
            if (w->state == W_WAITING && w->timer_live) {
                int64_t left = (w->tm->deadline_ns - now) / 1000000;
                iw->left_ms = left > 0 ? left : 0;
            }
            if (w->task) { /* a waiting step's event is counted as neither */
                iw->has_task = 1;
                img_put(m, &iw->task, w->task, 0, groups, now);
            }
        }
    }
    for (wf__collect *c = run->collect; c; c = c->next)
        nb++;
    if ((m->buffers = img_calloc(m, nb, sizeof *m->buffers)) != NULL) {
        for (wf__collect *c = run->collect; c; c = c->next) {
            img_buffer *b = &m->buffers[m->nbuffers++];
            b->step = c->step;
            b->id = img_strdup(m, c->id);
            if ((b->qs = img_calloc(m, c->nq, sizeof *b->qs)) == NULL)
                break;
            for (uint32_t i = 0; i < c->nq; i++) {
                const wf__cq *q = &c->qs[i];
                img_queue *iq = &b->qs[b->nq++];
                iq->type = q->type;
                img_type(m, q->type);
                if ((iq->evs = img_calloc(m, q->len, sizeof *iq->evs)) == NULL)
                    break;
                for (uint32_t k = 0; k < q->len; k++)
                    iq->evs[iq->n++] = img_event(m, q->ring[(q->head + k) % q->cap]);
            }
        }
    }
    /*
     * The groups, written deepest first so that a parent comes after its
     * children (the reader's guard against cycles); the tasks' indices,
     * given in the order first seen, follow the new order.
     */
    ng = m->ngarr;
    uint32_t *depth = img_calloc(m, ng, sizeof *depth);
    uint32_t *order = img_calloc(m, ng, sizeof *order);
    uint32_t *new_ix = img_calloc(m, ng, sizeof *new_ix);
    if (depth && order && new_ix && (m->groups = img_calloc(m, ng, sizeof *m->groups)) != NULL) {
        uint32_t maxd = 0;
        for (uint32_t i = 0; i < ng; i++) {
            for (const wf__group *a = m->garr[i]->parent; a; a = a->parent)
                depth[i]++;
            maxd = depth[i] > maxd ? depth[i] : maxd;
        }
        uint32_t k = 0;
        for (uint32_t d = maxd + 1; d-- > 0;)
            for (uint32_t i = 0; i < ng; i++)
                if (depth[i] == d) {
                    new_ix[i] = k;
                    order[k++] = i;
                }
        for (uint32_t i = 0; i < m->nmore; i++)
            if (m->more[i].group >= 0)
                m->more[i].group = new_ix[m->more[i].group];
        for (uint32_t j = 0; j < ng; j++) {
            const wf__group *g = m->garr[order[j]];
            img_group *ig = &m->groups[m->ngroups++];
            int64_t p = ptrmap_get(groups, g->parent);
            ig->parent = p >= 0 ? (int64_t)new_ix[p] : -1;
            ig->parent_branch = g->parent_branch;
            ig->join_step = g->join_step;
            ig->collect = g->collect;
            img_type(m, g->collect);
            ig->origin = img_event(m, g->origin);
            ig->lineage = g->lineage;
            ig->resolved = img_calloc(m, g->n, 1);
            ig->result = img_calloc(m, g->n, sizeof *ig->result);
            if (ig->resolved == NULL || ig->result == NULL)
                break;
            ig->n = g->n;
            for (uint32_t i = 0; i < g->n; i++) {
                ig->resolved[i] =
                    (uint8_t)atomic_load_explicit(&g->resolved[i], memory_order_relaxed);
                ig->result[i] = img_event(m, g->result[i]);
            }
        }
    }
    wf__free_mem(depth);
    wf__free_mem(order);
    wf__free_mem(new_ix);
    m->dropped = atomic_load(&run->dropped);
    m->unhandled = atomic_load(&run->unhandled);
    m->timeout_ms = run->timeout_ms;
}

/*
 * The array for the tasks, sized from the counts before the gate closes and
 * written once, so that the page faults of fresh memory (~2 us per 4 KiB
 * here) are not part of the pause.
 */
static void img_prepare(img *m, wf__run *run)
{
    m->wf = wf_workflow_retain(run->wf);
    m->ntypes_reg = atomic_load(&run->wf->reg->n);
    m->type_idx = img_calloc(m, m->ntypes_reg, sizeof *m->type_idx);
    m->types = img_calloc(m, m->ntypes_reg, sizeof *m->types);
    uint64_t n = 64;
    for (uint32_t s = 0; s < run->nsteps; s++)
        n += wf__step_count(run, s);
    n += n / 8;
    if (n > UINT32_MAX)
        return;
    if ((m->tasks = wf__malloc(n * sizeof *m->tasks)) != NULL) {
        memset(m->tasks, 0, n * sizeof *m->tasks);
        m->cap_tasks = (uint32_t)n;
    }
}

static void img_free(img *m)
{
    img_drop_tasks(m);
    wf__free_mem(m->tasks);
    wf__free_mem(m->more);
    for (uint32_t i = 0; i < m->nretries; i++)
        wf_event_release(m->retries[i].task.ev);
    wf__free_mem(m->retries);
    for (uint32_t i = 0; i < m->nwaiters; i++) {
        img_waiter *w = &m->waiters[i];
        wf__free_mem(w->id);
        wf_value_release(w->req);
        wf_event_release(w->got);
        wf_event_release(w->task.ev); /* NULL without a task */
    }
    wf__free_mem(m->waiters);
    for (uint32_t i = 0; i < m->nbuffers; i++) {
        img_buffer *b = &m->buffers[i];
        for (uint32_t q = 0; q < b->nq; q++) {
            for (uint32_t k = 0; k < b->qs[q].n; k++)
                wf_event_release(b->qs[q].evs[k]);
            wf__free_mem(b->qs[q].evs);
        }
        wf__free_mem(b->qs);
        wf__free_mem(b->id);
    }
    wf__free_mem(m->buffers);
    for (uint32_t i = 0; i < m->ngroups; i++) {
        img_group *g = &m->groups[i];
        wf_event_release(g->origin);
        for (uint32_t k = 0; k < g->n; k++)
            wf_event_release(g->result[k]);
        wf__free_mem(g->resolved);
        wf__free_mem(g->result);
    }
    wf__free_mem(m->groups);
    wf__free_mem((void *)m->garr);
    wf__free_mem(m->type_idx);
    wf__free_mem((void *)m->types);
    wf_workflow_free(m->wf);
    memset(m, 0, sizeof *m);
}

/*
 * The children the image's invocations await, each saved whole (its own
 * snapshot, its children nested in turn), after the cut of their parent and
 * outside its locks: a child's end completes its parent's token under the
 * parent's `outside` lock, and a child's cut waits for its effects under
 * way. A child that has ended meanwhile (its result on its way to a token
 * the image holds in progress) is left out: its step runs again on resume
 * and starts a new child, as for an undeclared child.
 */
static void img_children(img *m)
{
    for (uint32_t i = 0; i < m->nmore; i++) {
        img_more *mo = &m->more[i];
        wf__run *cr = mo->child_run;
        if (cr == NULL)
            continue;
        mo->child_run = NULL;
        wf_save_info info = {0};
        void *doc = NULL;
        size_t len = 0;
        int rc = m->rc == 0 ? wf_ctx_save_ex(cr->ctx, &doc, &len, &info) : m->rc;
        if (rc == 0 && info.live) {
            mo->child_doc = doc;
            mo->child_len = len;
            mo->child_fp = wf_workflow_fingerprint(cr->wf);
            mo->child_wf = img_strdup(m, cr->wf->name);
        } else {
            wf_free(doc);
            if (rc == WF_ENOMEM)
                img_fail(m, rc);
        }
        wf__run_release(cr);
    }
}

/* ------------------------------------------------------------- encoding */

typedef struct enc {
    msgpack_packer pk;
    wf__buf *buf;
    const img *m;
    int rc;
} enc;

static void enc_fail(enc *e, int rc)
{
    if (e->rc == 0)
        e->rc = rc;
}

#define PK(call)                                                                                   \
    do {                                                                                           \
        if (call)                                                                                  \
            enc_fail(e, WF_ENOMEM);                                                                \
    } while (0)

static void pack_str(enc *e, const char *s)
{
    size_t n = strlen(s);
    PK(msgpack_pack_str(&e->pk, n) || msgpack_pack_str_body(&e->pk, s, n));
}

static void pack_opt_index(enc *e, int64_t i)
{
    if (i >= 0)
        PK(msgpack_pack_int64(&e->pk, i));
    else
        PK(msgpack_pack_nil(&e->pk));
}

/* The type's index in the image's table. */
static uint32_t type_index(enc *e, const wf_event_type *t)
{
    if (t->id >= e->m->ntypes_reg || e->m->type_idx[t->id] == 0) {
        enc_fail(e, WF_EINTERNAL); /* the copy noted every type it holds */
        return 0;
    }
    return e->m->type_idx[t->id] - 1;
}

static void pack_event(enc *e, const wf_event *ev)
{
    if (ev == NULL) {
        PK(msgpack_pack_nil(&e->pk));
        return;
    }
    PK(msgpack_pack_array(&e->pk, 2));
    PK(msgpack_pack_uint32(&e->pk, type_index(e, ev->type)));
    int rc = wf__pack_fields(&e->pk, ev);
    if (rc < 0)
        enc_fail(e, rc);
}

/*
 * A task: [step, type, fields, state, attempt, lineage, group, branch,
 * retry, tuple, invocation, child], trailing defaults left out (state 0 queued, 1 in progress;
 * attempt 1, the first execution; lineage 0; no group).
 */
static void pack_task(enc *e, const img_task *it)
{
    const img_more *mo = img_more_of(e->m, it);
    uint32_t n = 3;
    if (mo) {
        if (mo->in_progress)
            n = 4;
        if (mo->attempt != 1)
            n = 5;
        if (mo->lineage)
            n = 6;
        if (mo->group >= 0)
            n = 8;
        if (mo->has_retry)
            n = 9;
        if (mo->joined)
            n = 10;
        if (mo->inv)
            n = 11;
        if (mo->child_doc)
            n = 12;
    }
    PK(msgpack_pack_array(&e->pk, n));
    PK(msgpack_pack_uint32(&e->pk, it->step));
    PK(msgpack_pack_uint32(&e->pk, type_index(e, it->ev->type)));
    int rc = wf__pack_fields(&e->pk, it->ev);
    if (rc < 0)
        enc_fail(e, rc);
    if (n > 3)
        PK(msgpack_pack_uint8(&e->pk, mo->in_progress));
    if (n > 4)
        PK(msgpack_pack_uint32(&e->pk, mo->attempt));
    if (n > 5)
        PK(msgpack_pack_uint16(&e->pk, mo->lineage));
    if (n > 6) {
        pack_opt_index(e, mo->group);
        PK(msgpack_pack_uint32(&e->pk, mo->branch));
    }
    if (n > 8) {
        if (mo->has_retry) {
            PK(msgpack_pack_array(&e->pk, 3));
            PK(msgpack_pack_int64(&e->pk, mo->ago_ms));
            PK(msgpack_pack_int32(&e->pk, mo->last_error));
            if (mo->last_msg)
                pack_str(e, mo->last_msg);
            else
                PK(msgpack_pack_nil(&e->pk));
        } else {
            PK(msgpack_pack_nil(&e->pk));
        }
    }
    if (n > 9 && mo->joined) {
        PK(msgpack_pack_array(&e->pk, mo->ntuple));
        for (uint32_t i = 0; i < mo->ntuple; i++)
            pack_event(e, mo->tuple[i]);
    } else if (n > 9) {
        PK(msgpack_pack_nil(&e->pk));
    }
    if (n > 10 && mo->inv)
        PK(msgpack_pack_uint64(&e->pk, mo->inv));
    else if (n > 10)
        PK(msgpack_pack_nil(&e->pk));
    if (n > 11) { /* [child workflow, its fingerprint, its snapshot] */
        PK(msgpack_pack_array(&e->pk, 3));
        pack_str(e, mo->child_wf);
        PK(msgpack_pack_uint64(&e->pk, mo->child_fp));
        PK(msgpack_pack_bin(&e->pk, mo->child_len));
        PK(msgpack_pack_bin_body(&e->pk, mo->child_doc, mo->child_len));
    }
}

static void pack_groups(enc *e)
{
    const img *m = e->m;
    PK(msgpack_pack_array(&e->pk, m->ngroups));
    for (uint32_t i = 0; i < m->ngroups; i++) {
        const img_group *g = &m->groups[i];
        /* [parent, parent_branch, join step, collect type, origin, lineage, resolved, results] */
        PK(msgpack_pack_array(&e->pk, 8));
        pack_opt_index(e, g->parent);
        PK(msgpack_pack_uint32(&e->pk, g->parent_branch));
        PK(msgpack_pack_uint32(&e->pk, g->join_step));
        PK(msgpack_pack_uint32(&e->pk, type_index(e, g->collect)));
        pack_event(e, g->origin);
        PK(msgpack_pack_uint16(&e->pk, g->lineage));
        PK(msgpack_pack_bin(&e->pk, g->n));
        PK(msgpack_pack_bin_body(&e->pk, g->resolved, g->n));
        PK(msgpack_pack_array(&e->pk, g->n));
        for (uint32_t b = 0; b < g->n; b++)
            pack_event(e, g->result[b]);
    }
}

static void pack_waiters(enc *e)
{
    const img *m = e->m;
    PK(msgpack_pack_array(&e->pk, m->nwaiters));
    for (uint32_t i = 0; i < m->nwaiters; i++) {
        const img_waiter *w = &m->waiters[i];
        /* [step, id, type, requirements, state, got, timeout_ms, left_ms, task] */
        PK(msgpack_pack_array(&e->pk, 9));
        PK(msgpack_pack_uint32(&e->pk, w->step));
        pack_str(e, w->id);
        PK(msgpack_pack_uint32(&e->pk, type_index(e, w->type)));
        int rc = wf__pack_value(&e->pk, w->req, 1);
        if (rc < 0)
            enc_fail(e, rc);
        PK(msgpack_pack_uint8(&e->pk, (uint8_t)w->state));
        pack_event(e, w->got);
        PK(msgpack_pack_int64(&e->pk, w->timeout_ms));
        pack_opt_index(e, w->left_ms);
        if (w->has_task)
            pack_task(e, &w->task);
        else
            PK(msgpack_pack_nil(&e->pk));
    }
}

static void pack_buffers(enc *e)
{
    const img *m = e->m;
    PK(msgpack_pack_array(&e->pk, m->nbuffers));
    for (uint32_t i = 0; i < m->nbuffers; i++) {
        const img_buffer *b = &m->buffers[i];
        /* [step, id or nil (a join's arrivals), [[type, [events]]...]] */
        PK(msgpack_pack_array(&e->pk, 3));
        PK(msgpack_pack_uint32(&e->pk, b->step));
        if (b->id)
            pack_str(e, b->id);
        else
            PK(msgpack_pack_nil(&e->pk));
        PK(msgpack_pack_array(&e->pk, b->nq));
        for (uint32_t q = 0; q < b->nq; q++) {
            PK(msgpack_pack_array(&e->pk, 2));
            PK(msgpack_pack_uint32(&e->pk, type_index(e, b->qs[q].type)));
            PK(msgpack_pack_array(&e->pk, b->qs[q].n));
            for (uint32_t k = 0; k < b->qs[q].n; k++)
                pack_event(e, b->qs[q].evs[k]);
        }
    }
}

static void pack_retries(enc *e)
{
    const img *m = e->m;
    PK(msgpack_pack_array(&e->pk, m->nretries));
    for (uint32_t i = 0; i < m->nretries; i++) {
        /* [delay_ms left, task] */
        PK(msgpack_pack_array(&e->pk, 2));
        PK(msgpack_pack_int64(&e->pk, m->retries[i].left_ms));
        pack_task(e, &m->retries[i].task);
    }
}

/*
 * Appends the run map of an image to b: {"steps", "types", "groups",
 * "buffers", "waiters", "retries", "counters", "timeout_ms", "tasks"}, the
 * tasks last (a reader has all they refer to before them). The tasks'
 * events are released as they are written: an image is encoded once.
 */
static int encode_img(img *m, wf__buf *b)
{
    enc ee, *e = &ee;
    memset(e, 0, sizeof *e);
    e->m = m;
    e->buf = b;
    e->rc = m->rc;
    msgpack_packer_init(&e->pk, b, wf__buf_write);
    /* room for the whole of it, about: growing 11 MB by doubling copies 11 MB more */
    if (wf__buf_reserve(b, (size_t)m->ntasks * 12 + 4096) < 0)
        enc_fail(e, WF_ENOMEM);
    PK(msgpack_pack_map(&e->pk, 9));
    pack_str(e, "steps");
    PK(msgpack_pack_array(&e->pk, m->wf->n_steps));
    for (uint32_t s = 0; s < m->wf->n_steps; s++)
        pack_str(e, m->wf->steps[s]->name);
    pack_str(e, "types");
    PK(msgpack_pack_array(&e->pk, m->ntypes));
    for (uint32_t i = 0; i < m->ntypes; i++)
        pack_str(e, m->types[i]->name);
    pack_str(e, "groups");
    pack_groups(e);
    pack_str(e, "buffers");
    pack_buffers(e);
    pack_str(e, "waiters");
    pack_waiters(e);
    pack_str(e, "retries");
    pack_retries(e);
    pack_str(e, "counters");
    PK(msgpack_pack_map(&e->pk, 4));
    pack_str(e, "queued");
    PK(msgpack_pack_uint64(&e->pk, m->queued));
    pack_str(e, "in_progress");
    PK(msgpack_pack_uint64(&e->pk, m->in_progress));
    pack_str(e, "dropped");
    PK(msgpack_pack_uint64(&e->pk, m->dropped));
    pack_str(e, "unhandled");
    PK(msgpack_pack_uint64(&e->pk, m->unhandled));
    pack_str(e, "timeout_ms");
    PK(msgpack_pack_int64(&e->pk, m->timeout_ms));
    pack_str(e, "tasks");
    PK(msgpack_pack_array(&e->pk, m->ntasks));
    for (uint32_t i = 0; i < m->ntasks && e->rc == 0; i++) {
        pack_task(e, &m->tasks[i]);
        /* done with it: let it go now, while it is in the cache */
        wf_event_release(m->tasks[i].ev);
        m->tasks[i].ev = NULL;
    }
    if (b->oom)
        enc_fail(e, WF_ENOMEM);
    return e->rc;
}

#undef PK

/* --------------------------------------------------------------- capture */

static void gate_open(wf__run *run, wf__snap *sn)
{
    pthread_mutex_lock(&sn->lock);
    atomic_store(&run->gate, 0);
    wf__task *held = sn->held;
    sn->held = NULL;
    pthread_mutex_unlock(&sn->lock);
    syscall(SYS_futex, (int *)&run->gate, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    /* oldest first */
    wf__task *rev = NULL;
    while (held) {
        wf__task *nx = atomic_load_explicit(&held->next, memory_order_relaxed);
        atomic_store_explicit(&held->next, rev, memory_order_relaxed);
        rev = held;
        held = nx;
    }
    while (rev) {
        wf__task *nx = atomic_load_explicit(&rev->next, memory_order_relaxed);
        wf__run_schedule(run, rev);
        rev = nx;
    }
}

/* Encodes an image into bytes of its own (caller owns *bytes: wf_free). */
static int encode_alone(img *m, void **bytes, size_t *len)
{
    wf__buf b;
    wf__buf_init(&b);
    return wf__buf_finish(&b, encode_img(m, &b), bytes, len);
}

void wf__cut_free(wf__cut *m)
{
    if (m) {
        img_free(m);
        wf__free_mem(m);
    }
}

int wf__cut_encode(wf__cut *m, wf__buf *b)
{
    return encode_img(m, b);
}

/*
 * The cut. With cancel, the run is cancelled at it and parked in its
 * context (*out unused). Else *out gets the image (caller owns:
 * wf__cut_free) and, with state, *state the context's store as it was at
 * the cut (caller owns; nil when a writer held the store then: the caller
 * reads it after).
 */
static int capture(wf__run *run, int cancel, int64_t *pause_ns, img **out, wf_value *state)
{
    if (out)
        *out = NULL;
    if (pause_ns)
        *pause_ns = 0;
    if (state)
        *state = wf_value_nil();
    /*
     * Not from a thread that runs tasks: a task of the run may sit in this
     * very thread's hands (its own step, its bypass slot), and the cut would
     * wait for it forever.
     */
    if (wf__tls_slot != NULL)
        return WF_EBUSY;
    struct wf_executor *ex = run->ex;
    uint32_t *have = wf__malloc((run->nsteps ? run->nsteps : 1) * sizeof *have);
    wf__task **inprog = wf__malloc(nslots(ex) * sizeof *inprog);
    img *m = wf__calloc(1, sizeof *m);
    if (m)
        img_prepare(m, run);
    if (have == NULL || inprog == NULL || m == NULL || m->rc < 0) {
        wf__free_mem(have);
        wf__free_mem(inprog);
        wf__cut_free(m);
        return WF_ENOMEM;
    }
    ptrmap groups = {NULL, NULL, 0, 0};
    wf__snap *sn = snap_make(run);
    if (sn == NULL) {
        wf__free_mem(have);
        wf__free_mem(inprog);
        wf__cut_free(m);
        return WF_ENOMEM;
    }
    pthread_mutex_lock(&sn->mu);
    if (wf__run_ended(run) || atomic_load(&run->gate) != 0) { /* ended, or being cancelled */
        pthread_mutex_unlock(&sn->mu);
        wf__cut_free(m);
        wf__free_mem(have);
        wf__free_mem(inprog);
        return WF_ESTATE;
    }
    int64_t t0 = wf__now_ns();
    atomic_store(&run->gate, 1);
    wf__fence_heavy();
    uint32_t spins = 0;
    /* effects under way end (none start: the gate is closed) */
    for (uint32_t i = 0; i < nslots(ex); i++)
        while (atomic_load(&slot_at(ex, i)->state) == ((uintptr_t)run | WF__SLOT_DIRTY))
            relax(&spins);
    /* then nothing of the run moves: copy it (that is the pause), encode it after */
    int ended = 0;
    for (;;) {
        outside_wrlock(run);
        pthread_mutex_lock(&sn->lock);
        if ((ended = wf__run_ended(run)) != 0)
            break;
        wf__lock_take(&run->collect_lock);
        wf__lock_take(&run->mu);
        int64_t now = wf__now_ns();
        int done = 1;
        m->ngarr = 0; /* the groups are found again through the tasks */
        if (ptrmap_init(&groups, 16) < 0) {
            img_fail(m, WF_ENOMEM);
        } else {
            if ((done = img_tasks(m, run, inprog, have, &groups, now)) != 0 && m->rc == 0)
                img_rest(m, run, &groups, now);
        }
        /*
         * The store at the cut too, or it would show effects of events the
         * run map still holds as queued (consumed once the gate opens, while
         * the image is encoded). Only if no writer holds it: a step inside
         * wf_ctx_edit_state may be waiting for the gate (its store is then
         * read after, as a save at rest reads it).
         */
        if (done && m->rc == 0 && state && pthread_rwlock_tryrdlock(&run->ctx->lock) == 0) {
            *state = wf_value_retain(run->ctx->state);
            pthread_rwlock_unlock(&run->ctx->lock);
        }
        ptrmap_free(&groups);
        wf__lock_give(&run->mu);
        wf__lock_give(&run->collect_lock);
        if (done)
            break;
        pthread_mutex_unlock(&sn->lock);
        outside_wrunlock(run);
        relax(&spins);
        if (spins >= 256 && spins % 16 == 0) {
            /*
             * Still short: tasks of the run wait in the pool's queues, and the
             * workers may all be waiting at the gate. Fetch them ourselves.
             */
            wf__task *got;
            if (wf__pool_take_run(ex, run, &got)) {
                pthread_mutex_lock(&sn->lock);
                while (got) {
                    wf__task *nx = atomic_load_explicit(&got->next, memory_order_relaxed);
                    atomic_store_explicit(&got->next, sn->held, memory_order_relaxed);
                    sn->held = got;
                    got = nx;
                }
                pthread_mutex_unlock(&sn->lock);
            }
        }
    }
    int rc = ended ? WF_ESTATE : m->rc;
    if (rc == 0 && cancel)
        atomic_store(&run->gate, 2); /* closed until the run has ended */
    pthread_mutex_unlock(&sn->lock);
    outside_wrunlock(run);
    if (rc == 0 && cancel) {
        /*
         * The cut is the cancel: the run ends before anything else of it
         * runs (the gate stays closed). The run is encoded outside its locks
         * (the timer thread and senders, shared with other runs, would wait
         * on them) and parked before the run ends, that is before the
         * context is free for another run. snap->mu is let go first: end_run
         * calls on_done, which may look at the run (a snapshot of it finds
         * it ended).
         */
        pthread_mutex_unlock(&sn->mu);
        img_children(m);
        void *bytes;
        size_t len;
        int erc = m->rc ? m->rc : encode_alone(m, &bytes, &len);
        if (erc == 0)
            wf__ctx_park(run->ctx, bytes, len);
        else /* cancelled all the same, as wf_handler_cancel does when it cannot park */
            wf__log(ex, WF_LOG_WARN, "run %llu: cancelled without parking its state (%s)",
                    (unsigned long long)run->id, wf_strerror(erc));
        int o = wf__outside_enter(run);
        if (!wf__end_run(run, WF_RUN_CANCELLED, NULL, WF_ECANCELLED, NULL, NULL))
            rc = WF_ESTATE;
        wf__outside_exit(run, o);
        gate_open(run, sn);
    } else {
        gate_open(run, sn);
        pthread_mutex_unlock(&sn->mu);
    }
    if (pause_ns)
        *pause_ns = wf__now_ns() - t0;
    if (rc == 0 && !cancel) {
        img_children(m);
        rc = m->rc;
    }
    if (rc == 0 && !cancel && out) {
        *out = m; /* what it holds cannot change: it is encoded while the run goes on */
        m = NULL;
    } else if (state) {
        wf_value_release(*state);
        *state = wf_value_nil();
    }
    wf__cut_free(m);
    wf__free_mem(have);
    wf__free_mem(inprog);
    return rc;
}

int wf__run_capture(wf__run *run, int cancel, void **bytes, size_t *len, int64_t *pause_ns)
{
    *bytes = NULL;
    *len = 0;
    img *m = NULL;
    int rc = capture(run, cancel, pause_ns, cancel ? NULL : &m, NULL);
    if (rc == 0 && m)
        rc = encode_alone(m, bytes, len);
    wf__cut_free(m);
    return rc;
}

int wf__ctx_cut(wf_ctx *ctx, wf__cut **cut, int64_t *pause_ns, wf_value *state)
{
    *cut = NULL;
    if (pause_ns)
        *pause_ns = 0;
    if (state)
        *state = wf_value_nil();
    wf__run *run = wf__ctx_run_ref(ctx);
    if (run == NULL)
        return WF_ESTATE;
    int rc = capture(run, 0, pause_ns, cut, state);
    wf__run_release(run);
    return rc;
}

int wf__ctx_capture(wf_ctx *ctx, void **bytes, size_t *len, int64_t *pause_ns)
{
    *bytes = NULL;
    *len = 0;
    wf__cut *m;
    int rc = wf__ctx_cut(ctx, &m, pause_ns, NULL);
    if (rc == 0)
        rc = encode_alone(m, bytes, len);
    wf__cut_free(m);
    return rc;
}
