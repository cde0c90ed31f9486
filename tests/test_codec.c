/*
 * test_codec.c: msgpack encoding of values and events, and a decoder that
 * survives truncated, corrupted and hostile documents.
 */
#include "harness.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

static wf_value sample(void)
{
    wf_value m, a, s, b;
    cr_assert_eq(wf_value_map_new(&m, 0), 0);
    cr_assert_eq(wf_value_array_new(&a, 0), 0);
    cr_assert_eq(wf_value_array_push(&a, wf_value_nil()), 0);
    cr_assert_eq(wf_value_array_push(&a, wf_value_bool(1)), 0);
    cr_assert_eq(wf_value_array_push(&a, wf_value_bool(0)), 0);
    cr_assert_eq(wf_value_array_push(&a, wf_value_int(INT64_MIN)), 0);
    cr_assert_eq(wf_value_array_push(&a, wf_value_int(-1)), 0);
    cr_assert_eq(wf_value_array_push(&a, wf_value_uint(UINT64_MAX)), 0);
    cr_assert_eq(wf_value_array_push(&a, wf_value_double(-2.5e300)), 0);
    cr_assert_eq(wf_value_string_n(&s, "a\0b", 3), 0);
    cr_assert_eq(wf_value_array_push(&a, s), 0);
    const unsigned char raw[] = {0, 255, 7};
    cr_assert_eq(wf_value_bytes(&b, raw, 3), 0);
    cr_assert_eq(wf_value_array_push(&a, b), 0);
    cr_assert_eq(wf_value_map_set(&m, "list", a), 0);
    wf_value empty_a, empty_m, empty_s;
    cr_assert_eq(wf_value_array_new(&empty_a, 0), 0);
    cr_assert_eq(wf_value_map_new(&empty_m, 0), 0);
    cr_assert_eq(wf_value_string(&empty_s, ""), 0);
    cr_assert_eq(wf_value_map_set(&m, "ea", empty_a), 0);
    cr_assert_eq(wf_value_map_set(&m, "em", empty_m), 0);
    cr_assert_eq(wf_value_map_set(&m, "es", empty_s), 0);
    cr_assert_eq(wf_value_map_set(&m, "n", wf_value_int(42)), 0);
    return m;
}

Test(codec, every_kind_round_trips)
{
    wf_value v = sample();
    void *buf;
    size_t len, used;
    cr_assert_eq(wf_value_to_msgpack(v, &buf, &len), 0);
    wf_value back;
    cr_assert_eq(wf_value_from_msgpack(buf, len, &back, &used, NULL), 0);
    cr_assert_eq(used, len);
    cr_assert(wf_value_equal(v, back));
    /* a positive int comes back as uint and still compares equal */
    wf_value n;
    cr_assert_eq(wf_value_map_get(back, "n", &n), 0);
    cr_assert_eq(wf_value_kind(n), WF_UINT);
    wf_value_release(back);
    wf_value_release(v);
    wf_free(buf);
}

Test(codec, events_round_trip_by_type_name)
{
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    const wf_event_type *t;
    cr_assert_eq(wf_registry_add(reg, "Query", NULL, &t), 0);
    wf_event *e;
    cr_assert_eq(wf_event_new2(&e, t, "q", sample(), "a_long_field_name_here", wf_value_int(7)), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_event_to_msgpack(e, &buf, &len), 0);
    wf_event *back;
    cr_assert_eq(wf_event_from_msgpack(reg, buf, len, &back, NULL, NULL), 0);
    cr_assert(wf_event_equal(e, back));
    /* another registry without the type */
    wf_registry *other;
    cr_assert_eq(wf_registry_new(&other), 0);
    char *msg = NULL;
    cr_assert_eq(wf_event_from_msgpack(other, buf, len, &back, NULL, &msg), WF_ENOTFOUND);
    cr_assert_str_eq(msg, "unknown event type 'Query'");
    wf_free(msg);
    wf_registry_free(other);
    wf_event_release(e);
    wf_free(buf);
    wf_registry_free(reg);
}

Test(codec, every_truncation_is_an_error)
{
    wf_value v = sample();
    void *buf;
    size_t len;
    cr_assert_eq(wf_value_to_msgpack(v, &buf, &len), 0);
    for (size_t n = 0; n < len; n++) {
        wf_value out;
        char *msg = NULL;
        int rc = wf_value_from_msgpack(buf, n, &out, NULL, &msg);
        cr_assert_eq(rc, WF_EFORMAT, "prefix %zu of %zu: %s", n, len, wf_err_name(rc));
        cr_assert_not_null(msg);
        cr_assert(strncmp(msg, "malformed msgpack at offset ", 28) == 0, "%s", msg);
        wf_free(msg);
    }
    wf_value_release(v);
    wf_free(buf);
}

Test(codec, corrupted_documents_never_crash)
{
    wf_value v = sample();
    void *buf;
    size_t len;
    cr_assert_eq(wf_value_to_msgpack(v, &buf, &len), 0);
    unsigned char *copy = malloc(len);
    uint32_t seed = 12345;
    int ok = 0, bad = 0;
    for (int round = 0; round < 20000; round++) {
        memcpy(copy, buf, len);
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            copy[(seed >> 8) % len] = (unsigned char)(seed >> 20);
        }
        wf_value out;
        int rc = wf_value_from_msgpack(copy, len, &out, NULL, NULL);
        cr_assert(rc == 0 || rc == WF_EFORMAT, "%s", wf_err_name(rc));
        if (rc == 0) {
            ok++;
            wf_value_release(out);
        } else {
            bad++;
        }
    }
    cr_assert(bad > 0);
    free(copy);
    wf_value_release(v);
    wf_free(buf);
}

static int decode(const unsigned char *p, size_t n, const char *want_msg_part)
{
    wf_value out;
    char *msg = NULL;
    int rc = wf_value_from_msgpack(p, n, &out, NULL, &msg);
    if (rc == 0)
        wf_value_release(out);
    if (want_msg_part) {
        cr_assert_not_null(msg);
        cr_assert(strstr(msg, want_msg_part) != NULL, "%s", msg);
    }
    wf_free(msg);
    return rc;
}

Test(codec, hostile_documents)
{
    /* an array32 claiming 4 billion items in 5 bytes: refused before any allocation */
    const unsigned char huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(decode(huge, sizeof huge, "container longer than the document"), WF_EFORMAT);
    const unsigned char str_lie[] = {0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'};
    cr_assert_eq(decode(str_lie, sizeof str_lie, "truncated body"), WF_EFORMAT);
    const unsigned char ext[] = {0xd4, 0x01, 0x00};
    cr_assert_eq(decode(ext, sizeof ext, "extension"), WF_EFORMAT);
    const unsigned char c1[] = {0xc1};
    cr_assert_eq(decode(c1, sizeof c1, "0xc1"), WF_EFORMAT);
    const unsigned char intkey[] = {0x81, 0x01, 0x02};
    cr_assert_eq(decode(intkey, sizeof intkey, "map key is not a string"), WF_EFORMAT);
    const unsigned char dupkey[] = {0x82, 0xa1, 'k', 0x01, 0xa1, 'k', 0x02};
    cr_assert_eq(decode(dupkey, sizeof dupkey, "duplicate"), WF_EFORMAT);
    /* nesting deeper than WF_MSGPACK_MAX_DEPTH */
    unsigned char deep[1000];
    memset(deep, 0x91, sizeof deep - 1);
    deep[sizeof deep - 1] = 0xc0;
    cr_assert_eq(decode(deep, sizeof deep, "nested too deeply"), WF_EFORMAT);
    /* at the limit it decodes; one deeper is refused */
    cr_assert_eq(
        decode(deep + sizeof deep - (WF_MSGPACK_MAX_DEPTH + 1), WF_MSGPACK_MAX_DEPTH + 1, NULL), 0);
    cr_assert_eq(decode(deep + sizeof deep - (WF_MSGPACK_MAX_DEPTH + 2), WF_MSGPACK_MAX_DEPTH + 2,
                        "nested too deeply"),
                 WF_EFORMAT);
    /* trailing bytes are left alone and reported through used */
    const unsigned char two[] = {0x01, 0x02};
    wf_value out;
    size_t used = 0;
    cr_assert_eq(wf_value_from_msgpack(two, 2, &out, &used, NULL), 0);
    cr_assert_eq(used, 1);
    cr_assert_eq(wf_value_from_msgpack(NULL, 0, &out, NULL, NULL), WF_EFORMAT);
    cr_assert_eq(wf_value_from_msgpack(two, 2, NULL, NULL, NULL), WF_EINVAL);
}

Test(codec, malformed_events)
{
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    wf_event *e;
    const unsigned char not_pair[] = {0x91, 0xa1, 'x'};
    char *msg = NULL;
    cr_assert_eq(wf_event_from_msgpack(reg, not_pair, sizeof not_pair, &e, NULL, &msg), WF_EFORMAT);
    cr_assert(strstr(msg, "[type name, {fields}]") != NULL);
    wf_free(msg);
    const unsigned char ok[] = {0x92, 0xaa, 'S', 't', 'a',  'r',  't', 'E',
                                'v',  'e',  'n', 't', 0x81, 0xa1, 'k', 0x05};
    cr_assert_eq(wf_event_from_msgpack(reg, ok, sizeof ok, &e, NULL, NULL), 0);
    cr_assert_eq(wf_event_type_of(e), wf_registry_builtin(reg, WF_START_EVENT));
    int64_t k;
    cr_assert_eq(wf_value_get_int(wf_event_get(e, "k", wf_value_nil()), &k), 0);
    cr_assert_eq(k, 5);
    wf_event_release(e);
    wf_registry_free(reg);
}

/* ---- context snapshots at rest ---- */

static int counter(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    wf_value v;
    int64_t n = 0;
    wf_ctx_get_default(ctx, "runs.count", wf_value_int(0), &v);
    wf_value_get_int(v, &n);
    wf_ctx_set(ctx, "runs.count", wf_value_int(n + 1));
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(n + 1));
}

static wf_workflow *counting_wf(const char *name, const char *step)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, name, NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, step, counter, &p, NULL), 0);
    return wf;
}

static int64_t run_count(wf_executor *ex, wf_workflow *wf, wf_ctx *ctx)
{
    wf_event *s, *res;
    cr_assert_eq(wf_event_new(&s, wf_workflow_builtin(wf, WF_START_EVENT), 0), 0);
    cr_assert_eq(wf_run(ex, wf, ctx, s, -1, &res), 0);
    int64_t n;
    cr_assert_eq(wf_value_get_int(wf_event_result(res), &n), 0);
    wf_event_release(res);
    return n;
}

Test(codec, snapshot_at_rest_round_trips_and_resumes_counting)
{
    wf_workflow *wf = counting_wf("Counter", "count");
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_ctx *ctx;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    cr_assert_eq(run_count(ex, wf, ctx), 1);
    cr_assert_eq(run_count(ex, wf, ctx), 2);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    wf_ctx *again;
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(wf, buf, len, 0, &again, &msg), 0, "%s", msg ? msg : "");
    cr_assert_eq(run_count(ex, wf, again), 3, "the store came back");
    char *json;
    cr_assert_eq(wf_snapshot_to_json(buf, len, &json, NULL), 0);
    char want[256];
    snprintf(want, sizeof want,
             "{\"magic\":\"wf-snapshot\",\"version\":4,\"workflow\":\"Counter\","
             "\"fingerprint\":\"%llu\",\"running\":false,\"state\":{\"runs\":{\"count\":2}}}",
             (unsigned long long)wf_workflow_fingerprint(wf));
    cr_assert_str_eq(json, want);
    wf_free(json);
    wf_free(buf);
    wf_ctx_free(again);
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

/* A document given its seal (CRC-32C of the bytes, as msgpack uint32): a newer writer's. */
static void *reseal(void *doc, size_t *len)
{
    uint32_t c = 0xffffffffu;
    const uint8_t *p = doc;
    for (size_t i = 0; i < *len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    c = ~c;
    uint8_t *out = malloc(*len + 5);
    cr_assert_not_null(out);
    memcpy(out, doc, *len);
    out[*len] = 0xce;
    out[*len + 1] = (uint8_t)(c >> 24);
    out[*len + 2] = (uint8_t)(c >> 16);
    out[*len + 3] = (uint8_t)(c >> 8);
    out[*len + 4] = (uint8_t)c;
    wf_free(doc);
    *len += 5;
    return out;
}

Test(codec, snapshot_checks_definition_version_and_format)
{
    wf_workflow *wf = counting_wf("Counter", "count");
    wf_workflow *other = counting_wf("Counter", "count_renamed");
    cr_assert_neq(wf_workflow_fingerprint(wf), wf_workflow_fingerprint(other));
    wf_ctx *ctx, *out;
    cr_assert_eq(wf_ctx_new(&ctx, wf), 0);
    cr_assert_eq(wf_ctx_set(ctx, "k", wf_value_int(1)), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), 0);
    char *msg = NULL;
    cr_assert_eq(wf_ctx_load(other, buf, len, 0, &out, &msg), WF_EMISMATCH);
    cr_assert_str_eq(msg,
                     "snapshot of workflow 'Counter' does not match the definition of 'Counter'");
    wf_free(msg);
    cr_assert_eq(wf_ctx_load(other, buf, len, WF_LOAD_ALLOW_MISMATCH, &out, NULL), 0);
    wf_ctx_free(out);
    /* a newer format is refused */
    wf_value doc;
    cr_assert_eq(wf_value_from_msgpack(buf, len, &doc, NULL, NULL), 0);
    cr_assert_eq(wf_value_map_set(&doc, "version", wf_value_uint(WF_SNAPSHOT_VERSION + 1)), 0);
    void *newer;
    size_t nlen;
    cr_assert_eq(wf_value_to_msgpack(doc, &newer, &nlen), 0);
    /* without its seal it is just corrupt */
    cr_assert_eq(wf_ctx_load(wf, newer, nlen, 0, &out, &msg), WF_EFORMAT);
    cr_assert(strstr(msg, "checksum") != NULL, "%s", msg);
    wf_free(msg);
    msg = NULL;
    newer = reseal(newer, &nlen);
    cr_assert_eq(wf_ctx_load(wf, newer, nlen, 0, &out, &msg), WF_EVERSION);
    cr_assert_str_eq(msg, "snapshot format 5 is newer than this library's (4): upgrade wf");
    wf_free(msg);
    free(newer);
    /* not a snapshot */
    cr_assert_eq(wf_value_map_set(&doc, "magic", wf_value_int(0)), 0);
    void *bad;
    size_t blen;
    cr_assert_eq(wf_value_to_msgpack(doc, &bad, &blen), 0);
    cr_assert_eq(wf_ctx_load(wf, bad, blen, 0, &out, NULL), WF_EFORMAT);
    wf_free(bad);
    wf_value_release(doc);
    /* every truncation fails cleanly */
    for (size_t n = 0; n < len; n++)
        cr_assert_eq(wf_ctx_load(wf, buf, n, 0, &out, NULL), WF_EFORMAT, "prefix %zu", n);
    wf_free(buf);
    wf_ctx_free(ctx);
    wf_workflow_free(other);
    wf_workflow_free(wf);
}

static int hold(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    void *buf;
    size_t len;
    cr_assert_eq(wf_ctx_save(ctx, &buf, &len), WF_EBUSY, "a step cannot cut its own run");
    return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                             wf_value_int(0));
}

Test(codec, a_step_cannot_save_a_running_context_from_inside)
{
    wf_workflow *wf;
    cr_assert_eq(wf_workflow_new(&wf, "Hold", NULL), 0);
    const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
    const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = acc;
    p.n_accepts = 1;
    p.emits = em;
    p.n_emits = 1;
    cr_assert_eq(wf_workflow_add_step(wf, "hold", hold, &p, NULL), 0);
    wf_executor *ex;
    cr_assert_eq(wf_executor_new(&ex, NULL), 0);
    wf_event *s;
    cr_assert_eq(wf_event_new(&s, acc[0], 0), 0);
    cr_assert_eq(wf_run(ex, wf, NULL, s, -1, NULL), 0);
    wf_executor_free(ex);
    wf_workflow_free(wf);
}

Test(codec, empty_keys_and_strings_round_trip)
{
    /* found by the fuzzer: msgpack-c hands an empty string a NULL pointer */
    wf_value m, e;
    cr_assert_eq(wf_value_map_new(&m, 0), 0);
    cr_assert_eq(wf_value_string(&e, ""), 0);
    cr_assert_eq(wf_value_map_set(&m, "", e), 0);
    void *buf;
    size_t len;
    cr_assert_eq(wf_value_to_msgpack(m, &buf, &len), 0);
    for (int round = 0; round < 2; round++) {
        wf_value back;
        cr_assert_eq(wf_value_from_msgpack(buf, len, &back, NULL, NULL), 0);
        cr_assert(wf_value_equal(m, back));
        void *again;
        size_t alen;
        cr_assert_eq(wf_value_to_msgpack(back, &again, &alen), 0);
        cr_assert_eq(alen, len);
        cr_assert(memcmp(again, buf, len) == 0);
        wf_free(buf);
        buf = again;
        wf_value_release(back);
    }
    wf_free(buf);
    wf_value_release(m);
}
