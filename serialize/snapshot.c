/*
 * snapshot.c: context snapshots at rest, their versioning, and the JSON view.
 * The document is one msgpack map (see docs/SNAPSHOT.md); decoding goes
 * through the checked decoder of codec.c.
 */
#include "codec_impl.h"
#include "text.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define MAGIC "wf-snapshot"

/* ---------------------------------------------------------------- the seal */

/*
 * From version 3 a document ends with its seal: a msgpack uint32 (0xce and
 * four bytes, big-endian) holding the CRC-32C of every byte before it. It
 * is checked before anything is decoded: a bit flipped or a document cut
 * short anywhere is WF_EFORMAT, never a different run. (CRC-32C detects
 * every error of up to 3 bits in documents of this size, and every burst
 * of up to 32.) The fuzzer is built with WF_FUZZ_NO_CHECKSUM so that its
 * inputs reach the decoder.
 */
#define SEAL_LEN 5

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t c, const uint8_t *p, size_t n)
{
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = (uint32_t)__builtin_ia32_crc32di(c, w);
    }
    for (; n; n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}

/* CRC-32C (Castagnoli), as iSCSI and ext4 use it. */
static uint32_t crc32c(const void *buf, size_t n)
{
    const uint8_t *p = buf;
    uint32_t c = 0xffffffffu;
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc32c_hw(c, p, n);
    pthread_once(&crc_once, crc_init);
    for (; n; n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

static int seal(wf__buf *b)
{
    if (b->oom)
        return WF_ENOMEM;
    uint32_t c = crc32c(b->data, b->len);
    char s[SEAL_LEN] = {(char)0xce, (char)(c >> 24), (char)(c >> 16), (char)(c >> 8), (char)c};
    wf__buf_append(b, s, SEAL_LEN);
    return b->oom ? WF_ENOMEM : 0;
}

/* 1 if buf ends with a seal that matches what comes before it (*body: that length). */
static int sealed(const void *buf, size_t len, size_t *body)
{
    const uint8_t *p = buf;
    *body = len;
    if (len < SEAL_LEN || p[len - SEAL_LEN] != 0xce)
        return 0;
    const uint8_t *s = p + len - 4;
    uint32_t want = (uint32_t)s[0] << 24 | (uint32_t)s[1] << 16 | (uint32_t)s[2] << 8 | s[3];
#ifdef WF_FUZZ_NO_CHECKSUM
    (void)want;
#else
    if (crc32c(p, len - SEAL_LEN) != want)
        return 0;
#endif
    *body = len - SEAL_LEN;
    return 1;
}

/* The library's FNV-1a over s, then a separator, so "ab"+"c" differs from "a"+"bc". */
static uint64_t fnv(uint64_t h, const char *s)
{
    h = wf__hash_update(h, s, strlen(s));
    return wf__hash_update(h, "\xff", 1);
}

uint64_t wf_workflow_fingerprint(const wf_workflow *wf)
{
    if (wf == NULL)
        return 0;
    uint64_t h = fnv(WF__HASH_INIT, wf->name);
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
    wf__cut *cut = NULL;
    void *run = NULL;
    size_t run_len = 0;
    int64_t pause = 0;
    wf_value state = wf_value_nil();
    int rc = wf__ctx_cut(ctx, &cut, &pause, &state);
    if (rc == WF_ESTATE) {
        rc = wf__ctx_parked_copy(ctx, &run, &run_len);
        rc = rc < 0 ? rc : 0;
    } else if (rc == 0 && info) {
        info->live = 1;
        info->pause_ns = pause;
    }
    if (rc < 0)
        return rc;
    /* the store: as it was at the cut when there was one, else now */
    if (wf_value_kind(state) == WF_NIL && (rc = wf_ctx_state(ctx, &state)) < 0) {
        wf__cut_free(cut);
        wf__free_mem(run);
        return rc;
    }
    wf__buf b;
    wf__buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, wf__buf_write);
    int running = cut || run;
    rc = msgpack_pack_map(&pk, running ? 7 : 6) ? WF_ENOMEM : 0;
    if (rc == 0 && (rc = pack_cstr(&pk, "magic")) == 0)
        rc = pack_cstr(&pk, MAGIC);
    if (rc == 0 && (rc = pack_cstr(&pk, "version")) == 0)
        rc = msgpack_pack_uint32(&pk, WF_SNAPSHOT_VERSION) ? WF_ENOMEM : 0;
    if (rc == 0 && (rc = pack_cstr(&pk, "workflow")) == 0)
        rc = pack_cstr(&pk, ctx->wf->name);
    if (rc == 0 && (rc = pack_cstr(&pk, "fingerprint")) == 0)
        rc = msgpack_pack_uint64(&pk, wf_workflow_fingerprint(ctx->wf)) ? WF_ENOMEM : 0;
    if (rc == 0 && (rc = pack_cstr(&pk, "running")) == 0)
        rc = (running ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk)) ? WF_ENOMEM : 0;
    if (rc == 0 && (rc = pack_cstr(&pk, "state")) == 0)
        rc = wf__pack_value(&pk, state, 0);
    /* the run last: the cut straight into the document, or the parked bytes */
    if (rc == 0 && running && (rc = pack_cstr(&pk, "run")) == 0) {
        if (cut)
            rc = wf__cut_encode(cut, &b);
        else
            wf__buf_append(&b, run, run_len); /* already msgpack */
    }
    wf_value_release(state);
    wf__cut_free(cut);
    wf__free_mem(run);
    if (info && rc == 0)
        info->running = running;
    if (rc == 0)
        rc = seal(&b);
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

/* The entries of a document, as the current version reads them. */
enum { K_MAGIC, K_VERSION, K_WORKFLOW, K_FINGERPRINT, K_RUNNING, K_STATE, K_RUN, K_N };

/* What a document says about itself, as the current version reads it. */
typedef struct head {
    uint64_t version;
    uint64_t doc_version; /* as written (version is the migrated one) */
    uint64_t fingerprint;
    wf__rd_key keys[K_N]; /* where each entry is; migrate may drop some */
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
        h->keys[K_RUN].at = 0;
        h->version = 2;
    }
    if (h->version == 2) {
        /*
         * 2 -> 3: version 3 adds the seal and a task's invocation number
         * (optional: a task without one gets one when it first waits).
         */
        h->version = 3;
    }
    if (h->version == 3) {
        /*
         * 3 -> 4: version 4 adds a task's child (item 11: the child workflow
         * an in-progress invocation awaits, its snapshot nested) and lets the
         * invocation number before it be nil; nothing to convert.
         */
        h->version = 4;
    }
    return h->version == WF_SNAPSHOT_VERSION
               ? 0
               : why(message, WF_EVERSION, "unknown snapshot format version");
}

/* The cursor at entry k's value: 1, or 0 when the document has no such entry. */
static int entry(wf__rd *r, const head *h, int k)
{
    r->off = h->keys[k].at;
    return h->keys[k].at != 0;
}

static int is_magic(wf__rd *r, const head *h)
{
    const char *s;
    uint32_t n;
    return entry(r, h, K_MAGIC) && wf__rd_str(r, &s, &n) == 0 && n == strlen(MAGIC) &&
           memcmp(s, MAGIC, n) == 0;
}

/*
 * Reads the head of a document: where each entry is, every value's
 * structure checked. The run is not read here: it is checked where it is,
 * in buf (so messages give offsets in the document), and parked in the
 * context as those very bytes; when it is the last entry (as wf writes it)
 * it is not even walked here, the run decoder's one walk checks it.
 */
static int read_head(wf__rd *r, head *h, char **message)
{
    static const char *names[K_N] = {"magic",   "version", "workflow", "fingerprint",
                                     "running", "state",   "run"};
    for (int k = 0; k < K_N; k++) {
        h->keys[k].name = names[k];
        h->keys[k].tail = k == K_RUN; /* the run decoder checks it, in one walk */
    }
    int c = wf__rd_peek(r);
    if (c >= 0 && !((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf))
        return why(message, WF_EFORMAT, "not a wf snapshot (no \"magic\": \"wf-snapshot\")");
    if (wf__rd_keys(r, h->keys, K_N) < 0) {
        if (message)
            *message = wf__rd_message(r, "malformed msgpack");
        return WF_EFORMAT;
    }
    if (r->off != r->len)
        return why(message, WF_EFORMAT, "malformed snapshot: bytes after the document");
    if (!is_magic(r, h))
        return why(message, WF_EFORMAT, "not a wf snapshot (no \"magic\": \"wf-snapshot\")");
    uint32_t u;
    int64_t i;
    int neg, b = 0;
    if (!entry(r, h, K_VERSION) || wf__rd_integer(r, &h->version, &i, &neg) < 0 || neg)
        return why(message, WF_EFORMAT, "malformed snapshot: no format version");
    h->doc_version = h->version;
    if (h->version > WF_SNAPSHOT_VERSION) {
        char text[160];
        snprintf(text, sizeof text,
                 "snapshot format %llu is newer than this library's (%d): upgrade wf",
                 (unsigned long long)h->version, WF_SNAPSHOT_VERSION);
        return why(message, WF_EVERSION, text);
    }
    if (!entry(r, h, K_FINGERPRINT) || wf__rd_integer(r, &h->fingerprint, &i, &neg) < 0 || neg ||
        !entry(r, h, K_STATE) || wf__rd_map(r, &u) < 0)
        return why(message, WF_EFORMAT, "malformed snapshot: missing fingerprint or state");
    if (entry(r, h, K_RUNNING) && (c = wf__rd_peek(r)) == 0xc3)
        b = 1;
    if (b && h->keys[K_RUN].at == 0 && h->version >= 2)
        return why(message, WF_EFORMAT, "malformed snapshot: running, but no \"run\"");
    if (entry(r, h, K_RUN) && wf__rd_map(r, &u) < 0)
        return why(message, WF_EFORMAT,
                   "malformed snapshot: \"run\" is not a map (or is cut short)");
    return migrate(h, message);
}

/*
 * The head of a document, after its seal: a sealed document is read without
 * it; one without a seal (or whose seal does not match) loads only if it is
 * of a version before seals (1, 2), anything else is WF_EFORMAT.
 */
static int open_doc(wf__rd *r, head *h, const void *buf, size_t len, char **message)
{
    size_t body;
    int ok = sealed(buf, len, &body);
    wf__rd_init(r, buf, body, 0);
    int rc = read_head(r, h, message);
    if (ok && rc == 0 && h->doc_version < 3)
        rc = why(message, WF_EFORMAT, "malformed snapshot: a seal on a version 1 or 2 document");
    if (!ok) {
        /* a sealed document corrupted or cut short, whatever its bytes now claim */
        int looks_sealed = len >= SEAL_LEN && ((const uint8_t *)buf)[len - SEAL_LEN] == 0xce;
        const char *text = NULL;
        if (looks_sealed && rc != WF_ENOMEM)
            text = "corrupt snapshot: its checksum (CRC-32C) does not match";
        else if (rc == 0 && h->doc_version >= 3)
            text = "corrupt or truncated snapshot: no checksum at its end";
        else if (rc < 0 && rc != WF_ENOMEM && rc != WF_EFORMAT)
            text = "corrupt snapshot: no checksum, and not an older format";
        if (text) {
            if (message) {
                wf__free_mem(*message);
                *message = NULL;
            }
            rc = why(message, WF_EFORMAT, text);
        }
    }
    return rc;
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
    wf__rd r;
    head h;
    int rc = open_doc(&r, &h, buf, len, message);
    if (rc == 0 && h.fingerprint != wf_workflow_fingerprint(wf) &&
        !(flags & WF_LOAD_ALLOW_MISMATCH)) {
        const char *name = "?";
        uint32_t nl = 1;
        if (entry(&r, &h, K_WORKFLOW) && wf__rd_str(&r, &name, &nl) == 0 && nl > 200)
            nl = 200;
        char text[320];
        snprintf(text, sizeof text,
                 "snapshot of workflow '%.*s' does not match the definition of '%s'", (int)nl, name,
                 wf->name);
        rc = why(message, WF_EMISMATCH, text);
    }
    /* the run: checked against wf where it is, then parked as those bytes */
    const wf__rd_key *run = &h.keys[K_RUN];
    if (rc == 0 && run->at && (rc = wf__workflow_prepare(wf, message)) == 0)
        rc = wf__run_check_doc(wf, buf, run->at, run->end - run->at, 0, message);
    wf_value state = wf_value_nil();
    if (rc == 0) {
        entry(&r, &h, K_STATE);
        if ((rc = wf__rd_value(&r, &state, 0)) == WF_EFORMAT && message)
            *message = wf__rd_message(&r, "malformed snapshot: state");
        if (rc == 0 && wf__state_check(wf, state) < 0) /* the state schema (schema.c) */
            rc = why(message, WF_EMISMATCH, wf_last_error_message());
    }
    void *parked = NULL;
    if (rc == 0 && run->at) {
        parked = wf__malloc(run->end - run->at);
        if (parked == NULL)
            rc = WF_ENOMEM;
        else
            memcpy(parked, (const char *)buf + run->at, run->end - run->at);
    }
    wf_ctx *ctx = NULL;
    if (rc == 0 && (rc = wf_ctx_new(&ctx, wf)) == 0) {
        rc = wf__ctx_replace_state(ctx, state);
        state = wf_value_nil();
        if (rc == 0 && parked) {
            wf__ctx_park(ctx, parked, run->end - run->at);
            parked = NULL;
        }
        if (rc < 0) {
            wf_ctx_free(ctx);
            ctx = NULL;
        }
    }
    wf_value_release(state);
    wf__free_mem(parked);
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
    /* the seal and the head first: a corrupt document is refused as wf_ctx_load refuses it */
    wf__rd r;
    head h;
    int rc = open_doc(&r, &h, buf, len, message);
    if (rc < 0)
        return rc;
    len = r.len; /* without the seal */
    wf_value doc, magic;
    size_t used = 0;
    rc = wf__value_from_msgpack(buf, len, WF__DOC_DEPTH, &doc, &used, message);
    if (rc < 0)
        return rc;
    const char *m = NULL;
    size_t ml = 0;
    if (used != len)
        rc = why(message, WF_EFORMAT, "malformed snapshot: bytes after the document");
    else if (wf_value_map_get(doc, "magic", &magic) < 0 ||
             wf_value_get_string(magic, &m, &ml) < 0 || ml != strlen(MAGIC) ||
             memcmp(m, MAGIC, ml) != 0)
        rc = why(message, WF_EFORMAT, "not a wf snapshot (no \"magic\": \"wf-snapshot\")");
    if (rc < 0) {
        wf_value_release(doc);
        return rc;
    }
    /* an identifier, not a quantity: as a string, so jq and JavaScript keep all 64 bits */
    wf_value fp, fps;
    uint64_t fpv;
    char fpbuf[24];
    if (wf_value_map_get(doc, "fingerprint", &fp) == 0 && wf_value_get_uint(fp, &fpv) == 0) {
        snprintf(fpbuf, sizeof fpbuf, "%" PRIu64, fpv);
        if (wf_value_string(&fps, fpbuf) < 0 || wf_value_map_set(&doc, "fingerprint", fps) < 0) {
            wf_value_release(doc);
            return WF_ENOMEM;
        }
    }
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
