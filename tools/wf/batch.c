/*
 * batch.c: wf batch PLUGIN.so [WORKFLOW] --inputs FILE.jsonl [--out FILE]
 * [--jobs N]: one run per input line on one executor, results as JSON lines.
 *
 * The main thread reads the input in large blocks, parses each line with
 * jansson into a start event and starts its run, keeping at most --jobs runs
 * in flight. Each run's end callback (on a worker) writes its result line
 * into that worker's own buffer, which goes out with one write() per
 * 256 KiB under a lock, and hands the finished job back to the main thread
 * through a lock-free stack; the main thread frees handlers and reuses job
 * records. Results come in completion order, each with its input's line
 * number (and "id" when the input object has one).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "json_internal.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: wf batch PLUGIN.so [WORKFLOW] --inputs FILE.jsonl [options]\n"
            "one run of WORKFLOW per input line (a JSON object: the start event's fields),\n"
            "all on one executor; one result line per input line, in completion order:\n"
            "  {\"line\": N, \"id\": ..., \"status\": \"done\", \"result\": ...}\n"
            "  {\"line\": N, \"status\": \"failed\"|\"timed_out\"|\"cancelled\"|\"invalid\",\n"
            "   \"error\": {\"code\": ..., \"step\": ..., \"message\": ...}}\n"
            "(\"id\" is copied from the input object when it has one; blank lines are skipped)\n"
            "  -i, --inputs FILE    the JSON-lines input (- for standard input)\n"
            "  -o, --out FILE       where the result lines go (default: standard output)\n"
            "  -j, --jobs N         runs in flight at most (default 4096)\n"
            "  -t, --threads N      worker threads (default: the cores)\n"
            "      --timeout S      each run's timeout in seconds (0 or none: no timeout)\n"
            "      --progress MODE  auto (default: a bar on a terminal, a line a second\n"
            "                       otherwise), bar, lines, none\n"
            "Progress goes to standard error. Ctrl-C stops starting runs, cancels those in\n"
            "flight (their lines say \"cancelled\") and says what finished.\n"
            "Exit status: 0 every line done, 1 a line failed, was invalid or timed out, 2 usage,\n"
            "130 interrupted.\n");
}

/* ---------------------------------------------------------------- output */

typedef struct tbuf {
    wf_json_buf b;
    struct tbuf *next;
} tbuf;

#define FLUSH_AT         (256u * 1024u)
#define APPEND_LIT(b, s) wf_json_buf_append((b), "" s, sizeof(s) - 1)

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER; /* out_fd writes, tbufs list */
static int out_fd = 1;
static int out_errno; /* guarded by out_lock */
static tbuf *tbufs;   /* every thread's buffer; guarded by out_lock */
static _Thread_local tbuf *my_tbuf;

static tbuf *get_tbuf(void)
{
    if (my_tbuf)
        return my_tbuf;
    tbuf *t = calloc(1, sizeof *t);
    if (t == NULL)
        abort();
    wf_json_buf_init(&t->b);
    pthread_mutex_lock(&out_lock);
    t->next = tbufs;
    tbufs = t;
    pthread_mutex_unlock(&out_lock);
    return my_tbuf = t;
}

static void write_all_locked(const char *p, size_t n)
{
    while (n && out_errno == 0) {
        ssize_t w = write(out_fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            out_errno = errno;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void flush_tbuf(tbuf *t)
{
    if (t->b.len == 0)
        return;
    pthread_mutex_lock(&out_lock);
    write_all_locked(t->b.data, t->b.len);
    pthread_mutex_unlock(&out_lock);
    wf_json_buf_reset(&t->b);
}

/* ------------------------------------------------------------------ jobs */

typedef struct job {
    struct job *next;
    wf_handler *h;
    uint64_t line;
    uint32_t idlen; /* the "id" member's JSON text, 0 if none */
    char *idp;      /* id or heap copy when longer */
    char id[48];
} job;

static _Atomic(job *) done_stack;
static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cv = PTHREAD_COND_INITIALIZER;
static atomic_int main_waiting;
static atomic_long n_done, n_failed, n_timedout, n_cancelled, n_finished;

static atomic_long wake_at; /* main wants waking once n_finished reaches this */

static void wake_main(void)
{
    if (atomic_load(&main_waiting) &&
        (atomic_load_explicit(&n_finished, memory_order_relaxed) >= atomic_load(&wake_at) ||
         atomic_load(&cli_interrupted))) {
        pthread_mutex_lock(&wait_lock);
        pthread_cond_signal(&wait_cv);
        pthread_mutex_unlock(&wait_lock);
    }
}

static void put_head(wf_json_buf *b, uint64_t line, const char *id, size_t idlen)
{
    char tmp[32];
    char *e = tmp + sizeof tmp, *p = e;
    do
        *--p = (char)('0' + line % 10);
    while ((line /= 10) != 0);
    APPEND_LIT(b, "{\"line\":");
    wf_json_buf_append(b, p, (size_t)(e - p));
    if (idlen) {
        wf_json_buf_append(b, ",\"id\":", 6);
        wf_json_buf_append(b, id, idlen);
    }
}

static void put_error(wf_json_buf *b, const char *status, int code, const char *step,
                      const char *msg)
{
    wf_json_buf_append(b, ",\"status\":\"", 11);
    wf_json_buf_append(b, status, strlen(status));
    wf_json_buf_append(b, "\",\"error\":{", 11);
    int comma = 0;
    if (code) {
        const char *name = wf_err_name(code);
        wf_json_buf_append(b, "\"code\":", 7);
        wf_json_write_string(b, name, strlen(name));
        comma = 1;
    }
    if (step) {
        wf_json_buf_append(b, comma ? ",\"step\":" : "\"step\":", comma ? 8u : 7u);
        wf_json_write_string(b, step, strlen(step));
        comma = 1;
    }
    if (msg) {
        wf_json_buf_append(b, comma ? ",\"message\":" : "\"message\":", comma ? 11u : 10u);
        wf_json_write_string(b, msg, strlen(msg));
    }
    wf_json_buf_append(b, "}}\n", 3);
}

static void on_done(wf_handler *h, void *user)
{
    job *j = user;
    tbuf *t = get_tbuf();
    wf_json_buf *b = &t->b;
    put_head(b, j->line, j->idp, j->idlen);
    wf_event *res = NULL;
    int rc = wf_handler_wait(h, 0, &res); /* ended: does not wait */
    if (rc == 0) {
        wf_value r;
        APPEND_LIT(b, ",\"status\":\"done\",\"result\":");
        if (wf_event_lookup(res, "result", &r) == 0)
            rc = wf_json_write_value(b, r);
        else
            rc = wf_json_write_event(b, res);
        if (rc < 0)
            wf_json_buf_append(b, "null", 4);
        wf_json_buf_append(b, "}\n", 2);
        wf_event_release(res);
        atomic_fetch_add_explicit(&n_done, 1, memory_order_relaxed);
    } else {
        int code = rc;
        const char *step = NULL, *msg = NULL;
        wf_handler_error(h, &code, &step, &msg);
        const char *status = "failed";
        if (rc == WF_ERUNTIMEOUT) {
            status = "timed_out";
            atomic_fetch_add_explicit(&n_timedout, 1, memory_order_relaxed);
        } else if (rc == WF_ECANCELLED) {
            status = "cancelled";
            atomic_fetch_add_explicit(&n_cancelled, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&n_failed, 1, memory_order_relaxed);
        }
        put_error(b, status, code, step, msg);
    }
    if (b->len >= FLUSH_AT)
        flush_tbuf(t);
    job *head = atomic_load_explicit(&done_stack, memory_order_relaxed);
    do
        j->next = head;
    while (!atomic_compare_exchange_weak_explicit(&done_stack, &head, j, memory_order_release,
                                                  memory_order_relaxed));
    atomic_fetch_add_explicit(&n_finished, 1, memory_order_release);
    wake_main();
}

static void on_signal(void *user)
{
    (void)user;
    atomic_store(&main_waiting, 1);
    wake_main();
}

/* -------------------------------------------------------------- progress */

typedef struct progress {
    int mode; /* 0 none, 1 lines, 2 bar */
    double t0, last;
    off_t total_bytes; /* 0: unknown */
    off_t done_bytes;
    uint64_t started, invalid;
} progress;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void show_progress(progress *p, int final)
{
    if (p->mode == 0)
        return;
    double t = now_s();
    if (!final && t - p->last < (p->mode == 2 ? 0.2 : 1.0))
        return;
    p->last = t;
    long fin = atomic_load(&n_finished);
    long failed = atomic_load(&n_failed) + atomic_load(&n_timedout) + (long)p->invalid;
    double el = t - p->t0, rate = el > 0 ? (double)fin / el : 0;
    double frac = p->total_bytes > 0 ? (double)p->done_bytes / (double)p->total_bytes : -1;
    char eta[32] = "?";
    if (frac > 0 && el > 0.05 && !final) {
        double rest = el / frac * (1 - frac);
        snprintf(eta, sizeof eta, "%.0fs", rest < 0 ? 0 : rest);
    } else if (final) {
        snprintf(eta, sizeof eta, "0s");
    }
    if (p->mode == 2) {
        char bar[31];
        int fill = frac >= 0 ? (int)(frac * 30 + 0.5) : 0;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : (frac >= 0 ? '.' : ' ');
        bar[30] = 0;
        fprintf(stderr, "\r[%s] %3.0f%% %ld done, %ld failed, %.0f runs/s, ETA %s   ", bar,
                frac >= 0 ? frac * 100 : 0, atomic_load(&n_done), failed, rate, eta);
        if (final)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "wf batch: %ld done, %ld failed, %llu started, %.0f runs/s", fin - failed,
                failed, (unsigned long long)p->started, rate);
        if (frac >= 0)
            fprintf(stderr, ", %.0f%% of the input, ETA %s", frac * 100, eta);
        fputc('\n', stderr);
    }
}

/* ------------------------------------------------------------------ main */

typedef struct batch {
    wf_executor *ex;
    wf_workflow *wf;
    wf_run_params rp;
    long jobs;
    long inflight;
    job *free_jobs;
    progress pg;
    /* the previous line and its start event: identical lines share one event */
    char *prev;
    size_t prev_len, prev_cap;
    wf_event *prev_ev;
    uint32_t prev_idlen;
    char prev_id[48];
    int fatal; /* the workflow failed its run-start validation */
} batch;

static void reap(batch *bt)
{
    job *j = atomic_exchange_explicit(&done_stack, NULL, memory_order_acquire);
    while (j) {
        job *next = j->next;
        wf_handler_free(j->h);
        if (j->idp != j->id)
            free(j->idp);
        j->next = bt->free_jobs;
        bt->free_jobs = j;
        bt->inflight--;
        j = next;
    }
}

/* Waits until a run ends (or a signal, or 200 ms for the progress). */
static void wait_some(batch *bt)
{
    /* woken when a quarter of the window has finished, not by every run */
    long quarter = bt->jobs / 4 > 0 ? bt->jobs / 4 : 1;
    atomic_store(&wake_at, atomic_load(&n_finished) + (quarter < bt->inflight ? quarter : 1));
    pthread_mutex_lock(&wait_lock);
    atomic_store(&main_waiting, 1);
    if (atomic_load(&n_finished) < atomic_load(&wake_at) && !atomic_load(&cli_interrupted)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&wait_cv, &wait_lock, &ts);
    }
    atomic_store(&main_waiting, 0);
    pthread_mutex_unlock(&wait_lock);
    reap(bt);
    show_progress(&bt->pg, 0);
}

static void line_invalid(batch *bt, uint64_t line, const char *msg)
{
    tbuf *t = get_tbuf();
    put_head(&t->b, line, NULL, 0);
    put_error(&t->b, "invalid", WF_EFORMAT, NULL, msg);
    if (t->b.len >= FLUSH_AT)
        flush_tbuf(t);
    bt->pg.invalid++;
}

/* Copies the JSON text of the input's "id" member into j. */
static void set_id(job *j, const json_t *obj)
{
    j->idlen = 0;
    j->idp = j->id;
    const json_t *id = json_object_get(obj, "id");
    if (id == NULL)
        return;
    wf_value v;
    if (wf__json_to_value(id, &v, NULL) < 0)
        return;
    wf_json_buf b;
    wf_json_buf_init(&b);
    if (wf_json_write_value(&b, v) == 0 && b.len) {
        if (b.len <= sizeof j->id) {
            memcpy(j->id, b.data, b.len);
        } else {
            j->idp = b.data;
            b.data = NULL;
        }
        j->idlen = (uint32_t)b.len;
    }
    free(b.data);
    wf_value_release(v);
}

/* Starts the run of one line. Returns 0, or -1 when the executor refused (shutdown). */
static int start_line(batch *bt, const char *s, size_t n, uint64_t line)
{
    while (bt->inflight >= bt->jobs && !atomic_load(&cli_interrupted)) {
        reap(bt);
        if (bt->inflight >= bt->jobs)
            wait_some(bt);
    }
    if (atomic_load(&cli_interrupted))
        return -1;
    job *j = bt->free_jobs;
    if (j)
        bt->free_jobs = j->next;
    else if ((j = malloc(sizeof *j)) == NULL)
        return -1;
    j->line = line;
    wf_event *start = NULL;
    if (bt->prev_ev && n == bt->prev_len && memcmp(s, bt->prev, n) == 0) {
        start = wf_event_retain(bt->prev_ev);
        j->idp = j->id;
        j->idlen = bt->prev_idlen;
        memcpy(j->id, bt->prev_id, bt->prev_idlen);
    } else {
        char *msg = NULL;
        json_t *obj = wf__json_load(s, n, &msg);
        int rc = obj ? wf__json_start(bt->wf, obj, &start, &msg) : WF_EFORMAT;
        if (rc < 0) {
            line_invalid(bt, line, msg ? msg : wf_strerror(rc));
            wf_json_free_message(msg);
            json_decref(obj);
            j->next = bt->free_jobs;
            bt->free_jobs = j;
            return 0;
        }
        set_id(j, obj);
        json_decref(obj);
        wf_event_freeze(start);
        wf_event_release(bt->prev_ev);
        bt->prev_ev = NULL;
        if (j->idlen <= sizeof bt->prev_id) { /* remember it for the next line */
            if (n > bt->prev_cap) {
                free(bt->prev);
                bt->prev_cap = n * 2;
                bt->prev = malloc(bt->prev_cap);
            }
            if (bt->prev) {
                memcpy(bt->prev, s, n);
                bt->prev_len = n;
                bt->prev_idlen = j->idlen;
                memcpy(bt->prev_id, j->idp, j->idlen);
                bt->prev_ev = wf_event_retain(start);
            }
        }
    }
    char *msg = NULL;
    bt->rp.on_done_user = j;
    int rc = wf_run_start_ex(bt->ex, bt->wf, NULL, start, &bt->rp, &j->h, &msg);
    if (rc == WF_EVALIDATION) { /* the workflow's run-start checks: no line can run */
        cli_err("batch", "workflow '%s' is invalid: %s", wf_workflow_name(bt->wf),
                msg ? msg : wf_strerror(rc));
        wf_free(msg);
        j->next = bt->free_jobs;
        bt->free_jobs = j;
        bt->fatal = 1;
        return -1;
    }
    if (rc < 0) {
        line_invalid(bt, line, msg ? msg : wf_strerror(rc));
        wf_free(msg);
        if (j->idp != j->id)
            free(j->idp);
        j->next = bt->free_jobs;
        bt->free_jobs = j;
        return rc == WF_ESHUTDOWN ? -1 : 0;
    }
    bt->inflight++;
    bt->pg.started++;
    return 0;
}

int cmd_batch(int argc, char **argv)
{
    static const struct option opts[] = {
        {"inputs", required_argument, NULL, 'i'},  {"out", required_argument, NULL, 'o'},
        {"jobs", required_argument, NULL, 'j'},    {"threads", required_argument, NULL, 't'},
        {"timeout", required_argument, NULL, 'T'}, {"progress", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    const char *inputs = NULL, *outpath = NULL, *pmode = "auto";
    long jobs = 4096, threads = 0;
    int64_t timeout_ms = WF_TIMEOUT_DEFAULT;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:o:j:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            inputs = optarg;
            break;
        case 'o':
            outpath = optarg;
            break;
        case 'j':
            if (cli_parse_count(optarg, 1, 1L << 24, &jobs) < 0) {
                cli_err("batch", "--jobs wants a number from 1 to 16777216, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 't':
            if (cli_parse_count(optarg, 1, 1024, &threads) < 0) {
                cli_err("batch", "--threads wants a number from 1 to 1024, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'T':
            if (cli_parse_timeout(optarg, &timeout_ms) < 0) {
                cli_err("batch", "--timeout wants seconds (or none), not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'p':
            pmode = optarg;
            if (strcmp(pmode, "auto") && strcmp(pmode, "bar") && strcmp(pmode, "lines") &&
                strcmp(pmode, "none")) {
                cli_err("batch", "--progress wants auto, bar, lines or none, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            usage(stdout);
            return EXIT_DONE;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc || argc - optind > 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (inputs == NULL) {
        cli_err("batch", "--inputs FILE.jsonl is required");
        return EXIT_USAGE;
    }
    wf_plugin *plugin;
    wf_workflow *wf;
    int rc =
        cli_load("batch", argv[optind], optind + 1 < argc ? argv[optind + 1] : NULL, &plugin, &wf);
    if (rc)
        return rc;

    int ex_code = EXIT_USAGE, in_fd = -1;
    char *buf = NULL, *msg = NULL;
    batch bt;
    memset(&bt, 0, sizeof bt);
    bt.wf = wf;
    bt.jobs = jobs;

    /* before opening the input, so a Ctrl-C at any point from here on is ours */
    if (cli_signals_start(on_signal, NULL) < 0) {
        cli_err("batch", "cannot start the signal thread");
        goto out;
    }
    in_fd = strcmp(inputs, "-") == 0 ? 0 : open(inputs, O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) {
        cli_err("batch", "%s: %s", inputs, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(in_fd, &st) == 0 && S_ISREG(st.st_mode))
        bt.pg.total_bytes = st.st_size;
    if (outpath) {
        out_fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out_fd < 0) {
            cli_err("batch", "%s: %s", outpath, strerror(errno));
            out_fd = 1;
            goto out;
        }
    }
    ex_code = EXIT_FAILED;
    /* definition checks here; the run-start ones (if the workflow wants them) on the first run */
    if ((rc = wf_workflow_freeze(wf, &msg)) < 0) {
        cli_err("batch", "workflow '%s' is invalid: %s", wf_workflow_name(wf),
                msg ? msg : wf_strerror(rc));
        goto out;
    }
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    if ((rc = wf_executor_new(&bt.ex, &ep)) < 0) {
        cli_err("batch", "cannot start the executor: %s", wf_strerror(rc));
        goto out;
    }
    wf_run_params_init(&bt.rp);
    bt.rp.timeout_ms = timeout_ms;
    bt.rp.stream_capacity = 0; /* only the result is wanted */
    bt.rp.on_done = on_done;

    int tty = isatty(2);
    bt.pg.mode = strcmp(pmode, "none") == 0    ? 0
                 : strcmp(pmode, "bar") == 0   ? 2
                 : strcmp(pmode, "lines") == 0 ? 1
                 : tty                         ? 2
                                               : 1;
    bt.pg.t0 = bt.pg.last = now_s();

    size_t cap = 8u << 20, have = 0;
    buf = malloc(cap);
    if (buf == NULL)
        goto out;
    uint64_t line = 0;
    int eof = 0, stopped = 0, read_err = 0;
    while (!eof && !stopped) {
        if (have == cap) { /* a line longer than the buffer */
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                read_err = ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(in_fd, buf + have, cap - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            read_err = errno;
            break;
        }
        if (r == 0)
            eof = 1;
        have += (size_t)r;
        size_t pos = 0;
        for (;;) {
            char *nl = memchr(buf + pos, '\n', have - pos);
            size_t end = nl ? (size_t)(nl - buf) : have;
            if (nl == NULL && !eof)
                break;
            if (nl == NULL && pos == have)
                break;
            line++;
            size_t s = pos, e = end;
            while (s < e && (buf[s] == ' ' || buf[s] == '\t' || buf[s] == '\r'))
                s++;
            while (e > s && (buf[e - 1] == ' ' || buf[e - 1] == '\t' || buf[e - 1] == '\r'))
                e--;
            size_t old = pos;
            pos = nl ? end + 1 : have;
            bt.pg.done_bytes += (off_t)(pos - old);
            if (e > s && start_line(&bt, buf + s, e - s, line) < 0) {
                stopped = 1;
                line--;
                break;
            }
            if ((line & 4095) == 0) {
                reap(&bt);
                show_progress(&bt.pg, 0);
            }
            if (nl == NULL)
                break;
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
    }
    if (read_err)
        cli_err("batch", "%s: %s", inputs, strerror(read_err));
    /* wait for the runs in flight, or cancel them on Ctrl-C */
    while (bt.inflight > 0 && !atomic_load(&cli_interrupted))
        wait_some(&bt);
    cli_signals_stop();
    wf_executor_free(bt.ex); /* cancels what is still running (after Ctrl-C) */
    bt.ex = NULL;
    reap(&bt);
    bt.pg.done_bytes = bt.pg.total_bytes;
    for (tbuf *t = tbufs; t; t = t->next)
        flush_tbuf(t);
    show_progress(&bt.pg, 1);

    long done = atomic_load(&n_done), failed = atomic_load(&n_failed),
         timedout = atomic_load(&n_timedout), cancelled = atomic_load(&n_cancelled);
    double el = now_s() - bt.pg.t0;
    if (atomic_load(&cli_interrupted)) {
        cli_err("batch",
                "interrupted: %llu lines read, %llu runs started: %ld done, %ld failed, %ld "
                "timed out, %ld cancelled, %llu invalid; lines after %llu were not started",
                (unsigned long long)line, (unsigned long long)bt.pg.started, done, failed, timedout,
                cancelled, (unsigned long long)bt.pg.invalid, (unsigned long long)line);
        ex_code = EXIT_INTERRUPTED;
    } else {
        fprintf(stderr,
                "wf batch: %llu runs in %.3f s (%.0f runs/s): %ld done, %ld failed, %ld timed "
                "out, %llu invalid lines\n",
                (unsigned long long)bt.pg.started, el, el > 0 ? (double)bt.pg.started / el : 0.0,
                done, failed, timedout, (unsigned long long)bt.pg.invalid);
        ex_code = (bt.fatal || failed || timedout || cancelled || bt.pg.invalid || read_err)
                      ? EXIT_FAILED
                      : EXIT_DONE;
    }
    if (out_errno) {
        cli_err("batch", "writing %s: %s", outpath ? outpath : "standard output",
                strerror(out_errno));
        if (ex_code == EXIT_DONE)
            ex_code = EXIT_FAILED;
    }

out:
    cli_signals_stop();
    wf_executor_free(bt.ex);
    reap(&bt);
    while (bt.free_jobs) {
        job *j = bt.free_jobs;
        bt.free_jobs = j->next;
        free(j);
    }
    wf_event_release(bt.prev_ev);
    free(bt.prev);
    while (tbufs) {
        tbuf *t = tbufs;
        tbufs = t->next;
        wf_json_buf_free(&t->b);
        free(t);
    }
    if (in_fd > 0)
        close(in_fd);
    if (out_fd > 1)
        close(out_fd);
    free(buf);
    wf_free(msg);
    wf_plugin_free(plugin);
    return ex_code;
}
