/*
 * test_alloc.c: allocation hooks and the per-thread cache of the hot path.
 * Each test installs counting hooks first (Criterion runs every test in its
 * own process, so the hooks can still be installed).
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <wf/wf.h>

static atomic_long mallocs, frees;

static void *c_malloc(size_t n, void *u)
{
    atomic_fetch_add(&mallocs, 1);
    return malloc(n);
}
static void *c_realloc(void *p, size_t n, void *u)
{
    if (p == NULL)
        atomic_fetch_add(&mallocs, 1);
    return realloc(p, n);
}
static void c_free(void *p, void *u)
{
    if (p)
        atomic_fetch_add(&frees, 1);
    free(p);
}

static void install(void)
{
    wf_alloc_hooks h = {c_malloc, c_realloc, c_free, NULL};
    cr_assert_eq(wf_set_alloc_hooks(&h), 0);
}

Test(alloc, hooks_only_before_first_use)
{
    install();
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    cr_assert(atomic_load(&mallocs) > 0, "the hooks were not used");
    wf_alloc_hooks h = {c_malloc, c_realloc, c_free, NULL};
    cr_assert_eq(wf_set_alloc_hooks(&h), WF_EBUSY);
    cr_assert_eq(wf_set_alloc_hooks(NULL), WF_EBUSY);
    wf_registry_free(reg);
}

Test(alloc, incomplete_hooks_are_refused)
{
    wf_alloc_hooks h = {c_malloc, NULL, c_free, NULL};
    cr_assert_eq(wf_set_alloc_hooks(&h), WF_EINVAL);
}

#ifndef WF_NO_ALLOC_CACHE /* the per-thread caches are compiled out with -Dalloc_cache=false */
Test(alloc, small_event_is_one_allocation_then_cached)
{
    install();
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    const wf_event_type *t = wf_registry_builtin(reg, WF_START_EVENT);
    long before = atomic_load(&mallocs);
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, t, "count", wf_value_int(1)), 0);
    /* one block: from a slab the cache already has, or from a new one (one allocation) */
    cr_assert_leq(atomic_load(&mallocs) - before, 1, "a small event took %ld allocations",
                  atomic_load(&mallocs) - before);
    wf_event_release(e);
    cr_assert_eq(wf_event_new2(&e, t, "count", wf_value_int(0), "ok", wf_value_bool(1)), 0);
    wf_event_release(e); /* its block is cached now */
    before = atomic_load(&mallocs);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(wf_event_new2(&e, t, "count", wf_value_int(i), "ok", wf_value_bool(1)), 0);
        wf_event_release(e);
    }
    cr_assert_eq(atomic_load(&mallocs), before, "the cache did not serve the hot path");
    wf_registry_free(reg);
    wf_alloc_trim();
    cr_assert_eq(atomic_load(&mallocs), atomic_load(&frees));
}
#endif

Test(alloc, trim_gives_back_every_slab_with_no_block_in_use)
{
    install();
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    const wf_event_type *t = wf_registry_builtin(reg, WF_START_EVENT);
    wf_alloc_trim();
    long base = atomic_load(&mallocs) - atomic_load(&frees); /* the registry's blocks */
    static wf_event *evs[2000];
    for (int i = 0; i < 2000; i++)
        cr_assert_eq(wf_event_new1(&evs[i], t, "i", wf_value_int(i)), 0);
    long all = atomic_load(&mallocs) - atomic_load(&frees);
    cr_assert(all > base + 4, "2000 events fit in %ld slabs", all - base);
    for (int i = 0; i < 1999; i++)
        wf_event_release(evs[i]);
    wf_alloc_trim();
    long one = atomic_load(&mallocs) - atomic_load(&frees);
    cr_assert_leq(one, base + 1, "one live event keeps %ld slabs", one - base);
    wf_event_release(evs[1999]);
    wf_registry_free(reg);
    wf_alloc_trim();
    cr_assert_eq(atomic_load(&mallocs), atomic_load(&frees));
}

static void *churn(void *arg)
{
    const wf_event_type *t = arg;
    wf_event *evs[2000];
    for (int i = 0; i < 2000; i++)
        cr_assert_eq(wf_event_new1(&evs[i], t, "i", wf_value_int(i)), 0);
    for (int i = 0; i < 2000; i++)
        wf_event_release(evs[i]);
    return NULL;
}

Test(alloc, nothing_leaks_when_threads_exit)
{
    install();
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, churn, (void *)wf_registry_builtin(reg, WF_START_EVENT));
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    wf_registry_free(reg);
    wf_alloc_trim();
    cr_assert_eq(atomic_load(&mallocs), atomic_load(&frees), "%ld mallocs, %ld frees",
                 atomic_load(&mallocs), atomic_load(&frees));
}

#ifndef WF_NO_ALLOC_CACHE /* the per-thread caches are compiled out with -Dalloc_cache=false */
static void *release_all(void *arg)
{
    wf_event **evs = arg;
    for (int i = 0; i < 5000; i++)
        wf_event_release(evs[i]);
    return NULL;
}

Test(alloc, cross_thread_frees_come_back_through_the_depot)
{
    /*
     * Events made on this thread and freed on another: the freeing thread
     * hands its surplus to the shared depot in batches, and this thread's
     * next allocations come from there instead of from the hooks.
     */
    install();
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    const wf_event_type *t = wf_registry_builtin(reg, WF_START_EVENT);
    static wf_event *evs[5000];
    for (int round = 0; round < 3; round++) {
        long before = atomic_load(&mallocs);
        for (int i = 0; i < 5000; i++)
            cr_assert_eq(wf_event_new1(&evs[i], t, "i", wf_value_int(i)), 0);
        long made = atomic_load(&mallocs) - before;
        if (round > 0)
            cr_assert(made < 2500, "round %d: %ld of 5000 events needed the hooks", round, made);
        pthread_t th;
        pthread_create(&th, NULL, release_all, evs);
        pthread_join(th, NULL);
    }
    wf_registry_free(reg);
    wf_alloc_trim();
    cr_assert_eq(atomic_load(&mallocs), atomic_load(&frees));
}
#endif

static wf_value str(const char *s)
{
    wf_value v;
    cr_assert_eq(wf_value_string(&v, s), 0);
    return v;
}

Test(alloc, failing_hand_overs_release_what_they_were_given)
{
    install();
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    const wf_event_type *t = wf_registry_builtin(reg, WF_START_EVENT);
    wf_event *e = NULL;
    cr_assert_eq(wf_event_new1(&e, NULL, "k", str("lost?")), WF_EINVAL);
    cr_assert_eq(wf_event_new2(&e, t, "k", str("a"), NULL, str("b")), WF_EINVAL);
    cr_assert_eq(wf_event_new_stop(&e, reg, t, str("not a stop type")), WF_EINVAL);
    cr_assert_eq(wf_event_new1(&e, t, "k", str("kept")), 0);
    wf_event_freeze(e);
    cr_assert_eq(wf_event_set(e, "k", str("frozen")), WF_EFROZEN);
    wf_value notmap = wf_value_int(1);
    cr_assert_eq(wf_value_map_set(&notmap, "k", str("x")), WF_EKIND);
    cr_assert_eq(wf_value_array_push(&notmap, str("x")), WF_EKIND);
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "W", reg), 0);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    cr_assert_eq(wf_ctx_set(ctx, "a..b", str("bad path")), WF_EINVAL);
    cr_assert_eq(wf_ctx_set(ctx, "n", wf_value_int(1)), 0);
    cr_assert_eq(wf_ctx_set(ctx, "n.x", str("through a scalar")), WF_EKIND);
    cr_assert_eq(wf_ctx_send_event(ctx, e, NULL), WF_ESTATE); /* no run: e released */
    wf_ctx_free(ctx);
    wf_workflow_free(wf);
    wf_registry_free(reg);
    wf_alloc_trim();
    cr_assert_eq(atomic_load(&mallocs), atomic_load(&frees), "%ld mallocs, %ld frees",
                 atomic_load(&mallocs), atomic_load(&frees));
}
