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
        uint32_t c = atomic_load_explicit(&run->steps[s].count, memory_order_acquire);
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
} ptrmap;

static int ptrmap_init(ptrmap *m, uint32_t n)
{
    m->cap = 16;
    while (m->cap < n * 2)
        m->cap *= 2;
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
    m->keys[h] = p;
    m->vals[h] = v;
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

static void pack_groups(enc *e, uint32_t ng)
{
    wf__run *run = e->run;
    PK(msgpack_pack_array(&e->pk, ng));
    for (wf__group *g = run->groups; g; g = g->next_in_run) {
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
    uint32_t ng = 0;
    for (wf__group *g = run->groups; g; g = g->next_in_run)
        ng++;
    if (e->type_idx == NULL || e->types == NULL || ptrmap_init(&e->groups, ng) < 0)
        enc_fail(e, WF_ENOMEM);
    if (e->rc == 0) {
        uint32_t i = 0;
        for (wf__group *g = run->groups; g; g = g->next_in_run)
            ptrmap_put(&e->groups, g, i++);
    }
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
        pack_groups(e, ng);
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

/*
 * Reading a run map. Checking it (wf_ctx_load) and building the run's
 * structures from it (wf_run_resume) are one walk over the bytes with one
 * set of checks: when build is 0 nothing is allocated but the step, type and
 * group tables, so a run that loads is a run that resumes (memory allowing),
 * and a load costs no event.
 */
enum { R_STEPS, R_TYPES, R_TASKS, R_RETRIES, R_WAITERS, R_BUFFERS, R_GROUPS, R_COUNTERS, R_N };
static const char *const run_keys[R_N] = {"steps",   "types",   "tasks",  "retries",
                                          "waiters", "buffers", "groups", "counters"};
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
    wf__free_mem(d->gn);
    wf__free_mem(d->steps);
    wf__free_mem((void *)d->types);
}

static int dec_tables(dec *d)
{
    wf__rd *r = &d->r;
    char name[4097], m[4400];
    here(d, "steps", NO_ITEM);
    if (!seek(d, R_STEPS) || wf__rd_array(r, &d->nsteps) < 0)
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
    here(d, "types", NO_ITEM);
    if (!seek(d, R_TYPES) || wf__rd_array(r, &d->ntypes) < 0)
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
            wf__group *g = wf__calloc(1, sizeof *g);
            if (g == NULL)
                return WF_ENOMEM;
            if (i > 0)
                d->groups[i - 1]->next_in_run = g;
            d->groups[i] = g;
            g->outstanding = wf__calloc(n ? n : 1, sizeof *g->outstanding);
            g->resolved = wf__calloc(n ? n : 1, sizeof *g->resolved);
            g->result = wf__calloc(n ? n : 1, sizeof *g->result);
            if (g->outstanding == NULL || g->resolved == NULL || g->result == NULL)
                return WF_ENOMEM; /* g->n stays 0: freeing it reads no branch */
            g->n = n;
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
    wf__rd_key keys[2] = {{"dropped", 0, 0}, {"unhandled", 0, 0}};
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

static int dec_run(dec *d)
{
    for (int k = 0; k < R_N; k++)
        d->keys[k].name = run_keys[k];
    here(d, "", NO_ITEM);
    /* where each entry is (and every value's structure checked) */
    int rc = wf__rd_keys(&d->r, d->keys, R_N);
    if (rc == 0)
        rc = dec_tables(d);
    if (rc == 0)
        rc = dec_groups(d);
    if (rc == 0)
        rc = dec_buffers(d);
    if (rc == 0)
        rc = dec_waiters(d);
    if (rc == 0)
        rc = dec_retries(d);
    if (rc == 0)
        rc = dec_tasks(d);
    if (rc == 0)
        rc = dec_counters(d);
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
    if (d->ngroups)
        run->groups = d->groups[0]; /* a new run has none yet */
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
    /* branches with nothing left drop out (as they would have) */
    for (uint32_t i = 0; i < d->ngroups; i++) {
        wf__group *g = d->groups[i];
        for (uint32_t b = 0; b < g->n; b++) {
            if (atomic_load(&g->resolved[b]) == 0 && atomic_load(&g->outstanding[b]) == 0) {
                wf__branch_add(g, b);
                wf__branch_done(run, g, b);
            }
        }
    }
    d->ngroups = 0; /* the run owns them */
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
