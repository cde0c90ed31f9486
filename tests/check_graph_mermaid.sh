#!/bin/sh
# check_graph_mermaid.sh PROGRAM NODE_MODULES: graph_names' Mermaid read by
# Mermaid's parser (tests/mermaid/check_mermaid.mjs). Skipped (77) without
# node or without the mermaid and jsdom packages in NODE_MODULES
# (scripts/test installs them).
set -eu
prog="$1"; nm="$2"
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null 2>&1 || { echo "node not found: skipped"; exit 77; }
[ -f "$nm/mermaid/dist/mermaid.core.mjs" ] && [ -d "$nm/jsdom" ] ||
  { echo "mermaid/jsdom not installed in $nm (scripts/test installs them): skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$prog" "$tmp/g.dot" "$tmp/g.mmd" "$tmp/want.json"
node "$here/mermaid/check_mermaid.mjs" "$nm" "$tmp/g.mmd" "$tmp/want.json"
