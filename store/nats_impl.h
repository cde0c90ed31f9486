/*
 * nats_impl.h: the NATS JetStream store backend's structures, shared by
 * nats.c (helpers, the operations, readers, open and free) and
 * nats_writer.c (the queue and the writer thread). Never installed.
 *
 * Layout in JetStream (prefix "wf" by default, docs/CLUSTER.md):
 *  - key-value bucket "<p>_runs": key = the run id encoded (enc_key), value
 *    = the run's meta record (msgpack, below); revision compare-and-set is
 *    the lease: every write to a run goes through a CAS on its last known
 *    revision, so a store that lost the lease finds out at its next write.
 *  - stream "<p>_data", subjects "<p>.d.j.<key>" (journal records, header
 *    Wf-Seq and Wf-Ep), "<p>.d.c.<key>" (checkpoint chunks), "<p>.d.r.<key>"
 *    (result chunks), "<p>.d.created" (the creation index: data = run id,
 *    its stream sequence is the run's listing cursor).
 * A record is committed once the meta CAS that counts it (next_seq) has
 * succeeded; the epochs in the meta say which claim's records are valid
 * (a record published by a store that had already lost the lease is
 * ignored by readers).
 */
#ifndef WF_NATS_IMPL_H
#define WF_NATS_IMPL_H

#include "internal.h"
#include "store_impl.h"
#include "text.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>

#define NATS_CHUNK (512u * 1024u) /* bytes of a checkpoint or result per message */
#define NATS_MAX_RECS 65536
#define NATS_KEY_MAX (3 * WF__STORE_ID_MAX + 1)

/* A run's meta record (the bucket value). */
typedef struct nmeta {
    char *workflow;
    char *owner; /* NULL: none */
    int32_t status;
    int64_t lease_until, created, updated;
    uint64_t next_seq;
    uint64_t ckpt_seq, ckpt_sseq, ckpt_n, ckpt_len; /* checkpoint: covers, first chunk, chunks, bytes */
    uint64_t res_sseq, res_n, res_len;               /* result chunks */
    uint64_t create_seq;                             /* creation index message: the list cursor */
    uint64_t epoch;                                  /* claims so far (1 after create) */
    uint64_t nep;                                    /* epochs: [epoch, first seq] pairs */
    uint64_t *eps;
    void *res_inline;      /* the result itself when small (the cluster's fast path), or NULL */
    size_t res_inline_len; /* its bytes */
} nmeta;

/* A run this store may write: created or claimed here and not closed. */
typedef struct nrun {
    struct nrun *next; /* hash chain; mu */
    char *run_id;      /* immutable */
    char *key;         /* immutable: the encoded key */
    uint64_t hash;     /* immutable */
    uint64_t next_seq; /* mu: next record number, assigned in queue order */
    int err;           /* mu: sticky error of a failed write */
    int closed;        /* mu: a result, release or remove is queued */
    uint32_t refs;     /* mu: 1 while in the map + 1 per queued op */
    /* writer thread only */
    uint64_t rev;       /* the meta revision this store last wrote or read */
    nmeta m;            /* the meta as of rev */
    nmeta pm;           /* this round's pending meta */
    int dirty;          /* pm differs from m: CAS at the end of the round */
    int werr;           /* a write failed: later ones fail too */
    int cas_rc;         /* the outcome of this round's CAS (set by the ack callback) */
    uint64_t cas_rev;   /* its new revision (set by the ack callback) */
    struct nrun *wnext; /* dirty runs of the round */
} nrun;

enum { NOP_CREATE, NOP_APPEND, NOP_STATUS, NOP_CKPT, NOP_RESULT, NOP_CLAIM, NOP_RELEASE,
       NOP_RENEW, NOP_REMOVE, NOP_FLUSH };

typedef struct nrec {
    uint32_t kind;
    uint32_t len;
    const uint8_t *data;
} nrec;

typedef struct nop {
    struct nop *next; /* mu while queued; then the writer's */
    int type;
    int sync;
    uint64_t ticket;
    nrun *run;        /* the run written (NULL for claim, renew, remove, flush) */
    const char *name; /* claim/remove: run id (borrowed from the sync caller) */
    char *workflow;   /* create */
    wf_store_done_fn done;
    void *user;
    size_t bytes;
    uint64_t seq;
    uint32_t n;
    int32_t status;
    const uint8_t *data;
    size_t len;
    nrec *recs;
    int rc;        /* set by the writer */
    int applied;   /* writer: counted in its run's pending meta; rc = the run's CAS outcome */
    uint64_t bseq; /* writer: first stream sequence of its blob (checkpoint, result, create index) */
    uint64_t bn;   /* writer: chunks of its blob */
    int berr;      /* writer (ack callback): its blob was not stored */
    /* sync ops */
    wf_store_run_info *info;
    uint32_t lost;
    int finished; /* mu */
} nop;

typedef struct nstore {
    wf_store_params p;   /* immutable after open */
    char *owner;         /* immutable */
    char *prefix;        /* immutable */
    char *stream;        /* immutable: "<p>_data" */
    char *bucket;        /* immutable: "<p>_runs" */
    char *subj_created;  /* immutable */
    natsConnection *nc;  /* thread-safe (the client's own locks) */
    jsCtx *js;           /* thread-safe */
    kvStore *kv;         /* thread-safe */
    int64_t timeout_ms;  /* immutable */
    atomic_int pub_errs; /* async publish failures of the writer's round */
    /* writer thread only, read by the publish-ack callback while the round awaits its acks */
    struct nop **wblob;  /* ops whose first message's stream sequence the round needs */
    size_t nwblob, cwblob;
    struct nrun **wcas;  /* runs whose meta the round writes (compare-and-set) */
    size_t nwcas, cwcas;

    pthread_mutex_t mu;
    pthread_cond_t cv_writer;
    pthread_cond_t cv_done;
    nop *head, **tail;     /* mu */
    size_t queued;         /* mu */
    uint64_t tickets;      /* mu */
    uint64_t durable;      /* written under mu (release); read lock-free (acquire) */
    int stop;              /* mu */
    nrun **buckets;        /* mu */
    size_t nbuckets, nruns; /* mu */
    pthread_t writer;      /* immutable after open */
    int writer_started;    /* immutable after open */
} nstore;

int64_t wf__nats_now(const nstore *s);
int wf__nats_rc(natsStatus st);
void wf__nats_key(char *out, const char *run_id);
void wf__nats_meta_clear(nmeta *m);
int wf__nats_meta_copy(nmeta *dst, const nmeta *src);
int wf__nats_meta_pack(const nmeta *m, void **buf, size_t *len);
int wf__nats_meta_unpack(const void *buf, size_t len, nmeta *m);
int wf__nats_meta_get(nstore *s, const char *key, nmeta *m, uint64_t *rev);
int wf__nats_meta_put(nstore *s, const char *key, const nmeta *m, uint64_t *rev, int create);
int wf__nats_get_blob(nstore *s, char kind, const char *key, uint64_t first, uint64_t n,
                      uint64_t len, void **data);
nrun *wf__nats_map_find(nstore *s, const char *run_id, uint64_t h);
int wf__nats_map_add(nstore *s, nrun *r);
void wf__nats_map_del(nstore *s, nrun *r);
nrun *wf__nats_run_new(const char *run_id);
void wf__nats_run_unref(nrun *r);
int wf__nats_enqueue_locked(nstore *s, nop *op);
int wf__nats_run_sync(nstore *s, nop *op);
void *wf__nats_writer_main(void *arg);
void wf__nats_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);
void wf__nats_info(const char *run_id, const nmeta *m, wf_store_run_info *info, int copy);
/* wf_store_open_nats that also gives the backend (the cluster's fast path writes run records
 * itself, in the same format, with the same owner). */
int wf__nats_open(wf_store **out, nstore **self, const char *url, const wf_store_params *params,
                  const struct wf_store_nats_params *nats, char **message);

#endif
