//! Liveness, readiness (a delivery can be committed now) and the Prometheus scrape endpoint.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use crate::metrics::{QUEUE_DEPTH, QUEUE_OLDEST, STORE_READY};
use crate::state::AppState;
use crate::store::{now_ms, JobStatus, NotReady};

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// 200 only while the store answers and its last write did not fail (a full disk answers reads but takes no
/// delivery); the reason stays in the log, the body gives a stable code.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match readiness(&state).await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))),
        Err((code, message)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "code": code, "message": message })),
        ),
    }
}

/// Whether a delivery can be committed now, or the stable code and message saying why not.
async fn readiness(state: &AppState) -> Result<(), (&'static str, &'static str)> {
    match tokio::time::timeout(Duration::from_secs(2), state.store.readiness()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(NotReady::WriteFailed(_))) => {
            Err(("store_write_failed", "the last write to the store failed and none has committed since"))
        }
        Ok(Err(NotReady::Unreachable(_))) => Err(("store_unavailable", "the store does not answer")),
        Err(_) => Err(("store_unavailable", "the store did not answer in time")),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // What `/readyz` answers, for alerts that do not probe the pod themselves.
    let ready = readiness(&state).await.is_ok();
    metrics::gauge!(STORE_READY).set(if ready { 1.0 } else { 0.0 });
    // Read at scrape time so it is exact whichever instance did the work; counters kept by the writes make it
    // a read of a few rows per route, however long the queue.
    if let Ok(Ok(counts)) = tokio::time::timeout(Duration::from_secs(2), state.store.job_counts()).await {
        for status in JobStatus::ALL {
            metrics::gauge!(QUEUE_DEPTH, "status" => status.as_str()).set(counts.of(status) as f64);
        }
    }
    // One index seek per configured route; a route with nothing due reads 0, so an alert sees it recover.
    let routes: Vec<String> = state.live.current().routes.routes().map(|r| r.name().to_string()).collect();
    let now = now_ms();
    if let Ok(Ok(oldest)) = tokio::time::timeout(Duration::from_secs(2), state.store.oldest_due(&routes, now)).await {
        for route in routes {
            let due_since = oldest.iter().find(|(r, _)| *r == route).map(|(_, at)| *at);
            let age = due_since.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
            metrics::gauge!(QUEUE_OLDEST, "route" => route).set(age);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
