#!/bin/sh
# test_wf_snapshot.sh TOOL SAMPLE: the wf-snapshot tool on a live snapshot
# that SAMPLE (snapshot_sample.c) writes: its JSON parses (python3 -m
# json.tool) and says what the run held, 64-bit integers exact; standard
# input works; bad input exits 1 with the library's message, usage exits 2.
# The fingerprint is a decimal string that jq reads exactly (above 2^53).
# Skipped (77) without python3 or jq.
set -eu
tool="$1"; sample="$2"
command -v python3 >/dev/null 2>&1 || { echo "python3 not found: skipped"; exit 77; }
command -v jq >/dev/null 2>&1 || { echo "jq not found: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

fp=$("$sample" "$tmp/run.snap")
"$tool" "$tmp/run.snap" > "$tmp/run.json"
# The fingerprint: an identifier, exact through jq (its numbers are doubles).
[ "$(jq -r '.fingerprint | type' "$tmp/run.json")" = string ] || fail "fingerprint is not a string"
[ "$(jq -r .fingerprint "$tmp/run.json")" = "$fp" ] ||
  fail "jq reads fingerprint $(jq -r .fingerprint "$tmp/run.json"), the workflow's is $fp"
[ "$fp" -gt 9007199254740992 ] || echo "note: this fingerprint ($fp) is below 2^53"
python3 -m json.tool "$tmp/run.json" > /dev/null || fail "json.tool refused the output"
python3 - "$tmp/run.json" <<'PY'
import base64, json, sys
doc = json.load(open(sys.argv[1]))
assert doc["magic"] == "wf-snapshot" and doc["version"] == 4, doc
assert doc["workflow"] == "Sample" and doc["running"] is True, doc
assert doc["state"] == {"nested": {"depth": 2}, "pi": 3.25}, doc["state"]
run = doc["run"]
assert run["steps"] == ["start", "work"], run["steps"]
tasks = run["tasks"]
# the held event is in progress, the other four queued behind it, in order
assert [t[2]["i"] for t in tasks] == [0, 1, 2, 3, 4], tasks
assert len(tasks[0]) >= 4 and tasks[0][3] == 1, tasks[0]
assert run["counters"]["in_progress"] == 1 and run["counters"]["queued"] == 4, run["counters"]
f = tasks[4][2]
assert f["max"] == 18446744073709551615 and f["min"] == -9223372036854775808, f
assert base64.b64decode(f["raw"]) == bytes([0, 255, 4]), f
assert f["text"] == "caf\u00e9 \"quoted\"\n", f
assert run["types"][tasks[0][1]] == "Work", run["types"]
PY
"$tool" - < "$tmp/run.snap" | cmp -s - "$tmp/run.json" || fail "standard input printed otherwise"

# a truncated snapshot: 1, and the library says where
head -c 40 "$tmp/run.snap" > "$tmp/bad.snap"
set +e
"$tool" "$tmp/bad.snap" > "$tmp/out" 2> "$tmp/err"; st=$?
set -e
[ "$st" -eq 1 ] || fail "truncated input exited $st"
grep -q "malformed msgpack at offset" "$tmp/err" || fail "no library message: $(cat "$tmp/err")"
[ ! -s "$tmp/out" ] || fail "printed something for bad input"
# msgpack that is not a snapshot: 1
printf '\201\241k\001' > "$tmp/map.bin"
set +e
"$tool" "$tmp/map.bin" 2> "$tmp/err"; st=$?
set -e
[ "$st" -eq 1 ] && grep -q "not a wf snapshot" "$tmp/err" || fail "a non-snapshot exited $st"
# a file that is not there: 1; usage: 2
set +e
"$tool" "$tmp/missing" 2> /dev/null; st1=$?
"$tool" 2> /dev/null; st2=$?
"$tool" a b 2> /dev/null; st3=$?
set -e
[ "$st1" -eq 1 ] || fail "a missing file exited $st1"
[ "$st2" -eq 2 ] && [ "$st3" -eq 2 ] || fail "usage exited $st2 and $st3"
echo "ok: wf-snapshot prints a live snapshot as JSON; errors exit 1, usage 2"
