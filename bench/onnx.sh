#!/usr/bin/env bash
# The ONNX engine against onnxruntime, per prediction: the same models and
# rows, batches of 1 and 64, onnxruntime natively on one thread (Python) and
# the engine inside its wasm sandbox (criterion: JSON in and out included,
# and as `{model}_binary` with Triton's binary tensors in and out).
# Then the engine's compile and cold-start figures. Needs the converters that
# .ci/run pins.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo xtask package-examples --out target/mme-examples >/dev/null
python3 -c 'import pathlib,subprocess,sys; out=pathlib.Path("target/onnx-models"); (out/"linear_regression.onnx").is_file() or subprocess.run([sys.executable,"tests/onnx/make_models.py",str(out)],check=True)'
echo "== onnxruntime, native, one thread"
python3 bench/onnx_vs_ort.py target/onnx-models
echo "== the ONNX engine in wasm"
MME_ONNX_MODELS="$PWD/target/onnx-models" cargo bench -p mme-host --bench onnx -- --warm-up-time 1 --measurement-time 3 2>&1 \
    | grep -E '^onnx_engine|time:'
