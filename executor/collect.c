/*
 * collect.c: the per-run event buffers: collect_events (per step and
 * buffer id, a FIFO per expected type) and tuple joins (a join step's
 * arrivals, in the buffer with a NULL id; each complete set becomes one
 * invocation).
 *
 * Shared fields: run->collect and every buffer in it under
 * run->collect_lock (the waiters share that lock, wait.c).
 */
#include "engine.h"

#include <string.h>

/* ------------------------------------------------------------ ref counting */

void wf__collect_free(wf__collect *c)
{
    while (c) {
        wf__collect *nx = c->next;
        for (uint32_t i = 0; i < c->nq; i++) {
            wf__cq *q = &c->qs[i];
            for (uint32_t k = 0; k < q->len; k++)
                wf_event_release(q->ring[(q->head + k) % q->cap]);
            wf__free_mem(q->ring);
        }
        wf__free_mem(c->qs);
        wf__free_mem(c->id);
        wf__free_mem(c);
        c = nx;
    }
}

wf__cq *wf__cq_find(wf__collect *c, const wf_event_type *t, int create)
{
    for (uint32_t i = 0; i < c->nq; i++)
        if (c->qs[i].type == t)
            return &c->qs[i];
    if (!create)
        return NULL;
    if (c->nq == c->capq) {
        uint32_t cap = c->capq ? c->capq * 2 : 4;
        wf__cq *n = wf__realloc(c->qs, cap * sizeof *n);
        if (n == NULL)
            return NULL;
        c->qs = n;
        c->capq = cap;
    }
    wf__cq *q = &c->qs[c->nq++];
    memset(q, 0, sizeof *q);
    q->type = t;
    return q;
}

int wf__cq_push(wf__cq *q, wf_event *ev)
{
    if (q->len == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 8;
        wf_event **r = wf__malloc(cap * sizeof *r);
        if (r == NULL)
            return WF_ENOMEM;
        for (uint32_t k = 0; k < q->len; k++)
            r[k] = q->ring[(q->head + k) % q->cap];
        wf__free_mem(q->ring);
        q->ring = r;
        q->head = 0;
        q->cap = cap;
    }
    q->ring[(q->head + q->len) % q->cap] = ev;
    q->len++;
    return 0;
}

wf_event *wf__cq_pop(wf__cq *q)
{
    wf_event *ev = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return ev;
}

int wf_ctx_collect_events(wf_ctx *ctx, const wf_event *in, const wf_event_type *const *types,
                          size_t n, const char *buffer_id, wf_event **events)
{
    if (ctx == NULL || in == NULL || types == NULL || n == 0 || events == NULL)
        return WF_EINVAL;
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL)
        return wf__set_error(WF_ESTATE,
                             "wf_ctx_collect_events: not called from a step of this context's run");
    const char *id = buffer_id ? buffer_id : "";
    wf__run *run = inv->run;
    uint32_t step = inv->task->step;
    wf__slot_dirty(run);
    wf__lock_take(&run->collect_lock);
    wf__collect *c = run->collect;
    while (c && (c->step != step || c->id == NULL || strcmp(c->id, id) != 0))
        c = c->next;
    int rc = 0;
    if (c == NULL) {
        c = wf__calloc(1, sizeof *c);
        if (c == NULL || (c->id = wf__strdup(id)) == NULL) {
            wf__free_mem(c);
            rc = WF_ENOMEM;
            goto out;
        }
        c->step = step;
        c->next = run->collect;
        run->collect = c;
    }
    if (c->spec != (const void *)types || c->spec_n != n || c->spec_first != types[0] ||
        c->spec_last != types[n - 1]) {
        /* a new spec: recount what each type needs (O(n), once per spec) */
        for (uint32_t k = 0; k < c->nq; k++)
            c->qs[k].need = 0;
        for (size_t i = 0; i < n; i++) {
            wf__cq *tq = types[i] ? wf__cq_find(c, types[i], 1) : NULL;
            if (tq == NULL) {
                c->spec = NULL;
                rc = types[i] ? WF_ENOMEM : WF_EINVAL;
                goto out;
            }
            tq->need++;
        }
        c->nreq = c->satisfied = 0;
        for (uint32_t k = 0; k < c->nq; k++) {
            c->nreq += c->qs[k].need > 0;
            c->satisfied += c->qs[k].need > 0 && c->qs[k].len >= c->qs[k].need;
        }
        c->spec = types;
        c->spec_n = n;
        c->spec_first = types[0];
        c->spec_last = types[n - 1];
    }
    wf__cq *q = wf__cq_find(c, in->type, 0);
    if (q == NULL || q->need == 0) {
        rc = WF_ETYPE; /* not one of the expected types */
        goto out;
    }
    if (wf__cq_push(q, wf_event_retain(in)) < 0) {
        wf_event_release((wf_event *)in);
        rc = WF_ENOMEM;
        goto out;
    }
    if (q->need && q->len == q->need)
        c->satisfied++;
    if (c->satisfied < c->nreq) {
        rc = WF_EAGAIN;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        wf__cq *tq = wf__cq_find(c, types[i], 0);
        events[i] = wf__cq_pop(tq);
        if (tq->len + 1 == tq->need) /* dropped below its need */
            c->satisfied--;
    }
out:
    wf__lock_give(&run->collect_lock);
    return rc;
}

/*
 * A join step's arrivals wait in a per-run buffer (the collect buffers, with
 * a NULL id); each complete set becomes one invocation.
 */
int wf__join_deliver(wf__run *run, uint32_t s, wf_event *ev)
{
    const wf__step *step = run->wf->steps[s];
    wf__lock_take(&run->collect_lock);
    wf__collect *c = run->collect;
    while (c && (c->step != s || c->id != NULL))
        c = c->next;
    if (c == NULL) {
        c = wf__calloc(1, sizeof *c);
        if (c == NULL) {
            wf__lock_give(&run->collect_lock);
            wf_event_release(ev);
            return WF_ENOMEM;
        }
        c->step = s;
        c->next = run->collect;
        run->collect = c;
    }
    /* ev goes to the slot of its type (exact, or the accepted ancestor) */
    const wf_event_type *slot = NULL;
    for (uint32_t i = 0; i < step->n_accepts && slot == NULL; i++)
        if (step->accepts[i] == ev->type ||
            (step->accept_subtypes && wf_event_type_is(ev->type, step->accepts[i])))
            slot = step->accepts[i];
    wf__cq *q = slot ? wf__cq_find(c, slot, 1) : NULL;
    if (q == NULL || wf__cq_push(q, ev) < 0) {
        wf__lock_give(&run->collect_lock);
        wf_event_release(ev);
        return WF_ENOMEM;
    }
    for (uint32_t i = 0; i < step->n_accepts; i++) {
        uint32_t need = 0;
        for (uint32_t j = 0; j < step->n_accepts; j++)
            need += step->accepts[j] == step->accepts[i];
        wf__cq *tq = wf__cq_find(c, step->accepts[i], 0);
        if (tq == NULL || tq->len < need) {
            wf__lock_give(&run->collect_lock);
            return 0; /* not complete yet */
        }
    }
    wf_event **tuple = wf__malloc(step->n_accepts * sizeof *tuple);
    wf__retry_info *ri = wf__calloc(1, sizeof *ri);
    wf__task *t = wf__task_alloc();
    if (tuple == NULL || ri == NULL || t == NULL) {
        wf__lock_give(&run->collect_lock);
        wf__free_mem(tuple);
        wf__free_mem(ri);
        wf__task_free(t);
        return WF_ENOMEM; /* the events stay buffered */
    }
    for (uint32_t i = 0; i < step->n_accepts; i++)
        tuple[i] = wf__cq_pop(wf__cq_find(c, step->accepts[i], 0));
    wf__lock_give(&run->collect_lock);
    ri->tuple = tuple;
    ri->ntuple = step->n_accepts;
    ri->joined = 1;
    t->kind = WF__TASK_INVOKE;
    t->run = run;
    t->ev = wf_event_retain(tuple[0]);
    t->step = s;
    t->arg = ri;
    t->flags = wf__tls_lineage;
    wf__tag_task(t);
    return wf__deliver_task(run, t);
}

int wf_ctx_join_events(const wf_ctx *ctx, const wf_event *const **events, size_t *n)
{
    if (events == NULL || n == NULL)
        return WF_EINVAL;
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL)
        return wf__set_error(WF_ESTATE,
                             "wf_ctx_join_events: not called from a step of this context's run");
    const wf__retry_info *ri = inv->task->arg;
    if (ri == NULL || !ri->joined)
        return WF_ENOTFOUND;
    *events = (const wf_event *const *)ri->tuple;
    *n = ri->ntuple;
    return 0;
}
