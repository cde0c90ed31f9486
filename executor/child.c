/*
 * child.c: child workflows (wf_ctx_run_child). A step pends its invocation
 * (completion.c's token), starts a run of another workflow on the same
 * executor with an on_done callback, and returns WF_PENDING: no worker is
 * held while the child runs. The child's end completes or fails the token;
 * the parent's end cancels the children still going (wf__children_cancel,
 * called by wf__end_run after the tokens are detached).
 *
 * Lock order: a parent's end (under its own `outside` read lock) takes its
 * children's `outside` locks to cancel them, so a child's end never takes
 * its parent's while it holds its own: when its on_done runs under an
 * `outside` lock (a timer, a cancel, a grandchild's completion), the outcome
 * waits in the record on a per-thread list (wf__tls_child_done) and the
 * token is completed by the thread's last wf__outside_exit (cut.c).
 *
 * A child record (wf__child) lives until the parent let go of it (it left
 * parent->children: the child ended, or the parent's end cancelled it), the
 * child's on_done ran and wf_ctx_run_child returned: refs, atomic, starts
 * at 3. A parent that ends while its child is being started finds no
 * handler yet: it sets cancel, and the starter cancels the child as soon
 * as its start returns. It holds the child
 * run's handler and a reference (refs) on the parent run.
 *
 * Shared fields: parent->children (the list) and a record's prev, next and
 * listed under parent->collect_lock; a record's h and cancel under its own
 * lock (h is set after the start returns, and the parent may end meanwhile).
 * A child run's stream_to and parent_* fields are set while it is created
 * (before anything runs) and read-only afterwards.
 */
#include "engine.h"

#include <wf/child.h>

#include <stdio.h>
#include <string.h>

typedef struct wf__child {
    struct wf__child *prev, *next;
    int listed; /* in parent->children, under parent->collect_lock */
    _Atomic uint32_t refs;
    pthread_mutex_t lock; /* h, cancel */
    wf_handler *h;
    int cancel;      /* the parent ended before h was known */
    wf__run *parent; /* a reference (refs) */
    wf_completion *token;
    wf_workflow *wf; /* the child workflow (retained), for messages */
    wf_child_result_fn on_result;
    void *user;
    void (*user_free)(void *);
    int forward;
    uint64_t parent_event_id;
    /* the child's outcome, from its on_done until child_finish hands it to the token */
    wf_event *out;
    int code;
    char *msg;
    struct wf__child *done_next; /* wf__tls_child_done, this thread's */
} wf__child;

/* The record whose run the calling thread is creating (wf__child_attach reads it). */
static WF__TLS wf__child *tls_starting;

void wf_child_params_init(wf_child_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->timeout_ms = WF_TIMEOUT_DEFAULT;
}

static void child_release(wf__child *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (c->user_free)
        c->user_free(c->user);
    wf_handler_free(c->h);
    wf_workflow_free(c->wf);
    pthread_mutex_destroy(&c->lock);
    wf__run_release(c->parent);
    wf__free_mem(c);
}

/* Takes c off its parent's list: 1 if this call did. */
static int child_unlist(wf__child *c)
{
    wf__run *p = c->parent;
    wf__lock_take(&p->collect_lock);
    int was = c->listed;
    if (was) {
        WF__DLIST_UNLINK(p->children, c);
        c->listed = 0;
    }
    wf__lock_give(&p->collect_lock);
    return was;
}

/* Ends the child run as cancelled (its own children follow, from its end). */
static void child_cancel_run(wf_handler *h)
{
    wf__run *run = (wf__run *)h;
    int o = wf__outside_enter(run);
    wf__end_run(run, WF_RUN_CANCELLED, NULL, WF_ECANCELLED, NULL, NULL);
    wf__outside_exit(run, o);
}

/*
 * Completes the parent's token with the outcome child_done put in c, takes c
 * off its parent's list and lets go of on_done's reference. Never under a
 * child's `outside` lock (see wf__tls_child_done).
 */
static void child_finish(wf__child *c)
{
    /* this thread may be routing inside the child: none of that state is the parent's */
    wf__inv *s_inv = wf__tls_inv;
    wf__group *s_group = wf__tls_group;
    uint32_t s_branch = wf__tls_branch;
    uint16_t s_lineage = wf__tls_lineage;
    wf__tls_inv = NULL;
    wf__tls_group = NULL;
    wf__tls_branch = 0;

    wf_completion *tok = c->token;
    c->token = NULL;
    wf_event *out = c->out;
    c->out = NULL;
    if (c->code < 0)
        (void)wf_completion_fail(tok, c->code, c->msg);
    else
        (void)wf_completion_complete(tok, out);
    wf__free_mem(c->msg);
    c->msg = NULL;
    if (child_unlist(c))
        child_release(c); /* the list's reference (else the parent's end let go of it) */

    wf__tls_inv = s_inv;
    wf__tls_group = s_group;
    wf__tls_branch = s_branch;
    wf__tls_lineage = s_lineage;
    child_release(c); /* on_done's reference */
}

WF__TLS wf__child *wf__tls_child_done;

void wf__child_drain(void)
{
    /* oldest first; a completion may end a parent that is a child too, and add to the list */
    while (wf__tls_child_done) {
        wf__child *c = wf__tls_child_done, **pp = &wf__tls_child_done;
        while (c->done_next) {
            pp = &c->done_next;
            c = c->done_next;
        }
        *pp = NULL;
        child_finish(c);
    }
}

/* The child's outcome for the parent's invocation (the child's on_done). */
static void child_done(wf_handler *h, void *user)
{
    wf__child *c = user;
    wf_event *result = NULL;
    int rc = wf_handler_wait(h, 0, &result);
    c->code = 0;
    c->out = NULL;
    c->msg = NULL;
    if (rc == 0 && wf_completion_cancelled(c->token)) {
        wf_event_release(result); /* the parent has ended: completing only frees the token */
    } else if (rc == 0) {
        wf_event *out = result;
        int mrc = 0;
        if (c->on_result) {
            out = NULL;
            mrc = c->on_result(result, &out, c->user);
            wf_event_release(result);
            if (mrc >= 0 && out && out->type->reg != c->parent->reg) {
                mrc = WF_ETYPE;
                wf_event_release(out);
                out = NULL;
            } else if (mrc < 0) {
                wf_event_release(out);
                out = NULL;
            }
        } else if (out && out->type->reg != c->parent->reg) {
            mrc = WF_ETYPE;
            wf_event_release(out);
            out = NULL;
        }
        if (mrc < 0) {
            char msg[384];
            snprintf(msg, sizeof msg,
                     mrc == WF_ETYPE ? "child workflow '%s': its result is not an event of the "
                                       "parent's registry (map it with on_result)"
                                     : "child workflow '%s': on_result failed",
                     c->wf->name);
            c->code = mrc >= 0 ? WF_EINVAL : mrc;
            c->msg = wf__strdup(msg);
        } else {
            c->out = out;
        }
    } else {
        int code = rc;
        const char *step = NULL, *emsg = NULL;
        (void)wf_handler_error(h, &code, &step, &emsg);
        if (code >= 0)
            code = rc;
        char msg[512];
        snprintf(msg, sizeof msg, "child workflow '%s' (run %llu) %s%s%s%s: %s", c->wf->name,
                 (unsigned long long)wf_handler_run_id(h),
                 rc == WF_ERUNTIMEOUT  ? "timed out"
                 : rc == WF_ECANCELLED ? "was cancelled"
                                       : "failed",
                 step ? " in step '" : "", step ? step : "", step ? "'" : "",
                 emsg ? emsg : wf_strerror(code));
        c->code = code;
        c->msg = wf__strdup(msg); /* NULL (out of memory): the code alone */
    }
    if (wf__outside_held()) { /* the child's own lock, perhaps: after it */
        c->done_next = wf__tls_child_done;
        wf__tls_child_done = c;
        return;
    }
    child_finish(c);
}

void wf__children_cancel(wf__run *run)
{
    for (;;) {
        wf__lock_take(&run->collect_lock);
        wf__child *c = run->children;
        if (c) {
            WF__DLIST_UNLINK(run->children, c);
            c->listed = 0;
        }
        wf__lock_give(&run->collect_lock);
        if (c == NULL)
            return;
        pthread_mutex_lock(&c->lock);
        wf_handler *h = c->h;
        if (h)
            atomic_fetch_add(&((wf__run *)h)->refs, 1);
        else
            c->cancel = 1; /* its starter cancels it once it has the handler */
        pthread_mutex_unlock(&c->lock);
        if (h) {
            child_cancel_run(h);
            wf__run_release((wf__run *)h);
        }
        child_release(c); /* the list's reference */
    }
}

wf__run *wf__child_run_ref(wf__child *c, const wf__run *parent, uint32_t step)
{
    const wf__step *s = parent->wf->steps[step];
    int declared = 0;
    for (uint32_t j = 0; j < s->n_children && !declared; j++)
        declared = (s->children[j] ? s->children[j] : parent->wf) == c->wf;
    if (!declared)
        return NULL;
    pthread_mutex_lock(&c->lock);
    wf__run *run = (wf__run *)c->h;
    if (run)
        atomic_fetch_add(&run->refs, 1);
    pthread_mutex_unlock(&c->lock);
    return run;
}

/*
 * The context the child runs on: a fresh one, or, for an invocation resumed
 * from a snapshot that held its child, that child loaded from it (*resume
 * set). The saved child is taken from the invocation either way.
 */
static int child_ctx(wf__inv *inv, wf_workflow *child, wf_ctx **out, int *resume)
{
    *out = NULL;
    *resume = 0;
    wf__retry_info *ri = inv->task->arg;
    if (ri == NULL || ri->child == NULL)
        return wf_ctx_new(out, child);
    wf__child_saved *cs = ri->child;
    ri->child = NULL;
    void *doc = cs->doc;
    size_t len = cs->len;
    const char *name = cs->wf;
    uint64_t fp = cs->fp;
    int rc;
    if (strcmp(name, child->name) != 0 || fp != wf_workflow_fingerprint(child)) {
        rc =
            wf__set_error(WF_EMISMATCH,
                          "wf_ctx_run_child: step '%s' was saved awaiting child workflow '%.200s', "
                          "not this '%s' (or its definition changed): it is not resumed",
                          inv->step->name, name, child->name);
    } else {
        char *msg = NULL;
        rc = wf_ctx_load(child, doc, len, 0, out, &msg);
        if (rc < 0)
            rc = wf__set_error(rc, "wf_ctx_run_child: the saved child workflow '%s': %s",
                               child->name, msg ? msg : wf_strerror(rc));
        wf_free(msg);
        *resume = rc == 0 && wf_ctx_is_resumable(*out);
    }
    wf__child_saved_free(cs);
    return rc;
}

void wf__child_saved_free(wf__child_saved *cs)
{
    if (cs == NULL)
        return;
    wf__free_mem(cs->wf);
    wf__free_mem(cs->doc);
    wf__free_mem(cs);
}

int wf__child_attach(wf__run *run)
{
    wf__child *c = tls_starting;
    if (c == NULL)
        return 0;
    wf__run_cold *cold = wf__run_cold_make(run);
    if (cold == NULL)
        return WF_ENOMEM; /* tls_starting stays: the caller's failed start clears it */
    tls_starting = NULL; /* only the run wf_ctx_run_child creates */
    cold->parent_run_id = c->parent->id;
    cold->parent_event_id = c->parent_event_id;
    if (c->forward) {
        atomic_fetch_add(&c->parent->refs, 1);
        cold->stream_to = c->parent;
    }
    return 0;
}

void wf__child_detach(wf__run *run)
{
    if (run->cold == NULL)
        return;
    if (run->cold->stream_to)
        wf__run_release(run->cold->stream_to);
    run->cold->stream_to = NULL;
}

void wf__child_forward(wf__run *run, wf_event *ev)
{
    /* the parent's own stream forwards further up when it is a child too */
    (void)wf__stream_push(run->cold->stream_to, wf_event_retain(ev));
}

int wf_ctx_run_child(wf_ctx *ctx, wf_workflow *child, wf_event *start_event,
                     const wf_child_params *params)
{
    if (ctx == NULL || child == NULL || start_event == NULL) {
        wf_event_release(start_event);
        return wf__set_error(WF_EINVAL, "wf_ctx_run_child: ctx, child and start_event are needed");
    }
    wf_child_params defaults;
    if (params == NULL) {
        wf_child_params_init(&defaults);
        params = &defaults;
    }
    if (params->context)
        *params->context = NULL;
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL) {
        wf_event_release(start_event);
        return wf__set_error(WF_ESTATE,
                             "wf_ctx_run_child: not called from a step of this context's run");
    }
    if (inv->token) {
        wf_event_release(start_event);
        return wf__set_error(WF_EEXIST,
                             "wf_ctx_run_child: step '%s' already pends (one child "
                             "or completion token per invocation)",
                             inv->step->name);
    }
    wf__run *parent = inv->run;
    wf__child *c = wf__calloc(1, sizeof *c);
    if (c == NULL) {
        wf_event_release(start_event);
        return WF_ENOMEM;
    }
    wf_ctx *cctx;
    int resume;
    int rc = child_ctx(inv, child, &cctx, &resume);
    if (rc < 0) {
        wf__free_mem(c);
        wf_event_release(start_event);
        return rc;
    }
    if (resume) { /* the saved child goes on: the start event is not needed */
        wf_event_release(start_event);
        start_event = NULL;
    }
    wf_completion *tok;
    rc = wf_ctx_pend(ctx, &tok);
    if (rc < 0) {
        wf__free_mem(c);
        wf_event_release(start_event);
        wf_ctx_free(cctx);
        return rc;
    }
    tok->child = c;
    wf__mutex_init(&c->lock);
    atomic_init(&c->refs, 3); /* the parent's list, the child's on_done, this call */
    atomic_fetch_add(&parent->refs, 1);
    c->parent = parent;
    c->token = tok;
    c->wf = wf_workflow_retain(child);
    c->on_result = params->on_result;
    c->user = params->user;
    c->user_free = params->user_free;
    c->forward = params->forward_stream != 0;
    c->parent_event_id = wf__hook_task_id(inv->task);

    /*
     * Starting a child is an effect of the invocation: a snapshot taken from
     * now on waits until the step has returned and its token holds the child
     * (so that the child is saved with it), rather than save it in progress.
     */
    wf__slot_dirty(parent);
    /* listed first, so that the parent's end finds it whatever happens next */
    wf__lock_take(&parent->collect_lock);
    wf__run_had(parent, WF__HAD_CHILDREN); /* before it looks at ended (see WF__HAD_RETRIES) */
    int ended = wf__run_ended(parent);
    if (!ended) {
        c->next = parent->children;
        c->prev = NULL;
        if (parent->children)
            parent->children->prev = c;
        parent->children = c;
        c->listed = 1;
    }
    wf__lock_give(&parent->collect_lock);
    if (ended) {
        wf_event_release(start_event);
        rc = wf__set_error(WF_ECANCELLED, "wf_ctx_run_child: the run has ended");
        goto undo;
    }

    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = params->timeout_ms;
    rp.stream_capacity = 0; /* nobody reads the child's own stream: forwarding is the hook's */
    rp.on_done = child_done;
    rp.on_done_user = c;
    /* the child's start routes on this thread: none of the parent's routing state is its */
    wf__inv *s_inv = wf__tls_inv;
    wf__group *s_group = wf__tls_group;
    uint32_t s_branch = wf__tls_branch;
    uint16_t s_lineage = wf__tls_lineage;
    wf__tls_inv = NULL;
    wf__tls_group = NULL;
    wf__tls_branch = 0;
    wf__tls_lineage = 0;
    tls_starting = c;
    wf_handler *h = NULL;
    char *why = NULL;
    rc = wf_run_start_ex(parent->ex, child, cctx, start_event, &rp, &h, &why);
    tls_starting = NULL;
    wf__tls_inv = s_inv;
    wf__tls_group = s_group;
    wf__tls_branch = s_branch;
    wf__tls_lineage = s_lineage;
    if (rc < 0) {
        if (why) {
            rc = wf__set_error(rc, "wf_ctx_run_child: child workflow '%s': %s", child->name, why);
            wf_free(why);
        }
        goto undo_listed;
    }
    wf_free(why);
    if (params->context)
        *params->context = cctx; /* the caller's reference now */
    else
        wf_ctx_free(cctx); /* the run holds its own */
    cctx = NULL;
    pthread_mutex_lock(&c->lock);
    c->h = h;
    int cancel = c->cancel;
    pthread_mutex_unlock(&c->lock);
    if (cancel) /* the parent ended while it started: its end could not reach it */
        child_cancel_run(h);
    child_release(c); /* this call's */
    return WF_PENDING;

undo_listed:
    if (!child_unlist(c)) /* the parent's end took it off its list and let go of it */
        goto undo_on_done;
undo:
    child_release(c); /* the list's reference */
undo_on_done:
    /* nothing started: the invocation no longer pends (it may try again) */
    wf_ctx_free(cctx);
    c->token = NULL;
    child_release(c); /* on_done's: it never runs */
    child_release(c); /* this call's */
    inv->token = NULL;
    wf__token_abandon(tok);
    (void)wf_completion_complete(tok, NULL); /* frees the void token */
    return rc;
}
