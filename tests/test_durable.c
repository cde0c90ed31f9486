/*
 * test_durable.c: durable runs (include/wf/durable.h) over the SQLite
 * store: results reported once durable, run ids used twice, re-attach by
 * id (status, send, cancel), invocation keys, a journal naming a step the
 * workflow no longer has, and the crash test: child processes run durable
 * runs with a fan-out + collect, a retried step and a human-in-the-loop
 * answer sent by run id; the parent SIGKILLs them at random moments and
 * starts a new one on the same store; at the end every run has exactly one
 * right result and the side effects, applied through idempotency keys,
 * are each there once. WF_DURABLE_RUNS and WF_DURABLE_KILLS scale it.
 * Builds against tests/harness.h under TSan (WF_PLAIN_TESTS).
 */
#include "harness.h"

#include <wf/wf.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

typedef struct tdir {
    char dir[256];
    char db[300];
    char fx[300]; /* the side effects: one file per idempotency key */
} tdir;

static void tdir_make(tdir *t)
{
    const char *base = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/wf-durable-XXXXXX", base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(t->dir));
    snprintf(t->db, sizeof t->db, "%s/runs.db", t->dir);
    snprintf(t->fx, sizeof t->fx, "%s/fx", t->dir);
    cr_assert_eq(mkdir(t->fx, 0700), 0);
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char p[900];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0)
            rm_dir(p);
    }
    closedir(d);
    rmdir(dir);
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

static wf_store *open_store(const char *path, const char *owner)
{
    wf_store_params p;
    wf_store_params_init(&p);
    p.owner = owner;
    wf_store *s = NULL;
    char *msg = NULL;
    int rc = wf_store_open_sqlite(&s, path, &p, &msg);
    if (rc < 0)
        fprintf(stderr, "open %s: %s (%s)\n", path, wf_err_name(rc), msg ? msg : "");
    wf_free(msg);
    return rc < 0 ? NULL : s;
}

static wf_executor *new_exec(uint32_t threads)
{
    wf_executor_params p;
    wf_executor_params_init(&p);
    p.threads = threads;
    wf_executor *ex = NULL;
    if (wf_executor_new(&ex, &p) < 0)
        return NULL;
    return ex;
}

static int64_t geti(const wf_event *e, const char *k)
{
    int64_t v = -1;
    wf_value_get_int(wf_event_get(e, k, wf_value_nil()), &v);
    return v;
}

/* --------------------------------------------------- the crash workflow */

/*
 * start{n} -> split: Part{i} x 3 -> part (side effect) -> Done{i, v} ->
 * gather (collect 3) -> Gathered{sum} -> flaky (fails on attempt 1, side
 * effect on attempt 2) -> Asked{sum}; join collects Asked and Answer{v}
 * (sent by run id) -> Stop(sum * 1000 + v).
 */
static const wf_event_type *T_START, *T_STOP, *T_PART, *T_DONE, *T_GATH, *T_ASKED, *T_ANSWER;
static char g_fx[300];
static atomic_int g_dups;

static int64_t expected(int64_t n)
{
    return (5 + 3 * n) * 1000 + n % 7;
}

/* Applies the invocation's side effect once per idempotency key. */
static int effect(wf_ctx *ctx)
{
    char key[512], path[900];
    int len = wf_ctx_invocation_key(ctx, key, sizeof key);
    if (len < 0)
        return len;
    for (char *p = key; *p; p++)
        if (*p == '/')
            *p = '_';
    snprintf(path, sizeof path, "%s/%s", g_fx, key);
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd < 0 && errno == EEXIST) {
        atomic_fetch_add(&g_dups, 1); /* done before a crash: not again */
        return 0;
    }
    if (fd < 0)
        return WF_EIO;
    close(fd);
    return 0;
}

static int s_split(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t n = geti(in, "n");
    for (int64_t i = 0; i < 3; i++) {
        wf_event *e;
        int rc = wf_event_new2(&e, T_PART, "i", wf_value_int(i), "n", wf_value_int(n));
        if (rc == 0)
            rc = wf_ctx_send_event(ctx, e, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int s_part(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int rc = effect(ctx);
    if (rc < 0)
        return rc;
    int64_t i = geti(in, "i"), n = geti(in, "n");
    return wf_event_new2(out, T_DONE, "i", wf_value_int(i), "v", wf_value_int(i * i + n));
}

static int s_gather(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *want[3] = {T_DONE, T_DONE, T_DONE};
    wf_event *got[3];
    int rc = wf_ctx_collect_events(ctx, in, want, 3, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    int64_t sum = 0;
    for (int k = 0; k < 3; k++) {
        sum += geti(got[k], "v");
        wf_event_release(got[k]);
    }
    return wf_event_new1(out, T_GATH, "sum", wf_value_int(sum));
}

static int s_flaky(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    if (wf_ctx_attempt(ctx) == 1)
        return WF_EIO; /* retried */
    int rc = effect(ctx);
    if (rc < 0)
        return rc;
    return wf_event_new1(out, T_ASKED, "sum", wf_value_int(geti(in, "sum")));
}

static int s_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *want[2] = {T_ASKED, T_ANSWER};
    wf_event *got[2];
    int rc = wf_ctx_collect_events(ctx, in, want, 2, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    int64_t r = geti(got[0], "sum") * 1000 + geti(got[1], "v");
    wf_event_release(got[0]);
    wf_event_release(got[1]);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(r));
}

static int add(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *a1,
               const wf_event_type *a2, const wf_event_type *e1, const wf_retry_policy *retry)
{
    const wf_event_type *acc[2] = {a1, a2};
    const wf_event_type *em[1] = {e1};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = a2 ? 2 : 1;
    p.emits = em;
    p.n_emits = 1;
    p.retry = retry;
    return wf_workflow_add_step(wf, name, fn, &p, NULL);
}

/* The crash workflow; without_join: the same name without its last step (a changed definition). */
static wf_workflow *crash_wf(int without_join)
{
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "crash", NULL) < 0)
        return NULL;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Part", NULL, &T_PART);
    wf_workflow_event_type(wf, "Done", NULL, &T_DONE);
    wf_workflow_event_type(wf, "Gathered", NULL, &T_GATH);
    wf_workflow_event_type(wf, "Asked", NULL, &T_ASKED);
    wf_workflow_event_type(wf, "Answer", NULL, &T_ANSWER);
    wf_retry_stop *stop;
    wf_retry_policy *pol;
    if (wf_retry_stop_after_attempt(&stop, 3) < 0 || wf_retry_policy_new(&pol, NULL, NULL, stop) < 0)
        return NULL;
    int rc = add(wf, "split", s_split, T_START, NULL, T_PART, NULL);
    rc |= add(wf, "part", s_part, T_PART, NULL, T_DONE, NULL);
    rc |= add(wf, "gather", s_gather, T_DONE, NULL, T_GATH, NULL);
    rc |= add(wf, "flaky", s_flaky, T_GATH, NULL, T_ASKED, pol);
    if (!without_join)
        rc |= add(wf, "join", s_join, T_ASKED, T_ANSWER, T_STOP, NULL);
    wf_retry_policy_free(pol);
    wf_workflow_set_validation(wf, 0); /* Answer comes from outside */
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT); /* slow under the sanitizers, across crashes */
    return rc ? NULL : wf;
}

static void run_name(char *buf, size_t cap, int k)
{
    snprintf(buf, cap, "r%05d", k);
}

static wf_event *answer(int k)
{
    wf_event *e = NULL;
    wf_event_new1(&e, T_ANSWER, "v", wf_value_int(k % 7));
    return e;
}

/* A child: recovers, starts what is not in the store, answers every run, waits for all. */
static int child_main(const char *db, int nruns)
{
    wf_workflow *wf = crash_wf(0);
    wf_store *s = open_store(db, "crash-child");
    wf_executor *ex = new_exec(2);
    if (wf == NULL || s == NULL || ex == NULL)
        return 10;
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.checkpoint_ms = 5;
    if (wf_executor_attach_store(ex, s, &dp) < 0)
        return 11;
    wf_recover_info ri;
    char *msg = NULL;
    if (wf_executor_recover(ex, &wf, 1, &ri, &msg) < 0 || ri.failed || ri.busy) {
        fprintf(stderr, "recover: %u failed, %u busy: %s\n", ri.failed, ri.busy, msg ? msg : "");
        return 12;
    }
    wf_free(msg);
    if (getenv("WF_DURABLE_VERBOSE"))
        fprintf(stderr, "child %d: %u resumed, %u forgotten, %d duplicate effects seen\n",
                (int)getpid(), ri.resumed, ri.forgotten, atomic_load(&g_dups));
    char id[32];
    for (int k = 0; k < nruns; k++) {
        run_name(id, sizeof id, k);
        wf_store_run_info info = {0};
        int rc = wf_store_get_run(s, id, &info);
        wf_store_run_info_clear(&info);
        if (rc != WF_ENOTFOUND)
            continue; /* started by an earlier child (finished, or recovered above) */
        wf_event *st = NULL;
        wf_event_new1(&st, T_START, "n", wf_value_int(k));
        wf_handler *h;
        rc = wf_run_start_durable(ex, wf, NULL, id, st, NULL, &h, NULL);
        if (rc < 0) {
            fprintf(stderr, "start %s: %s\n", id, wf_err_name(rc));
            return 13;
        }
        wf_handler_free(h);
    }
    for (int k = 0; k < nruns; k++) { /* answered by run id (again after a crash: harmless) */
        run_name(id, sizeof id, k);
        int rc = wf_durable_send(ex, id, answer(k), NULL);
        if (rc < 0 && rc != WF_ENOTFOUND && rc != WF_ESTATE) {
            fprintf(stderr, "send %s: %s\n", id, wf_err_name(rc));
            return 14;
        }
    }
    for (int k = 0; k < nruns; k++) {
        run_name(id, sizeof id, k);
        wf_handler *h;
        if (wf_handler_open(ex, id, &h) < 0)
            continue; /* finished */
        int rc = wf_handler_wait(h, -1, NULL);
        wf_handler_free(h);
        if (rc < 0) {
            fprintf(stderr, "run %s: %s\n", id, wf_err_name(rc));
            return 15;
        }
    }
    wf_executor_free(ex);
    wf_store_free(s);
    wf_workflow_free(wf);
    return 0;
}

static pid_t spawn(const char *db, int nruns)
{
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int rc = child_main(db, nruns);
        _exit(rc);
    }
    return pid;
}

/* Side effects per run of the crash test (file names "rNNNNN_..."), one pass over dir. */
static size_t *count_runs(const char *dir, int nruns)
{
    size_t *c = calloc((size_t)nruns, sizeof *c);
    cr_assert_not_null(c);
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int k;
        if (e->d_name[0] == 'r' && sscanf(e->d_name, "r%5d_", &k) == 1 && k >= 0 && k < nruns)
            c[k]++;
    }
    closedir(d);
    return c;
}

static size_t count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    size_t n = 0, pl = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, pl) == 0)
            n++;
    closedir(d);
    return n;
}

Test(durable, crash_kill_and_recover, .timeout = 240)
{
    int nruns = env_int("WF_DURABLE_RUNS", 5000);
    int kills = env_int("WF_DURABLE_KILLS", 20);
    tdir t;
    tdir_make(&t);
    snprintf(g_fx, sizeof g_fx, "%s", t.fx);
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "crash test: %d runs, %d kills, seed %u\n", nruns, kills, seed);
    srand(seed);
    for (int i = 0; i < kills; i++) {
        pid_t pid = spawn(t.db, nruns);
        /* a random moment to crash at: not a synchronisation, nothing is assumed done by then */
        long ms = 50 + rand() % 1500;
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                  "a child failed: exit %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    pid_t pid = spawn(t.db, nruns);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the last child failed: %d",
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    /* every run: exactly one result, the right one; each side effect once per key */
    wf_workflow *wf = crash_wf(0);
    cr_assert_not_null(wf);
    wf_store *s = open_store(t.db, NULL);
    cr_assert_not_null(s);
    size_t *fxn = count_runs(t.fx, nruns);
    char id[32];
    for (int k = 0; k < nruns; k++) {
        run_name(id, sizeof id, k);
        int32_t status;
        void *data;
        size_t len;
        cr_assert_eq(wf_store_get_result(s, id, &status, &data, &len), 0, "run %s: no result", id);
        cr_assert_eq(status, WF_STORE_DONE, "run %s: status %d", id, status);
        wf_event *res;
        size_t used;
        cr_assert_eq(wf_event_from_msgpack(wf_workflow_registry(wf), data, len, &res, &used, NULL),
                     0);
        int64_t r = -1;
        wf_value_get_int(wf_event_result(res), &r);
        cr_assert_eq(r, expected(k), "run %s: result %lld, not %lld", id, (long long)r,
                     (long long)expected(k));
        wf_event_release(res);
        wf_free(data);
        /* three parts and the flaky step's second attempt: a key that changed would add one */
        cr_assert_eq(fxn[k], 4, "run %s: %zu side effects, not 4", id, fxn[k]);
    }
    free(fxn);
    wf_store_free(s);
    wf_workflow_free(wf);
    rm_dir(t.dir);
}

/* ------------------------------------------------------- one process */

typedef struct env {
    tdir t;
    wf_workflow *wf;
    wf_store *s;
    wf_executor *ex;
} env;

static void env_open(env *e)
{
    tdir_make(&e->t);
    snprintf(g_fx, sizeof g_fx, "%s", e->t.fx);
    e->wf = crash_wf(0);
    cr_assert_not_null(e->wf);
    e->s = open_store(e->t.db, "one");
    cr_assert_not_null(e->s);
    e->ex = new_exec(2);
    cr_assert_not_null(e->ex);
    cr_assert_eq(wf_executor_attach_store(e->ex, e->s, NULL), 0);
}

static void env_close(env *e)
{
    wf_executor_free(e->ex);
    wf_store_free(e->s);
    wf_workflow_free(e->wf);
    rm_dir(e->t.dir);
}

static wf_event *start_ev(int n)
{
    wf_event *st = NULL;
    wf_event_new1(&st, T_START, "n", wf_value_int(n));
    return st;
}

Test(durable, result_is_durable_when_reported, .timeout = 60)
{
    env e;
    env_open(&e);
    wf_handler *h;
    char *m0 = NULL;
    int rc0 = wf_run_start_durable(e.ex, e.wf, NULL, "a", start_ev(4), NULL, &h, &m0);
    cr_assert_eq(rc0, 0, "%s: %s", wf_err_name(rc0), m0 ? m0 : wf_last_error_message());
    cr_assert_eq(wf_durable_send(e.ex, "a", answer(4), NULL), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t r = -1;
    wf_value_get_int(wf_event_result(res), &r);
    cr_assert_eq(r, expected(4));
    wf_event_release(res);
    /* reported: so it is committed (read from the store's committed data) */
    wf_run_status st;
    cr_assert_eq(wf_durable_result(e.ex, e.wf, "a", &st, &res), 0);
    cr_assert_eq(st, WF_RUN_DONE);
    r = -1;
    wf_value_get_int(wf_event_result(res), &r);
    cr_assert_eq(r, expected(4));
    wf_event_release(res);
    wf_handler_free(h);
    env_close(&e);
}

Test(durable, run_id_used_twice, .timeout = 60)
{
    env e;
    env_open(&e);
    wf_handler *h, *h2 = NULL;
    char *msg = NULL;
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "twice", start_ev(1), NULL, &h, NULL), 0);
    /* in memory */
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "twice", start_ev(1), NULL, &h2, &msg),
                 WF_EEXIST);
    cr_assert_null(h2);
    cr_assert_not_null(msg);
    cr_assert(strstr(msg, "twice") != NULL, "%s", msg);
    wf_free(msg);
    cr_assert_eq(wf_durable_send(e.ex, "twice", answer(1), NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    /* finished: the store still has it */
    msg = NULL;
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "twice", start_ev(1), NULL, &h2, &msg),
                 WF_EEXIST);
    cr_assert(msg && strstr(msg, "store"), "%s", msg ? msg : "(none)");
    wf_free(msg);
    /* bad ids */
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "", start_ev(1), NULL, &h2, NULL),
                 WF_EINVAL);
    cr_assert_eq(wf_handler_open(e.ex, "nope", &h2), WF_ENOTFOUND);
    cr_assert_eq(wf_durable_send(e.ex, "nope", answer(1), NULL), WF_ENOTFOUND);
    env_close(&e);
}

Test(durable, without_a_store_ids_are_unique_in_memory, .timeout = 60)
{
    wf_workflow *wf = crash_wf(0);
    wf_executor *ex = new_exec(2);
    tdir t;
    tdir_make(&t);
    snprintf(g_fx, sizeof g_fx, "%s", t.fx);
    wf_handler *h, *h2;
    cr_assert_eq(wf_run_start_durable(ex, wf, NULL, "m", start_ev(2), NULL, &h, NULL), 0);
    cr_assert_eq(wf_run_start_durable(ex, wf, NULL, "m", start_ev(2), NULL, &h2, NULL), WF_EEXIST);
    cr_assert_eq(wf_handler_open(ex, "m", &h2), 0);
    cr_assert_eq(h2, h);
    cr_assert_eq(wf_handler_send_event(h2, answer(2), NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h2);
    wf_handler_free(h);
    /* ended: the id is free again */
    cr_assert_eq(wf_run_start_durable(ex, wf, NULL, "m", start_ev(2), NULL, &h, NULL), 0);
    cr_assert_eq(wf_handler_cancel(h), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    rm_dir(t.dir);
}

Test(durable, cancel_by_id_is_the_durable_result, .timeout = 60)
{
    env e;
    env_open(&e);
    wf_handler *h, *h2;
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "c", start_ev(3), NULL, &h, NULL), 0);
    cr_assert_eq(wf_handler_open(e.ex, "c", &h2), 0);
    cr_assert_eq(wf_handler_cancel(h2), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ECANCELLED);
    wf_run_status st;
    cr_assert_eq(wf_durable_result(e.ex, e.wf, "c", &st, NULL), 0);
    cr_assert_eq(st, WF_RUN_CANCELLED);
    wf_handler_free(h2);
    wf_handler_free(h);
    env_close(&e);
}

/* A run left waiting for its answer when its executor shuts down goes on in the next. */
Test(durable, restart_recovers_a_waiting_run, .timeout = 60)
{
    env e;
    env_open(&e);
    wf_handler *h;
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "w", start_ev(5), NULL, &h, NULL), 0);
    wf_handler_free(h);
    wf_executor_free(e.ex); /* a last checkpoint; the run stays in flight in the store */
    e.ex = new_exec(2);
    cr_assert_eq(wf_executor_attach_store(e.ex, e.s, NULL), 0);
    wf_recover_info ri;
    cr_assert_eq(wf_executor_recover(e.ex, &e.wf, 1, &ri, NULL), 0);
    cr_assert_eq(ri.resumed, 1);
    cr_assert_eq(ri.failed, 0);
    cr_assert_eq(wf_durable_send(e.ex, "w", answer(5), NULL), 0);
    cr_assert_eq(wf_handler_open(e.ex, "w", &h), 0);
    wf_event *res;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t r = -1;
    wf_value_get_int(wf_event_result(res), &r);
    cr_assert_eq(r, expected(5));
    wf_event_release(res);
    wf_handler_free(h);
    /* each side effect once: recovery ran nothing that had completed with another key */
    cr_assert_eq(count_prefix(e.t.fx, "w_"), 4);
    env_close(&e);
}

Test(durable, a_journal_naming_a_step_the_workflow_lost, .timeout = 60)
{
    env e;
    env_open(&e);
    wf_handler *h;
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "lost", start_ev(6), NULL, &h, NULL), 0);
    wf_handler_free(h);
    wf_executor_free(e.ex);
    /* the same workflow name without its "join" step */
    wf_workflow *changed = crash_wf(1);
    cr_assert_not_null(changed);
    e.ex = new_exec(2);
    cr_assert_eq(wf_executor_attach_store(e.ex, e.s, NULL), 0);
    wf_recover_info ri;
    char *msg = NULL;
    cr_assert_eq(wf_executor_recover(e.ex, &changed, 1, &ri, &msg), 0);
    cr_assert_eq(ri.resumed, 0);
    cr_assert_eq(ri.failed, 1);
    cr_assert_not_null(msg);
    cr_assert(strstr(msg, "lost") != NULL, "%s", msg);
    wf_free(msg);
    /* nothing committed is lost: the run is still in flight with its checkpoint */
    wf_store_run_info info = {0};
    cr_assert_eq(wf_store_get_run(e.s, "lost", &info), 0);
    cr_assert(info.status == WF_STORE_RUNNING || info.status == WF_STORE_WAITING);
    cr_assert(info.checkpoint_seq > 0);
    wf_store_run_info_clear(&info);
    wf_workflow_free(changed);
    /* a workflow not given at all */
    msg = NULL;
    cr_assert_eq(wf_executor_recover(e.ex, NULL, 0, &ri, &msg), 0);
    cr_assert_eq(ri.failed, 1);
    cr_assert(msg && strstr(msg, "not given"), "%s", msg ? msg : "(none)");
    wf_free(msg);
    env_close(&e);
}

static char g_key[2][512];
static int s_keys(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    uint32_t a = wf_ctx_attempt(ctx);
    if (a <= 2)
        wf_ctx_invocation_key(ctx, g_key[a - 1], sizeof g_key[0]);
    if (a == 1)
        return WF_EIO;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

Test(durable, invocation_keys_differ_per_attempt, .timeout = 60)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "keys", NULL), 0);
    const wf_event_type *st = wf_workflow_builtin(wf, WF_START_EVENT);
    wf_retry_stop *stop;
    wf_retry_policy *pol;
    cr_assert_eq(wf_retry_stop_after_attempt(&stop, 3), 0);
    cr_assert_eq(wf_retry_policy_new(&pol, NULL, NULL, stop), 0);
    cr_assert_eq(add(wf, "k", s_keys, st, NULL, wf_workflow_builtin(wf, WF_STOP_EVENT), pol), 0);
    wf_retry_policy_free(pol);
    wf_executor *ex = new_exec(1);
    wf_handler *h;
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, st, 0), 0);
    cr_assert_eq(wf_run_start_durable(ex, wf, NULL, "k/1", s, NULL, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    cr_assert(strncmp(g_key[0], "k%2F1/k/", 8) == 0, "%s", g_key[0]);
    cr_assert(strcmp(g_key[0], g_key[1]) != 0);
    size_t l = strlen(g_key[0]);
    cr_assert(g_key[0][l - 1] == '1' && g_key[1][l - 1] == '2', "%s %s", g_key[0], g_key[1]);
    cr_assert_eq(wf_ctx_invocation_key(NULL, g_key[0], 8), WF_ESTATE);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ------------------------------------------------------------ idle release */

typedef struct answerer {
    wf_executor *ex;
    int from, to;
    atomic_int *bad;
} answerer;

static void *answer_range(void *arg)
{
    answerer *a = arg;
    char id[32];
    for (int k = a->from; k < a->to; k++) {
        run_name(id, sizeof id, k);
        int rc = wf_durable_send(a->ex, id, answer(k), NULL);
        if (rc < 0) {
            fprintf(stderr, "answer %s: %s (%s)\n", id, wf_err_name(rc), wf_last_error_message());
            atomic_fetch_add(a->bad, 1);
        }
    }
    return NULL;
}

static int count_one(const wf_store_run_info *info, void *user)
{
    (void)info;
    ++*(uint32_t *)user;
    return 0;
}

static uint32_t count_status(wf_store *s, int32_t status)
{
    uint32_t n = 0;
    uint64_t cursor = 0;
    do
        cr_assert_eq(wf_store_list(s, WF_STORE_MASK(status), cursor, 1000, count_one, &n, &cursor),
                     0);
    while (cursor);
    return n;
}

Test(durable, idle_runs_are_released_and_answered_by_id, .timeout = 240)
{
    int nruns = env_int("WF_DURABLE_IDLE", 2000);
    tdir t;
    tdir_make(&t);
    snprintf(g_fx, sizeof g_fx, "%s", t.fx);
    wf_workflow *wf = crash_wf(0);
    wf_store *s = open_store(t.db, "idle");
    wf_executor *ex = new_exec(2);
    cr_assert(wf && s && ex);
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.checkpoint_ms = 5;
    dp.idle_release_ms = 20;
    cr_assert_eq(wf_executor_attach_store(ex, s, &dp), 0);
    char id[32];
    for (int k = 0; k < nruns; k++) {
        run_name(id, sizeof id, k);
        wf_handler *h;
        cr_assert_eq(wf_run_start_durable(ex, wf, NULL, id, start_ev(k), NULL, &h, NULL), 0);
        wf_handler_free(h);
    }
    /* every run reaches its wait for the answer and is released: none stays in memory */
    while (wf_durable_in_memory(ex) > 0) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL); /* polls a condition; nothing assumed done after a time */
    }
    cr_assert_eq(count_status(s, WF_STORE_RELEASED), (uint32_t)nruns);
    /* answered by id from 16 threads (a load claims the run: a commit round each) */
    atomic_int bad = 0;
    answerer a[16];
    pthread_t th[16];
    for (int i = 0; i < 16; i++) {
        a[i] = (answerer){ex, nruns * i / 16, nruns * (i + 1) / 16, &bad};
        cr_assert_eq(pthread_create(&th[i], NULL, answer_range, &a[i]), 0);
    }
    for (int i = 0; i < 16; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&bad), 0);
    size_t *fxn = count_runs(t.fx, nruns);
    for (int k = 0; k < nruns; k++) {
        run_name(id, sizeof id, k);
        wf_handler *h;
        wf_event *res = NULL;
        wf_run_status st = WF_RUN_DONE;
        int rc;
        if (wf_handler_open(ex, id, &h) == 0) {
            rc = wf_handler_wait(h, -1, &res);
            wf_handler_free(h);
        } else {
            rc = wf_durable_result(ex, wf, id, &st, &res);
        }
        cr_assert_eq(rc, 0, "run %s: %s", id, wf_err_name(rc));
        cr_assert_eq(st, WF_RUN_DONE);
        int64_t r = -1;
        wf_value_get_int(wf_event_result(res), &r);
        cr_assert_eq(r, expected(k), "run %s: %lld", id, (long long)r);
        wf_event_release(res);
        cr_assert_eq(fxn[k], 4, "run %s: %zu side effects", id, fxn[k]);
    }
    free(fxn);
    cr_assert_eq(wf_durable_in_memory(ex), 0);
    wf_executor_free(ex);
    cr_assert_eq(count_status(s, WF_STORE_DONE), (uint32_t)nruns);
    wf_store_free(s);
    wf_workflow_free(wf);
    rm_dir(t.dir);
}
