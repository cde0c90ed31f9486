/*
 * resume.c: a run continued from a snapshot (wf_run_resume), and the check
 * of a snapshot's run map against a workflow (wf_ctx_load, wf-snapshot).
 * One walk over the bytes does both: checking builds nothing but tables,
 * resuming builds the run's tasks, buffers, waiters, retries and fan-out
 * groups, then attaches them to a new run (wf__run_create) and starts it.
 * Decoding never trusts its input: every length, index and type is checked
 * and a bad document gives WF_EFORMAT with a message naming the field.
 *
 * Shared fields: none of its own; attach() fills the new run under the
 * locks that guard each part (collect_lock, mu) inside an outside section.
 */
#include "engine.h"

#include "codec_impl.h"

#include <string.h>

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
    wf__task **tasks; /* built, in order */
    uint32_t ntasks;
    wf__waiter *waiters;
    wf__collect *collect;
    wf__retry_timer *retries;
    uint64_t dropped, unhandled;
    uint64_t next_inv;                /* above every invocation number read */
    uint32_t last_state;              /* of the last task read (0 queued, 1 in progress) */
    uint64_t n_queued, n_in_progress; /* tasks and retries read, for the counters */
    int has_counts;                   /* the counters gave queued and in_progress */
    uint64_t queued, in_progress;     /* what they say */
    const char *field;                /* where the walk is, for messages: run.<field>[item] */
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

/* Snapshots nested in snapshots (children of children) being checked on this thread. */
#define MAX_NESTED_CHILDREN 16
static WF__TLS uint32_t tls_nested;

/*
 * A task's child: [workflow name, fingerprint, snapshot (bin)], the child
 * workflow an in-progress invocation of step ds awaited when it was saved.
 * The workflow must be one ds declares (the resumer knows it by that) with
 * the same fingerprint, and the snapshot must load into it (checked whole,
 * its own children in turn). ri (building): gets a copy.
 */
static int dec_child(dec *d, const wf__step *ds, uint32_t state, wf__retry_info *ri)
{
    wf__rd *r = &d->r;
    uint32_t n;
    char name[4097];
    uint64_t fp;
    int64_t i;
    int neg;
    const char *doc;
    uint32_t len;
    if (wf__rd_array(r, &n) < 0 || n != 3 || rd_name(d, name) < 0 ||
        wf__rd_integer(r, &fp, &i, &neg) < 0 || neg || wf__rd_strbin(r, 1, &doc, &len) < 0)
        return bad(d, "a child is [workflow name, fingerprint, snapshot (bin)]");
    if (state != 1)
        return bad(d, "a child awaited by a task not in progress");
    wf_workflow *cwf = NULL;
    for (uint32_t j = 0; j < ds->n_children && cwf == NULL; j++) {
        wf_workflow *c = ds->children[j] ? ds->children[j] : d->wf;
        if (strcmp(c->name, name) == 0)
            cwf = c;
    }
    char text[640];
    int rc = 0;
    if (cwf == NULL) {
        snprintf(text, sizeof text,
                 "snapshot: run.%s[%u]: step '%s' awaits child workflow '%.200s', which it does "
                 "not declare (wf_workflow_declare_child): its state cannot be resumed",
                 d->field, d->item, ds->name, name);
        rc = WF_EMISMATCH;
    } else if (fp != wf_workflow_fingerprint(cwf)) {
        snprintf(text, sizeof text,
                 "snapshot: run.%s[%u]: child workflow '%.200s' of step '%s' does not match its "
                 "definition (fingerprint)",
                 d->field, d->item, name, ds->name);
        rc = WF_EMISMATCH;
    } else if (tls_nested >= MAX_NESTED_CHILDREN) {
        snprintf(text, sizeof text, "snapshot: run.%s[%u]: children nested more than %d deep",
                 d->field, d->item, MAX_NESTED_CHILDREN);
        rc = WF_EFORMAT;
    } else {
        char *msg = NULL;
        wf_ctx *cctx = NULL;
        tls_nested++;
        rc = wf_ctx_load(cwf, doc, len, 0, &cctx, &msg);
        tls_nested--;
        if (rc == 0 && !wf_ctx_is_resumable(cctx)) {
            rc = WF_EFORMAT;
            wf__free_mem(msg);
            msg = wf__strdup("it holds no run");
        }
        wf_ctx_free(cctx);
        if (rc < 0)
            snprintf(text, sizeof text, "snapshot: run.%s[%u]: child workflow '%.200s': %s",
                     d->field, d->item, name, msg ? msg : wf_strerror(rc));
        wf__free_mem(msg);
    }
    if (rc < 0) {
        if (d->message && *d->message == NULL)
            *d->message = wf__strdup(text);
        return rc;
    }
    if (ri) {
        wf__child_saved *cs = wf__calloc(1, sizeof *cs);
        if (cs == NULL)
            return WF_ENOMEM;
        ri->child = cs;
        cs->fp = fp;
        if ((cs->wf = wf__strdup(name)) == NULL || (cs->doc = wf__malloc(len ? len : 1)) == NULL)
            return WF_ENOMEM;
        memcpy(cs->doc, doc, len);
        cs->len = len;
    }
    return 0;
}

/* [step, type, fields, state, attempt, lineage, group, branch, retry, tuple, invocation, child] */
static int dec_task(dec *d, wf__task **out)
{
    *out = NULL;
    wf__rd *r = &d->r;
    uint32_t n, step, ti;
    if (wf__rd_array(r, &n) < 0 || n < 3 || n > 12)
        return bad(d, "a task is an array of 3 to 12 items");
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
    if (t && (has_retry || n > 9)) { /* a joined set or an invocation number follows */
        if ((ri = wf__calloc(1, sizeof *ri)) == NULL)
            rc = WF_ENOMEM;
        t->arg = ri;
    }
    if (rc == 0 && has_retry)
        rc = dec_retry_info(d, ri);
    int joined = 0;
    if (rc == 0 && n > 9 && !wf__rd_nil(r)) {
        uint32_t m;
        joined = 1;
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
    int64_t invno = 0;
    if (rc == 0 && n > 10 && !wf__rd_nil(r) && (wf__rd_i64(r, &invno) < 0 || invno <= 0))
        rc = bad(d, "bad invocation number");
    if (rc == 0 && ri)
        ri->inv = (uint64_t)invno;
    if (rc == 0 && (uint64_t)invno >= d->next_inv)
        d->next_inv = (uint64_t)invno + 1;
    /*
     * Against the definition: a task's event is of a type its step accepts
     * (an error handler's StepFailedEvent aside; a join's task carries its
     * set, and a list join's the event that fanned out).
     */
    const wf__step *ds = d->wf->steps[d->steps[step]];
    if (rc == 0 && n > 11)
        rc = dec_child(d, ds, state, ri);
    const wf_event_type *ty = d->types[ti];
    if (rc == 0 && !joined && !wf__step_accepts(ds, ty) &&
        !(ds->is_handler && ty == d->wf->reg->types[WF_STEP_FAILED_EVENT]))
        rc = bad(d, "an event of a type its step does not accept");
    d->last_state = state;
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
        wf_event *origin = NULL; /* nil: the join fired (its task holds the origin) */
        int rc = 0;
        int fired_origin = wf__rd_nil(r);
        if (!fired_origin && (rc = dec_event(d, &origin, NULL)) < 0)
            return rc;
        if (g)
            g->origin = origin;
        if (wf__rd_u32(r, 65536, &lineage) < 0)
            return bad(d, "bad lineage");
        const char *res = NULL;
        uint32_t nb = 0, nres = 0, unresolved = 0, ones = 0;
        if (wf__rd_strbin(r, 1, &res, &nb) < 0 || wf__rd_array(r, &nres) < 0 || nb != d->gn[i] ||
            nres != nb)
            return bad(d, "resolved (bin) and results (array) have one item per branch");
        for (uint32_t b = 0; b < nb; b++) {
            uint8_t st = (uint8_t)res[b];
            if (st > 2)
                return bad(d, "a branch is unresolved (0), resolved (1) or out (2)");
            unresolved += st == 0;
            ones += st == 1;
            wf_event *e = NULL;
            if (!wf__rd_nil(r) && (rc = dec_event(d, &e, NULL)) < 0)
                return rc;
            if (g) {
                atomic_init(&g->resolved[b], st);
                g->result[b] = e;
            }
        }
        /* only a join that fired (all resolved, or its Take(n) reached) gave its origin away */
        uint32_t take = d->wf->steps[d->steps[join]]->take;
        if (fired_origin && unresolved > 0 && !(take && ones >= take))
            return bad(d, "a group's origin is nil only once its join has fired");
        if (g) {
            if (parent != NO_ITEM) {
                g->parent = d->groups[parent];
                g->parent_branch = branch;
            }
            g->join_step = d->steps[join];
            g->collect = d->types[ti];
            g->lineage = (uint16_t)lineage;
            atomic_init(&g->unresolved, unresolved);
            if (d->wf->steps[g->join_step]->take &&
                wf__take_init(g, d->wf->steps[g->join_step], 1) < 0)
                return WF_ENOMEM;
        }
    }
    /* a fan-out that has not joined yet holds a unit on its parent's branch */
    for (uint32_t i = 0; d->build && i < d->ngroups; i++) {
        wf__group *g = d->groups[i];
        if (g->parent && atomic_load(&g->unresolved) > 0 && !wf__take_fired(g))
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
            if (left >= 0 && state == W_WAITING) { /* armed when the run starts */
                if ((w->tm = wf__calloc(1, sizeof *w->tm)) == NULL)
                    return WF_ENOMEM;
                w->tm->heap_index = WF__TIMER_IDLE;
                w->tm->deadline_ns = left; /* ms left, until then */
                w->timer_live = 1;
            }
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
        d->n_queued++;
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
        if (d->last_state)
            d->n_in_progress++;
        else
            d->n_queued++;
    }
    return 0;
}

/* counters: {"queued", "in_progress" (for readers), "dropped", "unhandled"} */
static int dec_counters(dec *d)
{
    here(d, "counters", NO_ITEM);
    if (!seek(d, R_COUNTERS))
        return 0;
    wf__rd_key keys[4] = {{"dropped", 0, 0, 0},
                          {"unhandled", 0, 0, 0},
                          {"queued", 0, 0, 0},
                          {"in_progress", 0, 0, 0}};
    int rc = wf__rd_keys(&d->r, keys, 4);
    if (rc < 0)
        return rc;
    size_t end = d->r.off; /* the map's end: where the run map's walk goes on */
    d->has_counts = keys[2].at && keys[3].at;
    uint64_t *v[4] = {&d->dropped, &d->unhandled, &d->queued, &d->in_progress};
    for (int k = 0; k < 4; k++) {
        int64_t i;
        int neg;
        d->r.off = keys[k].at;
        if (keys[k].at && (wf__rd_integer(&d->r, v[k], &i, &neg) < 0 || neg))
            return bad(d, "a counter is a non-negative integer");
    }
    d->r.off = end;
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
 * (fanout.c): open are the branches something refers to, and the unresolved
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
    /* a run's counters add up: queued = queued tasks + retries, in_progress = the others */
    if (rc == 0 && d->has_counts &&
        (d->queued != d->n_queued || d->in_progress != d->n_in_progress)) {
        here(d, "counters", NO_ITEM);
        rc = bad(d, "queued and in_progress do not match the tasks and retries");
    }
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
    if (d->next_inv > atomic_load(&run->next_inv))
        atomic_store(&run->next_inv, d->next_inv);
    wf__lock_take(&run->collect_lock);
    if (d->waiters)
        wf__run_had(run, WF__HAD_WAITERS);
    run->collect = d->collect;
    d->collect = NULL;
    run->waiters = d->waiters;
    for (wf__waiter *w = run->waiters; w; w = w->next) {
        w->run = run;
        if (w->tm) {
            w->tm->fn = wf__waiter_fire;
            w->tm->arg = w;
        }
        if (w->task)
            w->task->run = run;
        if (w->state == W_WAITING)
            atomic_fetch_add(&run->nwaiting, 1);
        if (w->timer_live) {
            wf__engine_ref(run);
            if (wf__timer_arm(run->ex, w->tm, d->now + w->tm->deadline_ns * 1000000) < 0) {
                w->timer_live = 0;
                w->timeout_ms = WF_NO_TIMEOUT;
                wf__engine_unref(run);
            }
        }
    }
    d->waiters = NULL;
    wf__lock_give(&run->collect_lock);
    while (d->retries) {
        wf__retry_timer *rt = d->retries;
        d->retries = rt->next;
        rt->run = run;
        rt->t->run = run;
        rt->tm.fn = wf__retry_fire;
        rt->tm.arg = rt;
        wf__engine_ref(run);
        wf__lock_take(&run->mu);
        wf__run_had(run, WF__HAD_RETRIES);
        rt->prev = NULL;
        rt->next = run->retries;
        if (run->retries)
            run->retries->prev = rt;
        run->retries = rt;
        rt->listed = 1;
        int armed = wf__timer_arm(run->ex, &rt->tm, d->now + rt->tm.deadline_ns * 1000000) == 0;
        if (!armed)
            WF__DLIST_UNLINK(run->retries, rt);
        wf__lock_give(&run->mu);
        if (!armed) { /* deliver it now rather than lose it */
            wf__task *t = rt->t;
            wf__free_mem(rt);
            wf__engine_unref(run);
            uint32_t s = t->step;
            if (wf__deliver_task(run, t) < 0)
                wf__fail_nomem(run, s, "resuming a retry");
        }
    }
    for (uint32_t i = 0; i < d->ntasks; i++) {
        wf__task *t = d->tasks[i];
        d->tasks[i] = NULL;
        t->run = run;
        uint32_t s = t->step;
        if (wf__deliver_task(run, t) < 0)
            wf__fail_nomem(run, s, "resuming a queued event");
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
        rc = wf__run_create(ex, wf, ctx, params, NULL, bytes, len, &run);
    if (rc == 0) {
        d.now = wf__now_ns();
        attach(&d, run);
    }
    if (rc >= 0)
        *out = (wf_handler *)run;
    dec_free(&d);
    if (rc != 1) /* 1: the run waits for its place and holds the bytes to resume from */
        wf__free_mem(bytes);
    return rc < 0 ? rc : 0;
}

int wf__resume_held(wf__run *run, void *bytes, size_t len)
{
    dec d;
    memset(&d, 0, sizeof d);
    wf__rd_init(&d.r, bytes, len, 0);
    d.build = 1;
    d.wf = run->wf;
    d.now = wf__now_ns();
    int rc = dec_run(&d); /* checked when it was loaded: only memory can fail now */
    if (rc == 0)
        attach(&d, run);
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
