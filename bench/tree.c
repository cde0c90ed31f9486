/*
 * tree.c: a binary fan-out of depth d with a join at every node. A Node
 * event (depth left, index) either is a leaf, answered with a Res worth
 * bench_fan_work(index), or splits into two child Nodes with
 * wf_ctx_emit_list; the join_list step sums the two Res of each split and
 * emits one Res for the level above (the root's join, whose origin is the
 * StartEvent, stops the run). Every node is one step invocation and every
 * inner node one more (its join): recursive parallelism through the
 * executor's stealing. Verified: the sum over the leaves. ns_per_event is
 * per tree node (2^(d+1) - 1 nodes); one warm-up round in the same process.
 *
 * The node and join steps have no practical num_workers bound (--workers,
 * default 2^30), as TBB's flow::unlimited in the peer: the bound exists to
 * throttle a step, and events over it wait in the step's FIFO queue, which
 * runs this recursion breadth-first instead of depth-first on each worker's
 * deque (--workers 2: about 4x slower here).
 *
 * --join manual: the TBB peer's algorithm instead of wf_ctx_emit_list (for
 * comparing like with like; not what bench/run reports): a Node carries its
 * heap index k; a leaf stores its value in a shared array and counts its
 * parent down; the child that completes a parent sends Join{k} to the join
 * step, which sums the two children's values and counts its own parent
 * down; the root's completion stops the run. No fan-out group, no branch
 * accounting, no joined list: what is left is the engine's cost of an
 * invocation and an event.
 * Usage: tree [--depth D] [--threads T] [--warmup W] [--workers W] [--join list|manual]
 */
#include <wf/wf.h>

#include "common.h"
#include "work.h"

#include <stdatomic.h>

static const wf_event_type *T_START, *T_NODE, *T_RES, *T_JOIN;
/* declared fields (wf_event_type_add_field): Node {d, i}, Res {v} */
static const wf_event_field *F_D, *F_I, *F_V;

static int node_event(wf_event **out, int64_t depth, int64_t index)
{
    wf_value v[2] = {wf_value_int(depth), wf_value_int(index)};
    return wf_event_new_fields(out, T_NODE, v, 2);
}

static int res_event(wf_event **out, uint64_t sum)
{
    wf_value v = wf_value_uint(sum);
    return wf_event_new_fields(out, T_RES, &v, 1);
}

/* Splits (depth, index) into its two children, joined by the join step. */
static int split_children(wf_ctx *ctx, int64_t depth, int64_t index)
{
    wf_event *evs[2] = {NULL, NULL};
    int rc = node_event(&evs[0], depth - 1, 2 * index);
    if (rc == 0)
        rc = node_event(&evs[1], depth - 1, 2 * index + 1);
    if (rc < 0) {
        wf_event_release(evs[0]);
        return rc;
    }
    return wf_ctx_emit_list(ctx, evs, 2, T_RES);
}

static int root(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    long depth = *(const long *)user;
    if (depth == 0)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_uint(bench_fan_work(0)));
    return split_children(ctx, depth, 0);
}

static int node(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int64_t d = 0, i = 0;
    wf_value_get_int(wf_event_get_field(in, F_D, wf_value_int(0)), &d);
    wf_value_get_int(wf_event_get_field(in, F_I, wf_value_int(0)), &i);
    if (d == 0)
        return res_event(out, bench_fan_work((uint64_t)i));
    return split_children(ctx, d, i);
}

static int join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    const wf_event *const *evs;
    size_t n;
    int rc = wf_ctx_join_events(ctx, &evs, &n);
    if (rc < 0)
        return rc;
    uint64_t sum = 0;
    for (size_t k = 0; k < n; k++) {
        uint64_t v = 0;
        wf_value_get_uint(wf_event_get_field(evs[k], F_V, wf_value_uint(0)), &v);
        sum += v;
    }
    if (wf_event_type_of(in) == T_START) /* the root's join */
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_uint(sum));
    return res_event(out, sum);
}

/* Adds a step of one accepted type (workers: its num_workers, 0 the default; join_list: a list
 * join). */
static int add_step(wf_workflow *wf, const char *name, wf_step_fn fn, const wf_event_type *accepts,
                    const wf_event_type *const *emits, uint32_t n_emits, long workers,
                    int join_list, void *user)
{
    wf_step_params p;
    wf_step_params_init(&p);
    p.accepts = &accepts;
    p.n_accepts = 1;
    p.emits = emits;
    p.n_emits = n_emits;
    if (workers > 0)
        p.num_workers = (uint32_t)workers;
    p.join_list = join_list;
    return wf_workflow_add_step(wf, name, fn, &p, user);
}

/* The list tree's workflow: root -> node (self, wf_ctx_emit_list) -> join (a list join) -> stop. */
static wf_workflow *list_workflow(long *depth, long workers)
{
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "tree", NULL) < 0)
        return NULL;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Node", NULL, &T_NODE);
    wf_workflow_event_type(wf, "Res", NULL, &T_RES);
    if (wf_event_type_add_field(T_NODE, "d", &F_D) < 0 ||
        wf_event_type_add_field(T_NODE, "i", &F_I) < 0 ||
        wf_event_type_add_field(T_RES, "v", &F_V) < 0)
        return NULL;
    const wf_event_type *root_emits[2] = {T_NODE, stop};
    const wf_event_type *node_emits[2] = {T_NODE, T_RES};
    const wf_event_type *join_emits[2] = {T_RES, stop};
    if (add_step(wf, "root", root, T_START, root_emits, 2, 0, 0, depth) < 0 ||
        add_step(wf, "node", node, T_NODE, node_emits, 2, workers, 0, NULL) < 0 ||
        add_step(wf, "join", join, T_RES, join_emits, 2, workers, 1, NULL) < 0)
        return NULL;
    return wf;
}

/* ---- --join manual: the TBB peer's tree (bench/peers/tbb.cpp), in wf ---- */

static const wf_event_field *F_K; /* Node's heap index; Join {k} */
static const wf_event_field *F_JK;
static uint64_t *m_value;      /* per node, written once */
static _Atomic int *m_pending; /* per inner node: children left */

static int m_node_event(wf_event **out, int64_t depth, int64_t index, int64_t k)
{
    wf_value v[3] = {wf_value_int(depth), wf_value_int(index), wf_value_int(k)};
    return wf_event_new_fields(out, T_NODE, v, 3);
}

/* Node k is complete: the run stops at the root, else its parent may be joined. */
static int m_complete(wf_ctx *ctx, int64_t k, wf_event **out)
{
    if (k == 0)
        return wf_event_new_stop(out, wf_workflow_registry(wf_ctx_workflow(ctx)), NULL,
                                 wf_value_uint(m_value[0]));
    int64_t p = (k - 1) / 2;
    if (atomic_fetch_sub_explicit(&m_pending[p], 1, memory_order_acq_rel) != 1)
        return 0;
    wf_value v = wf_value_int(p);
    return wf_event_new_fields(out, T_JOIN, &v, 1);
}

static int m_node(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int64_t d = 0, i = 0, k = 0;
    wf_value_get_int(wf_event_get_field(in, F_D, wf_value_int(0)), &d);
    wf_value_get_int(wf_event_get_field(in, F_I, wf_value_int(0)), &i);
    wf_value_get_int(wf_event_get_field(in, F_K, wf_value_int(0)), &k);
    if (d == 0) {
        m_value[k] = bench_fan_work((uint64_t)i);
        return m_complete(ctx, k, out);
    }
    wf_event *left;
    int rc = m_node_event(&left, d - 1, 2 * i, 2 * k + 1);
    if (rc == 0)
        rc = wf_ctx_send_event(ctx, left, NULL);
    return rc < 0 ? rc : m_node_event(out, d - 1, 2 * i + 1, 2 * k + 2);
}

static int m_join(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    int64_t p = 0;
    wf_value_get_int(wf_event_get_field(in, F_JK, wf_value_int(0)), &p);
    m_value[p] = m_value[2 * p + 1] + m_value[2 * p + 2];
    return m_complete(ctx, p, out);
}

static int m_start(wf_ctx *ctx, const wf_event *in, wf_event **out, void *user)
{
    return m_node_event(out, *(const long *)user, 0, 0);
}

/* The manual tree's workflow: start -> node (self) -> join (self) -> stop. */
static wf_workflow *manual_workflow(long *depth, long workers)
{
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "tree_manual", NULL) < 0)
        return NULL;
    T_START = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    wf_workflow_event_type(wf, "Node", NULL, &T_NODE);
    wf_workflow_event_type(wf, "Join", NULL, &T_JOIN);
    if (wf_event_type_add_field(T_NODE, "d", &F_D) < 0 ||
        wf_event_type_add_field(T_NODE, "i", &F_I) < 0 ||
        wf_event_type_add_field(T_NODE, "k", &F_K) < 0 ||
        wf_event_type_add_field(T_JOIN, "k", &F_JK) < 0)
        return NULL;
    const wf_event_type *node_emits[3] = {T_NODE, T_JOIN, stop};
    const wf_event_type *join_emits[2] = {T_JOIN, stop};
    if (add_step(wf, "start", m_start, T_START, &T_NODE, 1, 0, 0, depth) < 0 ||
        add_step(wf, "node", m_node, T_NODE, node_emits, 3, workers, 0, NULL) < 0 ||
        add_step(wf, "join", m_join, T_JOIN, join_emits, 2, workers, 0, NULL) < 0)
        return NULL;
    return wf;
}

int main(int argc, char **argv)
{
    long depth = bench_arg(argc, argv, "--depth", 20);
    long threads = bench_arg(argc, argv, "--threads", 2);
    long warmup = bench_arg(argc, argv, "--warmup", 1);
    long workers = bench_arg(argc, argv, "--workers", 1L << 30);
    const char *join_mode = bench_arg_str(argc, argv, "--join", "list");
    int manual = strcmp(join_mode, "manual") == 0;
    if (!manual && strcmp(join_mode, "list") != 0) {
        fprintf(stderr, "tree: --join list|manual\n");
        return 2;
    }
    if (depth < 0 || depth > 40)
        return 1;
    if (manual) {
        long inner = (1L << depth) - 1;
        m_value = calloc((size_t)bench_tree_nodes(depth), sizeof *m_value);
        m_pending = calloc((size_t)(inner ? inner : 1), sizeof *m_pending);
        if (m_value == NULL || m_pending == NULL)
            return 1;
    }
    wf_workflow *wf = manual ? manual_workflow(&depth, workers) : list_workflow(&depth, workers);
    if (wf == NULL)
        return 1;
    wf_workflow_set_timeout(wf, WF_NO_TIMEOUT);
    wf_executor_params ep;
    wf_executor_params_init(&ep);
    ep.threads = (uint32_t)threads;
    wf_executor *ex;
    if (wf_executor_new(&ex, &ep) < 0)
        return 1;
    uint64_t expect = bench_tree_expect(depth);
    long nodes = bench_tree_nodes(depth);
    double dt = 0;
    int ok = 1;
    for (long round = 0; round <= warmup; round++) { /* round 0 warms the allocator */
        wf_event *s;
        wf_event_new(&s, T_START, 0);
        double t0 = bench_now();
        if (manual) /* inside the time, as the TBB peer does */
            for (long k = 0; k < (1L << depth) - 1; k++)
                atomic_store_explicit(&m_pending[k], 2, memory_order_relaxed);
        wf_event *res = NULL;
        int rc = wf_run(ex, wf, NULL, s, -1, &res);
        dt = bench_now() - t0;
        uint64_t got = 0;
        if (rc == 0)
            wf_value_get_uint(wf_event_result(res), &got);
        wf_event_release(res);
        ok = ok && rc == 0 && got == expect;
    }
    char extra[64];
    snprintf(extra, sizeof extra, ",\"depth\":%ld%s", depth, manual ? ",\"join\":\"manual\"" : "");
    bench_report("tree", "wf", threads, nodes, dt, nodes, ok, extra);
    wf_executor_free(ex);
    wf_workflow_free(wf);
    free(m_value);
    free(m_pending);
    return ok ? 0 : 1;
}
