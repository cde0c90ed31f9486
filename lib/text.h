/*
 * text.h: the library's one hash function, one UTF-8 decoder and one JSON
 * string escaper (lib/text.c), shared by lib/, serialize/, executor/ and
 * observe/. Never installed.
 */
#ifndef WF_TEXT_H
#define WF_TEXT_H

#include <stddef.h>
#include <stdint.h>

/*
 * FNV-1a, 64 bits: in-memory hash tables (value maps, the decoder's key
 * sets, the exporters' string pools) and the workflow fingerprint. Inline:
 * value maps hash every key they look up. wf__hash_update continues a hash
 * (start from WF__HASH_INIT); wf__hash32 folds it for 32-bit tables.
 */
#define WF__HASH_INIT 14695981039346656037ull

static inline uint64_t wf__hash_update(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static inline uint64_t wf__hash(const void *p, size_t n)
{
    return wf__hash_update(WF__HASH_INIT, p, n);
}

static inline uint32_t wf__hash32(const void *p, size_t n)
{
    uint64_t h = wf__hash(p, n);
    return (uint32_t)(h ^ (h >> 32));
}

/*
 * Bytes of the well-formed UTF-8 sequence at p, of which avail bytes may be
 * read (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF):
 * 1 to 4, or 0 if p does not start one. It reads no further than the first
 * byte that breaks the sequence, so for a NUL-terminated string avail may
 * be SIZE_MAX (the NUL is never a continuation byte).
 */
size_t wf__utf8_len(const unsigned char *p, size_t avail);

/*
 * Writes s[0..n) as the inside of a JSON string (RFC 8259), without the
 * quotes, through put(ctx, bytes, len) (runs of plain bytes in one call):
 * '"' and '\\' escaped, control characters (NUL included) and DEL as \n,
 * \r, \t or \u00XX, and each byte that is not part of well-formed UTF-8 as
 * \ufffd, so a strict parser always reads the result.
 */
typedef void (*wf__put_fn)(void *ctx, const char *p, size_t n);
void wf__json_escape(const char *s, size_t n, wf__put_fn put, void *ctx);

#endif
