/*
 * test_event.c: the type registry, subtypes and events.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

static wf_registry *reg;

static void setup(void)
{
    cr_assert_eq(wf_registry_new(&reg), 0);
}

static void teardown(void)
{
    wf_registry_free(reg);
}

TestSuite(event, .init = setup, .fini = teardown);

static const wf_event_type *add(const char *name, const wf_event_type *parent)
{
    const wf_event_type *t;
    cr_assert_eq(wf_registry_add(reg, name, parent, &t), 0, "%s", name);
    return t;
}

Test(event, builtins)
{
    static const char *names[] = {"StartEvent",
                                  "StopEvent",
                                  "InputRequiredEvent",
                                  "HumanResponseEvent",
                                  "StepFailedEvent",
                                  "WorkflowTimedOutEvent",
                                  "WorkflowCancelledEvent",
                                  "WorkflowFailedEvent",
                                  "UnhandledEvent",
                                  "StepStateChanged",
                                  "WorkflowIdleEvent"};
    cr_assert_eq(sizeof names / sizeof names[0], WF_BUILTIN_COUNT);
    cr_assert_eq(wf_registry_count(reg), WF_BUILTIN_COUNT);
    const wf_event_type *stop = wf_registry_builtin(reg, WF_STOP_EVENT);
    for (int i = 0; i < WF_BUILTIN_COUNT; i++) {
        const wf_event_type *t = wf_registry_builtin(reg, (wf_builtin_type)i);
        cr_assert_not_null(t);
        cr_assert_str_eq(wf_event_type_name(t), names[i]);
        cr_assert_eq(wf_registry_find(reg, names[i]), t);
        cr_assert_eq(wf_event_type_id(t), (uint32_t)i);
        cr_assert_eq(wf_event_type_registry(t), reg);
        int terminal = i >= WF_WORKFLOW_TIMED_OUT_EVENT && i <= WF_WORKFLOW_FAILED_EVENT;
        cr_assert_eq(wf_event_type_parent(t), terminal ? stop : NULL, "%s", names[i]);
        cr_assert_eq(wf_event_type_is_stop(t), terminal || i == WF_STOP_EVENT, "%s", names[i]);
    }
    cr_assert_null(wf_registry_builtin(reg, WF_BUILTIN_COUNT));
    cr_assert_null(wf_registry_find(reg, "Nope"));
}

Test(event, registering_types)
{
    const wf_event_type *a = add("A", NULL);
    cr_assert_eq(add("A", NULL), a, "same name and parent: the same type");
    const wf_event_type *t;
    cr_assert_eq(wf_registry_add(reg, "A", wf_registry_builtin(reg, WF_START_EVENT), &t),
                 WF_EEXIST);
    cr_assert_null(t);
    cr_assert_eq(wf_registry_add(reg, "", NULL, &t), WF_EINVAL);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cr_assert_eq(wf_registry_add(reg, big, NULL, &t), WF_EINVAL);
    big[255] = 0;
    cr_assert_eq(wf_registry_add(reg, big, NULL, &t), 0, "255 bytes is allowed");
    cr_assert_eq(wf_registry_add(reg, NULL, NULL, &t), WF_EINVAL);
    cr_assert_eq(wf_registry_add(NULL, "B", NULL, &t), WF_EINVAL);
    wf_registry *other;
    cr_assert_eq(wf_registry_new(&other), 0);
    cr_assert_eq(wf_registry_add(reg, "B", wf_registry_builtin(other, WF_START_EVENT), &t),
                 WF_EINVAL);
    wf_registry_free(other);
    cr_assert_eq(wf_registry_count(reg), WF_BUILTIN_COUNT + 2);
}

Test(event, subtypes)
{
    const wf_event_type *a = add("A", NULL);
    const wf_event_type *b = add("B", a);
    const wf_event_type *c = add("C", b);
    const wf_event_type *d = add("D", a);
    cr_assert(wf_event_type_is(c, a));
    cr_assert(wf_event_type_is(c, b));
    cr_assert(wf_event_type_is(c, c));
    cr_assert_not(wf_event_type_is(a, c));
    cr_assert_not(wf_event_type_is(c, d));
    cr_assert_not(wf_event_type_is(NULL, a));
    const wf_event_type *mystop = add("MyStop", wf_registry_builtin(reg, WF_STOP_EVENT));
    cr_assert(wf_event_type_is_stop(mystop));
    cr_assert_not(wf_event_type_is_stop(c));
}

Test(event, fields)
{
    const wf_event_type *a = add("A", NULL);
    wf_event *e;
    cr_assert_eq(wf_event_new(&e, a, 1), 0);
    cr_assert_eq(wf_event_type_of(e), a);
    cr_assert_str_eq(wf_event_type_name_of(e), "A");
    wf_value s;
    cr_assert_eq(wf_value_string(&s, "hello"), 0);
    cr_assert_eq(wf_event_set(e, "greeting", s), 0);
    cr_assert_eq(wf_event_set(e, "n", wf_value_int(1)), 0);
    cr_assert_eq(wf_event_set(e, "a_rather_long_field_name_of_forty_chars!", wf_value_int(2)), 0);
    cr_assert_eq(wf_event_set(e, "n", wf_value_int(3)), 0); /* replaces */
    cr_assert_eq(wf_event_field_count(e), 3);
    const char *k;
    wf_value v;
    int64_t n;
    cr_assert_eq(wf_event_field_at(e, 0, &k, &v), 0);
    cr_assert_str_eq(k, "greeting");
    cr_assert_eq(wf_event_field_at(e, 1, &k, &v), 0);
    cr_assert_str_eq(k, "n");
    cr_assert_eq(wf_value_get_int(v, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(wf_event_field_at(e, 2, &k, &v), 0);
    cr_assert_str_eq(k, "a_rather_long_field_name_of_forty_chars!");
    cr_assert_eq(wf_event_field_at(e, 3, &k, &v), WF_ERANGE);
    cr_assert(wf_event_has(e, "n"));
    cr_assert_not(wf_event_has(e, "m"));
    cr_assert_eq(wf_event_lookup(e, "m", &v), WF_ENOTFOUND);
    cr_assert_eq(wf_value_get_int(wf_event_get(e, "m", wf_value_int(9)), &n), 0);
    cr_assert_eq(n, 9);
    cr_assert_eq(wf_event_set(e, "", wf_value_int(1)), WF_EINVAL);
    cr_assert_eq(wf_event_set(e, NULL, wf_value_int(1)), WF_EINVAL);
    wf_event_release(e);
}

Test(event, growth_past_capacity)
{
    const wf_event_type *a = add("A", NULL);
    wf_event *e;
    cr_assert_eq(wf_event_new(&e, a, 2), 0);
    char key[16];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "field%d", i);
        cr_assert_eq(wf_event_set(e, key, wf_value_int(i)), 0);
    }
    cr_assert_eq(wf_event_field_count(e), 20);
    for (int i = 0; i < 20; i++) {
        int64_t n;
        snprintf(key, sizeof key, "field%d", i);
        cr_assert_eq(wf_value_get_int(wf_event_get(e, key, wf_value_nil()), &n), 0);
        cr_assert_eq(n, i);
    }
    wf_event_release(e);
}

Test(event, frozen_and_shared_events_cannot_change)
{
    const wf_event_type *a = add("A", NULL);
    wf_event *e;
    cr_assert_eq(wf_event_new1(&e, a, "k", wf_value_int(1)), 0);
    wf_event *again = wf_event_retain(e);
    cr_assert_eq(wf_event_set(e, "k", wf_value_int(2)), WF_EFROZEN, "shared");
    wf_event_release(again);
    cr_assert_eq(wf_event_set(e, "k", wf_value_int(2)), 0, "unique again");
    cr_assert_not(wf_event_is_frozen(e));
    wf_event_freeze(e);
    cr_assert(wf_event_is_frozen(e));
    wf_value s;
    cr_assert_eq(wf_value_string(&s, "x"), 0);
    cr_assert_eq(wf_event_set(e, "k", s), WF_EFROZEN);
    int64_t n;
    cr_assert_eq(wf_value_get_int(wf_event_get(e, "k", wf_value_nil()), &n), 0);
    cr_assert_eq(n, 2);
    wf_event_release(e);
}

Test(event, constructors_and_equality)
{
    const wf_event_type *a = add("A", NULL);
    const wf_event_type *b = add("B", NULL);
    wf_event *x, *y, *z, *none;
    cr_assert_eq(wf_event_new2(&x, a, "p", wf_value_int(1), "q", wf_value_bool(1)), 0);
    cr_assert_eq(wf_event_new2(&y, a, "q", wf_value_bool(1), "p", wf_value_int(1)), 0);
    cr_assert_eq(wf_event_new2(&z, b, "p", wf_value_int(1), "q", wf_value_bool(1)), 0);
    cr_assert_eq(wf_event_new1(&none, a, NULL, wf_value_nil()), 0);
    cr_assert_eq(wf_event_field_count(none), 0);
    cr_assert(wf_event_equal(x, y), "field order does not matter");
    cr_assert_not(wf_event_equal(x, z), "types differ");
    cr_assert_not(wf_event_equal(x, none));
    wf_event *stop;
    wf_value r;
    cr_assert_eq(wf_value_string(&r, "done"), 0);
    cr_assert_eq(wf_event_new_stop(&stop, reg, NULL, r), 0);
    cr_assert(wf_event_type_is_stop(wf_event_type_of(stop)));
    const char *s;
    cr_assert_eq(wf_value_get_string(wf_event_result(stop), &s, NULL), 0);
    cr_assert_str_eq(s, "done");
    cr_assert(wf_value_is_nil(wf_event_result(x)));
    wf_event *bad = (wf_event *)1;
    cr_assert_eq(wf_event_new_stop(&bad, reg, a, wf_value_int(1)), WF_EINVAL);
    cr_assert_null(bad);
    cr_assert_eq(wf_event_new(&bad, NULL, 0), WF_EINVAL);
    cr_assert_eq(wf_event_new1(&bad, NULL, "k", wf_value_int(1)), WF_EINVAL);
    cr_assert_eq(wf_event_new(NULL, a, 0), WF_EINVAL);
    cr_assert_null(wf_event_type_of(NULL));
    wf_event_release(NULL);
    wf_event_release(x);
    wf_event_release(y);
    wf_event_release(z);
    wf_event_release(none);
    wf_event_release(stop);
}

Test(event, constructor_keys_short_long_empty_and_repeated)
{
    const wf_event_type *a = add("A", NULL);
    wf_event *e;
    /* 11 bytes (inline), 12 (the first on the heap) and longer */
    cr_assert_eq(
        wf_event_new2(&e, a, "elevenchars", wf_value_int(11), "twelve_chars", wf_value_int(12)), 0);
    int64_t v = 0;
    cr_assert_eq(wf_value_get_int(wf_event_get(e, "elevenchars", wf_value_nil()), &v), 0);
    cr_assert_eq(v, 11);
    cr_assert_eq(wf_value_get_int(wf_event_get(e, "twelve_chars", wf_value_nil()), &v), 0);
    cr_assert_eq(v, 12);
    cr_assert_not(wf_event_has(e, "elevenchar"), "a prefix is another key");
    cr_assert_not(wf_event_has(e, "elevenchars!"), "so is a longer key");
    cr_assert_not(wf_event_has(e, "twelve_chars!"));
    const char *k;
    cr_assert_eq(wf_event_field_at(e, 1, &k, NULL), 0);
    cr_assert_str_eq(k, "twelve_chars");
    wf_event_release(e);
    wf_value str;
    cr_assert_eq(wf_value_string(&str, "freed with the event"), 0);
    cr_assert_eq(wf_event_new1(&e, a, "a_key_of_more_than_twelve_bytes", str), 0);
    cr_assert(wf_event_has(e, "a_key_of_more_than_twelve_bytes"));
    wf_event_release(e);
    e = (wf_event *)1;
    cr_assert_eq(wf_event_new1(&e, a, "", wf_value_int(1)), WF_EINVAL);
    cr_assert_null(e);
    /* the same key twice: the second value replaces the first */
    cr_assert_eq(wf_event_new2(&e, a, "k", wf_value_int(1), "k", wf_value_int(2)), 0);
    cr_assert_eq(wf_event_field_count(e), 1);
    cr_assert_eq(wf_value_get_int(wf_event_get(e, "k", wf_value_nil()), &v), 0);
    cr_assert_eq(v, 2);
    wf_event_release(e);
}

static wf_event *shared;

static void *reader(void *arg)
{
    for (int i = 0; i < 100000; i++) {
        wf_event *e = wf_event_retain(shared);
        int64_t n;
        cr_assert_eq(wf_value_get_int(wf_event_get(e, "k", wf_value_nil()), &n), 0);
        cr_assert_eq(n, 42);
        wf_event_release(e);
    }
    return NULL;
}

Test(event, shared_between_threads, .timeout = 120)
{
    const wf_event_type *a = add("A", NULL);
    cr_assert_eq(wf_event_new1(&shared, a, "k", wf_value_int(42)), 0);
    wf_event_freeze(shared);
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, reader, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(wf_event_field_count(shared), 1);
    wf_event_release(shared);
}

Test(event, last_error_message_of_a_frozen_event)
{
    const wf_event_type *t;
    cr_assert_eq(wf_registry_add(reg, "Msg", NULL, &t), 0);
    wf_event *ev;
    cr_assert_eq(wf_event_new(&ev, t, 1), 0);
    wf_event_freeze(ev);
    cr_assert_eq(wf_event_set(ev, "k", wf_value_int(1)), WF_EFROZEN);
    cr_assert_str_eq(wf_last_error_message(),
                     "wf_event_set: the Msg event is frozen: copy it to change it");
    const wf_event_type *other;
    cr_assert_eq(wf_registry_add(reg, "Msg", wf_registry_builtin(reg, WF_STOP_EVENT), &other),
                 WF_EEXIST);
    cr_assert(strstr(wf_last_error_message(), "\"Msg\" exists with another parent"));
    wf_event_release(ev);
}

/* ------------------------------------------------------- declared fields */

Test(event, declared_fields_build_and_read_as_fields_by_name)
{
    const wf_event_type *t = add("Point", NULL);
    const wf_event_field *fx, *fy, *flong, *again;
    cr_assert_eq(wf_event_type_add_field(t, "x", &fx), 0);
    cr_assert_eq(wf_event_type_add_field(t, "y", &fy), 0);
    cr_assert_eq(wf_event_type_add_field(t, "a_key_longer_than_inline", &flong), 0);
    cr_assert_eq(wf_event_type_add_field(t, "y", &again), 0);
    cr_assert_eq(again, fy, "a key declared again is the same field");
    cr_assert_eq(wf_event_type_field_count(t), 3);
    cr_assert_eq(wf_event_field_index(fx), 0);
    cr_assert_eq(wf_event_field_index(flong), 2);
    cr_assert_str_eq(wf_event_field_key(flong), "a_key_longer_than_inline");

    wf_value s;
    cr_assert_eq(wf_value_string(&s, "a string that is the event's own"), 0);
    wf_value vals[3] = {wf_value_int(-7), wf_value_double(2.5), s};
    wf_event *ev;
    cr_assert_eq(wf_event_new_fields(&ev, t, vals, 3), 0);
    /* by handle, by name, in declaration order */
    int64_t x = 0;
    cr_assert_eq(wf_value_get_int(wf_event_get_field(ev, fx, wf_value_nil()), &x), 0);
    cr_assert_eq(x, -7);
    double y = 0;
    cr_assert_eq(wf_value_get_double(wf_event_get(ev, "y", wf_value_nil()), &y), 0);
    cr_assert_eq(y, 2.5);
    const char *str;
    cr_assert_eq(wf_value_get_string(wf_event_get_field(ev, flong, wf_value_nil()), &str, NULL), 0);
    cr_assert_str_eq(str, "a string that is the event's own");
    const char *k;
    cr_assert_eq(wf_event_field_at(ev, 2, &k, NULL), 0);
    cr_assert_str_eq(k, "a_key_longer_than_inline");
    /* the same event as one built by name */
    wf_event *byname;
    cr_assert_eq(wf_event_new(&byname, t, 0), 0);
    cr_assert_eq(wf_event_set(byname, "a_key_longer_than_inline", wf_value_retain(s)), 0);
    cr_assert_eq(wf_event_set(byname, "x", wf_value_int(-7)), 0);
    cr_assert_eq(wf_event_set(byname, "y", wf_value_double(2.5)), 0);
    cr_assert(wf_event_equal(ev, byname));
    /* the handle reads an event built by name too (no positions: by key) */
    cr_assert_eq(wf_value_get_int(wf_event_get_field(byname, fx, wf_value_nil()), &x), 0);
    cr_assert_eq(x, -7);
    /* setting fields later keeps the handles right: replaced in place, added at the end */
    cr_assert_eq(wf_event_set(ev, "x", wf_value_int(8)), 0);
    cr_assert_eq(wf_event_set(ev, "z", wf_value_int(9)), 0);
    cr_assert_eq(wf_value_get_int(wf_event_get_field(ev, fx, wf_value_nil()), &x), 0);
    cr_assert_eq(x, 8);
    cr_assert_eq(wf_value_get_double(wf_event_get_field(ev, fy, wf_value_nil()), &y), 0);
    cr_assert_eq(y, 2.5);
    wf_event_release(byname);
    wf_event_release(ev);
}

Test(event, a_declared_field_reads_events_of_other_types_and_older_events_by_key)
{
    const wf_event_type *t = add("Declared", NULL), *u = add("Other", NULL);
    const wf_event_field *fa, *fb;
    cr_assert_eq(wf_event_type_add_field(t, "a", &fa), 0);
    wf_value one = wf_value_int(1);
    wf_event *old;
    cr_assert_eq(wf_event_new_fields(&old, t, &one, 1), 0);
    /* declared after `old` was built: `old` has no such field */
    cr_assert_eq(wf_event_type_add_field(t, "b", &fb), 0);
    cr_assert_eq(wf_event_get_field(old, fb, wf_value_int(-1)).as.i, -1);
    cr_assert_eq(wf_event_set(old, "b", wf_value_int(2)), 0);
    cr_assert_eq(wf_event_get_field(old, fb, wf_value_int(-1)).as.i, 2);
    /* an event of another type with the key: found by key; without it: dflt */
    wf_event *other;
    cr_assert_eq(wf_event_new2(&other, u, "b", wf_value_int(5), "a", wf_value_int(6)), 0);
    cr_assert_eq(wf_event_get_field(other, fa, wf_value_int(-1)).as.i, 6);
    cr_assert_eq(wf_event_get_field(other, fb, wf_value_int(-1)).as.i, 5);
    wf_event *none;
    cr_assert_eq(wf_event_new(&none, u, 0), 0);
    cr_assert_eq(wf_event_get_field(none, fa, wf_value_int(-1)).as.i, -1);
    wf_event_release(none);
    wf_event_release(other);
    wf_event_release(old);
    /* a type with no declared fields builds an empty event */
    wf_event *empty;
    cr_assert_eq(wf_event_new_fields(&empty, u, NULL, 0), 0);
    cr_assert_eq(wf_event_field_count(empty), 0);
    wf_event_release(empty);
}

Test(event, declared_fields_refuse_bad_input_and_release_the_values)
{
    const wf_event_type *t = add("Bad", NULL);
    const wf_event_field *f;
    cr_assert_eq(wf_event_type_add_field(NULL, "k", &f), WF_EINVAL);
    cr_assert_null(f);
    cr_assert_eq(wf_event_type_add_field(t, NULL, &f), WF_EINVAL);
    cr_assert_eq(wf_event_type_add_field(t, "k", NULL), WF_EINVAL);
    cr_assert_eq(wf_event_type_add_field(t, "", &f), WF_EINVAL);
    char big[300];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cr_assert_eq(wf_event_type_add_field(t, big, &f), WF_EINVAL);
    for (int i = 0; i < WF_EVENT_MAX_FIELDS; i++) {
        char key[16];
        snprintf(key, sizeof key, "f%d", i);
        cr_assert_eq(wf_event_type_add_field(t, key, &f), 0);
    }
    cr_assert_eq(wf_event_type_add_field(t, "one_too_many", &f), WF_ERANGE);
    cr_assert(strstr(wf_last_error_message(), "32 fields") != NULL, "%s", wf_last_error_message());
    cr_assert_eq(wf_event_type_add_field(t, "f3", &f), 0, "an existing key is still found");
    cr_assert_eq(wf_event_field_index(f), 3);
    /* the wrong number of values: refused, the values released (ASan: no leak) */
    wf_value s;
    cr_assert_eq(wf_value_string(&s, "released on failure"), 0);
    wf_event *ev = (wf_event *)1;
    cr_assert_eq(wf_event_new_fields(&ev, t, &s, 1), WF_EINVAL);
    cr_assert_null(ev);
    cr_assert(strstr(wf_last_error_message(), "declares 32 fields, not 1") != NULL, "%s",
              wf_last_error_message());
    cr_assert_eq(wf_event_new_fields(NULL, t, NULL, 0), WF_EINVAL);
    cr_assert_eq(wf_event_new_fields(&ev, NULL, NULL, 0), WF_EINVAL);
    cr_assert_eq(wf_event_new_fields(&ev, t, NULL, 32), WF_EINVAL);
    cr_assert_eq(wf_event_type_field_count(NULL), 0);
    cr_assert_null(wf_event_field_key(NULL));
    cr_assert_eq(wf_event_get_field(NULL, f, wf_value_int(4)).as.i, 4);
    cr_assert_eq(wf_event_get_field(ev, NULL, wf_value_int(4)).as.i, 4);
}

/* Two threads declare the same keys at once: one field per key, positions 0..n-1. */
static void *declare_all(void *arg)
{
    const wf_event_type *t = arg;
    for (int i = 0; i < 16; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        const wf_event_field *f;
        if (wf_event_type_add_field(t, key, &f) < 0)
            return (void *)1;
    }
    return NULL;
}

Test(event, concurrent_declarations_give_one_field_per_key)
{
    const wf_event_type *t = add("Raced", NULL);
    pthread_t a, b;
    cr_assert_eq(pthread_create(&a, NULL, declare_all, (void *)t), 0);
    cr_assert_eq(pthread_create(&b, NULL, declare_all, (void *)t), 0);
    void *ra, *rb;
    pthread_join(a, &ra);
    pthread_join(b, &rb);
    cr_assert_null(ra);
    cr_assert_null(rb);
    cr_assert_eq(wf_event_type_field_count(t), 16);
    for (int i = 0; i < 16; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        const wf_event_field *f;
        cr_assert_eq(wf_event_type_add_field(t, key, &f), 0);
        cr_assert_lt(wf_event_field_index(f), 16);
    }
}
