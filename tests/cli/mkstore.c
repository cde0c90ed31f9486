/*
 * mkstore.c PATH: writes a SQLite run store for the `wf runs` tests
 * (wf.bats) through the store API, as the engine would:
 *   r-done      two step completions, then a StopEvent result ("done")
 *   r-failed    ended as failed, no result bytes
 *   r-waiting   waiting, owned by "worker-a" with a lease of an hour
 *   r-released  checkpointed and released: no owner
 *   r-expired   running, owned by "crashed" whose lease ran out long ago
 * Exit 0, or 1 with a message.
 */
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ < 0) {                                                                             \
            fprintf(stderr, "mkstore: %s: %s\n", #x, wf_strerror(rc_));                            \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static int64_t long_ago(void *user)
{
    (void)user;
    return 1000; /* 1970: every lease taken with this clock has expired */
}

static int add_step(wf_store *s, const char *run, const char *step, wf_event *in, wf_event *out)
{
    void *buf;
    size_t len;
    const wf_event *emitted[1] = {out};
    CHECK(wf_store_encode_step(step, 1, in, emitted, out ? 1 : 0, &buf, &len));
    wf_store_rec r = {WF_STORE_REC_STEP, buf, len};
    int rc = wf_store_append(s, run, &r, 1, NULL, NULL, NULL, NULL);
    wf_free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mkstore PATH\n");
        return 2;
    }
    wf_registry *reg;
    CHECK(wf_registry_new(&reg));
    const wf_event_type *start_t = wf_registry_builtin(reg, WF_START_EVENT);
    wf_event *start, *stop;
    wf_value v;
    CHECK(wf_event_new(&start, start_t, 1));
    CHECK(wf_value_string(&v, "Hello"));
    CHECK(wf_event_set(start, "data", v));
    CHECK(wf_value_string(&v, "Processed 1 times, data length: 5"));
    CHECK(wf_event_new_stop(&stop, reg, NULL, v));

    /* the first process: finished runs, a waiting one it owns, a released one */
    wf_store_params p;
    wf_store_params_init(&p);
    p.owner = "worker-a";
    p.lease_ms = 3600 * 1000;
    wf_store *s;
    char *msg = NULL;
    if (wf_store_open_sqlite(&s, argv[1], &p, &msg) < 0) {
        fprintf(stderr, "mkstore: %s\n", msg ? msg : "cannot open");
        return 1;
    }
    CHECK(wf_store_create(s, "r-done", "MyWorkflow", NULL));
    CHECK(add_step(s, "r-done", "my_step", start, stop));
    CHECK(add_step(s, "r-done", "my_step", start, NULL));
    wf_store_rec ev = {WF_STORE_REC_EVENT, "\x90", 1};
    CHECK(wf_store_append(s, "r-done", &ev, 1, NULL, NULL, NULL, NULL));
    void *res;
    size_t res_len;
    CHECK(wf_event_to_msgpack(stop, &res, &res_len));
    CHECK(wf_store_put_result(s, "r-done", WF_STORE_DONE, res, res_len, NULL, NULL, NULL));
    wf_free(res);
    CHECK(wf_store_create(s, "r-failed", "MyWorkflow", NULL));
    CHECK(wf_store_put_result(s, "r-failed", WF_STORE_FAILED, NULL, 0, NULL, NULL, NULL));
    CHECK(wf_store_create(s, "r-waiting", "hitl", NULL));
    CHECK(wf_store_set_status(s, "r-waiting", WF_STORE_WAITING, NULL));
    CHECK(wf_store_create(s, "r-released", "hitl", NULL));
    CHECK(wf_store_put_checkpoint(s, "r-released", "\x80", 1, NULL, NULL, NULL, NULL));
    CHECK(wf_store_flush(s));
    CHECK(wf_store_release(s, "r-released"));
    wf_store_free(s);

    /* a process that crashed long ago, its lease expired */
    p.owner = "crashed";
    p.lease_ms = 1000;
    p.clock = long_ago;
    if (wf_store_open_sqlite(&s, argv[1], &p, &msg) < 0) {
        fprintf(stderr, "mkstore: %s\n", msg ? msg : "cannot open");
        return 1;
    }
    CHECK(wf_store_create(s, "r-expired", "MyWorkflow", NULL));
    CHECK(add_step(s, "r-expired", "my_step", start, NULL));
    CHECK(wf_store_flush(s));
    wf_store_free(s);

    wf_event_release(start);
    wf_event_release(stop);
    wf_registry_free(reg);
    return 0;
}
