/*
 * test_json_flat.c: wf batch's flat-line parser (tools/wf/flat.c, yajl)
 * against the general path (json.c: jansson's tree, wf__json_start). Every
 * line the flat parser takes must give the very event (msgpack bytes) and
 * "id" the general path gives; what it hands back is the general path's to
 * decide. Hand-written lines cover each rule of flat.c, and 60,000 random
 * lines (seeded: a failure names its line) mix valid and broken JSON,
 * escapes, surrogates, number edges, nesting and repeated keys.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/json.h>
#include <wf/schema.h>
#include <wf/wf.h>

#include "../json/json_internal.h"
#include "../tools/wf/flat.h"

static int s_noop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in, (void)u;
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_nil());
}

static wf_workflow *start_wf(void)
{
    wf_workflow *wf = NULL;
    cr_assert_eq(wf_workflow_new(&wf, "flat", NULL), 0);
    const wf_event_type *st = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &st;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "s", s_noop, &p, NULL), 0);
    cr_assert_eq(wf_workflow_freeze(wf, NULL), 0);
    return wf;
}

static char *packed(const wf_event *ev, size_t *len)
{
    void *b = NULL;
    cr_assert_eq(wf_event_to_msgpack(ev, &b, len), 0);
    return b;
}

static char *value_text(wf_value v)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    cr_assert_eq(wf_json_write_value(&b, v), 0);
    return b.data; /* caller frees */
}

/*
 * Parses line both ways; when the flat parser takes it, asserts both agree.
 * Returns what cli_flat_start returned.
 */
static int compare(wf_workflow *wf, void **arena, const char *line, size_t n)
{
    const wf_event_type *st = wf_workflow_start_type(wf);
    wf_event *fe = NULL;
    wf_value fid;
    int has_id = 0;
    int fr = cli_flat_start(st, line, n, arena, &fe, &fid, &has_id);
    cr_assert(fr == 0 || fr == 1, "flat: %d for %.*s", fr, (int)n, line);
    if (fr == 0) {
        cr_assert_null(fe);
        return 0;
    }
    char *msg = NULL;
    json_t *j = wf__json_load(line, n, &msg);
    cr_assert(j != NULL, "flat took a line jansson refuses (%s): %.*s", msg ? msg : "", (int)n,
              line);
    wf_event *ge = NULL;
    int rc = wf__json_start(wf, j, &ge, &msg);
    cr_assert_eq(rc, 0, "flat took a line the general path refuses (%s): %.*s",
                 msg ? msg : "", (int)n, line);
    size_t fl, gl;
    char *fb = packed(fe, &fl), *gb = packed(ge, &gl);
    cr_assert(fl == gl && memcmp(fb, gb, fl) == 0, "different events for %.*s", (int)n, line);
    wf_free(fb);
    wf_free(gb);
    const json_t *jid = json_object_get(j, "id");
    cr_assert_eq(has_id, jid != NULL, "id seen differently: %.*s", (int)n, line);
    if (jid) {
        wf_value gid;
        cr_assert_eq(wf__json_to_value(jid, &gid, NULL), 0);
        char *a = value_text(fid), *b = value_text(gid);
        cr_assert_str_eq(a, b, "id of %.*s", (int)n, line);
        free(a);
        free(b);
        wf_value_release(gid);
    }
    json_decref(j);
    wf_json_free_message(msg);
    wf_event_release(fe);
    wf_event_release(ge);
    wf_value_release(fid);
    return 1;
}

static int compare_s(wf_workflow *wf, void **arena, const char *line)
{
    return compare(wf, arena, line, strlen(line));
}

Test(json_flat, flat_lines_are_taken_and_agree_with_the_general_path)
{
    wf_workflow *wf = start_wf();
    void *arena = NULL;
    static const char *const taken[] = {
        "{\"id\":1,\"data\":\"Hello, world! 1\"}",
        "{}",
        "  { \"a\" : 1 , \"b\" : -2 }  ",
        "{\"id\":\"x-7\",\"n\":9223372036854775807,\"m\":-9223372036854775808}",
        "{\"f\":1.5,\"g\":-0.0,\"h\":1e-300,\"i\":2E+10,\"j\":0,\"k\":-0}",
        "{\"s\":\"q\\\"b\\\\s\\/n\\n\\t\\r\\b\\f\",\"u\":\"\\u0041\\u00e9\\u20ac\"}",
        "{\"t\":true,\"f\":false,\"z\":null,\"id\":null}",
        "{\"id\":2.5}",
        "{\"e\":\"\"}",
        "{\"nul\":\"a\\u0000b\"}",
        "{\"type\":\"StartEvent\",\"value\":1}",
    };
    for (size_t i = 0; i < sizeof taken / sizeof *taken; i++)
        cr_assert_eq(compare_s(wf, &arena, taken[i]), 1, "not taken: %s", taken[i]);
    cli_flat_arena_free(arena);
    wf_workflow_free(wf);
}

Test(json_flat, lines_only_the_general_path_decides_are_handed_back)
{
    wf_workflow *wf = start_wf();
    void *arena = NULL;
    static const char *const back[] = {
        "",
        "   ",
        "[1,2]",
        "1",
        "\"s\"",
        "{\"a\":{\"b\":1}}",
        "{\"a\":[1]}",
        "{\"type\":\"StartEvent\",\"value\":{\"x\":1}}",
        "{\"b\":{\"$bytes\":\"AA==\"}}",
        "{\"a\":1}x",
        "{\"a\":1}{\"b\":2}",
        "{\"a\":1,}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":-}",
        "{\"a\":+1}",
        "{\"a\":9223372036854775808}",
        "{\"a\":-9223372036854775809}",
        "{\"a\":1e400}",
        "{\"a\":NaN}",
        "{\"a\":1,\"a\":2}",
        "{\"\":1}",
        "{\"k\\u0000\":1}",
        "{\"a\":\"\\ud83d\\ude00\"}",
        "{\"a\":\"\\uD800\"}",
        "{\"a\":\"\xc3\xa9\"}",
        "{\"a\":\"\xc0\x80\"}",
        "{\"a\":\"tab\there\"}",
        "{\t\"a\":1}",
        "{\"a\":\"\\x\"}",
        "{\"a\":'s'}",
        "{\"a\":1 /* c */}",
        "{\"a\":tru}",
        "{\"a\":\"unterminated}",
        "{\"a\":1",
    };
    for (size_t i = 0; i < sizeof back / sizeof *back; i++)
        cr_assert_eq(compare_s(wf, &arena, back[i]), 0, "taken: %s", back[i]);
    cli_flat_arena_free(arena);
    wf_workflow_free(wf);
}

/* ---------------------------------------------------- random lines */

static unsigned long long rng = 88172645463325252ull;

static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

typedef struct line {
    char s[1024];
    size_t n;
} line;

static void put(line *l, const char *s)
{
    size_t k = strlen(s);
    if (l->n + k < sizeof l->s) {
        memcpy(l->s + l->n, s, k);
        l->n += k;
    }
}

static void put_ws(line *l)
{
    static const char *const ws[] = {"", "", "", "", " ", "  ", "", " ", "\t", "\n", " \r\n"};
    put(l, ws[rnd(rnd(4) ? 8 : 11)]); /* tabs and line ends (handed back) now and then */
}

static void put_string(line *l)
{
    static const char *const plain[] = {"a", "Z", "0", " ", "\\\"", "\\\\", "\\/", "\\b",
                                        "\\f", "\\n", "\\r", "\\t", "\\u0041", "\\u00e9",
                                        "\\u20AC", "\\u0000", "id", "-", "{", "}", "[", ":", ","};
    static const char *const odd[] = {"\\ud83d\\ude00", "\\uD800", "\\udc00", "\xc3\xa9",
                                      "\xe2\x82\xac", "\xc0\x80", "\xff", "\x01", "\\x", "\\u12"};
    put(l, "\"");
    for (unsigned k = rnd(6); k > 0; k--)
        put(l, rnd(12) ? plain[rnd(sizeof plain / sizeof *plain)]
                       : odd[rnd(sizeof odd / sizeof *odd)]);
    put(l, "\"");
}

static void put_number(line *l)
{
    static const char *const plain[] = {"0", "-0", "1", "-1", "42", "1.5", "-2.25", "1e3", "1E-3",
                                        "2e+8", "1e-400", "9223372036854775807",
                                        "-9223372036854775808", "3.141592653589793", "1.0e0"};
    static const char *const odd[] = {"007", "1.", ".5", "1e400", "-1e400", "9223372036854775808",
                                      "-9223372036854775809", "18446744073709551615", "1e", "-",
                                      "+1", "0x10", "123456789012345678901234567890"};
    put(l, rnd(8) ? plain[rnd(sizeof plain / sizeof *plain)] : odd[rnd(sizeof odd / sizeof *odd)]);
}

static void put_value(line *l, int depth)
{
    switch (rnd(depth < 2 && rnd(4) == 0 ? 10 : 8)) {
    case 0:
        put(l, "null");
        break;
    case 1:
        put(l, rnd(2) ? "true" : "false");
        break;
    case 2:
    case 3:
        put_number(l);
        break;
    case 4:
    case 5:
    case 6:
    case 7:
        put_string(l);
        break;
    case 8:
        put(l, "[");
        put_value(l, depth + 1);
        put(l, "]");
        break;
    default:
        put(l, "{\"k\":");
        put_value(l, depth + 1);
        put(l, "}");
        break;
    }
}

static void random_line(line *l)
{
    static const char *const keys[] = {"\"id\"", "\"data\"", "\"n\"", "\"x\"", "\"k\\\"q\"",
                                       "\"\\u00e9\"", "\"\"", "\"a\\u0000\""};
    l->n = 0;
    put_ws(l);
    put(l, "{");
    unsigned fields = rnd(5);
    for (unsigned i = 0; i < fields; i++) {
        if (i)
            put(l, ",");
        put_ws(l);
        put(l, keys[rnd(rnd(8) ? 6 : 8)]); /* an empty key or one with NUL now and then */
        put_ws(l);
        put(l, ":");
        put_ws(l);
        put_value(l, 0);
        put_ws(l);
    }
    put(l, "}");
    put_ws(l);
    if (rnd(20) == 0 && l->n > 0) /* a corrupted byte */
        l->s[rnd((unsigned)l->n)] = "x,:{}\"\\ \x80"[rnd(9)];
    if (rnd(40) == 0)
        put(l, rnd(2) ? "x" : "{}");
}

Test(json_flat, random_lines_agree_with_the_general_path, .timeout = 120)
{
    wf_workflow *wf = start_wf();
    void *arena = NULL;
    line l;
    unsigned taken = 0, total = 60000;
    for (unsigned i = 0; i < total; i++) {
        random_line(&l);
        taken += (unsigned)compare(wf, &arena, l.s, l.n);
    }
    fprintf(stderr, "%u of %u random lines taken by the flat parser\n", taken, total);
    /* most random lines are valid, flat and plain: the fast path must be in use */
    cr_assert_gt(taken, total / 10, "only %u of %u lines taken", taken, total);
    cr_assert_lt(taken, total, "every line taken: the hand-back rules are not exercised");
    cli_flat_arena_free(arena);
    wf_workflow_free(wf);
}

/* A start type with a schema: a refused kind or a missing required field goes back. */
Test(json_flat, schema_refusals_go_to_the_general_path)
{
    wf_workflow *wf = NULL;
    cr_assert_eq(wf_workflow_new(&wf, "flat_schema", NULL), 0);
    const wf_event_type *st = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_schema *s = NULL;
    cr_assert_eq(wf_schema_new(&s), 0);
    wf_schema_field f;
    wf_schema_field_init(&f);
    f.kind = WF_INT;
    f.required = 1;
    cr_assert_eq(wf_schema_add_field(s, "n", &f), 0);
    cr_assert_eq(wf_event_type_set_schema(st, s), 0);
    wf_schema_free(s);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &st;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "s", s_noop, &p, NULL), 0);
    cr_assert_eq(wf_workflow_freeze(wf, NULL), 0);
    void *arena = NULL;
    cr_assert_eq(compare_s(wf, &arena, "{\"n\":3}"), 1);
    cr_assert_eq(compare_s(wf, &arena, "{\"n\":\"three\"}"), 0);
    cr_assert_eq(compare_s(wf, &arena, "{\"m\":3}"), 0);
    /* and the general path refuses both, with its message */
    char *msg = NULL;
    wf_event *ev = NULL;
    cr_assert_lt(wf_json_parse_start(wf, "{\"m\":3}", 7, &ev, &msg), 0);
    cr_assert(msg != NULL);
    wf_json_free_message(msg);
    cli_flat_arena_free(arena);
    wf_workflow_free(wf);
}
