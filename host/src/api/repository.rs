//! The Open Inference Protocol's model repository extension, as Triton
//! defines it and KServe's model agent calls it: list the store's models
//! with their state, and load or unload one by name. A load answers once
//! the model is ready, so that the agent's next inference finds it warm.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::inference::read_body;
use super::tenancy::Caller;
use super::{ApiError, AppState};
use crate::registry::{LoadError, NotReady};
use crate::store::split_key;

/// The most models an index lists: a store of more answers its first ones.
const MAX_INDEX: usize = 100_000;

/// `POST /v2/repository/index`: the store's models, each with its state
/// (`READY`, `LOADING`, `UNAVAILABLE` with the reason); with
/// `{"ready": true}`, only the loaded ones.
pub async fn index(State(state): State<AppState>, caller: Caller, body: Body) -> Response {
    match index_entries(&state, &caller, body).await {
        Ok(entries) => Json(Value::Array(entries)).into_response(),
        Err(error) => error.into_open_inference_response(),
    }
}

async fn index_entries(
    state: &AppState,
    caller: &Caller,
    body: Body,
) -> Result<Vec<Value>, ApiError> {
    let request = request_object(state, body).await?;
    let ready_only = match request.get("ready") {
        None => false,
        Some(Value::Bool(ready)) => *ready,
        Some(_) => return Err(invalid("\"ready\" must be true or false")),
    };
    Ok(entries(state, caller, ready_only)
        .await?
        .into_iter()
        .map(|entry| {
            json!({ "name": entry.name, "version": entry.version, "state": entry.state, "reason": entry.reason })
        })
        .collect())
}

/// One model of the repository index.
pub(super) struct IndexEntry {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// `READY`, `LOADING` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it is unavailable, if it failed.
    pub reason: String,
}

/// The store's models and the loaded ones, by name, each with its state;
/// only the loaded ones with `ready_only`.
pub(super) async fn entries(
    state: &AppState,
    caller: &Caller,
    ready_only: bool,
) -> Result<Vec<IndexEntry>, ApiError> {
    let loaded: Vec<String> = state
        .registry
        .list()
        .iter()
        .map(|model| model.name.clone())
        .collect();
    let mut names = loaded.clone();
    if !ready_only {
        names.extend(state.registry.store_names(MAX_INDEX).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "StoreUnavailable",
                e.to_string(),
            )
        })?);
        names.sort();
        names.dedup();
    }
    names.retain(|name| caller.sees(name));
    Ok(names
        .into_iter()
        .map(|key| {
            let (state, reason) = if loaded.binary_search(&key).is_ok() {
                ("READY", String::new())
            } else {
                match state.registry.not_ready(&key) {
                    Some(NotReady::Loading) => ("LOADING", String::new()),
                    Some(NotReady::Failed { error, .. }) => ("UNAVAILABLE", error.to_string()),
                    None => ("UNAVAILABLE", "unloaded".to_string()),
                }
            };
            let (name, version) = split_key(&key);
            IndexEntry {
                name: name.to_string(),
                version: version.to_string(),
                state,
                reason,
            }
        })
        .collect())
}

/// `POST /v2/repository/models/{name}/load`: loads `name` from the store
/// (an empty body, or `{"parameters": {...}}`), answering once it is ready.
pub async fn load(State(state): State<AppState>, Path(name): Path<String>, body: Body) -> Response {
    let loaded = async {
        let request = request_object(&state, body).await?;
        let parameters = match request.get("parameters") {
            Some(Value::Object(parameters)) => parameters.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        load_model(&state, &name, parameters).await
    };
    match loaded.await {
        Ok(()) => Json(json!({})).into_response(),
        Err(error) => error.into_open_inference_response(),
    }
}

/// Loads `name` from the store; `parameters` are the names of the load's
/// parameters, none of which may ask for another configuration or files.
pub(super) async fn load_model<'a>(
    state: &AppState,
    name: &str,
    parameters: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    if let Some(key) = parameters
        .into_iter()
        .find(|k| *k == "config" || k.starts_with("file:"))
    {
        return Err(invalid(format!(
            "parameter {key:?} is not supported: models load from their package in the store as it is"
        )));
    }
    state
        .registry
        .get_or_load(super::inference::plain(name)?)
        .await?;
    Ok(())
}

/// `POST /v2/repository/models/{name}/unload`: unloads `name`; a model that
/// is not loaded is already unloaded.
pub async fn unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let unloaded = async {
        request_object(&state, body).await?;
        unload_model(&state, &name).await
    };
    match unloaded.await {
        Ok(()) => Json(json!({})).into_response(),
        Err(error) => error.into_open_inference_response(),
    }
}

/// Unloads every version of `name`; a model that is not loaded is already unloaded.
pub(super) async fn unload_model(state: &AppState, name: &str) -> Result<(), ApiError> {
    match state.registry.unload_all(name).await {
        Ok(()) | Err(LoadError::NotLoaded(_)) => Ok(()),
        Err(error) => Err(ApiError::from(error)),
    }
}

/// The request's JSON object; an empty body is an empty object.
async fn request_object(state: &AppState, body: Body) -> Result<Map<String, Value>, ApiError> {
    let body = read_body(body, state.max_request_bytes, state.body_read_timeout).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("the body must be a JSON object ({e}), or empty")))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidInput", message)
}
