/*
 * resource.h (internal): resource definitions shared by lib/resource.c (the
 * declarations, their checks at freezing, the workflow-scoped instances) and
 * executor/resources.c (making them for runs and invocations).
 */
#ifndef WF_LIB_RESOURCE_H
#define WF_LIB_RESOURCE_H

#include "internal.h"

#include <wf/resource.h>

#include <pthread.h>

typedef struct wf__resource {
    char *name;
    wf_resource_factory factory;
    wf_resource_free_fn free_fn;
    wf_resource_check_fn check;
    void *user;
    void (*user_free)(void *user);
    int32_t scope;
    char **deps; /* names, as declared */
    uint32_t n_deps;
    uint32_t *dep_ix; /* resolved when frozen */
} wf__resource;

/* A made-or-not slot: state 0 not made, 1 being made (by one thread), 2 made. */
typedef struct wf__rslot {
    int state;
    void *value;
} wf__rslot;

/* A workflow's resources (wf->res; NULL when it declares none). */
typedef struct wf__resources {
    wf__resource **v;
    uint32_t n;
    uint32_t cap;
    /* the workflow-scoped instances: slots[i] for resource i, guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wf__rslot *wslot;
} wf__resources;

/* What a step declares (step->res; NULL when it uses none). */
typedef struct wf__step_res {
    char **names;
    uint32_t n;
    uint32_t *ix; /* resolved when frozen */
} wf__step_res;

/* workflow.c's hooks */
int wf__step_res_new(wf__step_res **out, const char *const *names, uint32_t n);
void wf__step_res_free(wf__step_res *r);
void wf__resources_free(wf_workflow *wf);
/* At freezing: resolves names; reports unknown names, cycles and scope errors into b. */
int wf__resources_resolve(wf_workflow *wf, wf__buf *b);

#endif
