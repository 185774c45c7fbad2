//! End to end: the SageMaker multi-model contract, driven the way SageMaker
//! drives a bring-your-own container: extracted folders, `POST /models`,
//! paging through `GET /models`, invoke, `DELETE`, and 507 when full.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Server, guest};
use serde_json::{Value, json};

/// Unpacks the example into `count` folders under `root`, as SageMaker extracts them.
fn extracted(root: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|index| {
            let dir = root.join(format!("extracted-{index}"));
            std::fs::create_dir_all(&dir).unwrap();
            mme_host::package::archive::unpack(
                &guest("linear-regression"),
                &dir,
                &Default::default(),
            )
            .unwrap();
            dir
        })
        .collect()
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

async fn register(server: &Server, name: &str, url: &Path) -> (u16, Value) {
    let body = json!({"model_name": name, "url": url.display().to_string()});
    call(
        reqwest::Method::POST,
        format!("{}/models", server.url),
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_multi_model_contract_holds_route_by_route() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("empty-store");
    std::fs::create_dir(&store).unwrap();
    let folders = extracted(&work.path().join("opt-ml-models"), 260);
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;

    let mut expected = BTreeSet::new();
    for (index, folder) in folders.iter().enumerate() {
        let name = format!("model-{index:03}");
        let (status, body) = register(&server, &name, folder).await;
        assert_eq!(status, 200, "{body}");
        expected.insert(name);
    }

    let (status, body) = register(&server, "model-000", &folders[1]).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (409, Some("ModelAlreadyLoaded")),
        "{body}"
    );
    let (status, body) = register(&server, "ghost", &work.path().join("missing")).await;
    assert_eq!(status, 404, "{body}");
    let broken = work.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("model.wasm"), b"\0asm\x01\x00\x00\x00").unwrap();
    let (status, body) = register(&server, "broken", &broken).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (400, Some("InvalidPackage")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("core wasm module"),
        "{body}"
    );
    let (status, _) = register(&server, "../escape", &folders[0]).await;
    assert_eq!(status, 400);
    let response = reqwest::Client::new()
        .post(format!("{}/models", server.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Paging: 260 models in pages of 100, then the default page size.
    let mut seen = BTreeSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &token {
            Some(token) => format!("?limit=100&next_page_token={token}"),
            None => "?limit=100".to_string(),
        };
        let (status, body) = call(
            reqwest::Method::GET,
            format!("{}/models{query}", server.url),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for model in body["models"].as_array().unwrap() {
            let name = model["modelName"].as_str().unwrap().to_string();
            assert!(
                model["modelUrl"].as_str().unwrap().contains("extracted-"),
                "{model}"
            );
            assert!(seen.insert(name), "a model appears on two pages");
        }
        match body["nextPageToken"].as_str() {
            Some(next) => token = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!((pages, &seen), (3, &expected));
    let (_, body) = call(reqwest::Method::GET, format!("{}/models", server.url), None).await;
    assert_eq!(body["models"].as_array().unwrap().len(), 100);
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{}/models?next_page_token=zzz", server.url),
        None,
    )
    .await;
    assert_eq!(status, 400);
    for (method, path, status, kind) in [
        (
            reqwest::Method::GET,
            "/models?limit=many",
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            "/models?limit=0",
            400,
            "InvalidRequest",
        ),
        (reqwest::Method::PUT, "/ping", 405, "MethodNotAllowed"),
        (reqwest::Method::GET, "/no/such/route", 404, "UnknownRoute"),
    ] {
        let (got, body) = call(method, format!("{}{path}", server.url), None).await;
        assert_eq!(
            (got, body["type"].as_str()),
            (status, Some(kind)),
            "{path}: {body}"
        );
    }

    let (status, body) = call(
        reqwest::Method::GET,
        format!("{}/models/model-007", server.url),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["modelName"], "model-007");
    assert_eq!(body["modelUrl"], folders[7].display().to_string());
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{}/models/nobody", server.url),
        None,
    )
    .await;
    assert_eq!(status, 404);

    let invoke = |name: &str| {
        reqwest::Client::new()
            .post(format!("{}/models/{name}/invoke", server.url))
            .header("content-type", "application/json")
            .body("[[0.5]]")
            .send()
    };
    let response = invoke("model-042").await.unwrap();
    assert_eq!(response.status(), 200);
    let prediction: Vec<f64> = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!((prediction[0] - 2.0).abs() < 0.05, "{prediction:?}");
    assert_eq!(invoke("not-loaded").await.unwrap().status(), 404);

    let (status, body) = call(
        reqwest::Method::DELETE,
        format!("{}/models/model-042", server.url),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(invoke("model-042").await.unwrap().status(), 404);
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{}/models/model-042", server.url),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        reqwest::Method::DELETE,
        format!("{}/models/model-042", server.url),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        folders[42].join("model.bin").is_file(),
        "SageMaker's folder is left alone"
    );
    assert_eq!(server.metric("mme_models_loaded").await, 259.0);
    assert_eq!(
        server.metric("mme_instances").await,
        259.0,
        "the unloaded model's instance is freed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_room_is_507_until_another_model_is_deleted() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("empty-store");
    std::fs::create_dir(&store).unwrap();
    let folders = extracted(work.path(), 2);
    // SageMaker picks the victims in its multi-model mode: the server never evicts.
    let server = Server::start_with_env(
        &store,
        &work.path().join("cache"),
        &["--max-instances", "1"],
        &[("SAGEMAKER_MULTI_MODEL", "true")],
    )
    .await;
    assert_eq!(register(&server, "a", &folders[0]).await.0, 200);
    let (status, body) = register(&server, "b", &folders[1]).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (507, Some("InsufficientCapacity")),
        "{body}"
    );
    let (status, _) = call(
        reqwest::Method::DELETE,
        format!("{}/models/a", server.url),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(register(&server, "b", &folders[1]).await.0, 200);
}
