//! End to end: `mme bench` against the real server. Its counts add up with
//! the server's own, the models get the pattern's shares, errors are shown,
//! the open loop keeps its rate, and every run stops by itself.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Server, copies, guest, mme};
use serde_json::Value;

const MODELS: usize = 12;

/// Runs `mme bench` against `url` with `args`, off the async threads; it
/// must stop by itself well within `limit`. Its table, and its JSON results.
async fn bench(url: &str, args: &[&str], limit: Duration) -> (String, Value) {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run_bench(&url, &args, limit))
        .await
        .unwrap()
}

fn run_bench(url: &str, args: &[String], limit: Duration) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let mut child = mme()
        .args(["bench", "--url", url, "--json"])
        .arg(&json)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "mme bench did not stop by itself"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let output: Output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (String::from_utf8_lossy(&output.stdout).to_string(), results)
}

/// A server over `MODELS` copies of the example, `sklearn-0` …; the folder
/// it serves from lives as long as the returned guard.
async fn serve_copies() -> (tempfile::TempDir, Server) {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    copies(&store, &guest("linear-regression"), "sklearn-", MODELS);
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    (work, server)
}

fn status_count(result: &Value, status: &str) -> u64 {
    result["statuses"][status].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_counts_add_up_and_follow_the_weights() {
    let (_work, server) = serve_copies().await;
    let models = MODELS.to_string();

    let args = [
        "--models",
        &models,
        "--pattern",
        "weights:5,3,rest=2",
        "--duration",
        "3s",
        "--warmup",
        "0s",
        "--connections",
        "4",
    ];
    let (_, results) = bench(&server.url, &args, Duration::from_secs(30)).await;
    let result = &results[0];
    let measured = result["requests"].as_u64().unwrap();
    assert!(measured > 100, "{result}");
    assert_eq!(
        status_count(result, "200"),
        measured,
        "every answer is counted by status"
    );

    let served = server.served_per_model("sklearn-", MODELS).await;
    let total: f64 = served.iter().sum();
    assert!(
        total >= measured as f64 && total <= measured as f64 + 4.0,
        "the server served {total}, the bench measured {measured} (at most one per connection in flight at the end)"
    );
    for (index, expected) in [(0, 0.5), (1, 0.3)] {
        let share = served[index] / total;
        assert!(
            (share - expected).abs() < 0.05,
            "model {index}: {share} against {expected}"
        );
    }
    let rest: f64 = served[2..].iter().sum::<f64>() / total;
    assert!((rest - 0.2).abs() < 0.05, "the rest: {rest}");
    assert!(
        served[2..].iter().all(|&c| c > 0.0),
        "the rest spreads over every other model: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_shown_the_open_loop_keeps_its_rate_and_every_route_works() {
    let (_work, server) = serve_copies().await;
    let limit = Duration::from_secs(30);

    let (table, results) = bench(
        &server.url,
        &[
            "--models",
            "3",
            "--prefix",
            "absent-",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
        limit,
    )
    .await;
    let result = &results[0];
    assert!(result["requests"].as_u64().unwrap() > 0);
    assert_eq!(
        status_count(result, "404"),
        result["requests"].as_u64().unwrap()
    );
    assert!(
        table.contains("404:"),
        "non-2xx answers are in the table:\n{table}"
    );

    let (_, results) = bench(
        &server.url,
        &[
            "--models",
            "4",
            "--rate",
            "100",
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ],
        limit,
    )
    .await;
    let sent = results[0]["requests"].as_u64().unwrap();
    assert!(
        (170..=205).contains(&sent),
        "100 requests/s for 2 s: {sent}"
    );

    // The models are loaded now, so SageMaker's invoke route finds them; v2
    // gets tensors, as JSON, as binary data, and over gRPC.
    for route in ["invoke", "v2", "v2-binary", "grpc"] {
        let (_, results) = bench(
            &server.url,
            &[
                "--grpc",
                &server.grpc,
                "--models",
                "4",
                "--route",
                route,
                "--duration",
                "1s",
                "--warmup",
                "0s",
                "--connections",
                "2",
            ],
            limit,
        )
        .await;
        let result = &results[0];
        let requests = result["requests"].as_u64().unwrap();
        assert!(
            requests > 0 && status_count(result, "200") == requests,
            "{route}: {result}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rounds_take_turns_with_the_baseline_and_report_the_median_round() {
    let (_work, server) = serve_copies().await;
    let models = MODELS.to_string();
    let args = [
        "--models",
        &models,
        "--baseline-route",
        "/ping",
        "--rounds",
        "3",
        "--pattern",
        "even",
        "--pattern",
        "hot",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--connections",
        "2",
    ];
    let (table, results) = bench(&server.url, &args, Duration::from_secs(60)).await;
    let results = results.as_array().unwrap();
    assert_eq!(
        results.len(),
        3,
        "the baseline, then each pattern: {results:?}"
    );
    assert_eq!(results[0]["label"], "GET /ping");
    for (result, label) in results[1..].iter().zip(["even", "hot"]) {
        assert_eq!(result["label"], label);
        // Three turns of half a second each, every answer a 200.
        assert!(
            (result["seconds"].as_f64().unwrap() - 1.5).abs() < 1e-9,
            "{result}"
        );
        let requests = result["requests"].as_u64().unwrap();
        assert!(
            requests > 0 && status_count(result, "200") == requests,
            "{result}"
        );
        let rounds = result["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 3, "{result}");
        let mut ratios: Vec<f64> = rounds
            .iter()
            .map(|round| round["ratio_of_baseline"].as_f64().unwrap())
            .collect();
        assert!(ratios.iter().all(|ratio| *ratio > 0.0), "{result}");
        ratios.sort_by(f64::total_cmp);
        assert_eq!(result["ratio_of_baseline"].as_f64().unwrap(), ratios[1]);
        assert!(result["p99_ratio_of_baseline"].as_f64().unwrap() > 0.0);
    }
    assert!(
        table.contains("medians of 3 rounds"),
        "the table says how its ratios were taken:\n{table}"
    );

    // Rounds compare with a baseline, and there is at least one.
    for bad in [
        vec!["--rounds", "3"],
        vec!["--baseline-route", "/ping", "--rounds", "0"],
    ] {
        let output = mme()
            .args(["bench", "--url", &server.url, "--duration", "1s"])
            .args(&bad)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--rounds"), "{bad:?}: {stderr}");
    }
}
