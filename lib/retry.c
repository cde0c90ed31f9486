/*
 * retry.c: retry policies as small immutable expression trees.
 */
#include "internal.h"

#include <math.h>
#include <regex.h>
#include <string.h>

enum { C_ALWAYS, C_NEVER, C_CODES, C_ANY, C_ALL, C_CONTAINS, C_MATCHES, C_NOT };
enum { W_FIXED, W_EXP, W_RANDOM, W_CHAIN, W_SUM, W_INCR, W_RANDEXP };
enum { S_ATTEMPT, S_DELAY, S_ANY, S_ALL, S_BEFORE_DELAY, S_NEVER };

struct wf_retry_cond {
    int kind;
    size_t n;
    int32_t *codes;
    wf_retry_cond *a, *b;
    char *text; /* C_CONTAINS */
    regex_t re; /* C_MATCHES (regexec is thread-safe on a compiled pattern) */
    int compiled;
};

struct wf_retry_wait {
    int kind;
    int64_t min_ms, max_ms;
    double mult;
    size_t n;
    wf_retry_wait **chain;
    wf_retry_wait *a, *b;
};

struct wf_retry_stop {
    int kind;
    uint32_t attempts;
    int64_t ms;
    wf_retry_stop *a, *b;
};

struct wf_retry_policy {
    _Atomic uint32_t refs;
    wf_retry_cond *cond;
    wf_retry_wait *wait;
    wf_retry_stop *stop;
    wf_retry_fn fn; /* a callback policy: the rest is unused */
    void *user;
    void (*user_free)(void *user);
};

/* ------------------------------------------------------------ conditions */

static int cond_new(wf_retry_cond **out, int kind)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = wf__calloc(1, sizeof **out);
    if (*out == NULL)
        return WF_ENOMEM;
    (*out)->kind = kind;
    return 0;
}

int wf_retry_cond_always(wf_retry_cond **out)
{
    return cond_new(out, C_ALWAYS);
}

int wf_retry_cond_never(wf_retry_cond **out)
{
    return cond_new(out, C_NEVER);
}

int wf_retry_cond_on_codes(wf_retry_cond **out, const int32_t *codes, size_t n)
{
    if (out)
        *out = NULL;
    if (codes == NULL && n > 0)
        return WF_EINVAL;
    int rc = cond_new(out, C_CODES);
    if (rc < 0)
        return rc;
    (*out)->codes = wf__malloc((n ? n : 1) * sizeof *codes);
    if ((*out)->codes == NULL) {
        wf__free_mem(*out);
        *out = NULL;
        return WF_ENOMEM;
    }
    if (n)
        memcpy((*out)->codes, codes, n * sizeof *codes);
    (*out)->n = n;
    return 0;
}

static int cond_pair(wf_retry_cond **out, int kind, wf_retry_cond *a, wf_retry_cond *b)
{
    if (out)
        *out = NULL;
    if (a == NULL || b == NULL) {
        wf_retry_cond_free(a);
        wf_retry_cond_free(b);
        return WF_EINVAL;
    }
    int rc = cond_new(out, kind);
    if (rc < 0) {
        wf_retry_cond_free(a);
        wf_retry_cond_free(b);
        return rc;
    }
    (*out)->a = a;
    (*out)->b = b;
    return 0;
}

int wf_retry_cond_any(wf_retry_cond **out, wf_retry_cond *a, wf_retry_cond *b)
{
    return cond_pair(out, C_ANY, a, b);
}

int wf_retry_cond_all(wf_retry_cond **out, wf_retry_cond *a, wf_retry_cond *b)
{
    return cond_pair(out, C_ALL, a, b);
}

int wf_retry_cond_message_contains(wf_retry_cond **out, const char *text)
{
    if (text == NULL) {
        if (out)
            *out = NULL;
        return WF_EINVAL;
    }
    int rc = cond_new(out, C_CONTAINS);
    if (rc < 0)
        return rc;
    if (((*out)->text = wf__strdup(text)) == NULL) {
        wf__free_mem(*out);
        *out = NULL;
        return WF_ENOMEM;
    }
    return 0;
}

int wf_retry_cond_message_matches(wf_retry_cond **out, const char *re, int32_t flags)
{
    if (re == NULL || (flags & ~(int32_t)REG_ICASE) != 0) {
        if (out)
            *out = NULL;
        return WF_EINVAL;
    }
    int rc = cond_new(out, C_MATCHES);
    if (rc < 0)
        return rc;
    int e = regcomp(&(*out)->re, re, REG_EXTENDED | REG_NOSUB | flags);
    if (e != 0) {
        wf__free_mem(*out);
        *out = NULL;
        return e == REG_ESPACE ? WF_ENOMEM : WF_EINVAL;
    }
    (*out)->compiled = 1;
    return 0;
}

int wf_retry_cond_not(wf_retry_cond **out, wf_retry_cond *a)
{
    if (a == NULL) {
        if (out)
            *out = NULL;
        return WF_EINVAL;
    }
    int rc = cond_new(out, C_NOT);
    if (rc < 0) {
        wf_retry_cond_free(a);
        return rc;
    }
    (*out)->a = a;
    return 0;
}

void wf_retry_cond_free(wf_retry_cond *c)
{
    if (c == NULL)
        return;
    wf_retry_cond_free(c->a);
    wf_retry_cond_free(c->b);
    wf__free_mem(c->codes);
    wf__free_mem(c->text);
    if (c->compiled)
        regfree(&c->re);
    wf__free_mem(c);
}

static int cond_eval(const wf_retry_cond *c, const wf_retry_state *st)
{
    switch (c->kind) {
    case C_ALWAYS:
        return 1;
    case C_NEVER:
        return 0;
    case C_CODES:
        for (size_t i = 0; i < c->n; i++)
            if (c->codes[i] == st->error)
                return 1;
        return 0;
    case C_ANY:
        return cond_eval(c->a, st) || cond_eval(c->b, st);
    case C_ALL:
        return cond_eval(c->a, st) && cond_eval(c->b, st);
    case C_CONTAINS:
        return st->message && strstr(st->message, c->text) != NULL;
    case C_MATCHES:
        return st->message && regexec(&c->re, st->message, 0, NULL, 0) == 0;
    case C_NOT:
        return !cond_eval(c->a, st);
    default:
        return 0;
    }
}

/* ----------------------------------------------------------------- waits */

static int wait_new(wf_retry_wait **out, int kind)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = wf__calloc(1, sizeof **out);
    if (*out == NULL)
        return WF_ENOMEM;
    (*out)->kind = kind;
    return 0;
}

int wf_retry_wait_fixed(wf_retry_wait **out, int64_t ms)
{
    if (out)
        *out = NULL;
    if (ms < 0)
        return WF_EINVAL;
    int rc = wait_new(out, W_FIXED);
    if (rc == 0)
        (*out)->min_ms = ms;
    return rc;
}

int wf_retry_wait_exponential(wf_retry_wait **out, double multiplier, int64_t min_ms,
                              int64_t max_ms)
{
    if (out)
        *out = NULL;
    if (!(multiplier >= 0) || min_ms < 0 || (max_ms >= 0 && max_ms < min_ms))
        return WF_EINVAL;
    int rc = wait_new(out, W_EXP);
    if (rc == 0) {
        (*out)->mult = multiplier;
        (*out)->min_ms = min_ms;
        (*out)->max_ms = max_ms;
    }
    return rc;
}

int wf_retry_wait_random(wf_retry_wait **out, int64_t min_ms, int64_t max_ms)
{
    if (out)
        *out = NULL;
    if (min_ms < 0 || max_ms < min_ms)
        return WF_EINVAL;
    int rc = wait_new(out, W_RANDOM);
    if (rc == 0) {
        (*out)->min_ms = min_ms;
        (*out)->max_ms = max_ms;
    }
    return rc;
}

int wf_retry_wait_chain(wf_retry_wait **out, wf_retry_wait *const *waits, size_t n)
{
    if (out)
        *out = NULL;
    int bad = waits == NULL || n == 0;
    for (size_t i = 0; !bad && i < n; i++)
        bad = waits[i] == NULL;
    int rc = bad ? WF_EINVAL : wait_new(out, W_CHAIN);
    wf_retry_wait **v = rc == 0 ? wf__malloc(n * sizeof *v) : NULL;
    if (rc == 0 && v == NULL) {
        wf__free_mem(*out);
        *out = NULL;
        rc = WF_ENOMEM;
    }
    if (rc < 0) {
        for (size_t i = 0; waits && i < n; i++)
            wf_retry_wait_free(waits[i]);
        return rc;
    }
    memcpy(v, waits, n * sizeof *v);
    (*out)->chain = v;
    (*out)->n = n;
    return 0;
}

int wf_retry_wait_sum(wf_retry_wait **out, wf_retry_wait *a, wf_retry_wait *b)
{
    if (out)
        *out = NULL;
    int rc = (a == NULL || b == NULL) ? WF_EINVAL : wait_new(out, W_SUM);
    if (rc < 0) {
        wf_retry_wait_free(a);
        wf_retry_wait_free(b);
        return rc;
    }
    (*out)->a = a;
    (*out)->b = b;
    return 0;
}

int wf_retry_wait_incrementing(wf_retry_wait **out, int64_t start_ms, int64_t increment_ms,
                               int64_t max_ms)
{
    if (start_ms < 0 || increment_ms < 0) {
        if (out)
            *out = NULL;
        return WF_EINVAL;
    }
    int rc = wait_new(out, W_INCR);
    if (rc == 0) {
        (*out)->min_ms = start_ms;
        (*out)->mult = (double)increment_ms;
        (*out)->max_ms = max_ms;
    }
    return rc;
}

int wf_retry_wait_random_exponential(wf_retry_wait **out, double multiplier, int64_t min_ms,
                                     int64_t max_ms)
{
    if (!(multiplier >= 0) || min_ms < 0 || (max_ms >= 0 && max_ms < min_ms)) {
        if (out)
            *out = NULL;
        return WF_EINVAL;
    }
    int rc = wait_new(out, W_RANDEXP);
    if (rc == 0) {
        (*out)->mult = multiplier;
        (*out)->min_ms = min_ms;
        (*out)->max_ms = max_ms;
    }
    return rc;
}

void wf_retry_wait_free(wf_retry_wait *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->n; i++)
        wf_retry_wait_free(w->chain[i]);
    wf__free_mem(w->chain);
    wf_retry_wait_free(w->a);
    wf_retry_wait_free(w->b);
    wf__free_mem(w);
}

/* splitmix64: a well-mixed 64-bit function of the seed, so jitter is reproducible. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* multiplier * 2^(attempt-1) ms, saturated */
static int64_t exp_ms(double mult, uint32_t attempt)
{
    double v = mult * pow(2.0, (double)(attempt > 0 ? attempt - 1 : 0));
    if (!(v < 9.0e15))
        v = 9.0e15;
    return (int64_t)v;
}

static int64_t wait_eval(const wf_retry_wait *w, const wf_retry_state *st)
{
    switch (w->kind) {
    case W_FIXED:
        return w->min_ms;
    case W_EXP: {
        int64_t ms = exp_ms(w->mult, st->attempt);
        if (ms < w->min_ms)
            ms = w->min_ms;
        if (w->max_ms >= 0 && ms > w->max_ms)
            ms = w->max_ms;
        return ms;
    }
    case W_INCR: {
        double v = (double)w->min_ms + w->mult * (double)(st->attempt > 0 ? st->attempt - 1 : 0);
        int64_t ms = v < 9.0e15 ? (int64_t)v : (int64_t)9.0e15;
        return w->max_ms >= 0 && ms > w->max_ms ? w->max_ms : ms;
    }
    case W_RANDEXP: {
        int64_t hi = exp_ms(w->mult, st->attempt);
        if (w->max_ms >= 0 && hi > w->max_ms)
            hi = w->max_ms;
        if (hi < w->min_ms)
            hi = w->min_ms;
        uint64_t span = (uint64_t)(hi - w->min_ms) + 1;
        return w->min_ms + (int64_t)(mix64(st->seed ^ 0x5bd1e995u) % span);
    }
    case W_RANDOM: {
        uint64_t span = (uint64_t)(w->max_ms - w->min_ms) + 1;
        return w->min_ms + (int64_t)(mix64(st->seed) % span);
    }
    case W_CHAIN: {
        size_t i = st->attempt > 0 ? st->attempt - 1 : 0;
        return wait_eval(w->chain[i < w->n ? i : w->n - 1], st);
    }
    case W_SUM:
        return wait_eval(w->a, st) + wait_eval(w->b, st);
    default:
        return 0;
    }
}

/* ----------------------------------------------------------------- stops */

static int stop_new(wf_retry_stop **out, int kind)
{
    if (out == NULL)
        return WF_EINVAL;
    *out = wf__calloc(1, sizeof **out);
    if (*out == NULL)
        return WF_ENOMEM;
    (*out)->kind = kind;
    return 0;
}

int wf_retry_stop_after_attempt(wf_retry_stop **out, uint32_t n)
{
    if (out)
        *out = NULL;
    if (n == 0)
        return WF_EINVAL;
    int rc = stop_new(out, S_ATTEMPT);
    if (rc == 0)
        (*out)->attempts = n;
    return rc;
}

int wf_retry_stop_after_delay(wf_retry_stop **out, int64_t ms)
{
    if (out)
        *out = NULL;
    if (ms < 0)
        return WF_EINVAL;
    int rc = stop_new(out, S_DELAY);
    if (rc == 0)
        (*out)->ms = ms;
    return rc;
}

static int stop_pair(wf_retry_stop **out, int kind, wf_retry_stop *a, wf_retry_stop *b)
{
    if (out)
        *out = NULL;
    int rc = (a == NULL || b == NULL) ? WF_EINVAL : stop_new(out, kind);
    if (rc < 0) {
        wf_retry_stop_free(a);
        wf_retry_stop_free(b);
        return rc;
    }
    (*out)->a = a;
    (*out)->b = b;
    return 0;
}

int wf_retry_stop_any(wf_retry_stop **out, wf_retry_stop *a, wf_retry_stop *b)
{
    return stop_pair(out, S_ANY, a, b);
}

int wf_retry_stop_all(wf_retry_stop **out, wf_retry_stop *a, wf_retry_stop *b)
{
    return stop_pair(out, S_ALL, a, b);
}

int wf_retry_stop_before_delay(wf_retry_stop **out, int64_t ms)
{
    if (ms < 0) {
        if (out)
            *out = NULL;
        return WF_EINVAL;
    }
    int rc = stop_new(out, S_BEFORE_DELAY);
    if (rc == 0)
        (*out)->ms = ms;
    return rc;
}

int wf_retry_stop_never(wf_retry_stop **out)
{
    return stop_new(out, S_NEVER);
}

void wf_retry_stop_free(wf_retry_stop *s)
{
    if (s == NULL)
        return;
    wf_retry_stop_free(s->a);
    wf_retry_stop_free(s->b);
    wf__free_mem(s);
}

/* delay: the wait the next attempt would get */
static int stop_eval(const wf_retry_stop *s, const wf_retry_state *st, int64_t delay)
{
    switch (s->kind) {
    case S_ATTEMPT:
        return st->attempt >= s->attempts;
    case S_DELAY:
        return st->elapsed_ms >= s->ms;
    case S_BEFORE_DELAY:
        return st->elapsed_ms + delay >= s->ms;
    case S_NEVER:
        return 0;
    case S_ANY:
        return stop_eval(s->a, st, delay) || stop_eval(s->b, st, delay);
    case S_ALL:
        return stop_eval(s->a, st, delay) && stop_eval(s->b, st, delay);
    default:
        return 1;
    }
}

/* -------------------------------------------------------------- policies */

int wf_retry_policy_new(wf_retry_policy **out, wf_retry_cond *cond, wf_retry_wait *wait,
                        wf_retry_stop *stop)
{
    if (out)
        *out = NULL;
    wf_retry_policy *p = NULL;
    int rc = 0;
    if (out == NULL || stop == NULL)
        rc = WF_EINVAL;
    else if ((p = wf__calloc(1, sizeof *p)) == NULL)
        rc = WF_ENOMEM;
    if (rc < 0) {
        wf_retry_cond_free(cond);
        wf_retry_wait_free(wait);
        wf_retry_stop_free(stop);
        return rc;
    }
    atomic_init(&p->refs, 1);
    p->cond = cond;
    p->wait = wait;
    p->stop = stop;
    *out = p;
    return 0;
}

int wf_retry_policy_callback(wf_retry_policy **out, wf_retry_fn fn, void *user,
                             void (*user_free)(void *user))
{
    if (out)
        *out = NULL;
    wf_retry_policy *p = NULL;
    int rc = 0;
    if (out == NULL || fn == NULL)
        rc = WF_EINVAL;
    else if ((p = wf__calloc(1, sizeof *p)) == NULL)
        rc = WF_ENOMEM;
    if (rc < 0) {
        if (user_free) /* registrations run user_free exactly once, also on failure */
            user_free(user);
        return rc;
    }
    atomic_init(&p->refs, 1);
    p->fn = fn;
    p->user = user;
    p->user_free = user_free;
    *out = p;
    return 0;
}

int wf_retry_policy_constant(wf_retry_policy **out, uint32_t max_attempts, int64_t delay_ms)
{
    if (out)
        *out = NULL;
    wf_retry_wait *w = NULL;
    wf_retry_stop *s = NULL;
    int rc = wf_retry_wait_fixed(&w, delay_ms);
    if (rc == 0)
        rc = wf_retry_stop_after_attempt(&s, max_attempts);
    if (rc < 0) {
        wf_retry_wait_free(w);
        return rc;
    }
    return wf_retry_policy_new(out, NULL, w, s);
}

wf_retry_policy *wf_retry_policy_retain(const wf_retry_policy *p)
{
    wf_retry_policy *q = (wf_retry_policy *)p;
    if (q)
        atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
    return q;
}

void wf_retry_policy_free(wf_retry_policy *p)
{
    if (p == NULL || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    wf_retry_cond_free(p->cond);
    wf_retry_wait_free(p->wait);
    wf_retry_stop_free(p->stop);
    if (p->user_free)
        p->user_free(p->user);
    wf__free_mem(p);
}

int wf_retry_policy_next(const wf_retry_policy *p, const wf_retry_state *st, int64_t *delay_ms)
{
    if (delay_ms)
        *delay_ms = 0;
    if (p == NULL || st == NULL)
        return wf__set_error(WF_EINVAL, "wf_retry_policy_next: %s is NULL", p ? "state" : "policy");
    if (p->fn) {
        int64_t d = p->fn(st, p->user);
        if (d < 0)
            return 0;
        if (delay_ms)
            *delay_ms = d;
        return 1;
    }
    if (p->cond && !cond_eval(p->cond, st))
        return 0;
    int64_t d = p->wait ? wait_eval(p->wait, st) : 0;
    if (d < 0)
        d = 0;
    if (stop_eval(p->stop, st, d))
        return 0;
    if (delay_ms)
        *delay_ms = d;
    return 1;
}
