//! Liveness, readiness (the store answers) and the Prometheus scrape endpoint.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use super::AppState;
use crate::metrics::QUEUE_DEPTH;
use crate::store::JobStatus;

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "code": "store_unavailable" })),
        ),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Queue depth is read at scrape time so it is exact, whichever instance did the work.
    if let Ok(Ok(counts)) = tokio::time::timeout(Duration::from_secs(2), state.store.job_counts()).await {
        for (status, n) in [
            (JobStatus::Queued, counts.queued),
            (JobStatus::Running, counts.running),
            (JobStatus::Succeeded, counts.succeeded),
            (JobStatus::Dead, counts.dead),
        ] {
            metrics::gauge!(QUEUE_DEPTH, "status" => status.as_str()).set(n as f64);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
