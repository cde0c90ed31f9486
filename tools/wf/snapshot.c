/*
 * snapshot.c: wf snapshot show|json|validate FILE. json prints the snapshot
 * as JSON (what wf-snapshot printed); show prints a summary; validate only
 * checks it. FILE "-" is standard input. 0 done, 1 not a snapshot or
 * unreadable, 2 usage.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

static void usage(FILE *to)
{
    fprintf(to, "usage: wf snapshot show|json|validate FILE\n"
                "  json      the snapshot as JSON (bytes as base64, 64-bit integers exact)\n"
                "  show      a summary: workflow, running, state keys, queued events\n"
                "  validate  only check that FILE is a well-formed snapshot\n"
                "FILE \"-\" reads standard input. Exit status: 0 done, 1 not a snapshot or\n"
                "unreadable, 2 usage.\n");
}

static void show(const char *json)
{
    json_error_t err;
    /* integers as doubles: a snapshot may hold uint64 values past jansson's int64 */
    json_t *doc = json_loads(json, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &err);
    if (doc == NULL) {
        printf("%s\n", json);
        return;
    }
    json_t *run = json_object_get(doc, "run");
    printf("workflow:    %s\n", json_string_value(json_object_get(doc, "workflow"))
                                    ? json_string_value(json_object_get(doc, "workflow"))
                                    : "?");
    printf("version:     %.0f\n", json_number_value(json_object_get(doc, "version")));
    printf("running:     %s\n", json_is_true(json_object_get(doc, "running")) ? "yes" : "no");
    json_t *state = json_object_get(doc, "state");
    printf("state keys:  %zu", json_object_size(state));
    const char *k;
    json_t *v;
    const char *sep = " (";
    json_object_foreach(state, k, v)
    {
        printf("%s%s", sep, k);
        sep = ", ";
    }
    printf("%s\n", json_object_size(state) ? ")" : "");
    if (run) {
        json_t *steps = json_object_get(run, "steps");
        printf("steps:       %zu\n", json_array_size(steps));
        printf("tasks:       %zu\n", json_array_size(json_object_get(run, "tasks")));
        json_t *c = json_object_get(run, "counters");
        json_object_foreach(c, k, v)
        {
            if (json_is_number(v))
                printf("  %-10s %.0f\n", k, json_number_value(v));
        }
    }
    json_decref(doc);
}

int cmd_snapshot(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return EXIT_DONE;
    }
    if (argc != 3 ||
        (strcmp(argv[1], "show") && strcmp(argv[1], "json") && strcmp(argv[1], "validate"))) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *what = argv[1], *path = argv[2];
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        cli_err("snapshot", "%s: %s", path, strerror(errno));
        return EXIT_FAILED;
    }
    char *buf;
    size_t len;
    int rd = cli_slurp(f, &buf, &len);
    int e = errno;
    if (f != stdin)
        fclose(f);
    if (rd < 0) {
        cli_err("snapshot", "%s: %s", path, strerror(e));
        return EXIT_FAILED;
    }
    char *json = NULL, *msg = NULL;
    int rc = wf_snapshot_to_json(buf, len, &json, &msg);
    free(buf);
    if (rc < 0) {
        cli_err("snapshot", "%s: %s", path, msg ? msg : wf_strerror(rc));
        wf_free(msg);
        return EXIT_FAILED;
    }
    if (strcmp(what, "json") == 0) {
        fputs(json, stdout);
        putchar('\n');
    } else if (strcmp(what, "show") == 0) {
        show(json);
    } else {
        printf("%s: a valid wf snapshot\n", path);
    }
    wf_free(json);
    if (fflush(stdout) != 0) {
        cli_err("snapshot", "writing: %s", strerror(errno));
        return EXIT_FAILED;
    }
    return EXIT_DONE;
}
