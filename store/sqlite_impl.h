/*
 * sqlite_impl.h: the SQLite store backend's structures and the calls its two
 * files share: sqlite.c (helpers, the operations, readers, open and free)
 * and sqlite_writer.c (the queue and the writer thread). Never installed.
 */
#ifndef WF_SQLITE_IMPL_H
#define WF_SQLITE_IMPL_H

#include "internal.h"
#include "store_impl.h"
#include "text.h"

#include <sqlite3.h>

#define APP_ID         0x77665354 /* "wfST" */
#define SCHEMA_VERSION 2
/* A journal row holds up to this many bytes of one run's records of one round (more: more rows). */
#define CHUNK_BYTES (256 * 1024)
#define MAX_RECS    65536
/* Reader connections kept open between reads, and each one's page cache (KiB). */
#define READERS_IDLE    64
#define READER_CACHE_KIB 128
#define WF__STR_(x)     #x
#define WF__STR(x)      WF__STR_(x)

/* ------------------------------------------------------------ structures */

/* A run this store may write: created or claimed here and not closed. */
typedef struct srun {
    struct srun *next;          /* hash chain; mu */
    char *run_id;               /* immutable */
    uint64_t hash;              /* immutable */
    uint64_t next_seq;          /* mu: the next record's number, assigned in queue order */
    int err;                    /* mu: sticky error of a failed write, later writes fail with it */
    int closed;                 /* mu: a result, release or remove is queued: no more writes */
    uint32_t refs;              /* mu: 1 while in the map, + 1 per queued op */
    int64_t rid;                /* writer thread only: its row id once created or claimed */
    int werr;                   /* writer thread only: a write to it failed; later ones fail too */
    struct sop *wfirst, *wlast; /* writer thread only: this round's appends not inserted yet */
    struct srun *wnext;         /* writer thread only: next run with appends pending */
} srun;

enum {
    OP_CREATE,
    OP_APPEND,
    OP_STATUS,
    OP_CKPT,
    OP_RESULT,
    OP_CLAIM,
    OP_RELEASE,
    OP_RENEW,
    OP_REMOVE,
    OP_FLUSH
};

typedef struct oprec {
    uint32_t kind;
    uint32_t len;
    const uint8_t *data;
} oprec;

/*
 * A queued operation. Async ops are one heap block (records and data
 * follow it) freed by the writer; sync ops live on the waiting caller's
 * stack and are touched by the writer only until it sets finished.
 */
typedef struct sop {
    struct sop *next;  /* mu while queued; the writer's own after it took the queue */
    struct sop *wnext; /* writer thread only: the run's next pending append this round */
    int type;
    int sync;
    uint64_t ticket;
    srun *run;        /* the run written (NULL for claim, renew, remove, flush) */
    const char *name; /* claim/remove: the run id (borrowed from the sync caller) */
    char *workflow;   /* create */
    wf_store_done_fn done;
    void *user;
    size_t bytes;   /* counted in the queue's bytes until settled */
    uint64_t seq;   /* append: first seq; checkpoint: records it covers */
    uint32_t n;     /* append: records */
    int32_t status; /* status / result */
    int64_t rid;    /* claim: the run's row id */
    const uint8_t *data;
    size_t len;
    oprec *recs;
    /* sync ops */
    wf_store_run_info *info;
    srun **runs; /* renew: the runs held when it was queued (a ref each) */
    size_t nruns;
    uint32_t lost;
    int rc;       /* the outcome, set by the writer */
    int finished; /* mu: the writer is done with this op */
} sop;

typedef struct reader {
    struct reader *next; /* rmu while in the pool */
    sqlite3 *db;
    sqlite3_stmt *get_run, *list, *ckpt, *result, *rid, *journal;
} reader;

typedef struct sstore {
    wf_store_params p; /* immutable after open */
    char *path;        /* immutable */
    char *owner;       /* immutable */
    int64_t lease_ms;  /* immutable */

    pthread_mutex_t mu;
    pthread_cond_t cv_writer; /* the writer waits for work or its deadline (CLOCK_MONOTONIC) */
    pthread_cond_t cv_done;   /* callers wait for settled ops, durable tickets, room */
    sop *head, **tail;        /* mu: the queue */
    size_t queued;            /* mu: bytes of queued and in-round ops */
    uint64_t tickets;         /* mu: the last ticket given */
    uint64_t durable;         /* written under mu with release order; read lock-free (acquire) */
    int urgent;               /* mu: a sync op or flush waits: commit now */
    int stop;                 /* mu: wf_store_free: commit what is queued, then exit */
    int failed;               /* mu: sticky store failure (WF_EIO, WF_ECORRUPT, ...) */
    srun **buckets;           /* mu: runs this store writes, by run id */
    size_t nbuckets, nruns;   /* mu */
    pthread_t writer;         /* immutable after open */
    int writer_started;       /* immutable after open */

    /* writer thread only (after open) */
    sqlite3 *wdb;
    sqlite3_stmt *w_begin, *w_commit, *w_rollback, *w_ins_run, *w_ins_rec, *w_status, *w_ckpt,
        *w_result, *w_finish, *w_find, *w_claim, *w_next_seq, *w_release, *w_renew, *w_owner,
        *w_del[4];
    int64_t last_round_ms; /* CLOCK_MONOTONIC ms of the last round's start */
    srun *wpending;        /* runs with appends not inserted yet (this round) */
    uint8_t *wbuf;         /* a journal row being encoded */
    size_t wcap;

    pthread_mutex_t rmu;
    reader *readers; /* rmu: idle reader connections */
    size_t nreaders; /* rmu: how many (at most READERS_IDLE) */
} sstore;

int64_t wf__sql_mono_ms(void);
int64_t wf__sql_now_ms(const sstore *s);
int wf__sql_map_rc(int rc);
int wf__sql_fatal(int rc);
int wf__sql_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t len);
int wf__sql_step_done(sqlite3_stmt *st);
char *wf__sql_col_dup(sqlite3_stmt *st, int i);
srun *wf__sql_map_find(sstore *s, const char *run_id, uint64_t h);
int wf__sql_map_add(sstore *s, srun *r);
void wf__sql_map_del(sstore *s, srun *r);
srun *wf__sql_srun_new(const char *run_id, uint64_t h);
void wf__sql_srun_unref(srun *r);
int wf__sql_enqueue_locked(sstore *s, sop *op);
int wf__sql_run_sync(sstore *s, sop *op);
int wf__sql_run_for_write(sstore *s, const char *run_id, srun **out);
void wf__sql_row_info(sqlite3_stmt *st, wf_store_run_info *info, int copy);
int wf__sql_info_copied(const wf_store_run_info *info);
size_t wf__sql_rec_size(uint32_t len);
uint8_t *wf__sql_rec_put(uint8_t *p, uint32_t kind, const uint8_t *data, uint32_t len);
int wf__sql_rec_get(const uint8_t **p, const uint8_t *end, uint32_t *kind, const uint8_t **data,
                    uint32_t *len);
void *wf__sql_writer_main(void *arg);

/* The columns of a run row (the get_run shape), as wf__sql_row_info reads them. */
#define RUN_COLS                                                                                   \
    "r.rid, r.run_id, r.workflow, r.owner, r.status, r.lease_until, "                              \
    "coalesce((SELECT j.seq + j.n FROM journal j WHERE j.rid = r.rid ORDER BY j.seq DESC LIMIT "   \
    "1), "                                                                                         \
    "0), "                                                                                         \
    "coalesce((SELECT c.seq FROM checkpoints c WHERE c.rid = r.rid), 0), r.created_ms, "           \
    "r.updated_ms"

#endif
