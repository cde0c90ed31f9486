/*
 * snapshot.c: context snapshots at rest, their versioning, and the JSON view.
 * The document is one msgpack map (see docs/SNAPSHOT.md); decoding goes
 * through the checked decoder of codec.c.
 */
#include "codec_impl.h"

#include <stdio.h>
#include <string.h>

#define MAGIC "wf-snapshot"

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    h ^= 0xff; /* a separator, so "ab"+"c" differs from "a"+"bc" */
    h *= 1099511628211ull;
    return h;
}

uint64_t wf_workflow_fingerprint(const wf_workflow *wf)
{
    if (wf == NULL)
        return 0;
    uint64_t h = fnv(14695981039346656037ull, wf->name);
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *s = wf->steps[i];
        h = fnv(h, s->name);
        for (uint32_t j = 0; j < s->n_accepts; j++)
            h = fnv(h, s->accepts[j]->name);
        h = fnv(h, "->");
        for (uint32_t j = 0; j < s->n_emits; j++)
            h = fnv(h, s->emits[j]->name);
    }
    return h;
}

static int pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return (msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n)) ? WF_ENOMEM : 0;
}

int wf_ctx_save_ex(wf_ctx *ctx, void **buf, size_t *len, wf_save_info *info)
{
    if (buf)
        *buf = NULL;
    if (len)
        *len = 0;
    if (info)
        memset(info, 0, sizeof *info);
    if (ctx == NULL || buf == NULL || len == NULL)
        return WF_EINVAL;
    /*
     * The run: a live cut of the one in flight, else the one parked in the
     * context (cancelled, or loaded from a snapshot taken mid-run), else none.
     */
    void *run = NULL;
    size_t run_len = 0;
    int64_t pause = 0;
    int rc = wf__ctx_capture(ctx, &run, &run_len, &pause);
    if (rc == WF_ESTATE) {
        rc = wf__ctx_parked_copy(ctx, &run, &run_len);
        rc = rc < 0 ? rc : 0;
    } else if (rc == 0 && info) {
        info->live = 1;
        info->pause_ns = pause;
    }
    if (rc < 0)
        return rc;
    wf_value state;
    if ((rc = wf_ctx_state(ctx, &state)) < 0) {
        wf__free_mem(run);
        return rc;
    }
    wf__buf b;
    wf__buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, wf__buf_write);
    rc = msgpack_pack_map(&pk, run ? 7 : 6) ? WF_ENOMEM : 0;
    if (rc == 0 && (rc = pack_cstr(&pk, "magic")) == 0)
        rc = pack_cstr(&pk, MAGIC);
    if (rc == 0 && (rc = pack_cstr(&pk, "version")) == 0)
        rc = msgpack_pack_uint32(&pk, WF_SNAPSHOT_VERSION) ? WF_ENOMEM : 0;
    if (rc == 0 && (rc = pack_cstr(&pk, "workflow")) == 0)
        rc = pack_cstr(&pk, ctx->wf->name);
    if (rc == 0 && (rc = pack_cstr(&pk, "fingerprint")) == 0)
        rc = msgpack_pack_uint64(&pk, wf_workflow_fingerprint(ctx->wf)) ? WF_ENOMEM : 0;
    if (rc == 0 && (rc = pack_cstr(&pk, "running")) == 0)
        rc = (run ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk)) ? WF_ENOMEM : 0;
    if (rc == 0 && (rc = pack_cstr(&pk, "state")) == 0)
        rc = wf__pack_value(&pk, state, 0);
    if (rc == 0 && run && (rc = pack_cstr(&pk, "run")) == 0)
        wf__buf_append(&b, run, run_len); /* already msgpack */
    wf_value_release(state);
    wf__free_mem(run);
    if (info && rc == 0)
        info->running = run != NULL;
    return wf__buf_finish(&b, rc, buf, len);
}

int wf_ctx_save(wf_ctx *ctx, void **buf, size_t *len)
{
    return wf_ctx_save_ex(ctx, buf, len, NULL);
}

static int why(char **message, int rc, const char *text)
{
    if (message && *message == NULL)
        *message = wf__strdup(text);
    return rc;
}

/* What a document says about itself, as the current version reads it. */
typedef struct head {
    uint64_t version;
    uint64_t fingerprint;
    const msgpack_object *state;
    const msgpack_object *run; /* NULL at rest */
} head;

/*
 * Brings an older document up to the current format. Each version adds a
 * step here (v -> v + 1), so old snapshots keep loading.
 */
static int migrate(head *h, char **message)
{
    if (h->version == 0)
        return why(message, WF_EVERSION, "unknown snapshot format version 0");
    if (h->version == 1) {
        /*
         * 1 -> 2: version 1 saved contexts at rest only ("running" false and
         * no "run"); version 2 adds the run of a running context.
         */
        h->run = NULL;
        h->version = 2;
    }
    return h->version == WF_SNAPSHOT_VERSION
               ? 0
               : why(message, WF_EVERSION, "unknown snapshot format version");
}

int wf_ctx_load(wf_workflow *wf, const void *buf, size_t len, uint32_t flags, wf_ctx **out,
                char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = NULL;
    if (wf == NULL || out == NULL || (buf == NULL && len > 0))
        return WF_EINVAL;
    msgpack_unpacked res;
    size_t used = 0;
    int rc = wf__msgpack_unpack(buf, len, &res, &used, message);
    if (rc < 0)
        return rc;
    const msgpack_object *doc = &res.data, *v;
    head h = {0, 0, NULL, NULL};
    char text[320];
    if (used != len) {
        rc = why(message, WF_EFORMAT, "malformed snapshot: bytes after the document");
    } else if (doc->type != MSGPACK_OBJECT_MAP || (v = wf__msgpack_get(doc, "magic")) == NULL ||
               v->type != MSGPACK_OBJECT_STR || v->via.str.size != strlen(MAGIC) ||
               memcmp(v->via.str.ptr, MAGIC, strlen(MAGIC)) != 0) {
        rc = why(message, WF_EFORMAT, "not a wf snapshot (no \"magic\": \"wf-snapshot\")");
    } else if ((v = wf__msgpack_get(doc, "version")) == NULL || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        rc = why(message, WF_EFORMAT, "malformed snapshot: no format version");
    } else if ((h.version = v->via.u64) > WF_SNAPSHOT_VERSION) {
        snprintf(text, sizeof text,
                 "snapshot format %llu is newer than this library's (%d): upgrade wf",
                 (unsigned long long)h.version, WF_SNAPSHOT_VERSION);
        rc = why(message, WF_EVERSION, text);
    } else if ((v = wf__msgpack_get(doc, "fingerprint")) == NULL ||
               v->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
               (h.state = wf__msgpack_get(doc, "state")) == NULL || h.state->type != MSGPACK_OBJECT_MAP) {
        rc = why(message, WF_EFORMAT, "malformed snapshot: missing fingerprint or state");
    } else {
        h.fingerprint = v->via.u64;
        const msgpack_object *running = wf__msgpack_get(doc, "running");
        h.run = wf__msgpack_get(doc, "run");
        if (running && running->type == MSGPACK_OBJECT_BOOLEAN && running->via.boolean &&
            h.run == NULL && h.version >= 2)
            rc = why(message, WF_EFORMAT, "malformed snapshot: running, but no \"run\"");
        else if (h.run && h.run->type != MSGPACK_OBJECT_MAP)
            rc = why(message, WF_EFORMAT, "malformed snapshot: \"run\" is not a map");
        else
            rc = migrate(&h, message);
    }
    if (rc == 0 && h.fingerprint != wf_workflow_fingerprint(wf) &&
        !(flags & WF_LOAD_ALLOW_MISMATCH)) {
        const char *name = "?";
        size_t nl = 1;
        if ((v = wf__msgpack_get(doc, "workflow")) && v->type == MSGPACK_OBJECT_STR) {
            name = v->via.str.ptr;
            nl = v->via.str.size < 200 ? v->via.str.size : 200;
        }
        snprintf(text, sizeof text,
                 "snapshot of workflow '%.*s' does not match the definition of '%s'", (int)nl,
                 name, wf->name);
        rc = why(message, WF_EMISMATCH, text);
    }
    /* the run goes into the context as msgpack, checked against wf now */
    wf__buf run;
    wf__buf_init(&run);
    if (rc == 0 && h.run) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &run, wf__buf_write);
        if (msgpack_pack_object(&pk, *h.run) || run.oom)
            rc = WF_ENOMEM;
        if (rc == 0 && (rc = wf__workflow_prepare(wf, message)) == 0)
            rc = wf__run_check(wf, run.data, run.len, message);
    }
    wf_value state = wf_value_nil();
    if (rc == 0)
        rc = wf__msgpack_convert(h.state, &state, message);
    wf_ctx *ctx = NULL;
    if (rc == 0 && (rc = wf_ctx_new(&ctx, wf)) == 0) {
        rc = wf__ctx_replace_state(ctx, state);
        state = wf_value_nil();
        if (rc == 0 && h.run) {
            void *bytes;
            size_t blen;
            if ((rc = wf__buf_finish(&run, 0, &bytes, &blen)) == 0)
                wf__ctx_park(ctx, bytes, blen);
        }
        if (rc < 0) {
            wf_ctx_free(ctx);
            ctx = NULL;
        }
    }
    wf_value_release(state);
    wf__buf_free(&run);
    msgpack_unpacked_destroy(&res);
    *out = ctx;
    return rc;
}

int wf_snapshot_to_json(const void *buf, size_t len, char **json, char **message)
{
    if (message)
        *message = NULL;
    if (json)
        *json = NULL;
    if (json == NULL)
        return WF_EINVAL;
    wf_value doc;
    int rc = wf_value_from_msgpack(buf, len, &doc, NULL, message);
    if (rc < 0)
        return rc;
    size_t n = wf_value_format(doc, NULL, 0);
    char *s = wf__malloc(n + 1);
    if (s == NULL) {
        wf_value_release(doc);
        return WF_ENOMEM;
    }
    wf_value_format(doc, s, n + 1);
    wf_value_release(doc);
    *json = s;
    return 0;
}
