/*
 * cluster_node.c: a worker process of the cluster test and bench:
 *   cluster_node URL PREFIX [RUNNERS] [THREADS] [variant]
 * registers "cflow" (or its variant: another definition under the same
 * name) and "chain5" (tests/cluster_flow.h), works until SIGTERM or
 * SIGINT, prints "ready" once pulling and its counters as JSON at exit.
 */
#include <wf/wf.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster_flow.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: cluster_node URL PREFIX [RUNNERS] [THREADS] [variant]\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    wf_cluster_params p;
    wf_cluster_params_init(&p);
    p.prefix = argv[2];
    p.runners = argc > 3 ? (uint32_t)atoi(argv[3]) : 16;
    p.ack_wait_ms = 3000;
    p.lease_ms = 3000;
    const char *ev = getenv("WF_CLUSTER_STREAM_EVENTS");
    if (ev)
        p.stream_events = atoi(ev);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = argc > 4 ? (uint32_t)atoi(argv[4]) : 1;
    wf_executor *ex = NULL;
    wf_cluster *c = NULL;
    char *msg = NULL;
    int rc = wf_executor_new(&ex, &ep);
    if (rc == 0)
        rc = wf_cluster_open(&c, argv[1], &p, &msg);
    if (rc) {
        fprintf(stderr, "cluster_node: %s %s\n", wf_err_name(rc), msg ? msg : "");
        return 1;
    }
    wf_workflow *cf = cflow_new(argc > 5 && strcmp(argv[5], "variant") == 0);
    wf_workflow *ch = chain5_new();
    rc = wf_cluster_register(c, "cflow", cf);
    if (rc == 0)
        rc = wf_cluster_register(c, "chain5", ch);
    if (rc == 0)
        rc = wf_cluster_work(c, ex);
    if (rc) {
        fprintf(stderr, "cluster_node: %s\n", wf_err_name(rc));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    wf_cluster_stats st;
    wf_cluster_get_stats(c, &st);
    printf("{\"runs_done\":%llu,\"resumed\":%llu,\"restarted\":%llu,\"duplicates\":%llu,"
           "\"busy\":%llu,\"malformed\":%llu,\"mismatched\":%llu,\"unknown\":%llu,"
           "\"inputs\":%llu}\n",
           (unsigned long long)st.runs_done, (unsigned long long)st.resumed,
           (unsigned long long)st.restarted, (unsigned long long)st.duplicates,
           (unsigned long long)st.busy, (unsigned long long)st.malformed,
           (unsigned long long)st.mismatched, (unsigned long long)st.unknown,
           (unsigned long long)st.inputs);
    wf_cluster_free(c);
    wf_workflow_free(cf);
    wf_workflow_free(ch);
    wf_executor_free(ex);
    return 0;
}
