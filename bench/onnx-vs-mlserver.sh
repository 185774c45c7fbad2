#!/usr/bin/env bash
# 1,000 ONNX copies of the SageMaker blog's LinearRegression (exported by
# skl2onnx) served by mme, against MLServer's sklearn runtime serving the
# same fitted model 1,000 times, with the same client (mme bench, Open
# Inference Protocol, even pattern) and connections, one after the other.
# MLServer goes into its own virtualenv under target/.
# Usage: bench/onnx-vs-mlserver.sh [MODELS] [DURATION]   (default 1000 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:-1000}
duration=${2:-10s}
work=target/bench-mlserver
venv=target/mlserver-venv
cargo xtask package-examples --out target/mme-examples >/dev/null   # builds mme and the engine beside it
mme=target/release/mme
[ -x "$venv/bin/mlserver" ] || {
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'mlserver==1.7.1' 'mlserver-sklearn==1.7.1' \
    'scikit-learn==1.8.0' 'skl2onnx==1.20.0' 'protobuf==6.33.6' 'uvloop==0.21.0'
}
rm -rf "$work" && mkdir -p "$work/mlserver" "$work/mme"
"$venv/bin/python" - "$work" "$models" <<'PY'
import json, sys
from pathlib import Path
import joblib, numpy as np
from sklearn.linear_model import LinearRegression
from skl2onnx import to_onnx
work, models = Path(sys.argv[1]), int(sys.argv[2])
x = np.arange(0, 10, 0.5, dtype=np.float32).reshape(-1, 1)
model = LinearRegression().fit(x, 2 * x.ravel() + 1)
joblib.dump(model, work / "model.joblib")
(work / "model.onnx").write_bytes(to_onnx(model, x[:1]).SerializeToString())
for i in range(models):
    folder = work / "mlserver" / f"lr-{i}"
    folder.mkdir()
    (folder / "model.joblib").hardlink_to(work / "model.joblib")
    (folder / "model-settings.json").write_text(json.dumps(
        {"name": f"lr-{i}", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}))
PY
"$mme" package --onnx "$work/model.onnx" -o "$work/lr.tar.gz" >/dev/null
for i in $(seq 0 $((models - 1))); do ln "$work/lr.tar.gz" "$work/mme/lr-$i.tar.gz"; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
grpc=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bench() { # label
  echo "== $1"
  "$mme" bench --url "http://127.0.0.1:$port" --models "$models" --prefix lr- --route v2 \
    --pattern even --duration "$duration" --warmup 3s --connections 64 --json "$work/$2.json"
}

echo "{\"host\": \"127.0.0.1\", \"http_port\": $port, \"grpc_port\": $grpc, \"metrics_endpoint\": null}" > "$work/mlserver/settings.json"
started=$(date +%s)
"$venv/bin/mlserver" start "$work/mlserver" >"$work/mlserver.log" 2>&1 &
pid=$!
# MLServer loads its models in parallel and answers for each once it is in:
# wait (up to 10 minutes) until its repository index lists all of them READY.
ready() {
  curl -s -X POST "127.0.0.1:$port/v2/repository/index" -H 'content-type: application/json' -d '{}' \
    | python3 -c 'import json,sys; print(sum(m.get("state") == "READY" for m in json.load(sys.stdin)))' 2>/dev/null \
    || echo 0
}
for _ in $(seq 600); do
  kill -0 $pid 2>/dev/null || { tail -20 "$work/mlserver.log"; exit 1; }
  [ "$(ready)" = "$models" ] && break
  sleep 1
done
[ "$(ready)" = "$models" ] || { echo "MLServer has only $(ready) of $models models ready"; exit 1; }
echo "MLServer ready with $models models after $(( $(date +%s) - started )) s; RSS $(ps -o rss= --ppid $pid --pid $pid | awk '{s+=$1} END {printf "%.0f MiB", s/1024}')"
bench "MLServer 1.7.1, sklearn runtime" mlserver
# MLServer does not always exit on SIGTERM: give it 10 s, then kill it.
kill -TERM $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
pkill -KILL -P $pid 2>/dev/null || true; kill -KILL $pid 2>/dev/null || true; wait $pid 2>/dev/null || true

"$mme" serve --grpc-bind off --model-store "$work/mme" --bind "127.0.0.1:$port" --cache-dir target/bench-cache 2>"$work/mme.log" &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
"$mme" bench cold --url "http://127.0.0.1:$port" --models "$models" --prefix lr- --body '[[0.5]]' >/dev/null
echo "mme RSS with $models ONNX models loaded: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
bench "mme, the ONNX engine" mme
kill -TERM $pid; wait $pid || true
