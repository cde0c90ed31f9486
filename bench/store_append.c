/*
 * store_append: journal records appended per second through the store's
 * group commit (SQLite backend), from T threads, each appending to its own
 * runs records the size of a step completion (~100 bytes, encoded with
 * wf_store_encode_step). The clock stops when wf_store_flush returns, so
 * every record counted is durable under the policy.
 *
 *   bench_store_append [--n RECORDS] [--threads T] [--batch B] [--runs R]
 *                      [--commit interval|every|off] [--interval MS] [--dir DIR]
 *
 * One JSON line per run, "impl":"wf-durable"; "batch" records per append.
 */
#include "common.h"

#include <wf/wf.h>

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

typedef struct job {
    wf_store *s;
    int id;
    long records;
    long batch;
    long runs;
    const void *rec;
    size_t len;
    int rc;
} job;

static atomic_long acked;

static void on_done(int rc, uint64_t ticket, void *user)
{
    (void)ticket;
    if (rc == 0)
        atomic_fetch_add_explicit(&acked, (long)(intptr_t)user, memory_order_relaxed);
}

static void *producer(void *arg)
{
    job *j = arg;
    wf_store_rec recs[64];
    for (long k = 0; k < j->batch; k++)
        recs[k] = (wf_store_rec){WF_STORE_REC_STEP, j->rec, j->len};
    char run[64];
    for (long done = 0, i = 0; done < j->records && j->rc == 0; i++) {
        long n = j->records - done < j->batch ? j->records - done : j->batch;
        snprintf(run, sizeof run, "bench-%d-%ld", j->id, i % j->runs);
        j->rc =
            wf_store_append(j->s, run, recs, (size_t)n, on_done, (void *)(intptr_t)n, NULL, NULL);
        done += n;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, "--n", 2000000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    long batch = bench_arg(argc, argv, "--batch", 1);
    long runs = bench_arg(argc, argv, "--runs", 4);
    long interval = bench_arg(argc, argv, "--interval", 10);
    const char *commit = bench_arg_str(argc, argv, "--commit", "interval");
    const char *base =
        bench_arg_str(argc, argv, "--dir", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (threads < 1 || threads > 64 || batch < 1 || batch > 64 || runs < 1 || n < threads) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }

    /* A step completion: its input event and one emitted event, ~100 bytes. */
    wf_registry *reg;
    const wf_event_type *in_t, *out_t;
    wf_event *in, *out;
    if (wf_registry_new(&reg) || wf_registry_add(reg, "ChainEvent", NULL, &in_t) ||
        wf_registry_add(reg, "ChainResult", NULL, &out_t) ||
        wf_event_new2(&in, in_t, "value", wf_value_int(123456789), "hop", wf_value_int(41)) ||
        wf_event_new2(&out, out_t, "value", wf_value_int(123456790), "hop", wf_value_int(42))) {
        fprintf(stderr, "events\n");
        return 1;
    }
    const wf_event *em[1] = {out};
    void *rec;
    size_t len;
    if (wf_store_encode_step("step_with_a_longish_name", 1, in, em, 1, &rec, &len)) {
        fprintf(stderr, "encode\n");
        return 1;
    }

    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/wf-bench-store-XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/bench.db", dir);
    wf_store_params p;
    wf_store_params_init(&p);
    p.commit = strcmp(commit, "every") == 0 ? WF_STORE_COMMIT_EVERY
               : strcmp(commit, "off") == 0 ? WF_STORE_COMMIT_OFF
                                            : WF_STORE_COMMIT_INTERVAL;
    p.interval_ms = (uint32_t)interval;
    wf_store *s;
    char *msg = NULL;
    int rc = wf_store_open_sqlite(&s, path, &p, &msg);
    if (rc) {
        fprintf(stderr, "open: %s %s\n", wf_err_name(rc), msg ? msg : "");
        return 1;
    }
    char run[64];
    for (long t = 0; t < threads; t++)
        for (long r = 0; r < runs; r++) {
            snprintf(run, sizeof run, "bench-%ld-%ld", t, r);
            if ((rc = wf_store_create(s, run, "chain", NULL)) != 0) {
                fprintf(stderr, "create: %s\n", wf_err_name(rc));
                return 1;
            }
        }
    wf_store_flush(s);

    job jobs[64];
    pthread_t th[64];
    double t0 = bench_now();
    for (long t = 0; t < threads; t++) {
        jobs[t] = (job){s, (int)t, n / threads + (t < n % threads), batch, runs, rec, len, 0};
        pthread_create(&th[t], NULL, producer, &jobs[t]);
    }
    int ok = 1;
    for (long t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        ok &= jobs[t].rc == 0;
    }
    double t_enq = bench_now() - t0;
    ok &= wf_store_flush(s) == 0;
    double secs = bench_now() - t0;
    ok &= atomic_load(&acked) == n;

    /* verify: every run's journal is complete */
    long total = 0;
    for (long t = 0; t < threads; t++)
        for (long r = 0; r < runs; r++) {
            wf_store_run_info info;
            snprintf(run, sizeof run, "bench-%ld-%ld", t, r);
            if (wf_store_get_run(s, run, &info) == 0) {
                total += (long)info.next_seq;
                wf_store_run_info_clear(&info);
            }
        }
    ok &= total == n;
    char extra[200];
    snprintf(extra, sizeof extra,
             ",\"commit\":\"%s\",\"interval_ms\":%ld,\"batch\":%ld,\"record_bytes\":%zu,"
             "\"enqueue_s\":%.6f",
             commit, interval, batch, len, t_enq);
    bench_report("store_append", "wf-durable", threads, n, secs, n, ok, extra);
    wf_store_free(s);
    char f[700];
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "%s%s", path, sfx[i]);
        unlink(f);
    }
    rmdir(dir);
    wf_free(rec);
    wf_event_release(in);
    wf_event_release(out);
    wf_registry_free(reg);
    return ok ? 0 : 1;
}
