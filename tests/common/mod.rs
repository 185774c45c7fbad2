//! Shared by the end-to-end tests: the packaged guests, and a real `mme
//! serve` process on a free loopback port, stopped when dropped.

#![allow(dead_code)] // Each test file uses a different part.

pub mod s3;

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The folder of packaged guests that `cargo xtask test` writes.
pub fn guests_dir() -> PathBuf {
    let dir = std::env::var_os("MME_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mme-examples"));
    assert!(
        dir.join("linear-regression.tar.gz").is_file(),
        "no packaged guests in {}: run the tests with `cargo xtask test`",
        dir.display()
    );
    dir
}

/// The packaged guest `name`.
pub fn guest(name: &str) -> PathBuf {
    guests_dir().join(format!("{name}.tar.gz"))
}

/// The folder of ONNX models that `tests/onnx/make_models.py` writes
/// (`cargo xtask test` makes it and sets `MME_ONNX_MODELS`).
pub fn onnx_models_dir() -> PathBuf {
    let dir = std::env::var_os("MME_ONNX_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/onnx-models"));
    assert!(
        dir.join("linear_regression.onnx").is_file(),
        "no ONNX models in {}: run the tests with `cargo xtask test`",
        dir.display()
    );
    dir
}

/// The `mme` binary under test.
pub fn mme() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mme"))
}

/// A running `mme serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// `127.0.0.1:<port>` of its gRPC service.
    pub grpc: String,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Server {
    /// Starts `mme serve` on `store` with `cache` and extra arguments, and waits for `/ping`.
    pub async fn start<S: AsRef<OsStr> + ?Sized>(
        store: &S,
        cache: &Path,
        extra: &[&str],
    ) -> Server {
        Server::start_with_env(store, cache, extra, &[]).await
    }

    /// [`Server::start`] with environment variables set for the server.
    pub async fn start_with_env<S: AsRef<OsStr> + ?Sized>(
        store: &S,
        cache: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Server::start_from(mme(), store, cache, extra, env).await
    }

    /// [`Server::start_with_env`] with `command` in place of plain `mme`:
    /// a wrapper that sets up the server's world and then runs it.
    pub async fn start_from<S: AsRef<OsStr> + ?Sized>(
        mut command: Command,
        store: &S,
        cache: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let [port, grpc_port] = free_ports();
        let grpc = format!("127.0.0.1:{grpc_port}");
        let log = cache.with_extension(format!("{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = command
            .arg("serve")
            .arg("--model-store")
            .arg(store)
            .arg("--cache-dir")
            .arg(cache)
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            // Only the ONNX tests need the ONNX engine; they ask for its
            // precompilation themselves (an argument wins over this).
            .env("MME_ONNX_PRECOMPILE", "false")
            // Not KServe's default port: tests run side by side.
            .env("MME_GRPC_BIND", &grpc)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("mme serve starts");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            grpc,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = reqwest::get(format!("{}/ping", server.url)).await
                && response.status() == 200
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mme serve did not come up; log:\n{}", server.log_text());
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits, up to 300 s, until the log contains `text` (background work,
    /// such as the optimized compile behind a baseline tier, says so when
    /// done); fails, showing the log, if it never does.
    pub async fn wait_logged(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !self.log_text().contains(text) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.assert_logged(text);
    }

    /// Fails, showing the log, unless the log so far contains `text`.
    pub fn assert_logged(&self, text: &str) {
        let log = self.log_text();
        assert!(log.contains(text), "{text:?} is not in the log:\n{log}");
    }

    /// `POST /predictions/{model}` with a JSON body: (status, content type, body).
    pub async fn predict(&self, model: &str, body: &str) -> (u16, String, String) {
        self.predict_as(model, "application/json", body).await
    }

    /// `POST /predictions/{model}` with a content type.
    pub async fn predict_as(
        &self,
        model: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, String, String) {
        let response = reqwest::Client::new()
            .post(format!("{}/predictions/{model}", self.url))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, content_type, response.text().await.expect("a body"))
    }

    /// The value of a metric line that starts with `series` (name and labels).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_in(&self.metrics_text().await, series)
    }

    /// One scrape of `/metrics`, so that several series are read at one moment.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body")
    }

    /// Waits, up to 300 s, until the metric `series` reaches `value`, and
    /// gives what it reads then: background work (the optimized compile of
    /// code that first served on its baseline tier) is counted when done.
    pub async fn metric_reaching(&self, series: &str, value: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let now = self.metric(series).await;
            if now >= value || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Requests each of `<prefix>0 … <prefix><count-1>` answered with 200, from `/metrics`.
    pub async fn served_per_model(&self, prefix: &str, count: usize) -> Vec<f64> {
        let mut counts = Vec::new();
        for index in 0..count {
            let series = format!(
                "mme_requests_total{{model=\"{prefix}{index}\",version=\"1\",status=\"200\"}}"
            );
            counts.push(self.metric(&series).await);
        }
        counts
    }

    /// The resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        self.signal("TERM");
        exited_zero_within(&mut self.child, Duration::from_secs(30))
    }
}

impl Server {
    /// Sends the server the signal `name` (`TERM`, `HUP`, …).
    pub fn signal(&self, name: &str) {
        send_signal(name, self.child.id());
    }
}

/// Sends process `pid` the signal `name` (`TERM`, `KILL`, …).
pub fn send_signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Waits up to `limit` for `child` to exit; whether it exited with status 0.
pub fn exited_zero_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills `dir` with `count` copies of `package`, named `<prefix><i>.tar.gz`.
pub fn copies(dir: &Path, package: &Path, prefix: &str, count: usize) {
    std::fs::create_dir_all(dir).expect("store folder");
    for index in 0..count {
        std::fs::copy(package, dir.join(format!("{prefix}{index}.tar.gz"))).expect("copy package");
    }
}

/// Unpacks the faulty guest into `store/<name>/` with `properties`.
pub fn faulty_folder(store: &Path, name: &str, properties: &str) {
    let dir = store.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    mme_host::package::archive::unpack(&guest("faulty"), &dir, &Default::default()).unwrap();
    std::fs::write(dir.join("serving.properties"), properties).unwrap();
}

/// The `type` and `message` of a JSON error body.
pub fn error_kind_and_message(body: &str) -> (String, String) {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON: {body}: {e}"));
    (
        value["type"].as_str().unwrap_or_default().to_string(),
        value["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// A port that was free a moment ago, on loopback.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` different ports that were free a moment ago, on loopback: all are
/// held at once while they are found, so no two are the same.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("a bound port").port())
}

/// `GET` a path of the server: (status, body).
pub async fn get(server: &Server, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{}{path}", server.url))
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// `POST` a JSON body to a path of the server: (status, body).
pub async fn post_json(server: &Server, path: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// `DELETE` a path of the server: its status.
pub async fn delete(server: &Server, path: &str) -> u16 {
    reqwest::Client::new()
        .delete(format!("{}{path}", server.url))
        .send()
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

/// The value of the line of a `/metrics` scrape that starts with `series`
/// (name and labels); 0 when it is absent.
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// Runs the client script `tests/clients/{script}` with `args`, and gives
/// the one JSON object it prints of what it saw; fails with its error,
/// naming the pip package it needs, if it fails.
#[allow(dead_code)] // Not every test binary drives a Python client.
pub async fn python_client(script: &str, args: &[&str], package: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/clients")
        .join(script);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .args(args)
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("the client's thread");
    assert!(
        output.status.success(),
        "the client failed (pip install '{package}'):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints one JSON object")
}
