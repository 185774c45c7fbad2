//! `mme bench`: a load generator over many models, with the SageMaker
//! blog's traffic patterns (and custom weights), seeded so runs repeat.
//!
//! Closed loop by default: each connection sends its next request when the
//! last one is answered. With a rate, open loop: requests are sent on a
//! fixed schedule, and each latency counts from when the request was due,
//! not from when a connection was free, so a slow server cannot hide its
//! queueing (coordinated omission).

mod cold;
mod grpc;
mod pattern;
mod rounds;
mod soak;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::Semaphore;

pub use cold::{ColdReport, cold};
pub use pattern::Pattern;
pub use rounds::{Compared, in_rounds};
pub use soak::{Actor, MAX_RSS_GROWTH, SoakConfig, SoakReport, soak};

/// Which inference route the requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /predictions/{model}` (loads on demand).
    Predictions,
    /// `POST /models/{model}/invoke` (SageMaker's; the models must be loaded).
    Invoke,
    /// `POST /v2/models/{model}/infer` (Open Inference Protocol).
    V2,
    /// The same with Triton's binary tensor extension both ways, as
    /// `tritonclient.http` sends by default.
    V2Binary,
    /// `ModelInfer` of the gRPC service (`--grpc`), with raw tensors, as
    /// `tritonclient.grpc` sends by default.
    Grpc,
}

impl FromStr for Route {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "predictions" => Ok(Route::Predictions),
            "invoke" => Ok(Route::Invoke),
            "v2" => Ok(Route::V2),
            "v2-binary" => Ok(Route::V2Binary),
            "grpc" => Ok(Route::Grpc),
            other => Err(format!(
                "unknown route {other:?}: use predictions, invoke, v2, v2-binary or grpc"
            )),
        }
    }
}

impl Route {
    fn path(self, model: &str) -> String {
        match self {
            Route::Predictions => format!("/predictions/{model}"),
            Route::Invoke => format!("/models/{model}/invoke"),
            Route::V2 | Route::V2Binary | Route::Grpc => format!("/v2/models/{model}/infer"),
        }
    }

    /// A request of `body` (as [`Route::body`] made it) to `model` on the
    /// server at `base`.
    pub(crate) fn request(
        self,
        client: &reqwest::Client,
        base: &str,
        model: &str,
        (body, header_length): &(Bytes, Option<usize>),
    ) -> reqwest::RequestBuilder {
        let request = client
            .post(format!("{base}{}", self.path(model)))
            .header("content-type", "application/json")
            .body(body.clone());
        match header_length {
            Some(length) => request.header("inference-header-content-length", *length),
            None => request,
        }
    }

    /// The body to send, and its `Inference-Header-Content-Length` if it has
    /// binary tensors: for v2, JSON rows such as `[[0.5]]` become the
    /// protocol's input tensor (for v2-binary, its bytes after the JSON,
    /// with the output asked for as bytes too); anything else is sent as given.
    fn body(self, body: &str) -> (Bytes, Option<usize>) {
        let rows = match (self, serde_json::from_str::<Vec<Vec<f64>>>(body)) {
            (Route::V2 | Route::V2Binary, Ok(rows)) => rows,
            _ => return (Bytes::from(body.to_string()), None),
        };
        let shape = [rows.len(), rows.first().map_or(0, Vec::len)];
        if self == Route::V2 {
            let request = json!({"inputs": [{
                "name": "input-0", "shape": shape, "datatype": "FP64", "data": rows,
            }]});
            return (Bytes::from(request.to_string()), None);
        }
        let values: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let header = json!({
            "inputs": [{
                "name": "input-0", "shape": shape, "datatype": "FP64",
                "parameters": {"binary_data_size": values.len()},
            }],
            "parameters": {"binary_data_output": true},
        })
        .to_string();
        let length = header.len();
        let mut request = header.into_bytes();
        request.extend_from_slice(&values);
        (Bytes::from(request), Some(length))
    }
}

/// One load test.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server, such as `http://127.0.0.1:8080`.
    pub url: String,
    /// How many models: `<prefix>0` to `<prefix><models-1>`.
    pub models: usize,
    /// The models' common name prefix.
    pub prefix: String,
    /// How traffic spreads over them.
    pub pattern: Pattern,
    /// Which inference route.
    pub route: Route,
    /// The gRPC service's address (such as `127.0.0.1:8081`), for [`Route::Grpc`].
    pub grpc: Option<String>,
    /// When set, every request is a `GET` of this path instead (such as
    /// `/ping`): the server's no-op cost, measured with the same client, so
    /// that each pattern can be reported as a ratio of it.
    pub baseline_route: Option<String>,
    /// How long to measure.
    pub duration: Duration,
    /// How long to send before measuring.
    pub warmup: Duration,
    /// Concurrent connections (at most one request in flight on each).
    pub connections: usize,
    /// Open loop at this many requests per second; `None` is closed loop.
    pub rate: Option<f64>,
    /// The body of every request.
    pub body: String,
    /// A bearer token sent with every request, for a server with tenants.
    pub token: Option<String>,
    /// Seed of the model choice.
    pub seed: u64,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

/// What a load test measured.
#[derive(Debug)]
pub struct BenchReport {
    /// The pattern, or the baseline route.
    pub label: String,
    /// The measured window.
    pub elapsed: Duration,
    /// What the requests measured in it got.
    pub answers: Answers,
}

/// Why a load test could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The server did not answer at all.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
}

impl BenchReport {
    /// Requests per second over the measured window.
    pub fn throughput(&self) -> f64 {
        self.answers.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// A latency percentile, in milliseconds.
    pub fn percentile_ms(&self, quantile: f64) -> f64 {
        self.answers.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Adds another measurement of the same pattern: its window and answers.
    pub fn absorb(&mut self, other: BenchReport) {
        self.elapsed += other.elapsed;
        self.answers.add(other.answers);
    }

    /// The same figures as the table row, for `--json`.
    pub fn to_json(&self) -> Value {
        let statuses: BTreeMap<String, u64> = self
            .answers
            .statuses
            .iter()
            .map(|(status, count)| (status.to_string(), *count))
            .collect();
        json!({
            "label": self.label,
            "requests": self.answers.requests,
            "requests_per_second": self.throughput(),
            "latency_ms": {
                "p50": self.percentile_ms(0.5),
                "p90": self.percentile_ms(0.9),
                "p99": self.percentile_ms(0.99),
                "p99.9": self.percentile_ms(0.999),
                "max": self.answers.latency_us.max() as f64 / 1000.0,
            },
            "statuses": statuses,
            "transport_errors": self.answers.transport_errors,
            "seconds": self.elapsed.as_secs_f64(),
        })
    }
}

/// The header of [`BenchReport`]'s table rows.
pub const TABLE_HEADER: &str =
    "pattern      requests      req/s    p50 ms    p90 ms    p99 ms  p99.9 ms    max ms  statuses";

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let statuses: Vec<String> = self
            .answers
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        let mut statuses = statuses.join(" ");
        if self.answers.transport_errors > 0 {
            statuses.push_str(&format!(" errors:{}", self.answers.transport_errors));
        }
        write!(
            f,
            "{:<10} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
            self.label,
            self.answers.requests,
            self.throughput(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.9),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.answers.latency_us.max() as f64 / 1000.0,
            statuses
        )
    }
}

/// What measured requests got: of one connection, of the open loop, or of
/// a whole test.
#[derive(Debug)]
pub struct Answers {
    /// Requests answered in the measured window.
    pub requests: u64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer.
    pub transport_errors: u64,
    /// Latencies in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Answers {
    fn new() -> Self {
        Answers {
            requests: 0,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            latency_us: new_histogram(),
        }
    }

    fn record(&mut self, status: Option<u16>, latency: Duration) {
        self.requests += 1;
        match status {
            Some(status) => *self.statuses.entry(status).or_default() += 1,
            None => self.transport_errors += 1,
        }
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.latency_us.record(micros);
    }

    fn add(&mut self, other: Answers) {
        self.requests += other.requests;
        self.transport_errors += other.transport_errors;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        let _ = self.latency_us.add(&other.latency_us);
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// The measured window, shared by every sender.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    stop_at: Instant,
}

impl Window {
    /// Whether a request due at `due` and answered at `done` is measured.
    fn counts(&self, due: Instant, done: Instant) -> bool {
        due >= self.measure_from && done <= self.stop_at
    }
}

/// Sends requests and draws the next model; shared by both loops.
struct Sender {
    client: reqwest::Client,
    config: BenchConfig,
    base: String,
    /// The body, and its `Inference-Header-Content-Length` when it has binary tensors.
    body: (Bytes, Option<usize>),
    /// The gRPC clients, when the route is gRPC's.
    grpc: Option<grpc::GrpcSender>,
}

impl Sender {
    /// Sends one request; the status, or `None` when no answer came.
    async fn send(&self, model: usize) -> Option<u16> {
        let request = match &self.config.baseline_route {
            Some(route) => self.client.get(format!("{}{route}", self.base)),
            None => {
                let name = format!("{}{model}", self.config.prefix);
                if let Some(grpc) = &self.grpc {
                    return grpc.send(name).await;
                }
                self.config
                    .route
                    .request(&self.client, &self.base, &name, &self.body)
            }
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                Some(status)
            }
            Err(_) => None,
        }
    }
}

/// `Authorization: Bearer <token>` for every request, if a token is given.
pub(crate) fn bearer_headers(
    token: Option<&str>,
) -> Result<reqwest::header::HeaderMap, BenchError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| BenchError::Config("--token must be visible ASCII".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
}

/// Runs one load test; it stops by itself after `warmup + duration`.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    if config.models == 0 || config.connections == 0 {
        return Err(BenchError::Config(
            "--models and --connections must be at least 1".into(),
        ));
    }
    let interval = match config.rate {
        None => None,
        Some(rate) => Some(
            Duration::try_from_secs_f64(1.0 / rate)
                .ok()
                .filter(|interval| rate > 0.0 && !interval.is_zero())
                .ok_or_else(|| {
                    BenchError::Config(format!(
                        "--rate {rate} is not a usable rate: give requests per second, such as 500"
                    ))
                })?,
        ),
    };
    let client = reqwest::Client::builder()
        .default_headers(bearer_headers(config.token.as_deref())?)
        .pool_max_idle_per_host(config.connections)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| BenchError::Config(format!("cannot build the HTTP client: {e}")))?;
    let grpc = match (config.route, &config.grpc, &config.baseline_route) {
        (Route::Grpc, _, Some(_)) => None,
        (Route::Grpc, Some(address), None) => {
            let token = config.token.as_deref();
            Some(grpc::GrpcSender::connect(address, config.connections, &config.body, token).await?)
        }
        (Route::Grpc, None, None) => {
            return Err(BenchError::Config(
                "--route grpc needs the service's address: --grpc 127.0.0.1:8081".into(),
            ));
        }
        _ => None,
    };
    let sender = Arc::new(Sender {
        client,
        base: config.url.trim_end_matches('/').to_string(),
        body: config.route.body(&config.body),
        config: config.clone(),
        grpc,
    });
    let start = Instant::now();
    let window = Window {
        measure_from: start + config.warmup,
        stop_at: start + config.warmup + config.duration,
    };
    let label = config.baseline_route.as_ref().map_or_else(
        || config.pattern.to_string(),
        |route| format!("GET {route}"),
    );
    let progress = config
        .progress
        .then(|| progress_bar(&label, config.warmup + config.duration));
    let total = match interval {
        None => closed_loop(&sender, window).await,
        Some(interval) => open_loop(&sender, window, interval).await,
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(BenchReport {
        label,
        elapsed: config.duration,
        answers: total,
    })
}

/// A bar that fills with the test's time, ticking by itself.
fn progress_bar(label: &str, length: Duration) -> ProgressBar {
    let bar = ProgressBar::new(length.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:<12} [{bar:40}] {elapsed}/{duration}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    let ticker = bar.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        while !ticker.is_finished() {
            ticker.set_position(started.elapsed().as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    bar
}

/// `connections` tasks, each sending its next request when the last is answered.
async fn closed_loop(sender: &Arc<Sender>, window: Window) -> Answers {
    let tasks: Vec<_> = (0..sender.config.connections)
        .map(|index| {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(sender.config.seed.wrapping_add(index as u64));
                let mut answers = Answers::new();
                loop {
                    let sent = Instant::now();
                    if sent >= window.stop_at {
                        break;
                    }
                    let model = sender.config.pattern.pick(&mut rng, sender.config.models);
                    let status = sender.send(model).await;
                    let done = Instant::now();
                    if window.counts(sent, done) {
                        answers.record(status, done - sent);
                    }
                }
                answers
            })
        })
        .collect();
    let mut total = Answers::new();
    for task in tasks {
        if let Ok(answers) = task.await {
            total.add(answers);
        }
    }
    total
}

/// Requests due every `interval`, at most `connections` in flight.
/// A request's latency counts from when it was due.
async fn open_loop(sender: &Arc<Sender>, window: Window, interval: Duration) -> Answers {
    let in_flight = Arc::new(Semaphore::new(sender.config.connections));
    let total = Arc::new(Mutex::new(Answers::new()));
    let mut rng = StdRng::seed_from_u64(sender.config.seed);
    let mut tasks = tokio::task::JoinSet::new();
    let mut due = Instant::now();
    while due < window.stop_at {
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let model = sender.config.pattern.pick(&mut rng, sender.config.models);
        let (sender, total) = (sender.clone(), total.clone());
        tasks.spawn(async move {
            let status = sender.send(model).await;
            drop(permit);
            let done = Instant::now();
            if window.counts(due, done) {
                total
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(status, done - due);
            }
        });
        due += interval;
    }
    while tasks.join_next().await.is_some() {}
    let mut total = total.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::replace(&mut *total, Answers::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: Option<f64>) -> BenchConfig {
        BenchConfig {
            url: "http://127.0.0.1:9".into(),
            models: 1,
            prefix: "m-".into(),
            pattern: Pattern::even(),
            route: Route::Predictions,
            grpc: None,
            baseline_route: None,
            duration: Duration::from_millis(10),
            warmup: Duration::ZERO,
            connections: 1,
            rate,
            body: "[[0.5]]".into(),
            token: None,
            seed: 1,
            progress: false,
        }
    }

    #[tokio::test]
    async fn rates_that_cannot_be_scheduled_are_refused() {
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY, 1e-300, 1e12] {
            let result = run(&config(Some(rate))).await;
            assert!(matches!(result, Err(BenchError::Config(_))), "{rate}");
        }
    }

    #[test]
    fn v2_turns_json_rows_into_an_input_tensor() {
        let (body, length) = Route::V2.body("[[0.5],[2.0]]");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["inputs"][0]["shape"], json!([2, 1]));
        assert_eq!(length, None);
        assert_eq!(
            Route::Predictions.body("[[0.5]]"),
            (Bytes::from("[[0.5]]"), None)
        );
        let other = "{\"inputs\":[]}";
        assert_eq!(Route::V2.body(other), (Bytes::from(other), None));
    }

    #[test]
    fn v2_binary_sends_the_rows_as_bytes_after_the_json() {
        let (body, length) = Route::V2Binary.body("[[0.5],[2.0]]");
        let length = length.unwrap();
        let header: Value = serde_json::from_slice(&body[..length]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(header["parameters"]["binary_data_output"], true);
        let values: Vec<u8> = [0.5f64, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(&body[length..], values.as_slice());
    }
}
