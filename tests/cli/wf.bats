#!/usr/bin/env bats
# The wf command: every subcommand, every exit code, bad plugins and bad
# input. Run by meson (tests/meson.build sets WF, WF_QS, WF_HITL, WF_TP,
# WF_NOSYM, WF_ABI2, WF_V2, WF_SNAP_SAMPLE, WF_GEN).

bats_require_minimum_version 1.5.0

setup() {
    T="$BATS_TEST_TMPDIR"
}

# ---- the command itself

@test "--version and --help exit 0" {
    run "$WF" --version
    [ "$status" -eq 0 ]
    [[ "$output" == "wf "*"(plugin ABI 1)" ]]
    run "$WF" --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"exit status"* ]]
    for c in run batch graph snapshot; do
        run "$WF" "$c" --help
        [ "$status" -eq 0 ]
        [[ "$output" == "usage: wf $c"* ]]
    done
}

@test "usage errors exit 2 with a message" {
    run --separate-stderr "$WF"
    [ "$status" -eq 2 ]
    run --separate-stderr "$WF" frobnicate
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"unknown command 'frobnicate'"* ]]
    run --separate-stderr "$WF" run
    [ "$status" -eq 2 ]
    run --separate-stderr "$WF" run "$WF_QS" --threads zero
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--threads wants a number"* ]]
    run --separate-stderr "$WF" run "$WF_QS" --bogus
    [ "$status" -eq 2 ]
    run --separate-stderr "$WF" batch "$WF_QS"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--inputs FILE.jsonl is required"* ]]
}

# ---- plugins

@test "a missing plugin: 2 and the loader's reason" {
    run --separate-stderr "$WF" run "$T/nothere.so"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"cannot load plugin"*"No such file"* ]]
    [ -z "$output" ]
}

@test "a shared object without wf_plugin_v1: 2, not a wf plugin" {
    run --separate-stderr "$WF" run "$WF_NOSYM"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"not a wf plugin: no symbol wf_plugin_v1"* ]]
}

@test "a plugin of another ABI version: 2, both versions named" {
    run --separate-stderr "$WF" run "$WF_ABI2"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"plugin ABI version 2, but this wf loads version 1"* ]]
    run --separate-stderr "$WF" graph "$WF_V2"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"exports wf_plugin_v2"* ]]
}

@test "an unknown workflow: 2 and the known ones" {
    run --separate-stderr "$WF" run "$WF_TP" nope
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"no workflow 'nope' in plugin 'testplug'; it has: echo fail sleepy"* ]]
}

# ---- wf run

@test "run: the quick start prints its result as JSON" {
    run --separate-stderr "$WF" run "$WF_QS" --input '{"data": "Hello, world!"}'
    [ "$status" -eq 0 ]
    [ "$output" = '"Processed 1 times, data length: 13"' ]
    [ -z "$stderr" ]
}

@test "run: --input @FILE and - (standard input)" {
    echo '{"data": "abc"}' > "$T/in.json"
    run "$WF" run "$WF_QS" --input @"$T/in.json"
    [ "$status" -eq 0 ]
    [ "$output" = '"Processed 1 times, data length: 3"' ]
    run bash -c "echo '{\"data\": \"abcd\"}' | '$WF' run '$WF_QS' --input -"
    [ "$status" -eq 0 ]
    [ "$output" = '"Processed 1 times, data length: 4"' ]
    run --separate-stderr "$WF" run "$WF_QS" --input @"$T/missing.json"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"missing.json"* ]]
}

@test "run: malformed JSON input is 2 with line and column" {
    run --separate-stderr "$WF" run "$WF_QS" --input '{"data": '
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"bad --input: line 1 column"* ]]
    run --separate-stderr "$WF" run "$WF_QS" --input '[1, 2]'
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"must be a JSON object"* ]]
    run --separate-stderr "$WF" run "$WF_QS" --input '{"n": 18446744073709551615}'
    [ "$status" -eq 2 ]
    [[ "$stderr" == *'$uint'* ]]
}

@test "run: values round-trip exactly (int64 extremes, uint, bytes, nesting)" {
    in='{"min":-9223372036854775808,"max":9223372036854775807,"u":{"$uint":"18446744073709551615"},"b":{"$bytes":"AP8E"},"d":0.5,"n":null,"t":true,"s":"caf\u00e9 \"q\"\n","a":[1,[2,{"x":[]}]],"m":{"$map":{"$bytes":"not bytes"}}}'
    run --separate-stderr "$WF" run "$WF_TP" echo --input "$in"
    [ "$status" -eq 0 ]
    [ "$output" = '{"min":-9223372036854775808,"max":9223372036854775807,"u":{"$uint":"18446744073709551615"},"b":{"$bytes":"AP8E"},"d":0.5,"n":null,"t":true,"s":"café \"q\"\n","a":[1,[2,{"x":[]}]],"m":{"$map":{"$bytes":"not bytes"}}}' ]
}

@test "run: a failing step is 1 with the step, the code and its message" {
    run --separate-stderr "$WF" run "$WF_TP" fail --input '{"fail": true}'
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"step 'fail' failed: invalid argument (WF_EINVAL): asked to fail"* ]]
    [ -z "$output" ]
    run --separate-stderr "$WF" run "$WF_QS" --input '{"data": 5}'
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"needs a string field 'data'"* ]]
}

@test "run: a run timeout is 3" {
    run --separate-stderr "$WF" run "$WF_TP" sleepy --timeout 0.2
    [ "$status" -eq 3 ]
    [[ "$stderr" == *"timed out: Operation timed out after 0.2 seconds"* ]]
    run --separate-stderr "$WF" run "$WF_TP" sleepy --timeout soon
    [ "$status" -eq 2 ]
}

@test "run: a human-in-the-loop run without an answer is 4, with one 0" {
    run --separate-stderr "$WF" run "$WF_HITL" --input '{"item": "invoice 7"}'
    [ "$status" -eq 4 ]
    [ "$output" = '{"type":"InputRequiredEvent","value":{"prefix":"Approve invoice 7?"}}' ]
    [[ "$stderr" == *"waiting for input"* ]]
    run --separate-stderr "$WF" run "$WF_HITL" approval --input '{"item": "invoice 7"}' --respond '{"response": "yes"}'
    [ "$status" -eq 0 ]
    [ "$output" = '"invoice 7: approved"' ]
    run --separate-stderr "$WF" run "$WF_HITL" --respond 'nope'
    [ "$status" -eq 2 ]
}

@test "run: --stream prints every event as a JSON line, the StopEvent last" {
    run --separate-stderr "$WF" run "$WF_HITL" --input '{"item": "x"}' --respond '{"response": "no"}' --stream
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 2 ]
    [ "${lines[0]}" = '{"type":"InputRequiredEvent","value":{"prefix":"Approve x?"}}' ]
    [ "${lines[1]}" = '{"type":"StopEvent","value":{"result":"x: rejected"}}' ]
}

@test "run: --trace, --otlp and --metrics write the exporters' files" {
    run "$WF" run "$WF_QS" --input '{"data": "x"}' --trace "$T/trace.json" --otlp "$T/spans.jsonl" --metrics "$T/metrics.prom"
    [ "$status" -eq 0 ]
    [ -s "$T/trace.json" ] && [ -s "$T/spans.jsonl" ] && [ -s "$T/metrics.prom" ]
    grep -q my_step "$T/trace.json"
    grep -q '"resourceSpans"' "$T/spans.jsonl"
    grep -q '^wf_' "$T/metrics.prom"
    if command -v python3 >/dev/null; then python3 -m json.tool "$T/trace.json" >/dev/null; fi
    run --separate-stderr "$WF" run "$WF_QS" --trace /nonexistent/dir/t.json
    [ "$status" -eq 2 ]
}

@test "run: Ctrl-C cancels the run and exits 130" {
    mkfifo "$T/in"
    "$WF" run "$WF_TP" sleepy --timeout none --input @"$T/in" > "$T/out" 2> "$T/err" &
    pid=$!
    echo '{}' > "$T/in"   # returns once wf has opened its input: its signal thread is up
    kill -INT "$pid"
    st=0; wait "$pid" || st=$?
    [ "$st" -eq 130 ]
    grep -q "interrupted" "$T/err"
}

# ---- wf graph

@test "graph: dot, mermaid and json" {
    run "$WF" graph "$WF_QS"
    [ "$status" -eq 0 ]
    [[ "$output" == "digraph"* ]]
    run "$WF" graph "$WF_QS" MyWorkflow --format mermaid
    [ "$status" -eq 0 ]
    [[ "$output" == "flowchart"* ]]
    run "$WF" graph "$WF_QS" --format json
    [ "$status" -eq 0 ]
    [[ "$output" == *'"node_type": "step"'* ]]
    [[ "$output" == *'"num_workers": 4'* ]]
    [[ "$output" == *'"source": "StartEvent"'* ]]
    [[ "$output" == *'"event_types"'* ]]
    if command -v python3 >/dev/null; then
        echo "$output" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d["edges"]) == 2 and d["start_event"] == "StartEvent", d'
    fi
    run --separate-stderr "$WF" graph "$WF_QS" --format svg
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"unknown format 'svg'"* ]]
}

# ---- wf snapshot

@test "snapshot: json, show, validate; bad files 1, usage 2" {
    "$WF_SNAP_SAMPLE" "$T/run.snap"
    run "$WF" snapshot json "$T/run.snap"
    [ "$status" -eq 0 ]
    [[ "$output" == *'"magic":"wf-snapshot"'* || "$output" == *'"magic": "wf-snapshot"'* ]]
    run "$WF" snapshot show "$T/run.snap"
    [ "$status" -eq 0 ]
    [[ "$output" == *"workflow:    Sample"* ]]
    [[ "$output" == *"running:     yes"* ]]
    run "$WF" snapshot validate - < "$T/run.snap"
    [ "$status" -eq 0 ]
    head -c 40 "$T/run.snap" > "$T/bad.snap"
    run --separate-stderr "$WF" snapshot validate "$T/bad.snap"
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"malformed msgpack at offset"* ]]
    run --separate-stderr "$WF" snapshot json "$T/none.snap"
    [ "$status" -eq 1 ]
    run --separate-stderr "$WF" snapshot dump "$T/run.snap"
    [ "$status" -eq 2 ]
}

# ---- wf batch

@test "batch: 100,000 lines give 100,000 result lines" {
    "$WF_GEN" 100000 "$T/in.jsonl"
    run --separate-stderr "$WF" batch "$WF_QS" --inputs "$T/in.jsonl" --out "$T/out.jsonl" --jobs 1000
    [ "$status" -eq 0 ]
    [ "$(wc -l < "$T/out.jsonl")" -eq 100000 ]
    [ "$(grep -c '"status":"done"' "$T/out.jsonl")" -eq 100000 ]
    grep -q '^{"line":100000,"id":100000,"status":"done","result":"Processed 1 times, data length: 20"}$' "$T/out.jsonl"
    [[ "$stderr" == *"wf batch: 100000 runs in"*"100000 done, 0 failed"* ]]
}

@test "batch: a failing line, a malformed line and a blank line; exit 1" {
    printf '%s\n' '{"data": "a", "id": "first"}' '{"data": 7}' '' '{"data": ' '{"data": "bb"}' > "$T/in.jsonl"
    run --separate-stderr "$WF" batch "$WF_QS" --inputs "$T/in.jsonl"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 4 ]
    [[ "$output" == *'{"line":1,"id":"first","status":"done","result":"Processed 1 times, data length: 1"}'* ]]
    [[ "$output" == *'{"line":2,"status":"failed","error":{"code":"WF_EINVAL","step":"my_step","message":"the start event needs a string field '"'"'data'"'"'"}}'* ]]
    [[ "$output" == *'{"line":4,"status":"invalid","error":{"code":"WF_EFORMAT","message":"line 1 column'* ]]
    [[ "$output" == *'{"line":5,"status":"done"'* ]]
    [[ "$stderr" == *"2 done, 1 failed, 0 timed out, 1 invalid lines"* ]]
}

@test "batch: standard input, timeouts, a missing input file" {
    run --separate-stderr bash -c "printf '{}\n{}\n' | '$WF' batch '$WF_TP' sleepy --inputs - --timeout 0.1"
    [ "$status" -eq 1 ]
    [ "$(echo "$output" | grep -c '"status":"timed_out"')" -eq 2 ]
    run --separate-stderr "$WF" batch "$WF_QS" --inputs "$T/none.jsonl"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"none.jsonl"* ]]
    run --separate-stderr "$WF" batch "$WF_QS" --inputs - --jobs 0
    [ "$status" -eq 2 ]
}

@test "batch: Ctrl-C stops cleanly, cancels what runs and says what finished" {
    mkfifo "$T/in"
    "$WF" batch "$WF_TP" sleepy --timeout none --inputs "$T/in" --out "$T/out.jsonl" 2> "$T/err" &
    pid=$!
    exec 5> "$T/in"   # returns once wf has opened its input: its signal thread is up
    printf '{}\n{}\n' >&5
    kill -INT "$pid"
    exec 5>&-
    st=0; wait "$pid" || st=$?
    [ "$st" -eq 130 ]
    grep -q "interrupted: .* lines read" "$T/err"
    # whatever started is accounted for as cancelled, nothing else
    ! grep -v '"status":"cancelled"' "$T/out.jsonl"
}
