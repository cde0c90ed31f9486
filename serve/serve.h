/*
 * serve.h: the HTTP server of `wf serve` (libmicrohttpd + jansson), the API
 * of the reference's llama-agents-server. Part of the wf command, not of
 * libwf: this header is not installed.
 *
 * One executor runs every workflow; each run is a handler record with an
 * id, a status and a log of the events read from the run's stream (numbered
 * from 0, so a late reader starts from a cursor). MHD runs epoll on a pool
 * of threads, one a core: a request that waits (POST .../run, a stream of
 * events with nothing to send) is a suspended connection, never a blocked
 * thread, and never waits on an executor worker. The log fills lazily: the
 * run's end drains its stream, and a reader thread per run pumps it while
 * stream readers wait (streams.c).
 */
#ifndef WF_SERVE_H
#define WF_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include <wf/wf.h>

typedef struct wf_server wf_server;

/** Server parameters. Fill with wf_server_params_init. */
typedef struct wf_server_params {
    /** The plugins whose workflows are served (borrowed: they must outlive the server). */
    wf_plugin *const *plugins;
    size_t n_plugins;
    /** IPv4 address to listen on (default "127.0.0.1") and port (0: any free port). */
    const char *host;
    uint16_t port;
    /** Executor worker threads (0: the cores). */
    uint32_t threads;
    /** The debugger UI's directory (app.js, app.css), or NULL. */
    const char *ui_dir;
    /** Largest request body accepted, in bytes (default 1 MiB); more is 413. */
    size_t body_limit;
    /** Ended handlers kept for GET /handlers (default 10000); the oldest go first. */
    size_t max_handlers;
    /** Most connections at once (default 2048). */
    uint32_t max_connections;
    /** libmicrohttpd's threads (epoll, each serving many connections); 0: the cores. */
    uint32_t http_threads;
    /**
     * 0: every step runs on the executor's workers. Nonzero (the default):
     * a run's first step runs on the HTTP thread that starts it
     * (wf_run_params.run_here), as the reference runs its steps on its
     * event loop, so a run its first step ends is answered with no hand-off
     * to a worker and back; a long first step holds that thread's other
     * connections meanwhile.
     */
    int first_step_here;
    /**
     * A run store (borrowed: it must outlive the server), or NULL. With one,
     * every run started is durable, its run id its handler id, and the
     * store's runs of the served workflows are handlers again at startup:
     * those in flight under this store's owner continued, the ended ones
     * with their stored result, the released ones loaded by an event sent
     * to them (durable.c). The server's shutdown leaves the runs in flight
     * in the store instead of cancelling them.
     */
    wf_store *store;
} wf_server_params;

void wf_server_params_init(wf_server_params *p);

/**
 * Loads every workflow of the plugins, starts the executor and the HTTP
 * daemon. Errors: WF_EEXIST two plugins serve a workflow of the same name,
 * WF_EINVAL a bad host, WF_ENOTFOUND the port cannot be bound, or what
 * building a workflow returned; *message (optional; caller owns: free)
 * says why. Caller owns *out: wf_server_free.
 */
int wf_server_new(wf_server **out, const wf_server_params *p, char **message);
/** The port the server listens on (the one the system chose for port 0). */
uint16_t wf_server_port(const wf_server *s);
/**
 * Stops accepting connections, cancels the runs still going, ends the
 * streams, joins every thread and frees the server. NULL is fine.
 */
void wf_server_free(wf_server *s);

#endif
