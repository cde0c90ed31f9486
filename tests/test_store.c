/*
 * test_store.c: the store (include/wf/store.h) over its SQLite backend:
 * every operation, argument and file errors, leases, group commit under
 * concurrency, reopen, and torn copies of the database and its WAL.
 * Builds against tests/harness.h under TSan (WF_PLAIN_TESTS).
 */
#include "harness.h"

#include <wf/wf.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

typedef struct tdir {
    char dir[256];
    char db[300];
} tdir;

static void tdir_make(tdir *t)
{
    const char *base = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/wf-store-XXXXXX", base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(t->dir));
    snprintf(t->db, sizeof t->db, "%s/runs.db", t->dir);
}

static void tdir_rm(tdir *t)
{
    DIR *d = opendir(t->dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", t->dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(t->dir);
}

static wf_store *open_store(const char *path, const wf_store_params *p)
{
    wf_store *s = NULL;
    char *msg = NULL;
    int rc = wf_store_open_sqlite(&s, path, p, &msg);
    cr_assert_eq(rc, 0, "open: %s (%s)", wf_err_name(rc), msg ? msg : "");
    wf_free(msg);
    return s;
}

static int open_rc(const char *path, const wf_store_params *p, char **msg)
{
    wf_store *s = NULL;
    int rc = wf_store_open_sqlite(&s, path, p, msg);
    wf_store_free(s);
    return rc;
}

/* The backend-agnostic cases (tests/store_cases.h, shared with the NATS
 * backend's suite) over a SQLite file in a fresh directory. */
typedef tdir sc_env;
static void sc_setup(sc_env *t)
{
    tdir_make(t);
}
static wf_store *sc_open(sc_env *t, const wf_store_params *p)
{
    return open_store(t->db, p);
}
static void sc_teardown(sc_env *t)
{
    tdir_rm(t);
}
#ifndef WF_STRESS_SMALL
#define APPENDS 3000
#endif
#define STORE_SUITE store
#include "store_cases.h"

/* ------------------------------------------------------------- the basics */

Test(store, params_defaults)
{
    wf_store_params p;
    wf_store_params_init(&p);
    cr_assert_eq(p.commit, WF_STORE_COMMIT_INTERVAL);
    cr_assert_eq(p.interval_ms, 10u);
    cr_assert_eq(p.full, WF_STORE_FULL_BLOCK);
    cr_assert(p.queue_bytes > 0 && p.lease_ms > 0 && p.busy_timeout_ms > 0);
    cr_assert_null(p.owner);
    cr_assert_str_eq(wf_err_name(WF_ELEASE), "WF_ELEASE");
    cr_assert_str_eq(wf_err_name(WF_ECORRUPT), "WF_ECORRUPT");
    cr_assert_str_eq(wf_err_name(WF_EIO), "WF_EIO");
}

Test(store, null_arguments_are_rejected)
{
    tdir t;
    tdir_make(&t);
    wf_store *s = NULL;
    cr_assert_eq(wf_store_open_sqlite(NULL, t.db, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_open_sqlite(&s, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_open_sqlite(&s, "", NULL, NULL), WF_EINVAL);
    wf_store_params bad;
    wf_store_params_init(&bad);
    bad.commit = 7;
    cr_assert_eq(wf_store_open_sqlite(&s, t.db, &bad, NULL), WF_EINVAL);
    cr_assert_null(s);
    cr_assert_eq(wf_store_new(&s, NULL, NULL), WF_EINVAL);
    s = open_store(t.db, NULL);
    wf_store_rec r = {1, "x", 1};
    wf_store_rec nodata = {1, NULL, 3};
    void *d;
    size_t l;
    int32_t st;
    wf_store_run_info info;
    char longid[1100];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    cr_assert_eq(wf_store_create(NULL, "r", "wf", NULL), WF_EINVAL);
    cr_assert_eq(wf_store_create(s, NULL, "wf", NULL), WF_EINVAL);
    cr_assert_eq(wf_store_create(s, "", "wf", NULL), WF_EINVAL);
    cr_assert_eq(wf_store_create(s, longid, "wf", NULL), WF_EINVAL);
    cr_assert_eq(wf_store_create(s, "r", NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_append(NULL, "r", &r, 1, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_append(s, NULL, &r, 1, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_append(s, "r", NULL, 1, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_append(s, "r", &r, 0, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_append(s, "r", &nodata, 1, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_set_status(s, "r", WF_STORE_DONE, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_set_status(NULL, "r", WF_STORE_WAITING, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_put_checkpoint(s, "r", NULL, 3, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_put_checkpoint(NULL, "r", "x", 1, NULL, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_put_result(s, "r", WF_STORE_RUNNING, "x", 1, NULL, NULL, NULL),
                 WF_EINVAL);
    cr_assert_eq(wf_store_put_result(s, "r", WF_STORE_DONE, NULL, 1, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_claim(NULL, "r", NULL), WF_EINVAL);
    cr_assert_eq(wf_store_claim(s, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_release(s, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_renew(NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_remove(s, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_flush(NULL), WF_EINVAL);
    cr_assert_eq(wf_store_wait(NULL, 1), WF_EINVAL);
    cr_assert_eq(wf_store_durable(NULL), 0u);
    cr_assert_eq(wf_store_get_run(s, "r", NULL), WF_EINVAL);
    cr_assert_eq(wf_store_get_run(NULL, "r", &info), WF_EINVAL);
    cr_assert_eq(wf_store_get_checkpoint(s, "r", NULL, &l, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_get_result(s, "r", NULL, &d, &l), WF_EINVAL);
    cr_assert_eq(wf_store_get_result(s, "r", &st, NULL, &l), WF_EINVAL);
    cr_assert_eq(wf_store_read_journal(s, "r", 0, 0, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_list(s, WF_STORE_MASK_ALL, 0, 0, NULL, NULL, NULL), WF_EINVAL);
    cr_assert_eq(wf_store_list(s, 0x80, 0, 0, (wf_store_list_fn)NULL, NULL, NULL), WF_EINVAL);
    cr_assert_null(wf_store_backend(NULL));
    cr_assert_str_eq(wf_store_backend(s), "sqlite");
    /* a run nobody created */
    cr_assert_eq(wf_store_append(s, "r", &r, 1, NULL, NULL, NULL, NULL), WF_ENOTFOUND);
    cr_assert_eq(wf_store_get_run(s, "r", &info), WF_ENOTFOUND);
    cr_assert_eq(wf_store_claim(s, "r", NULL), WF_ENOTFOUND);
    cr_assert_eq(wf_store_remove(s, "r"), WF_ENOTFOUND);
    wf_store_free(s);
    wf_store_free(NULL);
    tdir_rm(&t);
}

/* ------------------------------------------------------------- bad files */

Test(store, file_of_another_program_is_refused)
{
    tdir t;
    tdir_make(&t);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(t.db, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    char *msg = NULL;
    cr_assert_eq(open_rc(t.db, NULL, &msg), WF_EFORMAT);
    cr_assert_not_null(msg);
    cr_assert(strstr(msg, "not a wf store") != NULL, "%s", msg);
    wf_free(msg);

    /* another application_id */
    unlink(t.db);
    cr_assert_eq(sqlite3_open(t.db, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "PRAGMA application_id = 1234;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    msg = NULL;
    cr_assert_eq(open_rc(t.db, NULL, &msg), WF_EFORMAT);
    cr_assert(msg && strstr(msg, "application_id") != NULL);
    wf_free(msg);

    /* a wf store of a newer schema */
    unlink(t.db);
    wf_store_free(open_store(t.db, NULL));
    cr_assert_eq(sqlite3_open(t.db, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "PRAGMA user_version = 3;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    msg = NULL;
    cr_assert_eq(open_rc(t.db, NULL, &msg), WF_EVERSION);
    cr_assert(msg && strstr(msg, "version 3") != NULL);
    wf_free(msg);
    tdir_rm(&t);
}

/* The schema of version 1 (one journal row per record), as that library wrote it. */
static const char v1_schema[] =
    "CREATE TABLE runs(rid INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE,"
    " workflow TEXT NOT NULL, status INTEGER NOT NULL, owner TEXT,"
    " lease_until INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL);"
    "CREATE INDEX runs_status ON runs(status, rid);"
    "CREATE INDEX runs_owner ON runs(owner) WHERE owner IS NOT NULL;"
    "CREATE TABLE journal(rid INTEGER NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY (rid, seq)) WITHOUT ROWID;"
    "CREATE TABLE checkpoints(rid INTEGER PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL,"
    " updated_ms INTEGER NOT NULL);"
    "CREATE TABLE results(rid INTEGER PRIMARY KEY, data BLOB NOT NULL,"
    " finished_ms INTEGER NOT NULL);"
    "CREATE TABLE statuses(code INTEGER PRIMARY KEY, name TEXT NOT NULL);"
    "INSERT INTO statuses VALUES (0,'running'),(1,'waiting'),(2,'released'),(3,'done'),"
    " (4,'failed'),(5,'timed_out'),(6,'cancelled');"
    "CREATE VIEW runs_v AS SELECT r.run_id, s.name AS status, r.workflow, r.owner,"
    " r.lease_until, r.created_ms, r.updated_ms,"
    " (SELECT count(*) FROM journal j WHERE j.rid = r.rid) AS records"
    " FROM runs r JOIN statuses s ON s.code = r.status;"
    "PRAGMA application_id = 2003194708;"
    "PRAGMA user_version = 1;"
    "PRAGMA journal_mode = WAL;"
    "INSERT INTO runs VALUES (1, 'old', 'chain', 0, 'gone:1:1', 0, 5, 5),"
    " (2, 'done', 'chain', 3, NULL, 0, 5, 6);"
    "INSERT INTO journal VALUES (1, 0, 1, x'61'), (1, 1, 2, x'6262'), (1, 2, 1, x''),"
    " (1, 3, 300, x'6363'), (2, 0, 70000, x'64');"
    "INSERT INTO results VALUES (2, x'c3', 6);";

/* A store file of schema version 1 opens: migrated to version 2, nothing lost. */
Test(store, version_1_file_is_migrated)
{
    tdir t;
    tdir_make(&t);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(t.db, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    sqlite3_close(db);

    wf_store *s = open_store(t.db, NULL);
    jbuf j = {0};
    uint64_t next = 0;
    cr_assert_eq(wf_store_read_journal(s, "old", 0, 0, collect, &j, &next), 0);
    cr_assert_str_eq(j.text, "0:1:a;1:2:bb;2:1:;3:300:cc;");
    cr_assert_eq(next, 4u);
    memset(&j, 0, sizeof j);
    cr_assert_eq(wf_store_read_journal(s, "done", 0, 0, collect, &j, NULL), 0);
    cr_assert_str_eq(j.text, "0:70000:d;");
    int32_t status;
    void *data;
    size_t len;
    cr_assert_eq(wf_store_get_result(s, "done", &status, &data, &len), 0);
    cr_assert_eq(status, WF_STORE_DONE);
    cr_assert_eq(len, 1u);
    wf_free(data);
    /* the journal continues where version 1 left it */
    wf_store_run_info info;
    cr_assert_eq(wf_store_claim(s, "old", &info), 0);
    cr_assert_eq(info.next_seq, 4u);
    wf_store_run_info_clear(&info);
    uint64_t seq;
    cr_assert_eq(append1(s, "old", 1, "e", &seq), 0);
    cr_assert_eq(seq, 4u);
    cr_assert_eq(wf_store_flush(s), 0);
    memset(&j, 0, sizeof j);
    cr_assert_eq(wf_store_read_journal(s, "old", 3, 0, collect, &j, NULL), 0);
    cr_assert_str_eq(j.text, "3:300:cc;4:1:e;");
    wf_store_free(s);

    /* the file is version 2 now, and its view counts records */
    cr_assert_eq(sqlite3_open(t.db, &db), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT (SELECT user_version FROM pragma_user_version),"
                                    " (SELECT records FROM runs_v WHERE run_id = 'old')",
                                    -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), 2);
    cr_assert_eq(sqlite3_column_int(st, 1), 5);
    sqlite3_finalize(st);
    sqlite3_close(db);
    tdir_rm(&t);
}

Test(store, garbage_file_is_refused)
{
    tdir t;
    tdir_make(&t);
    FILE *f = fopen(t.db, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 8192; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    char *msg = NULL;
    int rc = open_rc(t.db, NULL, &msg);
    cr_assert_eq(rc, WF_EFORMAT, "%s: %s", wf_err_name(rc), msg ? msg : "");
    cr_assert_not_null(msg);
    wf_free(msg);
    /* a directory where the file should be */
    msg = NULL;
    rc = open_rc(t.dir, NULL, &msg);
    cr_assert(rc == WF_EIO || rc == WF_EFORMAT, "%s", wf_err_name(rc));
    wf_free(msg);
    tdir_rm(&t);
}

/*
 * Two processes opening a new file at once: one creates the schema, the
 * other must see either nothing (and wait to create it) or all of it, never
 * half (it once read application_id before the other's commit and the
 * tables after it: "not a wf store").
 */
Test(store, two_processes_open_a_new_file_at_once, .timeout = 120)
{
    tdir t;
    tdir_make(&t);
    for (int round = 0; round < 40; round++) {
        char path[400];
        snprintf(path, sizeof path, "%s/race-%d.db", t.dir, round);
        int go[2];
        cr_assert_eq(pipe(go), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            char b;
            if (read(go[0], &b, 1) != 1)
                _exit(3);
            int rc = open_rc(path, NULL, NULL);
            _exit(rc == 0 ? 0 : 1);
        }
        char b = 1;
        cr_assert_eq(write(go[1], &b, 1), 1); /* both open from here on */
        char *msg = NULL;
        int rc = open_rc(path, NULL, &msg);
        cr_assert_eq(rc, 0, "round %d: %s: %s", round, wf_err_name(rc), msg ? msg : "");
        wf_free(msg);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "round %d: the other process failed",
                  round);
        close(go[0]);
        close(go[1]);
    }
    tdir_rm(&t);
}

Test(store, full_queue_fails_when_asked_to)
{
    tdir t;
    tdir_make(&t);
    wf_store_params p;
    wf_store_params_init(&p);
    p.full = WF_STORE_FULL_FAIL;
    p.queue_bytes = 4096;
    p.interval_ms = 600000; /* the writer commits only when asked (or at half the queue) */
    wf_store *s = open_store(t.db, &p);
    cr_assert_eq(wf_store_create(s, "r", "w", NULL), 0);
    static char big[5000];
    wf_store_rec r = {1, big, sizeof big};
    cr_assert_eq(wf_store_append(s, "r", &r, 1, NULL, NULL, NULL, NULL), WF_EOVERFLOW);
    int rc = wf_store_flush(s);
    cr_assert_eq(rc, 0, "%s", wf_err_name(rc));
    /* an empty queue admits one write larger than the queue, so it cannot wait forever */
    uint64_t seq;
    cr_assert_eq(wf_store_append(s, "r", &r, 1, NULL, NULL, &seq, NULL), 0);
    cr_assert_eq(seq, 0u, "the refused write took no sequence number");
    rc = wf_store_flush(s);
    cr_assert_eq(rc, 0, "%s", wf_err_name(rc));
    wf_store_free(s);
    tdir_rm(&t);
}

/* ---------------------------------------------------------------- helpers */

Test(store, idempotency_keys)
{
    char k[64];
    cr_assert_eq(wf_store_idempotency_key(k, sizeof k, "run-1", "fetch", 17, 1), 16);
    cr_assert_str_eq(k, "run-1/fetch/17/1");
    cr_assert_eq(wf_store_idempotency_key(k, sizeof k, "a/b", "s%", 0, 2), 14);
    cr_assert_str_eq(k, "a%2Fb/s%25/0/2");
    char a[64], b[64];
    wf_store_idempotency_key(a, sizeof a, "a/b", "c", 1, 1);
    wf_store_idempotency_key(b, sizeof b, "a", "b/c", 1, 1);
    cr_assert(strcmp(a, b) != 0);
    cr_assert_eq(wf_store_idempotency_key(k, 5, "run-1", "fetch", 17, 1), WF_ERANGE);
    cr_assert_str_eq(k, "");
    cr_assert_eq(wf_store_idempotency_key(k, 16, "run-1", "fetch", 17, 1), WF_ERANGE);
    cr_assert_eq(wf_store_idempotency_key(k, 17, "run-1", "fetch", 17, 1), 16);
    cr_assert_eq(wf_store_idempotency_key(NULL, 0, "r", "s", 1, 1), WF_ERANGE);
    cr_assert_eq(wf_store_idempotency_key(k, sizeof k, NULL, "s", 1, 1), WF_EINVAL);
}

Test(store, step_records_use_the_codec)
{
    wf_registry *reg;
    cr_assert_eq(wf_registry_new(&reg), 0);
    const wf_event_type *in_t, *out_t;
    cr_assert_eq(wf_registry_add(reg, "In", NULL, &in_t), 0);
    cr_assert_eq(wf_registry_add(reg, "Out", NULL, &out_t), 0);
    wf_event *in, *out;
    cr_assert_eq(wf_event_new1(&in, in_t, "n", wf_value_int(7)), 0);
    cr_assert_eq(wf_event_new1(&out, out_t, "n", wf_value_int(8)), 0);
    const wf_event *em[1] = {out};
    void *buf;
    size_t len;
    cr_assert_eq(wf_store_encode_step("double", 1, in, em, 1, &buf, &len), 0);
    /* [step, attempt, input, [emitted]]: fixarray 4, "double", 1, then the events */
    const unsigned char *p = buf;
    cr_assert_eq(p[0], 0x94);
    cr_assert_eq(p[1], 0xa6);
    cr_assert(memcmp(p + 2, "double", 6) == 0);
    cr_assert_eq(p[8], 0x01);
    wf_event *back;
    size_t used;
    cr_assert_eq(wf_event_from_msgpack(reg, p + 9, len - 9, &back, &used, NULL), 0);
    cr_assert(wf_event_equal(back, in));
    cr_assert_eq(p[9 + used], 0x91);
    wf_event_release(back);
    wf_free(buf);
    cr_assert_eq(wf_store_encode_step("s", 1, NULL, NULL, 0, &buf, &len), WF_EINVAL);
    cr_assert_eq(wf_store_encode_step("s", 1, in, NULL, 1, &buf, &len), WF_EINVAL);
    wf_event_release(in);
    wf_event_release(out);
    wf_registry_free(reg);
}

/* ------------------------------------------------------------ torn writes */

#define TORN_RUNS   3
#define TORN_ROUNDS 40

static void torn_text(char *t, size_t cap, int run, uint64_t seq)
{
    /* ~100 bytes, like a step completion */
    snprintf(t, cap, "run %d record %llu: %.*s", run, (unsigned long long)seq, 70,
             "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz");
}

static void copy_file(const char *from, const char *to, long keep)
{
    FILE *in = fopen(from, "rb");
    if (in == NULL)
        return; /* no WAL: nothing to copy */
    FILE *out = fopen(to, "wb");
    cr_assert_not_null(out);
    char buf[8192];
    long left = keep;
    size_t n;
    while ((keep < 0 || left > 0) && (n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (keep >= 0 && (long)n > left)
            n = (size_t)left;
        cr_assert_eq(fwrite(buf, 1, n, out), n);
        left -= (long)n;
    }
    fclose(in);
    fclose(out);
}

static long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

typedef struct torn_check {
    int run;
    uint64_t count;
    int bad;
} torn_check;

static int torn_record(uint64_t seq, uint32_t kind, const void *data, size_t len, void *user)
{
    torn_check *c = user;
    char t[200];
    torn_text(t, sizeof t, c->run, seq);
    if (seq != c->count || kind != 1 || len != strlen(t) || memcmp(data, t, len) != 0)
        c->bad++;
    c->count++;
    return 0;
}

static int clean_error(int rc)
{
    return rc == WF_ECORRUPT || rc == WF_EFORMAT || rc == WF_EIO || rc == WF_EVERSION;
}

/*
 * Opens a torn copy: either a clean error, or a state where every run has
 * the same number of records, all as written (each round was one commit).
 */
static void check_torn_copy(const char *db, int *opened, int *refused)
{
    wf_store *s = NULL;
    char *msg = NULL;
    int rc = wf_store_open_sqlite(&s, db, NULL, &msg);
    wf_free(msg);
    if (rc < 0) {
        cr_assert(clean_error(rc), "open: %s", wf_err_name(rc));
        (*refused)++;
        return;
    }
    int64_t counts[TORN_RUNS];
    int err = 0;
    for (int r = 0; r < TORN_RUNS && !err; r++) {
        char id[32];
        snprintf(id, sizeof id, "torn-%d", r);
        torn_check c = {r, 0, 0};
        rc = wf_store_read_journal(s, id, 0, 0, torn_record, &c, NULL);
        if (rc < 0) {
            cr_assert(clean_error(rc) || rc == WF_ENOTFOUND, "read: %s", wf_err_name(rc));
            err = rc == WF_ENOTFOUND ? 0 : 1;
            counts[r] = rc == WF_ENOTFOUND ? -1 : 0;
            continue;
        }
        cr_assert_eq(c.bad, 0, "run %d: records not as written", r);
        counts[r] = (int64_t)c.count;
        wf_store_run_info info;
        rc = wf_store_get_run(s, id, &info);
        if (rc == 0) {
            cr_assert_eq(info.next_seq, c.count);
            wf_store_run_info_clear(&info);
        } else {
            cr_assert(clean_error(rc), "get_run: %s", wf_err_name(rc));
            err = 1;
        }
    }
    int n = 0;
    rc = wf_store_list(s, WF_STORE_MASK_ALL, 0, 0, list_count, &n, NULL);
    if (rc < 0) {
        cr_assert(clean_error(rc), "list: %s", wf_err_name(rc));
        err = 1;
    }
    if (!err) {
        for (int r = 1; r < TORN_RUNS; r++)
            cr_assert_eq(counts[r], counts[0], "a committed round is all or nothing");
        (*opened)++;
    } else {
        (*refused)++;
    }
    wf_store_free(s);
}

Test(store, torn_database_and_wal_copies, .timeout = 300)
{
    tdir t;
    tdir_make(&t);
    wf_store_params p;
    wf_store_params_init(&p);
    p.interval_ms = 600000; /* one commit per flush: each round is one transaction */
    p.owner = "torn";       /* the same owner after the reopen */
    wf_store *s = open_store(t.db, &p);
    char id[32], text[200];
    for (int r = 0; r < TORN_RUNS; r++) {
        snprintf(id, sizeof id, "torn-%d", r);
        cr_assert_eq(wf_store_create(s, id, "w", NULL), 0);
    }
    cr_assert_eq(wf_store_flush(s), 0);
    uint64_t seq = 0;
    for (int round = 0; round < TORN_ROUNDS; round++) {
        if (round == TORN_ROUNDS / 2) {
            /* closing checkpoints the WAL into the database: both files hold data */
            wf_store_free(s);
            s = open_store(t.db, &p);
            for (int r = 0; r < TORN_RUNS; r++) {
                snprintf(id, sizeof id, "torn-%d", r);
                cr_assert_eq(wf_store_claim(s, id, NULL), 0);
            }
        }
        for (int r = 0; r < TORN_RUNS; r++) {
            snprintf(id, sizeof id, "torn-%d", r);
            /* several records per run and round, so frames span pages */
            for (int k = 0; k < 8; k++, seq++) {
                torn_text(text, sizeof text, r, seq);
                cr_assert_eq(append1(s, id, 1, text, NULL), 0);
            }
            seq -= 8;
        }
        seq += 8;
        cr_assert_eq(wf_store_flush(s), 0);
    }
    /* "crash": copy the files while the store is open (its WAL not checkpointed) */
    char wal[400], cdb[400], cwal[400];
    snprintf(wal, sizeof wal, "%s-wal", t.db);
    snprintf(cdb, sizeof cdb, "%s/copy.db", t.dir);
    snprintf(cwal, sizeof cwal, "%s/copy.db-wal", t.dir);
    long dbsz = file_size(t.db), walsz = file_size(wal);
    cr_assert(dbsz > 0 && walsz > 0, "db %ld wal %ld", dbsz, walsz);
    char pristine_db[400], pristine_wal[400];
    snprintf(pristine_db, sizeof pristine_db, "%s/p.db", t.dir);
    snprintf(pristine_wal, sizeof pristine_wal, "%s/p.wal", t.dir);
    copy_file(t.db, pristine_db, -1);
    copy_file(wal, pristine_wal, -1);
    wf_store_free(s);

    unsigned seed = 20261204u;
    int opened = 0, refused = 0, cases = 0;
    char shm[400];
    snprintf(shm, sizeof shm, "%s/copy.db-shm", t.dir);
    for (int c = 0; c < 48; c++, cases++) {
        unlink(cdb);
        unlink(cwal);
        unlink(shm);
        /* a third: the WAL torn; a third: the database torn; a third: both */
        int which = c % 3;
        seed = seed * 1103515245u + 12345u;
        long dcut = which == 0 ? -1 : (long)((seed >> 4) % (unsigned long)dbsz);
        seed = seed * 1103515245u + 12345u;
        long wcut = which == 1 ? -1 : (long)((seed >> 4) % (unsigned long)walsz);
        copy_file(pristine_db, cdb, dcut);
        copy_file(pristine_wal, cwal, wcut);
        int before = opened;
        check_torn_copy(cdb, &opened, &refused);
        /* a torn WAL alone loses only rounds after the tear: the file still opens */
        if (which == 0)
            cr_assert_eq(opened, before + 1, "WAL cut at %ld of %ld refused", wcut, walsz);
    }
    cr_assert_eq(opened + refused, cases);
    tdir_rm(&t);
}
