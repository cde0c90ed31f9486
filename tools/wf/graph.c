/*
 * graph.c: wf graph PLUGIN.so [WORKFLOW] --format dot|mermaid|json.
 * dot and mermaid come from libwf; json is libwf-json's representation
 * (wf_json_write_representation, the reference's get_workflow_representation:
 * step, event, resource nodes, edges, event schemas, num_workers), the same
 * document wf serve gives under "graph".
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

static void usage(FILE *to)
{
    fprintf(to, "usage: wf graph PLUGIN.so [WORKFLOW] [--format dot|mermaid|json]\n"
                "draws every possible flow of WORKFLOW (default: the plugin's first)\n"
                "  -f, --format F   dot (Graphviz, default), mermaid, or json: nodes (steps,\n"
                "                   events with their schemas, resources), edges, num_workers\n"
                "Exit status: 0 done, 2 usage (bad option, plugin or workflow).\n");
}

/* The library's representation (wf_json_write_representation), indented. */
static char *representation(wf_workflow *wf)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    char *s = NULL;
    if (wf_json_write_representation(&b, wf) == 0) {
        json_t *doc = json_loadb(b.data, b.len, 0, NULL);
        s = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        json_decref(doc);
    }
    wf_json_buf_free(&b);
    return s;
}

int cmd_graph(int argc, char **argv)
{
    static const struct option opts[] = {{"format", required_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *format = "dot";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
        if (c == 'f') {
            format = optarg;
        } else if (c == 'h') {
            usage(stdout);
            return EXIT_DONE;
        } else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc || argc - optind > 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(format, "dot") && strcmp(format, "mermaid") && strcmp(format, "json")) {
        cli_err("graph", "unknown format '%s' (dot, mermaid or json)", format);
        return EXIT_USAGE;
    }
    wf_plugin *plugin;
    wf_workflow *wf;
    int rc =
        cli_load("graph", argv[optind], optind + 1 < argc ? argv[optind + 1] : NULL, &plugin, &wf);
    if (rc)
        return rc;
    char *msg = NULL;
    if ((rc = wf_workflow_freeze(wf, &msg)) < 0) {
        cli_err("graph", "workflow '%s' is invalid: %s", wf_workflow_name(wf),
                msg ? msg : wf_strerror(rc));
        wf_free(msg);
        wf_plugin_free(plugin);
        return EXIT_FAILED;
    }
    int ex = EXIT_DONE;
    if (strcmp(format, "json") == 0) {
        char *s = representation(wf);
        if (s) {
            printf("%s\n", s);
            free(s);
        } else {
            cli_err("graph", "out of memory");
            ex = EXIT_FAILED;
        }
    } else {
        char *out = NULL;
        rc = strcmp(format, "dot") == 0 ? wf_workflow_to_dot(wf, &out)
                                        : wf_workflow_to_mermaid(wf, &out);
        if (rc < 0) {
            cli_err("graph", "%s", wf_strerror(rc));
            ex = EXIT_FAILED;
        } else {
            size_t n = strlen(out);
            fputs(out, stdout);
            if (n == 0 || out[n - 1] != '\n')
                putchar('\n');
            wf_free(out);
        }
    }
    wf_plugin_free(plugin);
    return ex;
}
