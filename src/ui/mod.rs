//! ui: the dashboard at `/ui/` — recent deliveries, their jobs and attempts, replay and retry buttons, and the
//! routes and sources with pause and resume buttons.
//!
//! The page is static; it asks for the admin token and reads everything through the admin API, so the
//! dashboard can show nothing the API would not. Off (404) when no admin token is configured.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

const INDEX: &str = include_str!("index.html");

pub fn router() -> Router<AppState> {
    Router::new().route("/ui", get(|| async { Redirect::permanent("/ui/") })).route("/ui/", get(index))
}

async fn index(State(state): State<AppState>) -> Response {
    if state.live.current().config.admin_token.is_none() {
        return ApiError::NotFound.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX,
    )
        .into_response()
}
