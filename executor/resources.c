/*
 * resources.c: making a step's resources before its function runs, and
 * wf_ctx_resource. Per-run instances live in run->res (made on first need,
 * freed with the run), per-invocation ones in inv->res (freed when the step
 * function returns), workflow-scoped ones in wf->res->wslot (lib/resource.c).
 *
 * Locks: run->res is published once by CAS; its slots are guarded by its mu
 * (a slot being made is state 1: others wait on cv, so concurrent
 * invocations make a resource once). The factory runs with no lock held, so
 * it may make its own dependencies (acyclic: checked at freezing, so waits
 * follow the dependency order and cannot deadlock). wf->res->wslot is
 * guarded the same way by wf->res->mu. inv->res belongs to the invocation's
 * thread.
 */
#include "engine.h"
#include "../lib/resource.h"

#include <stdio.h>
#include <string.h>

typedef struct wf__res_run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t n;
    wf__rslot slot[];
} wf__res_run;

typedef struct wf__res_inv {
    uint32_t n;
    wf__rslot slot[];
} wf__res_inv;

/* The resource whose factory the calling thread runs (its dependencies are what it may get). */
static WF__TLS const wf__resource *tls_making;

static wf__res_run *run_cache(wf__run *run, uint32_t n)
{
    wf__res_run *c = atomic_load_explicit(&run->res, memory_order_acquire);
    if (c)
        return c;
    c = wf__calloc(1, sizeof *c + n * sizeof(wf__rslot));
    if (c == NULL)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->n = n;
    wf__res_run *expected = NULL;
    if (!atomic_compare_exchange_strong(&run->res, &expected, c)) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        wf__free_mem(c);
        return expected;
    }
    return c;
}

void wf__resources_run_free(wf__run *run)
{
    wf__res_run *c = atomic_load(&run->res);
    if (c == NULL)
        return;
    const wf__resources *t = run->wf->res;
    for (uint32_t i = 0; i < c->n; i++)
        if (c->slot[i].state == 2 && t->v[i]->free_fn)
            t->v[i]->free_fn(c->slot[i].value, t->v[i]->user);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    wf__free_mem(c);
}

/* The factory failed: the invocation's message names the resource. */
static int factory_failed(wf__inv *inv, const wf__resource *r, int rc)
{
    char msg[512];
    snprintf(msg, sizeof msg, "resource '%s': %s", r->name,
             inv->errmsg ? inv->errmsg : wf_strerror(rc));
    char *m = wf__strdup(msg);
    if (m) {
        wf__free_mem(inv->errmsg);
        inv->errmsg = m;
    }
    return rc;
}

static int make(wf__inv *inv, uint32_t ix, void **out);

/* Calls r's factory after making its dependencies. */
static int call_factory(wf__inv *inv, const wf__resource *r, void **out)
{
    for (uint32_t k = 0; k < r->n_deps; k++) {
        void *unused;
        int rc = make(inv, r->dep_ix[k], &unused);
        if (rc < 0)
            return rc; /* its message names the dependency */
    }
    const wf__resource *saved = tls_making;
    tls_making = r;
    *out = NULL;
    int rc = r->factory(inv->run->ctx, out, r->user);
    tls_making = saved;
    if (rc > 0)
        rc = WF_EINVAL; /* a factory reports failure with a negative code */
    return rc < 0 ? factory_failed(inv, r, rc) : 0;
}

/* Makes (or finds) slot s of a shared cache guarded by mu/cv. */
static int make_shared(wf__inv *inv, const wf__resource *r, pthread_mutex_t *mu, pthread_cond_t *cv,
                       wf__rslot *s, void **out)
{
    pthread_mutex_lock(mu);
    while (s->state == 1)
        pthread_cond_wait(cv, mu);
    if (s->state == 2) {
        *out = s->value;
        pthread_mutex_unlock(mu);
        return 0;
    }
    s->state = 1;
    pthread_mutex_unlock(mu);
    void *v = NULL;
    int rc = call_factory(inv, r, &v);
    pthread_mutex_lock(mu);
    s->state = rc < 0 ? 0 : 2; /* a failure is not cached: the next attempt calls again */
    s->value = v;
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(mu);
    *out = v;
    return rc;
}

static int make(wf__inv *inv, uint32_t ix, void **out)
{
    wf__resources *t = inv->run->wf->res;
    const wf__resource *r = t->v[ix];
    if (r->scope == WF_RESOURCE_WORKFLOW)
        return make_shared(inv, r, &t->mu, &t->cv, &t->wslot[ix], out);
    if (r->scope == WF_RESOURCE_RUN) {
        wf__res_run *c = run_cache(inv->run, t->n);
        if (c == NULL)
            return factory_failed(inv, r, WF_ENOMEM);
        return make_shared(inv, r, &c->mu, &c->cv, &c->slot[ix], out);
    }
    wf__res_inv *c = inv->res;
    if (c == NULL) {
        if ((c = wf__calloc(1, sizeof *c + t->n * sizeof(wf__rslot))) == NULL)
            return factory_failed(inv, r, WF_ENOMEM);
        c->n = t->n;
        inv->res = c;
    }
    if (c->slot[ix].state == 2) {
        *out = c->slot[ix].value;
        return 0;
    }
    int rc = call_factory(inv, r, &c->slot[ix].value);
    if (rc == 0)
        c->slot[ix].state = 2;
    *out = c->slot[ix].value;
    return rc;
}

int wf__resources_enter(wf__inv *inv)
{
    const wf__step_res *sr = inv->step->res;
    for (uint32_t k = 0; k < sr->n; k++) {
        void *unused;
        int rc = make(inv, sr->ix[k], &unused);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void wf__resources_leave(wf__inv *inv)
{
    wf__res_inv *c = inv->res;
    if (c == NULL)
        return;
    const wf__resources *t = inv->run->wf->res;
    for (uint32_t i = 0; i < c->n; i++)
        if (c->slot[i].state == 2 && t->v[i]->free_fn)
            t->v[i]->free_fn(c->slot[i].value, t->v[i]->user);
    wf__free_mem(c);
    inv->res = NULL;
}

/* 1 if the step or the factory being run declared resource ix. */
static int declared(const wf__inv *inv, uint32_t ix)
{
    const wf__resource *r = tls_making;
    if (r) {
        for (uint32_t k = 0; k < r->n_deps; k++)
            if (r->dep_ix[k] == ix)
                return 1;
        return 0;
    }
    const wf__step_res *sr = inv->step->res;
    for (uint32_t k = 0; sr && k < sr->n; k++)
        if (sr->ix[k] == ix)
            return 1;
    return 0;
}

int wf_ctx_resource(wf_ctx *ctx, const char *name, void **out)
{
    if (ctx == NULL || name == NULL || out == NULL)
        return wf__set_error(WF_EINVAL, "wf_ctx_resource: NULL argument");
    *out = NULL;
    wf__inv *inv = wf__inv_of(ctx);
    if (inv == NULL)
        return wf__set_error(WF_ESTATE,
                             "wf_ctx_resource: not called from a step of this context's run");
    const wf__resources *t = inv->run->wf->res;
    for (uint32_t i = 0; t && i < t->n; i++) {
        if (strcmp(t->v[i]->name, name) != 0)
            continue;
        if (!declared(inv, i))
            break;
        return make(inv, i, out);
    }
    return wf__set_error(WF_ENOTFOUND, "wf_ctx_resource: '%s' is not declared by %s '%s'", name,
                         tls_making ? "resource" : "step",
                         tls_making ? tls_making->name : inv->step->name);
}
