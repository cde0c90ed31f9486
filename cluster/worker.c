/*
 * worker.c: the worker side of wf_cluster: runner threads pull submissions
 * from the work queue (each its own pull subscription on the shared
 * durable consumer), claim each run in the store, run it on the executor,
 * journal its streamed events, checkpoint it when it goes idle waiting for
 * an outside event, deliver the inputs sent to it, put its result durably
 * and only then ack the submission. A renewer thread extends the store's
 * leases every third of a lease. A runner owns its run and message alone;
 * shared state is the cluster's (see cluster_impl.h).
 */
#include "cluster_impl.h"
#include "engine.h" /* wf__run_idle: a wf_handler is its run */

#include <msgpack.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct sub_msg {
    char run_id[WF__STORE_ID_MAX + 1];
    const cwf *w;
    const char *wname; /* borrowed from the message */
    size_t wname_len;
    uint64_t fp;
    const char *start; /* borrowed from the message */
    size_t start_len;
    int slow; /* v1 with the slow flag: handed over by a puller, straight to the slow path */
} sub_msg;

/* One submission [run_id, workflow, fingerprint, start event] at a: 0, WF_EFORMAT,
 * WF_ENOTFOUND (workflow unknown here). */
static int decode_entry(wf_cluster *c, const msgpack_object *a, sub_msg *out)
{
    if (a[0].type != MSGPACK_OBJECT_STR || a[0].via.str.size == 0 ||
        a[0].via.str.size > WF__STORE_ID_MAX || memchr(a[0].via.str.ptr, 0, a[0].via.str.size) ||
        a[1].type != MSGPACK_OBJECT_STR || a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        a[3].type != MSGPACK_OBJECT_BIN)
        return WF_EFORMAT;
    memcpy(out->run_id, a[0].via.str.ptr, a[0].via.str.size);
    out->run_id[a[0].via.str.size] = 0;
    out->wname = a[1].via.str.ptr;
    out->wname_len = a[1].via.str.size;
    out->fp = a[2].via.u64;
    out->start = a[3].via.bin.ptr;
    out->start_len = a[3].via.bin.size;
    out->slow = 0;
    out->w = wf__cluster_find_wf(c, a[1].via.str.ptr, a[1].via.str.size);
    return out->w ? 0 : WF_ENOTFOUND;
}

/* Unpacks a submission message into u: 1 (one run: [1, run_id, workflow, fingerprint, start
 * event(, slow flag)]), 2 (a batch: [2, [[run_id, workflow, fingerprint, start event], ...]],
 * *batch = its entries), or WF_EFORMAT. */
static int unpack_message(natsMsg *m, msgpack_unpacked *u, const msgpack_object **batch)
{
    size_t off = 0;
    const char *data = natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    if (data == NULL || len <= 0 ||
        msgpack_unpack_next(u, data, (size_t)len, &off) != MSGPACK_UNPACK_SUCCESS)
        return WF_EFORMAT;
    const msgpack_object *o = &u->data;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 2 ||
        o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return WF_EFORMAT;
    const msgpack_object *a = o->via.array.ptr;
    if (a[0].via.u64 == 1 && (o->via.array.size == 5 || o->via.array.size == 6))
        return 1;
    if (a[0].via.u64 == 2 && o->via.array.size == 2 && a[1].type == MSGPACK_OBJECT_ARRAY) {
        *batch = &a[1];
        return 2;
    }
    return WF_EFORMAT;
}

/* Decodes a one-run submission: 0, or WF_EFORMAT (malformed, or a batch), WF_ENOTFOUND
 * (workflow unknown here). */
static int decode_submission(wf_cluster *c, natsMsg *m, sub_msg *out, msgpack_unpacked *u)
{
    const msgpack_object *batch = NULL;
    if (unpack_message(m, u, &batch) != 1)
        return WF_EFORMAT;
    const msgpack_object *o = &u->data;
    int slow = o->via.array.size == 6 && o->via.array.ptr[5].type == MSGPACK_OBJECT_BOOLEAN &&
               o->via.array.ptr[5].via.boolean;
    int rc = decode_entry(c, o->via.array.ptr + 1, out);
    out->slow = slow;
    return rc;
}

typedef struct settled {
    atomic_int rc;
} settled;

static void on_settled(int rc, uint64_t ticket, void *user)
{
    (void)ticket;
    atomic_store(&((settled *)user)->rc, rc);
}

/* Pushes one run's end (run id, status, record) to the submitters: a batch of one. */
static void push_result(wf_cluster *c, const char *run_id, int32_t status, const void *rec,
                        size_t len)
{
    msgpack_sbuffer pb;
    msgpack_sbuffer_init(&pb);
    msgpack_packer pp;
    msgpack_packer_init(&pp, &pb, msgpack_sbuffer_write);
    msgpack_pack_array(&pp, 1);
    msgpack_pack_array(&pp, 3);
    msgpack_pack_str_with_body(&pp, run_id, strlen(run_id));
    msgpack_pack_uint32(&pp, (uint32_t)status);
    msgpack_pack_bin_with_body(&pp, rec, len);
    wf__cluster_push_results(c, pb.data, pb.size);
    msgpack_sbuffer_destroy(&pb);
}

/* Puts the result durably: 0 once it is, or the write's error. */
static int put_result(wf_cluster *c, const char *run_id, int32_t status, const char *message,
                      const void *stop, size_t stop_len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    if (message)
        msgpack_pack_str_with_body(&pk, message, strlen(message));
    else
        msgpack_pack_nil(&pk);
    if (stop)
        msgpack_pack_bin_with_body(&pk, stop, stop_len);
    else
        msgpack_pack_nil(&pk);
    settled s = {0};
    uint64_t ticket = 0;
    size_t rec_len = sb.size;
    void *rec = wf__malloc(rec_len ? rec_len : 1);
    if (rec == NULL) {
        msgpack_sbuffer_destroy(&sb);
        return WF_ENOMEM;
    }
    memcpy(rec, sb.data, rec_len);
    int rc = wf_store_put_result(c->store, run_id, status, sb.data, sb.size, on_settled, &s,
                                 &ticket);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0)
        rc = wf_store_wait(c->store, ticket);
    if (rc == 0)
        rc = atomic_load(&s.rc);
    if (rc == 0) {
        /* pushed to the submitters (at most once: their wait also reads the store) */
        push_result(c, run_id, status, rec, rec_len);
    }
    wf__free_mem(rec);
    return rc;
}

/* Pushes the stored result of an ended run to the submitters again (best effort). */
static void push_stored_result(wf_cluster *c, const char *run_id)
{
    int32_t status = 0;
    void *rec = NULL;
    size_t len = 0;
    if (wf_store_get_result(c->store, run_id, &status, &rec, &len) != 0)
        return;
    push_result(c, run_id, status, rec, len);
    wf_free(rec);
}

/*
 * Takes run_id for this process: creates its record on first delivery (the
 * create leases it to us: no claim needed), else claims it.
 */
static int claim_run(wf_cluster *c, const sub_msg *sm, wf_store_run_info *info)
{
    uint64_t ticket = 0;
    int rc = wf_store_create(c->store, sm->run_id, sm->w->name, &ticket);
    if (rc == 0) {
        rc = wf_store_wait(c->store, ticket);
        /* a failed create (another worker created it meanwhile) leaves its error on the run */
        if (rc == 0)
            rc = wf_store_set_status(c->store, sm->run_id, WF_STORE_RUNNING, NULL);
        if (rc == 0) {
            memset(info, 0, sizeof *info);
            return 0;
        }
    }
    if (rc == WF_EEXIST || rc == WF_ENOTFOUND || rc == WF_ESTATE)
        rc = wf_store_claim(c->store, sm->run_id, info);
    return rc;
}

/*
 * Fences (wf_run_params.fence_ns): a run here starts no step past the time its lease is sure to
 * hold until, measured from the moment before the lease was written: the lease's length less
 * an eighth, the clock difference between hosts that the leases tolerate (docs/CLUSTER.md).
 * So a process that stalled past its lease runs nothing of a run another worker may have taken
 * over, even before its next lease write tells it so.
 */
static int64_t fence_from(const wf_cluster *c, int64_t t0_ns)
{
    return t0_ns + ((int64_t)c->p.lease_ms - (int64_t)c->p.lease_ms / 8) * 1000000;
}

/* 1: the run ended because its fence passed (its lease may be another's: write nothing). */
static int fenced(const wf_handler *h)
{
    int code = 0;
    return wf_handler_status(h) == WF_RUN_CANCELLED && wf_handler_error(h, &code, NULL, NULL) == 0 &&
           code == WF_ELEASE;
}

typedef struct active {
    wf_cluster *c;
    natsMsg *msg;
    const sub_msg *sm;
    wf_handler *h;
    char key[NATS_KEY_MAX];
    char in_subj[NATS_KEY_MAX + 96];
    uint64_t in_cursor; /* stream sequence of the last input delivered */
    int idle;           /* the run waits for an outside event */
    int lost;           /* a store write failed (lease lost): give the run up */
    int kept;           /* parked: its message is the parked table's now */
    int64_t fence;      /* the run's fence as last set (wf_handler_fence) */
} active;

/* Delivers the inputs sent since in_cursor: cancels always, events only while idle. */
static void poll_inputs(active *a)
{
    wf_cluster *c = a->c;
    for (int n = 0; n < 64; n++) {
        jsDirectGetMsgOptions o;
        jsDirectGetMsgOptions_Init(&o);
        o.Sequence = a->in_cursor + 1;
        o.NextBySubject = a->in_subj;
        natsMsg *m = NULL;
        if (js_DirectGetMsg(&m, c->js, c->stream_io, NULL, &o) != NATS_OK)
            return;
        const char *sq = NULL;
        uint64_t sseq = natsMsgHeader_Get(m, "Nats-Sequence", &sq) == NATS_OK && sq
                            ? strtoull(sq, NULL, 10)
                            : 0;
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        int kind = -1;
        const char *ev = NULL;
        size_t evlen = 0;
        if (natsMsg_GetDataLength(m) > 0 &&
            msgpack_unpack_next(&u, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &off) ==
                MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2 &&
            u.data.via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            kind = (int)u.data.via.array.ptr[0].via.u64;
            if (u.data.via.array.ptr[1].type == MSGPACK_OBJECT_BIN) {
                ev = u.data.via.array.ptr[1].via.bin.ptr;
                evlen = u.data.via.array.ptr[1].via.bin.size;
            }
        }
        int stop = 0;
        if (sseq == 0) {
            stop = 1;
        } else if (kind == 1) {
            wf_handler_cancel(a->h);
            count(c, S_INPUTS);
            a->in_cursor = sseq;
        } else if (kind == 0 && ev) {
            if (!a->idle) {
                stop = 1; /* delivered when the run waits for it */
            } else {
                wf_event *e = NULL;
                if (wf_event_from_msgpack(wf_workflow_registry(a->sm->w->wf), ev, evlen, &e, NULL,
                                          NULL) == 0) {
                    wf_handler_send_event(a->h, e, NULL);
                    count(c, S_INPUTS);
                    a->idle = 0;
                } else {
                    count(c, S_MALFORMED);
                }
                a->in_cursor = sseq;
            }
        } else {
            count(c, S_MALFORMED); /* not an input: skipped, counted */
            a->in_cursor = sseq;
        }
        msgpack_unpacked_destroy(&u);
        natsMsg_Destroy(m);
        if (stop)
            return;
    }
}

/* Checkpoints the idle run: [input cursor, snapshot]. */
static void checkpoint(active *a)
{
    void *snap = NULL;
    size_t len = 0;
    if (wf_ctx_save(wf_handler_ctx(a->h), &snap, &len) != 0)
        return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, a->in_cursor);
    msgpack_pack_bin_with_body(&pk, snap, len);
    wf_free(snap);
    if (wf_store_put_checkpoint(a->c->store, a->sm->run_id, sb.data, sb.size, NULL, NULL, NULL,
                                NULL) != 0)
        a->lost = 1;
    msgpack_sbuffer_destroy(&sb);
}

static int start_run(active *a, wf_run_params *rp)
{
    wf_cluster *c = a->c;
    const sub_msg *sm = a->sm;
    void *data = NULL;
    size_t len = 0;
    if (wf_store_get_checkpoint(c->store, sm->run_id, &data, &len, NULL) == 0) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        int ok = 0;
        if (msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2 &&
            u.data.via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
            u.data.via.array.ptr[1].type == MSGPACK_OBJECT_BIN) {
            wf_ctx *ctx = NULL;
            const msgpack_object *b = &u.data.via.array.ptr[1];
            if (wf_ctx_load(sm->w->wf, b->via.bin.ptr, b->via.bin.size, 0, &ctx, NULL) == 0) {
                if (wf_run_resume(c->ex, sm->w->wf, ctx, rp, &a->h, NULL) == 0) {
                    a->in_cursor = u.data.via.array.ptr[0].via.u64;
                    /* checkpoints are taken idle: the resumed run waits again, and
                     * its engine does not announce that idle period a second time */
                    a->idle = 1;
                    ok = 1;
                    count(c, S_RESUMED);
                }
                wf_ctx_free(ctx);
            }
        }
        msgpack_unpacked_destroy(&u);
        wf_free(data);
        if (ok)
            return 0;
    }
    wf_event *ev = NULL;
    int rc = wf_event_from_msgpack(wf_workflow_registry(sm->w->wf), sm->start, sm->start_len, &ev,
                                   NULL, NULL);
    if (rc)
        return rc;
    return wf_run_start_ex(c->ex, sm->w->wf, NULL, ev, rp, &a->h, NULL);
}

/* ------------------------------------------------------------ the slow path */

/*
 * A run handed to the runner threads: a submission to handle from scratch
 * (h NULL: a redelivery, a create that failed, a fingerprint mismatch), or
 * a run a puller started that left the fast path (it went idle waiting for
 * an outside event, streamed events to journal, or outlived the fast
 * path's deadline): the runner claims it in the store (it is ours already:
 * the claim adopts it) and drives it like any other.
 */
typedef struct slow_item {
    struct slow_item *next;
    natsMsg *msg;
    wf_handler *h;      /* NULL: from scratch */
    msgpack_unpacked u; /* h: the decoded submission */
    sub_msg sm;         /* h: borrows from u */
    wf_event **pre;     /* h: events the puller read from the run already */
    size_t npre;
    uint64_t lsseq, lrev; /* h: the submission's lease, still the puller's (freed once the
                             run has its record), or 0 */
} slow_item;

static void item_free(slow_item *it)
{
    for (size_t i = 0; i < it->npre; i++)
        wf_event_release(it->pre[i]);
    wf__free_mem(it->pre);
    if (it->h) {
        msgpack_unpacked_destroy(&it->u);
        wf_handler_cancel(it->h);
        wf_handler_wait(it->h, 5000, NULL);
        wf_handler_free(it->h);
    }
    if (it->msg)
        natsMsg_Destroy(it->msg);
    wf__free_mem(it);
}

static void enqueue_slow(wf_cluster *c, slow_item *it)
{
    pthread_mutex_lock(&c->mu);
    it->next = NULL;
    *c->sq_tail = it;
    c->sq_tail = &it->next;
    c->sq_len++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void wf__cluster_drop_queue(wf_cluster *c)
{
    slow_item *it = c->sq_head;
    c->sq_head = NULL;
    c->sq_tail = &c->sq_head;
    c->sq_len = 0;
    while (it) {
        slow_item *nx = it->next;
        item_free(it); /* left to redelivery and the lease */
        it = nx;
    }
}

/* The run went idle waiting for an outside event: checkpoint it, say so in the store. */
static void went_idle(active *a)
{
    a->idle = 1;
    checkpoint(a);
    wf_store_set_status(a->c->store, a->sm->run_id, WF_STORE_WAITING, NULL);
}

/*
 * Whether the run waits for an outside event: nothing runs or waits to run and a step waits
 * (the engine's own test, the one behind WorkflowIdleEvent, read directly: streaming the
 * engine's internal notifications to learn it costs about a third of a short run).
 */
static int run_idle(wf_handler *h)
{
    return wf__run_idle((wf__run *)h);
}

/* One streamed event of the run: journaled (internal notifications are not streamed). */
static void on_event(active *a, wf_event *ev, const wf_event_type *t_idle,
                     const wf_event_type *t_state, const wf_event_type *t_unh)
{
    wf_cluster *c = a->c;
    const wf_event_type *t = wf_event_type_of(ev);
    if (t == t_idle || t == t_state || t == t_unh) {
        /* step state notifications are not part of the run's stream; unhandled: counted by
         * the engine */
    } else if (c->p.stream_events) {
        void *buf = NULL;
        size_t len = 0;
        if (wf_event_to_msgpack(ev, &buf, &len) == 0) {
            wf_store_rec r = {WF_STORE_REC_EVENT, buf, len};
            if (wf_store_append(c->store, a->sm->run_id, &r, 1, NULL, NULL, NULL, NULL) != 0)
                a->lost = 1;
            wf_free(buf);
        }
    }
    wf_event_release(ev);
}

/*
 * Runs parked here: their submission messages are held (in-progress acks from the renewer
 * thread) in a table by run key, and a core subscription to "<p>.in.>" wakes a run as soon
 * as an input is sent to it: the message goes to the runner threads, which claim the run,
 * continue it from its checkpoint and deliver the inputs. A process that dies or stalls
 * past the ack wait has its parked messages redelivered: another worker continues those
 * runs (their leases were released when they parked).
 */
typedef struct parked_run {
    struct parked_run *next; /* c->mu: the table's chain */
    char *key;               /* immutable: the run's key */
    natsMsg *msg;            /* the held submission */
} parked_run;

#define PARK_BUCKETS 1024

static size_t park_bucket(const char *key)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h % PARK_BUCKETS);
}

/* Takes the parked run key out of the table (NULL: not parked here). Under c->mu. */
static parked_run *unpark_locked(wf_cluster *c, const char *key)
{
    if (c->parked == NULL)
        return NULL;
    parked_run **pp = &((parked_run **)c->parked)[park_bucket(key)];
    for (; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            parked_run *r = *pp;
            *pp = r->next;
            c->nparked--;
            return r;
        }
    }
    return NULL;
}

/* Wakes the run key if it is parked here: its message goes to the runners. */
static void wake(wf_cluster *c, const char *key)
{
    pthread_mutex_lock(&c->mu);
    parked_run *r = unpark_locked(c, key);
    pthread_mutex_unlock(&c->mu);
    if (r == NULL)
        return;
    slow_item *it = wf__calloc(1, sizeof *it);
    if (it == NULL) {
        natsMsg_Nak(r->msg, NULL); /* out of memory: it comes back through the queue */
        natsMsg_Destroy(r->msg);
    } else {
        it->msg = r->msg;
        count(c, S_WOKEN);
        enqueue_slow(c, it);
    }
    wf__free_mem(r->key);
    wf__free_mem(r);
}

/* The input subscription's callback (the client's delivery thread). */
static void on_input(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc, (void)sub;
    wf_cluster *c = closure;
    const char *subj = natsMsg_GetSubject(msg);
    size_t pl = strlen(c->prefix);
    if (subj && strncmp(subj, c->prefix, pl) == 0 && strncmp(subj + pl, ".in.", 4) == 0)
        wake(c, subj + pl + 4);
    natsMsg_Destroy(msg);
}

/* 1 when an input was sent to the run after its cursor. */
static int input_waiting(active *a)
{
    jsDirectGetMsgOptions o;
    jsDirectGetMsgOptions_Init(&o);
    o.Sequence = a->in_cursor + 1;
    o.NextBySubject = a->in_subj;
    natsMsg *m = NULL;
    if (js_DirectGetMsg(&m, a->c->js, a->c->stream_io, NULL, &o) != NATS_OK)
        return 0;
    natsMsg_Destroy(m);
    return 1;
}

/*
 * Parks the run, idle for PARK_MS with no input for it: its checkpoint (taken when it went
 * idle) is durable, the store releases it, it leaves memory and its submission is held in
 * the parked table until an input for it arrives (wake). So a run waiting for a human holds
 * no runner thread: the runners go to runs that can progress. 0: parked (the message is
 * the table's: a->kept); else the run stays here.
 */
static int park(active *a, natsMsg *msg)
{
    wf_cluster *c = a->c;
    parked_run *r = wf__calloc(1, sizeof *r);
    if (r == NULL || (r->key = wf__strdup(a->key)) == NULL ||
        wf_store_release(c->store, a->sm->run_id) != 0) {
        if (r)
            wf__free_mem(r->key);
        wf__free_mem(r);
        return -1;
    }
    wf_handler_cancel(a->h);
    wf_handler_wait(a->h, 5000, NULL);
    wf_handler_free(a->h);
    a->h = NULL;
    r->msg = msg;
    a->kept = 1;
    pthread_mutex_lock(&c->mu);
    if (c->parked == NULL)
        c->parked = wf__calloc(PARK_BUCKETS, sizeof(parked_run *));
    if (c->parked == NULL) {
        pthread_mutex_unlock(&c->mu);
        natsMsg_NakWithDelay(msg, 1000, NULL); /* no table: back through the queue */
        a->kept = 0;
        wf__free_mem(r->key);
        wf__free_mem(r);
        count(c, S_PARKED);
        return 0;
    }
    size_t b = park_bucket(r->key);
    r->next = ((parked_run **)c->parked)[b];
    ((parked_run **)c->parked)[b] = r;
    c->nparked++;
    pthread_mutex_unlock(&c->mu);
    count(c, S_PARKED);
    /* an input sent after the run's last look and before it was in the table: the
     * subscription may have missed it, the stream has it */
    if (input_waiting(a))
        wake(c, a->key);
    return 0;
}

/* Keeps the parked runs' messages (the renewer thread, every third of the ack wait). */
static void keep_parked(wf_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->parked)
        for (size_t b = 0; b < PARK_BUCKETS; b++)
            for (parked_run *r = ((parked_run **)c->parked)[b]; r; r = r->next)
                natsMsg_InProgress(r->msg, NULL);
    pthread_mutex_unlock(&c->mu);
}

void wf__cluster_drop_parked(wf_cluster *c)
{
    if (c->parked == NULL)
        return;
    for (size_t b = 0; b < PARK_BUCKETS; b++) {
        parked_run *r = ((parked_run **)c->parked)[b];
        while (r) {
            parked_run *nx = r->next;
            natsMsg_Nak(r->msg, NULL); /* the drain: another worker takes it at once */
            natsMsg_Destroy(r->msg);
            wf__free_mem(r->key);
            wf__free_mem(r);
            r = nx;
        }
    }
    wf__free_mem(c->parked);
    c->parked = NULL;
    c->nparked = 0;
}

/* Drives the claimed, started run a->h to its end; pre: events read from it already. */
static void drive(active *a, natsMsg *msg, wf_event **pre, size_t npre)
{
    wf_cluster *c = a->c;
    const sub_msg *sm = a->sm;
    const wf_registry *reg = wf_workflow_registry(sm->w->wf);
    const wf_event_type *t_idle = wf_registry_builtin(reg, WF_WORKFLOW_IDLE_EVENT);
    const wf_event_type *t_state = wf_registry_builtin(reg, WF_STEP_STATE_CHANGED);
    const wf_event_type *t_unh = wf_registry_builtin(reg, WF_UNHANDLED_EVENT);
    for (size_t i = 0; i < npre; i++) {
        on_event(a, pre[i], t_idle, t_state, t_unh);
        pre[i] = NULL;
    }
    int64_t keepalive = c->p.ack_wait_ms / 3, last = wf__cluster_mono_ms(), idle_since = 0;
    natsMsg_InProgress(msg, NULL);
    int rc;
    for (;;) {
        wf_event *ev = NULL;
        rc = wf_handler_next_event(a->h, a->idle ? 20 : 100, &ev);
        if (rc == WF_ECLOSED)
            break;
        if (rc == 0)
            on_event(a, ev, t_idle, t_state, t_unh);
        else if (rc == WF_ETIMEDOUT && !a->idle && run_idle(a->h))
            went_idle(a);
        /* inputs are read when the run waits, and on each quiet tick (cancels): not after
         * every event, which would cost a round trip per event */
        if (rc == WF_ETIMEDOUT || (rc == 0 && a->idle))
            poll_inputs(a);
        int64_t now = wf__cluster_mono_ms();
        if (now - last >= keepalive) {
            natsMsg_InProgress(msg, NULL);
            last = now;
        }
        int64_t sf = atomic_load(&c->sfence);
        if (sf > a->fence && wf_handler_fence(a->h, sf) == 0)
            a->fence = sf; /* the store's leases were renewed since */
        if (!a->idle)
            idle_since = 0;
        else if (idle_since == 0)
            idle_since = now;
        else if (now - idle_since >= PARK_MS && park(a, msg) == 0)
            return;
        if (a->lost || atomic_load(&c->stop)) {
            /* the lease is gone (another worker has the run) or we stop (the drain: the run
             * is released, so another worker takes it over at once, from its checkpoint or
             * its start): give it up */
            wf_handler_cancel(a->h);
            wf_handler_wait(a->h, 5000, NULL);
            wf_handler_free(a->h);
            a->h = NULL;
            if (!a->lost)
                wf_store_release(c->store, a->sm->run_id);
            natsMsg_Nak(msg, NULL);
            return;
        }
    }
    wf_event *stop = NULL;
    rc = wf_handler_wait(a->h, 0, &stop);
    if (rc == WF_ECANCELLED && fenced(a->h)) {
        /* it stopped at its fence: its lease may be another worker's; nothing is written, the
         * message comes back (to this worker or the lease's new holder) */
        count(c, S_LOST);
        wf_event_release(stop);
        wf_handler_free(a->h);
        a->h = NULL;
        if (!a->lost) /* refused if the lease is lost; else the next taker need not wait */
            wf_store_release(c->store, a->sm->run_id);
        natsMsg_Nak(msg, NULL);
        return;
    }
    int32_t status = rc == 0                ? WF_STORE_DONE
                     : rc == WF_ERUNTIMEOUT ? WF_STORE_TIMED_OUT
                     : rc == WF_ECANCELLED  ? WF_STORE_CANCELLED
                                            : WF_STORE_FAILED;
    const char *emsg = NULL;
    if (rc)
        wf_handler_error(a->h, NULL, NULL, &emsg);
    void *sbuf = NULL;
    size_t slen = 0;
    if (stop)
        wf_event_to_msgpack(stop, &sbuf, &slen);
    rc = put_result(c, sm->run_id, status, rc ? (emsg ? emsg : wf_err_name(rc)) : NULL, sbuf, slen);
    wf_free(sbuf);
    wf_event_release(stop);
    wf_handler_free(a->h);
    a->h = NULL;
    if (rc == 0) {
        natsMsg_Ack(msg, NULL);
        count(c, S_DONE);
    } else {
        natsMsg_Nak(msg, NULL); /* not durable: run it again (here or elsewhere) */
    }
}

static int handle(wf_cluster *c, natsMsg *msg)
{
    sub_msg sm;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = decode_submission(c, msg, &sm, &u);
    if (rc == WF_EFORMAT) {
        count(c, S_MALFORMED);
        natsMsg_Term(msg, NULL); /* never redelivered: it can never run */
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    if (rc == WF_ENOTFOUND) {
        count(c, S_UNKNOWN);
        natsMsg_NakWithDelay(msg, 1000, NULL); /* another worker may know it */
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    wf_store_run_info info = {0};
    int64_t t0 = wf_clock_ns();
    rc = claim_run(c, &sm, &info);
    if (rc == WF_ESTATE) {
        count(c, S_DUP); /* finished already: its result is durable */
        push_stored_result(c, sm.run_id); /* its push may have been lost with its worker */
        natsMsg_Ack(msg, NULL);
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    if (rc) {
        if (rc == WF_ELEASE)
            count(c, S_BUSY);
        natsMsg_NakWithDelay(msg, rc == WF_ELEASE ? c->p.lease_ms / 2 : 500, NULL);
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    uint64_t journaled = info.next_seq;
    wf_store_run_info_clear(&info);
    if (sm.fp != sm.w->fp) {
        char m[256];
        snprintf(m, sizeof m,
                 "workflow \"%s\": definition fingerprint %016llx of the submitter differs "
                 "from this worker's %016llx",
                 sm.w->name, (unsigned long long)sm.fp, (unsigned long long)sm.w->fp);
        count(c, S_MISMATCH);
        if (put_result(c, sm.run_id, WF_STORE_FAILED, m, NULL, 0) == 0)
            natsMsg_Ack(msg, NULL);
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    active a = {.c = c, .msg = msg, .sm = &sm, .fence = fence_from(c, t0)};
    wf__nats_key(a.key, sm.run_id);
    snprintf(a.in_subj, sizeof a.in_subj, "%s.in.%s", c->prefix, a.key);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.fence_ns = a.fence; /* the claim's lease */
    /* no internal notifications: idleness is read from the engine (run_idle) */
    if (!c->p.stream_events)
        rp.stream_capacity = 0;
    uint64_t resumed = atomic_load(&c->st[S_RESUMED]);
    rc = start_run(&a, &rp);
    if (rc == 0 && journaled > 0 && atomic_load(&c->st[S_RESUMED]) == resumed)
        count(c, S_RESTARTED);
    if (rc) {
        char m[160];
        snprintf(m, sizeof m, "the run could not start: %s", wf_err_name(rc));
        count(c, S_MALFORMED);
        if (put_result(c, sm.run_id, WF_STORE_FAILED, m, NULL, 0) == 0)
            natsMsg_Ack(msg, NULL);
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    drive(&a, msg, NULL, 0);
    msgpack_unpacked_destroy(&u);
    return a.kept;
}

/* A run a puller started that left the fast path: its record is created now (the lease, as
 * on the slow path), then it is driven. A run that has a record already (another worker has
 * it, or it ended before) is dropped here and the submission handled from scratch. Consumes
 * the handler, the events and the decoded submission; the message and the item stay the
 * caller's. */
static void lease_key(uint64_t sseq, char *out, size_t cap);
static int lease_pack(wf_cluster *c, int64_t until, msgpack_sbuffer *sb);

/* Frees a submission's lease held over revision rev (best effort: else it lapses). */
static void lease_free(wf_cluster *c, uint64_t sseq, uint64_t rev)
{
    char key[40];
    lease_key(sseq, key, sizeof key);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint64_t nrev = 0;
    if (lease_pack(c, 0, &sb) == 0)
        kvStore_Update(&nrev, c->ns->kv, key, sb.data, (int)sb.size, rev);
    msgpack_sbuffer_destroy(&sb);
}

static int handle_adopted(wf_cluster *c, slow_item *it)
{
    int kept = 0;
    uint64_t ticket = 0;
    int64_t t0 = wf_clock_ns();
    int rc = wf_store_create(c->store, it->sm.run_id, it->sm.w->name, &ticket);
    if (rc == 0)
        rc = wf_store_wait(c->store, ticket);
    if (rc == 0)
        rc = wf_store_set_status(c->store, it->sm.run_id, WF_STORE_RUNNING, NULL);
    /* the run has its record (the store's lease keeps it ours from now), or is handled from
     * scratch through the store: the submission's lease is not needed any more */
    if (it->lrev)
        lease_free(c, it->lsseq, it->lrev);
    it->lrev = 0;
    if (rc) {
        for (size_t i = 0; i < it->npre; i++)
            wf_event_release(it->pre[i]);
        wf_handler_cancel(it->h);
        wf_handler_wait(it->h, 5000, NULL);
        wf_handler_free(it->h);
        kept = handle(c, it->msg);
    } else {
        /* its record's lease now; the submission's fence holds until it is moved on */
        active a = {.c = c, .msg = it->msg, .sm = &it->sm, .h = it->h, .fence = fence_from(c, t0)};
        wf_handler_fence(it->h, a.fence);
        wf__nats_key(a.key, it->sm.run_id);
        snprintf(a.in_subj, sizeof a.in_subj, "%s.in.%s", c->prefix, a.key);
        drive(&a, it->msg, it->pre, it->npre); /* frees the handler, takes the events */
        kept = a.kept;
    }
    it->h = NULL;
    it->npre = 0;
    msgpack_unpacked_destroy(&it->u);
    return kept;
}

static void *runner_main(void *arg)
{

    wf_cluster *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        while (c->sq_head == NULL && !atomic_load(&c->stop)) {
            c->sq_idle++;
            pthread_cond_wait(&c->cv, &c->mu);
            c->sq_idle--;
        }
        if (atomic_load(&c->stop)) {
            pthread_mutex_unlock(&c->mu);
            return NULL;
        }
        slow_item *it = c->sq_head;
        c->sq_head = it->next;
        if (c->sq_head == NULL)
            c->sq_tail = &c->sq_head;
        c->sq_len--;
        pthread_mutex_unlock(&c->mu);
        if (it->h ? handle_adopted(c, it) : handle(c, it->msg))
            it->msg = NULL; /* parked: the parked table holds it */
        item_free(it);
    }
}

/* ------------------------------------------------------------ the fast path */

/*
 * A puller fetches submission messages (a message holds one run, or a
 * batch of runs packed by the submitter) and takes their runs through with
 * a few asynchronous rounds for the whole pull:
 *  0. the runs of first deliveries are looked up (skip_known: a run id
 *     that has a record does not start again) and their messages leased
 *     (lease_pull, below: the creates are published now and confirmed
 *     while the runs go on);
 *  1. every run of a first delivery starts on the executor at once: it has
 *     no record in the store yet and writes none while it runs;
 *  2. the puller waits for them up to fast_ms (default a third of the ack
 *     wait and of the lease), keeping its messages alive and its leases
 *     renewed meanwhile (keep_pull);
 *  3. each run that ended in time, streamed nothing to journal and never
 *     waited for an outside event gets its only record, the final one
 *     (status and the result inline), created if absent (compare-and-set
 *     on revision 0): one asynchronous publish a run, one wait for all;
 *  4. its result is pushed to the submitters (one message for the pull)
 *     and its submission acked (one ack a message: fire-and-forget, a lost
 *     one redelivers runs that ended, found ended in the store).
 * Every other run leaves the fast path: a run of a one-run message is
 * adopted by a runner thread (its record is created, the lease, then it
 * is driven like any other); a run of a batch is published again as a
 * one-run message flagged slow (Nats-Msg-Id = run id) and cancelled here,
 * and the batch is acked once those copies are stored. A redelivered
 * message never runs here: its runs go to the slow path (from scratch:
 * the store says whether they ended, or who holds them).
 * Guarantees: a run's result exists once (the final record is created
 * only if the run has none: a run another worker took over, or that ended
 * before, refuses ours, which is dropped); a run executes only under a
 * lease (its message's here, its record's on the slow path), so a worker
 * that stalls keeps its runs while its lease lives and, once it lapsed and
 * another worker took them, cancels them at its next lease write.
 */
enum { F_NONE, F_RUNNING, F_ENDED, F_ENDING, F_SLOW, F_REPUB, F_DONE, F_SKIP };

typedef struct fmsg {
    natsMsg *msg;
    msgpack_unpacked u;
    int batch;   /* a batch message (else one run) */
    int again;   /* redelivered */
    int pending; /* runs of it not settled */
    int failed;  /* a copy of one of its runs could not be stored: Nak */
    uint64_t sseq;         /* its stream sequence: its lease is the key "L.<sseq>" */
    uint64_t lrev;         /* the lease's revision while this puller holds it, else 0 */
    int leasing;           /* a lease write is pending for it (its outcome: lrc, nrev) */
    atomic_int lrc;        /* the pending lease write's outcome (ack callback) */
    _Atomic uint64_t nrev; /* and the revision it made */
    int skip; /* not run here: its lease is another worker's (Nak with delay) or lost */
    int64_t fence; /* its runs' fence (wf_clock_ns time): its lease holds until then */
} fmsg;

typedef struct fslot {
    uint32_t mi; /* its message */
    int state;
    atomic_int rc; /* the pending publish's outcome (ack callback) */
    wf_handler *h;
    wf_event **pre; /* events read from the run (to journal) */
    size_t npre, cpre;
    int32_t status;
    void *rec; /* the result record (msgpack's malloc) */
    size_t rec_len;
    wf_event *stopped; /* the terminal event read from the stream (kept for the slow path) */
    sub_msg sm;        /* last: a new slot clears what is before it (the run id is 1 KiB) */
} fslot;

typedef struct puller {
    wf_cluster *c;
    jsCtx *js; /* its own: the ack callback knows this pull */
    fslot *s;
    uint32_t n, cap;
    fmsg *m;
    uint32_t nm, capm;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t ended;  /* mu: runs of the pull that ended (on_done) */
    uint32_t target; /* mu: the runs started (UINT32_MAX while starting) */
    /* replies to its record look-ups (lazily made; <dinbox>.<gen>.<slot>) */
    natsSubscription *dsub;
    char dinbox[128];
    uint32_t dgen;     /* look-up rounds so far: a late answer of an earlier one is ignored */
    int64_t renewed;   /* when the pull's leases were last written (monotonic ms) */
    int64_t progress;  /* when its messages were last kept alive (in-progress acks) */
    int lease_pending; /* the pull's lease creates are not confirmed yet (lease_confirm) */
} puller;

static void fast_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    puller *pl = closure;
    const char *v = NULL;
    if (natsMsgHeader_Get(msg, "Wf-M", &v) == NATS_OK && v) {
        size_t mi = strtoul(v, NULL, 10);
        if (mi < pl->nm) {
            if (pa)
                atomic_store(&pl->m[mi].nrev, pa->Sequence);
            /* 10071: wrong last sequence: another worker wrote the lease */
            atomic_store(&pl->m[mi].lrc, pa                             ? 0
                                         : pae && pae->ErrCode == 10071 ? WF_ELEASE
                                                                        : WF_EIO);
        }
    } else if (natsMsgHeader_Get(msg, "Wf-I", &v) == NATS_OK && v) {
        size_t i = strtoul(v, NULL, 10);
        if (i < pl->n) {
            /* 10071: wrong last sequence: the run has a record already */
            atomic_store(&pl->s[i].rc, pa ? 0 : pae && pae->ErrCode == 10071 ? WF_EEXIST : WF_EIO);
        }
    }
    natsMsg_Destroy(msg);
}

static void fast_done(wf_handler *h, void *user)
{
    (void)h;
    puller *pl = user;
    pthread_mutex_lock(&pl->mu);
    if (++pl->ended >= pl->target) /* the last one: the puller wakes once, not per run */
        pthread_cond_signal(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
}

/* Publishes asynchronously for slot i (its outcome lands in the slot's rc). */
static int pub_slot(puller *pl, uint32_t i, const char *subj, const void *data, size_t len,
                    const char *h1, const char *v1)
{
    natsMsg *msg = NULL;
    char num[24];
    snprintf(num, sizeof num, "%u", i);
    natsStatus st = natsMsg_Create(&msg, subj, NULL, data, (int)len);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, h1, v1);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, "Wf-I", num);
    atomic_store(&pl->s[i].rc, WF_EIO); /* until acknowledged */
    if (st == NATS_OK)
        st = js_PublishMsgAsync(pl->js, &msg, NULL);
    if (msg)
        natsMsg_Destroy(msg);
    return st == NATS_OK ? 0 : WF_EIO;
}

/* The run's final record, created if the run has none. */
static int pub_end(puller *pl, uint32_t i, const nmeta *m)
{
    wf_cluster *c = pl->c;
    void *buf = NULL;
    size_t len = 0;
    int rc = wf__nats_meta_pack(m, &buf, &len);
    if (rc)
        return rc;
    char subj[NATS_KEY_MAX + 200];
    size_t kl = strlen(c->kv_prefix);
    memcpy(subj, c->kv_prefix, kl);
    wf__nats_key(subj + kl, pl->s[i].sm.run_id);
    rc = pub_slot(pl, i, subj, buf, len, "Nats-Expected-Last-Subject-Sequence", "0");
    wf__free_mem(buf);
    return rc;
}

/* A run of a batch, published again alone and flagged slow. */
static int pub_copy(puller *pl, uint32_t i)
{
    const sub_msg *sm = &pl->s[i].sm;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_uint32(&pk, 1);
    msgpack_pack_str_with_body(&pk, sm->run_id, strlen(sm->run_id));
    msgpack_pack_str_with_body(&pk, sm->wname, sm->wname_len);
    msgpack_pack_uint64(&pk, sm->fp);
    msgpack_pack_bin_with_body(&pk, sm->start, sm->start_len);
    msgpack_pack_true(&pk);
    int rc = sb.data
                 ? pub_slot(pl, i, pl->c->subj_submit, sb.data, sb.size, "Nats-Msg-Id", sm->run_id)
                 : WF_ENOMEM;
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void await_acks(puller *pl)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = pl->c->p.timeout_ms;
    if (js_PublishAsyncComplete(pl->js, &po) != NATS_OK) {
        natsMsgList pending = {0}; /* not acknowledged in time: their rc stays WF_EIO */
        if (js_PublishAsyncGetPendingList(&pending, pl->js) == NATS_OK)
            natsMsgList_Destroy(&pending);
    }
}

/* ------------------------------------------------------------ a pull's leases */

/*
 * A submission message whose runs start on the fast path is leased to its
 * puller: the key "L.<stream sequence>" of the runs bucket holds [owner,
 * lease end (ms, wall clock, 0: free)]. The puller publishes its create
 * (compare-and-set on revision 0) before the runs start and awaits it while
 * they go on (lease_confirm: a refused one cancels them), writes
 * it again over the revision it holds every third of the lease while they
 * run (and keeps the messages alive with in-progress acks every third of
 * the ack wait), and frees it when a run leaves for the slow path (once the
 * run has its record: the store's lease) or the message goes back to the
 * queue. A redelivered message is taken only when its lease is free or has
 * lapsed: the taker writes it free over the revision it read,
 * which fences the old holder (its next write is refused), and hands the
 * runs to the slow path (copies of a batch's runs, or the run itself), where
 * the store's per-run lease keeps them exclusive. While another worker's
 * lease lives, the message is Nak'ed until about its end (busy). A puller
 * whose lease write is refused cancels the message's runs and writes and
 * settles nothing of it. An acked message's lease is left as it is (a small
 * key per message; the message is gone).
 */
static void lease_key(uint64_t sseq, char *out, size_t cap)
{
    snprintf(out, cap, "L.%llu", (unsigned long long)sseq);
}

/* [owner, until]: 0 or WF_ENOMEM. */
static int lease_pack(wf_cluster *c, int64_t until, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    const char *o = c->ns->owner;
    msgpack_pack_str_with_body(&pk, o, strlen(o));
    msgpack_pack_int64(&pk, until);
    return sb->data ? 0 : WF_ENOMEM;
}

/*
 * Writes the lease of message sseq asynchronously on js: created (rev 0) or over revision
 * rev, ending at until (0: free). track: the outcome lands in the puller's message mi (lrc,
 * nrev); else nobody waits for it.
 */
static int pub_lease(wf_cluster *c, jsCtx *js, uint64_t sseq, uint64_t rev, int64_t until,
                     int track, uint32_t mi)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char subj[200], key[40], num[24], rs[24];
    lease_key(sseq, key, sizeof key);
    snprintf(subj, sizeof subj, "%s%s", c->kv_prefix, key);
    snprintf(num, sizeof num, "%u", mi);
    snprintf(rs, sizeof rs, "%llu", (unsigned long long)rev);
    natsMsg *msg = NULL;
    natsStatus st = lease_pack(c, until, &sb)
                        ? NATS_NO_MEMORY
                        : natsMsg_Create(&msg, subj, NULL, sb.data, (int)sb.size);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, "Nats-Expected-Last-Subject-Sequence", rs);
    if (st == NATS_OK && track)
        st = natsMsgHeader_Set(msg, "Wf-M", num);
    if (st == NATS_OK)
        st = js_PublishMsgAsync(js, &msg, NULL);
    if (msg)
        natsMsg_Destroy(msg);
    msgpack_sbuffer_destroy(&sb);
    return st == NATS_OK ? 0 : WF_EIO;
}

/*
 * Takes the lease of a redelivered message (one round trip each way): reads it and, when it
 * is absent, free or lapsed, writes it free over the revision read (the fence: the old
 * holder's next write is refused). 0: taken; WF_ELEASE: another worker's lease lives (or it
 * wrote meanwhile), *left_ms until about its end; WF_EIO.
 */
static int lease_take(wf_cluster *c, uint64_t sseq, int64_t *left_ms)
{
    char key[40];
    lease_key(sseq, key, sizeof key);
    *left_ms = c->p.lease_ms / 4;
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->ns->kv, key);
    uint64_t rev = 0;
    int64_t now = wf__nats_now(c->ns);
    if (st == NATS_OK) {
        rev = kvEntry_Revision(e);
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        int live = 0;
        if (kvEntry_ValueLen(e) > 0 &&
            msgpack_unpack_next(&u, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), &off) ==
                MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2 &&
            u.data.via.array.ptr[0].type == MSGPACK_OBJECT_STR) {
            const msgpack_object *a = u.data.via.array.ptr;
            int64_t until =
                a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)a[1].via.u64 : 0;
            /* ours too: another puller of this process may hold it (its delivery went stale
             * while it ran, e.g. the process stalled): only a free or lapsed lease is taken */
            if (until > now) {
                live = 1;
                *left_ms = until - now;
            }
        }
        msgpack_unpacked_destroy(&u);
        kvEntry_Destroy(e);
        if (live)
            return WF_ELEASE;
    } else if (st != NATS_NOT_FOUND) {
        return WF_EIO;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (lease_pack(c, 0, &sb)) {
        msgpack_sbuffer_destroy(&sb);
        return WF_ENOMEM;
    }
    uint64_t nrev = 0;
    st = rev ? kvStore_Update(&nrev, c->ns->kv, key, sb.data, (int)sb.size, rev)
             : kvStore_Create(&nrev, c->ns->kv, key, sb.data, (int)sb.size);
    msgpack_sbuffer_destroy(&sb);
    if (st == NATS_OK)
        return 0;
    /* refused: another worker wrote it meanwhile (or the server is away): later */
    return WF_ELEASE;
}

/* The Nak delay for a message whose lease lives elsewhere: about until it ends. */
static int64_t busy_delay(wf_cluster *c, int64_t left_ms)
{
    int64_t d = left_ms + 50;
    return d < 100 ? 100 : d > (int64_t)c->p.lease_ms ? (int64_t)c->p.lease_ms : d;
}

static int keep_event(fslot *sl, wf_event *ev);

/*
 * A run of a one-run message goes to the runner threads, with its handler (adopted) or not
 * (from scratch), when one of them is free to take it at once; otherwise it stays in the
 * stream for any worker with a free runner (Nak, 100 ms): a run waiting for an outside event
 * holds its runner, so a local queue behind busy runners could wait for ever.
 */
static void slot_to_slow(puller *pl, fslot *sl)
{
    wf_cluster *c = pl->c;
    fmsg *fm = &pl->m[sl->mi];
    slow_item *it = wf__calloc(1, sizeof *it);
    pthread_mutex_lock(&c->mu);
    int room = it != NULL && c->sq_len < c->sq_idle;
    pthread_mutex_unlock(&c->mu);
    if (!room) {
        wf__free_mem(it);
        if (sl->h) {
            wf_handler_cancel(sl->h);
            wf_handler_free(sl->h);
            sl->h = NULL;
        }
        natsMsg_NakWithDelay(fm->msg, 100, NULL);
        if (fm->lrev) /* free: whoever gets it next need not wait for the lease's end */
            pub_lease(c, pl->js, fm->sseq, fm->lrev, 0, 0, 0);
        fm->lrev = 0;
        natsMsg_Destroy(fm->msg);
        fm->msg = NULL;
        return;
    }
    it->msg = fm->msg;
    fm->msg = NULL;
    if (sl->h) {
        it->lsseq = fm->sseq;
        it->lrev = fm->lrev;
        fm->lrev = 0;
        if (sl->stopped) { /* the terminal event goes last, as the run streamed it */
            keep_event(sl, sl->stopped);
            sl->stopped = NULL;
        }
        it->h = sl->h;
        it->u = fm->u; /* sl->sm borrows from it */
        it->sm = sl->sm;
        it->pre = sl->pre;
        it->npre = sl->npre;
        sl->h = NULL;
        sl->pre = NULL;
        sl->npre = sl->cpre = 0;
        msgpack_unpacked_init(&fm->u);
    }
    enqueue_slow(c, it);
}

static int keep_event(fslot *sl, wf_event *ev)
{
    if (sl->npre == sl->cpre) {
        size_t nc = sl->cpre ? sl->cpre * 2 : 4;
        wf_event **p = wf__realloc(sl->pre, nc * sizeof *p);
        if (p == NULL) {
            wf_event_release(ev);
            return WF_ENOMEM;
        }
        sl->pre = p;
        sl->cpre = nc;
    }
    sl->pre[sl->npre++] = ev;
    return 0;
}

/* Reads the run's streamed events without waiting, kept to be journaled. 1: the run has
 * events to journal (it must leave the fast path). */
static int scan_events(wf_cluster *c, fslot *sl)
{
    if (!c->p.stream_events)
        return 0; /* nothing to journal (and nothing streamed: capacity 0) */
    wf_event *ev = NULL;
    while (wf_handler_next_event(sl->h, 0, &ev) == 0) {
        if (wf_event_type_is_stop(wf_event_type_of(ev))) {
            /* the terminal event is the result: the final record has it (the slow path also
             * journals it; a fast-path run's stream is what it wrote before) */
            sl->stopped = ev;
            continue;
        }
        if (keep_event(sl, ev))
            return 1;
    }
    return sl->npre > 0;
}

/* 1 when the message was delivered before; *sseq: its stream sequence (0: unknown). */
static int redelivered(natsMsg *m, uint64_t *sseq)
{
    jsMsgMetaData *md = NULL;
    *sseq = 0;
    if (natsMsg_GetMetaData(&md, m) != NATS_OK || md == NULL)
        return 1;
    int again = md->NumDelivered > 1;
    *sseq = md->Sequence.Stream;
    jsMsgMetaData_Destroy(md);
    return again;
}

static fslot *new_slot(puller *pl, uint32_t mi)
{
    if (pl->n == pl->cap) {
        uint32_t nc = pl->cap ? pl->cap * 2 : 256;
        fslot *s = wf__realloc(pl->s, nc * sizeof *s);
        if (s == NULL)
            return NULL;
        pl->s = s;
        pl->cap = nc;
    }
    fslot *sl = &pl->s[pl->n++];
    memset(sl, 0, offsetof(fslot, sm));
    sl->sm.w = NULL;
    sl->sm.slow = 0;
    sl->sm.run_id[0] = 0;
    sl->mi = mi;
    return sl;
}

/* Takes the pull's messages apart into runs (out of memory: the message is redelivered). */
static void split(puller *pl, natsMsgList *list)
{
    wf_cluster *c = pl->c;
    pl->n = pl->nm = 0;
    if ((uint32_t)list->Count > pl->capm) {
        fmsg *m = wf__realloc(pl->m, (size_t)list->Count * sizeof *m);
        if (m == NULL) {
            for (int k = 0; k < list->Count; k++) {
                natsMsg_Nak(list->Msgs[k], NULL);
            }
            return;
        }
        pl->m = m;
        pl->capm = (uint32_t)list->Count;
    }
    for (int k = 0; k < list->Count; k++) {
        uint32_t mi = pl->nm++;
        fmsg *fm = &pl->m[mi];
        memset(fm, 0, sizeof *fm);
        fm->msg = list->Msgs[k];
        list->Msgs[k] = NULL;
        msgpack_unpacked_init(&fm->u);
        const msgpack_object *batch = NULL;
        int kind = unpack_message(fm->msg, &fm->u, &batch);
        fm->again = redelivered(fm->msg, &fm->sseq);
        if (kind != 2) {
            /* one run (or malformed: the slow path says so) */
            fslot *sl = new_slot(pl, mi);
            if (sl == NULL) {
                fm->failed = 1; /* out of memory: redelivered */
                continue;
            }
            fm->pending = 1;
            int rc = kind == 1 ? decode_submission(c, fm->msg, &sl->sm, &fm->u) : WF_EFORMAT;
            sl->state =
                rc || sl->sm.slow || fm->again || sl->sm.fp != sl->sm.w->fp ? F_SLOW : F_NONE;
            continue;
        }
        fm->batch = 1;
        for (uint32_t j = 0; j < batch->via.array.size; j++) {
            const msgpack_object *e = &batch->via.array.ptr[j];
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4) {
                count(c, S_MALFORMED); /* can never run: dropped, counted */
                continue;
            }
            fslot *sl = new_slot(pl, mi);
            if (sl == NULL) {
                fm->failed = 1; /* out of memory: redelivered */
                break;
            }
            int rc = decode_entry(c, e->via.array.ptr, &sl->sm);
            if (rc == WF_EFORMAT) {
                count(c, S_MALFORMED);
                pl->n--;
                continue;
            }
            fm->pending++;
            /* unknown here, mismatched, or redelivered: alone, to the slow path */
            sl->state = rc || fm->again || sl->sm.fp != sl->sm.w->fp ? F_REPUB : F_NONE;
        }
    }
}

static void pub_index(puller *pl, msgpack_sbuffer *ids, uint32_t n)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    msgpack_sbuffer_write(&sb, ids->data, ids->size);
    natsMsg *m = NULL;
    natsStatus st = sb.data
                        ? natsMsg_Create(&m, pl->c->ns->subj_created, NULL, sb.data, (int)sb.size)
                        : NATS_NO_MEMORY;
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Wf-Ids", "1");
    if (st == NATS_OK)
        js_PublishMsgAsync(pl->js, &m, NULL); /* awaited with the next pull's publishes */
    if (m)
        natsMsg_Destroy(m);
    msgpack_sbuffer_destroy(&sb);
}

/*
 * The creation index of the runs that ended here (wf_store_list on the cluster's store): one
 * message for the pull, after the ends, so only a run's creator indexes it, once. A run whose
 * index is lost (the worker died in between) is not listed; its record and result are there.
 */
static void index_ended(puller *pl)
{
    msgpack_sbuffer ids;
    msgpack_sbuffer_init(&ids);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &ids, msgpack_sbuffer_write);
    uint32_t k = 0;
    for (uint32_t i = 0; i < pl->n; i++) {
        if (pl->s[i].state != F_ENDING)
            continue;
        const char *id = pl->s[i].sm.run_id;
        msgpack_pack_str_with_body(&pk, id, strlen(id));
        if (++k == 256 || ids.size > 256 * 1024) {
            pub_index(pl, &ids, k);
            msgpack_sbuffer_clear(&ids);
            k = 0;
        }
    }
    if (k)
        pub_index(pl, &ids, k);
    msgpack_sbuffer_destroy(&ids);
}

/* Message mi's lease went to another worker: its runs are cancelled here, nothing of it is
 * written or settled (the taker has it). */
static void lose_msg(puller *pl, uint32_t mi)
{
    fmsg *fm = &pl->m[mi];
    fm->skip = 1;
    fm->lrev = 0;
    for (uint32_t i = 0; i < pl->n; i++) {
        fslot *sl = &pl->s[i];
        if (sl->mi != mi)
            continue;
        if (sl->h)
            wf_handler_cancel(sl->h);
        sl->state = F_SKIP;
    }
    count(pl->c, S_LOST);
}

/*
 * Keeps the pull's messages while their runs go on: in-progress acks every third of the ack
 * wait, and the leases written again every third of the lease, all in one round. A lease
 * refused (another worker took the message after this process stalled past the lease), or
 * not written for a whole lease, loses the message (lose_msg).
 */
static void keep_pull(puller *pl)
{
    wf_cluster *c = pl->c;
    int64_t now = wf__cluster_mono_ms();
    if (now - pl->progress >= (int64_t)c->p.ack_wait_ms / 3) {
        for (uint32_t mi = 0; mi < pl->nm; mi++)
            if (pl->m[mi].msg && !pl->m[mi].skip)
                natsMsg_InProgress(pl->m[mi].msg, NULL);
        pl->progress = now;
    }
    if (now - pl->renewed < (int64_t)c->p.lease_ms / 3)
        return;
    int64_t fence = fence_from(c, wf_clock_ns());
    int64_t until = wf__nats_now(c->ns) + c->p.lease_ms;
    int any = 0;
    for (uint32_t mi = 0; mi < pl->nm; mi++) {
        fmsg *fm = &pl->m[mi];
        if (fm->lrev && !fm->skip)
            any |= fm->leasing = pub_lease(c, pl->js, fm->sseq, fm->lrev, until, 1, mi) == 0;
    }
    if (!any)
        return;
    await_acks(pl);
    for (uint32_t mi = 0; mi < pl->nm; mi++) {
        fmsg *fm = &pl->m[mi];
        if (!fm->lrev || fm->skip)
            continue;
        int rc = fm->leasing ? atomic_load(&fm->lrc) : WF_EIO;
        fm->leasing = 0;
        if (rc == 0) {
            fm->lrev = atomic_load(&fm->nrev);
            fm->fence = fence; /* its runs may go on until the renewed lease's end */
            for (uint32_t i = 0; i < pl->n; i++)
                if (pl->s[i].mi == mi && pl->s[i].h)
                    wf_handler_fence(pl->s[i].h, fence);
        }
        /* refused: taken; not written for a whole lease: it may be taken */
        if (rc == WF_ELEASE || (rc && now - pl->renewed >= (int64_t)c->p.lease_ms))
            lose_msg(pl, mi);
    }
    pl->renewed = now;
}

/*
 * The pull's leases, before anything runs: a first delivery with runs to start here has its
 * lease create published (confirmed by lease_confirm once the runs started); a redelivered
 * message is
 * taken (lease_take) or, busy, Nak'ed until about the lease's end. A message not taken runs
 * nothing here.
 */
static void lease_pull(puller *pl)
{
    wf_cluster *c = pl->c;
    for (uint32_t i = 0; i < pl->n; i++)
        if (pl->s[i].state == F_NONE)
            pl->m[pl->s[i].mi].leasing = 1; /* marks the messages with runs to start */
    int64_t now = wf__cluster_mono_ms();
    int64_t fence = fence_from(c, wf_clock_ns());
    int64_t until = wf__nats_now(c->ns) + c->p.lease_ms;
    int any = 0;
    for (uint32_t mi = 0; mi < pl->nm; mi++) {
        fmsg *fm = &pl->m[mi];
        if (fm->msg == NULL)
            continue;
        fm->fence = fence; /* written (created, or taken) from now on: its runs' fence */
        if (fm->failed) {
            /* out of memory taking it apart: none of its runs starts, it comes back */
            fm->leasing = 0;
            fm->skip = 1;
            natsMsg_Nak(fm->msg, NULL);
            continue;
        }
        if (fm->again) {
            fm->leasing = 0;
            int64_t left = 0;
            int rc = fm->sseq ? lease_take(c, fm->sseq, &left) : 0;
            if (rc) {
                count(c, S_BUSY);
                fm->skip = 1;
                natsMsg_NakWithDelay(fm->msg, busy_delay(c, left), NULL);
            }
        } else if (fm->leasing) {
            fm->leasing = fm->sseq && pub_lease(c, pl->js, fm->sseq, 0, until, 1, mi) == 0;
            if (fm->leasing)
                any = 1;
            else
                fm->skip = 1, natsMsg_NakWithDelay(fm->msg, 100, NULL);
        }
    }
    for (uint32_t i = 0; i < pl->n; i++)
        if (pl->m[pl->s[i].mi].skip)
            pl->s[i].state = F_SKIP;
    pl->renewed = pl->progress = now;
    pl->lease_pending = any;
}

/*
 * The outcome of the pull's lease creates, awaited while its runs start and go on (the
 * round costs no time of its own). A first delivery cannot be leased elsewhere unless this
 * process stalled between the fetch and the create reaching the server, past the ack wait:
 * then, as for a lease lost later, its runs are cancelled and nothing of them is written;
 * the message comes back (Nak, 100 ms: also for a key left from an earlier stream).
 */
static void lease_confirm(puller *pl)
{
    pl->lease_pending = 0;
    await_acks(pl);
    for (uint32_t mi = 0; mi < pl->nm; mi++) {
        fmsg *fm = &pl->m[mi];
        if (!fm->leasing)
            continue;
        fm->leasing = 0;
        if (atomic_load(&fm->lrc) == 0) {
            fm->lrev = atomic_load(&fm->nrev);
        } else {
            natsMsg_NakWithDelay(fm->msg, 100, NULL);
            lose_msg(pl, mi);
        }
    }
}

/*
 * A run id submitted again (a resubmission: batches carry no Nats-Msg-Id) must not run its
 * steps again: before a first delivery's runs start, their records are looked up, all at
 * once (one direct get per run, pipelined: a read, nothing stored). A run that has a record
 * (it ended, or a worker holds its lease) does not start here: it goes to the slow path,
 * which pushes its stored result again (ended) or waits for the holder (busy). A look-up
 * that fails or gets no answer in time counts as absent (the end is still created only if
 * absent, so the result stays the first one).
 */
static void skip_known(puller *pl)
{
    wf_cluster *c = pl->c;
    if (pl->dsub == NULL) {
        natsInbox *ib = NULL;
        char subj[160];
        if (natsInbox_Create(&ib) != NATS_OK)
            return;
        snprintf(pl->dinbox, sizeof pl->dinbox, "%s", ib);
        natsInbox_Destroy(ib);
        snprintf(subj, sizeof subj, "%s.*.*", pl->dinbox);
        if (natsConnection_SubscribeSync(&pl->dsub, c->nc, subj) != NATS_OK) {
            pl->dsub = NULL;
            return;
        }
        natsSubscription_SetPendingLimits(pl->dsub, -1, -1);
    }
    char api[160], reply[160];
    snprintf(api, sizeof api, "$JS.API.DIRECT.GET.KV_%s", c->ns->bucket);
    char req[NATS_KEY_MAX + 256];
    uint32_t asked = 0, gen = ++pl->dgen;
    for (uint32_t i = 0; i < pl->n; i++) {
        fslot *sl = &pl->s[i];
        if (sl->state != F_NONE)
            continue;
        int len = snprintf(req, sizeof req, "{\"last_by_subj\":\"%s", c->kv_prefix);
        wf__nats_key(req + len, sl->sm.run_id);
        len += (int)strlen(req + len);
        len += snprintf(req + len, sizeof req - (size_t)len, "\"}");
        snprintf(reply, sizeof reply, "%s.%u.%u", pl->dinbox, gen, i);
        if (natsConnection_PublishRequest(c->nc, api, reply, req, len) == NATS_OK)
            asked++;
    }
    if (asked == 0)
        return;
    natsConnection_Flush(c->nc);
    int64_t until = wf__cluster_mono_ms() + c->p.timeout_ms;
    size_t pfx = strlen(pl->dinbox) + 1;
    while (asked > 0) {
        int64_t left = until - wf__cluster_mono_ms();
        natsMsg *m = NULL;
        if (left <= 0 || natsSubscription_NextMsg(&m, pl->dsub, left) != NATS_OK)
            break;
        const char *subj = natsMsg_GetSubject(m);
        const char *status = NULL;
        char *end = NULL;
        if (subj && strlen(subj) > pfx && strtoul(subj + pfx, &end, 10) == gen && *end == '.') {
            unsigned long i = strtoul(end + 1, NULL, 10);
            /* an answer without a status is the record itself; "404": none */
            if (i < pl->n && pl->s[i].state == F_NONE &&
                natsMsgHeader_Get(m, "Status", &status) != NATS_OK)
                pl->s[i].state = pl->m[pl->s[i].mi].batch ? F_REPUB : F_SLOW;
            asked--;
        }
        natsMsg_Destroy(m);
    }
}

static void run_batch(puller *pl, natsMsgList *list)
{
    wf_cluster *c = pl->c;
    pthread_mutex_lock(&pl->mu);
    pl->ended = 0;
    pl->target = UINT32_MAX;
    pthread_mutex_unlock(&pl->mu);
    /* the fast path's deadline: by default well inside the ack wait and the lease, so the
     * pull rarely needs to keep its messages alive or renew its leases (keep_pull does when
     * it must: a long fast_ms, or a process that stalled) */
    uint32_t wait_ms =
        c->p.fast_ms ? c->p.fast_ms
                     : (c->p.ack_wait_ms < c->p.lease_ms ? c->p.ack_wait_ms : c->p.lease_ms) / 3;
    int64_t deadline = wf__cluster_mono_ms() + wait_ms;
    split(pl, list);
    if (c->p.lookup_runs)
        skip_known(pl);
    lease_pull(pl);
    uint32_t n = pl->n;
    /* 1. start */
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.on_done = fast_done;
    rp.on_done_user = pl;
    if (!c->p.stream_events)
        rp.stream_capacity = 0; /* nothing to journal: nothing kept */
    uint32_t started = 0;
    for (uint32_t i = 0; i < n; i++) {
        fslot *sl = &pl->s[i];
        if (sl->state != F_NONE)
            continue;
        wf_event *ev = NULL;
        int rc = wf_event_from_msgpack(wf_workflow_registry(sl->sm.w->wf), sl->sm.start,
                                       sl->sm.start_len, &ev, NULL, NULL);
        rp.fence_ns = pl->m[sl->mi].fence;
        if (rc == 0)
            rc = wf_run_start_ex(c->ex, sl->sm.w->wf, NULL, ev, &rp, &sl->h, NULL);
        if (rc) {
            sl->h = NULL; /* it starts again on the slow path and fails with the reason */
            sl->state = pl->m[sl->mi].batch ? F_REPUB : F_SLOW;
            continue;
        }
        sl->state = F_RUNNING;
        started++;
    }
    pthread_mutex_lock(&pl->mu);
    pl->target = started;
    pthread_mutex_unlock(&pl->mu);
    if (pl->lease_pending)
        lease_confirm(pl);
    /* 2. wait for the runs up to the deadline; a run that waits for an outside event or
     * streams what must be journaled leaves at once */
    uint32_t open = started;
    while (open > 0) {
        keep_pull(pl); /* first: a stalled process learns here that it lost its messages */
        open = 0;
        for (uint32_t i = 0; i < n; i++) {
            fslot *sl = &pl->s[i];
            if (sl->state != F_RUNNING)
                continue;
            if (scan_events(c, sl)) {
                sl->state = F_SLOW;
            } else if (wf_handler_status(sl->h) != WF_RUN_RUNNING) {
                /* ended: the events it streamed last */
                sl->state = scan_events(c, sl) ? F_SLOW : F_ENDED;
            } else if (run_idle(sl->h)) {
                sl->state = F_SLOW;
            } else {
                open++;
            }
        }
        if (open == 0)
            break;
        int64_t now = wf__cluster_mono_ms();
        if (now >= deadline || atomic_load(&c->stop))
            break;
        /* woken when the last run ends; every 2 ms to look for idle ones */
        pthread_mutex_lock(&pl->mu);
        if (pl->ended < started) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 2000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&pl->cv, &pl->mu, &ts);
        }
        pthread_mutex_unlock(&pl->mu);
    }
    keep_pull(pl);
    /* 3. the ends (the run's only record: status, result inline, created if absent) and the
     * copies of the batch runs that leave */
    int64_t now_ms = wf__nats_now(c->ns);
    for (uint32_t i = 0; i < n; i++) {
        fslot *sl = &pl->s[i];
        if (sl->state == F_RUNNING)
            sl->state = F_SLOW; /* past the deadline: the slow path keeps it alive */
        if (sl->state == F_SLOW && pl->m[sl->mi].batch)
            sl->state = F_REPUB;
        if (sl->state == F_REPUB) {
            if (pub_copy(pl, i) != 0)
                pl->m[sl->mi].failed = 1;
            continue;
        }
        if (sl->state != F_ENDED)
            continue;
        wf_event *stop = NULL;
        int rc = wf_handler_wait(sl->h, 0, &stop);
        if (rc == WF_ECANCELLED && fenced(sl->h)) {
            /* it stopped at its fence (this process stalled): its end is not written; it
             * runs again from its submission (at least once, as after a takeover), unless
             * the lease turns out lost (then the taker has it) */
            wf_event_release(stop);
            count(c, S_LOST);
            if (pl->m[sl->mi].batch) {
                sl->state = F_REPUB;
                if (pub_copy(pl, i) != 0)
                    pl->m[sl->mi].failed = 1;
            } else {
                wf_handler_free(sl->h);
                sl->h = NULL;
                sl->state = F_SLOW;
            }
            continue;
        }
        if (rc == WF_ETIMEDOUT) {
            sl->state = pl->m[sl->mi].batch ? F_REPUB : F_SLOW;
            if (sl->state == F_REPUB && pub_copy(pl, i) != 0)
                pl->m[sl->mi].failed = 1;
            continue;
        }
        sl->status = rc == 0                ? WF_STORE_DONE
                     : rc == WF_ERUNTIMEOUT ? WF_STORE_TIMED_OUT
                     : rc == WF_ECANCELLED  ? WF_STORE_CANCELLED
                                            : WF_STORE_FAILED;
        const char *emsg = NULL;
        if (rc)
            wf_handler_error(sl->h, NULL, NULL, &emsg);
        void *sbuf = NULL;
        size_t slen = 0;
        if (stop)
            wf_event_to_msgpack(stop, &sbuf, &slen);
        wf_event_release(stop);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 2);
        const char *msg = rc ? (emsg ? emsg : wf_err_name(rc)) : NULL;
        if (msg)
            msgpack_pack_str_with_body(&pk, msg, strlen(msg));
        else
            msgpack_pack_nil(&pk);
        if (sbuf)
            msgpack_pack_bin_with_body(&pk, sbuf, slen);
        else
            msgpack_pack_nil(&pk);
        wf_free(sbuf);
        nmeta m;
        memset(&m, 0, sizeof m);
        uint64_t eps[2] = {1, 0};
        m.workflow = (char *)sl->sm.w->name;
        m.status = sl->status;
        m.created = m.updated = now_ms;
        m.epoch = 1;
        m.nep = 1;
        m.eps = eps;
        m.res_inline = sb.data;
        m.res_inline_len = sb.size;
        if (sb.data == NULL || sb.size > NATS_CHUNK / 2 || pub_end(pl, i, &m) != 0) {
            /* large results go through the store, in chunks */
            msgpack_sbuffer_destroy(&sb);
            sl->state = pl->m[sl->mi].batch ? F_REPUB : F_SLOW;
            if (sl->state == F_REPUB && pub_copy(pl, i) != 0)
                pl->m[sl->mi].failed = 1;
            continue;
        }
        sl->rec = sb.data;
        sl->rec_len = sb.size;
        sl->state = F_ENDING;
    }
    await_acks(pl);
    /* 4. an end refused (the run has a record) or not known to be stored: the slow path
     * decides from the store; a batch run through a copy of it */
    int again = 0;
    for (uint32_t i = 0; i < n; i++) {
        fslot *sl = &pl->s[i];
        if (sl->state == F_ENDING && atomic_load(&sl->rc) != 0) {
            wf_handler_free(sl->h);
            sl->h = NULL;
            if (pl->m[sl->mi].batch) {
                sl->state = F_REPUB;
                if (pub_copy(pl, i) != 0)
                    pl->m[sl->mi].failed = 1;
                again = 1;
            } else {
                sl->state = F_SLOW;
            }
        }
    }
    if (again)
        await_acks(pl);
    /* 5. push the results, settle the messages, hand the rest over */
    msgpack_sbuffer pb;
    msgpack_sbuffer_init(&pb);
    msgpack_packer pp;
    msgpack_packer_init(&pp, &pb, msgpack_sbuffer_write);
    uint32_t ended = 0;
    for (uint32_t i = 0; i < n; i++)
        if (pl->s[i].state == F_ENDING)
            ended++;
    msgpack_pack_array(&pp, ended);
    for (uint32_t i = 0; i < n; i++) {
        fslot *sl = &pl->s[i];
        fmsg *fm = &pl->m[sl->mi];
        if (sl->state == F_ENDING) {
            msgpack_pack_array(&pp, 3);
            msgpack_pack_str_with_body(&pp, sl->sm.run_id, strlen(sl->sm.run_id));
            msgpack_pack_uint32(&pp, (uint32_t)sl->status);
            msgpack_pack_bin_with_body(&pp, sl->rec, sl->rec_len);
            count(c, S_DONE);
        } else if (sl->state == F_REPUB) {
            if (atomic_load(&sl->rc) != 0)
                fm->failed = 1;
        } else if (sl->state == F_SLOW) {
            slot_to_slow(pl, sl);
        }
        if (sl->h) {
            /* a batch run that left: its copy runs elsewhere */
            wf_handler_cancel(sl->h);
            wf_handler_free(sl->h);
            sl->h = NULL;
        }
        for (size_t k = 0; k < sl->npre; k++)
            wf_event_release(sl->pre[k]);
        wf__free_mem(sl->pre);
        wf_event_release(sl->stopped);
        free(sl->rec);
    }
    if (ended)
        wf__cluster_push_results(c, pb.data, pb.size);
    msgpack_sbuffer_destroy(&pb);
    if (ended && c->p.index_runs)
        index_ended(pl);
    for (uint32_t mi = 0; mi < pl->nm; mi++) {
        fmsg *fm = &pl->m[mi];
        if (fm->msg) {
            /* a batch: its runs ended here or have their copies stored; one run: it ended here
             * (a run that left took its message along). Skipped: Nak'ed already (busy), or
             * lost (the taker settles it) */
            if (fm->skip) {
            } else if (fm->failed) {
                natsMsg_Nak(fm->msg, NULL); /* again later: its runs go to the slow path */
                if (fm->lrev)
                    pub_lease(c, pl->js, fm->sseq, fm->lrev, 0, 0, 0);
            } else {
                natsMsg_Ack(fm->msg, NULL);
            }
            natsMsg_Destroy(fm->msg);
        }
        msgpack_unpacked_destroy(&fm->u);
    }
    pl->n = pl->nm = 0;
}

static void *puller_main(void *arg)
{
    puller *pl = arg;
    wf_cluster *c = pl->c;
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = (int64_t)c->p.ack_wait_ms * 1000000;
    so.Config.MaxDeliver = -1;
    so.Config.MaxAckPending = 100000;
    while (sub == NULL && !atomic_load(&c->stop)) {
        if (js_PullSubscribe(&sub, c->js, c->subj_submit, c->consumer, NULL, &so, NULL) !=
            NATS_OK) {
            sub = NULL;
            nats_Sleep(200); /* the server may be restarting: try again until stopped */
        }
    }
    while (!atomic_load(&c->stop)) {
        /* back-pressure: the runner threads are behind with the runs handed over */
        pthread_mutex_lock(&c->mu);
        size_t backlog = c->sq_len;
        pthread_mutex_unlock(&c->mu);
        if (backlog > 4u * c->p.runners) {
            nats_Sleep(10);
            continue;
        }
        natsMsgList list = {0};
        /* what is there at once, up to the batch; when nothing is, wait for one */
        jsFetchRequest fr;
        jsFetchRequest_Init(&fr);
        /* messages: a batch message holds up to SUBMIT_BATCH runs */
        fr.Batch = c->p.fetch_batch / 16 ? (int)(c->p.fetch_batch / 16) : 1;
        fr.NoWait = true;
        fr.Expires = (int64_t)c->p.timeout_ms * 1000000;
        natsStatus st = natsSubscription_FetchRequest(&list, sub, &fr);
        if (list.Count == 0) {
            natsMsgList_Destroy(&list);
            st = natsSubscription_Fetch(&list, sub, 1, 500, NULL);
            if (st != NATS_OK && list.Count == 0) {
                if (st != NATS_TIMEOUT && st != NATS_NOT_FOUND)
                    nats_Sleep(100);
                natsMsgList_Destroy(&list);
                continue;
            }
        }
        if (!atomic_load(&c->stop))
            run_batch(pl, &list);
        natsMsgList_Destroy(&list);
    }
    if (sub)
        natsSubscription_Destroy(sub); /* the durable consumer stays for the others */
    return NULL;
}

static void *renewer_main(void *arg)
{
    wf_cluster *c = arg;
    int64_t renewed = wf__cluster_mono_ms();
    while (!atomic_load(&c->stop)) {
        int64_t wait = (c->p.lease_ms < c->p.ack_wait_ms ? c->p.lease_ms : c->p.ack_wait_ms) / 3;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&c->mu);
        if (!atomic_load(&c->stop))
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        pthread_mutex_unlock(&c->mu);
        if (atomic_load(&c->stop))
            break;
        keep_parked(c);
        int64_t now = wf__cluster_mono_ms();
        if (now - renewed >= (int64_t)c->p.lease_ms / 3 - 10) {
            int64_t t0 = wf_clock_ns();
            if (wf_store_renew(c->store, NULL) == 0)
                atomic_store(&c->sfence, fence_from(c, t0));
            renewed = now;
        }
    }
    return NULL;
}

static void puller_free(puller *pl)
{
    if (pl == NULL)
        return;
    if (pl->js)
        jsCtx_Destroy(pl->js);
    if (pl->dsub)
        natsSubscription_Destroy(pl->dsub);
    pthread_mutex_destroy(&pl->mu);
    pthread_cond_destroy(&pl->cv);
    wf__free_mem(pl->s);
    wf__free_mem(pl->m);
    wf__free_mem(pl);
}

void wf__cluster_free_pullers(wf_cluster *c)
{
    for (uint32_t i = 0; i < c->npls; i++)
        puller_free(c->pls[i]);
    wf__free_mem(c->pls);
    c->pls = NULL;
    c->npls = 0;
}

int wf_cluster_work(wf_cluster *c, wf_executor *ex)
{
    if (c == NULL || ex == NULL)
        return WF_EINVAL;
    if (c->ex)
        return wf__set_error(WF_ESTATE, "wf_cluster_work: already working");
    c->runners = wf__calloc(c->p.runners, sizeof *c->runners);
    uint32_t np = c->p.pullers ? c->p.pullers : 1;
    c->pullers = wf__calloc(np, sizeof *c->pullers);
    c->pls = wf__calloc(np, sizeof *c->pls);
    if (c->runners == NULL || c->pullers == NULL || c->pls == NULL)
        return WF_ENOMEM;
    c->ex = ex;
    char in[120];
    snprintf(in, sizeof in, "%s.in.>", c->prefix);
    if (natsConnection_Subscribe(&c->in_sub, c->nc, in, on_input, c) != NATS_OK)
        return WF_EIO;
    natsSubscription_SetPendingLimits(c->in_sub, -1, 64 * 1024 * 1024);
    if (pthread_create(&c->renewer, NULL, renewer_main, c) != 0)
        return WF_ENOMEM;
    c->renewer_started = 1;
    for (uint32_t i = 0; i < c->p.runners; i++) {
        if (pthread_create(&c->runners[i], NULL, runner_main, c) != 0)
            return WF_ENOMEM;
        c->nrunners++;
    }
    for (uint32_t i = 0; i < np; i++) {
        puller *pl = wf__calloc(1, sizeof *pl);
        if (pl == NULL)
            return WF_ENOMEM;
        pl->c = c;
        pthread_mutex_init(&pl->mu, NULL);
        pthread_cond_init(&pl->cv, NULL);
        pl->s = wf__calloc(c->p.fetch_batch, sizeof *pl->s);
        pl->cap = c->p.fetch_batch;
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = c->p.timeout_ms;
        jo.PublishAsync.MaxPending = 65536; /* a pull's ends, index messages and copies */
        jo.PublishAsync.AckHandler = fast_ack;
        jo.PublishAsync.AckHandlerClosure = pl;
        c->pls[c->npls++] = pl; /* freed last (wf_cluster_free): runs call fast_done on it */
        if (pl->s == NULL || natsConnection_JetStream(&pl->js, c->nc, &jo) != NATS_OK ||
            pthread_create(&c->pullers[i], NULL, puller_main, pl) != 0)
            return WF_ENOMEM;
        c->npullers++;
    }
    return 0;
}
