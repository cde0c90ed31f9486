/*
 * test_value.c: dynamic values: every kind, errors, copy-on-write, deep
 * equality, large maps, formatting, reference counts under threads, and no
 * leak on out-of-memory paths.
 */
#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

static wf_value str(const char *s)
{
    wf_value v;
    cr_assert_eq(wf_value_string(&v, s), 0);
    return v;
}

Test(value, scalars_round_trip)
{
    int b;
    int64_t i;
    uint64_t u;
    double d;
    cr_assert_eq(wf_value_kind(wf_value_nil()), WF_NIL);
    cr_assert(wf_value_is_nil(wf_value_nil()));
    cr_assert_eq(wf_value_get_bool(wf_value_bool(7), &b), 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(wf_value_get_int(wf_value_int(INT64_MIN), &i), 0);
    cr_assert_eq(i, INT64_MIN);
    cr_assert_eq(wf_value_get_uint(wf_value_uint(UINT64_MAX), &u), 0);
    cr_assert_eq(u, UINT64_MAX);
    cr_assert_eq(wf_value_get_double(wf_value_double(2.5), &d), 0);
    cr_assert(d == 2.5);
    cr_assert_eq(wf_value_get_double(wf_value_int(-3), &d), 0);
    cr_assert(d == -3.0);
    cr_assert_eq(wf_value_len(wf_value_int(5)), 0);
    wf_value_release(wf_value_int(5)); /* a no-op for scalars */
}

Test(value, integer_conversions_check_range)
{
    int64_t i;
    uint64_t u;
    cr_assert_eq(wf_value_get_int(wf_value_uint(42), &i), 0);
    cr_assert_eq(i, 42);
    cr_assert_eq(wf_value_get_int(wf_value_uint((uint64_t)INT64_MAX + 1), &i), WF_ERANGE);
    cr_assert_eq(wf_value_get_uint(wf_value_int(7), &u), 0);
    cr_assert_eq(u, 7);
    cr_assert_eq(wf_value_get_uint(wf_value_int(-1), &u), WF_ERANGE);
}

Test(value, wrong_kinds_and_null_outputs)
{
    int b;
    int64_t i;
    const char *s;
    const void *p;
    wf_value out;
    cr_assert_eq(wf_value_get_bool(wf_value_int(1), &b), WF_EKIND);
    cr_assert_eq(wf_value_get_int(wf_value_double(1.0), &i), WF_EKIND);
    cr_assert_eq(wf_value_get_string(wf_value_int(1), &s, NULL), WF_EKIND);
    cr_assert_eq(wf_value_get_bytes(wf_value_nil(), &p, NULL), WF_EKIND);
    cr_assert_eq(wf_value_array_at(wf_value_nil(), 0, &out), WF_EKIND);
    cr_assert_eq(wf_value_map_get(wf_value_int(3), "k", &out), WF_EKIND);
    cr_assert_eq(wf_value_get_int(wf_value_int(1), NULL), WF_EINVAL);
    cr_assert_eq(wf_value_string(NULL, "x"), WF_EINVAL);
    cr_assert_eq(wf_value_string(&out, NULL), WF_EINVAL);
    cr_assert_eq(wf_value_bytes(&out, NULL, 3), WF_EINVAL);
    wf_value m = wf_value_int(1);
    cr_assert_eq(wf_value_map_set(&m, "k", str("v")), WF_EKIND); /* takes the value anyway */
    cr_assert_eq(wf_value_array_push(&m, str("v")), WF_EKIND);
    cr_assert_eq(wf_value_map_set(NULL, "k", wf_value_int(1)), WF_EINVAL);
}

Test(value, strings_and_bytes)
{
    wf_value s = str("héllo");
    const char *p;
    size_t n;
    cr_assert_eq(wf_value_get_string(s, &p, &n), 0);
    cr_assert_str_eq(p, "héllo");
    cr_assert_eq(n, strlen("héllo"));
    cr_assert_eq(wf_value_len(s), n);
    wf_value z;
    cr_assert_eq(wf_value_string_n(&z, "a\0b", 3), 0);
    cr_assert_eq(wf_value_get_string(z, &p, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert(memcmp(p, "a\0b", 3) == 0);
    wf_value b;
    const unsigned char raw[] = {0, 1, 2, 255};
    cr_assert_eq(wf_value_bytes(&b, raw, sizeof raw), 0);
    const void *bp;
    cr_assert_eq(wf_value_get_bytes(b, &bp, &n), 0);
    cr_assert_eq(n, 4);
    cr_assert(memcmp(bp, raw, 4) == 0);
    cr_assert_not(wf_value_equal(s, z));
    wf_value empty;
    cr_assert_eq(wf_value_bytes(&empty, NULL, 0), 0);
    cr_assert_eq(wf_value_len(empty), 0);
    wf_value_release(s);
    wf_value_release(z);
    wf_value_release(b);
    wf_value_release(empty);
}

Test(value, arrays)
{
    wf_value a;
    cr_assert_eq(wf_value_array_new(&a, 1), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(wf_value_array_push(&a, wf_value_int(i)), 0);
    cr_assert_eq(wf_value_len(a), 100);
    wf_value it;
    int64_t n;
    cr_assert_eq(wf_value_array_at(a, 42, &it), 0);
    cr_assert_eq(wf_value_get_int(it, &n), 0);
    cr_assert_eq(n, 42);
    cr_assert_eq(wf_value_array_at(a, 100, &it), WF_ERANGE);
    cr_assert_eq(wf_value_array_set(&a, 3, str("three")), 0);
    cr_assert_eq(wf_value_array_at(a, 3, &it), 0);
    cr_assert_eq(wf_value_kind(it), WF_STRING);
    cr_assert_eq(wf_value_array_set(&a, 100, wf_value_int(0)), WF_ERANGE);
    wf_value_release(a);
}

Test(value, maps_keep_insertion_order)
{
    wf_value m;
    cr_assert_eq(wf_value_map_new(&m, 0), 0);
    cr_assert_eq(wf_value_map_set(&m, "b", wf_value_int(1)), 0);
    cr_assert_eq(wf_value_map_set(&m, "a", wf_value_int(2)), 0);
    cr_assert_eq(wf_value_map_set(&m, "c", wf_value_int(3)), 0);
    cr_assert_eq(wf_value_map_set(&m, "a", wf_value_int(20)), 0); /* replace in place */
    cr_assert_eq(wf_value_len(m), 3);
    const char *keys[] = {"b", "a", "c"};
    const int64_t vals[] = {1, 20, 3};
    for (size_t i = 0; i < 3; i++) {
        const char *k;
        size_t kl;
        wf_value v;
        int64_t n;
        cr_assert_eq(wf_value_map_at(m, i, &k, &kl, &v), 0);
        cr_assert_str_eq(k, keys[i]);
        cr_assert_eq(kl, 1);
        cr_assert_eq(wf_value_get_int(v, &n), 0);
        cr_assert_eq(n, vals[i]);
    }
    cr_assert_eq(wf_value_map_at(m, 3, NULL, NULL, NULL), WF_ERANGE);
    cr_assert_eq(wf_value_map_remove(&m, "b"), 0);
    cr_assert_eq(wf_value_map_remove(&m, "b"), WF_ENOTFOUND);
    const char *k;
    cr_assert_eq(wf_value_map_at(m, 0, &k, NULL, NULL), 0);
    cr_assert_str_eq(k, "a");
    wf_value v;
    cr_assert_eq(wf_value_map_get(m, "zz", &v), WF_ENOTFOUND);
    cr_assert_eq(wf_value_map_get_n(m, "cx", 1, &v), 0); /* length-counted key "c" */
    wf_value_release(m);
}

Test(value, ten_thousand_keys)
{
    wf_value fwd, rev;
    cr_assert_eq(wf_value_map_new(&fwd, 0), 0);
    cr_assert_eq(wf_value_map_new(&rev, 0), 0);
    char key[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        cr_assert_eq(wf_value_map_set(&fwd, key, wf_value_int(i)), 0);
    }
    for (int i = 9999; i >= 0; i--) {
        snprintf(key, sizeof key, "key-%d", i);
        cr_assert_eq(wf_value_map_set(&rev, key, wf_value_int(i)), 0);
    }
    cr_assert_eq(wf_value_len(fwd), 10000);
    cr_assert(wf_value_equal(fwd, rev), "same entries in another order are equal");
    for (int i = 0; i < 10000; i++) {
        wf_value v;
        int64_t n;
        snprintf(key, sizeof key, "key-%d", i);
        cr_assert_eq(wf_value_map_get(fwd, key, &v), 0, "%s", key);
        cr_assert_eq(wf_value_get_int(v, &n), 0);
        cr_assert_eq(n, i);
    }
    for (int i = 0; i < 10000; i += 2) {
        snprintf(key, sizeof key, "key-%d", i);
        cr_assert_eq(wf_value_map_remove(&fwd, key), 0);
    }
    cr_assert_eq(wf_value_len(fwd), 5000);
    for (int i = 0; i < 10000; i++) {
        wf_value v;
        snprintf(key, sizeof key, "key-%d", i);
        cr_assert_eq(wf_value_map_get(fwd, key, &v), i % 2 ? 0 : WF_ENOTFOUND, "%s", key);
    }
    cr_assert_not(wf_value_equal(fwd, rev));
    wf_value_release(fwd);
    wf_value_release(rev);
}

Test(value, copy_on_write_leaves_other_holders_alone)
{
    wf_value m;
    cr_assert_eq(wf_value_map_new(&m, 0), 0);
    cr_assert_eq(wf_value_map_set(&m, "x", wf_value_int(1)), 0);
    wf_value snap = wf_value_retain(m);
    cr_assert_eq(wf_value_map_set(&m, "x", wf_value_int(2)), 0);
    cr_assert_eq(wf_value_map_set(&m, "y", wf_value_int(3)), 0);
    cr_assert_neq(m.as.obj, snap.as.obj);
    wf_value v;
    int64_t n;
    cr_assert_eq(wf_value_map_get(snap, "x", &v), 0);
    cr_assert_eq(wf_value_get_int(v, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(wf_value_len(snap), 1);
    wf_value_release(snap);

    wf_value a;
    cr_assert_eq(wf_value_array_new(&a, 2), 0);
    cr_assert_eq(wf_value_array_push(&a, wf_value_int(1)), 0);
    wf_value a2 = wf_value_retain(a);
    cr_assert_eq(wf_value_array_push(&a, wf_value_int(2)), 0);
    cr_assert_eq(wf_value_len(a2), 1);
    cr_assert_eq(wf_value_len(a), 2);
    /* unique now: changes in place */
    void *block = a.as.obj;
    cr_assert_eq(wf_value_array_set(&a, 0, wf_value_int(9)), 0);
    cr_assert_eq(a.as.obj, block);
    wf_value_release(a2);
    wf_value_release(a);
    wf_value_release(m);
}

Test(value, deep_equality)
{
    cr_assert(wf_value_equal(wf_value_int(5), wf_value_uint(5)));
    cr_assert(wf_value_equal(wf_value_uint(5), wf_value_int(5)));
    cr_assert_not(wf_value_equal(wf_value_int(-1), wf_value_uint(UINT64_MAX)));
    cr_assert_not(wf_value_equal(wf_value_int(1), wf_value_double(1.0)));
    cr_assert_not(wf_value_equal(wf_value_double(NAN), wf_value_double(NAN)));
    cr_assert(wf_value_equal(wf_value_nil(), wf_value_nil()));
    cr_assert_not(wf_value_equal(wf_value_bool(1), wf_value_bool(0)));
    wf_value m1, m2, a1, a2;
    cr_assert_eq(wf_value_map_new(&m1, 0), 0);
    cr_assert_eq(wf_value_map_new(&m2, 0), 0);
    cr_assert_eq(wf_value_array_new(&a1, 0), 0);
    cr_assert_eq(wf_value_array_new(&a2, 0), 0);
    cr_assert_eq(wf_value_array_push(&a1, wf_value_int(1)), 0);
    cr_assert_eq(wf_value_array_push(&a1, str("x")), 0);
    cr_assert_eq(wf_value_array_push(&a2, str("x")), 0);
    cr_assert_eq(wf_value_array_push(&a2, wf_value_int(1)), 0);
    cr_assert_not(wf_value_equal(a1, a2), "array order matters");
    cr_assert_eq(wf_value_map_set(&m1, "p", wf_value_retain(a1)), 0);
    cr_assert_eq(wf_value_map_set(&m1, "q", str("y")), 0);
    cr_assert_eq(wf_value_map_set(&m2, "q", str("y")), 0);
    cr_assert_eq(wf_value_map_set(&m2, "p", wf_value_retain(a1)), 0);
    cr_assert(wf_value_equal(m1, m2), "map order does not matter");
    cr_assert_eq(wf_value_map_set(&m2, "p", wf_value_retain(a2)), 0);
    cr_assert_not(wf_value_equal(m1, m2));
    wf_value_release(m1);
    wf_value_release(m2);
    wf_value_release(a1);
    wf_value_release(a2);
}

Test(value, format_as_json)
{
    wf_value m, arr, bytes;
    cr_assert_eq(wf_value_map_new(&m, 0), 0);
    cr_assert_eq(wf_value_array_new(&arr, 0), 0);
    cr_assert_eq(wf_value_map_set(&m, "a", wf_value_int(1)), 0);
    cr_assert_eq(wf_value_array_push(&arr, wf_value_bool(1)), 0);
    cr_assert_eq(wf_value_array_push(&arr, wf_value_nil()), 0);
    cr_assert_eq(wf_value_array_push(&arr, str("x\"y\n")), 0);
    cr_assert_eq(wf_value_map_set(&m, "b", arr), 0);
    cr_assert_eq(wf_value_map_set(&m, "c", wf_value_double(2.5)), 0);
    const unsigned char raw[] = {0, 1};
    cr_assert_eq(wf_value_bytes(&bytes, raw, 2), 0);
    cr_assert_eq(wf_value_map_set(&m, "d", bytes), 0);
    cr_assert_eq(wf_value_map_set(&m, "e", wf_value_double(3)), 0);
    cr_assert_eq(wf_value_map_set(&m, "f", wf_value_uint(UINT64_MAX)), 0);
    const char *want =
        "{\"a\":1,\"b\":[true,null,\"x\\\"y\\n\"],\"c\":2.5,\"d\":\"AAE=\",\"e\":3.0,"
        "\"f\":18446744073709551615}";
    char buf[256];
    size_t n = wf_value_format(m, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    cr_assert_eq(n, strlen(want));
    char small[8];
    cr_assert_eq(wf_value_format(m, small, sizeof small), strlen(want));
    cr_assert_str_eq(small, "{\"a\":1,");
    cr_assert_eq(wf_value_format(m, NULL, 0), strlen(want));
    wf_value_release(m);
}

static wf_value shared;

static void *hammer(void *arg)
{
    for (int i = 0; i < 100000; i++) {
        wf_value v = wf_value_retain(shared);
        wf_value inner;
        cr_assert_eq(wf_value_map_get(v, "list", &inner), 0);
        cr_assert_eq(wf_value_len(inner), 3);
        wf_value_release(v);
    }
    return NULL;
}

static wf_value build_nested(void)
{
    wf_value m, l;
    cr_assert_eq(wf_value_map_new(&m, 0), 0);
    cr_assert_eq(wf_value_array_new(&l, 0), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(wf_value_array_push(&l, str("item")), 0);
    cr_assert_eq(wf_value_map_set(&m, "list", l), 0);
    cr_assert_eq(wf_value_map_set(&m, "name", str("shared")), 0);
    return m;
}

Test(value, refcounts_under_threads, .timeout = 120)
{
    shared = build_nested();
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    wf_value fresh = build_nested();
    cr_assert(wf_value_equal(shared, fresh));
    wf_value_release(fresh);
    wf_value_release(shared);
}

/* ---- out of memory ---- */

static atomic_long budget, mallocs, frees;

static void *f_malloc(size_t n, void *u)
{
    if (atomic_fetch_sub(&budget, 1) <= 0)
        return NULL;
    atomic_fetch_add(&mallocs, 1);
    return malloc(n);
}
static void *f_realloc(void *p, size_t n, void *u)
{
    if (atomic_fetch_sub(&budget, 1) <= 0)
        return NULL;
    if (p == NULL)
        atomic_fetch_add(&mallocs, 1);
    return realloc(p, n);
}
static void f_free(void *p, void *u)
{
    if (p)
        atomic_fetch_add(&frees, 1);
    free(p);
}

/* Builds {"name": "n", "list": ["a", "b", "c"], "more": [0..19]}; rc of the first failure. */
static int try_build(void)
{
    wf_value m = wf_value_nil(), l = wf_value_nil(), s;
    int rc = wf_value_map_new(&m, 1);
    if (rc == 0)
        rc = wf_value_string(&s, "n");
    if (rc == 0)
        rc = wf_value_map_set(&m, "name", s);
    if (rc == 0)
        rc = wf_value_array_new(&l, 1);
    for (int i = 0; i < 3 && rc == 0; i++) {
        char t[2] = {(char)('a' + i), 0};
        rc = wf_value_string(&s, t);
        if (rc == 0)
            rc = wf_value_array_push(&l, s);
    }
    if (rc == 0) {
        rc = wf_value_map_set(&m, "list", l);
        l = wf_value_nil();
    }
    wf_value more = wf_value_nil();
    if (rc == 0)
        rc = wf_value_array_new(&more, 1);
    for (int i = 0; i < 20 && rc == 0; i++)
        rc = wf_value_array_push(&more, wf_value_int(i));
    if (rc == 0) {
        rc = wf_value_map_set(&m, "more", more);
        more = wf_value_nil();
    }
    wf_value_release(more);
    wf_value_release(l);
    wf_value_release(m);
    return rc;
}

Test(value, out_of_memory_is_reported_and_leaks_nothing)
{
    wf_alloc_hooks h = {f_malloc, f_realloc, f_free, NULL};
    cr_assert_eq(wf_set_alloc_hooks(&h), 0);
    int failures = 0;
    for (long n = 0; n < 1000; n++) {
        atomic_store(&budget, n);
        int rc = try_build();
        wf_alloc_trim(); /* cached blocks back to the hooks, so the counts compare */
        cr_assert_eq(atomic_load(&mallocs), atomic_load(&frees), "budget %ld: leak", n);
        if (rc == 0)
            break;
        cr_assert_eq(rc, WF_ENOMEM, "budget %ld: %s", n, wf_err_name(rc));
        failures++;
    }
    cr_assert(failures > 3, "the build never hit the limit");
    atomic_store(&budget, 1 << 30);
    cr_assert_eq(try_build(), 0);
}

/* Strings render as valid JSON: UTF-8 kept, control bytes escaped, ill-formed bytes U+FFFD. */
Test(value, format_strings_are_valid_json)
{
    struct {
        const char *in;
        size_t n;
        const char *want;
    } cases[] = {
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
         "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
        {"a\x01"
         "b\n",
         4, "\"a\\u0001b\\n\""},
        {"\xff", 1, "\"\\ufffd\""},                                      /* never a UTF-8 byte */
        {"\xc3", 1, "\"\\ufffd\""},                                      /* cut short */
        {"\xc0\xaf", 2, "\"\\ufffd\\ufffd\""},                           /* overlong */
        {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},                /* a surrogate */
        {"x\xf4\x90\x80\x80y", 6, "\"x\\ufffd\\ufffd\\ufffd\\ufffdy\""}, /* past U+10FFFF */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wf_value v;
        cr_assert_eq(wf_value_string_n(&v, cases[i].in, cases[i].n), 0);
        char buf[128];
        size_t n = wf_value_format(v, buf, sizeof buf);
        cr_assert_eq(n, strlen(cases[i].want), "case %zu: %s", i, buf);
        cr_assert_str_eq(buf, cases[i].want, "case %zu", i);
        wf_value_release(v);
    }
}

Test(value, last_error_message_names_the_kinds)
{
    wf_value s;
    cr_assert_eq(wf_value_string(&s, "x"), 0);
    int64_t i;
    cr_assert_eq(wf_value_get_int(s, &i), WF_EKIND);
    cr_assert_str_eq(wf_last_error_message(),
                     "wf_value_get_int: the value is a string, not an integer");
    cr_assert_eq(wf_value_get_int(wf_value_uint(UINT64_MAX), &i), WF_ERANGE);
    cr_assert(strstr(wf_last_error_message(), "18446744073709551615 does not fit"));
    wf_value a;
    cr_assert_eq(wf_value_array_new(&a, 0), 0);
    wf_value out;
    cr_assert_eq(wf_value_array_at(a, 3, &out), WF_ERANGE);
    cr_assert_str_eq(wf_last_error_message(), "wf_value_array_at: index 3, length 0");
    cr_assert_eq(wf_value_map_set(&a, "k", wf_value_int(1)), WF_EKIND);
    cr_assert_str_eq(wf_last_error_message(),
                     "wf_value_map_set_n: the value is an array, not a map");
    wf_value_release(a);
    wf_value_release(s);
}
