/*
 * tbb.cpp: the oneTBB flow graph peer (libtbb-dev, oneTBB 2021). The same
 * workloads as the wf programs, as flow graphs, with the same per-item work
 * (../work.h), the same checks and the same JSON lines ("impl":"tbb").
 *
 *   chain     five multifunction_nodes in a cycle pass a counter on until n
 *             invocations have run (a multifunction_node, because the last
 *             one must be able to emit nothing).
 *   fanout    a producer node puts n items to a worker function_node
 *             (concurrency = threads), whose results go to a serial collector
 *             node that sums them.
 *   parallel  the same graph with ~1 us of computation per item.
 *   tree      a split node (self edge) puts the two children of an inner
 *             node back to itself; a leaf stores its value and counts its
 *             parent down; the child that completes a parent puts it to the
 *             join node, which sums the two children (the join of that node)
 *             and counts its own parent down in turn. One split invocation
 *             per node, one join invocation per inner node, as in wf.
 *
 * Threads: tbb::global_control max_allowed_parallelism = threads (the main
 * thread takes part in wait_for_all, as a wf worker would). One warm-up
 * round per process first (TBB starts its workers on first use).
 * Usage: peer_tbb --bench chain|fanout|parallel|tree [--n N] [--depth D]
 *                 [--threads T] [--iters I] [--warmup W]
 */
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <tbb/flow_graph.h>
#include <tbb/global_control.h>

#include "../common.h"
#include "../work.h"

namespace flow = tbb::flow;

namespace {

struct result {
    double seconds;
    bool ok;
};

result run_chain(long limit)
{
    using ring_node = flow::multifunction_node<long, std::tuple<long>>;
    flow::graph g;
    long got = -1;
    std::vector<std::unique_ptr<ring_node>> ring;
    for (int i = 0; i < 5; i++)
        ring.emplace_back(new ring_node(g, flow::unlimited,
                                        [&got, limit](long n, ring_node::output_ports_type &out) {
                                            n++;
                                            if (n >= limit)
                                                got = n;
                                            else
                                                std::get<0>(out).try_put(n);
                                        }));
    for (int i = 0; i < 5; i++)
        flow::make_edge(flow::output_port<0>(*ring[i]), *ring[(i + 1) % 5]);
    double t0 = bench_now();
    ring[0]->try_put(0);
    g.wait_for_all();
    return {bench_now() - t0, got == limit};
}

result run_fan(long n, long threads, long iters, bool parallel)
{
    using producer_node = flow::multifunction_node<flow::continue_msg, std::tuple<long>>;
    flow::graph g;
    producer_node producer(g, flow::serial,
                           [n](flow::continue_msg, producer_node::output_ports_type &out) {
                               for (long i = 0; i < n; i++)
                                   std::get<0>(out).try_put(i);
                           });
    flow::function_node<long, uint64_t> worker(g, (size_t)threads, [iters, parallel](long i) {
        return parallel ? bench_par_work((uint64_t)i, iters) : bench_fan_work((uint64_t)i);
    });
    uint64_t sum = 0;
    long count = 0;
    flow::function_node<uint64_t, flow::continue_msg> collect(g, flow::serial, [&](uint64_t v) {
        sum += v;
        count++;
        return flow::continue_msg();
    });
    flow::make_edge(flow::output_port<0>(producer), worker);
    flow::make_edge(worker, collect);
    uint64_t expect = 0;
    for (long i = 0; i < n; i++)
        expect += parallel ? bench_par_work((uint64_t)i, iters) : bench_fan_work((uint64_t)i);
    double t0 = bench_now();
    producer.try_put(flow::continue_msg());
    g.wait_for_all();
    double dt = bench_now() - t0;
    return {dt, count == n && sum == expect};
}

/* A tree node in heap order: node k has children 2k+1 and 2k+2. */
struct tree_msg {
    long k;     /* heap index */
    long depth; /* levels below this node */
    long index; /* position within its level (the leaf's value depends on it) */
};

struct tree_state {
    std::vector<uint64_t> value;                  /* per node, written once */
    std::unique_ptr<std::atomic<int>[]> pending; /* per inner node: children left */
    uint64_t root = 0;
};

result run_tree(long depth, tree_state &st)
{
    using split_node = flow::multifunction_node<tree_msg, std::tuple<tree_msg, long>>;
    using join_node = flow::multifunction_node<long, std::tuple<long>>;
    flow::graph g;
    /* Completion of node k: the last of its parent's two children hands the
     * parent to the join node. */
    auto complete = [&st](long k, auto &to_join) {
        if (k == 0)
            return;
        long p = (k - 1) / 2;
        if (st.pending[p].fetch_sub(1, std::memory_order_acq_rel) == 1)
            to_join.try_put(p);
    };
    split_node split(g, flow::unlimited,
                     [&st, &complete](const tree_msg &m, split_node::output_ports_type &out) {
                         if (m.depth == 0) {
                             st.value[m.k] = bench_fan_work((uint64_t)m.index);
                             if (m.k == 0)
                                 st.root = st.value[0];
                             complete(m.k, std::get<1>(out));
                             return;
                         }
                         std::get<0>(out).try_put({2 * m.k + 1, m.depth - 1, 2 * m.index});
                         std::get<0>(out).try_put({2 * m.k + 2, m.depth - 1, 2 * m.index + 1});
                     });
    join_node join(g, flow::unlimited, [&st, &complete](long p, join_node::output_ports_type &out) {
        st.value[p] = st.value[2 * p + 1] + st.value[2 * p + 2];
        if (p == 0)
            st.root = st.value[0];
        complete(p, std::get<0>(out));
    });
    flow::make_edge(flow::output_port<0>(split), split);
    flow::make_edge(flow::output_port<1>(split), join);
    flow::make_edge(flow::output_port<0>(join), join);
    long inner = (1L << depth) - 1;
    double t0 = bench_now();
    for (long i = 0; i < inner; i++)
        st.pending[i].store(2, std::memory_order_relaxed);
    st.root = 0;
    split.try_put({0, depth, 0});
    g.wait_for_all();
    double dt = bench_now() - t0;
    return {dt, st.root == bench_tree_expect(depth)};
}

} // namespace

int main(int argc, char **argv)
{
    std::string bench = bench_arg_str(argc, argv, "--bench", "chain");
    long threads = bench_arg(argc, argv, "--threads", 1);
    long warmup = bench_arg(argc, argv, "--warmup", 1);
    long iters = bench_arg(argc, argv, "--iters", BENCH_PAR_ITERS);
    long depth = bench_arg(argc, argv, "--depth", 20);
    long n = bench_arg(argc, argv, "--n", bench == "parallel" ? 100000 : 1000000);
    if (threads < 1 || n < 1 || depth < 0 || depth > 40)
        return 2;
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, (size_t)threads);
    tree_state st;
    if (bench == "tree") {
        n = bench_tree_nodes(depth);
        st.value.assign((size_t)n, 0);
        st.pending.reset(new std::atomic<int>[(size_t)1 << depth]);
    }
    result r{0, true};
    bool ok = true;
    for (long round = 0; round <= warmup; round++) {
        if (bench == "chain")
            r = run_chain(n);
        else if (bench == "fanout" || bench == "parallel")
            r = run_fan(n, threads, iters, bench == "parallel");
        else if (bench == "tree")
            r = run_tree(depth, st);
        else {
            fprintf(stderr, "peer_tbb: unknown --bench %s\n", bench.c_str());
            return 2;
        }
        ok = ok && r.ok;
    }
    char extra[64] = "";
    if (bench == "tree")
        snprintf(extra, sizeof extra, ",\"depth\":%ld", depth);
    else if (bench == "parallel")
        snprintf(extra, sizeof extra, ",\"iters\":%ld", iters);
    bench_report(bench.c_str(), "tbb", threads, n, r.seconds, n, ok, extra);
    return ok ? 0 : 1;
}
