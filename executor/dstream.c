/*
 * dstream.c: the durable stream of a durable run (include/wf/durable.h,
 * docs/DURABILITY.md "The durable stream").
 *
 * Writer: every event a durable run with a store streams (wf__stream_push
 * calls wf__durable_stream) is appended to the run's journal as a
 * WF_STORE_REC_EVENT record: a big-endian u64, the event's number in the
 * run's stream (0, 1, 2, ...), then the event as wf_event_to_msgpack writes
 * it. A run's records are buffered in its record (drun->sbuf) and
 * appended 64 at a time, or at the checkpoint thread's next pass, or
 * before the run's result or release: one store operation for many.
 * Numbers are written and records appended under drun->sm, and a number
 * is spent only when its append was queued, so a run's stream records are
 * in number order in its journal, and since a run's committed journal is a
 * gap-free prefix of what was queued, so are the committed numbers. A run continued from the store (recovery, a released
 * run loaded again) counts its committed stream records before its first
 * new one (lazily: most waiting runs never stream again), so its numbers go
 * on where the committed ones stop: steps that run again after a crash
 * stream again under new numbers, never a number twice.
 *
 * Reader (wf_durable_stream): reads committed records only, through the
 * store's read_journal (every backend has it), from a journal position
 * found by a binary search over the journal (the numbers grow with the
 * position); after the last record of a finished run it gives the run's
 * result as the terminal event. While the run goes on it polls the store.
 * One reader is one consumer's object: no locks.
 */
#include "durable_impl.h"

#include <string.h>
#include <time.h>

static void put_be64(unsigned char *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | b[i];
    return v;
}

/* --------------------------------------------------------- counting */

typedef struct last_ev {
    uint64_t num;
    int found;
    int bad;
} last_ev;

static int each_last(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    (void)seq;
    last_ev *l = user;
    if (kind != WF_STORE_REC_EVENT)
        return 0;
    if (len < 8) {
        l->bad = 1;
        return 1;
    }
    l->num = get_be64(data);
    l->found = 1;
    return 0;
}

int wf__stream_count(wf_store *store, const char *run_id, uint64_t next_seq, uint64_t *count)
{
    /* backwards in growing windows: the last stream record is usually near the end */
    uint64_t end = next_seq, w = 64;
    for (;;) {
        uint64_t from = end > w ? end - w : 0;
        last_ev l = {0};
        int rc = end > from ? wf_store_read_journal(store, run_id, from, (uint32_t)(end - from),
                                                    each_last, &l, NULL)
                            : 0;
        if (rc < 0)
            return rc;
        if (l.bad)
            return wf__set_error(WF_ECORRUPT, "durable run '%s': a stream record too short",
                                 run_id);
        if (l.found) {
            *count = l.num + 1;
            return 0;
        }
        if (from == 0) {
            *count = 0;
            return 0;
        }
        end = from;
        w = w < (1u << 20) ? w * 4 : w;
    }
}

/* ------------------------------------------------------------ writing */

/*
 * Buffered records go to the store as one append of up to 64 (one queued
 * operation for many: the writer's work is per operation). Numbers are
 * written at the append, and spent only if it was queued: no gap.
 */
static int flush_locked(wf__drun *d)
{
    if (d->sn == 0)
        return 0;
    int rc = 0;
    if (!d->sknown) {
        wf_store_run_info info = {0};
        rc = wf_store_get_run(d->store, d->run_id, &info);
        if (rc == 0)
            rc = wf__stream_count(d->store, d->run_id, info.next_seq, &d->sseq);
        wf_store_run_info_clear(&info);
        d->sknown = rc == 0;
    }
    if (rc == 0) {
        wf_store_rec recs[64];
        for (uint32_t i = 0; i < d->sn; i++) {
            size_t end = i + 1 < d->sn ? d->soff[i + 1] : d->slen;
            put_be64(d->sbuf + d->soff[i], d->sseq + i);
            recs[i] = (wf_store_rec){WF_STORE_REC_EVENT, d->sbuf + d->soff[i], end - d->soff[i]};
        }
        rc = wf_store_append(d->store, d->run_id, recs, d->sn, NULL, NULL, NULL, NULL);
        if (rc == 0)
            d->sseq += d->sn;
    }
    d->sn = 0;
    d->slen = 0;
    return rc;
}

static void flush_log(wf__drun *d, int rc)
{
    /* WF_ESTATE: the run's result is queued (it ended), or it was released */
    if (rc < 0 && rc != WF_ESTATE)
        wf__log(d->ex, WF_LOG_ERROR, "durable run '%s': streamed events not journaled: %s",
                d->run_id, wf_err_name(rc));
}

void wf__stream_flush(wf__drun *d)
{
    if (d == NULL || d->store == NULL)
        return;
    pthread_mutex_lock(&d->sm);
    int rc = flush_locked(d);
    pthread_mutex_unlock(&d->sm);
    flush_log(d, rc);
}

void wf__durable_stream(wf__run *run, const wf_event *ev)
{
    wf__drun *d = run->dur;
    if (d->store == NULL)
        return;
    void *eb = NULL;
    size_t el = 0;
    int rc = wf_event_to_msgpack(ev, &eb, &el);
    if (rc < 0) {
        flush_log(d, rc == WF_ESTATE ? WF_EINTERNAL : rc);
        return;
    }
    pthread_mutex_lock(&d->sm);
    if (d->soff == NULL && (d->soff = wf__malloc(64 * sizeof *d->soff)) == NULL) {
        pthread_mutex_unlock(&d->sm);
        wf_free(eb);
        flush_log(d, WF_ENOMEM);
        return;
    }
    if (d->slen + 8 + el > d->scap) {
        size_t nc = d->scap ? d->scap : 4096;
        while (nc < d->slen + 8 + el)
            nc *= 2;
        unsigned char *nb = wf__realloc(d->sbuf, nc);
        if (nb == NULL) {
            pthread_mutex_unlock(&d->sm);
            wf_free(eb);
            flush_log(d, WF_ENOMEM);
            return;
        }
        d->sbuf = nb;
        d->scap = nc;
    }
    d->soff[d->sn++] = (uint32_t)d->slen;
    memset(d->sbuf + d->slen, 0, 8);
    memcpy(d->sbuf + d->slen + 8, eb, el);
    d->slen += 8 + el;
    rc = 0;
    if (d->sn == 64 || d->slen >= 65536)
        rc = flush_locked(d);
    pthread_mutex_unlock(&d->sm);
    wf_free(eb);
    flush_log(d, rc);
}

/* ------------------------------------------------------------ reading */

#define BATCH 256

struct wf_durable_stream {
    wf_store *store; /* borrowed: the executor's */
    wf_workflow *wf; /* a reference: its registry decodes the events */
    char *run_id;
    uint64_t pos;  /* the journal position to read from next */
    uint64_t next; /* the number of the next event to give */
    wf_event *buf[BATCH];
    uint64_t bnum[BATCH];
    size_t bhead, bn;
    int closed; /* the terminal event was given (or the run ended without one) */
    int past;   /* opened after the terminal event: closed at the end */
    int rc;     /* a decode error while filling */
    char *msg;
};

static int each_fill(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    (void)seq;
    wf_durable_stream *s = user;
    if (kind != WF_STORE_REC_EVENT)
        return 0;
    if (len < 8) {
        s->rc = WF_ECORRUPT;
        return 1;
    }
    uint64_t num = get_be64(data);
    uint64_t want = s->next + s->bn;
    if (num < want)
        return 0; /* before the cursor */
    if (num > want) {
        s->rc = WF_ECORRUPT; /* a gap: the file was changed behind the store */
        return 1;
    }
    wf_event *ev = NULL;
    size_t used;
    char *m = NULL;
    int rc = wf_event_from_msgpack(s->wf->reg, (const unsigned char *)data + 8, len - 8, &ev,
                                   &used, &m);
    if (rc < 0) {
        s->rc = rc;
        wf__free_mem(s->msg);
        s->msg = m;
        return 1;
    }
    wf_free(m);
    s->buf[s->bn] = ev;
    s->bnum[s->bn] = num;
    s->bn++;
    return s->bn == BATCH;
}

/* Reads what is committed from s->pos into the buffer (empty on entry). */
static int refill(wf_durable_stream *s)
{
    s->bhead = 0;
    s->bn = 0;
    s->rc = 0;
    uint64_t from = s->pos, last = s->pos;
    /* the record that filled the buffer stops the scan: next time, from the one after it */
    int rc = wf_store_read_journal(s->store, s->run_id, from, 0, each_fill, s, &last);
    if (rc == 0 && s->rc < 0)
        rc = s->rc;
    if (rc < 0) {
        for (size_t i = 0; i < s->bn; i++)
            wf_event_release(s->buf[i]);
        s->bn = 0;
        return wf__set_error(rc, "durable stream of '%s': %s", s->run_id,
                             s->msg ? s->msg : wf_err_name(rc));
    }
    s->pos = last;
    return 0;
}

/* The first stream record at or after pos: its number (UINT64_MAX: none) and position. */
typedef struct probe {
    uint64_t num, at;
    int bad;
} probe;

static int each_probe(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    probe *p = user;
    if (kind != WF_STORE_REC_EVENT)
        return 0;
    if (len < 8) {
        p->bad = 1;
        return 1;
    }
    p->num = get_be64(data);
    p->at = seq;
    return 1;
}

/* The smallest journal position from which the first stream record is numbered >= cursor. */
static int find_pos(wf_durable_stream *s, uint64_t cursor, uint64_t next_seq, uint64_t *pos)
{
    uint64_t lo = 0, hi = next_seq;
    while (cursor > 0 && lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        probe p = {UINT64_MAX, 0, 0};
        int rc = wf_store_read_journal(s->store, s->run_id, mid, 0, each_probe, &p, NULL);
        if (rc < 0)
            return rc;
        if (p.bad)
            return WF_ECORRUPT;
        if (p.num >= cursor)
            hi = mid;
        else
            lo = p.at + 1;
    }
    *pos = cursor > 0 ? lo : 0;
    return 0;
}

void wf_durable_stream_free(wf_durable_stream *s)
{
    if (s == NULL)
        return;
    for (size_t i = s->bhead; i < s->bn; i++)
        wf_event_release(s->buf[i]);
    wf_workflow_free(s->wf);
    wf__free_mem(s->run_id);
    wf__free_mem(s->msg);
    wf__free_mem(s);
}

int wf_durable_stream_open(wf_executor *ex, wf_workflow *wf, const char *run_id, uint64_t cursor,
                           wf_durable_stream **out)
{
    if (out)
        *out = NULL;
    size_t idlen = run_id ? strlen(run_id) : 0;
    if (ex == NULL || wf == NULL || out == NULL || idlen == 0 || idlen > 1024)
        return wf__set_error(WF_EINVAL, "wf_durable_stream_open: NULL argument or bad run id");
    wf__durable *du = wf__durable_of(ex);
    if (du == NULL)
        return wf__set_error(WF_ESTATE, "wf_durable_stream_open: the executor has no store");
    wf_store_run_info info = {0};
    int rc = wf_store_get_run(du->store, run_id, &info);
    if (rc == WF_ENOTFOUND && wf__drun_listed(run_id)) {
        /* a run of this process whose creation is queued, not committed yet */
        rc = wf_store_flush(du->store);
        if (rc == 0)
            rc = wf_store_get_run(du->store, run_id, &info);
    }
    uint64_t next_seq = info.next_seq;
    wf_store_run_info_clear(&info);
    if (rc == WF_ENOTFOUND)
        return wf__set_error(WF_ENOTFOUND, "no durable run '%s' in the store", run_id);
    if (rc < 0)
        return rc;
    uint64_t count = 0;
    rc = wf__stream_count(du->store, run_id, next_seq, &count);
    if (rc < 0)
        return rc;
    int32_t st;
    void *data = NULL;
    size_t len = 0;
    int fin = wf_store_get_result(du->store, run_id, &st, &data, &len);
    wf_free(data);
    if (fin < 0 && fin != WF_EAGAIN)
        return fin;
    /* a finished run's stream holds its result too, numbered count */
    uint64_t end = count + (fin == 0 && len > 0);
    if (cursor > end)
        return wf__set_error(WF_ERANGE,
                             "durable stream of '%s': cursor %llu is past its end (%llu events "
                             "committed%s)",
                             run_id, (unsigned long long)cursor, (unsigned long long)end,
                             fin == 0 ? ", finished" : "");
    wf_durable_stream *s = wf__calloc(1, sizeof *s);
    if (s == NULL || (s->run_id = wf__strdup(run_id)) == NULL) {
        wf__free_mem(s);
        return WF_ENOMEM;
    }
    s->store = du->store;
    s->wf = wf_workflow_retain(wf);
    s->next = cursor;
    s->past = cursor > count;
    rc = cursor >= count ? (s->pos = next_seq, 0) : find_pos(s, cursor, next_seq, &s->pos);
    if (rc < 0) {
        wf_durable_stream_free(s);
        return wf__set_error(rc, "durable stream of '%s': %s", run_id, wf_err_name(rc));
    }
    *out = s;
    return 0;
}

static void nap(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    nanosleep(&ts, NULL);
}

int wf_durable_stream_next(wf_durable_stream *s, int64_t timeout_ms, wf_event **ev, uint64_t *seq)
{
    if (ev)
        *ev = NULL;
    if (s == NULL || ev == NULL)
        return WF_EINVAL;
    int64_t deadline = timeout_ms < 0 ? -1 : wf__now_ns() + timeout_ms * 1000000;
    int64_t pause = 1000000; /* polling the store: 1 ms, growing to 20 ms */
    for (;;) {
        if (s->bhead < s->bn) {
            *ev = s->buf[s->bhead];
            if (seq)
                *seq = s->bnum[s->bhead];
            s->bhead++;
            s->next++;
            return 0;
        }
        if (s->closed)
            return WF_ECLOSED;
        int rc = refill(s);
        if (rc < 0)
            return rc;
        if (s->bn)
            continue;
        int32_t st;
        void *data = NULL;
        size_t len = 0;
        rc = wf_store_get_result(s->store, s->run_id, &st, &data, &len);
        if (rc == 0) {
            /* finished: everything streamed before the result is committed with it */
            rc = refill(s);
            if (rc == 0 && s->bn == 0) {
                s->closed = 1;
                if (len && !s->past) {
                    size_t used;
                    rc = wf_event_from_msgpack(s->wf->reg, data, len, ev, &used, NULL);
                    if (rc == 0 && seq)
                        *seq = s->next;
                    if (rc == 0)
                        s->next++;
                }
                wf_free(data);
                return rc < 0 ? rc : (*ev ? 0 : WF_ECLOSED);
            }
            wf_free(data);
            if (rc < 0)
                return rc;
            continue;
        }
        if (rc != WF_EAGAIN)
            return rc;
        int64_t now = wf__now_ns();
        if (deadline >= 0 && now >= deadline)
            return WF_ETIMEDOUT;
        int64_t p = deadline >= 0 && deadline - now < pause ? deadline - now : pause;
        nap(p);
        pause = pause < 20000000 ? pause * 2 : pause;
    }
}

uint64_t wf_durable_stream_cursor(const wf_durable_stream *s)
{
    return s ? s->next : 0;
}
