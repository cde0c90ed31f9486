/*
 * async.c: an async step completed from another thread.
 *
 * The "fetch" step stands for a call to a model or a database: it takes a
 * completion token and hands the request to an I/O thread (here a timer
 * thread that answers after a few milliseconds) and returns WF_PENDING. No
 * worker waits meanwhile: 1,000 runs are pending at once on a 2-thread
 * executor. The I/O thread completes each token with the step's result.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <wf/wf.h>

typedef struct request {
    struct request *next;
    wf_completion *token;
    int64_t question;
    const wf_registry *reg;
} request;

/* The "I/O loop": a queue of requests answered after a delay. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static request *queue;
static int stopping;

static void *io_thread(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (queue == NULL && !stopping)
            pthread_cond_wait(&cv, &mu);
        request *r = queue;
        queue = NULL;
        int stop = stopping && r == NULL;
        pthread_mutex_unlock(&mu);
        if (stop)
            return NULL;
        struct timespec ts = {0, 2 * 1000 * 1000}; /* the remote call takes a while */
        nanosleep(&ts, NULL);
        while (r) {
            request *next = r->next;
            wf_event *answer = NULL;
            if (wf_event_new_stop(&answer, r->reg, NULL, wf_value_int(r->question * 2)) == 0)
                wf_completion_complete(r->token, answer); /* any thread may complete */
            else
                wf_completion_fail(r->token, WF_ENOMEM, "no memory for the answer");
            free(r);
            r = next;
        }
    }
}

static int fetch(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    (void)out;
    (void)user;
    request *r = malloc(sizeof *r);
    if (r == NULL)
        return WF_ENOMEM;
    int rc = wf_ctx_pend(ctx, &r->token);
    if (rc < 0) {
        free(r);
        return rc;
    }
    wf_value_get_int(wf_event_get(in, "question", wf_value_int(0)), &r->question);
    r->reg = wf_workflow_registry(wf_ctx_workflow(ctx));
    pthread_mutex_lock(&mu);
    r->next = queue;
    queue = r;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    return WF_PENDING;
}

int main(void)
{
    wf_workflow *wf;
    wf_executor *ex;
    if (wf_workflow_new(&wf, "AsyncFetch", NULL) < 0)
        return 1;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &start;
    p.n_accepts = 1;
    p.emits = &stop;
    p.n_emits = 1;
    if (wf_workflow_add_step(wf, "fetch", fetch, &p, NULL) < 0)
        return 1;
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = 2;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    pthread_t io;
    pthread_create(&io, NULL, io_thread, NULL);

    enum { RUNS = 1000 };
    static wf_handler *hs[RUNS];
    for (int i = 0; i < RUNS; i++) {
        wf_event *s;
        if (wf_event_new1(&s, start, "question", wf_value_int(i)) < 0 ||
            wf_run_start(ex, wf, NULL, s, &hs[i]) < 0)
            return 1;
    }
    long sum = 0, ok = 0;
    for (int i = 0; i < RUNS; i++) {
        wf_event *res = NULL;
        int64_t v = 0;
        if (wf_handler_wait(hs[i], -1, &res) == 0 &&
            wf_value_get_int(wf_event_result(res), &v) == 0 && v == 2 * i)
            ok++;
        sum += v;
        wf_event_release(res);
        wf_handler_free(hs[i]);
    }
    printf("async: %ld of %d runs answered by the I/O thread (sum %ld)\n", ok, RUNS, sum);
    pthread_mutex_lock(&mu);
    stopping = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(io, NULL);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    return ok == RUNS ? 0 : 1;
}
