//! End to end: the rest of the SageMaker and DJL surface. `/invocations` in
//! multi-model mode (named by query or target-model header) and in
//! single-model mode (`/opt/ml/model`, moved by a flag); DJL's query form of
//! `POST /models`; and the bound on how long SIGTERM waits.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::time::{Duration, Instant};

use common::{Server, error_kind_and_message, faulty_folder, guest};
use serde_json::Value;

/// POST `path` with a JSON body and optional headers: (status, body).
async fn post(server: &Server, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{}{path}", server.url)).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn invocations_in_multi_model_mode_need_a_target_and_find_it() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("sklearn-1.tar.gz")).unwrap();
    let server = Server::start_with_env(
        &store,
        &work.path().join("cache"),
        &[],
        &[("SAGEMAKER_MULTI_MODEL", "true")],
    )
    .await;

    let (status, expected) = post(&server, "/predictions/sklearn-1", "[[0.5]]", &[]).await;
    assert_eq!(status, 200);
    let (status, body) = post(&server, "/invocations", "[[0.5]]", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_kind_and_message(&body).0, "ModelNotNamed");
    for (path, headers) in [
        ("/invocations?model_name=sklearn-1", vec![]),
        (
            "/invocations",
            vec![("X-Amzn-SageMaker-Target-Model", "sklearn-1.tar.gz")],
        ),
        ("/invocations", vec![("X-Amzn-Target-Model", "sklearn-1")]),
    ] {
        let (status, body) = post(&server, path, "[[0.5]]", &headers).await;
        assert_eq!((status, &body), (200, &expected), "{path} {headers:?}");
    }
    let (status, body) = post(
        &server,
        "/invocations",
        "[[0.5]]",
        &[("X-Amzn-SageMaker-Target-Model", "absent.tar.gz")],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = post(&server, "/invocations?model_name=../etc", "[[0.5]]", &[]).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn single_model_mode_serves_the_model_folder_on_invocations() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("same.tar.gz")).unwrap();
    let model_dir = work.path().join("opt-ml-model");
    std::fs::create_dir_all(&model_dir).unwrap();
    mme_host::package::archive::unpack(
        &guest("linear-regression"),
        &model_dir,
        &Default::default(),
    )
    .unwrap();
    let dir = model_dir.display().to_string();
    let server = Server::start(&store, &work.path().join("cache"), &["--model-dir", &dir]).await;

    let (status, single) = post(&server, "/invocations", "[[0.5], [2.0]]", &[]).await;
    assert_eq!(status, 200, "{single}");
    let (_, same) = post(&server, "/predictions/same", "[[0.5], [2.0]]", &[]).await;
    assert_eq!(
        single, same,
        "the single model answers as the same package does"
    );
    let (status, listed) = get_json(&server, "/models").await;
    assert_eq!(status, 200);
    assert!(
        listed["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["modelName"] == "model"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn djl_registration_by_query_overrides_the_properties() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let archive = work.path().join("sklearn-7.tar.gz");
    std::fs::copy(guest("linear-regression"), &archive).unwrap();
    let url = archive.display().to_string();
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;

    let path = format!(
        "/models?url={url}&model_name=djl&batch_size=4&max_batch_delay=50&min_worker=1&max_worker=2"
    );
    let (status, body) = post(&server, &path, "", &[]).await;
    assert_eq!(status, 200, "{body}");
    let (_, described) = get_json(&server, "/models/djl").await;
    assert_eq!(
        (
            &described["batchSize"],
            &described["maxBatchDelay"],
            &described["maxWorkers"]
        ),
        (&Value::from(4), &Value::from(50), &Value::from(2)),
        "{described}"
    );
    assert_eq!(
        post(&server, "/predictions/djl", "[[0.5]]", &[]).await.0,
        200
    );
    assert_eq!(
        post(&server, &path, "", &[]).await.0,
        409,
        "the same name twice"
    );

    // No model_name: named after the archive. synchronous=false: 202 at once, ready soon after.
    let (status, body) = post(
        &server,
        &format!("/models?url=file://{url}&synchronous=false"),
        "",
        &[],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_json(&server, "/models/sklearn-7").await.0 != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get_json(&server, "/models/sklearn-7").await.0, 200);

    for (query, status, words) in [
        (
            format!("url={url}&model_name=a&min_worker=3&max_worker=1"),
            400,
            "min_worker (3)",
        ),
        (
            format!("url={url}&model_name=b&batch_size=0"),
            400,
            "batch_size",
        ),
        (
            format!("url={url}&model_name=e&max_batch_delay=18446744073709551615"),
            400,
            "max_batch_delay",
        ),
        (
            format!("url={url}&model_name=c&batch_size=many"),
            400,
            "bad query",
        ),
        (
            "url=s3://Bad_Bucket/m.tar.gz&model_name=d".to_string(),
            400,
            "bucket name",
        ),
        (
            "url=/nowhere/m.tar.gz".to_string(),
            404,
            "/nowhere/m.tar.gz",
        ),
    ] {
        let (got, body) = post(&server, &format!("/models?{query}"), "", &[]).await;
        let (_, message) = error_kind_and_message(&body);
        assert_eq!(got, status, "{query}: {body}");
        assert!(message.contains(words), "{query}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_requests_in_flight_and_then_bounds_the_wait() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(&store, "slow", "request_timeout_ms=60000\n");

    // A request in flight at SIGTERM is answered, then the server exits 0.
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    assert_eq!(
        post(&server, "/predictions/slow", "\"ok\"", &[]).await.0,
        200
    );
    let url = server.url.clone();
    let in_flight = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("{url}/predictions/slow"))
            .header("content-type", "application/json")
            .body("\"work:800:finished\"")
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::task::spawn_blocking(move || server.stop());
    assert_eq!(in_flight.await.unwrap(), (200, "\"finished\"".to_string()));
    assert!(stopped.await.unwrap(), "exit 0 after the request finished");

    // A request that would run for a minute does not hold the shutdown past its bound.
    let server = Server::start(
        &store,
        &work.path().join("cache2"),
        &["--shutdown-timeout", "1s"],
    )
    .await;
    let url = server.url.clone();
    let stuck = tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(format!("{url}/predictions/slow"))
            .header("content-type", "application/json")
            .body("\"loop\"")
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let exited_zero = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(exited_zero, "exit 0 at the shutdown bound");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the one-minute request did not hold it"
    );
    stuck.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_attributes_reach_the_model_and_come_back() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(&store, "echo", "");
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    for path in ["/predictions/echo", "/invocations?model_name=echo"] {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", server.url))
            .header("content-type", "application/json")
            .header("X-Amzn-SageMaker-Custom-Attributes", "trace=42")
            .body("\"attributes\"")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let back = response
            .headers()
            .get("x-amzn-sagemaker-custom-attributes")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            back.as_deref(),
            Some("seen=trace=42"),
            "{path}: the model's attributes come back"
        );
        assert_eq!(
            response.text().await.unwrap(),
            "\"trace=42\"",
            "{path}: the model saw them"
        );
    }
    // Without the header the model sees none.
    let (status, _, body) = server.predict("echo", "\"attributes\"").await;
    assert_eq!((status, body.as_str()), (200, "\"\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_answers_at_once_while_a_slow_model_loads() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let folders = work.path().join("opt-ml-models");
    faulty_folder(&folders, "slow-load", "option.load_ms=1500\n");
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let url = server.url.clone();
    let folder = folders.join("slow-load").display().to_string();
    let loading = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/models"))
            .header("content-type", "application/json")
            .body(serde_json::json!({"model_name": "slow-load", "url": folder}).to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let mut pings_during_load = 0;
    while !loading.is_finished() {
        let started = Instant::now();
        let status = reqwest::get(format!("{}/ping", server.url))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "ping waited for the load"
        );
        pings_during_load += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(loading.await.unwrap(), 200, "the slow model loaded");
    assert!(
        pings_during_load >= 5,
        "the load took its 1.5 s: {pings_during_load} pings"
    );
}
