/*
 * workflow.c: workflow definitions, steps, freezing and the routing table.
 */
#include "internal.h"
#include "resource.h"

#include <wf/schema.h>

#include <string.h>

void wf_step_params_init(wf_step_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->num_workers = 4;
    p->max_recoveries = 1;
}

int wf_workflow_new(wf_workflow **out, const char *name, wf_registry *reg)
{
    if (out == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_new: out is NULL");
    *out = NULL;
    if (name == NULL || name[0] == 0 || strlen(name) > 255)
        return wf__set_error(WF_EINVAL, "wf_workflow_new: the name must be 1 to 255 bytes");
    wf_workflow *wf = wf__calloc(1, sizeof *wf);
    if (wf == NULL)
        return WF_ENOMEM;
    wf->name = wf__strdup(name);
    if (wf->name == NULL) {
        wf__free_mem(wf);
        return WF_ENOMEM;
    }
    if (reg) {
        wf__registry_retain(reg);
    } else if (wf_registry_new(&reg) < 0) {
        wf__free_mem(wf->name);
        wf__free_mem(wf);
        return WF_ENOMEM;
    }
    wf->reg = reg;
    atomic_init(&wf->refs, 1);
    atomic_init(&wf->frozen, 0);
    wf->timeout_ms = WF_DEFAULT_TIMEOUT_MS;
    wf->validation = 1;
    pthread_mutex_init(&wf->lock, NULL);
    *out = wf;
    return 0;
}

static void step_free(wf__step *s)
{
    if (s == NULL)
        return;
    if (s->user_free)
        s->user_free(s->user);
    wf_retry_policy_free((wf_retry_policy *)s->retry);
    wf__step_res_free(s->res);
    wf_value_release(s->name_v);
    for (uint32_t i = 0; i < s->n_error_of; i++)
        wf__free_mem(s->error_of[i]);
    wf__free_mem(s->error_of);
    wf__step_children_free(s);
    wf__free_mem(s->name);
    wf__free_mem(s->accepts);
    wf__free_mem(s->emits);
    wf__free_mem(s);
}

wf_workflow *wf_workflow_retain(wf_workflow *wf)
{
    if (wf)
        atomic_fetch_add_explicit(&wf->refs, 1, memory_order_relaxed);
    return wf;
}

/*
 * References in two tiers (a per-CPU reference count, as Linux's
 * percpu_ref): global ones in refs, and the contexts' in per-thread shards,
 * taken in the shard of the thread that takes one and dropped in the shard
 * of the thread that drops it, so that threads starting and ending runs of
 * one workflow at once write no common line (a shared count cost ~15% of a
 * quick-start run with two submitting threads here). A shard's count alone
 * means nothing (a context made on one thread and freed on another leaves
 * +1 in one shard and -1 in the other); their sum does.
 *
 * While global references remain, the sum is not needed. The release that
 * would take refs to zero ends the split (kill) instead: it replaces its
 * reference with the flag WF__REFS_KILLED and a bias larger than any count,
 * flags every shard (an exchange of bits: a shard operation either lands
 * before it, in the count it returns, or sees the flag and goes to refs),
 * then adds the shards' sum and takes the bias off. Until then no operation
 * can bring refs down to the flag alone; after it refs holds every
 * reference, and whoever takes it to the flag alone frees the workflow.
 */
#define SHARD_KILLED (1ull << 63)
#define SHARD_COUNT  (SHARD_KILLED - 1) /* the count, modulo 2^63 */
#define REFS_BIAS    (1ull << 40)

static void workflow_destroy(wf_workflow *wf);

static void refs_drop(wf_workflow *wf)
{
    if (atomic_fetch_sub_explicit(&wf->refs, 1, memory_order_acq_rel) == (WF__REFS_KILLED | 1))
        workflow_destroy(wf);
}

/* Adds d (+1 or -1) to the calling thread's shard; 0, or -1 when the split is over. */
static inline int shard_add(wf_workflow *wf, uint64_t d)
{
    _Atomic uint64_t *n = &wf->shard_refs[wf__thread_shard() % WF__WF_REF_SHARDS].n;
    uint64_t c = atomic_load_explicit(n, memory_order_relaxed);
    while (WF__LIKELY(!(c & SHARD_KILLED)))
        if (atomic_compare_exchange_weak_explicit(n, &c, (c + d) & SHARD_COUNT,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return 0;
    return -1;
}

void wf__workflow_retain_local(wf_workflow *wf)
{
    if (WF__UNLIKELY(shard_add(wf, 1) < 0))
        atomic_fetch_add_explicit(&wf->refs, 1, memory_order_relaxed);
}

void wf__workflow_release_local(wf_workflow *wf)
{
    if (WF__UNLIKELY(shard_add(wf, SHARD_COUNT) < 0)) /* -1 modulo 2^63 */
        refs_drop(wf);
}

void wf_workflow_free(wf_workflow *wf)
{
    if (wf == NULL)
        return;
    uint64_t c = atomic_load_explicit(&wf->refs, memory_order_relaxed);
    for (;;) {
        if (c == 1) { /* the last global reference, while the split lasts: kill */
            if (atomic_compare_exchange_weak_explicit(&wf->refs, &c, WF__REFS_KILLED | REFS_BIAS,
                                                      memory_order_acq_rel, memory_order_relaxed))
                break;
        } else if (atomic_compare_exchange_weak_explicit(&wf->refs, &c, c - 1, memory_order_acq_rel,
                                                         memory_order_relaxed)) {
            if (c == (WF__REFS_KILLED | 1))
                workflow_destroy(wf);
            return;
        }
    }
    uint64_t sum = 0; /* modulo 2^64: the shards' counts, sign-extended from 63 bits */
    for (uint32_t k = 0; k < WF__WF_REF_SHARDS; k++) {
        uint64_t old =
            atomic_fetch_or_explicit(&wf->shard_refs[k].n, SHARD_KILLED, memory_order_acq_rel);
        uint64_t n = old & SHARD_COUNT;
        sum += (n & (1ull << 62)) ? n | SHARD_KILLED : n;
    }
    uint64_t add = sum - REFS_BIAS;
    if (atomic_fetch_add_explicit(&wf->refs, add, memory_order_acq_rel) + add == WF__REFS_KILLED)
        workflow_destroy(wf);
}

static void workflow_destroy(wf_workflow *wf)
{
    for (uint32_t i = 0; i < wf->n_steps; i++)
        step_free(wf->steps[i]);
    wf__resources_free(wf);
    wf_schema_free(wf->state_schema);
    wf__free_mem(wf->steps);
    wf__free_mem(wf->route_off);
    wf__free_mem(wf->route_steps);
    wf__free_mem(wf->join_of);
    wf__free_mem(wf->validation_msg);
    wf__free_mem(wf->name);
    pthread_mutex_destroy(&wf->lock);
    wf_registry_free(wf->reg);
    wf__free_mem(wf);
}

const char *wf_workflow_name(const wf_workflow *wf)
{
    return wf ? wf->name : NULL;
}

wf_registry *wf_workflow_registry(const wf_workflow *wf)
{
    return wf ? wf->reg : NULL;
}

int wf_workflow_event_type(wf_workflow *wf, const char *name, const wf_event_type *parent,
                           const wf_event_type **out)
{
    if (wf == NULL) {
        if (out)
            *out = NULL;
        return wf__set_error(WF_EINVAL, "wf_workflow_event_type: wf is NULL");
    }
    return wf_registry_add(wf->reg, name, parent, out);
}

const wf_event_type *wf_workflow_builtin(const wf_workflow *wf, wf_builtin_type which)
{
    return wf ? wf_registry_builtin(wf->reg, which) : NULL;
}

static int is_frozen(const wf_workflow *wf)
{
    return atomic_load_explicit(&((wf_workflow *)wf)->frozen, memory_order_acquire);
}

static const wf_event_type **copy_types(const wf_event_type *const *src, uint32_t n)
{
    const wf_event_type **d = wf__malloc((n ? n : 1) * sizeof *d);
    if (d && n)
        memcpy(d, src, n * sizeof *d);
    return d;
}

wf__step *wf__workflow_find_step(const wf_workflow *wf, const char *name)
{
    if (wf == NULL || name == NULL)
        return NULL;
    for (uint32_t i = 0; i < wf->n_steps; i++)
        if (strcmp(wf->steps[i]->name, name) == 0)
            return wf->steps[i];
    return NULL;
}

int wf_workflow_add_step(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_step_params *p,
                         void *user)
{
    if (wf == NULL || name == NULL || fn == NULL || p == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_add_step: %s is NULL",
                             wf == NULL     ? "wf"
                             : name == NULL ? "name"
                             : fn == NULL   ? "fn"
                                            : "params");
    if (is_frozen(wf))
        return wf__set_error(WF_EFROZEN,
                             "wf_workflow_add_step: step \"%.255s\": workflow \"%s\" is frozen",
                             name, wf->name);
    size_t len = strlen(name);
    if (len == 0 || len > 255)
        return wf__set_error(WF_EINVAL, "wf_workflow_add_step: a step name must be 1 to 255 bytes");
    if (p->n_accepts == 0 || p->accepts == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_add_step: step \"%s\" accepts no event type",
                             name);
    if (p->n_emits && p->emits == NULL)
        return wf__set_error(WF_EINVAL,
                             "wf_workflow_add_step: step \"%s\": n_emits is %u and emits is NULL",
                             name, (unsigned)p->n_emits);
    if (p->num_workers == 0)
        return wf__set_error(WF_EINVAL, "wf_workflow_add_step: step \"%s\": num_workers is 0",
                             name);
    for (uint32_t i = 0; i < p->n_accepts; i++)
        if (p->accepts[i] == NULL || p->accepts[i]->reg != wf->reg)
            return wf__set_error(WF_EINVAL, "wf_workflow_add_step: step \"%s\": accepts[%u] is %s",
                                 name, (unsigned)i,
                                 p->accepts[i] == NULL ? "NULL" : "a type of another registry");
    for (uint32_t i = 0; i < p->n_emits; i++)
        if (p->emits[i] == NULL || p->emits[i]->reg != wf->reg)
            return wf__set_error(WF_EINVAL, "wf_workflow_add_step: step \"%s\": emits[%u] is %s",
                                 name, (unsigned)i,
                                 p->emits[i] == NULL ? "NULL" : "a type of another registry");
    if (p->n_error_of && p->error_of == NULL)
        return wf__set_error(
            WF_EINVAL, "wf_workflow_add_step: step \"%s\": n_error_of is %u and error_of is NULL",
            name, (unsigned)p->n_error_of);
    if (p->join && p->join_list)
        return wf__set_error(WF_EINVAL,
                             "wf_workflow_add_step: step \"%s\": join and join_list are exclusive "
                             "(join waits for one event of each accepted type, join_list for a "
                             "list fan-out of its one type)",
                             name);
    if (p->join_list && p->n_accepts != 1)
        return wf__set_error(WF_EINVAL,
                             "wf_workflow_add_step: step \"%s\": join_list needs exactly one "
                             "accepted type (%u given)",
                             name, (unsigned)p->n_accepts);
    if (p->take && !p->join_list)
        return wf__set_error(
            WF_EINVAL, "wf_workflow_add_step: step \"%s\": take applies to join_list steps", name);
    uint32_t skips = 0;
    if (p->n_skip_graph_checks && p->skip_graph_checks == NULL)
        return wf__set_error(WF_EINVAL,
                             "wf_workflow_add_step: step \"%s\": n_skip_graph_checks is %u and "
                             "skip_graph_checks is NULL",
                             name, (unsigned)p->n_skip_graph_checks);
    for (uint32_t i = 0; i < p->n_skip_graph_checks; i++) {
        const char *c = p->skip_graph_checks[i];
        if (c && strcmp(c, "reachability") == 0)
            skips |= WF__CHECK_REACHABILITY;
        else if (c && strcmp(c, "dead_end") == 0)
            skips |= WF__CHECK_DEAD_END;
        else
            return wf__set_error(WF_EINVAL,
                                 "wf_workflow_add_step: step \"%s\": skip_graph_checks[%u] is "
                                 "\"%.100s\" (a step may skip reachability or dead_end)",
                                 name, (unsigned)i, c ? c : "NULL");
    }
    for (uint32_t i = 0; i < p->n_error_of; i++)
        if (p->error_of[i] == NULL)
            return wf__set_error(WF_EINVAL,
                                 "wf_workflow_add_step: step \"%s\": error_of[%u] is NULL", name,
                                 (unsigned)i);
    if (wf__workflow_find_step(wf, name))
        return wf__set_error(WF_EEXIST,
                             "wf_workflow_add_step: workflow \"%s\" already has a step \"%s\"",
                             wf->name, name);
    if (wf->n_steps == wf->cap_steps) {
        uint32_t cap = wf->cap_steps ? wf->cap_steps * 2 : 8;
        wf__step **s = wf__realloc(wf->steps, cap * sizeof *s);
        if (s == NULL)
            return WF_ENOMEM;
        wf->steps = s;
        wf->cap_steps = cap;
    }
    wf__step *s = wf__calloc(1, sizeof *s);
    if (s == NULL)
        return WF_ENOMEM;
    s->name = wf__strdup(name);
    s->accepts = copy_types(p->accepts, p->n_accepts);
    s->emits = copy_types(p->emits, p->n_emits);
    if (s->name == NULL || s->accepts == NULL || s->emits == NULL ||
        wf_value_string(&s->name_v, name) < 0) {
        step_free(s);
        return WF_ENOMEM;
    }
    if (p->n_error_of) {
        s->error_of = wf__calloc(p->n_error_of, sizeof *s->error_of);
        if (s->error_of == NULL) {
            step_free(s);
            return WF_ENOMEM;
        }
        for (uint32_t i = 0; i < p->n_error_of; i++, s->n_error_of++) {
            if ((s->error_of[i] = wf__strdup(p->error_of[i])) == NULL) {
                step_free(s);
                return WF_ENOMEM;
            }
        }
    }
    int rc = wf__step_res_new(&s->res, p->resources, p->n_resources);
    if (rc < 0) {
        step_free(s);
        return rc;
    }
    s->error_of_all = p->error_of_all != 0;
    s->max_recoveries = p->max_recoveries;
    s->join = p->join != 0;
    s->blocking = p->blocking != 0;
    s->join_list = p->join_list != 0;
    s->take = p->take;
    s->skip_checks = skips;
    s->handler = -1;
    s->index = wf->n_steps;
    s->fn = fn;
    s->n_accepts = p->n_accepts;
    s->n_emits = p->n_emits;
    s->num_workers = p->num_workers;
    s->accept_subtypes = p->accept_subtypes != 0;
    s->retry = wf_retry_policy_retain(p->retry);
    /* user_free is set last: step_free above must not call it on failure. */
    s->user = user;
    s->user_free = p->user_free;
    wf->steps[wf->n_steps++] = s;
    return 0;
}

int wf_workflow_set_timeout(wf_workflow *wf, int64_t timeout_ms)
{
    if (wf == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_set_timeout: wf is NULL");
    if (timeout_ms < 0 && timeout_ms != WF_NO_TIMEOUT)
        return wf__set_error(
            WF_EINVAL, "wf_workflow_set_timeout: %lld ms (a timeout is >= 0 or WF_NO_TIMEOUT)",
            (long long)timeout_ms);
    if (is_frozen(wf))
        return wf__set_error(WF_EFROZEN, "wf_workflow_set_timeout: workflow \"%s\" is frozen",
                             wf->name);
    wf->timeout_ms = timeout_ms;
    return 0;
}

int wf_workflow_set_num_concurrent_runs(wf_workflow *wf, uint32_t n)
{
    if (wf == NULL)
        return WF_EINVAL;
    if (is_frozen(wf))
        return WF_EFROZEN;
    wf->max_runs = n;
    return 0;
}

uint32_t wf_workflow_num_concurrent_runs(const wf_workflow *wf)
{
    return wf ? wf->max_runs : 0;
}

int64_t wf_workflow_timeout(const wf_workflow *wf)
{
    return wf ? wf->timeout_ms : WF_NO_TIMEOUT;
}

int wf_workflow_set_validation(wf_workflow *wf, int enabled)
{
    if (wf == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_set_validation: wf is NULL");
    if (is_frozen(wf))
        return wf__set_error(WF_EFROZEN, "wf_workflow_set_validation: workflow \"%s\" is frozen",
                             wf->name);
    wf->validation = enabled != 0;
    return 0;
}

int wf_workflow_skip_check(wf_workflow *wf, const char *check)
{
    if (wf == NULL || check == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_skip_check: %s is NULL", wf ? "check" : "wf");
    uint32_t bit;
    if (strcmp(check, "reachability") == 0)
        bit = WF__CHECK_REACHABILITY;
    else if (strcmp(check, "terminal_event") == 0)
        bit = WF__CHECK_TERMINAL;
    else if (strcmp(check, "dead_end") == 0)
        bit = WF__CHECK_DEAD_END;
    else
        return wf__set_error(WF_EINVAL,
                             "wf_workflow_skip_check: unknown check \"%.200s\" (reachability, "
                             "terminal_event or dead_end)",
                             check);
    if (is_frozen(wf))
        return wf__set_error(WF_EFROZEN, "wf_workflow_skip_check: workflow \"%s\" is frozen",
                             wf->name);
    wf->skip_checks |= bit;
    return 0;
}

int wf__step_accepts(const wf__step *s, const wf_event_type *t)
{
    for (uint32_t i = 0; i < s->n_accepts; i++) {
        if (s->accepts[i] == t)
            return 1;
        if (s->accept_subtypes && wf_event_type_is(t, s->accepts[i]))
            return 1;
    }
    return 0;
}

uint32_t wf__workflow_join_scan(const wf_workflow *wf, const wf_event_type *collect)
{
    for (uint32_t i = 0; i < wf->n_steps; i++)
        if (wf->steps[i]->join_list && wf->steps[i]->accepts[0] == collect)
            return i;
    return UINT32_MAX;
}

/* The routing table covers every type registered at freeze time. */
static int build_routes(wf_workflow *wf)
{
    uint32_t nt = (uint32_t)wf_registry_count(wf->reg);
    uint32_t *off = wf__calloc(nt + 1, sizeof *off);
    if (off == NULL)
        return WF_ENOMEM;
    pthread_mutex_lock(&wf->reg->lock);
    size_t total = 0;
    for (uint32_t t = 0; t < nt; t++) {
        off[t] = (uint32_t)total;
        for (uint32_t i = 0; i < wf->n_steps; i++)
            total += (size_t)(!wf->steps[i]->join_list &&
                              wf__step_accepts(wf->steps[i], wf->reg->types[t]));
    }
    off[nt] = (uint32_t)total;
    uint32_t *steps = wf__malloc((total ? total : 1) * sizeof *steps);
    uint32_t *join_of = wf__malloc((nt ? nt : 1) * sizeof *join_of);
    if (steps == NULL || join_of == NULL) {
        pthread_mutex_unlock(&wf->reg->lock);
        wf__free_mem(off);
        wf__free_mem(steps);
        wf__free_mem(join_of);
        return WF_ENOMEM;
    }
    size_t k = 0;
    for (uint32_t t = 0; t < nt; t++) {
        for (uint32_t i = 0; i < wf->n_steps; i++)
            if (!wf->steps[i]->join_list && wf__step_accepts(wf->steps[i], wf->reg->types[t]))
                steps[k++] = i;
        join_of[t] = wf__workflow_join_scan(wf, wf->reg->types[t]);
    }
    pthread_mutex_unlock(&wf->reg->lock);
    wf->n_route_types = nt;
    wf->route_off = off;
    wf->route_steps = steps;
    wf->join_of = join_of;
    return 0;
}

void wf__workflow_route_slow(const wf_workflow *wf, const wf_event_type *t, const uint32_t **steps,
                             uint32_t *n, uint32_t *scratch, uint32_t scratch_cap)
{
    /* A type registered after freezing: only subtype-accepting steps can want it. */
    uint32_t k = 0;
    for (uint32_t i = 0; i < wf->n_steps && k < scratch_cap; i++)
        if (!wf->steps[i]->join_list && wf__step_accepts(wf->steps[i], t))
            scratch[k++] = i;
    *steps = scratch;
    *n = k;
}

int wf_workflow_freeze(wf_workflow *wf, char **message)
{
    if (message)
        *message = NULL;
    if (wf == NULL)
        return wf__set_error(WF_EINVAL, "wf_workflow_freeze: wf is NULL");
    if (is_frozen(wf))
        return 0;
    pthread_mutex_lock(&wf->lock);
    int rc = 0;
    if (!atomic_load_explicit(&wf->frozen, memory_order_relaxed)) {
        wf__buf b;
        wf__buf_init(&b);
        const wf_event_type *start = NULL, *stop = NULL;
        if (wf__validate_definition(wf, &start, &stop, &b) + wf__resources_resolve(wf, &b) > 0) {
            rc = wf__set_error(WF_EVALIDATION, "%s", b.oom ? "workflow validation failed" : b.data);
            if (message && wf__buf_take(&b, message) < 0)
                rc = WF_ENOMEM;
        } else if (b.oom) {
            rc = WF_ENOMEM;
        } else if ((rc = build_routes(wf)) == 0) {
            for (uint32_t i = 0; i < wf->n_steps; i++) {
                wf__step *st = wf->steps[i];
                for (uint32_t j = 0; j < st->n_error_of; j++) {
                    wf__step *target = wf__workflow_find_step(wf, st->error_of[j]);
                    target->handler = (int32_t)i;
                    st->is_handler = 1;
                }
            }
            for (uint32_t i = 0; i < wf->n_steps; i++) {
                wf__step *st = wf->steps[i];
                if (!st->error_of_all)
                    continue;
                st->is_handler = 1;
                for (uint32_t j = 0; j < wf->n_steps; j++)
                    if (j != i && wf->steps[j]->handler < 0 && !wf->steps[j]->is_handler)
                        wf->steps[j]->handler = (int32_t)i;
            }
            for (uint32_t i = 0; i < wf->n_steps; i++) {
                wf__step *st = wf->steps[i];
                if (st->is_handler)
                    st->handler = -1; /* a failing handler fails the run */
                st->needs_clock = st->retry != NULL || st->handler >= 0;
            }
            wf->start_type = start;
            wf->stop_type = stop;
            atomic_store_explicit(&wf->frozen, 1, memory_order_release);
        }
        wf__buf_free(&b);
    }
    pthread_mutex_unlock(&wf->lock);
    return rc;
}

static int run_checks(wf_workflow *wf, char **message)
{
    wf__buf b;
    wf__buf_init(&b);
    int found = wf__validate_run(wf, wf->skip_checks, &b);
    int rc = 0;
    if (b.oom)
        rc = WF_ENOMEM;
    else if (found > 0)
        rc = wf__set_error(WF_EVALIDATION, "%s", b.data);
    if (rc == WF_EVALIDATION && message && wf__buf_take(&b, message) < 0)
        rc = WF_ENOMEM;
    wf__buf_free(&b);
    return rc;
}

int wf_workflow_validate(wf_workflow *wf, char **message)
{
    if (message)
        *message = NULL;
    int rc = wf_workflow_freeze(wf, message);
    if (rc < 0)
        return rc;
    return run_checks(wf, message);
}

int wf__workflow_prepare(wf_workflow *wf, char **message)
{
    if (message)
        *message = NULL;
    int rc = wf_workflow_freeze(wf, message);
    if (rc < 0 || !wf->validation)
        return rc;
    /* passed once, passed for good (frozen): every run start but the first, without the lock */
    if (atomic_load_explicit(&wf->validated, memory_order_acquire) == 1)
        return 0;
    pthread_mutex_lock(&wf->lock);
    if (wf->validated == 0) {
        char *msg = NULL;
        rc = run_checks(wf, &msg);
        if (rc == 0) {
            atomic_store_explicit(&wf->validated, 1, memory_order_release);
        } else if (rc == WF_EVALIDATION) {
            wf->validated = -1;
            wf->validation_msg = msg;
        }
    }
    if (wf->validated < 0) {
        rc = wf__set_error(WF_EVALIDATION, "%s",
                           wf->validation_msg ? wf->validation_msg : "workflow validation failed");
        if (message && wf->validation_msg)
            *message = wf__strdup(wf->validation_msg);
    }
    pthread_mutex_unlock(&wf->lock);
    return rc;
}

size_t wf_workflow_step_count(const wf_workflow *wf)
{
    return wf ? wf->n_steps : 0;
}

const char *wf_workflow_step_name(const wf_workflow *wf, size_t i)
{
    return (wf && i < wf->n_steps) ? wf->steps[i]->name : NULL;
}

int wf_workflow_step_types(const wf_workflow *wf, size_t i, int emits,
                           const wf_event_type *const **types, size_t *n)
{
    if (wf == NULL || types == NULL || n == NULL)
        return WF_EINVAL;
    if (i >= wf->n_steps)
        return WF_ERANGE;
    const wf__step *s = wf->steps[i];
    *types = emits ? s->emits : s->accepts;
    *n = emits ? s->n_emits : s->n_accepts;
    return 0;
}

uint32_t wf_workflow_step_num_workers(const wf_workflow *wf, size_t i)
{
    return (wf && i < wf->n_steps) ? wf->steps[i]->num_workers : 0;
}

const wf_event_type *wf_workflow_start_type(const wf_workflow *wf)
{
    return (wf && is_frozen(wf)) ? wf->start_type : NULL;
}

const wf_event_type *wf_workflow_stop_type(const wf_workflow *wf)
{
    return (wf && is_frozen(wf)) ? wf->stop_type : NULL;
}
