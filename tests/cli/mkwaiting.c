/*
 * mkwaiting.c STORE PLUGIN.so WORKFLOW RUN_ID JSON [OWNER]: starts a durable
 * run RUN_ID of the plugin's WORKFLOW (the start event's fields: JSON) on an
 * executor attached to the SQLite store STORE (owner "wf", the owner the wf
 * command uses; or OWNER, with a lease of an hour), reads its stream until it asks for input (an
 * InputRequiredEvent), prints that event's fields as JSON and exits: the
 * executor's shutdown checkpoints the run and leaves it in flight, waiting,
 * for `wf runs respond` (wf.bats). Exit 0, or 1 with a message (the run
 * ended without asking). OWNER "crash": owner "wf", and at the run's first
 * streamed event (of any type) the store is flushed (the start is durable)
 * and the process ends at once with _exit(0), as a crash would, the step
 * still in progress (for the recovery tests).
 */
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include <wf/durable.h>
#include <wf/json.h>
#include <wf/wf.h>

static int fail(const char *what, int rc, char *msg)
{
    fprintf(stderr, "mkwaiting: %s: %s\n", what, msg ? msg : wf_strerror(rc));
    wf_free(msg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: mkwaiting STORE PLUGIN.so WORKFLOW RUN_ID JSON [OWNER]\n");
        return 2;
    }
    char *msg = NULL;
    wf_plugin *plugin;
    wf_workflow *wf;
    int rc = wf_plugin_open(&plugin, argv[2], &msg);
    if (rc < 0)
        return fail("plugin", rc, msg);
    if ((rc = wf_plugin_workflow(plugin, argv[3], &wf, &msg)) < 0)
        return fail("workflow", rc, msg);
    if ((rc = wf_workflow_freeze(wf, &msg)) < 0)
        return fail("freeze", rc, msg);
    wf_event *start;
    if ((rc = wf_json_parse_start(wf, argv[5], strlen(argv[5]), &start, &msg)) < 0)
        return fail("input", rc, msg);
    wf_store_params sp;
    wf_store_params_init(&sp);
    int crash = argc == 7 && strcmp(argv[6], "crash") == 0;
    sp.owner = argc == 7 && !crash ? argv[6] : "wf";
    if (argc == 7 && !crash)
        sp.lease_ms = 3600 * 1000;
    wf_store *st;
    if ((rc = wf_store_open_sqlite(&st, argv[1], &sp, &msg)) < 0)
        return fail("store", rc, msg);
    wf_executor *ex;
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2;
    if ((rc = wf_executor_new(&ex, &ep)) < 0 || (rc = wf_executor_attach_store(ex, st, NULL)) < 0)
        return fail("executor", rc, NULL);
    wf_handler *h;
    if ((rc = wf_run_start_durable(ex, wf, NULL, argv[4], start, NULL, &h, &msg)) < 0)
        return fail("start", rc, msg);
    const wf_event_type *ir = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    int asked = 0;
    for (;;) {
        wf_event *ev = NULL;
        if (wf_handler_next_event(h, -1, &ev) < 0)
            break;
        const wf_event_type *t = wf_event_type_of(ev);
        if (crash) {
            int frc = wf_store_flush(st);
            fflush(stdout);
            _exit(frc == 0 ? 0 : 1);
        }
        if (wf_event_type_is(t, ir)) {
            wf_json_buf b;
            wf_json_buf_init(&b);
            wf_json_write_fields(&b, ev);
            printf("%.*s\n", (int)b.len, b.data);
            wf_json_buf_free(&b);
            asked = 1;
        }
        int stop = wf_event_type_is_stop(t);
        wf_event_release(ev);
        if (asked || stop)
            break;
    }
    wf_handler_free(h);
    wf_executor_free(ex); /* the last checkpoint; the run stays in flight */
    wf_store_free(st);
    wf_plugin_free(plugin);
    if (!asked) {
        fprintf(stderr, "mkwaiting: the run ended without asking for input\n");
        return 1;
    }
    return 0;
}
