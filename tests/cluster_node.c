/*
 * cluster_node.c: a worker process of the cluster test and bench:
 *   cluster_node URL PREFIX [RUNNERS] [THREADS] [variant]
 * registers "cflow" (or its variant: another definition under the same
 * name), "chain5" and "gated" (tests/cluster_flow.h), works until SIGTERM
 * or SIGINT, prints "ready" once pulling and its counters as JSON at exit.
 * Environment: WF_CLUSTER_ACK_WAIT, WF_CLUSTER_LEASE, WF_CLUSTER_FAST_MS
 * (ms: the parameters; default 3000, 3000, 0), WF_CLUSTER_LOOKUP_RUNS, WF_CLUSTER_STATS_DIR (the
 * counters as JSON in DIR/PID.json, rewritten whenever they change, for a
 * test to wait on), and those read below.
 *   cluster_node URL PREFIX submit N [PLUGIN.so WORKFLOW]
 * is a submitter instead (examples/cluster.sh, the `wf worker` tests): N
 * runs of chain5 (or of the plugin's WORKFLOW, start event {"data":
 * "run-I"}), waits for every result and prints a JSON summary; right_results
 * counts the runs that ended with the right result (chain5: n + 5; a plugin's
 * workflow: a stop event).
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

static int submit(const char *url, const char *prefix, long n, const char *plugin,
                  const char *wname)
{
    wf_cluster_params p;
    wf_cluster_params_init(&p);
    p.prefix = prefix;
    wf_cluster *c = NULL;
    char *msg = NULL;
    int rc = wf_cluster_open(&c, url, &p, &msg);
    if (rc) {
        fprintf(stderr, "cluster_node: %s %s\n", wf_err_name(rc), msg ? msg : "");
        return 1;
    }
    wf_workflow *wf = NULL;
    wf_plugin *pl = NULL;
    const char *name = "chain5";
    (void)cflow_new;
    if (plugin) {
        char *m = NULL;
        wf_workflow *pw = NULL;
        if (wf_plugin_open(&pl, plugin, &m) != 0 || wf_plugin_workflow(pl, wname, &pw, &m) != 0) {
            fprintf(stderr, "cluster_node: %s\n", m ? m : "cannot load the plugin");
            return 1;
        }
        wf = wf_workflow_retain(pw);
        name = wname;
    } else {
        wf = chain5_new();
    }
    if (wf_cluster_register(c, name, wf) != 0)
        return 1;
    wf_cluster_handler **h = calloc((size_t)n, sizeof *h);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char id[48];
    for (long i = 0; i < n; i++) {
        wf_event *e = NULL;
        if (plugin) {
            char data[32];
            wf_value v;
            snprintf(data, sizeof data, "run-%ld", i);
            if (wf_value_string(&v, data) != 0 ||
                wf_event_new1(&e, wf_workflow_builtin(wf, WF_START_EVENT), "data", v) != 0)
                return 1;
        } else {
            wf_event_new1(&e, wf_workflow_builtin(wf, WF_START_EVENT), "n", wf_value_int(i));
        }
        snprintf(id, sizeof id, "%ld-%ld", (long)t0.tv_sec, i);
        if (wf_cluster_submit(c, name, e, id, &h[i]) != 0)
            return 1;
    }
    wf_cluster_flush(c, 60000);
    long ok = 0;
    for (long i = 0; i < n; i++) {
        wf_event *r = NULL;
        int64_t v = -1;
        if (wf_cluster_handler_wait(h[i], 60000, &r) == 0 &&
            (plugin ? r != NULL : wf_value_get_int(wf_event_result(r), &v) == 0 && v == i + 5))
            ok++;
        wf_event_release(r);
        wf_cluster_handler_free(h[i]);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("{\"submitted\":%ld,\"right_results\":%ld,\"seconds\":%.3f,\"runs_per_s\":%.0f}\n", n,
           ok, s, (double)n / s);
    free(h);
    wf_cluster_free(c);
    wf_workflow_free(wf);
    wf_plugin_free(pl);
    return ok == n ? 0 : 1;
}

static int stats_json(wf_cluster *c, char *buf, size_t cap)
{
    wf_cluster_stats st;
    wf_cluster_get_stats(c, &st);
    return snprintf(buf, cap,
                    "{\"runs_done\":%llu,\"resumed\":%llu,\"restarted\":%llu,\"duplicates\":%llu,"
                    "\"busy\":%llu,\"malformed\":%llu,\"mismatched\":%llu,\"unknown\":%llu,"
                    "\"inputs\":%llu,\"parked\":%llu,\"leases_lost\":%llu,\"woken\":%llu}\n",
                    (unsigned long long)st.runs_done, (unsigned long long)st.resumed,
                    (unsigned long long)st.restarted, (unsigned long long)st.duplicates,
                    (unsigned long long)st.busy, (unsigned long long)st.malformed,
                    (unsigned long long)st.mismatched, (unsigned long long)st.unknown,
                    (unsigned long long)st.inputs, (unsigned long long)st.parked,
                    (unsigned long long)st.leases_lost, (unsigned long long)st.woken);
}

/* Rewrites DIR/PID.json when the counters changed (a rename: a reader sees a whole file). */
static void stats_file(wf_cluster *c, const char *dir, char *last, size_t cap)
{
    char buf[512];
    stats_json(c, buf, sizeof buf);
    if (strcmp(buf, last) == 0)
        return;
    char tmp[600], path[600];
    snprintf(tmp, sizeof tmp, "%s/%ld.tmp", dir, (long)getpid());
    snprintf(path, sizeof path, "%s/%ld.json", dir, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    fputs(buf, f);
    if (fclose(f) == 0 && rename(tmp, path) == 0)
        snprintf(last, cap, "%s", buf);
}

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
    if (argc > 4 && strcmp(argv[3], "submit") == 0)
        return submit(argv[1], argv[2], atol(argv[4]), argc > 6 ? argv[5] : NULL,
                      argc > 6 ? argv[6] : NULL);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    wf_cluster_params p;
    wf_cluster_params_init(&p);
    p.prefix = argv[2];
    p.runners = argc > 3 ? (uint32_t)atoi(argv[3]) : 16;
    p.ack_wait_ms = 3000;
    p.lease_ms = 3000;
    const char *aw = getenv("WF_CLUSTER_ACK_WAIT");
    if (aw)
        p.ack_wait_ms = (uint32_t)atoi(aw);
    const char *le = getenv("WF_CLUSTER_LEASE");
    if (le)
        p.lease_ms = (uint32_t)atoi(le);
    const char *lr = getenv("WF_CLUSTER_LOOKUP_RUNS");
    if (lr)
        p.lookup_runs = atoi(lr);
    const char *fm = getenv("WF_CLUSTER_FAST_MS");
    if (fm)
        p.fast_ms = (uint32_t)atoi(fm);
    const char *ev = getenv("WF_CLUSTER_STREAM_EVENTS");
    if (ev)
        p.stream_events = atoi(ev);
    const char *ix = getenv("WF_CLUSTER_INDEX_RUNS");
    if (ix)
        p.index_runs = atoi(ix);
    const char *pu = getenv("WF_CLUSTER_PULLERS");
    if (pu)
        p.pullers = (uint32_t)atoi(pu);
    const char *fb = getenv("WF_CLUSTER_FETCH_BATCH");
    if (fb)
        p.fetch_batch = (uint32_t)atoi(fb);
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
    wf_workflow *gt = gated_new();
    rc = wf_cluster_register(c, "cflow", cf);
    if (rc == 0)
        rc = wf_cluster_register(c, "chain5", ch);
    if (rc == 0)
        rc = wf_cluster_register(c, "gated", gt);
    if (rc == 0)
        rc = wf_cluster_work(c, ex);
    if (rc) {
        fprintf(stderr, "cluster_node: %s\n", wf_err_name(rc));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    const char *sdir = getenv("WF_CLUSTER_STATS_DIR");
    char last[512] = "";
    while (!stop) {
        if (sdir)
            stats_file(c, sdir, last, sizeof last);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    char buf[512];
    stats_json(c, buf, sizeof buf);
    fputs(buf, stdout);
    wf_cluster_free(c);
    wf_workflow_free(cf);
    wf_workflow_free(ch);
    wf_workflow_free(gt);
    wf_executor_free(ex);
    return 0;
}
