//! End to end: a guest that waits in a host call (it sleeps, or polls a WASI
//! clock) cannot hold a compute thread past its call's deadline. Epoch
//! interruption alone stops only wasm code; these guests run none while
//! they wait.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::time::{Duration, Instant};

use common::{Server, error_kind_and_message, faulty_folder, guest, post_json};

/// (status, error type and message, seconds from send to answer), or a
/// panic after 30 s: without the deadline, these calls would wait minutes.
async fn timed_predict(url: &str, model: &str, body: &str) -> (u16, (String, String), f64) {
    let sent = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{url}/predictions/{model}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let kind = if status == 200 {
        Default::default()
    } else {
        error_kind_and_message(&text)
    };
    (status, kind, sent.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_that_sleep_or_poll_are_stopped_at_their_deadline_and_neighbours_get_the_cores() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(&store, "sleeper", "request_timeout_ms=500\nmaxWorkers=2\n");
    std::fs::copy(guest("linear-regression"), store.join("neighbour.tar.gz")).unwrap();
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--compute-threads", "2"],
    )
    .await;
    assert_eq!(server.predict("sleeper", "\"ok\"").await.0, 200);

    // Six calls that would each wait 20 s in the host, on two compute threads.
    let waits: Vec<_> = ["sleep", "poll"]
        .iter()
        .flat_map(|how| std::iter::repeat_n(format!("\"{how}:20000\""), 3))
        .map(|body| {
            let url = server.url.clone();
            tokio::spawn(async move { timed_predict(&url, "sleeper", &body).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The neighbour's first request needs a compute thread for its load.
    let (status, _, neighbour_seconds) = timed_predict(&server.url, "neighbour", "[[0.5]]").await;
    assert_eq!(status, 200);

    let mut stopped_in_the_call = 0;
    for wait in waits {
        let (status, (kind, _), seconds) = wait.await.unwrap();
        // Stopped in the call (504), or its deadline passed in the queue
        // behind the others (503); either way at its deadline, not at 20 s.
        assert!(
            (status, kind.as_str()) == (504, "ModelTimeout")
                || (status, kind.as_str()) == (503, "QueueTimeout"),
            "{status} {kind}"
        );
        stopped_in_the_call += usize::from(status == 504);
        assert!(
            seconds < 3.0,
            "answered after {seconds:.2} s; the deadline is 0.5 s"
        );
    }
    assert!(stopped_in_the_call >= 2, "{stopped_in_the_call}");
    assert!(
        neighbour_seconds < 3.0,
        "the neighbour waited {neighbour_seconds:.2} s for a core"
    );
    // Each stopped instance was replaced: the model serves on.
    assert_eq!(server.predict("sleeper", "\"ok\"").await.0, 200);
    assert!(!server.log_text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_that_sleeps_fails_at_model_loading_timeout() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(
        &store,
        "slow-load",
        "model_loading_timeout=2\noption.sleep_load_ms=600000\n",
    );
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let (status, (kind, message), seconds) =
        timed_predict(&server.url, "slow-load", "\"ok\"").await;
    assert_eq!(
        (status, kind.as_str()),
        (500, "ModelLoadFailed"),
        "{message}\n{}",
        server.log_text()
    );
    assert!(message.contains("did not finish within 2s"), "{message}");
    assert!(seconds < 6.0, "the load failed after {seconds:.2} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_the_process_within_the_shutdown_timeout_while_a_load_sleeps() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(
        &store,
        "slow-load",
        "model_loading_timeout=600\noption.sleep_load_ms=600000\n",
    );
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--shutdown-timeout", "2s"],
    )
    .await;
    // An asynchronous registration: answered at once, its load (ten
    // minutes of sleep in the guest) left on a compute thread with no
    // request waiting for it, so the HTTP side has nothing in flight.
    let (status, body) = post_json(
        &server,
        &format!(
            "/models?url={}&model_name=slow-load&synchronous=false",
            store.join("slow-load").display()
        ),
        "",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = server.log.clone();
    let signalled = Instant::now();
    let exited_zero = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let seconds = signalled.elapsed().as_secs_f64();
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(exited_zero, "no exit 0 within 30 s of SIGTERM:\n{log}");
    assert!(
        seconds < 6.0,
        "exited {seconds:.2} s after SIGTERM; --shutdown-timeout is 2s:\n{log}"
    );
    assert!(log.contains("still inside guest calls"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_package_with_a_fifo_is_refused_and_costs_its_neighbour_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // Opening a FIFO blocks until a writer comes; none ever does. One is
    // named as the file the host reads first, one as an artifact the guest
    // could open.
    for (name, file) in [
        ("fifo-properties", "serving.properties"),
        ("fifo-artifact", "weights.bin"),
    ] {
        faulty_folder(&store, name, "");
        let path = store.join(name).join(file);
        let _ = std::fs::remove_file(&path);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
    }
    std::fs::copy(guest("linear-regression"), store.join("neighbour.tar.gz")).unwrap();
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    for (name, file) in [
        ("fifo-properties", "serving.properties"),
        ("fifo-artifact", "weights.bin"),
    ] {
        let (status, (kind, message), seconds) = timed_predict(&server.url, name, "\"ok\"").await;
        assert_eq!(
            (status, kind.as_str()),
            (400, "InvalidPackage"),
            "{message}"
        );
        assert!(message.contains(&format!("{file}, a FIFO")), "{message}");
        assert!(seconds < 5.0, "refused after {seconds:.2} s");
    }
    let (status, _, _) = timed_predict(&server.url, "neighbour", "[[1.0]]").await;
    assert_eq!(status, 200, "{}", server.log_text());
}
