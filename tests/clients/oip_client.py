"""Drives a Wasm MME server with Triton's Open Inference Protocol client
(`tritonclient[http]`) and prints what it saw as one JSON object, for
tests/oip.rs to check.

Usage: python3 oip_client.py HOST:PORT MODEL
"""

import json
import sys

import numpy as np
import tritonclient.http as http
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
    client = http.InferenceServerClient(url=url)
    seen = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata()["name"],
        "model_ready": client.is_model_ready(model),
        "metadata": client.get_model_metadata(model),
    }

    rows = np.array([[0.5], [2.0], [-1.0]], dtype=np.float64)
    tensor = http.InferInput("x", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=False)
    wanted = [http.InferRequestedOutput("output-0", binary_data=False)]
    result = client.infer(model, [tensor], outputs=wanted, request_id="r-1")
    seen["predictions"] = result.as_numpy("output-0").tolist()
    seen["id"] = result.get_response().get("id")
    seen["model_name"] = result.get_response().get("model_name")

    # No outputs named: the client asks for every output as binary data.
    seen["default_outputs"] = client.infer(model, [tensor]).as_numpy("output-0").tolist()

    # The client's defaults: binary tensors in and out, then compressed bodies.
    binary = http.InferInput("x", list(rows.shape), "FP64")
    binary.set_data_from_numpy(rows)
    outputs = [http.InferRequestedOutput("output-0")]
    seen["binary"] = client.infer(model, [binary], outputs=outputs).as_numpy("output-0").tolist()
    for algorithm in ("gzip", "deflate"):
        result = client.infer(model, [binary], outputs=outputs, request_compression_algorithm=algorithm)
        seen[algorithm] = result.as_numpy("output-0").tolist()

    single = rows.astype(np.float32)
    tensor32 = http.InferInput("x", list(single.shape), "FP32")
    tensor32.set_data_from_numpy(single, binary_data=False)
    seen["fp32"] = client.infer(model, [tensor32]).as_numpy("output-0").tolist()

    # Half precision, as binary data (JSON carries it as numbers).
    half = http.InferInput("x", list(rows.shape), "FP16")
    half.set_data_from_numpy(rows.astype(np.float16))
    seen["fp16"] = client.infer(model, [half], outputs=outputs).as_numpy("output-0").tolist()

    seen["absent_model"] = failure(lambda: client.infer("absent-model", [tensor]))
    words = http.InferInput("x", [1], "BYTES")
    words.set_data_from_numpy(np.array([b"a"], dtype=np.object_), binary_data=False)
    seen["bytes_input"] = failure(lambda: client.infer(model, [words]))
    wrong = http.InferInput("x", [4, 1], "FP64")
    wrong._raw_data = rows.tobytes()
    wrong._parameters["binary_data_size"] = len(wrong._raw_data)
    seen["binary_wrong_shape"] = failure(lambda: client.infer(model, [wrong]))
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
