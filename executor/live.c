/*
 * live.c: live snapshots of a running run (a consistent cut taken while the
 * executor goes on) and resuming a run from one.
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
 */
#include "run_impl.h"

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

/* Every slot of the executor (workers, then blocking threads). */
static wf__slot *slot_at(struct wf_executor *ex, uint32_t i)
{
    return i < ex->nworkers ? &ex->workers[i].slot : &ex->blk_slots[i - ex->nworkers];
}

static uint32_t nslots(struct wf_executor *ex)
{
    return ex->nworkers + ex->blk_max;
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
    int joined; /* a join's set: tuple[0 .. ntuple), retained */
    wf_event **tuple;
    uint32_t ntuple;
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
     * first seen (a group lives while something refers to it: run.c frees it
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
        !(ri && ri->joined))
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

static void img_add_task(img *m, const wf__task *t, int in_progress, ptrmap *groups,
                         int64_t now)
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
    }
    m->ntasks = m->nmore = 0;
    m->queued = m->in_progress = 0;
}

/*
 * Copies every task of the run, per step: in progress first (then the
 * unstarted rest of its claimed batch), async invocations waiting for their
 * completion, parked ones (oldest first), then the pending queue in order.
 * Caller holds snap_lock, outside for writing, collect_lock and mu; the gate
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
    for (wf__task *h = run->held; h; h = atomic_load_explicit(&h->next, memory_order_relaxed)) {
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
    for (wf__task *h = run->held; h; h = atomic_load_explicit(&h->next, memory_order_relaxed))
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
            if (c->task && c->task->step == s)
                img_add_task(m, c->task, 1, groups, now);
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
        ok = ok &&
             have[s] + qlen == wf__step_count(run, s);
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
                int64_t left = (w->tm.deadline_ns - now) / 1000000;
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
 * retry, tuple], trailing defaults left out (state 0 queued, 1 in progress;
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
    if (n > 9) {
        PK(msgpack_pack_array(&e->pk, mo->ntuple));
        for (uint32_t i = 0; i < mo->ntuple; i++)
            pack_event(e, mo->tuple[i]);
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

static void gate_open(wf__run *run)
{
    pthread_mutex_lock(&run->snap_lock);
    atomic_store(&run->gate, 0);
    wf__task *held = run->held;
    run->held = NULL;
    pthread_mutex_unlock(&run->snap_lock);
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
    pthread_mutex_lock(&run->snap_mu);
    if (wf__run_ended(run) || atomic_load(&run->gate) != 0) { /* ended, or being cancelled */
        pthread_mutex_unlock(&run->snap_mu);
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
        pthread_rwlock_wrlock(&run->outside);
        pthread_mutex_lock(&run->snap_lock);
        if ((ended = wf__run_ended(run)) != 0)
            break;
        pthread_mutex_lock(&run->collect_lock);
        pthread_mutex_lock(&run->mu);
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
        pthread_mutex_unlock(&run->mu);
        pthread_mutex_unlock(&run->collect_lock);
        if (done)
            break;
        pthread_mutex_unlock(&run->snap_lock);
        pthread_rwlock_unlock(&run->outside);
        relax(&spins);
        if (spins >= 256 && spins % 16 == 0) {
            /*
             * Still short: tasks of the run wait in the pool's queues, and the
             * workers may all be waiting at the gate. Fetch them ourselves.
             */
            wf__task *got;
            if (wf__pool_take_run(ex, run, &got)) {
                pthread_mutex_lock(&run->snap_lock);
                while (got) {
                    wf__task *nx = atomic_load_explicit(&got->next, memory_order_relaxed);
                    atomic_store_explicit(&got->next, run->held, memory_order_relaxed);
                    run->held = got;
                    got = nx;
                }
                pthread_mutex_unlock(&run->snap_lock);
            }
        }
    }
    int rc = ended ? WF_ESTATE : m->rc;
    if (rc == 0 && cancel)
        atomic_store(&run->gate, 2); /* closed until the run has ended */
    pthread_mutex_unlock(&run->snap_lock);
    pthread_rwlock_unlock(&run->outside);
    if (rc == 0 && cancel) {
        /*
         * The cut is the cancel: the run ends before anything else of it
         * runs (the gate stays closed). The run is encoded outside its locks
         * (the timer thread and senders, shared with other runs, would wait
         * on them) and parked before the run ends, that is before the
         * context is free for another run. snap_mu is let go first: end_run
         * calls on_done, which may look at the run (a snapshot of it finds
         * it ended).
         */
        pthread_mutex_unlock(&run->snap_mu);
        void *bytes;
        size_t len;
        int erc = encode_alone(m, &bytes, &len);
        if (erc == 0)
            wf__ctx_park(run->ctx, bytes, len);
        else /* cancelled all the same, as wf_handler_cancel does when it cannot park */
            wf__log(ex, WF_LOG_WARN, "run %llu: cancelled without parking its state (%s)",
                    (unsigned long long)run->id, wf_strerror(erc));
        int o = wf__outside_enter(run);
        if (!wf__end_run(run, WF_RUN_CANCELLED, NULL, WF_ECANCELLED, NULL, NULL))
            rc = WF_ESTATE;
        wf__outside_exit(run, o);
        gate_open(run);
    } else {
        gate_open(run);
        pthread_mutex_unlock(&run->snap_mu);
    }
    if (pause_ns)
        *pause_ns = wf__now_ns() - t0;
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
    pthread_mutex_lock(&ctx->run_lock);
    wf__run *run = atomic_load(&ctx->run);
    if (run)
        atomic_fetch_add(&run->refs, 1);
    pthread_mutex_unlock(&ctx->run_lock);
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

/* ---------------------------------------------------------------- resume */

/*
 * Reading a run map. Checking it (wf_ctx_load) and building the run's
 * structures from it (wf_run_resume) are one walk over the bytes with one
 * set of checks: when build is 0 nothing is allocated but the step, type and
 * group tables, so a run that loads is a run that resumes (memory allowing),
 * and a load costs no event.
 */
/* The run map's entries, in the order they can be read (each needs those before it). */
enum { R_STEPS, R_TYPES, R_GROUPS, R_BUFFERS, R_WAITERS, R_RETRIES, R_TASKS, R_COUNTERS, R_N };
static const char *const run_keys[R_N] = {"steps",   "types",   "groups", "buffers",
                                          "waiters", "retries", "tasks",  "counters"};
#define NO_ITEM UINT32_MAX
/* Milliseconds (times left, since a first attempt) beyond this are refused: in ns they overflow. */
#define MAX_MS (INT64_MAX / 4 / 1000000)

typedef struct dec {
    wf__rd r;
    int build;
    wf_workflow *wf;
    wf__rd_key keys[R_N];
    const wf_event_type **types;
    uint32_t ntypes;
    uint32_t *steps; /* the snapshot's step index -> the definition's */
    uint32_t nsteps;
    uint32_t *gn; /* branches per group */
    uint32_t ngroups;
    wf__group **groups; /* built */
    uint32_t *drops;    /* (group, branch) pairs that drop out when attached */
    uint32_t ndrops;
    wf__task **tasks;   /* built, in order */
    uint32_t ntasks;
    wf__waiter *waiters;
    wf__collect *collect;
    wf__retry_timer *retries;
    uint64_t dropped, unhandled;
    const char *field; /* where the walk is, for messages: run.<field>[item] */
    uint32_t item;
    char **message;
    int64_t now;
} dec;

static int bad(dec *d, const char *what)
{
    return wf__rd_fail(&d->r, what);
}

static void here(dec *d, const char *field, uint32_t item)
{
    d->field = field;
    d->item = item;
}

/* The cursor at the value of the run's key k: 1, or 0 when the run has none. */
static int seek(dec *d, int k)
{
    d->r.off = d->keys[k].at;
    return d->keys[k].at != 0;
}

/* A name of at most 4096 bytes without NUL, copied into buf[4097]. */
static int rd_name(dec *d, char *buf)
{
    const char *s;
    uint32_t n;
    if (wf__rd_str(&d->r, &s, &n) < 0 || n > 4096 || memchr(s, 0, n))
        return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    return 0;
}

/* [type index, {fields}]: *out built (frozen) when building; *type (optional) its type. */
static int dec_event(dec *d, wf_event **out, const wf_event_type **type)
{
    *out = NULL;
    uint32_t n, ti;
    if (wf__rd_array(&d->r, &n) < 0 || n != 2 || wf__rd_u32(&d->r, d->ntypes, &ti) < 0)
        return bad(d, "an event is [type index, {fields}]");
    if (type)
        *type = d->types[ti];
    int rc = wf__rd_fields(&d->r, d->types[ti], d->build ? out : NULL);
    if (rc == 0 && *out)
        wf_event_freeze(*out);
    return rc;
}

/* A decoded task that never reached a run (its group goes with the decoded groups). */
static void task_discard(wf__task *t)
{
    if (t == NULL)
        return;
    t->u.group = NULL;
    wf__drop_task(t);
}

/* [ms since the first attempt or -1, last error, last message or nil] */
static int dec_retry_info(dec *d, wf__retry_info *ri)
{
    wf__rd *r = &d->r;
    uint32_t n;
    int64_t ago, err;
    if (wf__rd_array(r, &n) < 0 || n != 3 || wf__rd_i64(r, &ago) < 0 || ago > MAX_MS ||
        wf__rd_i64(r, &err) < 0 || err < INT32_MIN || err > 0)
        return bad(d, "bad retry bookkeeping");
    char msg[4097];
    int has_msg = !wf__rd_nil(r);
    if (has_msg && rd_name(d, msg) < 0)
        return bad(d, "bad retry bookkeeping");
    if (ri) {
        ri->first_ns = ago >= 0 ? d->now - ago * 1000000 : 0;
        ri->last_error = (int32_t)err;
        if (has_msg && (ri->last_msg = wf__strdup(msg)) == NULL)
            return WF_ENOMEM;
    }
    return 0;
}

/* [step, type, fields, state, attempt, lineage, group, branch, retry, tuple] */
static int dec_task(dec *d, wf__task **out)
{
    *out = NULL;
    wf__rd *r = &d->r;
    uint32_t n, step, ti;
    if (wf__rd_array(r, &n) < 0 || n < 3 || n > 10)
        return bad(d, "a task is an array of 3 to 10 items");
    if (wf__rd_u32(r, d->nsteps, &step) < 0 || wf__rd_u32(r, d->ntypes, &ti) < 0)
        return bad(d, "bad step or type index");
    wf_event *ev = NULL;
    int rc = wf__rd_fields(r, d->types[ti], d->build ? &ev : NULL);
    if (rc < 0)
        return rc;
    uint32_t state = 0, attempt = 1, lineage = 0, group = NO_ITEM, branch = 0;
    if (n > 3 && wf__rd_u32(r, 2, &state) < 0)
        rc = bad(d, "bad state (0 queued, 1 in progress)");
    else if (n > 4 && (wf__rd_u32(r, UINT32_MAX, &attempt) < 0 || attempt == 0))
        rc = bad(d, "bad attempt");
    else if (n > 5 && wf__rd_u32(r, 65536, &lineage) < 0)
        rc = bad(d, "bad lineage");
    else if (n > 6 && !wf__rd_nil(r) &&
             (wf__rd_u32(r, d->ngroups, &group) < 0 || n < 8 ||
              wf__rd_u32(r, d->gn[group], &branch) < 0))
        rc = bad(d, "bad fan-out group or branch");
    else if (n > 7 && group == NO_ITEM && wf__rd_u32(r, UINT32_MAX, &branch) < 0)
        rc = bad(d, "bad fan-out branch");
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    wf__task *t = NULL;
    if (d->build) {
        if ((t = wf__task_alloc()) == NULL) {
            wf_event_release(ev);
            return WF_ENOMEM;
        }
        wf_event_freeze(ev);
        t->kind = WF__TASK_INVOKE;
        t->run = NULL;
        t->ev = ev;
        t->step = d->steps[step];
        t->attempt = attempt;
        t->flags = (uint16_t)lineage;
        t->arg = NULL;
    }
    int has_retry = n > 8 && !wf__rd_nil(r);
    wf__retry_info *ri = NULL;
    if (t && (has_retry || n > 9)) {
        if ((ri = wf__calloc(1, sizeof *ri)) == NULL)
            rc = WF_ENOMEM;
        t->arg = ri;
    }
    if (rc == 0 && has_retry)
        rc = dec_retry_info(d, ri);
    if (rc == 0 && n > 9) {
        uint32_t m;
        if (wf__rd_array(r, &m) < 0) {
            rc = bad(d, "a joined set is an array of events");
        } else if (ri) {
            ri->joined = 1;
            if ((ri->tuple = wf__calloc(m ? m : 1, sizeof *ri->tuple)) == NULL)
                rc = WF_ENOMEM;
        }
        for (uint32_t i = 0; rc == 0 && i < m; i++) {
            wf_event *e;
            if ((rc = dec_event(d, &e, NULL)) == 0 && ri)
                ri->tuple[ri->ntuple++] = e;
        }
    }
    if (rc < 0) {
        task_discard(t);
        return rc;
    }
    if (t && group != NO_ITEM) {
        t->u.group = d->groups[group];
        t->pad = branch;
        wf__branch_add(t->u.group, branch);
    }
    *out = t;
    return 0;
}

static void dec_free(dec *d)
{
    for (uint32_t i = 0; i < d->ntasks; i++)
        task_discard(d->tasks[i]);
    wf__free_mem(d->tasks);
    while (d->retries) {
        wf__retry_timer *nx = d->retries->next;
        task_discard(d->retries->t);
        wf__free_mem(d->retries);
        d->retries = nx;
    }
    while (d->waiters) {
        wf__waiter *nx = d->waiters->next;
        task_discard(d->waiters->task);
        wf_event_release(d->waiters->got);
        wf_value_release(d->waiters->req);
        wf__free_mem(d->waiters->id);
        wf__free_mem(d->waiters);
        d->waiters = nx;
    }
    wf__collect_free(d->collect);
    if (d->ngroups && d->groups && d->groups[0])
        wf__groups_free(d->groups[0]); /* linked in order through next_in_run */
    wf__free_mem(d->groups);
    wf__free_mem(d->drops);
    wf__free_mem(d->gn);
    wf__free_mem(d->steps);
    wf__free_mem((void *)d->types);
}

static int dec_steps(dec *d)
{
    char name[4097], m[4400];
    here(d, "steps", NO_ITEM);
    if (!seek(d, R_STEPS) || wf__rd_array(&d->r, &d->nsteps) < 0)
        return bad(d, "missing, or not an array");
    d->steps = wf__calloc(d->nsteps ? d->nsteps : 1, sizeof *d->steps);
    if (d->steps == NULL)
        return WF_ENOMEM;
    for (uint32_t i = 0; i < d->nsteps; i++) {
        here(d, "steps", i);
        if (rd_name(d, name) < 0)
            return bad(d, "a step name is a string");
        wf__step *s = wf__workflow_find_step(d->wf, name);
        if (s == NULL) {
            snprintf(m, sizeof m, "the snapshot's step '%s' is not in workflow '%s'", name,
                     d->wf->name);
            if (d->message && *d->message == NULL)
                *d->message = wf__strdup(m);
            return WF_EMISMATCH;
        }
        d->steps[i] = s->index;
    }
    return 0;
}

static int dec_types(dec *d)
{
    char name[4097], m[4400];
    here(d, "types", NO_ITEM);
    if (!seek(d, R_TYPES) || wf__rd_array(&d->r, &d->ntypes) < 0)
        return bad(d, "missing, or not an array");
    d->types = wf__calloc(d->ntypes ? d->ntypes : 1, sizeof *d->types);
    if (d->types == NULL)
        return WF_ENOMEM;
    for (uint32_t i = 0; i < d->ntypes; i++) {
        here(d, "types", i);
        if (rd_name(d, name) < 0)
            return bad(d, "a type name is a string");
        if ((d->types[i] = wf_registry_find(d->wf->reg, name)) == NULL) {
            snprintf(m, sizeof m, "the snapshot's event type '%s' is not registered", name);
            if (d->message && *d->message == NULL)
                *d->message = wf__strdup(m);
            return WF_ENOTFOUND;
        }
    }
    return 0;
}

/*
 * Groups: [parent, parent branch, join step, collected type, origin,
 * lineage, resolved, results]. Their sizes come first (tasks, children and
 * parents refer to branches), then the rest.
 */
static int dec_groups(dec *d)
{
    wf__rd *r = &d->r;
    here(d, "groups", NO_ITEM);
    if (!seek(d, R_GROUPS) || wf__rd_array(r, &d->ngroups) < 0)
        return bad(d, "missing, or not an array");
    d->gn = wf__calloc(d->ngroups ? d->ngroups : 1, sizeof *d->gn);
    if (d->gn == NULL)
        return WF_ENOMEM;
    for (uint32_t i = 0; i < d->ngroups; i++) {
        here(d, "groups", i);
        uint32_t n, nres;
        const char *res;
        if (wf__rd_array(r, &n) < 0 || n != 8)
            return bad(d, "a group is [parent, branch, join, type, origin, lineage, resolved, "
                          "results]");
        for (int k = 0; k < 6; k++)
            if (wf__rd_check(r) < 0)
                return WF_EFORMAT;
        if (wf__rd_strbin(r, 1, &res, &d->gn[i]) < 0 || wf__rd_array(r, &nres) < 0 ||
            nres != d->gn[i])
            return bad(d, "resolved (bin) and results (array) have one item per branch");
        if (d->gn[i] > UINT32_MAX / 2)
            return bad(d, "too many branches");
        for (uint32_t b = 0; b < nres; b++)
            if (wf__rd_check(r) < 0)
                return WF_EFORMAT;
    }
    if (d->build) {
        d->groups = wf__calloc(d->ngroups ? d->ngroups : 1, sizeof *d->groups);
        if (d->groups == NULL)
            return WF_ENOMEM;
        for (uint32_t i = 0; i < d->ngroups; i++) {
            uint32_t n = d->gn[i];
            wf__group *g = wf__group_new(n); /* one block, its arrays zeroed */
            if (g == NULL)
                return WF_ENOMEM;
            if (i > 0)
                d->groups[i - 1]->next_in_run = g;
            d->groups[i] = g;
        }
    }
    uint32_t n;
    seek(d, R_GROUPS);
    wf__rd_array(r, &n); /* read above */
    for (uint32_t i = 0; i < d->ngroups; i++) {
        here(d, "groups", i);
        wf__group *g = d->build ? d->groups[i] : NULL;
        uint32_t parent = NO_ITEM, branch, join, ti, lineage;
        wf__rd_array(r, &n);
        /* groups are listed newest first: a parent comes after its children (no cycle) */
        if ((!wf__rd_nil(r) && (wf__rd_u32(r, d->ngroups, &parent) < 0 || parent <= i)) ||
            wf__rd_u32(r, parent == NO_ITEM ? UINT32_MAX : d->gn[parent], &branch) < 0)
            return bad(d, "bad parent group (a later one) or branch");
        if (wf__rd_u32(r, d->nsteps, &join) < 0 || wf__rd_u32(r, d->ntypes, &ti) < 0)
            return bad(d, "bad join step or collected type");
        wf_event *origin;
        int rc = dec_event(d, &origin, NULL);
        if (rc < 0)
            return rc;
        if (g)
            g->origin = origin;
        if (wf__rd_u32(r, 65536, &lineage) < 0)
            return bad(d, "bad lineage");
        const char *res = NULL;
        uint32_t nb = 0, nres = 0, unresolved = 0;
        if (wf__rd_strbin(r, 1, &res, &nb) < 0 || wf__rd_array(r, &nres) < 0 || nb != d->gn[i] ||
            nres != nb)
            return bad(d, "resolved (bin) and results (array) have one item per branch");
        for (uint32_t b = 0; b < nb; b++) {
            uint8_t st = (uint8_t)res[b];
            if (st > 2)
                return bad(d, "a branch is unresolved (0), resolved (1) or out (2)");
            unresolved += st == 0;
            wf_event *e = NULL;
            if (!wf__rd_nil(r) && (rc = dec_event(d, &e, NULL)) < 0)
                return rc;
            if (g) {
                atomic_init(&g->resolved[b], st);
                g->result[b] = e;
            }
        }
        if (g) {
            if (parent != NO_ITEM) {
                g->parent = d->groups[parent];
                g->parent_branch = branch;
            }
            g->join_step = d->steps[join];
            g->collect = d->types[ti];
            g->lineage = (uint16_t)lineage;
            atomic_init(&g->unresolved, unresolved);
        }
    }
    /* a fan-out that has not joined yet holds a unit on its parent's branch */
    for (uint32_t i = 0; d->build && i < d->ngroups; i++) {
        wf__group *g = d->groups[i];
        if (g->parent && atomic_load(&g->unresolved) > 0)
            wf__branch_add(g->parent, g->parent_branch);
    }
    return 0;
}

/* Buffers: [step, id (str) or nil (a join's arrivals), [[type, [events]]...]] */
static int dec_buffers(dec *d)
{
    wf__rd *r = &d->r;
    uint32_t nb;
    here(d, "buffers", NO_ITEM);
    if (!seek(d, R_BUFFERS) || wf__rd_array(r, &nb) < 0)
        return bad(d, "missing, or not an array");
    wf__collect **tail = &d->collect;
    for (uint32_t i = 0; i < nb; i++) {
        here(d, "buffers", i);
        uint32_t n, step, nq;
        char id[4097];
        int has_id = 0;
        if (wf__rd_array(r, &n) < 0 || n != 3 || wf__rd_u32(r, d->nsteps, &step) < 0 ||
            (!wf__rd_nil(r) && (has_id = 1, rd_name(d, id) < 0)) || wf__rd_array(r, &nq) < 0)
            return bad(d, "a buffer is [step, id, [[type, [events]]...]]");
        wf__collect *c = NULL;
        if (d->build) {
            if ((c = wf__calloc(1, sizeof *c)) == NULL)
                return WF_ENOMEM;
            *tail = c;
            tail = &c->next;
            c->step = d->steps[step];
            if (has_id && (c->id = wf__strdup(id)) == NULL)
                return WF_ENOMEM;
        }
        for (uint32_t k = 0; k < nq; k++) {
            uint32_t m, ti, ne;
            if (wf__rd_array(r, &m) < 0 || m != 2 || wf__rd_u32(r, d->ntypes, &ti) < 0 ||
                wf__rd_array(r, &ne) < 0)
                return bad(d, "a buffered queue is [type, [events]]");
            wf__cq *cq = NULL;
            if (c && (cq = wf__cq_find(c, d->types[ti], 1)) == NULL)
                return WF_ENOMEM;
            for (uint32_t j = 0; j < ne; j++) {
                wf_event *ev;
                const wf_event_type *et;
                int rc = dec_event(d, &ev, &et);
                if (rc < 0)
                    return rc;
                if (et != d->types[ti] && !wf_event_type_is(et, d->types[ti])) {
                    wf_event_release(ev);
                    return bad(d, "an event of another type in a buffered queue");
                }
                if (cq && wf__cq_push(cq, ev) < 0) {
                    wf_event_release(ev);
                    return WF_ENOMEM;
                }
            }
        }
    }
    return 0;
}

/* Waiters: [step, id, type, requirements, state, got, timeout_ms, left_ms, task] */
static int dec_waiters(dec *d)
{
    wf__rd *r = &d->r;
    uint32_t nw;
    here(d, "waiters", NO_ITEM);
    if (!seek(d, R_WAITERS) || wf__rd_array(r, &nw) < 0)
        return bad(d, "missing, or not an array");
    wf__waiter **tail = &d->waiters;
    for (uint32_t i = 0; i < nw; i++) {
        here(d, "waiters", i);
        uint32_t n, step, ti, state;
        char id[4097];
        int c;
        if (wf__rd_array(r, &n) < 0 || n != 9 || wf__rd_u32(r, d->nsteps, &step) < 0 ||
            rd_name(d, id) < 0 || wf__rd_u32(r, d->ntypes, &ti) < 0 ||
            ((c = wf__rd_peek(r)) != 0xc0 && !((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf)))
            return bad(d, "a waiter is [step, id, type, requirements (map or nil), state, got, "
                          "timeout_ms, left_ms, task]");
        wf__waiter *w = NULL;
        if (d->build) {
            if ((w = wf__calloc(1, sizeof *w)) == NULL)
                return WF_ENOMEM;
            *tail = w;
            tail = &w->next;
            w->tm.heap_index = WF__TIMER_IDLE;
            w->req = wf_value_nil();
            w->step = d->steps[step];
            w->type = d->types[ti];
            if ((w->id = wf__strdup(id)) == NULL)
                return WF_ENOMEM;
        }
        int rc;
        if (!wf__rd_nil(r) && (rc = wf__rd_value(r, w ? &w->req : NULL, 0)) < 0)
            return rc;
        if (wf__rd_u32(r, 3, &state) < 0)
            return bad(d, "a waiter's state is 0 waiting, 1 resolved or 2 timed out");
        wf_event *got = NULL;
        if (!wf__rd_nil(r) && (rc = dec_event(d, &got, NULL)) < 0)
            return rc;
        if (w)
            w->got = got;
        int64_t timeout_ms, left = -1;
        if (wf__rd_i64(r, &timeout_ms) < 0 ||
            (!wf__rd_nil(r) && (wf__rd_i64(r, &left) < 0 || left < 0 || left > MAX_MS)))
            return bad(d, "bad timeout or time left");
        if ((state == W_WAITING) == (wf__rd_peek(r) == 0xc0))
            return bad(d, "a waiting waiter has its task, another none");
        wf__task *t = NULL;
        if (!wf__rd_nil(r) && (rc = dec_task(d, &t)) < 0)
            return rc;
        if (w) {
            w->task = t;
            w->state = (int)state;
            w->timeout_ms = timeout_ms;
            w->timer_live = left >= 0 && state == W_WAITING; /* armed when the run starts */
            w->tm.deadline_ns = left >= 0 ? left : 0;        /* ms left, until then */
        }
    }
    return 0;
}

/* Retries: [ms left, task] */
static int dec_retries(dec *d)
{
    wf__rd *r = &d->r;
    uint32_t nr;
    here(d, "retries", NO_ITEM);
    if (!seek(d, R_RETRIES) || wf__rd_array(r, &nr) < 0)
        return bad(d, "missing, or not an array");
    for (uint32_t i = 0; i < nr; i++) {
        here(d, "retries", i);
        uint32_t n;
        int64_t left;
        if (wf__rd_array(r, &n) < 0 || n != 2 || wf__rd_i64(r, &left) < 0 || left < 0 ||
            left > MAX_MS)
            return bad(d, "a retry is [ms left, task]");
        wf__retry_timer *rt = NULL;
        if (d->build) {
            if ((rt = wf__calloc(1, sizeof *rt)) == NULL)
                return WF_ENOMEM;
            rt->next = d->retries;
            d->retries = rt;
            rt->tm.heap_index = WF__TIMER_IDLE;
            rt->tm.deadline_ns = left;
        }
        wf__task *t;
        int rc = dec_task(d, &t);
        if (rc < 0)
            return rc;
        if (rt)
            rt->t = t;
    }
    return 0;
}

static int dec_tasks(dec *d)
{
    wf__rd *r = &d->r;
    uint32_t n;
    here(d, "tasks", NO_ITEM);
    if (!seek(d, R_TASKS) || wf__rd_array(r, &n) < 0)
        return bad(d, "missing, or not an array");
    if (d->build && (d->tasks = wf__calloc(n ? n : 1, sizeof *d->tasks)) == NULL)
        return WF_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        here(d, "tasks", i);
        wf__task *t;
        int rc = dec_task(d, &t);
        if (rc < 0)
            return rc;
        if (d->build)
            d->tasks[d->ntasks++] = t;
    }
    return 0;
}

/* counters: {"queued", "in_progress" (for readers), "dropped", "unhandled"} */
static int dec_counters(dec *d)
{
    here(d, "counters", NO_ITEM);
    if (!seek(d, R_COUNTERS))
        return 0;
    wf__rd_key keys[2] = {{"dropped", 0, 0, 0}, {"unhandled", 0, 0, 0}};
    int rc = wf__rd_keys(&d->r, keys, 2);
    if (rc < 0)
        return rc;
    uint64_t *v[2] = {&d->dropped, &d->unhandled};
    for (int k = 0; k < 2; k++) {
        int64_t i;
        int neg;
        d->r.off = keys[k].at;
        if (keys[k].at && (wf__rd_integer(&d->r, v[k], &i, &neg) < 0 || neg))
            return bad(d, "a counter is a non-negative integer");
    }
    return 0;
}

/* What reads each entry, and the entries it needs read before it (bits of R_*). */
static const struct {
    int (*read)(dec *d);
    uint32_t needs;
} run_parts[R_N] = {
    [R_STEPS] = {dec_steps, 0},
    [R_TYPES] = {dec_types, 0},
    [R_GROUPS] = {dec_groups, 1u << R_STEPS | 1u << R_TYPES},
    [R_BUFFERS] = {dec_buffers, 1u << R_STEPS | 1u << R_TYPES},
    [R_WAITERS] = {dec_waiters, 1u << R_STEPS | 1u << R_TYPES | 1u << R_GROUPS},
    [R_RETRIES] = {dec_retries, 1u << R_STEPS | 1u << R_TYPES | 1u << R_GROUPS},
    [R_TASKS] = {dec_tasks, 1u << R_STEPS | 1u << R_TYPES | 1u << R_GROUPS},
    [R_COUNTERS] = {dec_counters, 0},
};

/*
 * The run map, read in one walk when its entries come in an order where each
 * finds what it refers to already read (wf writes them so: the tables, the
 * groups, ..., the tasks last); an entry that comes too early is checked,
 * passed over and read once the rest is in. The map must span the bytes.
 */
/*
 * Every unit is in now. A group is freed when its last open branch closes
 * (run.c): open are the branches something refers to, and the unresolved
 * ones with nothing left, which get a unit here and drop out when attached
 * (as they would have); one hold per group keeps it until then.
 */
static int dec_groups_open(dec *d)
{
    uint32_t ndrops = 0;
    for (uint32_t i = 0; i < d->ngroups; i++)
        for (uint32_t b = 0; b < d->groups[i]->n; b++)
            ndrops += atomic_load(&d->groups[i]->resolved[b]) == 0 &&
                      atomic_load(&d->groups[i]->outstanding[b]) == 0;
    d->drops = wf__malloc((ndrops ? ndrops : 1) * 2 * sizeof *d->drops);
    if (d->drops == NULL)
        return WF_ENOMEM;
    for (uint32_t i = 0; i < d->ngroups; i++) {
        wf__group *g = d->groups[i];
        uint32_t open = 1;
        for (uint32_t b = 0; b < g->n; b++) {
            if (atomic_load(&g->resolved[b]) == 0 && atomic_load(&g->outstanding[b]) == 0) {
                wf__branch_add(g, b);
                d->drops[2 * d->ndrops] = i;
                d->drops[2 * d->ndrops + 1] = b;
                d->ndrops++;
            }
            open += atomic_load(&g->outstanding[b]) > 0;
        }
        atomic_store(&g->open, open);
    }
    return 0;
}

static int dec_run(dec *d)
{
    wf__rd *r = &d->r;
    for (int k = 0; k < R_N; k++) {
        d->keys[k].name = run_keys[k];
        d->keys[k].at = d->keys[k].end = 0;
    }
    here(d, "", NO_ITEM);
    uint32_t n, done = 0;
    int rc = 0;
    if (wf__rd_map(r, &n) < 0)
        rc = bad(d, "the run is a map");
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        here(d, "", NO_ITEM);
        size_t key_at = r->off;
        const char *s;
        uint32_t sl;
        int k = R_N;
        if (wf__rd_str(r, &s, &sl) < 0) {
            rc = bad(d, "map key is not a string");
            break;
        }
        for (int j = 0; j < R_N && k == R_N; j++)
            if (strlen(run_keys[j]) == sl && memcmp(run_keys[j], s, sl) == 0)
                k = j;
        if (k < R_N && d->keys[k].at) {
            r->off = key_at;
            rc = bad(d, "duplicate map key");
            break;
        }
        if (k < R_N)
            d->keys[k].at = r->off;
        if (k < R_N && (run_parts[k].needs & ~done) == 0) {
            if ((rc = run_parts[k].read(d)) == 0)
                done |= 1u << k;
        } else {
            rc = wf__rd_check(r); /* unknown (ignored), or read below */
        }
        if (rc == 0 && k < R_N)
            d->keys[k].end = r->off;
    }
    size_t end = r->off;
    for (int k = 0; rc == 0 && k < R_N; k++)
        if (!(done & 1u << k))
            rc = run_parts[k].read(d);
    if (rc == 0 && d->build)
        rc = dec_groups_open(d);
    if (rc == 0 && end != r->len) {
        here(d, "", NO_ITEM);
        r->off = end;
        rc = bad(d, "bytes after the run map");
    }
    if (rc == WF_EFORMAT && d->message && *d->message == NULL) {
        char what[96];
        if (d->item != NO_ITEM)
            snprintf(what, sizeof what, "malformed snapshot: run.%s[%u]", d->field, d->item);
        else
            snprintf(what, sizeof what, "malformed snapshot: run%s%s", *d->field ? "." : "",
                     d->field);
        *d->message = wf__rd_message(&d->r, what);
    }
    return rc;
}

/* Puts the decoded bookkeeping into the new run and starts it. */
static void attach(dec *d, wf__run *run)
{
    int o = wf__outside_enter(run);
    atomic_store(&run->dropped, d->dropped);
    atomic_store(&run->unhandled, d->unhandled);
    pthread_mutex_lock(&run->collect_lock);
    run->collect = d->collect;
    d->collect = NULL;
    run->waiters = d->waiters;
    for (wf__waiter *w = run->waiters; w; w = w->next) {
        w->run = run;
        w->tm.fn = wf__waiter_fire;
        w->tm.arg = w;
        if (w->task)
            w->task->run = run;
        if (w->state == W_WAITING)
            atomic_fetch_add(&run->nwaiting, 1);
        if (w->timer_live) {
            wf__engine_ref(run);
            if (wf__timer_arm(run->ex, &w->tm, d->now + w->tm.deadline_ns * 1000000) < 0) {
                w->timer_live = 0;
                w->timeout_ms = WF_NO_TIMEOUT;
                wf__engine_unref(run);
            }
        }
    }
    d->waiters = NULL;
    pthread_mutex_unlock(&run->collect_lock);
    while (d->retries) {
        wf__retry_timer *rt = d->retries;
        d->retries = rt->next;
        rt->run = run;
        rt->t->run = run;
        rt->tm.fn = wf__retry_fire;
        rt->tm.arg = rt;
        wf__engine_ref(run);
        pthread_mutex_lock(&run->mu);
        rt->prev = NULL;
        rt->next = run->retries;
        if (run->retries)
            run->retries->prev = rt;
        run->retries = rt;
        rt->listed = 1;
        int armed = wf__timer_arm(run->ex, &rt->tm, d->now + rt->tm.deadline_ns * 1000000) == 0;
        if (!armed)
            WF__DLIST_UNLINK(run->retries, rt);
        pthread_mutex_unlock(&run->mu);
        if (!armed) { /* deliver it now rather than lose it */
            wf__task *t = rt->t;
            wf__free_mem(rt);
            wf__engine_unref(run);
            if (wf__deliver_task(run, t) < 0)
                wf__end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, NULL, "out of memory resuming");
        }
    }
    for (uint32_t i = 0; i < d->ntasks; i++) {
        wf__task *t = d->tasks[i];
        d->tasks[i] = NULL;
        t->run = run;
        if (wf__deliver_task(run, t) < 0)
            wf__end_run(run, WF_RUN_FAILED, NULL, WF_ENOMEM, NULL, "out of memory resuming");
    }
    d->ntasks = 0;
    /* branches with nothing left drop out (as they would have); then the holds go */
    for (uint32_t k = 0; k < d->ndrops; k++)
        wf__branch_done(run, d->groups[d->drops[2 * k]], d->drops[2 * k + 1]);
    for (uint32_t i = 0; i < d->ngroups; i++)
        wf__group_close(d->groups[i]);
    d->ngroups = 0; /* the run's tasks own them */
    wf__outside_exit(run, o);
}

int wf_run_resume(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx, const wf_run_params *params,
                  wf_handler **out, char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = NULL;
    if (ex == NULL || wf == NULL || ctx == NULL || out == NULL)
        return WF_EINVAL;
    wf_run_params defaults;
    if (params == NULL) {
        wf_run_params_init(&defaults);
        params = &defaults;
    }
    int rc = wf__run_params_check(wf, ctx, params, message);
    if (rc < 0)
        return rc;
    void *bytes;
    size_t len;
    rc = wf__ctx_parked_copy(ctx, &bytes, &len);
    if (rc <= 0) {
        if (rc == 0 && message)
            *message = wf__strdup("the context holds no run to resume");
        return rc == 0 ? WF_ESTATE : rc;
    }
    dec d;
    memset(&d, 0, sizeof d);
    wf__rd_init(&d.r, bytes, len, 0);
    d.build = 1;
    d.wf = wf;
    d.message = message;
    d.now = wf__now_ns();
    rc = dec_run(&d);
    wf__run *run = NULL;
    if (rc == 0)
        rc = wf__run_create(ex, wf, ctx, params, &run);
    if (rc == 0) {
        d.now = wf__now_ns();
        attach(&d, run);
        *out = (wf_handler *)run;
    }
    dec_free(&d);
    wf__free_mem(bytes);
    return rc;
}

int wf__run_check_doc(wf_workflow *wf, const void *doc, size_t off, size_t len, int build,
                      char **message)
{
    dec d;
    memset(&d, 0, sizeof d);
    wf__rd_init(&d.r, (const char *)doc + off, len, off);
    d.build = build;
    d.wf = wf;
    d.now = wf__now_ns();
    d.message = message;
    int rc = dec_run(&d);
    dec_free(&d);
    return rc;
}

int wf__run_check(wf_workflow *wf, const void *bytes, size_t len, char **message)
{
    return wf__run_check_doc(wf, bytes, 0, len, 0, message);
}
