/*
 * test_cluster.c: wf_cluster (include/wf/cluster.h) against a nats-server
 * the test starts: a batch through three worker processes with one
 * SIGKILLed and one started mid-batch and the server restarted mid-batch
 * (every run ends exactly once with the right result); the fingerprint
 * check; a malformed submission; the event stream replayed from a cursor;
 * cancel from the submitter; an unreachable server. The batch size is
 * WF_CLUSTER_RUNS (default 10000, about 50 s here). Skips without
 * nats-server.
 */
#include "harness.h"

#include <wf/wf.h>

#include <nats/nats.h>
#include <stdatomic.h>
#include <sys/time.h>

#include "cluster_flow.h"
#include "nats_server.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start_server(nserver *s)
{
    int rc = nserver_start(s);
    if (rc == 77)
        cr_skip_test("nats-server is not installed");
    cr_assert_eq(rc, 0, "nats-server did not start");
}

static wf_cluster *open_cluster(const char *url, const char *prefix)
{
    wf_cluster_params p;
    wf_cluster_params_init(&p);
    p.prefix = prefix;
    p.ack_wait_ms = 3000;
    p.lease_ms = 3000;
    p.runners = 4;
    wf_cluster *c = NULL;
    char *msg = NULL;
    int rc = wf_cluster_open(&c, url, &p, &msg);
    cr_assert_eq(rc, 0, "open: %s %s", wf_err_name(rc), msg ? msg : "");
    wf_free(msg);
    return c;
}

/* A worker process (tests/cluster_node.c): waits for its "ready" line. */
static pid_t spawn_worker(const char *url, const char *prefix, const char *variant)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a test that failed half-way */
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(CLUSTER_NODE, CLUSTER_NODE, url, prefix, "16", "1", variant, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[64] = {0};
    ssize_t n = 0;
    for (int i = 0; i < 100 && n <= 0; i++) /* read blocks until the line or exit */
        n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    cr_assert(n > 0 && strncmp(buf, "ready", 5) == 0, "worker did not start");
    return pid;
}

static void stop_worker(pid_t pid)
{
    kill(pid, SIGTERM);
    int st;
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return;
        nserver_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

static wf_event *start_n(wf_workflow *wf, int64_t n)
{
    wf_event *e = NULL;
    cr_assert_eq(wf_event_new1(&e, wf_workflow_builtin(wf, WF_START_EVENT), "n", wf_value_int(n)),
                 0);
    return e;
}

static wf_event *answer(wf_workflow *wf, int64_t r)
{
    wf_event *e = NULL;
    cr_assert_eq(wf_event_new1(&e, wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT), "response",
                               wf_value_int(r)),
                 0);
    return e;
}

Test(cluster, batch_survives_a_killed_worker_and_a_server_restart, .timeout = 300)
{
    long n = 10000;
    const char *env = getenv("WF_CLUSTER_RUNS");
    if (env && atol(env) > 0)
        n = atol(env);
    nserver srv;
    start_server(&srv);
    pid_t w[4];
    for (int i = 0; i < 3; i++)
        w[i] = spawn_worker(srv.url, "t1", "base");
    wf_cluster *c = open_cluster(srv.url, "t1");
    wf_workflow *wf = cflow_new(0);
    cr_assert_eq(wf_cluster_register(c, "cflow", wf), 0);
    wf_cluster_handler **h = calloc((size_t)n, sizeof *h);
    char id[32];
    for (long i = 0; i < n; i++) {
        snprintf(id, sizeof id, "run-%ld", i);
        cr_assert_eq(wf_cluster_submit(c, "cflow", start_n(wf, i), id, &h[i]), 0);
        /* the answer is durable: delivered when the run waits for it, wherever it runs */
        if (i % 100 != 0)
            cr_assert_eq(wf_cluster_handler_send_event(h[i], answer(wf, i % 7)), 0);
    }
    cr_assert_eq(wf_cluster_flush(c, 30000), 0);
    /* every 100th run: read its question from the event stream first, then answer */
    for (long i = 0; i < n; i += 100) {
        wf_event *ev = NULL;
        int got = 0;
        for (int k = 0; k < 600 && !got; k++) {
            int rc = wf_cluster_handler_next_event(h[i], 100, &ev);
            if (rc == 0) {
                got = wf_event_type_of(ev) == wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
                wf_event_release(ev);
            }
        }
        cr_assert(got, "run %ld streamed its question", i);
        cr_assert_eq(wf_cluster_handler_send_event(h[i], answer(wf, i % 7)), 0);
        if (i == (n / 300) * 100) { /* about a third in: kill a worker, start another */
            kill(w[0], SIGKILL);
            waitpid(w[0], NULL, 0);
            w[3] = spawn_worker(srv.url, "t1", "base");
        }
    }
    long ok = 0, restarted = 0;
    int64_t deadline = now_ms() + 240000;
    for (long i = 0; i < n; i++) {
        if (i == n / 2 && !restarted) { /* half the results in: restart the server */
            nserver_stop(&srv);
            cr_assert_eq(nserver_spawn(&srv), 0, "server restart");
            restarted = 1;
        }
        wf_event *res = NULL;
        int rc = WF_ETIMEDOUT;
        while (rc == WF_ETIMEDOUT && now_ms() < deadline)
            rc = wf_cluster_handler_wait(h[i], 1000, &res);
        cr_assert_eq(rc, 0, "run %ld: %s %s", i, wf_err_name(rc),
                     wf_cluster_handler_message(h[i]));
        int64_t v = -1;
        wf_value_get_int(wf_event_result(res), &v);
        cr_assert_eq(v, 30 * i + 6 + i % 7, "run %ld: result %lld", i, (long long)v);
        wf_event_release(res);
        /* exactly once: the store holds one finished record with that result */
        wf_store_run_info info;
        cr_assert_eq(wf_store_get_run(wf_cluster_store(c), wf_cluster_handler_run_id(h[i]),
                                      &info),
                     0);
        cr_assert_eq(info.status, WF_STORE_DONE);
        wf_store_run_info_clear(&info);
        ok++;
    }
    cr_assert_eq(ok, n);
    for (long i = 0; i < n; i++)
        wf_cluster_handler_free(h[i]);
    free(h);
    wf_cluster_free(c);
    wf_workflow_free(wf);
    for (int i = 1; i < 4; i++)
        stop_worker(w[i]);
    nserver_destroy(&srv);
}

/*
 * A worker cut off (SIGSTOP: it neither acks nor renews) mid-batch: its runs
 * are redelivered and finish on the other worker after the lease; when it
 * comes back its late writes are refused, so every run ends once.
 */
Test(cluster, an_isolated_worker_gives_its_runs_up_after_the_lease, .timeout = 120)
{
    nserver srv;
    start_server(&srv);
    pid_t a = spawn_worker(srv.url, "t5", "base");
    pid_t b = spawn_worker(srv.url, "t5", "base");
    wf_cluster *c = open_cluster(srv.url, "t5");
    wf_workflow *wf = cflow_new(0);
    cr_assert_eq(wf_cluster_register(c, "cflow", wf), 0);
    enum { N = 200 };
    wf_cluster_handler *h[N];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "iso-%d", i);
        cr_assert_eq(wf_cluster_submit(c, "cflow", start_n(wf, i), id, &h[i]), 0);
    }
    cr_assert_eq(wf_cluster_flush(c, 30000), 0);
    /* once the first run asks its question, both workers hold runs: cut one off */
    wf_event *ev = NULL;
    int rc = WF_ETIMEDOUT;
    for (int k = 0; k < 300 && rc == WF_ETIMEDOUT; k++)
        rc = wf_cluster_handler_next_event(h[0], 100, &ev);
    cr_assert_eq(rc, 0);
    wf_event_release(ev);
    kill(a, SIGSTOP);
    for (int i = 0; i < N; i++)
        cr_assert_eq(wf_cluster_handler_send_event(h[i], answer(wf, 1)), 0);
    for (int i = 0; i < N; i++) {
        wf_event *res = NULL;
        rc = wf_cluster_handler_wait(h[i], 60000, &res);
        cr_assert_eq(rc, 0, "run %d: %s", i, wf_err_name(rc));
        int64_t v = -1;
        wf_value_get_int(wf_event_result(res), &v);
        cr_assert_eq(v, 30 * i + 7);
        wf_event_release(res);
    }
    /* the isolated worker comes back: whatever it still held is refused, results stay */
    kill(a, SIGCONT);
    stop_worker(a);
    for (int i = 0; i < N; i++) {
        wf_event *res = NULL;
        cr_assert_eq(wf_cluster_handler_wait(h[i], 1000, &res), 0);
        int64_t v = -1;
        wf_value_get_int(wf_event_result(res), &v);
        cr_assert_eq(v, 30 * i + 7, "run %d's result unchanged", i);
        wf_event_release(res);
        wf_cluster_handler_free(h[i]);
    }
    wf_cluster_free(c);
    wf_workflow_free(wf);
    stop_worker(b);
    nserver_destroy(&srv);
}

Test(cluster, fingerprint_mismatch_is_a_clear_error, .timeout = 60)
{
    nserver srv;
    start_server(&srv);
    pid_t w = spawn_worker(srv.url, "t2", "variant");
    wf_cluster *c = open_cluster(srv.url, "t2");
    wf_workflow *wf = cflow_new(0);
    cr_assert_eq(wf_cluster_register(c, "cflow", wf), 0);
    wf_cluster_handler *h = NULL;
    cr_assert_eq(wf_cluster_submit(c, "cflow", start_n(wf, 1), "m1", &h), 0);
    int rc = wf_cluster_handler_wait(h, 30000, NULL);
    cr_assert_eq(rc, WF_ESTEP, "%s", wf_err_name(rc));
    cr_assert(strstr(wf_cluster_handler_message(h), "fingerprint"), "%s",
              wf_cluster_handler_message(h));
    wf_cluster_handler_free(h);
    wf_cluster_free(c);
    wf_workflow_free(wf);
    stop_worker(w);
    nserver_destroy(&srv);
}

/* Worker and submitter in one process: counters, cancel, the replayable stream. */
Test(cluster, malformed_input_cancel_and_a_late_reader, .timeout = 60)
{
    nserver srv;
    start_server(&srv);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 1;
    wf_executor *ex = NULL;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_cluster *worker = open_cluster(srv.url, "t3");
    wf_workflow *wf = cflow_new(0), *ch = chain5_new();
    cr_assert_eq(wf_cluster_register(worker, "cflow", wf), 0);
    cr_assert_eq(wf_cluster_register(worker, "chain5", ch), 0);
    cr_assert_eq(wf_cluster_register(worker, "chain5", ch), WF_EEXIST);
    cr_assert_eq(wf_cluster_work(worker, ex), 0);
    cr_assert_eq(wf_cluster_register(worker, "late", ch), WF_ESTATE);
    wf_cluster *c = open_cluster(srv.url, "t3");
    cr_assert_eq(wf_cluster_register(c, "cflow", wf), 0);
    cr_assert_eq(wf_cluster_register(c, "chain5", ch), 0);
    wf_cluster_handler *h = NULL;
    cr_assert_eq(wf_cluster_submit(c, "nope", start_n(wf, 1), "x", &h), WF_ENOTFOUND);

    /* garbage on the submission subject: rejected, counted, the worker goes on */
    natsConnection *nc = NULL;
    cr_assert_eq(natsConnection_ConnectTo(&nc, srv.url), NATS_OK);
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    cr_assert_eq(js_Publish(NULL, js, "t3.submit", "garbage", 7, NULL, NULL), NATS_OK);
    cr_assert_eq(js_Publish(NULL, js, "t3.submit", "\x95\x01\xa1x\xa1y\x01\x01", 8, NULL, NULL),
                 NATS_OK);
    cr_assert_eq(wf_cluster_submit(c, "chain5", start_n(ch, 10), "c1", &h), 0);
    wf_event *res = NULL;
    cr_assert_eq(wf_cluster_handler_wait(h, 30000, &res), 0);
    int64_t v = 0;
    wf_value_get_int(wf_event_result(res), &v);
    cr_assert_eq(v, 15);
    wf_event_release(res);
    wf_cluster_handler_free(h);
    wf_cluster_stats st;
    for (int i = 0; i < 500; i++) {
        wf_cluster_get_stats(worker, &st);
        if (st.malformed >= 2)
            break;
        nserver_sleep_ms(10);
    }
    cr_assert_eq(st.malformed, 2u);

    /* a run answered after its question; a late reader replays its stream from 0 */
    cr_assert_eq(wf_cluster_submit(c, "cflow", start_n(wf, 3), "r3", &h), 0);
    wf_event *ev = NULL;
    int rc = WF_ETIMEDOUT;
    for (int k = 0; k < 300 && rc == WF_ETIMEDOUT; k++)
        rc = wf_cluster_handler_next_event(h, 100, &ev);
    cr_assert_eq(rc, 0);
    cr_assert_eq(wf_event_type_of(ev), wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT));
    wf_value pfx = wf_event_get(ev, "prefix", wf_value_nil());
    const char *text = NULL;
    size_t tl = 0;
    cr_assert_eq(wf_value_get_string(pfx, &text, &tl), 0);
    cr_assert(tl == 5 && memcmp(text, "run 3", 5) == 0);
    wf_event_release(ev);
    cr_assert_eq(wf_cluster_handler_send_event(h, answer(wf, 100)), 0);
    cr_assert_eq(wf_cluster_handler_wait(h, 30000, &res), 0);
    wf_value_get_int(wf_event_result(res), &v);
    cr_assert_eq(v, 30 * 3 + 6 + 100);
    wf_event_release(res);
    wf_cluster_handler *late = NULL;
    cr_assert_eq(wf_cluster_handler_open(c, "cflow", "r3", &late), 0);
    int events = 0;
    for (int k = 0; k < 100; k++) {
        rc = wf_cluster_handler_next_event(late, 5000, &ev);
        if (rc)
            break;
        events++;
        wf_event_release(ev);
    }
    cr_assert_eq(rc, WF_ECLOSED, "%s", wf_err_name(rc));
    cr_assert(events >= 1);
    uint64_t end = wf_cluster_handler_cursor(late);
    wf_cluster_handler_seek(late, end - 1);
    cr_assert_eq(wf_cluster_handler_next_event(late, 5000, &ev), 0, "the last event again");
    wf_event_release(ev);
    wf_cluster_handler_free(late);
    wf_cluster_handler_free(h);

    /* cancel from the submitter while the run waits for its answer */
    cr_assert_eq(wf_cluster_submit(c, "cflow", start_n(wf, 4), "r4", &h), 0);
    rc = WF_ETIMEDOUT;
    for (int k = 0; k < 300 && rc == WF_ETIMEDOUT; k++)
        rc = wf_cluster_handler_next_event(h, 100, &ev);
    cr_assert_eq(rc, 0);
    wf_event_release(ev);
    cr_assert_eq(wf_cluster_handler_cancel(h), 0);
    cr_assert_eq(wf_cluster_handler_wait(h, 30000, NULL), WF_ECANCELLED);
    wf_cluster_handler_free(h);

    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    wf_cluster_free(c);
    wf_cluster_free(worker);
    wf_workflow_free(wf);
    wf_workflow_free(ch);
    wf_executor_free(ex);
    nserver_destroy(&srv);
}

Test(cluster, unreachable_server_is_a_clear_error)
{
    int port = nserver_free_port();
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    wf_cluster_params p;
    wf_cluster_params_init(&p);
    p.connect_attempts = 2;
    p.timeout_ms = 200;
    wf_cluster *c = NULL;
    char *msg = NULL;
    cr_assert_eq(wf_cluster_open(&c, url, &p, &msg), WF_EIO);
    cr_assert_null(c);
    cr_assert(msg && strstr(msg, "cannot reach NATS"), "%s", msg ? msg : "(null)");
    wf_free(msg);
}

/* wf_store_list callback: marks "f-<i>" ids in a counter array. */
typedef struct listed {
    int *seen;
    int n;
    int other;
} listed;

static int mark_listed(const wf_store_run_info *info, void *user)
{
    listed *l = user;
    int i = -1;
    if (sscanf(info->run_id, "f-%d", &i) == 1 && i >= 0 && i < l->n)
        l->seen[i]++;
    else
        l->other++;
    return 0;
}

/*
 * The fast path (short runs, no event streaming, packed submissions): every
 * run ends once with its result, DONE in the store, listed exactly once
 * (wf_store_list, whole and in pages of 7: cursors inside the creation index
 * messages of a pull); a run id submitted again after it ended runs no
 * second time to the submitter's view: its result stays the first one and
 * the worker counts it a duplicate.
 */
Test(cluster, fast_path_ends_each_run_once_and_lists_it_once, .timeout = 120)
{
    nserver srv;
    start_server(&srv);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2;
    wf_executor *ex = NULL;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    wf_cluster_params p;
    wf_cluster_params_init(&p);
    p.prefix = "t6";
    p.stream_events = 0;
    p.runners = 4;
    wf_cluster *worker = NULL;
    cr_assert_eq(wf_cluster_open(&worker, srv.url, &p, NULL), 0);
    wf_workflow *ch = chain5_new();
    cr_assert_eq(wf_cluster_register(worker, "chain5", ch), 0);
    cr_assert_eq(wf_cluster_work(worker, ex), 0);
    wf_cluster *c = open_cluster(srv.url, "t6");
    cr_assert_eq(wf_cluster_register(c, "chain5", ch), 0);
    enum { N = 700, AGAIN = 40 };
    wf_cluster_handler *h[N];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "f-%d", i);
        cr_assert_eq(wf_cluster_submit(c, "chain5", start_n(ch, i), id, &h[i]), 0);
    }
    cr_assert_eq(wf_cluster_flush(c, 30000), 0);
    for (int i = 0; i < N; i++) {
        wf_event *res = NULL;
        int rc = wf_cluster_handler_wait(h[i], 30000, &res);
        cr_assert_eq(rc, 0, "run %d: %s", i, wf_err_name(rc));
        int64_t v = -1;
        wf_value_get_int(wf_event_result(res), &v);
        cr_assert_eq(v, i + 5);
        wf_event_release(res);
        wf_cluster_handler_free(h[i]);
        snprintf(id, sizeof id, "f-%d", i);
        wf_store_run_info info;
        cr_assert_eq(wf_store_get_run(wf_cluster_store(c), id, &info), 0);
        cr_assert_eq(info.status, WF_STORE_DONE);
        wf_store_run_info_clear(&info);
    }
    wf_cluster_stats st;
    wf_cluster_get_stats(worker, &st);
    cr_assert_eq(st.runs_done, (uint64_t)N);
    cr_assert_eq(st.parked, 0u);

    /* listed once each, whole and in pages */
    int seen[N];
    memset(seen, 0, sizeof seen);
    listed l = {seen, N, 0};
    cr_assert_eq(wf_store_list(wf_cluster_store(c), WF_STORE_MASK_ALL, 0, 0, mark_listed, &l, NULL),
                 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "run %d listed %d times", i, seen[i]);
    cr_assert_eq(l.other, 0);
    memset(seen, 0, sizeof seen);
    uint64_t cur = 0;
    int pages = 0;
    do {
        cr_assert_eq(
            wf_store_list(wf_cluster_store(c), WF_STORE_MASK_ALL, cur, 7, mark_listed, &l, &cur),
            0);
        pages++;
    } while (cur != 0 && pages < N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "paged: run %d listed %d times", i, seen[i]);
    cr_assert_eq(pages, (N + 6) / 7);

    /* the same ids again, with other start events: the first results stay */
    for (int i = 0; i < AGAIN; i++) {
        snprintf(id, sizeof id, "f-%d", i);
        cr_assert_eq(wf_cluster_submit(c, "chain5", start_n(ch, 1000 + i), id, NULL), 0);
    }
    cr_assert_eq(wf_cluster_flush(c, 30000), 0);
    int64_t deadline = now_ms() + 60000;
    do {
        wf_cluster_get_stats(worker, &st);
    } while (st.duplicates < AGAIN && now_ms() < deadline && (nserver_sleep_ms(10), 1));
    cr_assert_eq(st.duplicates, (uint64_t)AGAIN);
    cr_assert_eq(st.runs_done, (uint64_t)N);
    for (int i = 0; i < AGAIN; i++) {
        snprintf(id, sizeof id, "f-%d", i);
        wf_cluster_handler *o = NULL;
        cr_assert_eq(wf_cluster_handler_open(c, "chain5", id, &o), 0);
        wf_event *res = NULL;
        cr_assert_eq(wf_cluster_handler_wait(o, 5000, &res), 0);
        int64_t v = -1;
        wf_value_get_int(wf_event_result(res), &v);
        cr_assert_eq(v, i + 5, "run %d: the first result", i);
        wf_event_release(res);
        wf_cluster_handler_free(o);
    }
    wf_cluster_free(c);
    wf_cluster_free(worker);
    wf_workflow_free(ch);
    wf_executor_free(ex);
    nserver_destroy(&srv);
}

/*
 * The fast path with a worker process SIGKILLed mid-batch: the runs it had
 * pulled (started in memory, nothing written, or ended and not acked) are
 * redelivered and end on the other worker; every run ends once, DONE in the
 * store, with its result.
 */
Test(cluster, fast_path_survives_a_killed_worker, .timeout = 240)
{
    nserver srv;
    start_server(&srv);
    setenv("WF_CLUSTER_STREAM_EVENTS", "0", 1);
    pid_t a = spawn_worker(srv.url, "t7", "base");
    pid_t b = spawn_worker(srv.url, "t7", "base");
    unsetenv("WF_CLUSTER_STREAM_EVENTS");
    wf_cluster *c = open_cluster(srv.url, "t7");
    wf_workflow *ch = chain5_new();
    cr_assert_eq(wf_cluster_register(c, "chain5", ch), 0);
    int N = 20000;
    wf_cluster_handler **h = calloc((size_t)N, sizeof *h);
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "k-%d", i);
        cr_assert_eq(wf_cluster_submit(c, "chain5", start_n(ch, i), id, &h[i]), 0);
    }
    cr_assert_eq(wf_cluster_flush(c, 30000), 0);
    cr_assert_eq(wf_cluster_handler_wait(h[0], 30000, NULL), 0);
    kill(a, SIGKILL); /* mid-batch: the first results are in, most are not */
    waitpid(a, NULL, 0);
    /*
     * The killed worker's runs come back after the stream's ack wait and
     * its lease (10 s each) and end on the other worker, which on a loaded
     * CI machine shares 2 cores with the other waiting suites: a bound of
     * 150 s for all of them (once 60 s a run ended at the first of the
     * killed worker's runs, not reproduced since), then what the store
     * says of the run that did not end.
     */
    int64_t until = now_ms() + 150000;
    for (int i = 0; i < N; i++) {
        wf_event *res = NULL;
        int64_t left = until - now_ms();
        int rc = wf_cluster_handler_wait(h[i], left > 1000 ? left : 1000, &res);
        if (rc != 0) {
            snprintf(id, sizeof id, "k-%d", i);
            wf_store_run_info info = {0};
            int grc = wf_store_get_run(wf_cluster_store(c), id, &info);
            cr_assert_eq(rc, 0, "run %d: %s; the store: %s, status %d, owner %s, lease until %lld",
                         i, wf_err_name(rc), wf_err_name(grc), (int)info.status,
                         info.owner ? info.owner : "(none)", (long long)info.lease_until_ms);
        }
        int64_t v = -1;
        wf_value_get_int(wf_event_result(res), &v);
        cr_assert_eq(v, i + 5);
        wf_event_release(res);
        wf_cluster_handler_free(h[i]);
        snprintf(id, sizeof id, "k-%d", i);
        wf_store_run_info info;
        cr_assert_eq(wf_store_get_run(wf_cluster_store(c), id, &info), 0);
        cr_assert_eq(info.status, WF_STORE_DONE);
        wf_store_run_info_clear(&info);
    }
    free(h);
    wf_cluster_free(c);
    wf_workflow_free(ch);
    stop_worker(b);
    nserver_destroy(&srv);
}

/* ------------------------------------------------------------ leases of the fast path */

/* Lines "WHAT N PID STEP" of the gated workflow's log (tests/cluster_flow.h) matching what
 * (NULL: any), pid (0: any) and step (NULL: any). */
static int gate_count(const char *dir, const char *what, pid_t pid, const char *step)
{
    char path[512], line[160], w[16], s[16];
    snprintf(path, sizeof path, "%s/log", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    int k = 0;
    long long n;
    long p;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%15s %lld %ld %15s", w, &n, &p, s) == 4 &&
            (what == NULL || strcmp(w, what) == 0) && (pid == 0 || p == (long)pid) &&
            (step == NULL || strcmp(s, step) == 0))
            k++;
    fclose(f);
    return k;
}

/* A counter of worker pid from its stats file (cluster_node, WF_CLUSTER_STATS_DIR), or -1. */
static long long node_stat(const char *dir, pid_t pid, const char *name)
{
    char path[512], buf[512], key[64];
    snprintf(path, sizeof path, "%s/%ld.json", dir, (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = strstr(buf, key);
    return p ? atoll(p + strlen(key)) : -1;
}

/* Polls (10 ms apart, up to 60 s) until the gate log has at least want matching lines. */
static int wait_gate(const char *dir, const char *what, pid_t pid, const char *step, int want)
{
    for (int i = 0; i < 6000; i++) {
        if (gate_count(dir, what, pid, step) >= want)
            return 1;
        nserver_sleep_ms(10);
    }
    return 0;
}

static int wait_stat(const char *dir, pid_t pid, const char *name, long long want)
{
    for (int i = 0; i < 6000; i++) {
        if (node_stat(dir, pid, name) >= want)
            return 1;
        nserver_sleep_ms(10);
    }
    return 0;
}

/*
 * Per run n of the gated log: once a worker other than the first logged a line of n, the
 * first logs no "begin" nor "effect" of n any more (it may only say it saw its run cancelled:
 * a step in progress when it stalled), and each idempotency key n/STEP has exactly one
 * effect. So no two workers ran steps of one run at once, and no effect was applied twice.
 */
static void check_gate_log(const char *dir, int runs)
{
    char path[512], line[160], w[16], s[16];
    snprintf(path, sizeof path, "%s/log", dir);
    long first[64] = {0}, second[64] = {0};
    int effects[64][2] = {{0}};
    cr_assert(runs <= 64);
    FILE *f = fopen(path, "r");
    cr_assert(f != NULL);
    long long n;
    long p;
    while (fgets(line, sizeof line, f)) {
        cr_assert_eq(sscanf(line, "%15s %lld %ld %15s", w, &n, &p, s), 4, "log line: %s", line);
        cr_assert(n >= 0 && n < runs);
        if (first[n] == 0)
            first[n] = p;
        else if (p != first[n] && second[n] == 0)
            second[n] = p;
        if (second[n] && p == first[n])
            cr_assert_str_eq(w, "cancel", "run %lld: worker %ld ran a step after %ld took over: %s",
                             n, p, second[n], line);
        if (second[n])
            cr_assert(p == first[n] || p == second[n], "run %lld on a third worker", n);
        if (strcmp(w, "effect") == 0)
            effects[n][strcmp(s, "enter") == 0 ? 0 : 1]++;
    }
    fclose(f);
    for (int i = 0; i < runs; i++) {
        cr_assert_eq(effects[i][0], 1, "run %d: effect %d/enter applied %d times", i, i,
                     effects[i][0]);
        cr_assert_eq(effects[i][1], 1, "run %d: effect %d/finish applied %d times", i, i,
                     effects[i][1]);
    }
}

/* Submits runs of "gated" (ids PREFIX-i, n = i) through c. */
static wf_workflow *submit_gated(wf_cluster *c, const char *prefix, int runs,
                                 wf_cluster_handler **h)
{
    wf_workflow *wf = gated_new();
    cr_assert_eq(wf_cluster_register(c, "gated", wf), 0);
    char id[32];
    for (int i = 0; i < runs; i++) {
        snprintf(id, sizeof id, "%s-%d", prefix, i);
        cr_assert_eq(wf_cluster_submit(c, "gated", start_n(wf, i), id, &h[i]), 0);
    }
    cr_assert_eq(wf_cluster_flush(c, 30000), 0);
    return wf;
}

static void gate_env(const char *dir, const char *lease)
{
    setenv("WF_GATE", dir, 1);
    setenv("WF_CLUSTER_STATS_DIR", dir, 1);
    setenv("WF_CLUSTER_ACK_WAIT", "1000", 1);
    setenv("WF_CLUSTER_LEASE", lease, 1);
    setenv("WF_CLUSTER_FAST_MS", "600000", 1); /* the gated runs stay on the fast path */
}

static void gate_unenv(void)
{
    unsetenv("WF_GATE");
    unsetenv("WF_CLUSTER_STATS_DIR");
    unsetenv("WF_CLUSTER_ACK_WAIT");
    unsetenv("WF_CLUSTER_LEASE");
    unsetenv("WF_CLUSTER_FAST_MS");
}

static void open_gate(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/open", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    fclose(f);
}

static void wait_gated_results(wf_cluster_handler **h, int runs)
{
    for (int i = 0; i < runs; i++) {
        wf_event *res = NULL;
        int rc = wf_cluster_handler_wait(h[i], 60000, &res);
        cr_assert_eq(rc, 0, "run %d: %s", i, wf_err_name(rc));
        int64_t v = -1;
        wf_value_get_int(wf_event_result(res), &v);
        cr_assert_eq(v, i + 1);
        wf_event_release(res);
        wf_cluster_handler_free(h[i]);
    }
}

/*
 * A worker stalls (SIGSTOP) with a batch on the fast path, past the ack wait but inside its
 * lease: the batch is redelivered to the other worker, which finds the lease alive and
 * leaves the batch alone (busy); the first comes back and finishes every run itself.
 */
Test(cluster, a_stalled_workers_batch_waits_for_its_lease, .timeout = 120)
{
    enum { RUNS = 4 }; /* one per thread of the blocking pool: all at the gate at once */
    nserver srv;
    start_server(&srv);
    char dir[] = "/tmp/wf-gate-XXXXXX";
    cr_assert(mkdtemp(dir) != NULL);
    gate_env(dir, "60000"); /* the stall (the test's reaction time) stays well inside it */
    pid_t a = spawn_worker(srv.url, "t8", "base");
    wf_cluster *c = open_cluster(srv.url, "t8");
    wf_cluster_handler *h[RUNS];
    wf_workflow *wf = submit_gated(c, "st", RUNS, h);
    cr_assert(wait_gate(dir, "begin", a, "enter", RUNS), "the runs did not start on A");
    kill(a, SIGSTOP);
    pid_t b = spawn_worker(srv.url, "t8", "base");
    gate_unenv();
    cr_assert(wait_stat(dir, b, "busy", 1), "B never saw the batch held by A's lease");
    kill(a, SIGCONT);
    open_gate(dir);
    wait_gated_results(h, RUNS);
    cr_assert_eq(gate_count(dir, NULL, b, NULL), 0, "B ran a step of a leased run");
    cr_assert_eq(gate_count(dir, "effect", a, NULL), 2 * RUNS);
    check_gate_log(dir, RUNS);
    cr_assert_eq(node_stat(dir, a, "leases_lost"), 0);
    wf_cluster_free(c);
    wf_workflow_free(wf);
    stop_worker(a);
    stop_worker(b);
    nserver_rm_tree(dir);
    nserver_destroy(&srv);
}

/*
 * A worker stalls with a batch on the fast path past its lease: the other worker takes the
 * lease (only once it lapsed) and runs the batch; the first, back, finds its lease taken,
 * cancels its runs (its steps in progress at the gate see the cancel, apply nothing) and
 * writes nothing. Each run's steps ran on one worker at a time and each effect once.
 */
Test(cluster, a_worker_stalled_past_its_lease_gives_its_batch_up, .timeout = 120)
{
    enum { RUNS = 4 };
    nserver srv;
    start_server(&srv);
    char dir[] = "/tmp/wf-gate-XXXXXX";
    cr_assert(mkdtemp(dir) != NULL);
    gate_env(dir, "2000");
    pid_t a = spawn_worker(srv.url, "t9", "base");
    wf_cluster *c = open_cluster(srv.url, "t9");
    wf_cluster_handler *h[RUNS];
    wf_workflow *wf = submit_gated(c, "lo", RUNS, h);
    cr_assert(wait_gate(dir, "begin", a, "enter", RUNS), "the runs did not start on A");
    kill(a, SIGSTOP);
    pid_t b = spawn_worker(srv.url, "t9", "base");
    gate_unenv();
    cr_assert(wait_gate(dir, "begin", b, "enter", RUNS), "B did not take the runs over");
    kill(a, SIGCONT);
    cr_assert(wait_gate(dir, "cancel", a, "enter", RUNS), "A did not give its runs up");
    cr_assert(wait_stat(dir, a, "leases_lost", 1));
    open_gate(dir);
    wait_gated_results(h, RUNS);
    cr_assert_eq(gate_count(dir, "effect", a, NULL), 0, "A applied an effect after the stall");
    check_gate_log(dir, RUNS);
    cr_assert_eq(node_stat(dir, a, "runs_done"), 0);
    wf_cluster_free(c);
    wf_workflow_free(wf);
    stop_worker(a);
    stop_worker(b);
    nserver_rm_tree(dir);
    nserver_destroy(&srv);
}

/*
 * Fencing: a worker stalls past its lease with steps in progress; the other worker takes the
 * runs over and finishes them while the first is still stopped (the gate opens meanwhile).
 * Thawed, the first must apply no effect and start no step of those runs even before its
 * lease write tells it the lease is lost: its steps in progress find their runs cancelled
 * (their fence passed) as soon as they look, and nothing after them starts.
 */
Test(cluster, a_worker_thawed_past_its_lease_starts_nothing_of_its_runs, .timeout = 120)
{
    enum { RUNS = 4 };
    nserver srv;
    start_server(&srv);
    char dir[] = "/tmp/wf-gate-XXXXXX";
    cr_assert(mkdtemp(dir) != NULL);
    gate_env(dir, "2000");
    pid_t a = spawn_worker(srv.url, "t12", "base");
    wf_cluster *c = open_cluster(srv.url, "t12");
    wf_cluster_handler *h[RUNS];
    wf_workflow *wf = submit_gated(c, "fe", RUNS, h);
    cr_assert(wait_gate(dir, "begin", a, "enter", RUNS), "the runs did not start on A");
    kill(a, SIGSTOP);
    pid_t b = spawn_worker(srv.url, "t12", "base");
    gate_unenv();
    cr_assert(wait_gate(dir, "begin", b, "enter", RUNS), "B did not take the runs over");
    open_gate(dir); /* A's steps, still stopped, will find it open when they wake */
    wait_gated_results(h, RUNS);
    cr_assert_eq(gate_count(dir, "effect", b, NULL), 2 * RUNS);
    kill(a, SIGCONT);
    cr_assert(wait_gate(dir, "cancel", a, "enter", RUNS), "A's steps did not see their fence");
    cr_assert(wait_stat(dir, a, "leases_lost", 1));
    cr_assert_eq(gate_count(dir, "effect", a, NULL), 0, "A applied an effect after its fence");
    cr_assert_eq(gate_count(dir, "begin", a, "finish"), 0, "A started a step after its fence");
    check_gate_log(dir, RUNS);
    cr_assert_eq(node_stat(dir, a, "runs_done"), 0);
    wf_cluster_free(c);
    wf_workflow_free(wf);
    stop_worker(a);
    stop_worker(b);
    nserver_rm_tree(dir);
    nserver_destroy(&srv);
}

/*
 * Run ids submitted again in a packed batch, after they ended: their steps do not run again
 * (no new "begin" in the gated log), each resubmission gets the stored result (the first
 * one, not its new input's) and counts as a duplicate.
 */
Test(cluster, a_resubmitted_run_does_not_run_its_steps_again, .timeout = 120)
{
    enum { RUNS = 8 };
    nserver srv;
    start_server(&srv);
    char dir[] = "/tmp/wf-gate-XXXXXX";
    cr_assert(mkdtemp(dir) != NULL);
    open_gate(dir);
    gate_env(dir, "10000");
    unsetenv("WF_CLUSTER_FAST_MS");
    pid_t a = spawn_worker(srv.url, "t10", "base");
    gate_unenv();
    wf_cluster *c = open_cluster(srv.url, "t10");
    wf_cluster_handler *h[RUNS];
    wf_workflow *wf = submit_gated(c, "rs", RUNS, h);
    wait_gated_results(h, RUNS);
    cr_assert_eq(gate_count(dir, "begin", 0, NULL), 2 * RUNS);
    char id[32];
    for (int i = 0; i < RUNS; i++) {
        snprintf(id, sizeof id, "rs-%d", i);
        cr_assert_eq(wf_cluster_submit(c, "gated", start_n(wf, 100 + i), id, &h[i]), 0);
    }
    cr_assert_eq(wf_cluster_flush(c, 30000), 0);
    wait_gated_results(h, RUNS); /* i + 1: the first result, not 100 + i + 1 */
    cr_assert(wait_stat(dir, a, "duplicates", RUNS), "the resubmissions were not duplicates");
    cr_assert_eq(gate_count(dir, "begin", 0, NULL), 2 * RUNS, "a resubmitted run ran again");
    check_gate_log(dir, RUNS);
    wf_cluster_free(c);
    wf_workflow_free(wf);
    stop_worker(a);
    nserver_rm_tree(dir);
    nserver_destroy(&srv);
}

/*
 * A run parked while it waits for a human (its submission held, no runner thread) wakes
 * when the answer is sent, through the worker's subscription to the input subjects, not a
 * redelivery: woken counts it, and the run ends with the answer in its result.
 */
Test(cluster, a_parked_run_wakes_on_its_input, .timeout = 120)
{
    nserver srv;
    start_server(&srv);
    char dir[] = "/tmp/wf-gate-XXXXXX";
    cr_assert(mkdtemp(dir) != NULL);
    setenv("WF_CLUSTER_STATS_DIR", dir, 1);
    pid_t a = spawn_worker(srv.url, "t11", "base");
    unsetenv("WF_CLUSTER_STATS_DIR");
    wf_cluster *c = open_cluster(srv.url, "t11");
    wf_workflow *wf = cflow_new(0);
    cr_assert_eq(wf_cluster_register(c, "cflow", wf), 0);
    enum { RUNS = 3 };
    wf_cluster_handler *h[RUNS];
    char id[32];
    for (int i = 0; i < RUNS; i++) {
        snprintf(id, sizeof id, "pk-%d", i);
        cr_assert_eq(wf_cluster_submit(c, "cflow", start_n(wf, i), id, &h[i]), 0);
    }
    cr_assert_eq(wf_cluster_flush(c, 30000), 0);
    cr_assert(wait_stat(dir, a, "parked", RUNS), "the runs did not park");
    for (int i = 0; i < RUNS; i++)
        cr_assert_eq(wf_cluster_handler_send_event(h[i], answer(wf, 2)), 0);
    for (int i = 0; i < RUNS; i++) {
        wf_event *res = NULL;
        int rc = wf_cluster_handler_wait(h[i], 60000, &res);
        cr_assert_eq(rc, 0, "run %d: %s", i, wf_err_name(rc));
        int64_t v = -1;
        wf_value_get_int(wf_event_result(res), &v);
        cr_assert_eq(v, 30 * i + 8);
        wf_event_release(res);
        wf_cluster_handler_free(h[i]);
    }
    cr_assert(wait_stat(dir, a, "woken", RUNS), "the runs were not woken by their inputs");
    wf_cluster_free(c);
    wf_workflow_free(wf);
    stop_worker(a);
    nserver_rm_tree(dir);
    nserver_destroy(&srv);
}
