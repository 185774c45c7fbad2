//! End to end: the memory budget. Standalone, idle models are evicted,
//! least recently used first, so that more models than fit are served; in
//! SageMaker's multi-model mode a load that does not fit gets 507 until
//! SageMaker unloads another model.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Server, copies, delete, error_kind_and_message, faulty_folder, guest, metric_in, post_json,
};

const ROW: &str = "[[0.5]]";
/// A budget that holds about three warm copies of the example (its code,
/// about 0.8 MiB, once; about 1.1 MiB of linear memory per instance).
const SMALL_LIMIT: &str = "5MiB";
/// What the process may take beyond the budget: its own code, the async
/// runtime, buffers and the allocator's slack. Measured 20–24 MiB for the
/// example's 30 models cycling through a 5 MiB budget (2026-12-05), so the
/// bound keeps 4 MiB of headroom for memory the budget does not see; the
/// tests' own checks of evictions and of the budget's figure catch a budget
/// that stops evicting.
const OVERHEAD_KIB: u64 = 28 << 10;

#[tokio::test(flavor = "multi_thread")]
async fn cycling_over_more_models_than_fit_evicts_and_every_request_succeeds() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let models = 30;
    copies(&store, &guest("linear-regression"), "m", models);
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--memory-limit", SMALL_LIMIT],
    )
    .await;
    let baseline_kib = server.rss_kib();
    let limit_kib = 5 << 10;
    // Three rounds, four clients at a time: requests meet evictions of
    // their own model, and must be served or reload, never fail.
    for _round in 0..3 {
        for chunk in (0..models).collect::<Vec<_>>().chunks(4) {
            let names: Vec<String> = chunk.iter().map(|i| format!("m{i}")).collect();
            let calls = names.iter().map(|name| server.predict(name, ROW));
            for (status, _, body) in futures_util::future::join_all(calls).await {
                assert_eq!(status, 200, "{body}\n{}", server.log_text());
            }
        }
    }
    let evictions = server.metric("mme_model_evictions_total").await;
    assert!(
        evictions >= (models * 3 - 6) as f64,
        "evictions {evictions}"
    );
    // The pages an instance touches are counted when they are measured, so
    // the last requests can take the figure a few pages over the limit until
    // the housekeeping (every second) evicts: it must come back under.
    let back_under = Instant::now() + Duration::from_secs(10);
    let used = loop {
        let text = server.metrics_text().await;
        let used: f64 = ["code", "instances", "models"]
            .iter()
            .map(|kind| metric_in(&text, &format!("mme_memory_used_bytes{{kind=\"{kind}\"}}")))
            .sum();
        if used <= (5 << 20) as f64 || Instant::now() > back_under {
            break used;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(used <= (5 << 20) as f64, "used {used} over the limit");
    assert!(server.metric("mme_models_loaded").await <= 4.0);
    let rss_kib = server.rss_kib();
    assert!(
        rss_kib <= baseline_kib + limit_kib + OVERHEAD_KIB,
        "RSS {rss_kib} KiB, from {baseline_kib} KiB at start, limit {limit_kib} KiB"
    );
    assert!(!server.log_text().contains("panicked"));
}

fn extracted(root: &Path, name: &str, properties: Option<&str>) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    mme_host::package::archive::unpack(&guest("linear-regression"), &dir, &Default::default())
        .unwrap();
    if let Some(properties) = properties {
        std::fs::write(dir.join("serving.properties"), properties).unwrap();
    }
    dir.display().to_string()
}

async fn register(server: &Server, name: &str, url: &str) -> (u16, String) {
    let body = serde_json::json!({"model_name": name, "url": url}).to_string();
    post_json(server, "/models", &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn sagemaker_mode_answers_507_until_a_model_is_deleted() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("extracted");
    // Each model declares 100 MiB; 250 MiB holds two of them.
    let properties = Some("required_memory_mb=100\n");
    let urls: Vec<String> = (0..3)
        .map(|i| extracted(&root, &format!("x{i}"), properties))
        .collect();
    let server = Server::start_with_env(
        &root,
        &work.path().join("cache"),
        &["--memory-limit", "250MiB"],
        &[("SAGEMAKER_MULTI_MODEL", "true")],
    )
    .await;
    assert_eq!(register(&server, "x0", &urls[0]).await.0, 200);
    assert_eq!(register(&server, "x1", &urls[1]).await.0, 200);
    let (status, body) = register(&server, "x2", &urls[2]).await;
    assert_eq!(status, 507, "{body}");
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!(kind, "InsufficientMemory");
    for figure in ["needs 100.0 MiB", "of the 250.0 MiB memory limit", "DELETE"] {
        assert!(message.contains(figure), "{figure:?} in {message}");
    }
    assert_eq!(server.metric("mme_model_evictions_total").await, 0.0);
    // Both loaded models still serve; nothing was evicted behind SageMaker's back.
    for name in ["x0", "x1"] {
        let path = format!("/models/{name}/invoke");
        assert_eq!(post_json(&server, &path, ROW).await.0, 200);
    }
    assert_eq!(delete(&server, "/models/x0").await, 200);
    let (status, body) = register(&server, "x2", &urls[2]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_larger_than_the_whole_budget_gets_507_with_the_numbers() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    extracted(&store, "huge", Some("required_memory_mb=512\n"));
    extracted(&store, "small", None);
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--memory-limit", "64MiB"],
    )
    .await;
    assert_eq!(server.predict("small", ROW).await.0, 200);
    let (status, _, body) = server.predict("huge", ROW).await;
    assert_eq!(status, 507, "{body}");
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!(kind, "InsufficientMemory");
    assert!(message.contains("64.0 MiB"), "{message}");
    assert!(message.contains("raise --memory-limit"), "{message}");
    // Refusing it evicted nothing.
    assert_eq!(server.metric("mme_model_evictions_total").await, 0.0);
    assert_eq!(server.predict("small", ROW).await.0, 200);
}

/// The example's instances are granted 17 wasm pages (1,088 KiB) each and
/// touch a small part of them: the budget counts what they touch.
#[tokio::test(flavor = "multi_thread")]
async fn the_budget_counts_the_pages_instances_touch_not_what_they_were_granted() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let models = 40;
    copies(&store, &guest("linear-regression"), "m", models);
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    // The first model serves on baseline code, outside the pool, which is
    // counted as granted; the others start on the optimized code, pooled,
    // and the first one's instance moves there as it next runs.
    assert_eq!(server.predict("m0", ROW).await.0, 200);
    server.wait_logged("optimized code ready").await;
    for index in 0..models {
        assert_eq!(server.predict(&format!("m{index}"), ROW).await.0, 200);
    }
    // Far from the limit, the pages are measured every ten seconds; until a
    // measurement after the last load, its grants count in full.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut per_instance_kib;
    let mut instances;
    loop {
        instances = server.metric("mme_instances").await;
        let bytes = server
            .metric("mme_memory_used_bytes{kind=\"instances\"}")
            .await;
        per_instance_kib = bytes / instances.max(1.0) / 1024.0;
        if per_instance_kib <= 512.0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(instances >= models as f64, "{instances} live instances");
    assert!(
        (8.0..=512.0).contains(&per_instance_kib),
        "{per_instance_kib:.0} KiB counted per instance; 1,088 KiB are granted and far less touched"
    );
}

/// Instances that really hold memory (each `load` writes 6 MiB and keeps
/// it) are counted as they hold it, so models are evicted before the
/// process's RSS passes the limit, however the counting is sampled.
#[tokio::test(flavor = "multi_thread")]
async fn instances_that_hold_memory_are_evicted_before_rss_passes_the_limit() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let models = 16;
    for index in 0..models {
        faulty_folder(&store, &format!("h{index}"), "option.hold_mb=6\n");
    }
    let limit_mib = 40;
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--memory-limit", &format!("{limit_mib}MiB")],
    )
    .await;
    let baseline_kib = server.rss_kib();
    let mut highest_kib = baseline_kib;
    for _round in 0..2 {
        for index in 0..models {
            let (status, _, body) = server.predict(&format!("h{index}"), "\"ok\"").await;
            assert_eq!(status, 200, "{body}\n{}", server.log_text());
            highest_kib = highest_kib.max(server.rss_kib());
        }
    }
    let evictions = server.metric("mme_model_evictions_total").await;
    // 16 models of 6 MiB each cannot stay in 40 MiB: most loads evict.
    assert!(evictions >= 16.0, "evictions {evictions}");
    assert!(
        highest_kib <= baseline_kib + (limit_mib << 10) + OVERHEAD_KIB,
        "RSS reached {highest_kib} KiB, from {baseline_kib} KiB at start, limit {limit_mib} MiB"
    );
    let counted = server
        .metric("mme_memory_used_bytes{kind=\"instances\"}")
        .await;
    let live = server.metric("mme_instances").await;
    assert!(
        counted >= live * f64::from(6 << 20),
        "{counted} bytes counted for {live} instances holding 6 MiB each"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_into_a_full_instance_pool_waits_for_a_model_to_become_idle() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    for name in ["busy-0", "busy-1"] {
        faulty_folder(&store, name, "");
    }
    copies(&store, &guest("linear-regression"), "next-", 1);
    // Room for two instances, which the two busy models take; compute
    // threads to spare, so that the load does not simply wait for one.
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--max-instances", "2", "--compute-threads", "4"],
    )
    .await;
    let busy: Vec<_> = ["busy-0", "busy-1"]
        .into_iter()
        .map(|name| {
            let url = format!("{}/predictions/{name}", server.url);
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/json")
                    .body("\"poll:1500\"")
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    // Both busy models are loaded and inside their requests.
    let started = Instant::now();
    while server.metric("mme_instances").await < 2.0 && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Every instance is busy, so no model can be evicted yet: the load waits
    // for one to finish instead of answering 503.
    let (status, body) = post_json(&server, "/predictions/next-0", ROW).await;
    assert_eq!(status, 200, "{body}");
    for request in busy {
        assert_eq!(request.await.unwrap(), 200);
    }
}
