#!/bin/sh
# check_graph_dot.sh PROGRAM: graph_names' DOT, rendered by graphviz (dot
# -Tsvg) without a warning, draws every name exactly as given (invalid
# UTF-8 as U+FFFD). Skipped (77) without dot or python3.
set -eu
prog="$1"
command -v dot >/dev/null 2>&1 || { echo "graphviz (dot) not found: skipped"; exit 77; }
command -v python3 >/dev/null 2>&1 || { echo "python3 not found: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$prog" "$tmp/g.dot" "$tmp/g.mmd" "$tmp/want.json"
dot -Tsvg "$tmp/g.dot" -o "$tmp/g.svg" 2> "$tmp/err" || { cat "$tmp/err"; echo "FAIL: dot refused"; exit 1; }
[ ! -s "$tmp/err" ] || { cat "$tmp/err"; echo "FAIL: dot warned"; exit 1; }
python3 - "$tmp/g.svg" "$tmp/want.json" <<'PY'
import json, sys
import xml.etree.ElementTree as ET
ns = {"s": "http://www.w3.org/2000/svg"}
svg = ET.parse(sys.argv[1]).getroot()
want = json.load(open(sys.argv[2], encoding="utf-8"))
seen = {}
for g in svg.iter("{http://www.w3.org/2000/svg}g"):
    if g.get("class") != "node":
        continue
    title = g.find("s:title", ns).text
    seen[title] = "\n".join(t.text or "" for t in g.findall("s:text", ns))
bad = 0
for node, w in want.items():
    got = seen.get(node)
    if got != w["dot"]:
        print("FAIL: %s drawn as %r, want %r" % (node, got, w["dot"]))
        bad = 1
sys.exit(bad)
PY
echo "ok: graphviz draws every hostile name exactly"
