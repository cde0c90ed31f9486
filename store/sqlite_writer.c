/*
 * sqlite_writer.c: the SQLite store's queue and its writer thread. Callers
 * queue operations under s->mu (a FIFO; a full queue waits or fails by the
 * store's parameters); the one writer thread owns the write connection,
 * takes the whole queue, executes it in one transaction (a round: a run's
 * appends of the round packed into rows), commits by the commit policy and
 * settles it (tickets durable, callbacks run, synchronous callers woken).
 * Shared fields: the queue, tickets and the run map under s->mu; the write
 * connection and its statements belong to the writer thread alone.
 */
#include "sqlite_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- the queue */

/*
 * Queues op (mu held): waits for room when the queue is full (or fails),
 * gives the ticket, wakes the writer. An op larger than the whole
 * queue is admitted when the queue is empty, so it cannot wait forever.
 */
int wf__sql_enqueue_locked(sstore *s, sop *op)
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
int wf__sql_run_sync(sstore *s, sop *op)
{
    if (pthread_equal(pthread_self(), s->writer))
        return WF_EBUSY;
    op->sync = 1;
    pthread_mutex_lock(&s->mu);
    int rc = wf__sql_enqueue_locked(s, op);
    if (rc == 0) {
        while (!op->finished)
            pthread_cond_wait(&s->cv_done, &s->mu);
        rc = op->rc;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The run this store writes, for an op on it: a ref for the op (mu held). */
int wf__sql_run_for_write(sstore *s, const char *run_id, srun **out)
{
    srun *r = wf__sql_map_find(s, run_id, wf__hash(run_id, strlen(run_id)));
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
/* Fills info from a row of the get_run shape (RUN_COLS). */
void wf__sql_row_info(sqlite3_stmt *st, wf_store_run_info *info, int copy)
{
    if (copy) {
        info->run_id = wf__sql_col_dup(st, 1);
        info->workflow = wf__sql_col_dup(st, 2);
        info->owner = wf__sql_col_dup(st, 3);
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

int wf__sql_info_copied(const wf_store_run_info *info)
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
            *owner = wf__sql_col_dup(st, 2);
            if (*owner == NULL && sqlite3_column_type(st, 2) != SQLITE_NULL)
                out = WF_ENOMEM;
        }
        *lease = sqlite3_column_int64(st, 3);
    } else {
        out = rc == SQLITE_DONE ? WF_ENOTFOUND : wf__sql_map_rc(rc);
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
    int64_t now = wf__sql_now_ms(s);
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
    if ((rc = wf__sql_step_done(st)) < 0)
        return rc;
    st = s->w_next_seq;
    sqlite3_bind_int64(st, 1, rid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        wf_store_run_info *info = op->info;
        wf__sql_row_info(st, info, 1);
        rc = wf__sql_info_copied(info);
        op->seq = info->next_seq;
        op->rid = rid;
    } else {
        rc = rc == SQLITE_DONE ? WF_EINTERNAL : wf__sql_map_rc(rc);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int exec_renew(sstore *s, sop *op)
{
    int64_t now = wf__sql_now_ms(s);
    sqlite3_stmt *st = s->w_renew;
    sqlite3_bind_int64(st, 1, now + s->lease_ms);
    sqlite3_bind_text(st, 2, s->owner, -1, SQLITE_STATIC);
    int rc = wf__sql_step_done(st);
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
            return wf__sql_map_rc(rc);
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
        if ((rc = wf__sql_step_done(s->w_del[i])) < 0)
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
size_t wf__sql_rec_size(uint32_t len)
{
    return 5 + 5 + (size_t)len;
}

static uint8_t *put_be(uint8_t *p, uint32_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

uint8_t *wf__sql_rec_put(uint8_t *p, uint32_t kind, const uint8_t *data, uint32_t len)
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
int wf__sql_rec_get(const uint8_t **p, const uint8_t *end, uint32_t *kind, const uint8_t **data,
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
    wf__sql_bind_blob(st, 4, s->wbuf, len);
    int rc = wf__sql_step_done(st);
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
                sz += wf__sql_rec_size(o->recs[i].len);
            if (n && len + sz > CHUNK_BYTES)
                break;
            int rc = wbuf_room(s, len + sz);
            if (rc < 0)
                return rc;
            uint8_t *p = s->wbuf + len;
            for (uint32_t i = 0; i < o->n; i++)
                p = wf__sql_rec_put(p, o->recs[i].kind, o->recs[i].data, o->recs[i].len);
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
        now = wf__sql_now_ms(s);
        st = s->w_ins_run;
        sqlite3_bind_text(st, 1, r->run_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, op->workflow, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, s->owner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now + s->lease_ms);
        sqlite3_bind_int64(st, 5, now);
        if ((rc = wf__sql_step_done(st)) == 0)
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
        sqlite3_bind_int64(st, 2, wf__sql_now_ms(s));
        sqlite3_bind_int64(st, 3, r->rid);
        return wf__sql_step_done(st);
    case OP_CKPT:
        st = s->w_ckpt;
        sqlite3_bind_int64(st, 1, r->rid);
        sqlite3_bind_int64(st, 2, (int64_t)op->seq);
        wf__sql_bind_blob(st, 3, op->data, op->len);
        sqlite3_bind_int64(st, 4, wf__sql_now_ms(s));
        return wf__sql_step_done(st);
    case OP_RESULT:
        now = wf__sql_now_ms(s);
        st = s->w_result;
        sqlite3_bind_int64(st, 1, r->rid);
        wf__sql_bind_blob(st, 2, op->data, op->len);
        sqlite3_bind_int64(st, 3, now);
        if ((rc = wf__sql_step_done(st)) < 0)
            return rc;
        st = s->w_finish;
        sqlite3_bind_int(st, 1, op->status);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int64(st, 3, r->rid);
        return wf__sql_step_done(st);
    case OP_RELEASE:
        st = s->w_release;
        sqlite3_bind_int64(st, 1, wf__sql_now_ms(s));
        sqlite3_bind_int64(st, 2, r->rid);
        sqlite3_bind_text(st, 3, s->owner, -1, SQLITE_STATIC);
        if ((rc = wf__sql_step_done(st)) < 0)
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
        int rc = wf__sql_step_done(s->w_begin);
        if (rc < 0)
            return rc;
        int redo = 0;
        for (sop *op = batch; op; op = op->next) {
            if (careful && sqlite3_exec(s->wdb, "SAVEPOINT op", NULL, NULL, NULL) != SQLITE_OK) {
                rc = wf__sql_map_rc(sqlite3_errcode(s->wdb));
                break;
            }
            if (!careful && (op->type == OP_CLAIM || op->type == OP_REMOVE) &&
                (rc = flush_appends(s, 1)) < 0) {
                /* they read or delete the journal: the rows gathered so far go in first */
                if (!wf__sql_fatal(rc) && rc != WF_ENOMEM && rc != WF_EBUSY)
                    rc = 0, redo = 1;
                break;
            }
            op->rc = exec_op(s, op, careful);
            if (op->rc < 0 &&
                (wf__sql_fatal(op->rc) || op->rc == WF_ENOMEM || op->rc == WF_EBUSY)) {
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
                    rc = wf__sql_map_rc(sqlite3_errcode(s->wdb));
                    break;
                }
            } else if (op->rc < 0 && op->type != OP_CLAIM && op->type != OP_REMOVE &&
                       op->type != OP_RELEASE) {
                /* claim/remove/release failures change nothing; others may have half-written */
                redo = 1;
                break;
            }
        }
        if (rc == 0 && !redo && (rc = flush_appends(s, 1)) < 0 && !wf__sql_fatal(rc) &&
            rc != WF_ENOMEM && rc != WF_EBUSY) {
            rc = 0; /* one run's rows failed (a lost lease): find out whose, op by op */
            redo = 1;
        }
        flush_appends(s, 0); /* after a break: forget what was gathered */
        if (rc == 0 && !redo)
            rc = wf__sql_step_done(s->w_commit);
        if (rc == 0 && !redo)
            return 0;
        wf__sql_step_done(s->w_rollback);
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
        uint64_t h = wf__hash(op->name, strlen(op->name));
        srun *x = wf__sql_map_find(s, op->name, h);
        /* A run we still write keeps its numbering (appends may be queued); a closed or
         * failed one starts over from what is committed. */
        if (x && (x->closed || x->err)) {
            wf__sql_map_del(s, x);
            wf__sql_srun_unref(x);
            x = NULL;
        }
        if (x == NULL && (x = wf__sql_srun_new(op->name, h)) != NULL) {
            x->next_seq = op->seq;
            if (wf__sql_map_add(s, x) < 0) {
                wf__sql_srun_unref(x);
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
        wf__sql_map_del(s, r);
        wf__sql_srun_unref(r);
    }
}

void *wf__sql_writer_main(void *arg)
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
                int64_t now = wf__sql_mono_ms();
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

        s->last_round_ms = wf__sql_mono_ms();
        int rc = failed ? failed : run_round(s, batch);
        if (rc < 0)
            for (sop *op = batch; op; op = op->next)
                op->rc = rc;

        pthread_mutex_lock(&s->mu);
        if (wf__sql_fatal(rc) && s->failed == 0)
            s->failed = rc;
        uint64_t last = 0;
        for (sop *op = batch; op; op = op->next) {
            last = op->ticket;
            s->queued -= op->bytes;
            settle_runs(s, op);
            if (op->type == OP_RENEW)
                for (size_t i = 0; i < op->nruns; i++)
                    wf__sql_srun_unref(op->runs[i]);
            wf__sql_srun_unref(op->run);
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
        if (s->head == NULL && wf__alloc_idle()) {
            /* asked to give memory back (idle runs left memory): the page cache too */
            pthread_mutex_unlock(&s->mu);
            sqlite3_db_release_memory(s->wdb);
            pthread_mutex_lock(&s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}
