/*
 * test_store_nats.c: the store (include/wf/store.h) over its NATS JetStream
 * backend, against a nats-server the test starts (tests/nats_server.h): the
 * backend-agnostic cases of tests/store_cases.h, then what is NATS's own:
 * an unreachable server, bad parameters, the server restarted under a
 * store, big checkpoints in chunks, odd run ids, and garbage in the bucket.
 * Skips (exit 77) when nats-server is not installed.
 */
#include "harness.h"

#include <wf/wf.h>

#include <nats/nats.h>

#include "nats_server.h"

/* ------------------------------------------------------------- environment */

typedef struct sc_env {
    nserver srv;
} sc_env;

static void sc_setup(sc_env *e)
{
    int rc = nserver_start(&e->srv);
    if (rc == 77)
        cr_skip_test("nats-server is not installed");
    cr_assert_eq(rc, 0, "nats-server did not start");
}

static wf_store *sc_open(sc_env *e, const wf_store_params *p)
{
    wf_store *s = NULL;
    char *msg = NULL;
    int rc = wf_store_open_nats(&s, e->srv.url, p, NULL, &msg);
    cr_assert_eq(rc, 0, "open: %s (%s)", wf_err_name(rc), msg ? msg : "");
    wf_free(msg);
    return s;
}

static void sc_teardown(sc_env *e)
{
    nserver_destroy(&e->srv);
}

#define STORE_SUITE store_nats
#include "store_cases.h"

/* ------------------------------------------------------------- NATS's own */

Test(store_nats, backend_name_and_bad_parameters)
{
    sc_env t;
    sc_setup(&t);
    wf_store *s = sc_open(&t, NULL);
    cr_assert_str_eq(wf_store_backend(s), "nats");
    wf_store_free(s);
    wf_store_nats_params np;
    wf_store_nats_params_init(&np);
    cr_assert_str_eq(np.prefix, "wf");
    cr_assert_eq(wf_store_open_nats(NULL, t.srv.url, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_open_nats(&s, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_open_nats(&s, "", NULL, NULL, NULL), WF_EINVAL);
    np.prefix = "bad.prefix";
    char *msg = NULL;
    cr_assert_eq(wf_store_open_nats(&s, t.srv.url, NULL, &np, &msg), WF_EINVAL);
    cr_assert_null(s);
    cr_assert_not_null(msg);
    wf_free(msg);
    np.prefix = "wf";
    np.replicas = 0;
    cr_assert_eq(wf_store_open_nats(&s, t.srv.url, NULL, &np, NULL), WF_EINVAL);
    sc_teardown(&t);
}

Test(store_nats, unreachable_server_is_a_clear_error_after_bounded_attempts)
{
    int port = nserver_free_port();
    cr_assert(port > 0);
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    wf_store_nats_params np;
    wf_store_nats_params_init(&np);
    np.connect_attempts = 3;
    np.timeout_ms = 200;
    wf_store *s = (wf_store *)1;
    char *msg = NULL;
    cr_assert_eq(wf_store_open_nats(&s, url, NULL, &np, &msg), WF_EIO);
    cr_assert_null(s);
    cr_assert_not_null(msg);
    cr_assert(strstr(msg, "cannot reach NATS") && strstr(msg, url) && strstr(msg, "3 attempts"),
              "%s", msg);
    wf_free(msg);
}

Test(store_nats, separate_prefixes_do_not_see_each_other)
{
    sc_env t;
    sc_setup(&t);
    wf_store_nats_params np;
    wf_store_nats_params_init(&np);
    np.prefix = "other";
    wf_store *a = sc_open(&t, NULL), *b = NULL;
    cr_assert_eq(wf_store_open_nats(&b, t.srv.url, NULL, &np, NULL), 0);
    cr_assert_eq(wf_store_create(a, "r", "w", NULL), 0);
    cr_assert_eq(wf_store_flush(a), 0);
    wf_store_run_info info;
    cr_assert_eq(wf_store_get_run(b, "r", &info), WF_ENOTFOUND);
    cr_assert_eq(wf_store_create(b, "r", "w2", NULL), 0);
    cr_assert_eq(wf_store_flush(b), 0);
    cr_assert_eq(wf_store_get_run(a, "r", &info), 0);
    cr_assert_str_eq(info.workflow, "w");
    wf_store_run_info_clear(&info);
    wf_store_free(a);
    wf_store_free(b);
    sc_teardown(&t);
}

Test(store_nats, odd_run_ids_and_big_checkpoints)
{
    sc_env t;
    sc_setup(&t);
    wf_store *s = sc_open(&t, NULL);
    const char *ids[] = {"a b", "x.y.z", "*", ">", "=41", "A", "a/b%c", "\xc3\xbc"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        cr_assert_eq(wf_store_create(s, ids[i], "w", NULL), 0, "%s", ids[i]);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        cr_assert_eq(append1(s, ids[i], 1, ids[i], NULL), 0);
    size_t big = 1536 * 1024 + 7; /* three chunks */
    unsigned char *cp = malloc(big);
    for (size_t i = 0; i < big; i++)
        cp[i] = (unsigned char)(i * 31 + 7);
    uint64_t seq = 0;
    cr_assert_eq(wf_store_put_checkpoint(s, "x.y.z", cp, big, NULL, NULL, &seq, NULL), 0);
    cr_assert_eq(seq, 1u);
    cr_assert_eq(wf_store_flush(s), 0);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        jbuf j = {0};
        cr_assert_eq(wf_store_read_journal(s, ids[i], 0, 0, collect, &j, NULL), 0);
        char want[64];
        snprintf(want, sizeof want, "0:1:%s;", ids[i]);
        cr_assert_str_eq(j.text, want, "the records of %s only", ids[i]);
    }
    void *d = NULL;
    size_t len = 0;
    cr_assert_eq(wf_store_get_checkpoint(s, "x.y.z", &d, &len, &seq), 0);
    cr_assert_eq(len, big);
    cr_assert(memcmp(d, cp, big) == 0);
    cr_assert_eq(seq, 1u);
    wf_free(d);
    free(cp);
    int n = 0;
    cr_assert_eq(wf_store_list(s, WF_STORE_MASK_ALL, 0, 0, list_count, &n, NULL), 0);
    cr_assert_eq(n, (int)(sizeof ids / sizeof ids[0]));
    wf_store_free(s);
    sc_teardown(&t);
}

/* Garbage written straight into the bucket: refused as corrupt, skipped by list, no crash. */
Test(store_nats, garbage_in_the_bucket_is_refused)
{
    sc_env t;
    sc_setup(&t);
    wf_store *s = sc_open(&t, NULL);
    cr_assert_eq(wf_store_create(s, "good", "w", NULL), 0);
    cr_assert_eq(wf_store_create(s, "bad", "w", NULL), 0);
    cr_assert_eq(wf_store_flush(s), 0);
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    kvStore *kv = NULL;
    cr_assert_eq(natsConnection_ConnectTo(&nc, t.srv.url), NATS_OK);
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    cr_assert_eq(js_KeyValue(&kv, js, "wf_runs"), NATS_OK);
    uint64_t rev;
    cr_assert_eq(kvStore_PutString(&rev, kv, "bad", "not msgpack at all"), NATS_OK);
    cr_assert_eq(kvStore_PutString(&rev, kv, "unlisted", "\x93\x01\x02"), NATS_OK);
    wf_store_run_info info;
    cr_assert_eq(wf_store_get_run(s, "bad", &info), WF_ECORRUPT);
    cr_assert_eq(wf_store_get_run(s, "unlisted", &info), WF_ECORRUPT);
    int n = 0;
    cr_assert_eq(wf_store_list(s, WF_STORE_MASK_ALL, 0, 0, list_count, &n, NULL), 0);
    cr_assert_eq(n, 1, "only the good run is listed");
    /* the store's own next write to it finds the meta changed under it */
    cr_assert_eq(append1(s, "bad", 1, "x", NULL), 0);
    cr_assert_eq(wf_store_flush(s), 0);
    cr_assert_eq(append1(s, "bad", 1, "y", NULL), WF_ELEASE);
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    wf_store_free(s);
    sc_teardown(&t);
}

/* The server restarts under an open store (file storage): nothing committed is lost, writes go on. */
Test(store_nats, server_restart_under_a_store, .timeout = 120)
{
    sc_env t;
    sc_setup(&t);
    wf_store *s = sc_open(&t, NULL);
    cr_assert_eq(wf_store_create(s, "r", "w", NULL), 0);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(append1(s, "r", 1, "before", NULL), 0);
    cr_assert_eq(wf_store_flush(s), 0);
    nserver_stop(&t.srv);
    cr_assert_eq(nserver_spawn(&t.srv), 0, "restart");
    /* the client reconnects by itself; the first writes may fail while it does */
    int ok = 0;
    for (int i = 0; i < 200 && !ok; i++) {
        wf_store_run_info info;
        if (wf_store_get_run(s, "r", &info) == 0) {
            cr_assert_eq(info.next_seq, 50u);
            wf_store_run_info_clear(&info);
            ok = 1;
        } else {
            nserver_sleep_ms(50);
        }
    }
    cr_assert(ok, "the store reads again after the restart");
    for (int i = 0; i < 50; i++)
        cr_assert_eq(append1(s, "r", 1, "after", NULL), 0);
    cr_assert_eq(wf_store_flush(s), 0);
    jbuf j = {0};
    cr_assert_eq(wf_store_read_journal(s, "r", 0, 0, collect, &j, NULL), 0);
    cr_assert_eq(j.count, 100u);
    wf_store_free(s);
    sc_teardown(&t);
}

/* A removed run's id is free again (the bucket keeps a marker where it was). */
Test(store_nats, a_removed_run_id_can_be_created_again)
{
    sc_env t;
    sc_setup(&t);
    wf_store *s = sc_open(&t, NULL);
    cr_assert_eq(wf_store_create(s, "again", "w1", NULL), 0);
    cr_assert_eq(append1(s, "again", 1, "old", NULL), 0);
    cr_assert_eq(wf_store_flush(s), 0);
    cr_assert_eq(wf_store_remove(s, "again"), 0);
    uint64_t ticket = 0;
    cr_assert_eq(wf_store_create(s, "again", "w2", &ticket), 0);
    cr_assert_eq(append1(s, "again", 1, "new", NULL), 0);
    cr_assert_eq(wf_store_flush(s), 0);
    wf_store_run_info info;
    cr_assert_eq(wf_store_get_run(s, "again", &info), 0);
    cr_assert_str_eq(info.workflow, "w2");
    cr_assert_eq(info.next_seq, 1u);
    wf_store_run_info_clear(&info);
    jbuf j = {0};
    cr_assert_eq(wf_store_read_journal(s, "again", 0, 0, collect, &j, NULL), 0);
    cr_assert_str_eq(j.text, "0:1:new;");
    wf_store_free(s);
    sc_teardown(&t);
}
