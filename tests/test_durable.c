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
 * Also: idle release (WF_DURABLE_IDLE runs), the durable stream read by
 * run id from a cursor (finished, live, across a SIGKILL), the WAITING
 * status in the store, and a send to a run another process owns.
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

/* commit: a wf_store_params commit policy (WF_STORE_COMMIT_INTERVAL is the default). */
static wf_store *open_store_commit(const char *path, const char *owner, int commit)
{
    wf_store_params p;
    wf_store_params_init(&p);
    p.owner = owner;
    p.commit = commit;
    wf_store *s = NULL;
    char *msg = NULL;
    int rc = wf_store_open_sqlite(&s, path, &p, &msg);
    if (rc < 0)
        fprintf(stderr, "open %s: %s (%s)\n", path, wf_err_name(rc), msg ? msg : "");
    wf_free(msg);
    return rc < 0 ? NULL : s;
}

static wf_store *open_store(const char *path, const char *owner)
{
    return open_store_commit(path, owner, WF_STORE_COMMIT_INTERVAL);
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

/*
 * The side effects of a test in one process (g_fx empty): a set of keys in
 * memory instead of files (creating 400,000 files took a third of the
 * 100,000-run idle test). g_mfx_runs: effects per run, for runs r00000..
 */
static pthread_mutex_t g_mfx_mu = PTHREAD_MUTEX_INITIALIZER;
static char **g_mfx; /* open addressing, NULL: free */
static size_t g_mfx_cap, g_mfx_n;
static size_t *g_mfx_runs; /* g_mfx_nruns counters */
static int g_mfx_nruns;

static uint64_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

/* 1 if key was new (and is now in the set), 0 if it was there. */
static int mfx_add(const char *key)
{
    pthread_mutex_lock(&g_mfx_mu);
    if (2 * (g_mfx_n + 1) > g_mfx_cap) {
        size_t nc = g_mfx_cap ? 2 * g_mfx_cap : 1024;
        char **nt = calloc(nc, sizeof *nt);
        cr_assert_not_null(nt);
        for (size_t i = 0; i < g_mfx_cap; i++)
            if (g_mfx[i]) {
                size_t j = key_hash(g_mfx[i]) & (nc - 1);
                while (nt[j])
                    j = (j + 1) & (nc - 1);
                nt[j] = g_mfx[i];
            }
        free(g_mfx);
        g_mfx = nt;
        g_mfx_cap = nc;
    }
    size_t j = key_hash(key) & (g_mfx_cap - 1);
    while (g_mfx[j] && strcmp(g_mfx[j], key) != 0)
        j = (j + 1) & (g_mfx_cap - 1);
    int fresh = g_mfx[j] == NULL;
    if (fresh) {
        g_mfx[j] = strdup(key);
        cr_assert_not_null(g_mfx[j]);
        g_mfx_n++;
        int k;
        if (sscanf(key, "r%5d", &k) == 1 && k >= 0 && k < g_mfx_nruns)
            g_mfx_runs[k]++;
    }
    pthread_mutex_unlock(&g_mfx_mu);
    return fresh;
}

static void mfx_start(int nruns)
{
    g_fx[0] = 0;
    g_mfx_runs = calloc((size_t)nruns, sizeof *g_mfx_runs);
    cr_assert_not_null(g_mfx_runs);
    g_mfx_nruns = nruns;
}

static void mfx_end(void)
{
    for (size_t i = 0; i < g_mfx_cap; i++)
        free(g_mfx[i]);
    free(g_mfx);
    free(g_mfx_runs);
    g_mfx = NULL;
    g_mfx_runs = NULL;
    g_mfx_cap = g_mfx_n = 0;
    g_mfx_nruns = 0;
}

/* Applies the invocation's side effect once per idempotency key. */
static int effect(wf_ctx *ctx)
{
    char key[512], path[900];
    int len = wf_ctx_invocation_key(ctx, key, sizeof key);
    if (len < 0)
        return len;
    if (g_fx[0] == 0) {
        if (!mfx_add(key))
            atomic_fetch_add(&g_dups, 1);
        return 0;
    }
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

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

Test(durable, idle_runs_are_released_and_answered_by_id, .timeout = 480)
{
    /* the 100,000: 40-140 s in debug on the shared test VM by its load; 500: sanitizers */
    int nruns = env_int("WF_DURABLE_IDLE", 100000);
    tdir t;
    tdir_make(&t);
    mfx_start(nruns); /* one process: its side effects are counted in memory */
    int dups0 = atomic_load(&g_dups);
    wf_workflow *wf = crash_wf(0);
    /*
     * Commits without fsync (WF_STORE_COMMIT_OFF): what is tested is the
     * release, the load by id and the memory, not the disk; an fsync per
     * round made 100,000 runs take minutes (each release and each load by
     * id waits for a round).
     */
    wf_store *s = open_store_commit(t.db, "idle", WF_STORE_COMMIT_OFF);
    wf_executor *ex = new_exec(2);
    cr_assert(wf && s && ex);
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.checkpoint_ms = 5;
    dp.idle_release_ms = 20;
    cr_assert_eq(wf_executor_attach_store(ex, s, &dp), 0);
    char id[32];
    double t0 = mono_s();
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
    double t_released = mono_s();
    cr_assert_eq(wf_store_flush(s), 0); /* the last releases were queued as their runs left */
    cr_assert_eq(count_status(s, WF_STORE_RELEASED), (uint32_t)nruns);
    /* answered by id from 64 threads (a load claims the run: it waits for a commit round) */
    atomic_int bad = 0;
    answerer a[64];
    pthread_t th[64];
    for (int i = 0; i < 64; i++) {
        a[i] = (answerer){ex, nruns * i / 64, nruns * (i + 1) / 64, &bad};
        cr_assert_eq(pthread_create(&th[i], NULL, answer_range, &a[i]), 0);
    }
    for (int i = 0; i < 64; i++)
        pthread_join(th[i], NULL);
    double t_answered = mono_s();
    cr_assert_eq(atomic_load(&bad), 0);
    size_t *fxn = g_mfx_runs;
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
    cr_assert_eq(atomic_load(&g_dups), dups0, "a side effect was applied again after a load");
    mfx_end();
    /* information only (no assertion on times) */
    fprintf(stderr,
            "idle: %d runs: started and all released %.1f s, answered %.1f s, checked %.1f s\n",
            nruns, t_released - t0, t_answered - t_released, mono_s() - t_answered);
    cr_assert_eq(wf_durable_in_memory(ex), 0);
    wf_executor_free(ex);
    cr_assert_eq(count_status(s, WF_STORE_DONE), (uint32_t)nruns);
    wf_store_free(s);
    wf_workflow_free(wf);
    rm_dir(t.dir);
}

/* ------------------------------------------------------ the durable stream */

/*
 * The ticker: start{n, w} -> tick streams Tick{i} for i = 0 .. n-1 (one
 * invocation each, through Next{i}); after Tick{w} it asks (TAsked) and
 * hold waits for an answer (TAnswer, sent by run id) before going on; the
 * result is n. g_tick_us: work per tick (a pause inside the step).
 */
static const wf_event_type *K_START, *K_TICK, *K_NEXT, *K_ASKED, *K_ANSWER;
static int g_tick_us;
static int64_t g_block_at = -1; /* a tick whose invocation never ends (set in a child to be killed) */
static pthread_mutex_t g_hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_hold_cv = PTHREAD_COND_INITIALIZER;
static int g_hold = 0; /* 1: hold's invocation waits until the test sets it back to 0 */

static int k_next(wf_ctx *ctx, int64_t i, int64_t n, int64_t w, wf_event **out)
{
    if (i >= n)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_int(n));
    int rc = wf_event_new2(out, K_NEXT, "i", wf_value_int(i), "n", wf_value_int(n));
    if (rc == 0)
        rc = wf_event_set(*out, "w", wf_value_int(w));
    return rc;
}

static int k_tick(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    int64_t i = wf_event_type_of(in) == K_START ? 0 : geti(in, "i");
    int64_t n = geti(in, "n"), w = geti(in, "w");
    if (g_tick_us) {
        struct timespec ts = {0, g_tick_us * 1000L}; /* the step's work */
        nanosleep(&ts, NULL);
    }
    while (i == g_block_at)
        pause(); /* until the test kills this process */
    wf_event *t;
    int rc = wf_event_new1(&t, K_TICK, "i", wf_value_int(i));
    if (rc == 0)
        rc = wf_ctx_write_event_to_stream(ctx, t);
    if (rc < 0)
        return rc;
    if (i == w)
        return wf_event_new2(out, K_ASKED, "i", wf_value_int(i), "n", wf_value_int(n));
    return k_next(ctx, i + 1, n, w, out);
}

static int k_hold(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    const wf_event_type *want[2] = {K_ASKED, K_ANSWER};
    wf_event *got[2];
    int rc = wf_ctx_collect_events(ctx, in, want, 2, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&g_hold_mu);
    while (g_hold)
        pthread_cond_wait(&g_hold_cv, &g_hold_mu);
    pthread_mutex_unlock(&g_hold_mu);
    int64_t i = geti(got[0], "i"), n = geti(got[0], "n");
    wf_event_release(got[0]);
    wf_event_release(got[1]);
    return k_next(ctx, i + 1, n, -1, out);
}

static wf_workflow *ticker_wf(void)
{
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "ticker", NULL) < 0)
        return NULL;
    K_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Tick", NULL, &K_TICK);
    wf_workflow_event_type(wf, "Next", NULL, &K_NEXT);
    wf_workflow_event_type(wf, "TAsked", NULL, &K_ASKED);
    wf_workflow_event_type(wf, "TAnswer", NULL, &K_ANSWER);
    const wf_event_type *acc[2] = {K_START, K_NEXT};
    const wf_event_type *em[3] = {K_NEXT, K_ASKED, stop};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 2;
    p.emits = em;
    p.n_emits = 3;
    int rc = wf_workflow_add_step(wf, "tick", k_tick, &p, NULL);
    const wf_event_type *acc2[2] = {K_ASKED, K_ANSWER};
    const wf_event_type *em2[2] = {K_NEXT, stop};
    p.accepts = acc2;
    p.emits = em2;
    p.n_emits = 2;
    rc |= wf_workflow_add_step(wf, "hold", k_hold, &p, NULL);
    wf_workflow_set_validation(wf, 0); /* TAnswer comes from outside */
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    return rc ? NULL : wf;
}

static wf_event *k_start(int64_t n, int64_t w)
{
    wf_event *e = NULL;
    wf_event_new2(&e, K_START, "n", wf_value_int(n), "w", wf_value_int(w));
    return e;
}

static wf_event *k_answer(void)
{
    wf_event *e = NULL;
    wf_event_new(&e, K_ANSWER, 0);
    return e;
}

/* Reads the next event of s (waiting): asserts it is Tick{seq} numbered want. */
static void expect_tick(wf_durable_stream *s, uint64_t want)
{
    wf_event *ev = NULL;
    uint64_t seq = UINT64_MAX;
    int rc = wf_durable_stream_next(s, -1, &ev, &seq);
    cr_assert_eq(rc, 0, "event %llu: %s (%s)", (unsigned long long)want, wf_err_name(rc),
                 wf_last_error_message());
    cr_assert_eq(seq, want);
    cr_assert_eq(wf_event_type_of(ev), K_TICK, "event %llu: %s", (unsigned long long)want,
                 wf_event_type_name_of(ev));
    cr_assert_eq(geti(ev, "i"), (int64_t)want);
    wf_event_release(ev);
}

/* Reads the terminal event: a StopEvent with result n, numbered want; then closed. */
static void expect_end(wf_durable_stream *s, uint64_t want, int64_t n)
{
    wf_event *ev = NULL;
    uint64_t seq = UINT64_MAX;
    cr_assert_eq(wf_durable_stream_next(s, -1, &ev, &seq), 0);
    cr_assert_eq(seq, want);
    int64_t r = -1;
    wf_value_get_int(wf_event_result(ev), &r);
    cr_assert_eq(r, n);
    wf_event_release(ev);
    cr_assert_eq(wf_durable_stream_next(s, 0, &ev, &seq), WF_ECLOSED);
    cr_assert_null(ev);
    cr_assert_eq(wf_durable_stream_cursor(s), want + 1);
}

typedef struct kenv {
    tdir t;
    wf_workflow *wf;
    wf_store *s;
    wf_executor *ex;
} kenv;

static void kenv_open(kenv *e, const char *owner, int make_dir)
{
    if (make_dir)
        tdir_make(&e->t);
    e->wf = ticker_wf();
    cr_assert_not_null(e->wf);
    e->s = open_store(e->t.db, owner);
    cr_assert_not_null(e->s);
    e->ex = new_exec(2);
    cr_assert_not_null(e->ex);
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.checkpoint_ms = 5;
    cr_assert_eq(wf_executor_attach_store(e->ex, e->s, &dp), 0);
}

static void kenv_close(kenv *e, int remove_dir)
{
    wf_executor_free(e->ex);
    wf_store_free(e->s);
    wf_workflow_free(e->wf);
    if (remove_dir)
        rm_dir(e->t.dir);
}

Test(durable, stream_of_a_finished_run_from_any_cursor, .timeout = 60)
{
    kenv e;
    kenv_open(&e, "one", 1);
    wf_handler *h;
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "t", k_start(50, -1), NULL, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    /* from 0: the 50 ticks numbered 0..49, the StopEvent numbered 50, then closed */
    wf_durable_stream *s;
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "t", 0, &s), 0);
    cr_assert_eq(wf_durable_stream_cursor(s), 0);
    for (uint64_t k = 0; k < 50; k++)
        expect_tick(s, k);
    expect_end(s, 50, 50);
    wf_durable_stream_free(s);
    /* from the middle */
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "t", 23, &s), 0);
    for (uint64_t k = 23; k < 50; k++)
        expect_tick(s, k);
    expect_end(s, 50, 50);
    wf_durable_stream_free(s);
    /* the terminal event alone; after it: closed at once */
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "t", 50, &s), 0);
    expect_end(s, 50, 50);
    wf_durable_stream_free(s);
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "t", 51, &s), 0);
    wf_event *ev = NULL;
    cr_assert_eq(wf_durable_stream_next(s, -1, &ev, NULL), WF_ECLOSED);
    wf_durable_stream_free(s);
    /* past the end, a run the store does not have, bad arguments */
    s = (wf_durable_stream *)&e; /* set to NULL by a failing open */
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "t", 52, &s), WF_ERANGE);
    cr_assert_null(s);
    cr_assert(strstr(wf_last_error_message(), "past its end"), "%s", wf_last_error_message());
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "t", UINT64_MAX, &s), WF_ERANGE);
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "nope", 0, &s), WF_ENOTFOUND);
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "", 0, &s), WF_EINVAL);
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, NULL, 0, &s), WF_EINVAL);
    cr_assert_eq(wf_durable_stream_open(NULL, e.wf, "t", 0, &s), WF_EINVAL);
    cr_assert_eq(wf_durable_stream_open(e.ex, NULL, "t", 0, &s), WF_EINVAL);
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "t", 0, NULL), WF_EINVAL);
    cr_assert_eq(wf_durable_stream_next(NULL, 0, &ev, NULL), WF_EINVAL);
    wf_durable_stream_free(NULL);
    /* an executor without a store */
    wf_executor *bare = new_exec(1);
    cr_assert_eq(wf_durable_stream_open(bare, e.wf, "t", 0, &s), WF_ESTATE);
    wf_executor_free(bare);
    /* the journal holds the ticks as stream records (kind 2) beside the start event (3) */
    kenv_close(&e, 1);
}

static int32_t status_of(wf_store *s, const char *id)
{
    wf_store_run_info info = {0};
    cr_assert_eq(wf_store_get_run(s, id, &info), 0);
    int32_t st = info.status;
    wf_store_run_info_clear(&info);
    return st;
}

/*
 * A reader follows a live run by id; the run waits for an answer (the store
 * shows it WAITING), is answered (RUNNING while the answer is handled),
 * and its reader gets the rest and the end.
 */
Test(durable, stream_follows_a_waiting_run_and_the_store_shows_it_waiting, .timeout = 60)
{
    kenv e;
    kenv_open(&e, "one", 1);
    wf_handler *h;
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "live", k_start(10, 4), NULL, &h, NULL),
                 0);
    wf_durable_stream *s;
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "live", 0, &s), 0);
    for (uint64_t k = 0; k <= 4; k++)
        expect_tick(s, k);
    /* it waits for its answer: nothing more comes, and the store says WAITING */
    wf_event *ev = NULL;
    cr_assert_eq(wf_durable_stream_next(s, 0, &ev, NULL), WF_ETIMEDOUT);
    while (status_of(e.s, "live") != WF_STORE_WAITING) {
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL); /* polls the store until the checkpoint thread wrote it */
    }
    uint32_t nw = count_status(e.s, WF_STORE_WAITING);
    cr_assert_eq(nw, 1);
    wf_durable_stream *s2;
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "live", 6, &s2), WF_ERANGE);
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "live", 5, &s2), 0);
    cr_assert_eq(wf_durable_stream_next(s2, 0, &ev, NULL), WF_ETIMEDOUT);
    /* answered: RUNNING while the answer is handled (hold is held) */
    pthread_mutex_lock(&g_hold_mu);
    g_hold = 1;
    pthread_mutex_unlock(&g_hold_mu);
    cr_assert_eq(wf_durable_send(e.ex, "live", k_answer(), NULL), 0);
    cr_assert_eq(wf_store_flush(e.s), 0);
    cr_assert_eq(status_of(e.s, "live"), WF_STORE_RUNNING);
    pthread_mutex_lock(&g_hold_mu);
    g_hold = 0;
    pthread_cond_broadcast(&g_hold_cv);
    pthread_mutex_unlock(&g_hold_mu);
    for (uint64_t k = 5; k < 10; k++) {
        expect_tick(s, k);
        expect_tick(s2, k);
    }
    expect_end(s, 10, 10);
    expect_end(s2, 10, 10);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    cr_assert_eq(status_of(e.s, "live"), WF_STORE_DONE);
    wf_handler_free(h);
    wf_durable_stream_free(s);
    wf_durable_stream_free(s2);
    kenv_close(&e, 1);
}

/* A child process streams; it is SIGKILLed mid-run; the parent recovers the run. */
Test(durable, stream_numbers_survive_a_sigkill, .timeout = 120)
{
    const int64_t n = 3000;
    kenv e;
    tdir_make(&e.t);
    g_tick_us = 300;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        /* the last tick never ends: however late the kill, the run is cut mid-way */
        g_block_at = n - 1;
        kenv c;
        c.t = e.t;
        c.wf = ticker_wf();
        c.s = open_store(c.t.db, "kill");
        c.ex = new_exec(2);
        if (!c.wf || !c.s || !c.ex)
            _exit(10);
        wf_durable_params dp;
        wf_durable_params_init(&dp);
        dp.checkpoint_ms = 5;
        wf_handler *h;
        if (wf_executor_attach_store(c.ex, c.s, &dp) < 0 ||
            wf_run_start_durable(c.ex, c.wf, NULL, "k", k_start(n, -1), NULL, &h, NULL) < 0)
            _exit(11);
        wf_handler_wait(h, -1, NULL);
        _exit(12); /* never: it is killed first */
    }
    kenv_open(&e, "kill", 0); /* the same owner: its runs are ours to recover */
    wf_store_run_info info = {0};
    while (wf_store_get_run(e.s, "k", &info) == WF_ENOTFOUND) {
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL); /* polls the store until the child created the run */
    }
    wf_store_run_info_clear(&info);
    wf_durable_stream *s;
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "k", 0, &s), 0);
    uint64_t want = 0;
    for (; want < 300; want++)
        expect_tick(s, want);
    kill(pid, SIGKILL);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st), "the child ended by itself: %d", WEXITSTATUS(st));
    int32_t rst;
    void *data = NULL;
    size_t len;
    cr_assert_eq(wf_store_get_result(e.s, "k", &rst, &data, &len), WF_EAGAIN,
                 "the run finished before the kill: the test proves nothing");
    /* recovered here; the same reader goes on across the crash */
    wf_recover_info ri;
    cr_assert_eq(wf_executor_recover(e.ex, &e.wf, 1, &ri, NULL), 0);
    cr_assert_eq(ri.resumed, 1);
    char *seen = calloc((size_t)n, 1);
    cr_assert_not_null(seen);
    memset(seen, 1, 300);
    uint64_t again = 0;
    for (;;) {
        wf_event *ev = NULL;
        uint64_t seq = UINT64_MAX;
        int rc = wf_durable_stream_next(s, -1, &ev, &seq);
        cr_assert_eq(rc, 0, "after %llu: %s", (unsigned long long)want, wf_err_name(rc));
        cr_assert_eq(seq, want, "a gap or a duplicate number: %llu after %llu",
                     (unsigned long long)seq, (unsigned long long)want);
        want++;
        if (wf_event_type_of(ev) != K_TICK) {
            int64_t r = -1;
            wf_value_get_int(wf_event_result(ev), &r);
            cr_assert_eq(r, n);
            wf_event_release(ev);
            break;
        }
        int64_t i = geti(ev, "i");
        cr_assert(i >= 0 && i < n);
        again += seen[i];
        seen[i] = 1;
        wf_event_release(ev);
    }
    wf_event *ev = NULL;
    cr_assert_eq(wf_durable_stream_next(s, 0, &ev, NULL), WF_ECLOSED);
    for (int64_t i = 0; i < n; i++)
        cr_assert(seen[i], "tick %lld never streamed", (long long)i);
    /* ticks after the last checkpoint ran again, under new numbers */
    cr_assert_eq(want, (uint64_t)n + again + 1);
    fprintf(stderr, "stream across a SIGKILL: %llu events, %llu streamed again\n",
            (unsigned long long)want, (unsigned long long)again);
    free(seen);
    wf_durable_stream_free(s);
    /* a new reader from the middle of the committed stream */
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "k", want / 2, &s), 0);
    uint64_t seq = 0;
    cr_assert_eq(wf_durable_stream_next(s, -1, &ev, &seq), 0);
    cr_assert_eq(seq, want / 2);
    wf_event_release(ev);
    wf_durable_stream_free(s);
    g_tick_us = 0;
    kenv_close(&e, 1);
}

/* A send by id to a run another live process holds: WF_EBUSY naming the owner. */
Test(durable, send_to_a_run_another_process_owns, .timeout = 60)
{
    kenv e;
    tdir_make(&e.t);
    int up[2], down[2];
    cr_assert_eq(pipe(up), 0);
    cr_assert_eq(pipe(down), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        kenv c;
        c.t = e.t;
        kenv_open(&c, "other-process", 0);
        wf_handler *h;
        if (wf_run_start_durable(c.ex, c.wf, NULL, "theirs", k_start(3, 0), NULL, &h, NULL) < 0 ||
            wf_store_flush(c.s) < 0)
            _exit(10);
        char b = 1;
        if (write(up[1], &b, 1) != 1)
            _exit(11);
        if (read(down[0], &b, 1) != 1) /* until the parent is done */
            _exit(12);
        _exit(0);
    }
    char b;
    cr_assert_eq(read(up[0], &b, 1), 1);
    kenv_open(&e, "me", 0);
    /* the workflow is known here (a run of it), so a send tries to claim and finds the lease */
    wf_handler *h;
    cr_assert_eq(wf_run_start_durable(e.ex, e.wf, NULL, "mine", k_start(2, -1), NULL, &h, NULL),
                 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), 0);
    wf_handler_free(h);
    int rc = wf_durable_send(e.ex, "theirs", k_answer(), NULL);
    cr_assert_eq(rc, WF_EBUSY, "%s", wf_err_name(rc));
    cr_assert(strstr(wf_last_error_message(), "other-process"), "%s", wf_last_error_message());
    cr_assert_eq(wf_handler_open(e.ex, "theirs", &h), WF_ENOTFOUND);
    /* finished here: WF_ESTATE; unknown: WF_ENOTFOUND */
    cr_assert_eq(wf_durable_send(e.ex, "mine", k_answer(), NULL), WF_ESTATE);
    cr_assert_eq(wf_durable_send(e.ex, "nobody", k_answer(), NULL), WF_ENOTFOUND);
    /* its stream is readable here all the same: Tick 0 */
    wf_durable_stream *s;
    cr_assert_eq(wf_durable_stream_open(e.ex, e.wf, "theirs", 0, &s), 0);
    expect_tick(s, 0);
    wf_durable_stream_free(s);
    b = 1;
    cr_assert_eq(write(down[1], &b, 1), 1);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %d", WEXITSTATUS(st));
    kenv_close(&e, 1);
}

/* ------------------------------------------- events sent before the wait */

/*
 * The asker: Start{nowait} -> ask: passes the gate (closed: it waits until
 * the test opens it), then, unless nowait, waits for HAnswer{v} (sent by
 * run id) and stops with v; with nowait it stops with -1 at once. HStray:
 * an event no step accepts and no step waits for.
 */
static const wf_event_type *H_START, *H_ANSWER, *H_STRAY;
static pthread_mutex_t g_gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_gate_cv = PTHREAD_COND_INITIALIZER;
static int g_gate = 0;    /* 1: closed */
static int g_gate_in = 0; /* invocations waiting at the gate */

static void gate_set(int closed)
{
    pthread_mutex_lock(&g_gate_mu);
    g_gate = closed;
    pthread_cond_broadcast(&g_gate_cv);
    pthread_mutex_unlock(&g_gate_mu);
}

static int h_ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    pthread_mutex_lock(&g_gate_mu);
    g_gate_in++;
    pthread_cond_broadcast(&g_gate_cv);
    while (g_gate)
        pthread_cond_wait(&g_gate_cv, &g_gate_mu);
    g_gate_in--;
    pthread_mutex_unlock(&g_gate_mu);
    const wf_registry *reg = wf_workflow_registry(wf_ctx_workflow(ctx));
    if (geti(in, "nowait") == 1)
        return wf_event_new_stop(out, reg, NULL, wf_value_int(-1));
    wf_event *got = NULL;
    int rc = wf_ctx_wait_for_event(ctx, H_ANSWER, wf_value_nil(), NULL, NULL, WF_NO_TIMEOUT, &got);
    if (rc == WF_SUSPEND || rc < 0)
        return rc;
    int64_t v = geti(got, "v");
    wf_event_release(got);
    return wf_event_new_stop(out, reg, NULL, wf_value_int(v));
}

static wf_workflow *asker_wf(void)
{
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "asker", NULL) < 0)
        return NULL;
    H_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "HAnswer", NULL, &H_ANSWER);
    wf_workflow_event_type(wf, "HStray", NULL, &H_STRAY);
    int rc = add(wf, "ask", h_ask, H_START, NULL, stop, NULL);
    wf_workflow_set_validation(wf, 0); /* HAnswer and HStray come from outside */
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    return rc ? NULL : wf;
}

static wf_event *h_start(int nowait)
{
    wf_event *e = NULL;
    cr_assert_eq(wf_event_new1(&e, H_START, "nowait", wf_value_int(nowait)), 0);
    return e;
}

static wf_event *h_ev(const wf_event_type *t, int64_t v)
{
    wf_event *e = NULL;
    cr_assert_eq(wf_event_new1(&e, t, "v", wf_value_int(v)), 0);
    return e;
}

static wf_executor *h_exec(wf_store *s)
{
    wf_executor *ex = new_exec(2);
    cr_assert_not_null(ex);
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.checkpoint_ms = 5;
    cr_assert_eq(wf_executor_attach_store(ex, s, &dp), 0);
    return ex;
}

/* The result of run id: waited for in memory, or from the store once it has left memory. */
static int64_t h_result(wf_executor *ex, wf_workflow *wf, const char *id)
{
    wf_handler *h;
    wf_event *res = NULL;
    wf_run_status st = WF_RUN_DONE;
    if (wf_handler_open(ex, id, &h) == 0) {
        cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
        wf_handler_free(h);
    } else {
        cr_assert_eq(wf_durable_result(ex, wf, id, &st, &res), 0);
    }
    cr_assert_eq(st, WF_RUN_DONE);
    int64_t r = -99;
    wf_value_get_int(wf_event_result(res), &r);
    wf_event_release(res);
    return r;
}

static uint64_t h_unhandled(wf_executor *ex, const char *id)
{
    wf_handler *h;
    cr_assert_eq(wf_handler_open(ex, id, &h), 0);
    uint64_t n = wf_handler_unhandled(h);
    wf_handler_free(h);
    return n;
}

typedef struct send_scan {
    int answers; /* HAnswer SEND records seen */
} send_scan;

static int scan_sends(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    (void)seq;
    send_scan *sc = user;
    /* a SEND record: u16 target length (0xffff: none), then [type name, {fields}] */
    if (kind == WF_STORE_REC_SEND && len > 2 && memmem(data, len, "HAnswer", 7))
        sc->answers++;
    return 0;
}

/* The answer's record is after run id's last committed checkpoint: a recovery delivers it. */
static void answer_after_checkpoint(wf_store *s, const char *id)
{
    cr_assert_eq(wf_store_flush(s), 0);
    void *ck = NULL;
    size_t len = 0;
    uint64_t from = 0;
    int rc = wf_store_get_checkpoint(s, id, &ck, &len, &from);
    cr_assert(rc == 0 || rc == WF_ENOTFOUND, "%s", wf_err_name(rc));
    wf_free(ck);
    send_scan sc = {0};
    cr_assert_eq(wf_store_read_journal(s, id, rc == 0 ? from : 0, 0, scan_sends, &sc, NULL), 0);
    cr_assert_eq(sc.answers, 1, "run %s: a checkpoint covers the held answer", id);
}

/*
 * A run recovered from a checkpoint cut before its step waited: the step
 * runs again and waits again, but the answer (journaled before the crash,
 * delivered again by the recovery, or sent by id after it) comes first.
 * It is held by the run until the wait takes it, never dropped; the gate
 * keeps the step from waiting until the test has checked that (no sleeps).
 */
Test(durable, an_answer_sent_before_the_step_waits_again_is_held, .timeout = 60)
{
    tdir t;
    tdir_make(&t);
    wf_workflow *wf = asker_wf();
    cr_assert_not_null(wf);
    int up[2];
    cr_assert_eq(pipe(up), 0);
    gate_set(1);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        wf_store *s = open_store(t.db, "held");
        if (s == NULL)
            _exit(10);
        wf_executor *ex = h_exec(s);
        wf_handler *h;
        if (wf_run_start_durable(ex, wf, NULL, "r1", h_start(0), NULL, &h, NULL) < 0)
            _exit(11);
        wf_handler_free(h);
        if (wf_run_start_durable(ex, wf, NULL, "r2", h_start(0), NULL, &h, NULL) < 0)
            _exit(12);
        wf_handler_free(h);
        /* a checkpoint of r1 with its step not waiting yet (it is held at the gate) */
        void *ck = NULL;
        size_t len;
        while (wf_store_get_checkpoint(s, "r1", &ck, &len, NULL) == WF_ENOTFOUND)
            sched_yield(); /* polls the store until the checkpoint thread wrote one */
        wf_free(ck);
        /* r1's answer is journaled before the crash; r2's comes after the recovery */
        if (wf_durable_send(ex, "r1", h_ev(H_ANSWER, 7), NULL) < 0 || wf_store_flush(s) < 0)
            _exit(13);
        char b = 1;
        if (write(up[1], &b, 1) != 1)
            _exit(14);
        for (;;)
            pause(); /* killed here, the steps still at the gate */
    }
    char b;
    cr_assert_eq(read(up[0], &b, 1), 1);
    kill(pid, SIGKILL);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st), "the child ended by itself: %d", WEXITSTATUS(st));

    wf_store *s = open_store(t.db, "held"); /* the same owner: its runs are ours to recover */
    cr_assert_not_null(s);
    wf_executor *ex = h_exec(s);
    wf_recover_info ri;
    cr_assert_eq(wf_executor_recover(ex, &wf, 1, &ri, NULL), 0);
    cr_assert_eq(ri.resumed, 2);
    /* r1's answer was delivered again by the recovery, before its step waits again */
    cr_assert_eq(h_unhandled(ex, "r1"), 0, "the answer was dropped as unhandled");
    cr_assert_eq(wf_durable_send(ex, "r2", h_ev(H_ANSWER, 8), NULL), 0);
    cr_assert_eq(h_unhandled(ex, "r2"), 0, "the answer was dropped as unhandled");
    /* held, and durable as such: no checkpoint covers the answers while the runs hold them */
    answer_after_checkpoint(s, "r1");
    answer_after_checkpoint(s, "r2");
    gate_set(0); /* the steps wait now, and the held answers answer them */
    cr_assert_eq(h_result(ex, wf, "r1"), 7);
    cr_assert_eq(h_result(ex, wf, "r2"), 8);
    wf_executor_free(ex);
    wf_store_free(s);
    wf_workflow_free(wf);
    rm_dir(t.dir);
}

/*
 * What nobody ever waits for is not lost silently either: held while a
 * step could still wait for it, then reported unconsumed (counted
 * unhandled, a warning in the log) once the run has nothing left to run,
 * or when it ends.
 */
Test(durable, an_event_nobody_waits_for_is_reported_unconsumed, .timeout = 60)
{
    tdir t;
    tdir_make(&t);
    wf_workflow *wf = asker_wf();
    cr_assert_not_null(wf);
    wf_store *s = open_store(t.db, "stray");
    cr_assert_not_null(s);
    wf_executor *ex = h_exec(s);
    wf_handler *h;
    /* 1. the run ends while it holds the stray event */
    gate_set(1);
    cr_assert_eq(wf_run_start_durable(ex, wf, NULL, "ends", h_start(1), NULL, &h, NULL), 0);
    cr_assert_eq(wf_durable_send(ex, "ends", h_ev(H_STRAY, 1), NULL), 0);
    cr_assert_eq(wf_handler_unhandled(h), 0, "held while its step runs");
    gate_set(0);
    wf_event *res = NULL;
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    wf_event_release(res);
    cr_assert_eq(wf_handler_unhandled(h), 1, "reported when the run ended");
    wf_handler_free(h);
    /* 2. the run waits for its answer: nothing left to run, the stray event is reported */
    cr_assert_eq(wf_run_start_durable(ex, wf, NULL, "waits", h_start(0), NULL, &h, NULL), 0);
    cr_assert_eq(wf_durable_send(ex, "waits", h_ev(H_STRAY, 2), NULL), 0);
    while (wf_handler_unhandled(h) == 0)
        sched_yield(); /* polls: the next checkpoint pass that finds the run waiting reports it */
    cr_assert_eq(wf_handler_unhandled(h), 1);
    cr_assert_eq(wf_durable_send(ex, "waits", h_ev(H_ANSWER, 9), NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, &res), 0);
    int64_t r = -1;
    wf_value_get_int(wf_event_result(res), &r);
    cr_assert_eq(r, 9);
    wf_event_release(res);
    cr_assert_eq(wf_handler_unhandled(h), 1);
    wf_handler_free(h);
    wf_executor_free(ex);
    wf_store_free(s);
    wf_workflow_free(wf);
    rm_dir(t.dir);
}
