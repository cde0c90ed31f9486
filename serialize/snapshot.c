/*
 * snapshot.c: context snapshots at rest, their versioning, and the JSON view.
 * The document is one msgpack map (see docs/SNAPSHOT.md); decoding goes
 * through the checked decoder of codec.c.
 */
#include "internal.h"

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

static int set_str(wf_value *m, const char *k, const char *v)
{
    wf_value s;
    int rc = wf_value_string(&s, v);
    return rc < 0 ? rc : wf_value_map_set(m, k, s);
}

int wf_ctx_save(wf_ctx *ctx, void **buf, size_t *len)
{
    if (buf)
        *buf = NULL;
    if (len)
        *len = 0;
    if (ctx == NULL || buf == NULL || len == NULL)
        return WF_EINVAL;
    if (wf_ctx_is_running(ctx))
        return WF_EBUSY;
    wf_value doc, state;
    int rc = wf_value_map_new(&doc, 6);
    if (rc < 0)
        return rc;
    rc = set_str(&doc, "magic", MAGIC);
    if (rc == 0)
        rc = wf_value_map_set(&doc, "version", wf_value_uint(WF_SNAPSHOT_VERSION));
    if (rc == 0)
        rc = set_str(&doc, "workflow", ctx->wf->name);
    if (rc == 0)
        rc = wf_value_map_set(&doc, "fingerprint", wf_value_uint(wf_workflow_fingerprint(ctx->wf)));
    if (rc == 0)
        rc = wf_value_map_set(&doc, "running", wf_value_bool(0));
    if (rc == 0 && (rc = wf_ctx_state(ctx, &state)) == 0)
        rc = wf_value_map_set(&doc, "state", state);
    if (rc == 0)
        rc = wf_value_to_msgpack(doc, buf, len);
    wf_value_release(doc);
    return rc;
}

static int why(char **message, int rc, const char *text)
{
    if (message && *message == NULL)
        *message = wf__strdup(text);
    return rc;
}

/*
 * Brings an older document up to the current format. Version 1 is the first;
 * each later version adds a step here (v -> v + 1), so old snapshots keep
 * loading.
 */
static int migrate(wf_value *doc, uint64_t version, char **message)
{
    (void)doc;
    if (version == WF_SNAPSHOT_VERSION)
        return 0;
    return why(message, WF_EVERSION, "unknown snapshot format version");
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
    wf_value doc;
    size_t used = 0;
    int rc = wf_value_from_msgpack(buf, len, &doc, &used, message);
    if (rc < 0)
        return rc;
    wf_value v, state = wf_value_nil();
    const char *s;
    uint64_t version = 0, fp = 0;
    char text[256];
    if (used != len)
        rc = why(message, WF_EFORMAT, "malformed snapshot: bytes after the document");
    else if (wf_value_kind(doc) != WF_MAP || wf_value_map_get(doc, "magic", &v) < 0 ||
             wf_value_get_string(v, &s, NULL) < 0 || strcmp(s, MAGIC) != 0)
        rc = why(message, WF_EFORMAT, "not a wf snapshot (no \"magic\": \"wf-snapshot\")");
    else if (wf_value_map_get(doc, "version", &v) < 0 || wf_value_get_uint(v, &version) < 0)
        rc = why(message, WF_EFORMAT, "malformed snapshot: no format version");
    else if (version > WF_SNAPSHOT_VERSION) {
        snprintf(text, sizeof text,
                 "snapshot format %llu is newer than this library's (%d): upgrade wf",
                 (unsigned long long)version, WF_SNAPSHOT_VERSION);
        rc = why(message, WF_EVERSION, text);
    } else if ((rc = migrate(&doc, version, message)) < 0) {
        /* message set */
    } else if (wf_value_map_get(doc, "fingerprint", &v) < 0 || wf_value_get_uint(v, &fp) < 0 ||
               wf_value_map_get(doc, "state", &state) < 0 || wf_value_kind(state) != WF_MAP)
        rc = why(message, WF_EFORMAT, "malformed snapshot: missing fingerprint or state");
    else if (wf_value_map_get(doc, "running", &v) == 0 && wf_value_kind(v) == WF_BOOL && v.as.b)
        rc = why(message, WF_ENOTSUP, "snapshot of a running context: not supported yet");
    else if (fp != wf_workflow_fingerprint(wf) && !(flags & WF_LOAD_ALLOW_MISMATCH)) {
        const char *name = "?";
        if (wf_value_map_get(doc, "workflow", &v) == 0)
            wf_value_get_string(v, &name, NULL);
        snprintf(text, sizeof text,
                 "snapshot of workflow '%s' does not match the definition of '%s'", name, wf->name);
        rc = why(message, WF_EMISMATCH, text);
    }
    wf_ctx *ctx = NULL;
    if (rc == 0 && (rc = wf_ctx_new(&ctx, wf)) == 0 &&
        (rc = wf__ctx_replace_state(ctx, wf_value_retain(state))) < 0) {
        wf_ctx_free(ctx);
        ctx = NULL;
    }
    wf_value_release(doc);
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
