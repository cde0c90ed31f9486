#!/bin/sh
# bench/serve/ab_concurrent.sh OLD_BUILD NEW_BUILD [SECONDS] [REPS]
# [CONNECTIONS]: both builds' `wf serve` under the serve_runs load at the
# same time, each with its own wrk (1 thread, CONNECTIONS (64) connections,
# POST /workflows/MyWorkflow/run), REPS (5) rounds of SECONDS (5). On a
# machine shared with other work, both servers see the same load in the
# same seconds; the ratio of the runs each completed is the comparison
# (> 1: new did more). One JSON line per round, then the median ratio.
set -eu
old="$1"; new="$2"; secs="${3:-5}"; reps="${4:-5}"; conns="${5:-64}"
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 77; }
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295:glibc.malloc.top_pad=268435456
tmp=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
start() { # NAME BUILD -> url in $tmp/NAME.url
  "$2/tools/wf" serve "$2/examples/quickstart.so" --listen 127.0.0.1:0 --max-handlers 10000 >"$tmp/$1.out" 2>"$tmp/$1.err" &
  p=$!; pids="$pids $p"
  i=0
  until grep -q '^listening on ' "$tmp/$1.out" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -le 300 ] || { cat "$tmp/$1.err" >&2; exit 1; }
    kill -0 "$p" 2>/dev/null || { cat "$tmp/$1.err" >&2; exit 1; }
    sleep 0.1
  done
  sed -n 's/^listening on //p' "$tmp/$1.out" > "$tmp/$1.url"
}
start old "$old"; start new "$new"
uo=$(cat "$tmp/old.url"); un=$(cat "$tmp/new.url")
both() { # SECONDS -> "old_requests new_requests"
  wrk -t1 -c"$conns" -d"$1s" -s "$here/run.lua" "$uo/workflows/MyWorkflow/run" > "$tmp/wo" &
  a=$!
  wrk -t1 -c"$conns" -d"$1s" -s "$here/run.lua" "$un/workflows/MyWorkflow/run" > "$tmp/wn" &
  b=$!
  wait "$a" "$b"
  for f in wo wn; do
    grep -q '"non_2xx":0,"socket_errors":0' "$tmp/$f" || { echo "errors: $(cat "$tmp/$f")" >&2; exit 1; }
  done
  echo "$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$tmp/wo") $(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$tmp/wn")"
}
both 2 >/dev/null
rs=""
i=0
while [ "$i" -lt "$reps" ]; do
  i=$((i + 1))
  set -- $(both "$secs")
  r=$(awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b / a }')
  printf '{"bench":"serve_runs_concurrent","round":%s,"old_runs_per_s":%.0f,"new_runs_per_s":%.0f,"new_over_old":%s,"load":"%s"}\n' \
    "$i" "$(echo "$1 / $secs" | bc -l)" "$(echo "$2 / $secs" | bc -l)" "$r" "$(cut -d' ' -f1 /proc/loadavg)"
  rs="$rs $r"
done
med() { printf '%s\n' $* | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '{"bench":"serve_runs_concurrent","connections":%s,"rounds":%s,"old":"%s","new":"%s","median_new_over_old":%s}\n' \
  "$conns" "$reps" "$old" "$new" "$(med $rs)"
