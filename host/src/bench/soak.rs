//! `mme bench soak`: a long run of everything at once, to find what only
//! shows over time (a leak, a lost request, a wedged model). Traffic moves
//! through the three patterns while a manager loads and unloads models at
//! random and a tenant sends its model the worst requests it can. Every
//! answer is checked against what its sender should get, and the server's
//! RSS is sampled throughout.
//!
//! The hostile models run the project's test guest `faulty`, whose body is
//! the command to misbehave with; see `tests/guests/faulty`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BenchError, Pattern, Route};

/// The commands the hostile tenant sends, and the answer each must get.
const HOSTILE: &[(&str, u16, &str)] = &[
    ("\"panic\"", 500, "ModelCrashed"),
    ("\"loop\"", 504, "ModelTimeout"),
    ("\"grow\"", 500, "ModelCrashed"),
    ("\"alloc\"", 500, "ModelCrashed"),
    ("\"recurse\"", 500, "ModelCrashed"),
    ("\"big\"", 500, "ModelError"),
    ("\"flood\"", 200, ""),
    ("\"ok\"", 200, ""),
];

/// The share of the run before RSS is taken as the baseline: by then every
/// pattern, load, unload and hostile request has run at least once.
const WARMUP_SHARE: f64 = 0.25;

/// The most RSS may grow after warm-up for the soak to pass.
pub const MAX_RSS_GROWTH: f64 = 0.05;

/// One soak run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The server, such as `http://127.0.0.1:8080`.
    pub url: String,
    /// The server's process, whose RSS is sampled.
    pub pid: u32,
    /// Well-behaved models `<prefix>0` … `<prefix><models-1>`.
    pub models: usize,
    /// Their name prefix.
    pub prefix: String,
    /// Hostile models `<hostile_prefix>0` …, which run the `faulty` guest.
    pub hostile_models: usize,
    /// Their name prefix.
    pub hostile_prefix: String,
    /// The body of a well-behaved request.
    pub body: String,
    /// The well-behaved tenant's management key, on a server with tenants.
    pub token: Option<String>,
    /// The hostile models' tenant's key; with it, that tenant also asks for
    /// the well-behaved tenant's models, and must be told they do not exist.
    pub hostile_token: Option<String>,
    /// How long to run.
    pub duration: Duration,
    /// Concurrent connections of well-behaved traffic.
    pub connections: usize,
    /// How often RSS is sampled.
    pub sample_every: Duration,
    /// Seed of every random choice.
    pub seed: u64,
}

/// Who sent a request: each has its own expected answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Actor {
    /// Inference on well-behaved models: always 200.
    Traffic,
    /// `POST /models` (200, or 409 when loaded) and `DELETE` (200, or 404 when not).
    Manager,
    /// Misbehaving requests to hostile models: each its documented error.
    Hostile,
    /// The hostile tenant asking for the other tenant's models: always 404.
    Intruder,
}

/// What a soak saw.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Answers by sender, status and error type, and whether each was expected.
    pub outcomes: BTreeMap<(Actor, u16, String), (u64, bool)>,
    /// RSS samples: time into the run and KiB.
    pub rss: Vec<(Duration, u64)>,
}

impl SoakReport {
    /// Answers that their sender should not have got, transport errors included.
    pub fn unexpected(&self) -> u64 {
        self.outcomes
            .values()
            .filter(|(_, expected)| !expected)
            .map(|(count, _)| count)
            .sum()
    }

    /// All answers.
    pub fn requests(&self) -> u64 {
        self.outcomes.values().map(|(count, _)| count).sum()
    }

    /// RSS growth after warm-up: the lowest RSS of the run's last fifth
    /// over the lowest of the fifth right after warm-up, less one. Lows,
    /// because a hostile request lifts RSS for a moment (a guest that grows
    /// to its cap), while a leak lifts the floor.
    pub fn rss_growth(&self, duration: Duration) -> Option<f64> {
        let warm = duration.mul_f64(WARMUP_SHARE);
        self.floor_growth(warm, duration)
    }

    /// RSS growth over the run's second half: the lowest RSS of the last
    /// fifth over the lowest of the fifth from the middle, less one. A leak
    /// goes on lifting the floor to the end; a step taken once (the
    /// allocator keeping an arena, a pool reaching its working size) lifts
    /// it once and leaves it flat, which this tells apart.
    pub fn late_rss_growth(&self, duration: Duration) -> Option<f64> {
        self.floor_growth(duration / 2, duration)
    }

    /// The lowest RSS of the run's last fifth over the lowest of the fifth
    /// from `from`, less one.
    fn floor_growth(&self, from: Duration, duration: Duration) -> Option<f64> {
        let fifth = duration / 5;
        let lowest = |from: Duration, to: Duration| {
            self.rss
                .iter()
                .filter(|(t, _)| (from..=to).contains(t))
                .map(|(_, kib)| *kib)
                .min()
        };
        let baseline = lowest(from, from + fifth)?;
        let last = lowest(duration.saturating_sub(fifth), Duration::MAX)?;
        (baseline > 0).then(|| last as f64 / baseline as f64 - 1.0)
    }

    /// Whether RSS leaks: it grew by [`MAX_RSS_GROWTH`] after warm-up and
    /// was still growing in the second half (by a quarter of the limit).
    /// `None` with too few samples to tell.
    pub fn rss_leaks(&self, duration: Duration) -> Option<bool> {
        let growth = self.rss_growth(duration)?;
        let late = self.late_rss_growth(duration)?;
        Some(growth >= MAX_RSS_GROWTH && late >= MAX_RSS_GROWTH / 4.0)
    }

    /// Whether the soak passed: no unexpected answer, no leak.
    pub fn passed(&self, duration: Duration) -> bool {
        self.unexpected() == 0 && self.rss_leaks(duration) == Some(false)
    }
}

/// Whether `actor` may get `status` with error `kind`.
fn expected(actor: Actor, status: u16, kind: &str, hostile_answer: Option<(u16, &str)>) -> bool {
    match actor {
        Actor::Traffic => status == 200,
        Actor::Manager => matches!(status, 200 | 404 | 409),
        Actor::Hostile => hostile_answer == Some((status, kind)),
        Actor::Intruder => status == 404,
    }
}

/// Runs the soak; it stops by itself after `duration`.
pub async fn soak(config: &SoakConfig) -> Result<SoakReport, BenchError> {
    if config.models == 0 || config.connections == 0 || config.hostile_models == 0 {
        return Err(BenchError::Config(
            "--models, --hostile-models and --connections must be at least 1".into(),
        ));
    }
    let client_of = |token: Option<&str>| {
        reqwest::Client::builder()
            .default_headers(super::bearer_headers(token)?)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| BenchError::Config(format!("cannot build the HTTP client: {e}")))
    };
    let client = client_of(config.token.as_deref())?;
    let hostile_client = client_of(config.hostile_token.as_deref())?;
    let started = Instant::now();
    let deadline = started + config.duration;
    let report = Arc::new(Mutex::new(SoakReport::default()));
    let mut tasks = Vec::new();
    for connection in 0..config.connections {
        let (client, config, report) = (client.clone(), config.clone(), report.clone());
        tasks.push(tokio::spawn(async move {
            traffic(&client, &config, connection as u64, deadline, &report).await
        }));
    }
    let (c, cfg, r) = (client.clone(), config.clone(), report.clone());
    tasks.push(tokio::spawn(async move {
        manager(&c, &cfg, deadline, &r).await
    }));
    let (c, cfg, r) = (hostile_client.clone(), config.clone(), report.clone());
    tasks.push(tokio::spawn(async move {
        hostile(&c, &cfg, deadline, &r).await
    }));
    if config.hostile_token.is_some() {
        let (c, cfg, r) = (hostile_client, config.clone(), report.clone());
        tasks.push(tokio::spawn(async move {
            intruder(&c, &cfg, deadline, &r).await
        }));
    }

    while Instant::now() < deadline {
        let kib = rss_kib(config.pid).ok_or_else(|| {
            BenchError::Config(format!("cannot read the RSS of process {}", config.pid))
        })?;
        let into = started.elapsed();
        let (requests, unexpected) = {
            let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
            report.rss.push((into, kib));
            (report.requests(), report.unexpected())
        };
        println!(
            "{:>6.0} s  RSS {:>8.1} MiB  {requests:>9} answers  {unexpected} unexpected",
            into.as_secs_f64(),
            kib as f64 / 1024.0
        );
        tokio::time::sleep(
            config
                .sample_every
                .min(deadline - Instant::now().min(deadline)),
        )
        .await;
    }
    for task in tasks {
        let _ = task.await;
    }
    if let Some(kib) = rss_kib(config.pid) {
        let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
        report.rss.push((started.elapsed(), kib));
    }
    let report = std::mem::take(&mut *report.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(report)
}

/// One connection of well-behaved traffic; the pattern changes every sixth
/// of the run, so each of the three runs twice.
async fn traffic(
    client: &reqwest::Client,
    config: &SoakConfig,
    connection: u64,
    deadline: Instant,
    report: &Mutex<SoakReport>,
) {
    let patterns = [Pattern::even(), Pattern::hot(), Pattern::few_hot()];
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(connection));
    let started = Instant::now();
    let phase = config.duration / 6;
    while Instant::now() < deadline {
        let index = (started.elapsed().as_nanos() / phase.as_nanos().max(1)) as usize;
        let model = patterns[index % 3].pick(&mut rng, config.models);
        let name = format!("{}{model}", config.prefix);
        let route = [Route::Predictions, Route::V2, Route::V2Binary][rng.random_range(0..3)];
        let request = route.request(client, &config.url, &name, &route.body(&config.body));
        record(report, Actor::Traffic, request, None).await;
    }
}

/// Loads and unloads random models, a few times a second.
async fn manager(
    client: &reqwest::Client,
    config: &SoakConfig,
    deadline: Instant,
    report: &Mutex<SoakReport>,
) {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(1 << 32));
    while Instant::now() < deadline {
        let name = format!("{}{}", config.prefix, rng.random_range(0..config.models));
        let request = if rng.random_bool(0.5) {
            client.delete(format!("{}/models/{name}", config.url))
        } else {
            // Loads from the server's own store, as an on-demand request would.
            client.get(format!("{}/v2/models/{name}/ready", config.url))
        };
        record(report, Actor::Manager, request, None).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
    }
}

/// Sends the hostile models their worst, one request at a time.
async fn hostile(
    client: &reqwest::Client,
    config: &SoakConfig,
    deadline: Instant,
    report: &Mutex<SoakReport>,
) {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(2 << 32));
    while Instant::now() < deadline {
        let (command, status, kind) = HOSTILE[rng.random_range(0..HOSTILE.len())];
        let name = format!(
            "{}{}",
            config.hostile_prefix,
            rng.random_range(0..config.hostile_models)
        );
        let request = client
            .post(format!("{}/predictions/{name}", config.url))
            .header("content-type", "application/json")
            .body(command);
        record(report, Actor::Hostile, request, Some((status, kind))).await;
    }
}

/// The hostile tenant asks for the other tenant's models, a few times a
/// second, by each inference route and a describe.
async fn intruder(
    client: &reqwest::Client,
    config: &SoakConfig,
    deadline: Instant,
    report: &Mutex<SoakReport>,
) {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(3 << 32));
    while Instant::now() < deadline {
        let name = format!("{}{}", config.prefix, rng.random_range(0..config.models));
        let route = [Route::Predictions, Route::V2, Route::Invoke][rng.random_range(0..3)];
        let request = route.request(client, &config.url, &name, &route.body(&config.body));
        record(report, Actor::Intruder, request, None).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..100))).await;
    }
}

/// Sends `request` and counts its answer: status 0 is no answer at all.
async fn record(
    report: &Mutex<SoakReport>,
    actor: Actor,
    request: reqwest::RequestBuilder,
    hostile_answer: Option<(u16, &str)>,
) {
    let (status, kind) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap_or_default();
            let kind = if status == 200 {
                String::new()
            } else {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "(not JSON)".into())
            };
            (status, kind)
        }
        Err(error) => (0, format!("transport: {}", error_kind(&error))),
    };
    let ok = status != 0 && expected(actor, status, &kind, hostile_answer);
    let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
    let entry = report
        .outcomes
        .entry((actor, status, kind))
        .or_insert((0, ok));
    entry.0 += 1;
}

fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "other"
    }
}

/// The resident set of process `pid`, in KiB (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:>6}  {:<22} {:>9}  expected",
            "sender", "status", "type", "count"
        )?;
        for ((actor, status, kind), (count, expected)) in &self.outcomes {
            let kind = if kind.is_empty() { "-" } else { kind };
            let verdict = if *expected { "yes" } else { "NO" };
            writeln!(
                f,
                "{:<8} {status:>6}  {kind:<22} {count:>9}  {verdict}",
                format!("{actor:?}")
            )?;
        }
        write!(
            f,
            "{} answers, {} unexpected",
            self.requests(),
            self.unexpected()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with(rss: &[u64], outcomes: &[((Actor, u16, &str), bool)]) -> SoakReport {
        SoakReport {
            outcomes: outcomes
                .iter()
                .map(|((a, s, k), ok)| ((*a, *s, k.to_string()), (1, *ok)))
                .collect(),
            rss: rss
                .iter()
                .enumerate()
                .map(|(i, kib)| (Duration::from_secs(i as u64 * 10), *kib))
                .collect(),
        }
    }

    #[test]
    fn each_sender_has_its_own_expected_answers() {
        assert!(expected(Actor::Traffic, 200, "", None));
        assert!(!expected(Actor::Traffic, 503, "MemoryBusy", None));
        assert!(expected(Actor::Intruder, 404, "ModelNotFound", None));
        assert!(!expected(Actor::Intruder, 200, "", None));
        assert!(expected(Actor::Manager, 409, "ModelAlreadyLoaded", None));
        assert!(!expected(Actor::Manager, 500, "ModelLoadFailed", None));
        let crash = Some((500, "ModelCrashed"));
        assert!(expected(Actor::Hostile, 500, "ModelCrashed", crash));
        assert!(
            !expected(Actor::Hostile, 500, "ModelError", crash),
            "the right error, not any error"
        );
    }

    #[test]
    fn growth_compares_the_end_with_the_end_of_warm_up() {
        let run = Duration::from_secs(100);
        // Samples every 10 s: the baseline is the low of 30 s and 40 s, the end the low of 80–100 s.
        let flat = report_with(&[50, 90, 100, 100, 101, 100, 102, 101, 100, 101, 102], &[]);
        let growth = flat.rss_growth(run).unwrap();
        assert!(growth.abs() < 0.03, "{growth}");
        assert!(flat.passed(run));
        let leaking = report_with(&[50, 90, 100, 100, 100, 104, 108, 112, 116, 120, 124], &[]);
        assert!(leaking.rss_growth(run).unwrap() > MAX_RSS_GROWTH);
        assert_eq!(leaking.rss_leaks(run), Some(true));
        assert!(!leaking.passed(run));
        let spiky = report_with(&[50, 90, 100, 160, 100, 100, 100, 150, 100, 100, 170], &[]);
        assert!(spiky.passed(run), "a moment's peak is not a leak");
    }

    #[test]
    fn a_floor_that_steps_once_is_not_a_leak_but_one_that_climbs_after_it_is() {
        let run = Duration::from_secs(100);
        // The floor steps by 15% at 40 s and stays: the middle (50–70 s) and the end agree.
        let stepped = report_with(&[50, 90, 100, 100, 115, 115, 115, 116, 115, 115, 115], &[]);
        assert!(stepped.rss_growth(run).unwrap() > MAX_RSS_GROWTH);
        assert!(stepped.late_rss_growth(run).unwrap().abs() < 0.01);
        assert!(stepped.passed(run));
        // The same step, then a slow climb to the end: still a leak.
        let climbing = report_with(&[50, 90, 100, 100, 115, 115, 115, 117, 118, 119, 120], &[]);
        assert!(climbing.late_rss_growth(run).unwrap() >= MAX_RSS_GROWTH / 4.0);
        assert!(!climbing.passed(run));
        // A leak that starts only in the second half is one too.
        let late = report_with(&[50, 90, 100, 100, 100, 100, 100, 103, 106, 109, 112], &[]);
        assert!(!late.passed(run));
        // Too few samples to tell is not a pass.
        let short = report_with(&[100, 100], &[]);
        assert_eq!(short.rss_leaks(run), None);
        assert!(!short.passed(run));
    }

    #[test]
    fn one_unexpected_answer_fails_the_soak() {
        let run = Duration::from_secs(100);
        let rss = [100; 11];
        let clean = report_with(&rss, &[((Actor::Traffic, 200, ""), true)]);
        assert!(clean.passed(run));
        let lost = report_with(
            &rss,
            &[
                ((Actor::Traffic, 200, ""), true),
                ((Actor::Traffic, 0, "transport: other"), false),
            ],
        );
        assert_eq!(lost.unexpected(), 1);
        assert!(!lost.passed(run));
        assert!(lost.to_string().contains("NO"), "{lost}");
    }
}
