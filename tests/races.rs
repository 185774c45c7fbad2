//! End to end: loads, unloads, evictions and requests of the same few
//! models, interleaved at random by concurrent clients for a few seconds.
//! Every request gets exactly one answer with a documented status, the
//! on-demand route never fails because of the race, and nothing panics.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, copies, guest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MODELS: usize = 5;
const CLIENTS: u64 = 8;
const RUN_FOR: Duration = Duration::from_secs(6);

/// (route, status) → count.
type Tally = Arc<Mutex<BTreeMap<(&'static str, u16), u64>>>;

async fn client(server_url: String, store: String, seed: u64, tally: Tally) {
    let http = reqwest::Client::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + RUN_FOR;
    while Instant::now() < deadline {
        let model = format!("m{}", rng.random_range(0..MODELS));
        let (route, request) = match rng.random_range(0..10) {
            0..=4 => (
                "predictions",
                http.post(format!("{server_url}/predictions/{model}"))
                    .header("content-type", "application/json")
                    .body("[[0.5]]"),
            ),
            5 => (
                "invoke",
                http.post(format!("{server_url}/models/{model}/invoke"))
                    .header("content-type", "application/json")
                    .body("[[0.5]]"),
            ),
            6 | 7 => (
                "load",
                http.post(format!("{server_url}/models")).body(
                    serde_json::json!({"model_name": model, "url": format!("{store}/{model}.tar.gz")})
                        .to_string(),
                ),
            ),
            _ => ("unload", http.delete(format!("{server_url}/models/{model}"))),
        };
        // A request without an answer counts as status 0, and fails the test.
        let sent = Instant::now();
        let (status, body) = match request.timeout(Duration::from_secs(30)).send().await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(error) => (0, error.to_string()),
        };
        if status == 0 || (status != 200 && route == "predictions") {
            eprintln!(
                "{route} {model}: {status} after {:?}: {body}",
                sent.elapsed()
            );
        }
        *tally.lock().unwrap().entry((route, status)).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loads_unloads_evictions_and_requests_interleave_safely() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    copies(&store, &guest("linear-regression"), "m", MODELS);
    // Room for about three of the five: loads evict, too.
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--memory-limit", "5MiB"],
    )
    .await;
    let tally: Tally = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            tokio::spawn(client(
                server.url.clone(),
                store.display().to_string(),
                seed,
                tally.clone(),
            ))
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let tally = tally.lock().unwrap().clone();
    // The documented answers of each route under this race.
    let allowed: &[(&str, &[u16])] = &[
        ("predictions", &[200]),
        ("invoke", &[200, 404]),
        ("load", &[200, 409]),
        ("unload", &[200, 404]),
    ];
    for ((route, status), count) in &tally {
        let ok = allowed
            .iter()
            .any(|(r, statuses)| r == route && statuses.contains(status));
        assert!(
            ok,
            "{count} answers {status} on {route}: {tally:?}\n{}",
            server.log_text()
        );
    }
    for route in ["predictions", "load", "unload"] {
        assert!(
            tally.iter().any(|((r, s), _)| *r == route && *s == 200),
            "no successful {route}: {tally:?}"
        );
    }
    // Exactly one answer per inference request: the server counted what the clients got.
    let sent: u64 = tally
        .iter()
        .filter(|((r, _), _)| *r == "predictions" || *r == "invoke")
        .map(|(_, n)| n)
        .sum();
    let text = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: f64 = text
        .lines()
        .filter(|line| line.starts_with("mme_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as u64, sent, "{tally:?}");
    assert!(server.metric("mme_model_evictions_total").await > 0.0);
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
