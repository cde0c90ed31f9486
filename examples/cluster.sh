#!/usr/bin/env bash
# examples/cluster.sh: wf on NATS JetStream on one machine (docs/CLUSTER.md):
# starts a nats-server (JetStream, loopback, a free port, a temporary store),
# two workers (`wf worker quickstart.so`), and pushes a batch of runs of the
# plugin's MyWorkflow through them (the submitter: tests/cluster_node).
#   examples/cluster.sh [BUILD_DIR] [RUNS]     (defaults: build-dev, 1000)
# Needs nats-server (Debian: nats-server) and a build with -Dnats enabled.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-dev}"
runs="${2:-1000}"
node="$build/tests/cluster_node"
wf="$build/tools/wf"
plugin="$build/examples/quickstart.so"
[ -x "$node" ] || { echo "no $node: build with -Dnats=enabled -Dtests=true" >&2; exit 1; }
[ -x "$wf" ] && [ -f "$plugin" ] || { echo "no $wf or $plugin: build with -Dexamples=true" >&2; exit 1; }
server="$(command -v nats-server || echo /usr/sbin/nats-server)"
[ -x "$server" ] || { echo "nats-server is not installed" >&2; exit 1; }

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
url="nats://127.0.0.1:$port"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

"$server" -js -a 127.0.0.1 -p "$port" -sd "$dir" >"$dir/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do  # up to 10 s for the server to listen
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "nats-server on $url"

for w in 1 2; do
  "$wf" worker "$plugin" --nats "$url" --prefix example --threads 1 >"$dir/worker$w.log" 2>&1 &
  pids+=($!)
done
for w in 1 2; do  # each worker prints "working: ..." once it pulls
  for _ in $(seq 100); do grep -q working "$dir/worker$w.log" 2>/dev/null && break; sleep 0.1; done
done
echo "two workers pulling; submitting $runs runs of MyWorkflow"
"$node" "$url" example submit "$runs" "$plugin" MyWorkflow
for w in 1 2; do kill -TERM "${pids[$w]}"; wait "${pids[$w]}" || true; done
for w in 1 2; do echo "worker $w: $(tail -1 "$dir/worker$w.log")"; done
