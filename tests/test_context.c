/*
 * test_context.c: the context store: dotted paths, defaults, errors,
 * snapshots, edit_state atomicity under 8 threads, one run at a time on a
 * context started from 4 threads.
 */
#include "harness.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

static int dummy(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

static wf_workflow *wf;
static wf_ctx *ctx;

/* A workflow of one step from StartEvent to StopEvent (user_free: the step's, or NULL). */
static wf_workflow *one_step_workflow(const char *name, wf_step_fn fn, void (*user_free)(void *))
{
    wf_workflow *w;
    cr_assert_eq(wf_workflow_new(&w, name, NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(w, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(w, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    p.user_free = user_free;
    cr_assert_eq(wf_workflow_add_step(w, name, fn, &p, NULL), 0);
    return w;
}

static void setup(void)
{
    wf = one_step_workflow("ctx", dummy, NULL);
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
}

static void teardown(void)
{
    wf_ctx_free(ctx);
    wf_workflow_free(wf);
}

static int64_t geti(const char *path)
{
    wf_value v;
    cr_assert_eq(wf_ctx_get(ctx, path, &v), 0, "get %s", path);
    int64_t n;
    cr_assert_eq(wf_value_get_int(v, &n), 0);
    wf_value_release(v);
    return n;
}

TestSuite(context, .init = setup, .fini = teardown);

Test(context, set_get_and_default)
{
    wf_value v;
    cr_assert_eq(wf_ctx_get(ctx, "missing", &v), WF_ENOTFOUND);
    cr_assert_eq(wf_ctx_get_default(ctx, "missing", wf_value_int(7), &v), 0);
    cr_assert_eq(wf_value_kind(v), WF_INT);
    cr_assert_eq(wf_ctx_set(ctx, "k", wf_value_int(3)), 0);
    cr_assert_eq(geti("k"), 3);
    cr_assert_eq(wf_ctx_set(ctx, "k", wf_value_int(4)), 0);
    cr_assert_eq(geti("k"), 4);
    wf_value s;
    cr_assert_eq(wf_value_string(&s, "hello"), 0);
    cr_assert_eq(wf_ctx_set(ctx, "greeting", s), 0);
    cr_assert_eq(wf_ctx_get(ctx, "greeting", &v), 0);
    const char *str;
    cr_assert_eq(wf_value_get_string(v, &str, NULL), 0);
    cr_assert_str_eq(str, "hello");
    wf_value_release(v);
}

Test(context, dotted_paths_create_intermediate_maps)
{
    cr_assert_eq(wf_ctx_set(ctx, "a.b.c", wf_value_int(1)), 0);
    cr_assert_eq(wf_ctx_set(ctx, "a.b.d", wf_value_int(2)), 0);
    cr_assert_eq(wf_ctx_set(ctx, "a.e", wf_value_int(3)), 0);
    cr_assert_eq(geti("a.b.c"), 1);
    cr_assert_eq(geti("a.b.d"), 2);
    cr_assert_eq(geti("a.e"), 3);
    wf_value b;
    cr_assert_eq(wf_ctx_get(ctx, "a.b", &b), 0);
    cr_assert_eq(wf_value_kind(b), WF_MAP);
    cr_assert_eq(wf_value_len(b), 2);
    wf_value_release(b);
    wf_value v;
    cr_assert_eq(wf_ctx_get(ctx, "a.x.y", &v), WF_ENOTFOUND);
}

Test(context, path_errors)
{
    wf_value v;
    cr_assert_eq(wf_ctx_set(ctx, "n", wf_value_int(1)), 0);
    /* through a non-map */
    cr_assert_eq(wf_ctx_set(ctx, "n.x", wf_value_int(2)), WF_EKIND);
    cr_assert_eq(wf_ctx_get(ctx, "n.x", &v), WF_EKIND);
    cr_assert_eq(geti("n"), 1);
    /* empty paths and parts */
    cr_assert_eq(wf_ctx_set(ctx, "", wf_value_int(1)), WF_EINVAL);
    cr_assert_eq(wf_ctx_set(ctx, "a..b", wf_value_int(1)), WF_EINVAL);
    cr_assert_eq(wf_ctx_set(ctx, "a.", wf_value_int(1)), WF_EINVAL);
    cr_assert_eq(wf_ctx_get(ctx, NULL, &v), WF_EINVAL);
    cr_assert_eq(wf_ctx_get(NULL, "a", &v), WF_EINVAL);
    cr_assert_eq(wf_ctx_set(NULL, "a", wf_value_int(1)), WF_EINVAL);
}

Test(context, delete_values)
{
    cr_assert_eq(wf_ctx_set(ctx, "a.b", wf_value_int(1)), 0);
    cr_assert_eq(wf_ctx_set(ctx, "a.c", wf_value_int(2)), 0);
    cr_assert_eq(wf_ctx_delete(ctx, "a.b"), 0);
    wf_value v;
    cr_assert_eq(wf_ctx_get(ctx, "a.b", &v), WF_ENOTFOUND);
    cr_assert_eq(geti("a.c"), 2);
    cr_assert_eq(wf_ctx_delete(ctx, "a.b"), WF_ENOTFOUND);
    cr_assert_eq(wf_ctx_delete(ctx, "zz.b"), WF_ENOTFOUND);
}

Test(context, values_read_are_snapshots)
{
    cr_assert_eq(wf_ctx_set(ctx, "m.x", wf_value_int(1)), 0);
    wf_value before, state;
    cr_assert_eq(wf_ctx_get(ctx, "m", &before), 0);
    cr_assert_eq(wf_ctx_state(ctx, &state), 0);
    cr_assert_eq(wf_ctx_set(ctx, "m.x", wf_value_int(2)), 0);
    cr_assert_eq(wf_ctx_set(ctx, "m.y", wf_value_int(3)), 0);
    wf_value x;
    int64_t n;
    cr_assert_eq(wf_value_map_get(before, "x", &x), 0);
    cr_assert_eq(wf_value_get_int(x, &n), 0);
    cr_assert_eq(n, 1, "a value read earlier changed under its reader");
    cr_assert_eq(wf_value_len(before), 1);
    wf_value m;
    cr_assert_eq(wf_value_map_get(state, "m", &m), 0);
    cr_assert_eq(wf_value_len(m), 1);
    cr_assert_eq(geti("m.x"), 2);
    wf_value_release(before);
    wf_value_release(state);
}

static int add_both(wf_value *state, void *user)
{
    wf_value a, b;
    int64_t x = 0, y = 0;
    if (wf_value_map_get(*state, "a", &a) == 0)
        wf_value_get_int(a, &x);
    if (wf_value_map_get(*state, "b", &b) == 0)
        wf_value_get_int(b, &y);
    int rc = wf_value_map_set(state, "a", wf_value_int(x + 1));
    if (rc == 0)
        rc = wf_value_map_set(state, "b", wf_value_int(y + 1));
    return rc;
}

static int fail_half_way(wf_value *state, void *user)
{
    wf_value_map_set(state, "a", wf_value_int(-1000));
    return -77;
}

Test(context, edit_state_failure_changes_nothing)
{
    cr_assert_eq(wf_ctx_set(ctx, "a", wf_value_int(5)), 0);
    cr_assert_eq(wf_ctx_edit_state(ctx, fail_half_way, NULL), -77);
    cr_assert_eq(geti("a"), 5);
    cr_assert_eq(wf_ctx_edit_state(ctx, NULL, NULL), WF_EINVAL);
}

#define EDITORS 8
#define EDITS   5000
static atomic_int stop_readers;
static atomic_long torn;

static void *editor(void *arg)
{
    for (int i = 0; i < EDITS; i++)
        cr_assert_eq(wf_ctx_edit_state(ctx, add_both, NULL), 0);
    return NULL;
}

static void *reader(void *arg)
{
    while (!atomic_load(&stop_readers)) {
        wf_value s, a, b;
        cr_assert_eq(wf_ctx_state(ctx, &s), 0);
        int64_t x = 0, y = 0;
        if (wf_value_map_get(s, "a", &a) == 0)
            wf_value_get_int(a, &x);
        if (wf_value_map_get(s, "b", &b) == 0)
            wf_value_get_int(b, &y);
        if (x != y)
            atomic_fetch_add(&torn, 1);
        wf_value_release(s);
    }
    return NULL;
}

Test(context, edit_state_is_atomic_under_eight_threads, .timeout = 120)
{
    pthread_t ed[EDITORS], rd[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&rd[i], NULL, reader, NULL);
    for (int i = 0; i < EDITORS; i++)
        pthread_create(&ed[i], NULL, editor, NULL);
    for (int i = 0; i < EDITORS; i++)
        pthread_join(ed[i], NULL);
    atomic_store(&stop_readers, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(rd[i], NULL);
    cr_assert_eq(geti("a"), EDITORS * EDITS, "lost updates");
    cr_assert_eq(geti("b"), EDITORS * EDITS);
    cr_assert_eq(atomic_load(&torn), 0, "a reader saw a half-done edit");
}

static void *setter(void *arg)
{
    char path[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(path, sizeof path, "t%d.k%d", (int)(intptr_t)arg, i);
        cr_assert_eq(wf_ctx_set(ctx, path, wf_value_int(i)), 0);
    }
    return NULL;
}

Test(context, concurrent_sets_lose_nothing, .timeout = 120)
{
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, setter, (void *)(intptr_t)i);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int t = 0; t < 8; t++) {
        char path[32];
        snprintf(path, sizeof path, "t%d", t);
        wf_value m;
        cr_assert_eq(wf_ctx_get(ctx, path, &m), 0);
        cr_assert_eq(wf_value_len(m), 1000);
        wf_value_release(m);
    }
}

Test(context, step_calls_outside_a_step)
{
    cr_assert_null(wf_ctx_step_name(ctx));
    cr_assert_eq(wf_ctx_attempt(ctx), 0);
    cr_assert_eq(wf_ctx_run_id(ctx), 0);
    cr_assert_eq(wf_ctx_is_running(ctx), 0);
    cr_assert_eq(wf_ctx_set_error(ctx, "x"), WF_ESTATE);
    wf_event *e;
    cr_assert_eq(wf_event_new(&e, wf_workflow_builtin(wf, WF_START_EVENT), 0), 0);
    cr_assert_eq(wf_ctx_send_event(ctx, e, NULL), WF_ESTATE);
    cr_assert_eq(wf_event_new(&e, wf_workflow_builtin(wf, WF_START_EVENT), 0), 0);
    cr_assert_eq(wf_ctx_write_event_to_stream(ctx, e), WF_ESTATE);
    cr_assert_eq(wf_ctx_workflow(ctx), wf);
}

/*
 * The context's run_lock (a futex word, wf__lock): threads starting runs on
 * one context race for it; a start either owns the context (its step runs
 * with no other run's step on the same context) or is refused with
 * WF_EBUSY, while another thread keeps taking the lock through
 * wf_ctx_is_resumable.
 */
static atomic_int own_in_flight, own_overlap, own_stop;

static int own_step(wf_ctx *c, const wf_event *in, wf_event **out, void *u)
{
    (void)in;
    (void)u;
    if (atomic_fetch_add(&own_in_flight, 1) != 0)
        atomic_fetch_add(&own_overlap, 1);
    for (volatile int i = 0; i < 200; i++)
        ;
    atomic_fetch_sub(&own_in_flight, 1);
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(c)), NULL, wf_value_int(1));
}

typedef struct {
    wf_executor *ex;
    wf_workflow *wf;
    wf_ctx *ctx;
    int ok, busy, other;
} own_arg;

static void *own_starter(void *p)
{
    own_arg *a = p;
    for (int i = 0; i < 200; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new(&s, wf_workflow_builtin(a->wf, WF_START_EVENT), 0), 0);
        wf_event *res = NULL;
        int rc = wf_run(a->ex, a->wf, a->ctx, s, -1, &res);
        if (rc == 0)
            a->ok++;
        else if (rc == WF_EBUSY)
            a->busy++;
        else
            a->other++;
        wf_event_release(res);
    }
    return NULL;
}

static void *own_prober(void *p)
{
    wf_ctx *c = p;
    while (!atomic_load(&own_stop))
        cr_assert_eq(wf_ctx_is_resumable(c), 0);
    return NULL;
}

Test(context, one_run_at_a_time_on_a_context_under_four_threads, .timeout = 120)
{
    wf_workflow *w = one_step_workflow("own", own_step, NULL);
    wf_ctx *c;
    cr_assert_eq(wf_ctx_new(&c, w), 0);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    own_arg args[4];
    pthread_t th[4], probe;
    pthread_create(&probe, NULL, own_prober, c);
    for (int i = 0; i < 4; i++) {
        args[i] = (own_arg){ex, w, c, 0, 0, 0};
        pthread_create(&th[i], NULL, own_starter, &args[i]);
    }
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += args[i].ok;
        cr_assert_eq(args[i].ok + args[i].busy, 200, "a start neither ran nor was refused busy");
        cr_assert_eq(args[i].other, 0);
    }
    atomic_store(&own_stop, 1);
    pthread_join(probe, NULL);
    cr_assert(ok > 0);
    cr_assert_eq(atomic_load(&own_overlap), 0, "two runs' steps ran at once on one context");
    cr_assert_eq(wf_ctx_is_running(c), 0);
    wf_executor_free(ex);
    wf_ctx_free(c);
    wf_workflow_free(w);
}

/* Stores not written yet share one empty map (lib/context.c): a write, an edit or a reader's change to one is seen by no other. */
static int put_x(wf_value *s, void *user)
{
    (void)user;
    return wf_value_map_set(s, "x", wf_value_int(5));
}

static int keep(wf_value *s, void *user)
{
    (void)s;
    (void)user;
    return 0;
}

Test(context, unwritten_stores_stay_apart)
{
    wf_ctx *other, *third;
    cr_assert_eq(wf_ctx_new(&other, wf), 0);
    cr_assert_eq(wf_ctx_new(&third, wf), 0);
    /* a reader's copy of an empty store, changed by the reader */
    wf_value mine;
    cr_assert_eq(wf_ctx_state(other, &mine), 0);
    cr_assert_eq(wf_value_kind(mine), WF_MAP);
    cr_assert_eq(wf_value_len(mine), 0);
    cr_assert_eq(wf_value_map_set(&mine, "r", wf_value_int(1)), 0);
    wf_value_release(mine);
    /* a delete on an empty store finds nothing; an edit that changes nothing keeps it empty */
    cr_assert_eq(wf_ctx_delete(third, "k"), WF_ENOTFOUND);
    cr_assert_eq(wf_ctx_edit_state(third, keep, NULL), 0);
    cr_assert_eq(wf_ctx_set(ctx, "k", wf_value_int(3)), 0);
    cr_assert_eq(wf_ctx_edit_state(other, put_x, NULL), 0);
    wf_value v, s;
    cr_assert_eq(geti("k"), 3);
    cr_assert_eq(wf_ctx_get(ctx, "x", &v), WF_ENOTFOUND);
    cr_assert_eq(wf_ctx_get(ctx, "r", &v), WF_ENOTFOUND);
    cr_assert_eq(wf_ctx_get(other, "k", &v), WF_ENOTFOUND);
    cr_assert_eq(wf_ctx_get(other, "x", &v), 0);
    wf_value_release(v);
    cr_assert_eq(wf_ctx_state(third, &s), 0);
    cr_assert_eq(wf_value_len(s), 0, "a store nobody wrote holds %zu keys", wf_value_len(s));
    wf_value_release(s);
    /* a fresh context after all that still starts empty */
    wf_ctx *fresh;
    cr_assert_eq(wf_ctx_new(&fresh, wf), 0);
    cr_assert_eq(wf_ctx_state(fresh, &s), 0);
    cr_assert_eq(wf_value_len(s), 0);
    wf_value_release(s);
    wf_ctx_free(fresh);
    wf_ctx_free(third);
    wf_ctx_free(other);
}

/*
 * A context's reference on its workflow is taken in the making thread's
 * shard and dropped in the freeing thread's (lib/workflow.c): the workflow
 * lives until the last reference of either kind is gone, whichever thread
 * drops it, and is freed once.
 */
static atomic_int wf_frees;
static void count_wf_free(void *user)
{
    (void)user;
    atomic_fetch_add(&wf_frees, 1);
}

static wf_workflow *counted_workflow(const char *name)
{
    return one_step_workflow(name, dummy, count_wf_free);
}

typedef struct made_ctxs {
    wf_workflow *wf;
    wf_ctx *ctx[3];
} made_ctxs;

static void *make_ctxs(void *p)
{
    made_ctxs *m = p;
    for (int i = 0; i < 3; i++)
        if (wf_ctx_new(&m->ctx[i], m->wf) < 0)
            m->ctx[i] = NULL;
    return NULL;
}

static void *free_ctxs(void *p)
{
    made_ctxs *m = p;
    for (int i = 0; i < 3; i++)
        wf_ctx_free(m->ctx[i]);
    return NULL;
}

Test(context, workflow_lives_until_its_last_context_is_freed_on_any_thread)
{
    atomic_store(&wf_frees, 0);
    wf_workflow *w = counted_workflow("refs");
    made_ctxs m[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) { /* contexts made on four threads: up to four shards */
        m[i].wf = w;
        pthread_create(&th[i], NULL, make_ctxs, &m[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        for (int k = 0; k < 3; k++)
            cr_assert_not_null(m[i].ctx[k]);
    }
    wf_workflow *extra = wf_workflow_retain(w);
    wf_workflow_free(w);
    cr_assert_eq(atomic_load(&wf_frees), 0, "freed with a global reference and 12 contexts left");
    wf_workflow_free(extra); /* the last global one: the split ends, the contexts keep it */
    cr_assert_eq(atomic_load(&wf_frees), 0, "freed with 12 contexts left");
    cr_assert_str_eq(wf_workflow_name(wf_ctx_workflow(m[0].ctx[0])), "refs");
    /* Freed on another thread than the maker's; then a context made after the split ended. */
    pthread_create(&th[0], NULL, free_ctxs, &m[0]);
    pthread_join(th[0], NULL);
    cr_assert_eq(atomic_load(&wf_frees), 0);
    wf_ctx *late;
    cr_assert_eq(wf_ctx_new(&late, wf_ctx_workflow(m[1].ctx[0])), 0);
    wf_workflow *global = wf_workflow_retain(wf_ctx_workflow(late));
    for (int i = 1; i < 4; i++) {
        pthread_create(&th[i], NULL, free_ctxs, &m[i]);
        pthread_join(th[i], NULL);
    }
    cr_assert_eq(atomic_load(&wf_frees), 0, "freed with a context and a global reference left");
    wf_ctx_free(late);
    cr_assert_eq(atomic_load(&wf_frees), 0, "freed with a global reference left");
    wf_workflow_free(global);
    cr_assert_eq(atomic_load(&wf_frees), 1, "not freed once when the last reference went");
}

/*
 * Threads make, retain and free contexts of one workflow while its user
 * frees it: freed once, after the last.
 */
#define REF_THREADS 6
#define REF_ROUNDS  20000
static atomic_int ref_go, ref_early;

static void *ref_churn(void *p)
{
    wf_ctx *keep = p; /* this thread's reference until the end */
    wf_workflow *w = wf_ctx_workflow(keep);
    while (!atomic_load(&ref_go))
        ;
    for (int i = 0; i < REF_ROUNDS; i++) {
        wf_ctx *c;
        if (wf_ctx_new(&c, w) < 0)
            continue;
        if (i % 7 == 0) {
            wf_workflow *g = wf_workflow_retain(wf_ctx_workflow(c));
            wf_ctx_free(c);
            if (atomic_load(&wf_frees) != 0)
                atomic_fetch_add(&ref_early, 1);
            wf_workflow_free(g);
        } else {
            if (atomic_load(&wf_frees) != 0)
                atomic_fetch_add(&ref_early, 1);
            wf_ctx_free(c);
        }
    }
    if (atomic_load(&wf_frees) != 0)
        atomic_fetch_add(&ref_early, 1);
    wf_ctx_free(keep);
    return NULL;
}

Test(context, workflow_freed_by_its_user_while_threads_churn_contexts, .timeout = 120)
{
    atomic_store(&wf_frees, 0);
    atomic_store(&ref_early, 0);
    atomic_store(&ref_go, 0);
    wf_workflow *w = counted_workflow("churn");
    pthread_t th[REF_THREADS];
    for (int i = 0; i < REF_THREADS; i++) {
        wf_ctx *keep;
        cr_assert_eq(wf_ctx_new(&keep, w), 0);
        pthread_create(&th[i], NULL, ref_churn, keep);
    }
    atomic_store(&ref_go, 1);
    wf_workflow_free(w); /* while the threads run: the split ends under their feet */
    for (int i = 0; i < REF_THREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&ref_early), 0, "the workflow was freed while a reference was held");
    cr_assert_eq(atomic_load(&wf_frees), 1, "freed %d times", atomic_load(&wf_frees));
}
