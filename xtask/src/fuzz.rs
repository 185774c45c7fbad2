//! `cargo xtask fuzz`: every fuzz target of `fuzz/`, each for a bounded time.
//!
//! The targets are built with libFuzzer's coverage instrumentation but no
//! sanitizer (`-s none`): the code under test is safe Rust, so a sanitizer
//! adds nothing that a panic does not already show, and without one the
//! stable toolchain builds them.

use std::path::Path;

use anyhow::{Context, bail};

use crate::{install_tool, run};

/// The targets, each with its corpus in `fuzz/corpus/<target>`.
const TARGETS: &[&str] = &[
    "unpack_archive",
    "parse_properties",
    "decode_request",
    "decode_tensors",
    "decode_binary",
    "decode_grpc",
];

const CARGO_FUZZ: &str = "cargo-fuzz@0.13.2";

/// Fuzzes `only` (or every target) for `seconds` each; fails on the first
/// input that makes a target panic, naming the file that reproduces it.
pub fn run_targets(root: &Path, seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    let targets: Vec<&str> = match only {
        Some(name) if TARGETS.contains(&name) => vec![name],
        Some(name) => bail!("no fuzz target {name:?}; the targets are {TARGETS:?}"),
        None => TARGETS.to_vec(),
    };
    let cargo_fuzz = install_tool(root, CARGO_FUZZ, "cargo-fuzz", &[])?;
    let fuzz_dir = root.join("fuzz");
    let fuzz = |args: &[&str]| {
        let mut command = std::process::Command::new(&cargo_fuzz);
        command
            .current_dir(&fuzz_dir)
            .args(args)
            .args(["--sanitizer", "none", "--target-dir"])
            .arg(root.join("target/fuzz"));
        command
    };
    run(&mut fuzz(&["build"]))?;
    for target in targets {
        // New inputs go to a scratch folder; the kept corpus only seeds the run.
        let scratch = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        let corpus = fuzz_dir.join("corpus").join(target);
        let mut command = fuzz(&["run", target]);
        command
            .arg(&scratch)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-max_len=65536", "-timeout=10", "-rss_limit_mb=2048"]);
        run(&mut command).with_context(|| {
            format!(
                "fuzz target {target} failed; the input that broke it is in {}",
                fuzz_dir.join("artifacts").join(target).display()
            )
        })?;
    }
    Ok(())
}
