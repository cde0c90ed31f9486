/*
 * test_observe_export.c: the built-in exporters of observe.h, fed synthetic
 * record sequences through their public wf_observer callbacks (record,
 * flush, user_free), as the executor's exporter thread calls them.
 *
 * Formats are checked by parsers written here: a strict JSON parser
 * (RFC 8259, UTF-8 included) for Perfetto and OTLP, a Prometheus text
 * exposition parser (plus `promtool check metrics` when it is installed).
 * The same exporters also get random record sequences (missing starts and
 * ends, unknown runs, NULL and hostile strings, unknown kinds) and an
 * allocator that fails: the output must stay well-formed.
 */
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <wf/wf.h>

#ifndef cr_assert_str_neq /* not in the in-process harness */
#define cr_assert_str_neq(a, b, ...) cr_assert(strcmp((a), (b)) != 0, __VA_ARGS__)
#endif

/* ================================================================ JSON */

typedef enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jv {
    jtype t;
    int b;
    double num;
    char *text; /* a number's text, a string's decoded bytes */
    size_t n;   /* items of an array or object */
    struct jv *items;
    char **keys; /* objects */
} jv;

typedef struct jp {
    const char *s;
    const char *err;
    int depth;
} jp;

static void jfree(jv *v)
{
    if (v == NULL)
        return;
    free(v->text);
    for (size_t i = 0; i < v->n; i++) {
        jfree(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static void jws(jp *p)
{
    while (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')
        p->s++;
}

static int jfail(jp *p, const char *why)
{
    if (p->err == NULL)
        p->err = why;
    return -1;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void put_utf8(char **o, unsigned c)
{
    unsigned char *u = (unsigned char *)*o;
    if (c < 0x80) {
        *u++ = (unsigned char)c;
    } else if (c < 0x800) {
        *u++ = (unsigned char)(0xc0 | c >> 6);
        *u++ = (unsigned char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        *u++ = (unsigned char)(0xe0 | c >> 12);
        *u++ = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
        *u++ = (unsigned char)(0x80 | (c & 0x3f));
    } else {
        *u++ = (unsigned char)(0xf0 | c >> 18);
        *u++ = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
        *u++ = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
        *u++ = (unsigned char)(0x80 | (c & 0x3f));
    }
    *o = (char *)u;
}

/* Length of the valid UTF-8 sequence at s, 0 if invalid. */
static size_t utf8_ok(const unsigned char *s)
{
    unsigned c = s[0], min;
    size_t n;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        n = 2, min = 0x80, c &= 0x1f;
    else if ((c & 0xf0) == 0xe0)
        n = 3, min = 0x800, c &= 0x0f;
    else if ((c & 0xf8) == 0xf0)
        n = 4, min = 0x10000, c &= 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return n;
}

static int jstring(jp *p, char **out)
{
    if (*p->s != '"')
        return jfail(p, "expected a string");
    p->s++;
    char *buf = malloc(strlen(p->s) + 1), *o = buf;
    for (;;) {
        unsigned char c = (unsigned char)*p->s;
        if (c == '"') {
            p->s++;
            break;
        }
        if (c < 0x20) {
            free(buf);
            return jfail(p, c ? "control character in a string" : "unterminated string");
        }
        if (c == '\\') {
            char e = p->s[1];
            p->s += 2;
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                *o++ = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
                continue;
            }
            if (e != 'u') {
                free(buf);
                return jfail(p, "bad escape");
            }
            unsigned cp = 0;
            for (int i = 0; i < 4; i++) {
                int h = hexv(p->s[i]);
                if (h < 0) {
                    free(buf);
                    return jfail(p, "bad \\u escape");
                }
                cp = cp << 4 | (unsigned)h;
            }
            p->s += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && p->s[0] == '\\' && p->s[1] == 'u') {
                unsigned lo = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexv(p->s[2 + i]);
                    if (h < 0) {
                        free(buf);
                        return jfail(p, "bad \\u escape");
                    }
                    lo = lo << 4 | (unsigned)h;
                }
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p->s += 6;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff) {
                free(buf);
                return jfail(p, "lone surrogate");
            }
            put_utf8(&o, cp);
            continue;
        }
        size_t n = utf8_ok((const unsigned char *)p->s);
        if (n == 0) {
            free(buf);
            return jfail(p, "invalid UTF-8");
        }
        memcpy(o, p->s, n);
        o += n;
        p->s += n;
    }
    *o = 0;
    *out = buf;
    return 0;
}

static int jnumber(jp *p, jv *v)
{
    const char *s = p->s;
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9')
            s++;
    else
        return jfail(p, "bad number");
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9'))
            return jfail(p, "bad fraction");
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return jfail(p, "bad exponent");
        while (*s >= '0' && *s <= '9')
            s++;
    }
    v->t = J_NUM;
    v->text = strndup(p->s, (size_t)(s - p->s));
    v->num = strtod(v->text, NULL);
    p->s = s;
    return 0;
}

static int jvalue(jp *p, jv *v);

static int jpush(jv *v, jv *item, char *key)
{
    v->items = realloc(v->items, (v->n + 1) * sizeof *v->items);
    v->items[v->n] = *item;
    if (v->t == J_OBJ) {
        v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
        v->keys[v->n] = key;
    }
    v->n++;
    return 0;
}

static int jvalue(jp *p, jv *v)
{
    memset(v, 0, sizeof *v);
    jws(p);
    if (++p->depth > 64)
        return jfail(p, "too deep");
    int rc = 0;
    char c = *p->s;
    if (c == '{' || c == '[') {
        v->t = c == '{' ? J_OBJ : J_ARR;
        p->s++;
        jws(p);
        if (*p->s == (c == '{' ? '}' : ']')) {
            p->s++;
            p->depth--;
            return 0;
        }
        for (;;) {
            char *key = NULL;
            jws(p);
            if (v->t == J_OBJ) {
                if (jstring(p, &key) < 0)
                    return -1;
                jws(p);
                if (*p->s++ != ':') {
                    free(key);
                    return jfail(p, "expected ':'");
                }
            }
            jv item;
            if (jvalue(p, &item) < 0) {
                free(key);
                jfree(&item);
                return -1;
            }
            jpush(v, &item, key);
            jws(p);
            if (*p->s == ',') {
                p->s++;
                continue;
            }
            if (*p->s == (v->t == J_OBJ ? '}' : ']')) {
                p->s++;
                break;
            }
            return jfail(p, "expected ',' or a closing bracket");
        }
    } else if (c == '"') {
        v->t = J_STR;
        rc = jstring(p, &v->text);
    } else if (strncmp(p->s, "true", 4) == 0 || strncmp(p->s, "false", 5) == 0) {
        v->t = J_BOOL;
        v->b = c == 't';
        p->s += v->b ? 4 : 5;
    } else if (strncmp(p->s, "null", 4) == 0) {
        p->s += 4;
    } else {
        rc = jnumber(p, v);
    }
    p->depth--;
    return rc;
}

/* Parses text as one JSON document (nothing after it but blanks). */
static int jparse(const char *text, jv *out, const char **err)
{
    jp p = {text, NULL, 0};
    if (jvalue(&p, out) < 0) {
        jfree(out);
        *err = p.err;
        return -1;
    }
    jws(&p);
    if (*p.s) {
        jfree(out);
        *err = "text after the document";
        return -1;
    }
    return 0;
}

static const jv *jget(const jv *o, const char *key)
{
    if (o == NULL || o->t != J_OBJ)
        return NULL;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0)
            return &o->items[i];
    return NULL;
}

static const char *jstr(const jv *o, const char *key)
{
    const jv *v = jget(o, key);
    return v && v->t == J_STR ? v->text : NULL;
}

static int jis(const jv *o, const char *key, const char *want)
{
    const char *s = jstr(o, key);
    return s && strcmp(s, want) == 0;
}

/* ============================================================ helpers */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

/* A fresh file; the exporter takes the FILE, the test keeps the path. */
static FILE *temp_file(char *path)
{
    strcpy(path, "/tmp/wf_obs_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w+");
    cr_assert_not_null(f);
    return f;
}

/* What the executor does: only the kinds the observer asked for. */
static void feed(const wf_observer *o, const wf_obs_record *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (o->kinds == 0 || (o->kinds & WF_OBS_BIT(r[i].kind)))
            o->record(&r[i], o->user);
}

static void finish(const wf_observer *o)
{
    if (o->flush)
        o->flush(o->user);
    if (o->user_free)
        o->user_free(o->user);
}

static int count_str(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ----------------------------------------------- the known scenario */

#define T0 1000000000ll

/*
 * One run of "QuickStart" on two workers (0, 1), a blocking thread (2) and
 * the outside: start -> think (fails once, retried) and audit (a blocking
 * step that waits for an Approval), plus a steal, a park, an unhandled and
 * a dropped event and a full stream. Records of different threads are
 * interleaved roughly in time, as the exporter thread delivers them.
 */
static size_t scenario(wf_obs_record *r, uint64_t run, int64_t t0)
{
    size_t n = 0;
#define R(...) (r[n++] = (wf_obs_record){.run_id = run, .workflow = "QuickStart", __VA_ARGS__})
#define S(...) (r[n++] = (wf_obs_record){__VA_ARGS__}) /* the scheduler's: no run */
    R(.kind = WF_OBS_RUN_START, .thread = WF_OBS_OUTSIDE, .ts_ns = t0);
    R(.kind = WF_OBS_EVENT_EMIT, .thread = WF_OBS_OUTSIDE, .ts_ns = t0 + 100,
      .event_type = "StartEvent");
    R(.kind = WF_OBS_EVENT_ROUTE, .thread = WF_OBS_OUTSIDE, .ts_ns = t0 + 200, .step = "start",
      .event_type = "StartEvent", .event_id = 11, .value = 1);
    R(.kind = WF_OBS_STEP_START, .thread = 0, .ts_ns = t0 + 1000, .step = "start",
      .event_type = "StartEvent", .event_id = 11, .attempt = 1);
    R(.kind = WF_OBS_EVENT_EMIT, .thread = 0, .ts_ns = t0 + 1500, .step = "start",
      .event_type = "Query");
    R(.kind = WF_OBS_EVENT_ROUTE, .thread = 0, .ts_ns = t0 + 1600, .step = "think",
      .event_type = "Query", .event_id = 12, .value = 1);
    R(.kind = WF_OBS_EVENT_ROUTE, .thread = 0, .ts_ns = t0 + 1700, .step = "audit",
      .event_type = "Query", .event_id = 13, .value = 2);
    R(.kind = WF_OBS_STEP_END, .thread = 0, .ts_ns = t0 + 2000, .step = "start",
      .event_type = "StartEvent", .event_id = 11, .attempt = 1, .dur_ns = 1000);
    S(.kind = WF_OBS_PARK, .thread = 0, .ts_ns = t0 + 2100);
    S(.kind = WF_OBS_STEAL, .thread = 1, .ts_ns = t0 + 2400, .victim = 0, .value = 1);
    R(.kind = WF_OBS_STEP_START, .thread = 1, .ts_ns = t0 + 2500, .step = "think",
      .event_type = "Query", .event_id = 12, .attempt = 1);
    R(.kind = WF_OBS_STEP_START, .thread = 2, .ts_ns = t0 + 2600, .step = "audit",
      .event_type = "Query", .event_id = 13, .attempt = 1);
    R(.kind = WF_OBS_WAIT_SUSPEND, .thread = 2, .ts_ns = t0 + 2700, .step = "audit",
      .event_type = "Approval", .event_id = 1);
    R(.kind = WF_OBS_STEP_END, .thread = 2, .ts_ns = t0 + 2800, .step = "audit",
      .event_type = "Query", .event_id = 13, .attempt = 1, .dur_ns = 200, .error = WF_SUSPEND);
    R(.kind = WF_OBS_STEP_END, .thread = 1, .ts_ns = t0 + 3500, .step = "think",
      .event_type = "Query", .event_id = 12, .attempt = 1, .dur_ns = 1000, .error = WF_ESTEP,
      .message = "boom \"quoted\"\nsecond line");
    R(.kind = WF_OBS_RETRY, .thread = 1, .ts_ns = t0 + 3600, .step = "think", .event_type = "Query",
      .attempt = 1, .error = WF_ESTEP, .message = "boom", .value = 5);
    S(.kind = WF_OBS_UNPARK, .thread = 0, .ts_ns = t0 + 4000, .dur_ns = 1900);
    R(.kind = WF_OBS_WAIT_RESUME, .thread = WF_OBS_OUTSIDE, .ts_ns = t0 + 5000, .step = "audit",
      .event_type = "Approval", .event_id = 1, .dur_ns = 2300);
    R(.kind = WF_OBS_STEP_START, .thread = 1, .ts_ns = t0 + 8600, .step = "think",
      .event_type = "Query", .event_id = 12, .attempt = 2);
    R(.kind = WF_OBS_EVENT_EMIT, .thread = 1, .ts_ns = t0 + 9000, .step = "think",
      .event_type = "StopEvent");
    R(.kind = WF_OBS_STREAM_WRITE, .thread = 1, .ts_ns = t0 + 9050, .step = "think",
      .event_type = "Progress", .value = 1);
    R(.kind = WF_OBS_EVENT_UNHANDLED, .thread = 1, .ts_ns = t0 + 9100, .event_type = "Stray");
    R(.kind = WF_OBS_STEP_END, .thread = 1, .ts_ns = t0 + 9500, .step = "think",
      .event_type = "Query", .event_id = 12, .attempt = 2, .dur_ns = 900);
    R(.kind = WF_OBS_EVENT_DROP, .thread = 2, .ts_ns = t0 + 9900, .step = "audit",
      .event_type = "Query");
    R(.kind = WF_OBS_RUN_END, .thread = WF_OBS_OUTSIDE, .ts_ns = t0 + 10000, .status = WF_RUN_DONE,
      .dur_ns = 10000);
#undef R
#undef S
    return n;
}

/* ----------------------------------------------- random sequences */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static char long_name[3000];

static const char *rnd_str(void)
{
    static const char *const pool[] = {
        NULL,
        "start",
        "think",
        "we\"ird\\name",
        "tab\there\nnewline",
        "\x01\x1f\x7f",
        "bad\xff\xfeutf8",
        "caf\xc3\xa9",
        "\xe2\x82",
        "",
        "a{b}c=\"d\"",
        "\xed\xa0\x80 (surrogate)",
        long_name,
    };
    return pool[rnd() % (sizeof pool / sizeof *pool)];
}

/* n records of every kind (and unknown ones), in no particular order. */
static wf_obs_record *garbage(size_t n, uint64_t seed)
{
    rng_state = seed;
    memset(long_name, 'x', sizeof long_name - 1);
    static const uint32_t threads[] = {0, 1, 2, 3, WF_OBS_OUTSIDE, 1000000};
    wf_obs_record *r = calloc(n, sizeof *r);
    for (size_t i = 0; i < n; i++) {
        r[i].kind = (wf_obs_kind)(rnd() % (WF_OBS_KIND_COUNT + 2));
        r[i].thread = threads[rnd() % 6];
        r[i].ts_ns = (int64_t)(rnd() % 2000000) - 1000;
        r[i].run_id = rnd() % 5;
        r[i].workflow = rnd_str();
        r[i].step = rnd_str();
        r[i].event_type = rnd_str();
        r[i].event_id = rnd() % 8;
        r[i].attempt = (uint32_t)(rnd() % 3);
        r[i].status = (uint32_t)(rnd() % 7);
        r[i].error = (int32_t)(rnd() % 5) - 3;
        r[i].message = rnd_str();
        r[i].dur_ns = (int64_t)(rnd() % 100000) - 50;
        r[i].value = (int64_t)(rnd() % 10) - 1;
        r[i].victim = (uint32_t)(rnd() % 4);
    }
    return r;
}

/* ============================================================ Perfetto */

/* Checks a Perfetto trace: JSON, every begin has its end, flows pair up. */
typedef struct trace {
    jv doc;
    size_t n_x, n_b, n_e, n_s, n_f, n_c, n_i, n_m;
} trace;

static int same_async(const jv *a, const jv *b)
{
    const jv *ia = jget(a, "id"), *ib = jget(b, "id");
    return ia && ib && strcmp(ia->text, ib->text) == 0 && jis(a, "cat", jstr(b, "cat")) &&
           jis(a, "name", jstr(b, "name"));
}

static void check_trace(const char *text, trace *t)
{
    memset(t, 0, sizeof *t);
    const char *err = NULL;
    cr_assert_eq(jparse(text, &t->doc, &err), 0, "trace is not JSON: %s", err);
    cr_assert_eq(t->doc.t, J_ARR, "the trace is an array of events");
    const jv *ev = t->doc.items;
    size_t n = t->doc.n;
    char *matched = calloc(n ? n : 1, 1);
    for (size_t i = 0; i < n; i++) {
        const jv *e = &ev[i];
        cr_assert_eq(e->t, J_OBJ);
        const char *ph = jstr(e, "ph");
        cr_assert_not_null(ph, "event %zu has no ph", i);
        const jv *pid = jget(e, "pid"), *tid = jget(e, "tid"), *ts = jget(e, "ts");
        cr_assert(pid && pid->t == J_NUM && tid && tid->t == J_NUM && ts && ts->t == J_NUM,
                  "event %zu lacks pid/tid/ts", i);
        cr_assert_not_null(jstr(e, "name"), "event %zu has no name", i);
        switch (ph[0]) {
        case 'X': {
            const jv *dur = jget(e, "dur");
            cr_assert(dur && dur->t == J_NUM && dur->num >= 0, "X without a duration");
            t->n_x++;
            break;
        }
        case 'b':
        case 'e':
            cr_assert_not_null(jget(e, "id"));
            cr_assert_not_null(jstr(e, "cat"));
            if (ph[0] == 'b')
                t->n_b++;
            else
                t->n_e++;
            break;
        case 's':
        case 'f':
            cr_assert_not_null(jget(e, "id"));
            if (ph[0] == 's')
                t->n_s++;
            else
                t->n_f++;
            if (ph[0] == 'f')
                cr_assert(jis(e, "bp", "e"), "a flow end binds to its enclosing slice");
            break;
        case 'C':
            cr_assert_eq(jget(e, "args")->t, J_OBJ);
            t->n_c++;
            break;
        case 'i':
            t->n_i++;
            break;
        case 'M':
            t->n_m++;
            break;
        default:
            cr_assert(0, "unexpected phase %s", ph);
        }
    }
    /* Every async begin has one end (same cat, id and name) after it in time. */
    for (size_t i = 0; i < n; i++) {
        if (!jis(&ev[i], "ph", "b"))
            continue;
        size_t j;
        for (j = 0; j < n; j++)
            if (!matched[j] && jis(&ev[j], "ph", "e") && same_async(&ev[i], &ev[j]))
                break;
        cr_assert(j < n, "async begin %zu (%s) has no end", i, jstr(&ev[i], "name"));
        cr_assert(jget(&ev[j], "ts")->num >= jget(&ev[i], "ts")->num, "an end before its begin");
        matched[j] = 1;
    }
    cr_assert_eq(t->n_b, t->n_e, "as many async ends as begins");
    /* Flows: a start for every end, same id and name. */
    memset(matched, 0, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        if (!jis(&ev[i], "ph", "s"))
            continue;
        size_t j;
        for (j = 0; j < n; j++)
            if (!matched[j] && jis(&ev[j], "ph", "f") &&
                strcmp(jget(&ev[j], "id")->text, jget(&ev[i], "id")->text) == 0 &&
                jis(&ev[j], "name", jstr(&ev[i], "name")))
                break;
        cr_assert(j < n, "flow %s has no end", jget(&ev[i], "id")->text);
        matched[j] = 1;
    }
    cr_assert_eq(t->n_s, t->n_f, "as many flow ends as starts");
    free(matched);
}

/* The event with phase ph and name (and, if tid >= 0, on that track). */
static const jv *find_ev(const trace *t, const char *ph, const char *name, int tid, int nth)
{
    for (size_t i = 0; i < t->doc.n; i++) {
        const jv *e = &t->doc.items[i];
        if (jis(e, "ph", ph) && (name == NULL || jis(e, "name", name)) &&
            (tid < 0 || jget(e, "tid")->num == tid) && nth-- == 0)
            return e;
    }
    return NULL;
}

/* The slice of track tid that encloses ts. */
static const jv *enclosing(const trace *t, double tid, double ts)
{
    for (size_t i = 0; i < t->doc.n; i++) {
        const jv *e = &t->doc.items[i];
        if (!jis(e, "ph", "X") || jget(e, "tid")->num != tid)
            continue;
        double b = jget(e, "ts")->num, d = jget(e, "dur")->num;
        if (ts >= b && ts <= b + d)
            return e;
    }
    return NULL;
}

/*
 * The flow arrows named name whose start lies in a slice named from and whose
 * end is the start of a slice named to. Checks every arrow is bound.
 */
static int arrows(const trace *t, const char *from_name, const char *to_name, const char *name)
{
    int n = 0;
    const jv *s;
    for (int k = 0; (s = find_ev(t, "s", NULL, -1, k)) != NULL; k++) {
        const jv *f = NULL;
        for (int j = 0; (f = find_ev(t, "f", NULL, -1, j)) != NULL; j++)
            if (strcmp(jget(f, "id")->text, jget(s, "id")->text) == 0)
                break;
        cr_assert_not_null(f);
        cr_assert(jget(s, "id")->num < 9007199254740992.0, "ids exact in any JSON reader");
        const jv *from = enclosing(t, jget(s, "tid")->num, jget(s, "ts")->num);
        const jv *to = enclosing(t, jget(f, "tid")->num, jget(f, "ts")->num);
        cr_assert(from && to, "flow %s is not bound to slices", jget(s, "id")->text);
        cr_assert_eq(jget(to, "ts")->num, jget(f, "ts")->num, "lands on the start");
        n += jis(from, "name", from_name) && jis(to, "name", to_name) && jis(s, "name", name);
    }
    return n;
}

static char *run_perfetto(const wf_obs_record *r, size_t n)
{
    char path[64];
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = temp_file(path);
    wf_observer o;
    cr_assert_eq(wf_exporter_perfetto(&o, &p), 0);
    feed(&o, r, n);
    finish(&o);
    char *text = slurp(path);
    unlink(path);
    return text;
}

Test(observe_export, kind_names_and_params)
{
    cr_assert_str_eq(wf_obs_kind_name(WF_OBS_STEP_START), "step_start");
    cr_assert_str_eq(wf_obs_kind_name(WF_OBS_UNPARK), "unpark");
    cr_assert_str_eq(wf_obs_kind_name((wf_obs_kind)99), "?");
    for (int k = 0; k < WF_OBS_KIND_COUNT; k++)
        cr_assert_str_neq(wf_obs_kind_name((wf_obs_kind)k), "?", "kind %d", k);
    wf_exporter_params p;
    memset(&p, 0xab, sizeof p);
    wf_exporter_params_init(&p);
    cr_assert(p.out == NULL && p.keep_open == 0 && p.service_name == NULL);
    /* Unix time = monotonic + offset: today, not 1970 (and the same every call). */
    int64_t off = wf_obs_clock_offset_ns();
    cr_assert(off > 1500000000ll * 1000000000ll, "offset %" PRId64, off);
    cr_assert_eq(wf_obs_clock_offset_ns(), off);
    wf_observer o;
    cr_assert_eq(wf_exporter_perfetto(&o, NULL), WF_EINVAL);
    cr_assert_eq(wf_exporter_perfetto(&o, &p), WF_EINVAL, "no output file");
    cr_assert_eq(wf_exporter_otlp_json(&o, &p), WF_EINVAL);
    cr_assert_eq(wf_exporter_prometheus(&o, &p), WF_EINVAL);
    cr_assert_eq(wf_exporter_log(&o, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_exporter_execution(&o, NULL), WF_EINVAL);
}

Test(observe_export, perfetto_slices_flows_counters_async)
{
    wf_obs_record r[64];
    size_t n = scenario(r, 1, T0);
    char *text = run_perfetto(r, n);
    trace t;
    check_trace(text, &t);
    /* 4 invocations + the "parked" slice + an anchor for the routing from outside */
    cr_assert_eq(t.n_x, 6, "%zu slices\n%s", t.n_x, text);
    cr_assert_eq(find_ev(&t, "X", "route", 0, 0) != NULL, 1, "anchor of the outside routing");
    cr_assert_not_null(find_ev(&t, "X", "parked", 1, 0));
    /* Three events consumed, three arrows; the retry re-reads its input: no fourth. */
    cr_assert_eq(t.n_s, 3);
    cr_assert_eq(t.n_c, 3, "a counter per routing");
    cr_assert_eq(t.n_b, 2, "the run and the wait");
    /* retry, unhandled, dropped, full stream, steal */
    cr_assert_eq(t.n_i, 5, "%zu instants", t.n_i);

    /* The failed attempt of think: on worker 1's track (tid 2), exact times, error args. */
    const jv *think = find_ev(&t, "X", "think", 2, 0);
    cr_assert_not_null(think);
    cr_assert_str_eq(jget(think, "ts")->text, "1000002.500");
    cr_assert_str_eq(jget(think, "dur")->text, "1.000");
    const jv *args = jget(think, "args");
    cr_assert(jis(args, "outcome", "failed") && jis(args, "error", "WF_ESTEP"));
    cr_assert_str_eq(jstr(args, "message"), "boom \"quoted\"\nsecond line");
    cr_assert_eq(jget(args, "attempt")->num, 1);
    cr_assert_str_eq(jstr(args, "run_id"), "1");
    const jv *think2 = find_ev(&t, "X", "think", 2, 1);
    cr_assert(think2 && jis(jget(think2, "args"), "outcome", "ok"));
    cr_assert_eq(jget(jget(think2, "args"), "attempt")->num, 2);
    cr_assert_not_null(find_ev(&t, "X", "audit", 3, 0), "the blocking step on tid 3");
    cr_assert(jis(jget(find_ev(&t, "X", "audit", 3, 0), "args"), "outcome", "suspended"));

    /* Each arrow leaves from inside the emitting slice and lands on the consumer's start. */
    cr_assert_eq(arrows(&t, "route", "start", "StartEvent"), 1);
    cr_assert_eq(arrows(&t, "start", "think", "Query"), 1);
    cr_assert_eq(arrows(&t, "start", "audit", "Query"), 1);
    /* Counters: the waiting events of each step. */
    const jv *c = find_ev(&t, "C", "QuickStart.audit waiting", -1, 0);
    cr_assert_not_null(c);
    cr_assert_eq(jget(jget(c, "args"), "events")->num, 2);
    /* The run: an async slice over its whole duration, with its status. */
    const jv *rb = find_ev(&t, "b", "QuickStart", -1, 0);
    const jv *re = find_ev(&t, "e", "QuickStart", -1, 0);
    cr_assert(rb && re && jis(rb, "cat", "run") && jis(jget(re, "args"), "status", "done"));
    cr_assert_str_eq(jget(rb, "ts")->text, "1000000.000");
    cr_assert_str_eq(jget(re, "ts")->text, "1000010.000");
    cr_assert_not_null(find_ev(&t, "b", "wait Approval", -1, 0));
    cr_assert_not_null(find_ev(&t, "i", "retry think", 2, 0));
    cr_assert_not_null(find_ev(&t, "i", "unhandled Stray", 2, 0));
    cr_assert_not_null(find_ev(&t, "i", "dropped Query", 3, 0));
    /* Track names: workers are those that parked or stole or were stolen from. */
    const char *want[][2] = {
        {"0", "outside"}, {"1", "worker 0"}, {"2", "worker 1"}, {"3", "blocking 0"}};
    for (int k = 0; k < 4; k++) {
        const jv *m = find_ev(&t, "M", "thread_name", atoi(want[k][0]), 0);
        cr_assert_not_null(m, "track %s has no name", want[k][0]);
        cr_assert_str_eq(jstr(jget(m, "args"), "name"), want[k][1]);
    }
    jfree(&t.doc);
    free(text);
}

/* Numbers are written without printf: every digit count, exactly. */
Test(observe_export, perfetto_numbers_exact)
{
    static const uint64_t ids[] = {0,
                                   7,
                                   9,
                                   10,
                                   99,
                                   100,
                                   101,
                                   999,
                                   1000,
                                   65535,
                                   4294967296ull,
                                   1000000000000003ull,
                                   9999999999999999999ull,
                                   UINT64_MAX - 1,
                                   UINT64_MAX};
    enum { N = sizeof ids / sizeof ids[0] };
    wf_obs_record r[2 * N];
    for (size_t i = 0; i < N; i++) {
        /* one slice per value, on its own track: ts and dur from i, event_id the value */
        int64_t start = T0 + (int64_t)i * 1234567 + (int64_t)(i % 10);
        r[2 * i] = (wf_obs_record){.kind = WF_OBS_STEP_START,
                                   .thread = (uint32_t)i,
                                   .ts_ns = start,
                                   .run_id = ids[i],
                                   .step = "s",
                                   .event_id = ids[i],
                                   .attempt = 1};
        r[2 * i + 1] = r[2 * i];
        r[2 * i + 1].kind = WF_OBS_STEP_END;
        r[2 * i + 1].dur_ns = (int64_t)(i * 1001 + 1);
        r[2 * i + 1].ts_ns = start + r[2 * i + 1].dur_ns;
    }
    char *text = run_perfetto(r, 2 * N);
    trace t;
    check_trace(text, &t);
    for (size_t i = 0; i < N; i++) {
        const jv *x = find_ev(&t, "X", "s", (int)i + 1, 0);
        cr_assert_not_null(x, "slice %zu", i);
        char want[64];
        snprintf(want, sizeof want, "%" PRIu64, ids[i]);
        cr_assert_str_eq(jstr(jget(x, "args"), "event_id"), want, "an id is a string");
        cr_assert_str_eq(jstr(jget(x, "args"), "run_id"), want);
        int64_t start = r[2 * i].ts_ns;
        snprintf(want, sizeof want, "%" PRId64 ".%03d", start / 1000, (int)(start % 1000));
        cr_assert_str_eq(jget(x, "ts")->text, want);
        int64_t dur = r[2 * i + 1].dur_ns;
        snprintf(want, sizeof want, "%" PRId64 ".%03d", dur / 1000, (int)(dur % 1000));
        cr_assert_str_eq(jget(x, "dur")->text, want);
    }
    jfree(&t.doc);
    free(text);
}

Test(observe_export, perfetto_flow_when_start_arrives_before_route)
{
    /* The consumer's thread delivered its records before the router's. */
    wf_obs_record r[] = {
        {.kind = WF_OBS_STEP_START,
         .thread = 1,
         .ts_ns = 5000,
         .run_id = 3,
         .step = "b",
         .event_type = "E",
         .event_id = 7,
         .attempt = 1},
        {.kind = WF_OBS_STEP_END,
         .thread = 1,
         .ts_ns = 6000,
         .run_id = 3,
         .step = "b",
         .event_type = "E",
         .event_id = 7,
         .attempt = 1,
         .dur_ns = 1000},
        {.kind = WF_OBS_STEP_START,
         .thread = 0,
         .ts_ns = 1000,
         .run_id = 3,
         .step = "a",
         .event_type = "StartEvent",
         .event_id = 6,
         .attempt = 1},
        {.kind = WF_OBS_EVENT_ROUTE,
         .thread = 0,
         .ts_ns = 1500,
         .run_id = 3,
         .step = "b",
         .event_type = "E",
         .event_id = 7,
         .value = 1},
        {.kind = WF_OBS_STEP_END,
         .thread = 0,
         .ts_ns = 2000,
         .run_id = 3,
         .step = "a",
         .event_type = "StartEvent",
         .event_id = 6,
         .attempt = 1,
         .dur_ns = 1000},
    };
    char *text = run_perfetto(r, sizeof r / sizeof *r);
    trace t;
    check_trace(text, &t);
    cr_assert_eq(t.n_s, 1, "one arrow (event 6 was never seen routed)");
    const jv *s = find_ev(&t, "s", "E", 1, 0), *f = find_ev(&t, "f", "E", 2, 0);
    cr_assert(s && f);
    cr_assert_str_eq(jget(s, "ts")->text, "1.500");
    cr_assert_str_eq(jget(f, "ts")->text, "5.000");
    cr_assert_eq(arrows(&t, "a", "b", "E"), 1);
    jfree(&t.doc);
    free(text);
}

Test(observe_export, perfetto_same_event_ids_in_two_runs)
{
    /* Event ids are unique only while in flight: two runs in parallel may share one. */
    wf_obs_record r[128];
    size_t n = scenario(r, 1, T0);
    size_t m = scenario(r + n, 2, T0 + 300);
    for (size_t q = n; q < n + m; q++) /* on other threads: a thread runs one step at a time */
        if (r[q].thread != WF_OBS_OUTSIDE)
            r[q].thread += 3;
    /* interleave the two runs by time, as the exporter thread would */
    wf_obs_record all[128];
    size_t i = 0, j = n, k = 0;
    while (i < n || j < n + m)
        all[k++] = (j >= n + m || (i < n && r[i].ts_ns <= r[j].ts_ns)) ? r[i++] : r[j++];
    char *text = run_perfetto(all, k);
    trace t;
    check_trace(text, &t);
    cr_assert_eq(t.n_s, 6, "three arrows per run");
    for (size_t a = 0; a < t.doc.n; a++)
        for (size_t b = 0; b < a; b++)
            if (jis(&t.doc.items[a], "ph", "s") && jis(&t.doc.items[b], "ph", "s"))
                cr_assert_str_neq(jget(&t.doc.items[a], "id")->text,
                                  jget(&t.doc.items[b], "id")->text, "flow ids apart");
    cr_assert_eq(arrows(&t, "start", "think", "Query"), 2);
    jfree(&t.doc);
    free(text);
}

Test(observe_export, perfetto_closes_what_is_open_at_removal)
{
    wf_obs_record r[] = {
        {.kind = WF_OBS_RUN_START,
         .thread = WF_OBS_OUTSIDE,
         .ts_ns = 100,
         .run_id = 9,
         .workflow = "W"},
        {.kind = WF_OBS_STEP_START,
         .thread = 0,
         .ts_ns = 200,
         .run_id = 9,
         .workflow = "W",
         .step = "slow",
         .event_type = "StartEvent",
         .event_id = 1,
         .attempt = 1},
        {.kind = WF_OBS_WAIT_SUSPEND,
         .thread = 1,
         .ts_ns = 300,
         .run_id = 9,
         .step = "w",
         .event_type = "Reply",
         .event_id = 4},
        /* ends whose begins were never seen */
        {.kind = WF_OBS_RUN_END,
         .thread = 1,
         .ts_ns = 900,
         .run_id = 8,
         .workflow = "W",
         .status = WF_RUN_FAILED,
         .error = WF_ESTEP,
         .dur_ns = 500},
        {.kind = WF_OBS_WAIT_RESUME,
         .thread = 1,
         .ts_ns = 950,
         .run_id = 8,
         .event_id = 2,
         .dur_ns = 50,
         .error = WF_ETIMEDOUT},
        {.kind = WF_OBS_STEP_END,
         .thread = 3,
         .ts_ns = 990,
         .run_id = 8,
         .step = "x",
         .event_id = 5,
         .attempt = 1,
         .dur_ns = 90},
    };
    char *text = run_perfetto(r, sizeof r / sizeof *r);
    trace t;
    check_trace(text, &t);
    cr_assert_eq(t.n_b, 4, "two runs, two waits");
    const jv *slow = find_ev(&t, "X", "slow", 1, 0);
    cr_assert_not_null(slow, "the unfinished invocation is drawn");
    cr_assert(jis(jget(slow, "args"), "outcome", "unfinished"));
    cr_assert_str_eq(jget(slow, "dur")->text, "0.790", "up to the last time seen");
    const jv *b8 = find_ev(&t, "b", "W", -1, 1);
    cr_assert_not_null(b8);
    cr_assert_str_eq(jget(b8, "ts")->text, "0.400", "begun dur_ns before its end");
    jfree(&t.doc);
    free(text);
}

Test(observe_export, perfetto_valid_for_any_records)
{
    for (uint64_t seed = 1; seed <= 20; seed++) {
        wf_obs_record *r = garbage(400, seed);
        char *text = run_perfetto(r, 400);
        trace t;
        check_trace(text, &t);
        jfree(&t.doc);
        free(text);
        free(r);
    }
}

Test(observe_export, perfetto_keep_open_and_empty)
{
    /* No record at all: still a document. The caller keeps its FILE. */
    char path[64];
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = temp_file(path);
    p.keep_open = 1;
    wf_observer o;
    cr_assert_eq(wf_exporter_perfetto(&o, &p), 0);
    finish(&o);
    cr_assert(ftell(p.out) > 0, "still open, at the end of the trace");
    fclose(p.out);
    char *text = slurp(path);
    trace t;
    check_trace(text, &t);
    jfree(&t.doc);
    free(text);
    unlink(path);
}

/* =============================================================== OTLP */

typedef struct otlp_doc {
    jv lines[64];
    size_t n_lines;
    const jv *spans[256];
    size_t n_spans;
} otlp_doc;

static int is_hex(const char *s, size_t n)
{
    if (s == NULL || strlen(s) != n)
        return 0;
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
        nonzero |= s[i] != '0';
    }
    return nonzero;
}

static int is_u64_string(const char *s)
{
    if (s == NULL || *s == 0 || strlen(s) > 20)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Parses every line; checks the TracesData shape and each span's ids and times. */
static void check_otlp(char *text, otlp_doc *d, const char *service)
{
    memset(d, 0, sizeof *d);
    cr_assert(*text == 0 || text[strlen(text) - 1] == '\n', "lines end with a newline");
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cr_assert(d->n_lines < 64);
        jv *doc = &d->lines[d->n_lines++];
        const char *err = NULL;
        cr_assert_eq(jparse(line, doc, &err), 0, "line %zu is not JSON: %s", d->n_lines, err);
        const jv *rs = jget(doc, "resourceSpans");
        cr_assert(rs && rs->t == J_ARR && rs->n == 1);
        const jv *attrs = jget(jget(&rs->items[0], "resource"), "attributes");
        cr_assert(attrs && attrs->t == J_ARR && attrs->n >= 1);
        cr_assert(jis(&attrs->items[0], "key", "service.name"));
        cr_assert_str_eq(jstr(jget(&attrs->items[0], "value"), "stringValue"), service);
        const jv *ss = jget(&rs->items[0], "scopeSpans");
        cr_assert(ss && ss->t == J_ARR && ss->n == 1);
        cr_assert(jis(jget(&ss->items[0], "scope"), "name", "wf"));
        const jv *spans = jget(&ss->items[0], "spans");
        cr_assert(spans && spans->t == J_ARR && spans->n >= 1, "no empty lines of spans");
        for (size_t i = 0; i < spans->n; i++) {
            const jv *s = &spans->items[i];
            cr_assert(is_hex(jstr(s, "traceId"), 32), "traceId %s", jstr(s, "traceId"));
            cr_assert(is_hex(jstr(s, "spanId"), 16));
            if (jget(s, "parentSpanId"))
                cr_assert(is_hex(jstr(s, "parentSpanId"), 16));
            cr_assert_not_null(jstr(s, "name"));
            const char *st = jstr(s, "startTimeUnixNano"), *en = jstr(s, "endTimeUnixNano");
            cr_assert(is_u64_string(st) && is_u64_string(en), "times are decimal strings");
            cr_assert(strtoull(st, NULL, 10) <= strtoull(en, NULL, 10), "ends after it starts");
            cr_assert_eq(jget(s, "kind")->num, 1);
            const jv *sa = jget(s, "attributes");
            cr_assert(sa && sa->t == J_ARR);
            for (size_t k = 0; k < sa->n; k++) {
                const jv *val = jget(&sa->items[k], "value");
                cr_assert(jstr(val, "stringValue") || is_u64_string(jstr(val, "intValue")) ||
                              (jstr(val, "intValue") && jstr(val, "intValue")[0] == '-'),
                          "attribute value");
            }
            cr_assert(d->n_spans < 256);
            d->spans[d->n_spans++] = s;
        }
    }
}

static void otlp_doc_free(otlp_doc *d)
{
    for (size_t i = 0; i < d->n_lines; i++)
        jfree(&d->lines[i]);
}

static const char *attr_of(const jv *s, const char *key, const char *kind)
{
    const jv *a = jget(s, "attributes");
    for (size_t i = 0; a && i < a->n; i++)
        if (jis(&a->items[i], "key", key))
            return jstr(jget(&a->items[i], "value"), kind);
    return NULL;
}

static const jv *span_named(const otlp_doc *d, const char *name, int nth)
{
    for (size_t i = 0; i < d->n_spans; i++)
        if (jis(d->spans[i], "name", name) && nth-- == 0)
            return d->spans[i];
    return NULL;
}

static char *run_otlp(const wf_obs_record *r, size_t n, const char *service, size_t flush_every)
{
    char path[64];
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = temp_file(path);
    p.service_name = service;
    wf_observer o;
    cr_assert_eq(wf_exporter_otlp_json(&o, &p), 0);
    for (size_t i = 0; i < n; i++) {
        feed(&o, &r[i], 1);
        if (flush_every && i % flush_every == flush_every - 1)
            o.flush(o.user);
    }
    finish(&o);
    char *text = slurp(path);
    unlink(path);
    return text;
}

Test(observe_export, otlp_run_and_step_spans)
{
    wf_obs_record r[64];
    /* Large monotonic times: Unix nanoseconds past 2^53 must come out exact. */
    int64_t t0 = 9007199254740993ll;
    size_t n = scenario(r, 1, t0);
    char *text = run_otlp(r, n, NULL, 0);
    otlp_doc d;
    check_otlp(text, &d, "wf");
    cr_assert_eq(d.n_lines, 1, "one flush, one line");
    cr_assert_eq(d.n_spans, 5, "the run and four invocations");
    const jv *run = span_named(&d, "QuickStart", 0);
    cr_assert_not_null(run);
    cr_assert_null(jget(run, "parentSpanId"), "the run is the root");
    int64_t off = wf_obs_clock_offset_ns();
    char want[32];
    snprintf(want, sizeof want, "%" PRIu64, (uint64_t)(t0 + off));
    cr_assert_str_eq(jstr(run, "startTimeUnixNano"), want);
    snprintf(want, sizeof want, "%" PRIu64, (uint64_t)(t0 + 10000 + off));
    cr_assert_str_eq(jstr(run, "endTimeUnixNano"), want);
    cr_assert_str_eq(attr_of(run, "wf.run_id", "stringValue"), "1");
    cr_assert_str_eq(attr_of(run, "wf.status", "stringValue"), "done");
    cr_assert_null(jget(run, "status"), "a run that completed is not an error");
    /* Retries, unhandled and dropped events are events of the run's span. */
    const jv *evs = jget(run, "events");
    cr_assert(evs && evs->n == 3);
    cr_assert(jis(&evs->items[0], "name", "retry"));
    cr_assert_str_eq(attr_of(&evs->items[0], "wf.step", "stringValue"), "think");
    cr_assert_str_eq(attr_of(&evs->items[0], "wf.attempt", "intValue"), "1");
    cr_assert_str_eq(attr_of(&evs->items[0], "wf.delay_ms", "intValue"), "5");
    cr_assert(jis(&evs->items[1], "name", "event.unhandled"));
    cr_assert(jis(&evs->items[2], "name", "event.dropped"));
    snprintf(want, sizeof want, "%" PRIu64, (uint64_t)(t0 + 3600 + off));
    cr_assert_str_eq(jstr(&evs->items[0], "timeUnixNano"), want);

    for (size_t i = 0; i < d.n_spans; i++) {
        const jv *s = d.spans[i];
        cr_assert_str_eq(jstr(s, "traceId"), jstr(run, "traceId"), "one trace per run");
        if (s != run)
            cr_assert_str_eq(jstr(s, "parentSpanId"), jstr(run, "spanId"));
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(jstr(s, "spanId"), jstr(d.spans[j], "spanId"));
    }
    const jv *fail = span_named(&d, "think", 0);
    cr_assert_not_null(fail);
    snprintf(want, sizeof want, "%" PRIu64, (uint64_t)(t0 + 2500 + off));
    cr_assert_str_eq(jstr(fail, "startTimeUnixNano"), want);
    snprintf(want, sizeof want, "%" PRIu64, (uint64_t)(t0 + 3500 + off));
    cr_assert_str_eq(jstr(fail, "endTimeUnixNano"), want);
    cr_assert_eq(jget(jget(fail, "status"), "code")->num, 2);
    cr_assert_str_eq(jstr(jget(fail, "status"), "message"), "boom \"quoted\"\nsecond line");
    cr_assert_str_eq(attr_of(fail, "wf.step", "stringValue"), "think");
    cr_assert_str_eq(attr_of(fail, "wf.event_type", "stringValue"), "Query");
    cr_assert_str_eq(attr_of(fail, "wf.workflow", "stringValue"), "QuickStart");
    cr_assert_str_eq(attr_of(fail, "wf.attempt", "intValue"), "1");
    cr_assert_str_eq(attr_of(fail, "wf.error", "stringValue"), "WF_ESTEP");
    cr_assert_str_eq(attr_of(fail, "error.type", "stringValue"), "WF_ESTEP");
    const jv *ok = span_named(&d, "think", 1);
    cr_assert_str_eq(attr_of(ok, "wf.attempt", "intValue"), "2");
    cr_assert_null(jget(ok, "status"));
    cr_assert_str_eq(attr_of(span_named(&d, "audit", 0), "wf.outcome", "stringValue"), "suspended");
    otlp_doc_free(&d);
    free(text);
}

Test(observe_export, otlp_child_spans_and_traceparent)
{
    const char *tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    wf_obs_record r[16];
    size_t n = 0;
#define C(...)                                                                                     \
    (r[n++] = (wf_obs_record){.run_id = 5, .workflow = "Nest", .workers = 1, __VA_ARGS__})
    C(.kind = WF_OBS_RUN_START, .thread = WF_OBS_OUTSIDE, .ts_ns = T0, .traceparent = tp);
    C(.kind = WF_OBS_STEP_START, .ts_ns = T0 + 100, .step = "fetch", .event_type = "StartEvent",
      .event_id = 9, .attempt = 1);
    C(.kind = WF_OBS_SPAN_BEGIN, .ts_ns = T0 + 200, .step = "fetch", .event_id = 9, .attempt = 1,
      .span = 1, .name = "http.get");
    C(.kind = WF_OBS_SPAN_ATTR, .ts_ns = T0 + 210, .step = "fetch", .event_id = 9, .attempt = 1,
      .span = 1, .name = "http.url", .str = "https://example.invalid/x");
    C(.kind = WF_OBS_SPAN_BEGIN, .ts_ns = T0 + 220, .step = "fetch", .event_id = 9, .attempt = 1,
      .span = 2, .parent_span = 1, .name = "parse");
    C(.kind = WF_OBS_SPAN_ATTR, .ts_ns = T0 + 230, .step = "fetch", .event_id = 9, .attempt = 1,
      .span = 2, .name = "bytes", .value = 1234);
    C(.kind = WF_OBS_SPAN_END, .ts_ns = T0 + 300, .step = "fetch", .event_id = 9, .attempt = 1,
      .span = 2, .error = WF_EFORMAT, .message = "bad json");
    C(.kind = WF_OBS_SPAN_END, .ts_ns = T0 + 400, .step = "fetch", .event_id = 9, .attempt = 1,
      .span = 1);
    C(.kind = WF_OBS_SPAN_BEGIN, .ts_ns = T0 + 410, .step = "fetch", .event_id = 9, .attempt = 1,
      .span = 3, .name = "left.open");
    C(.kind = WF_OBS_STEP_END, .ts_ns = T0 + 500, .step = "fetch", .event_type = "StartEvent",
      .event_id = 9, .attempt = 1, .dur_ns = 400);
    C(.kind = WF_OBS_RUN_END, .thread = WF_OBS_OUTSIDE, .ts_ns = T0 + 600, .status = WF_RUN_DONE,
      .dur_ns = 600);
#undef C
    char *text = run_otlp(r, n, NULL, 0);
    otlp_doc d;
    check_otlp(text, &d, "wf");
    cr_assert_eq(d.n_spans, 5, "run, step, three child spans");
    const jv *run = span_named(&d, "Nest", 0), *step = span_named(&d, "fetch", 0);
    const jv *get = span_named(&d, "http.get", 0), *parse = span_named(&d, "parse", 0);
    const jv *open = span_named(&d, "left.open", 0);
    cr_assert(run && step && get && parse && open);
    for (size_t i = 0; i < d.n_spans; i++)
        cr_assert_str_eq(jstr(d.spans[i], "traceId"), "0af7651916cd43dd8448eb211c80319c",
                         "the caller's trace");
    cr_assert_str_eq(jstr(run, "parentSpanId"), "b7ad6b7169203331", "the caller's span");
    cr_assert_str_eq(jstr(step, "parentSpanId"), jstr(run, "spanId"));
    cr_assert_str_eq(jstr(get, "parentSpanId"), jstr(step, "spanId"), "a child of its step");
    cr_assert_str_eq(jstr(parse, "parentSpanId"), jstr(get, "spanId"), "nested");
    cr_assert_str_eq(jstr(open, "parentSpanId"), jstr(step, "spanId"));
    cr_assert_str_eq(attr_of(get, "http.url", "stringValue"), "https://example.invalid/x");
    cr_assert_str_eq(attr_of(parse, "bytes", "intValue"), "1234");
    cr_assert_eq(jget(jget(parse, "status"), "code")->num, 2);
    cr_assert_str_eq(jstr(jget(parse, "status"), "message"), "bad json");
    cr_assert_str_eq(attr_of(parse, "error.type", "stringValue"), "WF_EFORMAT");
    cr_assert_null(jget(get, "status"));
    cr_assert_str_eq(attr_of(open, "wf.outcome", "stringValue"), "unfinished",
                     "ended with its step");
    char want[32];
    snprintf(want, sizeof want, "%" PRIu64, (uint64_t)(T0 + 200 + wf_obs_clock_offset_ns()));
    cr_assert_str_eq(jstr(get, "startTimeUnixNano"), want);
    otlp_doc_free(&d);
    free(text);

    /* A malformed traceparent: the run keeps a trace of its own. */
    const char *bad[] = {"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                         "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                         "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                         "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                         "00-short",
                         ""};
    for (size_t b = 0; b < sizeof bad / sizeof *bad; b++) {
        r[0].traceparent = bad[b];
        text = run_otlp(r, n, NULL, 0);
        check_otlp(text, &d, "wf");
        run = span_named(&d, "Nest", 0);
        cr_assert_null(jget(run, "parentSpanId"), "%s", bad[b]);
        cr_assert_str_neq(jstr(run, "traceId"), "0af7651916cd43dd8448eb211c80319c");
        otlp_doc_free(&d);
        free(text);
    }
}

Test(observe_export, otlp_lines_per_flush_ids_per_run_and_exporter)
{
    wf_obs_record r[128];
    size_t n = scenario(r, 1, T0);
    n += scenario(r + n, 2, T0 + 20000);
    /* A flush after every record: a line per span written, none empty. */
    char *text = run_otlp(r, n, "svc \"x\"", 1);
    otlp_doc d;
    check_otlp(text, &d, "svc \"x\"");
    cr_assert_eq(d.n_spans, 10);
    cr_assert_eq(d.n_lines, 10, "one span ended per flushed record here");
    const jv *r1 = span_named(&d, "QuickStart", 0), *r2 = span_named(&d, "QuickStart", 1);
    cr_assert(r1 && r2);
    cr_assert_str_neq(jstr(r1, "traceId"), jstr(r2, "traceId"));
    /* The same run id in another exporter (another process): another trace. */
    char *text2 = run_otlp(r, n, "svc \"x\"", 0);
    otlp_doc d2;
    check_otlp(text2, &d2, "svc \"x\"");
    cr_assert_eq(d2.n_lines, 1);
    cr_assert_str_neq(jstr(span_named(&d2, "QuickStart", 0), "traceId"), jstr(r1, "traceId"));
    otlp_doc_free(&d);
    otlp_doc_free(&d2);
    free(text);
    free(text2);
}

Test(observe_export, otlp_unfinished_and_orphans)
{
    wf_obs_record r[] = {
        /* a step of a run whose start was never seen, and a run that never ends */
        {.kind = WF_OBS_STEP_END,
         .thread = 0,
         .ts_ns = 5000,
         .run_id = 4,
         .step = "x",
         .event_id = 2,
         .attempt = 1,
         .dur_ns = 1000,
         .error = WF_ENOMEM},
        {.kind = WF_OBS_RUN_START, .thread = 0, .ts_ns = 6000, .run_id = 5, .workflow = "W"},
        {.kind = WF_OBS_STEP_START,
         .thread = 1,
         .ts_ns = 6500,
         .run_id = 5,
         .workflow = "W",
         .step = "y",
         .event_id = 3,
         .attempt = 1},
        {.kind = WF_OBS_RETRY,
         .thread = 1,
         .ts_ns = 6600,
         .run_id = 5,
         .step = "y",
         .attempt = 1,
         .error = WF_ESTEP,
         .message = NULL,
         .value = 10},
        {.kind = WF_OBS_RUN_END,
         .thread = 0,
         .ts_ns = 7000,
         .run_id = 4,
         .workflow = "V",
         .status = WF_RUN_TIMED_OUT,
         .error = WF_ERUNTIMEOUT,
         .dur_ns = 3000,
         .message = "x still running"},
    };
    char *text = run_otlp(r, sizeof r / sizeof *r, NULL, 0);
    otlp_doc d;
    check_otlp(text, &d, "wf");
    cr_assert_eq(d.n_spans, 4);
    const jv *x = span_named(&d, "x", 0), *v = span_named(&d, "V", 0);
    const jv *y = span_named(&d, "y", 0), *w = span_named(&d, "W", 0);
    cr_assert(x && v && y && w);
    cr_assert_str_eq(jstr(x, "parentSpanId"), jstr(v, "spanId"), "parent known without start");
    cr_assert_str_eq(jstr(x, "traceId"), jstr(v, "traceId"));
    cr_assert_str_eq(jstr(jget(x, "status"), "message"), "out of memory");
    cr_assert_eq(jget(jget(v, "status"), "code")->num, 2, "a timed-out run is an error");
    cr_assert_str_eq(jstr(jget(v, "status"), "message"), "x still running");
    cr_assert_str_eq(attr_of(w, "wf.status", "stringValue"), "unfinished");
    cr_assert_str_eq(attr_of(y, "wf.outcome", "stringValue"), "unfinished");
    cr_assert_str_eq(jstr(y, "parentSpanId"), jstr(w, "spanId"));
    cr_assert_eq(jget(w, "events")->n, 1);
    otlp_doc_free(&d);
    free(text);
}

Test(observe_export, otlp_valid_for_any_records)
{
    for (uint64_t seed = 1; seed <= 20; seed++) {
        wf_obs_record *r = garbage(400, seed);
        char *text = run_otlp(r, 400, NULL, 97);
        otlp_doc d;
        check_otlp(text, &d, "wf");
        otlp_doc_free(&d);
        free(text);
        free(r);
    }
}

/* ========================================================= Prometheus */

typedef struct sample {
    char *name;      /* as written */
    char *labels[8]; /* decoded "name=value" */
    int n_labels;
    char *key; /* name{labels as written} */
    double value;
} sample;

typedef struct expo {
    sample s[1024];
    int n;
} expo;

static int metric_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static const char *family_of(expo *e, const char *types[][2], int n_types, const char *name,
                             const char **type)
{
    (void)e;
    for (int i = 0; i < n_types; i++) {
        size_t l = strlen(types[i][0]);
        if (strcmp(types[i][0], name) == 0) {
            *type = types[i][1];
            return types[i][0];
        }
        if (strcmp(types[i][1], "histogram") == 0 && strncmp(name, types[i][0], l) == 0 &&
            (strcmp(name + l, "_bucket") == 0 || strcmp(name + l, "_sum") == 0 ||
             strcmp(name + l, "_count") == 0)) {
            *type = types[i][1];
            return types[i][0];
        }
    }
    return NULL;
}

/*
 * Parses the text exposition format 0.0.4 and checks what promtool would:
 * HELP/TYPE once per family and before its samples, a family's samples
 * together, valid names and label escapes, no duplicate series, histograms
 * with cumulative buckets ending in +Inf equal to _count.
 */
static void parse_expo(const char *text, expo *e)
{
    memset(e, 0, sizeof *e);
    const char *types[64][2];
    int n_types = 0;
    const char *helped[64];
    int n_helped = 0;
    const char *last_family = NULL;
    const char *done_families[64];
    int n_done = 0;
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        cr_assert_not_null(eol, "the last line ends with a newline");
        size_t len = (size_t)(eol - p);
        char *line = strndup(p, len);
        p = eol + 1;
        if (len == 0) {
            free(line);
            continue;
        }
        if (line[0] == '#') {
            char kw[8], name[256];
            if (sscanf(line, "# %7s %255s", kw, name) == 2 &&
                (strcmp(kw, "HELP") == 0 || strcmp(kw, "TYPE") == 0)) {
                cr_assert(metric_name_ok(name, strlen(name)), "bad name %s", name);
                const char **list = strcmp(kw, "HELP") == 0 ? helped : NULL;
                if (list) {
                    for (int i = 0; i < n_helped; i++)
                        cr_assert_str_neq(helped[i], name, "second HELP for %s", name);
                    helped[n_helped++] = strdup(name);
                } else {
                    char type[32];
                    cr_assert_eq(sscanf(line + 7 + strlen(name), "%31s", type), 1);
                    cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                              strcmp(type, "histogram") == 0 || strcmp(type, "summary") == 0 ||
                              strcmp(type, "untyped") == 0);
                    for (int i = 0; i < n_types; i++)
                        cr_assert_str_neq(types[i][0], name, "second TYPE for %s", name);
                    for (int i = 0; i < e->n; i++)
                        cr_assert(strncmp(e->s[i].name, name, strlen(name)) != 0,
                                  "TYPE of %s after its samples", name);
                    types[n_types][0] = strdup(name);
                    types[n_types++][1] = strdup(type);
                }
            }
            free(line);
            continue;
        }
        cr_assert(e->n < 1024);
        sample *s = &e->s[e->n++];
        size_t nl = strcspn(line, "{ ");
        cr_assert(metric_name_ok(line, nl), "bad sample name in '%s'", line);
        s->name = strndup(line, nl);
        const char *q = line + nl;
        if (*q == '{') {
            q++;
            while (*q != '}') {
                size_t ln = strcspn(q, "=");
                cr_assert(metric_name_ok(q, ln), "bad label name in '%s'", line);
                cr_assert(q[ln] == '=' && q[ln + 1] == '"', "label syntax in '%s'", line);
                char val[4096];
                size_t vn = 0;
                const char *v = q + ln + 2;
                for (; *v != '"'; v++) {
                    cr_assert(*v, "unterminated label value in '%s'", line);
                    if (*v == '\\') {
                        v++;
                        cr_assert(*v == '\\' || *v == '"' || *v == 'n', "bad escape '%s'", line);
                        val[vn++] = *v == 'n' ? '\n' : *v;
                    } else {
                        val[vn++] = *v;
                    }
                    cr_assert(vn < sizeof val - 1);
                }
                val[vn] = 0;
                for (size_t k = 0; k < vn;) {
                    size_t u = utf8_ok((const unsigned char *)val + k);
                    cr_assert(u > 0, "label value is not UTF-8 in '%s'", line);
                    k += u;
                }
                cr_assert(s->n_labels < 8);
                char *lab = malloc(ln + vn + 2);
                memcpy(lab, q, ln);
                lab[ln] = '=';
                memcpy(lab + ln + 1, val, vn + 1);
                s->labels[s->n_labels++] = lab;
                q = v + 1;
                if (*q == ',')
                    q++;
                else
                    cr_assert(*q == '}', "label list syntax in '%s'", line);
            }
            q++;
        }
        s->key = strndup(line, (size_t)(q - line));
        cr_assert(*q == ' ', "a blank before the value in '%s'", line);
        char *end;
        q++;
        if (strcmp(q, "+Inf") == 0 || strcmp(q, "-Inf") == 0 || strcmp(q, "NaN") == 0) {
            s->value = strcmp(q, "NaN") == 0 ? NAN : q[0] == '+' ? INFINITY : -INFINITY;
        } else {
            s->value = strtod(q, &end);
            cr_assert(end != q && *end == 0, "bad value in '%s'", line);
        }
        for (int i = 0; i < e->n - 1; i++)
            cr_assert_str_neq(e->s[i].key, s->key, "duplicate series %s", s->key);
        const char *type = NULL;
        const char *fam = family_of(e, types, n_types, s->name, &type);
        cr_assert_not_null(fam, "sample %s without a TYPE", s->name);
        if (fam != last_family) {
            for (int i = 0; i < n_done; i++)
                cr_assert(done_families[i] != fam, "samples of %s are not together", fam);
            if (last_family)
                done_families[n_done++] = last_family;
            last_family = fam;
        }
        free(line);
    }
    /* Histograms: per series, cumulative buckets, +Inf == _count. */
    for (int i = 0; i < e->n; i++) {
        const sample *s = &e->s[i];
        size_t l = strlen(s->name);
        if (l < 7 || strcmp(s->name + l - 7, "_bucket") != 0)
            continue;
        const char *le = NULL;
        for (int k = 0; k < s->n_labels; k++)
            if (strncmp(s->labels[k], "le=", 3) == 0)
                le = s->labels[k] + 3;
        cr_assert_not_null(le, "bucket without le");
        if (strcmp(le, "+Inf") != 0) {
            const sample *nx = &e->s[i + 1];
            cr_assert(i + 1 < e->n && nx->value >= s->value, "buckets not cumulative");
            continue;
        }
        const sample *cnt = &e->s[i + 2];
        cr_assert(i + 2 < e->n && strstr(cnt->name, "_count"), "+Inf then _sum, _count");
        cr_assert_eq(cnt->value, s->value, "+Inf bucket == _count");
    }
    for (int i = 0; i < n_types; i++) {
        free((char *)types[i][0]);
        free((char *)types[i][1]);
    }
    for (int i = 0; i < n_helped; i++)
        free((char *)helped[i]);
}

static void expo_free(expo *e)
{
    for (int i = 0; i < e->n; i++) {
        free(e->s[i].name);
        free(e->s[i].key);
        for (int k = 0; k < e->s[i].n_labels; k++)
            free(e->s[i].labels[k]);
    }
}

/* The value of the series written exactly as key, or NAN. */
static double value_of(const expo *e, const char *key)
{
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->s[i].key, key) == 0)
            return e->s[i].value;
    return NAN;
}

static int promtool_check(const char *path)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        return -1; /* not installed: the parser above is the check */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    return system(cmd);
}

static void logger_nop(wf_log_level level, const char *msg, void *user)
{
    (void)level;
    (void)msg;
    (void)user;
}

Test(observe_export, prometheus_metrics)
{
    char path[64];
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = temp_file(path);
    wf_observer o;
    cr_assert_eq(wf_exporter_prometheus(&o, &p), 0);
    wf_obs_record r[64];
    size_t n = scenario(r, 1, T0);
    feed(&o, r, n);
    o.flush(o.user);
    char *text = slurp(path);
    expo e;
    parse_expo(text, &e);
    cr_assert_eq(value_of(&e, "wf_runs_started_total{workflow=\"QuickStart\"}"), 1);
    cr_assert_eq(value_of(&e, "wf_runs_ended_total{workflow=\"QuickStart\",status=\"done\"}"), 1);
    cr_assert_eq(value_of(&e, "wf_step_invocations_total{workflow=\"QuickStart\",step=\"think\","
                              "outcome=\"failed\"}"),
                 1);
    cr_assert_eq(value_of(&e, "wf_step_invocations_total{workflow=\"QuickStart\",step=\"think\","
                              "outcome=\"ok\"}"),
                 1);
    cr_assert_eq(value_of(&e, "wf_step_invocations_total{workflow=\"QuickStart\",step=\"audit\","
                              "outcome=\"suspended\"}"),
                 1);
    cr_assert_eq(value_of(&e, "wf_step_duration_seconds_count{workflow=\"QuickStart\","
                              "step=\"think\"}"),
                 2);
    cr_assert(strstr(text, "wf_step_duration_seconds_sum{workflow=\"QuickStart\",step=\"think\"} "
                           "0.000001900\n"),
              "exact sum");
    cr_assert_eq(value_of(&e, "wf_step_duration_seconds_bucket{workflow=\"QuickStart\","
                              "step=\"start\",le=\"1e-06\"}"),
                 1, "1000 ns falls in the 1 us bucket");
    cr_assert_eq(value_of(&e, "wf_step_duration_seconds_bucket{workflow=\"QuickStart\","
                              "step=\"audit\",le=\"1e-06\"}"),
                 1);
    cr_assert_eq(value_of(&e, "wf_events_routed_total{workflow=\"QuickStart\","
                              "event_type=\"Query\",step=\"think\"}"),
                 1);
    cr_assert_eq(value_of(&e, "wf_step_queue_depth{workflow=\"QuickStart\",step=\"audit\"}"), 2);
    cr_assert_eq(value_of(&e, "wf_events_dropped_total{workflow=\"QuickStart\","
                              "event_type=\"Query\"}"),
                 1);
    cr_assert_eq(value_of(&e, "wf_events_unhandled_total{workflow=\"QuickStart\","
                              "event_type=\"Stray\"}"),
                 1);
    cr_assert_eq(value_of(&e, "wf_stream_events_dropped_total{workflow=\"QuickStart\"}"), 1);
    cr_assert_eq(value_of(&e, "wf_retries_total{workflow=\"QuickStart\",step=\"think\"}"), 1);
    cr_assert_eq(value_of(&e, "wf_steals_total"), 1);
    cr_assert_eq(value_of(&e, "wf_parks_total"), 1);
    cr_assert_eq(value_of(&e, "wf_exporter_lost_total"), 0);
    int rc = promtool_check(path);
    cr_assert(rc == -1 || rc == 0, "promtool rejects the exposition (%d)", rc);
    expo_free(&e);
    free(text);

    /* A second run, and a step whose name needs escaping: rewritten in place. */
    n = scenario(r, 2, T0 + 100000);
    for (size_t i = 0; i < n; i++)
        if (r[i].step && strcmp(r[i].step, "think") == 0)
            r[i].step = "we\"ird\\\nname";
    feed(&o, r, n);
    finish(&o);
    text = slurp(path);
    parse_expo(text, &e);
    cr_assert_eq(count_str(text, "# TYPE wf_runs_started_total counter\n"), 1, "no leftovers");
    cr_assert_eq(value_of(&e, "wf_runs_started_total{workflow=\"QuickStart\"}"), 2);
    int found = 0;
    for (int i = 0; i < e.n; i++)
        for (int k = 0; k < e.s[i].n_labels; k++)
            found += strcmp(e.s[i].labels[k], "step=we\"ird\\\nname") == 0;
    cr_assert(found > 0, "the escaped label value reads back");
    cr_assert(strstr(text, "step=\"we\\\"ird\\\\\\nname\""));
    rc = promtool_check(path);
    cr_assert(rc == -1 || rc == 0, "promtool rejects the exposition (%d)", rc);
    expo_free(&e);
    free(text);
    unlink(path);
}

Test(observe_export, prometheus_path_is_replaced_atomically)
{
    char dir[] = "/tmp/wf_prom_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/wf.prom", dir);
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    cr_assert_eq(wf_exporter_prometheus(&(wf_observer){0}, &p), WF_EINVAL, "neither out nor path");
    p.path = path;
    wf_observer o;
    cr_assert_eq(wf_exporter_prometheus(&o, &p), 0);
    wf_obs_record r[64];
    size_t n = scenario(r, 1, T0);
    feed(&o, r, n);
    o.flush(o.user);
    struct stat st1;
    cr_assert_eq(stat(path, &st1), 0);
    cr_assert_eq(st1.st_mode & 0777, 0644);
    /* A reader that opened the file keeps reading the whole first exposition. */
    FILE *reader = fopen(path, "r");
    cr_assert_not_null(reader);
    char *first = slurp(path);
    n = scenario(r, 2, T0 + 100000);
    feed(&o, r, n);
    o.flush(o.user);
    struct stat st2;
    cr_assert_eq(stat(path, &st2), 0);
    cr_assert_neq(st1.st_ino, st2.st_ino, "replaced by a rename, not rewritten in place");
    char old[1 << 16];
    size_t got = fread(old, 1, sizeof old - 1, reader);
    old[got] = 0;
    fclose(reader);
    cr_assert_str_eq(old, first, "the open file still holds the whole previous exposition");
    char *second = slurp(path);
    expo e;
    parse_expo(second, &e);
    cr_assert_eq(value_of(&e, "wf_runs_started_total{workflow=\"QuickStart\"}"), 2);
    expo_free(&e);
    int rc = promtool_check(path);
    cr_assert(rc == -1 || rc == 0, "promtool rejects the exposition (%d)", rc);
    finish(&o);
    /* No temporary file is left beside it. */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", dir);
    cr_assert_eq(system(cmd), 0, "a temporary file was left in %s", dir);
    unlink(path);
    rmdir(dir);
    free(first);
    free(second);
}

typedef struct text_reader {
    wf_observer o;
    atomic_int stop;
    int reads, bad;
} text_reader;

static void *read_text(void *arg)
{
    text_reader *t = arg;
    while (!atomic_load(&t->stop)) {
        char *text = NULL;
        if (wf_exporter_prometheus_text(&t->o, &text) != 0 || text == NULL ||
            strstr(text, "\nwf_exporter_lost_total ") == NULL)
            t->bad++;
        wf_free(text);
        t->reads++;
    }
    return NULL;
}

Test(observe_export, prometheus_text_in_memory)
{
    wf_observer o;
    char *text = NULL;
    cr_assert_eq(wf_exporter_prometheus(&o, NULL), 0, "memory only");
    cr_assert_eq(wf_exporter_prometheus_text(&o, &text), 0);
    cr_assert(strstr(text, "wf_runs_started_total") && strstr(text, "wf_steals_total 0\n"),
              "before any record, every family at 0:\n%s", text);
    wf_free(text);
    wf_observer other;
    cr_assert_eq(wf_exporter_log(&other, logger_nop, NULL), 0);
    cr_assert_eq(wf_exporter_prometheus_text(&other, &text), WF_EINVAL,
                 "not a Prometheus exporter");
    cr_assert_null(text);
    finish(&other);
    cr_assert_eq(wf_exporter_prometheus_text(NULL, &text), WF_EINVAL);

    /* Another thread reads the text while records arrive and flushes publish it. */
    text_reader t = {.o = o};
    atomic_init(&t.stop, 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, read_text, &t), 0);
    wf_obs_record r[64];
    for (int run = 1; run <= 50; run++) {
        size_t n = scenario(r, (uint64_t)run, T0 + run * 100000);
        feed(&o, r, n);
        o.flush(o.user);
    }
    atomic_store(&t.stop, 1);
    pthread_join(th, NULL);
    cr_assert_eq(t.bad, 0, "%d of %d reads were not a whole exposition", t.bad, t.reads);
    cr_assert_eq(wf_exporter_prometheus_text(&o, &text), 0);
    expo e;
    parse_expo(text, &e);
    cr_assert_eq(value_of(&e, "wf_runs_started_total{workflow=\"QuickStart\"}"), 50);
    expo_free(&e);
    /* The same text a file gets. */
    char path[64];
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = temp_file(path);
    wf_observer f;
    cr_assert_eq(wf_exporter_prometheus(&f, &p), 0);
    for (int run = 1; run <= 50; run++) {
        size_t n = scenario(r, (uint64_t)run, T0 + run * 100000);
        feed(&f, r, n);
    }
    f.flush(f.user);
    char *file = slurp(path);
    cr_assert_str_eq(file, text);
    free(file);
    finish(&f);
    unlink(path);
    wf_free(text);
    finish(&o);
}

Test(observe_export, prometheus_valid_for_any_records)
{
    for (uint64_t seed = 1; seed <= 20; seed++) {
        char path[64];
        wf_exporter_params p;
        wf_exporter_params_init(&p);
        p.out = temp_file(path);
        wf_observer o;
        cr_assert_eq(wf_exporter_prometheus(&o, &p), 0);
        wf_obs_record *r = garbage(400, seed);
        feed(&o, r, 200);
        o.flush(o.user);
        feed(&o, r + 200, 200);
        finish(&o);
        char *text = slurp(path);
        expo e;
        parse_expo(text, &e);
        expo_free(&e);
        free(text);
        free(r);
        unlink(path);
    }
}

/* ========================================================== OTLP/HTTP */

/* OTLP protobuf requests: an in-memory sender keeps them. */
typedef struct pb_sink {
    char *body[16];
    size_t len[16];
    uint32_t spans[16];
    int n, refuse, freed;
} pb_sink;

static int pb_send(const void *body, size_t len, uint32_t n_spans, void *user)
{
    pb_sink *k = user;
    if (k->refuse)
        return WF_EAGAIN;
    cr_assert(k->n < 16);
    k->body[k->n] = malloc(len);
    memcpy(k->body[k->n], body, len);
    k->len[k->n] = len;
    k->spans[k->n++] = n_spans;
    return 0;
}

static void pb_sink_free(void *user)
{
    ((pb_sink *)user)->freed++;
}

/* A protobuf field read from [*p, end): 1, 0 at the end, -1 when malformed. */
typedef struct pbf {
    unsigned field, wt;
    uint64_t v;         /* varint, fixed64 */
    const uint8_t *buf; /* length-delimited */
    size_t len;
} pbf;

static int pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

static int pb_next(const uint8_t **p, const uint8_t *end, pbf *f)
{
    if (*p == end)
        return 0;
    uint64_t key;
    if (pb_varint(p, end, &key) < 0)
        return -1;
    f->field = (unsigned)(key >> 3);
    f->wt = (unsigned)(key & 7);
    if (f->wt == 0)
        return pb_varint(p, end, &f->v) < 0 ? -1 : 1;
    if (f->wt == 1) {
        if (end - *p < 8)
            return -1;
        f->v = 0;
        for (int i = 0; i < 8; i++)
            f->v |= (uint64_t)(*p)[i] << (8 * i);
        *p += 8;
        return 1;
    }
    if (f->wt == 2) {
        uint64_t n;
        if (pb_varint(p, end, &n) < 0 || n > (uint64_t)(end - *p))
            return -1;
        f->buf = *p;
        f->len = (size_t)n;
        *p += n;
        return 1;
    }
    return -1;
}

/* The only length-delimited field number `field` of message m (asserts one). */
static pbf pb_one(const uint8_t *m, size_t n, unsigned field)
{
    const uint8_t *p = m, *end = m + n;
    pbf f, found = {0};
    int count = 0, rc;
    while ((rc = pb_next(&p, end, &f)) == 1)
        if (f.field == field) {
            found = f;
            count++;
        }
    cr_assert_eq(rc, 0, "malformed protobuf");
    cr_assert_eq(count, 1, "field %u appears %d times", field, count);
    return found;
}

typedef struct pb_span {
    char trace[33], span[17], parent[17];
    char name[64];
    uint64_t start, end;
    int status_code, n_events;
} pb_span;

static void hexify(char *out, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* Walks an ExportTraceServiceRequest: service name, scope, spans. */
static int pb_request(const char *body, size_t len, const char *service, pb_span *out, int max)
{
    pbf rs = pb_one((const uint8_t *)body, len, 1);
    pbf res = pb_one(rs.buf, rs.len, 1);
    /* The resource's attributes: service.name first, then the others. */
    const uint8_t *ra = res.buf, *rend = res.buf + res.len;
    pbf kv;
    int n_res = 0;
    while (pb_next(&ra, rend, &kv) == 1) {
        cr_assert_eq(kv.field, 1);
        pbf key = pb_one(kv.buf, kv.len, 1), val = pb_one(kv.buf, kv.len, 2);
        if (n_res++ == 0) {
            cr_assert(key.len == 12 && memcmp(key.buf, "service.name", 12) == 0);
            pbf sv = pb_one(val.buf, val.len, 1);
            cr_assert(sv.len == strlen(service) && memcmp(sv.buf, service, sv.len) == 0);
        }
    }
    cr_assert(n_res >= 3, "service.name, telemetry.sdk.name and .version at least");
    pbf ss = pb_one(rs.buf, rs.len, 2);
    pbf scope = pb_one(ss.buf, ss.len, 1);
    pbf sname = pb_one(scope.buf, scope.len, 1);
    cr_assert(sname.len == 2 && memcmp(sname.buf, "wf", 2) == 0);
    const uint8_t *p = ss.buf, *end = ss.buf + ss.len;
    pbf f;
    int n = 0;
    while (pb_next(&p, end, &f) == 1) {
        if (f.field != 2)
            continue;
        cr_assert(n < max);
        pb_span *sp = &out[n++];
        memset(sp, 0, sizeof *sp);
        const uint8_t *q = f.buf, *qe = f.buf + f.len;
        pbf g;
        int rc;
        while ((rc = pb_next(&q, qe, &g)) == 1) {
            switch (g.field) {
            case 1:
                cr_assert_eq(g.len, 16, "trace id of 16 bytes");
                hexify(sp->trace, g.buf, 16);
                break;
            case 2:
                cr_assert_eq(g.len, 8, "span id of 8 bytes");
                hexify(sp->span, g.buf, 8);
                break;
            case 4:
                cr_assert_eq(g.len, 8);
                hexify(sp->parent, g.buf, 8);
                break;
            case 5:
                cr_assert(g.len < sizeof sp->name);
                memcpy(sp->name, g.buf, g.len);
                break;
            case 6:
                cr_assert_eq(g.v, 1, "SPAN_KIND_INTERNAL");
                break;
            case 7:
                cr_assert_eq(g.wt, 1u, "fixed64");
                sp->start = g.v;
                break;
            case 8:
                cr_assert_eq(g.wt, 1u, "fixed64");
                sp->end = g.v;
                break;
            case 11:
                sp->n_events++;
                break;
            case 15: {
                const uint8_t *r = g.buf, *re = g.buf + g.len;
                pbf h;
                while (pb_next(&r, re, &h) == 1)
                    if (h.field == 3) /* Status.code */
                        sp->status_code = (int)h.v;
                break;
            }
            default:
                break;
            }
        }
        cr_assert_eq(rc, 0, "malformed span");
    }
    return n;
}

Test(observe_export, otlp_protobuf_to_a_sender)
{
    wf_observer o;
    pb_sink k = {.n = 0};
    wf_otlp_sender snd = {pb_send, pb_sink_free, &k};
    wf_otlp_sender nosend = {NULL, pb_sink_free, &k};
    cr_assert_eq(wf_exporter_otlp_proto(&o, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_exporter_otlp_proto(&o, &nosend, NULL), WF_EINVAL);
    cr_assert_eq(k.freed, 1, "user_free also when refused");
    k.freed = 0;

    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.service_name = "svc";
    p.service_version = "1.2.3";
    cr_assert_eq(wf_exporter_otlp_proto(&o, &snd, &p), 0);
    wf_obs_record r[64];
    int64_t t0 = 9007199254740993ll;
    size_t n = scenario(r, 1, t0);
    feed(&o, r, n);
    o.flush(o.user);
    cr_assert_eq(k.n, 1, "one request per flush");
    cr_assert_eq(k.spans[0], 5);
    char *body = k.body[0];
    size_t len = k.len[0];

    pb_span sp[8];
    int ns = pb_request(body, len, "svc", sp, 8);
    cr_assert_eq(ns, 5, "the run and four invocations");
    const pb_span *run = &sp[4];
    cr_assert_str_eq(run->name, "QuickStart");
    cr_assert_str_eq(run->parent, "", "the run is the root");
    cr_assert_eq(run->n_events, 3);
    uint64_t off = (uint64_t)wf_obs_clock_offset_ns();
    cr_assert_eq(run->start, (uint64_t)t0 + off, "exact 64-bit times");
    cr_assert_eq(run->end, (uint64_t)t0 + 10000 + off);
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(sp[i].trace, run->trace);
        cr_assert_str_eq(sp[i].parent, run->span);
    }
    cr_assert_str_eq(sp[2].name, "think");
    cr_assert_eq(sp[2].status_code, 2, "the failed attempt");
    cr_assert_eq(sp[2].start, (uint64_t)t0 + 2500 + off);
    /* The standard attributes are in the bytes. */
    cr_assert(memmem(body, len, "service.version", 15) && memmem(body, len, "1.2.3", 5));
    cr_assert(memmem(body, len, "error.type", 10) && memmem(body, len, "WF_ESTEP", 8));

    /* protoc reads it too, where it is installed. */
    if (system("command -v protoc >/dev/null 2>&1") == 0) {
        char path[64];
        FILE *f = temp_file(path);
        cr_assert_eq(fwrite(body, 1, len, f), len);
        fclose(f);
        char cmd[256], out[80];
        snprintf(cmd, sizeof cmd, "protoc --decode_raw < %s > %s.txt", path, path);
        cr_assert_eq(system(cmd), 0, "protoc --decode_raw rejects the request");
        snprintf(out, sizeof out, "%s.txt", path);
        char *text = slurp(out);
        cr_assert(strstr(text, "\"service.name\"") && strstr(text, "\"QuickStart\""), "%s", text);
        free(text);
        unlink(path);
        unlink(out);
    }
    o.user_free(o.user);
    cr_assert_eq(k.freed, 1);
    for (int i = 0; i < k.n; i++)
        free(k.body[i]);

    /* A sender that refuses: no hang, user_free once. */
    pb_sink k2 = {.refuse = 1};
    wf_otlp_sender snd2 = {pb_send, pb_sink_free, &k2};
    cr_assert_eq(wf_exporter_otlp_proto(&o, &snd2, NULL), 0);
    feed(&o, r, n);
    finish(&o);
    cr_assert_eq(k2.n, 0);
    cr_assert_eq(k2.freed, 1);
}

/* ================================================================ log */

typedef struct logged {
    char *line[64];
    wf_log_level level[64];
    int n;
} logged;

static void logger(wf_log_level level, const char *msg, void *user)
{
    logged *l = user;
    cr_assert(l->n < 64);
    l->level[l->n] = level;
    l->line[l->n++] = strdup(msg);
}

Test(observe_export, log_lines)
{
    logged l = {.n = 0};
    wf_observer o;
    cr_assert_eq(wf_exporter_log(&o, logger, &l), 0);
    wf_obs_record r[64];
    size_t n = scenario(r, 1, T0);
    feed(&o, r, n);
    finish(&o);
    const char *want[] = {
        "step start of run 1 (QuickStart): input StartEvent, attempt 1: ok in 1 us",
        "step audit of run 1 (QuickStart): input Query, attempt 1: suspended after 200 ns",
        "step think of run 1 (QuickStart): input Query, attempt 1: failed in 1 us: WF_ESTEP: "
        "boom \"quoted\" second line",
        "retry: step think of run 1 (QuickStart): input Query, attempt 1 failed (WF_ESTEP: "
        "boom); next attempt in 5 ms",
        "run 1 (QuickStart): event Stray unhandled: no step accepts it",
        "step think of run 1 (QuickStart): input Query, attempt 2: ok in 900 ns",
        "run 1 (QuickStart): event Query for step audit dropped: the run had ended",
        "run 1 (QuickStart) done in 10 us",
    };
    wf_log_level levels[] = {WF_LOG_INFO, WF_LOG_INFO, WF_LOG_WARN, WF_LOG_WARN,
                             WF_LOG_WARN, WF_LOG_INFO, WF_LOG_INFO, WF_LOG_INFO};
    cr_assert_eq(l.n, 8, "%d lines", l.n);
    for (int i = 0; i < 8; i++) {
        cr_assert_str_eq(l.line[i], want[i]);
        cr_assert_eq(l.level[i], levels[i], "level of line %d", i);
    }
    for (int i = 0; i < l.n; i++)
        free(l.line[i]);

    /* Failures of runs, with the failed step; any records give one line each. */
    l.n = 0;
    cr_assert_eq(wf_exporter_log(&o, logger, &l), 0);
    wf_obs_record f = {.kind = WF_OBS_RUN_END,
                       .run_id = 7,
                       .status = WF_RUN_FAILED,
                       .error = WF_ESTEP,
                       .step = "think",
                       .dur_ns = 2500000};
    feed(&o, &f, 1);
    cr_assert_str_eq(l.line[0], "run 7 failed after 2.5 ms: step think: WF_ESTEP: a step failed");
    cr_assert_eq(l.level[0], WF_LOG_WARN);
    free(l.line[0]);
    l.n = 0;
    wf_obs_record *g = garbage(400, 3);
    for (int i = 0; i < 400; i++) {
        feed(&o, &g[i], 1);
        for (int k = 0; k < l.n; k++) {
            cr_assert_null(strchr(l.line[k], '\n'), "one line");
            cr_assert(strlen(l.line[k]) < 1024);
            free(l.line[k]);
        }
        l.n = 0;
    }
    free(g);
    finish(&o);
}

/* ========================================================== execution */

static int nop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    return 0;
}

static wf_workflow *quickstart(const char *name)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, name, NULL), 0);
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    const wf_event_type *q, *unused;
    cr_assert_eq(wf_workflow_event_type(wf, "Query", NULL, &q), 0);
    cr_assert_eq(wf_workflow_event_type(wf, "Unused", NULL, &unused), 0);
    struct {
        const char *name;
        const wf_event_type *acc, *emit;
    } steps[] = {
        {"start", start, q}, {"think", q, stop}, {"audit", q, stop}, {"never", unused, stop}};
    for (int i = 0; i < 4; i++) {
        wf_step_params p;
        wf_step_params_init(&p);
        p.accepts = &steps[i].acc;
        p.n_accepts = 1;
        p.emits = &steps[i].emit;
        p.n_emits = 1;
        cr_assert_eq(wf_workflow_add_step(wf, steps[i].name, nop, &p, NULL), 0);
    }
    return wf;
}

Test(observe_export, execution_draws_what_the_run_went_through)
{
    wf_workflow *wf = quickstart("QuickStart");
    wf_execution *x;
    wf_observer o;
    cr_assert_eq(wf_exporter_execution(&o, &x), 0);
    char *out = NULL;
    cr_assert_eq(wf_execution_draw(x, wf, 0, 0, &out), WF_ENOTFOUND, "nothing ended yet");
    cr_assert_null(out);
    wf_obs_record r[64];
    size_t n = scenario(r, 1, T0);
    feed(&o, r, n);

    cr_assert_eq(wf_execution_draw(x, wf, 0, 0, &out), 0);
    cr_assert_eq(count_str(out, "shape=box"), 3, "three steps ran (never did not)\n%s", out);
    cr_assert_null(strstr(out, "never"));
    cr_assert_eq(count_str(out, "shape=ellipse"), 3, "StartEvent, StopEvent, Query\n%s", out);
    cr_assert_null(strstr(out, "Unused"));
    cr_assert(strstr(out, "step_1 [label=\"think (2, 1 failed)\", shape=box") != NULL, "%s", out);
    cr_assert(strstr(out, "step_0 [label=\"start (1)\"") != NULL, "%s", out);
    cr_assert(strstr(out, "step_2 [label=\"audit (1)\"") != NULL, "%s", out);
    cr_assert(strstr(out, "label=\"run 1 (done)\"") != NULL);
    /* routed: StartEvent->start, Query->think, Query->audit; emitted: start->Query, think->Stop */
    cr_assert_eq(count_str(out, " -> "), 5, "%s", out);
    cr_assert(strstr(out, "event_0 -> step_0 [label=\"1\"]") != NULL, "%s", out);
    cr_assert(strstr(out, "-> step_1 [label=\"1\"]") != NULL);
    cr_assert(strstr(out, "step_0 -> event_") != NULL);
    cr_assert(strstr(out, "step_1 -> event_1 [label=\"1\"]") != NULL, "%s", out);
    cr_assert(strstr(out, "fillcolor=\"#90EE90\"") && strstr(out, "fillcolor=\"#FFA07A\""));
    wf_free(out);

    cr_assert_eq(wf_execution_draw(x, wf, 1, 1, &out), 0);
    cr_assert(strncmp(out, "flowchart TD\n", 13) == 0);
    cr_assert_eq(count_str(out, ":::step"), 3);
    cr_assert_eq(count_str(out, " -->|"), 5, "%s", out);
    cr_assert(strstr(out, "    event_0 -->|1| step_0\n") != NULL, "%s", out);
    cr_assert(strstr(out, "step_1[\"think (2, 1 failed)\"]:::step") != NULL, "%s", out);
    wf_free(out);

    /* Another workflow's drawing does not match this run. */
    wf_workflow *other = quickstart("Other");
    cr_assert_eq(wf_execution_draw(x, other, 1, 0, &out), WF_EMISMATCH);
    cr_assert_eq(wf_execution_draw(x, wf, 77, 0, &out), WF_ENOTFOUND);
    cr_assert_eq(wf_execution_draw(NULL, wf, 1, 0, &out), WF_EINVAL);
    wf_workflow_free(other);

    /* The 64 most recent runs are kept. */
    for (uint64_t id = 2; id <= 65; id++) {
        wf_obs_record s[] = {
            {.kind = WF_OBS_STEP_START,
             .run_id = id,
             .workflow = "QuickStart",
             .step = "start",
             .event_type = "StartEvent",
             .attempt = 1},
            {.kind = WF_OBS_RUN_END,
             .run_id = id,
             .workflow = "QuickStart",
             .status = WF_RUN_CANCELLED},
        };
        feed(&o, s, 2);
    }
    cr_assert_eq(wf_execution_draw(x, wf, 1, 0, &out), WF_ENOTFOUND, "run 1 was the oldest");
    cr_assert_eq(wf_execution_draw(x, wf, 2, 0, &out), 0);
    wf_free(out);
    cr_assert_eq(wf_execution_draw(x, wf, 0, 0, &out), 0);
    cr_assert(strstr(out, "label=\"run 65 (cancelled)\"") != NULL);
    wf_free(out);

    /* The caller's reference outlives the observer's. */
    finish(&o);
    cr_assert_eq(wf_execution_draw(x, wf, 65, 1, &out), 0);
    wf_free(out);
    wf_execution_release(x);
    wf_workflow_free(wf);
}

typedef struct drawer {
    wf_execution *x;
    wf_workflow *wf;
    atomic_int stop;
    int drawn;
} drawer;

static void *draw_loop(void *arg)
{
    drawer *d = arg;
    while (!atomic_load(&d->stop)) {
        char *out = NULL;
        int rc = wf_execution_draw(d->x, d->wf, 0, d->drawn & 1, &out);
        if (rc == 0)
            d->drawn++;
        else if (rc != WF_ENOTFOUND)
            return (void *)1;
        wf_free(out);
    }
    return NULL;
}

Test(observe_export, execution_draw_while_records_arrive)
{
    /* The exporter thread records while a user thread draws (races show under TSan). */
    drawer d = {.wf = quickstart("QuickStart")};
    wf_observer o;
    cr_assert_eq(wf_exporter_execution(&o, &d.x), 0);
    atomic_init(&d.stop, 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, draw_loop, &d), 0);
    wf_obs_record r[64];
    for (uint64_t id = 1; id <= 300; id++) {
        size_t n = scenario(r, id, T0);
        feed(&o, r, n);
    }
    atomic_store(&d.stop, 1);
    void *ret;
    pthread_join(th, &ret);
    cr_assert_null(ret, "a drawing failed");
    finish(&o);
    wf_execution_release(d.x);
    wf_workflow_free(d.wf);
}

Test(observe_export, execution_any_records)
{
    wf_workflow *wf = quickstart("QuickStart");
    wf_execution *x;
    wf_observer o;
    cr_assert_eq(wf_exporter_execution(&o, &x), 0);
    wf_obs_record *g = garbage(2000, 5);
    feed(&o, g, 2000);
    for (uint64_t id = 0; id < 6; id++) {
        char *out = NULL;
        int rc = wf_execution_draw(x, wf, id, (int)(id & 1), &out);
        cr_assert(rc == 0 || rc == WF_ENOTFOUND || rc == WF_EMISMATCH, "rc %d", rc);
        wf_free(out);
    }
    free(g);
    finish(&o);
    wf_execution_release(x);
    wf_workflow_free(wf);
}

/* ====================================================== out of memory */

static atomic_long alloc_budget; /* allocations left before they fail; < 0: unlimited */
static atomic_long alloc_failed;

static void *lim_malloc(size_t n, void *u)
{
    if (atomic_load(&alloc_budget) >= 0 && atomic_fetch_sub(&alloc_budget, 1) <= 0) {
        atomic_fetch_add(&alloc_failed, 1);
        return NULL;
    }
    return malloc(n);
}

static void *lim_realloc(void *p, size_t n, void *u)
{
    if (atomic_load(&alloc_budget) >= 0 && atomic_fetch_sub(&alloc_budget, 1) <= 0) {
        atomic_fetch_add(&alloc_failed, 1);
        return NULL;
    }
    return realloc(p, n);
}

static void lim_free(void *p, void *u)
{
    free(p);
}

Test(observe_export, out_of_memory_drops_but_output_stays_valid)
{
    wf_alloc_hooks h = {lim_malloc, lim_realloc, lim_free, NULL};
    atomic_store(&alloc_budget, -1);
    if (wf_set_alloc_hooks(&h) != 0)
        cr_skip_test("allocation hooks already in use (in-process harness)");
    wf_obs_record r[128];
    size_t n = scenario(r, 1, T0);
    n += scenario(r + n, 2, T0 + 20000);
    long failures = 0;
    for (long budget = 0; budget < 120; budget++) {
        for (int which = 0; which < 4; which++) {
            char path[64];
            wf_exporter_params p;
            wf_exporter_params_init(&p);
            p.out = temp_file(path);
            wf_observer o;
            wf_alloc_trim(); /* no cached blocks: every allocation meets the budget */
            atomic_store(&alloc_failed, 0);
            atomic_store(&alloc_budget, budget);
            int rc;
            wf_execution *x = NULL;
            switch (which) {
            case 0:
                rc = wf_exporter_perfetto(&o, &p);
                break;
            case 1:
                rc = wf_exporter_otlp_json(&o, &p);
                break;
            case 2:
                rc = wf_exporter_prometheus(&o, &p);
                break;
            default:
                fclose(p.out);
                rc = wf_exporter_execution(&o, &x);
                break;
            }
            if (rc == 0) {
                feed(&o, r, n);
                finish(&o);
            } else {
                cr_assert_eq(rc, WF_ENOMEM);
            }
            failures += atomic_load(&alloc_failed);
            atomic_store(&alloc_budget, -1);
            if (x) {
                wf_workflow *wf = quickstart("QuickStart");
                char *out = NULL;
                rc = wf_execution_draw(x, wf, 0, 0, &out);
                cr_assert(rc == 0 || rc == WF_ENOTFOUND, "draw after oom: %d", rc);
                wf_free(out);
                wf_execution_release(x);
                wf_workflow_free(wf);
            }
            char *text = slurp(path);
            if (which == 0 && rc == 0) {
                trace t;
                check_trace(text, &t);
                jfree(&t.doc);
            } else if (which == 1) {
                otlp_doc d;
                check_otlp(text, &d, "wf");
                otlp_doc_free(&d);
            } else if (which == 2) {
                expo e;
                parse_expo(text, &e);
                expo_free(&e);
            }
            free(text);
            unlink(path);
        }
    }
    cr_assert(failures > 20, "the budget made allocations fail (%ld)", failures);
}

/* ============================================ end to end, a real executor */

static const wf_event_type *E2E_ITEM;

static int e2e_fan(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    for (int i = 0; i < 20; i++) {
        wf_event *e;
        cr_assert_eq(wf_event_new1(&e, E2E_ITEM, "v", wf_value_int(i)), 0);
        cr_assert_eq(wf_ctx_send_event(ctx, e, NULL), 0);
    }
    return 0;
}

static const wf_event_type *e2e_types[20]; /* Item x 20: the set collected */

static int e2e_sum(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *got[20];
    int rc = wf_ctx_collect_events(ctx, in, e2e_types, 20, NULL, got);
    if (rc == WF_EAGAIN)
        return 0;
    cr_assert_eq(rc, 0);
    int64_t n = 0;
    for (int i = 0; i < 20; i++) {
        n += got[i] != NULL;
        wf_event_release(got[i]);
    }
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(n));
}

Test(observe_export, end_to_end_with_an_executor)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "Fan", NULL), 0);
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    cr_assert_eq(wf_workflow_event_type(wf, "Item", NULL, &E2E_ITEM), 0);
    for (int i = 0; i < 20; i++)
        e2e_types[i] = E2E_ITEM;
    wf_step_params sp;
    wf_step_params_init(&sp);
    sp.accepts = &start;
    sp.n_accepts = 1;
    sp.emits = &E2E_ITEM;
    sp.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "fan", e2e_fan, &sp, NULL), 0);
    sp.accepts = &E2E_ITEM;
    sp.emits = &stop;
    sp.num_workers = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "sum", e2e_sum, &sp, NULL), 0);

    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    char paths[3][64];
    uint32_t ids[3];
    for (int k = 0; k < 3; k++) {
        wf_exporter_params p;
        wf_exporter_params_init(&p);
        p.out = temp_file(paths[k]);
        wf_observer o;
        int rc = k == 0   ? wf_exporter_perfetto(&o, &p)
                 : k == 1 ? wf_exporter_otlp_json(&o, &p)
                          : wf_exporter_prometheus(&o, &p);
        cr_assert_eq(rc, 0);
        cr_assert_eq(wf_executor_observe(ex, &o, &ids[k]), 0);
    }
    for (int i = 0; i < 5; i++) {
        wf_event *s;
        cr_assert_eq(wf_event_new(&s, start, 0), 0);
        wf_event *res = NULL;
        cr_assert_eq(wf_run(ex, wf, NULL, s, -1, &res), 0);
        int64_t n = 0;
        cr_assert_eq(wf_value_get_int(wf_event_result(res), &n), 0);
        cr_assert_eq(n, 20);
        wf_event_release(res);
    }
    wf_obs_stats st;
    cr_assert_eq(wf_executor_observe_flush(ex), 0);
    wf_executor_observe_stats(ex, &st);
    for (int k = 0; k < 3; k++) /* the files are complete once removed */
        cr_assert_eq(wf_executor_unobserve(ex, ids[k]), 0);

    char *text = slurp(paths[0]);
    trace t;
    check_trace(text, &t); /* JSON; every begin has its end; flows pair up */
    /* 5 runs x (1 fan + 20 sum) invocations; 5 x 21 routed events as arrows, unless dropped */
    if (st.dropped == 0) {
        size_t slices = 0;
        for (size_t i = 0; i < t.doc.n; i++)
            slices += jis(&t.doc.items[i], "ph", "X") && jis(&t.doc.items[i], "cat", "step");
        cr_assert_eq(slices, 5 * 21, "one slice per invocation");
        /* from the sending step's slice (or the routing slice just after it) to sum */
        cr_assert_eq(arrows(&t, "fan", "sum", "Item") + arrows(&t, "route", "sum", "Item"), 5 * 20,
                     "an arrow fan -> sum for every item");
    }
    jfree(&t.doc);
    free(text);

    text = slurp(paths[1]);
    otlp_doc d;
    check_otlp(text, &d, "wf");
    if (st.dropped == 0) {
        size_t runs = 0;
        for (int k = 0; span_named(&d, "Fan", k); k++)
            runs++;
        cr_assert_eq(runs, 5, "a root span per run");
    }
    otlp_doc_free(&d);
    free(text);

    text = slurp(paths[2]);
    expo e;
    parse_expo(text, &e);
    cr_assert_eq(value_of(&e, "wf_runs_started_total{workflow=\"Fan\"}"), 5);
    cr_assert_eq(value_of(&e, "wf_runs_ended_total{workflow=\"Fan\",status=\"done\"}"), 5);
    expo_free(&e);
    cr_assert_eq(promtool_check(paths[2]) > 0, 0, "promtool accepts it (when installed)");
    free(text);
    for (int k = 0; k < 3; k++)
        unlink(paths[k]);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* ============================================== child workflows' spans */

/*
 * A child run (wf_ctx_run_child) joins its parent's trace: its run span's
 * parent is the span of the parent's step invocation that started it.
 * step_ended_first: the parent step's STEP_END comes before the child's
 * RUN_START (a step that starts a child returns at once; its start and end
 * may reach the exporter as one record).
 */
static void child_link_records(int step_ended_first)
{
    wf_obs_record r[16];
    size_t n = 0;
#define C(...) (r[n++] = (wf_obs_record){.workers = 2, __VA_ARGS__})
    C(.kind = WF_OBS_RUN_START, .run_id = 1, .workflow = "Parent", .thread = WF_OBS_OUTSIDE,
      .ts_ns = T0);
    C(.kind = WF_OBS_STEP_START, .run_id = 1, .workflow = "Parent", .thread = 0, .ts_ns = T0 + 10,
      .step = "spawn", .event_type = "StartEvent", .event_id = 7, .attempt = 1);
    if (step_ended_first)
        C(.kind = WF_OBS_STEP_END, .run_id = 1, .workflow = "Parent", .thread = 0, .ts_ns = T0 + 30,
          .step = "spawn", .event_type = "StartEvent", .event_id = 7, .attempt = 1, .dur_ns = 20,
          .error = WF_PENDING);
    C(.kind = WF_OBS_RUN_START, .run_id = 2, .workflow = "Child", .thread = 0, .ts_ns = T0 + 20,
      .value = 1, .event_id = 7);
    if (!step_ended_first)
        C(.kind = WF_OBS_STEP_END, .run_id = 1, .workflow = "Parent", .thread = 0, .ts_ns = T0 + 30,
          .step = "spawn", .event_type = "StartEvent", .event_id = 7, .attempt = 1, .dur_ns = 20,
          .error = WF_PENDING);
    C(.kind = WF_OBS_STEP_START, .run_id = 2, .workflow = "Child", .thread = 1, .ts_ns = T0 + 40,
      .step = "work", .event_type = "StartEvent", .event_id = 3, .attempt = 1);
    C(.kind = WF_OBS_STEP_END, .run_id = 2, .workflow = "Child", .thread = 1, .ts_ns = T0 + 50,
      .step = "work", .event_type = "StartEvent", .event_id = 3, .attempt = 1, .dur_ns = 10);
    C(.kind = WF_OBS_RUN_END, .run_id = 2, .workflow = "Child", .thread = 1, .ts_ns = T0 + 60,
      .status = WF_RUN_DONE, .dur_ns = 40);
    /* another top-level run: a trace of its own */
    C(.kind = WF_OBS_RUN_START, .run_id = 3, .workflow = "Other", .thread = 0, .ts_ns = T0 + 61);
    C(.kind = WF_OBS_RUN_END, .run_id = 3, .workflow = "Other", .thread = 0, .ts_ns = T0 + 62,
      .status = WF_RUN_DONE, .dur_ns = 1);
    C(.kind = WF_OBS_RUN_END, .run_id = 1, .workflow = "Parent", .thread = 1, .ts_ns = T0 + 70,
      .status = WF_RUN_DONE, .dur_ns = 70);
#undef C
    char *text = run_otlp(r, n, NULL, 0);
    otlp_doc d;
    check_otlp(text, &d, "wf");
    cr_assert_eq(d.n_spans, 5);
    const jv *parent = span_named(&d, "Parent", 0), *spawn = span_named(&d, "spawn", 0);
    const jv *child = span_named(&d, "Child", 0), *work = span_named(&d, "work", 0);
    const jv *other = span_named(&d, "Other", 0);
    cr_assert(parent && spawn && child && work && other);
    cr_assert_str_eq(jstr(child, "traceId"), jstr(parent, "traceId"), "the parent's trace");
    cr_assert_str_eq(jstr(work, "traceId"), jstr(parent, "traceId"));
    cr_assert_str_eq(jstr(child, "parentSpanId"), jstr(spawn, "spanId"),
                     "under the parent step's invocation");
    cr_assert_str_eq(jstr(work, "parentSpanId"), jstr(child, "spanId"));
    cr_assert_str_eq(jstr(spawn, "parentSpanId"), jstr(parent, "spanId"));
    cr_assert_str_neq(jstr(other, "traceId"), jstr(parent, "traceId"));
    cr_assert_null(jget(other, "parentSpanId"));
    otlp_doc_free(&d);
    free(text);

    /* trace.json: the child's run names its parent's run and the step slice's event_id */
    text = run_perfetto(r, n);
    trace t;
    check_trace(text, &t);
    const jv *b = find_ev(&t, "b", "Child", -1, 0);
    const jv *x = find_ev(&t, "X", "spawn", -1, 0);
    cr_assert(b && x);
    cr_assert_str_eq(jstr(jget(b, "args"), "parent_run_id"), "1");
    cr_assert_str_eq(jstr(jget(b, "args"), "parent_event_id"), jstr(jget(x, "args"), "event_id"));
    cr_assert_null(jget(jget(find_ev(&t, "b", "Parent", -1, 0), "args"), "parent_run_id"));
    jfree(&t.doc);
    free(text);
}

Test(observe_export, otlp_child_run_under_its_parent_step)
{
    child_link_records(0);
    child_link_records(1);
}

/* ---- the same through an executor: a parent step that runs a child ---- */

static wf_workflow *g_obs_child;

static int obs_spawn(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_event *s;
    int rc = wf_event_new(&s, wf_workflow_builtin(g_obs_child, WF_START_EVENT), 0);
    if (rc < 0)
        return rc;
    return wf_ctx_run_child(ctx, g_obs_child, s, NULL);
}

static int obs_work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    /* the parent shares the registry: this StopEvent ends it too */
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(1));
}

static wf_workflow *one_step(const char *name, wf_registry *reg, const char *step, wf_step_fn fn)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, name, reg), 0);
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &start;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, step, fn, &p, NULL), 0);
    return wf;
}

Test(observe_export, executor_child_spans_link_to_the_parent_step)
{
    g_obs_child = one_step("ObsChild", NULL, "work", obs_work);
    wf_workflow *wf = one_step("ObsParent", wf_workflow_registry(g_obs_child), "spawn", obs_spawn);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2;
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, &ep), 0);
    char opath[64], ppath[64];
    wf_exporter_params p;
    wf_exporter_params_init(&p);
    p.out = temp_file(opath);
    wf_observer otlp, perf;
    cr_assert_eq(wf_exporter_otlp_json(&otlp, &p), 0);
    wf_exporter_params_init(&p);
    p.out = temp_file(ppath);
    cr_assert_eq(wf_exporter_perfetto(&perf, &p), 0);
    uint32_t oid, pid;
    cr_assert_eq(wf_executor_observe(ex, &otlp, &oid), 0);
    cr_assert_eq(wf_executor_observe(ex, &perf, &pid), 0);
    enum { RUNS = 20 };
    for (int i = 0; i < RUNS; i++) {
        wf_event *s, *res = NULL;
        cr_assert_eq(wf_event_new(&s, wf_workflow_builtin(wf, WF_START_EVENT), 0), 0);
        cr_assert_eq(wf_run(ex, wf, NULL, s, -1, &res), 0);
        wf_event_release(res);
    }
    cr_assert_eq(wf_executor_unobserve(ex, oid), 0);
    cr_assert_eq(wf_executor_unobserve(ex, pid), 0);
    wf_executor_free(ex);

    char *text = slurp(opath);
    otlp_doc d;
    check_otlp(text, &d, "wf");
    cr_assert_eq(d.n_spans, 4 * RUNS, "per run: the parent's, its step's, the child's, its step's");
    for (int i = 0; i < RUNS; i++) {
        const jv *spawn = span_named(&d, "spawn", i);
        cr_assert_not_null(spawn);
        const char *prun = attr_of(spawn, "wf.run_id", "stringValue");
        const jv *parent = NULL, *child = NULL, *work = NULL;
        for (size_t k = 0; k < d.n_spans; k++)
            if (jis(d.spans[k], "name", "ObsParent") &&
                strcmp(attr_of(d.spans[k], "wf.run_id", "stringValue"), prun) == 0)
                parent = d.spans[k];
        cr_assert_not_null(parent);
        for (size_t k = 0; k < d.n_spans; k++)
            if (jis(d.spans[k], "name", "ObsChild") && jget(d.spans[k], "parentSpanId") &&
                strcmp(jstr(d.spans[k], "parentSpanId"), jstr(spawn, "spanId")) == 0)
                child = d.spans[k];
        cr_assert_not_null(child, "run %s: no child run span under its spawn step's span", prun);
        cr_assert_str_eq(jstr(child, "traceId"), jstr(parent, "traceId"));
        const char *crun = attr_of(child, "wf.run_id", "stringValue");
        for (size_t k = 0; k < d.n_spans; k++)
            if (jis(d.spans[k], "name", "work") &&
                strcmp(attr_of(d.spans[k], "wf.run_id", "stringValue"), crun) == 0)
                work = d.spans[k];
        cr_assert_not_null(work);
        cr_assert_str_eq(jstr(work, "traceId"), jstr(parent, "traceId"));
        cr_assert_str_eq(jstr(work, "parentSpanId"), jstr(child, "spanId"));
    }
    otlp_doc_free(&d);
    free(text);
    unlink(opath);

    text = slurp(ppath);
    trace t;
    check_trace(text, &t);
    for (int i = 0; i < RUNS; i++) {
        const jv *b = find_ev(&t, "b", "ObsChild", -1, i);
        cr_assert_not_null(b);
        const char *pev = jstr(jget(b, "args"), "parent_event_id");
        const char *prun = jstr(jget(b, "args"), "parent_run_id");
        cr_assert(pev && prun);
        int found = 0;
        for (int k = 0; k < RUNS && !found; k++) {
            const jv *x = find_ev(&t, "X", "spawn", -1, k);
            found = x && strcmp(jstr(jget(x, "args"), "event_id"), pev) == 0 &&
                    strcmp(jstr(jget(x, "args"), "run_id"), prun) == 0;
        }
        cr_assert(found, "the child's parent_event_id names its parent's step slice");
    }
    jfree(&t.doc);
    free(text);
    unlink(ppath);
    wf_workflow_free(wf);
    wf_workflow_free(g_obs_child);
}
