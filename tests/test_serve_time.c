/*
 * test_serve_time.c: wf serve's timestamps (serve/server.c,
 * wf__srv_iso_time: the date by arithmetic, no gmtime_r) are the ones
 * gmtime_r and the reference's isoformat() give, on the days where a
 * calendar goes wrong (leap days, century years, year ends) and on 200,000
 * random seconds from 1970 to 2400. Sub-seconds are multiples of 1/64 s,
 * which a double holds exactly that far out (a microsecond does not).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server_impl.h"

static void expect(time_t sec, long us)
{
    char got[64], want[64], date[40];
    wf__srv_iso_time((double)sec + (double)us / 1e6, got);
    struct tm tm;
    cr_assert_not_null(gmtime_r(&sec, &tm));
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(want, sizeof want, "%s.%06ld+00:00", date, us);
    cr_assert_str_eq(got, want, "second %lld: %s, not %s", (long long)sec, got, want);
}

Test(serve_time, calendar_edges)
{
    static const char *const days[] = {"1970-01-01", "1972-02-29", "1999-12-31", "2000-02-28",
                                       "2000-02-29", "2000-03-01", "2024-02-29", "2026-12-31",
                                       "2100-02-28", "2100-03-01", "2399-12-31", "2400-02-29"};
    for (size_t i = 0; i < sizeof days / sizeof *days; i++) {
        struct tm tm = {0};
        cr_assert_not_null(strptime(days[i], "%Y-%m-%d", &tm));
        time_t day = timegm(&tm);
        expect(day, 0);
        expect(day + 86399, 984375); /* 63/64: sub-second parts a double holds exactly */
        expect(day + 43200 + 61, 500000);
    }
}

Test(serve_time, random_seconds_from_1970_to_2400)
{
    unsigned long long x = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        time_t sec = (time_t)(x % 13569465600ULL); /* 2400-01-01 */
        expect(sec, (long)((x >> 40) % 64) * 15625); /* k/64 s: exact in a double */
    }
}
