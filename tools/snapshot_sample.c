/*
 * snapshot_sample.c: writes a live snapshot to a file, for the test of
 * wf-snapshot (test_wf_snapshot.sh). A run whose "work" step (one worker)
 * holds its first event while four more queue up behind it; the events
 * carry a string, bytes and the 64-bit extremes, the store a nested map.
 * The cut is taken live, then the run is cancelled and let go.
 *
 * Usage: snapshot_sample FILE
 */
#include <pthread.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>

#include <wf/wf.h>

static const wf_event_type *T_WORK;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int holding = 1, held;

static int start(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)in, (void)out, (void)u;
    for (int i = 0; i < 5; i++) {
        wf_event *w;
        wf_value s, b;
        const unsigned char raw[] = {0, 0xff, (unsigned char)i};
        if (wf_value_string(&s, "caf\xc3\xa9 \"quoted\"\n") < 0 || wf_value_bytes(&b, raw, 3) < 0)
            return WF_ENOMEM;
        int rc = wf_event_new(&w, T_WORK, 5);
        if (rc == 0)
            rc = wf_event_set(w, "i", wf_value_int(i));
        if (rc == 0)
            rc = wf_event_set(w, "text", s);
        if (rc == 0)
            rc = wf_event_set(w, "raw", b);
        if (rc == 0)
            rc = wf_event_set(w, "max", wf_value_uint(UINT64_MAX));
        if (rc == 0)
            rc = wf_event_set(w, "min", wf_value_int(INT64_MIN));
        if (rc == 0)
            rc = wf_ctx_send_event(ctx, w, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int work(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)ctx, (void)in, (void)out, (void)u;
    pthread_mutex_lock(&mu);
    held = 1;
    pthread_cond_broadcast(&cv);
    while (holding)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: snapshot_sample FILE\n");
        return 2;
    }
    wf_workflow *wf;
    wf_executor *ex;
    wf_ctx *ctx;
    if (wf_workflow_new(&wf, "Sample", NULL) < 0 || wf_executor_new(&ex, NULL) < 0)
        return 1;
    const wf_event_type *T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *T_STOP = wf_workflow_builtin(wf, WF_STOP_EVENT);
    if (wf_workflow_event_type(wf, "Work", NULL, &T_WORK) < 0)
        return 1;
    wf_step_params p;
    wf_step_params_init(&p);
    p.n_accepts = p.n_emits = 1;
    p.accepts = &T_START;
    p.emits = &T_WORK;
    if (wf_workflow_add_step(wf, "start", start, &p, NULL) < 0)
        return 1;
    p.accepts = &T_WORK;
    p.emits = &T_STOP;
    p.num_workers = 1;
    if (wf_workflow_add_step(wf, "work", work, &p, NULL) < 0 || wf_ctx_new(&ctx, wf) < 0)
        return 1;
    wf_value inner;
    if (wf_value_map_new(&inner, 1) < 0 || wf_value_map_set(&inner, "depth", wf_value_int(2)) < 0 ||
        wf_ctx_set(ctx, "nested", inner) < 0 || wf_ctx_set(ctx, "pi", wf_value_double(3.25)) < 0)
        return 1;
    wf_event *s;
    wf_handler *h;
    if (wf_event_new(&s, T_START, 0) < 0 || wf_run_start(ex, wf, ctx, s, &h) < 0)
        return 1;
    pthread_mutex_lock(&mu);
    while (!held)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    void *buf;
    size_t len;
    wf_save_info info;
    int rc = wf_ctx_save_ex(ctx, &buf, &len, &info);
    wf_handler_cancel(h);
    pthread_mutex_lock(&mu);
    holding = 0;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    wf_handler_wait(h, -1, NULL);
    wf_handler_free(h);
    int ok = rc == 0 && info.live;
    if (ok) {
        FILE *f = fopen(argv[1], "wb");
        ok = f && fwrite(buf, 1, len, f) == len;
        if (f && fclose(f) != 0)
            ok = 0;
        wf_free(buf);
    }
    if (ok) /* for the test: the fingerprint the tool must print exactly */
        printf("%" PRIu64 "\n", wf_workflow_fingerprint(wf));
    wf_ctx_free(ctx);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    if (!ok)
        fprintf(stderr, "snapshot_sample: %s\n", rc < 0 ? wf_strerror(rc) : "not written");
    return ok ? 0 : 1;
}
