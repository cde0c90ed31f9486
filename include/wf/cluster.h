/*
 * cluster.h: runs spread over processes and hosts on NATS JetStream
 * (docs/CLUSTER.md).
 *
 * A wf_cluster is one process's connection to the cluster. A submitter
 * registers the workflows it submits (wf_cluster_register) and submits runs
 * by workflow name with a caller-chosen run id (wf_cluster_submit); the
 * submissions are packed into messages of up to 64 runs on a work-queue
 * stream. A worker registers the workflows it can run the same way and
 * starts pulling (wf_cluster_work). Short runs take the fast path: a
 * puller leases each submission message (a compare-and-set key renewed
 * while its runs go on, so a redelivery runs nothing while the lease lives
 * and a stalled puller that lost it cancels its runs), starts every run of
 * a pull at once (a run id that has a record already is not started
 * again) and gives each that ended in time its only record, the final
 * one, created if absent (one asynchronous round for the pull, so no two
 * results for a run), then acks. A run that
 * waits for an outside event, streams events to journal, takes long or is
 * redelivered takes the slow path on a runner thread: it is claimed in the
 * NATS store (a lease with revision compare-and-set, so two workers never
 * write one run at once), run on the worker's executor, its streamed
 * events journaled, checkpointed and parked (released, no thread held,
 * woken by an input sent to it) while it waits for an outside event, its
 * result put durably in the
 * store, and only then is the submission acknowledged. A worker that dies
 * stops acking: its submissions are redelivered after the ack wait and
 * another worker takes the runs over once the lease expired, from their
 * last checkpoint or from their start event. Results are pushed to the
 * submitters once durable. The granularity is the run: steps done since
 * the last checkpoint run again (at-least-once). docs/CLUSTER.md has the
 * layout and the guarantees.
 *
 * Workflows are matched by name and checked by definition fingerprint
 * (wf_workflow_fingerprint): a submission whose fingerprint differs from
 * the worker's definition ends as WF_STORE_FAILED with a message naming
 * both, never a wrong run.
 *
 * Threads: every function may be called from any thread unless it says
 * otherwise.
 */
#ifndef WF_CLUSTER_H
#define WF_CLUSTER_H

#include <wf/common.h>
#include <wf/event.h>
#include <wf/run.h>
#include <wf/store.h>
#include <wf/workflow.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wf_cluster wf_cluster;
typedef struct wf_cluster_handler wf_cluster_handler;

/** Cluster parameters. Fill with wf_cluster_params_init; only grows at the end. */
typedef struct wf_cluster_params {
    /** Prefix of every stream, bucket and subject (letters, digits, '-', '_'). Default "wfc". */
    const char *prefix;
    /** A NATS credentials file, or NULL. Borrowed for wf_cluster_open. */
    const char *creds_file;
    /** Replicas of the streams and the bucket. Default 1. */
    int32_t replicas;
    /** Attempts to reach the server at open (250 ms apart). Default 5. */
    int32_t connect_attempts;
    /** Connect and request timeout, ms. Default 5000. */
    int32_t timeout_ms;
    /** Ack wait of the work queue: a submission not acked nor kept alive this long is
     *  redelivered. Default 10000. */
    uint32_t ack_wait_ms;
    /** Lease of a run in the store, ms. Default 10000 (renewed every third). */
    uint32_t lease_ms;
    /** Runner threads of a worker process: each drives one run that left the fast path
     *  (it waits for an outside event, streams events, takes long, or is a redelivery).
     *  Default 16. */
    uint32_t runners;
    /** Submissions a puller fetches per pull (the fast path's batch). Default 256. */
    uint32_t fetch_batch;
    /** Nonzero: journal the runs' streamed events (the submitter's event stream). Default 1. */
    int32_t stream_events;
    /** This process's owner id in leases (borrowed for open), or NULL for a unique one. */
    const char *owner;
    /** Puller threads of a worker process (the fast path: a batch of submissions created,
     *  run and ended with a few round trips for the whole batch). Default 2. */
    uint32_t pullers;
    /** Nonzero: runs ended on the fast path get their creation index message, so
     *  wf_store_list on the cluster's store lists them (one more stored message a run).
     *  Default 1. */
    int32_t index_runs;
    /** How long a run may stay on the fast path (no record, its submission leased to the
     *  puller, which renews the lease and keeps the message alive) before it leaves for the
     *  slow path, ms. 0 (default): a third of the smaller of ack_wait_ms and lease_ms. */
    uint32_t fast_ms;
    /** Nonzero: before a pull's runs start, their records are looked up (one direct get a
     *  run, pipelined): a run id submitted again after it ended, or while another worker
     *  holds it, takes the slow path (its stored result, or a wait) and never runs its
     *  steps again. 0: no look-up (for run ids never reused; a reused one may run its steps
     *  again, its first result stays). Default 1. */
    int32_t lookup_runs;
} wf_cluster_params;

/** Fills p with the defaults. */
WF_API void wf_cluster_params_init(wf_cluster_params *p);

/**
 * Connects to NATS at url (servers separated by commas), creating the
 * streams, consumer and bucket when missing. WF_EIO with *message
 * (optional, caller owns: wf_free) when the server cannot be reached after
 * the bounded attempts or has no JetStream; WF_ENOTSUP without NATS.
 * Caller owns *out: wf_cluster_free.
 */
WF_API int wf_cluster_open(wf_cluster **out, const char *url, const wf_cluster_params *params,
                           char **message);

/**
 * Publishes the submissions not published yet (waiting up to 1 s for the
 * server), stops the pullers and runners (the drain: runs in flight are
 * released in the store and their submissions go back to the queue, so
 * another worker continues them at once), closes the connection and frees
 * c. Handlers must be freed first. NULL is fine.
 */
WF_API void wf_cluster_free(wf_cluster *c);

/**
 * Registers wf under name (the cluster keeps a reference; wf is frozen).
 * WF_EEXIST for a name registered already. Before wf_cluster_work.
 */
WF_API int wf_cluster_register(wf_cluster *c, const char *name, wf_workflow *wf);

/**
 * Starts pulling runs of the registered workflows and running them on ex
 * (borrowed: must outlive c). WF_ESTATE if already working.
 */
WF_API int wf_cluster_work(wf_cluster *c, wf_executor *ex);

/**
 * Submits a run of the registered workflow name with start_event (taken,
 * also on failure) under run_id (1 to 1024 bytes; a run id submitted twice
 * has one result: the first). Submissions are packed (up to 64 runs a
 * message) and published asynchronously: when the batch is full, after at
 * most 1 ms, before a handler of c waits, reads or sends, and by
 * wf_cluster_flush, which also waits for the server's acknowledgements.
 * handler (optional) gets a handler (caller owns: wf_cluster_handler_free).
 * WF_ENOTFOUND: name not registered here.
 */
WF_API int wf_cluster_submit(wf_cluster *c, const char *name, wf_event *start_event,
                             const char *run_id, wf_cluster_handler **handler);

/** Waits until every submission so far is stored by the server: 0 or WF_EIO. */
WF_API int wf_cluster_flush(wf_cluster *c, int64_t timeout_ms);

/** A handler for run_id of workflow name (submitted here or anywhere). */
WF_API int wf_cluster_handler_open(wf_cluster *c, const char *name, const char *run_id,
                                   wf_cluster_handler **out);

/**
 * Waits up to timeout_ms (-1: forever) for the run's durable result. 0 and
 * *result (optional; caller owns: wf_event_release) for a run that ended
 * with a stop event; WF_ESTEP (failed, including a fingerprint mismatch;
 * wf_cluster_handler_message says why), WF_ERUNTIMEOUT, WF_ECANCELLED;
 * WF_ETIMEDOUT while it runs.
 */
WF_API int wf_cluster_handler_wait(wf_cluster_handler *h, int64_t timeout_ms, wf_event **result);

/** The failure message of an ended run, or "" (borrowed: valid while h is). */
WF_API const char *wf_cluster_handler_message(const wf_cluster_handler *h);

/**
 * The run's next streamed event at or after the handler's cursor (caller
 * owns *ev), waiting up to timeout_ms; the cursor moves past it. WF_ECLOSED
 * after the last one of an ended run. Events are at-least-once across a
 * takeover (a run continued from a checkpoint may stream again what it
 * streamed after that checkpoint).
 */
WF_API int wf_cluster_handler_next_event(wf_cluster_handler *h, int64_t timeout_ms,
                                         wf_event **ev);
/** The event stream cursor (the next event's number). */
WF_API uint64_t wf_cluster_handler_cursor(const wf_cluster_handler *h);
/** Moves the cursor: a late reader starts where it wants (0: from the first event). */
WF_API void wf_cluster_handler_seek(wf_cluster_handler *h, uint64_t cursor);

/**
 * Sends ev (taken) into the run wherever it runs (durably: a worker that
 * takes the run over gets it too). The run receives it when it next waits
 * for an outside event.
 */
WF_API int wf_cluster_handler_send_event(wf_cluster_handler *h, wf_event *ev);

/** Asks the run to cancel (durably); its result becomes WF_STORE_CANCELLED. */
WF_API int wf_cluster_handler_cancel(wf_cluster_handler *h);

/** The run id (borrowed: valid while h is). */
WF_API const char *wf_cluster_handler_run_id(const wf_cluster_handler *h);

/** Frees h (the run goes on). NULL is fine. */
WF_API void wf_cluster_handler_free(wf_cluster_handler *h);

/** Counters of this process. */
typedef struct wf_cluster_stats {
    uint64_t submitted;   /**< submissions published */
    uint64_t runs_done;   /**< runs this worker ended and acknowledged */
    uint64_t resumed;     /**< runs continued from a checkpoint */
    uint64_t restarted;   /**< runs taken over without a checkpoint (from the start event) */
    uint64_t duplicates;  /**< deliveries of runs already finished (acked, not run) */
    uint64_t busy;        /**< deliveries of runs another worker's lease holds (delayed) */
    uint64_t malformed;   /**< submissions or inputs that could not be decoded (dropped) */
    uint64_t mismatched;  /**< submissions whose fingerprint differs from ours (failed) */
    uint64_t unknown;     /**< submissions of a workflow not registered here (redelivered) */
    uint64_t inputs;      /**< events and cancels delivered into runs */
    uint64_t parked;      /**< idle runs released (waiting for an outside event, no runner held) */
    uint64_t leases_lost; /**< submissions whose lease another worker took after this process
                               stalled past it (their runs cancelled here, nothing written) */
    uint64_t woken;       /**< parked runs woken here by an input sent to them */
} wf_cluster_stats;

/** Fills *st (a snapshot of the counters). */
WF_API void wf_cluster_get_stats(const wf_cluster *c, wf_cluster_stats *st);

/** The cluster's store (borrowed: valid while c is): runs, results, journals. */
WF_API wf_store *wf_cluster_store(const wf_cluster *c);

#ifdef __cplusplus
}
#endif

#endif
