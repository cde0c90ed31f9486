/*
 * test_deque.c: the Chase-Lev deque alone (white-box: links the library's
 * objects). The stress test races an owner that pushes and takes against
 * several thieves; every item must be taken exactly once.
 */
#include "harness.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "exec.h"

Test(deque, lifo_for_owner_fifo_for_thief)
{
    wf__deque d;
    cr_assert_eq(wf__deque_init(&d, 4), 0);
    for (uintptr_t i = 1; i <= 5; i++)
        cr_assert_eq(wf__deque_push(&d, (void *)i), 0);
    int lost;
    cr_assert_eq((uintptr_t)wf__deque_steal(&d, &lost), 1);
    cr_assert_eq((uintptr_t)wf__deque_take(&d), 5);
    cr_assert_eq((uintptr_t)wf__deque_take(&d), 4);
    cr_assert_eq((uintptr_t)wf__deque_steal(&d, &lost), 2);
    cr_assert_eq((uintptr_t)wf__deque_take(&d), 3);
    cr_assert_null(wf__deque_take(&d));
    cr_assert_null(wf__deque_steal(&d, &lost));
    cr_assert_eq(lost, 0);
    wf__deque_destroy(&d);
}

Test(deque, grows_past_initial_size)
{
    wf__deque d;
    cr_assert_eq(wf__deque_init(&d, 64), 0);
    for (uintptr_t i = 1; i <= 10000; i++)
        cr_assert_eq(wf__deque_push(&d, (void *)i), 0);
    cr_assert_eq(wf__deque_size(&d), 10000);
    for (uintptr_t i = 10000; i >= 1; i--)
        cr_assert_eq((uintptr_t)wf__deque_take(&d), i);
    cr_assert_null(wf__deque_take(&d));
    wf__deque_destroy(&d);
}

#define ITEMS   200000
#define THIEVES 3

static wf__deque sd;
static _Atomic uint8_t seen[ITEMS + 1];
static atomic_int owner_done;
static atomic_long taken_total;

static void mark(void *p)
{
    uintptr_t v = (uintptr_t)p;
    cr_assert(v >= 1 && v <= ITEMS, "item %lu out of range", (unsigned long)v);
    atomic_fetch_add(&seen[v], 1);
    atomic_fetch_add(&taken_total, 1);
}

static void *thief(void *arg)
{
    (void)arg;
    for (;;) {
        int lost;
        void *p = wf__deque_steal(&sd, &lost);
        if (p) {
            mark(p);
            continue;
        }
        if (!lost && atomic_load(&owner_done) && wf__deque_size(&sd) == 0)
            break;
    }
    return NULL;
}

Test(deque, stress_owner_against_thieves, .timeout = 240)
{
    cr_assert_eq(wf__deque_init(&sd, 64), 0);
    pthread_t th[THIEVES];
    for (int i = 0; i < THIEVES; i++)
        pthread_create(&th[i], NULL, thief, NULL);
    /* The owner pushes in bursts and takes some back, so both ends race. */
    uintptr_t next = 1;
    while (next <= ITEMS) {
        for (int k = 0; k < 7 && next <= ITEMS; k++)
            cr_assert_eq(wf__deque_push(&sd, (void *)next++), 0);
        for (int k = 0; k < 3; k++) {
            void *p = wf__deque_take(&sd);
            if (p)
                mark(p);
        }
    }
    void *p;
    while ((p = wf__deque_take(&sd)) != NULL)
        mark(p);
    atomic_store(&owner_done, 1);
    for (int i = 0; i < THIEVES; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&taken_total), ITEMS);
    for (uintptr_t i = 1; i <= ITEMS; i++)
        cr_assert_eq(atomic_load(&seen[i]), 1, "item %lu taken %d times", (unsigned long)i,
                     atomic_load(&seen[i]));
    wf__deque_destroy(&sd);
}
