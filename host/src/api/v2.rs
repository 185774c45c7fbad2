//! The Open Inference Protocol (KServe v2) over HTTP/JSON, as Triton,
//! MLServer and KServe clients speak it. Inference goes through the same
//! path as every other route; the guest SDK decodes the input tensor and
//! wraps the answer as an output tensor.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::inference::{Loading, Protocol, answer, predict};
use super::{ApiError, AppState};
use crate::registry::LoadedModel;

pub use crate::runtime::OIP_JSON;

/// The version every model has: models here are not versioned.
pub(super) const MODEL_VERSION: &str = "1";

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
    match metadata(&state, &name).await {
        Ok(metadata) => Json(metadata).into_response(),
        Err(error) => error.into_open_inference_response(),
    }
}

/// Model `name`'s v2 metadata, loading it on demand. The inputs and outputs
/// are the model's own (the ONNX engine lists its graph's); a model that
/// says nothing lists none.
pub(super) async fn metadata(state: &AppState, name: &str) -> Result<Value, ApiError> {
    let (_, answer) = predict(
        state,
        name,
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
    Ok(json!({
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": own.get("platform").and_then(Value::as_str).unwrap_or("wasm"),
        "inputs": listed("inputs"),
        "outputs": listed("outputs"),
    }))
}

/// Whether model `name` has `version`: every model has one, [`MODEL_VERSION`];
/// asking for another is the 404 of a model that does not exist.
pub(super) fn check_version(name: &str, version: &str) -> Result<(), ApiError> {
    if version.is_empty() || version == MODEL_VERSION {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "ModelNotFound",
        format!("model {name:?} has no version {version:?}; it has version {MODEL_VERSION}"),
    ))
}

/// `GET /v2/models/{name}/ready`: 200 once the model is loaded (this loads
/// it on demand, as an inference would); the load's error otherwise.
pub async fn model_ready(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    describe_loaded(
        &state,
        &name,
        |model| json!({ "name": model.name, "ready": true }),
    )
    .await
}

/// `describe` of model `name`, loaded on demand, or the load's error in v2's shape.
async fn describe_loaded(
    state: &AppState,
    name: &str,
    describe: impl FnOnce(&LoadedModel) -> Value,
) -> Response {
    match state.registry.get_or_load(name).await {
        Ok(model) => Json(describe(&model)).into_response(),
        Err(error) => ApiError::from(error).into_open_inference_response(),
    }
}

/// `POST /v2/models/{name}/infer`.
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_model(state, name, headers, body).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`: every model has one version.
pub async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(error) = check_version(&name, &version) {
        return error.into_open_inference_response();
    }
    infer_model(state, name, headers, body).await
}

async fn infer_model(state: AppState, name: String, headers: HeaderMap, body: Body) -> Response {
    answer(
        &state,
        &name,
        &headers,
        body,
        (Loading::OnDemand, Protocol::OpenInference),
    )
    .await
}
