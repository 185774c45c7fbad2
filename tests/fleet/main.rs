//! End to end: the server as one replica of a fleet. It drains on SIGTERM
//! (not ready, still serving, then the listener closes), and real proxies
//! (nginx and HAProxy from Debian, installed by `.ci/run`) with the
//! configurations of `deploy/` route each model to one replica, move a dead
//! replica's models to the others, and lose nothing while one drains.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

#[path = "../common/mod.rs"]
mod common;

mod manifests;
mod proxies;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::s3::S3Server;
use common::{Server, exited_zero_within, faulty_folder, get, guest, metric_in, send_signal};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The gRPC health of `server` (the whole server, service "").
async fn grpc_health(server: &Server) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_before_the_listener_closes() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(&store, "m", "");
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--drain-delay", "3s", "--shutdown-timeout", "5s"],
    )
    .await;
    assert_eq!(get(&server, "/v2/health/ready").await.0, 200);
    assert_eq!(grpc_health(&server).await, ServingStatus::Serving as i32);
    assert_eq!(server.predict("m", "\"ok\"").await.0, 200);

    let client = reqwest::Client::new();
    server.signal("TERM");
    let signalled = Instant::now();
    server.wait_logged("draining").await;

    // Draining: not ready on both protocols, alive, and still serving, each
    // answer closing its connection.
    let (status, body) = get(&server, "/v2/health/ready").await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(grpc_health(&server).await, ServingStatus::NotServing as i32);
    assert_eq!(get(&server, "/ping").await.0, 200);
    let answer = client
        .post(format!("{}/predictions/m", server.url))
        .header("content-type", "application/json")
        .body("\"ok\"")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_eq!(answer.text().await.unwrap(), "\"ok\"");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the checks above ran inside the drain"
    );

    // After the delay the listener closes and the process exits 0.
    let url = server.url.clone();
    let exited = tokio::task::spawn_blocking(move || server.stop());
    let mut refused = false;
    while signalled.elapsed() < Duration::from_secs(10) {
        if let Err(error) = client.get(format!("{url}/ping")).send().await
            && error.is_connect()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the listener closed after the drain");
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "not before the drain delay: {:?}",
        signalled.elapsed()
    );
    assert!(exited.await.unwrap(), "exit 0 after the drain");
}
