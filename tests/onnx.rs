//! End to end: models from scikit-learn, XGBoost, LightGBM and a PyTorch-style
//! network, exported by the real converters (`tests/onnx/make_models.py`),
//! packaged with `mme package --onnx` or as DJL Serving packages, and served
//! by the real binary through the built-in ONNX engine.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, error_kind_and_message, get, mme, onnx_models_dir, post_json};
use serde_json::{Value, json};

/// Precompiles the engine at start, as a server does by default.
const PRECOMPILE: &[&str] = &["--onnx-precompile", "true"];

/// `mme package --onnx model -o out`, with properties.
fn package_onnx(model: &Path, out: &Path, properties: &[&str]) {
    let mut command = mme();
    command
        .arg("package")
        .arg("--onnx")
        .arg(model)
        .arg("-o")
        .arg(out);
    for property in properties {
        command.arg("--property").arg(property);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until the engine's optimized code, compiled in the background, is
/// ready: the one Cranelift compilation of these servers.
async fn optimized_engine_ready(server: &Server) {
    server.wait_logged("optimized code ready").await;
    assert_eq!(server.metric("mme_component_compilations_total").await, 1.0);
}

fn onnx(name: &str) -> std::path::PathBuf {
    onnx_models_dir().join(format!("{name}.onnx"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_converted_model_answers_as_its_library_and_onnxruntime_do() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let models = onnx_models_dir();
    let mut count = 0;
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("onnx") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            package_onnx(&path, &store.join(format!("{name}.tar.gz")), &[]);
            count += 1;
        }
    }
    assert!(count >= 50, "only {count} models in {}", models.display());
    let server = Server::start(&store, &work.path().join("cache"), PRECOMPILE).await;

    // The SageMaker blog's model answers as the blog shows, on every plain route.
    let (status, _, body) = server.predict("linear_regression", "[[0.5],[1.0]]").await;
    assert_eq!((status, body.as_str()), (200, "[[2.0],[3.0]]"));
    let (status, _, csv) = server
        .predict_as("linear_regression", "text/csv", "0.5\n1.0\n")
        .await;
    assert_eq!((status, csv.as_str()), (200, "[[2.0],[3.0]]"));
    let (status, invoked) = post_json(
        &server,
        "/invocations?model_name=linear_regression",
        "[[0.5],[1.0]]",
    )
    .await;
    assert_eq!((status, invoked.as_str()), (200, "[[2.0],[3.0]]"));

    // v2 metadata lists the graph's own inputs and outputs.
    let (status, metadata) = get(&server, "/v2/models/string_labels").await;
    assert_eq!(status, 200, "{metadata}");
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(metadata["platform"], "onnx");
    assert_eq!(
        metadata["inputs"],
        json!([{"name": "X", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        metadata["outputs"],
        json!([
            {"name": "output_label", "datatype": "BYTES", "shape": [-1]},
            {"name": "output_probability", "datatype": "FP32", "shape": [-1, 3]}
        ])
    );

    // Bad input is a 400 that says what the graph takes, and costs nothing else.
    for (body, words) in [
        ("[[1, 2, 3]]", "axis 1"),
        ("[[\"a\", \"b\", \"c\", \"d\"]]", "numbers"),
        ("{\"not\": \"rows\"}", "not an array of rows"),
        ("[[1, 2, 3, 4]] trailing", "not JSON"),
        ("[[1, 2, 3, 4], [5]]", "ragged"),
    ] {
        let (status, _, answer) = server.predict("string_labels", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let (kind, message) = error_kind_and_message(&answer);
        assert!(
            kind == "InvalidInput" && message.contains(words),
            "{body}: {answer}"
        );
    }
    // On v2, a tensor sent twice under one name is named back to the caller.
    let tensor = json!({"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]});
    let twice = json!({"inputs": [tensor, tensor]}).to_string();
    let (status, answer) = post_json(&server, "/v2/models/string_labels/infer", &twice).await;
    assert_eq!(status, 400, "{answer}");
    let (kind, message) = error_kind_and_message(&answer);
    assert!(
        kind == "InvalidInput" && message.contains("more than one tensor named \"X\""),
        "{answer}"
    );

    // Every model, through /predictions and through Triton's clients (HTTP
    // and gRPC), against the library's own predictions and onnxruntime's.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/onnx/check_served.py");
    let host = server.url.trim_start_matches("http://").to_string();
    let grpc = server.grpc.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(host)
            .arg(models)
            .args(["--grpc", &grpc])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "served models differ (pip install the pins of .ci/run):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // One compilation served them all.
    optimized_engine_ready(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn djl_serving_onnx_packages_serve_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // DJL's layout: a folder with model.onnx and engine=OnnxRuntime.
    let djl = store.join("djl");
    std::fs::create_dir_all(&djl).unwrap();
    std::fs::copy(onnx("linear_regression"), djl.join("model.onnx")).unwrap();
    std::fs::write(
        djl.join("serving.properties"),
        "engine=OnnxRuntime\nbatch_size=4\nmax_batch_delay=5\n",
    )
    .unwrap();
    // No properties: the package's only model file is one .onnx.
    let lone = store.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(onnx("logistic_multiclass"), lone.join("iris.onnx")).unwrap();
    // option.model_file names one of several, with DJL's engine=Onnx.
    let named = work.path().join("named");
    std::fs::create_dir_all(&named).unwrap();
    std::fs::copy(onnx("linear_regression"), named.join("a.onnx")).unwrap();
    std::fs::copy(onnx("ridge"), named.join("b.onnx")).unwrap();
    std::fs::write(
        named.join("serving.properties"),
        "engine=Onnx\noption.model_file=a.onnx\n",
    )
    .unwrap();
    let server = Server::start(&store, &work.path().join("cache"), PRECOMPILE).await;

    let (status, _, body) = server.predict("djl", "[[0.5],[1.0]]").await;
    assert_eq!((status, body.as_str()), (200, "[[2.0],[3.0]]"));
    let (_, described) = get(&server, "/models/djl").await;
    let described: Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["batchSize"], 4, "{described}");

    let (status, _, body) = server.predict("lone", "[[5.1, 3.5, 1.4, 0.2]]").await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["output_label"], json!([0]), "{answer}");
    assert!(
        answer["output_probability"][0]["0"].as_f64().unwrap() > 0.9,
        "{answer}"
    );

    // Registered by url, as SageMaker and DJL's management API do.
    let url = format!("/models?url={}&model_name=named", named.display());
    let (status, body) = post_json(&server, &url, "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = server.predict("named", "[[1.0]]").await;
    assert_eq!((status, body.as_str()), (200, "[[3.0]]"));

    // Several .onnx files and no model_file: a 400 that says what to set.
    let several = work.path().join("several");
    std::fs::create_dir_all(&several).unwrap();
    std::fs::copy(onnx("linear_regression"), several.join("a.onnx")).unwrap();
    std::fs::copy(onnx("ridge"), several.join("b.onnx")).unwrap();
    let (status, body) = post_json(
        &server,
        &format!("/models?url={}&model_name=several", several.display()),
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_kind_and_message(&body)
            .1
            .contains("option.model_file"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_onnx_copies_share_one_compilation() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let package = work.path().join("lr.tar.gz");
    package_onnx(&onnx("linear_regression"), &package, &["minWorkers=0"]);
    common::copies(&store, &package, "lr-", 1000);
    let server = Server::start(&store, &work.path().join("cache"), PRECOMPILE).await;
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let requests = chunk.iter().map(|i| {
            client
                .post(format!("{}/predictions/lr-{i}", server.url))
                .header("content-type", "application/json")
                .body("[[0.5],[1.0]]")
                .send()
        });
        for response in futures_util::future::join_all(requests).await {
            let response = response.unwrap();
            answers.push((response.status().as_u16(), response.text().await.unwrap()));
        }
    }
    assert!(
        answers
            .iter()
            .all(|(s, b)| *s == 200 && b == "[[2.0],[3.0]]"),
        "{:?}",
        answers.iter().find(|(s, _)| *s != 200)
    );
    optimized_engine_ready(&server).await;
    assert_eq!(server.metric("mme_models_loaded").await, 1000.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_graphs_fail_to_load_and_cost_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    package_onnx(
        &onnx("linear_regression"),
        &store.join("neighbour.tar.gz"),
        &[],
    );
    let hostile = onnx_models_dir().join("hostile");
    let cases = [
        ("truncated", "not an ONNX model"),
        ("garbage", "not an ONNX model"),
        ("unknown_operator", "Frobnicate"),
        ("cycle", "Loop"),
        ("huge_initializer", "overflow"),
        ("huge_shape", "too large"),
        ("tree_cycle", "cycle"),
        ("tree_bad_target", "column 7"),
    ];
    for (name, _) in cases {
        package_onnx(
            &hostile.join(format!("{name}.onnx")),
            &store.join(format!("{name}.tar.gz")),
            &[],
        );
    }
    let server = Server::start(&store, &work.path().join("cache"), PRECOMPILE).await;
    let (status, _, _) = server.predict("neighbour", "[[1.0]]").await;
    assert_eq!(status, 200);
    let rss_before = server.rss_kib();
    for round in 0..3 {
        for (name, words) in cases {
            let (status, _, body) = server.predict(name, "[[1.0, 2.0]]").await;
            let (kind, message) = error_kind_and_message(&body);
            assert_eq!(
                (status, kind.as_str()),
                (400, "InvalidPackage"),
                "{name}: {body}"
            );
            assert!(
                message.contains(words) && message.contains(name),
                "{name}: {message}"
            );
            let (status, _, answer) = server.predict("neighbour", "[[1.0]]").await;
            assert_eq!(
                (status, answer.as_str()),
                (200, "[[3.0]]"),
                "after {name}, round {round}"
            );
        }
        // A failed load is remembered for a while; forget it to load again.
        for (name, _) in cases {
            common::delete(&server, &format!("/models/{name}")).await;
        }
    }
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_finds_the_engine_in_the_disk_cache() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    package_onnx(&onnx("ridge"), &store.join("ridge.tar.gz"), &[]);
    let cache = work.path().join("cache");
    let server = Server::start(&store, &cache, PRECOMPILE).await;
    // The background compile finishes without any request.
    optimized_engine_ready(&server).await;
    assert_eq!(server.metric("mme_component_compilations_total").await, 1.0);
    assert!(server.stop());
    let server = Server::start(&store, &cache, &[]).await;
    let (status, _, body) = server.predict("ridge", "[[0, 0, 0, 0, 0, 0]]").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.metric("mme_component_compilations_total").await, 0.0);
    assert_eq!(
        server.metric("mme_component_disk_cache_hits_total").await,
        1.0
    );
    // The optimized code was on disk: no baseline tier was needed.
    assert_eq!(
        server
            .metric("mme_component_baseline_compilations_total")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_cache_serves_on_the_baseline_tier_then_moves_to_optimized_code() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    // One instance stays warm, so the one that served on the baseline moves.
    package_onnx(
        &onnx("random_forest_regressor"),
        &store.join("forest.tar.gz"),
        &["minWorkers=1"],
    );
    let record: Value = serde_json::from_slice(
        &std::fs::read(onnx_models_dir().join("random_forest_regressor.json")).unwrap(),
    )
    .unwrap();
    let rows = serde_json::to_string(&record["rows"]).unwrap();
    // No precompile: the first request finds nothing compiled.
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;
    let (status, _, baseline) = server.predict("forest", &rows).await;
    assert_eq!(status, 200, "{baseline}");
    assert_eq!(
        server
            .metric("mme_component_baseline_compilations_total")
            .await,
        1.0
    );
    optimized_engine_ready(&server).await;
    let (status, _, optimized) = server.predict("forest", &rows).await;
    assert_eq!(status, 200, "{optimized}");
    server.assert_logged("instance moved to optimized code");
    // Both tiers run the same wasm: the same answer, to the bit.
    assert_eq!(baseline, optimized);
    assert_eq!(server.metric("mme_component_compilations_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mme_precompile_fills_the_cache_a_server_then_uses() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    package_onnx(&onnx("mlp_regressor"), &store.join("mlp.tar.gz"), &[]);
    let cache = work.path().join("cache");
    let output = mme()
        .arg("precompile")
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ONNX engine"));
    let server = Server::start(&store, &cache, PRECOMPILE).await;
    let (status, _, body) = server.predict("mlp", "[[0, 0, 0, 0, 0, 0]]").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.metric("mme_component_compilations_total").await, 0.0);
    assert_eq!(
        server.metric("mme_component_disk_cache_hits_total").await,
        1.0
    );
    // An engine that is not where it is said to be: ONNX models fail with what to do.
    let elsewhere = Server::start(
        &store,
        &work.path().join("cache2"),
        &["--onnx-engine", "/nonexistent/mme-onnx.wasm"],
    )
    .await;
    let (status, _, body) = elsewhere.predict("mlp", "[[0, 0, 0, 0, 0, 0]]").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error_kind_and_message(&body).1.contains("--onnx-engine"),
        "{body}"
    );
}

#[test]
fn inspect_lists_the_graph_and_runs_a_sample_made_from_its_shapes() {
    let work = tempfile::tempdir().unwrap();
    let package = work.path().join("convnet.tar.gz");
    package_onnx(&onnx("convnet"), &package, &[]);
    let output = mme().arg("inspect").arg(&package).output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("engine:       OnnxRuntime"), "{report}");
    assert!(
        report.contains("input         input FP32 [-1,1,8,8]"),
        "{report}"
    );
    assert!(
        report.contains("output        output FP32 [-1,3]"),
        "{report}"
    );
    let answer = report
        .lines()
        .find_map(|l| l.strip_prefix("  answer:       "))
        .unwrap();
    let probabilities: Vec<Vec<f64>> = serde_json::from_str(answer).unwrap();
    assert_eq!(probabilities.len(), 1);
    assert!(
        (probabilities[0].iter().sum::<f64>() - 1.0).abs() < 1e-5,
        "{answer}"
    );

    let broken = work.path().join("broken.tar.gz");
    package_onnx(
        &onnx_models_dir().join("hostile/unknown_operator.onnx"),
        &broken,
        &[],
    );
    let output = mme().arg("inspect").arg(&broken).output().unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("load failed") && error.contains("Frobnicate"),
        "{error}"
    );
}
