/*
 * execution.c: what recent runs went through, and its drawing.
 *
 * Per run (the 64 most recently started are kept; a new one replaces the
 * oldest): the executions of each step and its failures, the events of each
 * type routed to each step, the events of each type each step emitted. The
 * drawing is the workflow graph of lib/graph.c restricted to what the run
 * touched, with the counts on the boxes and edges.
 *
 * Threads: the observer callbacks come from the executor's exporter thread,
 * wf_execution_draw from any user thread; one mutex guards the runs (held
 * for a record, or for one drawing).
 */
#include "export.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define KEEP_RUNS   64
#define MAX_ENTRIES 256 /* per list of a run: beyond, dropped and counted */

typedef struct xcount {
    char *a, *b; /* owned; b NULL for the step list, a NULL for emissions from outside */
    uint64_t n;
    uint64_t failed; /* steps: failed executions */
} xcount;

typedef struct xlist {
    xcount *v;
    uint32_t n, cap;
} xlist;

typedef struct xrun {
    int used;
    uint64_t run_id;
    uint64_t seq; /* when first seen: the oldest is replaced */
    char *workflow;
    int ended;
    uint32_t status;
    xlist steps;   /* a: step */
    xlist routed;  /* a: event type, b: target step */
    xlist emitted; /* a: emitting step (NULL: from outside), b: event type */
    uint64_t lost;
} xrun;

struct wf_execution {
    _Atomic uint32_t refs;
    pthread_mutex_t lock; /* guards everything below */
    xrun runs[KEEP_RUNS];
    uint64_t seq;
    uint64_t last_ended; /* run id; 0: none yet */
};

static void list_free(xlist *l)
{
    for (uint32_t i = 0; i < l->n; i++) {
        wf__free_mem(l->v[i].a);
        wf__free_mem(l->v[i].b);
    }
    wf__free_mem(l->v);
    memset(l, 0, sizeof *l);
}

static void run_clear(xrun *r)
{
    wf__free_mem(r->workflow);
    list_free(&r->steps);
    list_free(&r->routed);
    list_free(&r->emitted);
    memset(r, 0, sizeof *r);
}

static int same(const char *x, const char *y)
{
    return x == y || (x && y && strcmp(x, y) == 0);
}

/* The entry (a, b) of l, added when absent; NULL when it cannot be stored. */
static xcount *entry(xrun *run, xlist *l, const char *a, const char *b)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (same(l->v[i].a, a) && same(l->v[i].b, b))
            return &l->v[i];
    if (l->n >= MAX_ENTRIES)
        goto lost;
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 8;
        xcount *v = wf__realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            goto lost;
        l->v = v;
        l->cap = cap;
    }
    xcount *e = &l->v[l->n];
    memset(e, 0, sizeof *e);
    if ((a && (e->a = wf__strdup(a)) == NULL) || (b && (e->b = wf__strdup(b)) == NULL)) {
        wf__free_mem(e->a);
        goto lost;
    }
    l->n++;
    return e;
lost:
    run->lost++;
    return NULL;
}

static xrun *run_of(wf_execution *x, const wf_obs_record *r)
{
    xrun *oldest = NULL;
    for (int i = 0; i < KEEP_RUNS; i++) {
        xrun *run = &x->runs[i];
        if (run->used && run->run_id == r->run_id)
            return run;
        if (oldest == NULL || !run->used || (oldest->used && run->seq < oldest->seq))
            oldest = run;
    }
    run_clear(oldest);
    oldest->used = 1;
    oldest->run_id = r->run_id;
    oldest->seq = ++x->seq;
    return oldest;
}

static void exe_record(const wf_obs_record *r, void *user)
{
    wf_execution *x = user;
    if (r->run_id == 0)
        return;
    pthread_mutex_lock(&x->lock);
    xrun *run = run_of(x, r);
    xcount *e;
    if (run->workflow == NULL && r->workflow)
        run->workflow = wf__strdup(r->workflow);
    switch (r->kind) {
    case WF_OBS_STEP_START:
        if ((e = entry(run, &run->steps, r->step, NULL)) != NULL)
            e->n++;
        break;
    case WF_OBS_STEP_END:
        if (r->error < 0 && (e = entry(run, &run->steps, r->step, NULL)) != NULL)
            e->failed++;
        break;
    case WF_OBS_EVENT_ROUTE:
        if ((e = entry(run, &run->routed, r->event_type, r->step)) != NULL)
            e->n++;
        break;
    case WF_OBS_EVENT_EMIT:
        if ((e = entry(run, &run->emitted, r->step, r->event_type)) != NULL)
            e->n++;
        break;
    case WF_OBS_RUN_END:
        run->ended = 1;
        run->status = r->status;
        x->last_ended = r->run_id;
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&x->lock);
}

void wf_execution_release(wf_execution *x)
{
    if (x == NULL || atomic_fetch_sub(&x->refs, 1) != 1)
        return;
    for (int i = 0; i < KEEP_RUNS; i++)
        run_clear(&x->runs[i]);
    pthread_mutex_destroy(&x->lock);
    wf__free_mem(x);
}

static void exe_free(void *user)
{
    wf_execution_release(user);
}

int wf_exporter_execution(wf_observer *out, wf_execution **exe)
{
    if (exe)
        *exe = NULL;
    if (out == NULL || exe == NULL)
        return WF_EINVAL;
    memset(out, 0, sizeof *out);
    wf_execution *x = wf__calloc(1, sizeof *x);
    if (x == NULL)
        return WF_ENOMEM;
    atomic_init(&x->refs, 2); /* the observer's and the caller's */
    pthread_mutex_init(&x->lock, NULL);
    out->record = exe_record;
    out->user_free = exe_free;
    out->user = x;
    out->kinds = WF_OBS_BIT(WF_OBS_STEP_START) | WF_OBS_BIT(WF_OBS_STEP_END) |
                 WF_OBS_BIT(WF_OBS_EVENT_ROUTE) | WF_OBS_BIT(WF_OBS_EVENT_EMIT) |
                 WF_OBS_BIT(WF_OBS_RUN_END);
    *exe = x;
    return 0;
}

/* ------------------------------------------------------------ drawing */

/* Per step of the workflow: executions, failures, whether drawn. */
typedef struct stepc {
    uint64_t n, failed;
    int drawn;
} stepc;

static int cmp_type(const void *a, const void *b)
{
    uint32_t x = (*(const wf_event_type *const *)a)->id;
    uint32_t y = (*(const wf_event_type *const *)b)->id;
    return x < y ? -1 : x > y;
}

static int step_index(const wf_workflow *wf, const char *name, uint32_t *out)
{
    const wf__step *s = name ? wf__workflow_find_step(wf, name) : NULL;
    if (s == NULL)
        return WF_EMISMATCH;
    *out = s->index;
    return 0;
}

static int type_of(const wf_workflow *wf, const char *name, const wf_event_type **out)
{
    *out = name ? wf_registry_find(wf->reg, name) : NULL;
    return *out ? 0 : WF_EMISMATCH;
}

/* Adds t to the set ts (n entries, room for cap). */
static void type_add(const wf_event_type **ts, uint32_t *n, const wf_event_type *t)
{
    for (uint32_t i = 0; i < *n; i++)
        if (ts[i] == t)
            return;
    ts[(*n)++] = t;
}

static int draw(const xrun *run, const wf_workflow *wf, int mermaid, wf__buf *b)
{
    if (run->workflow && wf->name && strcmp(run->workflow, wf->name) != 0)
        return WF_EMISMATCH;
    stepc *sc = wf__calloc(wf->n_steps ? wf->n_steps : 1, sizeof *sc);
    uint32_t cap = run->routed.n + run->emitted.n + 1;
    const wf_event_type **ts = wf__calloc(cap, sizeof *ts);
    uint32_t nt = 0;
    int rc = 0;
    if (sc == NULL || ts == NULL) {
        rc = WF_ENOMEM;
        goto out;
    }
    /* Resolve every name first: a run of another workflow draws nothing. */
    for (uint32_t i = 0; i < run->steps.n && rc == 0; i++) {
        uint32_t s;
        if ((rc = step_index(wf, run->steps.v[i].a, &s)) == 0) {
            sc[s].n += run->steps.v[i].n;
            sc[s].failed += run->steps.v[i].failed;
            sc[s].drawn = 1;
        }
    }
    for (uint32_t i = 0; i < run->routed.n && rc == 0; i++) {
        const wf_event_type *t;
        uint32_t s;
        if ((rc = type_of(wf, run->routed.v[i].a, &t)) == 0 &&
            (rc = step_index(wf, run->routed.v[i].b, &s)) == 0) {
            type_add(ts, &nt, t);
            sc[s].drawn = 1;
        }
    }
    for (uint32_t i = 0; i < run->emitted.n && rc == 0; i++) {
        const wf_event_type *t;
        uint32_t s;
        if ((rc = type_of(wf, run->emitted.v[i].b, &t)) == 0) {
            type_add(ts, &nt, t);
            if (run->emitted.v[i].a && (rc = step_index(wf, run->emitted.v[i].a, &s)) == 0)
                sc[s].drawn = 1;
        }
    }
    if (rc < 0)
        goto out;
    if (nt)
        qsort(ts, nt, sizeof *ts, cmp_type);

    /* nodes as wf_workflow_to_dot / _to_mermaid draw them (lib/graph.c's styles) */
    const wf__graph_style *st = mermaid ? &wf__graph_mermaid : &wf__graph_dot;
    char label[64];
    if (mermaid) {
        wf__buf_puts(b, "flowchart TD\n");
        wf__buf_printf(b, "    %%%% run %" PRIu64 " (%s)\n", run->run_id,
                       run->ended ? wf__exp_status_name(run->status) : "running");
    } else {
        wf__buf_puts(b, "digraph ");
        wf__dot_str(b, wf->name ? wf->name : "workflow");
        wf__buf_puts(b, " {\n  rankdir=TB;\n  node [fontname=\"Helvetica\"];\n");
        wf__buf_printf(b, "  label=\"run %" PRIu64 " (%s)\";\n  labelloc=t;\n", run->run_id,
                       run->ended ? wf__exp_status_name(run->status) : "running");
    }
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        if (!sc[i].drawn)
            continue;
        wf__buf_printf(b, st->step_open, i);
        wf__buf buf;
        wf__buf_init(&buf);
        wf__buf_puts(&buf, wf->steps[i]->name);
        if (sc[i].failed)
            snprintf(label, sizeof label, " (%" PRIu64 ", %" PRIu64 " failed)", sc[i].n,
                     sc[i].failed);
        else
            snprintf(label, sizeof label, " (%" PRIu64 ")", sc[i].n);
        wf__buf_puts(&buf, label);
        if (buf.oom)
            b->oom = 1;
        else
            st->quote(b, buf.data);
        wf__buf_free(&buf);
        wf__buf_puts(b, st->step_close);
    }
    for (uint32_t k = 0; k < nt; k++) {
        const wf_event_type *t = ts[k];
        int c = t->is_stop ? 2 : wf_event_type_is(t, wf->reg->types[WF_START_EVENT]) ? 1 : 0;
        wf__buf_printf(b, st->event_open, t->id);
        st->quote(b, t->name);
        wf__buf_printf(b, st->event_close, st->colour[c]);
    }
    /* Edges in the order the run first took them; every name resolved above. */
    for (uint32_t i = 0; i < run->routed.n; i++) {
        const wf_event_type *t = NULL;
        uint32_t s = 0;
        type_of(wf, run->routed.v[i].a, &t);
        step_index(wf, run->routed.v[i].b, &s);
        if (mermaid)
            wf__buf_printf(b, "    event_%u -->|%" PRIu64 "| step_%u\n", t->id, run->routed.v[i].n,
                           s);
        else
            wf__buf_printf(b, "  event_%u -> step_%u [label=\"%" PRIu64 "\"];\n", t->id, s,
                           run->routed.v[i].n);
    }
    for (uint32_t i = 0; i < run->emitted.n; i++) {
        const wf_event_type *t = NULL;
        uint32_t s = 0;
        if (run->emitted.v[i].a == NULL)
            continue; /* from outside the run: no box to start from */
        type_of(wf, run->emitted.v[i].b, &t);
        step_index(wf, run->emitted.v[i].a, &s);
        if (mermaid)
            wf__buf_printf(b, "    step_%u -->|%" PRIu64 "| event_%u\n", s, run->emitted.v[i].n,
                           t->id);
        else
            wf__buf_printf(b, "  step_%u -> event_%u [label=\"%" PRIu64 "\"];\n", s, t->id,
                           run->emitted.v[i].n);
    }
    wf__buf_puts(b, st->footer);
out:
    wf__free_mem(sc);
    wf__free_mem(ts);
    return rc;
}

int wf_execution_draw(wf_execution *x, const wf_workflow *wf, uint64_t run_id, int mermaid,
                      char **out)
{
    if (out)
        *out = NULL;
    if (x == NULL || wf == NULL || out == NULL)
        return WF_EINVAL;
    pthread_mutex_lock(&x->lock);
    uint64_t id = run_id ? run_id : x->last_ended;
    const xrun *run = NULL;
    for (int i = 0; i < KEEP_RUNS && id; i++)
        if (x->runs[i].used && x->runs[i].run_id == id)
            run = &x->runs[i];
    int rc = WF_ENOTFOUND;
    wf__buf b;
    wf__buf_init(&b);
    if (run)
        rc = draw(run, wf, mermaid, &b);
    pthread_mutex_unlock(&x->lock);
    if (rc < 0) {
        wf__buf_free(&b);
        return rc;
    }
    return wf__buf_take(&b, out);
}
