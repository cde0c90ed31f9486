#!/bin/sh
# check_symbols.sh LIB [MIN]: fails if the shared library exports a symbol
# that is not wf_*, or fewer than MIN (default 10) wf_* symbols.
lib="$1"; min="${2:-10}"
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -v '^wf_' | grep -v '^_' || true)
count=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -c '^wf_')
if [ -n "$bad" ]; then
  echo "exported symbols outside wf_*:"; echo "$bad"; exit 1
fi
if [ "$count" -lt "$min" ]; then
  echo "only $count wf_* symbols exported"; exit 1
fi
echo "ok: $count symbols, all wf_*"
