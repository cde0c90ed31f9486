/*
 * wf: the command. Subcommands run, batch, graph, snapshot, runs and serve (docs/CLI.md).
 */
#include <string.h>

#include "cli.h"

static void usage(FILE *to)
{
    fprintf(to, "usage: wf COMMAND [ARGS]\n"
                "\n"
                "commands:\n"
                "  run PLUGIN.so [WORKFLOW]       run a workflow once, print its result as JSON\n"
                "  batch PLUGIN.so [WORKFLOW]     one run per line of a JSON-lines file\n"
                "  graph PLUGIN.so [WORKFLOW]     draw a workflow (dot, mermaid, json)\n"
                "  snapshot show|json|validate FILE   look into a saved snapshot\n"
                "  runs list|show|cancel --store STORE   the runs a store keeps\n"
#ifdef WF_HAVE_SERVE
                "  serve PLUGIN.so...             serve workflows over HTTP (the reference's API)\n"
#endif
#ifdef WF_HAVE_CLUSTER
                "  worker PLUGIN.so... --nats URL run workflows for a cluster on NATS JetStream\n"
#endif
                "\n"
                "options: --help (also after each command), --version\n"
                "exit status: 0 done, 1 the run failed, 2 usage, 3 timed out,\n"
                "             4 waiting for input, 130 interrupted\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return EXIT_DONE;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("wf %s (plugin ABI %d)\n", wf_version_string(), WF_PLUGIN_ABI_VERSION);
        return EXIT_DONE;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "batch") == 0)
        return cmd_batch(argc - 1, argv + 1);
    if (strcmp(cmd, "graph") == 0)
        return cmd_graph(argc - 1, argv + 1);
    if (strcmp(cmd, "snapshot") == 0)
        return cmd_snapshot(argc - 1, argv + 1);
    if (strcmp(cmd, "runs") == 0)
        return cmd_runs(argc - 1, argv + 1);
#ifdef WF_HAVE_CLUSTER
    if (strcmp(cmd, "worker") == 0)
        return cmd_worker(argc - 1, argv + 1);
#endif
#ifdef WF_HAVE_SERVE
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
#endif
    fprintf(stderr, "wf: unknown command '%s' (wf --help lists them)\n", cmd);
    return EXIT_USAGE;
}
