/*
 * nats_writer.c: the NATS store's queue and its writer thread. Callers
 * queue operations under s->mu; the one writer thread takes the whole
 * queue and runs it as rounds: the round's journal records are published
 * asynchronously and awaited together, checkpoints and results are
 * published in chunks, then each run written in the round gets one
 * compare-and-set of its meta record (that CAS is the commit: records it
 * does not count are never read). Synchronous operations (claim, release,
 * renew, remove, flush) end a round and run alone, in queue order. Then
 * the round settles: tickets durable, callbacks, synchronous callers woken.
 * Shared fields: the queue, tickets and the run map under s->mu; a run's
 * meta and revision belong to the writer thread.
 */
#include "nats_impl.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------- the queue */

int wf__nats_enqueue_locked(nstore *s, nop *op)
{
    while (!op->sync && s->queued > 0 && s->queued + op->bytes > s->p.queue_bytes) {
        if (s->p.full == WF_STORE_FULL_FAIL)
            return WF_EOVERFLOW;
        if (pthread_equal(pthread_self(), s->writer))
            return WF_EBUSY;
        pthread_cond_signal(&s->cv_writer);
        pthread_cond_wait(&s->cv_done, &s->mu);
    }
    if (s->stop)
        return WF_ESHUTDOWN;
    op->ticket = ++s->tickets;
    op->next = NULL;
    int wake = s->head == NULL || op->sync;
    *s->tail = op;
    s->tail = &op->next;
    s->queued += op->bytes;
    if (wake)
        pthread_cond_signal(&s->cv_writer);
    return 0;
}

int wf__nats_run_sync(nstore *s, nop *op)
{
    if (pthread_equal(pthread_self(), s->writer))
        return WF_EBUSY;
    op->sync = 1;
    pthread_mutex_lock(&s->mu);
    int rc = wf__nats_enqueue_locked(s, op);
    if (rc == 0) {
        while (!op->finished)
            pthread_cond_wait(&s->cv_done, &s->mu);
        rc = op->rc;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ------------------------------------------------------------ a round */

static uint64_t run_epoch(const nrun *r)
{
    return r->rev ? r->m.epoch : 1;
}

/* Publishes one journal record asynchronously (awaited by the round). */
static int pub_rec(nstore *s, const nrun *r, uint64_t seq, const nrec *rec)
{
    char subj[NATS_KEY_MAX + 64], v[24];
    snprintf(subj, sizeof subj, "%s.d.j.%s", s->prefix, r->key);
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, subj, NULL, (const char *)rec->data, (int)rec->len) != NATS_OK)
        return WF_ENOMEM;
    snprintf(v, sizeof v, "%llu", (unsigned long long)seq);
    natsStatus st = natsMsgHeader_Set(m, "Wf-Seq", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)run_epoch(r));
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Wf-Ep", v);
    snprintf(v, sizeof v, "%u", rec->kind);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Wf-Kind", v);
    if (st == NATS_OK)
        st = js_PublishMsgAsync(s->js, &m, NULL); /* takes m on success */
    if (m)
        natsMsg_Destroy(m);
    return st == NATS_OK ? 0 : WF_EIO;
}

/*
 * The publish-ack callback (the client's thread) for every async publish of
 * the store: a message with header Wf-Blob or Wf-Cas reports to the round's
 * op or run of that index; the writer reads what it wrote only after
 * js_PublishAsyncComplete, so each field has one writer at a time.
 */
void wf__nats_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    nstore *s = closure;
    const char *v = NULL;
    if (natsMsgHeader_Get(msg, "Wf-Blob", &v) == NATS_OK && v) {
        size_t i = strtoul(v, NULL, 10);
        if (i < s->cwblob) {
            nop *op = s->wblob[i];
            if (pa)
                __atomic_store_n(&op->bseq, pa->Sequence, __ATOMIC_RELEASE);
            else
                __atomic_store_n(&op->berr, 1, __ATOMIC_RELEASE);
        }
    } else if (natsMsgHeader_Get(msg, "Wf-Cas", &v) == NATS_OK && v) {
        size_t i = strtoul(v, NULL, 10);
        if (i < s->cwcas) {
            nrun *r = s->wcas[i];
            if (pa) {
                __atomic_store_n(&r->cas_rev, pa->Sequence, __ATOMIC_RELEASE);
                __atomic_store_n(&r->cas_rc, 0, __ATOMIC_RELEASE);
            } else {
                /* 10071: wrong last sequence: someone else wrote the run (or created it) */
                __atomic_store_n(&r->cas_rc, pae && pae->ErrCode == 10071 ? WF_ELEASE : WF_EIO,
                                 __ATOMIC_RELEASE);
            }
        }
    } else if (pae) {
        atomic_fetch_add(&s->pub_errs, 1);
    }
    natsMsg_Destroy(msg);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    while (nc < need)
        nc *= 2;
    void *p = wf__realloc(*arr, nc * elem);
    if (p == NULL)
        return WF_ENOMEM;
    *arr = p;
    *cap = nc;
    return 0;
}

/* Publishes data async on subj in chunks; the first chunk reports its sequence to op. */
static int pub_blob_async(nstore *s, nop *op, const char *subj, const void *data, size_t len)
{
    uint64_t chunks = len ? (len + NATS_CHUNK - 1) / NATS_CHUNK : 1;
    if (grow((void **)&s->wblob, &s->cwblob, s->nwblob + 1, sizeof *s->wblob))
        return WF_ENOMEM;
    char idx[24];
    snprintf(idx, sizeof idx, "%zu", s->nwblob);
    s->wblob[s->nwblob++] = op;
    op->bseq = 0;
    op->berr = 0;
    op->bn = chunks;
    for (uint64_t i = 0; i < chunks; i++) {
        size_t off = (size_t)i * NATS_CHUNK;
        size_t part = len - off < NATS_CHUNK ? len - off : NATS_CHUNK;
        natsMsg *m = NULL;
        if (natsMsg_Create(&m, subj, NULL, part ? (const char *)data + off : NULL, (int)part) !=
            NATS_OK)
            return WF_ENOMEM;
        natsStatus st = i == 0 ? natsMsgHeader_Set(m, "Wf-Blob", idx) : NATS_OK;
        if (st == NATS_OK)
            st = js_PublishMsgAsync(s->js, &m, NULL);
        if (m)
            natsMsg_Destroy(m);
        if (st != NATS_OK)
            return WF_EIO;
    }
    return 0;
}

/* Queues the compare-and-set of r's pending meta on revision r->rev (0: create). */
static int pub_cas_async(nstore *s, nrun *r)
{
    void *buf;
    size_t len;
    int rc = wf__nats_meta_pack(&r->pm, &buf, &len);
    if (rc)
        return rc;
    if (grow((void **)&s->wcas, &s->cwcas, s->nwcas + 1, sizeof *s->wcas)) {
        wf__free_mem(buf);
        return WF_ENOMEM;
    }
    char subj[NATS_KEY_MAX + 128], idx[24], rev[24];
    snprintf(subj, sizeof subj, "$KV.%s.%s", s->bucket, r->key);
    snprintf(idx, sizeof idx, "%zu", s->nwcas);
    snprintf(rev, sizeof rev, "%llu", (unsigned long long)r->rev);
    s->wcas[s->nwcas++] = r;
    r->cas_rc = WF_EIO; /* until the ack says otherwise */
    natsMsg *m = NULL;
    natsStatus st = natsMsg_Create(&m, subj, NULL, buf, (int)len);
    wf__free_mem(buf);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", rev);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Wf-Cas", idx);
    if (st == NATS_OK)
        st = js_PublishMsgAsync(s->js, &m, NULL);
    if (m)
        natsMsg_Destroy(m);
    return st == NATS_OK ? 0 : WF_EIO;
}

/* Waits for every async publish of the round: 0, or 1 when some never got an answer. */
static int await_acks(nstore *s)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = s->timeout_ms;
    natsStatus st = js_PublishAsyncComplete(s->js, &po);
    if (st != NATS_OK) {
        natsMsgList pending = {0};
        if (js_PublishAsyncGetPendingList(&pending, s->js) == NATS_OK)
            natsMsgList_Destroy(&pending);
        return 1;
    }
    return 0;
}

static int start_pending(nrun *r, nrun **dirty)
{
    if (r->dirty)
        return 0;
    int rc = wf__nats_meta_copy(&r->pm, &r->m);
    if (rc)
        return rc;
    r->dirty = 1;
    r->wnext = *dirty;
    *dirty = r;
    return 0;
}

static void run_batch(nstore *s, nop *first, nop *stop)
{
    if (first == stop)
        return;
    /* 1. publish everything async: journal records, blobs, creation indexes; await together */
    atomic_store(&s->pub_errs, 0);
    s->nwblob = s->nwcas = 0;
    /* sized before any publish: the ack callback reads these arrays meanwhile */
    size_t nops = 0;
    for (nop *op = first; op != stop; op = op->next)
        nops++;
    if (grow((void **)&s->wblob, &s->cwblob, nops, sizeof *s->wblob) ||
        grow((void **)&s->wcas, &s->cwcas, nops, sizeof *s->wcas)) {
        for (nop *op = first; op != stop; op = op->next)
            op->rc = op->run->werr = WF_ENOMEM;
        return;
    }
    for (nop *op = first; op != stop; op = op->next) {
        nrun *r = op->run;
        if (r->werr) {
            op->rc = r->werr;
            continue;
        }
        int rc = 0;
        char subj[NATS_KEY_MAX + 64];
        switch (op->type) {
        case NOP_CREATE:
            rc = pub_blob_async(s, op, s->subj_created, r->run_id, strlen(r->run_id));
            break;
        case NOP_APPEND:
            for (uint32_t i = 0; i < op->n && rc == 0; i++)
                rc = pub_rec(s, r, op->seq + i, &op->recs[i]);
            break;
        case NOP_CKPT:
        case NOP_RESULT:
            snprintf(subj, sizeof subj, "%s.d.%c.%s", s->prefix, op->type == NOP_CKPT ? 'c' : 'r',
                     r->key);
            rc = pub_blob_async(s, op, subj, op->data, op->len);
            break;
        default:
            break;
        }
        if (rc) {
            op->rc = rc;
            r->werr = rc;
        }
    }
    int lost = await_acks(s) || atomic_load(&s->pub_errs);
    for (size_t i = 0; i < s->nwblob; i++) {
        nop *op = s->wblob[i];
        if (op->rc == 0 && (__atomic_load_n(&op->berr, __ATOMIC_ACQUIRE) ||
                            __atomic_load_n(&op->bseq, __ATOMIC_ACQUIRE) == 0))
            op->rc = op->run->werr = WF_EIO;
    }
    /* 2. the round's meta per run, in queue order */
    int64_t now = wf__nats_now(s);
    nrun *dirty = NULL;
    for (nop *op = first; op != stop; op = op->next) {
        nrun *r = op->run;
        if (op->rc)
            continue;
        if (lost && op->type == NOP_APPEND) {
            op->rc = r->werr = WF_EIO;
            continue;
        }
        if (r->werr) {
            op->rc = r->werr;
            continue;
        }
        if (op->type == NOP_CREATE) {
            /* the meta of a new run: created by the round's compare-and-set on revision 0 */
            nmeta m = {0};
            uint64_t eps[2] = {1, 0};
            m.workflow = op->workflow;
            m.owner = s->owner;
            m.status = WF_STORE_RUNNING;
            m.lease_until = now + s->p.lease_ms;
            m.created = m.updated = now;
            m.create_seq = op->bseq;
            m.epoch = 1;
            m.nep = 1;
            m.eps = eps;
            int rc = wf__nats_meta_copy(&r->m, &m);
            r->rev = 0;
            if (rc == 0)
                rc = start_pending(r, &dirty);
            if (rc)
                op->rc = r->werr = rc;
            else
                op->applied = 1;
            continue;
        }
        int rc = start_pending(r, &dirty);
        if (rc) {
            op->rc = r->werr = rc;
            continue;
        }
        op->applied = 1;
        nmeta *pm = &r->pm;
        pm->lease_until = now + s->p.lease_ms;
        switch (op->type) {
        case NOP_APPEND:
            pm->next_seq = op->seq + op->n;
            break;
        case NOP_STATUS:
            pm->status = op->status;
            pm->updated = now;
            break;
        case NOP_CKPT:
            pm->ckpt_seq = op->seq;
            pm->ckpt_sseq = op->bseq;
            pm->ckpt_n = op->bn;
            pm->ckpt_len = op->len;
            break;
        case NOP_RESULT:
            pm->status = op->status;
            pm->res_sseq = op->bseq;
            pm->res_n = op->bn;
            pm->res_len = op->len;
            wf__free_mem(pm->owner);
            pm->owner = NULL;
            pm->lease_until = 0;
            pm->updated = now;
            break;
        default:
            break;
        }
    }
    /* 3. one compare-and-set per run, all in flight at once: the commit */
    for (nrun *r = dirty; r; r = r->wnext) {
        int rc = pub_cas_async(s, r);
        if (rc)
            r->cas_rc = rc;
    }
    await_acks(s);
    for (nrun *r = dirty; r; r = r->wnext) {
        int rc = __atomic_load_n(&r->cas_rc, __ATOMIC_ACQUIRE);
        if (rc == 0) {
            nmeta t = r->m;
            r->m = r->pm;
            r->pm = t;
            r->rev = __atomic_load_n(&r->cas_rev, __ATOMIC_ACQUIRE);
        }
        if (rc) {
            if (r->rev == 0 && rc == WF_ELEASE) {
                /* a create that found the key: live (WF_EEXIST), or the marker a removed
                 * run left, which kvStore_Create writes over */
                uint64_t rev = 0;
                rc = wf__nats_meta_put(s, r->key, &r->pm, &rev, 1);
                if (rc == 0) {
                    nmeta t = r->m;
                    r->m = r->pm;
                    r->pm = t;
                    r->rev = rev;
                }
            }
            if (rc)
                r->werr = rc;
        }
        r->cas_rc = rc;
        wf__nats_meta_clear(&r->pm);
        r->dirty = 0;
    }
    for (nop *op = first; op != stop; op = op->next)
        if (op->applied)
            op->rc = op->run->cas_rc;
}

/* ------------------------------------------------------------ sync ops */

static void claim(nstore *s, nop *op)
{
    char key[NATS_KEY_MAX];
    wf__nats_key(key, op->name);
    nmeta m;
    uint64_t rev = 0;
    int rc = wf__nats_meta_get(s, key, &m, &rev);
    if (rc) {
        op->rc = rc;
        return;
    }
    int64_t now = wf__nats_now(s);
    pthread_mutex_lock(&s->mu);
    nrun *held = wf__nats_map_find(s, op->name, wf__hash(op->name, strlen(op->name)));
    int mine = held && !held->closed && !held->err && held->rev == rev;
    pthread_mutex_unlock(&s->mu);
    if (m.status >= WF_STORE_DONE)
        rc = WF_ESTATE;
    else if (!mine && m.owner && strcmp(m.owner, s->owner) != 0 && m.lease_until > now)
        rc = WF_ELEASE;
    if (rc == 0 && !mine) {
        uint64_t *eps = wf__realloc(m.eps, (m.nep + 1) * 2 * sizeof(uint64_t));
        if (eps == NULL) {
            rc = WF_ENOMEM;
        } else {
            m.eps = eps;
            m.epoch++;
            eps[2 * m.nep] = m.epoch;
            eps[2 * m.nep + 1] = m.next_seq;
            m.nep++;
            wf__free_mem(m.owner);
            m.owner = wf__strdup(s->owner);
            if (m.owner == NULL)
                rc = WF_ENOMEM;
            if (m.status == WF_STORE_RELEASED)
                m.status = WF_STORE_RUNNING;
            m.updated = now;
        }
    }
    m.lease_until = now + s->p.lease_ms;
    if (rc == 0)
        rc = wf__nats_meta_put(s, key, &m, &rev, 0);
    if (rc == 0 && !mine) {
        nrun *r = wf__nats_run_new(op->name);
        if (r == NULL) {
            rc = WF_ENOMEM;
        } else {
            r->m = m;
            memset(&m, 0, sizeof m);
            r->rev = rev;
            r->next_seq = r->m.next_seq;
            pthread_mutex_lock(&s->mu);
            nrun *old = wf__nats_map_find(s, op->name, r->hash);
            if (old) {
                old->closed = 1;
                if (!old->err)
                    old->err = WF_ELEASE;
                wf__nats_map_del(s, old);
                wf__nats_run_unref(old);
            }
            rc = wf__nats_map_add(s, r);
            if (rc)
                wf__nats_run_unref(r);
            pthread_mutex_unlock(&s->mu);
            if (rc == 0)
                wf__nats_info(op->name, &r->m, op->info, 1);
        }
    } else if (rc == 0) {
        wf__nats_meta_clear(&held->m);
        held->m = m;
        memset(&m, 0, sizeof m);
        held->rev = rev;
        wf__nats_info(op->name, &held->m, op->info, 1);
    }
    if (rc == 0 && (op->info->run_id == NULL || op->info->workflow == NULL))
        rc = WF_ENOMEM;
    wf__nats_meta_clear(&m);
    op->rc = rc;
}

static void release(nstore *s, nop *op)
{
    nrun *r = op->run;
    if (r->werr) {
        op->rc = r->werr;
        return;
    }
    int rc = wf__nats_meta_copy(&r->pm, &r->m);
    if (rc == 0) {
        wf__free_mem(r->pm.owner);
        r->pm.owner = NULL;
        r->pm.lease_until = 0;
        r->pm.status = WF_STORE_RELEASED;
        r->pm.updated = wf__nats_now(s);
        uint64_t rev = r->rev;
        rc = wf__nats_meta_put(s, r->key, &r->pm, &rev, 0);
        if (rc == 0)
            r->rev = rev;
    }
    wf__nats_meta_clear(&r->pm);
    op->rc = rc;
}

static void renew(nstore *s, nop *op)
{
    pthread_mutex_lock(&s->mu);
    size_t n = 0;
    nrun **runs = s->nruns ? wf__malloc(s->nruns * sizeof *runs) : NULL;
    if (s->nruns && runs == NULL) {
        pthread_mutex_unlock(&s->mu);
        op->rc = WF_ENOMEM;
        return;
    }
    for (size_t i = 0; i < s->nbuckets; i++)
        for (nrun *r = s->buckets[i]; r; r = r->next)
            if (!r->closed && !r->err && r->rev) {
                r->refs++;
                runs[n++] = r;
            }
    pthread_mutex_unlock(&s->mu);
    int64_t now = wf__nats_now(s);
    for (size_t i = 0; i < n; i++) {
        nrun *r = runs[i];
        int rc = r->werr ? r->werr : wf__nats_meta_copy(&r->pm, &r->m);
        if (rc == 0) {
            r->pm.lease_until = now + s->p.lease_ms;
            uint64_t rev = r->rev;
            rc = wf__nats_meta_put(s, r->key, &r->pm, &rev, 0);
            if (rc == 0) {
                nmeta t = r->m;
                r->m = r->pm;
                r->pm = t;
                r->rev = rev;
            }
            wf__nats_meta_clear(&r->pm);
        }
        if (rc == WF_ELEASE || rc == WF_ENOTFOUND) {
            op->lost++;
            r->werr = WF_ELEASE;
        } else if (rc && op->rc == 0) {
            op->rc = rc;
        }
        pthread_mutex_lock(&s->mu);
        if (r->werr && !r->err)
            r->err = r->werr;
        wf__nats_run_unref(r);
        pthread_mutex_unlock(&s->mu);
    }
    wf__free_mem(runs);
}

static void remove_run(nstore *s, nop *op)
{
    char key[NATS_KEY_MAX];
    wf__nats_key(key, op->name);
    nmeta m;
    int rc = wf__nats_meta_get(s, key, &m, NULL);
    if (rc) {
        op->rc = rc;
        return;
    }
    wf__nats_meta_clear(&m);
    static const char kinds[] = "jcr";
    for (int i = 0; i < 3 && rc == 0; i++) {
        char subj[NATS_KEY_MAX + 64];
        snprintf(subj, sizeof subj, "%s.d.%c.%s", s->prefix, kinds[i], key);
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = s->timeout_ms;
        jo.Stream.Purge.Subject = subj;
        rc = wf__nats_rc(js_PurgeStream(s->js, s->stream, &jo, NULL));
    }
    if (rc == 0)
        rc = wf__nats_rc(kvStore_Purge(s->kv, key, NULL));
    op->rc = rc;
}

/* ------------------------------------------------------------ the writer */

static void settle(nstore *s, nop *list)
{
    pthread_mutex_lock(&s->mu);
    uint64_t last = 0;
    for (nop *op = list; op; op = op->next) {
        last = op->ticket;
        s->queued -= op->bytes;
        nrun *r = op->run;
        if (r) {
            if (op->rc && !r->err)
                r->err = op->rc;
            int drop = (op->type == NOP_RESULT && op->rc == 0) ||
                       (op->type == NOP_RELEASE && op->rc == 0);
            if (drop && wf__nats_map_find(s, r->run_id, r->hash) == r) {
                wf__nats_map_del(s, r);
                wf__nats_run_unref(r);
            }
            if (op->type == NOP_CREATE && op->rc == WF_EEXIST)
                r->closed = 1;
        }
    }
    if (last)
        __atomic_store_n(&s->durable, last, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s->mu);
    for (nop *op = list; op; op = op->next)
        if (!op->sync && op->done)
            op->done(op->rc, op->ticket, op->user);
    pthread_mutex_lock(&s->mu);
    for (nop *op = list, *nx; op; op = nx) {
        nx = op->next;
        nrun *r = op->run;
        if (op->sync) {
            op->finished = 1; /* the caller may return (and free op) once mu is released */
            if (op->type == NOP_RELEASE && r)
                wf__nats_run_unref(r);
        } else {
            if (r)
                wf__nats_run_unref(r);
            wf__free_mem(op);
        }
    }
    pthread_cond_broadcast(&s->cv_done);
    pthread_mutex_unlock(&s->mu);
}

void *wf__nats_writer_main(void *arg)
{
    nstore *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->head == NULL && !s->stop)
            pthread_cond_wait(&s->cv_writer, &s->mu);
        if (s->head == NULL)
            break;
        nop *list = s->head;
        s->head = NULL;
        s->tail = &s->head;
        pthread_mutex_unlock(&s->mu);
        nop *start = list;
        for (nop *op = list;; op = op->next) {
            if (op == NULL || op->sync) {
                run_batch(s, start, op);
                if (op == NULL)
                    break;
                switch (op->type) {
                case NOP_CLAIM:
                    claim(s, op);
                    break;
                case NOP_RELEASE:
                    release(s, op);
                    break;
                case NOP_RENEW:
                    renew(s, op);
                    break;
                case NOP_REMOVE:
                    remove_run(s, op);
                    break;
                default:
                    break; /* flush: everything before it ran */
                }
                start = op->next;
            }
        }
        settle(s, list);
        (void)wf__alloc_idle(); /* asked to give memory back (idle runs left): its cached blocks */
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}
