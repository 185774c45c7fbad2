"""onnxruntime's own cost per prediction, natively, on one thread, for the
models that `cargo bench -p mme-host --bench onnx` runs in the ONNX engine:
the same files and the same rows, batches of 1 and 64. Prints one JSON line
per (model, batch) with the median microseconds per call.

    python3 bench/onnx_vs_ort.py MODELS_DIR
"""

import json
import sys
import timeit
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODELS = ["linear_regression", "random_forest_regressor", "xgboost_regressor", "mlp_regressor"]


def main():
    directory = Path(sys.argv[1])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for name in MODELS:
        session = ort.InferenceSession(str(directory / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        rows = json.loads((directory / f"{name}.json").read_text())["rows"]
        feed = session.get_inputs()[0].name
        for batch in (1, 64):
            x = np.asarray([rows[i % len(rows)] for i in range(batch)], dtype=np.float32)
            call = lambda: session.run(None, {feed: x})  # noqa: E731
            number = max(1, int(20000 / batch))
            times = timeit.repeat(call, number=number, repeat=7)
            micros = min(sorted(times)[len(times) // 2] / number * 1e6, float("inf"))
            print(json.dumps({"model": name, "batch": batch, "micros_per_call": round(micros, 2)}))


if __name__ == "__main__":
    main()
