"""Checks every model that make_models.py wrote against a running Wasm MME
server, as a user of the model would: through `/predictions` (JSON rows),
and through the Open Inference Protocol with Triton's client, reading each
model's inputs from `GET /v2/models/{name}`.

Each answer is compared with the library's own predictions (`predict`,
`predict_proba`) and with onnxruntime on the same rows: labels identical,
numbers within 1e-4 relative. Prints one line per mismatch and exits 1 if
there was any.

    python3 tests/onnx/check_served.py HOST:PORT MODELS_DIR [--prefix P] [--grpc HOST:PORT]
"""

import argparse

import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.http as http

TOLERANCE = 1e-4


def close(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return got.shape == want.shape and bool(np.all(np.abs(got - want) <= TOLERANCE * np.maximum(1.0, np.abs(want))))


def same_labels(got, want):
    return [str(g) for g in np.ravel(got)] == [str(w) for w in np.ravel(want)]


def rows_of(zipmap):
    """A ZipMap answer (a list of {label: probability}) as rows of values in class order."""
    return [list(row.values()) for row in zipmap]


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def check_native(name, native, outputs, problems):
    """`outputs`: output name -> values (ZipMaps already as rows)."""
    labels = [v for k, v in outputs.items() if "label" in k]
    if "label" in native and not (labels and same_labels(labels[0], native["label"])):
        problems.append(f"{name}: labels {labels[:1]} differ from the library's {native['label']}")
    if "probabilities" in native:
        probabilities = [v for k, v in outputs.items() if "prob" in k]
        if not (probabilities and close(probabilities[0], native["probabilities"])):
            problems.append(f"{name}: probabilities {probabilities[:1]} differ from predict_proba {native['probabilities']}")
    if "variable" in native:
        (only,) = outputs.values()
        if not close(np.ravel(only), np.ravel(native["variable"])):
            problems.append(f"{name}: {only} differs from predict {native['variable']}")


def check_plain(host, name, rows, ort, problems):
    """/predictions: one output as nested lists, several as an object by name."""
    answer = post_json(f"http://{host}/predictions/{name}", rows)
    plain = answer if isinstance(answer, dict) and len(ort) > 1 else {next(iter(ort)): answer}
    for output, want in ort.items():
        got = plain.get(output)
        if want and isinstance(want[0], dict):
            ok = got is not None and [list(r.keys()) for r in got] == [list(r.keys()) for r in want] and close(rows_of(got), rows_of(want))
        elif want and isinstance(np.ravel(want)[0], (str, np.str_)) or "label" in output:
            ok = got is not None and same_labels(got, want) and np.shape(got) == np.shape(want)
        else:
            ok = got is not None and close(got, want)
        if not ok:
            problems.append(f"{name}: /predictions of {len(rows)} rows: {output} = {got}, onnxruntime {want}")
    return plain


def check_model(host, grpc_host, name, record, problems):
    ort = record["ort"]
    native = record["native"]
    rows = record["rows"]

    plain = check_plain(host, name, rows, ort, problems)
    check_native(name, native, {k: rows_of(v) if v and isinstance(v[0], dict) else v for k, v in plain.items()}, problems)
    # One row, then all of them again: an instance that keeps its graph's
    # run state between requests must not carry a batch's shape over.
    check_plain(host, name, rows[:1], {k: v[:1] for k, v in ort.items()}, problems)
    check_plain(host, name, rows, ort, problems)

    # Open Inference Protocol, with Triton's client and the model's own metadata.
    client = http.InferenceServerClient(url=host)
    metadata = client.get_model_metadata(name)
    (port,) = metadata["inputs"]
    if [o["name"] for o in metadata["outputs"]] != list(ort):
        problems.append(f"{name}: metadata outputs {metadata['outputs']} are not onnxruntime's {list(ort)}")
    numpy_type = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BYTES": np.object_}
    cells = np.asarray(rows, dtype=object)
    missing = cells == None  # noqa: E711 (element-wise)
    # As JSON, then with the client's defaults: binary tensors both ways.
    # JSON has no NaN, and Triton's client writes a missing value as a bare
    # NaN token that JSON parsers refuse: rows with missing values go as
    # binary data alone, where a missing value is NaN (what an Imputer reads).
    x = np.where(missing, np.nan, cells).astype(numpy_type[port["datatype"]])
    for binary in (True,) if missing.any() else (False, True):
        seen = check_v2(client, name, port, x, ort, binary, problems)
    check_native(name, native, seen, problems)
    if grpc_host:
        check_grpc(grpc_host, name, port, x, ort, missing.any(), problems)


def check_grpc(host, name, port, x, ort, missing, problems):
    """The same over gRPC: the client's default raw tensors, then typed
    contents (`fp32_contents`, ...) where the rows can be typed values."""
    client = grpc.InferenceServerClient(url=host)
    metadata = client.get_model_metadata(name, as_json=True)
    if [o["name"] for o in metadata["outputs"]] != list(ort):
        problems.append(f"{name}: gRPC metadata outputs {metadata['outputs']} are not onnxruntime's {list(ort)}")
    typed = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents", "INT32": "int_contents"}
    for how in ("gRPC raw",) if missing or port["datatype"] not in typed else ("gRPC raw", "gRPC typed"):
        tensor = grpc.InferInput(port["name"], list(x.shape), port["datatype"])
        if how == "gRPC raw":
            tensor.set_data_from_numpy(x)
        else:
            getattr(tensor._get_tensor().contents, typed[port["datatype"]]).extend(x.ravel().tolist())
        wanted = [grpc.InferRequestedOutput(output) for output in ort]
        result = client.infer(name, [tensor], outputs=wanted, request_id=name)
        compare(name, how, result, ort, problems)


def check_v2(client, name, port, x, ort, binary, problems):
    """One v2 inference with Triton's client; returns the outputs it got."""
    how = "v2 binary" if binary else "v2"
    tensor = http.InferInput(port["name"], list(x.shape), port["datatype"])
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = [http.InferRequestedOutput(output, binary_data=binary) for output in ort]
    result = client.infer(name, [tensor], outputs=wanted, request_id=name)
    return compare(name, how, result, ort, problems)


def compare(name, how, result, ort, problems):
    """Checks a v2 result (HTTP's or gRPC's) against onnxruntime's outputs; returns what it got."""
    seen = {}
    for output, want in ort.items():
        got = result.as_numpy(output)
        if got is None:
            problems.append(f"{name}: {how} has no output {output}")
            continue
        if got.dtype == np.object_:
            got = np.array([g.decode() if isinstance(g, bytes) else g for g in got.ravel()]).reshape(got.shape)
        seen[output] = got
        if want and isinstance(want[0], dict):
            ok = close(got, rows_of(want))
        elif got.dtype.kind in "iuU" or "label" in output:
            ok = same_labels(got, want) and got.shape == np.shape(want)
        else:
            ok = close(got, want)
        if not ok:
            problems.append(f"{name}: {how} {output} = {got.tolist()}, onnxruntime {want}")
    return seen


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--grpc", help="HOST:PORT of the gRPC service, to check it too")
    args = parser.parse_args()
    host, directory, prefix = args.host, args.directory, args.prefix
    problems = []
    checked = 0
    for path in sorted(directory.glob("*.json")):
        name = path.stem
        try:
            check_model(host, args.grpc, prefix + name, json.loads(path.read_text()), problems)
        except Exception as error:  # noqa: BLE001 - every failure is a finding, reported by model
            problems.append(f"{name}: {type(error).__name__}: {error}")
        checked += 1
    for problem in problems:
        print(problem)
    print(f"{checked} models checked, {len(problems)} problems", file=sys.stderr)
    sys.exit(1 if problems or checked == 0 else 0)


if __name__ == "__main__":
    main()
