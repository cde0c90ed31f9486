/*
 * test_validate.c: every validation rule with its exact message, ported from
 * the reference's validation cases (tests/test_workflow.py and the graph
 * checks of representation/validate.py).
 */
#include "harness.h"

#include <string.h>

#include <wf/wf.h>

static int nop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

static wf_workflow *wf;
static const wf_event_type *START, *STOP, *A, *B, *C, *IR, *HR;

static void setup(void)
{
    cr_assert_eq(wf_workflow_new(&wf, "TestWorkflow", NULL), 0);
    START = wf_workflow_builtin(wf, WF_START_EVENT);
    STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    IR = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    HR = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "OneTestEvent", NULL, &A), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "AnotherTestEvent", NULL, &B), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "LastEvent", NULL, &C), 0);
}

static void teardown(void)
{
    wf_workflow_free(wf);
}

TestSuite(validate, .init = setup, .fini = teardown);

/* step NAME accepting acc (and acc2), emitting e1, e2 (NULL for none) */
static void step2(const char *name, const wf_event_type *acc, const wf_event_type *acc2,
                  const wf_event_type *e1, const wf_event_type *e2, int subtypes)
{
    const wf_event_type *accepts[2] = {acc, acc2};
    const wf_event_type *emits[2] = {e1, e2};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = accepts;
    p.n_accepts = acc2 ? 2 : 1;
    p.emits = emits;
    p.n_emits = e2 ? 2 : (e1 ? 1 : 0);
    p.accept_subtypes = subtypes;
    cr_assert_eq(wf_workflow_add_step(wf, name, nop, &p, NULL), 0, "add %s", name);
}

static void step(const char *name, const wf_event_type *acc, const wf_event_type *e1,
                 const wf_event_type *e2)
{
    step2(name, acc, NULL, e1, e2, 0);
}

static void expect(int want_rc, const char *want_msg)
{
    char *msg = NULL;
    int rc = wf_workflow_validate(wf, &msg);
    cr_assert_eq(rc, want_rc, "rc %s, message: %s", wf_err_name(rc), msg ? msg : "(none)");
    if (want_msg) {
        cr_assert_not_null(msg);
        cr_assert_str_eq(msg, want_msg);
    } else {
        cr_assert_null(msg, "unexpected message: %s", msg);
    }
    wf_free(msg);
}

Test(validate, valid_workflow_passes)
{
    step("start_step", START, A, NULL);
    step("middle_step", A, B, NULL);
    step("end_step", B, STOP, NULL);
    expect(0, NULL);
    cr_assert_eq(wf_workflow_start_type(wf), START);
    cr_assert_eq(wf_workflow_stop_type(wf), STOP);
}

Test(validate, no_steps)
{
    expect(WF_EVALIDATION,
           "Workflow 'TestWorkflow' has no configured steps. Did you forget to add steps with "
           "wf_workflow_add_step?");
}

Test(validate, no_start_step)
{
    step("a", A, STOP, NULL);
    expect(WF_EVALIDATION,
           "At least one Event of type StartEvent must be received by any step. (Workflow "
           "'TestWorkflow' has no step that accepts StartEvent.)");
}

Test(validate, two_start_types)
{
    const wf_event_type *S2;
    cr_assert_eq(wf_workflow_event_type(wf, "MyStart", START, &S2), 0);
    step("a", START, STOP, NULL);
    step("b", S2, STOP, NULL);
    expect(WF_EVALIDATION, "Only one type of StartEvent is allowed per workflow, found 2: "
                           "MyStart, StartEvent in workflow 'TestWorkflow'.");
}

Test(validate, no_stop_producer)
{
    step("a", START, A, NULL);
    step("b", A, NULL, NULL);
    expect(WF_EVALIDATION,
           "At least one Event of type StopEvent must be returned by any step. (Workflow "
           "'TestWorkflow' has no step that returns StopEvent.)");
}

Test(validate, two_stop_types)
{
    const wf_event_type *S2;
    cr_assert_eq(wf_workflow_event_type(wf, "MyStop", STOP, &S2), 0);
    step("a", START, STOP, A);
    step("b", A, S2, NULL);
    expect(WF_EVALIDATION, "Only one type of StopEvent is allowed per workflow, found 2: "
                           "MyStop, StopEvent in workflow 'TestWorkflow'.");
}

Test(validate, freeze_reports_definition_errors)
{
    step("a", A, STOP, NULL);
    char *msg = NULL;
    cr_assert_eq(wf_workflow_freeze(wf, &msg), WF_EVALIDATION);
    cr_assert_not_null(msg);
    cr_assert(strstr(msg, "StartEvent") != NULL);
    wf_free(msg);
    /* not frozen: steps can still be added */
    step("b", START, A, NULL);
    cr_assert_eq(wf_workflow_freeze(wf, NULL), 0);
}

Test(validate, unconsumed_event)
{
    /* reference: test_workflow_validation_unconsumed_events */
    step("start_step", START, A, STOP);
    expect(WF_EVALIDATION, "The following events are produced but never consumed: OneTestEvent");
}

Test(validate, unproduced_event)
{
    /* reference: test_workflow_validation_unproduced_events */
    step("start_step", START, STOP, NULL);
    step("invalid_step", A, STOP, NULL);
    expect(WF_EVALIDATION, "The following events are consumed but never produced: OneTestEvent");
}

Test(validate, step_accepting_stop_event)
{
    step("start_step", START, STOP, NULL);
    step("bad_step", STOP, NULL, NULL);
    expect(WF_EVALIDATION, "Step 'bad_step' cannot accept StopEvent. StopEvent signals the end "
                           "of the workflow. Use a different Event type instead.");
}

Test(validate, steps_accepting_stop_event_plural)
{
    step("start_step", START, STOP, NULL);
    step("z_step", STOP, NULL, NULL);
    step("a_step", STOP, NULL, NULL);
    expect(WF_EVALIDATION, "Steps 'a_step', 'z_step' cannot accept StopEvent. StopEvent signals "
                           "the end of the workflow. Use a different Event type instead.");
}

Test(validate, set_problems_are_reported_together)
{
    step("start_step", START, A, STOP);
    step("other", B, STOP, NULL);
    expect(WF_EVALIDATION,
           "The following events are consumed but never produced: AnotherTestEvent\n"
           "The following events are produced but never consumed: OneTestEvent");
}

Test(validate, unreachable_step)
{
    /* b and c feed each other but nothing from StartEvent reaches them */
    step("start_step", START, STOP, NULL);
    step("b", A, B, STOP);
    step("c", B, A, NULL);
    expect(WF_EVALIDATION, "Graph validation failed:\n"
                           "  - [reachability] Unreachable steps: b, c\n"
                           "    Steps must be reachable from StartEvent or HumanResponseEvent.");
}

Test(validate, dead_end_cycle)
{
    /* a -> b -> a with no way out: both are dead ends */
    step("start_step", START, A, STOP);
    step("ping", A, B, NULL);
    step("pong", B, A, NULL);
    expect(WF_EVALIDATION, "Graph validation failed:\n"
                           "  - [dead_end] Dead-end steps: ping, pong\n"
                           "    Steps must have a path to StopEvent or InputRequiredEvent.");
}

Test(validate, graph_problems_are_reported_together)
{
    step("start_step", START, A, STOP);
    step("ping", A, B, NULL);
    step("pong", B, A, NULL);
    step("island", C, C, STOP);
    expect(WF_EVALIDATION, "Graph validation failed:\n"
                           "  - [reachability] Unreachable steps: island\n"
                           "    Steps must be reachable from StartEvent or HumanResponseEvent.\n"
                           "  - [dead_end] Dead-end steps: ping, pong\n"
                           "    Steps must have a path to StopEvent or InputRequiredEvent.");
}

Test(validate, skip_checks_by_name)
{
    step("start_step", START, A, STOP);
    step("ping", A, B, NULL);
    step("pong", B, A, NULL);
    step("island", C, C, STOP);
    cr_assert_eq(wf_workflow_skip_check(wf, "dead_end"), 0);
    expect(WF_EVALIDATION, "Graph validation failed:\n"
                           "  - [reachability] Unreachable steps: island\n"
                           "    Steps must be reachable from StartEvent or HumanResponseEvent.");
}

Test(validate, skip_every_graph_check)
{
    step("start_step", START, A, STOP);
    step("ping", A, B, NULL);
    step("pong", B, A, NULL);
    step("island", C, C, STOP);
    cr_assert_eq(wf_workflow_skip_check(wf, "dead_end"), 0);
    cr_assert_eq(wf_workflow_skip_check(wf, "reachability"), 0);
    cr_assert_eq(wf_workflow_skip_check(wf, "terminal_event"), 0);
    expect(0, NULL);
}

/* a step of its own choosing skips a graph check (the reference's per-step skip_graph_checks) */
static void step_skipping(const char *name, const wf_event_type *acc, const wf_event_type *em,
                          const char *check)
{
    const wf_event_type *a[1] = {acc}, *e[1] = {em};
    const char *checks[1] = {check};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = a;
    p.n_accepts = 1;
    p.emits = e;
    p.n_emits = 1;
    p.skip_graph_checks = checks;
    p.n_skip_graph_checks = 1;
    cr_assert_eq(wf_workflow_add_step(wf, name, nop, &p, NULL), 0, "%s", wf_last_error_message());
}

Test(validate, a_step_skips_a_graph_check_for_itself)
{
    step("start_step", START, A, STOP);
    step("ping", A, B, NULL);
    step_skipping("pong", B, A, "dead_end");
    step_skipping("island", C, C, "reachability");
    const wf_event_type *D;
    cr_assert_eq(wf_workflow_event_type(wf, "FourthEvent", NULL, &D), 0);
    step("island2", D, D, STOP);
    /* pong skips dead_end, island reachability (only): ping and island are dead ends, island2
     * unreachable */
    expect(WF_EVALIDATION, "Graph validation failed:\n"
                           "  - [reachability] Unreachable steps: island2\n"
                           "    Steps must be reachable from StartEvent or HumanResponseEvent.\n"
                           "  - [dead_end] Dead-end steps: island, ping\n"
                           "    Steps must have a path to StopEvent or InputRequiredEvent.");
}

Test(validate, a_step_cannot_skip_an_unknown_or_workflow_wide_check)
{
    const wf_event_type *a[1] = {START}, *e[1] = {STOP};
    const char *checks[1] = {"terminal_event"};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = a;
    p.n_accepts = 1;
    p.emits = e;
    p.n_emits = 1;
    p.skip_graph_checks = checks;
    p.n_skip_graph_checks = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), WF_EINVAL);
    cr_assert(strstr(wf_last_error_message(), "terminal_event") != NULL, "%s",
              wf_last_error_message());
    p.skip_graph_checks = NULL;
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop, &p, NULL), WF_EINVAL);
}

Test(validate, unknown_check_name)
{
    cr_assert_eq(wf_workflow_skip_check(wf, "reachable"), WF_EINVAL);
    cr_assert_eq(wf_workflow_skip_check(wf, ""), WF_EINVAL);
    cr_assert_eq(wf_workflow_skip_check(wf, NULL), WF_EINVAL);
}

Test(validate, terminal_event_check)
{
    /* A has no consumer; the set check (run first) names it as unconsumed. */
    step("start_step", START, A, STOP);
    cr_assert_eq(wf_workflow_skip_check(wf, "terminal_event"), 0);
    expect(WF_EVALIDATION, "The following events are produced but never consumed: OneTestEvent");
}

Test(validate, terminal_event_reports_a_human_response_with_no_consumer)
{
    /* HumanResponseEvent is exempt from the set check but not from terminal_event. */
    step("start_step", START, HR, STOP);
    expect(WF_EVALIDATION, "Graph validation failed:\n"
                           "  - [terminal_event] Events produced but never consumed: "
                           "HumanResponseEvent\n"
                           "    Only StopEvent and InputRequiredEvent may be terminal.");
    /* the definition is frozen now */
    cr_assert_eq(wf_workflow_skip_check(wf, "terminal_event"), WF_EFROZEN);
}

Test(validate, human_in_the_loop_exemptions)
{
    /* InputRequiredEvent needs no consumer, HumanResponseEvent no producer. */
    step("ask", START, IR, NULL);
    step("answer", HR, STOP, NULL);
    expect(0, NULL);
}

Test(validate, subtype_routing_counts_for_consumption)
{
    const wf_event_type *SubA;
    cr_assert_eq(wf_workflow_event_type(wf, "SubA", A, &SubA), 0);
    step("start_step", START, SubA, NULL);
    step2("general", A, NULL, STOP, NULL, 1);
    expect(0, NULL);
}

Test(validate, exact_routing_does_not_consume_subtypes)
{
    const wf_event_type *SubA;
    cr_assert_eq(wf_workflow_event_type(wf, "SubA", A, &SubA), 0);
    step("start_step", START, SubA, NULL);
    step2("general", A, NULL, STOP, NULL, 0);
    expect(WF_EVALIDATION, "The following events are consumed but never produced: OneTestEvent\n"
                           "The following events are produced but never consumed: SubA");
}

Test(validate, validation_off_skips_run_checks_only)
{
    step("start_step", START, A, STOP); /* A is never consumed */
    cr_assert_eq(wf_workflow_set_validation(wf, 0), 0);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, START, 0), 0);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.timeout_ms = 10;
    wf_handler *h = NULL;
    /* The run starts (the step emits nothing, so it then times out). */
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, &rp, &h, NULL), 0);
    cr_assert_eq(wf_handler_wait(h, -1, NULL), WF_ERUNTIMEOUT);
    wf_handler_free(h);
    wf_executor_free(ex);
    /* An explicit validate still reports the problem. */
    expect(WF_EVALIDATION, "The following events are produced but never consumed: OneTestEvent");
}

Test(validate, definition_checks_run_even_with_validation_off)
{
    step("a", A, STOP, NULL);
    cr_assert_eq(wf_workflow_set_validation(wf, 0), 0);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, START, 0), 0);
    wf_handler *h = NULL;
    char *msg = NULL;
    cr_assert_eq(wf_run_start_ex(ex, wf, NULL, s, NULL, &h, &msg), WF_EVALIDATION);
    cr_assert_null(h);
    cr_assert_not_null(msg);
    cr_assert(strstr(msg, "At least one Event of type StartEvent") == msg, "%s", msg);
    wf_free(msg);
    wf_executor_free(ex);
}
