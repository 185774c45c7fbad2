//! End to end: the Open Inference Protocol over gRPC, driven by a real
//! client, Triton's `tritonclient[grpc]` (installed by `.ci/run`), and by a
//! tonic client for the messages no well-behaved client sends.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Server, free_port, guest, mme, python_client};
use mme_host::api::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use mme_host::api::grpc::proto::model_infer_request::InferInputTensor;
use mme_host::api::grpc::proto::{InferTensorContents, ModelInferRequest};
use serde_json::json;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A store with the linear-regression example as `name`, and a server on it.
async fn serve(work: &Path, name: &str, extra: &[&str]) -> Server {
    let store = work.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(
        guest("linear-regression"),
        store.join(format!("{name}.tar.gz")),
    )
    .unwrap();
    Server::start(&store, &work.join("cache"), extra).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_triton_grpc_client_gets_what_http_clients_get() {
    let work = tempfile::tempdir().unwrap();
    let server = serve(
        work.path(),
        "sklearn-0",
        &["--max-request-bytes", "1048576"],
    )
    .await;
    let (status, _, plain) = server.predict("sklearn-0", "[[0.5], [2.0], [-1.0]]").await;
    assert_eq!(status, 200);
    let expected: Vec<f64> = serde_json::from_str(&plain).unwrap();

    let args = [server.grpc.as_str(), "sklearn-0"];
    let seen = python_client("grpc_client.py", &args, "tritonclient[grpc]").await;

    for key in ["live", "ready", "model_ready"] {
        assert_eq!(seen[key], true, "{key}: {seen}");
    }
    assert_eq!(seen["server"], "wasm-mme");
    let metadata = &seen["metadata"];
    assert_eq!(metadata["name"], "sklearn-0");
    assert_eq!(
        metadata["inputs"],
        json!([{"name": "input-0", "datatype": "FP64", "shape": ["-1", "1"]}]),
        "{metadata}"
    );
    assert_eq!(
        (&seen["id"], &seen["model_name"], &seen["version"]),
        (&json!("r-1"), &json!("sklearn-0"), &json!("1"))
    );
    for key in ["raw", "typed", "gzip", "deflate", "fp32", "fp16"] {
        let got: Vec<f64> =
            serde_json::from_value(seen[key].clone()).unwrap_or_else(|_| panic!("{key}: {seen}"));
        assert_eq!(got.len(), expected.len(), "{key}");
        for (got, want) in got.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-9, "{key}: {got} against {want}");
        }
    }
    // Each error keeps its meaning and its message.
    for (key, code, words) in [
        ("absent_model", "NOT_FOUND", "absent-model"),
        ("absent_version", "NOT_FOUND", "has no version 7"),
        ("bytes_input", "INVALID_ARGUMENT", "BYTES"),
        (
            "wrong_shape",
            "INVALID_ARGUMENT",
            "4 FP64 elements (its shape) take 32",
        ),
        ("too_large", "OUT_OF_RANGE", "too large"),
        ("load_absent", "NOT_FOUND", "absent-model"),
    ] {
        let failed = seen[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} did not fail: {seen}"));
        let (status, message) = (failed[0].as_str().unwrap(), failed[1].as_str().unwrap());
        assert!(
            status.contains(code) && message.contains(words),
            "{key}: {status} {message}"
        );
    }
    // The repository: ready, then unloaded, then ready again.
    let state = |key: &str| seen[key].clone();
    assert_eq!(state("index_before"), json!([["sklearn-0", "READY"]]));
    assert_eq!(
        state("index_unloaded"),
        json!([["sklearn-0", "UNAVAILABLE"]])
    );
    assert_eq!(state("index_loaded"), json!([["sklearn-0", "READY"]]));
    // gRPC calls are counted with HTTP's: one /predictions, then the raw,
    // typed, two compressed and two narrow inferences.
    let counted = server
        .metric("mme_requests_total{model=\"sklearn-0\",version=\"1\",status=\"200\"}")
        .await;
    assert!(counted >= 7.0, "{counted} successful requests counted");
}

/// One FP64 input named `input-0` of `shape`, with `values` as typed contents.
fn fp64_input(shape: &[i64], values: &[f64]) -> InferInputTensor {
    InferInputTensor {
        name: "input-0".into(),
        datatype: "FP64".into(),
        shape: shape.to_vec(),
        parameters: Default::default(),
        contents: Some(InferTensorContents {
            fp64_contents: values.to_vec(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_messages_get_clear_statuses_and_cost_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let server = serve(work.path(), "m", &["--max-request-bytes", "65536"]).await;
    let endpoint = format!("http://{}", server.grpc);
    let mut client = GrpcInferenceServiceClient::connect(endpoint.clone())
        .await
        .unwrap();
    let good = ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![fp64_input(&[2, 1], &[0.5, 2.0])],
        ..Default::default()
    };
    let answer = client.model_infer(good.clone()).await.unwrap().into_inner();
    assert_eq!(answer.raw_output_contents[0].len(), 16);

    let with = |change: &dyn Fn(&mut ModelInferRequest)| {
        let mut request = good.clone();
        change(&mut request);
        request
    };
    let cases: Vec<(&str, ModelInferRequest, Code, &str)> = vec![
        (
            "no model",
            with(&|r| r.model_name.clear()),
            Code::InvalidArgument,
            "model_name",
        ),
        (
            "no inputs",
            with(&|r| r.inputs.clear()),
            Code::InvalidArgument,
            "input",
        ),
        (
            "raw for two inputs",
            with(&|r| r.raw_input_contents = vec![vec![0; 16], vec![0; 16]]),
            Code::InvalidArgument,
            "2 entries for 1 inputs",
        ),
        (
            "a negative dimension",
            with(&|r| r.inputs = vec![fp64_input(&[-2, 1], &[0.5, 2.0])]),
            Code::InvalidArgument,
            "shape",
        ),
        (
            "a huge claimed shape",
            with(&|r| r.inputs = vec![fp64_input(&[1 << 40, 1 << 30], &[0.5])]),
            Code::InvalidArgument,
            "input-0",
        ),
        (
            "no data",
            with(&|r| r.inputs = vec![fp64_input(&[2, 1], &[])]),
            Code::InvalidArgument,
            "no data",
        ),
        (
            "over the size cap",
            with(&|r| r.raw_input_contents = vec![vec![0; 1 << 17]]),
            Code::OutOfRange,
            "the limit is: 65536 bytes",
        ),
    ];
    for (case, request, code, words) in cases {
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(status.message().contains(words), "{case}: {status:?}");
    }
    // A gzip bomb: 1 MiB of zeros is a few hundred bytes compressed, and
    // is refused at the limit while it is decompressed, not after.
    let mut gzip = GrpcInferenceServiceClient::connect(endpoint.clone())
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip);
    let bomb = with(&|r| r.raw_input_contents = vec![vec![0; 1 << 20]]);
    let status = gzip.model_infer(bomb).await.unwrap_err();
    assert!(
        status
            .message()
            .contains("size limit, of 65536 bytes, exceeded"),
        "{status:?}"
    );
    // The connection, the model and the server still serve.
    let answer = client.model_infer(good).await.unwrap().into_inner();
    assert_eq!(answer.raw_output_contents[0].len(), 16);
    assert_eq!(server.predict("m", "[[1.0]]").await.0, 200);

    // Kubernetes' gRPC probe: the server and the service are SERVING.
    let channel = tonic::transport::Channel::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "inference.GRPCInferenceService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.Such".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_is_compressed_only_when_its_request_was() {
    let work = tempfile::tempdir().unwrap();
    let server = serve(work.path(), "m", &[]).await;
    let endpoint = format!("http://{}", server.grpc);
    let request = ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![fp64_input(&[2, 1], &[0.5, 2.0])],
        ..Default::default()
    };
    // Every client accepts both encodings, as grpcio's (tritonclient's) do.
    let client = |compressed: Option<CompressionEncoding>| {
        let endpoint = endpoint.clone();
        async move {
            let client = GrpcInferenceServiceClient::connect(endpoint)
                .await
                .unwrap()
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Deflate);
            match compressed {
                Some(encoding) => client.send_compressed(encoding),
                None => client,
            }
        }
    };
    // A compressed answer comes in the first encoding its client accepts.
    for (sent, answered) in [
        (None, None),
        (Some(CompressionEncoding::Gzip), Some("gzip")),
        (Some(CompressionEncoding::Deflate), Some("gzip")),
    ] {
        let answer = client(sent)
            .await
            .model_infer(request.clone())
            .await
            .unwrap();
        let encoding = answer
            .metadata()
            .get("grpc-encoding")
            .map(|value| value.to_str().unwrap().to_string());
        assert_eq!(encoding.as_deref(), answered, "a request sent {sent:?}");
        assert_eq!(answer.into_inner().raw_output_contents[0].len(), 16);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_can_be_turned_off_and_a_taken_port_stops_the_start() {
    let work = tempfile::tempdir().unwrap();
    let server = serve(work.path(), "m", &["--grpc-bind", "off"]).await;
    let refused = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc)).await;
    assert!(
        refused.is_err(),
        "a gRPC service answered with --grpc-bind off"
    );
    assert!(server.log_text().contains("serving"));
    assert!(!server.log_text().contains("serving gRPC"));

    // A port that is taken is an error at start, as it is for HTTP.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut child = mme()
        .arg("serve")
        .arg("--model-store")
        .arg(work.path().join("store"))
        .arg("--cache-dir")
        .arg(work.path().join("cache-2"))
        .arg("--bind")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--grpc-bind")
        .arg(&address)
        .env("MME_ONNX_PRECOMPILE", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "mme serve kept running on a taken gRPC port"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot listen for gRPC on {address}")),
        "{stderr}"
    );
}
