/*
 * graph.c: wf graph PLUGIN.so [WORKFLOW] --format dot|mermaid|json.
 * dot and mermaid come from the library; json is the representation the
 * reference server gives (get_workflow_representation): nodes (steps and
 * event types), edges, event types, each step's num_workers.
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
                "  -f, --format F   dot (Graphviz, default), mermaid, or json: nodes, edges,\n"
                "                   event types and num_workers\n"
                "Exit status: 0 done, 2 usage (bad option, plugin or workflow).\n");
}

static json_t *type_list(const wf_event_type *const *t, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(wf_event_type_name(t[i])));
    return a;
}

static void add_type(json_t *types, json_t *nodes, const wf_workflow *wf, const wf_event_type *t)
{
    const char *name = wf_event_type_name(t);
    if (json_object_get(types, name))
        return;
    const wf_event_type *parent = wf_event_type_parent(t);
    json_t *ty =
        json_pack("{s:s, s:o, s:b, s:b}", "name", name, "parent",
                  parent ? json_string(wf_event_type_name(parent)) : json_null(), "is_start",
                  t == wf_workflow_start_type(wf), "is_stop", wf_event_type_is_stop(t));
    json_object_set_new(types, name, ty);
    char id[300];
    snprintf(id, sizeof id, "event:%s", name);
    json_array_append_new(nodes, json_pack("{s:s, s:s, s:s, s:s}", "id", id, "label", name,
                                           "node_type", "event", "event_type", name));
}

static char *representation(wf_workflow *wf)
{
    json_t *nodes = json_array(), *edges = json_array(), *types = json_object();
    size_t n = wf_workflow_step_count(wf);
    for (size_t i = 0; i < n; i++) {
        const wf_event_type *const *acc, *const *em;
        size_t na, ne;
        wf_workflow_step_types(wf, i, 0, &acc, &na);
        wf_workflow_step_types(wf, i, 1, &em, &ne);
        const char *step = wf_workflow_step_name(wf, i);
        char sid[300];
        snprintf(sid, sizeof sid, "step:%s", step);
        json_array_append_new(nodes,
                              json_pack("{s:s, s:s, s:s, s:I, s:o, s:o}", "id", sid, "label", step,
                                        "node_type", "step", "num_workers",
                                        (json_int_t)wf_workflow_step_num_workers(wf, i), "accepts",
                                        type_list(acc, na), "emits", type_list(em, ne)));
        for (size_t k = 0; k < na; k++) {
            add_type(types, nodes, wf, acc[k]);
            char eid[300];
            snprintf(eid, sizeof eid, "event:%s", wf_event_type_name(acc[k]));
            json_array_append_new(edges, json_pack("{s:s, s:s}", "source", eid, "target", sid));
        }
        for (size_t k = 0; k < ne; k++) {
            add_type(types, nodes, wf, em[k]);
            char eid[300];
            snprintf(eid, sizeof eid, "event:%s", wf_event_type_name(em[k]));
            json_array_append_new(edges, json_pack("{s:s, s:s}", "source", sid, "target", eid));
        }
    }
    json_t *type_arr = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(types, k, v) json_array_append(type_arr, v);
    json_decref(types);
    const wf_event_type *st = wf_workflow_start_type(wf), *sp = wf_workflow_stop_type(wf);
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:{s:o, s:o}, s:o}", "name", wf_workflow_name(wf), "start_event",
                  st ? wf_event_type_name(st) : "", "stop_event", sp ? wf_event_type_name(sp) : "",
                  "graph", "nodes", nodes, "edges", edges, "event_types", type_arr);
    char *s = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
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
