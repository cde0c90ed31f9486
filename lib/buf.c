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
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void wf__buf_append(wf__buf *b, const char *s, size_t n)
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
