//! The Open Inference Protocol (KServe v2) over HTTP/JSON, as Triton,
//! MLServer and KServe clients speak it. Inference goes through the same
//! path as every other route; the guest SDK decodes the input tensor and
//! wraps the answer as an output tensor.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request as HttpRequest, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::inference::{Loading, Protocol, answer, plain, predict, versioned};
use super::{ApiError, AppState};
use crate::registry::LoadedModel;
use crate::store::{Version, split_key};

pub use crate::runtime::OIP_JSON;

/// The server's name in its v2 metadata.
pub(super) const SERVER_NAME: &str = "wasm-mme";
/// The protocol's extensions the server speaks.
pub(super) const EXTENSIONS: [&str; 2] = ["binary_tensor_data", "model_repository"];

/// `GET /v2`: server metadata.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

/// `GET /v2/health/live`.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: the server takes requests (models load on
/// demand), until it drains: then 503, so that traffic moves elsewhere.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.drain.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": "the server is shutting down" })),
        )
    } else {
        (StatusCode::OK, Json(json!({ "ready": true })))
    }
}

/// The most a model's metadata may take; real ones are a few hundred bytes.
const MAX_METADATA_BYTES: usize = 1 << 20;

/// `GET /v2/models/{name}`: the model's metadata, loading it on demand.
pub async fn model_metadata(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let metadata = match plain(&name) {
        Ok(name) => metadata(&state, name).await,
        Err(error) => Err(error),
    };
    match metadata {
        Ok(metadata) => Json(metadata).into_response(),
        Err(error) => error.into_open_inference_response(),
    }
}

/// `GET /v2/models/{name}/versions/{version}`: one version's metadata.
pub async fn model_version_metadata(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let metadata = match versioned(&name, &version) {
        Ok(wanted) => metadata(&state, &wanted).await,
        Err(error) => Err(error),
    };
    match metadata {
        Ok(metadata) => Json(metadata).into_response(),
        Err(error) => error.into_open_inference_response(),
    }
}

/// The v2 metadata of `wanted` (a name, or `name/N`), loading it on demand.
/// The inputs and outputs are the model's own (the ONNX engine lists its
/// graph's); a model that says nothing lists none. `versions` lists the
/// versions loaded, the one that answered among them.
pub(super) async fn metadata(state: &AppState, wanted: &str) -> Result<Value, ApiError> {
    let (served_by, answer) = predict(
        state,
        wanted,
        &HeaderMap::new(),
        Body::empty(),
        (Loading::OnDemand, Protocol::Metadata),
    )
    .await;
    let own: Value = match answer {
        Ok(response) => axum::body::to_bytes(response.into_body(), MAX_METADATA_BYTES)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_else(|| json!({})),
        // A model built with an SDK that predates metadata takes the request
        // for an input and refuses it: it lists nothing.
        Err(error) if matches!(error.kind, "InvalidInput" | "ModelError") => json!({}),
        Err(error) => return Err(error),
    };
    let listed = |key: &str| match own.get(key) {
        Some(Value::Array(items)) => Value::Array(items.clone()),
        _ => json!([]),
    };
    let name = split_key(wanted).0;
    let mut versions: Vec<Version> = state
        .registry
        .keys_of(name)
        .iter()
        .map(|key| split_key(key).1)
        .chain(served_by.map(|model| split_key(&model.name).1))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let versions: Vec<String> = versions.iter().map(Version::to_string).collect();
    Ok(json!({
        "name": name,
        "versions": versions,
        "platform": own.get("platform").and_then(Value::as_str).unwrap_or("wasm"),
        "inputs": listed("inputs"),
        "outputs": listed("outputs"),
    }))
}

/// `GET /v2/models/{name}/ready`: 200 once the model is loaded (this loads
/// it on demand, as an inference would); the load's error otherwise.
pub async fn model_ready(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match plain(&name) {
        Ok(name) => ready_answer(&state, name).await,
        Err(error) => error.into_open_inference_response(),
    }
}

/// `GET /v2/models/{name}/versions/{version}/ready`: as [`model_ready`], for one version.
pub async fn model_version_ready(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match versioned(&name, &version) {
        Ok(wanted) => ready_answer(&state, &wanted).await,
        Err(error) => error.into_open_inference_response(),
    }
}

/// Whether `wanted` is ready, loaded on demand, or the load's error in v2's shape.
async fn ready_answer(state: &AppState, wanted: &str) -> Response {
    match state.registry.get_or_load(wanted).await {
        Ok(model) => Json(ready_of(&model)).into_response(),
        Err(error) => ApiError::from(error).into_open_inference_response(),
    }
}

/// A loaded model's v2 readiness.
fn ready_of(model: &LoadedModel) -> Value {
    let (name, version) = split_key(&model.name);
    json!({ "name": name, "version": version.to_string(), "ready": true })
}

/// `POST /v2/models/{name}/infer`.
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: HttpRequest,
) -> Response {
    if let Err(error) = plain(&name) {
        return error.into_open_inference_response();
    }
    infer_model(state, name, request).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`: one version.
pub async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    request: HttpRequest,
) -> Response {
    match versioned(&name, &version) {
        Ok(wanted) => infer_model(state, wanted, request).await,
        Err(error) => error.into_open_inference_response(),
    }
}

async fn infer_model(state: AppState, name: String, request: HttpRequest) -> Response {
    answer(
        &state,
        &name,
        request,
        (Loading::OnDemand, Protocol::OpenInference),
    )
    .await
}
