/*
 * snap_child.c: the second process of test_snapshot's cross-process test.
 * Usage: snap_child FILE ANSWER. Loads the snapshot in FILE into a fresh
 * context of the same workflow, resumes it, answers ANSWER and prints
 * "result R step1 N1 step2 N2" (how many times each step ran here).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <wf/wf.h>

static atomic_int n1, n2;
static const wf_event_type *T_IR, *T_HR;

static int ask(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in, (void)u, (void)ctx;
    atomic_fetch_add(&n1, 1);
    wf_value s;
    if (wf_value_string(&s, "Enter a number: ") < 0)
        return WF_ENOMEM;
    return wf_event_new1(out, T_IR, "prefix", s);
}

static int answer(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)u;
    atomic_fetch_add(&n2, 1);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_retain(wf_event_get(in, "response", wf_value_nil())));
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL)
        return 3;
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "HumanInTheLoop", NULL) < 0)
        return 4;
    const wf_event_type *T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    T_IR = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    T_HR = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    const wf_event_type *dummy;
    /* the same registry shape as the first process */
    wf_workflow_event_type(wf, "Work", NULL, &dummy);
    wf_workflow_event_type(wf, "Done", NULL, &dummy);
    wf_workflow_event_type(wf, "Answer", NULL, &dummy);
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = p.n_emits = 1;
    p.accepts = &T_START;
    p.emits = &T_IR;
    wf_workflow_add_step(wf, "step1", ask, &p, NULL);
    p.accepts = &T_HR;
    p.emits = &T_STOP;
    wf_workflow_add_step(wf, "step2", answer, &p, NULL);
    wf_executor *ex;
    wf_ctx *ctx;
    wf_handler *h;
    char *msg = NULL;
    if (wf_executor_new(&ex, NULL) < 0)
        return 5;
    int rc = wf_ctx_load(wf, buf, len, 0, &ctx, &msg);
    if (rc < 0) {
        fprintf(stderr, "load: %s\n", msg ? msg : wf_strerror(rc));
        return 6;
    }
    if ((rc = wf_run_resume(ex, wf, ctx, NULL, &h, &msg)) < 0) {
        fprintf(stderr, "resume: %s\n", msg ? msg : wf_strerror(rc));
        return 7;
    }
    wf_value r;
    wf_event *ans, *res;
    if (wf_value_string(&r, argv[2]) < 0 || wf_event_new1(&ans, T_HR, "response", r) < 0 ||
        wf_handler_send_event(h, ans, NULL) < 0 || wf_handler_wait(h, -1, &res) < 0)
        return 8;
    const char *s = "?";
    wf_value_get_string(wf_event_result(res), &s, NULL);
    printf("result %s step1 %d step2 %d\n", s, atomic_load(&n1), atomic_load(&n2));
    wf_event_release(res);
    wf_handler_free(h);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return 0;
}
