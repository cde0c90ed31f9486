/*
 * ctx_calls.c: the context calls a step makes about its run: send an event,
 * write to the stream, set its error message, cancelled?, run id, step
 * name, attempt, last error. Inside an invocation they find it through
 * wf__tls_inv (no lock: the invocation is the calling thread's); from
 * outside one they take a reference on the context's current run under
 * ctx->run_lock.
 */
#include "engine.h"

#include <wf/observe.h>

#include <string.h>

/* The context's current run with a reference (run_release), or NULL. */
wf__run *wf__ctx_run_ref(wf_ctx *ctx)
{
    wf__lock_take(&ctx->run_lock);
    wf__run *run = atomic_load(&ctx->run);
    if (run)
        atomic_fetch_add(&run->refs, 1);
    wf__lock_give(&ctx->run_lock);
    return run;
}

int wf_ctx_send_event(wf_ctx *ctx, wf_event *ev, const char *target)
{
    if (ctx == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL) {
        wf__run *run = wf__ctx_run_ref(ctx);
        if (run == NULL) {
            wf_event_release(ev);
            return wf__set_error(WF_ESTATE, "wf_ctx_send_event: the context has no run in flight");
        }
        int rc = wf__send_outside(run, ev, target);
        wf__run_release(run);
        return rc;
    }
    if (ev->type->reg != ctx->wf->reg) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    int32_t idx = -1; /* routed by type, no schema to check: the usual send, without a call */
    int rc = target == NULL && !wf__type_has_schema(ev->type)
                 ? 0
                 : wf__resolve_target(ctx->wf, ev, target, &idx);
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    if (wf__obs_on(inv->run->ex, WF_OBS_EVENT_EMIT)) { /* sent now, whenever it is routed */
        wf__obs_rec r = {0};
        wf__hook_rec(inv->run, WF_OBS_EVENT_EMIT, inv->task->step, ev->type, 0, &r);
        wf__obs_write(inv->run->ex, &r);
    }
    if (inv->nsent == inv->capsent) {
        uint32_t cap = inv->capsent * 2;
        wf_event **s;
        int32_t *tg;
        if (inv->sent == inv->inl_sent) {
            s = wf__malloc(cap * sizeof *s);
            tg = wf__malloc(cap * sizeof *tg);
            if (s == NULL || tg == NULL) {
                wf__free_mem(s);
                wf__free_mem(tg);
                wf_event_release(ev);
                return WF_ENOMEM;
            }
            memcpy(s, inv->sent, inv->nsent * sizeof *s);
            memcpy(tg, inv->targets, inv->nsent * sizeof *tg);
        } else {
            s = wf__realloc(inv->sent, cap * sizeof *s);
            if (s == NULL) {
                wf_event_release(ev);
                return WF_ENOMEM;
            }
            inv->sent = s;
            tg = wf__realloc(inv->targets, cap * sizeof *tg);
            if (tg == NULL) {
                wf_event_release(ev);
                return WF_ENOMEM;
            }
        }
        inv->sent = s;
        inv->targets = tg;
        inv->capsent = cap;
    }
    wf_event_freeze(ev);
    inv->sent[inv->nsent] = ev;
    inv->targets[inv->nsent] = idx;
    inv->nsent++;
    if (WF__UNLIKELY(inv->nsent >= WF__SEND_BATCH) && !inv->step->needs_clock)
        wf__inv_flush_sent(inv);
    return 0;
}

int wf_ctx_write_event_to_stream(wf_ctx *ctx, wf_event *ev)
{
    if (ctx == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    const wf_event_type *type = ev->type;
    wf__inv *inv = wf__inv_of(ctx);
    if (inv) {
        int full = wf__stream_push(inv->run, ev);
        if (wf__obs_on(inv->run->ex, WF_OBS_STREAM_WRITE))
            wf__hook_event(inv->run, WF_OBS_STREAM_WRITE, inv->task->step, type, full != 0);
        return full < 0 ? full : 0;
    }
    wf__run *run = wf__ctx_run_ref(ctx);
    if (run == NULL) {
        wf_event_release(ev);
        return wf__set_error(WF_ESTATE,
                             "wf_ctx_write_event_to_stream: the context has no run in flight");
    }
    int full = wf__stream_push(run, ev);
    if (wf__obs_on(run->ex, WF_OBS_STREAM_WRITE))
        wf__hook_event(run, WF_OBS_STREAM_WRITE, WF__OBS_NO_STEP, type, full != 0);
    wf__run_release(run);
    return full < 0 ? full : 0;
}

int wf_ctx_running_steps(wf_ctx *ctx, wf_value *out)
{
    if (out)
        *out = wf_value_nil();
    if (ctx == NULL || out == NULL)
        return WF_EINVAL;
    wf__inv *inv = wf__inv_of(ctx);
    wf__run *run = inv ? inv->run : wf__ctx_run_ref(ctx);
    if (run == NULL)
        return wf__set_error(WF_ESTATE, "wf_ctx_running_steps: the context has no run in flight");
    wf_value names = wf_value_nil();
    int rc = wf_value_array_new(&names, 4);
    for (uint32_t i = 0; rc == 0 && i < run->nsteps; i++) {
        wf_value n;
        if (wf__step_count(run, i) == 0)
            continue;
        if ((rc = wf_value_string(&n, run->wf->steps[i]->name)) == 0)
            rc = wf_value_array_push(&names, n);
    }
    if (inv == NULL)
        wf__run_release(run);
    if (rc < 0) {
        wf_value_release(names);
        return rc;
    }
    *out = names;
    return 0;
}

int wf_ctx_set_error(wf_ctx *ctx, const char *message)
{
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL || message == NULL)
        return inv ? WF_EINVAL : WF_ESTATE;
    char *m = wf__strdup(message);
    if (m == NULL)
        return WF_ENOMEM;
    wf__free_mem(inv->errmsg);
    inv->errmsg = m;
    return 0;
}

int wf_ctx_is_cancelled(const wf_ctx *ctx)
{
    if (ctx == NULL)
        return 1;
    wf__inv *inv = wf__inv_of(ctx);
    if (inv)
        return wf__run_ended(inv->run) || wf__fence_due(inv->run);
    return atomic_load(&((wf_ctx *)ctx)->run) == NULL;
}

uint64_t wf_ctx_run_id(const wf_ctx *ctx)
{
    if (ctx == NULL)
        return 0;
    wf__inv *inv = wf__inv_of(ctx);
    if (inv)
        return inv->run->id;
    wf__run *run = wf__ctx_run_ref((wf_ctx *)ctx);
    if (run == NULL)
        return 0;
    uint64_t id = run->id;
    wf__run_release(run);
    return id;
}

const char *wf_ctx_step_name(const wf_ctx *ctx)
{
    wf__inv *inv = wf__inv_of(ctx);
    return inv ? inv->step->name : NULL;
}

uint32_t wf_ctx_attempt(const wf_ctx *ctx)
{
    wf__inv *inv = wf__inv_of(ctx);
    return inv ? inv->task->attempt : 0;
}

int wf_ctx_last_error(const wf_ctx *ctx, int *code, const char **message)
{
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL)
        return wf__set_error(WF_ESTATE,
                             "wf_ctx_set_error: not called from a step of this context's run");
    const wf__retry_info *ri = inv->task->arg;
    if (ri == NULL || inv->task->attempt < 2)
        return WF_ENOTFOUND;
    if (code)
        *code = ri->last_error;
    if (message)
        *message = ri->last_msg;
    return 0;
}

/* ----------------------------------------------------------- a step's spans */

/* The invocation for a span call, or NULL with the error set. */
static wf__inv *span_inv(wf_ctx *ctx, const char *what, uint32_t span, int check_span)
{
    wf__inv *inv = ctx ? wf__inv_of(ctx) : NULL;
    if (ctx == NULL) {
        wf__set_error(WF_EINVAL, "%s: ctx is NULL", what);
        return NULL;
    }
    if (inv == NULL) {
        wf__set_error(WF_ESTATE, "%s: not called from a step of this context's run", what);
        return NULL;
    }
    if (check_span && (span == 0 || span > inv->span_next)) {
        wf__set_error(WF_EINVAL, "%s: span %u was not opened by this invocation", what, span);
        return NULL;
    }
    return inv;
}

/* A SPAN_* record of the invocation (same run, step, event_id and attempt as its STEP_START). */
static void span_rec(wf__inv *inv, unsigned kind, wf__obs_rec *r)
{
    wf__hook_rec(inv->run, kind, inv->task->step, inv->task->ev->type, 0, r);
    r->attempt = inv->task->attempt;
    r->event_id = wf__hook_task_id(inv->task);
}

int wf_ctx_span_begin(wf_ctx *ctx, const char *name, uint32_t *span)
{
    if (span)
        *span = 0;
    wf__inv *inv = span_inv(ctx, "wf_ctx_span_begin", 0, 0);
    if (inv == NULL)
        return ctx ? WF_ESTATE : WF_EINVAL;
    if (name == NULL || span == NULL)
        return wf__set_error(WF_EINVAL, "wf_ctx_span_begin: name and span are required");
    uint32_t id = ++inv->span_next;
    uint32_t parent = inv->span_depth ? inv->span_open[inv->span_depth - 1] : 0;
    if (inv->span_depth < sizeof inv->span_open / sizeof inv->span_open[0])
        inv->span_open[inv->span_depth++] = id;
    *span = id;
    if (wf__obs_on(inv->run->ex, WF_OBS_SPAN_BEGIN)) {
        wf__obs_rec r = {0};
        span_rec(inv, WF_OBS_SPAN_BEGIN, &r);
        r.dv = (int64_t)((uint64_t)id << 32 | parent);
        if ((r.message = wf__hook_strdup(name)) == NULL)
            return WF_ENOMEM;
        wf__obs_write(inv->run->ex, &r);
    }
    return 0;
}

static int span_attr(wf_ctx *ctx, const char *what, uint32_t span, const char *key, const char *str,
                     int64_t value)
{
    wf__inv *inv = span_inv(ctx, what, span, 1);
    if (inv == NULL)
        return ctx && wf__inv_of(ctx) == NULL ? WF_ESTATE : WF_EINVAL;
    if (key == NULL)
        return wf__set_error(WF_EINVAL, "%s: key is NULL", what);
    if (!wf__obs_on(inv->run->ex, WF_OBS_SPAN_ATTR))
        return 0;
    wf__obs_rec r = {0};
    span_rec(inv, WF_OBS_SPAN_ATTR, &r);
    r.error = (int32_t)span;
    size_t kl = strlen(key) + 1, vl = str ? strlen(str) + 1 : 0;
    if ((r.message = wf__malloc(kl + vl)) == NULL)
        return WF_ENOMEM;
    memcpy(r.message, key, kl);
    if (str) {
        memcpy(r.message + kl, str, vl);
        r.flags = WF__OBS_F_STR;
    } else {
        r.dv = value;
    }
    wf__obs_write(inv->run->ex, &r);
    return 0;
}

int wf_ctx_span_attr_str(wf_ctx *ctx, uint32_t span, const char *key, const char *value)
{
    if (value == NULL)
        return wf__set_error(WF_EINVAL, "wf_ctx_span_attr_str: value is NULL");
    return span_attr(ctx, "wf_ctx_span_attr_str", span, key, value, 0);
}

int wf_ctx_span_attr_int(wf_ctx *ctx, uint32_t span, const char *key, int64_t value)
{
    return span_attr(ctx, "wf_ctx_span_attr_int", span, key, NULL, value);
}

int wf_ctx_span_end(wf_ctx *ctx, uint32_t span, int32_t error, const char *message)
{
    wf__inv *inv = span_inv(ctx, "wf_ctx_span_end", span, 1);
    if (inv == NULL)
        return ctx && wf__inv_of(ctx) == NULL ? WF_ESTATE : WF_EINVAL;
    /* off the open stack, wherever it is (ending an outer span first is allowed) */
    for (uint32_t i = inv->span_depth; i-- > 0;) {
        if (inv->span_open[i] != span)
            continue;
        memmove(&inv->span_open[i], &inv->span_open[i + 1],
                (inv->span_depth - i - 1) * sizeof inv->span_open[0]);
        inv->span_depth--;
        break;
    }
    if (!wf__obs_on(inv->run->ex, WF_OBS_SPAN_END))
        return 0;
    wf__obs_rec r = {0};
    span_rec(inv, WF_OBS_SPAN_END, &r);
    r.dv = span;
    r.error = error > 0 ? WF_EINVAL : error;
    r.message = message ? wf__hook_strdup(message) : NULL;
    wf__obs_write(inv->run->ex, &r);
    return 0;
}
