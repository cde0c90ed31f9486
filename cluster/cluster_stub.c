/*
 * cluster_stub.c: wf_cluster when wf is built without NATS (-Dnats=disabled,
 * or libnats not found): open says so, everything else has nothing to do.
 */
#include "internal.h"

#include <wf/cluster.h>

void wf_cluster_params_init(wf_cluster_params *p)
{
    if (p)
        memset(p, 0, sizeof *p);
}

int wf_cluster_open(wf_cluster **out, const char *url, const wf_cluster_params *params,
                    char **message)
{
    (void)url;
    (void)params;
    if (out)
        *out = NULL;
    if (message)
        *message = wf__strdup("wf was built without NATS (-Dnats=disabled or no libnats)");
    return WF_ENOTSUP;
}

void wf_cluster_free(wf_cluster *c)
{
    (void)c;
}

int wf_cluster_register(wf_cluster *c, const char *name, wf_workflow *wf)
{
    (void)c, (void)name, (void)wf;
    return WF_ENOTSUP;
}

int wf_cluster_work(wf_cluster *c, wf_executor *ex)
{
    (void)c, (void)ex;
    return WF_ENOTSUP;
}

int wf_cluster_submit(wf_cluster *c, const char *name, wf_event *start_event, const char *run_id,
                      wf_cluster_handler **handler)
{
    (void)c, (void)name, (void)run_id;
    wf_event_release(start_event);
    if (handler)
        *handler = NULL;
    return WF_ENOTSUP;
}

int wf_cluster_flush(wf_cluster *c, int64_t timeout_ms)
{
    (void)c, (void)timeout_ms;
    return WF_ENOTSUP;
}

int wf_cluster_handler_open(wf_cluster *c, const char *name, const char *run_id,
                            wf_cluster_handler **out)
{
    (void)c, (void)name, (void)run_id;
    if (out)
        *out = NULL;
    return WF_ENOTSUP;
}

int wf_cluster_handler_wait(wf_cluster_handler *h, int64_t timeout_ms, wf_event **result)
{
    (void)h, (void)timeout_ms;
    if (result)
        *result = NULL;
    return WF_ENOTSUP;
}

const char *wf_cluster_handler_message(const wf_cluster_handler *h)
{
    (void)h;
    return "";
}

int wf_cluster_handler_next_event(wf_cluster_handler *h, int64_t timeout_ms, wf_event **ev)
{
    (void)h, (void)timeout_ms;
    if (ev)
        *ev = NULL;
    return WF_ENOTSUP;
}

uint64_t wf_cluster_handler_cursor(const wf_cluster_handler *h)
{
    (void)h;
    return 0;
}

void wf_cluster_handler_seek(wf_cluster_handler *h, uint64_t cursor)
{
    (void)h, (void)cursor;
}

int wf_cluster_handler_send_event(wf_cluster_handler *h, wf_event *ev)
{
    (void)h;
    wf_event_release(ev);
    return WF_ENOTSUP;
}

int wf_cluster_handler_cancel(wf_cluster_handler *h)
{
    (void)h;
    return WF_ENOTSUP;
}

const char *wf_cluster_handler_run_id(const wf_cluster_handler *h)
{
    (void)h;
    return NULL;
}

void wf_cluster_handler_free(wf_cluster_handler *h)
{
    (void)h;
}

void wf_cluster_get_stats(const wf_cluster *c, wf_cluster_stats *st)
{
    (void)c;
    if (st)
        memset(st, 0, sizeof *st);
}

wf_store *wf_cluster_store(const wf_cluster *c)
{
    (void)c;
    return NULL;
}
