/*
 * run.c: wf run PLUGIN.so [WORKFLOW] [options]: one run, its result as JSON.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: wf run PLUGIN.so [WORKFLOW] [options]\n"
            "runs WORKFLOW (default: the plugin's first) once and prints its result as JSON\n"
            "  -i, --input JSON|@FILE|-  the start event's fields as a JSON object (default {})\n"
            "  -r, --respond JSON|@FILE  answers the next InputRequiredEvent with a\n"
            "                            HumanResponseEvent of these fields (repeatable)\n"
            "%s"
            "  -s, --stream              print every streamed event as a JSON line\n"
            "                            {\"type\": ..., \"value\": {...}}, the StopEvent last\n"
            "      --trace FILE          Perfetto trace (ui.perfetto.dev)\n"
            "      --otlp FILE           OpenTelemetry spans as OTLP/JSON lines\n"
            "      --metrics FILE        Prometheus text metrics\n"
            "%s"
            "      --run-id ID           the durable run's id (with --store; default: a new one)\n"
            "With --store the run is durable: a run waiting for input is kept checkpointed\n"
            "in the store (answer it with wf runs respond), a rerun with the same --run-id\n"
            "prints the stored result of a run that ended, continues a run left in flight\n"
            "(its wf process was killed) and says again what a waiting run asks.\n"
            "Exit status: 0 done, 1 the run failed, 2 usage, 3 timed out, 4 waiting for\n"
            "input (the InputRequiredEvent is printed), 130 interrupted.\n",
            CLI_HELP_THREADS("           ") CLI_HELP_TIMEOUT("           ", "the run's"),
            CLI_HELP_STORE("         "));
}

static _Atomic(wf_handler *) current;

static void on_signal(void *user)
{
    (void)user;
    wf_handler *h = atomic_load(&current);
    if (h)
        wf_handler_cancel(h);
}

static int add_exporter(wf_executor *ex, const char *path,
                        int (*make)(wf_observer *, const wf_exporter_params *), uint32_t *id)
{
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = fopen(path, "w+");
    if (p.out == NULL) {
        cli_err("run", "%s: %s", path, strerror(errno));
        return -1;
    }
    p.service_name = "wf";
    wf_observer o;
    int rc = make(&o, &p);
    if (rc == 0)
        rc = wf_executor_observe(ex, &o, id);
    if (rc < 0) {
        cli_err("run", "%s: %s", path, wf_strerror(rc));
        return -1;
    }
    return 0;
}

static void print_json_line(wf_json_buf *b)
{
    fwrite(b->data, 1, b->len, stdout);
    putchar('\n');
    fflush(stdout);
    wf_json_buf_reset(b);
}

/*
 * Exit 4 for run_id, released into the store waiting for an event: its last
 * question (an InputRequiredEvent, from the durable stream) on standard
 * output unless printed already, and how to answer it.
 */
static int say_waiting(wf_executor *ex, wf_workflow *wf, const char *run_id, int printed)
{
    wf_json_buf q;
    wf_json_buf_init(&q);
    int asked = printed || cli_last_question(ex, wf, run_id, &q);
    if (q.len)
        print_json_line(&q);
    wf_json_buf_free(&q);
    if (asked)
        cli_err("run",
                "waiting for input: run '%s' is kept in the store (answer with wf runs respond "
                "%s PLUGIN --store STORE --event '{\"response\": ...}')",
                run_id, run_id);
    else
        cli_err("run",
                "waiting for an event: run '%s' is kept in the store (send it with wf runs "
                "respond %s PLUGIN --store STORE --event '{\"type\": ..., \"value\": ...}')",
                run_id, run_id);
    return EXIT_WAITING;
}

/*
 * --store: what the store has of run_id. Not there: CLI_CONTINUE with *h
 * NULL (start it). Ended: its stored result printed, the exit code.
 * Released (waiting for input, out of memory): exit 4 as say_waiting. In
 * flight (the wf process that ran it was killed or crashed; the owner is
 * the same, CLI_STORE_OWNER): recovered here, CLI_CONTINUE with *h its
 * handler; or, when its start never became durable, recovery forgets it:
 * CLI_CONTINUE with *h NULL (started anew). Else an exit code after a message.
 */
static int stored_run(wf_store *st, wf_executor *ex, wf_workflow *wf, const char *run_id,
                      wf_handler **h)
{
    wf_store_run_info in;
    memset(&in, 0, sizeof in);
    int rc = wf_store_get_run(st, run_id, &in);
    if (rc == WF_ENOTFOUND)
        return CLI_CONTINUE;
    if (rc < 0) {
        cli_err("run", "reading run '%s' from the store: %s", run_id, wf_strerror(rc));
        return EXIT_FAILED;
    }
    int32_t status = in.status;
    if (in.workflow && strcmp(in.workflow, wf_workflow_name(wf)) != 0) {
        cli_err("run", "run '%s' in the store is a run of workflow '%s', not '%s'", run_id,
                in.workflow, wf_workflow_name(wf));
        wf_store_run_info_clear(&in);
        return EXIT_USAGE;
    }
    wf_store_run_info_clear(&in);
    if (status >= WF_STORE_DONE)
        return cli_print_stored("run", ex, wf, run_id);
    if (status == WF_STORE_RELEASED)
        return say_waiting(ex, wf, run_id, 0);
    /* in flight: continue it here */
    wf_recover_info ri;
    char *msg = NULL;
    rc = wf_executor_recover(ex, &wf, 1, &ri, &msg);
    if (rc == 0 && wf_handler_open(ex, run_id, h) == 0) {
        wf_free(msg);
        return CLI_CONTINUE;
    }
    int code = EXIT_FAILED;
    (void)wf_store_flush(st); /* an idle release is queued: committed first */
    int r = wf_store_get_run(st, run_id, &in);
    if (rc == 0 && r == WF_ENOTFOUND) {
        code = CLI_CONTINUE; /* its start was not durable: recovery forgot it */
    } else if (rc == 0 && r == 0 && in.status >= WF_STORE_DONE) {
        code = cli_print_stored("run", ex, wf, run_id); /* recovered, and ended at once */
    } else if (rc == 0 && r == 0 && in.status == WF_STORE_RELEASED) {
        code = say_waiting(ex, wf, run_id, 0); /* recovered, and idle at once */
    } else if (r == 0 && in.owner && strcmp(in.owner, CLI_STORE_OWNER) != 0) {
        cli_err("run", "run '%s' is in flight in the store, held by %s: see wf runs show %s",
                run_id, in.owner, run_id);
    } else {
        cli_err("run", "run '%s' is in flight in the store but cannot be continued here: %s",
                run_id, msg ? msg : wf_strerror(rc < 0 ? rc : r < 0 ? r : WF_ENOTFOUND));
    }
    wf_store_run_info_clear(&in);
    wf_free(msg);
    return code;
}

typedef struct run_opts {
    const char *input, *trace, *otlp, *metrics, *run_id;
    const char *responds[64];
    int n_respond, stream;
} run_opts;

static int run_opt(int c, const char *arg, void *user)
{
    run_opts *o = user;
    switch (c) {
    case 'i':
        o->input = arg;
        return 0;
    case 'r':
        if (o->n_respond == 64) {
            cli_err("run", "at most 64 --respond");
            return EXIT_USAGE;
        }
        o->responds[o->n_respond++] = arg;
        return 0;
    case 's':
        o->stream = 1;
        return 0;
    case 'P':
        o->trace = arg;
        return 0;
    case 'O':
        o->otlp = arg;
        return 0;
    case 'M':
        o->metrics = arg;
        return 0;
    case 'I':
        if (arg[0] == 0 || strlen(arg) > 1024) {
            cli_err("run", "--run-id wants 1 to 1024 bytes");
            return EXIT_USAGE;
        }
        o->run_id = arg;
        return 0;
    }
    return -1;
}

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"input", required_argument, NULL, 'i'}, {"respond", required_argument, NULL, 'r'},
        CLI_OPT_THREADS,                         CLI_OPT_TIMEOUT,
        {"stream", no_argument, NULL, 's'},      {"trace", required_argument, NULL, 'P'},
        {"otlp", required_argument, NULL, 'O'},  {"metrics", required_argument, NULL, 'M'},
        CLI_OPT_STORE,                           {"run-id", required_argument, NULL, 'I'},
        CLI_OPT_HELP,                            {NULL, 0, NULL, 0}};
    run_opts ro;
    memset(&ro, 0, sizeof ro);
    cli_opts co;
    cli_opts_init(&co);
    int rc = cli_getopt("run", argc, argv, "i:r:t:sh", opts, &co, run_opt, &ro, usage, 1, 2);
    if (rc != CLI_CONTINUE)
        return rc;
    const char *input = ro.input, *trace = ro.trace, *otlp = ro.otlp, *metrics = ro.metrics;
    const char *const *responds = ro.responds;
    int n_respond = ro.n_respond, stream = ro.stream;
    long threads = co.threads;
    int64_t timeout_ms = co.timeout_ms;
    wf_plugin *plugin;
    wf_workflow *wf;
    rc =
        cli_load("run", argv[optind], optind + 1 < argc ? argv[optind + 1] : NULL, &plugin, &wf);
    if (rc)
        return rc;
    if (ro.run_id && co.store == NULL) {
        cli_err("run", "--run-id needs --store");
        wf_plugin_free(plugin);
        return EXIT_USAGE;
    }

    int ex_code = EXIT_USAGE;
    wf_store *st = NULL;
    char gen_id[64];
    const char *run_id = ro.run_id;
    wf_executor *ex = NULL;
    wf_handler *h = NULL;
    wf_event *start = NULL;
    char *text = NULL, *msg = NULL;
    size_t len = 0;
    uint32_t ids[3];
    int n_ids = 0;
    wf_json_buf out;
    wf_json_buf_init(&out);

    /* before reading the input, so a Ctrl-C at any point from here on is ours */
    if (cli_signals_start(on_signal, NULL) < 0) {
        cli_err("run", "cannot start the signal thread");
        goto done;
    }
    if (input == NULL) {
        text = strdup("{}");
        len = 2;
    } else if (cli_read_arg("run", input, &text, &len)) {
        goto done;
    }
    /* the definition's problems are the run's failure, not usage */
    if ((rc = wf_workflow_freeze(wf, &msg)) < 0) {
        cli_err("run", "workflow '%s' is invalid: %s", wf_workflow_name(wf),
                msg ? msg : wf_strerror(rc));
        ex_code = EXIT_FAILED;
        goto done;
    }
    if ((rc = wf_json_parse_start(wf, text, len, &start, &msg)) < 0) {
        cli_err("run", "bad --input: %s", msg ? msg : wf_strerror(rc));
        wf_json_free_message(msg);
        msg = NULL;
        goto done;
    }
    /* check every --respond before starting */
    for (int i = 0; i < n_respond; i++) {
        char *rt;
        size_t rl;
        wf_value v;
        if (cli_read_arg("run", responds[i], &rt, &rl))
            goto done;
        rc = wf_json_parse_value(rt, rl, &v, &msg);
        free(rt);
        if (rc < 0 || wf_value_kind(v) != WF_MAP) {
            cli_err("run", "bad --respond: %s", msg ? msg : "not a JSON object");
            wf_json_free_message(msg);
            msg = NULL;
            if (rc == 0)
                wf_value_release(v);
            goto done;
        }
        wf_value_release(v);
    }

    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    if ((rc = wf_executor_new(&ex, &ep)) < 0) {
        cli_err("run", "cannot start the executor: %s", wf_strerror(rc));
        ex_code = EXIT_FAILED;
        goto done;
    }
    if (co.store) {
        if ((ex_code = cli_store_open("run", co.store, 0, CLI_STORE_OWNER, &st)) != 0 ||
            (ex_code = cli_store_attach("run", ex, st, CLI_IDLE_RELEASE_MS)) != 0)
            goto done;
        ex_code = EXIT_USAGE;
        if (run_id == NULL) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            snprintf(gen_id, sizeof gen_id, "run-%lld-%ld-%ld", (long long)ts.tv_sec,
                     (long)getpid(), (long)(ts.tv_nsec / 1000));
            run_id = gen_id;
        }
        int sc = stored_run(st, ex, wf, run_id, &h);
        if (sc != CLI_CONTINUE) {
            ex_code = sc;
            goto done;
        }
    }
    if ((trace && add_exporter(ex, trace, wf_exporter_perfetto, &ids[n_ids++]) < 0) ||
        (otlp && add_exporter(ex, otlp, wf_exporter_otlp_json, &ids[n_ids++]) < 0) ||
        (metrics && add_exporter(ex, metrics, wf_exporter_prometheus, &ids[n_ids++]) < 0)) {
        n_ids--;
        goto done;
    }
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = timeout_ms;
    if (h) { /* a run in flight in the store, continued here: its own start event */
        rc = 0;
    } else {
        if (st)
            rc = wf_run_start_durable(ex, wf, NULL, run_id, start, &rp, &h, &msg);
        else
            rc = wf_run_start_ex(ex, wf, NULL, start, &rp, &h, &msg);
        start = NULL; /* taken */
    }
    if (rc < 0) {
        cli_err("run", "cannot start workflow '%s': %s", wf_workflow_name(wf),
                msg ? msg : wf_strerror(rc));
        ex_code = EXIT_FAILED;
        goto done;
    }
    atomic_store(&current, h);
    if (atomic_load(&cli_interrupted))
        wf_handler_cancel(h);

    const wf_event_type *ir = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    const wf_event_type *hr = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    int next_respond = 0, waiting = 0;
    for (;;) {
        wf_event *ev = NULL;
        rc = wf_handler_next_event(h, -1, &ev);
        if (rc < 0)
            break; /* WF_ECLOSED after the terminal event */
        const wf_event_type *t = wf_event_type_of(ev);
        if (stream && wf_json_write_event(&out, ev) == 0)
            print_json_line(&out);
        if (wf_event_type_is(t, ir)) {
            if (next_respond < n_respond) {
                char *rt;
                size_t rl;
                wf_event *answer = NULL;
                if (cli_read_arg("run", responds[next_respond++], &rt, &rl) == 0) {
                    wf_value v;
                    if (wf_json_parse_value(rt, rl, &v, NULL) == 0) {
                        if (wf_event_new(&answer, hr, wf_value_len(v)) == 0) {
                            for (size_t i = 0; i < wf_value_len(v); i++) {
                                const char *k;
                                wf_value fv;
                                wf_value_map_at(v, i, &k, NULL, &fv);
                                wf_event_set(answer, k, wf_value_retain(fv));
                            }
                        }
                        wf_value_release(v);
                    }
                    free(rt);
                }
                if (answer && (rc = wf_handler_send_event(h, answer, NULL)) < 0)
                    cli_err("run", "cannot answer: %s", wf_strerror(rc));
            } else {
                /* nobody to answer: say what is asked, then stop the run */
                if (!stream && wf_json_write_event(&out, ev) == 0)
                    print_json_line(&out);
                waiting = 1;
                wf_event_release(ev);
                /* a durable run is released (kept in the store) once it idles */
                if (st == NULL)
                    wf_handler_cancel(h);
                break;
            }
        }
        int terminal = wf_event_type_is_stop(t);
        wf_event_release(ev);
        if (terminal)
            break;
    }
    wf_event *result = NULL;
    rc = wf_handler_wait(h, -1, &result);
    /* idle, waiting for an event from outside: released into the store */
    int released = st && rc == WF_ECANCELLED && !atomic_load(&cli_interrupted) &&
                   cli_store_released(st, run_id);
    if (released) {
        ex_code = say_waiting(ex, wf, run_id, waiting);
    } else if (waiting && st == NULL) {
        cli_err("run", "waiting for input: the run asked for a HumanResponseEvent (answer with "
                       "--respond '{\"response\": ...}')");
        ex_code = EXIT_WAITING;
    } else if (rc == 0) {
        if (!stream) {
            wf_value r;
            if (wf_event_lookup(result, "result", &r) == 0)
                wf_json_write_value(&out, r);
            else
                wf_json_write_event(&out, result);
            print_json_line(&out);
        }
        ex_code = EXIT_DONE;
    } else {
        int code = 0;
        const char *step = NULL, *m = NULL;
        wf_handler_error(h, &code, &step, &m);
        if (rc == WF_ECANCELLED && atomic_load(&cli_interrupted)) {
            cli_err("run", "interrupted: the run was cancelled");
            ex_code = EXIT_INTERRUPTED;
        } else if (rc == WF_ERUNTIMEOUT) {
            cli_err("run", "timed out: %s", m ? m : wf_strerror(rc));
            ex_code = EXIT_TIMEDOUT;
        } else if (step) {
            cli_err("run", "step '%s' failed: %s (%s)%s%s", step, wf_strerror(code),
                    wf_err_name(code), m ? ": " : "", m ? m : "");
            ex_code = EXIT_FAILED;
        } else {
            cli_err("run", "the run failed: %s%s%s", wf_strerror(rc), m ? ": " : "", m ? m : "");
            ex_code = EXIT_FAILED;
        }
    }
    wf_event_release(result);

done:
    cli_signals_stop(); /* no cancel from it after this */
    atomic_store(&current, NULL);
    for (int i = 0; i < n_ids; i++)
        wf_executor_unobserve(ex, ids[i]);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_store_free(st);
    wf_event_release(start);
    wf_free(msg);
    free(text);
    wf_json_buf_free(&out);
    wf_plugin_free(plugin);
    if (fflush(stdout) != 0 && ex_code == EXIT_DONE) {
        cli_err("run", "writing: %s", strerror(errno));
        ex_code = EXIT_FAILED;
    }
    return ex_code;
}
