/*
 * fanout.c: list fan-out (wf_ctx_emit_list): n branches, each an event and
 * everything that descends from it, and a join step that fires once with
 * the branches' results when every branch has resolved (found its result or
 * dropped out). See wf__group in engine.h for the counting.
 *
 * Shared fields: a group's outstanding[], resolved[], unresolved and open
 * are atomics (no lock); result[b] is written once, by the winner of
 * resolved[b]'s 0 -> 1 CAS, and read by the one that fires the join after
 * unresolved reaches 0.
 */
#include "engine.h"

#include <wf/observe.h>

#include <string.h>

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

static void group_free(wf__group *g)
{
    for (uint32_t i = 0; i < g->n; i++)
        wf_event_release(g->result[i]);
    wf_event_release(g->origin);
    wf__cache_free(g, g->cls);
}

/* A branch closed (or a hold went): the last one frees the group. */
void wf__group_close(wf__group *g)
{
    if (atomic_fetch_sub_explicit(&g->open, 1, memory_order_acq_rel) == 1)
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
    if (atomic_fetch_sub_explicit(&g->outstanding[b], 1, memory_order_acq_rel) != 1)
        return;
    /* nothing of branch b is left: without a result it drops out */
    int expected = 0;
    if (atomic_compare_exchange_strong(&g->resolved[b], &expected, 2) &&
        atomic_fetch_sub(&g->unresolved, 1) == 1)
        wf__group_fire(run, g);
    /* after the join fired: whoever closes the last branch frees the group */
    wf__group_close(g);
}

/* Every branch resolved: the join step runs once, in the parent's branch. */
void wf__group_fire(wf__run *run, wf__group *g)
{
    if (wf__run_ended(run))
        goto done;
    uint32_t m = 0;
    for (uint32_t i = 0; i < g->n; i++)
        m += g->result[i] != NULL;
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
    t->ev = wf_event_retain(g->origin);
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
        for (uint32_t i = 0; i < wf->n_steps && join == UINT32_MAX; i++)
            if (wf->steps[i]->join_list && wf->steps[i]->accepts[0] == collect)
                join = i;
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
     * drop out, or free the group) before all are delivered; the units go
     * when the loop is done.
     */
    for (uint32_t i = 0; i < n; i++)
        atomic_init(&g->outstanding[i], 1);
    wf__group *saved_g = wf__tls_group;
    uint32_t saved_b = wf__tls_branch;
    int64_t obs_now = wf__obs_on(run->ex, WF_OBS_EVENT_EMIT) ? wf__obs_now() : 0;
    for (uint32_t i = 0; i < n; i++) {
        wf_event_freeze(evs[i]);
        if (obs_now) {
            wf__obs_rec r = {0};
            wf__hook_rec(run, WF_OBS_EVENT_EMIT, inv->task->step, evs[i]->type, obs_now, &r);
            wf__obs_write(run->ex, &r);
        }
        wf__tls_group = g;
        wf__tls_branch = i;
        wf__emit(run, evs[i], -1);
    }
    wf__tls_group = saved_g;
    wf__tls_branch = saved_b;
    /* the last of these may free g */
    for (uint32_t i = 0; i < n; i++)
        wf__branch_done(run, g, i);
    return 0;
}
