/*
 * common.c: shared parts of the wf command (cli.h).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

void cli_err(const char *cmd, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "wf %s: %s\n", cmd, msg);
}

int cli_load(const char *cmd, const char *path, const char *name, wf_plugin **plugin,
             wf_workflow **wf)
{
    char *msg = NULL;
    *plugin = NULL;
    *wf = NULL;
    /* dlopen searches the library path for a name without a slash: a file here wins */
    char *local = NULL;
    if (strchr(path, '/') == NULL) {
        local = malloc(strlen(path) + 3);
        if (local == NULL)
            return EXIT_USAGE;
        strcpy(local, "./");
        strcat(local, path);
    }
    int rc = wf_plugin_open(plugin, local ? local : path, &msg);
    free(local);
    if (rc < 0) {
        cli_err(cmd, "cannot load plugin: %s", msg ? msg : wf_strerror(rc));
        wf_free(msg);
        return EXIT_USAGE;
    }
    rc = wf_plugin_workflow(*plugin, name, wf, &msg);
    if (rc < 0) {
        cli_err(cmd, "%s", msg ? msg : wf_strerror(rc));
        wf_free(msg);
        wf_plugin_free(*plugin);
        *plugin = NULL;
        return EXIT_USAGE;
    }
    return 0;
}

int cli_slurp(FILE *f, char **buf, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (b == NULL)
        return -1;
    for (;;) {
        n += fread(b + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *nb = cap <= SIZE_MAX / 2 ? realloc(b, cap * 2) : NULL;
        if (nb == NULL) {
            free(b);
            errno = ENOMEM;
            return -1;
        }
        b = nb;
        cap *= 2;
    }
    if (ferror(f)) {
        int e = errno;
        free(b);
        errno = e ? e : EIO;
        return -1;
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}

int cli_read_arg(const char *cmd, const char *arg, char **out, size_t *len)
{
    if (strcmp(arg, "-") == 0 || arg[0] == '@') {
        const char *path = arg[0] == '@' ? arg + 1 : "-";
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
        if (f == NULL) {
            cli_err(cmd, "%s: %s", path, strerror(errno));
            return EXIT_USAGE;
        }
        int rc = cli_slurp(f, out, len);
        int e = errno;
        if (f != stdin)
            fclose(f);
        if (rc < 0) {
            cli_err(cmd, "%s: %s", path, strerror(e));
            return EXIT_USAGE;
        }
        return 0;
    }
    *len = strlen(arg);
    *out = strdup(arg);
    return *out ? 0 : EXIT_USAGE;
}

int cli_parse_timeout(const char *s, int64_t *ms)
{
    if (strcmp(s, "none") == 0) {
        *ms = WF_NO_TIMEOUT;
        return 0;
    }
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(d) || d < 0 || d > 1e9)
        return -1;
    *ms = d == 0 ? WF_NO_TIMEOUT : (int64_t)ceil(d * 1000.0);
    return 0;
}

int cli_parse_count(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------ options */

void cli_opts_init(cli_opts *o)
{
    o->threads = 0;
    o->timeout_ms = WF_TIMEOUT_DEFAULT;
    o->store = NULL;
}

/* A shared option: 0 taken, EXIT_USAGE after a message, -1 not shared. */
static int common_opt(const char *cmd, int c, const char *arg, cli_opts *o)
{
    switch (c) {
    case 't':
        if (cli_parse_count(arg, 1, 1024, &o->threads) < 0) {
            cli_err(cmd, "--threads wants a number from 1 to 1024, not '%s'", arg);
            return EXIT_USAGE;
        }
        return 0;
    case 'T':
        if (cli_parse_timeout(arg, &o->timeout_ms) < 0) {
            cli_err(cmd, "--timeout wants seconds (or none), not '%s'", arg);
            return EXIT_USAGE;
        }
        return 0;
    case 'S':
        if (arg[0] == 0) {
            cli_err(cmd, "--store wants sqlite:PATH or a PATH");
            return EXIT_USAGE;
        }
        o->store = arg;
        return 0;
    }
    return -1;
}

int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts, cli_opts *common, cli_opt_fn fn, void *user,
               void (*usage)(FILE *to), int min_pos, int max_pos)
{
    int c;
    optind = 1;
    opterr = 0; /* our message below, with "wf CMD:" */
    while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return EXIT_DONE;
        }
        if (c == '?' || c == ':')
            cli_err(cmd, "bad option '%s' (unknown, or its value is missing)",
                    argv[optind - 1 < argc ? optind - 1 : argc - 1]);
        int rc = c == '?' || c == ':' ? -1 : common_opt(cmd, c, optarg, common);
        if (rc == -1 && c != '?' && c != ':' && fn)
            rc = fn(c, optarg, user);
        if (rc == 0)
            continue;
        if (rc == -1)
            usage(stderr);
        return EXIT_USAGE;
    }
    int n = argc - optind;
    if (n < min_pos || (max_pos >= 0 && n > max_pos)) {
        usage(stderr);
        return EXIT_USAGE;
    }
    return CLI_CONTINUE;
}

/* ------------------------------------------------------------------ signals */

atomic_int cli_interrupted;
static pthread_t sig_thread;
static int sig_running;
static void (*sig_fn)(void *);
static void *sig_user;

static void *sig_main(void *arg)
{
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0 || sig == SIGUSR1)
            return NULL; /* SIGUSR1: cli_signals_stop */
        if (atomic_exchange(&cli_interrupted, 1) == 0) {
            if (sig_fn)
                sig_fn(sig_user);
        } else {
            /* a second Ctrl-C: stop at once, as the shell expects */
            signal(SIGINT, SIG_DFL);
            _exit(EXIT_INTERRUPTED);
        }
    }
}

int cli_signals_start(void (*fn)(void *user), void *user)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sig_fn = fn;
    sig_user = user;
    if (pthread_create(&sig_thread, NULL, sig_main, NULL) != 0)
        return -1;
    sig_running = 1;
    return 0;
}

void cli_signals_stop(void)
{
    if (!sig_running)
        return;
    pthread_kill(sig_thread, SIGUSR1);
    pthread_join(sig_thread, NULL);
    sig_running = 0;
}

int cli_store_open(const char *cmd, const char *spec, int must_exist, const char *owner,
                   wf_store **out)
{
    const char *path = spec;
    const char *colon = strchr(spec, ':'), *slash = strchr(spec, '/');
    *out = NULL;
    if (strncmp(spec, "sqlite:", 7) == 0) {
        path = spec + 7;
    } else if (colon && (slash == NULL || colon < slash) && access(spec, F_OK) != 0) {
        cli_err(cmd, "unknown store kind '%.*s' (sqlite:PATH, or a PATH)", (int)(colon - spec),
                spec);
        return EXIT_USAGE;
    }
    if (*path == 0 || (must_exist && access(path, F_OK) != 0)) {
        cli_err(cmd, "%s: %s", *path ? path : "(empty path)", *path ? strerror(errno) : "");
        return EXIT_USAGE;
    }
    char *msg = NULL;
    wf_store_params sp;
    wf_store_params_init(&sp);
    sp.owner = owner;
    int rc = wf_store_open_sqlite(out, path, &sp, &msg);
    if (rc < 0) {
        cli_err(cmd, "cannot open the store %s: %s", path, msg ? msg : wf_strerror(rc));
        wf_free(msg);
        *out = NULL;
        return EXIT_USAGE;
    }
    return 0;
}

int cli_store_attach(const char *cmd, wf_executor *ex, wf_store *st, uint32_t idle_release_ms)
{
    wf_durable_params dp;
    wf_durable_params_init(&dp);
    dp.idle_release_ms = idle_release_ms;
    int rc = wf_executor_attach_store(ex, st, &dp);
    if (rc < 0)
        cli_err(cmd, "cannot attach the store: %s", wf_strerror(rc));
    return rc < 0 ? EXIT_FAILED : 0;
}

int cli_print_result(const char *cmd, wf_event *result)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf_value r;
    int rc = wf_event_lookup(result, "result", &r) == 0 ? wf_json_write_value(&b, r)
                                                        : wf_json_write_event(&b, result);
    if (rc == 0) {
        fwrite(b.data, 1, b.len, stdout);
        putchar('\n');
    } else {
        cli_err(cmd, "the result cannot be written as JSON: %s", wf_strerror(rc));
    }
    wf_json_buf_free(&b);
    return rc == 0 ? EXIT_DONE : EXIT_FAILED;
}

int cli_print_stored(const char *cmd, wf_executor *ex, wf_workflow *wf, const char *run_id)
{
    wf_run_status status = WF_RUN_FAILED;
    wf_event *result = NULL;
    int rc = wf_durable_result(ex, wf, run_id, &status, &result);
    if (rc < 0) {
        cli_err(cmd, "the result of run '%s': %s", run_id, wf_strerror(rc));
        return EXIT_FAILED;
    }
    int code;
    if (status == WF_RUN_DONE && result) {
        code = cli_print_result(cmd, result);
    } else {
        wf_json_buf b;
        wf_json_buf_init(&b);
        if (result == NULL || wf_json_write_event(&b, result) < 0)
            wf_json_buf_append(&b, "no result event", 15);
        const char *what = status == WF_RUN_TIMED_OUT   ? "timed out"
                           : status == WF_RUN_CANCELLED ? "was cancelled"
                                                        : "failed";
        cli_err(cmd, "run '%s' %s: %.*s", run_id, what, (int)b.len, b.data ? b.data : "");
        wf_json_buf_free(&b);
        code = status == WF_RUN_TIMED_OUT ? EXIT_TIMEDOUT : EXIT_FAILED;
    }
    wf_event_release(result);
    return code;
}

int cli_last_question(wf_executor *ex, wf_workflow *wf, const char *run_id, wf_json_buf *out)
{
    wf_json_buf_reset(out);
    wf_durable_stream *ds = NULL;
    if (wf_durable_stream_open(ex, wf, run_id, 0, &ds) < 0)
        return 0;
    const wf_event_type *ir = wf_workflow_builtin(wf, WF_INPUT_REQUIRED_EVENT);
    int found = 0;
    wf_event *ev = NULL;
    while (wf_durable_stream_next(ds, 0, &ev, NULL) == 0) {
        if (wf_event_type_is(wf_event_type_of(ev), ir)) {
            wf_json_buf_reset(out);
            found = wf_json_write_event(out, ev) == 0;
        }
        wf_event_release(ev);
        ev = NULL;
    }
    wf_durable_stream_free(ds);
    if (!found)
        wf_json_buf_reset(out);
    return found;
}

int cli_store_released(wf_store *st, const char *run_id)
{
    wf_store_run_info in;
    memset(&in, 0, sizeof in);
    int released = wf_store_flush(st) == 0 && wf_store_get_run(st, run_id, &in) == 0 &&
                   in.status == WF_STORE_RELEASED;
    wf_store_run_info_clear(&in);
    return released;
}

static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static int stop_flag;

void cli_stop_signal(void *user)
{
    (void)user;
    pthread_mutex_lock(&stop_lock);
    stop_flag = 1;
    pthread_cond_signal(&stop_cond);
    pthread_mutex_unlock(&stop_lock);
}

void cli_stop_wait(void)
{
    pthread_mutex_lock(&stop_lock);
    while (!stop_flag)
        pthread_cond_wait(&stop_cond, &stop_lock);
    pthread_mutex_unlock(&stop_lock);
}
