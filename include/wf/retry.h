/*
 * retry.h: retry policies for steps, composable as the reference's
 * (tenacity-style): a condition (which failures are retried), a wait (how
 * long before the next attempt) and a stop (when to give up).
 *
 * A failed invocation whose policy says "retry" re-queues the same input
 * event for the same step with a not-before time on the executor's timer; no
 * thread sleeps, and the step's slot is free for other events meanwhile.
 * Inside the step, wf_ctx_attempt() gives the attempt number (1 for the first
 * execution) and wf_ctx_last_error() the previous failure.
 *
 * Ownership: the combinators take ownership of the parts they are given
 * (also on failure). A policy is immutable and reference-counted; steps keep
 * their own reference, so it may be freed once added. Any thread.
 */
#ifndef WF_RETRY_H
#define WF_RETRY_H

#include <wf/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wf_retry_cond wf_retry_cond;
typedef struct wf_retry_wait wf_retry_wait;
typedef struct wf_retry_stop wf_retry_stop;
typedef struct wf_retry_policy wf_retry_policy;

/** What a policy sees after a failed execution. */
typedef struct wf_retry_state {
    uint32_t attempt;   /* executions so far, counting the one that failed (>= 1) */
    int32_t error;      /* the error code it returned */
    int64_t elapsed_ms; /* since the first execution started */
    uint64_t seed;      /* for jitter: wf derives it from run id, step and attempt */
    /*
     * The failure's message (wf_ctx_set_error, or the completion's), NULL
     * if none; borrowed for the call. Zero the whole struct before filling
     * it by hand: fields are only ever added at the end.
     */
    const char *message;
} wf_retry_state;

/* ---- conditions: which failures are retried ---- */
WF_API int wf_retry_cond_always(wf_retry_cond **out);
WF_API int wf_retry_cond_never(wf_retry_cond **out);
/** Failures whose code is one of codes[0..n). Copied. */
WF_API int wf_retry_cond_on_codes(wf_retry_cond **out, const int32_t *codes, size_t n);
/** Either of a, b (takes both). */
WF_API int wf_retry_cond_any(wf_retry_cond **out, wf_retry_cond *a, wf_retry_cond *b);
/** Both of a, b (takes both). */
WF_API int wf_retry_cond_all(wf_retry_cond **out, wf_retry_cond *a, wf_retry_cond *b);
/** Failures whose message contains text (copied; a failure without a message never does). */
WF_API int wf_retry_cond_message_contains(wf_retry_cond **out, const char *text);
/**
 * Failures whose message matches the POSIX extended regular expression re
 * (regcomp with REG_EXTENDED | REG_NOSUB; flags may add REG_ICASE). WF_EINVAL
 * for a pattern that does not compile.
 */
WF_API int wf_retry_cond_message_matches(wf_retry_cond **out, const char *re, int32_t flags);
/** The failures a does not retry (takes a): the reference's retry_if_not_*. */
WF_API int wf_retry_cond_not(wf_retry_cond **out, wf_retry_cond *a);
WF_API void wf_retry_cond_free(wf_retry_cond *c);

/* ---- waits: the delay before the next attempt ---- */
/** Always ms. */
WF_API int wf_retry_wait_fixed(wf_retry_wait **out, int64_t ms);
/**
 * multiplier * 2^(attempt-1) ms, clamped to [min_ms, max_ms] (max_ms < 0: no
 * upper bound), as tenacity's wait_exponential.
 */
WF_API int wf_retry_wait_exponential(wf_retry_wait **out, double multiplier, int64_t min_ms,
                                     int64_t max_ms);
/** Uniform in [min_ms, max_ms], drawn from the state's seed (deterministic). */
WF_API int wf_retry_wait_random(wf_retry_wait **out, int64_t min_ms, int64_t max_ms);
/** waits[attempt-1] for the first attempts, then the last one (takes them all). */
WF_API int wf_retry_wait_chain(wf_retry_wait **out, wf_retry_wait *const *waits, size_t n);
/** a + b (takes both): e.g. exponential plus random jitter. */
WF_API int wf_retry_wait_sum(wf_retry_wait **out, wf_retry_wait *a, wf_retry_wait *b);
/** start_ms + increment_ms * (attempt-1), clamped to max_ms (< 0: none), as wait_incrementing. */
WF_API int wf_retry_wait_incrementing(wf_retry_wait **out, int64_t start_ms, int64_t increment_ms,
                                      int64_t max_ms);
/**
 * Uniform in [min_ms, min(max_ms, multiplier * 2^(attempt-1))] (max_ms < 0:
 * no cap), drawn from the seed: tenacity's wait_random_exponential ("full
 * jitter").
 */
WF_API int wf_retry_wait_random_exponential(wf_retry_wait **out, double multiplier, int64_t min_ms,
                                            int64_t max_ms);
WF_API void wf_retry_wait_free(wf_retry_wait *w);

/* ---- stops: when to give up ---- */
/** After n executions in total (n >= 1). */
WF_API int wf_retry_stop_after_attempt(wf_retry_stop **out, uint32_t n);
/** Once elapsed_ms reaches ms. */
WF_API int wf_retry_stop_after_delay(wf_retry_stop **out, int64_t ms);
/**
 * Stop when the next attempt would start at or after ms since the first
 * (elapsed plus the wait it would get), as stop_before_delay.
 */
WF_API int wf_retry_stop_before_delay(wf_retry_stop **out, int64_t ms);
/** Never stop (the condition alone decides; the run timeout still applies). */
WF_API int wf_retry_stop_never(wf_retry_stop **out);
/** Stop when either says so (takes both). */
WF_API int wf_retry_stop_any(wf_retry_stop **out, wf_retry_stop *a, wf_retry_stop *b);
/** Stop when both say so (takes both). */
WF_API int wf_retry_stop_all(wf_retry_stop **out, wf_retry_stop *a, wf_retry_stop *b);
WF_API void wf_retry_stop_free(wf_retry_stop *s);

/* ---- policies ---- */
/**
 * A policy of cond (NULL: always), wait (NULL: no delay) and stop (required).
 * Takes all three. Caller owns *out: wf_retry_policy_free.
 */
WF_API int wf_retry_policy_new(wf_retry_policy **out, wf_retry_cond *cond, wf_retry_wait *wait,
                               wf_retry_stop *stop);
/**
 * A policy decided by a callback: fn(state, user) returns the delay in ms
 * before the next attempt (>= 0), or a negative value to give up. It is
 * called on an executor thread, must not block, and must be pure enough to
 * be called again for the same state (live snapshots do not call it, but a
 * test may). user_free(user) runs once when the policy is freed (may be
 * NULL). WF_EINVAL for a NULL fn (user_free then runs at once).
 */
typedef int64_t (*wf_retry_fn)(const wf_retry_state *st, void *user);
WF_API int wf_retry_policy_callback(wf_retry_policy **out, wf_retry_fn fn, void *user,
                                    void (*user_free)(void *user));
/** The reference's ConstantDelayRetryPolicy: any error, delay_ms apart, max_attempts executions. */
WF_API int wf_retry_policy_constant(wf_retry_policy **out, uint32_t max_attempts, int64_t delay_ms);
WF_API wf_retry_policy *wf_retry_policy_retain(const wf_retry_policy *p);
WF_API void wf_retry_policy_free(wf_retry_policy *p);
/**
 * The decision after a failure: 1 and the delay in *delay_ms to retry, 0 to
 * give up, WF_EINVAL (and *delay_ms 0) when p or st is NULL: test for
 * `> 0`, not for non-zero. Pure: the same state gives the same answer.
 */
WF_API int wf_retry_policy_next(const wf_retry_policy *p, const wf_retry_state *st,
                                int64_t *delay_ms);

#ifdef __cplusplus
}
#endif

#endif
