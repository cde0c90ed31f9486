/*
 * batch.c: wf batch PLUGIN.so [WORKFLOW] --inputs FILE.jsonl [--out FILE]
 * [--jobs N]: one run per input line on one executor, results as JSON lines.
 *
 * The main thread only reads the input in 8 MiB blocks and splits each
 * block into lines in place (an index of offsets: no copy, no per-line
 * system call); the blocks wait in a queue (at most MAX_BLOCKS in memory).
 * The workers parse: when a run ends, its end callback (on whichever
 * executor worker ended it) writes the result line into that worker's own
 * output buffer and gives the run's window slot to the next line, taking
 * lines from the queue 32 at a time and parsing them with jansson into
 * start events. One starter thread only starts the parsed runs, oldest
 * first (see "the starter"). So parsing and formatting happen on every
 * worker at once and --jobs runs stay in flight; a slot that found the
 * queue empty waits as "idle" until the main thread publishes the next
 * block and fills it. Each worker's buffer goes out in one write() per
 * 256 KiB; job records are reused per thread. Results come in completion
 * order, each with its input's line number (and "id" when the input object
 * has one).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#ifdef WF_HAVE_YAJL
#include "flat.h"
#endif
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
            "%s"
            "      --progress MODE  auto (default: a bar on a terminal, a line a second\n"
            "                       otherwise), bar, lines, none\n"
            "%s"
            "  (--store: durable runs named by the line's id or line-N; a rerun prints the\n"
            "   stored result of what ended (\"stored\": true), resumes what was in flight,\n"
            "   reruns what Ctrl-C cancelled: every line once; one batch at a time per store)\n"
            "Progress goes to standard error. Ctrl-C stops starting runs, cancels those in\n"
            "flight (their lines say \"cancelled\") and says what finished.\n"
            "Exit status: 0 every line done, 1 a line failed, was invalid or timed out, 2 usage,\n"
            "130 interrupted.\n",
            CLI_HELP_THREADS("      ") CLI_HELP_TIMEOUT("      ", "each run's"),
            CLI_HELP_STORE("    "));
}

/* -------------------------------------------------------- thread state */

#define FLUSH_AT         (256u * 1024u)
#define APPEND_LIT(b, s) wf_json_buf_append((b), "" s, sizeof(s) - 1)

typedef struct job {
    struct job *next;
    wf_event *start; /* parsed, until the starter starts its run */
    uint64_t line;
    uint32_t idlen; /* the "id" member's JSON text, 0 if none */
    char *idp;      /* id or heap copy when longer */
    char id[48];
} job;

/* What each thread that parses or formats keeps: the main thread and every worker. */
typedef struct tstate {
    wf_json_buf out;     /* result lines not written yet */
    struct tstate *next; /* all of them; guarded by out_lock */
    job *free_jobs;      /* records of ended runs, this thread's to reuse */
    /* the previous line this thread parsed: an identical line shares its event */
    char *prev;
    size_t prev_len, prev_cap;
    wf_event *prev_ev;
    uint32_t prev_idlen;
    char prev_id[48];
    /* slots to fill once the fill in progress on this thread returns (see fill_slots) */
    long owed;
    int in_fill;
    long stash; /* slots of runs that ended here, not filled yet (on_done) */
    char *arena; /* this thread's jansson arena (jar_begin), freed with the tstate */
    void *flat_arena; /* this thread's yajl arena (flat.c), freed with the tstate */
} tstate;

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER; /* out_fd writes, tstates list */
static int out_fd = 1;
static int out_errno;     /* guarded by out_lock */
static tstate *tstates;   /* guarded by out_lock */
static _Thread_local tstate *my_ts;

static tstate *get_ts(void)
{
    if (my_ts)
        return my_ts;
    tstate *t = calloc(1, sizeof *t);
    if (t == NULL)
        abort();
    wf_json_buf_init(&t->out);
    pthread_mutex_lock(&out_lock);
    t->next = tstates;
    tstates = t;
    pthread_mutex_unlock(&out_lock);
    return my_ts = t;
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

static void flush_ts(tstate *t)
{
    if (t->out.len == 0)
        return;
    pthread_mutex_lock(&out_lock);
    write_all_locked(t->out.data, t->out.len);
    pthread_mutex_unlock(&out_lock);
    wf_json_buf_reset(&t->out);
}

/* ---------------------------------------------------------- the input */

typedef struct lref {
    uint64_t line; /* 1-based line number in the input */
    uint32_t off, len;
} lref;

typedef struct block {
    struct block *next; /* in the queue or the spare list; guarded by feed.lock */
    char *data;         /* the text; lines point into it */
    size_t cap;
    lref *lines;
    size_t lines_cap;
    uint32_t n;       /* lines; set before publishing */
    uint32_t taken;   /* lines handed out; guarded by feed.lock */
    size_t bytes;     /* input bytes it covers (progress) */
    atomic_uint left; /* lines not parsed yet: who takes it to 0 recycles the block */
} block;

#define BLOCK_SIZE (8u << 20)
#define MAX_BLOCKS 4 /* blocks in memory at most (beyond: the reader waits) */

static struct {
    pthread_mutex_t lock;
    block *head, *tail; /* published blocks with lines not handed out */
    block *spare;       /* recycled blocks */
    int live;           /* blocks allocated and not spare */
    long idle;          /* window slots without a run that found the queue empty */
    uint64_t taken_lines, last_line;
    uint64_t taken_bytes;
} feed = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ------------------------------------------------------------- the runs */

static struct {
    wf_executor *ex;
    wf_workflow *wf;
    wf_store *store; /* --store: durable runs */
    wf_run_params rp;
    atomic_int fatal; /* the workflow failed its run-start validation: nothing more starts */
    const wf_event_type *start_type; /* of the frozen workflow: flat lines (flat.c) */
} g;

static atomic_long inflight, n_started, n_invalid;
static atomic_long n_done, n_failed, n_timedout, n_cancelled, n_finished;

static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cv = PTHREAD_COND_INITIALIZER;
static atomic_int main_waiting;

/* Wakes the main thread if it sleeps (it re-checks what it waits for). */
static void wake_main(void)
{
    if (atomic_load(&main_waiting)) {
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

static void line_invalid(tstate *t, uint64_t line, const char *msg)
{
    put_head(&t->out, line, NULL, 0);
    put_error(&t->out, "invalid", WF_EFORMAT, NULL, msg);
    if (t->out.len >= FLUSH_AT)
        flush_ts(t);
    atomic_fetch_add_explicit(&n_invalid, 1, memory_order_relaxed);
}

static void free_job(tstate *t, job *j)
{
    if (j->idp != j->id)
        free(j->idp);
    j->idp = j->id;
    j->next = t->free_jobs;
    t->free_jobs = j;
}

/* Copies the JSON text of the id value v (the input's "id" member) into j. */
static void set_id_value(job *j, wf_value v)
{
    int64_t iv;
    if (wf_value_kind(v) == WF_INT && wf_value_get_int(v, &iv) == 0) {
        /* the usual case, without a buffer */
        unsigned long long u = iv < 0 ? 0ull - (unsigned long long)iv : (unsigned long long)iv;
        char tmp[24];
        char *e = tmp + sizeof tmp, *p = e;
        do
            *--p = (char)('0' + u % 10);
        while ((u /= 10) != 0);
        if (iv < 0)
            *--p = '-';
        j->idlen = (uint32_t)(e - p);
        memcpy(j->id, p, j->idlen);
        return;
    }
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
    set_id_value(j, v);
    wf_value_release(v);
}

/* Remembers the line and its event in t, so an identical next line reuses the event. */
static void remember(tstate *t, const char *s, size_t n, const job *j, wf_event *start)
{
    wf_event_release(t->prev_ev);
    t->prev_ev = NULL;
    if (j->idlen > sizeof t->prev_id)
        return;
    if (n > t->prev_cap) {
        free(t->prev);
        t->prev_cap = n * 2;
        if ((t->prev = malloc(t->prev_cap)) == NULL) {
            t->prev_cap = 0;
            return;
        }
    }
    memcpy(t->prev, s, n);
    t->prev_len = n;
    t->prev_idlen = j->idlen;
    memcpy(t->prev_id, j->idp, j->idlen);
    t->prev_ev = wf_event_retain(start);
}

/* ------------------------------------------------------ jansson's memory */

/*
 * While a thread parses a line, jansson allocates from that thread's bump
 * arena, emptied when the line's parsed object is freed (parse_line): about
 * a dozen malloc/free pairs a line (the lexer's buffer, the object, its
 * hash table, keys and values) were 8% of a batch's instructions
 * (callgrind). The parsed object never leaves parse_line and never reaches
 * another thread, and what jansson allocates outside a parse, or past the
 * arena, comes from malloc: a pointer outside this thread's arena goes to
 * free(). Not under AddressSanitizer, which must see each allocation.
 */
#if defined(__SANITIZE_ADDRESS__)
#define JSON_ARENA 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JSON_ARENA 0
#endif
#endif
#ifndef JSON_ARENA
#define JSON_ARENA 1
#endif

#define ARENA_BYTES (16u * 1024u)

static _Thread_local struct {
    char *base; /* ARENA_BYTES, or NULL: not made yet or no memory */
    size_t used;
    int on; /* a parse is in progress on this thread */
} jar;

static void *jar_malloc(size_t n)
{
    if (jar.on && n <= ARENA_BYTES) {
        size_t need = (n + 15) & ~(size_t)15;
        if (need <= ARENA_BYTES - jar.used) {
            void *p = jar.base + jar.used;
            jar.used += need;
            return p;
        }
    }
    return malloc(n);
}

static void jar_free(void *p)
{
    if (jar.base && (char *)p >= jar.base && (char *)p < jar.base + ARENA_BYTES)
        return; /* emptied as a whole when the parse ends */
    free(p);
}

/* Starts a parse on thread t: jansson's allocations go to the arena. */
static void jar_begin(tstate *t)
{
    if (!JSON_ARENA)
        return;
    if (jar.base == NULL && (jar.base = t->arena = malloc(ARENA_BYTES)) == NULL)
        return; /* malloc as usual */
    jar.used = 0;
    jar.on = 1;
}

/* Ends it, once everything parsed was freed. */
static void jar_end(void)
{
    jar.on = 0;
    jar.used = 0;
}

/* ------------------------------------------------------------ the starter */

/*
 * Runs are started by one thread, the starter, from the jobs the workers
 * parsed. A run started on a worker goes on that worker's own deque, which
 * it takes newest first: successors started from on_done would always run
 * ahead of the runs below them, which would wait until the input ran out
 * (and time out on a busy machine). Started from outside, runs go through
 * the executor's shared queue, oldest first. The starter only starts: the
 * parsing stays on the workers.
 */
static _Atomic(job *) ready; /* parsed jobs, a lock-free stack (newest first) */
static pthread_mutex_t st_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t st_cv = PTHREAD_COND_INITIALIZER;
static atomic_int st_waiting, st_stop;

static void push_ready(job *j)
{
    job *head = atomic_load_explicit(&ready, memory_order_relaxed);
    do
        j->next = head;
    while (!atomic_compare_exchange_weak(&ready, &head, j));
}

static void wake_starter(void)
{
    if (atomic_load(&st_waiting)) {
        pthread_mutex_lock(&st_lock);
        pthread_cond_signal(&st_cv);
        pthread_mutex_unlock(&st_lock);
    }
}

/*
 * Parses one line into a job for the starter. 1 parsed (the job is on the
 * ready stack, counted in flight), 0 the line was invalid (its result line
 * written), -1 out of memory.
 */
/* The start event of a flat line without jansson's tree (flat.c): 1, else the general path. */
static int flat_line(tstate *t, job *j, const char *s, size_t n, wf_event **start)
{
#ifdef WF_HAVE_YAJL
    wf_value id;
    int has_id;
    if (cli_flat_start(g.start_type, s, n, &t->flat_arena, start, &id, &has_id) != 1)
        return 0; /* WF_ENOMEM too: the general path reports it */
    j->idlen = 0;
    j->idp = j->id;
    if (has_id)
        set_id_value(j, id);
    wf_value_release(id);
    return 1;
#else
    (void)t, (void)j, (void)s, (void)n, (void)start;
    return 0;
#endif
}

static int parse_line(tstate *t, const char *s, size_t n, uint64_t line)
{
    job *j = t->free_jobs;
    if (j)
        t->free_jobs = j->next;
    else if ((j = malloc(sizeof *j)) == NULL)
        return -1;
    j->line = line;
    j->idp = j->id;
    wf_event *start = NULL;
    if (t->prev_ev && n == t->prev_len && memcmp(s, t->prev, n) == 0) {
        start = wf_event_retain(t->prev_ev);
        j->idlen = t->prev_idlen;
        memcpy(j->id, t->prev_id, t->prev_idlen);
    } else if (flat_line(t, j, s, n, &start)) {
        wf_event_freeze(start);
        remember(t, s, n, j, start);
    } else {
        char *msg = NULL;
        jar_begin(t);
        json_t *obj = wf__json_load(s, n, &msg);
        int rc = obj ? wf__json_start(g.wf, obj, &start, &msg) : WF_EFORMAT;
        if (rc < 0) {
            json_decref(obj);
            jar_end();
            line_invalid(t, line, msg ? msg : wf_strerror(rc));
            wf_json_free_message(msg);
            free_job(t, j);
            return 0;
        }
        set_id(j, obj);
        json_decref(obj);
        jar_end();
        wf_event_freeze(start);
        remember(t, s, n, j, start);
    }
    j->start = start;
    atomic_fetch_add(&inflight, 1);
    push_ready(j);
    return 1;
}

static void fill_slots(tstate *t, long n);

/* A job that will not start: a "cancelled" line after Ctrl-C, nothing after a fatal error. */
static void drop_job(tstate *t, job *j)
{
    if (!atomic_load(&g.fatal)) {
        put_head(&t->out, j->line, j->idp, j->idlen);
        put_error(&t->out, "cancelled", WF_ECANCELLED, NULL, "interrupted before the run started");
        if (t->out.len >= FLUSH_AT)
            flush_ts(t);
        atomic_fetch_add_explicit(&n_cancelled, 1, memory_order_relaxed);
    }
    wf_event_release(j->start);
    free_job(t, j);
    if (atomic_fetch_sub(&inflight, 1) == 1)
        wake_main();
}

static void on_done(wf_handler *h, void *user);

/* --store: the durable run id of j: its "id" (a string's text), or "line-N". */
static const char *run_id_of(const job *j, char *buf, size_t cap)
{
    if (j->idlen == 0) {
        snprintf(buf, cap, "line-%llu", (unsigned long long)j->line);
    } else if (j->idlen >= 2 && j->idp[0] == '"' && memchr(j->idp, '\\', j->idlen) == NULL) {
        snprintf(buf, cap, "%.*s", (int)(j->idlen - 2), j->idp + 1);
    } else {
        snprintf(buf, cap, "%.*s", (int)j->idlen, j->idp);
    }
    return buf;
}

/*
 * --store: recovered runs (in flight when an earlier batch stopped) end in
 * this executor without our on_done: one thread waits for them in turn and
 * then reports each as on_done would.
 */
typedef struct waited {
    struct waited *next;
    wf_handler *h;
    job *j;
} waited;
static pthread_mutex_t wt_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wt_cv = PTHREAD_COND_INITIALIZER;
static waited *wt_head;
static int wt_stop, wt_on;
static pthread_t wt_thread;

static void *waiter_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&wt_lock);
    for (;;) {
        while (wt_head == NULL && !wt_stop)
            pthread_cond_wait(&wt_cv, &wt_lock);
        waited *w = wt_head;
        if (w == NULL)
            break;
        wt_head = w->next;
        pthread_mutex_unlock(&wt_lock);
        wf_handler_wait(w->h, -1, NULL);
        on_done(w->h, w->j);
        free(w);
        pthread_mutex_lock(&wt_lock);
    }
    pthread_mutex_unlock(&wt_lock);
    return NULL;
}

/* A "stored" line: the result of run rid that an earlier batch stored. */
static void put_stored(tstate *t, job *j, const char *rid)
{
    wf_json_buf *b = &t->out;
    wf_run_status status = WF_RUN_FAILED;
    wf_event *res = NULL;
    int rc = wf_durable_result(g.ex, g.wf, rid, &status, &res);
    put_head(b, j->line, j->idp, j->idlen);
    APPEND_LIT(b, ",\"stored\":true");
    if (rc == 0 && status == WF_RUN_DONE && res) {
        wf_value r;
        APPEND_LIT(b, ",\"status\":\"done\",\"result\":");
        if ((wf_event_lookup(res, "result", &r) == 0 ? wf_json_write_value(b, r)
                                                      : wf_json_write_event(b, res)) < 0)
            wf_json_buf_append(b, "null", 4);
        wf_json_buf_append(b, "}\n", 2);
        atomic_fetch_add_explicit(&n_done, 1, memory_order_relaxed);
    } else if (rc == 0 && status == WF_RUN_TIMED_OUT) {
        put_error(b, "timed_out", WF_ERUNTIMEOUT, NULL, "stored result");
        atomic_fetch_add_explicit(&n_timedout, 1, memory_order_relaxed);
    } else {
        wf_json_buf ev;
        wf_json_buf_init(&ev);
        if (res == NULL || wf_json_write_event(&ev, res) < 0)
            wf_json_buf_append(&ev, "the stored result cannot be read", 32);
        put_error(b, "failed", rc < 0 ? rc : 0, NULL, ev.data ? ev.data : "");
        wf_json_buf_free(&ev);
        atomic_fetch_add_explicit(&n_failed, 1, memory_order_relaxed);
    }
    wf_event_release(res);
    if (b->len >= FLUSH_AT)
        flush_ts(t);
}

/*
 * --store, a run id the store has: an ended run prints its stored result
 * (a cancelled one, stopped by an earlier Ctrl-C, runs again: 1 returned,
 * the caller starts it); a run in flight that recovery resumed here is
 * waited for; one another process holds is a "busy" line. 0 when handled.
 */
static int existing_job(tstate *t, job *j, const char *rid)
{
    int32_t st = 0;
    void *data = NULL;
    size_t len = 0;
    int rc = wf_store_get_result(g.store, rid, &st, &data, &len);
    wf_free(data);
    if (rc == 0 && st == WF_STORE_CANCELLED) {
        if (wf_store_remove(g.store, rid) == 0)
            return 1;
    } else if (rc == 0) {
        put_stored(t, j, rid);
        return 0;
    }
    wf_handler *h = NULL;
    waited *w;
    if (wf_handler_open(g.ex, rid, &h) == 0 && (w = malloc(sizeof *w)) != NULL) {
        atomic_fetch_add_explicit(&n_started, 1, memory_order_relaxed);
        w->h = h;
        w->j = j;
        pthread_mutex_lock(&wt_lock);
        w->next = wt_head;
        wt_head = w;
        pthread_cond_signal(&wt_cv);
        pthread_mutex_unlock(&wt_lock);
        return 2;
    }
    wf_handler_free(h);
    /* it may have ended between the two looks */
    if (wf_store_get_result(g.store, rid, &st, &data, &len) == 0) {
        wf_free(data);
        put_stored(t, j, rid);
        return 0;
    }
    put_head(&t->out, j->line, j->idp, j->idlen);
    put_error(&t->out, "busy", WF_ELEASE, NULL,
              "the run is in flight in another process (its lease): run the batch again later");
    atomic_fetch_add_explicit(&n_failed, 1, memory_order_relaxed);
    return 0;
}

static void start_job(tstate *t, job *j)
{
    char *msg = NULL;
    wf_handler *h; /* ours until on_done, which frees it: the run may end before this returns */
    wf_run_params rp = g.rp;
    rp.on_done_user = j;
    uint64_t line = j->line;
    wf_event *start = j->start;
    j->start = NULL;
    int rc;
    if (g.store) {
        char rid[128];
        run_id_of(j, rid, sizeof rid);
        wf_event *again = wf_event_retain(start);
        rc = wf_run_start_durable(g.ex, g.wf, NULL, rid, start, &rp, &h, &msg);
        if (rc == WF_EEXIST) {
            wf_free(msg);
            msg = NULL;
            int e = existing_job(t, j, rid);
            if (e == 1) {
                rc = wf_run_start_durable(g.ex, g.wf, NULL, rid, again, &rp, &h, &msg);
                again = NULL;
            } else {
                wf_event_release(again);
                if (e == 2)
                    return; /* the waiter reports it */
                fill_slots(t, 1);
                free_job(t, j);
                if (atomic_fetch_sub(&inflight, 1) == 1)
                    wake_main();
                return;
            }
        }
        wf_event_release(again);
    } else {
        rc = wf_run_start_ex(g.ex, g.wf, NULL, start, &rp, &h, &msg); /* takes start */
    }
    if (rc == 0) {
        atomic_fetch_add_explicit(&n_started, 1, memory_order_relaxed);
        return;
    }
    if (rc == WF_EVALIDATION) { /* the workflow's run-start checks: no line can run */
        if (atomic_exchange(&g.fatal, 1) == 0)
            cli_err("batch", "workflow '%s' is invalid: %s", wf_workflow_name(g.wf),
                    msg ? msg : wf_strerror(rc));
    } else if (rc != WF_ESHUTDOWN) {
        line_invalid(t, line, msg ? msg : wf_strerror(rc));
        fill_slots(t, 1); /* its slot goes to the next line */
    }
    wf_free(msg);
    free_job(t, j);
    if (atomic_fetch_sub(&inflight, 1) == 1)
        wake_main();
}

static void *starter_main(void *arg)
{
    (void)arg;
    tstate *t = get_ts();
    for (;;) {
        job *list = atomic_exchange(&ready, NULL);
        if (list == NULL) {
            pthread_mutex_lock(&st_lock);
            atomic_store(&st_waiting, 1);
            while (atomic_load(&ready) == NULL && !atomic_load(&st_stop))
                pthread_cond_wait(&st_cv, &st_lock);
            atomic_store(&st_waiting, 0);
            pthread_mutex_unlock(&st_lock);
            if (atomic_load(&ready) == NULL && atomic_load(&st_stop))
                return NULL;
            continue;
        }
        job *fifo = NULL; /* oldest first */
        while (list) {
            job *j = list;
            list = j->next;
            j->next = fifo;
            fifo = j;
        }
        while (fifo) {
            job *j = fifo;
            fifo = j->next;
            if (atomic_load(&cli_interrupted) || atomic_load(&g.fatal))
                drop_job(t, j);
            else
                start_job(t, j);
        }
    }
}

/* The block's line was parsed: the last one recycles the block. */
static void block_parsed(block *b)
{
    if (atomic_fetch_sub_explicit(&b->left, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&feed.lock);
    b->next = feed.spare;
    feed.spare = b;
    feed.live--;
    pthread_mutex_unlock(&feed.lock);
    wake_main(); /* the reader may wait for a free block */
}

/*
 * Lines a thread takes from the queue at once (one lock for all of them):
 * a finished run's slot waits on its thread until claim_k have gathered
 * there (see on_done). From --jobs: 1 for small windows.
 */
#define CLAIM_MAX 32
static long claim_k = 1;

/*
 * Takes up to want lines under one lock; the slots left without a line
 * become idle (publish fills them). Returns how many lines it took.
 */
static int take_lines(int want, block **bs, lref *ls)
{
    int got = 0;
    pthread_mutex_lock(&feed.lock);
    while (got < want && feed.head) {
        block *b = feed.head;
        ls[got] = b->lines[b->taken++];
        bs[got++] = b;
        if (b->taken == b->n) { /* the queue lets go of it; block_parsed recycles it */
            feed.head = b->next;
            if (feed.head == NULL)
                feed.tail = NULL;
            feed.taken_bytes += b->bytes;
        }
    }
    if (got) {
        feed.taken_lines += (uint64_t)got;
        feed.last_line = ls[got - 1].line;
    }
    feed.idle += want - got;
    pthread_mutex_unlock(&feed.lock);
    return got;
}

/* Fills n window slots with parsed jobs; a slot whose line was invalid takes the next one. */
static void fill_n(tstate *t, long n)
{
    block *bs[CLAIM_MAX];
    lref ls[CLAIM_MAX];
    while (n > 0 && !atomic_load_explicit(&cli_interrupted, memory_order_relaxed) &&
           !atomic_load_explicit(&g.fatal, memory_order_relaxed)) {
        int want = n < CLAIM_MAX ? (int)n : CLAIM_MAX;
        n -= want;
        int got = take_lines(want, bs, ls);
        int stop = 0;
        for (int i = 0; i < got; i++) {
            int rc = stop ? -1 : parse_line(t, bs[i]->data + ls[i].off, ls[i].len, ls[i].line);
            block_parsed(bs[i]);
            if (rc == 0)
                n++; /* invalid: the slot is still free */
            else if (rc < 0)
                stop = 1; /* no memory: the lines taken are dropped */
        }
        if (got)
            wake_starter();
        if (stop || got < want)
            return;
    }
}

/*
 * Fills n window slots. A run can end inside wf_run_start_ex on this very
 * thread (its on_done then asks for slots to be filled): such requests
 * are queued on the thread and done by the outer loop, not by recursion.
 */
static void fill_slots(tstate *t, long n)
{
    t->owed += n;
    if (t->in_fill)
        return;
    t->in_fill = 1;
    while (t->owed > 0) {
        n = t->owed;
        t->owed = 0;
        fill_n(t, n);
    }
    t->in_fill = 0;
}

static void on_done(wf_handler *h, void *user)
{
    job *j = user;
    tstate *t = get_ts();
    wf_json_buf *b = &t->out;
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
        flush_ts(t);
    wf_handler_free(h); /* the engine holds its own reference until on_done returns */
    free_job(t, j);
    atomic_fetch_add_explicit(&n_finished, 1, memory_order_relaxed);
    /*
     * This run's slot goes to the next line: at once when claim_k slots
     * have gathered on this thread, or when this is the last run in flight
     * (then nothing else would come back to the queue). Otherwise the slot
     * waits here, and the count in flight drops only if it stays above 0,
     * so it reaches 0 only when the queue had nothing left to start.
     */
    t->stash++;
    long v = atomic_load(&inflight);
    for (;;) {
        if (t->stash >= claim_k || v == 1) {
            long n = t->stash;
            t->stash = 0;
            fill_slots(t, n);
            if (atomic_fetch_sub(&inflight, 1) == 1)
                wake_main();
            return;
        }
        if (atomic_compare_exchange_weak(&inflight, &v, v - 1))
            return;
    }
}

static void on_signal(void *user)
{
    (void)user;
    wake_main();
}

/* -------------------------------------------------------------- progress */

typedef struct progress {
    int mode; /* 0 none, 1 lines, 2 bar */
    double t0, last;
    off_t total_bytes; /* 0: unknown */
    off_t done_bytes; /* set at the end; before, the input handed to runs */
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
    if (!final) {
        pthread_mutex_lock(&feed.lock);
        p->done_bytes = (off_t)feed.taken_bytes;
        pthread_mutex_unlock(&feed.lock);
    }
    long fin = atomic_load(&n_finished);
    long failed = atomic_load(&n_failed) + atomic_load(&n_timedout) + atomic_load(&n_invalid);
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
        fprintf(stderr, "wf batch: %ld done, %ld failed, %ld started, %.0f runs/s", atomic_load(&n_done),
                failed, atomic_load(&n_started), rate);
        if (frac >= 0)
            fprintf(stderr, ", %.0f%% of the input, ETA %s", frac * 100, eta);
        fputc('\n', stderr);
    }
}

/* ------------------------------------------------------------------ main */

typedef struct batch_opts {
    const char *inputs, *outpath, *pmode;
    long jobs;
} batch_opts;

static int batch_opt(int c, const char *arg, void *user)
{
    batch_opts *o = user;
    switch (c) {
    case 'i':
        o->inputs = arg;
        return 0;
    case 'o':
        o->outpath = arg;
        return 0;
    case 'j':
        if (cli_parse_count(arg, 1, 1L << 24, &o->jobs) < 0) {
            cli_err("batch", "--jobs wants a number from 1 to 16777216, not '%s'", arg);
            return EXIT_USAGE;
        }
        return 0;
    case 'p':
        if (strcmp(arg, "auto") && strcmp(arg, "bar") && strcmp(arg, "lines") &&
            strcmp(arg, "none")) {
            cli_err("batch", "--progress wants auto, bar, lines or none, not '%s'", arg);
            return EXIT_USAGE;
        }
        o->pmode = arg;
        return 0;
    }
    return -1;
}

/* A block to read into: a spare one, a new one, or (MAX_BLOCKS live) wait for one. */
static block *get_block(progress *pg)
{
    for (;;) {
        pthread_mutex_lock(&feed.lock);
        block *b = feed.spare;
        if (b)
            feed.spare = b->next;
        int can_new = b == NULL && feed.live < MAX_BLOCKS;
        if (b || can_new)
            feed.live++;
        pthread_mutex_unlock(&feed.lock);
        if (b)
            return b;
        if (can_new) {
            if ((b = calloc(1, sizeof *b)) == NULL || (b->data = malloc(BLOCK_SIZE)) == NULL) {
                free(b);
                pthread_mutex_lock(&feed.lock);
                feed.live--;
                pthread_mutex_unlock(&feed.lock);
                return NULL;
            }
            b->cap = BLOCK_SIZE;
            return b;
        }
        /* every block is in use: wait until the runs have parsed one (or Ctrl-C) */
        pthread_mutex_lock(&wait_lock);
        atomic_store(&main_waiting, 1);
        pthread_mutex_lock(&feed.lock);
        int none = feed.spare == NULL;
        pthread_mutex_unlock(&feed.lock);
        if (none && !atomic_load(&cli_interrupted) && !atomic_load(&g.fatal)) {
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
        show_progress(pg, 0);
        if (atomic_load(&cli_interrupted) || atomic_load(&g.fatal))
            return NULL;
    }
}

static void free_block(block *b)
{
    if (b) {
        free(b->data);
        free(b->lines);
        free(b);
    }
}

/* Adds a line to b's index. -1 out of memory. */
static int add_line(block *b, size_t s, size_t e, uint64_t line)
{
    if (b->n == b->lines_cap) {
        size_t nc = b->lines_cap ? b->lines_cap * 2 : 65536;
        lref *nl = realloc(b->lines, nc * sizeof *nl);
        if (nl == NULL)
            return -1;
        b->lines = nl;
        b->lines_cap = nc;
    }
    b->lines[b->n++] = (lref){line, (uint32_t)s, (uint32_t)(e - s)};
    return 0;
}

/*
 * Publishes b's lines to the runs, and starts runs in the slots that were
 * idle waiting for lines (on this thread).
 */
static void publish(block *b, tstate *t)
{
    atomic_store(&b->left, b->n);
    b->taken = 0;
    b->next = NULL;
    pthread_mutex_lock(&feed.lock);
    if (feed.tail)
        feed.tail->next = b;
    else
        feed.head = b;
    feed.tail = b;
    long n = feed.idle < (long)b->n ? feed.idle : (long)b->n;
    feed.idle -= n;
    pthread_mutex_unlock(&feed.lock);
    fill_slots(t, n);
}

/* Waits until every run ended (or Ctrl-C), showing progress. */
static void wait_runs(progress *pg)
{
    while (atomic_load(&inflight) > 0 && !atomic_load(&cli_interrupted)) {
        pthread_mutex_lock(&wait_lock);
        atomic_store(&main_waiting, 1);
        if (atomic_load(&inflight) > 0 && !atomic_load(&cli_interrupted)) {
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
        show_progress(pg, 0);
    }
}

/*
 * Reads the input in blocks, splits them into lines and publishes them.
 * Returns 0 at the end of the input or when stopped, else an errno.
 */
static int read_input(int fd, tstate *t, progress *pg)
{
    block *b = NULL;
    size_t have = 0; /* bytes in b->data, the first ones carried over from the block before */
    uint64_t line = 0;
    int eof = 0;
    while (!eof) {
        if (atomic_load(&cli_interrupted) || atomic_load(&g.fatal))
            break;
        if (b == NULL) {
            if ((b = get_block(pg)) == NULL)
                return atomic_load(&cli_interrupted) || atomic_load(&g.fatal) ? 0 : ENOMEM;
            b->n = 0;
            b->bytes = 0;
            have = 0;
        }
        if (have == b->cap) { /* a line longer than the block */
            char *nd = b->cap <= SIZE_MAX / 2 && b->cap < (1u << 30) ? realloc(b->data, b->cap * 2)
                                                                     : NULL;
            if (nd == NULL) {
                free_block(b);
                return ENOMEM;
            }
            b->data = nd;
            b->cap *= 2;
        }
        ssize_t r = read(fd, b->data + have, b->cap - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            free_block(b);
            return e;
        }
        if (r == 0)
            eof = 1;
        have += (size_t)r;
        /* split the complete lines (at the end of the input, the last one too) */
        size_t pos = 0;
        for (;;) {
            char *nl = memchr(b->data + pos, '\n', have - pos);
            if (nl == NULL && (!eof || pos == have))
                break;
            size_t end = nl ? (size_t)(nl - b->data) : have;
            line++;
            size_t s = pos, e = end;
            while (s < e && (b->data[s] == ' ' || b->data[s] == '\t' || b->data[s] == '\r'))
                s++;
            while (e > s && (b->data[e - 1] == ' ' || b->data[e - 1] == '\t' || b->data[e - 1] == '\r'))
                e--;
            pos = nl ? end + 1 : have;
            if (e > s && add_line(b, s, e, line) < 0) {
                free_block(b);
                return ENOMEM;
            }
        }
        if (pos == 0 && !eof)
            continue; /* no complete line yet: the block grows */
        /*
         * Publish, then move the incomplete tail to the next block. The
         * runs never read past a line's end, and a published block comes
         * back only through the spare list, which only this thread takes
         * from: the tail stays readable, even when the next block is b.
         */
        size_t tail = have - pos;
        b->bytes = pos;
        char *tail_src = b->data + pos;
        if (b->n) {
            publish(b, t);
        } else {
            pthread_mutex_lock(&feed.lock);
            b->next = feed.spare;
            feed.spare = b;
            feed.live--;
            pthread_mutex_unlock(&feed.lock);
        }
        block *nb = NULL;
        if (tail) {
            if ((nb = get_block(pg)) == NULL)
                return atomic_load(&cli_interrupted) || atomic_load(&g.fatal) ? 0 : ENOMEM;
            nb->n = 0;
            nb->bytes = 0;
            if (nb == b) {
                memmove(nb->data, tail_src, tail);
            } else {
                while (nb->cap < tail) { /* the tail was a long line that grew b */
                    char *nd = realloc(nb->data, nb->cap * 2);
                    if (nd == NULL) {
                        free_block(nb);
                        return ENOMEM;
                    }
                    nb->data = nd;
                    nb->cap *= 2;
                }
                memcpy(nb->data, tail_src, tail);
            }
        }
        b = nb;
        have = tail;
        show_progress(pg, 0);
    }
    if (b) { /* stopped with a block in hand */
        pthread_mutex_lock(&feed.lock);
        b->next = feed.spare;
        feed.spare = b;
        feed.live--;
        pthread_mutex_unlock(&feed.lock);
    }
    return 0;
}

static pthread_t starter;
static int starter_on;

static void stop_starter(void)
{
    if (!starter_on)
        return;
    pthread_mutex_lock(&st_lock);
    atomic_store(&st_stop, 1);
    pthread_cond_signal(&st_cv);
    pthread_mutex_unlock(&st_lock);
    pthread_join(starter, NULL);
    starter_on = 0;
}

int cmd_batch(int argc, char **argv)
{
    static const struct option opts[] = {
        {"inputs", required_argument, NULL, 'i'},   {"out", required_argument, NULL, 'o'},
        {"jobs", required_argument, NULL, 'j'},     CLI_OPT_THREADS,
        CLI_OPT_TIMEOUT,                            {"progress", required_argument, NULL, 'p'},
        CLI_OPT_STORE,                              CLI_OPT_HELP,
        {NULL, 0, NULL, 0}};
    batch_opts bo = {NULL, NULL, "auto", 4096};
    if (JSON_ARENA)
        json_set_alloc_funcs(jar_malloc, jar_free); /* this process is ours: see jar_begin */
    cli_opts co;
    cli_opts_init(&co);
    int rc = cli_getopt("batch", argc, argv, "i:o:j:t:h", opts, &co, batch_opt, &bo, usage, 1, 2);
    if (rc != CLI_CONTINUE)
        return rc;
    if (bo.inputs == NULL) {
        cli_err("batch", "--inputs FILE.jsonl is required");
        return EXIT_USAGE;
    }
    wf_plugin *plugin;
    wf_workflow *wf;
    rc = cli_load("batch", argv[optind], optind + 1 < argc ? argv[optind + 1] : NULL, &plugin, &wf);
    if (rc)
        return rc;

    int ex_code = EXIT_USAGE, in_fd = -1, read_err = 0;
    char *msg = NULL;
    progress pg;
    memset(&pg, 0, sizeof pg);
    g.wf = wf;
    /* frozen as the general path would for each line (json.c) before flat ones use its type */
    g.start_type = wf_workflow_freeze(wf, NULL) == 0 ? wf_workflow_start_type(wf) : NULL;

    /* before opening the input, so a Ctrl-C at any point from here on is ours */
    if (cli_signals_start(on_signal, NULL) < 0) {
        cli_err("batch", "cannot start the signal thread");
        goto out;
    }
    in_fd = strcmp(bo.inputs, "-") == 0 ? 0 : open(bo.inputs, O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) {
        cli_err("batch", "%s: %s", bo.inputs, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(in_fd, &st) == 0 && S_ISREG(st.st_mode))
        pg.total_bytes = st.st_size;
    if (bo.outpath) {
        out_fd = open(bo.outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out_fd < 0) {
            cli_err("batch", "%s: %s", bo.outpath, strerror(errno));
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
    ep.threads = (uint32_t)co.threads;
    if ((rc = wf_executor_new(&g.ex, &ep)) < 0) {
        cli_err("batch", "cannot start the executor: %s", wf_strerror(rc));
        goto out;
    }
    if (co.store) {
        /*
         * durable runs: those an earlier batch left in flight go on here. The
         * wf commands share one lease owner (CLI_STORE_OWNER), so a rerun takes
         * over the runs of a batch that was interrupted or killed at once,
         * without waiting for its leases to expire (one batch at a time on a store).
         */
        if ((rc = cli_store_open("batch", co.store, 0, CLI_STORE_OWNER, &g.store)) != 0 ||
            (rc = cli_store_attach("batch", g.ex, g.store, 0)) != 0) {
            ex_code = rc;
            goto out;
        }
        wf_recover_info ri;
        if ((rc = wf_executor_recover(g.ex, &wf, 1, &ri, &msg)) < 0) {
            cli_err("batch", "recovering from the store: %s", msg ? msg : wf_strerror(rc));
            goto out;
        }
        if (pthread_create(&wt_thread, NULL, waiter_main, NULL) != 0) {
            cli_err("batch", "cannot start a thread");
            goto out;
        }
        wt_on = 1;
    }
    wf_run_params_init(&g.rp);
    g.rp.timeout_ms = co.timeout_ms;
    g.rp.stream_capacity = 0; /* only the result is wanted */
    g.rp.on_done = on_done;
    feed.idle = bo.jobs; /* the window: every slot waits for a line */
    /* chunks small enough that slots waiting on threads never starve the window */
    claim_k = bo.jobs >= 4096 ? CLAIM_MAX : bo.jobs >= 256 ? 4 : 1;

    int tty = isatty(2);
    pg.mode = strcmp(bo.pmode, "none") == 0    ? 0
              : strcmp(bo.pmode, "bar") == 0   ? 2
              : strcmp(bo.pmode, "lines") == 0 ? 1
              : tty                            ? 2
                                               : 1;
    pg.t0 = pg.last = now_s();

    if (pthread_create(&starter, NULL, starter_main, NULL) != 0) {
        cli_err("batch", "cannot start the starter thread");
        goto out;
    }
    starter_on = 1;
    tstate *main_ts = get_ts();
    read_err = read_input(in_fd, main_ts, &pg);
    if (read_err)
        cli_err("batch", "%s: %s", bo.inputs, strerror(read_err));
    wait_runs(&pg); /* every run, or until Ctrl-C */
    stop_starter(); /* after Ctrl-C, what it had not started says "cancelled" */
    cli_signals_stop();
    if (wt_on) { /* after Ctrl-C, the recovered runs are cancelled too */
        pthread_mutex_lock(&wt_lock);
        for (waited *w = wt_head; w; w = w->next)
            wf_handler_cancel(w->h);
        wt_stop = 1;
        pthread_cond_signal(&wt_cv);
        pthread_mutex_unlock(&wt_lock);
    }
    wf_executor_free(g.ex); /* cancels what is still running (after Ctrl-C) */
    g.ex = NULL;
    if (wt_on) {
        pthread_join(wt_thread, NULL);
        wt_on = 0;
    }
    /* a run that ended as the starter stopped may have parsed a line for it */
    for (job *j = atomic_exchange(&ready, NULL), *n; j; j = n) {
        n = j->next;
        drop_job(main_ts, j);
    }
    pg.done_bytes = pg.total_bytes;
    for (tstate *t = tstates; t; t = t->next)
        flush_ts(t);
    show_progress(&pg, 1);

    long done = atomic_load(&n_done), failed = atomic_load(&n_failed),
         timedout = atomic_load(&n_timedout), cancelled = atomic_load(&n_cancelled),
         started = atomic_load(&n_started), invalid = atomic_load(&n_invalid);
    double el = now_s() - pg.t0;
    if (atomic_load(&cli_interrupted)) {
        cli_err("batch",
                "interrupted: %llu lines read, %ld runs started: %ld done, %ld failed, %ld "
                "timed out, %ld cancelled, %ld invalid; lines after %llu were not started",
                (unsigned long long)feed.taken_lines, started, done, failed, timedout, cancelled,
                invalid, (unsigned long long)feed.last_line);
        ex_code = EXIT_INTERRUPTED;
    } else {
        fprintf(stderr,
                "wf batch: %ld runs in %.3f s (%.0f runs/s): %ld done, %ld failed, %ld timed "
                "out, %ld invalid lines\n",
                started, el, el > 0 ? (double)started / el : 0.0, done, failed, timedout, invalid);
        ex_code = (atomic_load(&g.fatal) || failed || timedout || cancelled || invalid || read_err)
                      ? EXIT_FAILED
                      : EXIT_DONE;
    }
    if (out_errno) {
        cli_err("batch", "writing %s: %s", bo.outpath ? bo.outpath : "standard output",
                strerror(out_errno));
        if (ex_code == EXIT_DONE)
            ex_code = EXIT_FAILED;
    }

out:
    stop_starter();
    cli_signals_stop();
    if (wt_on) {
        pthread_mutex_lock(&wt_lock);
        wt_stop = 1;
        pthread_cond_signal(&wt_cv);
        pthread_mutex_unlock(&wt_lock);
    }
    wf_executor_free(g.ex);
    if (wt_on)
        pthread_join(wt_thread, NULL);
    wf_store_free(g.store);
    while (tstates) {
        tstate *t = tstates;
        tstates = t->next;
        wf_json_buf_free(&t->out);
        while (t->free_jobs) {
            job *j = t->free_jobs;
            t->free_jobs = j->next;
            free(j);
        }
        wf_event_release(t->prev_ev);
        free(t->prev);
        free(t->arena);
#ifdef WF_HAVE_YAJL
        cli_flat_arena_free(t->flat_arena);
#endif
        free(t);
    }
    my_ts = NULL;
    jar.base = NULL; /* freed with its tstate */
    for (block *b = feed.head, *n; b; b = n) {
        n = b->next;
        free_block(b);
    }
    for (block *b = feed.spare, *n; b; b = n) {
        n = b->next;
        free_block(b);
    }
    if (in_fd > 0)
        close(in_fd);
    if (out_fd > 1)
        close(out_fd);
    wf_free(msg);
    wf_plugin_free(plugin);
    return ex_code;
}
