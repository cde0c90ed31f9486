/*
 * fields.c: building an event of F scalar fields and reading every field
 * back, by name (wf_event_new + wf_event_set, wf_event_get) against
 * declared fields (wf_event_new_fields, wf_event_get_field), one thread, no
 * executor: what the event API itself costs a step. Both sum what they read
 * (verified equal). ns_per_event is one build, F reads and the release.
 * Usage: fields [--n N] [--fields F] [--reps R]  (F from 1 to 32)
 */
#include <stdio.h>
#include <wf/wf.h>

#include "common.h"

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, "--n", 2000000);
    long nf = bench_arg(argc, argv, "--fields", 8);
    long reps = bench_arg(argc, argv, "--reps", 3);
    if (nf < 1 || nf > WF_EVENT_MAX_FIELDS || n < 1)
        return 2;
    wf_registry *reg;
    const wf_event_type *t;
    if (wf_registry_new(&reg) < 0 || wf_registry_add(reg, "Wide", NULL, &t) < 0)
        return 1;
    const wf_event_field *f[WF_EVENT_MAX_FIELDS];
    char keys[WF_EVENT_MAX_FIELDS][8];
    for (long k = 0; k < nf; k++) {
        snprintf(keys[k], sizeof keys[k], "f%ld", k);
        if (wf_event_type_add_field(t, keys[k], &f[k]) < 0)
            return 1;
    }
    char extra[48];
    snprintf(extra, sizeof extra, ",\"fields\":%ld", nf);
    uint64_t sums[2] = {0, 0};
    for (long r = 0; r <= reps; r++) { /* rep 0 warms up */
        for (int declared = 0; declared <= 1; declared++) {
            uint64_t sum = 0;
            double t0 = bench_now();
            for (long i = 0; i < n; i++) {
                wf_event *ev;
                if (declared) {
                    wf_value v[WF_EVENT_MAX_FIELDS];
                    for (long k = 0; k < nf; k++)
                        v[k] = wf_value_int(i + k);
                    if (wf_event_new_fields(&ev, t, v, (size_t)nf) < 0)
                        return 1;
                    for (long k = 0; k < nf; k++)
                        sum += (uint64_t)wf_event_get_field(ev, f[k], wf_value_int(0)).as.i;
                } else {
                    if (wf_event_new(&ev, t, (size_t)nf) < 0)
                        return 1;
                    for (long k = 0; k < nf; k++)
                        if (wf_event_set(ev, keys[k], wf_value_int(i + k)) < 0)
                            return 1;
                    for (long k = 0; k < nf; k++)
                        sum += (uint64_t)wf_event_get(ev, keys[k], wf_value_int(0)).as.i;
                }
                wf_event_release(ev);
            }
            double dt = bench_now() - t0;
            sums[declared] = sum;
            if (r > 0)
                bench_report("fields", declared ? "wf-declared" : "wf-by-name", 1, n, dt, n,
                             sums[0] == sums[1] || !declared, extra);
        }
    }
    wf_registry_free(reg);
    return sums[0] == sums[1] ? 0 : 1;
}
