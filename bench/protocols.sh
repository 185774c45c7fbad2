#!/usr/bin/env bash
# The example's 1,000 copies over each protocol, with the same load
# generator in the same run: /predictions (JSON), v2 with Triton's binary
# tensors (as tritonclient.http sends by default) and gRPC ModelInfer with
# raw tensors (as tritonclient.grpc sends), each after /ping measured just
# before it, then the server's CPU time per request of the route alone
# (from /proc: the load generator shares the cores and moves req/s far more
# than it moves this). Two rounds, so that the machine's drift shows.
# Usage: bench/protocols.sh [DURATION] [PACKAGE]
#   DURATION per measurement (default 8s); PACKAGE the model served 1,000
#   times (default: the example, built from this checkout), such as an
#   older build of it to compare with.
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
duration=${1:-8s}
package=${2:-}
models=1000
work=target/bench-protocols
cargo build --release -p mme-host >/dev/null
if [ -z "$package" ]; then
  cargo xtask package-examples --out "$work/examples" >/dev/null
  package="$work/examples/linear-regression.tar.gz"
fi
mme=target/release/mme
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
grpc_port=$(free_port)
rm -rf "$work/store" && mkdir -p "$work/store"
for i in $(seq 0 $((models - 1))); do ln "$package" "$work/store/m$i.tar.gz"; done
"$mme" serve --model-store "$work/store" --bind "127.0.0.1:$port" --grpc-bind "127.0.0.1:$grpc_port" \
  --cache-dir "$work/cache" 2>"$work/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
# Every model loaded first: this measures serving, not loading.
"$mme" bench cold --url "http://127.0.0.1:$port" --models "$models" --prefix m >/dev/null
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
ticks_per_second=$(getconf CLK_TCK)
for round in 1 2; do
  for route in predictions v2-binary grpc; do
    echo "round $round, $route:"
    bench=("$mme" bench --url "http://127.0.0.1:$port" --grpc "127.0.0.1:$grpc_port" --models "$models"
      --prefix m --route "$route" --pattern even)
    "${bench[@]}" --duration "$duration" --warmup 2s --baseline-route /ping
    before=$(cpu_ticks)
    report=$("${bench[@]}" --duration "$duration" --warmup 0s | grep "^even ")
    after=$(cpu_ticks)
    echo "$report" | awk -v ticks=$((after - before)) -v hz="$ticks_per_second" \
      '{ printf "server CPU per request: %.1f µs (%s requests)\n", ticks / hz * 1e6 / $2, $2 }'
  done
done
