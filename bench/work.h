/*
 * work.h: the per-item computations of the workloads, shared by the wf
 * programs and every peer (C and C++), so that each implementation does
 * exactly the same work and checks exactly the same result.
 */
#ifndef WF_BENCH_WORK_H
#define WF_BENCH_WORK_H

#include <stdint.h>

/* fanout (and the tree's leaves): a little arithmetic per item. */
static inline uint64_t bench_fan_work(uint64_t i)
{
    return (i * 2654435761u) % 1000;
}

/*
 * parallel: about 1 µs of real computation per item on this machine (an
 * AMD EPYC VM at ~2.5 GHz; calibrated once, see the "work_ns" each program
 * reports): a dependent chain of splitmix64 rounds the compiler can neither
 * fold nor vectorise away.
 */
#define BENCH_PAR_ITERS 280

static inline uint64_t bench_par_work(uint64_t i, long iters)
{
    uint64_t x = i + 0x9e3779b97f4a7c15u;
    for (long k = 0; k < iters; k++) {
        x += 0x9e3779b97f4a7c15u;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
        x ^= x >> 31;
    }
    return x;
}

/* tree: a binary tree of the given depth (2^depth leaves) has this many nodes. */
static inline long bench_tree_nodes(long depth)
{
    return (2L << depth) - 1;
}

/* tree: the sum over the leaves, leaf i (0..2^depth) worth bench_fan_work(i). */
static inline uint64_t bench_tree_expect(long depth)
{
    uint64_t s = 0;
    for (uint64_t i = 0; i < (1ull << depth); i++)
        s += bench_fan_work(i);
    return s;
}

#endif
