/*
 * resource.h: resources (dependency injection), the reference's
 * Annotated[T, Resource(factory)].
 *
 * A workflow declares named resources, each with a factory that makes it
 * and a free function that frees it; steps declare which they use
 * (wf_step_params.resources) and get them with wf_ctx_resource. A resource
 * has a scope:
 *   - WF_RESOURCE_RUN (the default, the reference's cache=True): made once
 *     per run, the first time an invocation of a step using it starts, and
 *     shared by every invocation of that run; freed when the run is freed.
 *     Concurrent invocations that need it at once make it once: the others
 *     wait for the one making it.
 *   - WF_RESOURCE_INVOCATION (cache=False): made fresh for each invocation
 *     (each attempt) of a step using it, freed when the step function
 *     returns.
 *   - WF_RESOURCE_WORKFLOW: made once, on first use, for the workflow's
 *     life (shared by every run of the workflow, on any executor); freed
 *     when the workflow is freed.
 *
 * The resources a step declares are made before its function runs (a
 * resource's dependencies first). A factory that fails fails that attempt
 * of the step like an error the step returned, with the factory's code and
 * a message naming the resource (retry policies and error handlers apply);
 * a failed run-scoped or workflow-scoped resource is not cached, so the next
 * attempt calls the factory again.
 *
 * A factory may depend on other resources (params.depends): inside the
 * factory, wf_ctx_resource gives those. A dependency may not have a
 * narrower scope than its dependent (a workflow-scoped resource cannot use
 * a run-scoped one; a run-scoped one cannot use a per-invocation one).
 * Unknown names (in depends or in a step's resources), cycles and scope
 * violations are reported when the workflow is frozen (WF_EVALIDATION, the
 * report naming them).
 *
 * Resources are never part of a snapshot: a resumed run makes its own again.
 *
 * Threads: definition calls as the rest of workflow.h (one thread, before
 * freezing). Factories run on the executor thread of the invocation that
 * needs the resource; free functions on whichever thread frees the run or
 * the workflow. A resource itself is shared between the run's invocations
 * (or the workflow's runs): it must be safe for them to use it at once.
 */
#ifndef WF_RESOURCE_H
#define WF_RESOURCE_H

#include <wf/common.h>
#include <wf/workflow.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A resource's scope. Values are stable ABI. */
typedef enum wf_resource_scope {
    WF_RESOURCE_RUN = 0,
    WF_RESOURCE_INVOCATION = 1,
    WF_RESOURCE_WORKFLOW = 2
} wf_resource_scope;

/**
 * Makes the resource: 0 with *out set (NULL is a valid resource), or a
 * negative code to fail (message: wf_ctx_set_error, as in a step). ctx is
 * the run's context of the invocation that needs it; wf_ctx_resource gives
 * its declared dependencies.
 */
typedef int (*wf_resource_factory)(wf_ctx *ctx, void **out, void *user);
/** Frees a resource the factory made. */
typedef void (*wf_resource_free_fn)(void *resource, void *user);
/**
 * A check made when the workflow is frozen (a config resource checks its
 * file here): 0, or a negative code with *message (caller owns: allocate it
 * with wf_strdup_message; NULL is fine) saying what is wrong.
 */
typedef int (*wf_resource_check_fn)(char **message, void *user);

/** Resource declaration. Fill with wf_resource_params_init; the struct only grows at the end. */
typedef struct wf_resource_params {
    int32_t scope; /* a wf_resource_scope; default WF_RESOURCE_RUN */
    /** Names of the resources the factory uses (copied). */
    const char *const *depends;
    uint32_t n_depends;
    /** Frees a made resource (may be NULL: nothing to free). */
    wf_resource_free_fn free;
    /** Runs exactly once on user when the workflow is freed (if added). May be NULL. */
    void (*user_free)(void *user);
    /** Checked when the workflow is frozen (may be NULL). */
    wf_resource_check_fn check;
} wf_resource_params;

/** Fills p with the defaults: scope WF_RESOURCE_RUN, no dependencies, no free. */
WF_API void wf_resource_params_init(wf_resource_params *p);

/**
 * Declares the resource name (1..255 bytes) made by factory. WF_EEXIST for a
 * duplicate name, WF_EINVAL for a NULL factory or a bad scope, WF_EFROZEN
 * after freezing. On failure user_free is not called and the caller keeps
 * user. p may be NULL (the defaults).
 */
WF_API int wf_workflow_add_resource(wf_workflow *wf, const char *name, wf_resource_factory factory,
                                    const wf_resource_params *p, void *user);
/** Number of resources declared. Any time. */
WF_API size_t wf_workflow_resource_count(const wf_workflow *wf);
/**
 * Resource i: its name (borrowed), scope and dependencies (borrowed array of
 * *n_depends names; may be NULL). WF_ERANGE past the end. Any time.
 */
WF_API int wf_workflow_resource_at(const wf_workflow *wf, size_t i, const char **name,
                                   int32_t *scope, const char *const **depends, size_t *n_depends);
/**
 * The resources step i declares (borrowed names, *n of them). WF_ERANGE
 * past the last step. Any time.
 */
WF_API int wf_workflow_step_resources(const wf_workflow *wf, size_t i, const char *const **names,
                                      size_t *n);

/**
 * Resource i's factory and user pointer (borrowed), so that a library that
 * declares resources (libwf-json's config resources) can recognise its own.
 * WF_ERANGE past the end. Any time.
 */
WF_API int wf_workflow_resource_factory(const wf_workflow *wf, size_t i,
                                        wf_resource_factory *factory, void **user);

/**
 * In a step, the resource name it declared; in a factory, a dependency it
 * declared. *out borrowed: valid during the step (per-invocation ones), the
 * run (per-run ones) or the workflow's life. WF_ENOTFOUND when the calling
 * step or factory did not declare name, WF_ESTATE outside a step, WF_EINVAL
 * for NULLs. Only on the thread running the step.
 */
WF_API int wf_ctx_resource(wf_ctx *ctx, const char *name, void **out);

/** A copy of s (NULL for NULL) allocated as wf's messages are: for wf_resource_check_fn. */
WF_API char *wf_strdup_message(const char *s);

#ifdef __cplusplus
}
#endif

#endif
