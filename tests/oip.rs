//! End to end: the Open Inference Protocol (KServe v2), driven by a real
//! client, Triton's `tritonclient[http]` (installed by `.ci/run`), against
//! the linear-regression example, which has no v2 code of its own.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use common::{Server, guest, python_client};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_triton_client_gets_the_same_predictions_as_predictions() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("sklearn-0.tar.gz")).unwrap();
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let (status, _, plain) = server.predict("sklearn-0", "[[0.5], [2.0], [-1.0]]").await;
    assert_eq!(status, 200);
    let expected: Vec<f64> = serde_json::from_str(&plain).unwrap();

    let host_port = server.url.trim_start_matches("http://");
    let args = [host_port, "sklearn-0"];
    let seen = python_client("oip_client.py", &args, "tritonclient[http]").await;

    for key in ["live", "ready", "model_ready"] {
        assert_eq!(seen[key], true, "{key}: {seen}");
    }
    assert_eq!(seen["server"], "wasm-mme");
    // The example declares its tensors through the SDK's `Model::metadata`.
    let metadata = &seen["metadata"];
    assert_eq!(metadata["name"], "sklearn-0");
    let port = |side: &str| {
        let ports = metadata[side].as_array().unwrap();
        assert_eq!(ports.len(), 1, "{metadata}");
        let port = &ports[0];
        (
            port["name"].clone(),
            port["datatype"].clone(),
            port["shape"].clone(),
        )
    };
    assert_eq!(
        port("inputs"),
        ("input-0".into(), "FP64".into(), serde_json::json!([-1, 1]))
    );
    assert_eq!(
        port("outputs"),
        ("output-0".into(), "FP64".into(), serde_json::json!([-1]))
    );
    assert_eq!(
        (&seen["id"], &seen["model_name"]),
        (&Value::from("r-1"), &Value::from("sklearn-0"))
    );
    for key in [
        "predictions",
        "default_outputs",
        "fp32",
        "fp16",
        "binary",
        "gzip",
        "deflate",
    ] {
        let got: Vec<f64> = serde_json::from_value(seen[key].clone()).unwrap();
        assert_eq!(got.len(), expected.len(), "{key}");
        for (got, want) in got.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-9, "{key}: {got} against {want}");
        }
    }
    let failure = |key: &str| -> (String, String) {
        let pair = seen[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} did not fail: {seen}"));
        (
            pair[0].as_str().unwrap().to_string(),
            pair[1].as_str().unwrap().to_string(),
        )
    };
    let (status, message) = failure("absent_model");
    assert!(
        status.contains("404") && message.contains("absent-model"),
        "{status} {message}"
    );
    let (status, message) = failure("bytes_input");
    assert!(
        status.contains("400") && message.contains("BYTES"),
        "{status} {message}"
    );
    let (status, message) = failure("binary_wrong_shape");
    assert!(
        status.contains("400") && message.contains("4 FP64 elements (its shape) take 32"),
        "{status} {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_routes_answer_in_the_protocol_shape() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("m.tar.gz")).unwrap();
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let get = |path: &str| reqwest::get(format!("{}{path}", server.url));

    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/m",
        "/v2/models/m/ready",
    ] {
        assert_eq!(get(path).await.unwrap().status(), 200, "{path}");
    }
    let missing = get("/v2/models/absent/ready").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = serde_json::from_str(&missing.text().await.unwrap()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("absent"), "{body}");

    let client = reqwest::Client::new();
    let infer = |path: &str, body: &str| {
        client
            .post(format!("{}{path}", server.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let request = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","data":[0.5,2.0]}]}"#;
    let response = infer("/v2/models/m/versions/1/infer", request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["outputs"][0]["shape"], serde_json::json!([2]));
    assert_eq!(body["model_name"], "m");
    for (bad, words) in [("{", "Open Inference"), (r#"{"inputs":[]}"#, "no input")] {
        let response = infer("/v2/models/m/infer", bad).await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(words),
            "{bad}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_binary_and_compressed_bodies_get_clear_errors_and_cost_nothing_else() {
    use std::io::Write;

    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("m.tar.gz")).unwrap();
    let limit = 1 << 20;
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--max-request-bytes", &limit.to_string()],
    )
    .await;
    let client = reqwest::Client::new();
    let header = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":16}}]}"#;
    let values: Vec<u8> = [0.5f64, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let binary = |length: usize, tail: &[u8]| {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(tail);
        (length.to_string(), body)
    };
    let gzip = |plain: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(plain).unwrap();
        encoder.finish().unwrap()
    };
    let (length, good) = binary(header.len(), &values);
    let zeros = vec![b' '; 64 * limit];
    // (case, headers, body, the status, words of the error)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "binary",
            vec![(HEADER, length.clone())],
            good.clone(),
            200,
            "",
        ),
        (
            "gzip binary",
            vec![
                (HEADER, length.clone()),
                ("content-encoding", "gzip".into()),
            ],
            gzip(&good),
            200,
            "",
        ),
        (
            "header longer than the body",
            vec![(HEADER, "100000".into())],
            good.clone(),
            400,
            "the body has only",
        ),
        (
            "header not a number",
            vec![(HEADER, "12x".into())],
            good.clone(),
            400,
            "Inference-Header-Content-Length is \"12x\"",
        ),
        (
            "trailing bytes",
            vec![(HEADER, length.clone())],
            [&good[..], b"xyz"].concat(),
            400,
            "3 bytes follow the last binary input",
        ),
        (
            "truncated tensor",
            vec![(HEADER, length.clone())],
            good[..good.len() - 1].to_vec(),
            400,
            "only 15 bytes follow",
        ),
        (
            "a gzip bomb",
            vec![("content-encoding", "gzip".into())],
            gzip(&zeros),
            413,
            "once decompressed",
        ),
        (
            "not gzip",
            vec![("content-encoding", "gzip".into())],
            b"plain".to_vec(),
            400,
            "not valid gzip",
        ),
        (
            "brotli",
            vec![("content-encoding", "br".into())],
            b"x".to_vec(),
            415,
            "not supported",
        ),
    ];
    const HEADER: &str = "inference-header-content-length";
    for (case, headers, body, status, words) in cases {
        let mut request = client.post(format!("{}/v2/models/m/infer", server.url));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.unwrap();
        assert_eq!(response.status(), status, "{case}");
        let text = response.text().await.unwrap();
        if status == 200 {
            let answer: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                answer["outputs"][0]["shape"],
                serde_json::json!([2]),
                "{case}"
            );
        } else {
            let answer: Value = serde_json::from_str(&text).unwrap();
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains(words), "{case}: {error}");
        }
    }
    // None of it cost the model anything.
    let (status, _, _) = server.predict("m", "[[0.5]]").await;
    assert_eq!(status, 200);
}

/// The repository index, as `(name, state)` pairs, with `body`.
async fn index(server: &Server, body: &str) -> Vec<(String, String, String)> {
    let (status, text) = common::post_json(server, "/v2/repository/index", body).await;
    assert_eq!(status, 200, "{text}");
    let entries: Vec<Value> = serde_json::from_str(&text).unwrap();
    entries
        .iter()
        .map(|e| {
            assert_eq!(e["version"], "1", "{e}");
            (
                e["name"].as_str().unwrap().to_string(),
                e["state"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repository_calls_work_in_the_order_kserves_agent_makes_them() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("m.tar.gz")).unwrap();
    std::fs::write(store.join("broken.tar.gz"), b"not an archive").unwrap();
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let post = |path: String, body: &'static str| {
        let server = &server;
        async move { common::post_json(server, &path, body).await }
    };
    let unloaded = |name: &str| (name.to_string(), "UNAVAILABLE".into(), "unloaded".into());

    assert_eq!(
        index(&server, "").await,
        [unloaded("broken"), unloaded("m")]
    );
    // The agent places a model under the model root, then asks for it.
    std::fs::copy(guest("linear-regression"), store.join("late.tar.gz")).unwrap();
    let (status, body) = post("/v2/repository/models/late/load".into(), "{}").await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(
        index(&server, r#"{"ready": true}"#).await,
        [("late".to_string(), "READY".to_string(), String::new())]
    );
    let (status, _, _) = server.predict("late", "[[0.5]]").await;
    assert_eq!(status, 200);
    // A load with parameters KServe may send, and one with a config override.
    let (status, _) = post(
        "/v2/repository/models/m/load".into(),
        r#"{"parameters": {"priority": 1}}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(
        "/v2/repository/models/m/load".into(),
        r#"{"parameters": {"config": "{}"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\\\"config\\\" is not supported"), "{body}");

    let (status, body) = post("/v2/repository/models/late/unload".into(), "").await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    // Unloading what is not loaded is already done.
    let (status, _) = post("/v2/repository/models/late/unload".into(), "").await;
    assert_eq!(status, 200);
    let (status, body) = post("/v2/repository/models/absent/load".into(), "").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("absent"), "{body}");
    let (status, body) = post("/v2/repository/models/broken/load".into(), "").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post("/v2/repository/models/m/load".into(), "[1]").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post("/v2/repository/index".into(), r#"{"ready": "yes"}"#).await;
    assert_eq!(status, 400, "{body}");

    let entries = index(&server, "{}").await;
    let states: Vec<(&str, &str)> = entries
        .iter()
        .map(|(name, state, _)| (name.as_str(), state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("broken", "UNAVAILABLE"),
            ("late", "UNAVAILABLE"),
            ("m", "READY")
        ]
    );
    // A failed load says why.
    assert!(entries[0].2.contains("broken"), "{entries:?}");
    assert_eq!(entries[1].2, "unloaded");
}
