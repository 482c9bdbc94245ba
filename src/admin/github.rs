//! admin::github: GitHub delivery recovery for operators — what GitHub saw beside what hookgate stored
//! (`GET /api/v1/sources/{name}/github/deliveries?failed=&since=&limit=`), and one recovery round now
//! (`POST /api/v1/sources/{name}/github/recover?since=`). The credentials stay with the server.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::bulk::instant;
use super::AdminAuth;
use crate::error::ApiError;
use crate::github::recovery::MAX_PAGES;
use crate::github::{api::PER_PAGE, RecoverError, Recoverer, RoundError, Verdict};
use crate::state::AppState;
use crate::store::{now_ms, Millis};

impl From<RecoverError> for ApiError {
    fn from(e: RecoverError) -> Self {
        match e {
            RecoverError::UnknownSource(_) => ApiError::NotFound,
            RecoverError::NotConfigured(_) => ApiError::BadRequest(e.to_string()),
            RecoverError::NotTaking(_) => ApiError::Conflict(e.to_string()),
            RecoverError::Leased(_) => ApiError::Conflict(e.to_string()),
            RecoverError::Round(RoundError::Store(e)) => e.into(),
            // A 502: logged once, with this text, by `crate::error::log_server_errors`.
            RecoverError::Round(RoundError::Github(e)) => ApiError::Upstream(e.to_string()),
        }
    }
}

/// `since` as Unix ms: an RFC 3339 time or a duration ago; default: the source's lookback.
fn since_of(state: &AppState, source: &str, since: Option<&str>) -> Result<Millis, ApiError> {
    let now = now_ms();
    match since {
        Some(text) => instant("since", text, now),
        None => Ok(now - Recoverer::recovery_of(&state.live, source)?.lookback.as_millis() as Millis),
    }
}

#[derive(Deserialize)]
pub(super) struct DeliveriesParams {
    failed: Option<bool>,
    since: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn deliveries(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(source): Path<String>,
    Query(p): Query<DeliveriesParams>,
) -> Result<Json<Value>, ApiError> {
    let since = since_of(&state, &source, p.since.as_deref())?;
    let limit = p.limit.unwrap_or(100).clamp(1, MAX_PAGES * PER_PAGE);
    let seen = state.github.deliveries(&state.store, &state.live, &source, since, limit).await?;
    let only_failed = p.failed.unwrap_or(false);
    let items: Vec<Value> = seen
        .iter()
        .filter(|(d, _)| !only_failed || !d.succeeded())
        .map(|(d, verdict)| {
            json!({
                "id": d.id, "guid": d.guid, "delivered_at": d.delivered_at, "event": d.event, "action": d.action,
                "status_code": d.status_code, "status": d.status, "redelivery": d.redelivery,
                "stored": *verdict == Verdict::Stored, "hookgate": verdict,
            })
        })
        .collect();
    let missing = seen
        .iter()
        .filter(|(_, v)| *v == Verdict::Missing)
        .map(|(d, _)| &d.guid)
        .collect::<std::collections::HashSet<_>>();
    Ok(Json(json!({ "source": source, "missing": missing.len(), "items": items })))
}

#[derive(Deserialize)]
pub(super) struct RecoverParams {
    since: Option<String>,
}

pub(super) async fn recover(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(source): Path<String>,
    Query(p): Query<RecoverParams>,
) -> Result<Json<Value>, ApiError> {
    let since = p.since.as_deref().map(|t| instant("since", t, now_ms())).transpose()?;
    let report = state.github.recover(&state.store, &state.live, &source, since).await?;
    tracing::info!(
        source = %source, listed = report.listed, failed = report.failed, redelivered = report.redeliveries.len(),
        "GitHub recovery round run by an operator"
    );
    Ok(Json(json!({ "source": source, "report": report })))
}
