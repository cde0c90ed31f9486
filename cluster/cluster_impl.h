/*
 * cluster_impl.h: what cluster.c (connection, submitting, handlers) and
 * worker.c (runners) share. Never installed.
 */
#ifndef WF_CLUSTER_IMPL_H
#define WF_CLUSTER_IMPL_H

#include "internal.h"
#include "nats_impl.h"

#include <msgpack.h>
#include <wf/cluster.h>
#include <wf/snapshot.h>

#define MAX_WORKFLOWS 64
#define IN_EVENT  0
#define IN_CANCEL 1
#define PARK_MS          100          /* a run idle this long with no input is parked */
#define SUBMIT_BATCH     64           /* runs in one submission message at most */
#define SUBMIT_BYTES     (256 * 1024) /* and bytes */
#define SUBMIT_LINGER_MS 1            /* a batch not full waits this long for more */

typedef struct cwf {
    char *name;
    wf_workflow *wf;
    uint64_t fp;
} cwf;

struct wf_cluster {
    wf_cluster_params p; /* immutable after open (strings not kept) */
    char *prefix;        /* immutable */
    char subj_submit[96], stream_work[96], stream_io[96], consumer[96];
    wf_store *store;    /* the NATS store: leases, journals, checkpoints, results */
    natsConnection *nc; /* thread-safe */
    jsCtx *js;          /* thread-safe */
    natsSubscription *done_sub; /* core subscription to <p>.res (results pushed to handlers) */
    char subj_res[96];          /* "<p>.res": [[run_id, status, result], ...] once durable */
    nstore *ns;                 /* the store's backend: bucket, owner (the fast path) */
    char kv_prefix[160];        /* "$KV.<bucket>." */
    cwf wfs[MAX_WORKFLOWS];     /* written before work(), read-only after */
    size_t nwfs;
    wf_executor *ex;             /* set by work() */
    pthread_t *runners;          /* set by work() */
    uint32_t nrunners;           /* set by work() */
    pthread_t renewer;
    int renewer_started;
    atomic_int stop;
    /* the fence of the runs on the slow path (wf_clock_ns time): the store's leases hold until
     * at least then; moved on by each renewal round that succeeded (renewer_main) */
    _Atomic int64_t sfence;
    pthread_mutex_t mu;             /* guards the condition below and the handler table */
    pthread_cond_t cv;              /* results pushed, stop */
    struct wf_cluster_handler **hb; /* mu: open handlers by run id (pushed results land there) */
    size_t hnb, hn;                 /* mu */
    /* worker side: runs the pullers hand over to the runner threads (mu) */
    struct slow_item *sq_head, **sq_tail;
    size_t sq_len;
    uint32_t sq_idle; /* runner threads waiting for an item */
    natsSubscription *in_sub; /* core subscription to <p>.in.> (wakes parked runs) */
    void *parked;             /* mu: the parked runs' table (worker.c), or NULL */
    size_t nparked;           /* mu */
    pthread_t *pullers;
    uint32_t npullers;
    struct puller **pls; /* the pullers' state, freed last */
    uint32_t npls;
    /* submitter side: the batch being packed (smu) */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    msgpack_sbuffer sbuf; /* smu: the batch's entries */
    uint32_t sn;          /* smu: entries */
    int sstop;            /* smu */
    int sbuf_ready;       /* smu, scv and sbuf initialised */
    pthread_t linger;
    int linger_started;          /* smu */
    atomic_uint_fast64_t st[13]; /* wf_cluster_stats fields in order */
};

enum {
    S_SUBMITTED,
    S_DONE,
    S_RESUMED,
    S_RESTARTED,
    S_DUP,
    S_BUSY,
    S_MALFORMED,
    S_MISMATCH,
    S_UNKNOWN,
    S_INPUTS,
    S_PARKED,
    S_LOST,
    S_WOKEN
};

static inline void count(wf_cluster *c, int i)
{
    atomic_fetch_add(&c->st[i], 1);
}

struct wf_cluster_handler {
    wf_cluster *c;
    const cwf *w;
    char *run_id;
    char key[NATS_KEY_MAX];
    uint64_t cursor;
    char *message;
    uint64_t hash;                    /* immutable */
    struct wf_cluster_handler *hnext; /* c->mu: the handler table's chain */
    int pushed;                       /* c->mu: res holds the pushed result */
    int32_t res_status;               /* c->mu */
    void *res;                        /* c->mu: the result record, as the store holds it */
    size_t res_len;                   /* c->mu */
    int submitted;                    /* from wf_cluster_submit: no result can be stored yet */
    int64_t since;                    /* when it was submitted (monotonic ms) */
};

/* cluster.c: publishes n results ([[run_id, status, record], ...]) to the submitters. */
void wf__cluster_push_results(wf_cluster *c, const void *packed, size_t len);
/* cluster.c: publishes the submissions packed and not published yet. */
int wf__cluster_publish_pending(wf_cluster *c);
/* worker.c: frees the runs handed over and not taken (wf_cluster_free, after the joins). */
void wf__cluster_drop_queue(wf_cluster *c);
/* worker.c: gives the parked runs' messages back to the queue (wf_cluster_free, after the
 * joins and the input subscription's drain). */
void wf__cluster_drop_parked(wf_cluster *c);
/* worker.c: frees the pullers' state (wf_cluster_free, last: after the executor's runs). */
void wf__cluster_free_pullers(wf_cluster *c);

const cwf *wf__cluster_find_wf(const wf_cluster *c, const char *name, size_t len);
int64_t wf__cluster_mono_ms(void);

#endif
