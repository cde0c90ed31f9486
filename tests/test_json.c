/*
 * test_json.c: libwf-json (json/json.c): round trips of every kind, int64
 * extremes and uint above INT64_MAX, bytes as {"$bytes"}, nesting and its
 * limit, tag escaping, events and start events, malformed input and wrong
 * types with their messages. Run under AddressSanitizer in scripts/test
 * (buffers, messages and jansson's trees are plain mallocs it sees).
 */
#include "harness.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <wf/json.h>
#include <wf/wf.h>

/* Writes v, parses the text back, and returns the text (static buffer). */
static const char *write_v(wf_value v)
{
    static char out[8192];
    wf_json_buf b;
    wf_json_buf_init(&b);
    cr_assert_eq(wf_json_write_value(&b, v), 0);
    cr_assert_lt(b.len, sizeof out);
    memcpy(out, b.data, b.len + 1);
    wf_json_buf_free(&b);
    return out;
}

static wf_value parse_ok(const char *text)
{
    wf_value v;
    char *msg = NULL;
    int rc = wf_json_parse_value(text, strlen(text), &v, &msg);
    cr_assert_eq(rc, 0, "%s: %s", text, msg ? msg : "?");
    return v;
}

static void round_trip(wf_value v, const char *want)
{
    const char *got = write_v(v);
    cr_assert_str_eq(got, want);
    wf_value back = parse_ok(got);
    cr_assert(wf_value_equal(v, back), "%s did not read back equal", got);
    wf_value_release(back);
}

Test(json, scalars)
{
    round_trip(wf_value_nil(), "null");
    round_trip(wf_value_bool(1), "true");
    round_trip(wf_value_bool(0), "false");
    round_trip(wf_value_int(0), "0");
    round_trip(wf_value_int(-42), "-42");
    round_trip(wf_value_double(0.5), "0.5");
    round_trip(wf_value_double(1.0), "1.0"); /* stays a double */
    round_trip(wf_value_double(-1e300), "-1e+300");
    round_trip(wf_value_double(0.1), "0.1");
    wf_value d = parse_ok("2.0");
    cr_assert_eq(wf_value_kind(d), WF_DOUBLE);
    cr_assert_str_eq(write_v(wf_value_double(NAN)), "null");
    cr_assert_str_eq(write_v(wf_value_double(INFINITY)), "null");
}

Test(json, int64_extremes_exact)
{
    round_trip(wf_value_int(INT64_MAX), "9223372036854775807");
    round_trip(wf_value_int(INT64_MIN), "-9223372036854775808");
    wf_value v = parse_ok("-9223372036854775808");
    int64_t i;
    cr_assert_eq(wf_value_get_int(v, &i), 0);
    cr_assert_eq(i, INT64_MIN);
}

Test(json, uint_above_int64_max)
{
    /* up to INT64_MAX a uint is a plain integer and reads back as an equal int */
    round_trip(wf_value_uint(7), "7");
    round_trip(wf_value_uint((uint64_t)INT64_MAX), "9223372036854775807");
    round_trip(wf_value_uint(UINT64_MAX), "{\"$uint\":\"18446744073709551615\"}");
    round_trip(wf_value_uint((uint64_t)INT64_MAX + 1), "{\"$uint\":\"9223372036854775808\"}");
    wf_value v = parse_ok("{\"$uint\":\"18446744073709551615\"}");
    uint64_t u;
    cr_assert_eq(wf_value_kind(v), WF_UINT);
    cr_assert_eq(wf_value_get_uint(v, &u), 0);
    cr_assert_eq(u, UINT64_MAX);
    v = parse_ok("{\"$uint\":12}");
    cr_assert_eq(wf_value_kind(v), WF_UINT);
    /* a bare integer past INT64_MAX: refused, and the message says what to write */
    char *msg = NULL;
    cr_assert_eq(wf_json_parse_value("18446744073709551615", 20, &v, &msg), WF_EFORMAT);
    cr_assert(msg && strstr(msg, "$uint"), "%s", msg ? msg : "(none)");
    wf_json_free_message(msg);
    msg = NULL;
    cr_assert_eq(wf_json_parse_value("{\"$uint\":\"18446744073709551616\"}", 32, &v, &msg),
                 WF_EFORMAT);
    cr_assert(msg && strstr(msg, "$uint needs"));
    wf_json_free_message(msg);
    msg = NULL;
    cr_assert_eq(wf_json_parse_value("{\"$uint\":-1}", 12, &v, &msg), WF_EFORMAT);
    wf_json_free_message(msg);
}

Test(json, strings)
{
    wf_value s;
    cr_assert_eq(wf_value_string(&s, "caf\xc3\xa9 \"q\" \\ \n\t\x01"), 0);
    round_trip(s, "\"caf\xc3\xa9 \\\"q\\\" \\\\ \\n\\t\\u0001\"");
    wf_value_release(s);
    /* NUL bytes survive */
    cr_assert_eq(wf_value_string_n(&s, "a\0b", 3), 0);
    round_trip(s, "\"a\\u0000b\"");
    wf_value_release(s);
    /* invalid UTF-8 goes out as U+FFFD, so the text is always valid JSON */
    cr_assert_eq(wf_value_string(&s, "x\xff"), 0);
    cr_assert_str_eq(write_v(s), "\"x\xef\xbf\xbd\"");
    wf_value_release(s);
    /* 4-byte sequences pass through */
    cr_assert_eq(wf_value_string(&s, "\xf0\x9f\x99\x82"), 0);
    round_trip(s, "\"\xf0\x9f\x99\x82\"");
    wf_value_release(s);
}

Test(json, bytes_base64)
{
    static const unsigned char raw[] = {0, 255, 4, 'a', 'b'};
    const char *want[] = {"{\"$bytes\":\"\"}",         "{\"$bytes\":\"AA==\"}",
                          "{\"$bytes\":\"AP8=\"}",     "{\"$bytes\":\"AP8E\"}",
                          "{\"$bytes\":\"AP8EYQ==\"}", "{\"$bytes\":\"AP8EYWI=\"}"};
    for (size_t n = 0; n <= sizeof raw; n++) {
        wf_value b;
        cr_assert_eq(wf_value_bytes(&b, raw, n), 0);
        round_trip(b, want[n]);
        wf_value_release(b);
    }
    /* long bytes (past the decoder's stack buffer) */
    unsigned char big[1000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7);
    wf_value b;
    cr_assert_eq(wf_value_bytes(&b, big, sizeof big), 0);
    wf_value back = parse_ok(write_v(b));
    cr_assert(wf_value_equal(b, back));
    wf_value_release(b);
    wf_value_release(back);
    wf_value v;
    char *msg = NULL;
    const char *bad[] = {"{\"$bytes\":\"AP8\"}", "{\"$bytes\":\"A*8E\"}", "{\"$bytes\":5}"};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(wf_json_parse_value(bad[i], strlen(bad[i]), &v, &msg), WF_EFORMAT, "%s",
                     bad[i]);
        cr_assert(msg && strstr(msg, "$bytes"));
        wf_json_free_message(msg);
        msg = NULL;
    }
}

Test(json, nesting_and_tags)
{
    wf_value v = parse_ok("{\"a\":[1,[2,{\"x\":[]}],{}],\"m\":{\"k\":null}}");
    round_trip(v, "{\"a\":[1,[2,{\"x\":[]}],{}],\"m\":{\"k\":null}}");
    wf_value_release(v);
    /* a map that looks like a tag is escaped as {"$map": ...} and comes back a map */
    wf_value m, s;
    cr_assert_eq(wf_value_map_new(&m, 1), 0);
    cr_assert_eq(wf_value_string(&s, "not bytes"), 0);
    cr_assert_eq(wf_value_map_set(&m, "$bytes", s), 0);
    round_trip(m, "{\"$map\":{\"$bytes\":\"not bytes\"}}");
    wf_value_release(m);
    /* two members: not a tag */
    v = parse_ok("{\"$bytes\":\"AA==\",\"y\":1}");
    cr_assert_eq(wf_value_kind(v), WF_MAP);
    cr_assert_eq(wf_value_len(v), 2);
    wf_value_release(v);
}

Test(json, depth_limit)
{
    char deep[200], *p = deep;
    for (int i = 0; i < WF_JSON_MAX_DEPTH; i++)
        *p++ = '[';
    for (int i = 0; i < WF_JSON_MAX_DEPTH; i++)
        *p++ = ']';
    *p = 0;
    wf_value v = parse_ok(deep);
    wf_value_release(v);
    p = deep;
    for (int i = 0; i <= WF_JSON_MAX_DEPTH; i++)
        *p++ = '[';
    for (int i = 0; i <= WF_JSON_MAX_DEPTH; i++)
        *p++ = ']';
    *p = 0;
    char *msg = NULL;
    cr_assert_eq(wf_json_parse_value(deep, strlen(deep), &v, &msg), WF_EFORMAT);
    cr_assert(msg && strstr(msg, "nested deeper"));
    wf_json_free_message(msg);
}

Test(json, malformed)
{
    const char *bad[] = {"", "{", "{\"a\":}", "[1,]", "nul", "{\"a\":1} x", "\"\xff\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        wf_value v;
        char *msg = NULL;
        cr_assert_eq(wf_json_parse_value(bad[i], strlen(bad[i]), &v, &msg), WF_EFORMAT, "%s",
                     bad[i]);
        cr_assert(msg && strstr(msg, "line 1 column"), "%s: %s", bad[i], msg ? msg : "(none)");
        wf_json_free_message(msg);
    }
}

static int nop_step(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)ctx;
    (void)in;
    (void)out;
    (void)user;
    return 0;
}

static wf_workflow *echo_workflow(void)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "w", NULL), 0);
    const wf_event_type *a[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *e[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = a;
    p.n_accepts = 1;
    p.emits = e;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "s", nop_step, &p, NULL), 0);
    cr_assert_eq(wf_workflow_freeze(wf, NULL), 0);
    return wf;
}

Test(json, events)
{
    wf_workflow *wf = echo_workflow();
    wf_registry *reg = wf_workflow_registry(wf);
    const wf_event_type *mine;
    cr_assert_eq(wf_registry_add(reg, "Mine", NULL, &mine), 0);
    const char *text = "{\"type\":\"Mine\",\"value\":{\"n\":1,\"b\":{\"$bytes\":\"AQ==\"}}}";
    wf_event *ev;
    char *msg = NULL;
    cr_assert_eq(wf_json_parse_event(reg, text, strlen(text), &ev, &msg), 0);
    cr_assert_eq(wf_event_type_of(ev), mine);
    cr_assert_eq(wf_event_field_count(ev), 2);
    wf_json_buf b;
    wf_json_buf_init(&b);
    cr_assert_eq(wf_json_write_event(&b, ev), 0);
    cr_assert_str_eq(b.data, text);
    wf_json_buf_reset(&b);
    cr_assert_eq(wf_json_write_fields(&b, ev), 0);
    cr_assert_str_eq(b.data, "{\"n\":1,\"b\":{\"$bytes\":\"AQ==\"}}");
    wf_json_buf_free(&b);
    wf_event_release(ev);
    /* no "value": no fields */
    cr_assert_eq(wf_json_parse_event(reg, "{\"type\":\"Mine\"}", 15, &ev, NULL), 0);
    cr_assert_eq(wf_event_field_count(ev), 0);
    wf_event_release(ev);
    /* unknown type, missing type, fields not an object */
    cr_assert_eq(wf_json_parse_event(reg, "{\"type\":\"Nope\"}", 15, &ev, &msg), WF_ENOTFOUND);
    cr_assert(msg && strstr(msg, "unknown event type 'Nope'"));
    wf_json_free_message(msg);
    msg = NULL;
    cr_assert_eq(wf_json_parse_event(reg, "{\"value\":{}}", 12, &ev, &msg), WF_EFORMAT);
    wf_json_free_message(msg);
    msg = NULL;
    cr_assert_eq(wf_json_parse_event(reg, "{\"type\":\"Mine\",\"value\":[1]}", 27, &ev, &msg),
                 WF_EFORMAT);
    cr_assert(msg && strstr(msg, "must be a JSON object"));
    wf_json_free_message(msg);
    wf_workflow_free(wf);
}

Test(json, start_events)
{
    wf_workflow *wf = echo_workflow();
    wf_event *ev;
    char *msg = NULL;
    const char *text = "{\"data\":\"Hello\",\"n\":[1,2]}";
    cr_assert_eq(wf_json_parse_start(wf, text, strlen(text), &ev, &msg), 0);
    cr_assert_eq(wf_event_type_of(ev), wf_workflow_start_type(wf));
    const char *s;
    cr_assert_eq(wf_value_get_string(wf_event_get(ev, "data", wf_value_nil()), &s, NULL), 0);
    cr_assert_str_eq(s, "Hello");
    wf_event_release(ev);
    /* the envelope form */
    text = "{\"type\":\"StartEvent\",\"value\":{\"x\":1}}";
    cr_assert_eq(wf_json_parse_start(wf, text, strlen(text), &ev, &msg), 0);
    cr_assert(wf_event_has(ev, "x"));
    wf_event_release(ev);
    /* an envelope of another type: WF_ETYPE */
    text = "{\"type\":\"StopEvent\",\"value\":{}}";
    cr_assert_eq(wf_json_parse_start(wf, text, strlen(text), &ev, &msg), WF_ETYPE);
    cr_assert(msg && strstr(msg, "is not the start type"));
    wf_json_free_message(msg);
    msg = NULL;
    /* wrong types */
    const char *bad[] = {"[]", "3", "\"s\"", "null", "{\"\":1}"};
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(wf_json_parse_start(wf, bad[i], strlen(bad[i]), &ev, &msg), WF_EFORMAT, "%s",
                     bad[i]);
        cr_assert_not_null(msg);
        wf_json_free_message(msg);
        msg = NULL;
    }
    wf_workflow_free(wf);
}

Test(json, buffer_reuse_and_errors)
{
    wf_json_buf b;
    wf_json_buf_init(&b);
    for (int i = 0; i < 1000; i++) {
        wf_json_buf_reset(&b);
        cr_assert_eq(wf_json_write_value(&b, wf_value_int(i)), 0);
    }
    cr_assert_str_eq(b.data, "999");
    /* a value nested past the limit: WF_EINVAL, the buffer as it was */
    wf_value v;
    cr_assert_eq(wf_value_array_new(&v, 1), 0);
    for (int i = 0; i < WF_JSON_MAX_DEPTH + 1; i++) {
        wf_value outer;
        cr_assert_eq(wf_value_array_new(&outer, 1), 0);
        cr_assert_eq(wf_value_array_push(&outer, v), 0);
        v = outer;
    }
    cr_assert_eq(wf_json_write_value(&b, v), WF_EINVAL);
    cr_assert_str_eq(b.data, "999");
    wf_value_release(v);
    wf_json_buf_free(&b);
}
