//! End to end: a wasm that no cache holds serves first on Winch's baseline
//! code, moves to Cranelift's optimized code once it is compiled behind it,
//! and keeps only the optimized code on disk; deadlines hold on both tiers.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::time::{Duration, Instant};

use common::{Server, copies, error_kind_and_message, faulty_folder, guest};

const BASELINE_COMPILES: &str = "mme_component_baseline_compilations_total";
const OPTIMIZED_COMPILES: &str = "mme_component_compilations_total";

#[tokio::test(flavor = "multi_thread")]
async fn a_new_wasm_serves_on_baseline_code_then_moves_to_its_optimized_code() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let cache = work.path().join("cache");
    copies(&store, &guest("linear-regression"), "m", 2);
    let server = Server::start(&store, &cache, &[]).await;

    let (status, _, baseline) = server.predict("m0", "[[0.5],[1.0]]").await;
    assert_eq!(status, 200, "{baseline}");
    assert_eq!(server.metric(BASELINE_COMPILES).await, 1.0);
    // Cranelift compiles it in the background.
    server.wait_logged("optimized code ready").await;
    assert_eq!(server.metric(OPTIMIZED_COMPILES).await, 1.0);
    let (status, _, optimized) = server.predict("m0", "[[0.5],[1.0]]").await;
    assert_eq!(status, 200, "{optimized}");
    server.assert_logged("instance moved to optimized code");
    assert_eq!(baseline, optimized, "both tiers run the same wasm");
    // A second model of the same wasm starts on the optimized code.
    assert_eq!(server.predict("m1", "[[0.5]]").await.0, 200);
    assert_eq!(server.metric(BASELINE_COMPILES).await, 1.0);
    assert_eq!(server.metric(OPTIMIZED_COMPILES).await, 1.0);
    assert!(server.stop(), "clean exit");

    // The disk cache kept the optimized code: a restart compiles nothing.
    let server = Server::start(&store, &cache, &[]).await;
    assert_eq!(server.predict("m0", "[[0.5]]").await.0, 200);
    assert_eq!(server.metric(BASELINE_COMPILES).await, 0.0);
    assert_eq!(server.metric(OPTIMIZED_COMPILES).await, 0.0);
    assert_eq!(
        server.metric("mme_component_disk_cache_hits_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_baseline_tier_off_the_first_request_waits_for_cranelift() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    copies(&store, &guest("linear-regression"), "m", 1);
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--baseline-tier", "false"],
    )
    .await;
    assert_eq!(server.predict("m0", "[[0.5]]").await.0, 200);
    assert_eq!(server.metric(BASELINE_COMPILES).await, 0.0);
    assert_eq!(server.metric(OPTIMIZED_COMPILES).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn wasm_that_computes_past_its_deadline_on_baseline_code_is_stopped_at_it() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // A first load always runs on baseline code: nothing is compiled yet.
    faulty_folder(
        &store,
        "slow-load",
        "model_loading_timeout=1\noption.load_ms=600000\n",
    );
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let sent = Instant::now();
    let (status, _, body) = server.predict("slow-load", "\"ok\"").await;
    let seconds = sent.elapsed().as_secs_f64();
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!(
        (status, kind.as_str()),
        (500, "ModelLoadFailed"),
        "{message}"
    );
    assert!(message.contains("did not finish within 1s"), "{message}");
    assert!(seconds < 5.0, "the load failed after {seconds:.2} s");
    assert_eq!(server.metric(BASELINE_COMPILES).await, 1.0);

    // A request that spins in wasm is answered 504 at its deadline.
    faulty_folder(&store, "spinner", "request_timeout_ms=500\n");
    let sent = Instant::now();
    let (status, _, body) = server.predict("spinner", "\"loop\"").await;
    let seconds = sent.elapsed().as_secs_f64();
    assert_eq!(status, 504, "{body}");
    assert!(seconds < 3.0, "answered after {seconds:.2} s");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.predict("spinner", "\"ok\"").await.0, 200);
}
