//! edge: the internet-facing HTTP surface — the listener, the webhook endpoint, health and metrics.

mod hooks;
mod probes;
mod serve;

pub use hooks::{is_credential_header, REDACTED};
pub use serve::{connection_cap, serve, ServeLimits};

use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// The webhook endpoint and the probes; `startup::app` joins it with the admin API and the dashboard.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/hooks/{source}", post(hooks::receive).fallback(|| async { ApiError::MethodNotAllowed }))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
}
