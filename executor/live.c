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
 * nothing of the run moves: it copies the bookkeeping and opens the gate.
 * The run's pause is that wait plus the copy; other runs never stop.
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

/* Events waiting in a pending queue (stable: nobody produces or consumes). */
static uint32_t pendq_len(wf__pendq *q)
{
    uint32_t n = 0;
    if (q == NULL)
        return 0;
    for (wf__task *t = q->head; t; t = atomic_load_explicit(&t->next, memory_order_acquire))
        n += t != &q->stub;
    return n;
}

/*
 * 1 when every slot the steps' counts say is taken is accounted for (caller
 * holds snap_lock and the outside lock for writing; the gate is closed, the
 * dirty slots drained). inprog[i] gets the task slot i has in progress for
 * the run (NULL: none): the encoder uses this one reading, as a slot may
 * still flicker between clean and dirty (a runner reaching slot_dirty stores
 * the dirty bit, sees the gate and takes it back) while its task stays put.
 */
static int balanced(wf__run *run, uint32_t *have, wf__task **inprog)
{
    struct wf_executor *ex = run->ex;
    memset(have, 0, run->nsteps * sizeof *have);
    for (wf__task *t = run->held; t; t = atomic_load_explicit(&t->next, memory_order_relaxed))
        have[t->step]++;
    for (uint32_t i = 0; i < nslots(ex); i++) {
        wf__slot *s = slot_at(ex, i);
        inprog[i] = NULL;
        if ((atomic_load_explicit(&s->state, memory_order_acquire) & ~WF__SLOT_DIRTY) ==
            (uintptr_t)run) {
            inprog[i] = atomic_load_explicit(&s->task, memory_order_relaxed);
            have[inprog[i]->step]++;
        }
    }
    pthread_mutex_lock(&run->collect_lock);
    for (wf_completion *c = run->pending; c; c = c->next)
        if (c->task)
            have[c->task->step]++;
    pthread_mutex_unlock(&run->collect_lock);
    for (uint32_t s = 0; s < run->nsteps; s++) {
        wf__pendq *q = atomic_load_explicit(&run->steps[s].pendq, memory_order_acquire);
        uint32_t c = wf__step_count(run, s);
        if (have[s] + pendq_len(q) != c)
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------- encoding */

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

typedef struct enc {
    msgpack_packer pk;
    wf__buf buf;
    wf__run *run;
    int rc;
    uint32_t *type_idx; /* by type id: index + 1 in the types table, 0 if absent */
    uint32_t ntypes_reg;
    const wf_event_type **types;
    uint32_t ntypes;
    ptrmap groups;
    const wf__group **garr; /* the groups in index order */
    uint32_t ngarr, capgarr;
    uint64_t queued, in_progress;
    wf__task *const *inprog; /* by slot: the task in progress (balanced()) */
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

/* The type's index in the table (added on first sight). */
static uint32_t type_index(enc *e, const wf_event_type *t)
{
    if (t->id >= e->ntypes_reg) {
        enc_fail(e, WF_ETYPE);
        return 0;
    }
    if (e->type_idx[t->id] == 0) {
        e->types[e->ntypes] = t;
        e->type_idx[t->id] = ++e->ntypes;
    }
    return e->type_idx[t->id] - 1;
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
static void pack_task(enc *e, const wf__task *t, int in_progress)
{
    const wf__retry_info *ri = t->arg;
    int64_t group = ptrmap_get(&e->groups, t->u.group);
    uint32_t n = 3;
    if (in_progress)
        n = 4;
    if (t->attempt != 1)
        n = 5;
    if (t->flags)
        n = 6;
    if (group >= 0)
        n = 8;
    if (ri && (ri->first_ns || ri->last_error || ri->last_msg))
        n = 9;
    if (ri && ri->joined)
        n = 10;
    PK(msgpack_pack_array(&e->pk, n));
    PK(msgpack_pack_uint32(&e->pk, t->step));
    PK(msgpack_pack_uint32(&e->pk, type_index(e, t->ev->type)));
    int rc = wf__pack_fields(&e->pk, t->ev);
    if (rc < 0)
        enc_fail(e, rc);
    if (n > 3)
        PK(msgpack_pack_uint8(&e->pk, (uint8_t)(in_progress != 0)));
    if (n > 4)
        PK(msgpack_pack_uint32(&e->pk, t->attempt));
    if (n > 5)
        PK(msgpack_pack_uint16(&e->pk, t->flags));
    if (n > 6) {
        if (group >= 0)
            PK(msgpack_pack_int64(&e->pk, group));
        else
            PK(msgpack_pack_nil(&e->pk));
        PK(msgpack_pack_uint32(&e->pk, t->pad));
    }
    if (n > 8) {
        if (ri && (ri->first_ns || ri->last_error || ri->last_msg)) {
            PK(msgpack_pack_array(&e->pk, 3));
            int64_t ago = ri->first_ns ? (wf__now_ns() - ri->first_ns) / 1000000 : -1;
            PK(msgpack_pack_int64(&e->pk, ago));
            PK(msgpack_pack_int32(&e->pk, ri->last_error));
            if (ri->last_msg)
                pack_str(e, ri->last_msg);
            else
                PK(msgpack_pack_nil(&e->pk));
        } else {
            PK(msgpack_pack_nil(&e->pk));
        }
    }
    if (n > 9) {
        PK(msgpack_pack_array(&e->pk, ri->ntuple));
        for (uint32_t i = 0; i < ri->ntuple; i++)
            pack_event(e, ri->tuple[i]);
    }
    if (in_progress)
        e->in_progress++;
    else
        e->queued++;
}

static uint32_t count_tasks(enc *e)
{
    wf__run *run = e->run;
    uint32_t n = 0;
    for (uint32_t i = 0; i < nslots(run->ex); i++)
        for (wf__task *t = e->inprog[i]; t; t = t->chain)
            n++;
    for (wf__task *h = run->held; h; h = atomic_load_explicit(&h->next, memory_order_relaxed))
        for (wf__task *t = h; t; t = t->chain)
            n++;
    for (wf_completion *c = run->pending; c; c = c->next)
        n += c->task != NULL;
    for (uint32_t s = 0; s < run->nsteps; s++)
        n += pendq_len(atomic_load_explicit(&run->steps[s].pendq, memory_order_acquire));
    return n;
}

/* The tasks of step s: in progress first, then parked, then waiting, in order. */
static void pack_step_tasks(enc *e, uint32_t s)
{
    wf__run *run = e->run;
    for (uint32_t i = 0; i < nslots(run->ex); i++) {
        wf__task *t = e->inprog[i];
        if (t == NULL || t->step != s)
            continue;
        pack_task(e, t, 1);
        for (t = t->chain; t; t = t->chain)
            pack_task(e, t, 0); /* claimed with it, not started */
    }
    for (wf_completion *c = run->pending; c; c = c->next)
        if (c->task && c->task->step == s)
            pack_task(e, c->task, 1);
    /* held is a stack: the oldest parked chain is last */
    uint32_t nh = 0;
    for (wf__task *h = run->held; h; h = atomic_load_explicit(&h->next, memory_order_relaxed))
        nh += h->step == s;
    if (nh) {
        wf__task **v = wf__malloc(nh * sizeof *v);
        if (v == NULL) {
            enc_fail(e, WF_ENOMEM);
            return;
        }
        uint32_t k = nh;
        for (wf__task *h = run->held; h; h = atomic_load_explicit(&h->next, memory_order_relaxed))
            if (h->step == s)
                v[--k] = h;
        for (uint32_t j = 0; j < nh; j++)
            for (wf__task *t = v[j]; t; t = t->chain)
                pack_task(e, t, 0);
        wf__free_mem(v);
    }
    wf__pendq *q = atomic_load_explicit(&run->steps[s].pendq, memory_order_acquire);
    if (q)
        for (wf__task *t = q->head; t; t = atomic_load_explicit(&t->next, memory_order_acquire))
            if (t != &q->stub)
                pack_task(e, t, 0);
}

/*
 * A group lives as long as a task or a nested group refers to it (run.c), so
 * the groups of the cut are those the cut's tasks refer to, and their
 * ancestors: each gets an index on first sight.
 */
static void gather_group(enc *e, const wf__group *g)
{
    while (g && e->rc == 0 && ptrmap_get(&e->groups, g) < 0) {
        if (e->ngarr == e->capgarr) {
            uint32_t cap = e->capgarr ? e->capgarr * 2 : 16;
            const wf__group **a = wf__realloc((void *)e->garr, cap * sizeof *a);
            if (a == NULL) {
                enc_fail(e, WF_ENOMEM);
                return;
            }
            e->garr = a;
            e->capgarr = cap;
        }
        if (ptrmap_reserve(&e->groups) < 0) {
            enc_fail(e, WF_ENOMEM);
            return;
        }
        ptrmap_put(&e->groups, g, e->ngarr);
        e->garr[e->ngarr++] = g;
        g = g->parent;
    }
}

static void gather_chain(enc *e, const wf__task *t)
{
    for (; t; t = t->chain)
        gather_group(e, t->u.group);
}

static void gather_groups(enc *e)
{
    wf__run *run = e->run;
    for (uint32_t i = 0; i < nslots(run->ex); i++)
        gather_chain(e, e->inprog[i]);
    for (wf__task *h = run->held; h; h = atomic_load_explicit(&h->next, memory_order_relaxed))
        gather_chain(e, h);
    for (wf_completion *c = run->pending; c; c = c->next)
        if (c->task)
            gather_group(e, c->task->u.group);
    for (uint32_t s = 0; s < run->nsteps; s++) {
        wf__pendq *q = atomic_load_explicit(&run->steps[s].pendq, memory_order_acquire);
        if (q)
            for (wf__task *t = q->head; t; t = atomic_load_explicit(&t->next, memory_order_acquire))
                if (t != &q->stub)
                    gather_group(e, t->u.group);
    }
    for (wf__retry_timer *rt = run->retries; rt; rt = rt->next)
        gather_group(e, rt->t->u.group);
    for (wf__waiter *w = run->waiters; w; w = w->next)
        if (!w->orphan && w->task)
            gather_group(e, w->task->u.group);
}

static void pack_groups(enc *e)
{
    PK(msgpack_pack_array(&e->pk, e->ngarr));
    for (uint32_t gi = 0; gi < e->ngarr; gi++) {
        const wf__group *g = e->garr[gi];
        /* [parent, parent_branch, join step, collect type, origin, lineage, resolved, results] */
        PK(msgpack_pack_array(&e->pk, 8));
        int64_t p = ptrmap_get(&e->groups, g->parent);
        if (p >= 0)
            PK(msgpack_pack_int64(&e->pk, p));
        else
            PK(msgpack_pack_nil(&e->pk));
        PK(msgpack_pack_uint32(&e->pk, g->parent_branch));
        PK(msgpack_pack_uint32(&e->pk, g->join_step));
        PK(msgpack_pack_uint32(&e->pk, type_index(e, g->collect)));
        pack_event(e, g->origin);
        PK(msgpack_pack_uint16(&e->pk, g->lineage));
        PK(msgpack_pack_bin(&e->pk, g->n));
        for (uint32_t i = 0; i < g->n; i++) {
            char r = (char)atomic_load_explicit(&g->resolved[i], memory_order_relaxed);
            PK(msgpack_pack_bin_body(&e->pk, &r, 1));
        }
        PK(msgpack_pack_array(&e->pk, g->n));
        for (uint32_t i = 0; i < g->n; i++)
            pack_event(e, g->result[i]);
    }
}

static void pack_waiters(enc *e, int64_t now)
{
    wf__run *run = e->run;
    uint32_t n = 0;
    for (wf__waiter *w = run->waiters; w; w = w->next)
        n += !w->orphan;
    PK(msgpack_pack_array(&e->pk, n));
    for (wf__waiter *w = run->waiters; w; w = w->next) {
        if (w->orphan)
            continue;
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
        if (w->state == W_WAITING && w->timer_live) {
            int64_t left = (w->tm.deadline_ns - now) / 1000000;
            PK(msgpack_pack_int64(&e->pk, left > 0 ? left : 0));
        } else {
            PK(msgpack_pack_nil(&e->pk));
        }
        if (w->task) {
            pack_task(e, w->task, 0);
            e->queued--; /* a waiting step's event is counted as neither */
        } else {
            PK(msgpack_pack_nil(&e->pk));
        }
    }
}

static void pack_buffers(enc *e)
{
    wf__run *run = e->run;
    uint32_t n = 0;
    for (wf__collect *c = run->collect; c; c = c->next)
        n++;
    PK(msgpack_pack_array(&e->pk, n));
    for (wf__collect *c = run->collect; c; c = c->next) {
        /* [step, id or nil (a join's arrivals), [[type, [events]]...]] */
        PK(msgpack_pack_array(&e->pk, 3));
        PK(msgpack_pack_uint32(&e->pk, c->step));
        if (c->id)
            pack_str(e, c->id);
        else
            PK(msgpack_pack_nil(&e->pk));
        PK(msgpack_pack_array(&e->pk, c->nq));
        for (uint32_t i = 0; i < c->nq; i++) {
            const wf__cq *q = &c->qs[i];
            PK(msgpack_pack_array(&e->pk, 2));
            PK(msgpack_pack_uint32(&e->pk, type_index(e, q->type)));
            PK(msgpack_pack_array(&e->pk, q->len));
            for (uint32_t k = 0; k < q->len; k++)
                pack_event(e, q->ring[(q->head + k) % q->cap]);
        }
    }
}

static void pack_retries(enc *e, int64_t now)
{
    wf__run *run = e->run;
    uint32_t n = 0;
    for (wf__retry_timer *rt = run->retries; rt; rt = rt->next)
        n++;
    PK(msgpack_pack_array(&e->pk, n));
    for (wf__retry_timer *rt = run->retries; rt; rt = rt->next) {
        /* [delay_ms left, task] */
        PK(msgpack_pack_array(&e->pk, 2));
        int64_t left = (rt->tm.deadline_ns - now) / 1000000;
        PK(msgpack_pack_int64(&e->pk, left > 0 ? left : 0));
        pack_task(e, rt->t, 0);
    }
}

/*
 * The run map (snap_lock, outside for writing, collect_lock and mu held):
 * {"steps", "types", "tasks", "retries", "waiters", "buffers", "groups",
 * "counters", "timeout_ms"}. The type table is known only at the end, so
 * the body is packed first and the head (with the table) in front of it.
 */
static int encode_run(wf__run *run, wf__task *const *inprog, void **bytes, size_t *len)
{
    enc ee, *e = &ee;
    memset(e, 0, sizeof *e);
    e->run = run;
    e->inprog = inprog;
    wf__buf_init(&e->buf);
    msgpack_packer_init(&e->pk, &e->buf, wf__buf_write);
    e->ntypes_reg = atomic_load(&run->wf->reg->n);
    e->type_idx = wf__calloc(e->ntypes_reg ? e->ntypes_reg : 1, sizeof *e->type_idx);
    e->types = wf__calloc(e->ntypes_reg ? e->ntypes_reg : 1, sizeof *e->types);
    if (e->type_idx == NULL || e->types == NULL || ptrmap_init(&e->groups, 8) < 0)
        enc_fail(e, WF_ENOMEM);
    if (e->rc == 0)
        gather_groups(e);
    int64_t now = wf__now_ns();
    if (e->rc == 0) {
        PK(msgpack_pack_str(&e->pk, 5) || msgpack_pack_str_body(&e->pk, "tasks", 5));
        uint32_t ntasks = count_tasks(e);
        PK(msgpack_pack_array(&e->pk, ntasks));
        for (uint32_t s = 0; s < run->nsteps && e->rc == 0; s++)
            pack_step_tasks(e, s);
        if (e->rc == 0 && e->queued + e->in_progress != ntasks)
            enc_fail(e, WF_EINTERNAL); /* never a document that says one thing and holds another */
        pack_str(e, "retries");
        pack_retries(e, now);
        pack_str(e, "waiters");
        pack_waiters(e, now);
        pack_str(e, "buffers");
        pack_buffers(e);
        pack_str(e, "groups");
        pack_groups(e);
        pack_str(e, "counters");
        PK(msgpack_pack_map(&e->pk, 4));
        pack_str(e, "queued");
        PK(msgpack_pack_uint64(&e->pk, e->queued));
        pack_str(e, "in_progress");
        PK(msgpack_pack_uint64(&e->pk, e->in_progress));
        pack_str(e, "dropped");
        PK(msgpack_pack_uint64(&e->pk, atomic_load(&run->dropped)));
        pack_str(e, "unhandled");
        PK(msgpack_pack_uint64(&e->pk, atomic_load(&run->unhandled)));
        pack_str(e, "timeout_ms");
        PK(msgpack_pack_int64(&e->pk, run->timeout_ms));
        if (e->buf.oom)
            enc_fail(e, WF_ENOMEM);
    }
    /* the head: the map header, the step and type tables */
    wf__buf head;
    wf__buf_init(&head);
    if (e->rc == 0) {
        wf__buf body = e->buf;
        e->buf = head;
        msgpack_packer_init(&e->pk, &e->buf, wf__buf_write);
        PK(msgpack_pack_map(&e->pk, 9));
        pack_str(e, "steps");
        PK(msgpack_pack_array(&e->pk, run->nsteps));
        for (uint32_t s = 0; s < run->nsteps; s++)
            pack_str(e, run->wf->steps[s]->name);
        pack_str(e, "types");
        PK(msgpack_pack_array(&e->pk, e->ntypes));
        for (uint32_t i = 0; i < e->ntypes; i++)
            pack_str(e, e->types[i]->name);
        wf__buf_append(&e->buf, body.data ? body.data : "", body.len);
        if (e->buf.oom)
            enc_fail(e, WF_ENOMEM);
        wf__buf_free(&body);
    }
    wf__free_mem(e->type_idx);
    wf__free_mem((void *)e->types);
    ptrmap_free(&e->groups);
    wf__free_mem((void *)e->garr);
    return wf__buf_finish(&e->buf, e->rc, bytes, len);
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

int wf__run_capture(wf__run *run, int cancel, void **bytes, size_t *len, int64_t *pause_ns)
{
    *bytes = NULL;
    *len = 0;
    if (pause_ns)
        *pause_ns = 0;
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
    if (have == NULL || inprog == NULL) {
        wf__free_mem(have);
        wf__free_mem(inprog);
        return WF_ENOMEM;
    }
    pthread_mutex_lock(&run->snap_mu);
    if (wf__run_ended(run) || atomic_load(&run->gate) != 0) { /* ended, or being cancelled */
        pthread_mutex_unlock(&run->snap_mu);
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
    int ended = 0;
    for (;;) {
        pthread_rwlock_wrlock(&run->outside);
        pthread_mutex_lock(&run->snap_lock);
        ended = wf__run_ended(run);
        if (ended || balanced(run, have, inprog))
            break;
        pthread_mutex_unlock(&run->snap_lock);
        pthread_rwlock_unlock(&run->outside);
        relax(&spins);
    }
    int rc = WF_ESTATE;
    if (!ended) {
        pthread_mutex_lock(&run->collect_lock);
        pthread_mutex_lock(&run->mu);
        rc = encode_run(run, inprog, bytes, len);
        pthread_mutex_unlock(&run->mu);
        pthread_mutex_unlock(&run->collect_lock);
        if (rc == 0 && cancel)
            wf__ctx_park(run->ctx, *bytes, *len); /* before the context is free for another run */
    }
    if (rc == 0 && cancel)
        atomic_store(&run->gate, 2); /* closed until the run has ended */
    pthread_mutex_unlock(&run->snap_lock);
    pthread_rwlock_unlock(&run->outside);
    if (rc == 0 && cancel) {
        /*
         * The cut is the cancel: the run ends before anything else of it
         * runs. snap_mu is let go first: end_run calls on_done, which may
         * look at the run (a snapshot of it finds it ended).
         */
        pthread_mutex_unlock(&run->snap_mu);
        *bytes = NULL;
        *len = 0;
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
    wf__free_mem(have);
    wf__free_mem(inprog);
    return rc;
}

int wf__ctx_capture(wf_ctx *ctx, void **bytes, size_t *len, int64_t *pause_ns)
{
    pthread_mutex_lock(&ctx->run_lock);
    wf__run *run = atomic_load(&ctx->run);
    if (run)
        atomic_fetch_add(&run->refs, 1);
    pthread_mutex_unlock(&ctx->run_lock);
    if (run == NULL)
        return WF_ESTATE;
    int rc = wf__run_capture(run, 0, bytes, len, pause_ns);
    wf__run_release(run);
    return rc;
}

/* ---------------------------------------------------------------- resume */

typedef struct dec {
    wf_workflow *wf;
    const wf_event_type **types;
    uint32_t ntypes;
    uint32_t *steps; /* the snapshot's step index -> the definition's */
    uint32_t nsteps;
    wf__group **groups;
    uint32_t ngroups;
    uint32_t *drops; /* (group, branch) pairs that drop out when attached */
    uint32_t ndrops;
    wf__task **tasks; /* in order */
    uint32_t ntasks;
    wf__waiter *waiters;
    wf__collect *collect;
    wf__retry_timer *retries;
    int64_t *retry_left;
    uint64_t dropped, unhandled;
    char **message;
    int64_t now;
} dec;

static int bad(dec *d, const char *field, const char *what)
{
    if (d->message && *d->message == NULL) {
        char m[320];
        snprintf(m, sizeof m, "malformed snapshot: run.%s: %s", field, what);
        *d->message = wf__strdup(m);
    }
    return WF_EFORMAT;
}

static const msgpack_object *get_array(dec *d, const msgpack_object *map, const char *key, int *rc)
{
    const msgpack_object *o = wf__msgpack_get(map, key);
    if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY) {
        *rc = bad(d, key, "missing, or not an array");
        return NULL;
    }
    return o;
}

static int as_u32(const msgpack_object *o, uint32_t limit, uint32_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 >= limit)
        return -1;
    *out = (uint32_t)o->via.u64;
    return 0;
}

static int as_i64(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        *out = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = o->via.i64;
    else
        return -1;
    return 0;
}

static char *as_str(const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > 4096 ||
        (o->via.str.size && memchr(o->via.str.ptr, 0, o->via.str.size)))
        return NULL;
    return wf__strndup(o->via.str.ptr ? o->via.str.ptr : "", o->via.str.size);
}

static int dec_event(dec *d, const msgpack_object *o, const char *field, wf_event **out)
{
    *out = NULL;
    uint32_t ti;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
        as_u32(&o->via.array.ptr[0], d->ntypes, &ti) < 0)
        return bad(d, field, "an event is [type index, {fields}]");
    int rc = wf__event_from_object(d->types[ti], &o->via.array.ptr[1], out, d->message);
    if (rc < 0)
        return rc == WF_EFORMAT ? bad(d, field, "bad event fields") : rc;
    wf_event_freeze(*out);
    return 0;
}

/* A decoded task that never reached a run (its group goes with the decoded groups). */
static void task_discard(wf__task *t)
{
    if (t == NULL)
        return;
    t->u.group = NULL;
    wf__drop_task(t);
}

/* [step, type, fields, state, attempt, lineage, group, branch, retry, tuple] */
static int dec_task(dec *d, const msgpack_object *o, const char *field, wf__task **out)
{
    *out = NULL;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 3 || o->via.array.size > 10)
        return bad(d, field, "a task is an array of 3 to 10 items");
    const msgpack_object *a = o->via.array.ptr;
    uint32_t n = o->via.array.size, step, ti;
    if (as_u32(&a[0], d->nsteps, &step) < 0 || as_u32(&a[1], d->ntypes, &ti) < 0)
        return bad(d, field, "bad step or type index");
    wf__task *t = wf__task_alloc();
    if (t == NULL)
        return WF_ENOMEM;
    memset(t, 0, sizeof *t);
    t->kind = WF__TASK_INVOKE;
    t->step = d->steps[step];
    t->attempt = 1; /* the first execution, unless the task says otherwise */
    int rc = wf__event_from_object(d->types[ti], &a[2], &t->ev, d->message);
    if (rc < 0) {
        wf__task_free(t);
        return rc == WF_EFORMAT ? bad(d, field, "bad event fields") : rc;
    }
    wf_event_freeze(t->ev);
    uint32_t v = 0;
    int64_t gi = -1;
    if (n > 4 && as_u32(&a[4], UINT32_MAX, &t->attempt) < 0)
        rc = bad(d, field, "bad attempt");
    if (rc == 0 && n > 5) {
        if (as_u32(&a[5], 65536, &v) < 0)
            rc = bad(d, field, "bad lineage");
        t->flags = (uint16_t)v;
    }
    if (rc == 0 && n > 6 && a[6].type != MSGPACK_OBJECT_NIL) {
        if (as_u32(&a[6], d->ngroups, &v) < 0 || n < 8 ||
            as_u32(&a[7], d->groups[v]->n, &t->pad) < 0)
            rc = bad(d, field, "bad fan-out group or branch");
        gi = v;
    }
    wf__retry_info *ri = NULL;
    if (rc == 0 && ((n > 8 && a[8].type != MSGPACK_OBJECT_NIL) || n > 9)) {
        ri = wf__calloc(1, sizeof *ri);
        t->arg = ri;
        if (ri == NULL)
            rc = WF_ENOMEM;
    }
    if (rc == 0 && n > 8 && a[8].type != MSGPACK_OBJECT_NIL) {
        const msgpack_object *r = &a[8];
        int64_t ago, err;
        if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size != 3 ||
            as_i64(&r->via.array.ptr[0], &ago) < 0 || as_i64(&r->via.array.ptr[1], &err) < 0 ||
            err < INT32_MIN || err > 0 ||
            (r->via.array.ptr[2].type != MSGPACK_OBJECT_NIL &&
             (ri->last_msg = as_str(&r->via.array.ptr[2])) == NULL)) {
            rc = bad(d, field, "bad retry bookkeeping");
        } else {
            ri->first_ns = ago >= 0 ? d->now - ago * 1000000 : 0;
            ri->last_error = (int32_t)err;
        }
    }
    if (rc == 0 && n > 9) {
        const msgpack_object *tu = &a[9];
        if (tu->type != MSGPACK_OBJECT_ARRAY) {
            rc = bad(d, field, "a joined set is an array of events");
        } else {
            ri->joined = 1;
            ri->tuple = wf__calloc(tu->via.array.size ? tu->via.array.size : 1, sizeof *ri->tuple);
            if (ri->tuple == NULL)
                rc = WF_ENOMEM;
            for (uint32_t i = 0; rc == 0 && i < tu->via.array.size; i++) {
                rc = dec_event(d, &tu->via.array.ptr[i], field, &ri->tuple[i]);
                if (rc == 0)
                    ri->ntuple++;
            }
        }
    }
    if (rc < 0) {
        task_discard(t);
        return rc;
    }
    if (gi >= 0) {
        t->u.group = d->groups[gi];
        wf__branch_add(t->u.group, t->pad);
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
    if (d->ngroups)
        wf__groups_free(d->groups[0]); /* linked in order through next_in_run */
    wf__free_mem(d->groups);
    wf__free_mem(d->drops);
    wf__free_mem(d->steps);
    wf__free_mem((void *)d->types);
}

static int dec_tables(dec *d, const msgpack_object *m)
{
    int rc = 0;
    const msgpack_object *st = get_array(d, m, "steps", &rc);
    const msgpack_object *ty = st ? get_array(d, m, "types", &rc) : NULL;
    if (rc < 0)
        return rc;
    d->nsteps = st->via.array.size;
    d->ntypes = ty->via.array.size;
    d->steps = wf__calloc(d->nsteps ? d->nsteps : 1, sizeof *d->steps);
    d->types = wf__calloc(d->ntypes ? d->ntypes : 1, sizeof *d->types);
    if (d->steps == NULL || d->types == NULL)
        return WF_ENOMEM;
    char m2[400];
    for (uint32_t i = 0; i < d->nsteps; i++) {
        char *name = as_str(&st->via.array.ptr[i]);
        if (name == NULL)
            return bad(d, "steps", "a step name is a string");
        wf__step *s = wf__workflow_find_step(d->wf, name);
        if (s == NULL) {
            snprintf(m2, sizeof m2, "the snapshot's step '%s' is not in workflow '%s'", name,
                     d->wf->name);
            wf__free_mem(name);
            if (d->message && *d->message == NULL)
                *d->message = wf__strdup(m2);
            return WF_EMISMATCH;
        }
        wf__free_mem(name);
        d->steps[i] = s->index;
    }
    for (uint32_t i = 0; i < d->ntypes; i++) {
        char *name = as_str(&ty->via.array.ptr[i]);
        if (name == NULL)
            return bad(d, "types", "a type name is a string");
        d->types[i] = wf_registry_find(d->wf->reg, name);
        if (d->types[i] == NULL) {
            snprintf(m2, sizeof m2, "the snapshot's event type '%s' is not registered", name);
            wf__free_mem(name);
            if (d->message && *d->message == NULL)
                *d->message = wf__strdup(m2);
            return WF_ENOTFOUND;
        }
        wf__free_mem(name);
    }
    return 0;
}

static int dec_groups(dec *d, const msgpack_object *m)
{
    int rc = 0;
    const msgpack_object *ga = get_array(d, m, "groups", &rc);
    if (rc < 0)
        return rc;
    d->ngroups = ga->via.array.size;
    d->groups = wf__calloc(d->ngroups ? d->ngroups : 1, sizeof *d->groups);
    if (d->groups == NULL)
        return WF_ENOMEM;
    /* first the groups and their sizes (tasks and children refer to them) */
    for (uint32_t i = 0; i < d->ngroups; i++) {
        const msgpack_object *o = &ga->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 8 ||
            o->via.array.ptr[6].type != MSGPACK_OBJECT_BIN ||
            o->via.array.ptr[7].type != MSGPACK_OBJECT_ARRAY ||
            o->via.array.ptr[7].via.array.size != o->via.array.ptr[6].via.bin.size)
            return bad(d, "groups", "a group is [parent, branch, join, type, origin, lineage, "
                                    "resolved, results]");
        uint32_t n = o->via.array.ptr[6].via.bin.size;
        if (n > UINT32_MAX / 2)
            return bad(d, "groups", "too many branches");
        wf__group *g = wf__group_new(n);
        if (g == NULL)
            return WF_ENOMEM;
        if (i > 0)
            d->groups[i - 1]->next_in_run = g;
        d->groups[i] = g;
    }
    for (uint32_t i = 0; i < d->ngroups; i++) {
        const msgpack_object *a = ga->via.array.ptr[i].via.array.ptr;
        wf__group *g = d->groups[i];
        uint32_t v;
        if (a[0].type != MSGPACK_OBJECT_NIL) {
            if (as_u32(&a[0], d->ngroups, &v) < 0 || v == i ||
                as_u32(&a[1], d->groups[v]->n, &g->parent_branch) < 0)
                return bad(d, "groups", "bad parent group or branch");
            g->parent = d->groups[v];
        }
        uint32_t ti;
        if (as_u32(&a[2], d->nsteps, &v) < 0 || as_u32(&a[3], d->ntypes, &ti) < 0)
            return bad(d, "groups", "bad join step or collected type");
        g->join_step = d->steps[v];
        g->collect = d->types[ti];
        if ((rc = dec_event(d, &a[4], "groups", &g->origin)) < 0)
            return rc;
        if (as_u32(&a[5], 65536, &v) < 0)
            return bad(d, "groups", "bad lineage");
        g->lineage = (uint16_t)v;
        uint32_t unresolved = 0;
        for (uint32_t b = 0; b < g->n; b++) {
            int r = (uint8_t)a[6].via.bin.ptr[b];
            if (r > 2)
                return bad(d, "groups", "a branch is unresolved (0), resolved (1) or out (2)");
            atomic_init(&g->resolved[b], r);
            unresolved += r == 0;
            const msgpack_object *res = &a[7].via.array.ptr[b];
            if (res->type != MSGPACK_OBJECT_NIL &&
                (rc = dec_event(d, res, "groups", &g->result[b])) < 0)
                return rc;
        }
        atomic_init(&g->unresolved, unresolved);
    }
    /* a fan-out that has not joined yet holds a unit on its parent's branch */
    for (uint32_t i = 0; i < d->ngroups; i++) {
        wf__group *g = d->groups[i];
        if (g->parent && atomic_load(&g->unresolved) > 0)
            wf__branch_add(g->parent, g->parent_branch);
    }
    return 0;
}

static int dec_buffers(dec *d, const msgpack_object *m)
{
    int rc = 0;
    const msgpack_object *ba = get_array(d, m, "buffers", &rc);
    if (rc < 0)
        return rc;
    wf__collect **tail = &d->collect;
    for (uint32_t i = 0; i < ba->via.array.size; i++) {
        const msgpack_object *o = &ba->via.array.ptr[i];
        uint32_t step;
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3 ||
            as_u32(&o->via.array.ptr[0], d->nsteps, &step) < 0 ||
            (o->via.array.ptr[1].type != MSGPACK_OBJECT_NIL &&
             o->via.array.ptr[1].type != MSGPACK_OBJECT_STR) ||
            o->via.array.ptr[2].type != MSGPACK_OBJECT_ARRAY)
            return bad(d, "buffers", "a buffer is [step, id, [[type, [events]]...]]");
        wf__collect *c = wf__calloc(1, sizeof *c);
        if (c == NULL)
            return WF_ENOMEM;
        *tail = c;
        tail = &c->next;
        c->step = d->steps[step];
        if (o->via.array.ptr[1].type == MSGPACK_OBJECT_STR &&
            (c->id = as_str(&o->via.array.ptr[1])) == NULL)
            return bad(d, "buffers", "bad buffer id");
        const msgpack_object *qs = &o->via.array.ptr[2];
        for (uint32_t k = 0; k < qs->via.array.size; k++) {
            const msgpack_object *q = &qs->via.array.ptr[k];
            uint32_t ti;
            if (q->type != MSGPACK_OBJECT_ARRAY || q->via.array.size != 2 ||
                as_u32(&q->via.array.ptr[0], d->ntypes, &ti) < 0 ||
                q->via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY)
                return bad(d, "buffers", "a buffered queue is [type, [events]]");
            wf__cq *cq = wf__cq_find(c, d->types[ti], 1);
            if (cq == NULL)
                return WF_ENOMEM;
            const msgpack_object *evs = &q->via.array.ptr[1];
            for (uint32_t j = 0; j < evs->via.array.size; j++) {
                wf_event *ev;
                if ((rc = dec_event(d, &evs->via.array.ptr[j], "buffers", &ev)) < 0)
                    return rc;
                if (ev->type != d->types[ti] && !wf_event_type_is(ev->type, d->types[ti])) {
                    wf_event_release(ev);
                    return bad(d, "buffers", "an event of another type in a buffered queue");
                }
                if (wf__cq_push(cq, ev) < 0) {
                    wf_event_release(ev);
                    return WF_ENOMEM;
                }
            }
        }
    }
    return 0;
}

static int dec_waiters(dec *d, const msgpack_object *m)
{
    int rc = 0;
    const msgpack_object *wa = get_array(d, m, "waiters", &rc);
    if (rc < 0)
        return rc;
    wf__waiter **tail = &d->waiters;
    for (uint32_t i = 0; i < wa->via.array.size; i++) {
        const msgpack_object *o = &wa->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 9)
            return bad(d, "waiters", "a waiter is [step, id, type, requirements, state, got, "
                                     "timeout_ms, left_ms, task]");
        const msgpack_object *a = o->via.array.ptr;
        wf__waiter *w = wf__calloc(1, sizeof *w);
        if (w == NULL)
            return WF_ENOMEM;
        *tail = w;
        tail = &w->next;
        w->tm.heap_index = WF__TIMER_IDLE;
        w->req = wf_value_nil();
        uint32_t step, ti, state;
        int64_t left = -1;
        if (as_u32(&a[0], d->nsteps, &step) < 0 || (w->id = as_str(&a[1])) == NULL ||
            as_u32(&a[2], d->ntypes, &ti) < 0 || as_u32(&a[4], 3, &state) < 0 ||
            as_i64(&a[6], &w->timeout_ms) < 0 ||
            (a[7].type != MSGPACK_OBJECT_NIL && (as_i64(&a[7], &left) < 0 || left < 0)) ||
            (a[3].type != MSGPACK_OBJECT_NIL && a[3].type != MSGPACK_OBJECT_MAP) ||
            (state == W_WAITING) != (a[8].type != MSGPACK_OBJECT_NIL))
            return bad(d, "waiters", "bad waiter");
        w->step = d->steps[step];
        w->type = d->types[ti];
        w->state = (int)state;
        w->timer_live = left >= 0 && state == W_WAITING; /* armed when the run starts */
        w->tm.deadline_ns = left >= 0 ? left : 0;       /* ms left, until then */
        if (a[3].type == MSGPACK_OBJECT_MAP &&
            (rc = wf__msgpack_convert(&a[3], &w->req, d->message)) < 0)
            return rc;
        if (a[5].type != MSGPACK_OBJECT_NIL && (rc = dec_event(d, &a[5], "waiters", &w->got)) < 0)
            return rc;
        if (a[8].type != MSGPACK_OBJECT_NIL && (rc = dec_task(d, &a[8], "waiters", &w->task)) < 0)
            return rc;
    }
    return 0;
}

static int dec_retries(dec *d, const msgpack_object *m)
{
    int rc = 0;
    const msgpack_object *ra = get_array(d, m, "retries", &rc);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < ra->via.array.size; i++) {
        const msgpack_object *o = &ra->via.array.ptr[i];
        int64_t left;
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
            as_i64(&o->via.array.ptr[0], &left) < 0 || left < 0)
            return bad(d, "retries", "a retry is [ms left, task]");
        wf__retry_timer *rt = wf__calloc(1, sizeof *rt);
        if (rt == NULL)
            return WF_ENOMEM;
        rt->next = d->retries;
        d->retries = rt;
        rt->tm.heap_index = WF__TIMER_IDLE;
        rt->tm.deadline_ns = left;
        if ((rc = dec_task(d, &o->via.array.ptr[1], "retries", &rt->t)) < 0)
            return rc;
    }
    return 0;
}

static int dec_run(dec *d, const msgpack_object *m)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return bad(d, "", "the run is a map");
    int rc = dec_tables(d, m);
    if (rc == 0)
        rc = dec_groups(d, m);
    if (rc == 0)
        rc = dec_buffers(d, m);
    if (rc == 0)
        rc = dec_waiters(d, m);
    if (rc == 0)
        rc = dec_retries(d, m);
    if (rc < 0)
        return rc;
    const msgpack_object *ta = get_array(d, m, "tasks", &rc);
    if (rc < 0)
        return rc;
    d->tasks = wf__calloc(ta->via.array.size ? ta->via.array.size : 1, sizeof *d->tasks);
    if (d->tasks == NULL)
        return WF_ENOMEM;
    for (uint32_t i = 0; i < ta->via.array.size; i++) {
        if ((rc = dec_task(d, &ta->via.array.ptr[i], "tasks", &d->tasks[i])) < 0)
            return rc;
        d->ntasks++;
    }
    /*
     * Every unit is in now. A group is freed when its last open branch closes
     * (run.c): open are the branches something refers to, and the unresolved
     * ones with nothing left, which get a unit here and drop out when
     * attached (as they would have); one hold per group keeps it until then.
     */
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
    const msgpack_object *c = wf__msgpack_get(m, "counters");
    if (c && c->type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *v;
        if ((v = wf__msgpack_get(c, "dropped")) && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            d->dropped = v->via.u64;
        if ((v = wf__msgpack_get(c, "unhandled")) && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            d->unhandled = v->via.u64;
    }
    return 0;
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
    msgpack_unpacked res;
    rc = wf__msgpack_unpack(bytes, len, &res, NULL, message);
    if (rc < 0) {
        wf__free_mem(bytes);
        return rc;
    }
    dec d;
    memset(&d, 0, sizeof d);
    d.wf = wf;
    d.message = message;
    d.now = wf__now_ns();
    rc = dec_run(&d, &res.data);
    wf__run *run = NULL;
    if (rc == 0)
        rc = wf__run_create(ex, wf, ctx, params, &run);
    if (rc == 0) {
        d.now = wf__now_ns();
        attach(&d, run);
        *out = (wf_handler *)run;
    }
    dec_free(&d);
    msgpack_unpacked_destroy(&res);
    wf__free_mem(bytes);
    return rc;
}

int wf__run_check(wf_workflow *wf, const void *bytes, size_t len, char **message)
{
    msgpack_unpacked res;
    int rc = wf__msgpack_unpack(bytes, len, &res, NULL, message);
    if (rc < 0)
        return rc;
    dec d;
    memset(&d, 0, sizeof d);
    d.wf = wf;
    d.message = message;
    d.now = wf__now_ns();
    rc = dec_run(&d, &res.data);
    dec_free(&d);
    msgpack_unpacked_destroy(&res);
    return rc;
}
