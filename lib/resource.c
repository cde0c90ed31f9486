/*
 * resource.c: resource declarations (wf_workflow_add_resource), the names
 * steps declare, their resolution and checks when the workflow is frozen,
 * and the workflow-scoped instances' lifetime. Making resources for runs
 * and invocations is executor/resources.c.
 *
 * Locks: declarations are built on one thread before freezing and read-only
 * after. wf->res->mu guards wslot[] (the workflow-scoped instances); it is
 * initialised with the table and destroyed with the workflow.
 */
#include "resource.h"

#include <string.h>

void wf_resource_params_init(wf_resource_params *p)
{
    if (p)
        memset(p, 0, sizeof *p);
}

char *wf_strdup_message(const char *s)
{
    return s ? wf__strdup(s) : NULL;
}

static void resource_free(wf__resource *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->n_deps; i++)
        wf__free_mem(r->deps[i]);
    wf__free_mem(r->deps);
    wf__free_mem(r->dep_ix);
    wf__free_mem(r->name);
    wf__free_mem(r);
}

static int name_ok(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    return len >= 1 && len <= 255;
}

int wf_workflow_add_resource(wf_workflow *wf, const char *name, wf_resource_factory factory,
                             const wf_resource_params *p, void *user)
{
    wf_resource_params dflt;
    if (p == NULL) {
        wf_resource_params_init(&dflt);
        p = &dflt;
    }
    if (wf == NULL || factory == NULL || !name_ok(name))
        return wf__set_error(WF_EINVAL,
                             "wf_workflow_add_resource: a workflow, a name of 1..255 bytes and a "
                             "factory are needed");
    if (p->scope < WF_RESOURCE_RUN || p->scope > WF_RESOURCE_WORKFLOW)
        return wf__set_error(WF_EINVAL, "wf_workflow_add_resource: '%s': bad scope %d", name,
                             (int)p->scope);
    if (p->n_depends && p->depends == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_add_resource: '%s': depends is NULL", name);
    for (uint32_t i = 0; i < p->n_depends; i++)
        if (!name_ok(p->depends[i]))
            return wf__set_error(
                WF_EINVAL, "wf_workflow_add_resource: '%s': dependency %u is not a name", name, i);
    if (atomic_load_explicit(&wf->frozen, memory_order_acquire))
        return wf__set_error(WF_EFROZEN, "wf_workflow_add_resource: workflow '%s' is frozen",
                             wf->name);
    wf__resources *t = wf->res;
    if (t == NULL) {
        if ((t = wf__calloc(1, sizeof *t)) == NULL)
            return WF_ENOMEM;
        pthread_mutex_init(&t->mu, NULL);
        pthread_cond_init(&t->cv, NULL);
        wf->res = t;
    }
    for (uint32_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i]->name, name) == 0)
            return wf__set_error(WF_EEXIST, "wf_workflow_add_resource: '%s' already declared",
                                 name);
    if (t->n == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 4;
        wf__resource **v = wf__malloc(cap * sizeof *v);
        if (v == NULL)
            return WF_ENOMEM;
        if (t->n)
            memcpy(v, t->v, t->n * sizeof *v);
        wf__free_mem(t->v);
        t->v = v;
        t->cap = cap;
    }
    wf__resource *r = wf__calloc(1, sizeof *r);
    if (r == NULL)
        return WF_ENOMEM;
    r->name = wf__strdup(name);
    r->deps = wf__calloc(p->n_depends ? p->n_depends : 1, sizeof *r->deps);
    r->dep_ix = wf__calloc(p->n_depends ? p->n_depends : 1, sizeof *r->dep_ix);
    if (r->name == NULL || r->deps == NULL || r->dep_ix == NULL) {
        resource_free(r);
        return WF_ENOMEM;
    }
    for (; r->n_deps < p->n_depends; r->n_deps++)
        if ((r->deps[r->n_deps] = wf__strdup(p->depends[r->n_deps])) == NULL) {
            resource_free(r);
            return WF_ENOMEM;
        }
    r->factory = factory;
    r->free_fn = p->free;
    r->check = p->check;
    r->scope = p->scope;
    r->user = user;
    r->user_free = p->user_free;
    t->v[t->n++] = r;
    return 0;
}

size_t wf_workflow_resource_count(const wf_workflow *wf)
{
    return (wf && wf->res) ? wf->res->n : 0;
}

int wf_workflow_resource_at(const wf_workflow *wf, size_t i, const char **name, int32_t *scope,
                            const char *const **depends, size_t *n_depends)
{
    if (wf == NULL)
        return WF_EINVAL;
    if (i >= wf_workflow_resource_count(wf))
        return WF_ERANGE;
    const wf__resource *r = wf->res->v[i];
    if (name)
        *name = r->name;
    if (scope)
        *scope = r->scope;
    if (depends)
        *depends = (const char *const *)r->deps;
    if (n_depends)
        *n_depends = r->n_deps;
    return 0;
}

int wf_workflow_resource_factory(const wf_workflow *wf, size_t i, wf_resource_factory *factory,
                                 void **user)
{
    if (wf == NULL)
        return WF_EINVAL;
    if (i >= wf_workflow_resource_count(wf))
        return WF_ERANGE;
    if (factory)
        *factory = wf->res->v[i]->factory;
    if (user)
        *user = wf->res->v[i]->user;
    return 0;
}

int wf_workflow_step_resources(const wf_workflow *wf, size_t i, const char *const **names,
                               size_t *n)
{
    if (wf == NULL || names == NULL || n == NULL)
        return WF_EINVAL;
    if (i >= wf->n_steps)
        return WF_ERANGE;
    const wf__step_res *r = wf->steps[i]->res;
    *names = r ? (const char *const *)r->names : NULL;
    *n = r ? r->n : 0;
    return 0;
}

int wf__step_res_new(wf__step_res **out, const char *const *names, uint32_t n)
{
    *out = NULL;
    if (n == 0)
        return 0;
    if (names == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_add_step: resources is NULL");
    for (uint32_t i = 0; i < n; i++)
        if (!name_ok(names[i]))
            return wf__set_error(WF_EINVAL, "wf_workflow_add_step: resource %u is not a name", i);
    wf__step_res *r = wf__calloc(1, sizeof *r);
    if (r == NULL)
        return WF_ENOMEM;
    r->names = wf__calloc(n, sizeof *r->names);
    r->ix = wf__calloc(n, sizeof *r->ix);
    if (r->names == NULL || r->ix == NULL) {
        wf__step_res_free(r);
        return WF_ENOMEM;
    }
    for (; r->n < n; r->n++)
        if ((r->names[r->n] = wf__strdup(names[r->n])) == NULL) {
            wf__step_res_free(r);
            return WF_ENOMEM;
        }
    *out = r;
    return 0;
}

void wf__step_res_free(wf__step_res *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->n; i++)
        wf__free_mem(r->names[i]);
    wf__free_mem(r->names);
    wf__free_mem(r->ix);
    wf__free_mem(r);
}

void wf__resources_free(wf_workflow *wf)
{
    wf__resources *t = wf->res;
    if (t == NULL)
        return;
    for (uint32_t i = 0; i < t->n; i++) {
        wf__resource *r = t->v[i];
        if (t->wslot && t->wslot[i].state == 2 && r->free_fn)
            r->free_fn(t->wslot[i].value, r->user);
        if (r->user_free)
            r->user_free(r->user);
        resource_free(r);
    }
    wf__free_mem(t->v);
    wf__free_mem(t->wslot);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    wf__free_mem(t);
    wf->res = NULL;
}

static int find(const wf__resources *t, const char *name)
{
    for (uint32_t i = 0; t && i < t->n; i++)
        if (strcmp(t->v[i]->name, name) == 0)
            return (int)i;
    return -1;
}

static const char *scope_name(int32_t s)
{
    return s == WF_RESOURCE_WORKFLOW     ? "workflow"
           : s == WF_RESOURCE_INVOCATION ? "invocation"
                                         : "run";
}

/* Scope breadth: a dependency must live at least as long as its dependent. */
static int breadth(int32_t s)
{
    return s == WF_RESOURCE_WORKFLOW ? 2 : s == WF_RESOURCE_RUN ? 1 : 0;
}

/* Depth-first search for a cycle through i; color 0 new, 1 on the path, 2 done. */
static int cycle_from(const wf__resources *t, uint32_t i, uint8_t *color, uint32_t *path,
                      uint32_t depth, wf__buf *b)
{
    color[i] = 1;
    path[depth] = i;
    for (uint32_t k = 0; k < t->v[i]->n_deps; k++) {
        uint32_t j = t->v[i]->dep_ix[k];
        if (j == UINT32_MAX)
            continue;
        if (color[j] == 1) {
            wf__buf_printf(b, "Resource dependency cycle: ");
            uint32_t from = 0;
            while (path[from] != j)
                from++;
            for (uint32_t d = from; d <= depth; d++)
                wf__buf_printf(b, "'%s' -> ", t->v[path[d]]->name);
            wf__buf_printf(b, "'%s'\n", t->v[j]->name);
            return 1;
        }
        if (color[j] == 0 && cycle_from(t, j, color, path, depth + 1, b))
            return 1;
    }
    color[i] = 2;
    return 0;
}

int wf__resources_resolve(wf_workflow *wf, wf__buf *b)
{
    wf__resources *t = wf->res;
    int problems = 0;
    for (uint32_t s = 0; s < wf->n_steps; s++) {
        wf__step_res *sr = wf->steps[s]->res;
        for (uint32_t k = 0; sr && k < sr->n; k++) {
            int j = find(t, sr->names[k]);
            sr->ix[k] = j < 0 ? UINT32_MAX : (uint32_t)j;
            if (j < 0) {
                wf__buf_printf(
                    b, "Step '%s' uses resource '%s', which the workflow does not declare\n",
                    wf->steps[s]->name, sr->names[k]);
                problems++;
            }
        }
    }
    if (t == NULL)
        return problems;
    for (uint32_t i = 0; i < t->n; i++) {
        wf__resource *r = t->v[i];
        for (uint32_t k = 0; k < r->n_deps; k++) {
            int j = find(t, r->deps[k]);
            r->dep_ix[k] = j < 0 ? UINT32_MAX : (uint32_t)j;
            if (j < 0) {
                wf__buf_printf(b, "Resource '%s' depends on unknown resource '%s'\n", r->name,
                               r->deps[k]);
                problems++;
            } else if (breadth(t->v[j]->scope) < breadth(r->scope)) {
                wf__buf_printf(b,
                               "Resource '%s' (scope %s) depends on '%s', whose scope (%s) is "
                               "narrower\n",
                               r->name, scope_name(r->scope), t->v[j]->name,
                               scope_name(t->v[j]->scope));
                problems++;
            }
        }
    }
    uint8_t *color = wf__calloc(t->n, 1);
    uint32_t *path = wf__calloc(t->n, sizeof *path);
    if (color == NULL || path == NULL) {
        b->oom = 1;
        problems++;
    } else {
        for (uint32_t i = 0; i < t->n; i++)
            if (color[i] == 0 && cycle_from(t, i, color, path, 0, b)) {
                problems++;
                break; /* one cycle named is enough to act on */
            }
    }
    wf__free_mem(color);
    wf__free_mem(path);
    for (uint32_t i = 0; i < t->n; i++) {
        wf__resource *r = t->v[i];
        char *msg = NULL;
        int rc = r->check ? r->check(&msg, r->user) : 0;
        if (rc < 0) {
            wf__buf_printf(b, "Resource '%s': %s\n", r->name, msg ? msg : wf_strerror(rc));
            problems++;
        }
        wf__free_mem(msg);
    }
    if (problems == 0 && t->wslot == NULL &&
        (t->wslot = wf__calloc(t->n, sizeof *t->wslot)) == NULL) {
        b->oom = 1;
        problems++;
    }
    return problems;
}
