/*
 * codec.c: msgpack encoding of values and events (msgpack-c's packer), and a
 * decoder that validates the whole document's structure and lengths before
 * msgpack-c unpacks it: msgpack-c sizes its allocations from the length
 * prefixes it reads, so a 6-byte document claiming 2^32 elements must never
 * reach it.
 */
#include "codec_impl.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------- encoding */

int wf__buf_write(void *data, const char *p, size_t n)
{
    wf__buf *b = data;
    wf__buf_append(b, p, n);
    return b->oom ? -1 : 0;
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

static int fail(char **message, size_t off, const char *what)
{
    if (message) {
        char m[192];
        snprintf(m, sizeof m, "malformed msgpack at offset %zu: %s", off, what);
        *message = wf__strdup(m);
    }
    return WF_EFORMAT;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/*
 * Walks one msgpack object tree from p[*off..len) checking every header and
 * length against the bytes left, and that maps have string keys. On success
 * *off is just past the object.
 */
static int check(const uint8_t *p, size_t len, size_t *off, char **message)
{
    /* stack of "items still to read" per open container */
    uint64_t stack[WF_MSGPACK_MAX_DEPTH + 1];
    uint8_t is_map_key[WF_MSGPACK_MAX_DEPTH + 1];
    int depth = 0;
    stack[0] = 1;
    is_map_key[0] = 0;
    size_t o = *off;
    while (depth >= 0) {
        if (stack[depth] == 0) {
            depth--;
            continue;
        }
        stack[depth]--;
        /* in a map, entries alternate key, value: keys are the even positions */
        int want_key = is_map_key[depth] && (stack[depth] % 2 == 1);
        if (o >= len)
            return fail(message, o, "truncated");
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
                    return fail(message, o, "truncated length");
                body = be(p + o + 1, w);
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
                    return fail(message, o, "truncated length");
                items = be(p + o + 1, w);
                head = 1 + (size_t)w;
                container = 1;
                map = c >= 0xde;
                break;
            }
            default:
                return fail(message, o,
                            c == 0xc1 ? "reserved byte 0xc1" : "extension types are not values");
            }
        }
        if (want_key && !str)
            return fail(message, o, "map key is not a string");
        if (container) {
            if (map)
                items *= 2;
            /* every item takes at least one byte: a longer claim is a lie */
            if (items > len - o - head)
                return fail(message, o, "container longer than the document");
            if (depth + 1 > WF_MSGPACK_MAX_DEPTH)
                return fail(message, o, "nested too deeply");
            o += head;
            depth++;
            stack[depth] = items;
            is_map_key[depth] = (uint8_t)map;
            continue;
        }
        if (body > len - o - head)
            return fail(message, o, "truncated body");
        o += head + (size_t)body;
    }
    *off = o;
    return 0;
}

/* Converts a checked msgpack object; *out caller owned. */
int wf__msgpack_convert(const msgpack_object *o, wf_value *out, char **message)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        *out = wf_value_nil();
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        *out = wf_value_bool(o->via.boolean);
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = wf_value_uint(o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = wf_value_int(o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *out = wf_value_double(o->via.f64);
        return 0;
    case MSGPACK_OBJECT_STR:
        return wf_value_string_n(out, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return wf_value_bytes(out, o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        int rc = wf_value_array_new(out, o->via.array.size);
        for (uint32_t i = 0; rc == 0 && i < o->via.array.size; i++) {
            wf_value it;
            rc = wf__msgpack_convert(&o->via.array.ptr[i], &it, message);
            if (rc == 0)
                rc = wf_value_array_push(out, it);
        }
        if (rc < 0)
            wf_value_release(*out);
        return rc;
    }
    case MSGPACK_OBJECT_MAP: {
        int rc = wf_value_map_new(out, o->via.map.size);
        for (uint32_t i = 0; rc == 0 && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            /* msgpack-c may give an empty string a NULL pointer */
            const char *key = kv->key.via.str.ptr ? kv->key.via.str.ptr : "";
            wf_value dup;
            if (wf_value_map_get_n(*out, key, kv->key.via.str.size, &dup) == 0) {
                rc = WF_EFORMAT;
                if (message)
                    *message = wf__strdup("malformed msgpack: duplicate map key");
                break;
            }
            wf_value it;
            rc = wf__msgpack_convert(&kv->val, &it, message);
            if (rc == 0)
                rc = wf_value_map_set_n(out, key, kv->key.via.str.size, it);
        }
        if (rc < 0)
            wf_value_release(*out);
        return rc;
    }
    default:
        if (message)
            *message = wf__strdup("malformed msgpack: not a value");
        return WF_EFORMAT;
    }
}

/* Checks, then unpacks one object of buf into *obj (zone in *res). */
int wf__msgpack_unpack(const void *buf, size_t len, msgpack_unpacked *res, size_t *used,
                       char **message)
{
    size_t end = 0;
    int rc = check(buf, len, &end, message);
    if (rc < 0)
        return rc;
    msgpack_unpacked_init(res);
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack_next(res, buf, end, &off);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR) {
        msgpack_unpacked_destroy(res);
        return WF_ENOMEM;
    }
    if (r != MSGPACK_UNPACK_SUCCESS || off != end) {
        msgpack_unpacked_destroy(res);
        return fail(message, off, "msgpack-c disagrees with the structure check");
    }
    if (used)
        *used = end;
    return 0;
}

const msgpack_object *wf__msgpack_get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            memcmp(k->via.str.ptr, key, kl) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

int wf_value_from_msgpack(const void *buf, size_t len, wf_value *out, size_t *used, char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = wf_value_nil();
    if (out == NULL || (buf == NULL && len > 0))
        return WF_EINVAL;
    msgpack_unpacked res;
    int rc = wf__msgpack_unpack(buf, len, &res, used, message);
    if (rc < 0)
        return rc;
    rc = wf__msgpack_convert(&res.data, out, message);
    msgpack_unpacked_destroy(&res);
    return rc;
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
    msgpack_unpacked res;
    int rc = wf__msgpack_unpack(buf, len, &res, used, message);
    if (rc < 0)
        return rc;
    const msgpack_object *o = &res.data;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
        o->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
        o->via.array.ptr[1].type != MSGPACK_OBJECT_MAP || o->via.array.ptr[0].via.str.size == 0 ||
        o->via.array.ptr[0].via.str.size > 255) {
        msgpack_unpacked_destroy(&res);
        return fail(message, 0, "an event is [type name, {fields}]");
    }
    char name[256];
    memcpy(name, o->via.array.ptr[0].via.str.ptr, o->via.array.ptr[0].via.str.size);
    name[o->via.array.ptr[0].via.str.size] = 0;
    const wf_event_type *t = wf_registry_find(reg, name);
    if (t == NULL) {
        msgpack_unpacked_destroy(&res);
        if (message) {
            char m[320];
            snprintf(m, sizeof m, "unknown event type '%s'", name);
            *message = wf__strdup(m);
        }
        return WF_ENOTFOUND;
    }
    wf_event *ev;
    rc = wf__event_from_object(t, &o->via.array.ptr[1], &ev, message);
    msgpack_unpacked_destroy(&res);
    if (rc < 0)
        return rc;
    *out = ev;
    return 0;
}

int wf__event_from_object(const wf_event_type *t, const msgpack_object *fields, wf_event **out,
                          char **message)
{
    *out = NULL;
    if (fields->type != MSGPACK_OBJECT_MAP)
        return fail(message, 0, "an event's fields are a map");
    const msgpack_object_map *m = &fields->via.map;
    wf_event *ev;
    int rc = wf_event_new(&ev, t, m->size);
    for (uint32_t i = 0; rc == 0 && i < m->size; i++) {
        const msgpack_object_str *k = &m->ptr[i].key.via.str;
        if (m->ptr[i].key.type != MSGPACK_OBJECT_STR || k->size == 0 || k->size > 255 ||
            memchr(k->ptr, 0, k->size)) {
            rc = fail(message, 0, "bad field name");
            break;
        }
        char key[256];
        memcpy(key, k->ptr, k->size);
        key[k->size] = 0;
        if (wf_event_has(ev, key)) {
            rc = fail(message, 0, "duplicate field");
            break;
        }
        wf_value v;
        rc = wf__msgpack_convert(&m->ptr[i].val, &v, message);
        if (rc == 0)
            rc = wf_event_set(ev, key, v);
    }
    if (rc < 0) {
        wf_event_release(ev);
        return rc;
    }
    *out = ev;
    return 0;
}
