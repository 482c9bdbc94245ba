//! admin: the bearer-token API over the store — deliveries, jobs, replay and retry (one, or in bulk by filter),
//! the shared route and source controls ([`control`]) and the dashboard's statistics ([`stats`]). Off (404)
//! without a token.

mod auth;
mod bulk;
mod control;
mod github;
pub mod search;
mod stats;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::edge::{is_credential_header, REDACTED};
use crate::error::ApiError;
use crate::guard::ClientAddr;
use crate::state::AppState;
use crate::store::{now_ms, Delivery, DeliverySummary, JobDetail, JobQuery, JobSummary, Millis};
use crate::template::EventContext;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/deliveries", get(search::list_deliveries))
        .route("/api/v1/deliveries/{id}", get(show_delivery))
        .route("/api/v1/deliveries/{id}/replay", post(replay_delivery))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}/retry", post(retry_job))
        .route("/api/v1/jobs/retry", post(bulk::retry_jobs))
        .route("/api/v1/jobs/cancel", post(bulk::cancel_jobs))
        .route("/api/v1/deliveries/replay", post(bulk::replay_deliveries))
        .route("/api/v1/routes", get(control::list_routes))
        .route("/api/v1/routes/{name}/pause", post(control::pause_route))
        .route("/api/v1/routes/{name}/resume", post(control::resume_route))
        .route("/api/v1/routes/{name}/enable", post(control::resume_route))
        .route("/api/v1/sources", get(control::list_sources))
        .route("/api/v1/sources/{name}/pause", post(control::pause_source))
        .route("/api/v1/sources/{name}/resume", post(control::resume_source))
        .route("/api/v1/stats", get(stats::show_stats))
        .route("/api/v1/sources/{name}/github/deliveries", get(github::deliveries))
        .route("/api/v1/sources/{name}/github/recover", post(github::recover))
        // One guard per application (this router is built once per app), so tests never share one.
        .layer(Extension(auth::Guard::new()))
}

/// Proof that the request carries the admin token. 404 when no token is configured (the API does not
/// exist), 401 without the right bearer token, 429 while the client's address has used up its quota of
/// failed attempts (then the token is not even looked at).
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let live = state.live.current();
        let Some(expected) = &live.config.admin_token else {
            return Err(ApiError::NotFound);
        };
        let client = parts.extensions.get::<ClientAddr>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let Some(guard) = parts.extensions.get::<Arc<auth::Guard>>().cloned() else {
            // A route added outside `router()` would go unlimited: refuse loudly instead.
            tracing::error!(path = %parts.uri.path(), "admin route without the authentication guard");
            return Err(ApiError::internal("admin route without the authentication guard"));
        };
        let rate = &live.config.admin_auth_failure_limit;
        if let Some(wait) = guard.blocked(client, rate) {
            tracing::debug!(path = %parts.uri.path(), "admin request refused: too many failed authentications");
            return Err(ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil() as u64 });
        }
        let presented = parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        let Err(failure) = auth::check(presented, expected.expose()) else {
            return Ok(AdminAuth);
        };
        let blocked = guard.charge(client, rate);
        // Client addresses are personal data: logged only when the operator asked for them.
        let path = parts.uri.path();
        let reason = failure.reason();
        let limited = blocked.is_some();
        match live.config.server.log_client_ip {
            true => tracing::warn!(path = %path, reason, limited, client_ip = %client, "admin authentication failed"),
            false => tracing::warn!(path = %path, reason, limited, "admin authentication failed"),
        }
        Err(match blocked {
            Some(wait) => ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil() as u64 },
            None => ApiError::Unauthorized("a valid admin bearer token is required"),
        })
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(ms: Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Rows stored before headers were redacted at write time are redacted again when shown.
fn redacted_headers(headers: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in headers {
        let value = if is_credential_header(k) { REDACTED.to_string() } else { v.clone() };
        map.insert(k.clone(), Value::String(value));
    }
    Value::Object(map)
}

fn body_json(d: &Delivery) -> Value {
    match serde_json::from_slice::<Value>(&d.body) {
        Ok(v) => v,
        Err(_) if d.body.is_empty() => Value::Null,
        Err(_) => Value::String(String::from_utf8_lossy(&d.body).into_owned()),
    }
}

fn delivery_summary(d: &DeliverySummary) -> Value {
    json!({
        "id": d.id, "source": d.source, "event": d.event, "delivery": d.delivery,
        "received_at": timestamp(d.received_at), "jobs": d.jobs,
    })
}

fn job_summary(j: &JobSummary) -> Value {
    json!({
        "id": j.id, "delivery_id": j.delivery_id, "route": j.route, "status": j.status,
        "attempts": j.attempts, "last_error": j.last_error,
        "next_attempt_at": j.next_attempt_at.map(timestamp),
        "created_at": timestamp(j.created_at), "updated_at": timestamp(j.updated_at), "merged": j.merged,
        "source": j.source, "event": j.event,
    })
}

fn job_detail(j: &JobDetail) -> Value {
    let mut v = job_summary(&j.job);
    v["attempt_log"] = j
        .attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt, "started_at": timestamp(a.started_at), "finished_at": timestamp(a.finished_at),
                "ok": a.ok, "error": a.error, "status_code": a.status_code, "output": a.output,
            })
        })
        .collect();
    v
}

async fn show_delivery(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let detail = state.store.get_delivery(&id).await?.ok_or(ApiError::NotFound)?;
    let d = &detail.delivery;
    Ok(Json(json!({
        "id": d.id, "source": d.source, "event": d.event, "delivery": d.delivery,
        "received_at": timestamp(d.received_at),
        "headers": redacted_headers(&d.headers),
        "body": body_json(d),
        "jobs": detail.jobs.iter().map(job_detail).collect::<Vec<_>>(),
    })))
}

async fn replay_delivery(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = state.store.get_delivery(&id).await?.ok_or(ApiError::NotFound)?;
    let live = state.live.current();
    let ctx = EventContext::from_stored(&detail.delivery);
    let jobs = live.routes.jobs_for(&ctx, now_ms());
    let n = if jobs.is_empty() { 0 } else { state.store.insert_jobs(&id, jobs).await? };
    if n > 0 {
        state.wake.notify_one();
    }
    tracing::info!(delivery = %id, jobs = n, "delivery replayed");
    Ok((StatusCode::ACCEPTED, Json(json!({ "jobs": n }))).into_response())
}

#[derive(Deserialize)]
struct JobsParams {
    status: Option<String>,
    route: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_jobs(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Query(p): Query<JobsParams>,
) -> Result<Json<Value>, ApiError> {
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(bulk::parse_status(s)?),
    };
    let (since, until) = bulk::window(p.since.as_deref(), p.until.as_deref(), now_ms())?;
    let page = state
        .store
        .list_jobs(JobQuery {
            status,
            route: p.route.filter(|r| !r.is_empty()),
            since,
            until,
            limit: p.limit.unwrap_or(50).clamp(1, 1000),
            before: p.cursor.filter(|c| !c.is_empty()),
        })
        .await?;
    let items: Vec<Value> = page.items.iter().map(job_summary).collect();
    Ok(Json(json!({ "items": items, "next": page.next })))
}

async fn retry_job(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !state.store.retry_job(&id, now_ms()).await? {
        return Err(ApiError::NotFound);
    }
    state.wake.notify_one();
    tracing::info!(job = %id, "job queued again by an operator");
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "status": "queued" }))).into_response())
}
