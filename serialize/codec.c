/*
 * codec.c: msgpack encoding of values and events (msgpack-c's packer), and
 * their decoding straight from the bytes (the cursor of codec_impl.h). The
 * structure and every length of a document are checked before anything is
 * allocated for it: a 6-byte document claiming 2^32 elements is refused
 * before any allocation, and a container's count, once checked, bounds what
 * is allocated for it. msgpack-c's unpacker, which sizes its allocations
 * from the length prefixes it reads and builds a whole object tree first,
 * is not used.
 */
#include "codec_impl.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------- encoding */

/*
 * The packer's writer: called for every few bytes, so the common case (room
 * left) is a copy. Msgpack is bytes, not text: no NUL is kept after them.
 */
int wf__buf_write(void *data, const char *p, size_t n)
{
    wf__buf *b = data;
    if (WF__LIKELY(b->cap - b->len > n)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
    }
    wf__buf_append(b, p, n);
    return b->oom ? -1 : 0;
}

int wf__buf_reserve(wf__buf *b, size_t n)
{
    if (b->oom)
        return WF_ENOMEM;
    if (b->cap - b->len > n)
        return 0;
    size_t cap = b->len + n + 1;
    char *d = cap > b->len ? wf__realloc(b->data, cap) : NULL;
    if (d == NULL) {
        b->oom = 1;
        return WF_ENOMEM;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

int wf__pack_value(msgpack_packer *pk, wf_value v, int depth)
{
    if (depth > WF_MSGPACK_MAX_DEPTH)
        return WF_ERANGE;
    switch (wf_value_kind(v)) {
    case WF_NIL:
        return msgpack_pack_nil(pk) ? WF_ENOMEM : 0;
    case WF_BOOL:
        return (v.as.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ? WF_ENOMEM : 0;
    case WF_INT:
        return msgpack_pack_int64(pk, v.as.i) ? WF_ENOMEM : 0;
    case WF_UINT:
        return msgpack_pack_uint64(pk, v.as.u) ? WF_ENOMEM : 0;
    case WF_DOUBLE:
        return msgpack_pack_double(pk, v.as.d) ? WF_ENOMEM : 0;
    case WF_STRING: {
        const char *s;
        size_t n;
        wf_value_get_string(v, &s, &n);
        return (msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n)) ? WF_ENOMEM : 0;
    }
    case WF_BYTES: {
        const void *p;
        size_t n;
        wf_value_get_bytes(v, &p, &n);
        return (msgpack_pack_bin(pk, n) || msgpack_pack_bin_body(pk, p, n)) ? WF_ENOMEM : 0;
    }
    case WF_ARRAY: {
        size_t n = wf_value_len(v);
        if (msgpack_pack_array(pk, n))
            return WF_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            wf_value it;
            wf_value_array_at(v, i, &it);
            int rc = wf__pack_value(pk, it, depth + 1);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case WF_MAP: {
        size_t n = wf_value_len(v);
        if (msgpack_pack_map(pk, n))
            return WF_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            const char *k;
            size_t kl;
            wf_value it;
            wf_value_map_at(v, i, &k, &kl, &it);
            if (msgpack_pack_str(pk, kl) || msgpack_pack_str_body(pk, k, kl))
                return WF_ENOMEM;
            int rc = wf__pack_value(pk, it, depth + 1);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    default:
        return WF_EINVAL;
    }
}

int wf__buf_finish(wf__buf *b, int rc, void **buf, size_t *len)
{
    if (rc == 0 && b->oom)
        rc = WF_ENOMEM;
    if (rc < 0) {
        wf__buf_free(b);
        return rc;
    }
    size_t n = b->len;
    char *out;
    /* wf__buf_take trims trailing newlines (for text); bytes must stay as they are */
    if (b->data == NULL) {
        out = wf__malloc(1);
        if (out == NULL)
            return WF_ENOMEM;
    } else {
        out = b->data;
        wf__buf_init(b);
    }
    *buf = out;
    *len = n;
    return 0;
}

int wf_value_to_msgpack(wf_value v, void **buf, size_t *len)
{
    if (buf == NULL || len == NULL)
        return WF_EINVAL;
    *buf = NULL;
    *len = 0;
    wf__buf b;
    wf__buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, wf__buf_write);
    return wf__buf_finish(&b, wf__pack_value(&pk, v, 0), buf, len);
}

int wf__pack_fields(msgpack_packer *pk, const wf_event *ev)
{
    if (msgpack_pack_map(pk, ev->nfields))
        return WF_ENOMEM;
    const wf__field *fields = wf__ev_fields(ev);
    for (uint32_t i = 0; i < ev->nfields; i++) {
        const char *k = wf__field_key(&fields[i]);
        size_t kl = fields[i].klen;
        if (msgpack_pack_str(pk, kl) || msgpack_pack_str_body(pk, k, kl))
            return WF_ENOMEM;
        int rc = wf__pack_value(pk, fields[i].val, 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int wf_event_to_msgpack(const wf_event *ev, void **buf, size_t *len)
{
    if (buf == NULL || len == NULL || ev == NULL)
        return WF_EINVAL;
    *buf = NULL;
    *len = 0;
    wf__buf b;
    wf__buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, wf__buf_write);
    const char *name = ev->type->name;
    size_t nl = strlen(name);
    int rc = (msgpack_pack_array(&pk, 2) || msgpack_pack_str(&pk, nl) ||
              msgpack_pack_str_body(&pk, name, nl))
                 ? WF_ENOMEM
                 : wf__pack_fields(&pk, ev);
    return wf__buf_finish(&b, rc, buf, len);
}

/* ------------------------------------------------------------- decoding */

char *wf__rd_message(const wf__rd *r, const char *what)
{
    char m[400];
    snprintf(m, sizeof m, "%s at offset %zu: %s", what, r->at, r->why ? r->why : "malformed");
    return wf__strdup(m);
}

static int fail_at(wf__rd *r, size_t off, const char *why)
{
    size_t keep = r->off;
    r->off = off;
    wf__rd_fail(r, why);
    r->off = keep;
    return WF_EFORMAT;
}

int wf__rd_check(wf__rd *r)
{
    const uint8_t *p = r->p;
    size_t len = r->len;
    /* stack of "items still to read" per open container */
    uint64_t stack[WF_MSGPACK_MAX_DEPTH + WF__DOC_DEPTH + 1];
    uint8_t is_map_key[WF_MSGPACK_MAX_DEPTH + WF__DOC_DEPTH + 1];
    int depth = 0;
    stack[0] = 1;
    is_map_key[0] = 0;
    size_t o = r->off;
    while (depth >= 0) {
        if (stack[depth] == 0) {
            depth--;
            continue;
        }
        stack[depth]--;
        /* in a map, entries alternate key, value: keys are the even positions */
        int want_key = is_map_key[depth] && (stack[depth] % 2 == 1);
        if (o >= len)
            return fail_at(r, o, "truncated");
        uint8_t c = p[o];
        size_t head = 1;
        uint64_t body = 0, items = 0;
        int container = 0, map = 0, str = 0;
        if (c <= 0x7f || c >= 0xe0) {
            /* fixint */
        } else if (c <= 0x8f) {
            items = c & 0x0f;
            container = map = 1;
        } else if (c <= 0x9f) {
            items = c & 0x0f;
            container = 1;
        } else if (c <= 0xbf) {
            body = c & 0x1f;
            str = 1;
        } else {
            switch (c) {
            case 0xc0:
            case 0xc2:
            case 0xc3:
                break;
            case 0xc4:
            case 0xc5:
            case 0xc6:
            case 0xd9:
            case 0xda:
            case 0xdb: {
                int w = (c == 0xc4 || c == 0xd9) ? 1 : (c == 0xc5 || c == 0xda) ? 2 : 4;
                if (len - o < (size_t)1 + (size_t)w)
                    return fail_at(r, o, "truncated length");
                body = wf__rd_be(p + o + 1, w);
                head = 1 + (size_t)w;
                str = c >= 0xd9;
                break;
            }
            case 0xca:
                body = 4;
                break;
            case 0xcb:
                body = 8;
                break;
            case 0xcc:
            case 0xd0:
                body = 1;
                break;
            case 0xcd:
            case 0xd1:
                body = 2;
                break;
            case 0xce:
            case 0xd2:
                body = 4;
                break;
            case 0xcf:
            case 0xd3:
                body = 8;
                break;
            case 0xdc:
            case 0xdd:
            case 0xde:
            case 0xdf: {
                int w = (c == 0xdc || c == 0xde) ? 2 : 4;
                if (len - o < (size_t)1 + (size_t)w)
                    return fail_at(r, o, "truncated length");
                items = wf__rd_be(p + o + 1, w);
                head = 1 + (size_t)w;
                container = 1;
                map = c >= 0xde;
                break;
            }
            default:
                return fail_at(r, o,
                               c == 0xc1 ? "reserved byte 0xc1" : "extension types are not values");
            }
        }
        if (want_key && !str)
            return fail_at(r, o, "map key is not a string");
        if (container) {
            if (map)
                items *= 2;
            /* every item takes at least one byte: a longer claim is a lie */
            if (items > len - o - head)
                return fail_at(r, o, "container longer than the document");
            if (depth + 1 > WF_MSGPACK_MAX_DEPTH + WF__DOC_DEPTH)
                return fail_at(r, o, "nested too deeply");
            o += head;
            depth++;
            stack[depth] = items;
            is_map_key[depth] = (uint8_t)map;
            continue;
        }
        if (body > len - o - head)
            return fail_at(r, o, "truncated body");
        o += head + (size_t)body;
    }
    r->off = o;
    return 0;
}

/*
 * The keys of one map read without building it, to refuse duplicates:
 * pairwise for a few, a hash table beyond (sized from the map's count, which
 * the bytes left bound).
 */
#define KEYS_SMALL 16
typedef struct keyset {
    uint32_t n;
    uint32_t mask; /* table size - 1, or 0: pairwise in small */
    struct key {
        const char *k;
        uint32_t l;
    } small[KEYS_SMALL], *tab;
} keyset;

static int keyset_init(keyset *ks, uint32_t n)
{
    ks->n = 0;
    ks->mask = 0;
    ks->tab = NULL;
    if (n <= KEYS_SMALL)
        return 0;
    uint32_t cap = 32;
    while (cap < 2 * (uint64_t)n)
        cap *= 2;
    ks->tab = wf__calloc(cap, sizeof *ks->tab);
    if (ks->tab == NULL)
        return WF_ENOMEM;
    ks->mask = cap - 1;
    return 0;
}

static void keyset_free(keyset *ks)
{
    wf__free_mem(ks->tab);
}

/* 1 if k is new (and now in the set), 0 if it was there already. */
static int keyset_add(keyset *ks, const char *k, uint32_t l)
{
    if (ks->tab == NULL) {
        for (uint32_t i = 0; i < ks->n; i++)
            if (ks->small[i].l == l && memcmp(ks->small[i].k, k, l) == 0)
                return 0;
        ks->small[ks->n].k = k;
        ks->small[ks->n].l = l;
        ks->n++;
        return 1;
    }
    uint32_t h = wf__hash32(k, l);
    for (h &= ks->mask; ks->tab[h].k; h = (h + 1) & ks->mask)
        if (ks->tab[h].l == l && memcmp(ks->tab[h].k, k, l) == 0)
            return 0;
    ks->tab[h].k = k;
    ks->tab[h].l = l;
    ks->n++;
    return 1;
}

int wf__rd_value(wf__rd *r, wf_value *out, int depth)
{
    if (out)
        *out = wf_value_nil();
    int c = wf__rd_peek(r);
    if (c < 0)
        return wf__rd_fail(r, "truncated");
    if (c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3)) {
        uint64_t u;
        int64_t i;
        int neg;
        if (wf__rd_integer(r, &u, &i, &neg) < 0)
            return wf__rd_fail(r, "truncated body");
        if (out)
            *out = neg ? wf_value_int(i) : wf_value_uint(u);
        return 0;
    }
    const char *s;
    uint32_t n;
    switch (c) {
    case 0xc0:
        r->off++;
        return 0;
    case 0xc2:
    case 0xc3:
        r->off++;
        if (out)
            *out = wf_value_bool(c == 0xc3);
        return 0;
    case 0xca:
    case 0xcb: {
        size_t w = c == 0xca ? 4 : 8;
        if (wf__rd_left(r) < 1 + w)
            return wf__rd_fail(r, "truncated body");
        uint64_t bits = wf__rd_be(r->p + r->off + 1, (int)w);
        double d;
        if (w == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, sizeof f);
            d = f;
        } else {
            memcpy(&d, &bits, sizeof d);
        }
        r->off += 1 + w;
        if (out)
            *out = wf_value_double(d);
        return 0;
    }
    case 0xc4:
    case 0xc5:
    case 0xc6:
        if (wf__rd_strbin(r, 1, &s, &n) < 0)
            return wf__rd_fail(r, "truncated body");
        return out ? wf_value_bytes(out, s, n) : 0;
    default:
        break;
    }
    if ((c >= 0xa0 && c <= 0xbf) || (c >= 0xd9 && c <= 0xdb)) {
        if (wf__rd_str(r, &s, &n) < 0)
            return wf__rd_fail(r, "truncated body");
        return out ? wf_value_string_n(out, s, n) : 0;
    }
    int is_map = (c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf;
    if (!is_map && !((c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd))
        return wf__rd_fail(r, c == 0xc1 ? "reserved byte 0xc1" : "extension types are not values");
    if (depth >= WF_MSGPACK_MAX_DEPTH)
        return wf__rd_fail(r, "nested too deeply");
    if (wf__rd_container(r, is_map, &n) < 0)
        return wf__rd_fail(r, "container longer than the document");
    int rc = 0;
    if (!is_map) {
        if (out && (rc = wf_value_array_new(out, n)) < 0)
            return rc;
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            wf_value it;
            rc = wf__rd_value(r, out ? &it : NULL, depth + 1);
            if (rc == 0 && out)
                rc = wf_value_array_push(out, it);
        }
    } else {
        keyset ks;
        if (out)
            rc = wf_value_map_new(out, n);
        else
            rc = keyset_init(&ks, n);
        if (rc < 0)
            return rc;
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            size_t at = r->off;
            const char *k;
            uint32_t kl;
            if (wf__rd_str(r, &k, &kl) < 0) {
                rc = wf__rd_fail(r, "map key is not a string");
                break;
            }
            wf_value dup;
            if (out ? wf_value_map_get_n(*out, k, kl, &dup) == 0 : !keyset_add(&ks, k, kl)) {
                r->off = at;
                rc = wf__rd_fail(r, "duplicate map key");
                break;
            }
            wf_value it;
            rc = wf__rd_value(r, out ? &it : NULL, depth + 1);
            if (rc == 0 && out)
                rc = wf_value_map_set_n(out, k, kl, it);
        }
        if (!out)
            keyset_free(&ks);
    }
    if (rc < 0 && out) {
        wf_value_release(*out);
        *out = wf_value_nil();
    }
    return rc;
}

int wf__rd_fields(wf__rd *r, const wf_event_type *t, wf_event **out)
{
    if (out)
        *out = NULL;
    uint32_t n;
    if (wf__rd_map(r, &n) < 0)
        return wf__rd_fail(r, "an event's fields are a map");
    if (n > (1u << 20))
        return wf__rd_fail(r, "too many fields");
    wf_event *ev = NULL;
    keyset ks;
    int rc = keyset_init(&ks, n);
    if (rc == 0 && out)
        rc = wf_event_new(&ev, t, n) < 0 ? WF_ENOMEM : 0;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        size_t at = r->off;
        const char *k;
        uint32_t kl;
        if (wf__rd_str(r, &k, &kl) < 0 || kl == 0 || kl > 255 || memchr(k, 0, kl)) {
            r->off = at;
            rc = wf__rd_fail(r, "bad field name");
            break;
        }
        if (!keyset_add(&ks, k, kl)) {
            r->off = at;
            rc = wf__rd_fail(r, "duplicate field");
            break;
        }
        wf_value v;
        if ((rc = wf__rd_value(r, ev ? &v : NULL, 1)) < 0 || ev == NULL)
            continue;
        /*
         * Straight into the event (wf_event_new sized it for n): the names
         * are known unique, where wf_event_set would search the fields again
         * for each one.
         */
        wf__field *f = &wf__ev_fields(ev)[ev->nfields];
        if (kl < WF__KEY_INLINE) {
            memcpy(f->key, k, kl);
            f->key[kl] = 0;
        } else {
            char *heap = wf__strndup(k, kl);
            if (heap == NULL) {
                wf_value_release(v);
                rc = WF_ENOMEM;
                break;
            }
            memcpy(f->key, &heap, sizeof heap);
        }
        f->klen = kl;
        f->val = v;
        ev->nfields++;
    }
    keyset_free(&ks);
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    if (out)
        *out = ev;
    return 0;
}

int wf__rd_keys(wf__rd *r, wf__rd_key *keys, uint32_t nk)
{
    for (uint32_t k = 0; k < nk; k++)
        keys[k].at = keys[k].end = 0;
    uint32_t n;
    int c = wf__rd_peek(r);
    if (wf__rd_map(r, &n) < 0)
        return wf__rd_fail(r, c < 0 ? "truncated"
                              : (c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf
                                  ? "container longer than the document"
                                  : "not a map");
    keyset ks;
    int rc = keyset_init(&ks, n);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        size_t at = r->off;
        const char *s;
        uint32_t sl;
        if (wf__rd_str(r, &s, &sl) < 0) {
            rc = wf__rd_fail(r, "map key is not a string");
            break;
        }
        if (!keyset_add(&ks, s, sl)) {
            r->off = at;
            rc = wf__rd_fail(r, "duplicate map key");
            break;
        }
        wf__rd_key *key = NULL;
        for (uint32_t k = 0; k < nk; k++)
            if (strlen(keys[k].name) == sl && memcmp(keys[k].name, s, sl) == 0)
                key = &keys[k];
        if (key)
            key->at = r->off;
        if (key && key->tail && i == n - 1) {
            r->off = key->end = r->len; /* its reader checks it */
            break;
        }
        if ((rc = wf__rd_check(r)) == 0 && key)
            key->end = r->off;
    }
    keyset_free(&ks);
    return rc;
}

/* Checks the structure of one document, then hands a cursor over exactly it. */
static int rd_open(wf__rd *r, const void *buf, size_t len, size_t *used, char **message)
{
    wf__rd_init(r, buf, len, 0);
    if (wf__rd_check(r) < 0) {
        if (message)
            *message = wf__rd_message(r, "malformed msgpack");
        return WF_EFORMAT;
    }
    if (used)
        *used = r->off;
    r->len = r->off;
    r->off = 0;
    return 0;
}

/* A value whose outer levels may go doc_levels beyond the values' limit (a document's envelope). */
int wf__value_from_msgpack(const void *buf, size_t len, int doc_levels, wf_value *out, size_t *used,
                           char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = wf_value_nil();
    if (out == NULL || (buf == NULL && len > 0))
        return WF_EINVAL;
    wf__rd r;
    int rc = rd_open(&r, buf, len, used, message);
    if (rc == 0 && (rc = wf__rd_value(&r, out, -doc_levels)) == WF_EFORMAT && message)
        *message = wf__rd_message(&r, "malformed msgpack");
    return rc;
}

int wf_value_from_msgpack(const void *buf, size_t len, wf_value *out, size_t *used, char **message)
{
    return wf__value_from_msgpack(buf, len, 0, out, used, message);
}

int wf_event_from_msgpack(const wf_registry *reg, const void *buf, size_t len, wf_event **out,
                          size_t *used, char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = NULL;
    if (reg == NULL || out == NULL || (buf == NULL && len > 0))
        return WF_EINVAL;
    wf__rd r;
    int rc = rd_open(&r, buf, len, used, message);
    if (rc < 0)
        return rc;
    uint32_t n;
    const char *name;
    uint32_t nl;
    int c;
    if (wf__rd_array(&r, &n) < 0 || n != 2 || wf__rd_str(&r, &name, &nl) < 0 || nl == 0 ||
        nl > 255 || (c = wf__rd_peek(&r), !((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf))) {
        r.off = 0;
        wf__rd_fail(&r, "an event is [type name, {fields}]");
        if (message)
            *message = wf__rd_message(&r, "malformed msgpack");
        return WF_EFORMAT;
    }
    char tname[256];
    memcpy(tname, name, nl);
    tname[nl] = 0;
    const wf_event_type *t = wf_registry_find(reg, tname);
    if (t == NULL) {
        if (message) {
            char m[320];
            snprintf(m, sizeof m, "unknown event type '%s'", tname);
            *message = wf__strdup(m);
        }
        return WF_ENOTFOUND;
    }
    rc = wf__rd_fields(&r, t, out);
    if (rc == WF_EFORMAT && message)
        *message = wf__rd_message(&r, "malformed msgpack");
    return rc;
}
