//! End to end: model versions in Triton's store layout (`m/1.tar.gz`,
//! `m/2/`), asked for by every route that takes a version: DJL's
//! `/predictions/{m}/{v}` and `/models/{m}/{v}`, v2's
//! `/v2/models/{m}/versions/{v}/…` through `tritonclient` over HTTP and gRPC,
//! and DJL's registration with `model_version`. The two versions are
//! different models with different answers: the example (version 1, a flat
//! list) and the blog's LinearRegression exported to ONNX (version 2,
//! nested lists), so every answer shows which version gave it.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use common::{
    Server, delete, error_kind_and_message, get, guest, onnx_models_dir, post_json, python_client,
};
use serde_json::Value;

const ROWS: &str = "[[0.5], [1.0]]";

/// The store: `m` with versions 1 (an archive) and 2 (a folder), and `p`,
/// a plain package, which is version 1.
fn versioned_store(root: &std::path::Path) -> std::path::PathBuf {
    let store = root.join("store");
    std::fs::create_dir_all(store.join("m/2")).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("m/1.tar.gz")).unwrap();
    std::fs::copy(
        onnx_models_dir().join("linear_regression.onnx"),
        store.join("m/2/model.onnx"),
    )
    .unwrap();
    std::fs::copy(guest("linear-regression"), store.join("p.tar.gz")).unwrap();
    // Names that sort next to `m`'s versions, which are not its versions.
    for other in ["m-a", "m0"] {
        std::fs::copy(
            guest("linear-regression"),
            store.join(format!("{other}.tar.gz")),
        )
        .unwrap();
    }
    store
}

/// The status, and which version answered: 1 for a flat list (the
/// example), 2 for nested lists (the ONNX model), after checking that the
/// answer is y = 2x + 1 of the rows.
async fn predict(server: &Server, path: &str) -> (u16, u8) {
    let (status, body) = post_json(server, path, ROWS).await;
    if status != 200 {
        return (status, 0);
    }
    let answer: Value = serde_json::from_str(&body).unwrap();
    let rows = answer.as_array().unwrap();
    let nested = rows.iter().all(Value::is_array);
    let values: Vec<f64> = rows
        .iter()
        .map(|row| if nested { &row[0] } else { row }.as_f64().unwrap())
        .collect();
    assert_close(&values);
    (status, if nested { 2 } else { 1 })
}

/// The (name, version) of each entry of a listing, sorted.
fn names_and_versions<'a>(
    entries: &'a Value,
    name: &str,
    version: &str,
) -> Vec<(&'a str, &'a str)> {
    let mut pairs: Vec<(&str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[name].as_str().unwrap(), e[version].as_str().unwrap()))
        .collect();
    pairs.sort_unstable();
    pairs
}

/// Both versions fit y = 2x + 1 (the example with some noise).
fn assert_close(values: &[f64]) {
    assert_eq!(values.len(), 2, "{values:?}");
    for (value, expected) in values.iter().zip([2.0, 3.0]) {
        assert!((value - expected).abs() < 0.05, "{values:?}");
    }
}

/// What [`predict`] says of an answer of version 1, and of version 2.
const FIRST: u8 = 1;
const SECOND: u8 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn each_route_picks_the_version_it_names() {
    let work = tempfile::tempdir().unwrap();
    let store = versioned_store(work.path());
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;

    // Without a version, the highest in the store; then each by number.
    assert_eq!(predict(&server, "/predictions/m").await, (200, SECOND));
    assert_eq!(predict(&server, "/predictions/m/1").await, (200, FIRST));
    assert_eq!(predict(&server, "/predictions/m/2").await, (200, SECOND));
    assert_eq!(predict(&server, "/predictions/p/1").await, (200, FIRST));

    // A version that is not there is a 404 that names it; one that cannot be is a 400.
    for (path, says) in [
        ("/predictions/m/3", "has no version 3"),
        ("/predictions/p/2", "so it is version 1"),
    ] {
        let (status, body) = post_json(&server, path, ROWS).await;
        assert_eq!(status, 404, "{path}: {body}");
        let (kind, message) = error_kind_and_message(&body);
        assert_eq!(kind, "ModelNotFound", "{path}");
        assert!(message.contains(says), "{path}: {message}");
    }
    for path in ["/predictions/m/0", "/predictions/m/01", "/predictions/m/x"] {
        let (status, body) = post_json(&server, path, ROWS).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(error_kind_and_message(&body).0, "InvalidModelVersion");
    }

    // Listing, describe and the index show each version.
    let (status, body) = get(&server, "/models").await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).unwrap();
    let each = [("m", "1"), ("m", "2"), ("p", "1")];
    assert_eq!(
        names_and_versions(&listed["models"], "modelName", "modelVersion"),
        each
    );
    for (path, version) in [
        ("/models/m/1", "1"),
        ("/models/m/2", "2"),
        ("/models/m", "2"),
    ] {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let described: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(described["modelVersion"], version, "{path}");
        assert_eq!(described["status"], "READY", "{path}");
    }
    let (status, body) = post_json(&server, "/v2/repository/index", "{}").await;
    assert_eq!(status, 200);
    let index: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        names_and_versions(&index, "name", "version"),
        [
            ("m", "1"),
            ("m", "2"),
            ("m-a", "1"),
            ("m0", "1"),
            ("p", "1")
        ]
    );
    let text = server.metrics_text().await;
    for series in [
        "mme_requests_total{model=\"m\",version=\"1\",status=\"200\"}",
        "mme_requests_total{model=\"m\",version=\"2\",status=\"200\"}",
        "mme_workers{model=\"m\",version=\"2\"}",
    ] {
        assert!(common::metric_in(&text, series) >= 1.0, "{series}");
    }

    // Unloading one version leaves the other, which then answers for the name.
    assert_eq!(delete(&server, "/models/m/2").await, 200);
    assert_eq!(get(&server, "/models/m/2").await.0, 404);
    assert_eq!(predict(&server, "/models/m/invoke").await, (200, FIRST));
    assert_eq!(predict(&server, "/predictions/m").await, (200, FIRST));
    assert_eq!(delete(&server, "/models/m/2").await, 404);
    // Unloading the name unloads every version, and no other model.
    assert_eq!(predict(&server, "/predictions/m/2").await, (200, SECOND));
    for other in ["/predictions/m-a", "/predictions/m0"] {
        assert_eq!(predict(&server, other).await, (200, FIRST), "{other}");
    }
    assert_eq!(delete(&server, "/models/m").await, 200);
    for path in ["/models/m", "/models/m/1", "/models/m/2"] {
        assert_eq!(get(&server, path).await.0, 404, "{path}");
    }
    for path in ["/models/m-a", "/models/m0"] {
        assert_eq!(get(&server, path).await.0, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn triton_clients_pick_versions_over_http_and_grpc() {
    let work = tempfile::tempdir().unwrap();
    let store = versioned_store(work.path());
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let http = server.url.trim_start_matches("http://").to_string();
    let args = [http.as_str(), server.grpc.as_str(), "m"];
    let seen = python_client("versions_client.py", &args, "tritonclient[http,grpc]").await;
    for protocol in ["http", "grpc"] {
        let seen = &seen[protocol];
        for (version, answered, output) in [
            ("none", "2", "variable"),
            ("1", "1", "output-0"),
            ("2", "2", "variable"),
        ] {
            let answer = &seen[version];
            assert_eq!(
                answer["model_version"], answered,
                "{protocol} {version}: {answer}"
            );
            assert_eq!(answer["output"], output, "{protocol} {version}: {answer}");
            let values: Vec<f64> = answer["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_close(&values);
            assert_eq!(answer["ready"], true, "{protocol} {version}");
        }
        let missing = &seen["3"];
        let status = missing["status"].as_str().unwrap_or_default();
        assert!(
            status.contains("404") || status.contains("NOT_FOUND"),
            "{protocol}: {missing}"
        );
        assert!(
            missing["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no version 3"),
            "{protocol}: {missing}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_djl_registration_names_its_version() {
    let work = tempfile::tempdir().unwrap();
    let store = versioned_store(work.path());
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let url = store.join("m/2").display().to_string();
    let register = format!("/models?url={url}&model_name=reg&model_version=2");
    let (status, body) = post_json(&server, &register, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(predict(&server, "/predictions/reg/2").await, (200, SECOND));
    assert_eq!(predict(&server, "/models/reg/invoke").await, (200, SECOND));
    let (status, body) = get(&server, "/models/reg").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["modelVersion"],
        "2"
    );
    // The same version again is taken; a version that cannot be one is refused.
    assert_eq!(post_json(&server, &register, "").await.0, 409);
    // The same answer as a version that cannot be one in a route.
    let bad = format!("/models?url={url}&model_name=reg&model_version=two");
    let (status, body) = post_json(&server, &bad, "").await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["type"],
        "InvalidModelVersion",
        "{body}"
    );
    assert_eq!(delete(&server, "/models/reg/2").await, 200);
    assert_eq!(get(&server, "/models/reg").await.0, 404);
}
