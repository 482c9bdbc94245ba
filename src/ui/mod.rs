//! ui: the dashboard at `/ui/` — an overview of charts (deliveries, job outcomes, action durations, queue
//! depth and age, from `/api/v1/stats`), delivery search with each delivery's jobs and attempts, the routes and
//! sources with pause and resume, and the dead letters with retry; all kept live by polling.
//!
//! The page is static — `index.html`, `app.css` and a few ES modules, compiled into the binary — and reads everything
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

/// Every file the dashboard is made of: its path under `/ui/`, content type and text (compiled in).
const ASSETS: &[(&str, &str, &str)] = &[
    ("/ui/", HTML, include_str!("index.html")),
    ("/ui/app.css", CSS, include_str!("app.css")),
    // The page's ES modules: the shell, then one file per page and the parts they share.
    ("/ui/app.js", JS, include_str!("app.js")),
    ("/ui/api.js", JS, include_str!("api.js")),
    ("/ui/dom.js", JS, include_str!("dom.js")),
    ("/ui/keys.js", JS, include_str!("keys.js")),
    ("/ui/chart.js", JS, include_str!("chart.js")),
    ("/ui/overview.js", JS, include_str!("overview.js")),
    ("/ui/deliveries.js", JS, include_str!("deliveries.js")),
    ("/ui/routes.js", JS, include_str!("routes.js")),
    ("/ui/dead.js", JS, include_str!("dead.js")),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Scripts and styles only from the served files; API calls only to this origin; never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    let router = Router::new().route("/ui", get(|| async { Redirect::permanent("/ui/") }));
    ASSETS.iter().fold(router, |router, &(path, content_type, body)| {
        router.route(path, get(move |state| asset(state, content_type, body)))
    })
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
