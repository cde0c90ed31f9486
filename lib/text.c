/*
 * text.c: the UTF-8 decoder and the JSON string escaper of the library (see
 * text.h; the hash is inline there).
 */
#include "text.h"

#include <stdio.h>

size_t wf__utf8_len(const unsigned char *p, size_t avail)
{
    if (avail == 0)
        return 0;
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t k;
    unsigned lo = 0x80, hi = 0xbf; /* the range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        k = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* overlong */
        hi = c == 0xed ? 0x9f : 0xbf; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        lo = c == 0xf0 ? 0x90 : 0x80; /* overlong */
        hi = c == 0xf4 ? 0x8f : 0xbf; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (avail < k || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return k;
}

void wf__json_escape(const char *s, size_t n, wf__put_fn put, void *ctx)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of the bytes copied as they are */
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        const char *esc = NULL;
        char tmp[8];
        size_t k = 1;
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            esc = tmp;
        } else if (c >= 0x80) {
            k = wf__utf8_len(p + i, n - i);
            if (k == 0) {
                esc = "\\ufffd";
                k = 1;
            }
        }
        if (esc) {
            if (i > run)
                put(ctx, s + run, i - run);
            put(ctx, esc, __builtin_strlen(esc));
            i += k;
            run = i;
        } else {
            i += k;
        }
    }
    if (i > run)
        put(ctx, s + run, i - run);
}
