//! End to end: hostile guests, run again and again, leak nothing. Each
//! kind of failure is repeated 1,000 times (the endless loop fewer, as each
//! costs its deadline) after a warm-up round of the same; the server's RSS
//! stays flat over a round (of at most three measured), and the neighbour
//! model serves throughout.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use common::{Server, faulty_folder, guest};

/// Requests in flight at once.
const CONCURRENCY: usize = 4;
/// RSS growth allowed over a measured round: allocator noise, far below
/// what one leaked instance per failure would cost (1,000 × 64 KiB+).
const SLACK_KIB: u64 = 8 << 10;
/// Rounds measured at most: the test passes at the first that stays
/// within [`SLACK_KIB`] of the one before.
const MEASURED_ROUNDS: usize = 3;

/// Retires the hostile models' workers above one, so that both RSS
/// readings see the same workers: how many a round leaves depends on how
/// its calls overlapped (inline and on the compute threads), and a worker
/// that answered `big` keeps its grown memory until it retires.
async fn settle(server: &Server) {
    let client = reqwest::Client::new();
    for model in ["faulty", "looper"] {
        for max in [1, 4] {
            let url = format!(
                "{}/models/{model}?min_worker=1&max_worker={max}",
                server.url
            );
            let status = client.put(url).send().await.unwrap().status();
            assert!(status.is_success(), "rescaling {model}: {status}");
        }
    }
}

async fn repeat(server: &Server, model: &str, command: &str, times: usize, status: u16) {
    let body = format!("\"{command}\"");
    // A loop holds a core until its deadline: one at a time, or the others
    // would wait past that deadline in the queue.
    let concurrency = if command == "loop" { 1 } else { CONCURRENCY };
    for _ in 0..times / concurrency {
        let calls = (0..concurrency).map(|_| server.predict(model, &body));
        for (got, _, text) in futures_util::future::join_all(calls).await {
            assert_eq!(got, status, "{command}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_guests_repeated_a_thousand_times_leave_rss_flat() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("neighbour.tar.gz")).unwrap();
    faulty_folder(&store, "faulty", "max_memory_mb=64\nmaxWorkers=4\n");
    faulty_folder(
        &store,
        "looper",
        "request_timeout_ms=20\nmax_memory_mb=16\nmaxWorkers=4\n",
    );
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let cases = [
        ("faulty", "panic", 1000, 500),
        ("faulty", "alloc", 1000, 500),
        ("faulty", "grow", 1000, 500),
        ("faulty", "recurse", 1000, 500),
        ("faulty", "big", 1000, 500),
        ("looper", "loop", 200, 504),
    ];
    // A warm-up round runs every case as often as the measured round, which
    // then ends in the same state (workers that returned a huge output keep
    // their grown memory until they retire), so the two RSS figures compare
    // like with like.
    for (model, command, times, status) in cases {
        repeat(&server, model, command, times, status).await;
    }
    assert_eq!(server.predict("neighbour", "[[0.5]]").await.0, 200);
    settle(&server).await;
    // A leak grows RSS in every round; the allocator's arenas, grown while
    // other tests load the machine, reach a plateau. So a round that grows
    // past the slack is followed by another, measured from where it ended.
    let mut readings = vec![server.rss_kib()];
    let mut flat = false;
    for _ in 0..MEASURED_ROUNDS {
        for (model, command, times, status) in cases {
            repeat(&server, model, command, times, status).await;
            assert_eq!(server.predict("neighbour", "[[0.5]]").await.0, 200);
        }
        settle(&server).await;
        let after = server.rss_kib();
        let before = readings[readings.len() - 1];
        readings.push(after);
        if after <= before + SLACK_KIB {
            flat = true;
            break;
        }
    }
    assert!(
        flat,
        "RSS grew in each of {MEASURED_ROUNDS} rounds of the hostile runs: {readings:?} KiB"
    );
    // Crashed instances are dropped: at most the workers of the three models live.
    assert!(server.metric("mme_instances").await <= 9.0);
    // The guest's own panic messages reach the log as guest output; the host never panics.
    let log = server.log_text();
    let host_panics: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("panicked") && !line.contains("mme::guest"))
        .collect();
    assert!(host_panics.is_empty(), "{host_panics:?}");
}
