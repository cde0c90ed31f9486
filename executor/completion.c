/*
 * completion.c: async steps. wf_ctx_pend gives a step a completion token;
 * the step returns WF_PENDING and its invocation goes on elsewhere (an I/O
 * thread) without holding a worker: the token owns the task and its slot
 * until wf_completion_complete or _fail routes the result as invoke would
 * have. States: see enum TOK_* in engine.h.
 *
 * Shared fields: a token's state, sent events and result under its own
 * lock; run->pending (the armed tokens, a list) under run->collect_lock
 * (taken before the token's lock). A token holds a reference (refs) on its
 * run until it is finished.
 */
#include "engine.h"

#include <string.h>

static void token_free(wf_completion *c)
{
    for (uint32_t i = 0; i < c->nsent; i++)
        wf_event_release(c->sent[i]);
    wf__free_mem(c->sent);
    wf__free_mem(c->targets);
    wf_event_release(c->out);
    wf__free_mem(c->errmsg);
    pthread_mutex_destroy(&c->lock);
    wf__run *run = c->run;
    wf__free_mem(c);
    wf__run_release(run);
}

static void token_unlist(wf__run *run, wf_completion *c)
{
    WF__DLIST_UNLINK(run->pending, c);
}

/*
 * Routes a completion's result for its task, as invoke would have, then
 * releases the task and its slot. Called once, by whoever finishes last.
 */
static void token_finish(wf_completion *c)
{
    wf__run *run = c->run;
    wf__task *t = c->task;
    uint32_t s = t->step, shard = t->shard;
    if (!wf__run_ended(run) &&
        !wf__run_fenced(run, run->wf->steps[s]->name, "what the step completed was dropped")) {
        uint16_t saved = wf__tls_lineage;
        wf__group *saved_g = wf__tls_group;
        uint32_t saved_b = wf__tls_branch;
        wf__tls_lineage = t->flags;
        /* its emissions belong to the task's fan-out branch, as in invoke */
        wf__tls_group = t->u.group;
        wf__tls_branch = t->pad;
        if (c->rc == 0) {
            if (c->out)
                wf__emit(run, c->out, -1);
            c->out = NULL;
            if (c->nsent)
                wf__emit_sent(run, c->sent, c->targets, c->nsent);
            c->nsent = 0;
        } else if (!wf__maybe_retry(run, t, c->rc, c->errmsg, c->started)) {
            wf__step_failed(run, t, c->rc, c->errmsg, c->started);
        }
        wf__tls_lineage = saved;
        wf__tls_group = saved_g;
        wf__tls_branch = saved_b;
    }
    c->task = NULL;
    wf__drop_task(t);
    wf__finish_slot(run, s, shard);
}

/* invoke saw WF_PENDING: 1 if the token now owns task and slot, 0 if it completed early. */
int wf__token_arm(wf_completion *c)
{
    wf__run *run = c->run;
    wf__lock_take(&run->collect_lock);
    wf__run_had(run, WF__HAD_TOKENS);
    pthread_mutex_lock(&c->lock);
    int early = c->state == TOK_EARLY;
    if (!early) {
        c->state = TOK_ARMED;
        c->next = run->pending;
        c->prev = NULL;
        if (run->pending)
            run->pending->prev = c;
        run->pending = c;
        c->listed = 1;
    }
    pthread_mutex_unlock(&c->lock);
    wf__lock_give(&run->collect_lock);
    if (!early)
        return 1;
    /* routed here; the caller then drops nothing: token_finish took the task */
    token_finish(c);
    token_free(c);
    return 1;
}

/* The step pended but returned something else: the token is void. */
void wf__token_abandon(wf_completion *c)
{
    pthread_mutex_lock(&c->lock);
    int early = c->state == TOK_EARLY;
    c->state = TOK_DETACHED;
    c->task = NULL; /* invoke's caller drops it */
    pthread_mutex_unlock(&c->lock);
    if (early)
        token_free(c); /* its completer is done with it */
}

/* The run ended: pending invocations give their slots back; tokens stay for their completers. */
void wf__tokens_detach(wf__run *run)
{
    for (;;) {
        wf__lock_take(&run->collect_lock);
        wf_completion *c = run->pending;
        wf__task *t = NULL;
        if (c) {
            token_unlist(run, c);
            pthread_mutex_lock(&c->lock);
            if (c->state == TOK_ARMED) {
                c->state = TOK_DETACHED;
                t = c->task;
                c->task = NULL;
            }
            pthread_mutex_unlock(&c->lock);
        }
        wf__lock_give(&run->collect_lock);
        if (c == NULL)
            return;
        if (t) {
            uint32_t s = t->step, shard = t->shard;
            wf__drop_task(t);
            wf__finish_slot(run, s, shard); /* never quiesces: the caller holds the running unit */
        }
    }
}

int wf_ctx_pend(wf_ctx *ctx, wf_completion **out)
{
    if (out)
        *out = NULL;
    if (ctx == NULL || out == NULL)
        return WF_EINVAL;
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL)
        return wf__set_error(WF_ESTATE,
                             "wf_ctx_pend: not called from a step of this context's run");
    if (inv->token)
        return WF_EEXIST;
    wf_completion *c = wf__calloc(1, sizeof *c);
    if (c == NULL)
        return WF_ENOMEM;
    wf__mutex_init(&c->lock);
    c->state = TOK_CREATED;
    c->run = inv->run;
    atomic_fetch_add(&inv->run->refs, 1);
    c->task = inv->task;
    inv->token = c;
    *out = c;
    return 0;
}

int wf_completion_send(wf_completion *c, wf_event *ev, const char *target)
{
    if (c == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    wf__run *run = c->run;
    int32_t idx;
    int rc =
        ev->type->reg != run->wf->reg ? WF_EINVAL : wf__resolve_target(run->wf, ev, target, &idx);
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    wf_event_freeze(ev);
    pthread_mutex_lock(&c->lock);
    if (c->state == TOK_DETACHED) {
        pthread_mutex_unlock(&c->lock);
        wf_event_release(ev);
        return WF_ECANCELLED;
    }
    if (c->nsent == c->capsent) {
        uint32_t cap = c->capsent ? c->capsent * 2 : 8;
        wf_event **e = wf__realloc(c->sent, cap * sizeof *e);
        if (e)
            c->sent = e;
        int32_t *t = e ? wf__realloc(c->targets, cap * sizeof *t) : NULL;
        if (t)
            c->targets = t;
        if (e == NULL || t == NULL) {
            pthread_mutex_unlock(&c->lock);
            wf_event_release(ev);
            return WF_ENOMEM;
        }
        c->capsent = cap;
    }
    c->sent[c->nsent] = ev;
    c->targets[c->nsent] = idx;
    c->nsent++;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* Completes with rc (0: ev is the returned event); consumes the token. */
static int token_complete(wf_completion *c, wf_event *ev, int rc, const char *msg)
{
    pthread_mutex_lock(&c->lock);
    int state = c->state;
    if (state == TOK_CREATED) {
        /* before the step even returned: keep the result for invoke */
        c->out = ev;
        c->rc = rc;
        c->errmsg = msg ? wf__strdup(msg) : NULL;
        c->state = TOK_EARLY;
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    pthread_mutex_unlock(&c->lock);
    if (state == TOK_DETACHED) {
        wf_event_release(ev);
        token_free(c);
        return WF_ECANCELLED;
    }
    /* ARMED: take it off the run's list, unless the run's end is detaching it right now */
    wf__run *run = c->run;
    int o = wf__outside_enter(run);
    wf__lock_take(&run->collect_lock);
    pthread_mutex_lock(&c->lock);
    int mine = c->state == TOK_ARMED;
    if (mine) {
        c->state = TOK_EARLY; /* finished: nobody else touches task or slot */
        token_unlist(run, c);
    }
    pthread_mutex_unlock(&c->lock);
    wf__lock_give(&run->collect_lock);
    if (!mine) {
        wf__outside_exit(run, o);
        wf_event_release(ev);
        token_free(c);
        return WF_ECANCELLED;
    }
    c->out = ev;
    c->rc = rc;
    c->errmsg = msg ? wf__strdup(msg) : NULL;
    int ended = wf__run_ended(run);
    token_finish(c);
    wf__outside_exit(run, o);
    token_free(c);
    return ended ? WF_ECANCELLED : 0;
}

int wf_completion_complete(wf_completion *c, wf_event *ev)
{
    if (c == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    if (ev)
        wf_event_freeze(ev);
    return token_complete(c, ev, 0, NULL);
}

int wf_completion_fail(wf_completion *c, int code, const char *message)
{
    if (c == NULL)
        return WF_EINVAL;
    if (code >= 0)
        code = WF_EINVAL;
    return token_complete(c, NULL, code, message);
}

int wf_completion_cancelled(const wf_completion *c)
{
    return c == NULL || wf__run_ended(c->run);
}
