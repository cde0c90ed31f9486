/*
 * store_cases.h: the store's behaviour, whatever the backend: every
 * operation, listing pages, reopen, leases between two owners, a write
 * after a lost lease, group commit under concurrent appends. The file that
 * includes it defines STORE_SUITE (the Criterion suite name), sc_env and
 * sc_setup / sc_open / sc_teardown (a fresh, empty store location per test;
 * sc_open may be called more than once on it, for reopen and two owners).
 * The cases are those of tests/test_store.c (the SQLite backend), written
 * once here so that every backend must pass the same ones.
 */
#ifndef WF_TEST_STORE_CASES_H
#define WF_TEST_STORE_CASES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

static int append1(wf_store *s, const char *run, uint32_t kind, const char *text, uint64_t *seq)
{
    wf_store_rec r = {kind, text, strlen(text)};
    return wf_store_append(s, run, &r, 1, NULL, NULL, seq, NULL);
}

/* Collects a run's journal as "seq:kind:text;" */
typedef struct jbuf {
    char text[8192];
    size_t n;
    uint64_t count;
} jbuf;

static int collect(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    jbuf *j = user;
    j->n += (size_t)snprintf(j->text + j->n, sizeof j->text - j->n, "%llu:%u:%.*s;",
                             (unsigned long long)seq, kind, (int)len, (const char *)data);
    j->count++;
    return 0;
}

static int64_t fake_now = 1000000;
static int64_t fake_clock(void *user)
{
    (void)user;
    return __atomic_load_n(&fake_now, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------- the basics */

static atomic_int done_calls, done_errors;
static void on_done(int rc, uint64_t ticket, void *user)
{
    (void)ticket;
    (void)user;
    atomic_fetch_add(&done_calls, 1);
    if (rc < 0)
        atomic_fetch_add(&done_errors, 1);
}

static int list_count(const wf_store_run_info *info, void *user)
{
    (void)info;
    (*(int *)user)++;
    return 0;
}

Test(STORE_SUITE, every_operation)
{
    sc_env t;
    sc_setup(&t);
    wf_store *s = sc_open(&t, NULL);
    uint64_t ticket = 0, seq = 99;
    cr_assert_eq(wf_store_create(s, "run/1", "chain", &ticket), 0);
    cr_assert(ticket > 0);
    cr_assert_eq(wf_store_create(s, "run/1", "chain", NULL), WF_EEXIST, "queued duplicate");
    cr_assert_eq(append1(s, "run/1", WF_STORE_REC_STEP, "a", &seq), 0);
    cr_assert_eq(seq, 0u);
    wf_store_rec two[2] = {{WF_STORE_REC_EVENT, "bb", 2}, {WF_STORE_REC_STEP, "", 0}};
    cr_assert_eq(wf_store_append(s, "run/1", two, 2, on_done, NULL, &seq, &ticket), 0);
    cr_assert_eq(seq, 1u);
    cr_assert_eq(wf_store_set_status(s, "run/1", WF_STORE_WAITING, NULL), 0);
    cr_assert_eq(wf_store_put_checkpoint(s, "run/1", "ckpt", 4, on_done, NULL, &seq, NULL), 0);
    cr_assert_eq(seq, 3u, "the checkpoint covers records 0..2");
    cr_assert_eq(wf_store_wait(s, ticket), 0);
    cr_assert(wf_store_durable(s) >= ticket);
    cr_assert_eq(wf_store_flush(s), 0);
    cr_assert_eq(atomic_load(&done_calls), 2);
    cr_assert_eq(atomic_load(&done_errors), 0);

    wf_store_run_info info;
    cr_assert_eq(wf_store_get_run(s, "run/1", &info), 0);
    cr_assert_str_eq(info.run_id, "run/1");
    cr_assert_str_eq(info.workflow, "chain");
    cr_assert_not_null(info.owner);
    cr_assert_eq(info.status, WF_STORE_WAITING);
    cr_assert_eq(info.next_seq, 3u);
    cr_assert_eq(info.checkpoint_seq, 3u);
    cr_assert(info.lease_until_ms > info.created_ms);
    wf_store_run_info_clear(&info);
    cr_assert_null(info.run_id);

    jbuf j = {0};
    uint64_t next = 0;
    cr_assert_eq(wf_store_read_journal(s, "run/1", 0, 0, collect, &j, &next), 0);
    cr_assert_str_eq(j.text, "0:1:a;1:2:bb;2:1:;");
    cr_assert_eq(next, 3u);
    memset(&j, 0, sizeof j);
    cr_assert_eq(wf_store_read_journal(s, "run/1", 1, 1, collect, &j, &next), 0);
    cr_assert_str_eq(j.text, "1:2:bb;");
    cr_assert_eq(next, 2u);
    memset(&j, 0, sizeof j);
    cr_assert_eq(wf_store_read_journal(s, "run/1", 3, 0, collect, &j, &next), 0);
    cr_assert_eq(j.count, 0u);
    cr_assert_eq(next, 3u);
    cr_assert_eq(wf_store_read_journal(s, "nope", 0, 0, collect, &j, NULL), WF_ENOTFOUND);

    void *data;
    size_t len;
    cr_assert_eq(wf_store_get_checkpoint(s, "run/1", &data, &len, &seq), 0);
    cr_assert_eq(len, 4u);
    cr_assert(memcmp(data, "ckpt", 4) == 0);
    cr_assert_eq(seq, 3u);
    wf_free(data);
    int32_t status;
    cr_assert_eq(wf_store_get_result(s, "run/1", &status, &data, &len), WF_EAGAIN);

    /* a second run, listed and finished */
    cr_assert_eq(wf_store_create(s, "run/2", "chain", NULL), 0);
    cr_assert_eq(wf_store_get_checkpoint(s, "run/2", &data, &len, NULL), WF_ENOTFOUND);
    cr_assert_eq(wf_store_put_result(s, "run/2", WF_STORE_DONE, "42", 2, on_done, NULL, &ticket),
                 0);
    cr_assert_eq(append1(s, "run/2", 1, "late", NULL), WF_ESTATE, "finished: no more writes");
    cr_assert_eq(wf_store_wait(s, ticket), 0);
    cr_assert_eq(wf_store_get_result(s, "run/2", &status, &data, &len), 0);
    cr_assert_eq(status, WF_STORE_DONE);
    cr_assert_eq(len, 2u);
    cr_assert(memcmp(data, "42", 2) == 0);
    wf_free(data);
    cr_assert_eq(wf_store_claim(s, "run/2", NULL), WF_ESTATE);
    cr_assert_eq(wf_store_create(s, "run/2", "chain", NULL), WF_EEXIST, "committed duplicate");

    int n = 0;
    cr_assert_eq(wf_store_list(s, WF_STORE_MASK_ALL, 0, 0, list_count, &n, NULL), 0);
    cr_assert_eq(n, 2);
    n = 0;
    cr_assert_eq(wf_store_list(s, WF_STORE_MASK(WF_STORE_WAITING), 0, 0, list_count, &n, NULL), 0);
    cr_assert_eq(n, 1);
    n = 0;
    cr_assert_eq(wf_store_list(s, WF_STORE_MASK(WF_STORE_DONE), 0, 0, list_count, &n, NULL), 0);
    cr_assert_eq(n, 1);
    n = 0;
    cr_assert_eq(wf_store_list(s, WF_STORE_MASK(WF_STORE_RELEASED), 0, 0, list_count, &n, NULL), 0);
    cr_assert_eq(n, 0);

    /* idle release, then claim back */
    cr_assert_eq(wf_store_release(s, "run/1"), 0);
    cr_assert_eq(append1(s, "run/1", 1, "x", NULL), WF_ENOTFOUND, "released: not ours");
    cr_assert_eq(wf_store_get_run(s, "run/1", &info), 0);
    cr_assert_eq(info.status, WF_STORE_RELEASED);
    cr_assert_null(info.owner);
    wf_store_run_info_clear(&info);
    cr_assert_eq(wf_store_claim(s, "run/1", &info), 0);
    cr_assert_eq(info.status, WF_STORE_RUNNING);
    cr_assert_eq(info.next_seq, 3u);
    wf_store_run_info_clear(&info);
    cr_assert_eq(append1(s, "run/1", 1, "d", &seq), 0);
    cr_assert_eq(seq, 3u);
    uint32_t lost = 9;
    cr_assert_eq(wf_store_renew(s, &lost), 0);
    cr_assert_eq(lost, 0u);

    cr_assert_eq(wf_store_remove(s, "run/1"), 0);
    cr_assert_eq(wf_store_get_run(s, "run/1", &info), WF_ENOTFOUND);
    cr_assert_eq(append1(s, "run/1", 1, "x", NULL), WF_ENOTFOUND);
    wf_store_free(s);
    sc_teardown(&t);
}

/* A queued release: its outcome in the callback once committed; one that lost the lease fails. */
static atomic_int rel_rc = 1;
static void on_released(int rc, uint64_t ticket, void *user)
{
    (void)ticket;
    (void)user;
    atomic_store(&rel_rc, rc);
}

Test(STORE_SUITE, release_queued)
{
    sc_env t;
    sc_setup(&t);
    wf_store_params pa, pb;
    wf_store_params_init(&pa);
    pa.owner = "owner-a";
    pa.clock = fake_clock;
    pa.lease_ms = 1000;
    pb = pa;
    pb.owner = "owner-b";
    wf_store *a = sc_open(&t, &pa);
    cr_assert_eq(wf_store_release_queued(a, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_create(a, "r", "w", NULL), 0);
    cr_assert_eq(append1(a, "r", 1, "a0", NULL), 0);
    cr_assert_eq(wf_store_put_checkpoint(a, "r", "ck", 2, NULL, NULL, NULL, NULL), 0);
    atomic_store(&rel_rc, 1);
    uint64_t ticket = 0;
    cr_assert_eq(wf_store_release_queued(a, "r", on_released, NULL, &ticket), 0);
    cr_assert(append1(a, "r", 1, "late", NULL) < 0, "no write after the release");
    cr_assert_eq(wf_store_flush(a), 0);
    cr_assert_eq(atomic_load(&rel_rc), 0, "the callback had the outcome");
    cr_assert(wf_store_durable(a) >= ticket);
    wf_store_run_info info;
    cr_assert_eq(wf_store_get_run(a, "r", &info), 0);
    cr_assert_eq(info.status, WF_STORE_RELEASED);
    cr_assert_null(info.owner);
    wf_store_run_info_clear(&info);
    void *ck = NULL;
    size_t len = 0;
    cr_assert_eq(wf_store_get_checkpoint(a, "r", &ck, &len, NULL), 0, "committed before it");
    cr_assert_eq(len, 2u);
    wf_free(ck);
    /* b claims it; a claims it back after b's lease expired; b's release then fails */
    wf_store *b = sc_open(&t, &pb);
    cr_assert_eq(wf_store_claim(b, "r", NULL), 0);
    cr_assert_eq(wf_store_flush(b), 0);
    __atomic_add_fetch(&fake_now, 1001, __ATOMIC_RELAXED);
    cr_assert_eq(wf_store_claim(a, "r", NULL), 0);
    atomic_store(&rel_rc, 1);
    int rc = wf_store_release_queued(b, "r", on_released, NULL, NULL);
    if (rc == 0) { /* queued: the commit finds the lease gone */
        cr_assert_eq(wf_store_flush(b), 0);
        cr_assert_eq(atomic_load(&rel_rc), WF_ELEASE);
    } else {
        cr_assert_eq(rc, WF_ELEASE);
    }
    cr_assert_eq(wf_store_get_run(a, "r", &info), 0);
    cr_assert_str_eq(info.owner, "owner-a");
    wf_store_run_info_clear(&info);
    wf_store_free(b);
    wf_store_free(a);
    sc_teardown(&t);
}

Test(STORE_SUITE, list_pages_with_a_cursor)
{
    sc_env t;
    sc_setup(&t);
    wf_store *s = sc_open(&t, NULL);
    char id[32];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "r%02d", i);
        cr_assert_eq(wf_store_create(s, id, "w", NULL), 0);
        if (i % 5 == 0)
            cr_assert_eq(wf_store_set_status(s, id, WF_STORE_WAITING, NULL), 0);
    }
    cr_assert_eq(wf_store_flush(s), 0);
    int n = 0, pages = 0;
    uint64_t cur = 0;
    do {
        cr_assert_eq(wf_store_list(s, WF_STORE_MASK_INFLIGHT, cur, 10, list_count, &n, &cur), 0);
        pages++;
    } while (cur != 0 && pages < 10);
    cr_assert_eq(n, 25);
    cr_assert_eq(pages, 3);
    n = 0;
    cr_assert_eq(wf_store_list(s, WF_STORE_MASK(WF_STORE_WAITING), 0, 0, list_count, &n, NULL), 0);
    cr_assert_eq(n, 5);
    wf_store_free(s);
    sc_teardown(&t);
}

Test(STORE_SUITE, reopen_keeps_everything)
{
    sc_env t;
    sc_setup(&t);
    wf_store *s = sc_open(&t, NULL);
    cr_assert_eq(wf_store_create(s, "a", "w", NULL), 0);
    cr_assert_eq(wf_store_create(s, "b", "w", NULL), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(append1(s, i % 2 ? "a" : "b", 1, i % 2 ? "A" : "B", NULL), 0);
    cr_assert_eq(wf_store_put_checkpoint(s, "a", "cp", 2, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(wf_store_put_result(s, "b", WF_STORE_FAILED, "err", 3, NULL, NULL, NULL), 0);
    wf_store_free(s); /* commits what is queued */

    s = sc_open(&t, NULL);
    wf_store_run_info info;
    cr_assert_eq(wf_store_get_run(s, "a", &info), 0);
    cr_assert_eq(info.next_seq, 50u);
    cr_assert_eq(info.checkpoint_seq, 50u);
    cr_assert_eq(info.status, WF_STORE_RUNNING);
    wf_store_run_info_clear(&info);
    int32_t st;
    void *d;
    size_t l;
    cr_assert_eq(wf_store_get_result(s, "b", &st, &d, &l), 0);
    cr_assert_eq(st, WF_STORE_FAILED);
    cr_assert_eq(l, 3u);
    wf_free(d);
    jbuf j = {0};
    cr_assert_eq(wf_store_read_journal(s, "b", 0, 0, collect, &j, NULL), 0);
    cr_assert_eq(j.count, 50u);
    cr_assert_eq(wf_store_create(s, "a", "w", NULL), WF_EEXIST);
    /* the previous store's owner id differs (default ids are per open), its lease holds */
    cr_assert_eq(wf_store_claim(s, "a", NULL), WF_ELEASE);
    wf_store_free(s);
    sc_teardown(&t);
}

/* ------------------------------------------------------------------ leases */

Test(STORE_SUITE, claim_held_by_another_owner_and_lease_expiry)
{
    sc_env t;
    sc_setup(&t);
    wf_store_params pa, pb;
    wf_store_params_init(&pa);
    pa.owner = "owner-a";
    pa.clock = fake_clock;
    pa.lease_ms = 1000;
    pb = pa;
    pb.owner = "owner-b";
    wf_store *a = sc_open(&t, &pa);
    wf_store *b = sc_open(&t, &pb);
    cr_assert_eq(wf_store_create(a, "r", "w", NULL), 0);
    cr_assert_eq(append1(a, "r", 1, "a0", NULL), 0);
    cr_assert_eq(wf_store_flush(a), 0);
    cr_assert_eq(wf_store_claim(b, "r", NULL), WF_ELEASE);
    cr_assert_eq(append1(b, "r", 1, "b?", NULL), WF_ENOTFOUND);
    cr_assert_eq(wf_store_create(b, "r", "w", NULL), WF_EEXIST);

    /* a renews: still held */
    __atomic_add_fetch(&fake_now, 900, __ATOMIC_RELAXED);
    cr_assert_eq(wf_store_renew(a, NULL), 0);
    __atomic_add_fetch(&fake_now, 900, __ATOMIC_RELAXED);
    cr_assert_eq(wf_store_claim(b, "r", NULL), WF_ELEASE);

    /* a stops renewing: the lease expires, b takes over after a's records */
    __atomic_add_fetch(&fake_now, 1001, __ATOMIC_RELAXED);
    wf_store_run_info info;
    cr_assert_eq(wf_store_claim(b, "r", &info), 0);
    cr_assert_str_eq(info.owner, "owner-b");
    cr_assert_eq(info.next_seq, 1u);
    wf_store_run_info_clear(&info);
    uint64_t seq;
    cr_assert_eq(append1(b, "r", 1, "b1", &seq), 0);
    cr_assert_eq(seq, 1u);
    cr_assert_eq(wf_store_flush(b), 0);

    /* a finds out at its next renewal, or at its next write's commit */
    uint32_t lost = 0;
    cr_assert_eq(wf_store_renew(a, &lost), 0);
    cr_assert_eq(lost, 1u);
    cr_assert_eq(append1(a, "r", 1, "a1", NULL), WF_ELEASE);
    cr_assert_eq(wf_store_claim(a, "r", NULL), WF_ELEASE);
    cr_assert_eq(wf_store_release(a, "r"), WF_ELEASE);
    jbuf j = {0};
    cr_assert_eq(wf_store_read_journal(a, "r", 0, 0, collect, &j, NULL), 0);
    cr_assert_str_eq(j.text, "0:1:a0;1:1:b1;");

    /* b releases; a may claim at once */
    cr_assert_eq(wf_store_release(b, "r"), 0);
    cr_assert_eq(wf_store_claim(a, "r", &info), 0);
    cr_assert_eq(info.next_seq, 2u);
    wf_store_run_info_clear(&info);
    cr_assert_eq(append1(a, "r", 1, "a2", &seq), 0);
    cr_assert_eq(seq, 2u);
    cr_assert_eq(wf_store_flush(a), 0);
    wf_store_free(a);
    wf_store_free(b);
    sc_teardown(&t);
}

Test(STORE_SUITE, a_write_after_a_lost_lease_fails_at_commit)
{
    sc_env t;
    sc_setup(&t);
    wf_store_params pa, pb;
    wf_store_params_init(&pa);
    pa.owner = "owner-a";
    pa.clock = fake_clock;
    pa.lease_ms = 1000;
    pb = pa;
    pb.owner = "owner-b";
    wf_store *a = sc_open(&t, &pa);
    wf_store *b = sc_open(&t, &pb);
    cr_assert_eq(wf_store_create(a, "r", "w", NULL), 0);
    cr_assert_eq(wf_store_flush(a), 0);
    __atomic_add_fetch(&fake_now, 5000, __ATOMIC_RELAXED);
    cr_assert_eq(wf_store_claim(b, "r", NULL), 0);
    cr_assert_eq(append1(b, "r", 1, "b0", NULL), 0);
    cr_assert_eq(wf_store_flush(b), 0);
    /* a does not know yet: its write is queued with seq 0, which b has */
    atomic_store(&done_calls, 0);
    atomic_store(&done_errors, 0);
    wf_store_rec r = {1, "a0", 2};
    uint64_t ticket;
    cr_assert_eq(wf_store_append(a, "r", &r, 1, on_done, NULL, NULL, &ticket), 0);
    cr_assert_eq(wf_store_wait(a, ticket), 0);
    cr_assert_eq(atomic_load(&done_calls), 1);
    cr_assert_eq(atomic_load(&done_errors), 1);
    cr_assert_eq(append1(a, "r", 1, "a1", NULL), WF_ELEASE);
    wf_store_free(a);
    wf_store_free(b);
    sc_teardown(&t);
}

#ifndef APPENDS
#define APPENDS 400
#endif
#define THREADS 4

typedef struct worker {
    wf_store *s;
    int id;
    atomic_int *acked;
    int rc;
} worker;

static void count_ok(int rc, uint64_t ticket, void *user)
{
    (void)ticket;
    if (rc == 0)
        atomic_fetch_add((atomic_int *)user, 1);
}

static void *append_worker(void *arg)
{
    worker *w = arg;
    char own[32], text[64];
    snprintf(own, sizeof own, "own-%d", w->id);
    for (int i = 0; i < APPENDS && w->rc == 0; i++) {
        /* every other batch goes to the run all threads share */
        const char *run = i % 2 ? "shared" : own;
        int n = 1 + i % 3;
        wf_store_rec recs[3];
        char texts[3][64];
        for (int k = 0; k < n; k++) {
            snprintf(texts[k], sizeof texts[k], "%d.%d.%d", w->id, i, k);
            recs[k] = (wf_store_rec){(uint32_t)k + 1, texts[k], strlen(texts[k])};
        }
        w->rc = wf_store_append(w->s, run, recs, (size_t)n, count_ok, w->acked, NULL, NULL);
    }
    (void)text;
    return NULL;
}

typedef struct order {
    int last_i[THREADS];
    int last_k[THREADS];
    uint64_t count;
    int bad;
} order;

/* Each thread's records appear in the order it appended them, with no gap between seqs. */
static int check_order(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    order *o = user;
    char t[64];
    snprintf(t, sizeof t, "%.*s", (int)len, (const char *)data);
    int id, i, k;
    if (seq != o->count || sscanf(t, "%d.%d.%d", &id, &i, &k) != 3 || id < 0 || id >= THREADS ||
        (uint32_t)k + 1 != kind)
        o->bad++;
    else if (i < o->last_i[id] || (i == o->last_i[id] && k != o->last_k[id] + 1) ||
             (i > o->last_i[id] && k != 0))
        o->bad++;
    else {
        o->last_i[id] = i;
        o->last_k[id] = k;
    }
    o->count++;
    return 0;
}

static void group_commit_under(int commit)
{
    sc_env t;
    sc_setup(&t);
    wf_store_params p;
    wf_store_params_init(&p);
    p.commit = commit;
    p.queue_bytes = 256 * 1024; /* small: producers meet a full queue and wait */
    wf_store *s = sc_open(&t, &p);
    char id[32];
    for (int i = 0; i < THREADS; i++) {
        snprintf(id, sizeof id, "own-%d", i);
        cr_assert_eq(wf_store_create(s, id, "w", NULL), 0);
    }
    cr_assert_eq(wf_store_create(s, "shared", "w", NULL), 0);
    atomic_int acked = 0;
    worker w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){s, i, &acked, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, append_worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].rc, 0, "%s", wf_err_name(w[i].rc));
    }
    cr_assert_eq(wf_store_flush(s), 0);
    cr_assert_eq(atomic_load(&acked), THREADS * APPENDS, "every append acknowledged durable");
    /* records per batch cycle 1, 2, 3: own runs get even i, the shared one odd i */
    uint64_t own_recs = 0, shared_recs = 0;
    for (int i = 0; i < APPENDS; i++)
        *(i % 2 ? &shared_recs : &own_recs) += (uint64_t)(1 + i % 3);
    for (int r = 0; r <= THREADS; r++) {
        if (r < THREADS)
            snprintf(id, sizeof id, "own-%d", r);
        else
            snprintf(id, sizeof id, "shared");
        order o;
        memset(&o, 0, sizeof o);
        for (int k = 0; k < THREADS; k++)
            o.last_i[k] = -1, o.last_k[k] = -1;
        int jrc = wf_store_read_journal(s, id, 0, 0, check_order, &o, NULL);
        cr_assert_eq(jrc, 0, "%s", wf_err_name(jrc));
        cr_assert_eq(o.bad, 0, "%s: %d records out of order", id, o.bad);
        cr_assert_eq(o.count, r < THREADS ? own_recs : shared_recs * THREADS, "%s", id);
        wf_store_run_info info;
        cr_assert_eq(wf_store_get_run(s, id, &info), 0);
        cr_assert_eq(info.next_seq, o.count);
        wf_store_run_info_clear(&info);
    }
    wf_store_free(s);
    sc_teardown(&t);
}

Test(STORE_SUITE, group_commit_interval_concurrent, .timeout = 300)
{
    group_commit_under(WF_STORE_COMMIT_INTERVAL);
}

Test(STORE_SUITE, group_commit_every_concurrent, .timeout = 300)
{
    group_commit_under(WF_STORE_COMMIT_EVERY);
}

Test(STORE_SUITE, group_commit_off_concurrent, .timeout = 300)
{
    group_commit_under(WF_STORE_COMMIT_OFF);
}

#endif
