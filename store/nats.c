/*
 * nats.c: the NATS JetStream store backend (layout in nats_impl.h and
 * docs/CLUSTER.md): helpers, the operations callers queue, the readers,
 * open and free. The queue and the writer thread are in nats_writer.c.
 * Shared fields: the queue, tickets and the run map under s->mu; the
 * connection, JetStream context and bucket are the client's (thread-safe);
 * a run's meta and revision belong to the writer thread.
 */
#include "nats_impl.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define META_VERSION 1

/* ---------------------------------------------------------------- helpers */

int64_t wf__nats_now(const nstore *s)
{
    if (s->p.clock)
        return s->p.clock(s->p.clock_user);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int wf__nats_rc(natsStatus st)
{
    switch (st) {
    case NATS_OK:
        return 0;
    case NATS_NO_MEMORY:
        return WF_ENOMEM;
    case NATS_NOT_FOUND:
        return WF_ENOTFOUND;
    case NATS_TIMEOUT:
        return WF_ETIMEDOUT;
    default:
        return WF_EIO;
    }
}

/* Key and subject token: [A-Za-z0-9_-] kept, every other byte "=XX". */
void wf__nats_key(char *out, const char *run_id)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)run_id; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '_' || *p == '-') {
            *out++ = (char)*p;
        } else {
            *out++ = '=';
            *out++ = hex[*p >> 4];
            *out++ = hex[*p & 15];
        }
    }
    *out = 0;
}

void wf__nats_meta_clear(nmeta *m)
{
    wf__free_mem(m->workflow);
    wf__free_mem(m->owner);
    wf__free_mem(m->eps);
    wf__free_mem(m->res_inline);
    memset(m, 0, sizeof *m);
}

int wf__nats_meta_copy(nmeta *dst, const nmeta *src)
{
    nmeta t = *src;
    t.workflow = src->workflow ? wf__strdup(src->workflow) : NULL;
    t.owner = src->owner ? wf__strdup(src->owner) : NULL;
    t.eps = NULL;
    t.res_inline = NULL;
    if (src->res_inline) {
        t.res_inline = wf__malloc(src->res_inline_len ? src->res_inline_len : 1);
        if (t.res_inline == NULL) {
            t.res_inline_len = 0;
            t.nep = 0;
            wf__nats_meta_clear(&t);
            return WF_ENOMEM;
        }
        memcpy(t.res_inline, src->res_inline, src->res_inline_len);
    }
    if (src->nep) {
        t.eps = wf__malloc(src->nep * 2 * sizeof(uint64_t));
        if (t.eps)
            memcpy(t.eps, src->eps, src->nep * 2 * sizeof(uint64_t));
    }
    if ((src->workflow && !t.workflow) || (src->owner && !t.owner) || (src->nep && !t.eps)) {
        wf__nats_meta_clear(&t);
        return WF_ENOMEM;
    }
    wf__nats_meta_clear(dst);
    *dst = t;
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    if (s == NULL) {
        msgpack_pack_nil(pk);
        return;
    }
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* The meta record: [version, workflow, owner, status, lease, created, updated, next_seq,
 * ckpt_seq, ckpt_sseq, ckpt_n, ckpt_len, res_sseq, res_n, res_len, create_seq, epoch,
 * [epoch, first, ...]] and, when the result is inline (small results of the cluster's fast
 * path: one write ends the run), its bytes as a 19th element. Readers ignore elements they do
 * not know, so a reader without the 19th sees a result that is not there (WF_ECORRUPT), never
 * a wrong one. */
int wf__nats_meta_pack(const nmeta *m, void **buf, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, m->res_inline ? 19 : 18);
    msgpack_pack_uint32(&pk, META_VERSION);
    pack_str(&pk, m->workflow);
    pack_str(&pk, m->owner);
    msgpack_pack_int32(&pk, m->status);
    msgpack_pack_int64(&pk, m->lease_until);
    msgpack_pack_int64(&pk, m->created);
    msgpack_pack_int64(&pk, m->updated);
    uint64_t u[] = {m->next_seq, m->ckpt_seq, m->ckpt_sseq, m->ckpt_n, m->ckpt_len, m->res_sseq,
                    m->res_n, m->res_len, m->create_seq, m->epoch};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
        msgpack_pack_uint64(&pk, u[i]);
    msgpack_pack_array(&pk, m->nep * 2);
    for (uint64_t i = 0; i < m->nep * 2; i++)
        msgpack_pack_uint64(&pk, m->eps[i]);
    if (m->res_inline)
        msgpack_pack_bin_with_body(&pk, m->res_inline, m->res_inline_len);
    if (sb.data == NULL) {
        msgpack_sbuffer_destroy(&sb);
        return WF_ENOMEM;
    }
    void *out = wf__malloc(sb.size);
    if (out)
        memcpy(out, sb.data, sb.size);
    *len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    *buf = out;
    return out ? 0 : WF_ENOMEM;
}

static int obj_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return WF_ECORRUPT;
    *v = o->via.u64;
    return 0;
}

static int obj_i64(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        *v = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = o->via.i64;
    else
        return WF_ECORRUPT;
    return 0;
}

static int obj_str(const msgpack_object *o, char **v)
{
    *v = NULL;
    if (o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_STR)
        return WF_ECORRUPT;
    char *s = wf__malloc(o->via.str.size + 1);
    if (s == NULL)
        return WF_ENOMEM;
    memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = 0;
    *v = s;
    return 0;
}

int wf__nats_meta_unpack(const void *buf, size_t len, nmeta *m)
{
    memset(m, 0, sizeof *m);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = WF_ECORRUPT;
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS)
        goto out;
    const msgpack_object *o = &u.data;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 18)
        goto out;
    const msgpack_object *a = o->via.array.ptr;
    uint64_t ver, st;
    int64_t status;
    if (obj_u64(&a[0], &ver) || ver != META_VERSION) {
        rc = WF_EVERSION;
        goto out;
    }
    (void)st;
    if ((rc = obj_str(&a[1], &m->workflow)) || (rc = obj_str(&a[2], &m->owner)))
        goto out;
    rc = WF_ECORRUPT;
    if (obj_i64(&a[3], &status) || status < 0 || status > WF_STORE_CANCELLED ||
        obj_i64(&a[4], &m->lease_until) || obj_i64(&a[5], &m->created) ||
        obj_i64(&a[6], &m->updated))
        goto out;
    m->status = (int32_t)status;
    uint64_t *u64[] = {&m->next_seq, &m->ckpt_seq, &m->ckpt_sseq, &m->ckpt_n, &m->ckpt_len,
                       &m->res_sseq, &m->res_n, &m->res_len, &m->create_seq, &m->epoch};
    for (size_t i = 0; i < 10; i++)
        if (obj_u64(&a[7 + i], u64[i]))
            goto out;
    const msgpack_object *e = &a[17];
    if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size % 2 || m->workflow == NULL)
        goto out;
    m->nep = e->via.array.size / 2;
    if (m->nep) {
        m->eps = wf__malloc(m->nep * 2 * sizeof(uint64_t));
        if (m->eps == NULL) {
            rc = WF_ENOMEM;
            goto out;
        }
        for (uint64_t i = 0; i < m->nep * 2; i++)
            if (obj_u64(&e->via.array.ptr[i], &m->eps[i]))
                goto out;
    }
    if (o->via.array.size > 18 && a[18].type == MSGPACK_OBJECT_BIN) {
        m->res_inline = wf__malloc(a[18].via.bin.size ? a[18].via.bin.size : 1);
        if (m->res_inline == NULL) {
            rc = WF_ENOMEM;
            goto out;
        }
        memcpy(m->res_inline, a[18].via.bin.ptr, a[18].via.bin.size);
        m->res_inline_len = a[18].via.bin.size;
    }
    rc = 0;
out:
    msgpack_unpacked_destroy(&u);
    if (rc)
        wf__nats_meta_clear(m);
    return rc;
}

int wf__nats_meta_get(nstore *s, const char *key, nmeta *m, uint64_t *rev)
{
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, s->kv, key);
    if (st != NATS_OK)
        return wf__nats_rc(st);
    int rc = wf__nats_meta_unpack(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), m);
    if (rev)
        *rev = kvEntry_Revision(e);
    kvEntry_Destroy(e);
    return rc;
}

/* create: only if absent (WF_EEXIST); else a CAS on *rev (WF_ELEASE when someone wrote since). */
int wf__nats_meta_put(nstore *s, const char *key, const nmeta *m, uint64_t *rev, int create)
{
    void *buf;
    size_t len;
    int rc = wf__nats_meta_pack(m, &buf, &len);
    if (rc)
        return rc;
    uint64_t nrev = 0;
    natsStatus st = create ? kvStore_Create(&nrev, s->kv, key, buf, (int)len)
                           : kvStore_Update(&nrev, s->kv, key, buf, (int)len, *rev);
    wf__free_mem(buf);
    if (st == NATS_OK) {
        *rev = nrev;
        return 0;
    }
    if (st == NATS_TIMEOUT || st == NATS_CONNECTION_CLOSED || st == NATS_NO_SERVER ||
        st == NATS_NO_RESPONDERS || st == NATS_CONNECTION_DISCONNECTED)
        return WF_EIO;
    /* The server refused: find out whether the key moved under us (whatever it holds now). */
    kvEntry *e = NULL;
    st = kvStore_Get(&e, s->kv, key);
    uint64_t crev = st == NATS_OK ? kvEntry_Revision(e) : 0;
    if (e)
        kvEntry_Destroy(e);
    if (create)
        return st == NATS_OK ? WF_EEXIST : WF_EIO;
    if (st == NATS_NOT_FOUND)
        return WF_ENOTFOUND;
    return st == NATS_OK && crev != *rev ? WF_ELEASE : WF_EIO;
}

static uint64_t msg_sseq(natsMsg *m)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, "Nats-Sequence", &v) == NATS_OK && v)
        return strtoull(v, NULL, 10);
    return natsMsg_GetSequence(m);
}

/* The next message on subj at or after stream sequence from (WF_ENOTFOUND: none). */
static int direct_next(nstore *s, const char *subj, uint64_t from, natsMsg **out)
{
    jsDirectGetMsgOptions o;
    jsDirectGetMsgOptions_Init(&o);
    o.Sequence = from ? from : 1;
    o.NextBySubject = subj;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = s->timeout_ms;
    natsStatus st = js_DirectGetMsg(out, s->js, s->stream, &jo, &o);
    return wf__nats_rc(st);
}

int wf__nats_get_blob(nstore *s, char kind, const char *key, uint64_t first, uint64_t n,
                      uint64_t len, void **data)
{
    char subj[NATS_KEY_MAX + 64];
    snprintf(subj, sizeof subj, "%s.d.%c.%s", s->prefix, kind, key);
    *data = NULL;
    if (len > SIZE_MAX - 1 || n == 0)
        return WF_ECORRUPT;
    uint8_t *buf = len ? wf__malloc((size_t)len) : NULL;
    if (len && buf == NULL)
        return WF_ENOMEM;
    size_t got = 0;
    uint64_t at = first;
    for (uint64_t i = 0; i < n; i++) {
        natsMsg *m = NULL;
        int rc = direct_next(s, subj, at, &m);
        if (rc == 0 && i == 0 && msg_sseq(m) != first)
            rc = WF_ECORRUPT; /* the first chunk is gone (purged): never give a wrong blob */
        if (rc) {
            wf__free_mem(buf);
            return rc == WF_ENOTFOUND ? WF_ECORRUPT : rc;
        }
        size_t part = (size_t)natsMsg_GetDataLength(m);
        if (part > len - got) {
            natsMsg_Destroy(m);
            wf__free_mem(buf);
            return WF_ECORRUPT;
        }
        if (part)
            memcpy(buf + got, natsMsg_GetData(m), part);
        got += part;
        at = msg_sseq(m) + 1;
        natsMsg_Destroy(m);
    }
    if (got != len) {
        wf__free_mem(buf);
        return WF_ECORRUPT;
    }
    *data = buf;
    return 0;
}

/* ------------------------------------------------------------- run map */

nrun *wf__nats_map_find(nstore *s, const char *run_id, uint64_t h)
{
    for (nrun *r = s->buckets[h & (s->nbuckets - 1)]; r; r = r->next)
        if (r->hash == h && strcmp(r->run_id, run_id) == 0)
            return r;
    return NULL;
}

int wf__nats_map_add(nstore *s, nrun *r)
{
    if (s->nruns + 1 > s->nbuckets) {
        size_t nb = s->nbuckets * 2;
        nrun **b = wf__calloc(nb, sizeof *b);
        if (b == NULL)
            return WF_ENOMEM;
        for (size_t i = 0; i < s->nbuckets; i++)
            for (nrun *x = s->buckets[i], *nx; x; x = nx) {
                nx = x->next;
                x->next = b[x->hash & (nb - 1)];
                b[x->hash & (nb - 1)] = x;
            }
        wf__free_mem(s->buckets);
        s->buckets = b;
        s->nbuckets = nb;
    }
    nrun **slot = &s->buckets[r->hash & (s->nbuckets - 1)];
    r->next = *slot;
    *slot = r;
    s->nruns++;
    return 0;
}

void wf__nats_map_del(nstore *s, nrun *r)
{
    for (nrun **p = &s->buckets[r->hash & (s->nbuckets - 1)]; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            s->nruns--;
            return;
        }
}

nrun *wf__nats_run_new(const char *run_id)
{
    size_t n = strlen(run_id);
    nrun *r = wf__calloc(1, sizeof *r + n + 1 + 3 * n + 1);
    if (r == NULL)
        return NULL;
    r->run_id = (char *)(r + 1);
    memcpy(r->run_id, run_id, n + 1);
    r->key = r->run_id + n + 1;
    wf__nats_key(r->key, run_id);
    r->hash = wf__hash(run_id, n);
    r->refs = 1;
    return r;
}

void wf__nats_run_unref(nrun *r)
{
    if (r && --r->refs == 0) {
        wf__nats_meta_clear(&r->m);
        wf__nats_meta_clear(&r->pm);
        wf__free_mem(r);
    }
}

void wf__nats_info(const char *run_id, const nmeta *m, wf_store_run_info *info, int copy)
{
    if (copy) {
        info->run_id = wf__strdup(run_id);
        info->workflow = m->workflow ? wf__strdup(m->workflow) : NULL;
        info->owner = m->owner ? wf__strdup(m->owner) : NULL;
    } else {
        info->run_id = (char *)run_id;
        info->workflow = m->workflow;
        info->owner = m->owner;
    }
    info->status = m->status;
    info->lease_until_ms = m->owner ? m->lease_until : 0;
    info->next_seq = m->next_seq;
    info->checkpoint_seq = m->ckpt_seq;
    info->created_ms = m->created;
    info->updated_ms = m->updated;
}

/* ------------------------------------------------------------ operations */

static int run_for_write(nstore *s, const char *run_id, nrun **out)
{
    nrun *r = wf__nats_map_find(s, run_id, wf__hash(run_id, strlen(run_id)));
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

static int n_create(void *self, const char *run_id, const char *workflow, uint64_t *ticket)
{
    nstore *s = self;
    size_t wl = strlen(workflow);
    nop *op = wf__calloc(1, sizeof *op + wl + 1);
    if (op == NULL)
        return WF_ENOMEM;
    op->type = NOP_CREATE;
    op->workflow = (char *)(op + 1);
    memcpy(op->workflow, workflow, wl + 1);
    op->bytes = sizeof *op + wl + 1;
    nrun *r = wf__nats_run_new(run_id);
    if (r == NULL) {
        wf__free_mem(op);
        return WF_ENOMEM;
    }
    /* A run the server has already is refused at once (one read); a concurrent
     * create by another store loses at commit (kvStore_Create). */
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, s->kv, r->key);
    if (e)
        kvEntry_Destroy(e);
    int rc = st == NATS_OK ? WF_EEXIST : st == NATS_NOT_FOUND ? 0 : wf__nats_rc(st);
    pthread_mutex_lock(&s->mu);
    if (rc == 0 && wf__nats_map_find(s, run_id, r->hash))
        rc = WF_EEXIST;
    if (rc == 0)
        rc = wf__nats_map_add(s, r);
    if (rc == 0) {
        r->refs++;
        op->run = r;
        rc = wf__nats_enqueue_locked(s, op);
        if (rc) {
            wf__nats_map_del(s, r);
            r->refs--;
        } else if (ticket) {
            *ticket = op->ticket;
        }
    }
    if (rc)
        wf__nats_run_unref(r);
    pthread_mutex_unlock(&s->mu);
    if (rc)
        wf__free_mem(op);
    return rc;
}

static int n_append(void *self, const char *run_id, const wf_store_rec *recs, size_t n,
                    wf_store_done_fn done, void *user, uint64_t *first_seq, uint64_t *ticket)
{
    nstore *s = self;
    size_t data = 0;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].len > NATS_CHUNK || (recs[i].len && recs[i].data == NULL))
            return WF_EINVAL;
        data += recs[i].len;
    }
    size_t size = sizeof(nop) + n * sizeof(nrec) + data;
    nop *op = wf__malloc(size);
    if (op == NULL)
        return WF_ENOMEM;
    memset(op, 0, sizeof *op);
    op->type = NOP_APPEND;
    op->done = done;
    op->user = user;
    op->n = (uint32_t)n;
    op->recs = (nrec *)(op + 1);
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
        rc = wf__nats_enqueue_locked(s, op);
        if (rc == 0) {
            op->seq = op->run->next_seq;
            op->run->next_seq += n;
            if (first_seq)
                *first_seq = op->seq;
            if (ticket)
                *ticket = op->ticket;
        } else {
            wf__nats_run_unref(op->run);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int queue_run_op(nstore *s, const char *run_id, nop *op, int close, uint64_t *seq,
                        uint64_t *ticket)
{
    pthread_mutex_lock(&s->mu);
    int rc = run_for_write(s, run_id, &op->run);
    if (rc == 0) {
        op->seq = op->run->next_seq;
        rc = wf__nats_enqueue_locked(s, op);
        if (rc == 0) {
            if (seq)
                *seq = op->seq;
            if (close)
                op->run->closed = 1;
            if (ticket)
                *ticket = op->ticket;
        } else {
            wf__nats_run_unref(op->run);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static nop *blob_op(int type, const void *data, size_t len, wf_store_done_fn done, void *user)
{
    nop *op = wf__calloc(1, sizeof *op + len);
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

static int n_set_status(void *self, const char *run_id, int32_t status, uint64_t *ticket)
{
    nop *op = blob_op(NOP_STATUS, NULL, 0, NULL, NULL);
    if (op == NULL)
        return WF_ENOMEM;
    op->status = status;
    int rc = queue_run_op(self, run_id, op, 0, NULL, ticket);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int n_put_checkpoint(void *self, const char *run_id, const void *data, size_t len,
                            wf_store_done_fn done, void *user, uint64_t *seq, uint64_t *ticket)
{
    nop *op = blob_op(NOP_CKPT, data, len, done, user);
    if (op == NULL)
        return WF_ENOMEM;
    int rc = queue_run_op(self, run_id, op, 0, seq, ticket);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int n_put_result(void *self, const char *run_id, int32_t status, const void *data,
                        size_t len, wf_store_done_fn done, void *user, uint64_t *ticket)
{
    nop *op = blob_op(NOP_RESULT, data, len, done, user);
    if (op == NULL)
        return WF_ENOMEM;
    op->status = status;
    int rc = queue_run_op(self, run_id, op, 1, NULL, ticket);
    if (rc < 0)
        wf__free_mem(op);
    return rc;
}

static int n_claim(void *self, const char *run_id, wf_store_run_info *info)
{
    wf_store_run_info tmp = {0};
    nop op = {.type = NOP_CLAIM, .name = run_id, .info = info ? info : &tmp};
    memset(op.info, 0, sizeof *op.info);
    int rc = wf__nats_run_sync(self, &op);
    if (rc < 0 || info == NULL)
        wf_store_run_info_clear(op.info);
    return rc;
}

static int n_release(void *self, const char *run_id)
{
    nstore *s = self;
    nop op = {.type = NOP_RELEASE, .sync = 1};
    pthread_mutex_lock(&s->mu);
    int rc = run_for_write(s, run_id, &op.run);
    if (rc == 0) {
        rc = wf__nats_enqueue_locked(s, &op);
        if (rc == 0) {
            op.run->closed = 1;
            while (!op.finished)
                pthread_cond_wait(&s->cv_done, &s->mu);
            rc = op.rc;
        } else {
            wf__nats_run_unref(op.run);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int n_renew(void *self, uint32_t *lost)
{
    nop op = {.type = NOP_RENEW};
    int rc = wf__nats_run_sync(self, &op);
    if (lost)
        *lost = rc == 0 ? op.lost : 0;
    return rc;
}

static int n_remove(void *self, const char *run_id)
{
    nstore *s = self;
    nop op = {.type = NOP_REMOVE, .name = run_id};
    int rc = wf__nats_run_sync(s, &op);
    if (rc == 0) {
        pthread_mutex_lock(&s->mu);
        nrun *r = wf__nats_map_find(s, run_id, wf__hash(run_id, strlen(run_id)));
        if (r) {
            r->closed = 1;
            r->err = WF_ENOTFOUND;
            wf__nats_map_del(s, r);
            wf__nats_run_unref(r);
        }
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}

static int n_flush(void *self)
{
    nop op = {.type = NOP_FLUSH};
    return wf__nats_run_sync(self, &op);
}

static uint64_t n_durable(void *self)
{
    nstore *s = self;
    return __atomic_load_n(&s->durable, __ATOMIC_ACQUIRE);
}

static int n_wait(void *self, uint64_t ticket)
{
    nstore *s = self;
    if (pthread_equal(pthread_self(), s->writer))
        return n_durable(s) >= ticket ? 0 : WF_EBUSY;
    pthread_mutex_lock(&s->mu);
    if (ticket > s->tickets)
        ticket = s->tickets;
    while (s->durable < ticket)
        pthread_cond_wait(&s->cv_done, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* --------------------------------------------------------------- readers */

static int n_get_run(void *self, const char *run_id, wf_store_run_info *info)
{
    nstore *s = self;
    char key[NATS_KEY_MAX];
    wf__nats_key(key, run_id);
    nmeta m;
    int rc = wf__nats_meta_get(s, key, &m, NULL);
    if (rc)
        return rc;
    wf__nats_info(run_id, &m, info, 1);
    rc = info->run_id && info->workflow && (m.owner == NULL || info->owner) ? 0 : WF_ENOMEM;
    if (rc)
        wf_store_run_info_clear(info);
    wf__nats_meta_clear(&m);
    return rc;
}

static int n_get_checkpoint(void *self, const char *run_id, void **data, size_t *len,
                            uint64_t *seq)
{
    nstore *s = self;
    char key[NATS_KEY_MAX];
    wf__nats_key(key, run_id);
    nmeta m;
    int rc = wf__nats_meta_get(s, key, &m, NULL);
    if (rc)
        return rc;
    if (m.ckpt_n == 0) {
        rc = WF_ENOTFOUND;
    } else {
        rc = wf__nats_get_blob(s, 'c', key, m.ckpt_sseq, m.ckpt_n, m.ckpt_len, data);
        if (rc == 0) {
            *len = (size_t)m.ckpt_len;
            if (seq)
                *seq = m.ckpt_seq;
        }
    }
    wf__nats_meta_clear(&m);
    return rc;
}

static int n_get_result(void *self, const char *run_id, int32_t *status, void **data, size_t *len)
{
    nstore *s = self;
    char key[NATS_KEY_MAX];
    wf__nats_key(key, run_id);
    nmeta m;
    int rc = wf__nats_meta_get(s, key, &m, NULL);
    if (rc)
        return rc;
    if (m.status < WF_STORE_DONE) {
        rc = WF_EAGAIN;
    } else if (m.res_inline) {
        *status = m.status;
        *len = m.res_inline_len;
        *data = m.res_inline; /* wf__malloc'd: the caller frees it with wf_free */
        m.res_inline = NULL;
    } else if (m.res_n == 0) {
        rc = WF_ECORRUPT;
    } else {
        rc = wf__nats_get_blob(s, 'r', key, m.res_sseq, m.res_n, m.res_len, data);
        if (rc == 0) {
            *status = m.status;
            *len = (size_t)m.res_len;
        }
    }
    wf__nats_meta_clear(&m);
    return rc;
}

/* The claim epoch whose records are valid at seq. */
static uint64_t epoch_at(const nmeta *m, uint64_t seq)
{
    uint64_t e = 0;
    for (uint64_t i = 0; i < m->nep; i++)
        if (m->eps[2 * i + 1] <= seq)
            e = m->eps[2 * i];
    return e;
}

static int hdr_u64(natsMsg *msg, const char *name, uint64_t *v)
{
    const char *t = NULL;
    if (natsMsgHeader_Get(msg, name, &t) != NATS_OK || t == NULL)
        return WF_ECORRUPT;
    char *end;
    *v = strtoull(t, &end, 10);
    return *end == 0 && end != t ? 0 : WF_ECORRUPT;
}

static int n_read_journal(void *self, const char *run_id, uint64_t from_seq, uint32_t max,
                          wf_store_journal_fn fn, void *user, uint64_t *next_seq)
{
    nstore *s = self;
    char key[NATS_KEY_MAX];
    wf__nats_key(key, run_id);
    nmeta m;
    int rc = wf__nats_meta_get(s, key, &m, NULL);
    if (next_seq)
        *next_seq = from_seq;
    if (rc)
        return rc;
    char subj[NATS_KEY_MAX + 64];
    snprintf(subj, sizeof subj, "%s.d.j.%s", s->prefix, key);
    uint64_t want = from_seq, at = 1, given = 0;
    while (want < m.next_seq && (max == 0 || given < max)) {
        natsMsg *msg = NULL;
        rc = direct_next(s, subj, at, &msg);
        if (rc == WF_ENOTFOUND) {
            rc = WF_ECORRUPT; /* the meta counts records the stream does not have */
            break;
        }
        if (rc)
            break;
        at = msg_sseq(msg) + 1;
        uint64_t seq, ep, kind;
        if (hdr_u64(msg, "Wf-Seq", &seq) || hdr_u64(msg, "Wf-Ep", &ep) ||
            hdr_u64(msg, "Wf-Kind", &kind) || kind > UINT32_MAX) {
            natsMsg_Destroy(msg);
            continue; /* not ours: skipped, never given */
        }
        if (seq == want && ep == epoch_at(&m, seq)) {
            int stop = fn(seq, (uint32_t)kind, natsMsg_GetData(msg),
                          (size_t)natsMsg_GetDataLength(msg), user);
            want++;
            given++;
            if (stop) {
                natsMsg_Destroy(msg);
                break;
            }
        }
        natsMsg_Destroy(msg);
    }
    if (next_seq)
        *next_seq = want;
    wf__nats_meta_clear(&m);
    return rc;
}

/*
 * The creation index: a message names one run (data = its id) or, with the header "Wf-Ids",
 * several (data = msgpack array of ids: the cluster's fast path indexes the runs of a pull
 * that ended, once). A listing position is (stream sequence << 16) + the id's index in its
 * message; the cursor is the last position given.
 */
#define LIST_POS(sseq, i) (((sseq) << 16) + (uint64_t)(i))

/* Gives id at position pos to fn if it is listed: 0 go on, 1 stop, 2 limit reached. */
static int list_one(nstore *s, const char *id, size_t len, uint64_t sseq, uint32_t mask,
                    uint32_t limit, uint32_t *given, wf_store_list_fn fn, void *user, uint64_t pos,
                    uint64_t *next_cursor, int *rc)
{
    *rc = 0;
    if (len == 0 || len > WF__STORE_ID_MAX || memchr(id, 0, len))
        return 0;
    char *rid = wf__malloc(len + 1);
    if (rid == NULL) {
        *rc = WF_ENOMEM;
        return 1;
    }
    memcpy(rid, id, len);
    rid[len] = 0;
    char key[NATS_KEY_MAX];
    wf__nats_key(key, rid);
    nmeta m;
    int r = wf__nats_meta_get(s, key, &m, NULL);
    if (r == WF_ENOTFOUND || r == WF_ECORRUPT || r == WF_EVERSION) {
        wf__free_mem(rid);
        return 0; /* removed, or not a run of ours */
    }
    if (r) {
        wf__free_mem(rid);
        *rc = r;
        return 1;
    }
    int out = 0;
    /* create_seq 0: a run of the cluster's fast path, indexed once, when it ended */
    if ((m.create_seq == sseq || m.create_seq == 0) && (mask & WF_STORE_MASK(m.status))) {
        if (limit && *given == limit) {
            if (next_cursor)
                *next_cursor = pos - 1;
            out = 2;
        } else {
            wf_store_run_info info;
            wf__nats_info(rid, &m, &info, 0);
            out = fn(&info, user) ? 1 : 0;
            (*given)++;
        }
    }
    wf__nats_meta_clear(&m);
    wf__free_mem(rid);
    return out;
}

static int n_list(void *self, uint32_t mask, uint64_t cursor, uint32_t limit, wf_store_list_fn fn,
                  void *user, uint64_t *next_cursor)
{
    nstore *s = self;
    if (next_cursor)
        *next_cursor = 0;
    uint64_t start = cursor + 1;
    uint64_t at = start >> 16, first_i = start & 0xffff;
    if (at == 0) {
        at = 1;
        first_i = 0;
    }
    uint32_t given = 0;
    for (;;) {
        natsMsg *msg = NULL;
        int rc = direct_next(s, s->subj_created, at, &msg);
        if (rc == WF_ENOTFOUND)
            return 0;
        if (rc)
            return rc;
        uint64_t sseq = msg_sseq(msg);
        uint64_t skip = sseq == at ? first_i : 0;
        at = sseq + 1;
        first_i = 0;
        const char *data = natsMsg_GetData(msg);
        int len = natsMsg_GetDataLength(msg);
        const char *many = NULL;
        int stop = 0;
        if (natsMsgHeader_Get(msg, "Wf-Ids", &many) == NATS_OK && many && len > 0) {
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            if (msgpack_unpack_next(&u, data, (size_t)len, &off) == MSGPACK_UNPACK_SUCCESS &&
                u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size <= 0xffff) {
                for (uint32_t i = (uint32_t)skip; i < u.data.via.array.size && !stop; i++) {
                    const msgpack_object *o = &u.data.via.array.ptr[i];
                    if (o->type == MSGPACK_OBJECT_STR)
                        stop = list_one(s, o->via.str.ptr, o->via.str.size, sseq, mask, limit,
                                        &given, fn, user, LIST_POS(sseq, i), next_cursor, &rc);
                }
            }
            msgpack_unpacked_destroy(&u);
        } else if (skip == 0 && len > 0) {
            stop = list_one(s, data, (size_t)len, sseq, mask, limit, &given, fn, user,
                            LIST_POS(sseq, 0), next_cursor, &rc);
        }
        natsMsg_Destroy(msg);
        if (rc)
            return rc;
        if (stop)
            return 0;
    }
}

/* ------------------------------------------------------------ open, free */

static void n_free(void *self)
{
    nstore *s = self;
    if (s == NULL)
        return;
    if (s->writer_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv_writer);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->writer, NULL);
    }
    if (s->buckets)
        for (size_t i = 0; i < s->nbuckets; i++)
            for (nrun *r = s->buckets[i], *nx; r; r = nx) {
                nx = r->next;
                wf__nats_run_unref(r);
            }
    wf__free_mem(s->buckets);
    wf__free_mem(s->wblob);
    wf__free_mem(s->wcas);
    if (s->kv)
        kvStore_Destroy(s->kv);
    if (s->js)
        jsCtx_Destroy(s->js);
    if (s->nc) {
        natsConnection_Close(s->nc);
        natsConnection_Destroy(s->nc);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv_writer);
    pthread_cond_destroy(&s->cv_done);
    wf__free_mem(s->owner);
    wf__free_mem(s->prefix);
    wf__free_mem(s->stream);
    wf__free_mem(s->bucket);
    wf__free_mem(s->subj_created);
    wf__free_mem(s);
}

static const wf_store_ops nats_ops = {
    .size = sizeof(wf_store_ops),
    .name = "nats",
    .create = n_create,
    .claim = n_claim,
    .append = n_append,
    .set_status = n_set_status,
    .put_checkpoint = n_put_checkpoint,
    .put_result = n_put_result,
    .release = n_release,
    .renew = n_renew,
    .remove = n_remove,
    .flush = n_flush,
    .wait = n_wait,
    .durable = n_durable,
    .get_run = n_get_run,
    .get_checkpoint = n_get_checkpoint,
    .get_result = n_get_result,
    .read_journal = n_read_journal,
    .list = n_list,
    .free = n_free,
};

static char *fmt(const char *f, const char *a)
{
    size_t n = strlen(f) + strlen(a) + 1;
    char *s = wf__malloc(n);
    if (s)
        snprintf(s, n, f, a);
    return s;
}

static int say(char **message, int rc, const char *f, const char *a, const char *b)
{
    if (message) {
        size_t n = strlen(f) + strlen(a) + strlen(b) + 1;
        *message = wf__malloc(n);
        if (*message)
            snprintf(*message, n, f, a, b);
    }
    return rc;
}

static int prefix_ok(const char *p)
{
    if (p == NULL || *p == 0 || strlen(p) > 64)
        return 0;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return 0;
    return 1;
}

/* Connects with bounded attempts: WF_EIO and a message naming the last error. */
static int connect_nats(nstore *s, const char *url, const wf_store_nats_params *np,
                        char **message)
{
    natsOptions *o = NULL;
    if (natsOptions_Create(&o) != NATS_OK)
        return WF_ENOMEM;
    natsStatus st = natsOptions_SetURL(o, url);
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(o, np->timeout_ms);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(o, -1); /* keep trying; writes fail by timeout meanwhile */
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(o, 100);
    if (st == NATS_OK && np->creds_file)
        st = natsOptions_SetUserCredentialsFromFiles(o, np->creds_file, NULL);
    if (st != NATS_OK) {
        natsOptions_Destroy(o);
        return say(message, WF_EINVAL, "wf_store_open_nats: bad options for %s: %s", url,
                   natsStatus_GetText(st));
    }
    for (int i = 0; i < np->connect_attempts; i++) {
        if (i)
            nats_Sleep(250);
        st = natsConnection_Connect(&s->nc, o);
        if (st == NATS_OK)
            break;
        s->nc = NULL;
    }
    natsOptions_Destroy(o);
    if (st != NATS_OK) {
        char n[16];
        snprintf(n, sizeof n, "%d", (int)np->connect_attempts);
        if (message) {
            const char *t = natsStatus_GetText(st);
            size_t len = strlen(url) + strlen(t) + 96;
            *message = wf__malloc(len);
            if (*message)
                snprintf(*message, len,
                         "wf_store_open_nats: cannot reach NATS at %s after %s attempts: %s", url,
                         n, t);
        }
        return WF_EIO;
    }
    return 0;
}

static int setup_js(nstore *s, const wf_store_nats_params *np, char **message)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = s->timeout_ms;
    jo.PublishAsync.AckHandler = wf__nats_pub_ack;
    jo.PublishAsync.AckHandlerClosure = s;
    jo.PublishAsync.MaxPending = 65536;
    if (natsConnection_JetStream(&s->js, s->nc, &jo) != NATS_OK)
        return WF_ENOMEM;
    /* The data stream: created if missing, used as it is otherwise. */
    char subjects[128];
    snprintf(subjects, sizeof subjects, "%s.d.>", s->prefix);
    const char *subj[] = {subjects};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = s->stream;
    sc.Subjects = subj;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = np->replicas;
    sc.AllowDirect = true;
    jsErrCode ec = 0;
    jsStreamInfo *si = NULL;
    natsStatus st = js_GetStreamInfo(&si, s->js, s->stream, NULL, &ec);
    if (st == NATS_NOT_FOUND)
        st = js_AddStream(&si, s->js, &sc, NULL, &ec);
    if (si)
        jsStreamInfo_Destroy(si);
    if (st != NATS_OK)
        return say(message, WF_EIO, "wf_store_open_nats: stream %s: %s (is JetStream on? -js)",
                   s->stream, nats_GetLastError(NULL) ? nats_GetLastError(NULL)
                                                      : natsStatus_GetText(st));
    st = js_KeyValue(&s->kv, s->js, s->bucket);
    if (st == NATS_NOT_FOUND) {
        kvConfig kc;
        kvConfig_Init(&kc);
        kc.Bucket = s->bucket;
        kc.History = 1;
        kc.StorageType = js_FileStorage;
        kc.Replicas = np->replicas;
        st = js_CreateKeyValue(&s->kv, s->js, &kc);
    }
    if (st != NATS_OK)
        return say(message, WF_EIO, "wf_store_open_nats: bucket %s: %s", s->bucket,
                   nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(st));
    return 0;
}

void wf_store_nats_params_init(wf_store_nats_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->prefix = "wf";
    p->replicas = 1;
    p->connect_attempts = 5;
    p->timeout_ms = 5000;
}

int wf_store_open_nats(wf_store **out, const char *url, const wf_store_params *params,
                       const wf_store_nats_params *nats, char **message)
{
    nstore *self = NULL;
    return wf__nats_open(out, &self, url, params, nats, message);
}

int wf__nats_open(wf_store **out, nstore **self, const char *url, const wf_store_params *params,
                  const wf_store_nats_params *nats, char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = NULL;
    if (out == NULL || url == NULL || *url == 0)
        return WF_EINVAL;
    wf_store_params p;
    if (params)
        p = *params;
    else
        wf_store_params_init(&p);
    wf_store_nats_params np;
    if (nats)
        np = *nats;
    else
        wf_store_nats_params_init(&np);
    if (np.prefix == NULL)
        np.prefix = "wf";
    if (p.commit < WF_STORE_COMMIT_EVERY || p.commit > WF_STORE_COMMIT_OFF ||
        p.full < WF_STORE_FULL_BLOCK || p.full > WF_STORE_FULL_FAIL || p.queue_bytes == 0 ||
        p.lease_ms == 0 || !prefix_ok(np.prefix) || np.replicas < 1 || np.replicas > 5 ||
        np.connect_attempts < 1 || np.timeout_ms < 1)
        return say(message, WF_EINVAL, "wf_store_open_nats: %s%s", "invalid parameters", "");
    if (nats_Open(-1) != NATS_OK)
        return WF_ENOMEM;
    nstore *s = wf__calloc(1, sizeof *s);
    if (s == NULL)
        return WF_ENOMEM;
    s->p = p;
    s->timeout_ms = np.timeout_ms;
    s->tail = &s->head;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv_writer, NULL);
    pthread_cond_init(&s->cv_done, NULL);
    s->nbuckets = 64;
    s->buckets = wf__calloc(s->nbuckets, sizeof *s->buckets);
    s->prefix = wf__strdup(np.prefix);
    s->stream = fmt("%s_data", np.prefix);
    s->bucket = fmt("%s_runs", np.prefix);
    s->subj_created = fmt("%s.d.created", np.prefix);
    if (p.owner) {
        s->owner = wf__strdup(p.owner);
    } else {
        char host[256] = "host", buf[400];
        gethostname(host, sizeof host - 1);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(buf, sizeof buf, "%s:%ld:%08lx", host, (long)getpid(),
                 (unsigned long)(ts.tv_nsec ^ (ts.tv_sec << 20) ^ (uintptr_t)s));
        s->owner = wf__strdup(buf);
    }
    s->p.owner = NULL;
    int rc = 0;
    if (!s->buckets || !s->prefix || !s->stream || !s->bucket || !s->subj_created || !s->owner)
        rc = WF_ENOMEM;
    if (rc == 0)
        rc = connect_nats(s, url, &np, message);
    if (rc == 0)
        rc = setup_js(s, &np, message);
    if (rc == 0) {
        if (pthread_create(&s->writer, NULL, wf__nats_writer_main, s) != 0)
            rc = WF_ENOMEM;
        else
            s->writer_started = 1;
    }
    if (rc) {
        n_free(s);
        return rc;
    }
    *self = s;
    return wf_store_new(out, &nats_ops, s);
}
