#!/usr/bin/env bash
# What a compilation leaves in the process: 16 models that each hold 6 MiB
# in a 40 MiB budget, asked in turn twice (the first request compiles the
# guest, twice over: baseline, then optimized code in the background).
# Prints the server's RSS at start, its highest after any request, and at
# the end, in KiB. The memory budget counts only the instances' part.
# Usage: bench/compile-memory.sh [ROUNDS]   (default 3)
set -euo pipefail
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
rounds=${1:-3}
work=target/bench-compile-memory
cargo build --release -p mme-host >/dev/null
cargo xtask package-examples --with-test-guests --out "$work/examples" >/dev/null
store="$work/store"
rm -rf "$store" && mkdir -p "$store"
for i in $(seq 0 15); do
  mkdir -p "$store/h$i"
  tar -xzf "$work/examples/faulty.tar.gz" -C "$store/h$i"
  echo "option.hold_mb=6" >"$store/h$i/serving.properties"
done
port=18600
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
for round in $(seq 1 "$rounds"); do
  rm -rf "$work/cache"
  MME_GRPC_BIND=127.0.0.1:$((port + 1)) target/release/mme serve --model-store "$store" \
    --cache-dir "$work/cache" --bind 127.0.0.1:$port --memory-limit 40MiB 2>"$work/server.log" &
  server=$!
  trap 'kill $server 2>/dev/null' EXIT
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null 127.0.0.1:$port/ping && break
    sleep 0.1
  done
  start=$(rss $server)
  highest=$start
  for _ in 1 2; do
    for i in $(seq 0 15); do
      curl -sf -o /dev/null -X POST -H 'content-type: application/json' -d '"ok"' \
        127.0.0.1:$port/predictions/h$i
      now=$(rss $server)
      ((now > highest)) && highest=$now
    done
  done
  sleep 1
  echo "round $round: start $start KiB, highest $highest KiB (+$(((highest - start) >> 10)) MiB), end $(rss $server) KiB"
  kill $server
  wait $server 2>/dev/null || true
done
