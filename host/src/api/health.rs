//! Liveness and metrics: cheap, never touch a model.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;

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
