/*
 * fanout.c: list fan-out (wf_ctx_emit_list): n branches, each an event and
 * everything that descends from it, and a join step that fires once with
 * the branches' results when every branch has resolved (found its result or
 * dropped out). See wf__group in engine.h for the counting.
 *
 * Shared fields: a group's outstanding[], resolved[], unresolved and open
 * are atomics (no lock); result[b] is written once, by the winner of
 * resolved[b]'s 0 -> 1 CAS, and read by the one that fires the join after
 * unresolved reaches 0. Where one party is alone by the counting (the
 * branch's only task, the last unit of a count: wf__unit_drop), it reads
 * and stores instead of a locked read-modify-write; a one-task branch
 * (a tree's node) then costs no atomic RMW of its own besides the task's.
 *
 * Take(n) groups (the join step's take): g->take->mu guards fired, arrived,
 * order[] and the result[] writes; the join fires once, on the n-th result
 * or when unresolved reaches 0, whichever claims fired first; results after
 * that are dropped.
 */
#include "engine.h"

#include <wf/observe.h>

#include <string.h>

WF__TLS wf__group *wf__tls_held;
WF__TLS uint32_t wf__tls_held_b;

wf__group *wf__group_new(uint32_t n)
{
    /* the group, then result[n], outstanding[n], resolved[n]: one cached block for small n */
    size_t size = sizeof(wf__group) +
                  (size_t)n * (sizeof(wf_event *) + sizeof(_Atomic uint32_t) + sizeof(_Atomic int));
    uint8_t cls;
    wf__group *g = wf__cache_alloc(size, &cls);
    if (g == NULL)
        return NULL;
    memset(g, 0, size);
    g->cls = cls;
    g->n = n;
    g->result = (wf_event **)(g + 1);
    g->outstanding = (_Atomic uint32_t *)(g->result + n);
    g->resolved = (_Atomic int *)(g->outstanding + n);
    atomic_init(&g->open, n);
    return g;
}

typedef struct wf__take {
    pthread_mutex_t mu;
    int fired;
    uint32_t n;       /* the step's take */
    uint32_t arrived; /* results kept, <= n */
    uint32_t order[]; /* their branches in arrival order */
} wf__take;

int wf__take_init(wf__group *g, const wf__step *s, int resumed)
{
    uint32_t n = s->take < g->n ? s->take : g->n;
    wf__take *tk = wf__calloc(1, sizeof *tk + (n ? n : 1) * sizeof(uint32_t));
    if (tk == NULL)
        return WF_ENOMEM;
    pthread_mutex_init(&tk->mu, NULL);
    tk->n = s->take;
    if (resumed) {
        /* fired <=> take results had arrived (later ones also resolve as 1, their events dropped)
         */
        uint32_t ones = 0;
        for (uint32_t b = 0; b < g->n; b++) {
            ones += atomic_load_explicit(&g->resolved[b], memory_order_relaxed) == 1;
            if (g->result[b] && tk->arrived < n)
                tk->order[tk->arrived++] = b;
        }
        tk->fired = ones >= tk->n;
    }
    g->take = tk;
    return 0;
}

int wf__take_fired(wf__group *g)
{
    wf__take *tk = g->take;
    if (tk == NULL)
        return 0;
    pthread_mutex_lock(&tk->mu);
    int fired = tk->fired;
    pthread_mutex_unlock(&tk->mu);
    return fired;
}

/* 1 if the caller claimed the (single) firing of g's join. */
static int take_claim(wf__take *tk)
{
    pthread_mutex_lock(&tk->mu);
    int mine = !tk->fired;
    tk->fired = 1;
    pthread_mutex_unlock(&tk->mu);
    return mine;
}

static void group_fire_now(wf__run *run, wf__group *g);

void wf__take_result(wf__run *run, wf__group *g, uint32_t b, wf_event *ev)
{
    wf__take *tk = g->take;
    int fire = 0;
    pthread_mutex_lock(&tk->mu);
    if (!tk->fired) {
        g->result[b] = ev;
        tk->order[tk->arrived++] = b;
        ev = NULL;
        fire = tk->fired = tk->arrived >= tk->n;
    }
    pthread_mutex_unlock(&tk->mu);
    /* past the n-th: this branch's result never reaches the join (as the reference) */
    wf_event_release(ev);
    if (fire)
        group_fire_now(run, g);
    if (atomic_fetch_sub(&g->unresolved, 1) == 1)
        wf__group_fire(run, g);
}

static void group_free(wf__group *g)
{
    if (g->take) {
        pthread_mutex_destroy(&g->take->mu);
        wf__free_mem(g->take);
    }
    for (uint32_t i = 0; i < g->n; i++)
        wf__event_release(g->result[i]);
    wf__event_release(g->origin);
    wf__cache_free(g, g->cls);
}

int wf__branch_result(wf__run *run, wf__group *g, uint32_t b, wf_event *ev)
{
    int won;
    if (atomic_load_explicit(&g->outstanding[b], memory_order_relaxed) == 1) {
        /* the emitter is the branch's only task: nobody races it for resolved[b] */
        won = atomic_load_explicit(&g->resolved[b], memory_order_relaxed) == 0;
        if (won)
            atomic_store_explicit(&g->resolved[b], 1, memory_order_relaxed);
    } else {
        int expected = 0;
        won = atomic_compare_exchange_strong(&g->resolved[b], &expected, 1);
    }
    if (!won)
        return 0;
    if (WF__UNLIKELY(g->take != NULL)) {
        wf__take_result(run, g, b, ev);
        return 1;
    }
    g->result[b] = ev;
    if (wf__unit_drop(&g->unresolved))
        wf__group_fire(run, g);
    return 1;
}

void wf__branch_join(wf__group *g, uint32_t b)
{
    if (wf__tls_held == g && wf__tls_held_b == b)
        wf__tls_held = NULL; /* the emitter's unit is the new task's now */
    else
        wf__branch_add(g, b);
}

/* A branch closed (or a hold went): the last one frees the group. */
void wf__group_close(wf__group *g)
{
    if (wf__unit_drop(&g->open))
        group_free(g);
}

void wf__groups_free(wf__group *g)
{
    while (g) {
        wf__group *nx = g->next_in_run;
        group_free(g);
        g = nx;
    }
}

void wf__branch_done(wf__run *run, wf__group *g, uint32_t b)
{
    if (!wf__unit_drop(&g->outstanding[b]))
        return;
    /*
     * Nothing of branch b is left: without a result it drops out. No task
     * of b remains to resolve it meanwhile, so no compare-and-swap.
     */
    if (atomic_load_explicit(&g->resolved[b], memory_order_relaxed) == 0) {
        atomic_store_explicit(&g->resolved[b], 2, memory_order_relaxed);
        if (wf__unit_drop(&g->unresolved))
            wf__group_fire(run, g);
    }
    /* after the join fired: whoever closes the last branch frees the group */
    wf__group_close(g);
}

/* Every branch resolved: the join step runs once, in the parent's branch. */
void wf__group_fire(wf__run *run, wf__group *g)
{
    if (g->take && !take_claim(g->take))
        return; /* a Take(n) join that fired on its n-th result */
    group_fire_now(run, g);
}

static void group_fire_now(wf__run *run, wf__group *g)
{
    if (wf__run_ended(run))
        goto done;
    uint32_t m = 0;
    for (uint32_t i = 0; i < g->n; i++)
        m += g->result[i] != NULL;
    /* fired: no result is written any more (take->mu ordered the last ones before) */
    /* the joined list lives in the side record's block */
    wf__retry_info *ri = wf__malloc(sizeof *ri + (m ? m : 1) * sizeof(wf_event *));
    wf__task *t = wf__task_alloc();
    if (ri == NULL || t == NULL) {
        wf__free_mem(ri);
        wf__task_free(t);
        wf__fail_nomem(run, g->join_step, "joining a list fan-out");
        goto done;
    }
    memset(ri, 0, sizeof *ri);
    wf_event **list = (wf_event **)(ri + 1);
    m = 0;
    if (g->take) {
        for (uint32_t k = 0; k < g->take->arrived; k++) {
            uint32_t b = g->take->order[k];
            list[m++] = g->result[b];
            g->result[b] = NULL;
        }
    }
    for (uint32_t i = 0; i < g->n; i++) {
        if (g->result[i]) {
            list[m++] = g->result[i];
            g->result[i] = NULL;
        }
    }
    ri->tuple = list;
    ri->tuple_inline = 1;
    ri->ntuple = m;
    ri->joined = 1;
    t->kind = WF__TASK_INVOKE;
    t->run = run;
    /* the group's reference to its origin is the join task's now: nothing reads it after firing */
    t->ev = g->origin;
    g->origin = NULL;
    t->step = g->join_step;
    t->arg = ri;
    t->flags = g->lineage;
    /* the unit the group held on its parent branch passes to the join task */
    t->u.group = g->parent;
    t->pad = g->parent_branch;
    if (wf__deliver_task(run, t) < 0)
        wf__fail_nomem(run, g->join_step, "joining a list fan-out");
    return;
done:
    if (g->parent)
        wf__branch_done(run, g->parent, g->parent_branch);
}

/*
 * wf_ctx_emit_list's usual case in batches: every event of one type that
 * one step accepts (not a join, not the group's collect type), no schema,
 * no waiters, nothing observing emissions, the run going on. What routing
 * each event through wf__emit would do, with the checks made once and one
 * add on the step's count a batch of WF__SEND_BATCH (so that a long list's
 * first branches start while the rest are made, as sent events do):
 * branch i's task takes the unit held for it (wf__tag_task's hand-over).
 * Returns how many events it delivered (all n: g may be gone, as the
 * branches may have run); the general way takes the rest (an event of
 * another kind: none done; no memory for a task: from that batch on).
 */
static uint32_t emit_list_batch(wf__run *run, wf__group *g, wf_event **evs, uint32_t n)
{
    const wf_event_type *t = evs[0]->type;
    if (t == g->collect || !wf__type_plain(run, t) || wf__obs_on(run->ex, WF_OBS_EVENT_EMIT))
        return 0;
    for (uint32_t i = 1; i < n; i++)
        if (evs[i]->type != t)
            return 0;
    int32_t one = wf__route_one(run, t);
    if (one < 0 || run->steps[one].join)
        return 0;
    uint32_t s = (uint32_t)one;
    uint32_t done = 0;
    while (done < n) {
        uint32_t end = n - done > WF__SEND_BATCH ? done + WF__SEND_BATCH : n;
        wf__task *first = NULL, *last = NULL;
        for (uint32_t i = done; i < end; i++) {
            wf__task *tk = wf__task_alloc();
            if (WF__UNLIKELY(tk == NULL)) {
                while (first) { /* the general way reports it, event by event */
                    wf__task *nx = atomic_load_explicit(&first->next, memory_order_relaxed);
                    wf__task_free(first);
                    first = nx;
                }
                return done;
            }
            wf__task_invoke_init(tk, run, s, evs[i]);
            tk->u.group = g;
            tk->pad = i;
            wf_event_freeze(evs[i]);
            if (last)
                atomic_store_explicit(&last->next, tk, memory_order_relaxed);
            else
                first = tk;
            last = tk;
        }
        /* (branches from end on are still held: g lives until the last batch is handed on) */
        if (WF__UNLIKELY(wf__deliver_chain(run, s, first, last, end - done) < 0))
            wf__fail_nomem(run, WF__NO_STEP, "routing an event");
        done = end;
    }
    return n;
}

int wf_ctx_emit_list(wf_ctx *ctx, wf_event **evs, size_t n, const wf_event_type *collect)
{
    wf__inv *inv = ctx ? wf__inv_of(ctx) : NULL;
    int rc = 0;
    if (ctx == NULL || collect == NULL || (evs == NULL && n > 0))
        rc = WF_EINVAL;
    else if (inv == NULL)
        rc = WF_ESTATE;
    uint32_t join = UINT32_MAX;
    if (rc == 0) {
        const wf_workflow *wf = inv->run->wf;
        join = wf__workflow_join_of(wf, collect);
        if (join == UINT32_MAX)
            rc = WF_ENOTFOUND;
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (evs[i] == NULL || evs[i]->type->reg != wf->reg)
                rc = WF_EINVAL;
        if (rc == 0 && n > UINT32_MAX / 2)
            rc = WF_ERANGE;
    }
    wf__group *g = NULL;
    if (rc == 0 && (g = wf__group_new((uint32_t)n)) == NULL)
        rc = WF_ENOMEM;
    if (g && inv->run->wf->steps[join]->take &&
        wf__take_init(g, inv->run->wf->steps[join], 0) < 0) {
        group_free(g);
        g = NULL;
        rc = WF_ENOMEM;
    }
    if (rc < 0) {
        for (size_t i = 0; evs && i < n; i++)
            wf_event_release(evs[i]);
        return rc;
    }
    wf__run *run = inv->run;
    wf__slot_dirty(run);
    g->parent = inv->task->u.group;
    g->parent_branch = inv->task->pad;
    g->join_step = join;
    g->collect = collect;
    g->origin = wf_event_retain(inv->task->ev);
    g->lineage = inv->task->flags;
    atomic_init(&g->unresolved, (uint32_t)n);
    if (g->parent)
        wf__branch_add(g->parent, g->parent_branch); /* the parent branch waits for this join */
    if (n == 0) {
        wf__group_fire(run, g); /* [] joins with [] at once */
        group_free(g);          /* no branch ever refers to it */
        return 0;
    }
    /*
     * Each branch starts with one unit held here, so none can finish (and
     * drop out, or free the group) before all are delivered. When branch
     * i's event makes one task, that task takes the unit over (wf__tag_task:
     * no add, no drop); otherwise the unit goes after the event is routed.
     * Branches after i are still held, so g lives on until the last one,
     * and nothing here touches g after handing the last unit on.
     */
    for (uint32_t i = 0; i < n; i++)
        atomic_init(&g->outstanding[i], 1);
    uint32_t done = emit_list_batch(run, g, evs, (uint32_t)n);
    if (done == n)
        return 0; /* g may be gone already */
    wf__group *saved_g = wf__tls_group;
    uint32_t saved_b = wf__tls_branch;
    wf__group *saved_held = wf__tls_held;
    uint32_t saved_held_b = wf__tls_held_b;
    int64_t obs_now = wf__obs_on(run->ex, WF_OBS_EVENT_EMIT) ? wf__obs_now() : 0;
    for (uint32_t i = done; i < n; i++) {
        wf_event_freeze(evs[i]);
        if (obs_now) {
            wf__obs_rec r = {0};
            wf__hook_rec(run, WF_OBS_EVENT_EMIT, inv->task->step, evs[i]->type, obs_now, &r);
            wf__obs_write(run->ex, &r);
        }
        wf__tls_group = g;
        wf__tls_branch = i;
        wf__tls_held = g;
        wf__tls_held_b = i;
        wf__emit(run, evs[i], -1);
        int kept = wf__tls_held != NULL;
        wf__tls_held = NULL;
        wf__tls_group = saved_g;
        wf__tls_branch = saved_b;
        if (kept) /* no task took it: the last one may free g */
            wf__branch_done(run, g, i);
    }
    wf__tls_held = saved_held;
    wf__tls_held_b = saved_held_b;
    return 0;
}
