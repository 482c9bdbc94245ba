//! `POST /hooks/{source}`: limit, verify, route, commit once, answer — nothing else on the request path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{AppState, ClientAddr};
use crate::error::ApiError;
use crate::metrics::{REQUESTS_TOTAL, REQUEST_DURATION};
use crate::route::context_for_request;
use crate::store::{new_id, now_ms, Insert, NewDelivery};
use crate::verify::Inbound;

pub async fn receive(
    State(state): State<AppState>,
    Path(source): Path<String>,
    RawQuery(query): RawQuery,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let live = state.live.current();
    let source = live.config.source(&source);
    // Label only configured sources: a scanner probing random names must not grow the metric set.
    let label = source.map_or_else(|| "unknown".to_string(), |s| s.name.clone());
    let result = handle(&state, &live, source, query.as_deref(), &headers, body).await;
    let outcome = match &result {
        Ok(Accepted::Stored { .. }) => "accepted",
        Ok(Accepted::Duplicate { .. }) => "duplicate",
        Err(e) => e.code(),
    };
    metrics::counter!(REQUESTS_TOTAL, "source" => label.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_DURATION, "source" => label.clone()).record(started.elapsed().as_secs_f64());
    // Client addresses are personal data: logged only when the operator asked for them.
    let client = client.filter(|_| live.config.server.log_client_ip).map(|Extension(ClientAddr(a))| a.ip());
    let (message, server_error) = match &result {
        Ok(_) => ("webhook", false),
        Err(e) => match e.status().is_server_error() {
            true => ("webhook not accepted", true),
            false => ("webhook refused", false),
        },
    };
    match (client, server_error) {
        (Some(ip), true) => tracing::warn!(source = %label, outcome, client_ip = %ip, "{message}"),
        (Some(ip), false) => tracing::info!(source = %label, outcome, client_ip = %ip, "{message}"),
        (None, true) => tracing::warn!(source = %label, outcome, "{message}"),
        (None, false) => tracing::info!(source = %label, outcome, "{message}"),
    }
    match result {
        Ok(accepted) => accepted.into_response(),
        Err(e) => e.into_response(),
    }
}

enum Accepted {
    Stored { id: String, delivery: String, event: String, jobs: usize },
    Duplicate { id: String },
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        match self {
            Accepted::Stored { id, delivery, event, jobs } => (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "id": id, "delivery": delivery, "event": event, "jobs": jobs })),
            )
                .into_response(),
            Accepted::Duplicate { id } => {
                (StatusCode::OK, Json(serde_json::json!({ "id": id, "duplicate": true }))).into_response()
            }
        }
    }
}

async fn handle(
    state: &AppState,
    live: &crate::live::Live,
    source: Option<&crate::config::Source>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let source = source.filter(|s| s.enabled).ok_or(ApiError::NotFound)?;

    if let Some(limiter) = live.limiters.get(&source.name) {
        if let Err(not_until) = limiter.check() {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return Err(ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil() as u64 });
        }
    }

    let body = read_body(body, headers, source.max_body, live.config.server.read_timeout).await?;
    let received_at = now_ms();
    let verified = source.verifier.verify(&Inbound { headers, body: &body, query, now_ms: received_at })?;

    let id = new_id();
    let event = verified.event.unwrap_or_else(|| "unknown".to_string());
    // Without a provider delivery id nothing can be deduplicated; our own id keeps rows unique.
    let delivery = verified.delivery.unwrap_or_else(|| id.clone());
    // One copy of the headers: the routing context shares it, then the stored row takes it back.
    let header_list = Arc::new(header_pairs(headers));
    let ctx = context_for_request(&source.name, &event, &delivery, &id, header_list.clone(), &body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let jobs = live.routes.jobs_for(&ctx, received_at);
    drop(ctx);
    let header_list = Arc::try_unwrap(header_list).unwrap_or_else(|shared| (*shared).clone());

    let stored = state
        .store
        .insert_delivery(
            NewDelivery {
                id: id.clone(),
                source: source.name.clone(),
                event: event.clone(),
                delivery: delivery.clone(),
                received_at,
                headers: header_list,
                body,
            },
            jobs,
        )
        .await?;
    match stored {
        Insert::Stored { id, jobs } => {
            if jobs > 0 {
                state.wake.notify_one();
            }
            Ok(Accepted::Stored { id, delivery, event, jobs })
        }
        Insert::Duplicate { id } => Ok(Accepted::Duplicate { id }),
    }
}

/// Read the body, refusing before reading past `limit` and cutting off clients slower than `timeout`.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::PayloadTooLarge { limit }),
        Ok(Err(_)) => Err(ApiError::BadRequest("the request body could not be read".into())),
    }
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}
