#!/usr/bin/env bash
# The first request to a model whose wasm was never compiled, on a fresh
# server with an empty compile cache, all of it (compile, instantiate,
# `load`, HTTP): with the baseline tier (Winch first, Cranelift behind it)
# and without it (Cranelift while the request waits), RUNS times each, in
# turn, so that both see the same machine.
# Usage: bench/first-compile.sh [RUNS]   (default 10)
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
runs=${1:-10}
work=target/bench-first-compile
cargo xtask package-examples --out "$work/examples" >/dev/null
rm -rf "$work/store" && mkdir -p "$work/store"
cp "$work/examples/linear-regression.tar.gz" "$work/store/m.tar.gz"
mme=target/release/mme
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

first() { # --baseline-tier value: prints the first request's seconds
  rm -rf "$work/cache"
  "$mme" serve --grpc-bind off --model-store "$work/store" --bind "127.0.0.1:$port" --cache-dir "$work/cache" \
    --baseline-tier "$1" 2>"$work/serve.log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.05; done
  curl -s -o /dev/null -w '%{time_total}' -X POST "127.0.0.1:$port/predictions/m" \
    -H 'content-type: application/json' -d '[[0.5],[1.0]]'
  kill -TERM "$pid"; wait "$pid" || true
}

declare -A times
for _ in $(seq "$runs"); do
  for tier in true false; do times[$tier]+="$(first $tier) "; done
done
for tier in true false; do
  python3 -c 'import statistics,sys; t=sorted(float(x)*1000 for x in sys.argv[2:]); print(f"baseline tier {sys.argv[1]:5}: p50 {statistics.median(t):.1f} ms, min {t[0]:.1f}, max {t[-1]:.1f} ({len(t)} runs)")' "$tier" ${times[$tier]}
done
