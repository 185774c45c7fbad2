#!/usr/bin/env bash
# The cost of tenancy on the hot path: the demo's three patterns over the
# example's 1,000 copies, against a server without tenants and one with a
# tenants file of 100 tenants (200 keys, each call's key checked against
# all of them), in the same run, alternating, two rounds. Each measurement
# also gives the server's CPU time per request (from /proc, over the whole
# call), which the load generator sharing the cores moves much less than
# it moves req/s.
# Usage: bench/tenants.sh [DURATION]   (default 8s per measurement)
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
duration=${1:-8s}
models=1000
work=target/bench-tenants
cargo build --release -p mme-host >/dev/null
cargo xtask package-examples --out "$work/examples" >/dev/null
mme=target/release/mme
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rm -rf "$work/store" && mkdir -p "$work/store"
for i in $(seq 0 $((models - 1))); do ln "$work/examples/linear-regression.tar.gz" "$work/store/m$i.tar.gz"; done
token=bench-token-0
{
  echo '[admin]'
  echo "keys = [\"sha256:$(printf %s admin-token | sha256sum | cut -d' ' -f1)\"]"
  for t in $(seq 0 99); do
    echo "[tenants.t$t]"
    if [ "$t" = 0 ]; then echo 'models = ["m*"]'; else echo "models = [\"t$t-*\"]"; fi
    echo "inference_keys = [\"sha256:$(printf %s "bench-token-$t" | sha256sum | cut -d' ' -f1)\"]"
    echo "management_keys = [\"sha256:$(printf %s "bench-manage-$t" | sha256sum | cut -d' ' -f1)\"]"
  done
} >"$work/tenants.toml"
off=$(free_port)
on=$(free_port)
"$mme" serve --model-store "$work/store" --bind "127.0.0.1:$off" --grpc-bind off \
  --cache-dir "$work/cache" 2>"$work/off.log" &
off_pid=$!
"$mme" serve --model-store "$work/store" --bind "127.0.0.1:$on" --grpc-bind off \
  --cache-dir "$work/cache" --tenants "$work/tenants.toml" 2>"$work/on.log" &
on_pid=$!
pids="$off_pid $on_pid"
# User and system CPU time of process $1 so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)
trap 'kill $pids 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for port in $off $on; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
done
# Every model loaded first: this measures serving, not loading.
"$mme" bench cold --url "http://127.0.0.1:$off" --models "$models" --prefix m >/dev/null
"$mme" bench cold --url "http://127.0.0.1:$on" --models "$models" --prefix m --token "$token" >/dev/null
for round in 1 2; do
  for pattern in even hot few-hot; do
    for server in off on; do
      if [ "$server" = off ]; then port=$off; pid=$off_pid; auth=(); else port=$on; pid=$on_pid; auth=(--token "$token"); fi
      echo "round $round, $pattern, tenants $server:"
      before=$(cpu_ticks "$pid")
      report=$("$mme" bench --url "http://127.0.0.1:$port" --models "$models" --prefix m "${auth[@]}" \
        --duration "$duration" --warmup 0s --pattern "$pattern")
      after=$(cpu_ticks "$pid")
      echo "$report"
      requests=$(awk -v p="$pattern" '$1 == p { print $2 }' <<<"$report")
      awk -v t=$((after - before)) -v hz="$ticks_per_second" -v n="$requests" \
        'BEGIN { printf "server CPU per request: %.2f us\n", t / hz * 1e6 / n }'
    done
  done
done
