/*
 * common.h: helpers shared by the benchmark programs: a clock, peak RSS and
 * the JSON line every program prints. Plain C that also compiles as C++
 * (the TBB peer includes it).
 */
#ifndef WF_BENCH_COMMON_H
#define WF_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline long bench_peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Parses "--n N" and "--threads T" style arguments. */
static inline long bench_arg(int argc, char **argv, const char *name, long dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return atol(argv[i + 1]);
    return dflt;
}

/* Parses "--bench NAME" style arguments. */
static inline const char *bench_arg_str(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return dflt;
}

/* One JSON object per line; extra is either "" or ",\"k\":v,...". */
static inline void bench_report(const char *bench, const char *impl, long threads, long n,
                                double seconds, long events, int verified, const char *extra)
{
    double ns = seconds * 1e9 / (double)events;
    printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"threads\":%ld,\"n\":%ld,\"ns_per_event\":%.2f,"
           "\"events_per_s\":%.0f,\"seconds\":%.6f,\"peak_rss_kb\":%ld,\"verified\":%s%s}\n",
           bench, impl, threads, n, ns, (double)events / seconds, seconds, bench_peak_rss_kb(),
           verified ? "true" : "false", extra ? extra : "");
    fflush(stdout);
}

#endif
