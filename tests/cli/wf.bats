#!/usr/bin/env bats
# The wf command: every subcommand, every exit code, bad plugins and bad
# input. Run by meson (tests/meson.build sets WF, WF_QS, WF_HITL, WF_TP,
# WF_NOSYM, WF_ABI2, WF_V2, WF_SNAP_SAMPLE, WF_GEN, WF_MKSTORE, WF_MKWAITING,
# WF_CLUSTER_NODE).

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
    for c in run batch graph snapshot runs; do
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

@test "run: a start event that fails its schema is usage (2) naming the field" {
    run --separate-stderr "$WF" run "$WF_TP" typed --input '{"qty": "three"}'
    [ "$status" -eq 2 ]
    [ "$stderr" = "wf run: bad --input: Order.qty: expected int, got string" ]
    [ -z "$output" ]
    run --separate-stderr "$WF" run "$WF_TP" typed --input '{"note": "x"}'
    [ "$status" -eq 2 ]
    [ "$stderr" = "wf run: bad --input: Order.qty: required field missing" ]
    run --separate-stderr "$WF" run "$WF_TP" typed --input '{"qty": 3, "note": "x"}'
    [ "$status" -eq 0 ]
    [ "$output" = '{"qty":3,"note":"x"}' ]
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

@test "batch: a line longer than a block, CRLF, no final newline, one job at a time" {
    # a 9 MB line (the input is read in 8 MiB blocks), then a CRLF line and a last line without newline
    awk 'BEGIN { s = "x"; while (length(s) < 9000000) s = s s; printf "{\"id\":\"big\",\"data\":\"%s\"}\n", substr(s, 1, 9000000) }' > "$T/in.jsonl"
    printf '{"data":"crlf"}\r\n\r\n{"data":"last"}' >> "$T/in.jsonl"
    run --separate-stderr "$WF" batch "$WF_QS" --inputs "$T/in.jsonl" --jobs 1
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 3 ]
    [[ "$output" == *'{"line":1,"id":"big","status":"done","result":"Processed 1 times, data length: 9000000"}'* ]]
    [[ "$output" == *'{"line":2,"status":"done","result":"Processed 1 times, data length: 4"}'* ]]
    [[ "$output" == *'{"line":4,"status":"done","result":"Processed 1 times, data length: 4"}'* ]]
    # every line once, whatever the window: 20,000 lines through windows of 1, 7 and 300
    "$WF_GEN" 20000 "$T/many.jsonl"
    for j in 1 7 300; do
        run --separate-stderr "$WF" batch "$WF_QS" --inputs "$T/many.jsonl" --jobs "$j" --out "$T/out.jsonl"
        [ "$status" -eq 0 ]
        [ "$(sed 's/^{"line":\([0-9]*\),.*/\1/' "$T/out.jsonl" | sort -un | wc -l)" -eq 20000 ]
        [ "$(wc -l < "$T/out.jsonl")" -eq 20000 ]
    done
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

# ---- wf serve: the command line and the exit codes (the HTTP API: tests/serve)

@test "serve: bad command lines exit 2 with a message" {
    run --separate-stderr "$WF" serve --help
    [ "$status" -eq 0 ]
    [[ "$output" == "usage: wf serve"* ]]
    run --separate-stderr "$WF" serve
    [ "$status" -eq 2 ]
    [[ "$stderr" == "usage: wf serve"* ]]
    run --separate-stderr "$WF" serve "$WF_QS" --bogus
    [ "$status" -eq 2 ]
    [[ "$stderr" == "wf serve: bad option '--bogus'"* ]]
    for l in nope 127.0.0.1:99999 127.0.0.1: :8080; do
        run --separate-stderr "$WF" serve "$WF_QS" --listen "$l"
        [ "$status" -eq 2 ]
        [[ "$stderr" == *"--listen wants HOST:PORT"* ]]
    done
    run --separate-stderr "$WF" serve "$WF_QS" --listen 1.2.3:0
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"'1.2.3' is not an IPv4 address"* ]]
    run --separate-stderr "$WF" serve "$WF_QS" --threads 0
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--threads wants a number"* ]]
    run --separate-stderr "$WF" serve "$WF_QS" --body-limit 0
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--body-limit wants bytes"* ]]
    run --separate-stderr "$WF" serve "$WF_QS" --max-handlers x
    [ "$status" -eq 2 ]
    run --separate-stderr "$WF" serve "$WF_QS" --max-connections 0
    [ "$status" -eq 2 ]
    run --separate-stderr "$WF" serve "$WF_QS" --http-threads 0
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--http-threads wants a number from 1 to 256"* ]]
}

@test "serve: a missing or bad plugin, or two workflows of one name, exit 2" {
    run --separate-stderr "$WF" serve "$T/nothere.so" --listen 127.0.0.1:0
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"cannot load plugin"* ]]
    run --separate-stderr "$WF" serve "$WF_NOSYM" --listen 127.0.0.1:0
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"not a wf plugin"* ]]
    run --separate-stderr "$WF" serve "$WF_QS" "$WF_QS" --listen 127.0.0.1:0
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"two plugins serve a workflow called 'MyWorkflow'"* ]]
}

# Starts wf serve in the background on a free port: $pid, $port; its first
# line read from a fifo (read blocks until it is written; -t bounds it).
start_serve() {
    mkfifo "$T/serve.out"
    "$WF" serve "$@" --listen 127.0.0.1:0 > "$T/serve.out" 2> "$T/serve.err" &
    pid=$!
    exec 6< "$T/serve.out"
    read -r -t 30 first <&6
    [[ "$first" == "listening on http://127.0.0.1:"* ]]
    port="${first##*:}"
}

@test "serve: a port in use exits 2; SIGTERM and SIGINT stop it with 0" {
    start_serve "$WF_QS"
    run --separate-stderr "$WF" serve "$WF_QS" --listen "127.0.0.1:$port"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"cannot listen on 127.0.0.1:$port"* ]]
    if command -v curl > /dev/null; then
        run curl -s "http://127.0.0.1:$port/health"
        [ "$output" = '{"status":"healthy"}' ]
    fi
    kill -TERM "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&-
    [ "$st" -eq 0 ]
    rm "$T/serve.out"
    start_serve "$WF_QS" "$WF_HITL" --http-threads 1
    kill -INT "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&-
    [ "$st" -eq 0 ]
}

# ---- wf runs (a store written by mkstore through the store API)

@test "runs: bad command lines and stores exit 2 with a message" {
    run --separate-stderr "$WF" runs --help
    [ "$status" -eq 0 ]
    [[ "$output" == "usage: wf runs"* ]]
    run --separate-stderr "$WF" runs
    [ "$status" -eq 2 ]
    run --separate-stderr "$WF" runs list
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--store STORE is required"* ]]
    run --separate-stderr "$WF" runs frob --store "$T/s.db"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"unknown subcommand 'frob'"* ]]
    run --separate-stderr "$WF" runs respond r-1 --store "$T/s.db"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"respond wants RUN_ID PLUGIN.so [WORKFLOW] and --event JSON"* ]]
    run --separate-stderr "$WF" runs respond r-1 "$WF_HITL" --store "$T/s.db"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"respond wants RUN_ID PLUGIN.so [WORKFLOW] and --event JSON"* ]]
    run --separate-stderr "$WF" runs show r-1 --store "$T/s.db" --no-wait
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--event, --no-wait, --threads and --timeout are for respond"* ]]
    run --separate-stderr "$WF" runs respond r-1 "$WF_HITL" --store "$T/s.db" --event '{}' --timeout soon
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--timeout wants seconds"* ]]
    run --separate-stderr "$WF" runs show --store "$T/s.db"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"show wants a RUN_ID"* ]]
    run --separate-stderr "$WF" runs list --store "$T/none.db"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"none.db: No such file or directory"* ]]
    [ ! -e "$T/none.db" ]
    run --separate-stderr "$WF" runs list --store nats://127.0.0.1:4222
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"unknown store kind 'nats'"* ]]
    echo "not a database" > "$T/bad.db"
    run --separate-stderr "$WF" runs list --store "$T/bad.db"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"cannot open the store"* ]]
    run --separate-stderr "$WF" runs list --store "$T/bad.db" --status finished
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"unknown status 'finished'"* ]]
}

@test "runs: list shows every run with its status, filtered and limited" {
    [ -n "$WF_MKSTORE" ] || skip "built without SQLite"
    "$WF_MKSTORE" "$T/s.db"
    run --separate-stderr "$WF" runs list --store "$T/s.db"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 6 ]
    [[ "${lines[0]}" == "RUN_ID"*"WORKFLOW"*"STATUS"*"UPDATED"*"OWNER" ]]
    [[ "${lines[1]}" =~ ^r-done\ +MyWorkflow\ +done\ + ]]
    [[ "${lines[2]}" =~ ^r-failed\ +MyWorkflow\ +failed\ + ]]
    [[ "${lines[3]}" =~ ^r-waiting\ +hitl\ +waiting\ +.*worker-a$ ]]
    [[ "${lines[4]}" =~ ^r-released\ +hitl\ +released\ + ]]
    [[ "${lines[5]}" =~ ^r-expired\ +MyWorkflow\ +running\ +.*crashed$ ]]
    run --separate-stderr "$WF" runs list --store "sqlite:$T/s.db" --json --status inflight
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 3 ]
    [[ "${lines[0]}" == '{"run_id":"r-waiting","workflow":"hitl","status":"waiting","owner":"worker-a",'* ]]
    [[ "${lines[1]}" == '{"run_id":"r-released","workflow":"hitl","status":"released","owner":null,"lease_until":null,'* ]]
    [[ "${lines[2]}" == *'"status":"running","owner":"crashed","lease_until":"1970-01-01T00:00:02.000Z"'* ]]
    run --separate-stderr "$WF" runs list --store "$T/s.db" --json --status done,failed,cancelled --limit 1
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == '{"run_id":"r-done",'* ]]
    run --separate-stderr "$WF" runs list --store "$T/s.db" --status timed_out
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    [[ "$stderr" == "wf runs: no runs" ]]
}

@test "runs: show gives the record, the result and the journal's summary" {
    [ -n "$WF_MKSTORE" ] || skip "built without SQLite"
    "$WF_MKSTORE" "$T/s.db"
    run --separate-stderr "$WF" runs show r-done --store "$T/s.db"
    [ "$status" -eq 0 ]
    [[ "$output" == '{"run_id":"r-done","workflow":"MyWorkflow","status":"done","owner":null,'* ]]
    [[ "$output" == *'"journal_records":3,"checkpoint_seq":0,"result":{"type":"StopEvent","value":{"result":"Processed 1 times, data length: 5"}},'* ]]
    [[ "$output" == *'"journal":{"records":3,"by_kind":{"step":2,"event":1},"steps":[{"seq":0,"step":"my_step","attempt":1,"input":"StartEvent","emitted":["StopEvent"]},{"seq":1,"step":"my_step","attempt":1,"input":"StartEvent","emitted":[]}]}}' ]]
    run --separate-stderr "$WF" runs show r-done --store "$T/s.db" --journal 1
    [[ "$output" == *'"steps":[{"seq":0,'*'}]}}' ]]
    [[ "$output" != *'"seq":1'* ]]
    run --separate-stderr "$WF" runs show r-waiting --store "$T/s.db" --journal 0
    [ "$status" -eq 0 ]
    [[ "$output" == *'"status":"waiting","owner":"worker-a",'*'"result":null,"journal":{"records":0,"by_kind":{},"steps":[]}}' ]]
    run --separate-stderr "$WF" runs show r-nope --store "$T/s.db"
    [ "$status" -eq 1 ]
    [[ "$stderr" == "wf runs: no run 'r-nope' in the store" ]]
}

@test "runs: cancel finishes a run without a live owner, and only such a run" {
    [ -n "$WF_MKSTORE" ] || skip "built without SQLite"
    "$WF_MKSTORE" "$T/s.db"
    run --separate-stderr "$WF" runs cancel r-released --store "$T/s.db"
    [ "$status" -eq 0 ]
    [ "$output" = '{"run_id":"r-released","status":"cancelled"}' ]
    run --separate-stderr "$WF" runs cancel r-expired --store "$T/s.db"
    [ "$status" -eq 0 ]
    run --separate-stderr "$WF" runs cancel r-waiting --store "$T/s.db"
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"run 'r-waiting' is owned by worker-a (lease until "*"): cancel it through its owner"* ]]
    run --separate-stderr "$WF" runs cancel r-done --store "$T/s.db"
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"run 'r-done' has ended already (done)"* ]]
    run --separate-stderr "$WF" runs cancel r-nope --store "$T/s.db"
    [ "$status" -eq 1 ]
    run --separate-stderr "$WF" runs list --store "$T/s.db" --json --status cancelled
    [ "${#lines[@]}" -eq 2 ]
    [[ "${lines[0]}" == '{"run_id":"r-released","workflow":"hitl","status":"cancelled",'* ]]
    [[ "${lines[1]}" == '{"run_id":"r-expired","workflow":"MyWorkflow","status":"cancelled",'* ]]
    run --separate-stderr "$WF" runs list --store "$T/s.db" --json --status waiting
    [[ "$output" == *'"run_id":"r-waiting","workflow":"hitl","status":"waiting","owner":"worker-a"'* ]]
}

# ---- wf worker: a worker process of a cluster on NATS JetStream (docs/CLUSTER.md)

@test "worker: bad command lines exit 2, an unreachable server 1" {
    run --separate-stderr "$WF" worker --help
    [ "$status" -eq 0 ]
    [[ "$output" == "usage: wf worker"* ]]
    run --separate-stderr "$WF" worker
    [ "$status" -eq 2 ]
    [[ "$stderr" == "usage: wf worker"* ]]
    run --separate-stderr "$WF" worker "$WF_QS"
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--nats URL is required"* ]]
    run --separate-stderr "$WF" worker "$WF_QS" --nats nats://127.0.0.1:1 --bogus
    [ "$status" -eq 2 ]
    [[ "$stderr" == "wf worker: bad option '--bogus'"* ]]
    for o in "--runners 0" "--ack-wait 5" "--lease x" "--replicas 9" "--threads 0" \
        "--pullers 0" "--pullers 65" "--fetch-batch 0" "--fetch-batch 2000" "--fast-ms 0" \
        "--fast-ms x" "--no-lookup=1"; do
        run --separate-stderr "$WF" worker "$WF_QS" --nats nats://127.0.0.1:1 $o
        [ "$status" -eq 2 ]
    done
    run --separate-stderr "$WF" worker "$T/nothere.so" --nats nats://127.0.0.1:1
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"cannot load plugin"* ]]
    run --separate-stderr "$WF" worker "$WF_QS" --nats nats://127.0.0.1:1 --prefix 'bad prefix'
    [ "$status" -eq 2 ]
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    run --separate-stderr "$WF" worker "$WF_QS" --nats "nats://127.0.0.1:$port"
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"cannot reach NATS"* ]]
}

# Starts nats-server -js on a free port with a store in $T: $nats_pid, $nats_url.
start_nats() {
    server="$(command -v nats-server || echo /usr/sbin/nats-server)"
    [ -x "$server" ] || skip "nats-server is not installed"
    [ -n "$WF_CLUSTER_NODE" ] || skip "built without NATS"
    nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$server" -js -a 127.0.0.1 -p "$nport" -sd "$T/js" > "$T/nats.log" 2>&1 &
    nats_pid=$!
    nats_url="nats://127.0.0.1:$nport"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Starts `wf worker "$@"` in the background: $wpid; waits for its "working" line.
start_worker() {
    rm -f "$T/worker.out"
    mkfifo "$T/worker.out"
    "$WF" worker "$@" > "$T/worker.out" 2> "$T/worker.err" &
    wpid=$!
    exec 7< "$T/worker.out"
    read -r -t 30 first <&7
    [[ "$first" == "working: 1 workflows, nats://"* ]]
}

@test "worker: two workers run a batch; SIGTERM and SIGINT drain them with 0" {
    start_nats
    start_worker "$WF_QS" --nats "$nats_url" --prefix bw --threads 1
    w1=$wpid
    exec 8<&7
    start_worker "$WF_QS" --nats "$nats_url" --prefix bw --threads 1 --runners 2
    w2=$wpid
    run --separate-stderr "$WF_CLUSTER_NODE" "$nats_url" bw submit 500 "$WF_QS" MyWorkflow
    kill -TERM "$w1"
    kill -INT "$w2"
    st1=0; wait "$w1" || st1=$?
    st2=0; wait "$w2" || st2=$?
    kill "$nats_pid"; wait "$nats_pid" || true
    [ "$status" -eq 0 ]
    [[ "$output" == '{"submitted":500,"right_results":500,'* ]]
    [ "$st1" -eq 0 ]
    [ "$st2" -eq 0 ]
    # each printed its counters; together they ran the 500 (a run may be counted by both
    # only if it was handed over, which a quiet batch does not do)
    read -r c1 <&8
    read -r c2 <&7
    d1=$(echo "$c1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs_done"])')
    d2=$(echo "$c2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs_done"])')
    [ $((d1 + d2)) -eq 500 ]
}

@test "worker: the fast path's options (--pullers, --fetch-batch, --fast-ms, --no-lookup, --no-index, --no-stream-events) run a batch" {
    start_nats
    start_worker "$WF_QS" --nats "$nats_url" --prefix fo --threads 1 --pullers 1 --fetch-batch 16 \
        --fast-ms 50 --no-lookup --no-index --no-stream-events
    run --separate-stderr "$WF_CLUSTER_NODE" "$nats_url" fo submit 300 "$WF_QS" MyWorkflow
    kill -TERM "$wpid"
    st=0; wait "$wpid" || st=$?
    kill "$nats_pid"; wait "$nats_pid" || true
    [ "$status" -eq 0 ]
    [[ "$output" == '{"submitted":300,"right_results":300,'* ]]
    [ "$st" -eq 0 ]
    read -r counters <&7
    [ "$(echo "$counters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs_done"])')" -eq 300 ]
}

# ---- durable runs: wf run --store, wf runs respond

@test "run --store: a waiting run is kept in the store, respond answers it in another process" {
    [ -n "$WF_MKSTORE" ] || skip "built without SQLite"
    run --separate-stderr "$WF" run "$WF_HITL" --input '{"item": "invoice 7"}' --store "$T/d.db" --run-id inv7
    [ "$status" -eq 4 ]
    [ "$output" = '{"type":"InputRequiredEvent","value":{"prefix":"Approve invoice 7?"}}' ]
    [[ "$stderr" == *"run 'inv7' is kept in the store"* ]]
    run --separate-stderr "$WF" runs list --store "$T/d.db" --json
    [ "$status" -eq 0 ]
    [[ "$output" == '{"run_id":"inv7","workflow":"approval","status":"released",'* ]]
    run --separate-stderr "$WF" runs respond inv7 "$WF_HITL" --store "$T/d.db" --event '{"response": "yes"}'
    [ "$status" -eq 0 ]
    [ "$output" = '"invoice 7: approved"' ]
    run --separate-stderr "$WF" runs list --store "$T/d.db" --json --status done
    [[ "$output" == '{"run_id":"inv7","workflow":"approval","status":"done",'* ]]
    # answered once: a second answer is refused, a rerun prints the stored result
    run --separate-stderr "$WF" runs respond inv7 "$WF_HITL" --store "$T/d.db" --event '{"response": "no"}'
    [ "$status" -eq 1 ]
    [ "$stderr" = "wf runs: run 'inv7' has ended already (done)" ]
    run --separate-stderr "$WF" run "$WF_HITL" --input '{"item": "other"}' --store "$T/d.db" --run-id inv7
    [ "$status" -eq 0 ]
    [ "$output" = '"invoice 7: approved"' ]
}

@test "runs respond: unknown run, malformed JSON, unknown event type, wrong plugin" {
    [ -n "$WF_MKSTORE" ] || skip "built without SQLite"
    run --separate-stderr "$WF" run "$WF_HITL" --input '{"item": "x"}' --store "$T/d.db" --run-id w1
    [ "$status" -eq 4 ]
    run --separate-stderr "$WF" runs respond nope "$WF_HITL" --store "$T/d.db" --event '{"response": "yes"}'
    [ "$status" -eq 1 ]
    [ "$stderr" = "wf runs: no run 'nope' in the store" ]
    run --separate-stderr "$WF" runs respond w1 "$WF_HITL" --store "$T/d.db" --event '{"response": '
    [ "$status" -eq 2 ]
    [[ "$stderr" == "wf runs: bad --event: line 1 column"* ]]
    run --separate-stderr "$WF" runs respond w1 "$WF_HITL" --store "$T/d.db" --event '[1]'
    [ "$status" -eq 2 ]
    [ "$stderr" = "wf runs: bad --event: not a JSON object" ]
    run --separate-stderr "$WF" runs respond w1 "$WF_HITL" --store "$T/d.db" --event '{"type": "Refund", "value": {}}'
    [ "$status" -eq 2 ]
    [[ "$stderr" == "wf runs: bad --event: workflow 'approval' has no event type 'Refund' (it has "*"HumanResponseEvent"* ]]
    run --separate-stderr "$WF" runs respond w1 "$WF_QS" --store "$T/d.db" --event '{"response": "yes"}'
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"approval"* ]]
    run --separate-stderr "$WF" runs respond w1 "$WF_HITL" --store "$T/none.db" --event '{"response": "yes"}'
    [ "$status" -eq 2 ]
    # none of these answered it: it still waits, and a good answer completes it
    run --separate-stderr "$WF" runs list --store "$T/d.db" --json --status released
    [[ "$output" == '{"run_id":"w1",'* ]]
    run --separate-stderr "$WF" runs respond w1 "$WF_HITL" --store "$T/d.db" --event '{"type": "HumanResponseEvent", "value": {"response": "no"}}'
    [ "$status" -eq 0 ]
    [ "$output" = '"x: rejected"' ]
}

@test "runs respond: an answer the run does not take leaves it waiting (4)" {
    [ -n "$WF_MKSTORE" ] || skip "built without SQLite"
    run --separate-stderr "$WF" run "$WF_HITL" --input '{"item": "y"}' --store "$T/d.db" --run-id w2
    [ "$status" -eq 4 ]
    run --separate-stderr "$WF" runs respond w2 "$WF_HITL" --store "$T/d.db" --event '{"type": "InputRequiredEvent", "value": {"prefix": "?"}}'
    [ "$status" -eq 4 ]
    [ "$stderr" = "wf runs: waiting for input again: run 'w2' is kept in the store" ]
    run --separate-stderr "$WF" runs list --store "$T/d.db" --json --status released
    [[ "$output" == '{"run_id":"w2",'* ]]
    run --separate-stderr "$WF" runs respond w2 "$WF_HITL" --store "$T/d.db" --event '{"response": "yes"}'
    [ "$status" -eq 0 ]
    [ "$output" = '"y: approved"' ]
}

@test "run: --run-id without --store is usage" {
    run --separate-stderr "$WF" run "$WF_QS" --run-id r1
    [ "$status" -eq 2 ]
    [ "$stderr" = "wf run: --run-id needs --store" ]
}

# A batch on a store, stopped while runs are in flight (line b waits for
# ever) by SIGINT or SIGKILL, then run again: every line's result exactly
# once; what ended comes from the store ("stored": true), the run in flight
# is resumed (recovered: it then times out after gate's own 0.3 s, as a
# recovered run gets its workflow's timeout), nothing ends twice.
@test "batch --store: interrupted (SIGINT, SIGKILL) then rerun gives every result exactly once" {
    [ -n "$WF_MKSTORE" ] || skip "built without SQLite"
    printf '{"id":"a"}\n{"id":"b","wait":true}\n{"x":1}\n' > "$T/in.jsonl"
    for sig in INT KILL; do
        rm -f "$T/b.db"*
        "$WF" batch "$WF_TP" gate --timeout none --inputs "$T/in.jsonl" --store "$T/b.db" --out "$T/out1.jsonl" 2> "$T/err" &
        pid=$!
        # until the store has all three: a and line-3 done, b in flight
        # (running, or waiting for its event once a checkpoint saw it idle)
        until [ "$("$WF" runs list --store "$T/b.db" --json --status done 2>/dev/null | wc -l)" -eq 2 ] &&
              "$WF" runs list --store "$T/b.db" --json 2>/dev/null |
                  grep -Eq '"run_id":"b","workflow":"gate","status":"(running|waiting)"'; do :; done
        kill -"$sig" "$pid"
        st=0; wait "$pid" || st=$?
        [ "$st" -ne 0 ]
        run --separate-stderr "$WF" batch "$WF_TP" gate --inputs "$T/in.jsonl" --store "$T/b.db"
        [ "$status" -eq 1 ]
        [ "${#lines[@]}" -eq 3 ]
        [[ "$output" == *'{"line":1,"id":"a","stored":true,"status":"done","result":{"id":"a"}}'* ]]
        [[ "$output" == *'{"line":3,"stored":true,"status":"done","result":{"x":1}}'* ]]
        [[ "$output" == *'{"line":2,"id":"b","status":"timed_out","error":{"code":"WF_ERUNTIMEOUT","step":"gate"'* ]]
        # and once more: everything from the store, nothing runs
        run --separate-stderr "$WF" batch "$WF_TP" gate --inputs "$T/in.jsonl" --store "$T/b.db"
        [ "$status" -eq 1 ]
        [ "${#lines[@]}" -eq 3 ]
        [ "$(grep -c '"stored":true' <<< "$output")" -eq 3 ]
        [[ "$stderr" == *"0 runs in"* ]]
    done
}

@test "batch --store: run ids are the input's id or the line number" {
    [ -n "$WF_MKSTORE" ] || skip "built without SQLite"
    printf '{"id":"x1","data":"a"}\n{"data":"bb"}\n' > "$T/in.jsonl"
    run --separate-stderr "$WF" batch "$WF_QS" --inputs "$T/in.jsonl" --store "$T/q.db"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 2 ]
    run --separate-stderr "$WF" runs list --store "$T/q.db" --json
    [[ "$output" == *'"run_id":"x1","workflow":"MyWorkflow","status":"done"'* ]]
    [[ "$output" == *'"run_id":"line-2","workflow":"MyWorkflow","status":"done"'* ]]
    run --separate-stderr "$WF" runs show line-2 --store "$T/q.db"
    [[ "$output" == *'"result":{"type":"StopEvent","value":{"result":"Processed 1 times, data length: 2"}}'* ]]
}

# ---- durable runs a wf process left in flight (mkwaiting: a run left by a
# process that stopped without releasing it, owner "wf" as every wf command)

@test "runs respond: answers a run a stopped process left in flight, not released" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    run --separate-stderr "$WF_MKWAITING" "$T/w.db" "$WF_HITL" approval inv7 '{"item": "invoice 7"}'
    [ "$status" -eq 0 ]
    [ "$output" = '{"prefix":"Approve invoice 7?"}' ]
    run --separate-stderr "$WF" runs list --store "$T/w.db" --status running,waiting --json
    [[ "$output" == *'"run_id":"inv7","workflow":"approval"'* ]]
    # WORKFLOW given and the run's: fine
    run --separate-stderr "$WF" runs respond inv7 "$WF_HITL" approval --store "$T/w.db" --event '{"response": "yes"}'
    [ "$status" -eq 0 ]
    [ "$output" = '"invoice 7: approved"' ]
    run --separate-stderr "$WF" runs show inv7 --store "$T/w.db"
    [[ "$output" == *'"status":"done"'*'"result":{"type":"StopEvent","value":{"result":"invoice 7: approved"}}'* ]]
}

@test "runs respond: a run that asks again is 4 with its new question; --no-wait; --timeout" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    "$WF_MKWAITING" "$T/w.db" "$WF_TP" twice t1 '{}'
    run --separate-stderr "$WF" runs respond t1 "$WF_TP" --store "$T/w.db" --event '{"response": "A"}'
    [ "$status" -eq 4 ]
    [ "$output" = '{"type":"InputRequiredEvent","value":{"prefix":"second?"}}' ]
    [ "$stderr" = "wf runs: waiting for input again: run 't1' is kept in the store" ]
    # the first answer was kept across the processes; the envelope form
    run --separate-stderr "$WF" runs respond t1 "$WF_TP" twice --store "$T/w.db" \
        --event '{"type": "HumanResponseEvent", "value": {"response": "B"}}'
    [ "$status" -eq 0 ]
    [ "$output" = '"A+B"' ]
    # --no-wait: sent, the run left in flight; the next respond continues it
    # to its second question first, then answers that
    "$WF_MKWAITING" "$T/w.db" "$WF_TP" twice t2 '{}'
    run --separate-stderr "$WF" runs respond t2 "$WF_TP" --store "$T/w.db" --event '{"response": "C"}' --no-wait
    [ "$status" -eq 0 ]
    [ "$output" = '{"run_id":"t2","status":"sent"}' ]
    run --separate-stderr "$WF" runs show t2 --store "$T/w.db"
    [[ "$output" == *'"result":null'* ]]
    [[ "$output" != *'"status":"done"'* ]]
    run --separate-stderr "$WF" runs respond t2 "$WF_TP" --store "$T/w.db" --event '{"response": "D"}'
    [ "$status" -eq 0 ]
    [ "$output" = '"C+D"' ]
    # --timeout: a run blocked in a step (gated, on a FIFO) does not reach its
    # wait in time: 3; the step is let go after the message (the command's
    # shutdown waits for it)
    mkfifo "$T/gate"
    "$WF_MKWAITING" "$T/w.db" "$WF_TP" gated g1 "{\"gate\": \"$T/gate\"}" crash
    exec 7<> "$T/gate"   # (not fd 3: bats's) a writer, so nothing blocks on opening it
    "$WF" runs respond g1 "$WF_TP" --store "$T/w.db" --event '{"response": "x"}' --timeout 0.3 \
        > "$T/o" 2> "$T/e" &
    pid=$!
    until grep -q "timed out" "$T/e"; do :; done
    echo let-go >&7
    st=0; wait "$pid" || st=$?
    exec 7>&-
    [ "$st" -eq 3 ]
    [ "$(cat "$T/e")" = "wf runs: timed out: run 'g1' did not reach its wait; it goes on, checkpointed in the store" ]
    [ ! -s "$T/o" ]
    # not lost, not cancelled: still in flight, or (the step let go before the
    # shutdown's checkpoint) ended with the gate's line
    run --separate-stderr "$WF" runs show g1 --store "$T/w.db"
    [[ "$output" == *'"status":"running"'*'"result":null'* ||
       "$output" == *'"status":"done"'*'"result":{"type":"StopEvent","value":{"result":"let-go"}}'* ]]
}

@test "runs respond: Ctrl-C is 130 and leaves the run in the store" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    mkfifo "$T/gate"
    "$WF_MKWAITING" "$T/w.db" "$WF_TP" gated g2 "{\"gate\": \"$T/gate\"}" crash
    "$WF" runs respond g2 "$WF_TP" --store "$T/w.db" --event '{"response": "x"}' > "$T/o" 2> "$T/e" &
    pid=$!
    # opening the gate for writing returns once the recovered step opened it to
    # read: respond is then waiting for the run, its signal thread started
    exec 7> "$T/gate"
    kill -INT "$pid"
    until grep -q "interrupted" "$T/e"; do :; done
    echo let-go >&7   # the step returns: the command's shutdown waits for it
    st=0; wait "$pid" || st=$?
    exec 7>&-
    [ "$st" -eq 130 ]
    [ "$(cat "$T/e")" = "wf runs: interrupted: run 'g2' goes on, checkpointed in the store" ]
    [ ! -s "$T/o" ]
    run --separate-stderr "$WF" runs show g2 --store "$T/w.db"
    [[ "$output" == *'"status":"running"'*'"result":null'* ||
       "$output" == *'"status":"done"'*'"result":{"type":"StopEvent","value":{"result":"let-go"}}'* ]]
}

@test "runs respond: another workflow is 2, another live owner's run is 1" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    "$WF_MKWAITING" "$T/w.db" "$WF_HITL" approval r1 '{"item": "pen"}'
    run --separate-stderr "$WF" runs respond r1 "$WF_HITL" other --store "$T/w.db" --event '{}'
    [ "$status" -eq 2 ]
    [ "$stderr" = "wf runs: run 'r1' is a run of workflow 'approval', not 'other'" ]
    # a run another live process holds (its lease runs for an hour)
    "$WF_MKWAITING" "$T/w.db" "$WF_HITL" approval r2 '{"item": "pen"}' worker-b
    run --separate-stderr "$WF" runs respond r2 "$WF_HITL" --store "$T/w.db" --event '{"response": "yes"}'
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"run 'r2' is held by worker-b (lease until "*"): answer it through that process"* ]]
    # r1 was not touched by those: it answers
    run --separate-stderr "$WF" runs respond r1 "$WF_HITL" --store "$T/w.db" --event '{"response": "no"}'
    [ "$status" -eq 0 ]
    [ "$output" = '"pen: rejected"' ]
}

@test "run --store: a rerun of a waiting run says its question again (4); of another workflow 2" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    run --separate-stderr "$WF" run "$WF_HITL" --store "$T/r.db" --run-id h --input '{"item": "x"}'
    [ "$status" -eq 4 ]
    # a rerun: released, it is not run again; its question from the store
    run --separate-stderr "$WF" run "$WF_HITL" --store "$T/r.db" --run-id h --input '{"item": "other"}'
    [ "$status" -eq 4 ]
    [ "$output" = '{"type":"InputRequiredEvent","value":{"prefix":"Approve x?"}}' ]
    [[ "$stderr" == *"waiting for input: run 'h' is kept in the store"* ]]
    # left in flight by a stopped process: continued here until it waits, released
    "$WF_MKWAITING" "$T/r.db" "$WF_HITL" approval h2 '{"item": "y"}'
    run --separate-stderr "$WF" run "$WF_HITL" --store "$T/r.db" --run-id h2
    [ "$status" -eq 4 ]
    [ "$output" = '{"type":"InputRequiredEvent","value":{"prefix":"Approve y?"}}' ]
    run --separate-stderr "$WF" runs list --store "$T/r.db" --json --status released
    [[ "$output" == *'"run_id":"h2"'* ]]
    run --separate-stderr "$WF" run "$WF_TP" echo --store "$T/r.db" --run-id h
    [ "$status" -eq 2 ]
    [ "$stderr" = "wf run: run 'h' in the store is a run of workflow 'approval', not 'echo'" ]
    run --separate-stderr "$WF" run "$WF_TP" echo --store "$T/r.db" --run-id ''
    [ "$status" -eq 2 ]
    [[ "$stderr" == *"--run-id wants 1 to 1024 bytes"* ]]
}

@test "run --store: a run killed with SIGKILL in a step is continued by a rerun" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    mkfifo "$T/out" "$T/gate"
    in="{\"gate\": \"$T/gate\"}"
    "$WF" run "$WF_TP" gated --store "$T/r.db" --run-id k --input "$in" --stream > "$T/out" 2> "$T/err" &
    pid=$!
    read -r line < "$T/out"   # the step runs: it streamed Busy and blocks on the gate
    [[ "$line" == *'"type":"Busy"'* ]]
    # until the store has the Busy event, journaled after the start event: the start is durable
    until "$WF" runs show k --store "$T/r.db" 2> /dev/null | grep -q '"by_kind":{"event":1,"send":1}'; do :; done
    kill -KILL "$pid"
    st=0; wait "$pid" || st=$?
    [ "$st" -eq 137 ]
    # the rerun continues run k, with its stored start event (this --input would
    # fail the step): the step runs again and blocks on the gate until we write
    "$WF" run "$WF_TP" gated --store "$T/r.db" --run-id k --input '{"gate": "/nonexistent"}' > "$T/res" 2> "$T/err2" &
    pid=$!
    exec 7<> "$T/gate"; echo opened >&7   # (read-write: never blocks, even if nothing reads)
    st=0; wait "$pid" || st=$?
    exec 7>&-
    [ "$st" -eq 0 ]
    [ "$(cat "$T/res")" = '"opened"' ]
    run --separate-stderr "$WF" runs list --store "$T/r.db" --json
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *'"run_id":"k","workflow":"gated","status":"done"'* ]]
}

@test "run --store: a run whose process died with its start durable is recovered, not restarted" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    mkfifo "$T/gate"
    # the run starts, its start committed, and the process dies inside the step
    "$WF_MKWAITING" "$T/r.db" "$WF_TP" gated c1 "{\"gate\": \"$T/gate\"}" crash
    run --separate-stderr "$WF" runs show c1 --store "$T/r.db"
    [[ "$output" == *'"status":"running"'* ]]
    # a rerun with another input: the stored start event is the one that runs
    "$WF" run "$WF_TP" gated --store "$T/r.db" --run-id c1 --input '{"gate": "/nonexistent"}' > "$T/res" 2> "$T/err" &
    pid=$!
    exec 7<> "$T/gate"; echo recovered >&7   # (read-write: never blocks, even if nothing reads)
    st=0; wait "$pid" || st=$?
    exec 7>&-
    [ "$st" -eq 0 ]
    [ "$(cat "$T/res")" = '"recovered"' ]
    # and in a batch: line 2's run c2 is in flight in the store when the batch starts
    "$WF_MKWAITING" "$T/r.db" "$WF_TP" gated c2 "{\"gate\": \"$T/gate\"}" crash
    echo ok > "$T/open"
    printf '{"id": "c1", "gate": "%s"}\n{"id": "c2", "gate": "/nonexistent"}\n{"id": "c3", "gate": "%s"}\n' \
        "$T/open" "$T/open" > "$T/in.jsonl"
    "$WF" batch "$WF_TP" gated --inputs "$T/in.jsonl" --store "$T/r.db" > "$T/out" 2> "$T/err" &
    pid=$!
    exec 7<> "$T/gate"; echo again >&7   # (read-write: never blocks, even if nothing reads)
    st=0; wait "$pid" || st=$?
    exec 7>&-
    [ "$st" -eq 0 ]
    [ "$(wc -l < "$T/out")" -eq 3 ]
    grep -q '"id":"c1","stored":true,"status":"done","result":"recovered"' "$T/out"
    # (stored: the recovered run ended before the batch read its line)
    grep -q '"id":"c2",\("stored":true,\)\?"status":"done","result":"again"' "$T/out"
    grep -q '"id":"c3","status":"done","result":"ok"' "$T/out"
}

@test "batch --store: killed with SIGKILL mid-batch, a rerun gives every result exactly once" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    echo ok > "$T/open"
    mkfifo "$T/gate"
    for i in $(seq 1 50); do
        g="$T/open"; [ "$i" -eq 25 ] && g="$T/gate"
        echo "{\"id\": \"n$i\", \"gate\": \"$g\"}"
    done > "$T/in.jsonl"
    "$WF" batch "$WF_TP" gated --inputs "$T/in.jsonl" --store "$T/b.db" --jobs 4 \
        --out "$T/out1" 2> /dev/null &
    pid=$!
    exec 7> "$T/gate"   # (not fd 3: bats's) returns once line 25's step has opened the gate: mid-batch
    kill -KILL "$pid"
    st=0; wait "$pid" || st=$?
    exec 7>&-
    [ "$st" -eq 137 ]
    # the rerun: stored results for what ended, the runs in flight continued,
    # the rest started; line 25's step runs again and reads the gate
    "$WF" batch "$WF_TP" gated --inputs "$T/in.jsonl" --store "$T/b.db" --jobs 4 \
        --out "$T/out2" 2> "$T/err" &
    pid=$!
    exec 7<> "$T/gate"; echo late >&7   # (read-write: never blocks, even if nothing reads)
    st=0; wait "$pid" || st=$?
    exec 7>&-
    [ "$st" -eq 0 ]
    [ "$(wc -l < "$T/out2")" -eq 50 ]
    [ "$(grep -o '"id":"n[0-9]*"' "$T/out2" | sort -u | wc -l)" -eq 50 ]
    [ "$(grep -c '"status":"done","result":"ok"' "$T/out2")" -eq 49 ]
    grep -q '"id":"n25",\("stored":true,\)\?"status":"done","result":"late"' "$T/out2"
    run --separate-stderr "$WF" runs list --store "$T/b.db" --status done --json
    [ "${#lines[@]}" -eq 50 ]
    # and a third pass runs nothing: every line is its stored result
    run --separate-stderr "$WF" batch "$WF_TP" gated --inputs "$T/in.jsonl" --store "$T/b.db"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 50 ]
    [ "$(grep -c '"stored":true,"status":"done"' <<< "$output")" -eq 50 ]
}

# ---- wf serve --store: durable runs through the HTTP API

@test "serve --store: runs outlive the server; after a restart results, handlers and events work" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    command -v curl > /dev/null || skip "no curl"
    # a run released into the store by wf run (it waits for input) before the server starts
    run --separate-stderr "$WF" run "$WF_HITL" --store "$T/s.db" --run-id rel --input '{"item": "cup"}'
    [ "$status" -eq 4 ]
    start_serve "$WF_QS" "$WF_HITL" --store "$T/s.db"
    u="http://127.0.0.1:$port"
    run curl -s -XPOST "$u/workflows/approval/run-nowait" -d '{"handler_id": "h1", "start_event": {"item": "pen"}}'
    [[ "$output" == '{"handler_id":"h1","workflow_name":"approval",'*'"status":"running"'* ]]
    run curl -s -XPOST "$u/workflows/MyWorkflow/run" -d '{"handler_id": "q1", "start_event": {"data": "abc"}}'
    [[ "$output" == '{"handler_id":"q1",'*'"status":"completed"'* ]]
    # a handler id is its durable run's for good
    run curl -s -w ' %{http_code}' -XPOST "$u/workflows/MyWorkflow/run" -d '{"handler_id": "q1"}'
    [ "$output" = '{"detail":"Handler q1 already exists in the store"} 409' ]
    # h1 asks (its stream says so) and waits; then the server stops
    exec 5< <(curl -sN "$u/events/h1?sse=false&after_sequence=-1")
    while read -r line <&5; do [[ "$line" == *'"type":"InputRequiredEvent"'* ]] && break; done
    kill -TERM "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&- 5<&-
    [ "$st" -eq 0 ]
    rm "$T/serve.out"
    # in the store: h1 in flight (not cancelled by the stop), held by the server's owner
    run --separate-stderr "$WF" runs list --store "$T/s.db" --json
    [[ "$output" == *'"run_id":"h1","workflow":"approval","status":"'*'","owner":"wf-serve"'* ]]
    [[ "$output" == *'"run_id":"q1","workflow":"MyWorkflow","status":"done"'* ]]
    [[ "$output" != *'"status":"cancelled"'* ]]
    run --separate-stderr "$WF" runs respond h1 "$WF_HITL" --store "$T/s.db" --event '{"response": "no"}'
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"run 'h1' is held by wf-serve"* ]]
    # the restart: every run of the store is a handler again
    start_serve "$WF_QS" "$WF_HITL" --store "$T/s.db"
    u="http://127.0.0.1:$port"
    run curl -s "$u/handlers"
    [[ "$output" == *'"handler_id":"rel","workflow_name":"approval",'*'"status":"running"'* ]]
    [[ "$output" == *'"handler_id":"h1","workflow_name":"approval",'*'"status":"running"'* ]]
    [[ "$output" == *'"handler_id":"q1","workflow_name":"MyWorkflow",'*'"status":"completed"'* ]]
    run curl -s -w ' %{http_code}' "$u/results/q1"
    [[ "$output" == '{"handler_id":"q1",'*'"result":"Processed 1 times, data length: 3","status":"completed"'*' 200' ]]
    run curl -s -w ' %{http_code}' "$u/results/h1"
    [[ "$output" == *'"status":"running"'*' 202' ]]
    # the recovered run (in memory again) and the released one (loaded by the event) answer
    for h in h1 rel; do
        run curl -s -XPOST "$u/events/$h" -d '{"event": {"type": "HumanResponseEvent", "value": {"response": "yes"}}}'
        [ "$output" = '{"status":"sent"}' ]
        curl -s "$u/events/$h?sse=false&after_sequence=-1" > /dev/null   # it ends with the run
    done
    run curl -s -w ' %{http_code}' "$u/results/h1"
    [[ "$output" == *'"result":"pen: approved","status":"completed"'*' 200' ]]
    run curl -s -w ' %{http_code}' "$u/results/rel"
    [[ "$output" == *'"result":"cup: approved","status":"completed"'*' 200' ]]
    kill -TERM "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&-
    [ "$st" -eq 0 ]
    run --separate-stderr "$WF" runs list --store "$T/s.db" --json --status done
    [ "${#lines[@]}" -eq 3 ]
    # --max-handlers bounds what a start loads: the newest ended runs (creation order)
    rm "$T/serve.out"
    start_serve "$WF_QS" "$WF_HITL" --store "$T/s.db" --max-handlers 1
    run curl -s "http://127.0.0.1:$port/handlers"
    [[ "$output" == '{"handlers":[{"handler_id":"q1",'*'}]}' ]]
    [[ "$output" != *'"handler_id":"h1"'* ]]
    kill -TERM "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&-
    [ "$st" -eq 0 ]
}

@test "serve --store: 300 recovered runs, no thread each, every end seen" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    command -v curl > /dev/null || skip "no curl"
    [ -r /proc/self/status ] || skip "no /proc"
    n=300
    start_serve "$WF_HITL" --store "$T/m.db" --threads 2
    u="http://127.0.0.1:$port"
    for i in $(seq 1 $n); do
        printf 'next\nrequest = "POST"\nurl = "%s/workflows/approval/run-nowait"\ndata = "{\\"handler_id\\": \\"m%d\\", \\"start_event\\": {\\"item\\": \\"i%d\\"}}"\n' "$u" "$i" "$i"
    done > "$T/start.cfg"
    curl -s -K "$T/start.cfg" > "$T/started"
    [ "$(grep -o '"handler_id":"m[0-9]*"' "$T/started" | sort -u | wc -l)" -eq $n ]
    kill -TERM "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&-
    [ "$st" -eq 0 ]
    run --separate-stderr "$WF" runs list --store "$T/m.db" --json --status inflight
    [ "${#lines[@]}" -eq $n ]
    rm "$T/serve.out"
    start_serve "$WF_HITL" --store "$T/m.db" --threads 2
    u="http://127.0.0.1:$port"
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
    echo "threads after recovering $n runs: $threads"
    [ "$threads" -lt 40 ]
    run curl -s -w ' %{http_code}' "$u/results/m7"
    [[ "$output" == *'"status":"running"'*' 202' ]]
    for i in $(seq 1 $n); do
        printf 'next\nrequest = "POST"\nurl = "%s/events/m%d"\ndata = "{\\"event\\": {\\"type\\": \\"HumanResponseEvent\\", \\"value\\": {\\"response\\": \\"yes\\"}}}"\n' "$u" "$i"
    done > "$T/answer.cfg"
    curl -s -K "$T/answer.cfg" > "$T/sent"
    [ "$(grep -c '{"status":"sent"}' <(sed 's/}{/}\n{/g' "$T/sent"))" -eq $n ]
    # every record says completed once its run's end was seen (its end
    # callback, wf_handler_on_done), without a request of ours doing it
    for i in 1 7 150 $n; do
        until curl -s "$u/results/m$i" | grep -q '"status":"completed"'; do :; done
        run curl -s -w ' %{http_code}' "$u/results/m$i"
        [[ "$output" == *"\"result\":\"i$i: approved\",\"status\":\"completed\""*' 200' ]]
    done
    until [ "$(curl -s "$u/handlers" | grep -o '"status":"completed"' | wc -l)" -eq $n ]; do :; done
    kill -TERM "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&-
    [ "$st" -eq 0 ]
    run --separate-stderr "$WF" runs list --store "$T/m.db" --json --status done
    [ "${#lines[@]}" -eq $n ]
}

@test "serve --store: a run in a step when the server is killed (SIGKILL) is continued by the next one" {
    [ -n "$WF_MKWAITING" ] || skip "built without SQLite"
    command -v curl > /dev/null || skip "no curl"
    mkfifo "$T/gate"
    start_serve "$WF_TP" --store "$T/s.db"
    u="http://127.0.0.1:$port"
    run curl -s -XPOST "$u/workflows/gated/run-nowait" -d "{\"handler_id\": \"g1\", \"start_event\": {\"gate\": \"$T/gate\"}}"
    [[ "$output" == '{"handler_id":"g1","workflow_name":"gated",'* ]]
    # until the store has its start event (a "send"): the run is durable
    until "$WF" runs show g1 --store "$T/s.db" 2> /dev/null | grep -q '"by_kind":{.*"send":1'; do :; done
    kill -KILL "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&-
    [ "$st" -eq 137 ]
    rm "$T/serve.out"
    # the next server recovers g1 (the same owner: at once); its step runs again
    start_serve "$WF_TP" --store "$T/s.db"
    u="http://127.0.0.1:$port"
    run curl -s -w ' %{http_code}' "$u/handlers/g1"
    [[ "$output" == '{"handler_id":"g1","workflow_name":"gated",'*'"status":"running"'*' 202' ]]
    exec 7<> "$T/gate"; echo after-crash >&7
    curl -s "$u/events/g1?sse=false&after_sequence=-1" > /dev/null   # it ends with the run
    exec 7>&-
    run curl -s -w ' %{http_code}' "$u/results/g1"
    [[ "$output" == *'"result":"after-crash","status":"completed"'*' 200' ]]
    kill -TERM "$pid"
    st=0; wait "$pid" || st=$?
    exec 6<&-
    [ "$st" -eq 0 ]
    run --separate-stderr "$WF" runs list --store "$T/s.db" --json
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *'"run_id":"g1","workflow":"gated","status":"done"'* ]]
}
