/*
 * server_impl.h: wf serve's structures and the calls its files share:
 * server.c (records, handler JSON, responses, routing, the server),
 * streams.c (a run's reader and the SSE/NDJSON event streams) and routes.c
 * (the workflow, run and handler routes, the debugger UI). Never installed.
 */
#ifndef WF_SERVE_IMPL_H
#define WF_SERVE_IMPL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json_internal.h"
#include "serve.h"

enum { ST_RUNNING = 0, ST_COMPLETED = 1, ST_FAILED = 2, ST_CANCELLED = 3 };
static const char *const status_names[] = {"running", "completed", "failed", "cancelled"};

/*
 * One event of a run's log: the event itself (a reference), formatted as
 * the API's envelope only when a stream reader sends it. A POST /run whose
 * log nobody reads never formats it (that was a fifth of its CPU).
 */
typedef struct srv_entry {
    wf_event *ev;
    int internal; /* an InternalDispatchEvent (StepStateChanged, WorkflowIdleEvent, ...) */
    int terminal; /* the stop event: handed to readers only once the record has ended */
} srv_entry;

typedef struct srv_wf {
    const char *name; /* borrowed from the workflow */
    wf_workflow *wf;  /* borrowed from its plugin */
    const char *plugin;
} srv_wf;

typedef struct srv_rec {
    char id[32];
    const srv_wf *w;
    atomic_int refs;
    /* set before the record is shared, then read-only */
    wf_handler *h;
    char run_id[24];
    double started_at;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* guarded by lock */
    srv_entry *log;
    size_t n_log, cap_log;
    int status;
    int ended; /* the final status, error and result are set */
    int pumping;  /* a thread reads the handler's stream into the log (streams.c) */
    int end_seen; /* on_done came: the run ended */
    struct MHD_Connection *resume; /* a POST .../run suspended until the run ends */
    struct stream_rd *waiters;     /* stream readers suspended until the log grows */
    int n_readers;                 /* stream readers attached */
    int reader_thread;             /* a thread reads the stream for them (streams.c) */
    char *error;
    char *result;        /* envelope of the StopEvent, or NULL */
    char *result_compat; /* GET /results' result: StopEvent.result or the value */
    double updated_at, completed_at;
    /* guarded by the server's lock */
    struct srv_rec *hnext, *prev, *next;
    int listed;
} srv_rec;

struct wf_server {
    struct MHD_Daemon *d;
    wf_executor *ex;
    srv_wf *wfs;
    size_t n_wfs;
    char *ui_dir;
    size_t body_limit, max_handlers;
    int run_here; /* wf_server_params.first_step_here */
    uint16_t port;
    atomic_int stopping;
    /* guarded by lock */
    pthread_mutex_t lock;
    srv_rec **table;
    size_t table_cap, count;
    srv_rec *head, *tail;
    /*
     * Held around the calls that inject work into the executor from a thread
     * outside it (starting a run, sending an event, cancelling). The executor's injection
     * ring (ck_ring MPMC) makes a producer spin until the one before it has
     * published; with dozens of connection threads on 2 cores, a producer
     * preempted in between made the others spin for whole time slices
     * (97% of the time in wf__inject at 64 connections). One producer at a
     * time, the others parked on this mutex, avoids that convoy.
     */
    pthread_mutex_t inject_lock;
    /* threads reading runs' streams for stream readers; decremented under lock, on pumps_cond */
    atomic_size_t pumps;
    pthread_cond_t pumps_cond;
    /*
     * Connections suspended and not yet back in a callback of ours: the
     * shutdown waits for 0 before MHD_stop_daemon, which aborts the process
     * if any is left suspended. After no_suspend, nothing is suspended.
     * Atomic (seq_cst), no lock on the way of a request: a suspender counts
     * itself and then looks at no_suspend, the shutdown sets no_suspend and
     * then looks at the count, so one of them sees the other. susp_lock
     * and susp_cond only carry the last one back's wake-up to the shutdown.
     */
    pthread_mutex_t susp_lock;
    pthread_cond_t susp_cond;
    atomic_size_t suspended;
    atomic_int no_suspend;
    /* with a store (durable.c): durable runs; recovered and loaded runs get our on_done */
    wf_store *store;
};

/* A request being read (its body, up to the limit). */
typedef struct conn_state {
    char *body;
    size_t len, cap;
    int too_big;
    struct srv_rec *run; /* POST .../run: the run it waits for, suspended (a reference) */
    int counted;         /* in the server's suspended count */
} conn_state;

void wf__srv_cors(struct MHD_Connection *c, struct MHD_Response *resp);
enum MHD_Result wf__srv_get_events(wf_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result wf__srv_get_events_list(const srv_wf *w, struct MHD_Connection *c);
enum MHD_Result wf__srv_get_handler(wf_server *s, struct MHD_Connection *c, const char *id,
                                    int compat);
enum MHD_Result wf__srv_get_handlers(wf_server *s, struct MHD_Connection *c);
enum MHD_Result wf__srv_get_representation(const srv_wf *w, struct MHD_Connection *c);
enum MHD_Result wf__srv_get_schema(const srv_wf *w, struct MHD_Connection *c);
enum MHD_Result wf__srv_get_static(wf_server *s, struct MHD_Connection *c, const char *url);
enum MHD_Result wf__srv_get_workflows(wf_server *s, struct MHD_Connection *c);
int wf__srv_http_status_of(srv_rec *r);
int wf__srv_is_builtin(const wf_event_type *t, int *which);
int wf__srv_is_internal_type(const wf_event_type *t);
srv_rec *wf__srv_lookup(wf_server *s, const char *id);
void wf__srv_new_id(char out[11]);
/* t (seconds since the epoch) as Python's datetime.isoformat() of an aware UTC time. */
void wf__srv_iso_time(double t, char out[64]);
double wf__srv_now_s(void);
enum MHD_Result wf__srv_post_cancel(wf_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result wf__srv_post_event(wf_server *s, struct MHD_Connection *c, const char *id,
                                   conn_state *cs);
enum MHD_Result wf__srv_post_run(wf_server *s, const srv_wf *w, struct MHD_Connection *c,
                                 conn_state *cs, int wait);
void wf__srv_on_done(wf_handler *h, void *user);
int wf__srv_suspend(wf_server *s, struct MHD_Connection *c);
void wf__srv_unsuspended(wf_server *s);
void wf__srv_pump_turn(srv_rec *r, wf_handler *h, int64_t timeout_ms);
void wf__srv_put(wf_json_buf *b, const char *s);
void wf__srv_put_str(wf_json_buf *b, const char *s);
int wf__srv_query_true(struct MHD_Connection *c, const char *key, int dflt);
void wf__srv_rec_unref(srv_rec *r);
enum MHD_Result wf__srv_reply(struct MHD_Connection *c, unsigned status, const char *type,
                              const char *data, size_t len);
enum MHD_Result wf__srv_reply_detail(struct MHD_Connection *c, unsigned status, const char *fmt,
                                     ...) __attribute__((format(printf, 3, 4)));
/* Answers with b as JSON, handing b's memory to the response (b is left empty; free it still). */
enum MHD_Result wf__srv_reply_json(struct MHD_Connection *c, unsigned status, wf_json_buf *b);
srv_rec *wf__srv_table_find(wf_server *s, const char *id);
int wf__srv_table_insert(wf_server *s, srv_rec *r);
void wf__srv_table_remove(wf_server *s, srv_rec *r);
void wf__srv_write_handler(wf_json_buf *b, srv_rec *r, int compat);
/* An event as the API's envelope {"value", "type", "types", "qualified_name"} (streams.c). */
int wf__srv_envelope(wf_json_buf *b, const wf_event *ev, const char *plugin);
/*
 * With a store (durable.c): _start attaches it to s->ex and makes the
 * store's runs records (at startup); _send sends ev (taken) to the run of
 * a record without a handler (released), loading it, and replaces the
 * record by a live one (0, or WF_ESTATE ended, WF_EBUSY another owner's,
 * WF_ECANCELLED stopping, ...); _stop frees s->ex (the runs stay in flight
 * in the store) and joins durable.c's threads, before anything is cancelled.
 */
int wf__srv_durable_start(wf_server *s, wf_store *st, char **message);
int wf__srv_durable_send(wf_server *s, srv_rec *r, wf_event *ev, const char *step);
void wf__srv_durable_stop(wf_server *s);

#endif
