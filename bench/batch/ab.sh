#!/bin/sh
# bench/batch/ab.sh OLD_BUILD NEW_BUILD [N] [REPS]: `wf
# batch` of N (1,000,000) quick-start inputs with two builds, interleaved
# old, new, old, new ... REPS (5) pairs after a discarded warm-up pair. On a
# shared machine the ratio of adjacent runs holds where absolute rates move.
# One JSON line per pair (runs/s and CPU time per run), then the medians
# and the median of new/old runs/s (> 1: new is faster). Builds are directories with tools/wf and
# examples/quickstart.so (any buildtype: say which in the report).
set -eu
old="$1"; new="$2"; n="${3:-1000000}"; reps="${4:-5}"
here=$(cd "$(dirname "$0")" && pwd)
for b in "$old" "$new"; do
  [ -x "$b/tools/wf" ] && [ -f "$b/examples/quickstart.so" ] || { echo "no $b/tools/wf or $b/examples/quickstart.so" >&2; exit 2; }
done
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295:glibc.malloc.top_pad=268435456
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$here/gen_inputs.sh" "$n" "$tmp/in.jsonl"
one() { # BUILD -> "runs/s cpu_us_per_run" on stdout (checks every line came back done)
  /usr/bin/time -f 'cpu %U %S' -o "$tmp/time" \
    "$1/tools/wf" batch "$1/examples/quickstart.so" --inputs "$tmp/in.jsonl" --out "$tmp/out.jsonl" --progress none 2> "$tmp/err" ||
    { cat "$tmp/err" >&2; exit 1; }
  [ "$(grep -c '"status":"done"' "$tmp/out.jsonl")" -eq "$n" ] || { echo "not every line done ($1)" >&2; exit 1; }
  secs=$(sed -n 's/^wf batch: [0-9]* runs in \([0-9.]*\) s.*/\1/p' "$tmp/err")
  cpu=$(sed -n 's/^cpu //p' "$tmp/time")
  awk -v n="$n" -v s="$secs" -v c="$cpu" 'BEGIN { split(c, t, " "); printf "%.0f %.2f\n", n / s, (t[1] + t[2]) * 1e6 / n }'
}
one "$old" >/dev/null; one "$new" >/dev/null
as="" bs="" rs="" ac="" bc=""
i=0
while [ "$i" -lt "$reps" ]; do
  i=$((i + 1))
  set -- $(one "$old"); a=$1; acpu=$2
  set -- $(one "$new"); b=$1; bcpu=$2
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
  printf '{"bench":"batch_ab","pair":%s,"old_runs_per_s":%s,"new_runs_per_s":%s,"old_cpu_us_per_run":%s,"new_cpu_us_per_run":%s,"new_over_old":%s,"load":"%s"}\n' \
    "$i" "$a" "$b" "$acpu" "$bcpu" "$r" "$(cut -d' ' -f1 /proc/loadavg)"
  as="$as $a" bs="$bs $b" rs="$rs $r" ac="$ac $acpu" bc="$bc $bcpu"
done
med() { printf '%s\n' $* | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '{"bench":"batch_ab","n":%s,"pairs":%s,"old":"%s","new":"%s","old_median_runs_per_s":%s,"new_median_runs_per_s":%s,"old_median_cpu_us":%s,"new_median_cpu_us":%s,"median_new_over_old":%s}\n' \
  "$n" "$reps" "$old" "$new" "$(med $as)" "$(med $bs)" "$(med $ac)" "$(med $bc)" "$(med $rs)"
