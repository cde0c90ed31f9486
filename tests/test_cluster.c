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
Test(cluster, fast_path_survives_a_killed_worker, .timeout = 120)
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
    for (int i = 0; i < N; i++) {
        wf_event *res = NULL;
        int rc = wf_cluster_handler_wait(h[i], 60000, &res);
        cr_assert_eq(rc, 0, "run %d: %s", i, wf_err_name(rc));
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
