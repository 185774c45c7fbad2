#!/usr/bin/env bash
# 10,000 models from one store: the time to touch each once, the RSS after,
# and the RSS per loaded idle model, with minWorkers=0 (code and metadata
# only) and with minWorkers=1 (one live instance each). Every model is a
# copy of the example, so they share one compiled component.
# Usage: bench/many-models.sh [N]   (default 10000)
set -euo pipefail
# These models are wasm components: the ONNX engine's background compile
# would only take CPU (and RSS) from what is measured.
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
models=${1:-10000}
work=target/bench-many
cargo build --release -p mme-host >/dev/null
cargo xtask package-examples --out "$work/examples" >/dev/null
mme=target/release/mme
wasm_dir=$(mktemp -d)
tar -xzf "$work/examples/linear-regression.tar.gz" -C "$wasm_dir"
artifacts=()
for f in "$wasm_dir"/*; do
  case $(basename "$f") in model.wasm|serving.properties) ;; *) artifacts+=(--artifact "$f");; esac
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

budget_kib() { # KiB the memory budget counts, all kinds
  curl -s "127.0.0.1:$port/metrics" | awk '/^mme_memory_used_bytes\{/ {sum += $2} END {printf "%d", sum / 1024}'
}
# RSS counts a page of the compiled code's memory image once per instance
# that maps it; PSS divides it among them, so it is the memory really used.
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
# CPU time (user + system) the process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # minWorkers
  local min=$1 store="$work/store-min$1"
  # A worker started for the request retires after max_idle_time (1 s here), down to minWorkers.
  "$mme" package --wasm "$wasm_dir/model.wasm" "${artifacts[@]}" --property "minWorkers=$min" \
    --property max_idle_time=1 --output "$work/min$min.tar.gz"
  rm -rf "$store" && mkdir -p "$store"
  for i in $(seq 0 $((models - 1))); do ln "$work/min$min.tar.gz" "$store/m$i.tar.gz"; done
  # The compile cache is warm: this measures holding models, not compiling.
  "$mme" serve --grpc-bind off --model-store "$store" --bind "127.0.0.1:$port" --cache-dir "$work/cache" \
    --unpack-dir /dev/shm --memory-limit 16GiB --max-instances $((models + 64)) 2>"$work/serve.log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
  "$mme" bench cold --url "http://127.0.0.1:$port" --models 1 --prefix m >/dev/null
  local before started elapsed after counted_before counted_after pss_before pss_after
  before=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  pss_before=$(pss_kib $pid)
  counted_before=$(budget_kib)
  started=$(date +%s.%N)
  "$mme" bench cold --url "http://127.0.0.1:$port" --models "$models" --prefix m
  elapsed=$(echo "$(date +%s.%N) - $started" | bc)
  sleep 4 # idle workers retire on the next housekeeping ticks
  # What holding them costs an idle server: housekeeping and page sampling.
  # The window also lets the pages be sampled again (every 10 s while the
  # budget is less than half used), so the budget below is measured.
  local ticks_before ticks_after
  ticks_before=$(cpu_ticks $pid)
  sleep 11
  ticks_after=$(cpu_ticks $pid)
  after=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  pss_after=$(pss_kib $pid)
  counted_after=$(budget_kib)
  echo "== minWorkers=$min: $models models touched once in ${elapsed}s"
  echo "   idle CPU: $(( (ticks_after - ticks_before) * 1000 / $(getconf CLK_TCK) )) ms in 11 s"
  echo "   RSS with one model loaded: $((before / 1024)) MiB; with $models: $((after / 1024)) MiB"
  echo "   RSS per loaded idle model: $(( (after - before) / (models - 1) )) KiB"
  echo "   PSS with one model loaded: $((pss_before / 1024)) MiB; with $models: $((pss_after / 1024)) MiB"
  echo "   the budget grew $(( (counted_after - counted_before) / 1024 )) MiB:" \
    "$(echo "scale=2; ($counted_after - $counted_before) / ($after - $before)" | bc) of the RSS growth," \
    "$(echo "scale=2; ($counted_after - $counted_before) / ($pss_after - $pss_before)" | bc) of the PSS growth"
  curl -s "127.0.0.1:$port/metrics" | grep -E '^mme_(models_loaded|instances|memory_used_bytes)'
  kill -TERM $pid; wait $pid || true
}

run 0
run 1
rm -rf "$wasm_dir"
