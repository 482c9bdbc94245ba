//! `POST /hooks/{source}`: limit, verify, route, commit once, answer — nothing else on the request path.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::error::{ApiError, SourceLabel};
use crate::guard::{BodyBytes, ClientAddr};
use crate::metrics::{REQUESTS_TOTAL, REQUEST_DURATION};
use crate::state::AppState;
use crate::store::{new_id, now_ms, Delivery, Insert};
use crate::template::context_for_request;
use crate::verify::{Inbound, Scheme, VerifyError};

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
    let client_ip = client.as_ref().map(|Extension(ClientAddr(a))| a.ip());
    let result = handle(&state, &live, source, client_ip, query.as_deref(), &headers, body).await;
    let outcome = match &result {
        Ok(Accepted::Stored { .. }) => "accepted",
        Ok(Accepted::Duplicate { .. }) => "duplicate",
        Err(e) => e.code(),
    };
    metrics::counter!(REQUESTS_TOTAL, "source" => label.clone(), "outcome" => outcome).increment(1);
    // Configured sources only, as for the metric labels: an unknown name must not grow the stats table.
    if let Some(source) = source {
        match &result {
            Ok(Accepted::Stored { .. }) => state.stats.accepted(&source.name),
            Ok(Accepted::Duplicate { .. }) => state.stats.duplicate(&source.name),
            Err(e) => state.stats.rejected(&source.name, e.status().as_u16()),
        }
    }
    metrics::histogram!(REQUEST_DURATION, "source" => label.clone()).record(started.elapsed().as_secs_f64());
    // Client addresses are personal data: logged only when the operator asked for them.
    let client = client.filter(|_| live.config.server.log_client_ip).map(|Extension(ClientAddr(a))| a.ip());
    let mut response = match result {
        Ok(accepted) => {
            log_request(&label, outcome, client, "webhook");
            accepted.into_response()
        }
        // A server error is logged once, with its cause, by `error::log_server_errors`.
        Err(e) if e.status().is_server_error() => e.into_response(),
        Err(e) => {
            log_request(&label, outcome, client, "webhook refused");
            e.into_response()
        }
    };
    response.extensions_mut().insert(SourceLabel(label));
    response
}

fn log_request(source: &str, outcome: &str, client: Option<std::net::IpAddr>, message: &str) {
    match client {
        Some(ip) => tracing::info!(source, outcome, client_ip = %ip, "{message}"),
        None => tracing::info!(source, outcome, "{message}"),
    }
}

/// What a paused source tells senders to wait before retrying (GitHub and most providers retry only on
/// their own schedule; those that honour `Retry-After` come back in a minute).
const PAUSED_RETRY_AFTER_SECS: u64 = 60;

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
    client: Option<IpAddr>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let source = source.filter(|s| s.enabled).ok_or(ApiError::NotFound)?;
    // Paused by an operator (on any instance): refused before a byte of the body is read.
    if state.live.shared.source_paused(&source.name).is_some() {
        return Err(ApiError::SourcePaused { retry_after_secs: PAUSED_RETRY_AFTER_SECS });
    }
    let guards = &state.guards;

    // An address that keeps failing verification is refused before its body is read.
    if let Some(wait) = client.and_then(|ip| guards.unverified.blocked_for(ip)) {
        return Err(ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil() as u64 });
    }

    // Held until the answer: the body stays in memory (routing, the store's queue) until then.
    let mut held = guards.body_budget.start();
    let body = read_body(body, headers, source.max_body, live.config.server.read_timeout, &mut held).await?;
    let received_at = now_ms();
    let verified = match source.verifier.verify(&Inbound { headers, body: &body, query, now_ms: received_at }) {
        Ok(verified) => verified,
        Err(e) => {
            let blocked = client.filter(|_| is_forgery(&e)).and_then(|ip| guards.unverified.failed(ip));
            return Err(match blocked {
                Some(wait) => ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil() as u64 },
                None => e.into(),
            });
        }
    };

    // The source's own limit counts verified requests only: junk cannot use it up.
    if let Some(limiter) = live.limiters.get(&source.name) {
        if let Err(not_until) = limiter.check() {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return Err(ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil() as u64 });
        }
    }

    let id = new_id();
    let event = verified.event.unwrap_or_else(|| "unknown".to_string());
    // Without a provider delivery id nothing can be deduplicated; our own id keeps rows unique.
    let delivery = verified.delivery.unwrap_or_else(|| id.clone());
    // One copy of the headers: the routing context shares it, then the stored row takes it back.
    let header_list = Arc::new(header_pairs(headers, &source.verifier.scheme));
    let ctx = context_for_request(&source.name, &event, &delivery, &id, header_list.clone(), &body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let jobs = live.routes.jobs_for(&ctx, received_at);
    let earliest = jobs.iter().map(|j| j.run_at).min();
    drop(ctx);
    let header_list = Arc::try_unwrap(header_list).unwrap_or_else(|shared| (*shared).clone());

    let stored = state
        .store
        .insert_delivery(
            Delivery {
                id: id.clone(),
                source: source.name.clone(),
                event: event.clone(),
                delivery: delivery.clone(),
                received_at,
                headers: header_list,
                body,
                replay_key: verified.replay,
            },
            jobs,
        )
        .await?;
    drop(held);
    match stored {
        Insert::Stored { id, jobs } => {
            if jobs > 0 {
                // A keyed job waits out its coalesce window: the worker wakes when it is due, not now.
                state.wake.jobs_due_at(earliest.unwrap_or(received_at), received_at);
            }
            Ok(Accepted::Stored { id, delivery, event, jobs })
        }
        Insert::Duplicate { id } => Ok(Accepted::Duplicate { id }),
    }
}

/// Read the body, refusing before reading past `limit`, cutting off clients slower than `timeout`, and
/// holding every byte kept in memory from the shared budget (503 when it is spent).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
    held: &mut BodyBytes,
) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match tokio::time::timeout(timeout, collect_within(body, limit, declared, held)).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(result) => result,
    }
}

/// The budget is taken in steps of this size, ahead of the bytes that arrive.
const BUDGET_STEP: usize = 64 << 10;

/// Bodies declared at least this large are received into a memory map of their own, which goes back to
/// the system the moment the request ends. From the allocator's heap, a refused 25 MB upload stayed
/// resident after it was freed (about 0.5 MB of every refused upload in a flood, measured).
const MAPPED_BODY: usize = 1 << 20;

/// Collect the body into one buffer, holding from the budget every byte it keeps. With a declared length
/// the buffer is made once at that size (its pages are only backed by memory as bytes arrive, so an
/// untrue promise costs nothing) and the budget is taken as bytes arrive; without one it grows by
/// doubling and the budget is taken for each new capacity before it is allocated.
async fn collect_within(
    mut body: Body,
    limit: usize,
    declared: Option<u64>,
    held: &mut BodyBytes,
) -> Result<Bytes, ApiError> {
    let declared = declared.map(|n| n as usize);
    let mut buffer = BodyBuffer::new(declared)?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::BadRequest("the request body could not be read".into()))?;
        let Ok(chunk) = frame.into_data() else { continue };
        let needed = buffer.len() + chunk.len();
        if needed > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let must_hold = match (declared, buffer.capacity()) {
            (Some(declared), _) => needed.next_multiple_of(BUDGET_STEP).min(declared.max(needed)),
            (None, capacity) if needed > capacity => needed.max(capacity * 2).max(BUDGET_STEP),
            (None, capacity) => capacity,
        };
        if must_hold > held.held() && !held.grow(must_hold - held.held()) {
            return Err(ApiError::Overloaded { retry_after_secs: 1 });
        }
        buffer.extend(&chunk, must_hold)?;
    }
    buffer.freeze()
}

/// Where a body is collected: the heap for small or undeclared bodies, a map of its own for large ones.
enum BodyBuffer {
    Heap(BytesMut),
    Mapped { map: memmap2::MmapMut, len: usize },
}

impl BodyBuffer {
    fn new(declared: Option<usize>) -> Result<Self, ApiError> {
        match declared {
            Some(n) if n >= MAPPED_BODY => match memmap2::MmapMut::map_anon(n) {
                Ok(map) => Ok(BodyBuffer::Mapped { map, len: 0 }),
                Err(e) => {
                    tracing::warn!(error = %e, bytes = n, "cannot map memory for a request body");
                    Err(ApiError::Overloaded { retry_after_secs: 1 })
                }
            },
            Some(n) => Ok(BodyBuffer::Heap(BytesMut::with_capacity(n))),
            None => Ok(BodyBuffer::Heap(BytesMut::new())),
        }
    }

    fn len(&self) -> usize {
        match self {
            BodyBuffer::Heap(buffer) => buffer.len(),
            BodyBuffer::Mapped { len, .. } => *len,
        }
    }

    fn capacity(&self) -> usize {
        match self {
            BodyBuffer::Heap(buffer) => buffer.capacity(),
            BodyBuffer::Mapped { map, .. } => map.len(),
        }
    }

    /// Append `chunk`, growing a heap buffer to `capacity` first if it must grow.
    fn extend(&mut self, chunk: &[u8], capacity: usize) -> Result<(), ApiError> {
        match self {
            BodyBuffer::Heap(buffer) => {
                if buffer.len() + chunk.len() > buffer.capacity() {
                    buffer.reserve(capacity - buffer.len());
                }
                buffer.extend_from_slice(chunk);
            }
            BodyBuffer::Mapped { map, len } => {
                // hyper ends a body at its declared length, so this cannot overflow; refuse rather than panic.
                let target = map
                    .get_mut(*len..*len + chunk.len())
                    .ok_or_else(|| ApiError::BadRequest("the request body is longer than its Content-Length".into()))?;
                target.copy_from_slice(chunk);
                *len += chunk.len();
            }
        }
        Ok(())
    }

    fn freeze(self) -> Result<Bytes, ApiError> {
        match self {
            BodyBuffer::Heap(buffer) => Ok(buffer.freeze()),
            BodyBuffer::Mapped { map, len } => {
                let map =
                    map.make_read_only().map_err(|e| ApiError::internal(format!("cannot seal a mapped body: {e}")))?;
                Ok(Bytes::from_owner(map).slice(..len))
            }
        }
    }
}

/// A request that proved nothing (no signature, a wrong one, a replayed timestamp), as opposed to a
/// verified one whose body was unusable or a source that is off.
fn is_forgery(e: &VerifyError) -> bool {
    matches!(e, VerifyError::MissingSignature | VerifyError::InvalidSignature | VerifyError::StaleTimestamp)
}

/// The request's headers as stored and as templates see them, with every credential replaced by
/// `[redacted]`: what the sender proved itself with never reaches the database, the API or an action.
/// Which headers carry the scheme's credential is the provider table's knowledge, not the edge's.
fn header_pairs(headers: &HeaderMap, scheme: &Scheme) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str();
            let value = match scheme.is_credential(name) || is_credential_header(name) {
                true => REDACTED.to_string(),
                false => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            (name.to_string(), value)
        })
        .collect()
}

/// What a credential header's value is stored as.
pub const REDACTED: &str = "[redacted]";

/// Header names whose values are credentials wherever they appear, whatever the source's provider:
/// `Authorization`, `Proxy-Authorization`, `Cookie`, and every name with a word such as "signature" or
/// "token" in it. A safety net for stored headers of any source; each provider's own credential headers
/// come from the provider table (`Scheme::is_credential`).
pub fn is_credential_header(name: &str) -> bool {
    // Runs for every header of every request: compare in place rather than lower-case a copy.
    let name = name.as_bytes();
    ["signature", "token", "secret", "authorization", "cookie", "hmac", "api-key", "apikey", "password"]
        .iter()
        .any(|word| name.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Keys, Message, Secret, PROVIDERS};

    #[test]
    fn every_providers_credential_is_redacted_even_under_a_name_no_heuristic_knows() {
        // `X-Proof` and `X-Pass` hold no word `is_credential_header` looks for: only the table knows them.
        assert!(!is_credential_header("x-proof") && !is_credential_header("x-pass"));
        let body = br#"{"type":"t","id":"i","event":"e","timestamp":1700000000000}"#;
        let msg = Message { id: "msg_1", event: Some("push"), timestamp_ms: 1_700_000_000_000, body };
        for provider in PROVIDERS {
            let mut keys = Keys::default();
            for (key, name) in [("signature_header", "X-Proof"), ("header", "X-Pass")] {
                if provider.keys.contains(&key) {
                    keys.set_text(key, name);
                }
            }
            let scheme = Scheme::new(provider, &keys).unwrap();
            let secret = Secret::new(b"whsec_c2VjcmV0LXZhbHVl".to_vec());
            let lines = scheme.sign(&secret, &msg).unwrap();
            let mut headers = HeaderMap::new();
            for (name, value) in &lines {
                headers.append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(value).unwrap(),
                );
            }
            headers.append("x-trace", http::HeaderValue::from_static("kept"));
            let stored = header_pairs(&headers, &scheme);
            for (name, value) in &lines {
                let kept = stored.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
                if scheme.is_credential(name) {
                    assert_eq!(kept, Some(REDACTED), "{}: {name}", provider.name);
                } else {
                    assert_eq!(kept, Some(value.as_str()), "{}: {name}", provider.name);
                }
            }
            assert!(lines.iter().any(|(name, _)| scheme.is_credential(name)), "{}", provider.name);
            assert!(stored.contains(&("x-trace".to_string(), "kept".to_string())));
        }
    }
}
