//! `mme bench cold`: the first request to each of many models that are not
//! loaded yet, one after another.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{BenchError, new_histogram};

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
    (body, token): (&str, Option<&str>),
) -> Result<ColdReport, BenchError> {
    if models == 0 {
        return Err(BenchError::Config("--models must be at least 1".into()));
    }
    let client = reqwest::Client::builder()
        .default_headers(super::bearer_headers(token)?)
        .build()
        .map_err(|e| BenchError::Config(format!("cannot build the HTTP client: {e}")))?;
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
