/*
 * alloc.c: allocation hooks and the per-thread block cache of the hot path.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static void *libc_malloc(size_t n, void *u)
{
    (void)u;
    return malloc(n);
}
static void *libc_realloc(void *p, size_t n, void *u)
{
    (void)u;
    return realloc(p, n);
}
static void libc_free(void *p, void *u)
{
    (void)u;
    free(p);
}

static wf_alloc_hooks hooks = {libc_malloc, libc_realloc, libc_free, NULL};
/* Set by the first allocation; after it the hooks may no longer change. */
static atomic_int hooks_used;

int wf_set_alloc_hooks(const wf_alloc_hooks *h)
{
    if (atomic_load(&hooks_used))
        return WF_EBUSY;
    if (h == NULL) {
        hooks = (wf_alloc_hooks){libc_malloc, libc_realloc, libc_free, NULL};
        return 0;
    }
    if (h->malloc_fn == NULL || h->realloc_fn == NULL || h->free_fn == NULL)
        return WF_EINVAL;
    hooks = *h;
    return 0;
}

static inline void *raw_malloc(size_t n)
{
    if (WF__UNLIKELY(!atomic_load_explicit(&hooks_used, memory_order_relaxed)))
        atomic_store(&hooks_used, 1);
    return hooks.malloc_fn(n ? n : 1, hooks.user);
}

static inline void raw_free(void *p)
{
    if (p)
        hooks.free_fn(p, hooks.user);
}

/*
 * Every allocation of wf carries a 16-byte header with its size and cache
 * class, so small ones (values, contexts, runs) come from the per-thread
 * caches as the hot path's blocks do: a run started on one thread and freed
 * on another then never meets glibc's arena locks.
 */
typedef struct hdr {
    uint64_t size;
    uint8_t cls;
    uint8_t pad[7];
} hdr;

void *wf__malloc(size_t n)
{
    if (n > SIZE_MAX - sizeof(hdr))
        return NULL;
    uint8_t cls;
    hdr *h = wf__cache_alloc(n + sizeof(hdr), &cls);
    if (h == NULL)
        return NULL;
    h->size = n;
    h->cls = cls;
    return h + 1;
}

void *wf__calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = wf__malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *wf__realloc(void *p, size_t n)
{
    if (p == NULL)
        return wf__malloc(n);
    hdr *h = (hdr *)p - 1;
    if (n > SIZE_MAX - sizeof(hdr))
        return NULL;
    if (h->cls == WF__CLS_HEAP && n + sizeof(hdr) > 512) {
        hdr *nh = hooks.realloc_fn(h, n + sizeof(hdr), hooks.user);
        if (nh == NULL)
            return NULL;
        nh->size = n;
        return nh + 1;
    }
    void *q = wf__malloc(n);
    if (q == NULL)
        return NULL;
    memcpy(q, p, h->size < n ? h->size : n);
    wf__free_mem(p);
    return q;
}

void *wf__malloc_aligned(size_t n)
{
    /* Over-allocate, align up, and keep the raw pointer just below the block. */
    if (n > SIZE_MAX - WF__CACHELINE - sizeof(void *))
        return NULL;
    char *raw = raw_malloc(n + WF__CACHELINE + sizeof(void *));
    if (raw == NULL)
        return NULL;
    uintptr_t a =
        ((uintptr_t)raw + sizeof(void *) + WF__CACHELINE - 1) & ~(uintptr_t)(WF__CACHELINE - 1);
    ((void **)a)[-1] = raw;
    memset((void *)a, 0, n);
    return (void *)a;
}

void wf__free_aligned(void *p)
{
    if (p)
        raw_free(((void **)p)[-1]);
}

void wf__free_mem(void *p)
{
    if (p == NULL)
        return;
    hdr *h = (hdr *)p - 1;
    wf__cache_free(h, h->cls);
}

void wf_free(void *p)
{
    wf__free_mem(p);
}

char *wf__strndup(const char *s, size_t n)
{
    char *d = wf__malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

char *wf__strdup(const char *s)
{
    return wf__strndup(s, strlen(s));
}

/*
 * The block cache. Each thread keeps a free list per size class, so the hot
 * path (an event and a task per step invocation) costs a pointer pop instead
 * of a trip through malloc. Producer/consumer patterns (one worker creates
 * events, another frees them) would drain one cache and overflow the other,
 * and glibc then pays an arena lock per cross-thread free; so a thread whose
 * list grows past 2*BATCH hands BATCH blocks to a shared depot in one
 * mutex operation, and a thread whose list is empty takes a whole batch back.
 * Blocks are individual allocations from the hooks: wf_alloc_trim() and a
 * thread's exit give them back.
 */
#define NCLS  4
#define BATCH 256
static const size_t cls_size[NCLS] = {64, 128, 256, 512};

typedef struct block {
    struct block *next;       /* within a list or batch */
    struct block *next_batch; /* first block of a batch in the depot */
    uint32_t n;               /* blocks in the batch (first block only) */
} block;

typedef struct tcache {
    block *head[NCLS];
    uint32_t count[NCLS];
    int registered;
} tcache;

static WF__TLS tcache tc;
static pthread_key_t tc_key;
static pthread_once_t tc_once = PTHREAD_ONCE_INIT;

/* The depot: batches of free blocks per class, under depot_lock. */
static pthread_mutex_t depot_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(block *) depot[NCLS]; /* written under depot_lock; peeked without it */

static void free_list(block *b)
{
    while (b) {
        block *n = b->next;
        raw_free(b);
        b = n;
    }
}

static void tc_drain(void *arg)
{
    tcache *c = arg;
    for (int i = 0; i < NCLS; i++) {
        free_list(c->head[i]);
        c->head[i] = NULL;
        c->count[i] = 0;
    }
}

static void tc_key_init(void)
{
    (void)pthread_key_create(&tc_key, tc_drain);
}

static inline int cls_of(size_t n)
{
    if (n <= 64)
        return 0;
    if (n <= 128)
        return 1;
    if (n <= 256)
        return 2;
    if (n <= 512)
        return 3;
    return -1;
}

static void tc_register(void)
{
    pthread_once(&tc_once, tc_key_init);
    tc.registered = 1;
    (void)pthread_setspecific(tc_key, &tc);
}

void *wf__cache_alloc(size_t n, uint8_t *cls)
{
    int c = cls_of(n);
    if (c < 0) {
        *cls = WF__CLS_HEAP;
        return raw_malloc(n);
    }
    *cls = (uint8_t)c;
    block *b = tc.head[c];
    if (WF__LIKELY(b != NULL)) {
        tc.head[c] = b->next;
        tc.count[c]--;
        return b;
    }
    if (atomic_load_explicit(&depot[c], memory_order_relaxed) != NULL) {
        pthread_mutex_lock(&depot_lock);
        b = atomic_load_explicit(&depot[c], memory_order_relaxed);
        if (b)
            atomic_store_explicit(&depot[c], b->next_batch, memory_order_relaxed);
        pthread_mutex_unlock(&depot_lock);
        if (b) {
            if (WF__UNLIKELY(!tc.registered))
                tc_register();
            tc.head[c] = b->next;
            tc.count[c] = b->n - 1;
            return b;
        }
    }
    return raw_malloc(cls_size[c]);
}

void wf__cache_free(void *p, uint8_t cls)
{
    if (p == NULL)
        return;
    if (cls >= NCLS) {
        raw_free(p);
        return;
    }
    if (WF__UNLIKELY(!tc.registered))
        tc_register();
    block *b = p;
    b->next = tc.head[cls];
    tc.head[cls] = b;
    if (WF__UNLIKELY(++tc.count[cls] > 2 * BATCH)) {
        /* Hand the newest BATCH blocks to the depot as one batch. */
        block *first = tc.head[cls], *last = first;
        for (int i = 1; i < BATCH; i++)
            last = last->next;
        tc.head[cls] = last->next;
        tc.count[cls] -= BATCH;
        last->next = NULL;
        first->n = BATCH;
        pthread_mutex_lock(&depot_lock);
        first->next_batch = atomic_load_explicit(&depot[cls], memory_order_relaxed);
        atomic_store_explicit(&depot[cls], first, memory_order_relaxed);
        pthread_mutex_unlock(&depot_lock);
    }
}

void wf_alloc_trim(void)
{
    tc_drain(&tc);
    pthread_mutex_lock(&depot_lock);
    for (int i = 0; i < NCLS; i++) {
        block *b = atomic_load_explicit(&depot[i], memory_order_relaxed);
        while (b) {
            block *nb = b->next_batch;
            free_list(b);
            b = nb;
        }
        atomic_store_explicit(&depot[i], NULL, memory_order_relaxed);
    }
    pthread_mutex_unlock(&depot_lock);
}

/* Blocks parked in the depot go back to the hooks when the library unloads. */
__attribute__((destructor)) static void depot_fini(void)
{
    wf_alloc_trim();
}
