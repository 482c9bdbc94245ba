//! The operator's controls over the state every instance shares: routes (list, pause, resume) and sources
//! (list, pause, resume). Changes go to the store, so every instance acts on them within a second.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{timestamp, AdminAuth};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::control::{Circuit, Pause, RouteChange, RouteState};
use crate::store::now_ms;

/// Who asked and why, as the request's optional JSON body says (`{"reason": "...", "by": "..."}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    by: Option<String>,
}

const MAX_REASON: usize = 500;
const MAX_BY: usize = 100;

/// The body may be empty; otherwise it is a [`Request`] with a reason and a name of reasonable length.
fn request(body: &Bytes) -> Result<Request, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Request::default());
    }
    let request: Request =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body must be JSON: {e}")))?;
    if request.reason.chars().count() > MAX_REASON {
        return Err(ApiError::BadRequest(format!("reason is longer than {MAX_REASON} characters")));
    }
    if request.by.as_ref().is_some_and(|b| b.chars().count() > MAX_BY) {
        return Err(ApiError::BadRequest(format!("by is longer than {MAX_BY} characters")));
    }
    Ok(request)
}

/// Who changed something when the request does not say.
const DEFAULT_BY: &str = "admin API";

fn pause_of(request: Request) -> Pause {
    Pause { by: request.by.unwrap_or_else(|| DEFAULT_BY.to_string()), reason: request.reason, at: now_ms() }
}

fn pause_json(p: &Option<Pause>) -> Value {
    match p {
        Some(p) => json!({ "by": p.by, "reason": p.reason, "at": timestamp(p.at) }),
        None => Value::Null,
    }
}

/// A route's shared state as the API shows it.
fn route_state_json(s: &RouteState) -> Value {
    let (open_until, probe_until) = match s.circuit {
        Circuit::Open { until } => (Some(timestamp(until)), None),
        Circuit::HalfOpen { probe_until } => (None, probe_until.map(timestamp)),
        Circuit::Closed => (None, None),
    };
    json!({
        "paused": pause_json(&s.paused),
        "stopped": s.stopped.as_ref().map(|t| json!({ "status": t.status, "reason": t.reason, "at": timestamp(t.at) })),
        "circuit": s.circuit.name(),
        "circuit_open_until": open_until,
        "probe_until": probe_until,
        "failures": s.failures.len(),
        // The older names of the 410 stop, kept for scripts that read them.
        "disabled_reason": s.stopped.as_ref().map(|t| t.reason.clone()),
        "disabled_at": s.stopped.as_ref().map(|t| timestamp(t.at)),
    })
}

/// Every configured route with its configuration, the state every instance shares and its last error (from the
/// dashboard statistics), read from the store.
pub async fn list_routes(_auth: AdminAuth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let shared = state.store.control_state().await?;
    let errors = state.store.last_errors().await?;
    let live = state.live.current();
    let items: Vec<Value> = live
        .routes
        .routes()
        .map(|r| {
            let s = shared.routes.iter().find(|s| s.route == r.name()).cloned();
            let s = s.unwrap_or_else(|| RouteState::new(r.name()));
            let mut item = json!({
                "name": r.name(), "source": r.config.source, "enabled": r.config.enabled,
                "schedule": r.config.schedule.map(|d| humantime::format_duration(d).to_string()),
                "concurrency": r.config.concurrency,
                "circuit_breaker": r.config.circuit_breaker.is_some(),
            });
            merge(&mut item, route_state_json(&s));
            let error = errors.iter().find(|(route, _, _)| route == r.name());
            item["last_error"] =
                error.map_or(Value::Null, |(_, message, at)| json!({ "message": message, "at": timestamp(*at) }));
            item
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

async fn change_route(state: &AppState, name: &str, change: RouteChange, by: &str) -> Result<Json<Value>, ApiError> {
    let live = state.live.current();
    live.routes.get(name).ok_or(ApiError::NotFound)?;
    let (before, after) = state.store.change_route(name, change, now_ms()).await?;
    let mut answer = json!({ "name": name });
    merge(&mut answer, route_state_json(&after));
    let transitions = state.live.shared.route_changed(&before, after);
    state.events.route_changed(name, &transitions, by).await;
    // A resumed route has jobs waiting.
    state.wake.notify_one();
    Ok(Json(answer))
}

/// Hold a route's jobs in the queue, on every instance, until it is resumed.
pub async fn pause_route(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let pause = pause_of(request(&body)?);
    let by = pause.by.clone();
    change_route(&state, &name, RouteChange::Pause(pause), &by).await
}

/// Let a route run again: clears a pause, a peer's 410 stop and an open circuit. `/enable` is the older name.
pub async fn resume_route(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request = request(&body)?;
    let by = request.by.unwrap_or_else(|| DEFAULT_BY.to_string());
    change_route(&state, &name, RouteChange::Resume, &by).await
}

/// Every configured source and whether it is paused.
pub async fn list_sources(_auth: AdminAuth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let shared = state.store.control_state().await?;
    let live = state.live.current();
    let items: Vec<Value> = live
        .config
        .sources
        .iter()
        .map(|s| {
            let paused = shared.sources.iter().find(|p| p.source == s.name).and_then(|p| p.paused.clone());
            json!({ "name": s.name, "provider": s.verifier.scheme.name(), "enabled": s.enabled, "paused": pause_json(&paused) })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn set_source(state: &AppState, name: &str, pause: Option<Pause>) -> Result<Json<Value>, ApiError> {
    let live = state.live.current();
    live.config.source(name).ok_or(ApiError::NotFound)?;
    state.store.pause_source(name, pause.clone(), now_ms()).await?;
    match &pause {
        Some(p) => tracing::warn!(source = %name, by = %p.by, reason = %p.reason, "source paused"),
        None => tracing::info!(source = %name, "source resumed"),
    }
    state.live.shared.source_changed(name, pause.clone());
    Ok(Json(json!({ "name": name, "paused": pause_json(&pause) })))
}

/// Answer the source's webhooks with 503 and `Retry-After`, storing nothing, on every instance.
pub async fn pause_source(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let pause = pause_of(request(&body)?);
    set_source(&state, &name, Some(pause)).await
}

pub async fn resume_source(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    request(&body)?;
    set_source(&state, &name, None).await
}
