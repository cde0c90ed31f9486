#!/bin/sh
# check_headers.sh SRC_INCLUDE BUILD_INCLUDE CC [CXX]
# Each public header alone, and wf.h, must compile as strict C99 and C11
# (-pedantic -Werror) and as C++11 (-pedantic -Werror). CXX may be absent
# ("" or missing from PATH): the C++ half is then skipped (exit 77 if it
# was the only half left).
set -eu
inc="$1"; binc="$2"; cc="$3"; cxx="${4:-}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for h in "$inc"/wf/*.h "$binc"/wf/version.h; do
  name=$(basename "$h")
  printf '#include <wf/%s>\ntypedef int translation_unit_not_empty;\n' "$name" > "$tmp/h.c"
  for std in c99 c11; do
    if ! $cc -std=$std -pedantic -Wall -Wextra -Werror -I"$inc" -I"$binc" -fsyntax-only "$tmp/h.c"; then
      echo "FAIL: $name as $std"; fail=1
    fi
  done
  if [ -n "$cxx" ] && command -v "$cxx" >/dev/null 2>&1; then
    if ! "$cxx" -std=c++11 -pedantic -Wall -Wextra -Werror -I"$inc" -I"$binc" -fsyntax-only -x c++ "$tmp/h.c"; then
      echo "FAIL: $name as C++11"; fail=1
    fi
  fi
done
[ "$fail" -eq 0 ] || exit 1
if [ -z "$cxx" ] || ! command -v "$cxx" >/dev/null 2>&1; then
  echo "ok: headers compile as C99 and C11; no C++ compiler, C++ not checked"
  exit 0
fi
echo "ok: every header compiles alone as C99, C11 and C++11 (-pedantic -Werror)"
