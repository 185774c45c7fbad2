#!/usr/bin/env bash
# More warm workers wanted than the instance pool holds: N copies of the
# example, minWorkers 1 (the default), a pool of N + SLACK instances, all N
# loaded, then the hot and few-hot patterns over them with 64 connections
# (bursts on a few models ask for a second worker each). Counts the 503s
# (NoCapacity) and the spare instances taken back.
# Usage: bench/pool-full.sh [N] [DURATION] [SLACK] [MME]
#   (default 2000, 8s, 48 instances beyond N, target/release/mme)
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
models=${1:-2000}
duration=${2:-8s}
slack=${3:-48}
mme=${4:-target/release/mme}
work=target/bench-pool-full
[ -f "$work/examples/linear-regression.tar.gz" ] || cargo xtask package-examples --out "$work/examples" >/dev/null
rm -rf "$work/store" && mkdir -p "$work/store"
for i in $(seq 0 $((models - 1))); do ln "$work/examples/linear-regression.tar.gz" "$work/store/m$i.tar.gz"; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$mme" serve --grpc-bind off --model-store "$work/store" --bind "127.0.0.1:$port" --cache-dir "$work/cache" \
  --unpack-dir /dev/shm --max-instances $((models + slack)) 2>"$work/serve.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
"$mme" bench cold --url "http://127.0.0.1:$port" --models "$models" --prefix m >/dev/null
"$mme" bench --url "http://127.0.0.1:$port" --models "$models" --prefix m \
  --pattern hot --pattern few-hot --duration "$duration" --warmup 1s --connections 64
curl -s "127.0.0.1:$port/metrics" | python3 -c '
import sys
lines = [l for l in sys.stdin if not l.startswith("#")]
def total(pred): return sum(float(l.rsplit(" ", 1)[1]) for l in lines if pred(l))
ok = total(lambda l: l.startswith("mme_requests_total{") and "status=\"200\"" in l)
full = total(lambda l: l.startswith("mme_requests_total{") and "status=\"503\"" in l)
spares = total(lambda l: l.startswith("mme_spare_instances_taken_total"))
inst = total(lambda l: l.startswith("mme_instances "))
print(f"answered 200: {ok:.0f}; 503: {full:.0f}; spare instances taken back: {spares:.0f}; live instances: {inst:.0f}")'
