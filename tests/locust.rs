//! The Locust file for the three traffic patterns still works against the
//! server: a short headless run of each pattern (Locust is installed by
//! `.ci/run`), no failures, and the hot pattern's share seen by the server.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, copies, guest};

const MODELS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn each_pattern_runs_without_failures() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    copies(&store, &guest("linear-regression"), "sklearn-", MODELS);
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let locustfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/locust/locustfile.py");

    for pattern in ["even", "hot", "few-hot"] {
        let before = server.served_per_model("sklearn-", MODELS).await;
        let csv = work.path().join(pattern);
        let (host, file, csv_prefix) = (server.url.clone(), locustfile.clone(), csv.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new("locust")
                .arg("-f")
                .arg(file)
                .args([
                    "--host",
                    &host,
                    "--headless",
                    "-u",
                    "4",
                    "-r",
                    "4",
                    // Locust's own start (gevent, spawning the users)
                    // counts against this time; on a loaded machine 3 s
                    // once left none for requests.
                    "-t",
                    "5s",
                ])
                .args(["--only-summary", "--csv"])
                .arg(csv_prefix)
                .env("MME_PATTERN", pattern)
                .env("MME_MODELS", MODELS.to_string())
                .output()
                .unwrap_or_else(|e| panic!("locust is needed (pip install locust): {e}"))
        })
        .await
        .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{pattern}: locust failed:\n{log}");
        let stats = std::fs::read_to_string(format!("{}_stats.csv", csv.display())).unwrap();
        let aggregated = stats.lines().find(|l| l.contains("Aggregated")).unwrap();
        let fields: Vec<&str> = aggregated.split(',').collect();
        let (requests, failures): (u64, u64) =
            (fields[2].parse().unwrap(), fields[3].parse().unwrap());
        assert!(requests > 20, "{pattern}: {aggregated}");
        assert_eq!(failures, 0, "{pattern}: {aggregated}");

        let during: Vec<f64> = server
            .served_per_model("sklearn-", MODELS)
            .await
            .iter()
            .zip(&before)
            .map(|(after, before)| after - before)
            .collect();
        let total: f64 = during.iter().sum();
        assert!(
            total >= requests as f64,
            "{pattern}: the server saw every request"
        );
        let hot: f64 = match pattern {
            "hot" => during[0],
            "few-hot" => during[..10].iter().sum(),
            _ => continue,
        };
        assert!(
            hot / total > 0.8,
            "{pattern}: the hot share is {}",
            hot / total
        );
    }
}
