#!/usr/bin/env bash
# The cold first request for a model fetched from a loopback S3-compatible
# server (s3s-fs), split into its phases: with the compile cache empty (the
# first model compiles), then warm (a restart: every model's code is read
# back from disk), and with the packages already in the local package cache.
# Usage: bench/s3-cold.sh [N]   (default 200)
set -euo pipefail
# These models are wasm components: the ONNX engine's background compile
# would only take CPU (and RSS) from what is measured.
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
models=${1:-200}
work=target/bench-s3
cargo build --release -p mme-host >/dev/null
cargo xtask package-examples --out "$work/examples" >/dev/null
test -x target/tools/bin/s3s-fs || cargo install s3s-fs@0.14.1 --features binary --locked --root target/tools
mme=target/release/mme
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port) s3_port=$(free_port)
rm -rf "$work/s3" && mkdir -p "$work/s3/models/prod"
for i in $(seq 0 $((models - 1))); do cp "$work/examples/linear-regression.tar.gz" "$work/s3/models/prod/m$i.tar.gz"; done
target/tools/bin/s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key bench --secret-key bench-secret "$work/s3" 2>/dev/null &
s3_pid=$!
trap 'kill $s3_pid 2>/dev/null || true' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1

run() { # label
  echo "== $1"
  RUST_LOG=info "$mme" serve --grpc-bind off --model-store s3://models/prod --s3-endpoint "http://127.0.0.1:$s3_port" --s3-path-style \
    --bind "127.0.0.1:$port" --cache-dir "$work/cache" --unpack-dir /dev/shm 2>"$work/serve.log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
  "$mme" bench cold --url "http://127.0.0.1:$port" --models "$models" --prefix m
  sed 's/\x1b\[[0-9;]*m//g' "$work/serve.log" | grep "model loaded" | python3 -c '
import sys, re, statistics
def us(v):
    n, unit = re.match(r"([0-9.]+)(\D+)", v).groups(); return float(n) * {"ns": 1e-3, "µs": 1, "ms": 1e3, "s": 1e6}[unit]
rows = [dict(re.findall(r"(\w+)=([0-9.]+\D+?)(?:\s|$)", line)) for line in sys.stdin]
first, rest = rows[0], rows[1:]
for key in ("elapsed", "download", "unpack", "compile", "instantiate"):
    print(f"  {key:12} first {us(first[key]) / 1000:8.3f} ms   median of the rest {statistics.median(us(r[key]) for r in rest) / 1000:8.3f} ms")'
  kill -TERM $pid; wait $pid || true
}

rm -rf "$work/cache"
run "compile cache empty, package cache empty (every model downloads; the first compiles)"
rm -rf "$work/cache/packages"
run "compile cache warm, package cache empty (every model downloads)"
run "compile cache warm, package cache warm (no download)"
