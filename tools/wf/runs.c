/*
 * runs.c: wf runs list|show|cancel --store STORE: the runs a store keeps
 * (wf/store.h), read through the store's read API. list prints one run a
 * line (a table, or JSON lines with --json); show prints one run as JSON:
 * its record, its result and a summary of its journal; cancel finishes a
 * run that no live process owns (released, or its owner's lease expired);
 * respond sends an event to a waiting run: this process loads the run from
 * the store into an executor of its own (wf_durable_send), and waits until
 * it ends or waits for input again (then it is released into the store).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wf/snapshot.h>
#include <wf/store.h>

#include "cli.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: wf runs list --store STORE [--status S,...] [--limit N] [--json]\n"
            "       wf runs show RUN_ID --store STORE [--journal N]\n"
            "       wf runs cancel RUN_ID --store STORE\n"
            "       wf runs respond RUN_ID PLUGIN.so [WORKFLOW] --store STORE --event JSON|@FILE|-\n"
            "                       [--no-wait] [--timeout S] [--threads N]\n"
            "the runs a store keeps (the durable runs of wf/store.h)\n"
            "  list     one run a line in creation order: id, workflow, status, last change,\n"
            "           owner (--json: JSON lines)\n"
            "  show     one run as JSON: its record, its result (null until it ended) and\n"
            "           its journal: records by kind and the first N step completions\n"
            "  cancel   finishes a run no live process owns (released, or its owner's\n"
            "           lease expired) as cancelled\n"
            "  respond  sends an event to a run waiting for input (PLUGIN.so has its\n"
            "           workflow; WORKFLOW, when given, must be the run's), runs it here\n"
            "           until it ends (its result is printed as wf run prints it) or waits\n"
            "           again (its question printed; kept in the store). A run a killed wf\n"
            "           process left in flight is continued to its wait first\n"
            "%s"
            "      --status S,...   list only these: running, waiting, released, done,\n"
            "                       failed, timed_out, cancelled, inflight (the first\n"
            "                       three), all (default)\n"
            "      --limit N        list at most N runs\n"
            "      --json           list as JSON lines\n"
            "      --journal N      show at most N step completions (default 20; 0: none)\n"
            "  -e, --event JSON     respond: a HumanResponseEvent's fields as a JSON object,\n"
            "                       or {\"type\": NAME, \"value\": {...}} for another event\n"
            "      --no-wait        respond: send and stop (the run is left in flight,\n"
            "                       checkpointed, for the next command)\n"
            "      --timeout S      respond: wait at most S seconds (then 3; the run goes on\n"
            "                       when a later command picks it up)\n"
            "%s"
            "Exit status: 0 done, 1 no such run, it cannot be cancelled or answered, or it\n"
            "failed, 2 usage or the store cannot be opened, 3 timed out, 4 waiting for\n"
            "input again (respond).\n",
            CLI_HELP_STORE("    "), CLI_HELP_THREADS("      "));
}

static const char *const status_names[] = {"running", "waiting",   "released", "done",
                                           "failed",  "timed_out", "cancelled"};
#define N_STATUS ((int)(sizeof status_names / sizeof status_names[0]))

static const char *status_name(int32_t s)
{
    return s >= 0 && s < N_STATUS ? status_names[s] : "unknown";
}

static const char *kind_name(uint32_t k)
{
    switch (k) {
    case WF_STORE_REC_STEP:
        return "step";
    case WF_STORE_REC_EVENT:
        return "event";
    case WF_STORE_REC_SEND:
        return "send";
    case WF_STORE_REC_WAIT:
        return "wait";
    case WF_STORE_REC_GROUP:
        return "group";
    case WF_STORE_REC_RETRY:
        return "retry";
    }
    return NULL;
}

/* ms since the epoch as 2026-12-04T15:40:00.123Z, or "" for 0. */
static void fmt_time(char out[40], int64_t ms)
{
    out[0] = 0;
    if (ms <= 0)
        return;
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return;
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%03dZ", (int)(ms % 1000));
}

/*
 * Opens the store of --store: "sqlite:PATH" or a PATH. A file that is not
 * there is an error here (opening would create it). owner: the lease owner
 * (NULL: one of its own). EXIT_USAGE after a message.
 */
static int open_store(const char *spec, const char *owner, wf_store **out)
{
    const char *path = spec;
    const char *colon = strchr(spec, ':'), *slash = strchr(spec, '/');
    if (strncmp(spec, "sqlite:", 7) == 0) {
        path = spec + 7;
    } else if (colon && (slash == NULL || colon < slash) && access(spec, F_OK) != 0) {
        cli_err("runs", "unknown store kind '%.*s' (sqlite:PATH, or a PATH)",
                (int)(colon - spec), spec);
        return EXIT_USAGE;
    }
    struct stat st;
    if (*path == 0 || stat(path, &st) != 0) {
        cli_err("runs", "%s: %s", *path ? path : "(empty path)", *path ? strerror(errno) : "");
        return EXIT_USAGE;
    }
    char *msg = NULL;
    wf_store_params sp;
    wf_store_params_init(&sp);
    sp.owner = owner;
    int rc = wf_store_open_sqlite(out, path, &sp, &msg);
    if (rc < 0) {
        cli_err("runs", "cannot open the store %s: %s", path, msg ? msg : wf_strerror(rc));
        wf_free(msg);
        return EXIT_USAGE;
    }
    return 0;
}

static void put_str_or_null(wf_json_buf *b, const char *s)
{
    if (s)
        wf_json_write_string(b, s, strlen(s));
    else
        wf_json_buf_append(b, "null", 4);
}

static void put_u64(wf_json_buf *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    wf_json_buf_append(b, tmp, (size_t)n);
}

/* The run record's members (no braces). */
static void put_info(wf_json_buf *b, const wf_store_run_info *in)
{
    char t[40];
    wf_json_buf_append(b, "\"run_id\":", 9);
    put_str_or_null(b, in->run_id);
    wf_json_buf_append(b, ",\"workflow\":", 12);
    put_str_or_null(b, in->workflow);
    wf_json_buf_append(b, ",\"status\":", 10);
    put_str_or_null(b, status_name(in->status));
    wf_json_buf_append(b, ",\"owner\":", 9);
    put_str_or_null(b, in->owner);
    fmt_time(t, in->lease_until_ms);
    wf_json_buf_append(b, ",\"lease_until\":", 15);
    put_str_or_null(b, t[0] ? t : NULL);
    fmt_time(t, in->created_ms);
    wf_json_buf_append(b, ",\"created_at\":", 14);
    put_str_or_null(b, t[0] ? t : NULL);
    fmt_time(t, in->updated_ms);
    wf_json_buf_append(b, ",\"updated_at\":", 14);
    put_str_or_null(b, t[0] ? t : NULL);
    wf_json_buf_append(b, ",\"journal_records\":", 19);
    put_u64(b, in->next_seq);
    wf_json_buf_append(b, ",\"checkpoint_seq\":", 18);
    put_u64(b, in->checkpoint_seq);
}

static int print_buf(wf_json_buf *b)
{
    wf_json_buf_append(b, "\n", 1);
    size_t n = b->len, w = fwrite(b->data, 1, n, stdout);
    wf_json_buf_reset(b);
    return w == n ? 0 : -1;
}

/* --------------------------------------------------------------- list */

typedef struct list_state {
    int json;
    long left; /* runs still to print; -1 no limit */
    wf_json_buf b;
    int header;
} list_state;

static int list_one(const wf_store_run_info *in, void *user)
{
    list_state *ls = user;
    if (ls->left == 0)
        return 1;
    if (ls->left > 0)
        ls->left--;
    if (ls->json) {
        wf_json_buf_append(&ls->b, "{", 1);
        put_info(&ls->b, in);
        wf_json_buf_append(&ls->b, "}", 1);
        print_buf(&ls->b);
    } else {
        if (!ls->header) {
            printf("%-24s %-20s %-10s %-24s %s\n", "RUN_ID", "WORKFLOW", "STATUS", "UPDATED",
                   "OWNER");
            ls->header = 1;
        }
        char t[40];
        fmt_time(t, in->updated_ms);
        printf("%-24s %-20s %-10s %-24s %s\n", in->run_id ? in->run_id : "?",
               in->workflow ? in->workflow : "?", status_name(in->status), t,
               in->owner ? in->owner : "-");
    }
    return 0;
}

/* "done,failed" -> a wf_store_list mask; 0 for a bad list (message printed). */
static uint32_t parse_mask(const char *s)
{
    uint32_t mask = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        int found = 0;
        if (n == 3 && strncmp(s, "all", 3) == 0) {
            mask |= WF_STORE_MASK_ALL;
            found = 1;
        } else if (n == 8 && strncmp(s, "inflight", 8) == 0) {
            mask |= WF_STORE_MASK_INFLIGHT;
            found = 1;
        }
        for (int i = 0; i < N_STATUS && !found; i++)
            if (strlen(status_names[i]) == n && strncmp(s, status_names[i], n) == 0) {
                mask |= WF_STORE_MASK(i);
                found = 1;
            }
        if (!found) {
            cli_err("runs",
                    "--status: unknown status '%.*s' (running, waiting, released, done, failed, "
                    "timed_out, cancelled, inflight, all)",
                    (int)n, s);
            return 0;
        }
        s += n;
        if (*s == ',')
            s++;
    }
    return mask;
}

static int cmd_list(wf_store *st, uint32_t mask, long limit, int json)
{
    list_state ls = {json, limit > 0 ? limit : -1, {0}, 0};
    wf_json_buf_init(&ls.b);
    uint64_t cursor = 0;
    int rc;
    do {
        rc = wf_store_list(st, mask, cursor, 1000, list_one, &ls, &cursor);
    } while (rc == 0 && cursor && ls.left != 0);
    wf_json_buf_free(&ls.b);
    if (rc < 0) {
        cli_err("runs", "listing the store: %s", wf_strerror(rc));
        return EXIT_FAILED;
    }
    if (!json && !ls.header)
        fprintf(stderr, "wf runs: no runs\n");
    return EXIT_DONE;
}

/* --------------------------------------------------------------- show */

/* A decoded event [type, {fields}] as {"type", "value"}; anything else as its value. */
static void put_decoded(wf_json_buf *b, wf_value v)
{
    wf_value type, fields;
    const char *name;
    if (wf_value_kind(v) == WF_ARRAY && wf_value_len(v) == 2 &&
        wf_value_array_at(v, 0, &type) == 0 && wf_value_get_string(type, &name, NULL) == 0 &&
        wf_value_array_at(v, 1, &fields) == 0 && wf_value_kind(fields) == WF_MAP) {
        wf_json_buf_append(b, "{\"type\":", 8);
        wf_json_write_string(b, name, strlen(name));
        wf_json_buf_append(b, ",\"value\":", 9);
        if (wf_json_write_value(b, fields) < 0)
            wf_json_buf_append(b, "null", 4);
        wf_json_buf_append(b, "}", 1);
        return;
    }
    if (wf_json_write_value(b, v) < 0)
        wf_json_buf_append(b, "null", 4);
}

/* msgpack bytes as JSON: decoded, or {"$bytes": base64} when they do not decode. */
static void put_msgpack(wf_json_buf *b, const void *data, size_t len)
{
    wf_value v;
    size_t used = 0;
    if (len && wf_value_from_msgpack(data, len, &v, &used, NULL) == 0) {
        if (used == len) {
            put_decoded(b, v);
            wf_value_release(v);
            return;
        }
        wf_value_release(v);
    }
    if (len == 0) {
        wf_json_buf_append(b, "null", 4);
        return;
    }
    if (wf_value_bytes(&v, data, len) == 0) {
        wf_json_write_value(b, v);
        wf_value_release(v);
    } else {
        wf_json_buf_append(b, "null", 4);
    }
}

/* The name of a decoded event [type, {fields}], or NULL. */
static const char *event_type_name(wf_value ev)
{
    wf_value t;
    const char *s;
    if (wf_value_array_at(ev, 0, &t) == 0 && wf_value_get_string(t, &s, NULL) == 0)
        return s;
    return NULL;
}

typedef struct journal_state {
    uint64_t by_kind[8]; /* 0: other kinds */
    uint64_t total, last_seq;
    long steps_left;
    wf_json_buf steps;
    int n_steps;
} journal_state;

/* A step record [step, attempt, input, [emitted...]] as a summary line. */
static void put_step(journal_state *js, uint64_t seq, const void *data, size_t len)
{
    wf_json_buf *b = &js->steps;
    wf_value v, step, attempt, input, emitted;
    const char *name;
    uint64_t att = 0;
    size_t used = 0;
    if (js->n_steps++)
        wf_json_buf_append(b, ",", 1);
    wf_json_buf_append(b, "{\"seq\":", 7);
    put_u64(b, seq);
    if (wf_value_from_msgpack(data, len, &v, &used, NULL) < 0 || wf_value_len(v) != 4 ||
        wf_value_array_at(v, 0, &step) < 0 || wf_value_get_string(step, &name, NULL) < 0) {
        if (used)
            wf_value_release(v);
        wf_json_buf_append(b, ",\"undecodable\":true}", 20);
        return;
    }
    wf_value_array_at(v, 1, &attempt);
    wf_value_get_uint(attempt, &att);
    wf_json_buf_append(b, ",\"step\":", 8);
    wf_json_write_string(b, name, strlen(name));
    wf_json_buf_append(b, ",\"attempt\":", 11);
    put_u64(b, att);
    wf_json_buf_append(b, ",\"input\":", 9);
    put_str_or_null(b, wf_value_array_at(v, 2, &input) == 0 ? event_type_name(input) : NULL);
    wf_json_buf_append(b, ",\"emitted\":[", 12);
    if (wf_value_array_at(v, 3, &emitted) == 0)
        for (size_t i = 0; i < wf_value_len(emitted); i++) {
            wf_value e;
            if (wf_value_array_at(emitted, i, &e) < 0)
                break;
            if (i)
                wf_json_buf_append(b, ",", 1);
            put_str_or_null(b, event_type_name(e));
        }
    wf_json_buf_append(b, "]}", 2);
    wf_value_release(v);
}

static int journal_one(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    journal_state *js = user;
    js->total++;
    js->last_seq = seq;
    js->by_kind[kind <= WF_STORE_REC_RETRY ? kind : 0]++;
    if (kind == WF_STORE_REC_STEP && js->steps_left > 0) {
        js->steps_left--;
        put_step(js, seq, data, len);
    }
    return 0;
}

static int cmd_show(wf_store *st, const char *run_id, long journal)
{
    wf_store_run_info in;
    memset(&in, 0, sizeof in);
    int rc = wf_store_get_run(st, run_id, &in);
    if (rc == WF_ENOTFOUND) {
        cli_err("runs", "no run '%s' in the store", run_id);
        return EXIT_FAILED;
    }
    if (rc < 0) {
        cli_err("runs", "reading run '%s': %s", run_id, wf_strerror(rc));
        return EXIT_FAILED;
    }
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf_json_buf_append(&b, "{", 1);
    put_info(&b, &in);

    /* the result, once the run ended */
    int32_t rstatus = 0;
    void *data = NULL;
    size_t len = 0;
    wf_json_buf_append(&b, ",\"result\":", 10);
    rc = wf_store_get_result(st, run_id, &rstatus, &data, &len);
    if (rc == 0)
        put_msgpack(&b, data, len);
    else
        wf_json_buf_append(&b, "null", 4);
    wf_free(data);

    /* the journal: every record counted, the first step completions listed */
    journal_state js;
    memset(&js, 0, sizeof js);
    js.steps_left = journal;
    wf_json_buf_init(&js.steps);
    uint64_t next = 0;
    rc = wf_store_read_journal(st, run_id, 0, 0, journal_one, &js, &next);
    wf_json_buf_append(&b, ",\"journal\":{\"records\":", 22);
    put_u64(&b, js.total);
    wf_json_buf_append(&b, ",\"by_kind\":{", 12);
    int comma = 0;
    for (uint32_t k = 1; k <= WF_STORE_REC_RETRY + 1; k++) {
        uint32_t idx = k <= WF_STORE_REC_RETRY ? k : 0;
        if (js.by_kind[idx] == 0)
            continue;
        if (comma++)
            wf_json_buf_append(&b, ",", 1);
        const char *kn = idx ? kind_name(idx) : "other";
        wf_json_write_string(&b, kn, strlen(kn));
        wf_json_buf_append(&b, ":", 1);
        put_u64(&b, js.by_kind[idx]);
    }
    wf_json_buf_append(&b, "},\"steps\":[", 11);
    if (js.steps.len)
        wf_json_buf_append(&b, js.steps.data, js.steps.len);
    wf_json_buf_append(&b, "]}}", 3);
    wf_json_buf_free(&js.steps);
    int ex = EXIT_DONE;
    if (rc < 0) {
        cli_err("runs", "reading the journal of '%s': %s", run_id, wf_strerror(rc));
        ex = EXIT_FAILED;
    } else if (print_buf(&b) < 0) {
        cli_err("runs", "writing: %s", strerror(errno));
        ex = EXIT_FAILED;
    }
    wf_json_buf_free(&b);
    wf_store_run_info_clear(&in);
    return ex;
}

/* ------------------------------------------------------------- cancel */

static int cmd_cancel(wf_store *st, const char *run_id)
{
    wf_store_run_info in;
    memset(&in, 0, sizeof in);
    int rc = wf_store_claim(st, run_id, &in);
    if (rc == WF_ENOTFOUND) {
        cli_err("runs", "no run '%s' in the store", run_id);
        return EXIT_FAILED;
    }
    if (rc == WF_ESTATE) {
        wf_store_run_info_clear(&in);
        if (wf_store_get_run(st, run_id, &in) == 0)
            cli_err("runs", "run '%s' has ended already (%s)", run_id, status_name(in.status));
        else
            cli_err("runs", "run '%s' has ended already", run_id);
        wf_store_run_info_clear(&in);
        return EXIT_FAILED;
    }
    if (rc == WF_ELEASE) {
        wf_store_run_info_clear(&in);
        char t[40] = "";
        if (wf_store_get_run(st, run_id, &in) == 0)
            fmt_time(t, in.lease_until_ms);
        cli_err("runs",
                "run '%s' is owned by %s (lease until %s): cancel it through its owner, or "
                "once the lease has expired",
                run_id, in.owner ? in.owner : "another process", t[0] ? t : "?");
        wf_store_run_info_clear(&in);
        return EXIT_FAILED;
    }
    wf_store_run_info_clear(&in);
    if (rc < 0) {
        cli_err("runs", "cannot take run '%s': %s", run_id, wf_strerror(rc));
        return EXIT_FAILED;
    }
    uint64_t ticket = 0;
    rc = wf_store_put_result(st, run_id, WF_STORE_CANCELLED, NULL, 0, NULL, NULL, &ticket);
    if (rc == 0)
        rc = wf_store_wait(st, ticket);
    if (rc < 0) {
        cli_err("runs", "cancelling run '%s': %s", run_id, wf_strerror(rc));
        return EXIT_FAILED;
    }
    printf("{\"run_id\":");
    wf_json_buf b;
    wf_json_buf_init(&b);
    wf_json_write_string(&b, run_id, strlen(run_id));
    fwrite(b.data, 1, b.len, stdout);
    wf_json_buf_free(&b);
    printf(",\"status\":\"cancelled\"}\n");
    return EXIT_DONE;
}

/* ------------------------------------------------------------ respond */

/* --event: a HumanResponseEvent's fields, or an envelope. EXIT_USAGE after a message. */
static int parse_answer(wf_workflow *wf, const char *arg, wf_event **out)
{
    char *text = NULL, *msg = NULL;
    size_t len = 0;
    *out = NULL;
    if (cli_read_arg("runs", arg, &text, &len))
        return EXIT_USAGE;
    wf_value v;
    int rc = wf_json_parse_value(text, len, &v, &msg);
    if (rc < 0 || wf_value_kind(v) != WF_MAP) {
        cli_err("runs", "bad --event: %s", msg ? msg : "not a JSON object");
        wf_json_free_message(msg);
        if (rc == 0)
            wf_value_release(v);
        free(text);
        return EXIT_USAGE;
    }
    wf_registry *reg = wf_workflow_registry(wf);
    wf_value tv;
    const char *tname = NULL;
    if (wf_value_map_get(v, "type", &tv) == 0 && wf_value_get_string(tv, &tname, NULL) == 0) {
        if (wf_registry_find(reg, tname) == NULL) {
            wf_json_buf b;
            wf_json_buf_init(&b);
            for (size_t i = 0; i < wf_registry_count(reg); i++) {
                const wf_event_type *t = wf_registry_type_at(reg, i);
                if (t == NULL)
                    continue;
                if (b.len)
                    wf_json_buf_append(&b, ", ", 2);
                const char *n = wf_event_type_name(t);
                wf_json_buf_append(&b, n, strlen(n));
            }
            cli_err("runs", "bad --event: workflow '%s' has no event type '%s' (it has %.*s)",
                    wf_workflow_name(wf), tname, (int)b.len, b.data ? b.data : "");
            wf_json_buf_free(&b);
            rc = WF_ETYPE;
        } else if ((rc = wf_json_parse_event(reg, text, len, out, &msg)) < 0) {
            cli_err("runs", "bad --event: %s", msg ? msg : wf_strerror(rc));
            wf_json_free_message(msg);
        }
    } else {
        const wf_event_type *hr = wf_workflow_builtin(wf, WF_HUMAN_RESPONSE_EVENT);
        rc = wf_event_new(out, hr, wf_value_len(v));
        for (size_t i = 0; rc == 0 && i < wf_value_len(v); i++) {
            const char *k;
            wf_value fv;
            wf_value_map_at(v, i, &k, NULL, &fv);
            rc = wf_event_set(*out, k, wf_value_retain(fv));
        }
        if (rc < 0)
            cli_err("runs", "bad --event: a HumanResponseEvent of these fields: %s",
                    wf_strerror(rc));
    }
    wf_value_release(v);
    free(text);
    if (rc < 0) {
        wf_event_release(*out);
        *out = NULL;
        return EXIT_USAGE;
    }
    return 0;
}

/* respond's options. */
typedef struct respond_opts {
    const char *event; /* --event */
    int no_wait;       /* --no-wait */
    long threads;
    int64_t timeout_ms; /* WF_TIMEOUT_DEFAULT or WF_NO_TIMEOUT: wait for ever */
} respond_opts;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ms left until deadline (-1: none), at least 0. */
static int64_t left_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - mono_ms();
    return left > 0 ? left : 0;
}

/*
 * wf_handler_wait until deadline (-1: none) in slices of 100 ms, so that a
 * Ctrl-C (cli_interrupted, set by the signal thread) ends the wait: then
 * WF_ETIMEDOUT with *interrupted set; the run goes on in the executor, whose
 * shutdown checkpoints it.
 */
static int wait_or_interrupt(wf_handler *h, int64_t deadline, wf_event **result, int *interrupted)
{
    for (;;) {
        int64_t left = left_ms(deadline);
        int last = left >= 0 && left <= 100;
        int rc = wf_handler_wait(h, last ? left : 100, result);
        if (rc != WF_ETIMEDOUT)
            return rc;
        if (atomic_load(&cli_interrupted)) {
            *interrupted = 1;
            return rc;
        }
        if (last)
            return rc;
    }
}

/* Says that respond was interrupted and where the run is: EXIT_INTERRUPTED. */
static int interrupted_exit(const char *run_id)
{
    cli_err("runs", "interrupted: run '%s' goes on, checkpointed in the store", run_id);
    return EXIT_INTERRUPTED;
}

/* Why run_id could not be sent to: ended, another owner's, or what the engine said. */
static void explain_unsent(wf_store *st, const char *run_id, int rc)
{
    wf_store_run_info in;
    memset(&in, 0, sizeof in);
    int r = wf_store_get_run(st, run_id, &in);
    if (rc == WF_ESTATE || (r == 0 && in.status >= WF_STORE_DONE)) {
        cli_err("runs", "run '%s' has ended already (%s)", run_id,
                r == 0 ? status_name(in.status) : "?");
    } else if (r == 0 && in.owner && strcmp(in.owner, CLI_STORE_OWNER) != 0) {
        char t[40] = "";
        fmt_time(t, in.lease_until_ms);
        cli_err("runs",
                "run '%s' is held by %s (lease until %s): answer it through that process, "
                "or once the lease has expired",
                run_id, in.owner, t[0] ? t : "?");
    } else {
        const char *m = wf_last_error_message();
        cli_err("runs", "cannot send the event to run '%s': %s", run_id,
                m && *m ? m : wf_strerror(rc));
    }
    wf_store_run_info_clear(&in);
}

/*
 * wf runs respond: an executor of this process on the store (owner
 * CLI_STORE_OWNER, as wf run and wf batch) recovers the store's runs of the
 * workflow in flight (among them one a killed wf process left), lets run_id
 * reach its wait if it is one of them, sends the event (wf_durable_send
 * loads a released run from its checkpoint) and waits: the run ends (its
 * result printed as wf run prints it), or goes idle waiting again (exit 4,
 * its last question printed), or --timeout passes (exit 3; it stays in
 * flight, checkpointed, for the next command).
 */
static int cmd_respond(wf_store *st, const char *run_id, const char *plugin_path,
                       const char *wfname, const respond_opts *o)
{
    wf_store_run_info in;
    memset(&in, 0, sizeof in);
    int rc = wf_store_get_run(st, run_id, &in);
    if (rc == WF_ENOTFOUND) {
        cli_err("runs", "no run '%s' in the store", run_id);
        return EXIT_FAILED;
    }
    if (rc < 0) {
        cli_err("runs", "reading run '%s': %s", run_id, wf_strerror(rc));
        return EXIT_FAILED;
    }
    if (in.status >= WF_STORE_DONE) {
        cli_err("runs", "run '%s' has ended already (%s)", run_id, status_name(in.status));
        wf_store_run_info_clear(&in);
        return EXIT_FAILED;
    }
    if (wfname && in.workflow && strcmp(wfname, in.workflow) != 0) {
        cli_err("runs", "run '%s' is a run of workflow '%s', not '%s'", run_id, in.workflow,
                wfname);
        wf_store_run_info_clear(&in);
        return EXIT_USAGE;
    }
    wf_plugin *plugin = NULL;
    wf_workflow *wf = NULL;
    rc = cli_load("runs", plugin_path, wfname ? wfname : in.workflow, &plugin, &wf);
    wf_store_run_info_clear(&in);
    if (rc)
        return rc;
    int code = EXIT_FAILED;
    char *msg = NULL;
    wf_event *ev = NULL, *result = NULL;
    wf_executor *ex = NULL;
    wf_handler *h = NULL;
    wf_json_buf q;
    wf_json_buf_init(&q);
    int64_t deadline = o->timeout_ms > 0 ? mono_ms() + o->timeout_ms : -1;
    int interrupted = 0;
    if ((rc = wf_workflow_freeze(wf, &msg)) < 0) {
        cli_err("runs", "workflow '%s' is invalid: %s", wf_workflow_name(wf),
                msg ? msg : wf_strerror(rc));
        goto out;
    }
    if ((code = parse_answer(wf, o->event, &ev)) != 0)
        goto out;
    code = EXIT_FAILED;
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)o->threads;
    if ((rc = wf_executor_new(&ex, &ep)) < 0) {
        cli_err("runs", "cannot start the executor: %s", wf_strerror(rc));
        goto out;
    }
    if (cli_store_attach("runs", ex, st, CLI_IDLE_RELEASE_MS) != 0)
        goto out;
    /* makes the workflow known to the store integration, and continues the
     * runs in flight whose owner stopped (ours, or an expired lease) */
    wf_recover_info ri;
    if ((rc = wf_executor_recover(ex, &wf, 1, &ri, &msg)) < 0) {
        cli_err("runs", "recovering from the store: %s", msg ? msg : wf_strerror(rc));
        goto out;
    }
    /*
     * A run recovered here first runs to its wait: a step that runs again
     * (the last checkpoint was cut before it asked) registers its waiter
     * anew, and an answer delivered before that would find none. Idle, it
     * is released (CLI_IDLE_RELEASE_MS), and the send below loads it from
     * that checkpoint, at its wait.
     */
    if (wf_handler_open(ex, run_id, &h) == 0) {
        rc = wait_or_interrupt(h, deadline, NULL, &interrupted);
        wf_handler_free(h);
        h = NULL;
        if (interrupted) {
            code = interrupted_exit(run_id);
            goto out;
        }
        if (rc == WF_ETIMEDOUT) {
            cli_err("runs", "timed out: run '%s' did not reach its wait; it goes on, "
                            "checkpointed in the store", run_id);
            code = EXIT_TIMEDOUT;
            goto out;
        }
    }
    rc = wf_durable_send(ex, run_id, ev, NULL);
    ev = NULL;
    if (rc < 0) {
        if (rc == WF_ETYPE) {
            const char *m = wf_last_error_message();
            cli_err("runs", "cannot send the event to run '%s': %s", run_id,
                    m && *m ? m : wf_strerror(rc));
            code = EXIT_USAGE;
        } else {
            explain_unsent(st, run_id, rc);
        }
        goto out;
    }
    if (o->no_wait) {
        /* the executor's shutdown checkpoints the run: the next command goes on with it */
        printf("{\"run_id\":");
        wf_json_write_string(&q, run_id, strlen(run_id));
        fwrite(q.data, 1, q.len, stdout);
        printf(",\"status\":\"sent\"}\n");
        code = EXIT_DONE;
        goto out;
    }
    /* it ends (its result is durable), or it waits again and is released */
    rc = wf_handler_open(ex, run_id, &h);
    if (rc == 0)
        rc = wait_or_interrupt(h, deadline, &result, &interrupted);
    else
        rc = WF_ENOTFOUND; /* ended (or released) already: the store says which */
    if (interrupted) {
        code = interrupted_exit(run_id);
        goto out;
    }
    if (rc == 0) {
        code = cli_print_result("runs", result);
        goto out;
    }
    if (rc == WF_ETIMEDOUT) {
        cli_err("runs", "timed out waiting for run '%s'; it goes on, checkpointed in the store",
                run_id);
        code = EXIT_TIMEDOUT;
        goto out;
    }
    memset(&in, 0, sizeof in);
    (void)wf_store_flush(st); /* an idle release is queued before the run leaves memory */
    if (wf_store_get_run(st, run_id, &in) == 0 && in.status == WF_STORE_RELEASED) {
        /* idle: it waits for another event from outside */
        if (cli_last_question(ex, wf, run_id, &q)) {
            wf_json_buf_append(&q, "\n", 1);
            fwrite(q.data, 1, q.len, stdout);
        }
        cli_err("runs", "waiting for input again: run '%s' is kept in the store", run_id);
        code = EXIT_WAITING;
    } else if (in.status >= WF_STORE_DONE) {
        code = cli_print_stored("runs", ex, wf, run_id);
    } else {
        const char *step = NULL, *m = NULL;
        int ecode = 0;
        if (h)
            wf_handler_error(h, &ecode, &step, &m);
        cli_err("runs", "run '%s' stopped here without ending (%s)%s%s", run_id,
                status_name(in.status), m ? ": " : "", m ? m : "");
    }
    wf_store_run_info_clear(&in);
out:
    wf_json_buf_free(&q);
    wf_event_release(result);
    wf_handler_free(h);
    wf_event_release(ev);
    wf_executor_free(ex); /* a run still in flight is checkpointed and stays in the store */
    wf_free(msg);
    wf_plugin_free(plugin);
    return code;
}

/* --------------------------------------------------------------- main */

typedef struct runs_opts {
    const char *status, *event;
    long limit, journal;
    int json, no_wait;
} runs_opts;

static int runs_opt(int c, const char *arg, void *user)
{
    runs_opts *o = user;
    switch (c) {
    case 's':
        o->status = arg;
        return 0;
    case 'n':
        if (cli_parse_count(arg, 1, 1L << 30, &o->limit) < 0) {
            cli_err("runs", "--limit wants a positive number, not '%s'", arg);
            return EXIT_USAGE;
        }
        return 0;
    case 'J':
        if (cli_parse_count(arg, 0, 1L << 30, &o->journal) < 0) {
            cli_err("runs", "--journal wants a number from 0, not '%s'", arg);
            return EXIT_USAGE;
        }
        return 0;
    case 'j':
        o->json = 1;
        return 0;
    case 'e':
        o->event = arg;
        return 0;
    case 'W':
        o->no_wait = 1;
        return 0;
    }
    return -1;
}

int cmd_runs(int argc, char **argv)
{
    static const struct option opts[] = {CLI_OPT_STORE,
                                         {"status", required_argument, NULL, 's'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"journal", required_argument, NULL, 'J'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"event", required_argument, NULL, 'e'},
                                         {"no-wait", no_argument, NULL, 'W'},
                                         CLI_OPT_THREADS,
                                         CLI_OPT_TIMEOUT,
                                         CLI_OPT_HELP,
                                         {NULL, 0, NULL, 0}};
    runs_opts ro = {NULL, NULL, 0, 20, 0, 0};
    cli_opts co;
    cli_opts_init(&co);
    int rc = cli_getopt("runs", argc, argv, "he:t:", opts, &co, runs_opt, &ro, usage, 1, 4);
    if (rc != CLI_CONTINUE)
        return rc;
    const char *sub = argv[optind];
    const char *run_id = optind + 1 < argc ? argv[optind + 1] : NULL;
    int list = strcmp(sub, "list") == 0, show = strcmp(sub, "show") == 0,
        cancel = strcmp(sub, "cancel") == 0, respond = strcmp(sub, "respond") == 0;
    if (!list && !show && !cancel && !respond) {
        cli_err("runs", "unknown subcommand '%s' (list, show, cancel or respond)", sub);
        return EXIT_USAGE;
    }
    const char *plugin_path = optind + 2 < argc ? argv[optind + 2] : NULL;
    const char *wfname = optind + 3 < argc ? argv[optind + 3] : NULL;
    if (respond && (plugin_path == NULL || ro.event == NULL)) {
        cli_err("runs", "respond wants RUN_ID PLUGIN.so [WORKFLOW] and --event JSON");
        return EXIT_USAGE;
    }
    if (!respond && (ro.event || ro.no_wait || co.threads || co.timeout_ms != WF_TIMEOUT_DEFAULT)) {
        cli_err("runs", "--event, --no-wait, --threads and --timeout are for respond");
        return EXIT_USAGE;
    }
    if (!respond && plugin_path) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (list && run_id) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!list && run_id == NULL) {
        cli_err("runs", "%s wants a RUN_ID", sub);
        return EXIT_USAGE;
    }
    uint32_t mask = WF_STORE_MASK_ALL;
    if (ro.status && (mask = parse_mask(ro.status)) == 0)
        return EXIT_USAGE;
    if (co.store == NULL) {
        cli_err("runs", "--store STORE is required (sqlite:PATH, or a PATH)");
        return EXIT_USAGE;
    }
    /* respond: Ctrl-C ends its wait (cmd_respond); the signal thread comes first, so that
     * every thread (the store's writer too) blocks the signals it takes */
    if (respond && cli_signals_start(NULL, NULL) < 0) {
        cli_err("runs", "cannot start the signal thread");
        return EXIT_FAILED;
    }
    wf_store *st = NULL;
    if ((rc = open_store(co.store, respond ? CLI_STORE_OWNER : NULL, &st)) != 0) {
        cli_signals_stop();
        return rc;
    }
    if (list)
        rc = cmd_list(st, mask, ro.limit, ro.json);
    else if (show)
        rc = cmd_show(st, run_id, ro.journal);
    else if (cancel)
        rc = cmd_cancel(st, run_id);
    else {
        respond_opts o = {ro.event, ro.no_wait, co.threads, co.timeout_ms};
        rc = cmd_respond(st, run_id, plugin_path, wfname, &o);
    }
    wf_store_free(st);
    cli_signals_stop();
    if (fflush(stdout) != 0 && rc == EXIT_DONE) {
        cli_err("runs", "writing: %s", strerror(errno));
        rc = EXIT_FAILED;
    }
    return rc;
}
