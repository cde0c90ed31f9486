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

/* The calling thread's shard number (internal.h): threads take them in turn. */
WF__TLS uint32_t wf__tls_shard = UINT32_MAX;

uint32_t wf__thread_shard_slow(void)
{
    static _Atomic uint32_t next;
    wf__tls_shard = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % 4096;
    return wf__tls_shard;
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
 * events, another frees them) would drain one cache and overflow the other;
 * so a thread whose list grows past 2*BATCH hands BATCH blocks to a shared
 * depot in one mutex operation, and a thread whose list is empty takes a
 * whole batch back.
 *
 * Blocks are carved from 16 KiB slabs (one allocation from the hooks), with
 * no per-block header: 10^6 pending one-field events and their tasks take
 * 120 MB, where 56- and 64-byte mallocs would take 144 MB. A thread carves
 * its current slab as it goes (a bump pointer, CARVE blocks at a time), so
 * fresh pages are first touched when used. A thread's exit hands its blocks
 * (and the uncarved rest of its slabs) to the depot; wf_alloc_trim() gives
 * back to the hooks every slab whose blocks are all in the depot or the
 * calling thread's lists.
 */
#define NCLS  WF__NCLS
#define BATCH WF__BATCH
#define CARVE 16 /* blocks a refill carves at once: one returned, the rest listed */
#if defined(__SANITIZE_ADDRESS__)
#define WF__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WF__ASAN 1
#endif
#endif
#ifdef WF__ASAN
/* one block a slab: AddressSanitizer's redzones then sit around every block */
#define SLAB_BYTES(size) (sizeof(slab) + WF__CACHELINE + (size))
#else
#define SLAB_BYTES(size) 16384
#endif
/*
 * The last class holds the executor's tasks only. Tasks and one-field events
 * are both 64 bytes, but in one LIFO list a producer's new events land in
 * the blocks of tasks its consumer on the other core just freed, and the
 * other way round: fanout at 2 threads ran 1.6-1.9x slower (measured) than
 * with a list each.
 */
static const uint32_t cls_size[NCLS] = {32, 48, 56, 64, 96, 128, 192, 256, 384, 512, 64};
/* by (n + 7) / 8: 0..4 -> 32, 5..6 -> 48, 7 -> 56 (a one-field event), 8 -> 64, ... */
const uint8_t wf__cls_by8[65] = {0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6,
                                 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
                                 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};

typedef wf__block block;

typedef struct slab {
    struct slab *next; /* every slab, under depot_lock */
    uint32_t cls;
    uint32_t nblocks;
    size_t bytes;
} slab;

WF__TLS wf__tcache wf__tc;
static pthread_key_t tc_key;
static pthread_once_t tc_once = PTHREAD_ONCE_INIT;

/* The depot: batches of free blocks per class, and the list of slabs, under depot_lock. */
static pthread_mutex_t depot_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(block *) depot[NCLS]; /* written under depot_lock; peeked without it */
static slab *slabs;

/* Pushes a list of n blocks as one batch (depot_lock held). */
static void depot_push_locked(int c, block *first, uint32_t n)
{
    if (first == NULL)
        return;
    first->n = n;
    first->next_batch = atomic_load_explicit(&depot[c], memory_order_relaxed);
    atomic_store_explicit(&depot[c], first, memory_order_relaxed);
}

/* Hands all of a thread's cached blocks, and the uncarved rest of its slabs, to the depot. */
static void tc_drain(void *arg)
{
    wf__tcache *t = arg;
    pthread_mutex_lock(&depot_lock);
    for (int c = 0; c < NCLS; c++) {
        uint32_t n = (uint32_t)(2 * BATCH - t->room[c]); /* the list's length */
        while (t->bump[c] && t->bump[c] + cls_size[c] <= t->bump_end[c]) {
            block *b = (block *)(void *)t->bump[c];
            t->bump[c] += cls_size[c];
            b->next = t->head[c];
            t->head[c] = b;
            n++;
        }
        t->bump[c] = t->bump_end[c] = NULL;
        depot_push_locked(c, t->head[c], n);
        t->head[c] = NULL;
        t->room[c] = 2 * BATCH;
    }
    pthread_mutex_unlock(&depot_lock);
}

/*
 * Flushing. Blocks in a live thread's lists pin their slabs: wf_alloc_trim
 * cannot give a slab back while one of its blocks sits in another thread's
 * list. A thread hands its lists (and the uncarved rest of its slabs) to the
 * depot with wf__alloc_flush; wf__alloc_flush_request asks every thread to
 * do so the next time it goes idle (wf__alloc_idle: a worker about to park),
 * e.g. after a burst of frees that idle runs leaving memory made.
 */
static atomic_uint flush_epoch;
static WF__TLS unsigned flush_seen;

void wf__alloc_flush(void)
{
    flush_seen = atomic_load_explicit(&flush_epoch, memory_order_relaxed);
    if (wf__tc.registered)
        tc_drain(&wf__tc);
}

void wf__alloc_flush_request(void)
{
    atomic_fetch_add_explicit(&flush_epoch, 1, memory_order_relaxed);
}

int wf__alloc_idle(void)
{
    if (WF__LIKELY(atomic_load_explicit(&flush_epoch, memory_order_relaxed) == flush_seen))
        return 0;
    wf__alloc_flush();
    return 1;
}

static void tc_key_init(void)
{
    (void)pthread_key_create(&tc_key, tc_drain);
}

static void tc_register(void)
{
    pthread_once(&tc_once, tc_key_init);
    wf__tc.registered = 1;
    for (int c = 0; c < NCLS; c++) /* its lists are empty: nothing was cached before */
        wf__tc.room[c] = 2 * BATCH;
    (void)pthread_setspecific(tc_key, &wf__tc);
}

/* The thread's list of class c is empty (c < 0: a block too big for the cache). */
void *wf__cache_refill(size_t n, int c, uint8_t *cls)
{
    if (c < 0) {
        *cls = WF__CLS_HEAP;
        return raw_malloc(n);
    }
    *cls = (uint8_t)c;
    if (WF__UNLIKELY(!wf__tc.registered))
        tc_register();
    block *b;
    if (atomic_load_explicit(&depot[c], memory_order_relaxed) != NULL) {
        pthread_mutex_lock(&depot_lock);
        b = atomic_load_explicit(&depot[c], memory_order_relaxed);
        if (b)
            atomic_store_explicit(&depot[c], b->next_batch, memory_order_relaxed);
        pthread_mutex_unlock(&depot_lock);
        if (b) {
            wf__tc.head[c] = b->next;
            wf__tc.room[c] = 2 * BATCH - (int32_t)(b->n - 1);
            return b;
        }
    }
    uint32_t size = cls_size[c];
    if (wf__tc.bump[c] == NULL || wf__tc.bump[c] + size > wf__tc.bump_end[c]) {
        size_t bytes = SLAB_BYTES(size);
        slab *s = raw_malloc(bytes);
        if (s == NULL)
            return NULL;
        /*
         * Blocks start on a cache line: a 64-byte event or task then takes
         * one line, and two threads working on neighbouring blocks never
         * share one.
         */
        uintptr_t first =
            ((uintptr_t)(s + 1) + WF__CACHELINE - 1) & ~(uintptr_t)(WF__CACHELINE - 1);
        s->cls = (uint32_t)c;
        s->bytes = bytes;
        s->nblocks = (uint32_t)(((uintptr_t)s + bytes - first) / size);
        pthread_mutex_lock(&depot_lock);
        s->next = slabs;
        slabs = s;
        pthread_mutex_unlock(&depot_lock);
        wf__tc.bump[c] = (char *)first;
        wf__tc.bump_end[c] = wf__tc.bump[c] + (size_t)s->nblocks * size;
    }
    b = (block *)(void *)wf__tc.bump[c];
    wf__tc.bump[c] += size;
    /*
     * A few more go to the list at once (CARVE): the next allocations take
     * the inline path instead of this call and their constructors' slow
     * paths (a fan-out of 10^5 pending items carved every event and task
     * here, ~120 instructions an item).
     */
    size_t more = (size_t)(wf__tc.bump_end[c] - wf__tc.bump[c]) / size;
    if (more > CARVE - 1)
        more = CARVE - 1;
    char *p = wf__tc.bump[c] + more * size;
    wf__tc.bump[c] = p;
    block *head = wf__tc.head[c];
    for (size_t i = 0; i < more; i++) { /* the lowest address first */
        p -= size;
        ((block *)(void *)p)->next = head;
        head = (block *)(void *)p;
    }
    wf__tc.head[c] = head;
    wf__tc.room[c] -= (int32_t)more;
    return b;
}

/* A free the inline path does not take: a big block, an unregistered thread, a full list. */
void wf__cache_spill(void *p, uint8_t cls)
{
    if (cls >= NCLS) {
        raw_free(p);
        return;
    }
    if (WF__UNLIKELY(!wf__tc.registered))
        tc_register();
    block *b = p;
    b->next = wf__tc.head[cls];
    wf__tc.head[cls] = b;
    if (--wf__tc.room[cls] < 0) { /* longer than 2 * BATCH */
        /* Hand the newest BATCH blocks to the depot as one batch. */
        block *first = wf__tc.head[cls], *last = first;
        for (int i = 1; i < BATCH; i++)
            last = last->next;
        wf__tc.head[cls] = last->next;
        wf__tc.room[cls] += BATCH;
        last->next = NULL;
        pthread_mutex_lock(&depot_lock);
        depot_push_locked(cls, first, BATCH);
        pthread_mutex_unlock(&depot_lock);
    }
}

/* The slab holding block b: slabs sorted by address, binary search. */
static size_t slab_index(slab *const *sv, size_t ns, const void *b)
{
    size_t lo = 0, hi = ns;
    while (hi - lo > 1) {
        size_t m = lo + (hi - lo) / 2;
        if ((uintptr_t)sv[m] <= (uintptr_t)b)
            lo = m;
        else
            hi = m;
    }
    return lo;
}

static int cmp_slab(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (slab *const *)a, y = (uintptr_t) * (slab *const *)b;
    return x < y ? -1 : x > y;
}

void wf_alloc_trim(void)
{
    tc_drain(&wf__tc);
    pthread_mutex_lock(&depot_lock);
    size_t nfree = 0, ncarved = 0, ns = 0;
    for (int c = 0; c < NCLS; c++)
        for (block *b = atomic_load_explicit(&depot[c], memory_order_relaxed); b; b = b->next_batch)
            nfree += b->n;
    for (slab *s = slabs; s; s = s->next) {
        ncarved += s->nblocks;
        ns++;
    }
    if (nfree == ncarved) {
        /* every block is home (the usual case at unload): all slabs go, no block is read */
        while (slabs) {
            slab *nx = slabs->next;
            raw_free(slabs);
            slabs = nx;
        }
        for (int c = 0; c < NCLS; c++)
            atomic_store_explicit(&depot[c], NULL, memory_order_relaxed);
        pthread_mutex_unlock(&depot_lock);
        return;
    }
    /* some blocks are in use or in other threads' lists: count the free ones per slab */
    slab **sv = raw_malloc((ns ? ns : 1) * sizeof *sv);
    uint32_t *cnt = raw_malloc((ns ? ns : 1) * sizeof *cnt);
    if (sv == NULL || cnt == NULL) {
        pthread_mutex_unlock(&depot_lock);
        raw_free(sv);
        raw_free(cnt);
        return;
    }
    ns = 0;
    for (slab *s = slabs; s; s = s->next)
        sv[ns++] = s;
    qsort(sv, ns, sizeof *sv, cmp_slab);
    memset(cnt, 0, ns * sizeof *cnt);
    for (int c = 0; c < NCLS; c++)
        for (block *bt = atomic_load_explicit(&depot[c], memory_order_relaxed); bt;
             bt = bt->next_batch)
            for (block *b = bt; b; b = b->next)
                cnt[slab_index(sv, ns, b)]++;
    /* the blocks of slabs that stay go back to the depot, one batch per class */
    block *keep[NCLS] = {NULL};
    uint32_t nkeep[NCLS] = {0};
    for (int c = 0; c < NCLS; c++) {
        block *bt = atomic_load_explicit(&depot[c], memory_order_relaxed);
        atomic_store_explicit(&depot[c], NULL, memory_order_relaxed);
        while (bt) {
            block *nbt = bt->next_batch;
            for (block *b = bt, *nx; b; b = nx) {
                nx = b->next;
                size_t k = slab_index(sv, ns, b);
                if (cnt[k] == sv[k]->nblocks)
                    continue;
                b->next = keep[c];
                keep[c] = b;
                nkeep[c]++;
            }
            bt = nbt;
        }
    }
    slabs = NULL;
    for (size_t k = 0; k < ns; k++) {
        if (cnt[k] == sv[k]->nblocks) {
            raw_free(sv[k]);
        } else {
            sv[k]->next = slabs;
            slabs = sv[k];
        }
    }
    for (int c = 0; c < NCLS; c++)
        depot_push_locked(c, keep[c], nkeep[c]);
    pthread_mutex_unlock(&depot_lock);
    raw_free(sv);
    raw_free(cnt);
}

/* Blocks parked in the depot go back to the hooks when the library unloads. */
__attribute__((destructor)) static void depot_fini(void)
{
    wf_alloc_trim();
}
