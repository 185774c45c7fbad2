//! The KServe deployment in `deploy/kserve/`, checked offline: every
//! manifest against the schema of KServe's own CustomResourceDefinitions
//! (`tests/kserve/crds/`, with `jsonschema`, which `.ci/run` installs), and
//! the runtime's container arguments against the real binary's flags.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The validator's verdict on `manifests`: how many documents, and the errors.
fn validate(manifests: &[PathBuf]) -> (u64, Vec<String>) {
    let output = Command::new("python3")
        .arg(root().join("tests/kserve/validate.py"))
        .arg(root().join("tests/kserve/crds"))
        .args(manifests)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the validator failed (pip install jsonschema pyyaml):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdict: Value = serde_json::from_slice(&output.stdout).unwrap();
    let errors = verdict["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    (verdict["documents"].as_u64().unwrap(), errors)
}

fn deployment() -> Vec<PathBuf> {
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kserve"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    manifests
}

#[test]
fn the_manifests_are_valid_against_kserves_schemas() {
    let manifests = deployment();
    assert_eq!(manifests.len(), 3, "{manifests:?}");
    let (documents, errors) = validate(&manifests);
    assert!(errors.is_empty(), "{errors:#?}");
    // The runtime, a single-model service over HTTP and over gRPC, and a
    // pool with two TrainedModels.
    assert_eq!(documents, 6);
}

#[test]
fn the_validator_finds_what_is_wrong() {
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata: {name: x}\n\
         spec: {multiModel: \"yes\"}\n---\n\
         apiVersion: serving.kserve.io/v1alpha1\nkind: TrainedModel\nmetadata: {name: y}\n\
         spec: {inferenceService: p, model: {framework: onnx, storageUri: \"s3://a/b\"}}\n---\n\
         apiVersion: serving.kserve.io/v9\nkind: Unknown\nmetadata: {name: z}\n",
    )
    .unwrap();
    let (documents, errors) = validate(&[bad]);
    assert_eq!(documents, 3);
    for expected in [
        "'containers' is a required property",
        "spec/multiModel: 'yes' is not of type 'boolean'",
        "'memory' is a required property",
        "no KServe schema for serving.kserve.io/v9 Unknown",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{expected}: {errors:#?}"
        );
    }
}

#[test]
fn the_runtime_starts_the_server_with_flags_it_has() {
    let runtime =
        std::fs::read_to_string(root().join("deploy/kserve/servingruntime.yaml")).unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_mme"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&str> = runtime
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- --"))
        .collect();
    assert!(flags.len() >= 3, "{flags:?}");
    for flag in flags {
        assert!(
            help.contains(&format!("--{flag} ")),
            "mme serve has no --{flag}"
        );
    }
    // The probes use routes the server has, and the port it listens on.
    for route in [
        "/v2/health/ready",
        "/v2/health/live",
        "containerPort: 8080",
        "- grpc-v2",
        "- 0.0.0.0:8081",
    ] {
        assert!(runtime.contains(route), "{route}");
    }
}
