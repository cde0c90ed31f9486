#!/bin/sh
# check_helpers.sh SRC_DIR: the library has one hash function, one UTF-8
# decoder and one JSON string escaper (lib/text.h, lib/text.c). Fails when a
# copy of one of them appears in another source file.
#   - FNV constants (64- and 32-bit primes and offsets)
#   - UTF-8 decoding: the lead-byte ranges of RFC 3629 (0xc2, 0xf4) or the
#     lead-byte masks (& 0xe0) == 0xc0
#   - JSON escaping: the \u%04x format
set -eu
src="$1"
cd "$src"
files=$(ls lib/*.c lib/*.h serialize/*.c serialize/*.h executor/*.c executor/*.h observe/*.c observe/*.h tools/*.c 2>/dev/null |
        grep -v -e '^lib/text\.[ch]$')
bad=0
check() {
  what="$1"; pattern="$2"
  hits=$(grep -n -E -i "$pattern" $files || true)
  if [ -n "$hits" ]; then
    echo "a second $what outside lib/text.[ch]:"; echo "$hits"; bad=1
  fi
}
check "hash function" '1099511628211|0x100000001b3|16777619|2166136261|14695981039346656037|0xcbf29ce484222325'
check "UTF-8 decoder" '0xc2 *&& *c *<= *0xdf|0xf4\)|& *0xe0\) *== *0xc0|& *0xf8\) *== *0xf0'
check "JSON string escaper" '\\\\u%04x'
[ "$bad" -eq 0 ] || exit 1
echo "ok: one hash, one UTF-8 decoder, one JSON escaper (lib/text.[ch])"
