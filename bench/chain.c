/*
 * chain.c: one run in which five steps pass an event around a cycle, a
 * counter in the event, until n step invocations have run; the last emits
 * the StopEvent with the counter. Measures the per-step dispatch cost
 * (routing, the event, the bypass slot) without run start-up. One warm-up
 * round in the same process first, as every peer does (TBB starts its
 * threads on first use).
 * Usage: chain [--n N] [--threads T] [--warmup W] [--observe MODE] [--work K]
 *              [--observe-buffer R] [--fields declared|named]
 * --fields: how the steps build and read the counter: named (default:
 * wf_event_new1 and wf_event_get by key) or declared (the field declared on
 * each type, wf_event_new_fields and wf_event_get_field, as bench_tree).
 * --work: K rounds of busy arithmetic in each step (default 0: the bare
 * dispatch cost; ~1 ns a round here), for a step that does some work.
 * --observe: none (default), null (an observer that takes every record and
 * does nothing with it: the cost of the hooks and rings), perfetto or otlp
 * (the trace exporters writing to /dev/null), all (every exporter at once),
 * stall (an observer that holds the exporter until the run is over: every
 * record is dropped and nothing crosses cores, the hooks' own cost).
 * --observe-buffer: records per thread ring (wf_executor_params.observe_buffer;
 * 0, the default: the library's). With stall and a ring larger than the run,
 * every record is written and none crosses cores.
 */
#include <wf/wf.h>

#include "common.h"
#include <stdatomic.h>
#include <unistd.h>

static const wf_event_type *ring_types[5];
static const wf_event_field *ring_n[5]; /* field "n" declared on each ring type */
static int named; /* --fields named */

static atomic_int stall_gate = 1;
static void stall_record(const wf_obs_record *r, void *user)
{
    (void)r;
    (void)user;
    while (atomic_load(&stall_gate)) /* the exporter waits here until the run is over */
        usleep(1000);
}
static void null_record(const wf_obs_record *r, void *user)
{
    (void)r;
    ++*(long *)user;
}

/* Installs the observers of mode; returns 0, or -1 for an unknown mode. */
static int observe(wf_executor *ex, const char *mode, long *records)
{
    int all = strcmp(mode, "all") == 0;
    if (strcmp(mode, "none") == 0)
        return 0;
    if (strcmp(mode, "stall") == 0) {
        wf_observer o = {.record = stall_record, .user = records};
        return wf_executor_observe(ex, &o, NULL) < 0 ? -1 : 0;
    }
    if (strcmp(mode, "null") == 0) {
        wf_observer o = {.record = null_record, .user = records};
        return wf_executor_observe(ex, &o, NULL) < 0 ? -1 : 0;
    }
    int known = all;
    const char *kinds[] = {"perfetto", "otlp", "prometheus"};
    for (int k = 0; k < 3; k++) {
        if (!all && strcmp(mode, kinds[k]) != 0)
            continue;
        known = 1;
        wf_exporter_params p;
        wf_exporter_params_init(&p);
        p.out = fopen("/dev/null", "w");
        wf_observer o;
        int rc = k == 0 ? wf_exporter_perfetto(&o, &p)
                        : k == 1 ? wf_exporter_otlp_json(&o, &p) : wf_exporter_prometheus(&o, &p);
        if (rc < 0 || wf_executor_observe(ex, &o, NULL) < 0)
            return -1;
    }
    return known ? 0 : -1;
}
static long limit;
static long work; /* --work: iterations of busy arithmetic per step (a step that computes) */
static volatile uint64_t sink;

static void busy(long n)
{
    uint64_t x = 88172645463325252ull;
    for (long i = 0; i < n; i++) { /* xorshift: not folded by the compiler */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    sink = x;
}

static int ring_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int i = (int)(intptr_t)user;
    if (work)
        busy(work);
    int64_t n = 0;
    if (named)
        wf_value_get_int(wf_event_get(in, "n", wf_value_int(0)), &n);
    else
        wf_value_get_int(wf_event_get_field(in, ring_n[i], wf_value_int(0)), &n);
    n++;
    if (n >= limit)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(n));
    int next = i == 4 ? 0 : i + 1;
    if (named)
        return wf_event_new1(out, ring_types[next], "n", wf_value_int(n));
    wf_value v = wf_value_int(n);
    return wf_event_new_fields(out, ring_types[next], &v, 1);
}

static int start_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    wf_value v = wf_value_int(0);
    return named ? wf_event_new1(out, ring_types[0], "n", v)
                 : wf_event_new_fields(out, ring_types[0], &v, 1);
}

int main(int argc, char **argv)
{
    limit = bench_arg(argc, argv, "--n", 1000000);
    work = bench_arg(argc, argv, "--work", 0);
    long threads = bench_arg(argc, argv, "--threads", 1);
    const char *fields = bench_arg_str(argc, argv, "--fields", "named");
    if (strcmp(fields, "named") != 0 && strcmp(fields, "declared") != 0) {
        fprintf(stderr, "chain: --fields is declared or named, not %s\n", fields);
        return 2;
    }
    named = strcmp(fields, "named") == 0;
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "chain", NULL) < 0)
        return 1;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "Ring%d", i);
        if (wf_workflow_event_type(wf, name, NULL, &ring_types[i]) < 0 ||
            wf_event_type_add_field(ring_types[i], "n", &ring_n[i]) < 0)
            return 1;
    }
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &start;
    p.n_accepts = 1;
    p.emits = &ring_types[0];
    p.n_emits = 1;
    wf_workflow_add_step(wf, "start", start_step, &p, NULL);
    for (int i = 0; i < 5; i++) {
        const wf_event_type *em[2] = {ring_types[(i + 1) % 5], stop};
        p.accepts = &ring_types[i];
        p.emits = em;
        p.n_emits = 2;
        char name[16];
        snprintf(name, sizeof name, "step%d", i);
        if (wf_workflow_add_step(wf, name, ring_step, &p, (void *)(intptr_t)i) < 0)
            return 1;
    }
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    ep.observe_buffer = (uint32_t)bench_arg(argc, argv, "--observe-buffer", 0); /* 0: the default */
    wf_executor *ex;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    const char *mode = bench_arg_str(argc, argv, "--observe", "none");
    long records = 0;
    if (observe(ex, mode, &records) < 0) {
        fprintf(stderr, "chain: unknown --observe mode or exporter failure: %s\n", mode);
        return 2;
    }
    long warmup = bench_arg(argc, argv, "--warmup", 1);
    double dt = 0;
    int ok = 1;
    for (long round = 0; round <= warmup; round++) {
        wf_event *s;
        wf_event_new(&s, start, 0);
        double t0 = bench_now();
        wf_event *res = NULL;
        int rc = wf_run(ex, wf, NULL, s, -1, &res);
        dt = bench_now() - t0;
        int64_t got = -1;
        if (rc == 0)
            wf_value_get_int(wf_event_result(res), &got);
        wf_event_release(res);
        ok = ok && rc == 0 && got == limit;
    }
    wf_obs_stats st;
    atomic_store(&stall_gate, 0);
    wf_executor_observe_flush(ex);
    wf_executor_observe_stats(ex, &st);
    char extra[160];
    snprintf(extra, sizeof extra,
             ",\"observe\":\"%s\",\"work\":%ld,\"fields\":\"%s\",\"records\":%llu,\"dropped\":%llu", mode, work, fields,
             (unsigned long long)st.written, (unsigned long long)st.dropped);
    bench_report("chain", "wf", threads, limit, dt, limit, ok, extra);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return ok ? 0 : 1;
}
