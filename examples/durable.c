/*
 * durable.c: a durable run killed and resumed by its id.
 *
 * An order workflow: "charge" charges the customer (a side effect, made
 * once per idempotency key), then "ship" waits for a person's approval,
 * sent later by run id. A child process attaches a SQLite store to its
 * executor, starts the run "order-42", and is killed (SIGKILL) while the
 * run waits for the approval. This process then opens the same store,
 * recovers the run, sends the approval to "order-42" and prints the
 * result, which is durable before it is reported. The charge is not made
 * twice: the step checks its idempotency key.
 *
 * Usage: durable [store.db]   (default: a temporary file, removed at the end)
 */
#include <wf/wf.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const wf_event_type *T_START, *T_CHARGED, *T_APPROVAL;
static char charged_log[600]; /* the "payment provider": one line per charge key */

/* The payment provider's de-duplication: 1 if key was charged already. */
static int charged_before(const char *key)
{
    FILE *f = fopen(charged_log, "r");
    char line[600];
    int seen = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == '\n')
            seen = 1;
    if (f)
        fclose(f);
    return seen;
}

static int charge(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    char key[512];
    int rc = wf_ctx_invocation_key(ctx, key, sizeof key);
    if (rc < 0)
        return rc;
    if (!charged_before(key)) {
        FILE *f = fopen(charged_log, "a");
        if (f == NULL)
            return WF_EIO;
        fprintf(f, "%s\n", key);
        fclose(f);
        printf("  [pid %d] charged the customer (key %s)\n", (int)getpid(), key);
    } else {
        printf("  [pid %d] already charged under key %s: not again\n", (int)getpid(), key);
    }
    fflush(stdout);
    return wf_event_new1(out, T_CHARGED, "amount", wf_event_get(in, "amount", wf_value_int(0)));
}

static int ship(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    const wf_event_type *want[2] = {T_CHARGED, T_APPROVAL};
    wf_event *got[2];
    int rc = wf_ctx_collect_events(ctx, in, want, 2, NULL, got);
    if (rc == WF_EAGAIN)
        return 0; /* waits for the other one: the approval comes from a person */
    if (rc < 0)
        return rc;
    const char *who = "?";
    wf_value_get_string(wf_event_get(got[1], "by", wf_value_nil()), &who, NULL);
    char msg[256];
    snprintf(msg, sizeof msg, "shipped, approved by %s", who);
    wf_event_release(got[0]);
    wf_event_release(got[1]);
    wf_value v;
    if (wf_value_string(&v, msg) < 0)
        return WF_ENOMEM;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL, v);
}

static wf_workflow *order_workflow(void)
{
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "order", NULL) < 0)
        return NULL;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Charged", NULL, &T_CHARGED);
    wf_workflow_event_type(wf, "Approval", NULL, &T_APPROVAL);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &T_START;
    p.n_accepts = 1;
    p.emits = &T_CHARGED;
    p.n_emits = 1;
    wf_workflow_add_step(wf, "charge", charge, &p, NULL);
    const wf_event_type *acc[2] = {T_CHARGED, T_APPROVAL};
    p.accepts = acc;
    p.n_accepts = 2;
    p.emits = &stop;
    wf_workflow_add_step(wf, "ship", ship, &p, NULL);
    wf_workflow_set_validation(wf, 0); /* Approval comes from outside */
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    return wf;
}

static int open_all(const char *db, wf_store **s, wf_executor **ex)
{
    wf_store_params sp;
    wf_store_params_init(&sp);
    sp.owner = "order-service"; /* the same owner after a restart: its runs recover at once */
    char *msg = NULL;
    int rc = wf_store_open_sqlite(s, db, &sp, &msg);
    if (rc < 0) {
        fprintf(stderr, "durable: %s\n", msg ? msg : wf_err_name(rc));
        return rc;
    }
    if ((rc = wf_executor_new(ex, NULL)) < 0 || (rc = wf_executor_attach_store(*ex, *s, NULL)) < 0)
        return rc;
    return 0;
}

int main(int argc, char **argv)
{
    char db[512];
    char tmpdir[] = "/tmp/wf-durable-example-XXXXXX";
    int own = argc < 2;
    if (own && mkdtemp(tmpdir) == NULL)
        return 1;
    snprintf(db, sizeof db, "%s", own ? tmpdir : argv[1]);
    if (own)
        strcat(db, "/orders.db");
    snprintf(charged_log, sizeof charged_log, "%s.charges", db);
    wf_workflow *wf = order_workflow();
    if (wf == NULL)
        return 1;

    int ready[2];
    if (pipe(ready) < 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) { /* the first process: starts the run, then dies */
        wf_store *s;
        wf_executor *ex;
        if (open_all(db, &s, &ex) < 0)
            _exit(1);
        wf_event *start;
        wf_event_new1(&start, T_START, "amount", wf_value_int(120));
        wf_handler *h;
        char *msg = NULL;
        int rc = wf_run_start_durable(ex, wf, NULL, "order-42", start, NULL, &h, &msg);
        if (rc < 0) {
            fprintf(stderr, "start: %s\n", msg ? msg : wf_err_name(rc));
            _exit(1);
        }
        printf("[pid %d] started run order-42; it waits for an approval\n", (int)getpid());
        fflush(stdout);
        /* wait until the run is checkpointed waiting (the charge made and durable) */
        wf_store_run_info info = {0};
        do {
            wf_store_run_info_clear(&info);
            usleep(10000);
        } while (wf_store_get_run(s, "order-42", &info) == 0 && info.checkpoint_seq == 0);
        wf_store_run_info_clear(&info);
        wf_handler_wait(h, 50, NULL); /* a moment for the checkpoint after the charge */
        if (write(ready[1], "k", 1) != 1)
            _exit(1);
        pause(); /* killed here */
        _exit(0);
    }
    char c;
    if (read(ready[0], &c, 1) != 1)
        return 1;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    printf("[pid %d] killed pid %d with the run in flight\n", (int)getpid(), (int)pid);

    wf_store *s;
    wf_executor *ex;
    if (open_all(db, &s, &ex) < 0)
        return 1;
    wf_recover_info ri;
    char *msg = NULL;
    int rc = wf_executor_recover(ex, &wf, 1, &ri, &msg);
    printf("[pid %d] recovered: %u run(s) resumed, %u failed\n", (int)getpid(), ri.resumed,
           ri.failed);
    if (rc < 0 || ri.resumed != 1) {
        fprintf(stderr, "recover: %s %s\n", wf_err_name(rc), msg ? msg : "");
        return 1;
    }
    wf_event *ok;
    wf_value by;
    wf_value_string(&by, "alice");
    wf_event_new1(&ok, T_APPROVAL, "by", by);
    if ((rc = wf_durable_send(ex, "order-42", ok, NULL)) < 0) {
        fprintf(stderr, "send: %s\n", wf_err_name(rc));
        return 1;
    }
    printf("[pid %d] sent the approval to order-42 by its id\n", (int)getpid());
    wf_handler *h;
    wf_event *res = NULL;
    if (wf_handler_open(ex, "order-42", &h) == 0) {
        rc = wf_handler_wait(h, -1, &res);
        wf_handler_free(h);
    } else { /* finished already: read the durable result */
        wf_run_status st;
        rc = wf_durable_result(ex, wf, "order-42", &st, &res);
    }
    const char *text = "?";
    if (rc == 0)
        wf_value_get_string(wf_event_result(res), &text, NULL);
    printf("[pid %d] order-42: %s (durable before it was reported)\n", (int)getpid(), text);
    wf_event_release(res);
    wf_executor_free(ex);
    wf_store_free(s);
    wf_workflow_free(wf);
    if (own) {
        char p[700];
        const char *sfx[] = {"", "-wal", "-shm", ".charges"};
        for (int i = 0; i < 4; i++) {
            snprintf(p, sizeof p, "%s%s", db, sfx[i]);
            unlink(p);
        }
        rmdir(tmpdir);
    }
    return rc == 0 ? 0 : 1;
}
