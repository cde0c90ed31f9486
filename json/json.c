/*
 * json.c: events and values <-> JSON (include/wf/json.h). Parsing goes
 * through jansson (json_loadb, then a walk of its tree); writing is a
 * direct append of the wf_value tree, because building a jansson tree only
 * to dump it would double the work of every output line.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_internal.h"

#include <wf/schema.h>

/* ------------------------------------------------------------------ buffer */

void wf_json_buf_init(wf_json_buf *b)
{
    memset(b, 0, sizeof *b);
}

void wf_json_buf_free(wf_json_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void wf_json_buf_reset(wf_json_buf *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->data)
        b->data[0] = 0;
}

static int grow(wf_json_buf *b, size_t need)
{
    if (b->oom)
        return WF_ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + need + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return WF_ENOMEM;
        }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (d == NULL) {
        b->oom = 1;
        return WF_ENOMEM;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Room for n more bytes and the NUL. */
static inline int reserve(wf_json_buf *b, size_t n)
{
    if (__builtin_expect(b->len + n < b->cap, 1))
        return 0;
    return grow(b, n);
}

static inline int put(wf_json_buf *b, const char *s, size_t n)
{
    if (reserve(b, n) < 0)
        return WF_ENOMEM;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

#define PUT_LIT(b, s) put((b), "" s, sizeof(s) - 1)

int wf_json_buf_append(wf_json_buf *b, const char *s, size_t len)
{
    return put(b, s, len);
}

/* ----------------------------------------------------------------- writing */

/* Length of the well-formed UTF-8 sequence at s (n bytes left), 0 if malformed. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (n >= 2 && (s[1] & 0xc0) == 0x80) ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
            return 0; /* overlong, surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

/*
 * Whether none of the 8 bytes in x needs escaping or is outside ASCII:
 * none is below 0x20, '"', '\\' or 0x80 and up (the exact "has a byte
 * less than n" and "has a zero byte" word tests).
 */
static inline int plain8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), k = x ^ (ones * '\\');
    uint64_t bad = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((k - ones) & ~k) | x;
    return (bad & high) == 0;
}

int wf_json_write_string(wf_json_buf *b, const char *str, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    /* worst case: every byte becomes \u00XX (6) or U+FFFD (3) */
    if (len > (SIZE_MAX - 3) / 6 || reserve(b, len * 6 + 2) < 0)
        return WF_ENOMEM;
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < len) {
        /* 8 bytes at a time while none needs escaping or is past ASCII (most text) */
        while (i + 8 <= len) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (!plain8(x))
                break;
            memcpy(o, &x, 8);
            o += 8;
            i += 8;
        }
        if (i == len)
            break;
        unsigned c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_len(s + i, len - i);
            if (k == 0) {
                memcpy(o, "\xef\xbf\xbd", 3);
                o += 3;
                i++;
            } else {
                memcpy(o, s + i, k);
                o += k;
                i += k;
            }
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
        i++;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
    return 0;
}

static int put_u64(wf_json_buf *b, uint64_t v)
{
    char tmp[24];
    char *e = tmp + sizeof tmp, *p = e;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put(b, p, (size_t)(e - p));
}

static int put_i64(wf_json_buf *b, int64_t v)
{
    if (v >= 0)
        return put_u64(b, (uint64_t)v);
    if (PUT_LIT(b, "-") < 0)
        return WF_ENOMEM;
    return put_u64(b, (uint64_t)0 - (uint64_t)v);
}

static int put_double(wf_json_buf *b, double d)
{
    if (!isfinite(d))
        return PUT_LIT(b, "null");
    char tmp[40];
    int n = snprintf(tmp, sizeof tmp, "%.17g", d);
    /* shortest form that reads back to the same double */
    for (int prec = 1; prec < 17; prec++) {
        char t2[40];
        int n2 = snprintf(t2, sizeof t2, "%.*g", prec, d);
        if (strtod(t2, NULL) == d) {
            memcpy(tmp, t2, (size_t)n2 + 1);
            n = n2;
            break;
        }
    }
    if (strpbrk(tmp, ".eEn") == NULL) { /* keep it a double on the way back */
        tmp[n++] = '.';
        tmp[n++] = '0';
        tmp[n] = 0;
    }
    return put(b, tmp, (size_t)n);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int put_base64(wf_json_buf *b, const unsigned char *p, size_t n)
{
    if (n > SIZE_MAX / 2 || reserve(b, (n + 2) / 3 * 4 + 2) < 0)
        return WF_ENOMEM;
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
    return 0;
}

static int is_tag_key(const char *k, size_t n)
{
    return (n == 6 && memcmp(k, "$bytes", 6) == 0) || (n == 5 && memcmp(k, "$uint", 5) == 0) ||
           (n == 4 && memcmp(k, "$map", 4) == 0);
}

static int write_value(wf_json_buf *b, wf_value v, int depth);

static int write_map_body(wf_json_buf *b, wf_value v, int depth)
{
    size_t n = wf_value_len(v);
    if (PUT_LIT(b, "{") < 0)
        return WF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *k;
        size_t kl;
        wf_value item;
        wf_value_map_at(v, i, &k, &kl, &item);
        int rc;
        if ((i && PUT_LIT(b, ",") < 0) || wf_json_write_string(b, k, kl) < 0 || PUT_LIT(b, ":") < 0)
            return WF_ENOMEM;
        if ((rc = write_value(b, item, depth + 1)) < 0)
            return rc;
    }
    return PUT_LIT(b, "}");
}

static int write_value(wf_json_buf *b, wf_value v, int depth)
{
    switch (wf_value_kind(v)) {
    case WF_NIL:
        return PUT_LIT(b, "null");
    case WF_BOOL:
        return v.as.b ? PUT_LIT(b, "true") : PUT_LIT(b, "false");
    case WF_INT:
        return put_i64(b, v.as.i);
    case WF_UINT:
        if (v.as.u <= (uint64_t)INT64_MAX)
            return put_u64(b, v.as.u);
        if (PUT_LIT(b, "{\"$uint\":\"") < 0 || put_u64(b, v.as.u) < 0)
            return WF_ENOMEM;
        return PUT_LIT(b, "\"}");
    case WF_DOUBLE:
        return put_double(b, v.as.d);
    case WF_STRING: {
        const char *s;
        size_t n;
        wf_value_get_string(v, &s, &n);
        return wf_json_write_string(b, s, n);
    }
    case WF_BYTES: {
        const void *p;
        size_t n;
        wf_value_get_bytes(v, &p, &n);
        if (PUT_LIT(b, "{\"$bytes\":") < 0 || put_base64(b, p, n) < 0)
            return WF_ENOMEM;
        return PUT_LIT(b, "}");
    }
    case WF_ARRAY: {
        if (depth >= WF_JSON_MAX_DEPTH)
            return WF_EINVAL;
        size_t n = wf_value_len(v);
        if (PUT_LIT(b, "[") < 0)
            return WF_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            wf_value item;
            wf_value_array_at(v, i, &item);
            int rc;
            if (i && PUT_LIT(b, ",") < 0)
                return WF_ENOMEM;
            if ((rc = write_value(b, item, depth + 1)) < 0)
                return rc;
        }
        return PUT_LIT(b, "]");
    }
    case WF_MAP: {
        if (depth >= WF_JSON_MAX_DEPTH)
            return WF_EINVAL;
        const char *k;
        size_t kl;
        wf_value item;
        if (wf_value_len(v) == 1 && wf_value_map_at(v, 0, &k, &kl, &item) == 0 &&
            is_tag_key(k, kl)) {
            int rc;
            if (PUT_LIT(b, "{\"$map\":") < 0)
                return WF_ENOMEM;
            if ((rc = write_map_body(b, v, depth + 1)) < 0)
                return rc;
            return PUT_LIT(b, "}");
        }
        return write_map_body(b, v, depth);
    }
    }
    return WF_EINVAL;
}

int wf_json_write_value(wf_json_buf *b, wf_value v)
{
    size_t mark = b->len;
    int rc = write_value(b, v, 0);
    if (rc < 0 && !b->oom) { /* take back a partial document */
        b->len = mark;
        if (b->data)
            b->data[mark] = 0;
    }
    return rc;
}

int wf_json_write_fields(wf_json_buf *b, const wf_event *ev)
{
    size_t mark = b->len, n = wf_event_field_count(ev);
    int rc = PUT_LIT(b, "{");
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *k;
        wf_value v;
        wf_event_field_at(ev, i, &k, &v);
        if ((i && PUT_LIT(b, ",") < 0) || wf_json_write_string(b, k, strlen(k)) < 0 ||
            PUT_LIT(b, ":") < 0)
            rc = WF_ENOMEM;
        else
            rc = write_value(b, v, 1);
    }
    if (rc == 0)
        rc = PUT_LIT(b, "}");
    if (rc < 0 && !b->oom) {
        b->len = mark;
        if (b->data)
            b->data[mark] = 0;
    }
    return rc;
}

int wf_json_write_event(wf_json_buf *b, const wf_event *ev)
{
    size_t mark = b->len;
    const char *name = wf_event_type_name_of(ev);
    int rc = 0;
    if (PUT_LIT(b, "{\"type\":") < 0 || wf_json_write_string(b, name, strlen(name)) < 0 ||
        PUT_LIT(b, ",\"value\":") < 0)
        rc = WF_ENOMEM;
    if (rc == 0)
        rc = wf_json_write_fields(b, ev);
    if (rc == 0)
        rc = PUT_LIT(b, "}");
    if (rc < 0 && !b->oom) {
        b->len = mark;
        if (b->data)
            b->data[mark] = 0;
    }
    return rc;
}

/* ----------------------------------------------------------------- reading */

void wf_json_free_message(char *message)
{
    free(message);
}

int wf__json_msg(char **message, const char *fmt, ...)
{
    if (message) {
        char tmp[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        free(*message);
        *message = strdup(tmp);
    }
    return WF_EFORMAT;
}

static int b64_val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes padded base64 into a new bytes value. */
static int decode_base64(const char *s, size_t n, wf_value *out)
{
    if (n % 4 != 0)
        return WF_EFORMAT;
    size_t pad = 0;
    if (n >= 1 && s[n - 1] == '=')
        pad++;
    if (n >= 2 && s[n - 2] == '=')
        pad++;
    size_t olen = n / 4 * 3 - pad;
    unsigned char stack[256] = {0};
    unsigned char *o = olen <= sizeof stack ? stack : malloc(olen);
    if (o == NULL)
        return WF_ENOMEM;
    size_t w = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            int c = (unsigned char)s[i + k];
            if (c == '=' && i + 4 == n && k >= 4 - (int)pad) {
                v[k] = 0;
            } else if ((v[k] = b64_val(c)) < 0) {
                if (o != stack)
                    free(o);
                return WF_EFORMAT;
            }
        }
        uint32_t x =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        unsigned char t[3] = {(unsigned char)(x >> 16), (unsigned char)(x >> 8), (unsigned char)x};
        for (int k = 0; k < 3 && w < olen; k++)
            o[w++] = t[k];
    }
    int rc = wf_value_bytes(out, o, olen);
    if (o != stack)
        free(o);
    return rc;
}

/* A uint from a decimal string with no sign, no spaces. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (*s == 0)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int from_j(const json_t *j, wf_value *out, int depth, const char *where, char **message);

static int object_to_map(const json_t *j, wf_value *out, int depth, const char *where,
                         char **message)
{
    int rc = wf_value_map_new(out, json_object_size(j));
    if (rc < 0)
        return rc;
    const char *k;
    json_t *item;
    void *it = json_object_iter((json_t *)j);
    for (; it; it = json_object_iter_next((json_t *)j, it)) {
        k = json_object_iter_key(it);
        item = json_object_iter_value(it);
        size_t kl = json_object_iter_key_len(it);
        wf_value v;
        if ((rc = from_j(item, &v, depth + 1, k, message)) < 0 ||
            (rc = wf_value_map_set_n(out, k, kl, v)) < 0) {
            wf_value_release(*out);
            return rc;
        }
    }
    (void)where;
    return 0;
}

static int from_j(const json_t *j, wf_value *out, int depth, const char *where, char **message)
{
    switch (json_typeof(j)) {
    case JSON_NULL:
        *out = wf_value_nil();
        return 0;
    case JSON_TRUE:
        *out = wf_value_bool(1);
        return 0;
    case JSON_FALSE:
        *out = wf_value_bool(0);
        return 0;
    case JSON_INTEGER:
        *out = wf_value_int((int64_t)json_integer_value(j));
        return 0;
    case JSON_REAL:
        *out = wf_value_double(json_real_value(j));
        return 0;
    case JSON_STRING:
        return wf_value_string_n(out, json_string_value(j), json_string_length(j));
    case JSON_ARRAY: {
        if (depth >= WF_JSON_MAX_DEPTH)
            return wf__json_msg(message, "'%s': nested deeper than %d levels", where,
                                WF_JSON_MAX_DEPTH);
        size_t n = json_array_size(j);
        int rc = wf_value_array_new(out, n);
        for (size_t i = 0; i < n && rc == 0; i++) {
            wf_value v;
            if ((rc = from_j(json_array_get(j, i), &v, depth + 1, where, message)) == 0)
                rc = wf_value_array_push(out, v);
            if (rc < 0)
                wf_value_release(*out);
        }
        return rc;
    }
    case JSON_OBJECT: {
        if (depth >= WF_JSON_MAX_DEPTH)
            return wf__json_msg(message, "'%s': nested deeper than %d levels", where,
                                WF_JSON_MAX_DEPTH);
        if (json_object_size(j) == 1) {
            void *it = json_object_iter((json_t *)j);
            const char *k = json_object_iter_key(it);
            const json_t *t = json_object_iter_value(it);
            if (strcmp(k, "$bytes") == 0) {
                if (!json_is_string(t))
                    return wf__json_msg(message, "'%s': $bytes needs a base64 string", where);
                int rc = decode_base64(json_string_value(t), json_string_length(t), out);
                if (rc == WF_EFORMAT)
                    return wf__json_msg(message, "'%s': $bytes is not padded base64", where);
                return rc;
            }
            if (strcmp(k, "$uint") == 0) {
                uint64_t u;
                if (json_is_integer(t) && json_integer_value(t) >= 0) {
                    *out = wf_value_uint((uint64_t)json_integer_value(t));
                    return 0;
                }
                if (json_is_string(t) && parse_u64(json_string_value(t), &u) == 0) {
                    *out = wf_value_uint(u);
                    return 0;
                }
                return wf__json_msg(message,
                                    "'%s': $uint needs a decimal string from 0 to "
                                    "18446744073709551615",
                                    where);
            }
            if (strcmp(k, "$map") == 0) {
                if (!json_is_object(t))
                    return wf__json_msg(message, "'%s': $map needs an object", where);
                return object_to_map(t, out, depth + 1, where, message);
            }
        }
        return object_to_map(j, out, depth, where, message);
    }
    }
    return wf__json_msg(message, "'%s': unknown JSON type", where);
}

int wf__json_to_value(const json_t *j, wf_value *out, char **message)
{
    return from_j(j, out, 0, "(top)", message);
}

json_t *wf__json_load(const char *text, size_t len, char **message)
{
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
    if (j == NULL) {
        if (strstr(err.text, "too big integer"))
            wf__json_msg(message,
                         "line %d column %d: %s (integers run from -2^63 to 2^63-1; write "
                         "{\"$uint\": \"N\"} for larger unsigned ones)",
                         err.line, err.column, err.text);
        else
            wf__json_msg(message, "line %d column %d: %s", err.line, err.column, err.text);
    }
    return j;
}

int wf_json_parse_value(const char *text, size_t len, wf_value *out, char **message)
{
    if (message)
        *message = NULL;
    if (text == NULL || out == NULL)
        return WF_EINVAL;
    json_t *j = wf__json_load(text, len, message);
    if (j == NULL)
        return WF_EFORMAT;
    int rc = wf__json_to_value(j, out, message);
    json_decref(j);
    return rc;
}

int wf__json_event_fields(const json_t *obj, const wf_event_type *type, wf_event **out,
                          char **message)
{
    if (!json_is_object(obj))
        return wf__json_msg(message, "an event's fields must be a JSON object");
    int rc = wf_event_new(out, type, json_object_size(obj));
    if (rc < 0)
        return rc;
    void *it = json_object_iter((json_t *)obj);
    for (; it; it = json_object_iter_next((json_t *)obj, it)) {
        const char *k = json_object_iter_key(it);
        if (k[0] == 0 || json_object_iter_key_len(it) != strlen(k)) {
            wf_event_release(*out);
            *out = NULL;
            return wf__json_msg(message, "a field name must be a non-empty string without NUL");
        }
        wf_value v;
        if ((rc = from_j(json_object_iter_value(it), &v, 1, k, message)) < 0) {
            wf_event_release(*out);
            *out = NULL;
            return rc;
        }
        if ((rc = wf_event_set(*out, k, v)) < 0) {
            /* the type's schema (schema.h) refused the field's kind: its message names it */
            if (rc != WF_ENOMEM)
                wf__json_msg(message, "%s", wf_last_error_message());
            wf_event_release(*out);
            *out = NULL;
            return rc;
        }
    }
    /* required fields and defaults, as at emission */
    if ((rc = wf_event_check(*out)) < 0) {
        if (rc != WF_ENOMEM)
            wf__json_msg(message, "%s", wf_last_error_message());
        wf_event_release(*out);
        *out = NULL;
        return rc;
    }
    return 0;
}

int wf__json_event_envelope(const wf_registry *reg, const json_t *j, wf_event **out, char **message)
{
    if (!json_is_object(j))
        return wf__json_msg(message,
                            "an event must be a JSON object {\"type\": ..., \"value\": {...}}");
    const json_t *t = json_object_get(j, "type");
    if (!json_is_string(t))
        return wf__json_msg(message, "an event needs a string member \"type\"");
    const wf_event_type *type = wf_registry_find(reg, json_string_value(t));
    if (type == NULL) {
        wf__json_msg(message, "unknown event type '%s'", json_string_value(t));
        return WF_ENOTFOUND;
    }
    const json_t *v = json_object_get(j, "value");
    json_t *empty = NULL;
    if (v == NULL)
        v = empty = json_object();
    int rc = wf__json_event_fields(v, type, out, message);
    json_decref(empty);
    return rc;
}

int wf_json_parse_event(const wf_registry *reg, const char *text, size_t len, wf_event **out,
                        char **message)
{
    if (message)
        *message = NULL;
    if (reg == NULL || text == NULL || out == NULL)
        return WF_EINVAL;
    *out = NULL;
    json_t *j = wf__json_load(text, len, message);
    if (j == NULL)
        return WF_EFORMAT;
    int rc = wf__json_event_envelope(reg, j, out, message);
    json_decref(j);
    return rc;
}

int wf__json_start(wf_workflow *wf, const json_t *j, wf_event **out, char **message)
{
    int rc = wf_workflow_freeze(wf, NULL);
    if (rc < 0)
        return rc;
    const wf_event_type *st = wf_workflow_start_type(wf);
    if (!json_is_object(j))
        return wf__json_msg(message, "the input must be a JSON object (the start event's fields)");
    if (json_object_size(j) == 2 && json_is_string(json_object_get(j, "type")) &&
        json_is_object(json_object_get(j, "value"))) {
        rc = wf__json_event_envelope(wf_workflow_registry(wf), j, out, message);
        if (rc == 0 && !wf_event_type_is(wf_event_type_of(*out), st)) {
            wf__json_msg(message, "event type '%s' is not the start type '%s' of workflow '%s'",
                         wf_event_type_name_of(*out), wf_event_type_name(st), wf_workflow_name(wf));
            wf_event_release(*out);
            *out = NULL;
            return WF_ETYPE;
        }
        return rc;
    }
    return wf__json_event_fields(j, st, out, message);
}

int wf_json_parse_start(wf_workflow *wf, const char *text, size_t len, wf_event **out,
                        char **message)
{
    if (message)
        *message = NULL;
    if (wf == NULL || text == NULL || out == NULL)
        return WF_EINVAL;
    *out = NULL;
    json_t *j = wf__json_load(text, len, message);
    if (j == NULL)
        return WF_EFORMAT;
    int rc = wf__json_start(wf, j, out, message);
    json_decref(j);
    return rc;
}
