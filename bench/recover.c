/*
 * recover.c: recovery of a store holding --events journaled events across
 * --runs durable runs (default 1,000,000 over 10,000). A child process
 * starts the runs (each collects items: it waits for events + 1 of them),
 * sends each its share of items by run id (journaled), lets the store
 * commit and dies (_exit: no shutdown, no checkpoint after the start).
 * Then this process opens the store, attaches it and calls
 * wf_executor_recover: the time to the first step invocation of a resumed
 * run, the time recover takes, and the total until every run has got its
 * last item (sent now) and finished.
 * Usage: recover [--runs R] [--events E] [--threads T] [--dir DIR]
 */
#include <wf/wf.h>

#include "common.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static const wf_event_type *T_ITEM, *T_START;
static long need; /* items a run collects before it finishes */
static const wf_event_type **want;
static atomic_int first_seen;
static double first_t;

static int begin(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    return 0; /* the run waits for its items */
}

static int acc(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    if (!atomic_exchange(&first_seen, 1))
        first_t = bench_now();
    wf_event **got = malloc((size_t)need * sizeof *got);
    int rc = wf_ctx_collect_events(ctx, in, want, (size_t)need, NULL, got);
    if (rc == WF_EAGAIN) {
        free(got);
        return 0;
    }
    if (rc < 0) {
        free(got);
        return rc;
    }
    for (long i = 0; i < need; i++)
        wf_event_release(got[i]);
    free(got);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(need));
}

static wf_workflow *make_wf(void)
{
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "recover", NULL) < 0)
        return NULL;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Item", NULL, &T_ITEM);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    wf_workflow_add_step(wf, "begin", begin, &p, NULL);
    p.accepts = &T_ITEM;
    wf_workflow_add_step(wf, "acc", acc, &p, NULL);
    wf_workflow_set_validation(wf, 0); /* items come from outside */
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    return wf;
}

static wf_store *open_store(const char *db, const char *owner)
{
    wf_store_params sp;
    wf_store_params_init(&sp);
    sp.owner = owner;
    wf_store *s = NULL;
    char *msg = NULL;
    if (wf_store_open_sqlite(&s, db, &sp, &msg) < 0) {
        fprintf(stderr, "recover: %s\n", msg ? msg : "cannot open the store");
        return NULL;
    }
    return s;
}

static wf_executor *new_exec(long threads, wf_store *s, uint32_t ck)
{
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    wf_executor *ex;
    if (wf_executor_new(&ex, &ep) < 0)
        return NULL;
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.checkpoint_ms = ck;
    if (wf_executor_attach_store(ex, s, &dp) < 0)
        return NULL;
    return ex;
}

static void item(wf_event **e, long i)
{
    wf_event_new1(e, T_ITEM, "i", wf_value_int(i));
}

int main(int argc, char **argv)
{
    long runs = bench_arg(argc, argv, "--runs", 10000);
    long events = bench_arg(argc, argv, "--events", 1000000);
    long threads = bench_arg(argc, argv, "--threads", 2);
    const char *dir = bench_arg_str(argc, argv, "--dir", "/tmp");
    long per = events / runs;
    need = per + 1;
    want = malloc((size_t)need * sizeof *want);
    wf_workflow *wf = make_wf();
    for (long i = 0; i < need; i++)
        want[i] = T_ITEM;
    char db[512];
    snprintf(db, sizeof db, "%s/wf-recover-%d.db", dir, (int)getpid());

    double ts = bench_now();
    pid_t pid = fork();
    if (pid == 0) { /* the process that dies */
        wf_store *s = open_store(db, "bench-recover");
        wf_executor *ex = s ? new_exec(threads, s, 1000000000u) : NULL;
        if (ex == NULL)
            _exit(1);
        char id[32];
        for (long r = 0; r < runs; r++) {
            snprintf(id, sizeof id, "run-%ld", r);
            wf_event *st;
            wf_event_new(&st, T_START, 0);
            wf_handler *h;
            if (wf_run_start_durable(ex, wf, NULL, id, st, NULL, &h, NULL) < 0)
                _exit(2);
            wf_handler_free(h);
        }
        for (long i = 0; i < per; i++)
            for (long r = 0; r < runs; r++) {
                snprintf(id, sizeof id, "run-%ld", r);
                wf_event *e;
                item(&e, i);
                if (wf_durable_send(ex, id, e, NULL) < 0)
                    _exit(3);
            }
        wf_store_flush(s);
        _exit(0); /* a crash: no shutdown */
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "recover: the setup process failed\n");
        return 1;
    }
    double setup = bench_now() - ts;

    wf_store *s = open_store(db, "bench-recover");
    wf_executor *ex = s ? new_exec(threads, s, 10) : NULL;
    if (ex == NULL)
        return 1;
    double t0 = bench_now();
    wf_recover_info ri;
    char *msg = NULL;
    int rc = wf_executor_recover(ex, &wf, 1, &ri, &msg);
    double t_rec = bench_now() - t0;
    if (rc < 0 || ri.resumed != (uint32_t)runs) {
        fprintf(stderr, "recover: %s, %u resumed, %u failed, %u busy: %s\n", wf_err_name(rc),
                ri.resumed, ri.failed, ri.busy, msg ? msg : "");
        return 1;
    }
    char id[32];
    int ok = 1;
    for (long r = 0; r < runs; r++) {
        snprintf(id, sizeof id, "run-%ld", r);
        wf_event *e;
        item(&e, per);
        ok = ok && wf_durable_send(ex, id, e, NULL) == 0;
    }
    for (long r = 0; r < runs; r++) {
        snprintf(id, sizeof id, "run-%ld", r);
        wf_handler *h;
        if (wf_handler_open(ex, id, &h) < 0)
            continue; /* finished already */
        ok = ok && wf_handler_wait(h, -1, NULL) == 0;
        wf_handler_free(h);
    }
    double total = bench_now() - t0;
    double first = atomic_load(&first_seen) ? first_t - t0 : -1;
    char extra[300];
    snprintf(extra, sizeof extra,
             ",\"runs\":%ld,\"journaled\":%ld,\"first_step_s\":%.3f,\"recover_s\":%.3f,"
             "\"total_s\":%.3f,\"setup_s\":%.3f",
             runs, per * runs, first, t_rec, total, setup);
    bench_report("recover", "wf-durable", threads, per * runs, total, per * runs, ok, extra);
    wf_executor_free(ex);
    wf_store_free(s);
    wf_workflow_free(wf);
    free(want);
    char side[600];
    unlink(db);
    snprintf(side, sizeof side, "%s-wal", db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db);
    unlink(side);
    return ok ? 0 : 1;
}
