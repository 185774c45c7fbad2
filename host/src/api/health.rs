//! Liveness, readiness, the drain and metrics: cheap, never touch a model.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;

/// Whether the server drains: told to stop, it goes on serving for a while
/// (`--drain-delay`) but reports not ready and closes each connection after
/// its answer, so that proxies and Kubernetes send the traffic elsewhere
/// before the listener closes, and no request meets a closed port.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    /// From now on the server drains.
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the server drains.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// While the server drains, every answer closes its connection: a proxy's
/// next request opens a new one, which finds the listener closed once the
/// drain ends and goes to the next replica, instead of meeting a kept-alive
/// connection that closes under it. Applied to each connection's service,
/// not as a router layer, which would box a clone of every route per request.
pub fn close_when_draining(drain: &Drain, mut response: Response) -> Response {
    if drain.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `GET /ping`: 200 while the process serves, also while models load.
pub async fn ping() -> Json<Value> {
    Json(json!({ "status": "Healthy" }))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.registry.publish_memory();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
