//! Every error the HTTP surface can answer, mapped to a status in one place.
//!
//! The body is JSON in DJL Serving's shape: `{"code", "type", "message"}`,
//! with a message a person can act on.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::registry::{LoadError, PredictError};
use crate::runtime::{CallError, GuestError, RuntimeError};
use crate::store::StoreError;

/// Seconds a client is asked to wait when the server is out of capacity.
const RETRY_AFTER_SECONDS: &str = "1";

/// The `type` of a request refused because its model's queue is full.
pub const QUEUE_FULL: &str = "QueueFull";

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable name.
    pub kind: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// Seconds the client should wait before it retries, when the server
    /// knows better than [`RETRY_AFTER_SECONDS`].
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    code: u16,
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with `status`, `kind` and `message`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The error, asking the client to wait `seconds` before it retries.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl ApiError {
    /// The error in the Open Inference Protocol's shape: its `error` field
    /// next to ours, so that v2 clients show the message.
    pub fn into_open_inference_response(self) -> Response {
        self.respond(true)
    }

    fn respond(self, open_inference: bool) -> Response {
        let body = Body {
            error: open_inference.then_some(self.message.as_str()),
            code: self.status.as_u16(),
            kind: self.kind,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE
            || self.status == StatusCode::REQUEST_TIMEOUT
        {
            // The rest of the body is never read, so the connection cannot
            // carry another request: say so, or the client may reuse it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            let seconds = match self.retry_after {
                Some(seconds) => HeaderValue::from(seconds),
                None => HeaderValue::from_static(RETRY_AFTER_SECONDS),
            };
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(false)
    }
}

impl From<LoadError> for ApiError {
    fn from(error: LoadError) -> Self {
        let message = error.to_string();
        match error {
            LoadError::Store(StoreError::InvalidName { .. }) => {
                ApiError::new(StatusCode::BAD_REQUEST, "InvalidModelName", message)
            }
            LoadError::Store(StoreError::InvalidVersion { .. }) => {
                ApiError::new(StatusCode::BAD_REQUEST, "InvalidModelVersion", message)
            }
            LoadError::Store(
                StoreError::NotFound { .. }
                | StoreError::ObjectNotFound { .. }
                | StoreError::VersionNotFound { .. },
            ) => ApiError::new(StatusCode::NOT_FOUND, "ModelNotFound", message),
            LoadError::Store(StoreError::InvalidUrl { .. }) => {
                ApiError::new(StatusCode::BAD_REQUEST, "InvalidUrl", message)
            }
            LoadError::Store(StoreError::Unavailable { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable", message)
            }
            LoadError::Store(StoreError::Refused { .. } | StoreError::Corrupt { .. }) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "StoreError", message)
            }
            LoadError::Store(StoreError::Cache { .. }) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "PackageCacheFull",
                format!(
                    "{message}; free space on the disk of --cache-dir, or lower --package-cache-size"
                ),
            ),
            LoadError::AlreadyLoaded(_) => {
                ApiError::new(StatusCode::CONFLICT, "ModelAlreadyLoaded", message)
            }
            LoadError::NotLoaded(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "ModelNotLoaded", message)
            }
            LoadError::NoCapacity { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoCapacity",
                format!("{message}; retry later, or raise --max-instances"),
            ),
            LoadError::InvalidPackage { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "InvalidPackage", message)
            }
            LoadError::Broken { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ModelLoadFailed",
                message,
            ),
            LoadError::TooLarge { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientMemory",
                message,
            ),
            LoadError::NoMemory { retry: true, .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "MemoryBusy", message)
            }
            LoadError::NoMemory { retry: false, .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientMemory",
                message,
            ),
            LoadError::ShuttingDown(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown", message)
            }
            LoadError::HostFailed(_) => host_failed(message),
        }
    }
}

impl From<PredictError> for ApiError {
    fn from(error: PredictError) -> Self {
        let message = error.to_string();
        match error {
            PredictError::Load(load) => load.into(),
            PredictError::Guest(GuestError::InvalidInput(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "InvalidInput", message)
            }
            PredictError::Guest(GuestError::Internal(_)) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ModelError", message)
            }
            PredictError::Call(CallError::Deadline(_)) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "ModelTimeout", message)
            }
            PredictError::Call(CallError::Trap(_)) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ModelCrashed", message)
            }
            PredictError::Call(CallError::Load(_) | CallError::LoadDeadline(_)) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ModelLoadFailed",
                message,
            ),
            PredictError::Runtime(RuntimeError::PoolExhausted(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoCapacity",
                format!("{message}; retry later"),
            ),
            PredictError::Runtime(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "RuntimeError", message)
            }
            PredictError::QueueFull { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                QUEUE_FULL,
                format!("{message}; retry later, or raise job_queue_size or maxWorkers"),
            ),
            PredictError::Expired { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QueueTimeout",
                format!("{message}; retry later, or raise maxWorkers or request_timeout_ms"),
            ),
            PredictError::ShuttingDown(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown", message)
            }
            PredictError::HostFailed(_) => host_failed(message),
        }
    }
}

/// The server's own failure: 500, whatever the request was.
fn host_failed(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        message,
    )
}
