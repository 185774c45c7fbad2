#!/usr/bin/env bash
# Two builds of the server against each other: one traffic pattern over
# 1,000 copies of the echo guest (the host's own cost), the two servers
# measured in turn for ROUNDS rounds, each with every model loaded first.
# Prints req/s, p99 and the server's CPU time per request (from /proc, which
# the load generator sharing the cores moves much less than req/s).
# Usage: bench/ab.sh BINARY_A BINARY_B [PATTERN] [ROUNDS] [DURATION]
#   such as: bench/ab.sh /path/to/before/mme target/release/mme even 3 6s
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
a=${1:?BINARY_A}
b=${2:?BINARY_B}
pattern=${3:-even}
rounds=${4:-3}
duration=${5:-6s}
models=1000
work=target/bench-ab
cargo build --release -p mme-host >/dev/null
cargo xtask package-examples --out "$work/examples" >/dev/null
mme=target/release/mme
rm -rf "$work/store" && mkdir -p "$work/store"
for i in $(seq 0 $((models - 1))); do ln "$work/examples/echo.tar.gz" "$work/store/echo-$i.tar.gz"; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)
server=
trap 'kill $server 2>/dev/null || true' EXIT
for round in $(seq 1 "$rounds"); do
  for binary in "$a" "$b"; do
    "$binary" serve --model-store "$work/store" --bind "127.0.0.1:$port" --grpc-bind off \
      --cache-dir "$work/cache" 2>"$work/server.log" &
    server=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
    "$mme" bench cold --url "http://127.0.0.1:$port" --models "$models" --prefix echo- >/dev/null
    "$mme" bench --url "http://127.0.0.1:$port" --models "$models" --prefix echo- \
      --duration 2s --warmup 0s --pattern "$pattern" >/dev/null
    before=$(cpu_ticks "$server")
    report=$("$mme" bench --url "http://127.0.0.1:$port" --models "$models" --prefix echo- \
      --duration "$duration" --warmup 0s --pattern "$pattern" | grep "^$pattern ")
    after=$(cpu_ticks "$server")
    kill "$server"
    wait "$server" 2>/dev/null || true
    echo "$report" | awk -v who="$binary" -v round="$round" -v ticks=$((after - before)) -v hz="$ticks_per_second" \
      '{ printf "round %s %s: %s req/s, p99 %s ms, %.2f µs of server CPU per request\n", round, who, $3, $6, ticks / hz * 1e6 / $2 }'
  done
done
