/*
 * log.c: a human-readable line per step invocation, run end, retry and
 * unhandled or dropped event, through the user's logger (wf never prints).
 *
 * Lines are formatted into a fixed buffer on the stack: the exporter needs
 * no memory after its creation, so it logs on even when allocation fails
 * (an over-long message is cut, with "..." at the end).
 */
#include "export.h"

#include <inttypes.h>
#include <string.h>

#define LINE_MAX_BYTES 1024

typedef struct logx {
    wf_log_fn log;
    void *user;
} logx;

typedef struct line {
    char s[LINE_MAX_BYTES];
    size_t len;
} line;

static void add(line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(line *l, const char *fmt, ...)
{
    if (l->len >= sizeof l->s - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->s + l->len, sizeof l->s - l->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof l->s - l->len) {
        l->len = sizeof l->s - 1;
        memcpy(l->s + l->len - 3, "...", 3);
    } else {
        l->len += (size_t)n;
    }
}

/* 850 ns, 12.3 us, 4.56 ms, 1.23 s */
static void add_dur(line *l, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    if (ns < 1000)
        add(l, "%" PRId64 " ns", ns);
    else if (ns < 1000000)
        add(l, "%.3g us", (double)ns / 1e3);
    else if (ns < 1000000000)
        add(l, "%.3g ms", (double)ns / 1e6);
    else
        add(l, "%.3f s", (double)ns / 1e9);
}

static const char *str(const char *s)
{
    return s ? s : "?";
}

/* "run 7 (Name)" */
static void add_run(line *l, const wf_obs_record *r)
{
    add(l, "run %" PRIu64, r->run_id);
    if (r->workflow)
        add(l, " (%s)", r->workflow);
}

/* "step think of run 7 (Name): input Query, attempt 2" */
static void add_step(line *l, const wf_obs_record *r)
{
    add(l, "step %s of ", str(r->step));
    add_run(l, r);
    add(l, ": input %s, attempt %u", str(r->event_type), (unsigned)r->attempt);
}

static void add_error(line *l, int32_t error, const char *message)
{
    add(l, "%s: %s", wf_err_name(error), message ? message : wf_strerror(error));
}

static void log_record(const wf_obs_record *r, void *user)
{
    logx *x = user;
    line l = {.len = 0};
    l.s[0] = 0;
    wf_log_level level = WF_LOG_INFO;
    switch (r->kind) {
    case WF_OBS_STEP_END:
        add_step(&l, r);
        if (r->error == 0) {
            add(&l, ": ok in ");
            add_dur(&l, r->dur_ns);
        } else if (r->error == WF_SUSPEND || r->error == WF_PENDING) {
            add(&l, r->error == WF_SUSPEND ? ": suspended after " : ": pending (async) after ");
            add_dur(&l, r->dur_ns);
        } else {
            level = WF_LOG_WARN;
            add(&l, ": failed in ");
            add_dur(&l, r->dur_ns);
            add(&l, ": ");
            add_error(&l, r->error, r->message);
        }
        break;
    case WF_OBS_RUN_END:
        add_run(&l, r);
        switch (r->status) {
        case WF_RUN_DONE:
            add(&l, " done in ");
            break;
        case WF_RUN_FAILED:
            add(&l, " failed after ");
            level = WF_LOG_WARN;
            break;
        case WF_RUN_TIMED_OUT:
            add(&l, " timed out after ");
            level = WF_LOG_WARN;
            break;
        case WF_RUN_CANCELLED:
            add(&l, " cancelled after ");
            break;
        default:
            add(&l, " ended (status %u) after ", (unsigned)r->status);
            break;
        }
        add_dur(&l, r->dur_ns);
        if (r->error < 0) {
            add(&l, ": ");
            if (r->step)
                add(&l, "step %s: ", r->step);
            add_error(&l, r->error, r->message);
        }
        break;
    case WF_OBS_RETRY:
        level = WF_LOG_WARN;
        add(&l, "retry: ");
        add_step(&l, r);
        add(&l, " failed (");
        add_error(&l, r->error, r->message);
        add(&l, "); next attempt in %" PRId64 " ms", r->value);
        break;
    case WF_OBS_EVENT_UNHANDLED:
        level = WF_LOG_WARN;
        add_run(&l, r);
        add(&l, ": event %s unhandled: no step accepts it", str(r->event_type));
        break;
    case WF_OBS_EVENT_DROP:
        add_run(&l, r);
        add(&l, ": event %s", str(r->event_type));
        if (r->step)
            add(&l, " for step %s", r->step);
        add(&l, " dropped: the run had ended");
        break;
    default:
        return;
    }
    /* One line, whatever a step's message holds. */
    for (char *c = l.s; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    x->log(level, l.s, x->user);
}

static void log_free(void *user)
{
    wf__free_mem(user);
}

int wf_exporter_log(wf_observer *out, wf_log_fn log, void *log_user)
{
    if (out == NULL || log == NULL)
        return WF_EINVAL;
    memset(out, 0, sizeof *out);
    logx *x = wf__malloc(sizeof *x);
    if (x == NULL)
        return WF_ENOMEM;
    x->log = log;
    x->user = log_user;
    out->record = log_record;
    out->user_free = log_free;
    out->user = x;
    out->kinds = WF_OBS_BIT(WF_OBS_STEP_END) | WF_OBS_BIT(WF_OBS_RUN_END) |
                 WF_OBS_BIT(WF_OBS_RETRY) | WF_OBS_BIT(WF_OBS_EVENT_UNHANDLED) |
                 WF_OBS_BIT(WF_OBS_EVENT_DROP);
    return 0;
}
