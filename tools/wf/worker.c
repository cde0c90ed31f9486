/*
 * wf worker PLUGIN.so... --nats URL: a worker process of a wf cluster on
 * NATS JetStream (docs/CLUSTER.md, docs/CLI.md). Registers every workflow
 * of the plugins by its name and runs the submissions of those workflows
 * until SIGINT or SIGTERM; then drains: stops pulling, hands the runs in
 * flight back (released in the store, their submissions back to the
 * queue) and prints its counters as one JSON line.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <wf/cluster.h>

#include "cli.h"

static void usage(FILE *to)
{
    fprintf(
        to,
        "usage: wf worker PLUGIN.so... --nats URL [options]\n"
        "runs the plugins' workflows for a wf cluster on NATS JetStream (docs/CLUSTER.md):\n"
        "submissions of any registered workflow, pulled from the cluster's work queue\n"
        "      --nats URL           the NATS server(s): nats://HOST:PORT, several separated\n"
        "                           by commas (required)\n"
        "%s"
        "      --runners N          runs at once that wait or take long (default 16)\n"
        "      --prefix P           the cluster's streams, bucket and subjects: stream\n"
        "                           P_work, P_io, Ps_data, bucket Ps_runs (default wfc)\n"
        "      --creds FILE         a NATS credentials file (JWT + nkey)\n"
        "      --replicas N         replicas of the streams and the bucket (default 1)\n"
        "      --ack-wait MS        redelivery of a silent worker's runs (default 10000)\n"
        "      --lease MS           a dead worker's runs stay locked this long (default 10000)\n"
        "      --pullers N          threads pulling batches of short runs (default 2)\n"
        "      --fetch-batch N      submissions a puller fetches at once (default 256)\n"
        "      --fast-ms MS         how long a run may stay on the fast path before it\n"
        "                           gets a record of its own (default: a third of the\n"
        "                           smaller of --ack-wait and --lease)\n"
        "      --no-lookup          do not look run ids up before they start (for ids\n"
        "                           never reused: a reused id may run its steps again)\n"
        "      --no-index           runs ended on the fast path are not listed in the\n"
        "                           store (wf_store_list; one stored message less a run)\n"
        "      --no-stream-events   do not journal streamed events (submitters see results\n"
        "                           only)\n"
        "The first line on standard output is \"working\" once it pulls; on Ctrl-C or\n"
        "SIGTERM it drains (runs in flight go back to the cluster) and prints its counters\n"
        "as JSON. Exit status: 0 stopped, 1 NATS unreachable, 2 usage or a plugin that\n"
        "cannot be loaded.\n",
        CLI_HELP_THREADS("          "));
}

typedef struct worker_opts {
    wf_cluster_params *p;
    const char *url;
} worker_opts;

static int worker_opt(int c, const char *arg, void *user)
{
    worker_opts *o = user;
    long v;
    switch (c) {
    case 'n':
        o->url = arg;
        return 0;
    case 'P':
        o->p->prefix = arg;
        return 0;
    case 'C':
        o->p->creds_file = arg;
        return 0;
    case 'R':
        if (cli_parse_count(arg, 1, 1024, &v) < 0)
            break;
        o->p->runners = (uint32_t)v;
        return 0;
    case 'r':
        if (cli_parse_count(arg, 1, 5, &v) < 0)
            break;
        o->p->replicas = (int32_t)v;
        return 0;
    case 'A':
        if (cli_parse_count(arg, 100, 86400000, &v) < 0)
            break;
        o->p->ack_wait_ms = (uint32_t)v;
        return 0;
    case 'L':
        if (cli_parse_count(arg, 100, 86400000, &v) < 0)
            break;
        o->p->lease_ms = (uint32_t)v;
        return 0;
    case 'U':
        if (cli_parse_count(arg, 1, 64, &v) < 0)
            break;
        o->p->pullers = (uint32_t)v;
        return 0;
    case 'B':
        if (cli_parse_count(arg, 1, 1024, &v) < 0)
            break;
        o->p->fetch_batch = (uint32_t)v;
        return 0;
    case 'F':
        if (cli_parse_count(arg, 1, 86400000, &v) < 0)
            break;
        o->p->fast_ms = (uint32_t)v;
        return 0;
    case 'K':
        o->p->lookup_runs = 0;
        return 0;
    case 'I':
        o->p->index_runs = 0;
        return 0;
    case 'E':
        o->p->stream_events = 0;
        return 0;
    default:
        return -1;
    }
    cli_err("worker", "bad value '%s'", arg);
    return EXIT_USAGE;
}

int cmd_worker(int argc, char **argv)
{
    static const struct option opts[] = {{"nats", required_argument, NULL, 'n'},
                                         CLI_OPT_THREADS,
                                         {"runners", required_argument, NULL, 'R'},
                                         {"prefix", required_argument, NULL, 'P'},
                                         {"creds", required_argument, NULL, 'C'},
                                         {"replicas", required_argument, NULL, 'r'},
                                         {"ack-wait", required_argument, NULL, 'A'},
                                         {"lease", required_argument, NULL, 'L'},
                                         {"pullers", required_argument, NULL, 'U'},
                                         {"fetch-batch", required_argument, NULL, 'B'},
                                         {"fast-ms", required_argument, NULL, 'F'},
                                         {"no-lookup", no_argument, NULL, 'K'},
                                         {"no-index", no_argument, NULL, 'I'},
                                         {"no-stream-events", no_argument, NULL, 'E'},
                                         CLI_OPT_HELP,
                                         {NULL, 0, NULL, 0}};
    wf_cluster_params p;
    wf_cluster_params_init(&p);
    worker_opts wo = {&p, NULL};
    cli_opts co;
    cli_opts_init(&co);
    int rc = cli_getopt("worker", argc, argv, "t:h", opts, &co, worker_opt, &wo, usage, 1, -1);
    if (rc != CLI_CONTINUE)
        return rc;
    if (wo.url == NULL || *wo.url == 0) {
        cli_err("worker", "--nats URL is required");
        usage(stderr);
        return EXIT_USAGE;
    }
    int n = argc - optind, ex_code = EXIT_USAGE;
    wf_plugin **plugins = calloc((size_t)n, sizeof *plugins);
    wf_executor *ex = NULL;
    wf_cluster *c = NULL;
    if (plugins == NULL)
        return EXIT_FAILED;
    for (int i = 0; i < n; i++) {
        wf_workflow *wf;
        if (cli_load("worker", argv[optind + i], NULL, &plugins[i], &wf))
            goto done;
    }
    if (cli_signals_start(cli_stop_signal, NULL) < 0) {
        cli_err("worker", "cannot start the signal thread");
        goto done;
    }
    char *msg = NULL;
    rc = wf_cluster_open(&c, wo.url, &p, &msg);
    if (rc < 0) {
        cli_err("worker", "%s", msg ? msg : wf_strerror(rc));
        wf_free(msg);
        ex_code = rc == WF_EINVAL ? EXIT_USAGE : EXIT_FAILED;
        goto done;
    }
    size_t registered = 0;
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < wf_plugin_workflow_count(plugins[i]); k++) {
            const char *name = wf_plugin_workflow_name(plugins[i], k);
            wf_workflow *wf = NULL;
            char *m = NULL;
            rc = wf_plugin_workflow(plugins[i], name, &wf, &m);
            if (rc == 0)
                rc = wf_cluster_register(c, name, wf);
            if (rc < 0) {
                cli_err("worker", "%s: workflow '%s': %s", argv[optind + i], name,
                        m ? m : wf_strerror(rc));
                wf_free(m);
                goto done;
            }
            registered++;
        }
    }
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)co.threads;
    rc = wf_executor_new(&ex, &ep);
    if (rc == 0)
        rc = wf_cluster_work(c, ex);
    if (rc < 0) {
        cli_err("worker", "cannot start: %s", wf_strerror(rc));
        ex_code = EXIT_FAILED;
        goto done;
    }
    printf("working: %zu workflows, %s, prefix %s\n", registered, wo.url, p.prefix);
    fflush(stdout);
    cli_stop_wait();
    wf_cluster_stats st;
    wf_cluster_get_stats(c, &st);
    wf_cluster_free(c); /* the drain: runs in flight go back to the cluster */
    c = NULL;
    printf("{\"runs_done\":%llu,\"resumed\":%llu,\"restarted\":%llu,\"duplicates\":%llu,"
           "\"busy\":%llu,\"malformed\":%llu,\"mismatched\":%llu,\"unknown\":%llu,"
           "\"inputs\":%llu,\"parked\":%llu,\"leases_lost\":%llu,\"woken\":%llu}\n",
           (unsigned long long)st.runs_done, (unsigned long long)st.resumed,
           (unsigned long long)st.restarted, (unsigned long long)st.duplicates,
           (unsigned long long)st.busy, (unsigned long long)st.malformed,
           (unsigned long long)st.mismatched, (unsigned long long)st.unknown,
           (unsigned long long)st.inputs, (unsigned long long)st.parked,
           (unsigned long long)st.leases_lost, (unsigned long long)st.woken);
    ex_code = EXIT_DONE;
done:
    wf_cluster_free(c);
    wf_executor_free(ex);
    cli_signals_stop();
    for (int i = 0; i < n; i++)
        wf_plugin_free(plugins[i]);
    free(plugins);
    return ex_code;
}
