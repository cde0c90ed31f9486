/*
 * deque.c: the Chase-Lev work-stealing deque on Concurrency Kit's ck_pr.
 *
 * Orderings follow Lê, Pop, Cohen, Zappa Nardelli, "Correct and Efficient
 * Work-Stealing for Weak Memory Models" (PPoPP'13). On x86 the only full
 * fence is the one in take(); steal() needs one between reading top and
 * bottom as well. Under ThreadSanitizer the same operations are spelled
 * with __atomic builtins, because TSan sees ck_pr's volatile loads and
 * stores as plain (racy) accesses.
 */
#include "exec.h"

#include <ck_pr.h>
#include <string.h>

#if WF__TSAN
/*
 * TSan models no stand-alone fence, so here every access to top and bottom
 * is seq_cst, which is the original (sequentially consistent) Chase-Lev.
 */
#define LD_RLX(p)    __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define LD_ACQ(p)    __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define ST_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ST_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define FENCE_SC()   ((void)0)
#define CAS64(p, o, n)                                                                             \
    __atomic_compare_exchange_n((p), &(int64_t){(o)}, (n), 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)
#define LD_PTR(p)    __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST_PTR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define LD_ARR(p)    __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ST_ARR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#else
#define LD_RLX(p)      ((int64_t)ck_pr_load_64((const uint64_t *)(p)))
static inline int64_t ld_acq(const int64_t *p)
{
    int64_t v = (int64_t)ck_pr_load_64((const uint64_t *)p);
    ck_pr_fence_load();
    return v;
}
#define LD_ACQ(p)      ld_acq(p)
#define ST_RLX(p, v)   ck_pr_store_64((uint64_t *)(p), (uint64_t)(v))
#define ST_REL(p, v)   (ck_pr_fence_store(), ck_pr_store_64((uint64_t *)(p), (uint64_t)(v)))
#define FENCE_SC()     ck_pr_fence_memory()
#define CAS64(p, o, n) ck_pr_cas_64((uint64_t *)(p), (uint64_t)(o), (uint64_t)(n))
#define LD_PTR(p)      ck_pr_load_ptr(p)
#define ST_PTR(p, v)   ck_pr_store_ptr((p), (v))
static inline wf__deque_array *ld_arr(wf__deque_array **p)
{
    wf__deque_array *v = ck_pr_load_ptr(p);
    ck_pr_fence_load();
    return v;
}
#define LD_ARR(p)      ld_arr(p)
#define ST_ARR(p, v)   (ck_pr_fence_store(), ck_pr_store_ptr((p), (v)))
#endif

static wf__deque_array *array_new(int64_t size)
{
    wf__deque_array *a = wf__malloc(sizeof *a + (size_t)size * sizeof(void *));
    if (a) {
        a->size = size;
        a->retired = NULL;
    }
    return a;
}

int wf__deque_init(wf__deque *d, int64_t size)
{
    int64_t s = 64;
    while (s < size)
        s *= 2;
    d->top = 0;
    d->bottom = 0;
    d->array = array_new(s);
    return d->array ? 0 : WF_ENOMEM;
}

void wf__deque_destroy(wf__deque *d)
{
    wf__deque_array *a = d->array;
    while (a) {
        wf__deque_array *r = a->retired;
        wf__free_mem(a);
        a = r;
    }
    d->array = NULL;
}

static wf__deque_array *grow(wf__deque *d, wf__deque_array *a, int64_t t, int64_t b)
{
    wf__deque_array *n = array_new(a->size * 2);
    if (n == NULL)
        return NULL;
    for (int64_t i = t; i < b; i++)
        n->slot[i & (n->size - 1)] = LD_PTR(&a->slot[i & (a->size - 1)]);
    n->retired = a;
    ST_ARR(&d->array, n);
    return n;
}

int wf__deque_push(wf__deque *d, void *item)
{
    int64_t b = LD_RLX(&d->bottom);
    int64_t t = LD_ACQ(&d->top);
    wf__deque_array *a = d->array; /* only the owner writes it */
    if (b - t > a->size - 1) {
        a = grow(d, a, t, b);
        if (a == NULL)
            return WF_ENOMEM;
    }
    ST_PTR(&a->slot[b & (a->size - 1)], item);
    ST_REL(&d->bottom, b + 1);
    return 0;
}

void *wf__deque_take(wf__deque *d)
{
    int64_t b = LD_RLX(&d->bottom) - 1;
    wf__deque_array *a = d->array;
    ST_RLX(&d->bottom, b);
    FENCE_SC();
    int64_t t = LD_RLX(&d->top);
    if (t > b) {
        ST_RLX(&d->bottom, b + 1);
        return NULL;
    }
    void *x = LD_PTR(&a->slot[b & (a->size - 1)]);
    if (t == b) {
        /* The last item: race the thieves for it. */
        if (!CAS64(&d->top, t, t + 1))
            x = NULL;
        ST_RLX(&d->bottom, b + 1);
    }
    return x;
}

void *wf__deque_steal(wf__deque *d, int *lost)
{
    *lost = 0;
    int64_t t = LD_ACQ(&d->top);
    FENCE_SC();
    int64_t b = LD_ACQ(&d->bottom);
    if (t >= b)
        return NULL;
    wf__deque_array *a = LD_ARR(&d->array);
    void *x = LD_PTR(&a->slot[t & (a->size - 1)]);
    if (!CAS64(&d->top, t, t + 1)) {
        *lost = 1;
        return NULL;
    }
    return x;
}

int64_t wf__deque_size(const wf__deque *d)
{
    int64_t b = LD_RLX(&d->bottom);
    int64_t t = LD_RLX(&d->top);
    return b > t ? b - t : 0;
}
