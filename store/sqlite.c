/*
 * sqlite.c: the embedded SQLite backend of wf_store (docs/DURABILITY.md).
 *
 * One writer thread owns the write connection. Callers queue operations
 * (a mutex-guarded FIFO); the writer takes the whole queue, executes it in
 * one transaction (a round) and settles it: tickets become durable,
 * callbacks run, synchronous callers wake. A run's sequence numbers are
 * assigned under the queue mutex in the same critical section that queues
 * the records, so queue order is sequence order and the committed journal
 * of a run is always a gap-free prefix. Readers use their own connections
 * from a small pool and see committed data only (WAL snapshots).
 */
#include "internal.h"
#include "store_impl.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define APP_ID         0x77665354 /* "wfST" */
#define SCHEMA_VERSION 2
/* A journal row holds up to this many bytes of one run's records of one round (more: more rows). */
#define CHUNK_BYTES (256 * 1024)
#define MAX_RECS    65536

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
} sstore;

/* ---------------------------------------------------------------- helpers */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t real_ms(void *user)
{
    (void)user;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(const sstore *s)
{
    return s->p.clock(s->p.clock_user);
}

/* SQLite's primary result codes onto wf's. */
static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_NOMEM:
        return WF_ENOMEM;
    case SQLITE_CORRUPT:
        return WF_ECORRUPT;
    case SQLITE_NOTADB:
    case SQLITE_FORMAT:
        return WF_EFORMAT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return WF_EBUSY;
    case SQLITE_CONSTRAINT:
        return WF_EEXIST;
    case SQLITE_TOOBIG:
        return WF_ERANGE;
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
        return WF_EIO;
    default:
        return WF_EINTERNAL;
    }
}

/* Errors after which the file can no longer be trusted: the store fails for good. */
static int fatal(int rc)
{
    return rc == WF_EIO || rc == WF_ECORRUPT || rc == WF_EFORMAT || rc == WF_EINTERNAL;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int bind_blob(sqlite3_stmt *st, int i, const void *p, size_t len)
{
    /* A NULL pointer would bind SQL NULL; the columns are NOT NULL blobs. */
    return len ? sqlite3_bind_blob64(st, i, p, len, SQLITE_STATIC)
               : sqlite3_bind_zeroblob(st, i, 0);
}

/* Runs a statement that returns no rows, resets it. */
static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : map_rc(rc);
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? wf__strdup((const char *)t) : NULL;
}

/* ------------------------------------------------------------- run map */

/* mu held. */
static srun *map_find(sstore *s, const char *run_id, uint64_t h)
{
    if (s->nbuckets == 0)
        return NULL;
    for (srun *r = s->buckets[h & (s->nbuckets - 1)]; r; r = r->next)
        if (r->hash == h && strcmp(r->run_id, run_id) == 0)
            return r;
    return NULL;
}

/* mu held. */
static int map_add(sstore *s, srun *r)
{
    if (s->nruns + 1 > s->nbuckets) {
        size_t nb = s->nbuckets ? s->nbuckets * 2 : 64;
        srun **b = wf__calloc(nb, sizeof *b);
        if (b == NULL)
            return WF_ENOMEM;
        for (size_t i = 0; i < s->nbuckets; i++)
            for (srun *x = s->buckets[i], *nx; x; x = nx) {
                nx = x->next;
                x->next = b[x->hash & (nb - 1)];
                b[x->hash & (nb - 1)] = x;
            }
        wf__free_mem(s->buckets);
        s->buckets = b;
        s->nbuckets = nb;
    }
    srun **slot = &s->buckets[r->hash & (s->nbuckets - 1)];
    r->next = *slot;
    *slot = r;
    s->nruns++;
    return 0;
}

/* mu held. */
static void map_del(sstore *s, srun *r)
{
    if (s->nbuckets == 0)
        return;
    for (srun **pp = &s->buckets[r->hash & (s->nbuckets - 1)]; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            s->nruns--;
            return;
        }
}

static srun *srun_new(const char *run_id, uint64_t h)
{
    srun *r = wf__calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->run_id = wf__strdup(run_id);
    if (r->run_id == NULL) {
        wf__free_mem(r);
        return NULL;
    }
    r->hash = h;
    r->refs = 1;
    return r;
}

/* mu held. */
static void srun_unref(srun *r)
{
    if (r && --r->refs == 0) {
        wf__free_mem(r->run_id);
        wf__free_mem(r);
    }
}

/* ------------------------------------------------------------- the queue */

/*
 * Queues op (mu held): waits for room when the queue is full (or fails),
 * gives the ticket, wakes the writer. An op larger than the whole
 * queue is admitted when the queue is empty, so it cannot wait forever.
 */
static int enqueue_locked(sstore *s, sop *op)
{
    /* Sync ops carry no data: never held back by the bound (flush must get through). */
    while (!op->sync && s->failed == 0 && s->queued > 0 &&
           s->queued + op->bytes > s->p.queue_bytes) {
        if (s->p.full == WF_STORE_FULL_FAIL)
            return WF_EOVERFLOW;
        if (pthread_equal(pthread_self(), s->writer))
            return WF_EBUSY;
        pthread_cond_signal(&s->cv_writer);
        pthread_cond_wait(&s->cv_done, &s->mu);
    }
    if (s->failed)
        return s->failed;
    if (s->stop)
        return WF_ESHUTDOWN;
    op->ticket = ++s->tickets;
    op->next = NULL;
    /*
     * Wake the writer only when it waits for this: the first op of a round,
     * a sync op, or the queue crossing half full. A signal per append would
     * wake it thousands of times per interval (a futex call each).
     */
    int wake = s->head == NULL || op->sync ||
               (s->queued < s->p.queue_bytes / 2 && s->queued + op->bytes >= s->p.queue_bytes / 2);
    *s->tail = op;
    s->tail = &op->next;
    s->queued += op->bytes;
    if (op->sync)
        s->urgent = 1;
    if (wake)
        pthread_cond_signal(&s->cv_writer);
    return 0;
}

/* A synchronous op: queue it, wait for its round to settle, return its outcome. */
static int run_sync(sstore *s, sop *op)
{
    if (pthread_equal(pthread_self(), s->writer))
        return WF_EBUSY;
    op->sync = 1;
    pthread_mutex_lock(&s->mu);
    int rc = enqueue_locked(s, op);
    if (rc == 0) {
        while (!op->finished)
            pthread_cond_wait(&s->cv_done, &s->mu);
        rc = op->rc;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The run this store writes, for an op on it: a ref for the op (mu held). */
static int run_for_write(sstore *s, const char *run_id, srun **out)
{
    srun *r = map_find(s, run_id, hash_str(run_id));
    if (r == NULL)
        return WF_ENOTFOUND;
    if (r->err)
        return r->err;
    if (r->closed)
        return WF_ESTATE;
    r->refs++;
    *out = r;
    return 0;
}

/* ------------------------------------------------------------- the writer */

/* Fills info from a row of the get_run shape (columns below). */
#define RUN_COLS                                                                                   \
    "r.rid, r.run_id, r.workflow, r.owner, r.status, r.lease_until, "                              \
    "coalesce((SELECT j.seq + j.n FROM journal j WHERE j.rid = r.rid ORDER BY j.seq DESC LIMIT "   \
    "1), "                                                                                         \
    "0), "                                                                                         \
    "coalesce((SELECT c.seq FROM checkpoints c WHERE c.rid = r.rid), 0), r.created_ms, "           \
    "r.updated_ms"

static void row_info(sqlite3_stmt *st, wf_store_run_info *info, int copy)
{
    if (copy) {
        info->run_id = col_dup(st, 1);
        info->workflow = col_dup(st, 2);
        info->owner = col_dup(st, 3);
    } else {
        info->run_id = (char *)sqlite3_column_text(st, 1);
        info->workflow = (char *)sqlite3_column_text(st, 2);
        info->owner = (char *)sqlite3_column_text(st, 3);
    }
    info->status = sqlite3_column_int(st, 4);
    info->lease_until_ms = sqlite3_column_int64(st, 5);
    info->next_seq = (uint64_t)sqlite3_column_int64(st, 6);
    info->checkpoint_seq = (uint64_t)sqlite3_column_int64(st, 7);
    info->created_ms = sqlite3_column_int64(st, 8);
    info->updated_ms = sqlite3_column_int64(st, 9);
}

static int info_copied(const wf_store_run_info *info)
{
    return info->run_id && info->workflow ? 0 : WF_ENOMEM;
}

/* The row id and status of run_id on the write connection: WF_ENOTFOUND if absent. */
static int w_find(sstore *s, const char *run_id, int64_t *rid, int *status, char **owner,
                  int64_t *lease)
{
    sqlite3_stmt *st = s->w_find;
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int out = 0;
    if (rc == SQLITE_ROW) {
        *rid = sqlite3_column_int64(st, 0);
        *status = sqlite3_column_int(st, 1);
        if (owner) {
            *owner = col_dup(st, 2);
            if (*owner == NULL && sqlite3_column_type(st, 2) != SQLITE_NULL)
                out = WF_ENOMEM;
        }
        *lease = sqlite3_column_int64(st, 3);
    } else {
        out = rc == SQLITE_DONE ? WF_ENOTFOUND : map_rc(rc);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return out;
}

static int exec_claim(sstore *s, sop *op)
{
    int64_t rid, lease;
    int status;
    char *owner = NULL;
    int rc = w_find(s, op->name, &rid, &status, &owner, &lease);
    if (rc < 0)
        return rc;
    int64_t now = now_ms(s);
    if (status >= WF_STORE_DONE)
        rc = WF_ESTATE;
    else if (owner && strcmp(owner, s->owner) != 0 && lease > now)
        rc = WF_ELEASE;
    wf__free_mem(owner);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = s->w_claim;
    sqlite3_bind_text(st, 1, s->owner, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now + s->lease_ms);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int64(st, 4, rid);
    if ((rc = step_done(st)) < 0)
        return rc;
    st = s->w_next_seq;
    sqlite3_bind_int64(st, 1, rid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        wf_store_run_info *info = op->info;
        row_info(st, info, 1);
        rc = info_copied(info);
        op->seq = info->next_seq;
        op->rid = rid;
    } else {
        rc = rc == SQLITE_DONE ? WF_EINTERNAL : map_rc(rc);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int exec_renew(sstore *s, sop *op)
{
    int64_t now = now_ms(s);
    sqlite3_stmt *st = s->w_renew;
    sqlite3_bind_int64(st, 1, now + s->lease_ms);
    sqlite3_bind_text(st, 2, s->owner, -1, SQLITE_STATIC);
    int rc = step_done(st);
    if (rc < 0)
        return rc;
    /* A run we write whose row names another owner was taken over after our lease expired. */
    op->lost = 0;
    for (size_t i = 0; i < op->nruns; i++) {
        srun *r = op->runs[i];
        if (r->werr || r->rid == 0)
            continue;
        st = s->w_owner;
        sqlite3_bind_int64(st, 1, r->rid);
        rc = sqlite3_step(st);
        int mine = rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_TEXT &&
                   strcmp((const char *)sqlite3_column_text(st, 0), s->owner) == 0;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return map_rc(rc);
        if (!mine) {
            r->werr = WF_ELEASE;
            op->lost++;
        }
    }
    return 0;
}

static int exec_remove(sstore *s, sop *op)
{
    int64_t rid, lease;
    int status;
    int rc = w_find(s, op->name, &rid, &status, NULL, &lease);
    if (rc < 0)
        return rc;
    for (int i = 0; i < 4; i++) {
        sqlite3_bind_int64(s->w_del[i], 1, rid);
        if ((rc = step_done(s->w_del[i])) < 0)
            return rc;
    }
    return 0;
}

/*
 * The journal keeps a run's records of one round in one row (docs/DURABILITY.md,
 * "Schema"): seq (the first record's number), n, and data = n times a msgpack
 * uint (the kind) followed by a msgpack bin (the record's bytes). A row costs
 * SQLite one B-tree insert and one index entry, however many records it holds.
 */
static size_t rec_size(uint32_t len)
{
    return 5 + 5 + (size_t)len;
}

static uint8_t *put_be(uint8_t *p, uint32_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *rec_put(uint8_t *p, uint32_t kind, const uint8_t *data, uint32_t len)
{
    if (kind < 128)
        *p++ = (uint8_t)kind;
    else if (kind <= 0xffff)
        *p++ = 0xcd, p = put_be(p, kind, 2);
    else
        *p++ = 0xce, p = put_be(p, kind, 4);
    if (len <= 0xff)
        *p++ = 0xc4, *p++ = (uint8_t)len;
    else if (len <= 0xffff)
        *p++ = 0xc5, p = put_be(p, len, 2);
    else
        *p++ = 0xc6, p = put_be(p, len, 4);
    if (len)
        memcpy(p, data, len);
    return p + len;
}

/* Decodes the record at *p (end: the row's end): 0, or WF_ECORRUPT. */
static int rec_get(const uint8_t **p, const uint8_t *end, uint32_t *kind, const uint8_t **data,
                   uint32_t *len)
{
    const uint8_t *q = *p;
    uint32_t v = 0;
    int nb;
    if (q >= end)
        return WF_ECORRUPT;
    if (*q < 128)
        nb = 0, v = *q;
    else if (*q == 0xcc || *q == 0xcd || *q == 0xce)
        nb = 1 << (*q - 0xcc);
    else
        return WF_ECORRUPT;
    q++;
    if (end - q < nb + 1)
        return WF_ECORRUPT;
    for (int i = 0; i < nb; i++)
        v = v << 8 | *q++;
    *kind = v;
    if (*q < 0xc4 || *q > 0xc6)
        return WF_ECORRUPT;
    nb = 1 << (*q++ - 0xc4);
    if (end - q < nb)
        return WF_ECORRUPT;
    v = 0;
    for (int i = 0; i < nb; i++)
        v = v << 8 | *q++;
    if ((size_t)(end - q) < v)
        return WF_ECORRUPT;
    *data = q;
    *len = v;
    *p = q + v;
    return 0;
}

static int wbuf_room(sstore *s, size_t need)
{
    if (need <= s->wcap)
        return 0;
    size_t cap = s->wcap ? s->wcap : 4096;
    while (cap < need)
        cap *= 2;
    uint8_t *b = wf__malloc(cap);
    if (b == NULL)
        return WF_ENOMEM;
    if (s->wbuf)
        memcpy(b, s->wbuf, s->wcap); /* the row encoded so far */
    wf__free_mem(s->wbuf);
    s->wbuf = b;
    s->wcap = cap;
    return 0;
}

/* Inserts s->wbuf[0, len) as the row (r, seq, n): it must continue the committed journal. */
static int insert_row(sstore *s, srun *r, uint64_t seq, uint32_t n, size_t len)
{
    sqlite3_stmt *st = s->w_ins_rec;
    sqlite3_bind_int64(st, 1, r->rid);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    sqlite3_bind_int64(st, 3, n);
    bind_blob(st, 4, s->wbuf, len);
    int rc = step_done(st);
    if (rc == WF_EEXIST || (rc == 0 && sqlite3_changes(s->wdb) != 1))
        return WF_ELEASE; /* another owner wrote that seq */
    return rc;
}

/* Inserts the appends of r from op to last (contiguous seqs) as rows of up to CHUNK_BYTES. */
static int insert_appends(sstore *s, srun *r, sop *op, sop *last)
{
    while (op) {
        /* One row: whole ops while they fit (an op bigger than a row gets a row of its own). */
        uint64_t seq = op->seq;
        uint32_t n = 0;
        size_t len = 0;
        sop *o = op;
        for (;;) {
            size_t sz = 0;
            for (uint32_t i = 0; i < o->n; i++)
                sz += rec_size(o->recs[i].len);
            if (n && len + sz > CHUNK_BYTES)
                break;
            int rc = wbuf_room(s, len + sz);
            if (rc < 0)
                return rc;
            uint8_t *p = s->wbuf + len;
            for (uint32_t i = 0; i < o->n; i++)
                p = rec_put(p, o->recs[i].kind, o->recs[i].data, o->recs[i].len);
            len = (size_t)(p - s->wbuf);
            n += o->n;
            o = o == last ? NULL : o->wnext;
            if (o == NULL)
                break;
        }
        if (n) {
            int rc = insert_row(s, r, seq, n, len);
            if (rc < 0)
                return rc;
        }
        op = o;
    }
    return 0;
}

/*
 * Inserts every pending append of this round (fast path; on failure the
 * round is redone op by op), or only forgets them (insert 0: a rollback).
 */
static int flush_appends(sstore *s, int insert)
{
    int rc = 0;
    for (srun *r = s->wpending, *next; r; r = next) {
        next = r->wnext;
        if (rc == 0 && insert)
            rc = insert_appends(s, r, r->wfirst, r->wlast);
        r->wfirst = r->wlast = NULL;
        r->wnext = NULL;
    }
    s->wpending = NULL;
    return rc;
}

/* Executes one op in the open transaction: 0, or why it failed. */
static int exec_op(sstore *s, sop *op, int careful)
{
    srun *r = op->run;
    if (r && r->werr)
        return r->werr;
    sqlite3_stmt *st;
    int rc = 0;
    int64_t now;
    switch (op->type) {
    case OP_CREATE:
        now = now_ms(s);
        st = s->w_ins_run;
        sqlite3_bind_text(st, 1, r->run_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, op->workflow, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, s->owner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now + s->lease_ms);
        sqlite3_bind_int64(st, 5, now);
        if ((rc = step_done(st)) == 0)
            r->rid = sqlite3_last_insert_rowid(s->wdb);
        return rc;
    case OP_APPEND:
        if (op->n == 0)
            return 0;
        op->wnext = NULL;
        if (careful)
            return insert_appends(s, r, op, op); /* a row per op: a failure is this op's own */
        /* Gathered: one row per run and round, inserted before the commit. */
        if (r->wfirst == NULL) {
            r->wfirst = op;
            r->wnext = s->wpending;
            s->wpending = r;
        } else {
            r->wlast->wnext = op;
        }
        r->wlast = op;
        return 0;
    case OP_STATUS:
        st = s->w_status;
        sqlite3_bind_int(st, 1, op->status);
        sqlite3_bind_int64(st, 2, now_ms(s));
        sqlite3_bind_int64(st, 3, r->rid);
        return step_done(st);
    case OP_CKPT:
        st = s->w_ckpt;
        sqlite3_bind_int64(st, 1, r->rid);
        sqlite3_bind_int64(st, 2, (int64_t)op->seq);
        bind_blob(st, 3, op->data, op->len);
        sqlite3_bind_int64(st, 4, now_ms(s));
        return step_done(st);
    case OP_RESULT:
        now = now_ms(s);
        st = s->w_result;
        sqlite3_bind_int64(st, 1, r->rid);
        bind_blob(st, 2, op->data, op->len);
        sqlite3_bind_int64(st, 3, now);
        if ((rc = step_done(st)) < 0)
            return rc;
        st = s->w_finish;
        sqlite3_bind_int(st, 1, op->status);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int64(st, 3, r->rid);
        return step_done(st);
    case OP_RELEASE:
        st = s->w_release;
        sqlite3_bind_int64(st, 1, now_ms(s));
        sqlite3_bind_int64(st, 2, r->rid);
        sqlite3_bind_text(st, 3, s->owner, -1, SQLITE_STATIC);
        if ((rc = step_done(st)) < 0)
            return rc;
        return sqlite3_changes(s->wdb) == 1 ? 0 : WF_ELEASE;
    case OP_CLAIM:
        return exec_claim(s, op);
    case OP_RENEW:
        return exec_renew(s, op);
    case OP_REMOVE:
        return exec_remove(s, op);
    case OP_FLUSH:
        return 0;
    }
    return WF_EINTERNAL;
}

/*
 * One round: every op in one transaction. The fast pass runs them plainly;
 * if one fails on its own (a duplicate run id, a lost lease), the round is
 * rolled back and run again with a savepoint per op, so that op alone
 * fails, with every later write to its run (they would follow a gap).
 * Returns 0, or an error that failed the whole round (every op gets it).
 */
static int run_round(sstore *s, sop *batch)
{
    for (int careful = 0; careful < 2; careful++) {
        int rc = step_done(s->w_begin);
        if (rc < 0)
            return rc;
        int redo = 0;
        for (sop *op = batch; op; op = op->next) {
            if (careful && sqlite3_exec(s->wdb, "SAVEPOINT op", NULL, NULL, NULL) != SQLITE_OK) {
                rc = map_rc(sqlite3_errcode(s->wdb));
                break;
            }
            if (!careful && (op->type == OP_CLAIM || op->type == OP_REMOVE) &&
                (rc = flush_appends(s, 1)) < 0) {
                /* they read or delete the journal: the rows gathered so far go in first */
                if (!fatal(rc) && rc != WF_ENOMEM && rc != WF_EBUSY)
                    rc = 0, redo = 1;
                break;
            }
            op->rc = exec_op(s, op, careful);
            if (op->rc < 0 && (fatal(op->rc) || op->rc == WF_ENOMEM || op->rc == WF_EBUSY)) {
                rc = op->rc;
                break;
            }
            if (careful) {
                if (op->rc < 0) {
                    sqlite3_exec(s->wdb, "ROLLBACK TO op", NULL, NULL, NULL);
                    if (op->run)
                        op->run->werr = op->rc;
                }
                if (sqlite3_exec(s->wdb, "RELEASE op", NULL, NULL, NULL) != SQLITE_OK) {
                    rc = map_rc(sqlite3_errcode(s->wdb));
                    break;
                }
            } else if (op->rc < 0 && op->type != OP_CLAIM && op->type != OP_REMOVE &&
                       op->type != OP_RELEASE) {
                /* claim/remove/release failures change nothing; others may have half-written */
                redo = 1;
                break;
            }
        }
        if (rc == 0 && !redo && (rc = flush_appends(s, 1)) < 0 && !fatal(rc) && rc != WF_ENOMEM &&
            rc != WF_EBUSY) {
            rc = 0; /* one run's rows failed (a lost lease): find out whose, op by op */
            redo = 1;
        }
        flush_appends(s, 0); /* after a break: forget what was gathered */
        if (rc == 0 && !redo)
            rc = step_done(s->w_commit);
        if (rc == 0 && !redo)
            return 0;
        step_done(s->w_rollback);
        if (rc < 0)
            return rc;
        for (sop *op = batch; op; op = op->next)
            op->rc = 0;
    }
    return WF_EINTERNAL;
}

/* After a round (mu held): the run map follows what committed. */
static void settle_runs(sstore *s, sop *op)
{
    srun *r = op->run;
    if (op->rc < 0) {
        if (r) {
            if (r->err == 0)
                r->err = op->rc;
            r->werr = op->rc;
        }
        return;
    }
    if (op->type == OP_RENEW)
        for (size_t i = 0; i < op->nruns; i++)
            if (op->runs[i]->werr == WF_ELEASE && op->runs[i]->err == 0)
                op->runs[i]->err = WF_ELEASE;
    if (op->type == OP_CLAIM) {
        uint64_t h = hash_str(op->name);
        srun *x = map_find(s, op->name, h);
        /* A run we still write keeps its numbering (appends may be queued); a closed or
         * failed one starts over from what is committed. */
        if (x && (x->closed || x->err)) {
            map_del(s, x);
            srun_unref(x);
            x = NULL;
        }
        if (x == NULL && (x = srun_new(op->name, h)) != NULL) {
            x->next_seq = op->seq;
            if (map_add(s, x) < 0) {
                srun_unref(x);
                x = NULL;
            }
        }
        if (x == NULL) {
            op->rc = WF_ENOMEM;
            return;
        }
        x->rid = op->rid;
    }
    if (r && r->closed && (op->type == OP_RESULT || op->type == OP_RELEASE)) {
        map_del(s, r);
        srun_unref(r);
    }
}

static void *writer_main(void *arg)
{
    sstore *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->head == NULL && !s->stop)
            pthread_cond_wait(&s->cv_writer, &s->mu);
        if (s->head == NULL)
            break;
        if (s->p.commit != WF_STORE_COMMIT_EVERY) {
            /* Group commit: gather until the interval since the last round is up. */
            int64_t deadline = s->last_round_ms + s->p.interval_ms;
            while (!s->urgent && !s->stop && s->queued < s->p.queue_bytes / 2) {
                int64_t now = mono_ms();
                if (now >= deadline)
                    break;
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                int64_t ns = ts.tv_nsec + (deadline - now) * 1000000;
                ts.tv_sec += ns / 1000000000;
                ts.tv_nsec = ns % 1000000000;
                pthread_cond_timedwait(&s->cv_writer, &s->mu, &ts);
            }
        }
        sop *batch = s->head;
        s->head = NULL;
        s->tail = &s->head;
        s->urgent = 0;
        int failed = s->failed;
        pthread_mutex_unlock(&s->mu);

        s->last_round_ms = mono_ms();
        int rc = failed ? failed : run_round(s, batch);
        if (rc < 0)
            for (sop *op = batch; op; op = op->next)
                op->rc = rc;

        pthread_mutex_lock(&s->mu);
        if (fatal(rc) && s->failed == 0)
            s->failed = rc;
        uint64_t last = 0;
        for (sop *op = batch; op; op = op->next) {
            last = op->ticket;
            s->queued -= op->bytes;
            settle_runs(s, op);
            if (op->type == OP_RENEW)
                for (size_t i = 0; i < op->nruns; i++)
                    srun_unref(op->runs[i]);
            srun_unref(op->run);
            op->run = NULL;
        }
        pthread_cond_broadcast(&s->cv_done); /* room in the queue */
        pthread_mutex_unlock(&s->mu);

        /*
         * Callbacks before the tickets are published: whoever sees a ticket
         * durable (wf_store_wait, flush, a sync call) also sees its callback done.
         */
        for (sop *op = batch; op; op = op->next)
            if (!op->sync && op->done)
                op->done(op->rc, op->ticket, op->user);

        pthread_mutex_lock(&s->mu);
        for (sop *op = batch, *next; op; op = next) {
            next = op->next;
            if (op->sync)
                op->finished = 1; /* the caller's op: not touched after this */
            else
                wf__free_mem(op);
        }
        __atomic_store_n(&s->durable, last, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&s->cv_done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ------------------------------------------------------------ operations */

static int s_create(void *self, const char *run_id, const char *workflow, uint64_t *ticket)
{
    sstore *s = self;
    size_t wl = strlen(workflow) + 1;
    sop *op = wf__calloc(1, sizeof *op + wl);
    if (op == NULL)
        return WF_ENOMEM;
    op->type = OP_CREATE;
    op->workflow = (char *)(op + 1);
    memcpy(op->workflow, workflow, wl);
    op->bytes = sizeof *op + wl;
    uint64_t h = hash_str(run_id);
    pthread_mutex_lock(&s->mu);
    int rc = map_find(s, run_id, h) ? WF_EEXIST : 0;
    pthread_mutex_unlock(&s->mu);
    if (rc == 0) {
        /* Committed runs: a read outside the lock (a run committed meanwhile fails at commit). */
        rc = wf__sqlite_get_run(self, run_id, NULL);
        rc = rc == 0 ? WF_EEXIST : rc == WF_ENOTFOUND ? 0 : rc;
    }
    srun *r = NULL;
    if (rc == 0) {
        pthread_mutex_lock(&s->mu);
        if (map_find(s, run_id, h))
            rc = WF_EEXIST;
        else if ((r = srun_new(run_id, h)) == NULL)
            rc = WF_ENOMEM;
        else if ((rc = map_add(s, r)) < 0)
            srun_unref(r);
        if (rc == 0) {
            r->refs++;
            op->run = r;
            rc = enqueue_locked(s, op);
            if (rc < 0) {
                map_del(s, r);
                r->refs = 1;
                srun_unref(r);
            } else if (ticket) {
                *ticket = op->ticket;
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int s_append(void *self, const char *run_id, const wf_store_rec *recs, size_t n,
                    wf_store_done_fn done, void *user, uint64_t *first_seq, uint64_t *ticket)
{
    sstore *s = self;
    size_t data = 0;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].len > UINT32_MAX || (recs[i].len && recs[i].data == NULL))
            return WF_EINVAL;
        data += recs[i].len;
    }
    size_t size = sizeof(sop) + n * sizeof(oprec) + data;
    sop *op = wf__malloc(size);
    if (op == NULL)
        return WF_ENOMEM;
    memset(op, 0, sizeof *op);
    op->type = OP_APPEND;
    op->done = done;
    op->user = user;
    op->n = (uint32_t)n;
    op->recs = (oprec *)(op + 1);
    op->bytes = size;
    uint8_t *p = (uint8_t *)(op->recs + n);
    for (size_t i = 0; i < n; i++) {
        op->recs[i].kind = recs[i].kind;
        op->recs[i].len = (uint32_t)recs[i].len;
        op->recs[i].data = p;
        if (recs[i].len)
            memcpy(p, recs[i].data, recs[i].len);
        p += recs[i].len;
    }
    pthread_mutex_lock(&s->mu);
    int rc = run_for_write(s, run_id, &op->run);
    if (rc == 0) {
        rc = enqueue_locked(s, op);
        if (rc == 0) {
            /* Numbered in the critical section that queues them: queue order is seq order. */
            op->seq = op->run->next_seq;
            op->run->next_seq += n;
            if (first_seq)
                *first_seq = op->seq;
            if (ticket)
                *ticket = op->ticket;
        } else {
            srun_unref(op->run);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

/* Queues an async op on a run this store writes; close: no more writes after it. */
static int queue_run_op(sstore *s, const char *run_id, sop *op, int close, uint64_t *seq,
                        uint64_t *ticket)
{
    pthread_mutex_lock(&s->mu);
    int rc = run_for_write(s, run_id, &op->run);
    if (rc == 0) {
        op->seq = op->run->next_seq;
        rc = enqueue_locked(s, op);
        if (rc == 0) {
            if (seq)
                *seq = op->seq; /* not after the unlock: the writer may have freed op */
            if (close)
                op->run->closed = 1;
            if (ticket)
                *ticket = op->ticket;
        } else {
            srun_unref(op->run);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static sop *blob_op(int type, const void *data, size_t len, wf_store_done_fn done, void *user)
{
    sop *op = wf__calloc(1, sizeof *op + len);
    if (op == NULL)
        return NULL;
    op->type = type;
    op->done = done;
    op->user = user;
    op->len = len;
    op->data = (const uint8_t *)(op + 1);
    if (len)
        memcpy(op + 1, data, len);
    op->bytes = sizeof *op + len;
    return op;
}

static int s_set_status(void *self, const char *run_id, int32_t status, uint64_t *ticket)
{
    sop *op = blob_op(OP_STATUS, NULL, 0, NULL, NULL);
    if (op == NULL)
        return WF_ENOMEM;
    op->status = status;
    int rc = queue_run_op(self, run_id, op, 0, NULL, ticket);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int s_put_checkpoint(void *self, const char *run_id, const void *data, size_t len,
                            wf_store_done_fn done, void *user, uint64_t *seq, uint64_t *ticket)
{
    sop *op = blob_op(OP_CKPT, data, len, done, user);
    if (op == NULL)
        return WF_ENOMEM;
    int rc = queue_run_op(self, run_id, op, 0, seq, ticket);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int s_put_result(void *self, const char *run_id, int32_t status, const void *data,
                        size_t len, wf_store_done_fn done, void *user, uint64_t *ticket)
{
    sop *op = blob_op(OP_RESULT, data, len, done, user);
    if (op == NULL)
        return WF_ENOMEM;
    op->status = status;
    int rc = queue_run_op(self, run_id, op, 1, NULL, ticket);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int s_claim(void *self, const char *run_id, wf_store_run_info *info)
{
    wf_store_run_info tmp = {0};
    sop op = {.type = OP_CLAIM, .name = run_id, .info = info ? info : &tmp};
    memset(op.info, 0, sizeof *op.info);
    int rc = run_sync(self, &op);
    if (rc < 0 || info == NULL)
        wf_store_run_info_clear(op.info);
    return rc;
}

static int s_release(void *self, const char *run_id)
{
    sstore *s = self;
    sop op = {.type = OP_RELEASE, .sync = 1};
    pthread_mutex_lock(&s->mu);
    int rc = run_for_write(s, run_id, &op.run);
    if (rc == 0) {
        rc = enqueue_locked(s, &op);
        if (rc == 0) {
            op.run->closed = 1;
            while (!op.finished)
                pthread_cond_wait(&s->cv_done, &s->mu);
            rc = op.rc;
        } else {
            srun_unref(op.run);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_renew(void *self, uint32_t *lost)
{
    sstore *s = self;
    sop op = {.type = OP_RENEW};
    pthread_mutex_lock(&s->mu);
    if (s->nruns) {
        op.runs = wf__malloc(s->nruns * sizeof *op.runs);
        if (op.runs == NULL) {
            pthread_mutex_unlock(&s->mu);
            return WF_ENOMEM;
        }
        for (size_t i = 0; i < s->nbuckets; i++)
            for (srun *r = s->buckets[i]; r; r = r->next)
                if (!r->closed && !r->err) {
                    r->refs++;
                    op.runs[op.nruns++] = r;
                }
    }
    pthread_mutex_unlock(&s->mu);
    int rc = run_sync(s, &op);
    if (rc < 0 && op.finished == 0) {
        /* never queued: the writer did not take the refs */
        pthread_mutex_lock(&s->mu);
        for (size_t i = 0; i < op.nruns; i++)
            srun_unref(op.runs[i]);
        pthread_mutex_unlock(&s->mu);
    }
    wf__free_mem(op.runs);
    if (lost)
        *lost = rc == 0 ? op.lost : 0;
    return rc;
}

static int s_remove(void *self, const char *run_id)
{
    sstore *s = self;
    sop op = {.type = OP_REMOVE, .name = run_id};
    int rc = run_sync(s, &op);
    if (rc == 0) {
        pthread_mutex_lock(&s->mu);
        srun *r = map_find(s, run_id, hash_str(run_id));
        if (r) {
            r->closed = 1;
            r->err = WF_ENOTFOUND;
            map_del(s, r);
            srun_unref(r);
        }
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}

static int s_flush(void *self)
{
    sop op = {.type = OP_FLUSH};
    return run_sync(self, &op);
}

static uint64_t s_durable(void *self)
{
    sstore *s = self;
    return __atomic_load_n(&s->durable, __ATOMIC_ACQUIRE);
}

static int s_wait(void *self, uint64_t ticket)
{
    sstore *s = self;
    if (pthread_equal(pthread_self(), s->writer))
        return s_durable(s) >= ticket ? 0 : WF_EBUSY;
    pthread_mutex_lock(&s->mu);
    if (ticket > s->tickets)
        ticket = s->tickets; /* a ticket never given: wait for what exists */
    s->urgent = 1;
    pthread_cond_signal(&s->cv_writer);
    while (s->durable < ticket)
        pthread_cond_wait(&s->cv_done, &s->mu);
    int rc = s->failed;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* --------------------------------------------------------------- readers */

static const char *const reader_sql[] = {
    "SELECT " RUN_COLS " FROM runs r WHERE r.run_id = ?1",
    "SELECT " RUN_COLS " FROM runs r WHERE r.rid > ?1 AND r.status IN (?2,?3,?4,?5,?6,?7,?8) "
    "ORDER BY r.rid LIMIT ?9",
    "SELECT c.seq, c.data FROM checkpoints c JOIN runs r ON r.rid = c.rid WHERE r.run_id = ?1",
    "SELECT r.status, s.data FROM runs r LEFT JOIN results s ON s.rid = r.rid WHERE r.run_id = ?1",
    "SELECT rid FROM runs WHERE run_id = ?1",
    /* from the row holding ?2 (the last starting at or before it) on */
    "SELECT seq, n, data FROM journal WHERE rid = ?1 AND seq >= coalesce((SELECT seq FROM journal "
    "WHERE rid = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1), 0) ORDER BY seq",
};

static void reader_close(reader *r)
{
    if (r == NULL)
        return;
    sqlite3_stmt **sts[] = {&r->get_run, &r->list, &r->ckpt, &r->result, &r->rid, &r->journal};
    for (size_t i = 0; i < sizeof sts / sizeof *sts; i++)
        sqlite3_finalize(*sts[i]);
    sqlite3_close_v2(r->db);
    wf__free_mem(r);
}

static int reader_get(sstore *s, reader **out)
{
    pthread_mutex_lock(&s->rmu);
    reader *r = s->readers;
    if (r)
        s->readers = r->next;
    pthread_mutex_unlock(&s->rmu);
    if (r) {
        *out = r;
        return 0;
    }
    r = wf__calloc(1, sizeof *r);
    if (r == NULL)
        return WF_ENOMEM;
    int rc = sqlite3_open_v2(s->path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(r->db, (int)s->p.busy_timeout_ms);
    sqlite3_stmt **sts[] = {&r->get_run, &r->list, &r->ckpt, &r->result, &r->rid, &r->journal};
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof sts / sizeof *sts; i++)
        rc = sqlite3_prepare_v3(r->db, reader_sql[i], -1, SQLITE_PREPARE_PERSISTENT, sts[i], NULL);
    if (rc != SQLITE_OK) {
        int err = map_rc(rc);
        reader_close(r);
        return err ? err : WF_EINTERNAL;
    }
    *out = r;
    return 0;
}

static void reader_put(sstore *s, reader *r)
{
    pthread_mutex_lock(&s->rmu);
    r->next = s->readers;
    s->readers = r;
    pthread_mutex_unlock(&s->rmu);
}

static void st_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Also store.c's create check: info NULL only tells whether the run exists. */
int wf__sqlite_get_run(void *self, const char *run_id, wf_store_run_info *info)
{
    reader *r;
    int rc = reader_get(self, &r);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = r->get_run;
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    int sr = sqlite3_step(st);
    if (sr == SQLITE_ROW) {
        if (info) {
            row_info(st, info, 1);
            rc = info_copied(info);
            if (rc < 0)
                wf_store_run_info_clear(info);
        }
    } else {
        rc = sr == SQLITE_DONE ? WF_ENOTFOUND : map_rc(sr);
    }
    st_done(st);
    reader_put(self, r);
    return rc;
}

static int blob_dup(sqlite3_stmt *st, int col, void **data, size_t *len)
{
    int n = sqlite3_column_bytes(st, col);
    const void *p = sqlite3_column_blob(st, col);
    *data = NULL;
    *len = 0;
    if (n <= 0)
        return 0;
    if (p == NULL)
        return WF_ENOMEM;
    if ((*data = wf__malloc((size_t)n)) == NULL)
        return WF_ENOMEM;
    memcpy(*data, p, (size_t)n);
    *len = (size_t)n;
    return 0;
}

static int s_get_checkpoint(void *self, const char *run_id, void **data, size_t *len, uint64_t *seq)
{
    reader *r;
    int rc = reader_get(self, &r);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = r->ckpt;
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    int sr = sqlite3_step(st);
    if (sr == SQLITE_ROW) {
        if (seq)
            *seq = (uint64_t)sqlite3_column_int64(st, 0);
        rc = blob_dup(st, 1, data, len);
    } else {
        rc = sr == SQLITE_DONE ? WF_ENOTFOUND : map_rc(sr);
    }
    st_done(st);
    reader_put(self, r);
    return rc;
}

static int s_get_result(void *self, const char *run_id, int32_t *status, void **data, size_t *len)
{
    reader *r;
    int rc = reader_get(self, &r);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = r->result;
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    int sr = sqlite3_step(st);
    if (sr == SQLITE_ROW) {
        *status = sqlite3_column_int(st, 0);
        if (*status < WF_STORE_DONE)
            rc = WF_EAGAIN;
        else if (sqlite3_column_type(st, 1) == SQLITE_NULL)
            rc = WF_ECORRUPT; /* finished without a result row */
        else
            rc = blob_dup(st, 1, data, len);
    } else {
        rc = sr == SQLITE_DONE ? WF_ENOTFOUND : map_rc(sr);
    }
    st_done(st);
    reader_put(self, r);
    return rc;
}

static int s_read_journal(void *self, const char *run_id, uint64_t from_seq, uint32_t max,
                          wf_store_journal_fn fn, void *user, uint64_t *next_seq)
{
    reader *r;
    int rc = reader_get(self, &r);
    if (rc < 0)
        return rc;
    if (next_seq)
        *next_seq = from_seq;
    sqlite3_stmt *st = r->rid;
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    int sr = sqlite3_step(st);
    int64_t rid = sr == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    st_done(st);
    if (sr != SQLITE_ROW) {
        reader_put(self, r);
        return sr == SQLITE_DONE ? WF_ENOTFOUND : map_rc(sr);
    }
    st = r->journal;
    sqlite3_bind_int64(st, 1, rid);
    sqlite3_bind_int64(st, 2, from_seq > INT64_MAX ? INT64_MAX : (int64_t)from_seq);
    uint64_t expect = 0, left = max ? max : UINT64_MAX;
    int first = 1, stop = 0;
    while (!stop && left && (sr = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq0 = sqlite3_column_int64(st, 0), n = sqlite3_column_int64(st, 1);
        const uint8_t *p = sqlite3_column_blob(st, 2);
        const uint8_t *end = p + sqlite3_column_bytes(st, 2);
        if (seq0 < 0 || n < 1 || (!first && (uint64_t)seq0 != expect) || p == NULL) {
            rc = WF_ECORRUPT; /* a gap or an overlap: never written so, the file was changed */
            break;
        }
        first = 0;
        expect = (uint64_t)seq0 + (uint64_t)n;
        for (uint64_t seq = (uint64_t)seq0; seq < expect; seq++) {
            uint32_t kind, len;
            const uint8_t *data;
            if ((rc = rec_get(&p, end, &kind, &data, &len)) < 0)
                break;
            if (seq < from_seq)
                continue;
            if (next_seq)
                *next_seq = seq + 1;
            if (fn(seq, kind, data, len, user) || --left == 0) {
                stop = 1;
                break;
            }
        }
        if (rc == 0 && !stop && p != end)
            rc = WF_ECORRUPT; /* more bytes than n records */
        if (rc < 0)
            break;
    }
    if (rc == 0 && !stop && left && sr != SQLITE_ROW && sr != SQLITE_DONE)
        rc = map_rc(sr);
    st_done(st);
    reader_put(self, r);
    return rc;
}

static int s_list(void *self, uint32_t mask, uint64_t cursor, uint32_t limit, wf_store_list_fn fn,
                  void *user, uint64_t *next_cursor)
{
    reader *r;
    int rc = reader_get(self, &r);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = r->list;
    sqlite3_bind_int64(st, 1, cursor > INT64_MAX ? INT64_MAX : (int64_t)cursor);
    for (int i = 0; i < 7; i++)
        sqlite3_bind_int(st, 2 + i, (mask >> i) & 1 ? i : -1);
    sqlite3_bind_int64(st, 9, limit ? (int64_t)limit : -1);
    uint32_t count = 0;
    int64_t last = 0;
    int sr, stopped = 0;
    while ((sr = sqlite3_step(st)) == SQLITE_ROW) {
        wf_store_run_info info;
        row_info(st, &info, 0);
        last = sqlite3_column_int64(st, 0);
        count++;
        if (fn(&info, user)) {
            stopped = 1;
            break;
        }
    }
    if (!stopped && sr != SQLITE_DONE)
        rc = map_rc(sr);
    st_done(st);
    reader_put(self, r);
    if (next_cursor)
        *next_cursor = (stopped || (limit && count == limit)) ? (uint64_t)last : 0;
    return rc;
}

/* ------------------------------------------------------------ open, free */

static const char *const writer_sql[] = {
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "INSERT INTO runs(run_id, workflow, status, owner, lease_until, created_ms, updated_ms) "
    "VALUES (?1, ?2, 0, ?3, ?4, ?5, ?5)",
    /* only right after the run's committed journal: gap-free, and no two owners at one seq */
    "INSERT INTO journal(rid, seq, n, data) SELECT ?1, ?2, ?3, ?4 WHERE coalesce("
    "(SELECT j.seq + j.n FROM journal j WHERE j.rid = ?1 ORDER BY j.seq DESC LIMIT 1), 0) = ?2",
    "UPDATE runs SET status = ?1, updated_ms = ?2 WHERE rid = ?3",
    "INSERT OR REPLACE INTO checkpoints(rid, seq, data, updated_ms) VALUES (?1, ?2, ?3, ?4)",
    "INSERT OR REPLACE INTO results(rid, data, finished_ms) VALUES (?1, ?2, ?3)",
    "UPDATE runs SET status = ?1, owner = NULL, lease_until = 0, updated_ms = ?2 WHERE rid = ?3",
    "SELECT rid, status, owner, lease_until FROM runs WHERE run_id = ?1",
    "UPDATE runs SET owner = ?1, lease_until = ?2, updated_ms = ?3, "
    "status = CASE status WHEN 2 THEN 0 ELSE status END WHERE rid = ?4",
    "SELECT " RUN_COLS " FROM runs r WHERE r.rid = ?1",
    "UPDATE runs SET status = 2, owner = NULL, lease_until = 0, updated_ms = ?1 "
    "WHERE rid = ?2 AND owner = ?3",
    "UPDATE runs SET lease_until = ?1 WHERE owner = ?2 AND status IN (0, 1)",
    "SELECT owner FROM runs WHERE rid = ?1",
    "DELETE FROM journal WHERE rid = ?1",
    "DELETE FROM checkpoints WHERE rid = ?1",
    "DELETE FROM results WHERE rid = ?1",
    "DELETE FROM runs WHERE rid = ?1",
};

/*
 * Version 2: a row holds a run's records of one round (seq the first, n of
 * them); rows go in rowid order (appended at the end of the table), the
 * (rid, seq) index finds a run's rows.
 */
#define JOURNAL_SQL                                                                                \
    "CREATE TABLE journal("                                                                        \
    " rid INTEGER NOT NULL,"                                                                       \
    " seq INTEGER NOT NULL,"                                                                       \
    " n INTEGER NOT NULL,"                                                                         \
    " data BLOB NOT NULL,"                                                                         \
    " PRIMARY KEY (rid, seq));"
#define RUNS_V_SQL                                                                                 \
    "CREATE VIEW runs_v AS SELECT r.run_id, s.name AS status, r.workflow, r.owner,"                \
    " r.lease_until, r.created_ms, r.updated_ms,"                                                  \
    " (SELECT coalesce(sum(j.n), 0) FROM journal j WHERE j.rid = r.rid) AS records"                \
    " FROM runs r JOIN statuses s ON s.code = r.status;"

/* Version 1 -> 2: each record becomes a row of one (wf_rec1 encodes it, see migrate). */
static const char migrate_sql[] =
    "DROP VIEW runs_v;"
    "ALTER TABLE journal RENAME TO journal_v1;" JOURNAL_SQL "INSERT INTO journal(rid, seq, n, data)"
    " SELECT rid, seq, 1, wf_rec1(kind, data) FROM journal_v1"
    " ORDER BY rid, seq;"
    "DROP TABLE journal_v1;" RUNS_V_SQL "PRAGMA user_version = 2;";

static void sql_rec1(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
    (void)argc;
    int64_t kind = sqlite3_value_int64(argv[0]);
    const uint8_t *data = sqlite3_value_blob(argv[1]);
    int len = sqlite3_value_bytes(argv[1]);
    if (kind < 0 || kind > UINT32_MAX || len < 0) {
        sqlite3_result_error(cx, "wf_rec1: bad record", -1);
        return;
    }
    uint8_t *buf = sqlite3_malloc64(rec_size((uint32_t)len));
    if (buf == NULL) {
        sqlite3_result_error_nomem(cx);
        return;
    }
    uint8_t *end = rec_put(buf, (uint32_t)kind, data, (uint32_t)len);
    sqlite3_result_blob(cx, buf, (int)(end - buf), sqlite3_free);
}

static const char schema_sql[] =
    "CREATE TABLE runs("
    " rid INTEGER PRIMARY KEY,"
    " run_id TEXT NOT NULL UNIQUE,"
    " workflow TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " owner TEXT,"
    " lease_until INTEGER NOT NULL DEFAULT 0,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL);"
    "CREATE INDEX runs_status ON runs(status, rid);"
    "CREATE INDEX runs_owner ON runs(owner) WHERE owner IS NOT NULL;" JOURNAL_SQL
    "CREATE TABLE checkpoints("
    " rid INTEGER PRIMARY KEY,"
    " seq INTEGER NOT NULL,"
    " data BLOB NOT NULL,"
    " updated_ms INTEGER NOT NULL);"
    "CREATE TABLE results("
    " rid INTEGER PRIMARY KEY,"
    " data BLOB NOT NULL,"
    " finished_ms INTEGER NOT NULL);"
    "CREATE TABLE statuses(code INTEGER PRIMARY KEY, name TEXT NOT NULL);"
    "INSERT INTO statuses VALUES (0,'running'),(1,'waiting'),(2,'released'),(3,'done'),"
    " (4,'failed'),(5,'timed_out'),(6,'cancelled');" RUNS_V_SQL
    "PRAGMA application_id = 2003194708;" /* 0x77665354, "wfST" */
    "PRAGMA user_version = 2;";

static char *msgf(const char *fmt, const char *a, const char *b)
{
    char m[600];
    snprintf(m, sizeof m, fmt, a, b);
    return wf__strdup(m);
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Checks (or creates) the schema on the write connection. */
static int check_schema(sstore *s, char **message)
{
    sqlite3 *db = s->wdb;
    int64_t app = 0, ver = 0, tables = 0;
    int rc = pragma_int(db, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "PRAGMA user_version", &ver);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables);
    if (rc != SQLITE_OK)
        goto sqlfail;
    if (app == 0 && ver == 0 && tables == 0) {
        /* A new file: create the schema; another process may race us, so re-check inside. */
        rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables);
        if (rc == SQLITE_OK && tables == 0)
            rc = sqlite3_exec(db, schema_sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            goto sqlfail;
        }
        if ((rc = pragma_int(db, "PRAGMA application_id", &app)) != SQLITE_OK ||
            (rc = pragma_int(db, "PRAGMA user_version", &ver)) != SQLITE_OK)
            goto sqlfail;
    }
    if (app != APP_ID) {
        if (message) {
            char hex[32];
            snprintf(hex, sizeof hex, "0x%08x", (unsigned)(uint32_t)app);
            *message = msgf("%s: not a wf store (SQLite application_id %s, wf's is 0x77665354)",
                            s->path, hex);
        }
        return WF_EFORMAT;
    }
    if (ver > SCHEMA_VERSION || ver < 1) {
        if (message) {
            char v[32];
            snprintf(v, sizeof v, "%lld", (long long)ver);
            *message = msgf("%s: wf store schema version %s, this library reads versions 1 and 2",
                            s->path, v);
        }
        return ver < 1 ? WF_EFORMAT : WF_EVERSION;
    }
    if (ver == 1) {
        /* Migrate in one transaction (another process may have done it meanwhile). */
        rc = sqlite3_create_function(db, "wf_rec1", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                     sql_rec1, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc == SQLITE_OK && (rc = pragma_int(db, "PRAGMA user_version", &ver)) == SQLITE_OK &&
            ver == 1)
            rc = sqlite3_exec(db, migrate_sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            if (message)
                *message =
                    msgf("%s: migrating schema version 1 to 2: %s", s->path, sqlite3_errmsg(db));
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            sqlite3_create_function(db, "wf_rec1", 2, SQLITE_UTF8, NULL, NULL, NULL, NULL);
            return map_rc(rc) ? map_rc(rc) : WF_EINTERNAL;
        }
        sqlite3_create_function(db, "wf_rec1", 2, SQLITE_UTF8, NULL, NULL, NULL, NULL);
    }
    return 0;
sqlfail:
    if (message)
        *message = msgf("%s: %s", s->path, sqlite3_errmsg(db));
    return map_rc(rc) ? map_rc(rc) : WF_EINTERNAL;
}

static void s_free(void *self)
{
    sstore *s = self;
    if (s == NULL)
        return;
    if (s->writer_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv_writer);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->writer, NULL);
    }
    /* Readers first: the last connection to close checkpoints the WAL and removes it. */
    for (reader *r = s->readers, *n; r; r = n) {
        n = r->next;
        reader_close(r);
    }
    sqlite3_stmt **w = &s->w_begin;
    for (size_t i = 0; i < sizeof writer_sql / sizeof *writer_sql; i++)
        sqlite3_finalize(w[i]);
    sqlite3_close_v2(s->wdb);
    for (size_t i = 0; i < s->nbuckets; i++)
        for (srun *r = s->buckets[i], *n; r; r = n) {
            n = r->next;
            srun_unref(r);
        }
    wf__free_mem(s->buckets);
    wf__free_mem(s->wbuf);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->cv_writer);
    pthread_cond_destroy(&s->cv_done);
    wf__free_mem(s->path);
    wf__free_mem(s->owner);
    wf__free_mem(s);
}

static const wf_store_ops sqlite_ops = {
    .size = sizeof(wf_store_ops),
    .name = "sqlite",
    .create = s_create,
    .claim = s_claim,
    .append = s_append,
    .set_status = s_set_status,
    .put_checkpoint = s_put_checkpoint,
    .put_result = s_put_result,
    .release = s_release,
    .renew = s_renew,
    .remove = s_remove,
    .flush = s_flush,
    .wait = s_wait,
    .durable = s_durable,
    .get_run = wf__sqlite_get_run,
    .get_checkpoint = s_get_checkpoint,
    .get_result = s_get_result,
    .read_journal = s_read_journal,
    .list = s_list,
    .free = s_free,
};

static char *default_owner(void)
{
    char host[256] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* Unique enough per process start: pid and the nanoseconds of the open. */
    char buf[400];
    snprintf(buf, sizeof buf, "%s:%ld:%08lx", host, (long)getpid(),
             (unsigned long)((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20)));
    return wf__strdup(buf);
}

int wf__sqlite_open(wf_store **out, const char *path, const wf_store_params *params, char **message)
{
    sstore *s = wf__calloc(1, sizeof *s);
    if (s == NULL)
        return WF_ENOMEM;
    s->p = *params;
    if (s->p.clock == NULL)
        s->p.clock = real_ms;
    s->lease_ms = s->p.lease_ms;
    s->tail = &s->head;
    s->path = wf__strdup(path);
    s->owner = s->p.owner ? wf__strdup(s->p.owner) : default_owner();
    s->p.owner = NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv_writer, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&s->cv_done, NULL);
    if (s->path == NULL || s->owner == NULL) {
        s_free(s);
        return WF_ENOMEM;
    }
    int rc = sqlite3_open_v2(
        path, &s->wdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    int err = 0;
    if (rc != SQLITE_OK) {
        if (message)
            *message = msgf("%s: %s", path, s->wdb ? sqlite3_errmsg(s->wdb) : "cannot open");
        err = map_rc(rc) ? map_rc(rc) : WF_EIO;
        goto fail;
    }
    sqlite3_extended_result_codes(s->wdb, 0);
    sqlite3_busy_timeout(s->wdb, (int)s->p.busy_timeout_ms);
    if ((err = check_schema(s, message)) < 0)
        goto fail;
    {
        const char *sync = s->p.commit == WF_STORE_COMMIT_OFF ? "PRAGMA synchronous = OFF"
                                                              : "PRAGMA synchronous = FULL";
        sqlite3_stmt *st;
        rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
            rc = mode && strcmp((const char *)mode, "wal") == 0 ? SQLITE_OK
                 : rc == SQLITE_ROW                             ? SQLITE_CANTOPEN
                                                                : rc;
            sqlite3_finalize(st);
        }
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(s->wdb, sync, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            if (message)
                *message = msgf("%s: cannot use WAL mode: %s", path, sqlite3_errmsg(s->wdb));
            err = map_rc(rc) ? map_rc(rc) : WF_EIO;
            goto fail;
        }
    }
    if (s->p.verify) {
        sqlite3_stmt *st;
        rc = sqlite3_prepare_v2(s->wdb, "PRAGMA quick_check", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) {
                if (message)
                    *message =
                        msgf("%s: corrupt: %s", path, (const char *)sqlite3_column_text(st, 0));
                sqlite3_finalize(st);
                err = WF_ECORRUPT;
                goto fail;
            }
            sqlite3_finalize(st);
            rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
        }
        if (rc != SQLITE_OK) {
            if (message)
                *message = msgf("%s: corrupt: %s", path, sqlite3_errmsg(s->wdb));
            err = map_rc(rc) ? map_rc(rc) : WF_ECORRUPT;
            goto fail;
        }
    }
    {
        sqlite3_stmt **w = &s->w_begin;
        for (size_t i = 0; i < sizeof writer_sql / sizeof *writer_sql; i++) {
            rc = sqlite3_prepare_v3(s->wdb, writer_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &w[i],
                                    NULL);
            if (rc != SQLITE_OK) {
                if (message)
                    *message = msgf("%s: %s", path, sqlite3_errmsg(s->wdb));
                err = map_rc(rc) ? map_rc(rc) : WF_EINTERNAL;
                goto fail;
            }
        }
    }
    /* A reader now: a file whose pages do not hold together fails here rather than later. */
    {
        reader *r;
        if ((err = reader_get(s, &r)) < 0) {
            if (message)
                *message = msgf("%s: %s", path, wf_strerror(err));
            goto fail;
        }
        reader_put(s, r);
    }
    s->last_round_ms = mono_ms();
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        err = WF_ENOMEM;
        goto fail;
    }
    s->writer_started = 1;
    if ((err = wf_store_new(out, &sqlite_ops, s)) < 0)
        return err; /* wf_store_new freed s */
    return 0;
fail:
    s_free(s);
    return err;
}
