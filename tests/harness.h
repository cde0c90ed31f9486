/*
 * harness.h: the test harness. Normally Criterion; with WF_PLAIN_TESTS a
 * small in-process stand-in for the subset of Criterion the suites use.
 *
 * Why: Criterion cannot start under ThreadSanitizer (its inheritable arena
 * fails to map: Snaipe/Criterion#274), yet the concurrency suites must run
 * under TSan. The stand-in runs each test in turn in one process, prints TAP
 * and a closing "N passed, N failed" line. A failed assertion ends its test
 * (longjmp back to the runner) and is reported with file and line.
 */
#ifndef WF_TEST_HARNESS_H
#define WF_TEST_HARNESS_H

#ifndef WF_PLAIN_TESTS
#include <criterion/criterion.h>
#else

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pt_test {
    const char *suite;
    const char *name;
    void (*fn)(void);
} pt_test;

#define PT_MAX 256
static pt_test pt_tests[PT_MAX];
static int pt_ntests;
static jmp_buf pt_jmp;
static void (*pt_init)(void);
static void (*pt_fini)(void);
static pthread_t pt_main;

struct pt_opts {
    int timeout;
    void (*init)(void);
    void (*fini)(void);
};

static void pt_register(const char *suite, const char *name, void (*fn)(void))
{
    if (pt_ntests < PT_MAX)
        pt_tests[pt_ntests++] = (pt_test){suite, name, fn};
}

/* A failed assertion: the condition and the test's own message (if any). */
__attribute__((noreturn)) static void
pt_fail(const char *file, int line, const char *what, const char *fmt, ...)
{
    printf("# %s:%d: assertion failed: %s", file, line, what);
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        printf(": ");
        vprintf(fmt, ap);
        va_end(ap);
    }
    printf("\n");
    fflush(stdout);
    if (!pthread_equal(pthread_self(), pt_main)) {
        /* a step or helper thread: no way back to the runner */
        printf("Bail out! assertion failed off the main thread\n");
        fflush(stdout);
        _Exit(1);
    }
    longjmp(pt_jmp, 1);
}

#define Test(suite, name, ...)                                                                     \
    static void suite##_##name(void);                                                              \
    __attribute__((constructor)) static void suite##_##name##_reg(void)                            \
    {                                                                                              \
        pt_register(#suite, #name, suite##_##name);                                                \
    }                                                                                              \
    static void suite##_##name(void)

#define TestSuite(suite, ...)                                                                      \
    __attribute__((constructor)) static void suite##_suite_reg(void)                               \
    {                                                                                              \
        struct pt_opts o = {.timeout = 0, __VA_ARGS__};                                            \
        pt_init = o.init;                                                                          \
        pt_fini = o.fini;                                                                          \
    }

#define cr_assert(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            pt_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__);                                    \
    } while (0)
#define cr_assert_not(cond, ...)    cr_assert(!(cond), __VA_ARGS__)
#define cr_assert_eq(a, b, ...)     cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...)    cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_null(p, ...)      cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...)  cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_fail(...)                pt_fail(__FILE__, __LINE__, "cr_fail", "" __VA_ARGS__)
#define cr_skip_test(...)           return

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    volatile int passed = 0, failed = 0;
    pt_main = pthread_self();
    /* PT_ONLY=name runs the tests whose name contains it (the others are skipped) */
    const char *only = getenv("PT_ONLY");
    printf("1..%d\n", pt_ntests);
    fflush(stdout); /* a test that forks must not hand its children the plan to print again */
    for (int i = 0; i < pt_ntests; i++) {
        volatile int ok = 0;
        if (only && !strstr(pt_tests[i].name, only)) {
            printf("ok %d - %s::%s # SKIP PT_ONLY\n", i + 1, pt_tests[i].suite, pt_tests[i].name);
            fflush(stdout);
            continue;
        }
        if (setjmp(pt_jmp) == 0) {
            if (pt_init)
                pt_init();
            pt_tests[i].fn();
            ok = 1;
        }
        if (pt_fini)
            pt_fini();
        printf("%s %d - %s::%s\n", ok ? "ok" : "not ok", i + 1, pt_tests[i].suite,
               pt_tests[i].name);
        fflush(stdout);
        if (ok)
            passed++;
        else
            failed++;
    }
    printf("# %d passed, %d failed\n", (int)passed, (int)failed);
    return failed ? 1 : 0;
}

#endif
#endif
