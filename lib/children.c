/*
 * children.c: the child workflows a step declares (wf_workflow_declare_child,
 * wf/child.h), for drawings and representations; running one is
 * executor/child.c's. A step holds its declared children retained (the
 * workflow itself as NULL, so a recursive workflow holds no reference on
 * itself); a declaration that would make a longer cycle of references is
 * refused. Declared while the workflow is being built (one thread), read
 * once it is frozen or by that thread.
 */
#include "internal.h"

#include <wf/child.h>

static int frozen(const wf_workflow *wf)
{
    return atomic_load_explicit(&((wf_workflow *)wf)->frozen, memory_order_acquire);
}

/* 1 if target is wf or among the children wf's steps declare, transitively. */
static int reaches(const wf_workflow *wf, const wf_workflow *target, unsigned depth)
{
    if (wf == target)
        return 1;
    if (depth > 64) /* deeper than anyone draws: treat as a cycle */
        return 1;
    for (uint32_t i = 0; i < wf->n_steps; i++)
        for (uint32_t j = 0; j < wf->steps[i]->n_children; j++) {
            const wf_workflow *c = wf->steps[i]->children[j];
            if (c && reaches(c, target, depth + 1))
                return 1;
        }
    return 0;
}

int wf_workflow_declare_child(wf_workflow *wf, const char *step, wf_workflow *child)
{
    if (wf == NULL || step == NULL || child == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_declare_child: %s is NULL",
                             wf == NULL     ? "wf"
                             : step == NULL ? "step"
                                            : "child");
    if (frozen(wf))
        return wf__set_error(WF_EFROZEN, "wf_workflow_declare_child: workflow \"%s\" is frozen",
                             wf->name);
    wf__step *s = wf__workflow_find_step(wf, step);
    if (s == NULL)
        return wf__set_error(WF_ENOTFOUND,
                             "wf_workflow_declare_child: workflow \"%s\" has no step \"%.255s\"",
                             wf->name, step);
    wf_workflow *c = child == wf ? NULL : child;
    for (uint32_t j = 0; j < s->n_children; j++)
        if (s->children[j] == c)
            return 0; /* declared already */
    if (c && reaches(c, wf, 0))
        return wf__set_error(WF_EINVAL,
                             "wf_workflow_declare_child: \"%s\" declares \"%s\" (perhaps through "
                             "others) already: a cycle of declarations",
                             child->name, wf->name);
    wf_workflow **n = wf__realloc(s->children, (s->n_children + 1) * sizeof *n);
    if (n == NULL)
        return WF_ENOMEM;
    s->children = n;
    s->children[s->n_children++] = c ? wf_workflow_retain(c) : NULL;
    return 0;
}

size_t wf_workflow_child_count(const wf_workflow *wf, const char *step)
{
    const wf__step *s = wf && step ? wf__workflow_find_step(wf, step) : NULL;
    return s ? s->n_children : 0;
}

const wf_workflow *wf_workflow_child_at(const wf_workflow *wf, const char *step, size_t i)
{
    const wf__step *s = wf && step ? wf__workflow_find_step(wf, step) : NULL;
    if (s == NULL || i >= s->n_children)
        return NULL;
    return s->children[i] ? s->children[i] : wf;
}

void wf__step_children_free(wf__step *s)
{
    for (uint32_t j = 0; j < s->n_children; j++)
        wf_workflow_free(s->children[j]);
    wf__free_mem(s->children);
    s->children = NULL;
    s->n_children = 0;
}

void wf__graph_children(const wf_workflow *wf, const wf__graph_style *st, wf__buf *b)
{
    int dot = st == &wf__graph_dot, any = 0;
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *s = wf->steps[i];
        for (uint32_t j = 0; j < s->n_children; j++) {
            const wf_workflow *c = s->children[j] ? s->children[j] : wf;
            any = 1;
            if (dot) {
                wf__buf_printf(b, "  child_%u_%u [label=", i, j);
                st->quote(b, c->name);
                wf__buf_puts(b, ", shape=box3d, style=filled, fillcolor=\"#D8BFD8\"];\n");
                wf__buf_printf(b, "  step_%u -> child_%u_%u [style=dotted, label=\"runs\"];\n", i,
                               i, j);
            } else {
                wf__buf_printf(b, "    child_%u_%u[[", i, j);
                st->quote(b, c->name);
                wf__buf_puts(b, "]]:::childWorkflow\n");
                wf__buf_printf(b, "    step_%u -. runs .-> child_%u_%u\n", i, i, j);
            }
        }
    }
    if (any && !dot)
        wf__buf_puts(b, "    classDef childWorkflow fill:#D8BFD8,color:#000000,stroke:#333333\n");
}
