"""Drives a Wasm MME server's gRPC service with Triton's client
(`tritonclient[grpc]`, its defaults) and prints what it saw as one JSON
object, for tests/grpc.rs to check.

Usage: python3 grpc_client.py HOST:PORT MODEL
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpc
from tritonclient.utils import InferenceServerException


def failure(call):
    """The (status, message) of a call that must fail, or None if it did not."""
    try:
        call()
    except InferenceServerException as error:
        return [str(error.status()), error.message()]
    return None


def main():
    url, model = sys.argv[1], sys.argv[2]
    client = grpc.InferenceServerClient(url=url)
    seen = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata(as_json=True)["name"],
        "model_ready": client.is_model_ready(model),
        "metadata": client.get_model_metadata(model, as_json=True),
    }

    rows = np.array([[0.5], [2.0], [-1.0]], dtype=np.float64)
    # The client's default: raw_input_contents, raw outputs.
    tensor = grpc.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    result = client.infer(model, [tensor], request_id="r-1")
    seen["raw"] = result.as_numpy("output-0").tolist()
    response = result.get_response(as_json=True)
    seen["id"], seen["model_name"] = response.get("id"), response.get("model_name")
    seen["version"] = response.get("model_version")

    # Typed contents, a named output, a version, and compressed messages.
    typed = grpc.InferInput("input-0", list(rows.shape), "FP64")
    typed._get_tensor().contents.fp64_contents.extend(rows.ravel().tolist())
    wanted = [grpc.InferRequestedOutput("output-0")]
    seen["typed"] = client.infer(model, [typed], outputs=wanted, model_version="1").as_numpy("output-0").tolist()
    for algorithm in ("gzip", "deflate"):
        result = client.infer(model, [tensor], compression_algorithm=algorithm)
        seen[algorithm] = result.as_numpy("output-0").tolist()
    for datatype in ("FP32", "FP16"):
        narrow = grpc.InferInput("input-0", list(rows.shape), datatype)
        narrow.set_data_from_numpy(rows.astype(np.float16 if datatype == "FP16" else np.float32))
        seen[datatype.lower()] = client.infer(model, [narrow]).as_numpy("output-0").tolist()

    # Each error path.
    seen["absent_model"] = failure(lambda: client.infer("absent-model", [tensor]))
    seen["absent_version"] = failure(lambda: client.infer(model, [tensor], model_version="7"))
    words = grpc.InferInput("input-0", [1], "BYTES")
    words.set_data_from_numpy(np.array([b"a"], dtype=np.object_))
    seen["bytes_input"] = failure(lambda: client.infer(model, [words]))
    wrong = grpc.InferInput("input-0", [4, 1], "FP64")
    wrong._raw_content = rows.tobytes()
    seen["wrong_shape"] = failure(lambda: client.infer(model, [wrong]))
    huge = np.zeros((1 << 18, 1), dtype=np.float64)
    big = grpc.InferInput("input-0", list(huge.shape), "FP64")
    big.set_data_from_numpy(huge)
    seen["too_large"] = failure(lambda: client.infer(model, [big]))

    # The repository calls in the order KServe's model agent makes them.
    index = lambda **kw: [
        (m["name"], m.get("state", "")) for m in client.get_model_repository_index(as_json=True).get("models", [])
    ]
    seen["index_before"] = index()
    client.unload_model(model)
    seen["index_unloaded"] = index()
    client.load_model(model)
    seen["index_loaded"] = index()
    seen["load_absent"] = failure(lambda: client.load_model("absent-model"))
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
