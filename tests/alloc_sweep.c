/*
 * alloc_sweep.c: allocation failure at every point of a representative
 * program. `alloc_sweep K` runs the program with the K-th allocation failing
 * (0: none) and says how it ended; `alloc_sweep` alone runs it once to count
 * its allocations, then once per K in a child process of its own (two at a
 * time), and fails if any child hangs, gives a wrong result, leaks, or
 * crashes.
 *
 * The program: a 2-thread executor; a step fans out 4 events to a worker
 * step whose odd items fail their first attempt (a retry policy runs them
 * again), a collector gathers the 4 results (collect_events) and passes
 * their sum to a step that waits for a human (wait_for_event, its
 * InputRequiredEvent streamed); the caller reads the request, cancels,
 * saves the context, loads it into a new one, resumes, answers through the
 * handler and checks the result. Every outcome must be an error of a call
 * or of the run, or the right result; afterwards, once everything is freed
 * and the caches trimmed, no allocation may be live.
 *
 * Not a timed test: a child that does not finish within a generous bound
 * (alarm) is a hang, which is the failure this looks for.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <wf/wf.h>

enum { OK_RESULT = 0, OK_ERROR = 10, BAD_HANG = 2, BAD_LEAK = 3, BAD_RESULT = 4, BAD_SETUP = 5 };

static atomic_long live, count;
static long fail_at; /* 0: never */

static int fails(void)
{
    long n = atomic_fetch_add(&count, 1) + 1;
    return fail_at != 0 && n == fail_at;
}
static void *h_malloc(size_t n, void *u)
{
    (void)u;
    if (fails())
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}
static void *h_realloc(void *p, size_t n, void *u)
{
    (void)u;
    if (fails())
        return NULL;
    void *q = realloc(p, n);
    if (q && p == NULL)
        atomic_fetch_add(&live, 1);
    return q;
}
static void h_free(void *p, void *u)
{
    (void)u;
    if (p)
        atomic_fetch_sub(&live, 1);
    free(p);
}

#define FAN    4
#define ANSWER 100

static const wf_event_type *T_START, *T_STOP, *T_ITEM, *T_DONE, *T_SUM, *T_IR, *T_HR;

static int fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in, (void)out, (void)u;
    for (int i = 0; i < FAN; i++) {
        wf_event *e;
        int rc = wf_event_new1(&e, T_ITEM, "v", wf_value_int(i + 1));
        if (rc < 0 || (rc = wf_ctx_send_event(ctx, e, NULL)) < 0)
            return rc;
    }
    return 0;
}

static int work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    int64_t v = 0;
    wf_value_get_int(wf_event_get(in, "v", wf_value_int(0)), &v);
    if ((v & 1) && wf_ctx_attempt(ctx) == 1)
        return WF_EINTERNAL; /* the retry policy runs it again */
    return wf_event_new1(out, T_DONE, "v", wf_value_int(v * 10));
}

static int gather(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    const wf_event_type *types[FAN] = {T_DONE, T_DONE, T_DONE, T_DONE};
    wf_event *evs[FAN];
    int rc = wf_ctx_collect_events(ctx, in, types, FAN, NULL, evs);
    if (rc == WF_EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    int64_t sum = 0;
    for (int i = 0; i < FAN; i++) {
        int64_t v = 0;
        wf_value_get_int(wf_event_get(evs[i], "v", wf_value_int(0)), &v);
        sum += v;
        wf_event_release(evs[i]);
    }
    return wf_event_new1(out, T_SUM, "sum", wf_value_int(sum));
}

static int ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    wf_event *req, *got = NULL;
    int rc = wf_event_new(&req, T_IR, 0);
    if (rc < 0)
        return rc;
    rc = wf_ctx_wait_for_event(ctx, T_HR, wf_value_nil(), req, NULL, WF_NO_TIMEOUT, &got);
    if (rc != 0)
        return rc; /* WF_SUSPEND, or an error */
    int64_t sum = 0, n = 0;
    wf_value_get_int(wf_event_get(in, "sum", wf_value_int(0)), &sum);
    wf_value_get_int(wf_event_get(got, "n", wf_value_int(0)), &n);
    wf_event_release(got);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(sum + n));
}

static int add(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *acc,
               const wf_event_type *em, uint32_t workers, const wf_retry_policy *retry)
{
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &acc;
    p.n_accepts = 1;
    p.emits = &em;
    p.n_emits = 1;
    if (workers)
        p.num_workers = workers;
    p.retry = retry;
    return wf_workflow_add_step(wf, name, fn, &p, NULL);
}

static int build(wf_workflow **out)
{
    wf_workflow *wf;
    wf_retry_policy *pol = NULL;
    int rc = wf_workflow_new(&wf, "sweep", NULL);
    if (rc < 0)
        return rc;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    T_IR = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    T_HR = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    if ((rc = wf_workflow_event_type(wf, "Item", NULL, &T_ITEM)) < 0 ||
        (rc = wf_workflow_event_type(wf, "Done", NULL, &T_DONE)) < 0 ||
        (rc = wf_workflow_event_type(wf, "Sum", NULL, &T_SUM)) < 0 ||
        (rc = wf_retry_policy_constant(&pol, 3, 0)) < 0 ||
        (rc = add(wf, "fan", fan, T_START, T_ITEM, 0, NULL)) < 0 ||
        (rc = add(wf, "work", work, T_ITEM, T_DONE, 2, pol)) < 0 ||
        (rc = add(wf, "gather", gather, T_DONE, T_SUM, 1, NULL)) < 0 ||
        (rc = add(wf, "ask", ask, T_SUM, T_STOP, 0, NULL)) < 0 ||
        (rc = wf_workflow_set_validation(wf, 0)) < 0) {
        wf_retry_policy_free(pol);
        wf_workflow_free(wf);
        return rc;
    }
    wf_retry_policy_free(pol);
    *out = wf;
    return 0;
}

#define WAIT_MS 20000 /* far beyond what a healthy run takes: only a hang reaches it */

/* Reads the stream until the InputRequiredEvent: 0, an error, or BAD_HANG. */
static int read_request(wf_handler *h)
{
    for (;;) {
        wf_event *e = NULL;
        int rc = wf_handler_next_event(h, WAIT_MS, &e);
        if (rc == WF_ETIMEDOUT)
            return -BAD_HANG;
        if (rc < 0)
            return rc; /* the stream closed: the run ended (an error) */
        const wf_event_type *t = wf_event_type_of(e);
        wf_event_release(e);
        if (t == T_IR)
            return 0;
        if (wf_event_type_is(t, T_STOP))
            return WF_ESTEP; /* a terminal event: the run failed */
    }
}

/* The program; returns OK_RESULT, OK_ERROR or a BAD_* code. */
static int program(void)
{
    wf_workflow *wf = NULL;
    wf_executor *ex = NULL;
    wf_ctx *ctx = NULL, *back = NULL;
    wf_handler *h = NULL;
    void *bytes = NULL;
    size_t len = 0;
    int out = OK_ERROR, rc;
    if (build(&wf) < 0)
        goto done;
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2;
    if (wf_executor_new(&ex, &ep) < 0 || wf_ctx_new(&ctx, wf) < 0)
        goto done;
    wf_event *s;
    if (wf_event_new(&s, T_START, 0) < 0 || wf_run_start(ex, wf, ctx, s, &h) < 0)
        goto done;
    if ((rc = read_request(h)) < 0) {
        if (rc == -BAD_HANG)
            out = BAD_HANG;
        goto done;
    }
    /* save and load: cancel parks the run in ctx */
    if (wf_handler_cancel(h) < 0 || wf_handler_wait(h, WAIT_MS, NULL) == WF_ETIMEDOUT) {
        if (wf_handler_status(h) == WF_RUN_RUNNING)
            out = BAD_HANG;
        goto done;
    }
    wf_handler_free(h);
    h = NULL;
    if (wf_ctx_save(ctx, &bytes, &len) < 0 || wf_ctx_load(wf, bytes, len, 0, &back, NULL) < 0 ||
        wf_run_resume(ex, wf, back, NULL, &h, NULL) < 0)
        goto done;
    wf_event *answer;
    if (wf_event_new1(&answer, T_HR, "n", wf_value_int(ANSWER)) < 0 ||
        wf_handler_send_event(h, answer, NULL) < 0)
        goto done;
    wf_event *res = NULL;
    rc = wf_handler_wait(h, WAIT_MS, &res);
    if (rc == WF_ETIMEDOUT) {
        out = BAD_HANG;
        goto done;
    }
    if (rc == 0) {
        int64_t got = -1, want = 0;
        for (int i = 1; i <= FAN; i++)
            want += i * 10;
        want += ANSWER;
        wf_value_get_int(wf_event_result(res), &got);
        out = got == want ? OK_RESULT : BAD_RESULT;
        if (out == BAD_RESULT)
            fprintf(stderr, "wrong result %lld, expected %lld\n", (long long)got, (long long)want);
        wf_event_release(res);
    }
done:
    wf_handler_free(h);
    wf_free(bytes);
    wf_ctx_free(back);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return out;
}

static int run_one(long k)
{
    fail_at = k;
    wf_alloc_hooks hooks = {h_malloc, h_realloc, h_free, NULL};
    if (wf_set_alloc_hooks(&hooks) < 0)
        return BAD_SETUP;
    alarm(120); /* a hang that even the waits above miss ends as SIGALRM */
    int out = program();
    if (out != OK_RESULT && out != OK_ERROR)
        return out;
    if (k == 0 && out != OK_RESULT)
        return BAD_RESULT; /* without failures it must succeed */
    wf_alloc_trim();
    long l = atomic_load(&live);
    if (l != 0) {
        fprintf(stderr, "k=%ld: %ld allocations live after free and trim\n", k, l);
        return BAD_LEAK;
    }
    if (k == 0)
        printf("%ld\n", atomic_load(&count));
    return out;
}

/* Runs `self K` for K = 1..n, two at a time; returns the number of bad ones. */
static int sweep(const char *self, long n)
{
    int bad = 0, results = 0, errors = 0;
    long next = 1, running = 0;
    pid_t pids[2] = {0, 0};
    long ks[2] = {0, 0};
    while (next <= n || running) {
        for (int s = 0; s < 2 && next <= n; s++) {
            if (pids[s])
                continue;
            char arg[32];
            snprintf(arg, sizeof arg, "%ld", next);
            pid_t p = fork();
            if (p == 0) {
                execl(self, self, arg, (char *)NULL);
                _exit(BAD_SETUP);
            }
            pids[s] = p;
            ks[s] = next++;
            running++;
        }
        int st;
        pid_t p = wait(&st);
        if (p < 0)
            break;
        for (int s = 0; s < 2; s++) {
            if (pids[s] != p)
                continue;
            pids[s] = 0;
            running--;
            int code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
            if (code == OK_RESULT)
                results++;
            else if (code == OK_ERROR)
                errors++;
            else {
                bad++;
                printf("not ok - allocation %ld failing: %s (%d)\n", ks[s],
                       code == BAD_HANG     ? "hang"
                       : code == BAD_LEAK   ? "leak"
                       : code == BAD_RESULT ? "wrong result"
                       : code < 0           ? "killed by a signal"
                                            : "bad exit",
                       code);
            }
        }
    }
    printf("# %ld allocation points: %d ended with the right result, %d with an error, %d bad\n", n,
           results, errors, bad);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return run_one(atol(argv[1]));
    /* count the allocations of a clean run, in a child (the hooks are one-time) */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' 0", argv[0]);
    FILE *p = popen(cmd, "r");
    long n = 0;
    if (p == NULL || fscanf(p, "%ld", &n) != 1 || pclose(p) != 0 || n <= 0) {
        printf("1..1\nnot ok 1 - the program without failures did not succeed\n");
        return 1;
    }
    /* threads make the order vary a little: sweep somewhat past the clean count */
    long upto = n + n / 10 + 16;
    printf("1..1\n");
    int bad = sweep(argv[0], upto);
    printf("%s 1 - every one of %ld allocation points fails cleanly\n", bad ? "not ok" : "ok",
           upto);
    return bad ? 1 : 0;
}
