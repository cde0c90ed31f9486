/*
 * store.h: durable storage for runs (docs/DURABILITY.md).
 *
 * A wf_store keeps, per run (named by a caller-chosen run id, unique in the
 * store): its status, a lease (which owner may write it, until when), a
 * journal of records numbered 0, 1, 2, ... per run (step completions,
 * streamed events, waits: msgpack bytes the engine encodes with the codec),
 * an optional checkpoint (a msgpack blob covering the journal before a
 * sequence number) and, once it ended, its result.
 *
 * Writes are queued and committed by one writer thread per store in rounds
 * (group commit, see wf_store_commit). A queued write is identified by a
 * ticket (1, 2, 3, ... per store, in queue order); the store's durable
 * ticket says how far everything queued has committed under the commit
 * policy. "Durable" below means: committed under the policy (with
 * WF_STORE_COMMIT_OFF, committed to the operating system, which survives
 * the process but not the machine). Reads see committed data only.
 *
 * The backend is a table of operations (wf_store_ops) and a self pointer,
 * so other backends can sit behind the same calls; wf_store_open_sqlite
 * gives the embedded SQLite one.
 *
 * Threads: every function may be called from any thread, concurrently with
 * the others, unless it says otherwise. Completion callbacks run on the
 * store's writer thread and must not block or call back into the store
 * with a synchronous call (wf_store_claim, wf_store_release, wf_store_renew,
 * wf_store_remove, wf_store_flush, wf_store_wait): those wait for the writer
 * thread and would wait for themselves (WF_EBUSY).
 */
#ifndef WF_STORE_H
#define WF_STORE_H

#include <wf/common.h>
#include <wf/event.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wf_store wf_store;

/** When the writer thread commits a round. */
typedef enum wf_store_commit {
    /** Commit as soon as something is queued (each commit fsyncs; what
     *  queues while one commits goes into the next round). */
    WF_STORE_COMMIT_EVERY = 0,
    /** Commit at most every interval_ms (default 10): each commit fsyncs;
     *  a write is durable within about interval_ms plus one fsync. */
    WF_STORE_COMMIT_INTERVAL = 1,
    /** Commit every interval_ms without fsync: committed writes survive
     *  a crash of the process, not of the operating system or machine. */
    WF_STORE_COMMIT_OFF = 2
} wf_store_commit;

/** What an append does when the writer's queue is full. */
typedef enum wf_store_full {
    /** The caller waits until the writer has committed a round and made room. */
    WF_STORE_FULL_BLOCK = 0,
    /** The call fails with WF_EOVERFLOW and queues nothing. */
    WF_STORE_FULL_FAIL = 1
} wf_store_full;

/** A clock in ms since the Unix epoch (leases compare it across processes). */
typedef int64_t (*wf_store_clock_fn)(void *user);

/** Store parameters. Fill with wf_store_params_init; only grows at the end. */
typedef struct wf_store_params {
    /** A wf_store_commit. Default WF_STORE_COMMIT_INTERVAL. */
    int32_t commit;
    /** ms between commits for COMMIT_INTERVAL and COMMIT_OFF. Default 10. */
    uint32_t interval_ms;
    /** How long the writer waits for another process's write lock, ms. Default 5000. */
    uint32_t busy_timeout_ms;
    /** Bytes the queue may hold (records and their data) before it is full. Default 64 MiB. */
    uint64_t queue_bytes;
    /** A wf_store_full. Default WF_STORE_FULL_BLOCK. */
    int32_t full;
    /** Lease length for create and claim, ms. Default 30000. */
    uint32_t lease_ms;
    /**
     * This store's owner id in leases (borrowed for wf_store_open_*; the
     * store copies it). NULL (default): "<hostname>:<pid>:<random>".
     */
    const char *owner;
    /** Optional clock (default: CLOCK_REALTIME) and its user pointer (tests). */
    wf_store_clock_fn clock;
    void *clock_user;
    /** Nonzero: check the whole file at open (PRAGMA quick_check; reads all of it). Default 0. */
    int32_t verify;
} wf_store_params;

/** Fills p with the defaults. Any thread. */
WF_API void wf_store_params_init(wf_store_params *p);

/** A run's status in the store. Explicit values: they are stored. */
typedef enum wf_store_status {
    WF_STORE_RUNNING = 0,   /**< in flight in its owner's memory */
    WF_STORE_WAITING = 1,   /**< in flight, waiting for an outside event, in memory */
    WF_STORE_RELEASED = 2,  /**< waiting, checkpointed and out of memory; no owner */
    WF_STORE_DONE = 3,      /**< ended with a result (WF_RUN_DONE) */
    WF_STORE_FAILED = 4,    /**< ended: a step failed (WF_RUN_FAILED) */
    WF_STORE_TIMED_OUT = 5, /**< ended: run timeout (WF_RUN_TIMED_OUT) */
    WF_STORE_CANCELLED = 6  /**< ended: cancelled (WF_RUN_CANCELLED) */
} wf_store_status;

/** Bits for wf_store_list's mask: WF_STORE_MASK(WF_STORE_WAITING) | ... */
#define WF_STORE_MASK(status) (1u << (status))
/** Runs that are not finished: running, waiting, released. */
#define WF_STORE_MASK_INFLIGHT 0x7u
/** Every status. */
#define WF_STORE_MASK_ALL 0x7fu

/**
 * Record kinds the engine writes. The store keeps the kind and the bytes
 * without reading them; the values are stored, so they never change.
 */
enum {
    WF_STORE_REC_STEP = 1,   /**< a step completion (wf_store_encode_step) */
    WF_STORE_REC_EVENT = 2,  /**< an event written to the run's stream */
    WF_STORE_REC_SEND = 3,   /**< an event sent into the run from outside */
    WF_STORE_REC_WAIT = 4,   /**< a wait_for_event registered or resolved */
    WF_STORE_REC_GROUP = 5,  /**< a list fan-out group */
    WF_STORE_REC_RETRY = 6,  /**< a failed attempt that will be retried */
    WF_STORE_REC_USER = 1000 /**< first kind free for other uses */
};

/** One journal record handed to wf_store_append: data borrowed for the call. */
typedef struct wf_store_rec {
    uint32_t kind;
    const void *data;
    size_t len;
} wf_store_rec;

/** A run as the store knows it (wf_store_get_run, wf_store_claim, wf_store_list). */
typedef struct wf_store_run_info {
    char *run_id;            /**< caller owned when filled by get_run/claim, see each call */
    char *workflow;          /**< the workflow's name given at create */
    char *owner;             /**< lease holder, or NULL */
    int32_t status;          /**< a wf_store_status */
    int64_t lease_until_ms;  /**< lease expiry (clock ms); 0 without owner */
    uint64_t next_seq;       /**< committed journal records: the next one gets this number */
    uint64_t checkpoint_seq; /**< the checkpoint covers records before this; 0: none */
    int64_t created_ms;      /**< clock ms at create */
    int64_t updated_ms;      /**< clock ms of the last status or lease change */
} wf_store_run_info;

/** Frees the strings of info filled by a call (sets them NULL). NULL is fine. Any thread. */
WF_API void wf_store_run_info_clear(wf_store_run_info *info);

/**
 * Called once per queued write when its round has committed (rc 0: it is
 * durable) or when it failed (rc < 0: nothing of it was written). ticket is
 * the write's ticket. Runs on the writer thread; must not block.
 */
typedef void (*wf_store_done_fn)(int rc, uint64_t ticket, void *user);
/** One journal record: borrowed for the call; return nonzero to stop. */
typedef int (*wf_store_journal_fn)(uint64_t seq, uint32_t kind, const void *data, size_t len,
                                   void *user);
/** One run of a listing: info borrowed for the call; return nonzero to stop. */
typedef int (*wf_store_list_fn)(const wf_store_run_info *info, void *user);

/**
 * The backend's operations, each with the backend's self pointer first.
 * The wrapper calls (wf_store_*) check their arguments before calling
 * these, so a backend sees only non-NULL pointers and valid values. Each
 * returns what the wf_store_* call of the same name documents.
 */
typedef struct wf_store_ops {
    /** sizeof(wf_store_ops) of the backend's build; grows only at the end. */
    uint32_t size;
    /** The backend's name, e.g. "sqlite" (borrowed: valid while the store lives). */
    const char *name;
    int (*create)(void *self, const char *run_id, const char *workflow, uint64_t *ticket);
    int (*claim)(void *self, const char *run_id, wf_store_run_info *info);
    int (*append)(void *self, const char *run_id, const wf_store_rec *recs, size_t n,
                  wf_store_done_fn done, void *user, uint64_t *first_seq, uint64_t *ticket);
    int (*set_status)(void *self, const char *run_id, int32_t status, uint64_t *ticket);
    int (*put_checkpoint)(void *self, const char *run_id, const void *data, size_t len,
                          wf_store_done_fn done, void *user, uint64_t *seq, uint64_t *ticket);
    int (*put_result)(void *self, const char *run_id, int32_t status, const void *data, size_t len,
                      wf_store_done_fn done, void *user, uint64_t *ticket);
    int (*release)(void *self, const char *run_id);
    int (*renew)(void *self, uint32_t *lost);
    int (*remove)(void *self, const char *run_id);
    int (*flush)(void *self);
    int (*wait)(void *self, uint64_t ticket);
    uint64_t (*durable)(void *self);
    int (*get_run)(void *self, const char *run_id, wf_store_run_info *info);
    int (*get_checkpoint)(void *self, const char *run_id, void **data, size_t *len, uint64_t *seq);
    int (*get_result)(void *self, const char *run_id, int32_t *status, void **data, size_t *len);
    int (*read_journal)(void *self, const char *run_id, uint64_t from_seq, uint32_t max,
                        wf_store_journal_fn fn, void *user, uint64_t *next_seq);
    int (*list)(void *self, uint32_t mask, uint64_t cursor, uint32_t limit, wf_store_list_fn fn,
                void *user, uint64_t *next_cursor);
    /** Stops the writer after committing what is queued, frees self. */
    void (*free)(void *self);
    /** wf_store_release_queued (NULL: the wrapper calls release and then done). */
    int (*release_queued)(void *self, const char *run_id, wf_store_done_fn done, void *user,
                          uint64_t *ticket);
} wf_store_ops;

/**
 * A store over a backend: ops borrowed (must outlive the store), self taken
 * (ops->free(self) at wf_store_free, also when this call fails). Caller
 * owns *out: wf_store_free. WF_EINVAL for NULL ops or a missing operation.
 */
WF_API int wf_store_new(wf_store **out, const wf_store_ops *ops, void *self);

/**
 * Opens (creating it if needed) a SQLite store at path, in WAL mode, and
 * starts its writer thread. params may be NULL for the defaults. Refuses a
 * file of another program (WF_EFORMAT: another application_id, or not a
 * database), of a newer schema (WF_EVERSION), a corrupt one (WF_ECORRUPT)
 * and an unreadable one (WF_EIO); *message (optional, caller owns:
 * wf_free) then says why. WF_ENOTSUP when wf was built without SQLite.
 * Caller owns *out: wf_store_free. Any thread.
 */
WF_API int wf_store_open_sqlite(wf_store **out, const char *path, const wf_store_params *params,
                                char **message);

/** Where and how a NATS JetStream store connects (wf_store_open_nats). Fill
 *  with wf_store_nats_params_init; only grows at the end. Strings borrowed
 *  for the open call. */
typedef struct wf_store_nats_params {
    /** Prefix of the stream, bucket and subject names. Default "wf": stream
     *  "wf_data" (subjects wf.d.>), key-value bucket "wf_runs"; letters,
     *  digits, '-' and '_' only. */
    const char *prefix;
    /** A NATS credentials file (user JWT and nkey seed), or NULL. */
    const char *creds_file;
    /** Replicas of the stream and the bucket (1 on a single server). Default 1. */
    int32_t replicas;
    /** Attempts to reach the server at open, each timeout_ms long, 250 ms apart. Default 5. */
    int32_t connect_attempts;
    /** Connect and request timeout, ms. Default 5000. */
    int32_t timeout_ms;
} wf_store_nats_params;

/** Fills p with the defaults. Any thread. */
WF_API void wf_store_nats_params_init(wf_store_nats_params *p);

/**
 * Opens a store on NATS JetStream at url (one or more "nats://host:port"
 * separated by commas), creating its stream and bucket when missing
 * (docs/CLUSTER.md). params and nats may be NULL for the defaults. The
 * connection reconnects by itself; writes queued while it is away commit
 * after it returns or fail with WF_EIO. WF_EIO with *message (optional,
 * caller owns: wf_free) when the server cannot be reached after
 * nats->connect_attempts or has no JetStream; WF_ENOTSUP when wf was built
 * without NATS (-Dnats=disabled). Caller owns *out: wf_store_free. Any thread.
 */
WF_API int wf_store_open_nats(wf_store **out, const char *url, const wf_store_params *params,
                              const wf_store_nats_params *nats, char **message);

/**
 * Commits what is queued (its callbacks run), stops the writer and frees
 * the store. Leases are kept (they expire; see wf_store_release). No other
 * call on s may be in progress or follow. NULL is fine. Not from a
 * completion callback.
 */
WF_API void wf_store_free(wf_store *s);

/** The backend's name ("sqlite"). Borrowed: valid while s lives. */
WF_API const char *wf_store_backend(const wf_store *s);

/* ---- writes: queued, durable when their ticket is (never block on fsync) ---- */

/**
 * Registers a new run (status RUNNING) leased to this store's owner. A run
 * id the store already has, committed or queued, is WF_EEXIST at once; one
 * created concurrently by another process on the same file fails at commit
 * (the ticket settles with WF_EEXIST, and so do the run's later writes).
 * run_id: 1 to 1024 bytes, no NUL; workflow: the workflow's name; both
 * borrowed for the call. *ticket (optional) the write's ticket.
 */
WF_API int wf_store_create(wf_store *s, const char *run_id, const char *workflow, uint64_t *ticket);

/**
 * Queues n (1 to 65536) journal records for run_id, which this store must
 * have created or claimed (else WF_ENOTFOUND; after a failed write to the
 * run, that write's error). The records get the run's next sequence
 * numbers, first *first_seq (optional), consecutive, in queue order: the
 * committed journal of a run is always gap-free. recs and their data
 * borrowed for the call (copied). done (optional) is called once with the
 * outcome, unless this call fails. Never waits for a commit; waits for room
 * only when the queue is full and params.full is WF_STORE_FULL_BLOCK
 * (WF_STORE_FULL_FAIL: WF_EOVERFLOW).
 */
WF_API int wf_store_append(wf_store *s, const char *run_id, const wf_store_rec *recs, size_t n,
                           wf_store_done_fn done, void *user, uint64_t *first_seq,
                           uint64_t *ticket);

/** Queues a status change to WF_STORE_RUNNING or WF_STORE_WAITING (else WF_EINVAL). */
WF_API int wf_store_set_status(wf_store *s, const char *run_id, int32_t status, uint64_t *ticket);

/**
 * Queues a checkpoint of run_id (data: msgpack bytes, e.g. wf_ctx_save's,
 * borrowed for the call; replaces the previous one). It covers every record
 * appended before this call: *seq (optional) gets the first record it does
 * not cover. done as for wf_store_append.
 */
WF_API int wf_store_put_checkpoint(wf_store *s, const char *run_id, const void *data, size_t len,
                                   wf_store_done_fn done, void *user, uint64_t *seq,
                                   uint64_t *ticket);

/**
 * Queues the run's result (data: msgpack bytes, len may be 0) with its end
 * status (WF_STORE_DONE ... WF_STORE_CANCELLED, else WF_EINVAL): the run
 * is finished, its lease dropped, and this store stops accepting writes to
 * it. Report the result to anyone only from done with rc 0 (or after
 * wf_store_wait on the ticket): then it is durable, and so is every record
 * appended to the run before.
 */
WF_API int wf_store_put_result(wf_store *s, const char *run_id, int32_t status, const void *data,
                               size_t len, wf_store_done_fn done, void *user, uint64_t *ticket);

/* ---- synchronous: wait for the writer's next round ---- */

/**
 * Takes run_id's lease for this store's owner (renews it when it holds it
 * already) so the store accepts writes to it; a released run becomes
 * RUNNING. WF_ENOTFOUND: no such run; WF_ELEASE: another owner's lease
 * has not expired; WF_ESTATE: the run has finished. info (optional) gets
 * the run after the claim (caller owns its strings:
 * wf_store_run_info_clear); its next_seq is where the next append goes.
 */
WF_API int wf_store_claim(wf_store *s, const char *run_id, wf_store_run_info *info);

/**
 * Idle release: after what was queued for run_id commits, marks it
 * RELEASED without an owner (anyone may claim it) and stops accepting
 * writes to it here. Put its checkpoint first. Durable when it returns.
 */
WF_API int wf_store_release(wf_store *s, const char *run_id);

/**
 * wf_store_release without waiting: the release is queued (after what was
 * queued for run_id; no write to it is accepted here after it) and done
 * (optional, on the writer thread) gets its outcome once it committed:
 * 0, or what wf_store_release would have returned (WF_ELEASE: another
 * owner has the run). Thousands queued at once share one commit round,
 * where wf_store_release waits for a round each. A backend without it
 * releases synchronously and calls done before returning.
 */
WF_API int wf_store_release_queued(wf_store *s, const char *run_id, wf_store_done_fn done,
                                   void *user, uint64_t *ticket);

/**
 * Extends the lease of every run this store holds by params.lease_ms.
 * *lost (optional) gets how many the store found taken by another owner
 * (their writes then fail with WF_ELEASE). Call it every lease_ms / 3.
 */
WF_API int wf_store_renew(wf_store *s, uint32_t *lost);

/** Deletes run_id, its journal, checkpoint and result. WF_ENOTFOUND if absent. */
WF_API int wf_store_remove(wf_store *s, const char *run_id);

/**
 * Commits what is queued now (whatever the policy) and waits until it is
 * durable. Returns WF_EIO/WF_ECORRUPT when the store has failed.
 */
WF_API int wf_store_flush(wf_store *s);

/** Waits until ticket is settled (durable or failed). 0, or the store's failure. */
WF_API int wf_store_wait(wf_store *s, uint64_t ticket);

/** The highest ticket such that it and every earlier one are settled. Never blocks. */
WF_API uint64_t wf_store_durable(wf_store *s);

/* ---- reads: committed data only, never wait for the writer ---- */

/** The run's record (caller owns info's strings: wf_store_run_info_clear). WF_ENOTFOUND. */
WF_API int wf_store_get_run(wf_store *s, const char *run_id, wf_store_run_info *info);

/**
 * The run's checkpoint: *data caller owned (wf_free), *seq the first record
 * it does not cover (optional). WF_ENOTFOUND: no run or no checkpoint.
 */
WF_API int wf_store_get_checkpoint(wf_store *s, const char *run_id, void **data, size_t *len,
                                   uint64_t *seq);

/**
 * The run's result: *status its end status, *data caller owned (wf_free;
 * NULL when empty). WF_ENOTFOUND: no such run; WF_EAGAIN: not finished yet.
 */
WF_API int wf_store_get_result(wf_store *s, const char *run_id, int32_t *status, void **data,
                               size_t *len);

/**
 * Calls fn for the run's committed records with seq >= from_seq, in order,
 * at most max of them (0: no limit). *next_seq (optional) the seq after
 * the last one given (from_seq if none): the cursor for the next call.
 * WF_ENOTFOUND: no such run. fn must not call synchronous store functions.
 */
WF_API int wf_store_read_journal(wf_store *s, const char *run_id, uint64_t from_seq, uint32_t max,
                                 wf_store_journal_fn fn, void *user, uint64_t *next_seq);

/**
 * Calls fn for up to limit (0: no limit) runs whose status is in mask
 * (WF_STORE_MASK bits), in creation order, after cursor (0: from the
 * start). *next_cursor (optional) the cursor for the next page (0 when the
 * listing is complete). info is borrowed for the call to fn.
 */
WF_API int wf_store_list(wf_store *s, uint32_t mask, uint64_t cursor, uint32_t limit,
                         wf_store_list_fn fn, void *user, uint64_t *next_cursor);

/* ---- helpers ---- */

/**
 * Encodes a step completion as a journal record with the snapshot codec:
 * the msgpack array [step, attempt, input, [emitted...]], each event as
 * wf_event_to_msgpack writes it ([type name, {fields}]). input and the
 * emitted events are borrowed for the call (n may be 0, emitted then NULL).
 * *buf caller owned (wf_free). Any thread.
 */
WF_API int wf_store_encode_step(const char *step, uint32_t attempt, const wf_event *input,
                                const wf_event *const *emitted, size_t n, void **buf, size_t *len);

/**
 * A stable idempotency key "run_id/step/seq/attempt" into buf (cap bytes
 * with the NUL): '%' and '/' in run_id and step are written %25 and %2F, so
 * distinct inputs give distinct keys. seq is the journal position of the
 * invocation's input, attempt its retry attempt (1 for the first): the
 * same before and after a recovery, different for each retry. Returns the
 * key's length, WF_ERANGE when cap is too small (buf then holds "" if cap
 * > 0), WF_EINVAL for NULL names. Any thread.
 */
WF_API int wf_store_idempotency_key(char *buf, size_t cap, const char *run_id, const char *step,
                                    uint64_t seq, uint32_t attempt);

#ifdef __cplusplus
}
#endif

#endif
