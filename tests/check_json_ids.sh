#!/bin/sh
# check_json_ids.sh PROGRAM: identifiers above 2^53 in the JSON outputs
# (Perfetto trace args, OTLP/JSON attributes) come out of jq exactly: they
# are strings; quantities stay numbers. Skipped (77) without jq.
set -eu
prog="$1"
command -v jq >/dev/null 2>&1 || { echo "jq not found: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$prog" "$tmp/trace.json" "$tmp/otlp.jsonl"

x='.[] | select(.ph == "X" and .name == "work") | .args'
[ "$(jq -r "$x | .event_id" "$tmp/trace.json")" = 18446744073709551615 ] ||
  fail "trace.json event_id: $(jq -c "$x" "$tmp/trace.json")"
[ "$(jq -r "$x | .run_id" "$tmp/trace.json")" = 9007199254740993 ] || fail "trace.json run_id"
[ "$(jq -r "$x | .attempt | type" "$tmp/trace.json")" = number ] || fail "attempt is not a number"
[ "$(jq -r "$x | .event_id | type" "$tmp/trace.json")" = string ] || fail "event_id is not a string"

spans='.resourceSpans[].scopeSpans[].spans[]'
attr() { jq -r "$spans | select(.name == \"$1\") | .attributes[] | select(.key == \"$2\") | .value.$3" "$tmp/otlp.jsonl"; }
[ "$(attr work wf.run_id stringValue)" = 9007199254740993 ] || fail "OTLP step wf.run_id: $(attr work wf.run_id stringValue)"
[ "$(attr Ids wf.run_id stringValue)" = 9007199254740993 ] || fail "OTLP run wf.run_id"
[ "$(attr work wf.attempt intValue)" = 1 ] || fail "OTLP wf.attempt"
res='.resourceSpans[0].resource.attributes[]'
[ "$(jq -r "$res | select(.key == \"service.version\") | .value.stringValue" "$tmp/otlp.jsonl")" = 9.9.9 ] ||
  fail "no service.version"
[ "$(jq -r "$res | select(.key == \"service.name\") | .value.stringValue" "$tmp/otlp.jsonl")" = ids ] ||
  fail "no service.name"
echo "ok: identifiers above 2^53 read exactly by jq in trace.json and OTLP/JSON"
