#!/usr/bin/env bash
# ONNX models: the first request on a fresh server with an empty cache (the
# engine's baseline tier is compiled while the request waits), the same with
# the engine's optimized code in the cache folder (a restart, or the Docker
# image), the first request to each of N
# ONNX copies of the blog's model once the engine is ready, and RSS per
# loaded ONNX model, idle (minWorkers=0) and with one live instance.
# Usage: bench/onnx-cold.sh [N]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:-1000}
work=target/bench-onnx
cargo xtask package-examples --out "$work/examples" >/dev/null   # builds mme and the engine beside it
mme=target/release/mme
python3 -c 'import pathlib,subprocess,sys; out=pathlib.Path("target/onnx-models"); (out/"linear_regression.onnx").is_file() or subprocess.run([sys.executable,"tests/onnx/make_models.py",str(out)],check=True)'
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start() { # store, extra serve flags...
  local store=$1; shift
  RUST_LOG=info "$mme" serve --grpc-bind off --model-store "$store" --bind "127.0.0.1:$port" --cache-dir "$work/cache" \
    --unpack-dir /dev/shm --max-instances $((models + 64)) "$@" 2>"$work/serve.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
}
stop() { kill -TERM "$pid"; wait "$pid" || true; }
first() { # model: seconds for its first request
  curl -s -o /dev/null -w '%{time_total}' -X POST "127.0.0.1:$port/predictions/$1" \
    -H 'content-type: application/json' -d '[[0.5],[1.0]]'
}

rm -rf "$work/store-one" && mkdir -p "$work/store-one"
"$mme" package --onnx target/onnx-models/linear_regression.onnx -o "$work/store-one/blog.tar.gz" >/dev/null
echo "== first request to an ONNX model, fresh server (5 runs each)"
for label in empty warm; do
  times=()
  # A server stopped within seconds of its start has not finished the
  # optimized compile, so the warm cache is filled as the Docker image's is.
  [ "$label" = warm ] && "$mme" precompile --cache-dir "$work/cache" >/dev/null
  for _ in 1 2 3 4 5; do
    [ "$label" = empty ] && rm -rf "$work/cache"
    start "$work/store-one"
    times+=("$(first blog)")
    stop
  done
  echo "   cache $label: ${times[*]} s"
done

for min in 0 1; do
  store="$work/store-min$min"
  "$mme" package --onnx target/onnx-models/linear_regression.onnx --property "minWorkers=$min" \
    --property max_idle_time=1 -o "$work/min$min.tar.gz" >/dev/null
  rm -rf "$store" && mkdir -p "$store"
  for i in $(seq 0 $((models - 1))); do ln "$work/min$min.tar.gz" "$store/m$i.tar.gz"; done
  start "$store"
  first m0 >/dev/null   # the engine, read from the cache folder
  before=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  echo "== minWorkers=$min: first request to each of $models ONNX models, engine ready"
  "$mme" bench cold --url "http://127.0.0.1:$port" --models "$models" --prefix m --body '[[0.5],[1.0]]'
  sleep 4 # idle workers retire on the next housekeeping ticks
  after=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  echo "   RSS with one model: $((before / 1024)) MiB; with $models: $((after / 1024)) MiB; per model: $(( (after - before) / (models - 1) )) KiB"
  curl -s "127.0.0.1:$port/metrics" | grep -E '^mme_(models_loaded|instances|component_compilations_total|memory_used_bytes)'
  stop
done
