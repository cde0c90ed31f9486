/*
 * nats_stub.c: wf_store_open_nats when wf is built without NATS
 * (-Dnats=disabled, or libnats not found with -Dnats=auto).
 */
#include "internal.h"

#include <wf/store.h>

void wf_store_nats_params_init(wf_store_nats_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->prefix = "wf";
    p->replicas = 1;
    p->connect_attempts = 5;
    p->timeout_ms = 5000;
}

int wf_store_open_nats(wf_store **out, const char *url, const wf_store_params *params,
                       const wf_store_nats_params *nats, char **message)
{
    (void)url;
    (void)params;
    (void)nats;
    if (out)
        *out = NULL;
    if (message)
        *message = wf__strdup("wf was built without NATS (-Dnats=disabled or no libnats)");
    return WF_ENOTSUP;
}
