#!/usr/bin/env bash
# Cold starts over N copies of the example: the first request to each model,
# with compiled code already cached, unpacking to the cache folder (disk) and
# then to a tmpfs; plus the median load split from the server's log.
# Usage: bench/cold-start.sh [N]   (default 1000)
set -euo pipefail
# These models are wasm components: the ONNX engine's background compile
# would only take CPU (and RSS) from what is measured.
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
models=${1:-1000}
work=target/bench-cold
cargo xtask package-examples --out "$work/examples" >/dev/null
rm -rf "$work/store" && mkdir -p "$work/store"
for i in $(seq 0 $((models - 1))); do cp "$work/examples/linear-regression.tar.gz" "$work/store/sklearn-$i.tar.gz"; done
mme=target/release/mme
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

run() { # label, extra serve flags...
  local label=$1; shift
  RUST_LOG=info "$mme" serve --grpc-bind off --model-store "$work/store" --bind "127.0.0.1:$port" --cache-dir "$work/cache" "$@" 2>"$work/serve.log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
  echo "== $label"
  "$mme" bench cold --url "http://127.0.0.1:$port" --models "$models"
  echo "RSS with $models models loaded: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)"
  sed 's/\x1b\[[0-9;]*m//g' "$work/serve.log" | grep "model loaded" | python3 -c '
import sys, re, statistics
def us(v):
    n, unit = re.match(r"([0-9.]+)(\D+)", v).groups(); return float(n) * {"ns": 1e-3, "µs": 1, "ms": 1e3, "s": 1e6}[unit]
rows = [dict(re.findall(r"(\w+)=([0-9.]+\D+?)(?:\s|$)", line)) for line in sys.stdin]
for key in ("elapsed", "unpack", "compile", "instantiate"):
    print(f"  median {key}: {statistics.median(us(r[key]) for r in rows) / 1000:.3f} ms")'
  kill -TERM $pid; wait $pid || true
}

rm -rf "$work/cache"
run "compile cache empty, unpack to disk (the first request compiles)"
run "compile cache warm (restart), unpack to disk"
run "compile cache warm (restart), unpack to tmpfs" --unpack-dir /dev/shm
