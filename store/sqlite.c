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
#include "sqlite_impl.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

int64_t wf__sql_mono_ms(void)
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

int64_t wf__sql_now_ms(const sstore *s)
{
    return s->p.clock(s->p.clock_user);
}

/* SQLite's primary result codes onto wf's. */
int wf__sql_map_rc(int rc)
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
int wf__sql_fatal(int rc)
{
    return rc == WF_EIO || rc == WF_ECORRUPT || rc == WF_EFORMAT || rc == WF_EINTERNAL;
}

int wf__sql_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t len)
{
    /* A NULL pointer would bind SQL NULL; the columns are NOT NULL blobs. */
    return len ? sqlite3_bind_blob64(st, i, p, len, SQLITE_STATIC)
               : sqlite3_bind_zeroblob(st, i, 0);
}

/* Runs a statement that returns no rows, resets it. */
int wf__sql_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : wf__sql_map_rc(rc);
}

char *wf__sql_col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? wf__strdup((const char *)t) : NULL;
}

/* ------------------------------------------------------------- run map */

/* mu held. */
srun *wf__sql_map_find(sstore *s, const char *run_id, uint64_t h)
{
    if (s->nbuckets == 0)
        return NULL;
    for (srun *r = s->buckets[h & (s->nbuckets - 1)]; r; r = r->next)
        if (r->hash == h && strcmp(r->run_id, run_id) == 0)
            return r;
    return NULL;
}

/* The map's buckets become nb (mu held; 0: none): grown when full, shrunk when an eighth full. */
static int map_resize(sstore *s, size_t nb)
{
    srun **b = NULL;
    if (nb) {
        b = wf__calloc(nb, sizeof *b);
        if (b == NULL)
            return WF_ENOMEM;
    }
    for (size_t i = 0; i < s->nbuckets; i++)
        for (srun *x = s->buckets[i], *nx; x; x = nx) {
            nx = x->next;
            x->next = b[x->hash & (nb - 1)];
            b[x->hash & (nb - 1)] = x;
        }
    wf__free_mem(s->buckets);
    s->buckets = b;
    s->nbuckets = nb;
    return 0;
}

/* mu held. */
int wf__sql_map_add(sstore *s, srun *r)
{
    if (s->nruns + 1 > s->nbuckets && map_resize(s, s->nbuckets ? s->nbuckets * 2 : 64) < 0)
        return WF_ENOMEM;
    srun **slot = &s->buckets[r->hash & (s->nbuckets - 1)];
    r->next = *slot;
    *slot = r;
    s->nruns++;
    return 0;
}

/* mu held. */
void wf__sql_map_del(sstore *s, srun *r)
{
    if (s->nbuckets == 0)
        return;
    for (srun **pp = &s->buckets[r->hash & (s->nbuckets - 1)]; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            s->nruns--;
            if (s->nruns == 0)
                (void)map_resize(s, 0);
            else if (s->nbuckets > 64 && s->nruns < s->nbuckets / 8)
                (void)map_resize(s, s->nbuckets / 4); /* nothing if no memory */
            return;
        }
}

srun *wf__sql_srun_new(const char *run_id, uint64_t h)
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
void wf__sql_srun_unref(srun *r)
{
    if (r && --r->refs == 0) {
        wf__free_mem(r->run_id);
        wf__free_mem(r);
    }
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
    uint64_t h = wf__hash(run_id, strlen(run_id));
    pthread_mutex_lock(&s->mu);
    int rc = wf__sql_map_find(s, run_id, h) ? WF_EEXIST : 0;
    pthread_mutex_unlock(&s->mu);
    if (rc == 0) {
        /* Committed runs: a read outside the lock (a run committed meanwhile fails at commit). */
        rc = wf__sqlite_get_run(self, run_id, NULL);
        rc = rc == 0 ? WF_EEXIST : rc == WF_ENOTFOUND ? 0 : rc;
    }
    srun *r = NULL;
    if (rc == 0) {
        pthread_mutex_lock(&s->mu);
        if (wf__sql_map_find(s, run_id, h))
            rc = WF_EEXIST;
        else if ((r = wf__sql_srun_new(run_id, h)) == NULL)
            rc = WF_ENOMEM;
        else if ((rc = wf__sql_map_add(s, r)) < 0)
            wf__sql_srun_unref(r);
        if (rc == 0) {
            r->refs++;
            op->run = r;
            rc = wf__sql_enqueue_locked(s, op);
            if (rc < 0) {
                wf__sql_map_del(s, r);
                r->refs = 1;
                wf__sql_srun_unref(r);
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
    int rc = wf__sql_run_for_write(s, run_id, &op->run);
    if (rc == 0) {
        rc = wf__sql_enqueue_locked(s, op);
        if (rc == 0) {
            /* Numbered in the critical section that queues them: queue order is seq order. */
            op->seq = op->run->next_seq;
            op->run->next_seq += n;
            if (first_seq)
                *first_seq = op->seq;
            if (ticket)
                *ticket = op->ticket;
        } else {
            wf__sql_srun_unref(op->run);
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
    int rc = wf__sql_run_for_write(s, run_id, &op->run);
    if (rc == 0) {
        op->seq = op->run->next_seq;
        rc = wf__sql_enqueue_locked(s, op);
        if (rc == 0) {
            if (seq)
                *seq = op->seq; /* not after the unlock: the writer may have freed op */
            if (close)
                op->run->closed = 1;
            if (ticket)
                *ticket = op->ticket;
        } else {
            wf__sql_srun_unref(op->run);
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
    int rc = wf__sql_run_sync(self, &op);
    if (rc < 0 || info == NULL)
        wf_store_run_info_clear(op.info);
    return rc;
}

static int s_release_queued(void *self, const char *run_id, wf_store_done_fn done, void *user,
                            uint64_t *ticket)
{
    sop *op = blob_op(OP_RELEASE, NULL, 0, done, user);
    if (op == NULL)
        return WF_ENOMEM;
    int rc = queue_run_op(self, run_id, op, 1, NULL, ticket);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int s_release(void *self, const char *run_id)
{
    sstore *s = self;
    sop op = {.type = OP_RELEASE, .sync = 1};
    pthread_mutex_lock(&s->mu);
    int rc = wf__sql_run_for_write(s, run_id, &op.run);
    if (rc == 0) {
        rc = wf__sql_enqueue_locked(s, &op);
        if (rc == 0) {
            op.run->closed = 1;
            while (!op.finished)
                pthread_cond_wait(&s->cv_done, &s->mu);
            rc = op.rc;
        } else {
            wf__sql_srun_unref(op.run);
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
    int rc = wf__sql_run_sync(s, &op);
    if (rc < 0 && op.finished == 0) {
        /* never queued: the writer did not take the refs */
        pthread_mutex_lock(&s->mu);
        for (size_t i = 0; i < op.nruns; i++)
            wf__sql_srun_unref(op.runs[i]);
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
    int rc = wf__sql_run_sync(s, &op);
    if (rc == 0) {
        pthread_mutex_lock(&s->mu);
        srun *r = wf__sql_map_find(s, run_id, wf__hash(run_id, strlen(run_id)));
        if (r) {
            r->closed = 1;
            r->err = WF_ENOTFOUND;
            wf__sql_map_del(s, r);
            wf__sql_srun_unref(r);
        }
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}

static int s_flush(void *self)
{
    sop op = {.type = OP_FLUSH};
    return wf__sql_run_sync(self, &op);
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
    if (r) {
        s->readers = r->next;
        s->nreaders--;
    }
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
    /* a small page cache per reader: the OS caches the file; the readers' caches add up */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(r->db, "PRAGMA cache_size = -" WF__STR(READER_CACHE_KIB), NULL, NULL,
                          NULL);
    sqlite3_stmt **sts[] = {&r->get_run, &r->list, &r->ckpt, &r->result, &r->rid, &r->journal};
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof sts / sizeof *sts; i++)
        rc = sqlite3_prepare_v3(r->db, reader_sql[i], -1, SQLITE_PREPARE_PERSISTENT, sts[i], NULL);
    if (rc != SQLITE_OK) {
        int err = wf__sql_map_rc(rc);
        reader_close(r);
        return err ? err : WF_EINTERNAL;
    }
    *out = r;
    return 0;
}

/*
 * At most READERS_IDLE connections stay open between reads (64: recovery
 * and idle-release loads read from 64 threads at once; with 16 kept,
 * recovering 5,000 runs took 2.2 s instead of 1.1-1.6 s, the others being
 * opened and closed per read). Each keeps a page cache of at most
 * READER_CACHE_KIB (SQLite's default is 2 MiB: 64 of them grew with the
 * database to 128 MiB) and its statements; the OS caches the file itself.
 */
static void reader_put(sstore *s, reader *r)
{
    pthread_mutex_lock(&s->rmu);
    int keep = s->nreaders < READERS_IDLE;
    if (keep) {
        r->next = s->readers;
        s->readers = r;
        s->nreaders++;
    }
    pthread_mutex_unlock(&s->rmu);
    if (!keep)
        reader_close(r);
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
            wf__sql_row_info(st, info, 1);
            rc = wf__sql_info_copied(info);
            if (rc < 0)
                wf_store_run_info_clear(info);
        }
    } else {
        rc = sr == SQLITE_DONE ? WF_ENOTFOUND : wf__sql_map_rc(sr);
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
        rc = sr == SQLITE_DONE ? WF_ENOTFOUND : wf__sql_map_rc(sr);
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
        rc = sr == SQLITE_DONE ? WF_ENOTFOUND : wf__sql_map_rc(sr);
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
        return sr == SQLITE_DONE ? WF_ENOTFOUND : wf__sql_map_rc(sr);
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
            if ((rc = wf__sql_rec_get(&p, end, &kind, &data, &len)) < 0)
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
        rc = wf__sql_map_rc(sr);
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
        wf__sql_row_info(st, &info, 0);
        last = sqlite3_column_int64(st, 0);
        count++;
        if (fn(&info, user)) {
            stopped = 1;
            break;
        }
    }
    if (!stopped && sr != SQLITE_DONE)
        rc = wf__sql_map_rc(sr);
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
    uint8_t *buf = sqlite3_malloc64(wf__sql_rec_size((uint32_t)len));
    if (buf == NULL) {
        sqlite3_result_error_nomem(cx);
        return;
    }
    uint8_t *end = wf__sql_rec_put(buf, (uint32_t)kind, data, (uint32_t)len);
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
    /*
     * The three reads in one read transaction: read one by one, a process
     * creating the file meanwhile could commit between them (application_id
     * still 0, tables there: refused as another program's file).
     */
    int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "PRAGMA user_version", &ver);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        if (message)
            *message = msgf("%s: %s", s->path, sqlite3_errmsg(db));
        if (!sqlite3_get_autocommit(db))
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return wf__sql_map_rc(rc) ? wf__sql_map_rc(rc) : WF_EINTERNAL;
    }
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
            return wf__sql_map_rc(rc) ? wf__sql_map_rc(rc) : WF_EINTERNAL;
        }
        sqlite3_create_function(db, "wf_rec1", 2, SQLITE_UTF8, NULL, NULL, NULL, NULL);
    }
    return 0;
sqlfail:
    if (message)
        *message = msgf("%s: %s", s->path, sqlite3_errmsg(db));
    return wf__sql_map_rc(rc) ? wf__sql_map_rc(rc) : WF_EINTERNAL;
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
            wf__sql_srun_unref(r);
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
    .release_queued = s_release_queued,
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
        err = wf__sql_map_rc(rc) ? wf__sql_map_rc(rc) : WF_EIO;
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
        /*
         * Switching a new file to WAL takes an exclusive lock, and SQLite
         * reports SQLITE_BUSY at once (no busy handler) while another
         * process opening the same new file holds one: try again for up to
         * the busy timeout.
         */
        for (int64_t waited = 0;; waited += 5) {
            rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode = WAL", -1, &st, NULL);
            if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
                rc = mode && strcmp((const char *)mode, "wal") == 0 ? SQLITE_OK
                     : rc == SQLITE_ROW                             ? SQLITE_CANTOPEN
                                                                    : rc;
                sqlite3_finalize(st);
            }
            if (rc != SQLITE_BUSY || waited >= (int64_t)s->p.busy_timeout_ms)
                break;
            struct timespec ts = {0, 5 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(s->wdb, sync, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            if (message)
                *message = msgf("%s: cannot use WAL mode: %s", path, sqlite3_errmsg(s->wdb));
            err = wf__sql_map_rc(rc) ? wf__sql_map_rc(rc) : WF_EIO;
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
            err = wf__sql_map_rc(rc) ? wf__sql_map_rc(rc) : WF_ECORRUPT;
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
                err = wf__sql_map_rc(rc) ? wf__sql_map_rc(rc) : WF_EINTERNAL;
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
    s->last_round_ms = wf__sql_mono_ms();
    if (pthread_create(&s->writer, NULL, wf__sql_writer_main, s) != 0) {
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
