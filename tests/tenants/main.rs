//! End to end: a server with `--tenants`, called as tenants would call it,
//! with each kind of key, over HTTP and gRPC.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod config;
mod grpc;
mod quotas;
mod sharing;
mod urls;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Server, faulty_folder, guest};
use futures_util::future::join_all;
use mme_host::api::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use mme_host::api::grpc::proto::model_infer_request::InferInputTensor;
use mme_host::api::grpc::proto::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ModelReadyRequest,
    RepositoryIndexRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
    ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};
use sha2::{Digest, Sha256};
use tonic::Code;

const ADMIN: &str = "tok-admin-5d1c";
const ACME_INFER: &str = "tok-ai-81f0";
const ACME_MANAGE: &str = "tok-am-27b9";
const GLOBEX_MANAGE: &str = "tok-gm-c4e2";
const WRONG: &str = "tok-nobody-0000";

fn digest(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// The tenants file of these tests; `extra` goes into acme's table.
fn tenants_file(work: &Path, acme_extra: &str) -> PathBuf {
    let path = work.join("tenants.toml");
    let text = format!(
        r#"
[admin]
keys = ["{admin}"]

[tenants.acme]
models = ["acme-*"]
inference_keys = ["{acme_infer}"]
management_keys = ["{acme_manage}"]
{acme_extra}

[tenants.globex]
models = ["globex-*"]
management_keys = ["{globex}"]
urls = ["s3://models/globex/"]
"#,
        admin = digest(ADMIN),
        acme_infer = digest(ACME_INFER),
        acme_manage = digest(ACME_MANAGE),
        globex = GLOBEX_MANAGE,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A store holding the linear-regression example under each of `names`,
/// and a server on it with the tenants file.
async fn serve(work: &Path, names: &[&str], acme_extra: &str, extra: &[&str]) -> (Server, PathBuf) {
    let store = work.join("store");
    std::fs::create_dir_all(&store).unwrap();
    for name in names {
        std::fs::copy(
            guest("linear-regression"),
            store.join(format!("{name}.tar.gz")),
        )
        .unwrap();
    }
    let tenants = tenants_file(work, acme_extra);
    let mut args = vec!["--tenants", tenants.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start(&store, &work.join("cache"), &args).await;
    (server, store)
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn call(server: &Server, method: &str, path: &str, key: Option<&str>, body: &str) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Answer {
        status,
        headers,
        body: response.text().await.unwrap(),
    }
}

/// Gives acme a memory share of `halves` halves of what its loaded model
/// `measured` holds now (its package, metadata and instances), with
/// `acme_extra` also in its table, and waits for the server to read it.
async fn share_of_halves(
    server: &Server,
    work: &Path,
    measured: &str,
    halves: u64,
    acme_extra: &str,
) {
    let described = call(
        server,
        "GET",
        &format!("/models/{measured}"),
        Some(ADMIN),
        "",
    )
    .await;
    let memory = &serde_json::from_str::<serde_json::Value>(&described.body).unwrap()["memory"];
    let one = memory["heldBytes"].as_u64().unwrap() + memory["instanceBytes"].as_u64().unwrap();
    tenants_file(
        work,
        &format!("{acme_extra}\nmemory = \"{}B\"", one * halves / 2),
    );
    server.signal("HUP");
    server.wait_logged("tenants file read again").await;
}

const OIP: &str = r#"{"inputs":[{"name":"input-0","shape":[1,1],"datatype":"FP64","data":[1.0]}]}"#;
