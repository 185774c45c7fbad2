#!/usr/bin/env bash
# The soak: well-behaved traffic moving through the three patterns over
# many models, random loads and unloads, and a tenant whose models panic,
# spin, grow, overflow their stack, answer too much and flood the log, and
# who asks for the first tenant's models (each tenant has its own keys), all
# at once for DURATION. It fails on any answer that its sender should not
# get, on RSS growth of 5% or more after warm-up, or on a host panic.
# Usage: bench/soak.sh [DURATION] [MODELS] [mme bench soak flags...]   (default 10m, 200)
set -euo pipefail
# These models are wasm components: the ONNX engine's background compile
# would only take CPU (and RSS) from what is measured.
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
duration=${1:-10m}
models=${2:-200}
work=target/bench-soak
cargo build --release -p mme-host >/dev/null
cargo xtask package-examples --with-test-guests --out "$work/examples" >/dev/null
mme=target/release/mme
store="$work/store"
rm -rf "$store" && mkdir -p "$store"
for i in $(seq 0 $((models - 1))); do
  ln "$work/examples/linear-regression.tar.gz" "$store/sklearn-$i.tar.gz"
done
for i in 0 1; do
  mkdir -p "$store/hostile-$i"
  tar -xzf "$work/examples/faulty.tar.gz" -C "$store/hostile-$i"
  printf 'request_timeout_ms=200\nmax_memory_mb=64\n' >"$store/hostile-$i/serving.properties"
done
# Two tenants with their own keys: the well-behaved one and the hostile one.
sum() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
good_token=soak-good-manage
hostile_token=soak-hostile-infer
cat >"$work/tenants.toml" <<TOML
[admin]
keys = ["sha256:$(sum soak-admin)"]
[tenants.good]
models = ["sklearn-*"]
management_keys = ["sha256:$(sum "$good_token")"]
[tenants.hostile]
models = ["hostile-*"]
inference_keys = ["sha256:$(sum "$hostile_token")"]
TOML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log="$work/serve.log"
RUST_LOG=info "$mme" serve --grpc-bind off --model-store "$store" --bind "127.0.0.1:$port" \
  --cache-dir "$work/cache" --tenants "$work/tenants.toml" 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done

status=0
"$mme" bench soak --url "http://127.0.0.1:$port" --pid "$pid" --models "$models" \
  --prefix sklearn- --hostile-models 2 --hostile-prefix hostile- --duration "$duration" \
  --token "$good_token" --hostile-token "$hostile_token" "${@:3}" || status=$?
# Guest panics are logged under `mme::guest`; anything else that panicked is the host's.
if grep panicked "$log" | grep -v 'mme::guest' >/dev/null; then
  echo "the host panicked:" && grep panicked "$log" | grep -v 'mme::guest' | head -5
  status=1
fi
exit $status
