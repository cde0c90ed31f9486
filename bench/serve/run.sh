#!/bin/sh
# bench/serve/run.sh [BUILD_DIR] [SECONDS] [ROUNDS] [CONNECTIONS]: runs per
# second of the quick start through `POST /workflows/MyWorkflow/run` of
# `wf serve`, driven by wrk (Debian) over loopback with CONNECTIONS (64)
# keep-alive connections on 2 wrk threads, SECONDS (10) per round, ROUNDS (3)
# rounds; one JSON line per round, then the median. The server runs with
# the other benchmarks' malloc settings (docs PITFALLS) and its default
# threads (the cores); it shares the machine with wrk.
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
until grep -q '^listening on ' "$tmp/out"; do
  i=$((i + 1)); [ "$i" -le 300 ] || { cat "$tmp/err" >&2; exit 1; }
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/err" >&2; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$tmp/out")
export WRK_CONNECTIONS="$conns" WF_THREADS="$(nproc)"
# one short warm-up, not reported
wrk -t2 -c"$conns" -d2s -s "$here/run.lua" "$url/workflows/MyWorkflow/run" >/dev/null
rates=""
r=0
while [ "$r" -lt "$rounds" ]; do
  r=$((r + 1))
  line=$(ROUND=$r wrk -t2 -c"$conns" -d"${secs}s" -s "$here/run.lua" "$url/workflows/MyWorkflow/run" | grep '^{')
  echo "$line"
  rates="$rates $(echo "$line" | sed 's/.*"runs_per_s":\([0-9]*\).*/\1/')"
done
median=$(printf '%s\n' $rates | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
printf '{"bench":"serve_runs","impl":"wf-serve","connections":%s,"rounds":%s,"median_runs_per_s":%s}\n' "$conns" "$rounds" "$median"
