/*
 * test_text.c: the library's one hash, UTF-8 decoder and JSON string
 * escaper (lib/text.c), and a check that no other copy came back.
 */
#include "harness.h"

#include <string.h>

#include "text.h"

static size_t u8(const char *s)
{
    return wf__utf8_len((const unsigned char *)s, strlen(s));
}

Test(text, utf8_decoder_follows_rfc3629)
{
    cr_assert_eq(u8("a"), 1);
    cr_assert_eq(u8("\xc3\xa9"), 2);         /* é */
    cr_assert_eq(u8("\xe2\x82\xac"), 3);     /* € */
    cr_assert_eq(u8("\xf0\x9f\x98\x80"), 4); /* 😀 */
    cr_assert_eq(u8("\xc0\xaf"), 0);         /* overlong '/' */
    cr_assert_eq(u8("\xe0\x80\xaf"), 0);     /* overlong */
    cr_assert_eq(u8("\xed\xa0\x80"), 0);     /* surrogate D800 */
    cr_assert_eq(u8("\xf4\x90\x80\x80"), 0); /* past U+10FFFF */
    cr_assert_eq(u8("\xff"), 0);
    cr_assert_eq(u8("\x80"), 0); /* a lone continuation byte */
    /* Truncated: by the length, and by a NUL with an unbounded length. */
    cr_assert_eq(wf__utf8_len((const unsigned char *)"\xe2\x82\xac", 2), 0);
    cr_assert_eq(wf__utf8_len((const unsigned char *)"\xe2\x82", SIZE_MAX), 0);
    cr_assert_eq(wf__utf8_len((const unsigned char *)"", 0), 0);
}

typedef struct out {
    char buf[256];
    size_t len;
} out;

static void sink(void *ctx, const char *p, size_t n)
{
    out *o = ctx;
    cr_assert(o->len + n < sizeof o->buf);
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->buf[o->len] = 0;
}

static const char *esc(const char *s, size_t n)
{
    static out o;
    o.len = 0;
    o.buf[0] = 0;
    wf__json_escape(s, n, sink, &o);
    return o.buf;
}

Test(text, json_escaper)
{
    cr_assert_str_eq(esc("plain", 5), "plain");
    cr_assert_str_eq(esc("a\"b\\c", 5), "a\\\"b\\\\c");
    cr_assert_str_eq(esc("\n\r\t\x01\x7f", 5), "\\n\\r\\t\\u0001\\u007f");
    cr_assert_str_eq(esc("a\0b", 3), "a\\u0000b"); /* embedded NUL: the length decides */
    cr_assert_str_eq(esc("\xc3\xa9\xff!", 4), "\xc3\xa9\\ufffd!");
    cr_assert_str_eq(esc("\xe2\x82", 2), "\\ufffd\\ufffd"); /* truncated sequence */
}

Test(text, hash_is_fnv1a_64)
{
    /* The published FNV-1a 64 test vectors. */
    cr_assert_eq(wf__hash("", 0), 0xcbf29ce484222325ull);
    cr_assert_eq(wf__hash("a", 1), 0xaf63dc4c8601ec8cull);
    cr_assert_eq(wf__hash("foobar", 6), 0x85944171f73967e8ull);
    cr_assert_eq(wf__hash_update(wf__hash("foo", 3), "bar", 3), wf__hash("foobar", 6));
    uint64_t h = wf__hash("foobar", 6);
    cr_assert_eq(wf__hash32("foobar", 6), (uint32_t)(h ^ (h >> 32)));
}
