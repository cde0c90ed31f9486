/*
 * durable_impl.h: what durable.c (durable runs: the table, records, the
 * checkpoint thread, sends, the end) and recover.c (wf_executor_recover)
 * share. Never installed. Locks: see durable.c.
 */
#ifndef WF_DURABLE_IMPL_H
#define WF_DURABLE_IMPL_H

#include "engine.h"

#include <wf/durable.h>
#include <wf/snapshot.h>

#include "text.h"

#define FNV0 WF__HASH_INIT

typedef struct wf__drun {
    struct wf__drun *next; /* bucket chain, under g_lock */
    uint64_t h;
    char *run_id;
    struct wf_executor *ex;
    wf_store *store;    /* borrowed; NULL: a run id without a store */
    wf__run *run;       /* the table's reference, under g_lock; NULL once ended */
    int listed;         /* under g_lock */
    int ended;          /* under g_lock */
    pthread_mutex_t m;  /* orders sends against checkpoints */
    uint64_t last_hash; /* the last checkpoint's hash (checkpoint thread) */
    uint32_t skip;      /* passes to skip: its checkpoints did not change (checkpoint thread) */
    uint32_t backoff;   /* the skip after the next unchanged one (checkpoint thread) */
    atomic_int poked;   /* an event was sent to it: cut at the next pass */
    int64_t quiet_since; /* ms its checkpoint has not changed since (checkpoint thread) */
    atomic_int releasing; /* idle release: it leaves memory without a result */
    int waiting;          /* the store shows it WAITING (under m) */
    /* the durable stream (WF_STORE_REC_EVENT records): under sm, a leaf lock */
    pthread_mutex_t sm;
    uint64_t sseq; /* the number of the run's next streamed event */
    int sknown;    /* sseq is known (a recovered run counts its committed events first) */
    unsigned char *sbuf; /* stream records not appended yet, each an 8-byte gap + the event */
    size_t slen, scap;
    uint32_t *soff;    /* where each buffered record starts in sbuf (64; made on first use) */
    uint32_t sn;       /* records buffered */
    /*
     * Events sent from outside that no step accepts and no waiter waited
     * for when they came (a step run again after a recovery has not waited
     * again yet): held until a waiter takes one (wf__durable_take_held),
     * the run has nothing left to run, or it ends. Under run->collect_lock.
     */
    wf_event **held;
    uint32_t nheld, capheld;
} wf__drun;

/* An executor's attached store and its checkpoint thread. */
typedef struct wf__durable {
    struct wf_executor *ex;
    wf_store *store;
    wf_durable_params p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop; /* under mu */
    pthread_t thread;
    /* the workflows its durable runs use (references), to load released runs: under wmu */
    pthread_mutex_t wmu;
    wf_workflow **wfs;
    size_t nwfs, capwfs;
} wf__durable;

uint64_t wf__fnv(const void *p, size_t n, uint64_t h);
/* A record for run_id (not listed yet); NULL: out of memory. */
wf__drun *wf__drun_new(const char *run_id, struct wf_executor *ex, wf_store *store);
void wf__drun_free(wf__drun *d);
/* Lists d: 0, WF_EEXIST when its id is in use, WF_ENOMEM. */
int wf__drun_insert(wf__drun *d);
/* d's run is run (the table takes the caller's reference), unless it ended already. */
void wf__drun_attach(wf__drun *d, wf__run *run);
/* 1 if run_id is listed (in memory). */
int wf__drun_listed(const char *run_id);
wf__durable *wf__durable_of(struct wf_executor *ex);
/* Continues one run from the store: 1 resumed, 0 busy (leased), 2 forgotten, < 0 (why). */
int wf__recover_one(struct wf_executor *ex, wf_store *store, wf_workflow *wf, const char *run_id,
                    char **why);
/* du remembers wf (for released runs of it); 0 or WF_ENOMEM. */
int wf__durable_know(wf__durable *du, wf_workflow *wf);
/* A WF_STORE_REC_SEND record: the event (owned) and target (owned, NULL: none). */
int wf__send_decode(const wf_registry *reg, const void *data, size_t len, wf_event **ev,
                    char **target, char **message);

/*
 * Delivers ev (owned, journaled already) sent from outside to d's run:
 * held by the run when no step accepts it and no waiter waits for it yet.
 */
int wf__durable_deliver(wf__drun *d, wf__run *run, wf_event *ev, const char *target);

/* Appends d's buffered stream records (under d->sm): at each checkpoint pass, the end, a release. */
void wf__stream_flush(wf__drun *d);
/* Streamed events of run_id committed in store, counting from the journal's end (next_seq). */
int wf__stream_count(wf_store *store, const char *run_id, uint64_t next_seq, uint64_t *count);

#endif
