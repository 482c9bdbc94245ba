//! edge: the HTTP surface — the webhook endpoint, health, metrics — and the shared application state.

pub mod guard;
mod health;
mod hooks;
mod serve;

pub use hooks::{is_credential_header, REDACTED};
pub use serve::{connection_cap, serve, ClientAddr, ServeLimits};

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ApiError;
use crate::live::LiveHandle;
use crate::store::DynStore;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub live: LiveHandle,
    pub store: DynStore,
    /// Wakes the worker when new jobs were committed.
    pub wake: Arc<Notify>,
    pub metrics: PrometheusHandle,
    /// Limits on what clients hold before they verify (memory, failed verifications per address).
    pub guards: Arc<guard::EdgeGuards>,
}

/// The whole HTTP application: webhooks, health, metrics, admin API and dashboard.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/hooks/{source}", post(hooks::receive).fallback(|| async { ApiError::MethodNotAllowed }))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(crate::admin::router())
        .merge(crate::ui::router())
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
}
