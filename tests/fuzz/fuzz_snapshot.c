/*
 * fuzz_snapshot.c: libFuzzer harness for the snapshot decoder. Every input is
 * fed to the value decoder, the event decoder and wf_ctx_load; none may
 * crash, leak or allocate without bound, and whatever decodes must encode
 * to bytes that decode and encode again to the very same bytes. A run that
 * wf_ctx_load accepts (it only checks the run) must also build, as
 * wf_run_resume would: the check and the build are held to agreeing.
 *
 * Build and run (scripts/test does this for 30 s; it links the library's
 * sources, so the harness reaches the internal wf__run_check_doc). Built
 * with -DWF_FUZZ_NO_CHECKSUM: a document's seal (CRC-32C) is then taken as
 * matching, so mutated inputs reach the decoder instead of stopping at it:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined ... tests/fuzz/fuzz_snapshot.c
 *   ./fuzz_snapshot -max_total_time=600 tests/fuzz/corpus
 * The seed corpus holds real snapshots; corpus/run1.msgpack, a running one
 * using every part of the run map, is written by make_seed.py.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

#include "codec_impl.h"

static wf_workflow *wf;

static int nop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)ctx;
    (void)in;
    (void)out;
    (void)u;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (wf == NULL) {
        if (wf_workflow_new(&wf, "Counter", NULL) < 0)
            abort();
        const wf_event_type *acc[] = {wf_workflow_builtin(wf, WF_START_EVENT)};
        const wf_event_type *em[] = {wf_workflow_builtin(wf, WF_STOP_EVENT)};
        wf_step_params p;
        wf_step_params_init(&p);
        p.accepts = acc;
        p.n_accepts = 1;
        p.emits = em;
        p.n_emits = 1;
        if (wf_workflow_add_step(wf, "count", nop, &p, NULL) < 0)
            abort();
    }
    wf_value v;
    char *msg = NULL;
    if (wf_value_from_msgpack(data, size, &v, NULL, &msg) == 0) {
        void *buf;
        size_t len;
        if (wf_value_to_msgpack(v, &buf, &len) == 0) {
            /* decode(encode(v)) re-encodes to the same bytes (NaN included) */
            wf_value back;
            void *buf2;
            size_t len2;
            if (wf_value_from_msgpack(buf, len, &back, NULL, NULL) != 0 ||
                wf_value_to_msgpack(back, &buf2, &len2) != 0)
                abort();
            if (len2 != len || memcmp(buf, buf2, len) != 0)
                abort();
            wf_value_release(back);
            wf_free(buf2);
            wf_free(buf);
        }
        wf_value_release(v);
    }
    wf_free(msg);
    msg = NULL;
    wf_event *ev;
    if (wf_event_from_msgpack(wf_workflow_registry(wf), data, size, &ev, NULL, &msg) == 0)
        wf_event_release(ev);
    wf_free(msg);
    msg = NULL;
    wf_ctx *ctx;
    if (wf_ctx_load(wf, data, size, WF_LOAD_ALLOW_MISMATCH, &ctx, &msg) == 0) {
        /* what was parked builds (the run map's bytes, as wf_run_resume reads them) */
        if (ctx->parked) {
            char *why = NULL;
            int rc = wf__run_check_doc(wf, ctx->parked, 0, ctx->parked_len, 1, &why);
            if (rc != 0 && rc != WF_ENOMEM)
                abort();
            wf_free(why);
        }
        /* and saves to a document that loads again */
        void *buf;
        size_t len;
        wf_ctx *again;
        if (wf_ctx_save(ctx, &buf, &len) == 0) {
            if (wf_ctx_load(wf, buf, len, WF_LOAD_ALLOW_MISMATCH, &again, NULL) != 0)
                abort();
            wf_ctx_free(again);
            wf_free(buf);
        }
        wf_ctx_free(ctx);
    }
    wf_free(msg);
    return 0;
}
