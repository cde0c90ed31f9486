/*
 * cli.h: what the subcommands of the wf command share: exit codes, loading a
 * plugin's workflow, reading input, the signal thread, JSON output helpers.
 */
#ifndef WF_CLI_H
#define WF_CLI_H

#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>

#include <wf/json.h>
#include <wf/wf.h>

/* Exit codes (docs/CLI.md). */
enum {
    EXIT_DONE = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_TIMEDOUT = 3,
    EXIT_WAITING = 4,
    EXIT_INTERRUPTED = 130
};

/* Prints "wf CMD: ..." on stderr. */
void cli_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Loads path and its workflow name (NULL: the first). On failure prints why
 * and returns EXIT_USAGE; *plugin is then NULL.
 */
int cli_load(const char *cmd, const char *path, const char *name, wf_plugin **plugin,
             wf_workflow **wf);

/*
 * The text of an --input style argument: "JSON" as is, "@FILE" the file's
 * content, "-" standard input. Caller frees *out. EXIT_USAGE after a message.
 */
int cli_read_arg(const char *cmd, const char *arg, char **out, size_t *len);
/* The whole of f (malloc'd, NUL-terminated), or -1 with errno. */
int cli_slurp(FILE *f, char **buf, size_t *len);

/* Parses "S" seconds ("none" or "0": no timeout) into ms. -1 for bad text. */
int cli_parse_timeout(const char *s, int64_t *ms);
/* Parses a positive count. -1 for bad text. */
int cli_parse_count(const char *s, long min, long max, long *out);

/*
 * The signal thread: SIGINT and SIGTERM are blocked in every thread (call
 * before creating threads) and delivered to fn on a thread of their own.
 * cli_signals_stop joins it. interrupted is set before fn runs.
 */
extern atomic_int cli_interrupted;
int cli_signals_start(void (*fn)(void *user), void *user);
/* For commands that serve until stopped: cli_stop_signal is the function to
 * give cli_signals_start; cli_stop_wait blocks until it has been called. */
void cli_stop_signal(void *user);
void cli_stop_wait(void);
void cli_signals_stop(void);

/*
 * Options the subcommands share, parsed in one place (cli_getopt): put the
 * CLI_OPT_* entries a command takes in its long-option table and their
 * letters in its short options ("t:" for --threads, "h"), and the
 * CLI_HELP_* lines in its usage.
 */
#define CLI_OPT_THREADS {"threads", required_argument, NULL, 't'}
#define CLI_OPT_TIMEOUT {"timeout", required_argument, NULL, 'T'}
#define CLI_OPT_STORE   {"store", required_argument, NULL, 'S'}
#define CLI_OPT_HELP    {"help", no_argument, NULL, 'h'}
/* Usage lines of the shared options; pad fills to the command's description column. */
#define CLI_HELP_THREADS(pad) "  -t, --threads N" pad "worker threads (default: the cores)\n"
#define CLI_HELP_TIMEOUT(pad, what) \
    "      --timeout S" pad what " timeout in seconds (0 or none: no timeout;\n" \
    "      " pad "           default: the workflow's)\n"
#define CLI_HELP_STORE(pad) \
    "      --store STORE" pad "the run store: sqlite:PATH, or a PATH (a SQLite file)\n"

/* The values of the shared options (cli_opts_init: the defaults). */
typedef struct cli_opts {
    long threads;       /* --threads; 0: the cores */
    int64_t timeout_ms; /* --timeout; WF_TIMEOUT_DEFAULT: the workflow's */
    const char *store;  /* --store, or NULL */
} cli_opts;

void cli_opts_init(cli_opts *o);

/*
 * A command's own option: 0 taken, EXIT_USAGE after a message, -1 not one
 * of its options (cli_getopt then prints the usage and fails).
 */
typedef int (*cli_opt_fn)(int c, const char *arg, void *user);

/* cli_getopt's answer when the command goes on. */
#define CLI_CONTINUE (-1)

/*
 * Parses argv (argv[0] the command's name) with getopt_long: the shared
 * options into *common, the others through fn (may be NULL). --help prints
 * usage on standard output: EXIT_DONE; an unknown option or a bad value, or
 * fewer than min_pos or more than max_pos (-1: any) operands: usage on
 * standard error, EXIT_USAGE. Otherwise CLI_CONTINUE, the operands from
 * argv[optind].
 */
int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts, cli_opts *common, cli_opt_fn fn, void *user,
               void (*usage)(FILE *to), int min_pos, int max_pos);

/*
 * Opens the store of --store: "sqlite:PATH" or a PATH (must_exist: a file
 * that is not there is an error rather than a new store; owner: the lease
 * owner id, NULL for a new one per process). EXIT_USAGE after
 * a message. cli_store_attach attaches it to ex for durable runs (a run
 * that idles waiting for an event idle_release_ms is released: checkpointed,
 * out of memory; 0 never); EXIT_FAILED after a message.
 */
int cli_store_open(const char *cmd, const char *spec, int must_exist, const char *owner,
                   wf_store **out);
int cli_store_attach(const char *cmd, wf_executor *ex, wf_store *st, uint32_t idle_release_ms);

/* A waiting run is released into the store after this long idle (wf run, wf runs respond). */
#define CLI_IDLE_RELEASE_MS 20
/*
 * The store owner (lease holder) of wf run, wf batch and wf runs respond:
 * one for all, so a run a killed or crashed wf process left in flight is
 * continued at once by the next one (recovery takes the runs whose lease
 * is free or ours) instead of after its lease expires. So one such process
 * at a time on a store (wf runs list/show/cancel only read or finish runs
 * nobody holds). wf serve has its own (CLI_SERVE_OWNER): its live runs
 * are its own, a wf runs respond beside it is told to send through it.
 */
#define CLI_STORE_OWNER "wf"
#define CLI_SERVE_OWNER "wf-serve"
/*
 * The last InputRequiredEvent run_id streamed, from its durable stream in
 * ex's store (what is committed), as a JSON envelope in *out (reset
 * first): 1, or 0 when it asked nothing (or the stream cannot be read).
 */
int cli_last_question(wf_executor *ex, wf_workflow *wf, const char *run_id, wf_json_buf *out);
/*
 * Whether run_id is released in st (a durable run whose handler reported
 * WF_ECANCELLED: idle release, not a cancel). The release is queued before
 * the run leaves memory and commits in a later round: this commits what is
 * queued first (wf_store_flush), then reads the run.
 */
int cli_store_released(wf_store *st, const char *run_id);
/*
 * Prints a StopEvent's "result" field (or the whole event) as a JSON line
 * on standard output. cli_print_stored does it for run_id's stored result
 * (ex has a store); a run that did not end done gets a message: the exit
 * code (EXIT_DONE, EXIT_FAILED, EXIT_TIMEDOUT).
 */
int cli_print_result(const char *cmd, wf_event *result);
int cli_print_stored(const char *cmd, wf_executor *ex, wf_workflow *wf, const char *run_id);

/* Subcommands. */
int cmd_run(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_graph(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_runs(int argc, char **argv);
int cmd_worker(int argc, char **argv);

#endif
