//! The HTTP surface, and the gRPC one over the same functions: no state of
//! their own. Every handler reads the shared [`AppState`] and maps errors
//! through [`ApiError`].

mod auth;
mod error;
pub mod grpc;
mod health;
mod inference;
mod management;
mod repository;
pub mod tenancy;
mod v2;

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};

pub use error::ApiError;
pub use grpc::serve as serve_grpc;
pub use health::{Drain, close_when_draining};
pub use inference::SINGLE_MODEL;

use crate::metrics::Metrics;
use crate::registry::Registry;

/// What every handler can reach, behind one `Arc`: axum clones the state
/// for each layer and handler of every request, so a clone is one atomic
/// increment, not one per field and a copy of a path.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state that handlers share.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    /// The loaded models.
    pub registry: Arc<Registry>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// The largest request body accepted (413 beyond it).
    pub max_request_bytes: usize,
    /// How long a request body may take to arrive (408 after).
    pub body_read_timeout: std::time::Duration,
    /// The status of a request refused by a full queue (503 or 429).
    pub queue_full_status: u16,
    /// SageMaker's multi-model mode: `/invocations` must name its model.
    pub multi_model: bool,
    /// The folder of the single model that `/invocations` serves otherwise.
    pub single_model_dir: std::path::PathBuf,
    /// The tenants and their keys; `None`: anyone may do anything.
    pub tenancy: Option<Arc<tenancy::Tenancy>>,
    /// Where packages may be registered from; `None`: anywhere.
    pub allowed_urls: Option<Arc<tenancy::AllowedUrls>>,
    /// Set once the server has been told to stop.
    pub drain: health::Drain,
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/ping", get(health::ping))
        .route("/metrics", get(health::metrics))
        .route("/predictions/{model}", post(inference::predictions))
        .route(
            "/predictions/{model}/{version}",
            post(inference::predictions_version),
        )
        .route("/invocations", post(inference::invocations))
        .route("/models", post(management::register).get(management::list))
        .route(
            "/models/{model}",
            get(management::describe)
                .put(management::scale)
                .delete(management::unregister),
        )
        .route(
            "/models/{model}/{version}",
            get(management::describe_version)
                .put(management::scale_version)
                .delete(management::unregister_version),
        )
        .route("/models/{model}/invoke", post(inference::invoke))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{model}", get(v2::model_metadata))
        .route("/v2/models/{model}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository::unload),
        )
        .route(
            "/v2/models/{model}/versions/{version}",
            get(v2::model_version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(v2::model_version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(v2::infer_version),
        );
    // Without tenants the auth layer has nothing to decide: not adding it
    // spares every request its boxed future and service.
    let routes = match state.tenancy {
        Some(_) => routes.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::layer,
        )),
        None => routes,
    };
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed on {path}"),
    )
}

async fn unknown_route(uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownRoute",
        format!("no route for {path}"),
    )
}
