//! End to end: `mme package` and `mme inspect`, as an author runs them.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::path::Path;
use std::process::Output;

use common::{guest, mme};
use mme_host::package::archive::{self, ArchiveFile};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The example's component and trained model, unpacked from its package.
fn example_parts(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    archive::unpack(&guest("linear-regression"), dir, &Default::default()).unwrap();
    (dir.join("model.wasm"), dir.join("model.bin"))
}

#[test]
fn package_then_inspect_reports_the_model_and_a_sample_answer() {
    let work = tempfile::tempdir().unwrap();
    let parts = work.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let (wasm, weights) = example_parts(&parts);
    let out = work.path().join("model.tar.gz");
    let output = mme()
        .arg("package")
        .arg("--wasm")
        .arg(&wasm)
        .arg("--artifact")
        .arg(&weights)
        .args([
            "--property",
            "batch_size=4",
            "--property",
            "option.model_file=model.bin",
        ])
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));

    let output = mme()
        .arg("inspect")
        .arg(&out)
        .args(["--body", "[[0.5]]"])
        .output()
        .unwrap();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    for expected in [
        "package OK",
        "/model:       model.bin, serving.properties\n",
        "batch_size 4",
        "option.model_file = model.bin",
        // The example sets the SDK's `READS_BINARY_TENSORS`: the section is in its component.
        "v2 tensors:   binary data reaches the model as bytes",
        "sample:       [[0.5]]",
        "answer:       [2.0",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    // Without a body, the sample is made from the inputs the model declares.
    let output = mme().arg("inspect").arg(&out).output().unwrap();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    for expected in [
        "input-0",
        "FP64",
        "sample:       [[0.5]]",
        "answer:       [2.0",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
}

#[test]
fn package_refuses_a_core_module_and_bad_properties() {
    let work = tempfile::tempdir().unwrap();
    let core = work.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\x00\x00\x00").unwrap();
    let output = mme()
        .arg("package")
        .arg("--wasm")
        .arg(&core)
        .arg("-o")
        .arg(work.path().join("x.tar.gz"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("core wasm module"),
        "{}",
        text(&output)
    );

    let parts = work.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let (wasm, _) = example_parts(&parts);
    let output = mme()
        .arg("package")
        .arg("--wasm")
        .arg(&wasm)
        .args(["--property", "maxWorkers=-3"])
        .arg("-o")
        .arg(work.path().join("x.tar.gz"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("maxWorkers"), "{}", text(&output));
}

#[test]
fn inspect_says_a_model_that_does_not_read_binary_tensors_gets_json() {
    // The echo guest reads its body itself and leaves `READS_BINARY_TENSORS` false.
    let output = mme().arg("inspect").arg(guest("echo")).output().unwrap();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("v2 tensors:   binary data reaches the model as JSON numbers"),
        "{report}"
    );
}

/// Writes an archive of `files` and returns what `mme inspect` says of it.
fn inspect_archive(files: &[ArchiveFile<'_>]) -> (bool, String) {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("p.tar.gz");
    archive::write(std::fs::File::create(&path).unwrap(), files).unwrap();
    let output = mme().arg("inspect").arg(&path).output().unwrap();
    (output.status.success(), text(&output))
}

#[test]
fn inspect_names_the_step_and_the_reason_of_a_broken_package() {
    let (ok, report) = inspect_archive(&[ArchiveFile {
        name: "weights.bin",
        bytes: b"w",
    }]);
    assert!(!ok && report.contains("no model.wasm"), "{report}");

    let (ok, report) = inspect_archive(&[ArchiveFile {
        name: "model.wasm",
        bytes: b"\0asm\x01\x00\x00\x00",
    }]);
    assert!(!ok && report.contains("core wasm module"), "{report}");

    let (ok, report) = inspect_archive(&[
        ArchiveFile {
            name: "model.wasm",
            bytes: b"\0asm\x0d\x00\x01\x00",
        },
        ArchiveFile {
            name: "serving.properties",
            bytes: b"batch_size=1\nbatch_size=2",
        },
    ]);
    assert!(
        !ok && report.contains("duplicate key \"batch_size\""),
        "{report}"
    );

    // A valid but empty component: it compiles, but exports nothing of the world.
    let (ok, report) = inspect_archive(&[ArchiveFile {
        name: "model.wasm",
        bytes: b"\0asm\x0d\x00\x01\x00",
    }]);
    assert!(
        !ok && report.contains("does not implement the mme:model/model world"),
        "{report}"
    );

    let (ok, report) = inspect_archive(&[ArchiveFile {
        name: "model.wasm",
        bytes: b"\0asm\x0d\x00\x01\x00\xff\xff",
    }]);
    assert!(!ok && report.contains("compile failed"), "{report}");
}
