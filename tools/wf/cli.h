/*
 * cli.h: what the subcommands of the wf command share: exit codes, loading a
 * plugin's workflow, reading input, the signal thread, JSON output helpers.
 */
#ifndef WF_CLI_H
#define WF_CLI_H

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
void cli_signals_stop(void);

/* Subcommands. */
int cmd_run(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_graph(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
