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

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct sub_msg {
    char run_id[WF__STORE_ID_MAX + 1];
    const cwf *w;
    uint64_t fp;
    const char *start; /* borrowed from the message */
    size_t start_len;
} sub_msg;

/* Decodes a submission: 0, or WF_EFORMAT (malformed), WF_ENOTFOUND (workflow unknown here). */
static int decode_submission(wf_cluster *c, natsMsg *m, sub_msg *out, msgpack_unpacked *u)
{
    size_t off = 0;
    const char *data = natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    if (data == NULL || len <= 0 ||
        msgpack_unpack_next(u, data, (size_t)len, &off) != MSGPACK_UNPACK_SUCCESS)
        return WF_EFORMAT;
    const msgpack_object *o = &u->data;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 5)
        return WF_EFORMAT;
    const msgpack_object *a = o->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 != 1 ||
        a[1].type != MSGPACK_OBJECT_STR || a[1].via.str.size == 0 ||
        a[1].via.str.size > WF__STORE_ID_MAX || memchr(a[1].via.str.ptr, 0, a[1].via.str.size) ||
        a[2].type != MSGPACK_OBJECT_STR || a[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        a[4].type != MSGPACK_OBJECT_BIN)
        return WF_EFORMAT;
    memcpy(out->run_id, a[1].via.str.ptr, a[1].via.str.size);
    out->run_id[a[1].via.str.size] = 0;
    out->fp = a[3].via.u64;
    out->start = a[4].via.bin.ptr;
    out->start_len = a[4].via.bin.size;
    out->w = wf__cluster_find_wf(c, a[2].via.str.ptr, a[2].via.str.size);
    return out->w ? 0 : WF_ENOTFOUND;
}

typedef struct settled {
    atomic_int rc;
} settled;

static void on_settled(int rc, uint64_t ticket, void *user)
{
    (void)ticket;
    atomic_store(&((settled *)user)->rc, rc);
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
    int rc = wf_store_put_result(c->store, run_id, status, sb.data, sb.size, on_settled, &s,
                                 &ticket);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0)
        rc = wf_store_wait(c->store, ticket);
    if (rc == 0)
        rc = atomic_load(&s.rc);
    if (rc == 0) {
        char subj[NATS_KEY_MAX + 96], key[NATS_KEY_MAX];
        wf__nats_key(key, run_id);
        snprintf(subj, sizeof subj, "%s.done.%s", c->prefix, key);
        natsConnection_Publish(c->nc, subj, NULL, 0); /* a nudge: handlers also poll */
    }
    return rc;
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

static void handle(wf_cluster *c, natsMsg *msg)
{
    sub_msg sm;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = decode_submission(c, msg, &sm, &u);
    if (rc == WF_EFORMAT) {
        count(c, S_MALFORMED);
        natsMsg_Term(msg, NULL); /* never redelivered: it can never run */
        msgpack_unpacked_destroy(&u);
        return;
    }
    if (rc == WF_ENOTFOUND) {
        count(c, S_UNKNOWN);
        natsMsg_NakWithDelay(msg, 1000, NULL); /* another worker may know it */
        msgpack_unpacked_destroy(&u);
        return;
    }
    wf_store_run_info info = {0};
    rc = claim_run(c, &sm, &info);
    if (rc == WF_ESTATE) {
        count(c, S_DUP); /* finished already: its result is durable */
        natsMsg_Ack(msg, NULL);
        msgpack_unpacked_destroy(&u);
        return;
    }
    if (rc) {
        if (rc == WF_ELEASE)
            count(c, S_BUSY);
        natsMsg_NakWithDelay(msg, rc == WF_ELEASE ? c->p.lease_ms / 2 : 500, NULL);
        msgpack_unpacked_destroy(&u);
        return;
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
        return;
    }
    active a = {.c = c, .msg = msg, .sm = &sm};
    wf__nats_key(a.key, sm.run_id);
    snprintf(a.in_subj, sizeof a.in_subj, "%s.in.%s", c->prefix, a.key);
    wf_run_params rp;
    wf_run_params_init(&rp);
    rp.stream_internal = 1; /* WorkflowIdleEvent: when to checkpoint and deliver inputs */
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
        return;
    }
    const wf_registry *reg = wf_workflow_registry(sm.w->wf);
    const wf_event_type *t_idle = wf_registry_builtin(reg, WF_WORKFLOW_IDLE_EVENT);
    const wf_event_type *t_state = wf_registry_builtin(reg, WF_STEP_STATE_CHANGED);
    const wf_event_type *t_unh = wf_registry_builtin(reg, WF_UNHANDLED_EVENT);
    int64_t keepalive = c->p.ack_wait_ms / 3, last = wf__cluster_mono_ms();
    for (;;) {
        wf_event *ev = NULL;
        rc = wf_handler_next_event(a.h, a.idle ? 20 : 100, &ev);
        if (rc == WF_ECLOSED)
            break;
        if (rc == 0) {
            const wf_event_type *t = wf_event_type_of(ev);
            if (t == t_idle) {
                a.idle = 1;
                checkpoint(&a);
                wf_store_set_status(c->store, sm.run_id, WF_STORE_WAITING, NULL);
            } else if (t == t_state) {
                /* step state notifications are not part of the run's stream */
            } else if (t == t_unh) {
                /* counted by the engine */
            } else if (c->p.stream_events) {
                void *buf = NULL;
                size_t len = 0;
                if (wf_event_to_msgpack(ev, &buf, &len) == 0) {
                    wf_store_rec r = {WF_STORE_REC_EVENT, buf, len};
                    if (wf_store_append(c->store, sm.run_id, &r, 1, NULL, NULL, NULL, NULL) != 0)
                        a.lost = 1;
                    wf_free(buf);
                }
            }
            wf_event_release(ev);
        }
        /* inputs are read when the run waits, and on each quiet tick (cancels): not after
         * every event, which would cost a round trip per event */
        if (rc == WF_ETIMEDOUT || (rc == 0 && a.idle))
            poll_inputs(&a);
        int64_t now = wf__cluster_mono_ms();
        if (now - last >= keepalive) {
            natsMsg_InProgress(msg, NULL);
            last = now;
        }
        if (a.lost || atomic_load(&c->stop)) {
            /* the lease is gone (another worker has the run) or we stop: give it up */
            wf_handler_cancel(a.h);
            wf_handler_wait(a.h, 5000, NULL);
            wf_handler_free(a.h);
            if (a.lost)
                natsMsg_Nak(msg, NULL);
            msgpack_unpacked_destroy(&u);
            return;
        }
    }
    wf_event *stop = NULL;
    rc = wf_handler_wait(a.h, 0, &stop);
    int32_t status = rc == 0                ? WF_STORE_DONE
                     : rc == WF_ERUNTIMEOUT ? WF_STORE_TIMED_OUT
                     : rc == WF_ECANCELLED  ? WF_STORE_CANCELLED
                                            : WF_STORE_FAILED;
    const char *emsg = NULL;
    if (rc)
        wf_handler_error(a.h, NULL, NULL, &emsg);
    void *sbuf = NULL;
    size_t slen = 0;
    if (stop)
        wf_event_to_msgpack(stop, &sbuf, &slen);
    rc = put_result(c, sm.run_id, status, rc ? (emsg ? emsg : wf_err_name(rc)) : NULL, sbuf, slen);
    wf_free(sbuf);
    wf_event_release(stop);
    wf_handler_free(a.h);
    if (rc == 0) {
        natsMsg_Ack(msg, NULL);
        count(c, S_DONE);
    } else {
        natsMsg_Nak(msg, NULL); /* not durable: run it again (here or elsewhere) */
    }
    msgpack_unpacked_destroy(&u);
}

static void *runner_main(void *arg)
{
    wf_cluster *c = arg;
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = (int64_t)c->p.ack_wait_ms * 1000000;
    so.Config.MaxDeliver = -1;
    so.Config.MaxAckPending = 100000;
    for (int attempt = 0; sub == NULL && !atomic_load(&c->stop); attempt++) {
        if (js_PullSubscribe(&sub, c->js, c->subj_submit, c->consumer, NULL, &so, NULL) !=
            NATS_OK) {
            sub = NULL;
            nats_Sleep(200); /* the server may be restarting: try again until stopped */
        }
    }
    while (!atomic_load(&c->stop)) {
        natsMsgList list = {0};
        natsStatus st = natsSubscription_Fetch(&list, sub, (int)c->p.fetch_batch, 500, NULL);
        if (st != NATS_OK && list.Count == 0) {
            if (st != NATS_TIMEOUT)
                nats_Sleep(100);
            natsMsgList_Destroy(&list);
            continue;
        }
        for (int i = 0; i < list.Count; i++)
            if (!atomic_load(&c->stop))
                handle(c, list.Msgs[i]);
        natsMsgList_Destroy(&list);
    }
    if (sub)
        natsSubscription_Destroy(sub); /* the durable consumer stays for the others */
    return NULL;
}

static void *renewer_main(void *arg)
{
    wf_cluster *c = arg;
    while (!atomic_load(&c->stop)) {
        int64_t wait = c->p.lease_ms / 3;
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
        if (!atomic_load(&c->stop))
            wf_store_renew(c->store, NULL);
    }
    return NULL;
}

int wf_cluster_work(wf_cluster *c, wf_executor *ex)
{
    if (c == NULL || ex == NULL)
        return WF_EINVAL;
    if (c->ex)
        return wf__set_error(WF_ESTATE, "wf_cluster_work: already working");
    c->runners = wf__calloc(c->p.runners, sizeof *c->runners);
    if (c->runners == NULL)
        return WF_ENOMEM;
    c->ex = ex;
    if (pthread_create(&c->renewer, NULL, renewer_main, c) != 0)
        return WF_ENOMEM;
    c->renewer_started = 1;
    for (uint32_t i = 0; i < c->p.runners; i++) {
        if (pthread_create(&c->runners[i], NULL, runner_main, c) != 0)
            return WF_ENOMEM;
        c->nrunners++;
    }
    return 0;
}
