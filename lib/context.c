/*
 * context.c: the context object and its store.
 *
 * The store is one map value under a pthread rwlock. ck_rwlock would spin
 * (and PITFALLS.md measured its shared reader counter); a sleeping lock is
 * the right tool here because wf_ctx_edit_state runs user code under the
 * write lock. Readers retain the value they read, and values are immutable,
 * so nothing a reader holds can change under it: writers mutate in place only
 * what nobody else references (copy-on-write in value.c).
 */
#include "internal.h"

#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

void wf__lock_slow(wf__lock *l)
{
    for (int i = 0; i < 100; i++) {
        __builtin_ia32_pause();
        uint32_t free_ = 0;
        if (atomic_load_explicit(&l->w, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->w, &free_, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }
    /* taken with sleepers (2) from now on, until a give finds it so and wakes one */
    while (atomic_exchange_explicit(&l->w, 2, memory_order_acquire) != 0)
        syscall(SYS_futex, (uint32_t *)&l->w, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
}

void wf__lock_wake(wf__lock *l)
{
    syscall(SYS_futex, (uint32_t *)&l->w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

int wf_ctx_new(wf_ctx **out, wf_workflow *wf)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = NULL;
    if (wf == NULL)
        return WF_EINVAL;
    wf_ctx *ctx = wf__calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return WF_ENOMEM;
    /*
     * The shared empty map until the first write (state_own): a run that
     * never writes its store (many wait for input) keeps no map of its own.
     */
    ctx->state = wf__value_empty_map();
    if (wf->state_schema) {
        int rc = wf_value_map_new(&ctx->state, 1);
        if (rc == 0)
            rc = wf__state_defaults(wf, &ctx->state); /* the state schema's (schema.c) */
        if (rc < 0) {
            wf_value_release(ctx->state);
            wf__free_mem(ctx);
            return rc;
        }
    }
    /* Writers are rare and short; do not let a stream of readers starve them. */
#ifdef PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
    /* the initializer of that kind, copied: what pthread_rwlock_init writes, without 4 calls */
    static const pthread_rwlock_t init = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
    memcpy(&ctx->lock, &init, sizeof init);
#else
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ctx->lock, &a);
    pthread_rwlockattr_destroy(&a);
#endif
    atomic_init(&ctx->run_lock.w, 0);
    atomic_init(&ctx->refs, 1);
    atomic_init(&ctx->run, NULL);
    wf__workflow_retain_local(wf);
    ctx->wf = wf;
    *out = ctx;
    return 0;
}

wf_ctx *wf_ctx_retain(wf_ctx *ctx)
{
    if (ctx)
        atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
    return ctx;
}

/* Drops the context's own reference to its state (the shared empty map's is not counted). */
static void state_drop(wf_value state)
{
    if (!wf__value_is_empty_map(state))
        wf_value_release(state);
}

/*
 * ctx->lock held for writing: the state becomes a map of the context's own
 * before a write (room for one key: a store written once keeps 96 bytes).
 */
static int state_own(wf_ctx *ctx)
{
    if (!wf__value_is_empty_map(ctx->state))
        return 0;
    return wf_value_map_new(&ctx->state, 1);
}

void wf_ctx_free(wf_ctx *ctx)
{
    if (ctx == NULL || atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1)
        return;
    state_drop(ctx->state);
    wf__free_mem(ctx->parked);
    pthread_rwlock_destroy(&ctx->lock);
    wf__workflow_release_local(ctx->wf);
    wf__free_mem(ctx);
}

wf_workflow *wf_ctx_workflow(const wf_ctx *ctx)
{
    return ctx ? ctx->wf : NULL;
}

int wf_ctx_is_running(const wf_ctx *ctx)
{
    return ctx ? atomic_load_explicit(&((wf_ctx *)ctx)->run, memory_order_acquire) != NULL : 0;
}

int wf_ctx_is_resumable(const wf_ctx *ctx)
{
    if (ctx == NULL)
        return 0;
    wf__lock_take(&((wf_ctx *)ctx)->run_lock);
    int r = ctx->parked != NULL;
    wf__lock_give(&((wf_ctx *)ctx)->run_lock);
    return r;
}

void wf__ctx_park(wf_ctx *ctx, void *bytes, size_t len)
{
    wf__lock_take(&ctx->run_lock);
    void *old = ctx->parked;
    ctx->parked = bytes;
    ctx->parked_len = bytes ? len : 0;
    wf__lock_give(&ctx->run_lock);
    wf__free_mem(old);
}

int wf__ctx_unpark(wf_ctx *ctx, void **bytes, size_t *len)
{
    wf__lock_take(&ctx->run_lock);
    *bytes = ctx->parked;
    *len = ctx->parked_len;
    ctx->parked = NULL;
    ctx->parked_len = 0;
    wf__lock_give(&ctx->run_lock);
    return *bytes != NULL;
}

int wf__ctx_parked_copy(wf_ctx *ctx, void **bytes, size_t *len)
{
    int rc = 0;
    *bytes = NULL;
    *len = 0;
    wf__lock_take(&ctx->run_lock);
    if (ctx->parked) {
        *bytes = wf__malloc(ctx->parked_len ? ctx->parked_len : 1);
        if (*bytes == NULL) {
            rc = WF_ENOMEM;
        } else {
            memcpy(*bytes, ctx->parked, ctx->parked_len);
            *len = ctx->parked_len;
            rc = 1;
        }
    }
    wf__lock_give(&ctx->run_lock);
    return rc;
}

/* Validates a dotted path: no empty part. */
static int path_ok(const char *path)
{
    if (path == NULL || path[0] == 0)
        return 0;
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0)
            return 0;
        if (!dot)
            return 1;
        p = dot + 1;
    }
}

/* Walks path from root; *out borrowed. */
static int lookup(wf_value root, const char *path, wf_value *out)
{
    wf_value cur = root;
    const char *p = path;
    for (;;) {
        if (wf_value_kind(cur) != WF_MAP)
            return WF_EKIND;
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        wf_value next;
        int rc = wf_value_map_get_n(cur, p, n, &next);
        if (rc < 0)
            return rc;
        cur = next;
        if (!dot)
            break;
        p = dot + 1;
    }
    *out = cur;
    return 0;
}

int wf_ctx_get(wf_ctx *ctx, const char *path, wf_value *out)
{
    if (out)
        *out = wf_value_nil();
    if (ctx == NULL || out == NULL || !path_ok(path))
        return WF_EINVAL;
    pthread_rwlock_rdlock(&ctx->lock);
    wf_value v;
    int rc = lookup(ctx->state, path, &v);
    if (rc == 0)
        *out = wf_value_retain(v);
    pthread_rwlock_unlock(&ctx->lock);
    return rc;
}

int wf_ctx_get_default(wf_ctx *ctx, const char *path, wf_value dflt, wf_value *out)
{
    int rc = wf_ctx_get(ctx, path, out);
    if (rc == WF_ENOTFOUND) {
        *out = wf_value_retain(dflt);
        return 0;
    }
    return rc;
}

/* Sets path inside the map *m (owned by the caller); takes val. */
static int set_in(wf_value *m, const char *path, wf_value val)
{
    const char *dot = strchr(path, '.');
    if (dot == NULL)
        return wf_value_map_set(m, path, val);
    size_t n = (size_t)(dot - path);
    wf_value child;
    int rc = wf_value_map_get_n(*m, path, n, &child);
    if (rc == 0) {
        if (wf_value_kind(child) != WF_MAP) {
            wf_value_release(val);
            return WF_EKIND;
        }
        child = wf_value_retain(child);
    } else if (rc == WF_ENOTFOUND) {
        rc = wf_value_map_new(&child, 4);
        if (rc < 0) {
            wf_value_release(val);
            return rc;
        }
    } else {
        wf_value_release(val);
        return rc;
    }
    rc = set_in(&child, dot + 1, val);
    if (rc < 0) {
        wf_value_release(child);
        return rc;
    }
    return wf_value_map_set_n(m, path, n, child);
}

int wf_ctx_set(wf_ctx *ctx, const char *path, wf_value val)
{
    if (ctx == NULL || !path_ok(path)) {
        wf_value_release(val);
        return WF_EINVAL;
    }
    int rc = wf__state_check_set(ctx->wf, path, val); /* the state schema (schema.c) */
    if (rc < 0) {
        wf_value_release(val);
        return rc;
    }
    pthread_rwlock_wrlock(&ctx->lock);
    /*
     * Each level is replaced only after the level below succeeded, so a
     * failure half-way leaves the state as it was; maps nobody else holds
     * are changed in place (copy-on-write copies only shared ones).
     */
    rc = state_own(ctx);
    if (rc < 0)
        wf_value_release(val);
    else
        rc = set_in(&ctx->state, path, val);
    pthread_rwlock_unlock(&ctx->lock);
    return rc;
}

static int delete_in(wf_value *m, const char *path)
{
    const char *dot = strchr(path, '.');
    if (dot == NULL)
        return wf_value_map_remove(m, path);
    size_t n = (size_t)(dot - path);
    wf_value child;
    int rc = wf_value_map_get_n(*m, path, n, &child);
    if (rc < 0)
        return rc;
    if (wf_value_kind(child) != WF_MAP)
        return WF_EKIND;
    child = wf_value_retain(child);
    rc = delete_in(&child, dot + 1);
    if (rc < 0) {
        wf_value_release(child);
        return rc;
    }
    return wf_value_map_set_n(m, path, n, child);
}

int wf_ctx_delete(wf_ctx *ctx, const char *path)
{
    if (ctx == NULL || !path_ok(path))
        return WF_EINVAL;
    pthread_rwlock_wrlock(&ctx->lock);
    int rc = state_own(ctx);
    if (rc == 0)
        rc = delete_in(&ctx->state, path);
    pthread_rwlock_unlock(&ctx->lock);
    return rc;
}

int wf_ctx_state(wf_ctx *ctx, wf_value *out)
{
    if (out)
        *out = wf_value_nil();
    if (ctx == NULL || out == NULL)
        return WF_EINVAL;
    pthread_rwlock_rdlock(&ctx->lock);
    *out = wf_value_retain(ctx->state);
    pthread_rwlock_unlock(&ctx->lock);
    return 0;
}

int wf_ctx_edit_state(wf_ctx *ctx, wf_edit_fn fn, void *user)
{
    if (ctx == NULL || fn == NULL)
        return WF_EINVAL;
    pthread_rwlock_wrlock(&ctx->lock);
    wf_value s = wf_value_retain(ctx->state);
    int rc = fn(&s, user);
    if (rc == 0 && wf_value_kind(s) != WF_MAP)
        rc = WF_EKIND;
    if (rc == 0)
        rc = wf__state_check(ctx->wf, s); /* the state schema (schema.c) */
    if (rc == 0 && s.as.obj != ctx->state.as.obj) {
        state_drop(ctx->state);
        ctx->state = s;
    } else {
        wf_value_release(s);
    }
    pthread_rwlock_unlock(&ctx->lock);
    return rc;
}

/* Replaces the whole state (used by snapshots); takes state. */
int wf__ctx_replace_state(wf_ctx *ctx, wf_value state)
{
    if (wf_value_kind(state) != WF_MAP) {
        wf_value_release(state);
        return WF_EKIND;
    }
    pthread_rwlock_wrlock(&ctx->lock);
    wf_value old = ctx->state;
    ctx->state = state;
    pthread_rwlock_unlock(&ctx->lock);
    state_drop(old);
    return 0;
}
