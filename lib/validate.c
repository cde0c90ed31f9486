/*
 * validate.c: workflow validation with the reference's wording.
 *
 * Messages (from llama-index-workflows' workflow.py and
 * representation/validate.py; "@step" became "step", Python's sets print as
 * sorted, comma-separated names):
 *
 * Definition checks (always, wf_workflow_freeze):
 *   Workflow 'W' has no configured steps. Did you forget to add steps with
 *     wf_workflow_add_step?
 *   At least one Event of type StartEvent must be received by any step.
 *     (Workflow 'W' has no step that accepts StartEvent.)
 *   Only one type of StartEvent is allowed per workflow, found N: A, B in
 *     workflow 'W'.
 *   At least one Event of type StopEvent must be returned by any step.
 *     (Workflow 'W' has no step that returns StopEvent.)
 *   Only one type of StopEvent is allowed per workflow, found N: A, B in
 *     workflow 'W'.
 *
 * Run-start checks (wf_workflow_validate, and runs unless disabled):
 *   Step 'x' cannot accept StopEvent. StopEvent signals the end of the
 *     workflow. Use a different Event type instead.   ("Steps 'a', 'b' ...")
 *   The following events are consumed but never produced: A, B
 *   The following events are produced but never consumed: A, B
 *   Graph validation failed:
 *     - [reachability] Unreachable steps: a, b
 *       Steps must be reachable from StartEvent or HumanResponseEvent.
 *     - [terminal_event] Events produced but never consumed: X
 *       Only StopEvent and InputRequiredEvent may be terminal.
 *     - [dead_end] Dead-end steps: a
 *       Steps must have a path to StopEvent or InputRequiredEvent.
 *
 * The reference raises at the first failing stage; wf reports every failing
 * set check together (they are independent), and, as the reference, runs the
 * graph checks only once those pass, reporting all graph problems together.
 * Routing follows accept_subtypes: a step that opted in consumes subtypes.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Appends "a, b, c" for the n names (sorted in place). */
static void put_names(wf__buf *b, const char **names, size_t n, const char *sep)
{
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i)
            wf__buf_puts(b, sep);
        wf__buf_puts(b, names[i]);
    }
}

/* A set of types as a small array (workflows have tens of types). */
typedef struct tset {
    const wf_event_type **t;
    size_t n, cap;
    int oom;
} tset;

static int tset_has(const tset *s, const wf_event_type *t)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->t[i] == t)
            return 1;
    return 0;
}

static void tset_add(tset *s, const wf_event_type *t)
{
    if (tset_has(s, t) || s->oom)
        return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        const wf_event_type **n = wf__realloc(s->t, cap * sizeof *n);
        if (n == NULL) {
            s->oom = 1;
            return;
        }
        s->t = n;
        s->cap = cap;
    }
    s->t[s->n++] = t;
}

static void tset_free(tset *s)
{
    wf__free_mem(s->t);
}

static const char **names_of(const tset *s)
{
    const char **v = wf__malloc((s->n ? s->n : 1) * sizeof *v);
    if (v)
        for (size_t i = 0; i < s->n; i++)
            v[i] = s->t[i]->name;
    return v;
}

static const wf_event_type *builtin(const wf_workflow *wf, wf_builtin_type b)
{
    return wf->reg->types[b];
}

int wf__validate_definition(const wf_workflow *wf, const wf_event_type **start,
                            const wf_event_type **stop, wf__buf *b)
{
    *start = NULL;
    *stop = NULL;
    if (wf->n_steps == 0) {
        wf__buf_printf(b,
                       "Workflow '%s' has no configured steps. Did you forget to add steps with "
                       "wf_workflow_add_step?\n",
                       wf->name);
        return 1;
    }
    tset starts = {0}, stops = {0};
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *s = wf->steps[i];
        for (uint32_t j = 0; j < s->n_accepts; j++)
            if (wf_event_type_is(s->accepts[j], builtin(wf, WF_START_EVENT)))
                tset_add(&starts, s->accepts[j]);
        for (uint32_t j = 0; j < s->n_emits; j++)
            if (s->emits[j]->is_stop)
                tset_add(&stops, s->emits[j]);
    }
    int problems = 0;
    if (starts.oom || stops.oom) {
        b->oom = 1;
        problems = 1;
    } else {
        if (starts.n == 0) {
            wf__buf_printf(b,
                           "At least one Event of type StartEvent must be received by any step. "
                           "(Workflow '%s' has no step that accepts StartEvent.)\n",
                           wf->name);
            problems++;
        } else if (starts.n > 1) {
            const char **n = names_of(&starts);
            wf__buf_printf(
                b, "Only one type of StartEvent is allowed per workflow, found %zu: ", starts.n);
            if (n)
                put_names(b, n, starts.n, ", ");
            wf__buf_printf(b, " in workflow '%s'.\n", wf->name);
            wf__free_mem(n);
            problems++;
        } else {
            *start = starts.t[0];
        }
        if (stops.n == 0) {
            wf__buf_printf(b,
                           "At least one Event of type StopEvent must be returned by any step. "
                           "(Workflow '%s' has no step that returns StopEvent.)\n",
                           wf->name);
            problems++;
        } else if (stops.n > 1) {
            const char **n = names_of(&stops);
            wf__buf_printf(
                b, "Only one type of StopEvent is allowed per workflow, found %zu: ", stops.n);
            if (n)
                put_names(b, n, stops.n, ", ");
            wf__buf_printf(b, " in workflow '%s'.\n", wf->name);
            wf__free_mem(n);
            problems++;
        } else {
            *stop = stops.t[0];
        }
    }
    tset_free(&starts);
    tset_free(&stops);

    /* error handlers */
    const wf_event_type *failed = builtin(wf, WF_STEP_FAILED_EVENT);
    const char *catch_all = NULL;
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *h = wf->steps[i];
        if (!h->error_of_all && h->n_error_of == 0)
            continue;
        int accepts = 0;
        for (uint32_t j = 0; j < h->n_accepts; j++)
            accepts |= h->accepts[j] == failed;
        if (!accepts) {
            wf__buf_printf(b, "Error handler '%s' must accept StepFailedEvent.\n", h->name);
            problems++;
        }
        if (h->error_of_all) {
            if (catch_all) {
                wf__buf_printf(b,
                               "Only one step may handle the errors of every step, found '%s' "
                               "and '%s'.\n",
                               catch_all, h->name);
                problems++;
            }
            catch_all = h->name;
        }
        for (uint32_t j = 0; j < h->n_error_of; j++) {
            const char *target = h->error_of[j];
            if (strcmp(target, h->name) == 0) {
                wf__buf_printf(b, "Error handler '%s' cannot handle its own errors.\n", h->name);
                problems++;
                continue;
            }
            if (wf__workflow_find_step(wf, target) == NULL) {
                wf__buf_printf(b, "Error handler '%s' names unknown step '%s'.\n", h->name, target);
                problems++;
                continue;
            }
            /* claimed by an earlier handler (or earlier in this list)? */
            for (uint32_t k = 0; k <= i; k++) {
                const wf__step *o = wf->steps[k];
                uint32_t upto = k == i ? j : o->n_error_of;
                int dup = 0;
                for (uint32_t m = 0; m < upto && !dup; m++)
                    dup = strcmp(o->error_of[m], target) == 0;
                if (dup) {
                    wf__buf_printf(b, "Step '%s' has more than one error handler: '%s' and '%s'.\n",
                                   target, o->name, h->name);
                    problems++;
                    break;
                }
            }
        }
    }
    return problems;
}

/* ------------------------------------------------------------ run checks */

/* 1 if some step that accepts `a` receives a produced type p (exact or opted-in subtype). */
static int produced_for(const wf_workflow *wf, const tset *produced, const wf_event_type *a)
{
    if (tset_has(produced, a))
        return 1;
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *s = wf->steps[i];
        if (!s->accept_subtypes)
            continue;
        int accepts_a = 0;
        for (uint32_t j = 0; j < s->n_accepts; j++)
            accepts_a |= s->accepts[j] == a;
        if (!accepts_a)
            continue;
        for (size_t k = 0; k < produced->n; k++)
            if (wf_event_type_is(produced->t[k], a))
                return 1;
    }
    return 0;
}

static int consumed_by_any(const wf_workflow *wf, const wf_event_type *t)
{
    for (uint32_t i = 0; i < wf->n_steps; i++)
        if (wf__step_accepts(wf->steps[i], t))
            return 1;
    return 0;
}

static int is_any(const wf_event_type *t, const wf_event_type *a, const wf_event_type *b,
                  const wf_event_type *c)
{
    return wf_event_type_is(t, a) || (b && wf_event_type_is(t, b)) || (c && wf_event_type_is(t, c));
}

static int set_checks(const wf_workflow *wf, const tset *produced, const tset *consumed, wf__buf *b)
{
    int problems = 0;
    const wf_event_type *stop = builtin(wf, WF_STOP_EVENT);
    const wf_event_type *ir = builtin(wf, WF_INPUT_REQUIRED_EVENT);
    const wf_event_type *hr = builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    const wf_event_type *sf = builtin(wf, WF_STEP_FAILED_EVENT);

    /* steps accepting StopEvent */
    const char **bad = wf__malloc((wf->n_steps ? wf->n_steps : 1) * sizeof *bad);
    if (bad == NULL) {
        b->oom = 1;
        return 1;
    }
    size_t nbad = 0;
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *s = wf->steps[i];
        for (uint32_t j = 0; j < s->n_accepts; j++) {
            if (s->accepts[j]->is_stop) {
                bad[nbad++] = s->name;
                break;
            }
        }
    }
    if (nbad) {
        wf__buf_printf(b, "Step%s '", nbad == 1 ? "" : "s");
        put_names(b, bad, nbad, "', '");
        wf__buf_puts(b, "' cannot accept StopEvent. StopEvent signals the end of the workflow. "
                        "Use a different Event type instead.\n");
        problems++;
    }
    wf__free_mem(bad);

    /* consumed but never produced */
    tset miss = {0};
    for (size_t i = 0; i < consumed->n; i++) {
        const wf_event_type *t = consumed->t[i];
        if (is_any(t, ir, hr, stop) || wf_event_type_is(t, sf))
            continue;
        if (!produced_for(wf, produced, t))
            tset_add(&miss, t);
    }
    if (miss.n) {
        const char **n = names_of(&miss);
        wf__buf_puts(b, "The following events are consumed but never produced: ");
        if (n)
            put_names(b, n, miss.n, ", ");
        wf__buf_puts(b, "\n");
        wf__free_mem(n);
        problems++;
    }
    if (miss.oom)
        b->oom = 1;
    tset_free(&miss);

    /* produced but never consumed */
    tset unused = {0};
    for (size_t i = 0; i < produced->n; i++) {
        const wf_event_type *t = produced->t[i];
        if (is_any(t, ir, hr, wf->stop_type ? wf->stop_type : stop))
            continue;
        if (!consumed_by_any(wf, t))
            tset_add(&unused, t);
    }
    if (unused.n) {
        const char **n = names_of(&unused);
        wf__buf_puts(b, "The following events are produced but never consumed: ");
        if (n)
            put_names(b, n, unused.n, ", ");
        wf__buf_puts(b, "\n");
        wf__free_mem(n);
        problems++;
    }
    if (unused.oom)
        b->oom = 1;
    tset_free(&unused);
    return problems;
}

/*
 * The graph: nodes are steps (0..n_steps-1) and event types (n_steps + k for
 * the k-th type of `types`). Edges: type -> step when the step accepts it
 * (with opted-in subtypes), step -> type for each emitted type.
 */
typedef struct graph {
    const wf_workflow *wf;
    tset types;
    uint32_t nn;
} graph;

static int edge(const graph *g, uint32_t from, uint32_t to)
{
    uint32_t ns = g->wf->n_steps;
    if (from < ns && to >= ns) {
        const wf__step *s = g->wf->steps[from];
        const wf_event_type *t = g->types.t[to - ns];
        for (uint32_t j = 0; j < s->n_emits; j++)
            if (s->emits[j] == t)
                return 1;
        /* a step with an error handler may emit StepFailedEvent */
        return s->handler >= 0 && t == g->wf->reg->types[WF_STEP_FAILED_EVENT];
    }
    if (from >= ns && to < ns)
        return wf__step_accepts(g->wf->steps[to], g->types.t[from - ns]);
    return 0;
}

/* Marks every node reachable from the marked ones (forward or backward). */
static void reach(const graph *g, uint8_t *mark, int backward)
{
    int changed = 1;
    while (changed) {
        changed = 0;
        for (uint32_t u = 0; u < g->nn; u++) {
            if (!mark[u])
                continue;
            for (uint32_t v = 0; v < g->nn; v++) {
                if (mark[v])
                    continue;
                if (backward ? edge(g, v, u) : edge(g, u, v)) {
                    mark[v] = 1;
                    changed = 1;
                }
            }
        }
    }
}

static int graph_checks(const wf_workflow *wf, uint32_t skip, wf__buf *b)
{
    graph g = {wf, {0}, 0};
    uint32_t ns = wf->n_steps;
    for (uint32_t i = 0; i < ns; i++) {
        const wf__step *s = wf->steps[i];
        for (uint32_t j = 0; j < s->n_accepts; j++)
            tset_add(&g.types, s->accepts[j]);
        for (uint32_t j = 0; j < s->n_emits; j++)
            tset_add(&g.types, s->emits[j]);
    }
    if (g.types.oom) {
        b->oom = 1;
        tset_free(&g.types);
        return 1;
    }
    g.nn = ns + (uint32_t)g.types.n;
    uint8_t *fwd = wf__calloc(g.nn, 1), *bwd = wf__calloc(g.nn, 1);
    const char **names = wf__malloc((g.nn ? g.nn : 1) * sizeof *names);
    if (fwd == NULL || bwd == NULL || names == NULL) {
        b->oom = 1;
        wf__free_mem(fwd);
        wf__free_mem(bwd);
        wf__free_mem(names);
        tset_free(&g.types);
        return 1;
    }
    const wf_event_type *hr = builtin(wf, WF_HUMAN_RESPONSE_EVENT);
    const wf_event_type *ir = builtin(wf, WF_INPUT_REQUIRED_EVENT);
    for (size_t k = 0; k < g.types.n; k++) {
        const wf_event_type *t = g.types.t[k];
        if (t == wf->start_type || wf_event_type_is(t, hr))
            fwd[ns + k] = 1;
        if (t->is_stop || wf_event_type_is(t, ir))
            bwd[ns + k] = 1;
    }
    reach(&g, fwd, 0);
    reach(&g, bwd, 1);

    int problems = 0;
    wf__buf part;
    wf__buf_init(&part);
    if (!(skip & WF__CHECK_REACHABILITY)) {
        size_t n = 0;
        for (uint32_t i = 0; i < ns; i++)
            if (!fwd[i] && !(wf->steps[i]->skip_checks & WF__CHECK_REACHABILITY))
                names[n++] = wf->steps[i]->name;
        if (n) {
            wf__buf_puts(&part, "  - [reachability] Unreachable steps: ");
            put_names(&part, names, n, ", ");
            wf__buf_puts(&part,
                         "\n    Steps must be reachable from StartEvent or HumanResponseEvent.\n");
            problems++;
        }
    }
    if (!(skip & WF__CHECK_TERMINAL)) {
        size_t n = 0;
        for (size_t k = 0; k < g.types.n; k++) {
            const wf_event_type *t = g.types.t[k];
            if (t->is_stop || wf_event_type_is(t, ir) || consumed_by_any(wf, t))
                continue;
            names[n++] = t->name;
        }
        if (n) {
            wf__buf_puts(&part, "  - [terminal_event] Events produced but never consumed: ");
            put_names(&part, names, n, ", ");
            wf__buf_puts(&part, "\n    Only StopEvent and InputRequiredEvent may be terminal.\n");
            problems++;
        }
    }
    if (!(skip & WF__CHECK_DEAD_END)) {
        size_t n = 0;
        for (uint32_t i = 0; i < ns; i++)
            if (wf->steps[i]->n_emits > 0 && !bwd[i] &&
                !(wf->steps[i]->skip_checks & WF__CHECK_DEAD_END))
                names[n++] = wf->steps[i]->name;
        if (n) {
            wf__buf_puts(&part, "  - [dead_end] Dead-end steps: ");
            put_names(&part, names, n, ", ");
            wf__buf_puts(&part,
                         "\n    Steps must have a path to StopEvent or InputRequiredEvent.\n");
            problems++;
        }
    }
    if (problems) {
        wf__buf_puts(b, "Graph validation failed:\n");
        if (part.data)
            wf__buf_append(b, part.data, part.len);
    }
    if (part.oom)
        b->oom = 1;
    wf__buf_free(&part);
    wf__free_mem(fwd);
    wf__free_mem(bwd);
    wf__free_mem(names);
    tset_free(&g.types);
    return problems;
}

int wf__validate_run(const wf_workflow *wf, uint32_t skip_checks, wf__buf *b)
{
    tset produced = {0}, consumed = {0};
    if (wf->start_type)
        tset_add(&produced, wf->start_type);
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *s = wf->steps[i];
        for (uint32_t j = 0; j < s->n_accepts; j++)
            tset_add(&consumed, s->accepts[j]);
        for (uint32_t j = 0; j < s->n_emits; j++)
            tset_add(&produced, s->emits[j]);
        if (s->num_workers < 1) {
            wf__buf_printf(b, "Step '%s' has num_workers %u; it must be at least 1.\n", s->name,
                           s->num_workers);
            tset_free(&produced);
            tset_free(&consumed);
            return 1;
        }
    }
    int problems;
    if (produced.oom || consumed.oom) {
        b->oom = 1;
        problems = 1;
    } else {
        problems = set_checks(wf, &produced, &consumed, b);
        if (problems == 0)
            problems = graph_checks(wf, skip_checks, b);
    }
    tset_free(&produced);
    tset_free(&consumed);
    return problems;
}
