#!/bin/sh
# bench/batch/run.sh [BUILD_DIR] [N] [ROUNDS]: `wf batch` of N (1,000,000)
# quick-start inputs end to end (JSON lines in, JSON lines out, to a file),
# ROUNDS (3) times; one JSON line per round in bench/common.h's shape, then
# the median. The same malloc settings as the other benchmarks
# (docs/PITFALLS: no trimming, no mmap for big blocks). Input made by
# gen_inputs.sh, every line different ({"id":i,"data":"Hello, world! i"}).
set -eu
build="${1:-build-release}"; n="${2:-1000000}"; rounds="${3:-3}"
here=$(cd "$(dirname "$0")" && pwd)
wf="$build/tools/wf"; plugin="$build/examples/quickstart.so"
[ -x "$wf" ] && [ -f "$plugin" ] || { echo "build $build first (needs tools/wf and examples/quickstart.so)" >&2; exit 2; }
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295:glibc.malloc.top_pad=268435456
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$here/gen_inputs.sh" "$n" "$tmp/in.jsonl"
rates=""
i=0
while [ "$i" -lt "$rounds" ]; do
  i=$((i + 1))
  "$wf" batch "$plugin" --inputs "$tmp/in.jsonl" --out "$tmp/out.jsonl" --progress none 2> "$tmp/err" ||
    { cat "$tmp/err" >&2; exit 1; }
  # "wf batch: N runs in S s (R runs/s): ..."
  secs=$(sed -n 's/^wf batch: [0-9]* runs in \([0-9.]*\) s.*/\1/p' "$tmp/err")
  lines=$(wc -l < "$tmp/out.jsonl")
  done_lines=$(grep -c '"status":"done"' "$tmp/out.jsonl" || true)
  verified=false; [ "$lines" -eq "$n" ] && [ "$done_lines" -eq "$n" ] && verified=true
  rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  ns=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.2f", s * 1e9 / n }')
  rates="$rates $rate"
  printf '{"bench":"batch","impl":"wf-cli","threads":%s,"n":%s,"ns_per_event":%s,"events_per_s":%s,"seconds":%s,"round":%s,"verified":%s}\n' \
    "$(nproc)" "$n" "$ns" "$rate" "$secs" "$i" "$verified"
done
median=$(printf '%s\n' $rates | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
printf '{"bench":"batch","impl":"wf-cli","n":%s,"rounds":%s,"median_runs_per_s":%s}\n' "$n" "$rounds" "$median"
