#!/bin/sh
# bench/serve/run.sh [BUILD_DIR] [SECONDS] [ROUNDS] [CONNECTIONS]: runs per
# second of the quick start through `POST /workflows/MyWorkflow/run` of
# `wf serve`, driven by wrk (Debian) over loopback with CONNECTIONS (64)
# keep-alive connections on 2 wrk threads, SECONDS (10) per round, ROUNDS (3)
# rounds; one JSON line per round, then the median. The server runs with
# the other benchmarks' malloc settings (docs PITFALLS) and its default
# threads (the cores); it shares the machine with wrk. Each round also
# gives the server's CPU time per run (utime+stime of the process over the
# round, from /proc), and a last round of GET /health (no run: the HTTP
# layer and the loopback alone) gives the same for comparison.
set -eu
build="${1:-build-release}"; secs="${2:-10}"; rounds="${3:-3}"; conns="${4:-64}"
here=$(cd "$(dirname "$0")" && pwd)
wf="$build/tools/wf"; plugin="$build/examples/quickstart.so"
[ -x "$wf" ] && [ -f "$plugin" ] || { echo "build $build first (needs tools/wf and examples/quickstart.so)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 77; }
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295:glibc.malloc.top_pad=268435456
tmp=$(mktemp -d)
"$wf" serve "$plugin" --listen 127.0.0.1:0 --max-handlers 10000 >"$tmp/out" 2>"$tmp/err" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
# wait for the line with the port (bounded: 30 s)
i=0
until grep -q '^listening on ' "$tmp/out" 2>/dev/null; do
  i=$((i + 1)); [ "$i" -le 300 ] || { cat "$tmp/err" >&2; exit 1; }
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/err" >&2; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$tmp/out")
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
# per_req C0 C1 LINE: the server's CPU µs per request of a round
per_req() { awk -v a="$1" -v b="$2" -v hz="$hz" -v n="$(echo "$3" | sed 's/.*"requests":\([0-9]*\).*/\1/')" \
  'BEGIN { printf "%.1f", (n > 0 ? (b - a) * 1e6 / hz / n : 0) }'; }
export WRK_CONNECTIONS="$conns" WF_THREADS="$(nproc)"
# one short warm-up, not reported
wrk -t2 -c"$conns" -d2s -s "$here/run.lua" "$url/workflows/MyWorkflow/run" >/dev/null
rates=""
r=0
while [ "$r" -lt "$rounds" ]; do
  r=$((r + 1))
  c0=$(cpu_ticks)
  line=$(ROUND=$r wrk -t2 -c"$conns" -d"${secs}s" -s "$here/run.lua" "$url/workflows/MyWorkflow/run" | grep '^{')
  c1=$(cpu_ticks)
  echo "$line" | sed "s/}\$/,\"server_cpu_us_per_run\":$(per_req "$c0" "$c1" "$line")}/"
  rates="$rates $(echo "$line" | sed 's/.*"runs_per_s":\([0-9]*\).*/\1/')"
done
# the HTTP layer alone: GET /health, same connections and length
c0=$(cpu_ticks)
hl=$(wrk -t2 -c"$conns" -d"${secs}s" "$url/health" | sed -n 's/^ *\([0-9]*\) requests in \([0-9.]*\)s.*/\1 \2/p')
c1=$(cpu_ticks)
set -- $hl
printf '{"bench":"serve_health","impl":"wf-serve","connections":%s,"requests":%s,"requests_per_s":%.0f,"server_cpu_us_per_request":%s}\n' \
  "$conns" "$1" "$(awk -v n="$1" -v s="$2" 'BEGIN { print n / s }')" "$(per_req "$c0" "$c1" "\"requests\":$1")"
median=$(printf '%s\n' $rates | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
printf '{"bench":"serve_runs","impl":"wf-serve","connections":%s,"rounds":%s,"median_runs_per_s":%s}\n' "$conns" "$rounds" "$median"
