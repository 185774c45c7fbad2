//! `mme bench`: a closed-loop load generator over many models, with the
//! SageMaker blog's traffic patterns, seeded so runs repeat.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;

/// Share of traffic that goes to the hot models in `hot` and `few-hot`.
const HOT_SHARE: f64 = 0.9;
/// Hot models in `few-hot`.
const FEW_HOT_MODELS: usize = 10;

/// How requests spread over the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Uniform over every model.
    Even,
    /// 90% to model 0, the rest uniform over the others.
    Hot,
    /// 90% to the first 10 models, the rest uniform over the others.
    FewHot,
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "even" => Ok(Pattern::Even),
            "hot" => Ok(Pattern::Hot),
            "few-hot" => Ok(Pattern::FewHot),
            other => Err(format!(
                "unknown pattern {other:?}: use even, hot or few-hot"
            )),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pattern::Even => "even",
            Pattern::Hot => "hot",
            Pattern::FewHot => "few-hot",
        })
    }
}

impl Pattern {
    /// Draws the index of the next model out of `models`.
    pub fn pick(self, rng: &mut impl Rng, models: usize) -> usize {
        let hot = match self {
            Pattern::Even => 0,
            Pattern::Hot => 1,
            Pattern::FewHot => FEW_HOT_MODELS,
        }
        .min(models);
        if hot == 0 || hot == models {
            return rng.random_range(0..models.max(1));
        }
        if rng.random_bool(HOT_SHARE) {
            rng.random_range(0..hot)
        } else {
            rng.random_range(hot..models)
        }
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
    /// When set, every request is a `GET` of this path instead (such as
    /// `/ping`): the server's no-op cost, measured with the same client, so
    /// that each pattern can be reported as a ratio of it.
    pub baseline_route: Option<String>,
    /// How long to measure.
    pub duration: Duration,
    /// How long to send before measuring.
    pub warmup: Duration,
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// The JSON body of every request.
    pub body: String,
    /// Seed of the model choice.
    pub seed: u64,
}

/// What a load test measured.
#[derive(Debug)]
pub struct BenchReport {
    /// The pattern, or the baseline route.
    pub label: String,
    /// Requests answered in the measured window.
    pub requests: u64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer.
    pub transport_errors: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub latency_us: Histogram<u64>,
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
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// A latency percentile, in milliseconds.
    pub fn percentile_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// The header of [`BenchReport`]'s table rows.
pub const TABLE_HEADER: &str =
    "pattern      requests      req/s    p50 ms    p90 ms    p99 ms  p99.9 ms    max ms  statuses";

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        let mut statuses = statuses.join(" ");
        if self.transport_errors > 0 {
            statuses.push_str(&format!(" errors:{}", self.transport_errors));
        }
        write!(
            f,
            "{:<10} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
            self.label,
            self.requests,
            self.throughput(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.9),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.latency_us.max() as f64 / 1000.0,
            statuses
        )
    }
}

struct Tally {
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    latency_us: Histogram<u64>,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Runs one load test; it stops by itself after `warmup + duration`.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    if config.models == 0 || config.connections == 0 {
        return Err(BenchError::Config(
            "--models and --connections must be at least 1".into(),
        ));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.connections)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| BenchError::Config(format!("cannot build the HTTP client: {e}")))?;
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let stop_at = measure_from + config.duration;
    let tasks: Vec<_> = (0..config.connections)
        .map(|index| {
            let client = client.clone();
            let config = config.clone();
            tokio::spawn(async move {
                connection(client, config, index as u64, measure_from, stop_at).await
            })
        })
        .collect();
    let mut total = Tally {
        requests: 0,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        latency_us: new_histogram(),
    };
    for task in tasks {
        let Ok(tally) = task.await else { continue };
        total.requests += tally.requests;
        total.transport_errors += tally.transport_errors;
        for (status, count) in tally.statuses {
            *total.statuses.entry(status).or_default() += count;
        }
        let _ = total.latency_us.add(&tally.latency_us);
    }
    Ok(BenchReport {
        label: config.baseline_route.as_ref().map_or_else(
            || config.pattern.to_string(),
            |route| format!("GET {route}"),
        ),
        requests: total.requests,
        statuses: total.statuses,
        transport_errors: total.transport_errors,
        elapsed: config.duration,
        latency_us: total.latency_us,
    })
}

async fn connection(
    client: reqwest::Client,
    config: BenchConfig,
    index: u64,
    measure_from: Instant,
    stop_at: Instant,
) -> Tally {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(index));
    let base = config.url.trim_end_matches('/');
    let mut tally = Tally {
        requests: 0,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        latency_us: new_histogram(),
    };
    loop {
        let sent = Instant::now();
        if sent >= stop_at {
            break;
        }
        let request = match &config.baseline_route {
            Some(route) => client.get(format!("{base}{route}")),
            None => {
                let model = config.pattern.pick(&mut rng, config.models);
                client
                    .post(format!("{base}/predictions/{}{model}", config.prefix))
                    .header("content-type", "application/json")
                    .body(config.body.clone())
            }
        };
        let result = request.send().await;
        let status = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                Some(status)
            }
            Err(_) => None,
        };
        let done = Instant::now();
        if sent < measure_from || done > stop_at {
            continue;
        }
        tally.requests += 1;
        match status {
            Some(status) => *tally.statuses.entry(status).or_default() += 1,
            None => tally.transport_errors += 1,
        }
        let micros = u64::try_from((done - sent).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = tally.latency_us.record(micros);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(pattern: Pattern, models: usize, draws: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0; models];
        for _ in 0..draws {
            counts[pattern.pick(&mut rng, models)] += 1;
        }
        counts
    }

    #[test]
    fn hot_sends_ninety_percent_to_model_zero() {
        let counts = shares(Pattern::Hot, 100, 100_000);
        let hot = counts[0] as f64 / 100_000.0;
        assert!((hot - 0.9).abs() < 0.01, "{hot}");
        assert!(counts[1..].iter().all(|&c| c > 0));
    }

    #[test]
    fn few_hot_sends_ninety_percent_to_the_first_ten() {
        let counts = shares(Pattern::FewHot, 100, 100_000);
        let hot: usize = counts[..10].iter().sum();
        assert!((hot as f64 / 100_000.0 - 0.9).abs() < 0.01);
    }

    #[test]
    fn even_is_uniform_and_small_model_counts_work() {
        let counts = shares(Pattern::Even, 10, 100_000);
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(shares(Pattern::Hot, 1, 10), vec![10]);
        assert_eq!(shares(Pattern::FewHot, 5, 10).iter().sum::<usize>(), 10);
    }

    #[test]
    fn patterns_parse_and_print() {
        for name in ["even", "hot", "few-hot"] {
            assert_eq!(name.parse::<Pattern>().unwrap().to_string(), name);
        }
        assert!("lukewarm".parse::<Pattern>().is_err());
    }
}

/// What `mme bench cold` measured: the first request to each of many
/// models that are not loaded yet.
#[derive(Debug)]
pub struct ColdReport {
    /// The very first request, which may include compiling the wasm.
    pub first: Duration,
    /// The first requests to every other model, in microseconds.
    pub rest_us: Histogram<u64>,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
}

impl fmt::Display for ColdReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |q: f64| self.rest_us.value_at_quantile(q) as f64 / 1000.0;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        writeln!(
            f,
            "first request (compiles if the cache is cold): {:.2} ms",
            self.first.as_secs_f64() * 1000.0
        )?;
        write!(
            f,
            "first request to {} more models: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms  statuses {}",
            self.rest_us.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            self.rest_us.max() as f64 / 1000.0,
            statuses.join(" ")
        )
    }
}

/// Sends one request to each of `models` models, one after another, and
/// measures each: on a fresh server, every one is a cold start.
pub async fn cold(
    url: &str,
    prefix: &str,
    models: usize,
    body: &str,
) -> Result<ColdReport, BenchError> {
    if models == 0 {
        return Err(BenchError::Config("--models must be at least 1".into()));
    }
    let client = reqwest::Client::new();
    let base = url.trim_end_matches('/');
    let mut first = Duration::ZERO;
    let mut rest_us = new_histogram();
    let mut statuses = BTreeMap::new();
    for index in 0..models {
        let sent = Instant::now();
        let status = match client
            .post(format!("{base}/predictions/{prefix}{index}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                status
            }
            Err(e) => return Err(BenchError::Unreachable(format!("{base}: {e}"))),
        };
        let elapsed = sent.elapsed();
        *statuses.entry(status).or_default() += 1;
        if index == 0 {
            first = elapsed;
        } else {
            let _ = rest_us.record(
                u64::try_from(elapsed.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        }
    }
    Ok(ColdReport {
        first,
        rest_us,
        statuses,
    })
}
