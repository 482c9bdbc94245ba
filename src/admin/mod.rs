//! admin: the bearer-token admin API (in progress).
use axum::Router;
use crate::edge::AppState;
pub fn router() -> Router<AppState> { Router::new() }
