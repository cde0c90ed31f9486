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
    /* 1. publish: journal records async, blobs and creation indexes acknowledged one by one */
    atomic_store(&s->pub_errs, 0);
    int async = 0, pub_failed = 0;
    for (nop *op = first; op != stop; op = op->next) {
        nrun *r = op->run;
        if (r->werr) {
            op->rc = r->werr;
            continue;
        }
        int rc = 0;
        switch (op->type) {
        case NOP_CREATE: {
            jsPubAck *pa = NULL;
            jsPubOptions jo;
            jsPubOptions_Init(&jo);
            jo.MaxWait = s->timeout_ms;
            natsStatus st = js_Publish(&pa, s->js, s->subj_created, r->run_id,
                                       (int)strlen(r->run_id), &jo, NULL);
            if (st == NATS_OK) {
                op->bseq = pa->Sequence;
                jsPubAck_Destroy(pa);
            } else {
                rc = WF_EIO;
            }
            break;
        }
        case NOP_APPEND:
            for (uint32_t i = 0; i < op->n && rc == 0; i++)
                rc = pub_rec(s, r, op->seq + i, &op->recs[i]);
            async = 1;
            break;
        case NOP_CKPT:
            rc = wf__nats_pub_blob(s, 'c', r->key, op->data, op->len, &op->bseq, &op->bn);
            break;
        case NOP_RESULT:
            rc = wf__nats_pub_blob(s, 'r', r->key, op->data, op->len, &op->bseq, &op->bn);
            break;
        default:
            break;
        }
        if (rc) {
            op->rc = rc;
            r->werr = rc;
        }
    }
    if (async) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = s->timeout_ms;
        natsStatus st = js_PublishAsyncComplete(s->js, &po);
        if (st != NATS_OK) {
            natsMsgList pending = {0};
            if (js_PublishAsyncGetPendingList(&pending, s->js) == NATS_OK)
                natsMsgList_Destroy(&pending);
            pub_failed = 1;
        }
        if (atomic_load(&s->pub_errs))
            pub_failed = 1;
    }
    /* 2. the round's meta per run, in queue order */
    int64_t now = wf__nats_now(s);
    nrun *dirty = NULL;
    for (nop *op = first; op != stop; op = op->next) {
        nrun *r = op->run;
        if (op->rc)
            continue;
        if (pub_failed && op->type == NOP_APPEND) {
            op->rc = r->werr = WF_EIO;
            continue;
        }
        if (r->werr) {
            op->rc = r->werr;
            continue;
        }
        if (op->type == NOP_CREATE) {
            nmeta m = {0};
            m.workflow = op->workflow;
            m.owner = s->owner;
            m.status = WF_STORE_RUNNING;
            m.lease_until = now + s->p.lease_ms;
            m.created = m.updated = now;
            m.create_seq = op->bseq;
            m.epoch = 1;
            uint64_t eps[2] = {1, 0};
            m.nep = 1;
            m.eps = eps;
            uint64_t rev = 0;
            int rc = wf__nats_meta_put(s, r->key, &m, &rev, 1);
            if (rc == 0) {
                m.workflow = m.owner = NULL;
                m.eps = NULL;
                nmeta t = m;
                t.workflow = op->workflow;
                t.owner = s->owner;
                t.eps = eps;
                rc = wf__nats_meta_copy(&r->m, &t);
                r->rev = rev;
            }
            if (rc)
                op->rc = r->werr = rc;
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
    /* 3. one compare-and-set per run: the commit */
    for (nrun *r = dirty; r; r = r->wnext) {
        uint64_t rev = r->rev;
        r->cas_rc = wf__nats_meta_put(s, r->key, &r->pm, &rev, 0);
        if (r->cas_rc == 0) {
            nmeta t = r->m;
            r->m = r->pm;
            r->pm = t;
            r->rev = rev;
        } else {
            r->werr = r->cas_rc == WF_ENOTFOUND ? WF_ELEASE : r->cas_rc;
            r->cas_rc = r->werr;
        }
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
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}
