#!/bin/bash
# bench/serve/interleave.sh ROUNDS SECONDS BUILD_DIR[,ARG...]... : the serve_runs load
# (wrk -t2 -c64, POST /workflows/MyWorkflow/run of the quick start) on each
# build's `wf serve` in turn, one server at a time, ROUNDS times, so that
# every build sees the host's good and bad seconds alike. One JSON line per
# round (runs/s, the server's CPU µs per run from /proc, its voluntary and
# involuntary context switches per run, all threads), then a median line per
# build. The servers run with their defaults and the ARGs after the build
# directory (e.g. build-release,--steps-on-workers), which name it in the lines.
set -eu
rounds="$1"; secs="$2"; shift 2
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 77; }
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295:glibc.malloc.top_pad=268435456
export WRK_CONNECTIONS=64
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary/ { v += $2 } /^nonvoluntary/ { n += $2 } END { print v, n }'; }
one() { # BUILD[,ARG...] ROUND
  IFS=, read -r -a spec <<< "$1"
  "${spec[0]}/tools/wf" serve "${spec[0]}/examples/quickstart.so" --listen 127.0.0.1:0 \
    --max-handlers 10000 "${spec[@]:1}" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  i=0
  until grep -q '^listening on ' "$tmp/out" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -le 300 ] || { cat "$tmp/err" >&2; exit 1; }
    sleep 0.1
  done
  url=$(sed -n 's/^listening on //p' "$tmp/out")
  wrk -t2 -c64 -d1s -s "$here/run.lua" "$url/workflows/MyWorkflow/run" >/dev/null
  read -r v0 n0 < <(switches "$pid")
  c0=$(awk '{ print $14 + $15 }' /proc/"$pid"/stat)
  line=$(wrk -t2 -c64 -d"${secs}s" -s "$here/run.lua" "$url/workflows/MyWorkflow/run" | grep '^{')
  c1=$(awk '{ print $14 + $15 }' /proc/"$pid"/stat)
  read -r v1 n1 < <(switches "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  n=$(echo "$line" | sed 's/.*"requests":\([0-9]*\).*/\1/')
  r=$(echo "$line" | sed 's/.*"runs_per_s":\([0-9]*\).*/\1/')
  awk -v b="$1" -v round="$2" -v r="$r" -v n="$n" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" \
      -v v="$((v1 - v0))" -v nv="$((n1 - n0))" 'BEGIN {
    printf "{\"bench\":\"serve_interleave\",\"build\":\"%s\",\"round\":%d,\"runs_per_s\":%d,\"server_cpu_us_per_run\":%.1f,\"vcs_per_run\":%.2f,\"ivcs_per_run\":%.2f}\n",
      b, round, r, (n > 0 ? c * 1e6 / hz / n : 0), (n > 0 ? v / n : 0), (n > 0 ? nv / n : 0) }' | tee -a "$tmp/all"
}
for round in $(seq "$rounds"); do
  for b in "$@"; do one "$b" "$round"; done
done
for b in "$@"; do
  grep "\"build\":\"$b\"" "$tmp/all" | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin]
med = lambda k: statistics.median(r[k] for r in rows)
print(json.dumps({"bench": "serve_interleave_median", "build": sys.argv[1], "rounds": len(rows),
                  "runs_per_s": med("runs_per_s"), "server_cpu_us_per_run": med("server_cpu_us_per_run"),
                  "vcs_per_run": med("vcs_per_run"), "ivcs_per_run": med("ivcs_per_run")}))' "$b"
done
