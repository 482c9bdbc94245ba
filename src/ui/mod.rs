//! ui: the dashboard at `/ui/` — recent deliveries, their jobs and attempts, replay and retry buttons, and the
//! routes and sources with pause and resume buttons.
//!
//! The page is static — `index.html`, `app.js` and `app.css`, compiled into the binary — and reads everything
//! through the admin API with the token it asks for, so the dashboard can show nothing the API would not. No
//! inline script or style: the content policy allows only these files. Off (404) when no admin token is
//! configured.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Scripts and styles only from the served files; API calls only to this origin; never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|state| asset(state, "text/html; charset=utf-8", INDEX)))
        .route("/ui/app.js", get(|state| asset(state, "text/javascript; charset=utf-8", SCRIPT)))
        .route("/ui/app.css", get(|state| asset(state, "text/css; charset=utf-8", STYLE)))
}

async fn asset(State(state): State<AppState>, content_type: &'static str, body: &'static str) -> Response {
    if state.live.current().config.admin_token.is_none() {
        return ApiError::NotFound.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
