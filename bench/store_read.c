/*
 * store_read: wf_store_read_journal of one run among many (SQLite backend).
 * Fills a store with R runs of K step records each (~87 bytes), appended
 * one record per run in turn and committed after each pass, so every run's
 * records are spread over K rounds (the worst layout for one run's reads),
 * then reads Q random runs' whole journals, and Q runs from the middle.
 *
 *   bench_store_read [--runs R] [--records K] [--reads Q] [--dir DIR]
 *
 * One JSON line per read kind, "impl":"wf-durable"; ns_per_event is per call.
 */
#include "common.h"

#include <wf/wf.h>

#include <unistd.h>

static int count(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    (void)seq, (void)kind, (void)data, (void)len;
    ++*(long *)user;
    return 0;
}

int main(int argc, char **argv)
{
    long runs = bench_arg(argc, argv, "--runs", 10000);
    long records = bench_arg(argc, argv, "--records", 100);
    long reads = bench_arg(argc, argv, "--reads", 2000);
    const char *base =
        bench_arg_str(argc, argv, "--dir", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (runs < 1 || records < 2 || reads < 1)
        return 2;
    wf_registry *reg;
    const wf_event_type *in_t, *out_t;
    wf_event *in, *out;
    if (wf_registry_new(&reg) || wf_registry_add(reg, "ChainEvent", NULL, &in_t) ||
        wf_registry_add(reg, "ChainResult", NULL, &out_t) ||
        wf_event_new2(&in, in_t, "value", wf_value_int(123456789), "hop", wf_value_int(41)) ||
        wf_event_new2(&out, out_t, "value", wf_value_int(123456790), "hop", wf_value_int(42)))
        return 1;
    const wf_event *em[1] = {out};
    void *rec;
    size_t len;
    if (wf_store_encode_step("step_with_a_longish_name", 1, in, em, 1, &rec, &len))
        return 1;
    char dir[512], path[600], run[64];
    snprintf(dir, sizeof dir, "%s/wf-bench-read-XXXXXX", base);
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof path, "%s/bench.db", dir);
    wf_store *s;
    char *msg = NULL;
    int rc = wf_store_open_sqlite(&s, path, NULL, &msg);
    if (rc) {
        fprintf(stderr, "open: %s %s\n", wf_err_name(rc), msg ? msg : "");
        return 1;
    }
    for (long r = 0; r < runs && rc == 0; r++) {
        snprintf(run, sizeof run, "run-%ld", r);
        rc = wf_store_create(s, run, "chain", NULL);
    }
    wf_store_rec wr = {WF_STORE_REC_STEP, rec, len};
    for (long k = 0; k < records && rc == 0; k++) {
        for (long r = 0; r < runs && rc == 0; r++) {
            snprintf(run, sizeof run, "run-%ld", r);
            rc = wf_store_append(s, run, &wr, 1, NULL, NULL, NULL, NULL);
        }
        if (rc == 0)
            rc = wf_store_flush(s);
    }
    if (rc) {
        fprintf(stderr, "fill: %s\n", wf_err_name(rc));
        return 1;
    }
    unsigned seed = 12345;
    for (int mid = 0; mid < 2; mid++) {
        long got = 0;
        int ok = 1;
        double t0 = bench_now();
        for (long q = 0; q < reads; q++) {
            seed = seed * 1103515245u + 12345u;
            snprintf(run, sizeof run, "run-%ld", (long)((seed >> 8) % (unsigned long)runs));
            long before = got;
            uint64_t from = mid ? (uint64_t)records / 2 : 0;
            ok &= wf_store_read_journal(s, run, from, 0, count, &got, NULL) == 0;
            ok &= got - before == records - (long)from;
        }
        double secs = bench_now() - t0;
        char extra[200];
        snprintf(extra, sizeof extra,
                 ",\"read\":\"%s\",\"runs\":%ld,\"records_per_run\":%ld,\"us_per_read\":%.1f",
                 mid ? "from_middle" : "whole", runs, records, secs * 1e6 / (double)reads);
        bench_report("store_read", "wf-durable", 1, reads, secs, reads, ok, extra);
    }
    wf_store_free(s);
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char f[700];
        snprintf(f, sizeof f, "%s%s", path, sfx[i]);
        unlink(f);
    }
    rmdir(dir);
    wf_free(rec);
    wf_event_release(in);
    wf_event_release(out);
    wf_registry_free(reg);
    return 0;
}
