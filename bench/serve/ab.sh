#!/bin/sh
# bench/serve/ab.sh OLD_BUILD NEW_BUILD [SECONDS] [REPS] [CONNECTIONS]: the
# serve_runs load of run.sh (wrk, POST /workflows/MyWorkflow/run, 64
# connections over loopback) against two builds' `wf serve`, both running,
# in rounds of SECONDS (3) interleaved old, new, old, new ... REPS (5) pairs
# after a warm-up of each. One JSON line per round with the server's CPU
# time per run (from /proc), then the medians and the median of the pairs'
# new/old runs/s (> 1: new is faster). Extra server options in
# WF_SERVE_OLD_ARGS / WF_SERVE_NEW_ARGS (e.g. "--http-threads 1").
set -eu
old="$1"; new="$2"; secs="${3:-3}"; reps="${4:-5}"; conns="${5:-64}"
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 77; }
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295:glibc.malloc.top_pad=268435456
tmp=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
start() { # NAME BUILD ARGS -> sets url_NAME pid_NAME
  # shellcheck disable=SC2086
  "$2/tools/wf" serve "$2/examples/quickstart.so" --listen 127.0.0.1:0 --max-handlers 10000 $3 >"$tmp/$1.out" 2>"$tmp/$1.err" &
  p=$!; pids="$pids $p"
  i=0
  until grep -q '^listening on ' "$tmp/$1.out" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -le 300 ] || { cat "$tmp/$1.err" >&2; exit 1; }
    kill -0 "$p" 2>/dev/null || { cat "$tmp/$1.err" >&2; exit 1; }
    sleep 0.1
  done
  eval "url_$1=\$(sed -n 's/^listening on //p' \"\$tmp/\$1.out\") pid_$1=$p"
}
start old "$old" "${WF_SERVE_OLD_ARGS:-}"
start new "$new" "${WF_SERVE_NEW_ARGS:-}"
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
round() { # NAME -> "runs/s cpu_us_per_run"
  eval "u=\$url_$1 p=\$pid_$1"
  c0=$(cpu_ticks "$p")
  line=$(WRK_CONNECTIONS="$conns" wrk -t2 -c"$conns" -d"${secs}s" -s "$here/run.lua" "$u/workflows/MyWorkflow/run" | grep '^{')
  c1=$(cpu_ticks "$p")
  echo "$line" | grep -q '"non_2xx":0,"socket_errors":0' || { echo "errors: $line" >&2; exit 1; }
  rate=$(echo "$line" | sed 's/.*"runs_per_s":\([0-9]*\).*/\1/')
  reqs=$(echo "$line" | sed 's/.*"requests":\([0-9]*\).*/\1/')
  awk -v r="$rate" -v a="$c0" -v b="$c1" -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%s %.1f\n", r, (b - a) * 1e6 / hz / n }'
}
round old >/dev/null; round new >/dev/null
as="" bs="" rs="" ac="" bc=""
i=0
while [ "$i" -lt "$reps" ]; do
  i=$((i + 1))
  set -- $(round old); a=$1; acpu=$2
  set -- $(round new); b=$1; bcpu=$2
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
  printf '{"bench":"serve_runs_ab","pair":%s,"old_runs_per_s":%s,"new_runs_per_s":%s,"old_cpu_us_per_run":%s,"new_cpu_us_per_run":%s,"new_over_old":%s,"load":"%s"}\n' \
    "$i" "$a" "$b" "$acpu" "$bcpu" "$r" "$(cut -d' ' -f1 /proc/loadavg)"
  as="$as $a" bs="$bs $b" rs="$rs $r" ac="$ac $acpu" bc="$bc $bcpu"
done
med() { printf '%s\n' $* | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '{"bench":"serve_runs_ab","connections":%s,"pairs":%s,"old":"%s %s","new":"%s %s","old_median_runs_per_s":%s,"new_median_runs_per_s":%s,"old_median_cpu_us":%s,"new_median_cpu_us":%s,"median_new_over_old":%s}\n' \
  "$conns" "$reps" "$old" "${WF_SERVE_OLD_ARGS:-}" "$new" "${WF_SERVE_NEW_ARGS:-}" "$(med $as)" "$(med $bs)" "$(med $ac)" "$(med $bc)" "$(med $rs)"
