//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `package-examples --out DIR`: build every example guest for
//!   `wasm32-wasip2`, run its trainer, and write `DIR/<example>.tar.gz`.
//! - `demo`: package the example and a guest that answers its input
//!   unchanged, copy each into many models, serve them, load-test the three
//!   traffic patterns over each and print the tables.
//! - `test`: package the examples, export the ONNX test models with the
//!   real converters (Python), install the S3-compatible server the tests
//!   run against (`s3s-fs`, once, under `target/tools`), then run every test
//!   of the workspace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Parser, Subcommand};

mod fuzz;

/// The example guests, each a crate under `examples/` with a `cdylib` and,
/// where it has one, a `train` binary that writes its artifacts.
const EXAMPLES: &[Example] = &[
    Example {
        name: "linear-regression",
        dir: "examples/linear-regression",
        crate_file: "linear_regression",
        has_trainer: true,
    },
    Example {
        name: "echo",
        dir: "examples/echo",
        crate_file: "echo",
        has_trainer: false,
    },
];

/// Guests that exist only to be tested against (under `tests/guests/`).
const TEST_GUESTS: &[Example] = &[Example {
    name: "faulty",
    dir: "tests/guests/faulty",
    crate_file: "faulty",
    has_trainer: false,
}];

#[derive(Clone)]
struct Example {
    /// Package name, and the name of its `.tar.gz`.
    name: &'static str,
    /// Its crate's folder, where an optional `serving.properties` lives.
    dir: &'static str,
    /// The wasm file's stem (the crate name with underscores).
    crate_file: &'static str,
    /// Whether `cargo run --bin train -- --out DIR` writes artifacts.
    has_trainer: bool,
}

#[derive(Parser)]
#[command(about = "Wasm MME project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build every example guest, run its trainer, write DIR/<example>.tar.gz.
    PackageExamples {
        /// Where the packages go.
        #[arg(long)]
        out: PathBuf,
        /// Also package the guests that the tests use (such as `faulty`).
        #[arg(long)]
        with_test_guests: bool,
    },
    /// Serve many copies of the example and of a no-op guest, and load-test the three traffic patterns.
    Demo {
        /// How many model copies to serve.
        #[arg(long, default_value_t = 1000)]
        models: usize,
        /// How long each turn measures a pattern (or `/ping`).
        #[arg(long, default_value = "2s")]
        duration: String,
        /// Rounds of turns: `/ping`, then each pattern. A pattern's ratio of
        /// `/ping` is the median of its rounds', each against its own round's
        /// `/ping`, so that the machine's speed moving during the run does not
        /// decide the ratios.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Concurrent connections of the load generator.
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// Run each fuzz target for a bounded time, starting from the corpus in `fuzz/corpus`.
    Fuzz {
        /// How long to fuzz each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (default: all of them).
        target: Option<String>,
    },
    /// Package the examples, then run every test of the workspace.
    Test {
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::PackageExamples {
            out,
            with_test_guests,
        } => {
            let guests: Vec<Example> = EXAMPLES
                .iter()
                .chain(if with_test_guests { TEST_GUESTS } else { &[] })
                .cloned()
                .collect();
            package_guests(&root, &guests, &out)
        }
        Task::Demo {
            models,
            duration,
            rounds,
            connections,
        } => demo(&root, models, &duration, rounds, connections),
        Task::Test { args } => test(&root, &args),
        Task::Fuzz { seconds, target } => fuzz::run_targets(&root, seconds, target.as_deref()),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// The target every guest and the ONNX engine are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// The guests' target, which `rust-toolchain.toml` names; rustup does not
/// install it from the file where `RUSTUP_AUTO_INSTALL=0`, so it is added
/// here when rustup says it is missing. Without rustup the build itself
/// says what is wrong.
fn ensure_wasm_target(root: &Path) -> anyhow::Result<()> {
    let Ok(listed) = Command::new("rustup")
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if !listed.status.success()
        || String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|t| t.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    run(Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", WASM_TARGET]))
}

/// Builds the `mme` binary (release) and the built-in ONNX engine, which
/// goes beside it as `mme-onnx.wasm`, where the server looks for it.
fn build_host(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_wasm_target(root)?;
    run(cargo(root).args([
        "build",
        "--release",
        "--package",
        "mme-host",
        "--bin",
        "mme",
    ]))?;
    run(cargo(root).args([
        "build",
        "--profile",
        "guest",
        "--target",
        WASM_TARGET,
        "--package",
        "mme-onnx",
        "--lib",
    ]))?;
    let engine = root
        .join("target")
        .join(WASM_TARGET)
        .join("guest/mme_onnx.wasm");
    let beside = root.join("target/release/mme-onnx.wasm");
    std::fs::copy(&engine, &beside)
        .with_context(|| format!("cannot copy {} to {}", engine.display(), beside.display()))?;
    Ok(root.join("target/release/mme"))
}

/// Trains and exports the ONNX models of the tests with the real converters
/// (`tests/onnx/make_models.py`), unless the folder holds the models of this
/// very script already.
fn make_onnx_models(root: &Path) -> anyhow::Result<PathBuf> {
    let script = root.join("tests/onnx/make_models.py");
    let out = root.join("target/onnx-models");
    let made_by = out.join("made_by.py");
    let source =
        std::fs::read(&script).with_context(|| format!("cannot read {}", script.display()))?;
    if std::fs::read(&made_by).ok().as_ref() != Some(&source) {
        let _ = std::fs::remove_dir_all(&out);
        run(Command::new("python3").arg(&script).arg(&out)).context(
            "cannot make the ONNX test models: pip install the converters that .ci/run pins",
        )?;
        std::fs::write(&made_by, &source)?;
    }
    Ok(out)
}

fn package_guests(root: &Path, guests: &[Example], out: &Path) -> anyhow::Result<()> {
    let out = absolute(out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mme = build_host(root)?;
    let mut build = cargo(root);
    build.args([
        "build",
        "--profile",
        "guest",
        "--target",
        WASM_TARGET,
        "--lib",
    ]);
    for example in guests {
        build.args(["--package", example.name]);
    }
    run(&mut build)?;
    for example in guests {
        let wasm = root
            .join("target")
            .join(WASM_TARGET)
            .join("guest")
            .join(format!("{}.wasm", example.crate_file));
        let artifacts_dir = root.join("target/example-artifacts").join(example.name);
        let _ = std::fs::remove_dir_all(&artifacts_dir);
        std::fs::create_dir_all(&artifacts_dir)?;
        if example.has_trainer {
            run(cargo(root)
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "--package",
                    example.name,
                    "--bin",
                    "train",
                    "--",
                ])
                .arg("--out")
                .arg(&artifacts_dir))?;
        }
        let output = out.join(format!("{}.tar.gz", example.name));
        let mut package = Command::new(&mme);
        package
            .arg("package")
            .arg("--wasm")
            .arg(&wasm)
            .arg("-o")
            .arg(&output);
        for artifact in std::fs::read_dir(&artifacts_dir)? {
            package.arg("--artifact").arg(artifact?.path());
        }
        let properties = root.join(example.dir).join("serving.properties");
        if properties.is_file() {
            for line in std::fs::read_to_string(&properties)?.lines() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    package.arg("--property").arg(line);
                }
            }
        }
        run(&mut package)?;
    }
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

fn test(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let examples = root.join("target/mme-examples");
    let guests: Vec<Example> = EXAMPLES
        .iter()
        .chain(TEST_GUESTS)
        .map(Example::clone)
        .collect();
    package_guests(root, &guests, &examples)?;
    let onnx_models = make_onnx_models(root)?;
    let s3_server = install_s3_server(root)?;
    run(cargo(root)
        .args(["test", "--release", "--workspace", "--no-fail-fast"])
        .args(args)
        .env("MME_EXAMPLES_DIR", &examples)
        .env("MME_ONNX_MODELS", &onnx_models)
        .env("MME_S3S_FS", &s3_server))
}

/// The S3-compatible server of the tests: a real one, not a stand-in.
const S3_SERVER: &str = "s3s-fs@0.14.1";

fn install_s3_server(root: &Path) -> anyhow::Result<PathBuf> {
    install_tool(root, S3_SERVER, "s3s-fs", &["--features", "binary"])
}

/// Installs crate `spec` under `target/tools` unless its `binary` is there,
/// and returns the binary's path: tools stay with the build, not the machine.
fn install_tool(root: &Path, spec: &str, binary: &str, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let tools = root.join("target/tools");
    let path = tools.join("bin").join(binary);
    if !path.is_file() {
        run(cargo(root)
            .args(["install", spec, "--locked"])
            .args(extra)
            .arg("--root")
            .arg(&tools))?;
    }
    Ok(path)
}

/// Stops the server when the demo ends, also on an error.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo(
    root: &Path,
    models: usize,
    duration: &str,
    rounds: u32,
    connections: usize,
) -> anyhow::Result<()> {
    let work = root.join("target/demo");
    let examples = work.join("examples");
    package_guests(root, EXAMPLES, &examples)?;
    let store = work.join("store");
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store)?;
    // The example, and a guest that answers its input unchanged: the
    // second shows what the host alone costs per request.
    for (example, prefix) in [("linear-regression", "sklearn-"), ("echo", "echo-")] {
        let package = examples.join(format!("{example}.tar.gz"));
        for index in 0..models {
            std::fs::copy(&package, store.join(format!("{prefix}{index}.tar.gz")))?;
        }
        println!(
            "packaged {models} models {prefix}0 … {prefix}{} ({example}) in {}",
            models - 1,
            store.display()
        );
    }

    let mme = root.join("target/release/mme");
    let address = free_loopback_address()?;
    // A fresh compile cache, so that the first request shows the cost of compiling.
    let cache = work.join("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let server = Server(
        Command::new(&mme)
            .arg("serve")
            .arg("--model-store")
            .arg(&store)
            .arg("--bind")
            .arg(address.to_string())
            // The demo measures HTTP; its gRPC service stays on loopback too.
            .arg("--grpc-bind")
            .arg(free_loopback_address()?.to_string())
            .arg("--cache-dir")
            .arg(&cache)
            // The demo's models are wasm components: the ONNX engine's
            // background compile would only take CPU from the measurement.
            .arg("--onnx-precompile=false")
            .env("RUST_LOG", "warn")
            .spawn()
            .context("cannot start mme serve")?,
    );
    wait_until_up(address)?;
    println!(
        "serving on http://{address}; load-testing /ping and each pattern in turns of {duration}, {rounds} rounds, with {connections} connections"
    );
    println!("cold starts: the first request to each model, one after another");
    run(Command::new(&mme)
        .args(["bench", "cold", "--url", &format!("http://{address}")])
        .args(["--models", &models.to_string(), "--prefix", "sklearn-"]))?;
    for (prefix, what) in [
        ("sklearn-", "the example (it parses JSON rows and predicts)"),
        (
            "echo-",
            "a guest that answers its input unchanged (the host's own cost)",
        ),
    ] {
        println!("{what}:");
        let mut bench = Command::new(&mme);
        bench
            .arg("bench")
            .arg("--url")
            .arg(format!("http://{address}"))
            .args(["--models", &models.to_string(), "--prefix", prefix])
            .args(["--duration", duration, "--warmup", "3s"])
            .args(["--connections", &connections.to_string()])
            .args(["--baseline-route", "/ping"])
            .args(["--rounds", &rounds.to_string()])
            .args([
                "--pattern",
                "even",
                "--pattern",
                "hot",
                "--pattern",
                "few-hot",
            ]);
        run(&mut bench)?;
    }
    if let Some(rss) = rss_kib(server.0.id()) {
        println!(
            "server RSS with every model loaded: {:.1} MiB",
            rss as f64 / 1024.0
        );
    }
    drop(server);
    Ok(())
}

fn free_loopback_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn wait_until_up(address: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(address) {
            stream
                .write_all(b"GET /ping HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")?;
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the server did not answer /ping on {address} within 30 s")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
