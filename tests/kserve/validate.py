"""Validates Kubernetes manifests of KServe's kinds offline, against the
openAPIV3Schema of KServe's own CustomResourceDefinitions (tests/kserve/crds/,
copied unchanged from KServe), and prints one JSON object:
{"documents": N, "errors": ["file: kind name: where: what", ...]}.

Usage: python3 validate.py CRD_DIR MANIFEST...
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml


def schemas(crd_dir):
    """(apiVersion, kind) -> the schema KServe declares for it."""
    found = {}
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


def main():
    known = schemas(sys.argv[1])
    documents = 0
    errors = []
    for manifest in sys.argv[2:]:
        for document in yaml.safe_load_all(Path(manifest).read_text()):
            if document is None:
                continue
            documents += 1
            key = (document.get("apiVersion"), document.get("kind"))
            name = document.get("metadata", {}).get("name", "?")
            schema = known.get(key)
            if schema is None:
                errors.append(f"{manifest}: {key[1]} {name}: no KServe schema for {key[0]} {key[1]}")
                continue
            validator = jsonschema.Draft7Validator(schema)
            for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
                where = "/".join(str(p) for p in error.absolute_path) or "(top)"
                errors.append(f"{manifest}: {key[1]} {name}: {where}: {error.message}")
    print(json.dumps({"documents": documents, "errors": errors}))


if __name__ == "__main__":
    main()
