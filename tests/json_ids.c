/*
 * json_ids.c: writes a Perfetto trace (argv[1]) and OTLP/JSON lines
 * (argv[2]) of one run whose run id and event id are above 2^53, for
 * check_json_ids.sh to read with jq. The records go straight to the
 * exporters' callbacks (no executor: the ids are chosen).
 */
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

#define RUN_ID   9007199254740993ull     /* 2^53 + 1: a double cannot hold it */
#define EVENT_ID 18446744073709551615ull /* UINT64_MAX */

static void feed(wf_observer *o)
{
    const int64_t t0 = 1000000000;
    wf_obs_record r[4];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 4; i++) {
        r[i].run_id = RUN_ID;
        r[i].workflow = "Ids";
        r[i].workers = 1;
        r[i].ts_ns = t0 + i * 1000;
    }
    r[0].kind = WF_OBS_RUN_START;
    r[0].thread = WF_OBS_OUTSIDE;
    r[1].kind = WF_OBS_STEP_START;
    r[1].step = "work";
    r[1].event_type = "StartEvent";
    r[1].event_id = EVENT_ID;
    r[1].attempt = 1;
    r[2] = r[1];
    r[2].kind = WF_OBS_STEP_END;
    r[2].ts_ns = t0 + 2000;
    r[2].dur_ns = 1000;
    r[3].kind = WF_OBS_RUN_END;
    r[3].thread = WF_OBS_OUTSIDE;
    r[3].status = WF_RUN_DONE;
    r[3].dur_ns = 3000;
    for (int i = 0; i < 4; i++)
        if (o->kinds == 0 || (o->kinds & WF_OBS_BIT(r[i].kind)))
            o->record(&r[i], o->user);
    if (o->flush)
        o->flush(o->user);
    o->user_free(o->user);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    wf_exporter_params p;
    wf_observer o;
    wf_exporter_params_init(&p);
    if ((p.out = fopen(argv[1], "w")) == NULL || wf_exporter_perfetto(&o, &p) < 0)
        return 1;
    feed(&o);
    wf_exporter_params_init(&p);
    p.service_name = "ids";
    p.service_version = "9.9.9";
    if ((p.out = fopen(argv[2], "w")) == NULL || wf_exporter_otlp_json(&o, &p) < 0)
        return 1;
    feed(&o);
    return 0;
}
