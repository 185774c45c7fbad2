//! End to end: the real `mme serve` over 1,000 copies of the packaged
//! linear-regression example, checked against the native linfa model.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::path::Path;

use common::{Server, copies, guest};
use linfa::traits::Predict;
use linfa_linear::FittedLinearRegression;
use ndarray::Array2;
use serde_json::Value;

const MODELS: usize = 1000;

/// The model inside the package, decoded natively.
fn native_model(package: &Path) -> FittedLinearRegression<f64> {
    let dir = tempfile::tempdir().unwrap();
    mme_host::package::archive::unpack(package, dir.path(), &Default::default()).unwrap();
    let bytes = std::fs::read(dir.path().join("model.bin")).unwrap();
    bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
        .unwrap()
        .0
}

fn native_predict(model: &FittedLinearRegression<f64>, xs: &[f64]) -> Vec<f64> {
    let x = Array2::from_shape_vec((xs.len(), 1), xs.to_vec()).unwrap();
    model.predict(&x).to_vec()
}

fn assert_close(served: &str, expected: &[f64]) {
    let served: Vec<f64> = serde_json::from_str(served).unwrap_or_else(|e| panic!("{served}: {e}"));
    assert_eq!(served.len(), expected.len());
    for (s, e) in served.iter().zip(expected) {
        assert!((s - e).abs() < 1e-5, "served {s}, native {e}");
    }
}

fn error_body(body: &str) -> (u64, String, String) {
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON: {body}: {e}"));
    (
        value["code"].as_u64().unwrap(),
        value["type"].as_str().unwrap().to_string(),
        value["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn thousand_models_compile_once_and_predict_like_native() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let package = guest("linear-regression");
    copies(&store, &package, "sklearn-", MODELS);
    std::fs::create_dir(store.join("broken")).unwrap();
    std::fs::write(store.join("broken/model.wasm"), b"this is not wasm").unwrap();
    std::fs::write(store.join("garbage.tar.gz"), b"not an archive").unwrap();
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;

    let native = native_model(&package);
    let xs = [0.5, 1.0, -3.25, 1e3];
    let body = "[[0.5],[1.0],[-3.25],[1000]]";
    for model in [0, 1, 17, 500, 999] {
        let (status, content_type, text) = server.predict(&format!("sklearn-{model}"), body).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(content_type, "application/json");
        assert_close(&text, &native_predict(&native, &xs));
    }
    let (status, _, text) = server
        .predict_as("sklearn-3", "text/csv", "0.5\n1.0\n-3.25\n1000")
        .await;
    assert_eq!(status, 200, "{text}");
    assert_close(&text, &native_predict(&native, &xs));

    // Every one of the 1,000 models answers, with a few requests in flight at a time.
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for chunk in (0..MODELS).collect::<Vec<_>>().chunks(50) {
        let requests = chunk.iter().map(|index| {
            client
                .post(format!("{}/predictions/sklearn-{index}", server.url))
                .header("content-type", "application/json")
                .body("[[0.5]]")
                .send()
        });
        for response in futures_util::future::join_all(requests).await {
            statuses.push(response.unwrap().status().as_u16());
        }
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "not every model answered 200"
    );
    assert_eq!(server.metric("mme_models_loaded").await, MODELS as f64);
    assert_eq!(
        server
            .metric_reaching("mme_component_compilations_total", 1.0)
            .await,
        1.0,
        "1,000 copies of one wasm compile once"
    );
    assert_eq!(
        server.metric("mme_component_memory_cache_hits_total").await,
        (MODELS - 1) as f64
    );

    let (status, _, text) = server.predict("sklearn-1000", body).await;
    let (code, kind, message) = error_body(&text);
    assert_eq!((status, code, kind.as_str()), (404, 404, "ModelNotFound"));
    assert!(message.contains("sklearn-1000"), "{message}");

    let (status, _, text) = server.predict("broken", body).await;
    let (_, kind, message) = error_body(&text);
    assert_eq!((status, kind.as_str()), (400, "InvalidPackage"));
    assert!(
        message.contains("broken") && message.contains("not WebAssembly"),
        "{message}"
    );

    // A broken package is not unpacked again for every request that asks for it.
    let (status, _, again) = server.predict("broken", body).await;
    assert_eq!((status, again.as_str()), (400, text.as_str()));
    assert_eq!(
        server
            .metric("mme_model_loads_total{result=\"error\"}")
            .await,
        1.0
    );

    let (status, _, text) = server.predict("garbage", body).await;
    let (_, kind, message) = error_body(&text);
    assert_eq!((status, kind.as_str()), (400, "InvalidPackage"));
    assert!(
        message.contains("garbage.tar.gz") && message.contains("gzipped tar"),
        "{message}"
    );

    let (status, _, text) = server.predict("a%00b", body).await;
    assert_eq!(
        (status, error_body(&text).1.as_str()),
        (400, "InvalidModelName")
    );

    let (status, _, text) = server.predict("sklearn-0", "[[\"x\"]]").await;
    assert_eq!(
        (status, error_body(&text).1.as_str()),
        (400, "InvalidInput")
    );

    // The failures cost the loaded models nothing.
    let (status, _, text) = server.predict("sklearn-0", "[[0.5]]").await;
    assert_eq!(status, 200, "{text}");
    assert!(server.stop(), "SIGTERM ends the server with status 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_requests_load_the_model_once() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    copies(&store, &guest("linear-regression"), "m", 1);
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let requests = (0..32).map(|_| server.predict("m0", "[[0.5]]"));
    let answers = futures_util::future::join_all(requests).await;
    assert!(
        answers.iter().all(|(status, _, _)| *status == 200),
        "{answers:?}"
    );
    assert_eq!(
        server.metric("mme_model_loads_total{result=\"ok\"}").await,
        1.0
    );
    assert_eq!(
        server
            .metric("mme_requests_total{model=\"m0\",version=\"1\",status=\"200\"}")
            .await,
        32.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_reuses_the_compiled_component_from_disk() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let cache = work.path().join("cache");
    copies(&store, &guest("linear-regression"), "m", 1);

    let first = Server::start(&store, &cache, &[]).await;
    assert_eq!(first.predict("m0", "[[0.5]]").await.0, 200);
    // The optimized code is compiled behind the first request, and kept.
    assert_eq!(
        first
            .metric_reaching("mme_component_compilations_total", 1.0)
            .await,
        1.0
    );
    assert!(first.stop());

    let second = Server::start(&store, &cache, &[]).await;
    assert_eq!(second.predict("m0", "[[0.5]]").await.0, 200);
    assert_eq!(second.metric("mme_component_compilations_total").await, 0.0);
    assert_eq!(
        second.metric("mme_component_disk_cache_hits_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_instance_pool_evicts_the_least_recently_used_idle_model() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    copies(&store, &guest("linear-regression"), "m", 3);
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--max-instances", "2"],
    )
    .await;
    for name in ["m0", "m1", "m0"] {
        assert_eq!(server.predict(name, "[[0.5]]").await.0, 200);
    }
    // The pool holds two instances: m2 takes m1's, the one used least recently.
    let (status, _, body) = server.predict("m2", "[[0.5]]").await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
    assert_eq!(server.metric("mme_model_evictions_total").await, 1.0);
    let listed = reqwest::get(format!("{}/models", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains("\"m0\"") && listed.contains("\"m2\""),
        "{listed}"
    );
    assert!(!listed.contains("\"m1\""), "{listed}");
    assert_eq!(server.predict("m1", "[[0.5]]").await.0, 200);
    assert_eq!(server.metric("mme_models_loaded").await, 2.0);
}

/// Every live instance keeps the stack of its last async call: a pool of
/// stacks smaller than the pool of instances (wasmtime's default is 1,000)
/// answers 503 to models past it while instances are still free.
#[tokio::test(flavor = "multi_thread")]
async fn more_models_than_a_thousand_each_keep_their_instance_and_answer() {
    const MODELS: usize = 1_100;
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    copies(&store, &guest("echo"), "echo-", MODELS);
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    for index in 0..MODELS {
        let (status, _, body) = server.predict(&format!("echo-{index}"), "[[0.5]]").await;
        assert_eq!(status, 200, "echo-{index}: {body}");
    }
    assert_eq!(server.metric("mme_models_loaded").await, MODELS as f64);
    assert_eq!(server.metric("mme_model_evictions_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_echo_example_answers_its_input_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    copies(&store, &guest("echo"), "echo-", 1);
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    for (content_type, body) in [
        ("application/json", "[[0.5], [1.0]]"),
        ("text/csv", "1,2,3\n4,5,6\n"),
    ] {
        let (status, answered_as, answer) = server.predict_as("echo-0", content_type, body).await;
        assert_eq!(
            (status, answered_as.as_str(), answer.as_str()),
            (200, content_type, body)
        );
    }
}
