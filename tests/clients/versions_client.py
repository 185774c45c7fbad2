"""Asks a Wasm MME server for each version of one model with Triton's
clients (`tritonclient[http,grpc]`, their defaults) and prints what each
version answered as one JSON object, for tests/versions.rs to check.

Usage: python3 versions_client.py HOST:HTTP_PORT HOST:GRPC_PORT MODEL
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException


def answers(module, client, model):
    """What each version, and no version, answers: its output names, the
    version the answer names, and the values."""
    seen = {}
    for version in ["", "1", "2", "3"]:
        try:
            as_json = {"as_json": True} if module is grpc else {}
            metadata = client.get_model_metadata(model, version, **as_json)
            port = metadata["inputs"][0]
            kind = np.float32 if port["datatype"] == "FP32" else np.float64
            rows = np.array([[0.5], [1.0]], dtype=kind)
            tensor = module.InferInput(port["name"], list(rows.shape), port["datatype"])
            tensor.set_data_from_numpy(rows)
            result = client.infer(model, [tensor], model_version=version)
            response = result.get_response(**as_json)
            output = response["outputs"][0]["name"]
            seen[version or "none"] = {
                "metadata_versions": metadata["versions"],
                "model_version": response["model_version"],
                "output": output,
                "values": result.as_numpy(output).flatten().tolist(),
                "ready": client.is_model_ready(model, version),
            }
        except InferenceServerException as error:
            seen[version or "none"] = {"status": str(error.status()), "message": error.message()}
    return seen


def main():
    http_url, grpc_url, model = sys.argv[1], sys.argv[2], sys.argv[3]
    seen = {
        "http": answers(http, http.InferenceServerClient(url=http_url), model),
        "grpc": answers(grpc, grpc.InferenceServerClient(url=grpc_url), model),
    }
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
