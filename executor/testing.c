/*
 * testing.c: wf_test_run, the reference's WorkflowTestRunner, on the public
 * API alone: start, read the stream to its end, wait, keep everything.
 */
#include "internal.h"

#include <wf/testing.h>

#include <string.h>

void wf_test_params_init(wf_test_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->timeout_ms = 10000;
    p->expose_internal = 1;
}

static int excluded(const wf_test_params *p, const wf_event *ev)
{
    const char *name = wf_event_type_name_of(ev);
    for (size_t i = 0; p->exclude && i < p->n_exclude; i++)
        if (p->exclude[i] && strcmp(p->exclude[i], name) == 0)
            return 1;
    return 0;
}

static int keep(wf_test_result *r, size_t *cap, wf_event *ev)
{
    if (r->n_events == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        wf_event **n = wf__realloc(r->events, c * sizeof *n);
        if (n == NULL)
            return WF_ENOMEM;
        r->events = n;
        *cap = c;
    }
    r->events[r->n_events++] = ev;
    return 0;
}

int wf_test_run(wf_executor *ex, wf_workflow *wf, wf_event *start, const wf_test_params *params,
                wf_test_result *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (ex == NULL || wf == NULL || start == NULL || out == NULL) {
        wf_event_release(start);
        return WF_EINVAL;
    }
    wf_test_params defaults;
    if (params == NULL) {
        wf_test_params_init(&defaults);
        params = &defaults;
    }
    wf_ctx *ctx = params->ctx;
    int rc = 0;
    if (ctx == NULL) {
        if ((rc = wf_ctx_new(&ctx, wf)) < 0) {
            wf_event_release(start);
            return rc;
        }
        out->owns_ctx = 1;
    }
    out->ctx = ctx;
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = params->timeout_ms;
    rp.stream_internal = params->expose_internal != 0;
    rp.stream_capacity = 1u << 20; /* a test keeps everything */
    wf_handler *h;
    char *msg = NULL;
    rc = wf_run_start_ex(ex, wf, ctx, start, &rp, &h, &msg);
    if (rc < 0) {
        out->error_code = rc;
        out->error_message = msg;
        return rc;
    }
    size_t cap = 0;
    for (;;) {
        wf_event *ev;
        int r = wf_handler_next_event(h, -1, &ev);
        if (r < 0)
            break; /* WF_ECLOSED: the terminal event was the last */
        if (excluded(params, ev) || keep(out, &cap, ev) < 0)
            wf_event_release(ev);
    }
    out->rc = wf_handler_wait(h, -1, &out->result);
    if (out->rc != 0) {
        int code = 0;
        const char *step = NULL, *m = NULL;
        if (wf_handler_error(h, &code, &step, &m) == 0) {
            out->error_code = code;
            out->error_step = step ? wf__strdup(step) : NULL;
            out->error_message = m ? wf__strdup(m) : NULL;
        }
    }
    wf_handler_free(h);
    return 0;
}

size_t wf_test_result_count(const wf_test_result *r, const char *type_name)
{
    size_t n = 0;
    for (size_t i = 0; r && type_name && i < r->n_events; i++)
        n += strcmp(wf_event_type_name_of(r->events[i]), type_name) == 0;
    return n;
}

const wf_event *wf_test_result_find(const wf_test_result *r, const char *type_name)
{
    for (size_t i = 0; r && type_name && i < r->n_events; i++)
        if (strcmp(wf_event_type_name_of(r->events[i]), type_name) == 0)
            return r->events[i];
    return NULL;
}

void wf_test_result_free(wf_test_result *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n_events; i++)
        wf_event_release(r->events[i]);
    wf__free_mem(r->events);
    wf_event_release(r->result);
    if (r->owns_ctx)
        wf_ctx_free(r->ctx);
    wf__free_mem(r->error_step);
    wf_free(r->error_message);
    memset(r, 0, sizeof *r);
}
