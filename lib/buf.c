/*
 * buf.c: a growable string for messages and graph text.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

void wf__buf_init(wf__buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->oom = 0;
}

void wf__buf_free(wf__buf *b)
{
    wf__free_mem(b->data);
    wf__buf_init(b);
}

static int reserve(wf__buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *d = wf__realloc(b->data, cap);
    if (d == NULL) {
        b->oom = 1;
        b->cap =
            b->len + 1 < b->cap ? b->len + 1 : b->cap; /* the inline path appends nothing more */
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void wf__buf_append_slow(wf__buf *b, const char *s, size_t n)
{
    if (reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void wf__buf_puts(wf__buf *b, const char *s)
{
    wf__buf_append(b, s, strlen(s));
}

void wf__buf_u64(wf__buf *b, uint64_t v)
{
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930"
                                   "31323334353637383940414243444546474849505152535455565758596061"
                                   "62636465666768697071727374757677787980818283848586878889909192"
                                   "93949596979899";
    char tmp[20];
    size_t i = sizeof tmp;
    while (v >= 100) { /* two digits per division */
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        tmp[--i] = pairs[d + 1];
        tmp[--i] = pairs[d];
    }
    if (v >= 10) {
        tmp[--i] = pairs[v * 2 + 1];
        tmp[--i] = pairs[v * 2];
    } else {
        tmp[--i] = (char)('0' + v);
    }
    wf__buf_append(b, tmp + i, sizeof tmp - i);
}

void wf__buf_i64(wf__buf *b, int64_t v)
{
    if (v < 0) {
        wf__buf_lit(b, "-");
        wf__buf_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        wf__buf_u64(b, (uint64_t)v);
    }
}

void wf__buf_printf(wf__buf *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[256];
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        wf__buf_append(b, tmp, (size_t)n);
        return;
    }
    if (reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

int wf__buf_take(wf__buf *b, char **out)
{
    /* Reports are built line by line; the text handed out has no final newline. */
    while (!b->oom && b->len > 0 && b->data[b->len - 1] == '\n')
        b->data[--b->len] = 0;
    if (b->oom) {
        wf__buf_free(b);
        *out = NULL;
        return WF_ENOMEM;
    }
    if (b->data == NULL) {
        b->data = wf__malloc(1);
        if (b->data == NULL) {
            *out = NULL;
            return WF_ENOMEM;
        }
        b->data[0] = 0;
    }
    *out = b->data;
    wf__buf_init(b);
    return 0;
}
