//! Model management, as SageMaker's multi-model contract calls it:
//! `POST /models`, `GET /models`, `GET /models/{name}`, `DELETE /models/{name}`,
//! and DJL's `PUT /models/{name}?min_worker=&max_worker=`, `model_version=N`
//! on a registration, and `/models/{name}/{version}` for one version.
//!
//! SageMaker has already downloaded and extracted the package when it calls
//! `POST /models`, so `url` is a folder; an archive path works too.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{admit_url, check_quota};
use super::inference::{plain, read_body, versioned};
use super::tenancy::Caller;
use super::{ApiError, AppState};
use crate::package::Properties;
use crate::registry::{LoadError, LoadedModel, NotReady, Overrides};
use crate::store::versions::{key_of_wanted, wanted_of_key};
use crate::store::{PackageSource, model_key, parse_version, split_key};
use crate::wlm::Bounds;

/// Page size of `GET /models` when the caller gives none (as DJL Serving).
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page a caller may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;
/// The largest `POST /models` body: two short strings.
const MAX_REGISTER_BODY: usize = 64 * 1024;

/// `POST /models` body, SageMaker's shape.
#[derive(Deserialize)]
struct Register {
    model_name: String,
    url: String,
}

/// `POST /models` query, DJL Serving's shape. With `url` in the query the
/// call is DJL's; without it, the JSON body is SageMaker's.
#[derive(Deserialize, Default)]
pub struct RegisterQuery {
    url: Option<String>,
    model_name: Option<String>,
    model_version: Option<String>,
    batch_size: Option<u32>,
    max_batch_delay: Option<u64>,
    min_worker: Option<u32>,
    max_worker: Option<u32>,
    synchronous: Option<bool>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

/// `POST /models`: loads a model. SageMaker's JSON body `{model_name, url}`
/// or DJL's query `?url=&model_name=&batch_size=&…`; 200 when it is ready
/// to serve (202 at once for DJL's `synchronous=false`).
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RegisterQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Query(query) = query.map_err(|e| {
        invalid(format!(
            "bad query: {e}; DJL's form is ?url=…&model_name=…&model_version=N&batch_size=N&max_batch_delay=MS&min_worker=N&max_worker=N&synchronous=true|false"
        ))
    })?;
    let query_version = query.model_version.clone();
    let (name, url, overrides, synchronous) = match query.url.clone() {
        Some(url) => djl_registration(query, url)?,
        None => {
            let bytes = read_body(body, MAX_REGISTER_BODY, state.body_read_timeout).await?;
            check_json_content_type(&headers)?;
            let request: Register = serde_json::from_slice(&bytes).map_err(|e| {
                invalid(format!(
                    "expected JSON {{\"model_name\": \"...\", \"url\": \"/path/to/model\"}}, or DJL's query ?url=…: {e}"
                ))
            })?;
            (request.model_name, request.url, Overrides::default(), true)
        }
    };
    plain(&name)?;
    if !caller.sees(&name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "tenant {:?} may not register {name:?}: its models are named as the tenants file's patterns say",
                caller.audit_name()
            ),
        ));
    }
    // A version makes the key `name/N` ([`model_key`]); version 1 is the name.
    let name = match parse_version(query_version.as_deref().unwrap_or_default()) {
        Ok(Some(version)) => model_key(&name, version),
        Ok(None) => name,
        Err(error) => return Err(LoadError::Store(error).into()),
    };
    let source = PackageSource::parse(&url).map_err(|e| invalid(e.to_string()))?;
    let source = package_source(
        admit_url(state.allowed_urls.as_deref(), &caller, source)?,
        &url,
    )?;
    // Whether this very version is loaded, not whether any version is.
    if let Some(tenant) = caller.tenant()
        && state.registry.get_loaded(&wanted_of_key(&name)).is_err()
    {
        check_quota(&state, tenant)?;
    }
    if !synchronous {
        // Reserved here, so that a describe right after the 202 says PENDING.
        let reservation = state.registry.reserve(&name).map_err(register_error)?;
        let registry = state.registry.clone();
        let task_name = name.clone();
        tokio::spawn(async move {
            let loaded = registry
                .load_reserved(&task_name, reservation, source, &overrides)
                .await;
            if let Err(error) = loaded {
                tracing::warn!(model = task_name, %error, "registration failed");
                // Nobody waits for this answer: describe shows it instead.
                registry.record_failure(&task_name, error);
            }
        });
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "status": format!("Model \"{name}\" registration started") })),
        ));
    }
    match state.registry.load_from(&name, source, &overrides).await {
        Ok(model) => Ok((
            StatusCode::OK,
            Json(json!({ "status": format!("Model \"{}\" is loaded", model.name) })),
        )),
        Err(error) => Err(register_error(error)),
    }
}

/// A registration body is JSON. A missing content type is taken as JSON, and
/// so is curl's default for `-d`, so that the plain `curl -d '{…}'` works.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media_type = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media_type == "application/json"
        || media_type.ends_with("+json")
        || media_type == "application/x-www-form-urlencoded"
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!(
            "a registration body is JSON, not {media_type:?}: send content-type application/json, or use DJL's query form ?url=…"
        ),
    ))
}

/// The name, url, overrides and `synchronous` of DJL's query form.
fn djl_registration(
    query: RegisterQuery,
    url: String,
) -> Result<(String, String, Overrides, bool), ApiError> {
    let name = match query.model_name {
        Some(name) => name,
        None => default_model_name(&url).ok_or_else(|| {
            invalid(format!(
                "cannot name a model after {url:?}: give model_name"
            ))
        })?,
    };
    if let (Some(min), Some(max)) = (query.min_worker, query.max_worker) {
        Bounds::new(min as usize, max as usize).map_err(|e| invalid(e.to_string()))?;
    }
    let settings = [
        ("batch_size", query.batch_size.map(u64::from)),
        ("max_batch_delay", query.max_batch_delay),
        ("minWorkers", query.min_worker.map(u64::from)),
        ("maxWorkers", query.max_worker.map(u64::from)),
    ];
    let overrides = Overrides(
        settings
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?.to_string())))
            .collect(),
    );
    // Checked now with the property file's own limits, so that a bad value is a 400 at once.
    overrides
        .apply(&Properties::default())
        .map_err(|e| invalid(e.to_string()))?;
    Ok((name, url, overrides, query.synchronous.unwrap_or(true)))
}

/// DJL's default name: the url's last segment without its archive extension.
fn default_model_name(url: &str) -> Option<String> {
    let last = url.trim_end_matches('/').rsplit('/').next()?;
    let stem = [".tar.gz", ".tgz"]
        .iter()
        .find_map(|ext| last.strip_suffix(ext))
        .unwrap_or(last);
    (!stem.is_empty()).then(|| stem.to_string())
}

/// The package `url` names: `s3://bucket/key`, or a local path or
/// `file://` url, which must exist.
fn package_source(source: PackageSource, url: &str) -> Result<PackageSource, ApiError> {
    let PackageSource::Path(path) = &source else {
        return Ok(source);
    };
    if !path.is_absolute() || !path.exists() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ModelNotFound",
            format!(
                "no model package at {url:?}: url must be an absolute path to a folder or a .tar.gz"
            ),
        ));
    }
    Ok(source)
}

/// What SageMaker expects of `POST /models`: 507 when there is no room, and a
/// broken package is the caller's (400), not the server's.
fn register_error(error: LoadError) -> ApiError {
    let message = error.to_string();
    match error {
        LoadError::NoCapacity { .. } => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientCapacity",
            message,
        ),
        LoadError::Broken { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "InvalidPackage", message)
        }
        other => other.into(),
    }
}

/// `GET /models` query: DJL's and SageMaker's paging.
#[derive(Deserialize)]
pub struct Page {
    limit: Option<usize>,
    next_page_token: Option<String>,
}

/// One entry of `GET /models`, and the body of `GET /models/{name}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelEntry {
    model_name: String,
    model_version: String,
    model_url: String,
}

fn entry(model: &LoadedModel) -> ModelEntry {
    let (name, version) = split_key(&model.name);
    ModelEntry {
        model_name: name.to_string(),
        model_version: version.to_string(),
        model_url: model.source.to_string(),
    }
}

/// `GET /models`: the loaded models, sorted by name, a page at a time.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = page.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("bad query: {e}; use limit=N and next_page_token=T"),
        )
    })?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("limit must be from 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    let start = match page.next_page_token.as_deref() {
        None | Some("") => 0,
        Some(token) => token.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "next_page_token is not a token this server gave out",
            )
        })?,
    };
    let mut models = state.registry.list();
    models.retain(|model| caller.sees(&model.name));
    let page: Vec<ModelEntry> = models
        .iter()
        .skip(start)
        .take(limit)
        .map(|m| entry(m))
        .collect();
    let mut body = json!({ "models": page });
    if start + limit < models.len() {
        body["nextPageToken"] = json!((start + limit).to_string());
    }
    Ok(Json(body))
}

/// `GET /models/{name}`: the loaded model (its highest version loaded),
/// with its settings, queue and workers (DJL's describe keys next to
/// SageMaker's); `PENDING` while it loads, `FAILED` with the error if its
/// last load failed; 404 otherwise.
pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    describe_model(&state, plain(&name)?).await
}

/// `GET /models/{name}/{version}`: as [`describe`], for one version.
pub async fn describe_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    describe_model(&state, &versioned(&name, &version)?).await
}

async fn describe_model(state: &AppState, name: &str) -> Result<Json<Value>, ApiError> {
    let model = match state.registry.get_loaded(name) {
        Ok(model) => model,
        Err(error @ LoadError::NotLoaded(_)) => {
            let key = key_of_wanted(name);
            return match state.registry.not_ready(&key) {
                Some(not_ready) => Ok(Json(describe_not_ready(&key, not_ready))),
                None => Err(error.into()),
            };
        }
        Err(error) => return Err(error.into()),
    };
    let mut body = serde_json::to_value(entry(&model)).unwrap_or_default();
    let settings = model.settings();
    let stats = model.stats();
    let timings = model.timings;
    let memory = model.memory();
    let extra = json!({
        "status": "READY",
        "wasmHash": model.wasm_hash(),
        "minWorkers": stats.bounds.min(),
        "maxWorkers": stats.bounds.max(),
        "batchSize": settings.batch_size,
        "maxBatchDelay": settings.max_batch_delay.as_millis() as u64,
        "maxIdleTime": settings.max_idle_time.as_secs(),
        "queueSize": settings.job_queue_size,
        "requestInQueue": stats.queued,
        "workers": stats.workers,
        "busyWorkers": stats.busy,
        "scaleUps": stats.scale_ups,
        "scaleDowns": stats.scale_downs,
        "requests": {
            "completed": stats.completed,
            "rejected": stats.rejected,
            "expired": stats.expired,
        },
        "memory": {
            "heldBytes": memory.held,
            "instanceBytes": memory.instances,
            "sharedCodeBytes": memory.code,
        },
        "loadTime": {
            "downloadMs": timings.download.as_secs_f64() * 1e3,
            "unpackMs": timings.unpack.as_secs_f64() * 1e3,
            "compileMs": timings.compile.as_secs_f64() * 1e3,
            "instantiateMs": timings.instantiate.as_secs_f64() * 1e3,
        },
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    Ok(Json(body))
}

/// `PUT /models/{name}` query: DJL's scaling bounds; a missing one is kept.
#[derive(Deserialize)]
pub struct Scale {
    min_worker: Option<usize>,
    max_worker: Option<usize>,
}

/// `PUT /models/{name}?min_worker=&max_worker=`: changes the scaling
/// bounds of the highest version loaded, live.
pub async fn scale(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<Scale>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    scale_model(&state, plain(&name)?, query).await
}

/// `PUT /models/{name}/{version}?min_worker=&max_worker=`: as [`scale`], for one version.
pub async fn scale_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    query: Result<Query<Scale>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    scale_model(&state, &versioned(&name, &version)?, query).await
}

async fn scale_model(
    state: &AppState,
    name: &str,
    query: Result<Query<Scale>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let bad_request =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", message);
    let Query(scale) = query
        .map_err(|e| bad_request(format!("bad query: {e}; use min_worker=N and max_worker=N")))?;
    let model = state.registry.get_loaded(name).map_err(ApiError::from)?;
    let name = model.name.as_str();
    let current = model.stats().bounds;
    let bounds = Bounds::new(
        scale.min_worker.unwrap_or(current.min()),
        scale.max_worker.unwrap_or(current.max()),
    )
    .map_err(|e| bad_request(e.to_string()))?;
    state.registry.set_bounds(name, bounds).await?;
    Ok(Json(json!({
        "status": format!(
            "Model \"{name}\" workers scaled: min {}, max {}",
            bounds.min(),
            bounds.max()
        ),
    })))
}

/// The describe body of a model that is loading, or whose load failed.
fn describe_not_ready(name: &str, not_ready: NotReady) -> Value {
    match not_ready {
        NotReady::Loading => json!({ "modelName": name, "status": "PENDING" }),
        NotReady::Failed { when, error } => {
            let error = ApiError::from(error);
            json!({
                "modelName": name,
                "status": "FAILED",
                "failedAt": humantime::format_rfc3339_seconds(when).to_string(),
                "error": {
                    "code": error.status.as_u16(),
                    "type": error.kind,
                    "message": error.message,
                },
            })
        }
    }
}

/// `DELETE /models/{name}`: unloads every version of the model; its memory
/// is freed when this answers.
pub async fn unregister(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.registry.unload_all(&name).await?;
    Ok(Json(
        json!({ "status": format!("Model \"{name}\" is unloaded") }),
    ))
}

/// `DELETE /models/{name}/{version}`: unloads one version of the model.
pub async fn unregister_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    state
        .registry
        .unload(&key_of_wanted(&versioned(&name, &version)?))
        .await?;
    Ok(Json(json!({
        "status": format!("Model \"{name}\" version {version} is unloaded")
    })))
}
