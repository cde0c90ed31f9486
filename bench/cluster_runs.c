/*
 * cluster_runs.c: runs per second of the 5-step "chain5" workflow
 * (tests/cluster_flow.h) through NATS JetStream with 1 and 2 worker
 * processes (tests/cluster_node, one runner pool each, event streaming off),
 * against the same runs in-process; p50/p99 submit-to-result latency.
 * Starts its own nats-server (loopback, free port, temporary file storage).
 *   bench_cluster_runs [--n 2000] [--workers 2] [--runners 32]
 * Prints one JSON line per configuration (impl "wf" in-process,
 * "wf-cluster" through NATS). Latency: each run's result is observed by a
 * single submitter thread polling the handlers in submission order, so a
 * run's latency includes waiting behind earlier ones (an upper bound).
 */
#include <wf/wf.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/cluster_flow.h"
#include "../tests/nats_server.h"
#include "common.h"

/* CPU seconds (user + system) a process has used so far, from /proc (0 when unknown). */
static double cpu_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    unsigned long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double in_process(long n, long threads)
{
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    wf_executor *ex = NULL;
    wf_workflow *wf = chain5_new();
    if (wf == NULL || wf_executor_new(&ex, &ep) < 0)
        return 0;
    wf_handler **hs = calloc((size_t)n, sizeof *hs);
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        wf_event *e = NULL;
        wf_event_new1(&e, wf_workflow_builtin(wf, WF_START_EVENT), "n", wf_value_int(i));
        if (wf_run_start(ex, wf, NULL, e, &hs[i]) < 0)
            return 0;
    }
    long ok = 0;
    for (long i = 0; i < n; i++) {
        wf_event *r = NULL;
        int64_t v = 0;
        if (wf_handler_wait(hs[i], -1, &r) == 0 && wf_value_get_int(wf_event_result(r), &v) == 0 &&
            v == i + 5)
            ok++;
        wf_event_release(r);
        wf_handler_free(hs[i]);
    }
    double dt = bench_now() - t0;
    free(hs);
    bench_report("cluster_runs", "wf", threads, n, dt, n, ok == n, ",\"workers\":0");
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return (double)n / dt;
}

static const char *lookup = "1"; /* --lookup: wf_cluster_params.lookup_runs of the workers */

static pid_t spawn(const char *url, const char *prefix, const char *runners)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        setenv("WF_CLUSTER_STREAM_EVENTS", "0", 1);
        setenv("WF_CLUSTER_LOOKUP_RUNS", lookup, 1);
        execl(CLUSTER_NODE, CLUSTER_NODE, url, prefix, runners, "1", "base", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[16] = {0};
    ssize_t r = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    return r > 0 && strncmp(buf, "ready", 5) == 0 ? pid : -1;
}

static void through_nats(const nserver *srv, long n, int workers, const char *runners,
                         double local)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "b%d", workers);
    pid_t pids[8];
    for (int i = 0; i < workers; i++)
        if ((pids[i] = spawn(srv->url, prefix, runners)) < 0) {
            fprintf(stderr, "worker did not start\n");
            exit(1);
        }
    wf_cluster_params p;
    wf_cluster_params_init(&p);
    p.prefix = prefix;
    wf_cluster *c = NULL;
    wf_workflow *wf = chain5_new();
    if (wf_cluster_open(&c, srv->url, &p, NULL) != 0 || wf_cluster_register(c, "chain5", wf) != 0)
        exit(1);
    wf_cluster_handler **hs = calloc((size_t)n, sizeof *hs);
    double *t_sub = calloc((size_t)n, sizeof *t_sub), *lat = calloc((size_t)n, sizeof *lat);
    double cpu_srv0 = cpu_of(srv->pid), cpu_w0 = 0, cpu_me0 = cpu_of(getpid());
    for (int i = 0; i < workers; i++)
        cpu_w0 += cpu_of(pids[i]);
    double t0 = bench_now();
    char id[32];
    for (long i = 0; i < n; i++) {
        wf_event *e = NULL;
        wf_event_new1(&e, wf_workflow_builtin(wf, WF_START_EVENT), "n", wf_value_int(i));
        snprintf(id, sizeof id, "r%ld", i);
        t_sub[i] = bench_now();
        if (wf_cluster_submit(c, "chain5", e, id, &hs[i]) != 0)
            exit(1);
    }
    double t_submitted = bench_now();
    wf_cluster_flush(c, 60000);
    double t_flushed = bench_now();
    long ok = 0;
    for (long i = 0; i < n; i++) {
        wf_event *r = NULL;
        int64_t v = 0;
        if (wf_cluster_handler_wait(hs[i], 120000, &r) == 0 &&
            wf_value_get_int(wf_event_result(r), &v) == 0 && v == i + 5)
            ok++;
        lat[i] = bench_now() - t_sub[i];
        wf_event_release(r);
        wf_cluster_handler_free(hs[i]);
    }
    double dt = bench_now() - t0;
    double cpu_w = -cpu_w0;
    for (int i = 0; i < workers; i++)
        cpu_w += cpu_of(pids[i]);
    double cpu_srv = cpu_of(srv->pid) - cpu_srv0, cpu_me = cpu_of(getpid()) - cpu_me0;
    qsort(lat, (size_t)n, sizeof *lat, cmp_d);
    char extra[640];
    /* where the time goes: CPU microseconds per run of the server, the workers (wf + the
     * NATS client) and this submitter, over the batch's wall time */
    snprintf(extra, sizeof extra,
             ",\"workers\":%d,\"runners\":%s,\"lookup_runs\":%s,\"p50_ms\":%.1f,\"p99_ms\":%.1f,"
             "\"submit_s\":%.3f,\"flush_s\":%.3f,\"ratio_to_in_process\":%.4f,"
             "\"cpu_us_per_run\":{\"nats_server\":%.1f,\"workers\":%.1f,\"submitter\":%.1f},"
             "\"cpu_busy\":%.2f",
             workers, runners, lookup, lat[n / 2] * 1e3, lat[(n * 99) / 100] * 1e3,
             t_submitted - t0, t_flushed - t_submitted, local > 0 ? ((double)n / dt) / local : 0,
             cpu_srv * 1e6 / (double)n, cpu_w * 1e6 / (double)n, cpu_me * 1e6 / (double)n,
             (cpu_srv + cpu_w + cpu_me) / dt);
    bench_report("cluster_runs", "wf-cluster", workers, n, dt, n, ok == n, extra);
    free(hs);
    free(t_sub);
    free(lat);
    wf_cluster_free(c);
    wf_workflow_free(wf);
    for (int i = 0; i < workers; i++) {
        kill(pids[i], SIGTERM);
        waitpid(pids[i], NULL, 0);
    }
}

int main(int argc, char **argv)
{
    (void)cflow_new; /* the test workflow; this bench runs chain5 */
    long n = bench_arg(argc, argv, "--n", 2000);
    long workers = bench_arg(argc, argv, "--workers", 2);
    const char *runners = bench_arg_str(argc, argv, "--runners", "32");
    lookup = bench_arg_str(argc, argv, "--lookup", "1");
    if (n <= 0 || workers < 1 || workers > 8)
        return 2;
    nserver srv;
    if (nserver_start(&srv) != 0) {
        fprintf(stderr, "nats-server is not available\n");
        return 77;
    }
    double local = in_process(n, 2);
    for (int w = 1; w <= workers; w++)
        through_nats(&srv, n, w, runners, local);
    nserver_destroy(&srv);
    return 0;
}
