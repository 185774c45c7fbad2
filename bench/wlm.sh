#!/usr/bin/env bash
# Work-load manager figures on this machine:
# 1. how long a burst on a cold model takes to reach its full worker count;
# 2. the latency of a trickle model, alone and while another model is flooded.
# The flooded model computes for 2 ms per request (the `faulty` test guest,
# `work:2:x`), so that the flood saturates the cores, not just HTTP.
# Usage: bench/wlm.sh [SECONDS]   (default 10)
set -euo pipefail
# These models are wasm components: the ONNX engine's background compile
# would only take CPU (and RSS) from what is measured.
export MME_ONNX_PRECOMPILE=false
cd "$(dirname "$0")/.."
secs=${1:-10}
work=target/bench-wlm
cargo build --release -q -p mme-host
cargo xtask package-examples --with-test-guests --out "$work/examples" >/dev/null
rm -rf "$work/store" && mkdir -p "$work/store"
for name in burst-0 flood-0; do
  mkdir -p "$work/store/$name" && tar -xzf "$work/examples/faulty.tar.gz" -C "$work/store/$name"
done
cp "$work/examples/linear-regression.tar.gz" "$work/store/trickle-0.tar.gz"
mme=target/release/mme
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
RUST_LOG=warn "$mme" serve --grpc-bind off --model-store "$work/store" --bind "127.0.0.1:$port" --cache-dir "$work/cache" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$url/ping" >/dev/null && break; sleep 0.1; done
# Compile the guests once, so that the burst below measures a cold model, not the compiler.
curl -sf "$url/predictions/flood-0" -H 'content-type: application/json' -d '"ok"' >/dev/null
curl -sf "$url/predictions/trickle-0" -H 'content-type: application/json' -d '[[0.5]]' >/dev/null

echo "== 1. burst of 64 connections on the cold model burst-0 (2 ms per request)"
python3 - "$mme" "$url" <<'PY'
import http.client, json, subprocess, sys, time
mme, url = sys.argv[1], sys.argv[2]
host = url.removeprefix("http://")
started = time.perf_counter()
bench = subprocess.Popen([mme, "bench", "--url", url, "--models", "1", "--prefix", "burst-",
                          "--body", '"work:2:x"', "--connections", "64", "--duration", "3s",
                          "--warmup", "0s"], stdout=subprocess.DEVNULL)
loaded = full = None
conn = http.client.HTTPConnection(host)
while time.perf_counter() - started < 10 and full is None:
    conn.request("GET", "/models/burst-0")
    response = conn.getresponse()
    body = response.read()
    now = time.perf_counter() - started
    if response.status == 200:
        model = json.loads(body)
        loaded = loaded or now
        if model["workers"] >= model["maxWorkers"]:
            full = (now, model["workers"], model["scaleUps"])
bench.wait()
print(f"  loaded (first describe that answers): {loaded * 1e3:.1f} ms after the burst began")
if full:
    print(f"  full worker count ({full[1]}) reached {full[0] * 1e3:.1f} ms after the burst began, "
          f"{(full[0] - loaded) * 1e3:.1f} ms after the load, in {full[2]} scale-up step(s)")
else:
    print("  full worker count not reached within 10 s")
PY

trickle=(bench --url "$url" --models 1 --prefix trickle- --connections 2 --duration "${secs}s" --warmup 1s)
echo "== 2a. trickle-0 alone, 2 connections"
"$mme" "${trickle[@]}"
echo "== 2b. trickle-0, 2 connections, while flood-0 gets 62 connections of 2 ms requests"
"$mme" bench --url "$url" --models 1 --prefix flood- --body '"work:2:x"' --connections 62 \
  --duration "$((secs + 2))s" --warmup 0s > "$work/flood.txt" &
flood=$!
sleep 1
"$mme" "${trickle[@]}"
wait $flood
echo "-- the flood itself:"
cat "$work/flood.txt"
