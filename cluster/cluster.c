/*
 * cluster.c: wf_cluster (include/wf/cluster.h, docs/CLUSTER.md): the
 * connection, the registered workflows, submissions and handlers on the
 * submitter side, the runners on the worker side.
 *
 * NATS layout (prefix p, default "wfc"):
 *  - stream "<p>_work", work-queue retention, subject "<p>.submit": one
 *    message per submission, msgpack [1, run_id, workflow, fingerprint,
 *    start event bytes]; Nats-Msg-Id = run id (a resubmission in the
 *    duplicate window is dropped by the server); durable pull consumer
 *    "<p>_workers", explicit ack, ack wait from the parameters.
 *  - stream "<p>_io", subjects "<p>.in.<key>" (events and cancels sent into
 *    runs: msgpack [kind, event bytes]) and "<p>.done.<key>" (a nudge that a
 *    run's result is durable; the result itself is in the store).
 *  - the NATS store (store/nats.c) with prefix "<p>s": a run's lease, its
 *    journal (REC_EVENT: the streamed events, the handler's event stream),
 *    its checkpoint ([input cursor, snapshot]) and its result.
 * Shared fields: the workflow table is written before wf_cluster_work and
 * read-only after; counters are atomics; handlers have their own lock.
 */
#include "cluster_impl.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t wf__cluster_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void wf_cluster_params_init(wf_cluster_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->prefix = "wfc";
    p->replicas = 1;
    p->connect_attempts = 5;
    p->timeout_ms = 5000;
    p->ack_wait_ms = 10000;
    p->lease_ms = 10000;
    p->runners = 16;
    p->fetch_batch = 256;
    p->stream_events = 1;
    p->pullers = 2;
    p->index_runs = 1;
    p->lookup_runs = 1;
}

const cwf *wf__cluster_find_wf(const wf_cluster *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->nwfs; i++)
        if (strlen(c->wfs[i].name) == len && memcmp(c->wfs[i].name, name, len) == 0)
            return &c->wfs[i];
    return NULL;
}

/* ------------------------------------------------------------- open, free */

static wf_cluster_handler **hslot(wf_cluster *c, wf_cluster_handler *h)
{
    return &c->hb[h->hash & (c->hnb - 1)];
}

/* Under c->mu. */
static int table_add(wf_cluster *c, wf_cluster_handler *h)
{
    if (c->hn + 1 > c->hnb / 2) {
        size_t nb = c->hnb ? c->hnb * 2 : 256;
        wf_cluster_handler **b = wf__calloc(nb, sizeof *b);
        if (b == NULL)
            return WF_ENOMEM;
        for (size_t i = 0; i < c->hnb; i++)
            for (wf_cluster_handler *x = c->hb[i], *nx; x; x = nx) {
                nx = x->hnext;
                x->hnext = b[x->hash & (nb - 1)];
                b[x->hash & (nb - 1)] = x;
            }
        wf__free_mem(c->hb);
        c->hb = b;
        c->hnb = nb;
    }
    wf_cluster_handler **slot = hslot(c, h);
    h->hnext = *slot;
    *slot = h;
    c->hn++;
    return 0;
}

/* Under c->mu. */
static void table_del(wf_cluster *c, wf_cluster_handler *h)
{
    if (c->hnb == 0)
        return;
    for (wf_cluster_handler **p = hslot(c, h); *p; p = &(*p)->hnext)
        if (*p == h) {
            *p = h->hnext;
            c->hn--;
            return;
        }
}

/*
 * Results pushed by the workers once durable (core NATS, so at most once: a handler that
 * misses one reads the store): msgpack [[run_id, status, record], ...]. The record lands in
 * the open handlers of that run id; a malformed message is counted and dropped.
 */
static void on_results(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    wf_cluster *c = closure;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int ok = natsMsg_GetDataLength(msg) > 0 &&
             msgpack_unpack_next(&u, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                                 &off) == MSGPACK_UNPACK_SUCCESS &&
             u.data.type == MSGPACK_OBJECT_ARRAY;
    int landed = 0;
    pthread_mutex_lock(&c->mu);
    for (uint32_t i = 0; ok && i < u.data.via.array.size; i++) {
        const msgpack_object *e = &u.data.via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 3 ||
            e->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
            e->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            e->via.array.ptr[1].via.u64 < WF_STORE_DONE ||
            e->via.array.ptr[1].via.u64 > WF_STORE_CANCELLED ||
            e->via.array.ptr[2].type != MSGPACK_OBJECT_BIN) {
            ok = 0;
            break;
        }
        if (c->hnb == 0)
            continue;
        const char *id = e->via.array.ptr[0].via.str.ptr;
        uint32_t idlen = e->via.array.ptr[0].via.str.size;
        uint64_t hash = wf__hash(id, idlen);
        for (wf_cluster_handler *h = c->hb[hash & (c->hnb - 1)]; h; h = h->hnext) {
            if (h->hash != hash || h->pushed || strlen(h->run_id) != idlen ||
                memcmp(h->run_id, id, idlen) != 0)
                continue;
            const msgpack_object *b = &e->via.array.ptr[2];
            h->res = wf__malloc(b->via.bin.size ? b->via.bin.size : 1);
            if (h->res == NULL)
                continue; /* the store has it: the wait reads it there */
            memcpy(h->res, b->via.bin.ptr, b->via.bin.size);
            h->res_len = b->via.bin.size;
            h->res_status = (int32_t)e->via.array.ptr[1].via.u64;
            h->pushed = 1;
            landed = 1;
        }
    }
    if (landed)
        pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (!ok)
        count(c, S_MALFORMED);
    msgpack_unpacked_destroy(&u);
    natsMsg_Destroy(msg);
}

void wf__cluster_push_results(wf_cluster *c, const void *packed, size_t len)
{
    natsConnection_Publish(c->nc, c->subj_res, packed, (int)len);
}

static int ensure_stream(wf_cluster *c, const char *name, const char **subjects, int n, int wq,
                         char **message)
{
    jsStreamInfo *si = NULL;
    jsErrCode ec = 0;
    natsStatus st = js_GetStreamInfo(&si, c->js, name, NULL, &ec);
    if (st == NATS_NOT_FOUND) {
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        sc.Name = name;
        sc.Subjects = subjects;
        sc.SubjectsLen = n;
        sc.Storage = js_FileStorage;
        sc.Replicas = c->p.replicas;
        sc.Retention = wq ? js_WorkQueuePolicy : js_LimitsPolicy;
        sc.AllowDirect = true;
        st = js_AddStream(&si, c->js, &sc, NULL, &ec);
    }
    if (si)
        jsStreamInfo_Destroy(si);
    if (st != NATS_OK) {
        if (message) {
            const char *t = nats_GetLastError(NULL);
            size_t len = strlen(name) + (t ? strlen(t) : 0) + 64;
            *message = wf__malloc(len);
            if (*message)
                snprintf(*message, len, "wf_cluster_open: stream %s: %s", name, t ? t : "?");
        }
        return WF_EIO;
    }
    return 0;
}

static int setup(wf_cluster *c, const char *url, char **message)
{
    natsOptions *o = NULL;
    if (natsOptions_Create(&o) != NATS_OK)
        return WF_ENOMEM;
    natsStatus st = natsOptions_SetURL(o, url);
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(o, c->p.timeout_ms);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(o, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(o, 100);
    if (st == NATS_OK && c->p.creds_file)
        st = natsOptions_SetUserCredentialsFromFiles(o, c->p.creds_file, NULL);
    for (int i = 0; st == NATS_OK && i < c->p.connect_attempts; i++) {
        if (i)
            nats_Sleep(250);
        st = natsConnection_Connect(&c->nc, o);
        if (st == NATS_OK)
            break;
        c->nc = NULL;
        if (i + 1 < c->p.connect_attempts)
            st = NATS_OK;
    }
    natsOptions_Destroy(o);
    if (c->nc == NULL)
        return WF_EIO; /* the store already said why (it connects first) */
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = c->p.timeout_ms;
    jo.PublishAsync.MaxPending = 65536;
    if (natsConnection_JetStream(&c->js, c->nc, &jo) != NATS_OK)
        return WF_ENOMEM;
    char in[96], done[96];
    snprintf(in, sizeof in, "%s.in.>", c->prefix);
    snprintf(done, sizeof done, "%s.done.>", c->prefix);
    const char *work_s[] = {c->subj_submit};
    const char *io_s[] = {in, done};
    int rc = ensure_stream(c, c->stream_work, work_s, 1, 1, message);
    if (rc == 0)
        rc = ensure_stream(c, c->stream_io, io_s, 2, 0, message);
    if (rc)
        return rc;
    if (natsConnection_Subscribe(&c->done_sub, c->nc, c->subj_res, on_results, c) != NATS_OK)
        return WF_EIO;
    natsSubscription_SetPendingLimits(c->done_sub, -1, 256 * 1024 * 1024);
    return 0;
}

int wf_cluster_open(wf_cluster **out, const char *url, const wf_cluster_params *params,
                    char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = NULL;
    if (out == NULL || url == NULL || *url == 0)
        return WF_EINVAL;
    wf_cluster_params p;
    if (params)
        p = *params;
    else
        wf_cluster_params_init(&p);
    if (p.prefix == NULL)
        p.prefix = "wfc";
    if (p.ack_wait_ms < 100 || p.lease_ms < 100 || p.runners == 0 || p.runners > 1024 ||
        p.fetch_batch == 0 || p.fetch_batch > 1024 || p.pullers > 64 || strlen(p.prefix) > 60)
        return wf__set_error(WF_EINVAL, "wf_cluster_open: invalid parameters");
    wf_cluster *c = wf__calloc(1, sizeof *c);
    if (c == NULL)
        return WF_ENOMEM;
    c->p = p;
    c->prefix = wf__strdup(p.prefix);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (c->prefix == NULL) {
        wf_cluster_free(c);
        return WF_ENOMEM;
    }
    snprintf(c->subj_submit, sizeof c->subj_submit, "%s.submit", c->prefix);
    snprintf(c->stream_work, sizeof c->stream_work, "%s_work", c->prefix);
    snprintf(c->stream_io, sizeof c->stream_io, "%s_io", c->prefix);
    snprintf(c->consumer, sizeof c->consumer, "%s_workers", c->prefix);
    snprintf(c->subj_res, sizeof c->subj_res, "%s.res", c->prefix);
    c->sq_tail = &c->sq_head;
    pthread_mutex_init(&c->smu, NULL);
    pthread_cond_init(&c->scv, NULL);
    msgpack_sbuffer_init(&c->sbuf);
    c->sbuf_ready = 1;
    /* The store first: its open says clearly when the server is unreachable. */
    wf_store_params sp;
    wf_store_params_init(&sp);
    sp.lease_ms = p.lease_ms;
    sp.owner = p.owner;
    wf_store_nats_params np;
    wf_store_nats_params_init(&np);
    char sprefix[96];
    snprintf(sprefix, sizeof sprefix, "%ss", c->prefix);
    np.prefix = sprefix;
    np.creds_file = p.creds_file;
    np.replicas = p.replicas;
    np.connect_attempts = p.connect_attempts;
    np.timeout_ms = p.timeout_ms;
    int rc = wf__nats_open(&c->store, &c->ns, url, &sp, &np, message);
    if (rc == 0)
        snprintf(c->kv_prefix, sizeof c->kv_prefix, "$KV.%s.", c->ns->bucket);
    if (rc == 0)
        rc = setup(c, url, message);
    if (rc) {
        wf_cluster_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void wf_cluster_free(wf_cluster *c)
{
    if (c == NULL)
        return;
    if (c->sbuf_ready) {
        /* submissions not published yet go out now (wf_cluster_flush waits for them) */
        pthread_mutex_lock(&c->smu);
        c->sstop = 1;
        pthread_cond_signal(&c->scv);
        pthread_mutex_unlock(&c->smu);
        if (c->linger_started)
            pthread_join(c->linger, NULL);
        if (c->js) {
            wf__cluster_publish_pending(c);
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MaxWait = 1000;
            js_PublishAsyncComplete(c->js, &po);
        }
    }
    atomic_store(&c->stop, 1);
    if (c->in_sub) {
        /* no wake after this: its callback may run until the drain completes */
        if (natsSubscription_Drain(c->in_sub) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(c->in_sub, 2000);
        natsSubscription_Destroy(c->in_sub);
        c->in_sub = NULL;
    }
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    for (uint32_t i = 0; i < c->npullers; i++)
        pthread_join(c->pullers[i], NULL);
    for (uint32_t i = 0; i < c->nrunners; i++)
        pthread_join(c->runners[i], NULL);
    wf__cluster_drop_queue(c);
    wf__free_mem(c->pullers);
    if (c->renewer_started)
        pthread_join(c->renewer, NULL);
    wf__cluster_drop_parked(c); /* after the renewer, which keeps them alive */
    wf__free_mem(c->runners);
    if (c->done_sub) {
        natsSubscription_Unsubscribe(c->done_sub);
        natsSubscription_Destroy(c->done_sub);
    }
    if (c->js)
        jsCtx_Destroy(c->js);
    if (c->nc) {
        natsConnection_Close(c->nc);
        natsConnection_Destroy(c->nc);
    }
    wf_store_free(c->store);
    wf__cluster_free_pullers(c);
    for (size_t i = 0; i < c->nwfs; i++) {
        wf__free_mem(c->wfs[i].name);
        wf_workflow_free(c->wfs[i].wf);
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    wf__free_mem(c->hb);
    if (c->sbuf_ready) {
        msgpack_sbuffer_destroy(&c->sbuf);
        pthread_mutex_destroy(&c->smu);
        pthread_cond_destroy(&c->scv);
    }
    wf__free_mem(c->prefix);
    wf__free_mem(c);
}

int wf_cluster_register(wf_cluster *c, const char *name, wf_workflow *wf)
{
    if (c == NULL || name == NULL || *name == 0 || wf == NULL)
        return WF_EINVAL;
    if (c->ex)
        return wf__set_error(WF_ESTATE, "wf_cluster_register: the cluster is working already");
    if (wf__cluster_find_wf(c, name, strlen(name)))
        return wf__set_error(WF_EEXIST, "wf_cluster_register: \"%s\" is registered", name);
    if (c->nwfs == MAX_WORKFLOWS)
        return WF_EOVERFLOW;
    int rc = wf_workflow_freeze(wf, NULL);
    if (rc)
        return rc;
    c->wfs[c->nwfs].name = wf__strdup(name);
    if (c->wfs[c->nwfs].name == NULL)
        return WF_ENOMEM;
    c->wfs[c->nwfs].wf = wf_workflow_retain(wf);
    c->wfs[c->nwfs].fp = wf_workflow_fingerprint(wf);
    c->nwfs++;
    return 0;
}

wf_store *wf_cluster_store(const wf_cluster *c)
{
    return c ? c->store : NULL;
}

void wf_cluster_get_stats(const wf_cluster *c, wf_cluster_stats *st)
{
    if (st == NULL)
        return;
    memset(st, 0, sizeof *st);
    if (c == NULL)
        return;
    uint64_t *f = &st->submitted;
    for (int i = 0; i < 13; i++)
        f[i] = atomic_load(&((wf_cluster *)c)->st[i]);
}

/* ------------------------------------------------------------ submitting */

/*
 * Submissions are packed: a message on "<p>.submit" carries up to SUBMIT_BATCH runs, msgpack
 * [2, [[run_id, workflow, fingerprint, start event], ...]] (one stored message, one delivery
 * and one ack for the batch instead of one each per run). A batch is published when full,
 * by wf_cluster_flush, before a handler waits or reads, and otherwise by the linger thread
 * after at most SUBMIT_LINGER_MS. Under c->smu.
 */
static int publish_batch_locked(wf_cluster *c)
{
    if (c->sn == 0)
        return 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint32(&pk, 2);
    msgpack_pack_array(&pk, c->sn);
    msgpack_sbuffer_write(&sb, c->sbuf.data, c->sbuf.size);
    uint32_t n = c->sn;
    c->sn = 0;
    msgpack_sbuffer_clear(&c->sbuf);
    natsMsg *m = NULL;
    natsStatus st =
        sb.data ? natsMsg_Create(&m, c->subj_submit, NULL, sb.data, (int)sb.size) : NATS_NO_MEMORY;
    msgpack_sbuffer_destroy(&sb);
    if (st == NATS_OK)
        st = js_PublishMsgAsync(c->js, &m, NULL);
    if (m)
        natsMsg_Destroy(m);
    if (st != NATS_OK)
        return wf__set_error(WF_EIO, "wf_cluster_submit: %u submissions not published: %s", n,
                             natsStatus_GetText(st));
    return 0;
}

static void *linger_main(void *arg)
{
    wf_cluster *c = arg;
    pthread_mutex_lock(&c->smu);
    while (!c->sstop) {
        if (c->sn == 0) {
            pthread_cond_wait(&c->scv, &c->smu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += SUBMIT_LINGER_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&c->scv, &c->smu, &ts);
        publish_batch_locked(c); /* a failure: the runs' waits time out; flush says WF_EIO */
    }
    publish_batch_locked(c);
    pthread_mutex_unlock(&c->smu);
    return NULL;
}

/* Publishes the submissions not published yet. */
int wf__cluster_publish_pending(wf_cluster *c)
{
    pthread_mutex_lock(&c->smu);
    int rc = publish_batch_locked(c);
    pthread_mutex_unlock(&c->smu);
    return rc;
}

int wf_cluster_submit(wf_cluster *c, const char *name, wf_event *start_event, const char *run_id,
                      wf_cluster_handler **handler)
{
    if (handler)
        *handler = NULL;
    if (c == NULL || name == NULL || start_event == NULL || run_id == NULL || *run_id == 0 ||
        strlen(run_id) > WF__STORE_ID_MAX) {
        wf_event_release(start_event);
        return WF_EINVAL;
    }
    const cwf *w = wf__cluster_find_wf(c, name, strlen(name));
    if (w == NULL) {
        wf_event_release(start_event);
        return wf__set_error(WF_ENOTFOUND, "wf_cluster_submit: no workflow \"%s\" registered",
                             name);
    }
    void *ev = NULL;
    size_t evlen = 0;
    int rc = wf_event_to_msgpack(start_event, &ev, &evlen);
    wf_event_release(start_event);
    if (rc)
        return rc;
    if (handler) {
        rc = wf_cluster_handler_open(c, name, run_id, handler);
        if (rc) {
            wf_free(ev);
            return rc;
        }
        (*handler)->submitted = 1;
        (*handler)->since = wf__cluster_mono_ms();
    }
    pthread_mutex_lock(&c->smu);
    if (!c->linger_started) {
        if (pthread_create(&c->linger, NULL, linger_main, c) == 0)
            c->linger_started = 1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &c->sbuf, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_str_with_body(&pk, run_id, strlen(run_id));
    msgpack_pack_str_with_body(&pk, name, strlen(name));
    msgpack_pack_uint64(&pk, w->fp);
    msgpack_pack_bin_with_body(&pk, ev, evlen);
    wf_free(ev);
    c->sn++;
    if (c->sn >= SUBMIT_BATCH || c->sbuf.size >= SUBMIT_BYTES || !c->linger_started)
        rc = publish_batch_locked(c);
    else if (c->sn == 1)
        pthread_cond_signal(&c->scv);
    pthread_mutex_unlock(&c->smu);
    if (rc) {
        if (handler) {
            wf_cluster_handler_free(*handler);
            *handler = NULL;
        }
        return rc;
    }
    count(c, S_SUBMITTED);
    return 0;
}

int wf_cluster_flush(wf_cluster *c, int64_t timeout_ms)
{
    if (c == NULL)
        return WF_EINVAL;
    int rc = wf__cluster_publish_pending(c);
    if (rc)
        return rc;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = timeout_ms < 0 ? 3600000 : timeout_ms;
    natsStatus st = js_PublishAsyncComplete(c->js, &po);
    if (st == NATS_OK)
        return 0;
    return st == NATS_TIMEOUT ? WF_ETIMEDOUT : WF_EIO;
}

/* -------------------------------------------------------------- handlers */

int wf_cluster_handler_open(wf_cluster *c, const char *name, const char *run_id,
                            wf_cluster_handler **out)
{
    if (out)
        *out = NULL;
    if (c == NULL || name == NULL || run_id == NULL || *run_id == 0 || out == NULL ||
        strlen(run_id) > WF__STORE_ID_MAX)
        return WF_EINVAL;
    const cwf *w = wf__cluster_find_wf(c, name, strlen(name));
    if (w == NULL)
        return wf__set_error(WF_ENOTFOUND, "wf_cluster_handler_open: no workflow \"%s\"", name);
    wf_cluster_handler *h = wf__calloc(1, sizeof *h);
    if (h == NULL)
        return WF_ENOMEM;
    h->c = c;
    h->w = w;
    h->run_id = wf__strdup(run_id);
    if (h->run_id == NULL) {
        wf__free_mem(h);
        return WF_ENOMEM;
    }
    wf__nats_key(h->key, run_id);
    h->hash = wf__hash(run_id, strlen(run_id));
    pthread_mutex_lock(&c->mu);
    int rc = table_add(c, h);
    pthread_mutex_unlock(&c->mu);
    if (rc) {
        wf__free_mem(h->run_id);
        wf__free_mem(h);
        return rc;
    }
    *out = h;
    return 0;
}

void wf_cluster_handler_free(wf_cluster_handler *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->c->mu);
    table_del(h->c, h);
    pthread_mutex_unlock(&h->c->mu);
    wf__free_mem(h->res);
    wf__free_mem(h->run_id);
    wf__free_mem(h->message);
    wf__free_mem(h);
}

const char *wf_cluster_handler_run_id(const wf_cluster_handler *h)
{
    return h ? h->run_id : NULL;
}

const char *wf_cluster_handler_message(const wf_cluster_handler *h)
{
    return h && h->message ? h->message : "";
}

uint64_t wf_cluster_handler_cursor(const wf_cluster_handler *h)
{
    return h ? h->cursor : 0;
}

void wf_cluster_handler_seek(wf_cluster_handler *h, uint64_t cursor)
{
    if (h)
        h->cursor = cursor;
}

/* The result record: msgpack [message or nil, stop event bytes or nil]. */
static int decode_result(wf_cluster_handler *h, int32_t status, const void *data, size_t len,
                         wf_event **result)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = WF_ECORRUPT;
    if (msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2) {
        const msgpack_object *a = u.data.via.array.ptr;
        wf__free_mem(h->message);
        h->message = NULL;
        if (a[0].type == MSGPACK_OBJECT_STR) {
            h->message = wf__malloc(a[0].via.str.size + 1);
            if (h->message) {
                memcpy(h->message, a[0].via.str.ptr, a[0].via.str.size);
                h->message[a[0].via.str.size] = 0;
            }
        }
        rc = status == WF_STORE_DONE      ? 0
             : status == WF_STORE_TIMED_OUT ? WF_ERUNTIMEOUT
             : status == WF_STORE_CANCELLED ? WF_ECANCELLED
                                            : WF_ESTEP;
        if (rc == 0 && result && a[1].type == MSGPACK_OBJECT_BIN) {
            int d = wf_event_from_msgpack(wf_workflow_registry(h->w->wf), a[1].via.bin.ptr,
                                          a[1].via.bin.size, result, NULL, NULL);
            if (d)
                rc = d;
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

int wf_cluster_handler_wait(wf_cluster_handler *h, int64_t timeout_ms, wf_event **result)
{
    if (result)
        *result = NULL;
    if (h == NULL)
        return WF_EINVAL;
    wf_cluster *c = h->c;
    if (h->submitted)
        wf__cluster_publish_pending(c);
    int64_t now = wf__cluster_mono_ms();
    int64_t end = timeout_ms < 0 ? INT64_MAX : now + timeout_ms;
    /* A run submitted here has its result pushed (on_results): the store is read only as the
     * fallback for a push that did not arrive (core NATS is at most once, a worker may die
     * between its end and its push), every 500 ms, and at once for a run submitted over a
     * second ago. A handler opened on any run reads the store at once. */
    int64_t next_read = h->submitted && now - h->since < 1000 ? now + 500 : now;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        while (!h->pushed && !atomic_load(&c->stop)) {
            now = wf__cluster_mono_ms();
            int64_t until = next_read < end ? next_read : end;
            if (now >= until)
                break;
            int64_t wait = until - now;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        }
        void *pres = NULL;
        size_t plen = 0;
        int32_t pstatus = 0;
        if (h->pushed) { /* res stays: set once, never written again, freed with h */
            pres = h->res;
            plen = h->res_len;
            pstatus = h->res_status;
        }
        pthread_mutex_unlock(&c->mu);
        if (pres)
            return decode_result(h, pstatus, pres, plen, result);
        now = wf__cluster_mono_ms();
        if (now >= next_read) {
            int32_t status = 0;
            void *data = NULL;
            size_t len = 0;
            int rc = wf_store_get_result(c->store, h->run_id, &status, &data, &len);
            if (rc == 0) {
                rc = decode_result(h, status, data, len, result);
                wf_free(data);
                return rc;
            }
            if (rc != WF_EAGAIN && rc != WF_ENOTFOUND && rc != WF_EIO && rc != WF_ETIMEDOUT)
                return rc;
            next_read = wf__cluster_mono_ms() + (h->submitted ? 500 : 200);
        }
        if (wf__cluster_mono_ms() >= end || atomic_load(&c->stop))
            return WF_ETIMEDOUT;
    }
}

typedef struct one_rec {
    wf_cluster_handler *h;
    wf_event *ev;
    int rc;
    uint64_t seq;
    int got;
} one_rec;

static int take_event(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    one_rec *o = user;
    o->seq = seq;
    if (kind != WF_STORE_REC_EVENT)
        return 0; /* other records: skipped */
    o->got = 1;
    o->rc = wf_event_from_msgpack(wf_workflow_registry(o->h->w->wf), data, len, &o->ev, NULL,
                                  NULL);
    return 1;
}

int wf_cluster_handler_next_event(wf_cluster_handler *h, int64_t timeout_ms, wf_event **ev)
{
    if (ev)
        *ev = NULL;
    if (h == NULL || ev == NULL)
        return WF_EINVAL;
    if (h->submitted)
        wf__cluster_publish_pending(h->c);
    int64_t end = timeout_ms < 0 ? INT64_MAX : wf__cluster_mono_ms() + timeout_ms;
    for (;;) {
        one_rec o = {.h = h};
        uint64_t next = h->cursor;
        int rc = wf_store_read_journal(h->c->store, h->run_id, h->cursor, 16, take_event, &o,
                                       &next);
        if (rc == 0) {
            h->cursor = o.got ? o.seq + 1 : next;
            if (o.got) {
                if (o.rc)
                    return o.rc;
                *ev = o.ev;
                return 0;
            }
            wf_store_run_info info;
            if (wf_store_get_run(h->c->store, h->run_id, &info) == 0) {
                int ended = info.status >= WF_STORE_DONE && info.next_seq <= h->cursor;
                wf_store_run_info_clear(&info);
                if (ended)
                    return WF_ECLOSED;
            }
        } else if (rc != WF_ENOTFOUND && rc != WF_EIO && rc != WF_ETIMEDOUT) {
            return rc;
        }
        if (wf__cluster_mono_ms() >= end)
            return WF_ETIMEDOUT;
        nats_Sleep(10); /* bounded poll: the journal has no push path here */
    }
}

static int send_input(wf_cluster_handler *h, int kind, wf_event *ev)
{
    if (h->submitted)
        wf__cluster_publish_pending(h->c);
    void *buf = NULL;
    size_t len = 0;
    int rc = ev ? wf_event_to_msgpack(ev, &buf, &len) : 0;
    wf_event_release(ev);
    if (rc)
        return rc;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint32(&pk, (uint32_t)kind);
    if (buf)
        msgpack_pack_bin_with_body(&pk, buf, len);
    else
        msgpack_pack_nil(&pk);
    wf_free(buf);
    char subj[NATS_KEY_MAX + 96];
    snprintf(subj, sizeof subj, "%s.in.%s", h->c->prefix, h->key);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = h->c->p.timeout_ms;
    jsPubAck *pa = NULL;
    natsStatus st = js_Publish(&pa, h->c->js, subj, sb.data, (int)sb.size, &po, NULL);
    msgpack_sbuffer_destroy(&sb);
    if (pa)
        jsPubAck_Destroy(pa);
    return st == NATS_OK ? 0 : wf__set_error(WF_EIO, "send: %s", natsStatus_GetText(st));
}

int wf_cluster_handler_send_event(wf_cluster_handler *h, wf_event *ev)
{
    if (h == NULL || ev == NULL) {
        wf_event_release(ev);
        return WF_EINVAL;
    }
    return send_input(h, IN_EVENT, ev);
}

int wf_cluster_handler_cancel(wf_cluster_handler *h)
{
    return h ? send_input(h, IN_CANCEL, NULL) : WF_EINVAL;
}

