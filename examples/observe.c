/*
 * observe.c: every built-in exporter on one executor.
 *
 * Runs a batch of two-step runs (prepare -> answer), one of which fails its
 * first attempt and is retried, and one that fails for good, with the
 * Perfetto, OpenTelemetry (OTLP/JSON lines), Prometheus, log and execution
 * exporters installed. Writes into the directory given as its only argument:
 *   trace.json         open in https://ui.perfetto.dev
 *   spans.otlp.jsonl   the OpenTelemetry Collector's otlpjsonfile receiver
 *   metrics.prom       promtool check metrics, or any Prometheus text reader
 * prints the failures through the log exporter (stderr) and draws the failed
 * run as a Mermaid flowchart (stdout). See the README, "Observability".
 *
 * Usage: observe DIR [runs]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

/* prepare: StartEvent{data, mode} -> Prepared{data, mode} */
static const wf_event_type *prepared_type;

static int prepare(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)ctx;
    (void)user;
    /* wf_event_get lends the values; the new event takes references of its own. */
    return wf_event_new2(out, prepared_type, "data",
                         wf_value_retain(wf_event_get(in, "data", wf_value_nil())), "mode",
                         wf_value_retain(wf_event_get(in, "mode", wf_value_nil())));
}

/*
 * answer: Prepared -> StopEvent. Mode "flaky" fails its first attempt with
 * WF_EAGAIN (the retry policy retries that code); mode "broken" fails with
 * WF_EINVAL (not retried: the run fails).
 */
static int answer(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)user;
    const char *mode = "", *data = "";
    size_t len = 0;
    wf_value_get_string(wf_event_get(in, "mode", wf_value_nil()), &mode, NULL);
    wf_value_get_string(wf_event_get(in, "data", wf_value_nil()), &data, &len);
    if (strcmp(mode, "broken") == 0) {
        wf_ctx_set_error(ctx, "the model refused to answer");
        return WF_EINVAL;
    }
    if (strcmp(mode, "flaky") == 0) {
        wf_value tries;
        int64_t n = 0;
        int rc = wf_ctx_get_default(ctx, "tries", wf_value_int(0), &tries);
        if (rc < 0 || (rc = wf_value_get_int(tries, &n)) < 0 ||
            (rc = wf_ctx_set(ctx, "tries", wf_value_int(n + 1))) < 0)
            return rc;
        if (n == 0) {
            wf_ctx_set_error(ctx, "the model is busy, try again");
            return WF_EAGAIN;
        }
    }
    char msg[96];
    snprintf(msg, sizeof msg, "answered %zu bytes", len);
    wf_value result;
    int rc = wf_value_string(&result, msg);
    if (rc < 0)
        return rc;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, result);
}

static int define(wf_workflow **out, wf_retry_policy **policy)
{
    wf_workflow *wf;
    int rc = wf_workflow_new(&wf, "QuickStart", NULL);
    if (rc < 0)
        return rc;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    if ((rc = wf_workflow_event_type(wf, "Prepared", NULL, &prepared_type)) < 0)
        goto fail;
    /* Retry WF_EAGAIN only, 2 ms apart, 3 executions in all. */
    static const int32_t retry_codes[] = {WF_EAGAIN};
    wf_retry_cond *cond = NULL;
    wf_retry_wait *wait = NULL;
    wf_retry_stop *stop_after = NULL;
    if ((rc = wf_retry_cond_on_codes(&cond, retry_codes, 1)) < 0 ||
        (rc = wf_retry_wait_fixed(&wait, 2)) < 0 ||
        (rc = wf_retry_stop_after_attempt(&stop_after, 3)) < 0) {
        wf_retry_cond_free(cond);
        wf_retry_wait_free(wait);
        goto fail;
    }
    if ((rc = wf_retry_policy_new(policy, cond, wait, stop_after)) < 0)
        goto fail;

    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &start;
    p.n_accepts = 1;
    p.emits = &prepared_type;
    p.n_emits = 1;
    if ((rc = wf_workflow_add_step(wf, "prepare", prepare, &p, NULL)) < 0)
        goto fail;
    wf_step_params_init(&p);
    p.accepts = &prepared_type;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    p.retry = *policy;
    if ((rc = wf_workflow_add_step(wf, "answer", answer, &p, NULL)) < 0)
        goto fail;
    *out = wf;
    return 0;
fail:
    wf_workflow_free(wf);
    return rc;
}

static void log_warnings(wf_log_level level, const char *msg, void *user)
{
    (void)user;
    if (level <= WF_LOG_WARN) /* the INFO lines: one per invocation, too many to print */
        fprintf(stderr, "wf: %s\n", msg);
}

/* Installs the exporter made by make() writing to dir/name. */
static int add_file_exporter(wf_executor *ex, const char *dir, const char *name,
                             int (*make)(wf_observer *, const wf_exporter_params *), uint32_t *id)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = fopen(path, "w+");
    if (p.out == NULL) {
        perror(path);
        return WF_EINVAL;
    }
    p.service_name = "wf-example";
    wf_observer o;
    int rc = make(&o, &p); /* takes p.out, also when it fails */
    if (rc == 0)
        rc = wf_executor_observe(ex, &o, id);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: observe DIR [runs]\n");
        return 2;
    }
    const char *dir = argv[1];
    int runs = argc > 2 ? atoi(argv[2]) : 50;
    if (runs < 2)
        runs = 2;
    wf_workflow *wf = NULL;
    wf_retry_policy *policy = NULL;
    wf_executor *ex = NULL;
    wf_execution *exe = NULL;
    wf_handler **hs = calloc((size_t)runs, sizeof *hs);
    uint32_t ids[5];
    int rc;
    if (hs == NULL)
        return 1;
    if ((rc = define(&wf, &policy)) < 0 || (rc = wf_executor_new(&ex, NULL)) < 0)
        goto fail;

    if ((rc = add_file_exporter(ex, dir, "trace.json", wf_exporter_perfetto, &ids[0])) < 0 ||
        (rc = add_file_exporter(ex, dir, "spans.otlp.jsonl", wf_exporter_otlp_json, &ids[1])) < 0 ||
        (rc = add_file_exporter(ex, dir, "metrics.prom", wf_exporter_prometheus, &ids[2])) < 0)
        goto fail;
    wf_observer o;
    if ((rc = wf_exporter_log(&o, log_warnings, NULL)) < 0 ||
        (rc = wf_executor_observe(ex, &o, &ids[3])) < 0)
        goto fail;
    if ((rc = wf_exporter_execution(&o, &exe)) < 0 ||
        (rc = wf_executor_observe(ex, &o, &ids[4])) < 0)
        goto fail;

    /* The runs: all "ok" but one flaky (retried) and one broken (fails). */
    const wf_event_type *start_type = wf_workflow_builtin(wf, WF_START_EVENT);
    for (int i = 0; i < runs; i++) {
        const char *mode = i == runs / 2 ? "flaky" : i == runs - 1 ? "broken" : "ok";
        wf_value data, m;
        wf_event *start;
        if ((rc = wf_value_string(&data, "Hello, world!")) < 0 ||
            (rc = wf_value_string(&m, mode)) < 0 ||
            (rc = wf_event_new2(&start, start_type, "data", data, "mode", m)) < 0 ||
            (rc = wf_run_start(ex, wf, NULL, start, &hs[i])) < 0)
            goto fail;
    }
    int ok = 0, failed = 0;
    uint64_t failed_run = 0;
    for (int i = 0; i < runs; i++) {
        int w = wf_handler_wait(hs[i], -1, NULL);
        if (w == 0) {
            ok++;
        } else {
            failed++;
            failed_run = wf_handler_run_id(hs[i]);
        }
    }

    /* Every record written so far reaches the exporters; then the drawing. */
    if ((rc = wf_executor_observe_flush(ex)) < 0)
        goto fail;
    char *chart = NULL;
    if (failed_run && wf_execution_draw(exe, wf, failed_run, 1, &chart) == 0) {
        printf("The failed run %llu:\n%s\n", (unsigned long long)failed_run, chart);
        wf_free(chart);
    }
    /*
     * Removing the observers completes and closes their files. Then nothing
     * more is recorded (idle workers park, and would be, while observed):
     * the counts are final once the last records went through.
     */
    for (int i = 0; i < 5; i++)
        wf_executor_unobserve(ex, ids[i]);
    wf_executor_observe_flush(ex);
    wf_obs_stats st;
    wf_executor_observe_stats(ex, &st);
    printf("%d runs: %d done, %d failed; records: %llu written, %llu delivered, %llu dropped\n",
           runs, ok, failed, (unsigned long long)st.written, (unsigned long long)st.delivered,
           (unsigned long long)st.dropped);
    printf("wrote %s/trace.json, %s/spans.otlp.jsonl, %s/metrics.prom\n", dir, dir, dir);
    rc = 0;
fail:
    if (rc < 0)
        fprintf(stderr, "observe: %s\n", wf_strerror(rc));
    for (int i = 0; i < runs; i++)
        wf_handler_free(hs[i]);
    free(hs);
    wf_executor_free(ex);
    wf_execution_release(exe);
    wf_retry_policy_free(policy);
    wf_workflow_free(wf);
    return rc < 0 ? 1 : 0;
}
