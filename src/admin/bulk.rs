//! Bulk operator actions: retry or cancel jobs, and replay deliveries, chosen by a JSON filter, each acting once
//! per `Idempotency-Key`.
//!
//! `POST /api/v1/jobs/retry` and `/jobs/cancel` take `{"route", "status", "since", "until", "all"}`;
//! `POST /api/v1/deliveries/replay` takes `{"source", "event", "since", "until", "all"}`. `since` and `until` are
//! RFC 3339 times or durations meaning "that long ago" (`"1h"`); `since` is inclusive, `until` exclusive. Jobs
//! compare them with `updated_at` (when the job last changed state: for a dead, succeeded or cancelled job,
//! when it ended), deliveries with `received_at`. A filter naming nothing must say `"all": true`. Retry takes
//! `dead` jobs unless `status` asks for `cancelled` or `succeeded`; cancel takes queued jobs only (running ones
//! are left to finish). One request acts on at most [`BULK_LIMIT`] jobs or deliveries, oldest first, and says
//! `"more": true` when others matched. The answer is `{"count", "more", "repeat", "idempotency_key"}` (a
//! replay adds `"jobs"`, created or merged); `"repeat": true` means the key was used before for this same
//! request, whose stored answer this is, and nothing was done now. The same key with another operation or
//! filter is refused with 422. Keys are remembered for 24 hours.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::AdminAuth;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{
    now_ms, BulkAction, BulkAnswer, BulkJobs, BulkOutcome, BulkReplay, DeliveryFilter, IdempotencyKey, JobStatus,
    Millis, BULK_LIMIT,
};
use crate::template::EventContext;

/// The longest `Idempotency-Key` taken.
const MAX_KEY_LEN: usize = 200;

/// Deliveries (with their bodies) read at a time while a replay is planned.
const REPLAY_PAGE: usize = 100;

/// The filter of `POST /api/v1/jobs/retry|cancel`, as sent (its fingerprint is taken from this form).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct JobsFilter {
    route: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    all: bool,
}

/// The filter of `POST /api/v1/deliveries/replay`, as sent.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesFilter {
    source: Option<String>,
    event: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    all: bool,
}

pub(super) async fn retry_jobs(
    _auth: AdminAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    bulk_jobs(&state, BulkAction::Retry, &headers, &body).await
}

pub(super) async fn cancel_jobs(
    _auth: AdminAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    bulk_jobs(&state, BulkAction::Cancel, &headers, &body).await
}

async fn bulk_jobs(
    state: &AppState,
    action: BulkAction,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let filter: JobsFilter = parse_filter(body)?;
    let key = idempotency_key(headers)?;
    let asked = filter.status.as_deref().map(parse_status).transpose()?;
    let status = action.target(asked).map_err(ApiError::BadRequest)?;
    let (since, until) = window(filter.since.as_deref(), filter.until.as_deref(), now)?;
    let narrowed = filter.route.is_some() || filter.status.is_some() || since.is_some() || until.is_some();
    if !narrowed && !filter.all {
        return Err(ApiError::BadRequest(
            "the filter names no route, status, since or until: send {\"all\": true} to act on every job".into(),
        ));
    }
    let name = match action {
        BulkAction::Retry => "jobs.retry",
        BulkAction::Cancel => "jobs.cancel",
    };
    let op = BulkJobs {
        action,
        status,
        route: filter.route.clone(),
        since,
        until,
        limit: BULK_LIMIT,
        now,
        key: key.clone().map(|key| IdempotencyKey { key, fingerprint: fingerprint(name, &filter) }),
    };
    let (outcome, repeat) = settle(state.store.bulk_jobs(op).await?)?;
    if action == BulkAction::Retry && !repeat && outcome.count > 0 {
        state.wake.notify_one();
    }
    tracing::info!(operation = name, count = outcome.count, more = outcome.more, repeat, "bulk action by an operator");
    Ok(Json(json!({ "count": outcome.count, "more": outcome.more, "repeat": repeat, "idempotency_key": key })))
}

pub(super) async fn replay_deliveries(
    _auth: AdminAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let filter: DeliveriesFilter = parse_filter(&body)?;
    let key = idempotency_key(&headers)?;
    let (since, until) = window(filter.since.as_deref(), filter.until.as_deref(), now)?;
    let narrowed = filter.source.is_some() || filter.event.is_some() || since.is_some() || until.is_some();
    if !narrowed && !filter.all {
        return Err(ApiError::BadRequest(
            "the filter names no source, event, since or until: send {\"all\": true} to replay every delivery".into(),
        ));
    }
    let idempotency =
        key.clone().map(|key| IdempotencyKey { key, fingerprint: fingerprint("deliveries.replay", &filter) });
    // A repeat is answered before any planning; the write below decides for requests that race.
    let earlier = match &idempotency {
        Some(k) => state.store.idempotent_answer(k, now).await?,
        None => None,
    };
    let answer = match earlier {
        Some(answer) => answer,
        None => {
            let wanted = DeliveryFilter { source: filter.source.clone(), event: filter.event.clone(), since, until };
            let (plan, more) = plan_replay(&state, &wanted, now).await?;
            state.store.replay_deliveries(BulkReplay { plan, more, now, key: idempotency }).await?
        }
    };
    let (outcome, repeat) = settle(answer)?;
    if !repeat && outcome.jobs > 0 {
        state.wake.notify_one();
    }
    tracing::info!(
        operation = "deliveries.replay",
        count = outcome.count,
        jobs = outcome.jobs,
        more = outcome.more,
        repeat,
        "bulk action by an operator"
    );
    Ok(Json(json!({
        "count": outcome.count, "jobs": outcome.jobs, "more": outcome.more, "repeat": repeat, "idempotency_key": key,
    })))
}

/// Route the matching deliveries again with the current routes, oldest first, at most [`BULK_LIMIT`]; true
/// when more matched. Bodies are read a page at a time and dropped once routed.
async fn plan_replay(
    state: &AppState,
    filter: &DeliveryFilter,
    now: Millis,
) -> Result<(Vec<(String, Vec<crate::store::NewJob>)>, bool), ApiError> {
    let live = state.live.current();
    let mut plan = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.store.find_deliveries(filter, after.as_deref(), REPLAY_PAGE).await?;
        let full = page.len() == REPLAY_PAGE;
        after = page.last().map(|d| d.id.clone());
        for delivery in page {
            if plan.len() == BULK_LIMIT {
                return Ok((plan, true));
            }
            let jobs = live.routes.jobs_for(&EventContext::from_stored(&delivery), now);
            plan.push((delivery.id, jobs));
        }
        if !full {
            return Ok((plan, false));
        }
    }
}

/// The outcome and whether it is a repeat; a key reused for another request is refused.
fn settle(answer: BulkAnswer) -> Result<(BulkOutcome, bool), ApiError> {
    match answer {
        BulkAnswer::Done(outcome) => Ok((outcome, false)),
        BulkAnswer::Repeat(outcome) => Ok((outcome, true)),
        BulkAnswer::KeyReused => Err(ApiError::IdempotencyKeyReused),
    }
}

/// A JSON filter; an empty body is the empty filter.
fn parse_filter<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the filter is not valid: {e}")))
}

pub(super) fn parse_status(text: &str) -> Result<JobStatus, ApiError> {
    JobStatus::parse(text).ok_or_else(|| {
        let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::BadRequest(format!("status must be one of {}, not `{text}`", known.join(", ")))
    })
}

/// The optional `Idempotency-Key` header: one, of 1 to 200 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::BadRequest("send one Idempotency-Key header, not several".into()));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// What a request asks, as sent: the same operation and filter give the same fingerprint whatever the JSON's
/// spacing or key order, and a relative `since` stays the same text when the request is retried later.
fn fingerprint<T: Serialize>(operation: &str, filter: &T) -> String {
    let canonical = serde_json::to_string(filter).unwrap_or_default();
    hex::encode(Sha256::digest(format!("{operation}\n{canonical}").as_bytes()))
}

/// `since` and `until` as times; `since` must come before `until`.
pub(super) fn window(
    since: Option<&str>,
    until: Option<&str>,
    now: Millis,
) -> Result<(Option<Millis>, Option<Millis>), ApiError> {
    let since = since.map(|t| instant("since", t, now)).transpose()?;
    let until = until.map(|t| instant("until", t, now)).transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(ApiError::BadRequest("since must be before until".into()));
        }
    }
    Ok((since, until))
}

/// An RFC 3339 time (`2026-12-01T10:00:00Z`, `…+01:00`), or a duration meaning that long before `now` (`90m`).
pub(super) fn instant(field: &str, text: &str, now: Millis) -> Result<Millis, ApiError> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now.saturating_sub(ago.as_millis().min(i64::MAX as u128) as i64));
    }
    rfc3339(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{field} must be an RFC 3339 time like \"2026-12-01T10:00:00Z\" or a duration like \"1h\", not `{text}`"
        ))
    })
}

/// Unix milliseconds of an RFC 3339 time with `Z` or a numeric offset.
fn rfc3339(text: &str) -> Option<Millis> {
    if !text.is_ascii() {
        return None;
    }
    let (utc, offset_ms) = match text.len().checked_sub(6).map(|at| text.split_at(at)) {
        Some((local, offset)) if offset.starts_with(['+', '-']) && offset.as_bytes()[3] == b':' => {
            let hours: i64 = offset[1..3].parse().ok()?;
            let minutes: i64 = offset[4..6].parse().ok()?;
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            (format!("{local}Z"), sign * (hours * 60 + minutes) * 60_000)
        }
        _ => (text.to_ascii_uppercase(), 0),
    };
    let at = humantime::parse_rfc3339(&utc).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(ms - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_any_offset_or_durations_ago() {
        let now = 1_800_000_000_000;
        assert_eq!(instant("since", "1h", now).unwrap(), now - 3_600_000);
        assert_eq!(instant("since", "90m", now).unwrap(), now - 5_400_000);
        let utc = instant("since", "2026-12-01T10:00:00Z", now).unwrap();
        assert_eq!(utc, 1_796_119_200_000);
        assert_eq!(instant("since", "2026-12-01T11:00:00+01:00", now).unwrap(), utc);
        assert_eq!(instant("since", "2026-12-01T08:30:00-01:30", now).unwrap(), utc);
        assert_eq!(instant("since", "2026-12-01T10:00:00.250Z", now).unwrap(), utc + 250);
        for bad in [
            "yesterday",
            "2026-12-01T10:00:00éé",
            "2026-12-01",
            "2026-12-01T10:00:00",
            "2026-12-01T10:00:00+1:00",
            "",
            "-1h",
        ] {
            let Err(ApiError::BadRequest(message)) = instant("since", bad, now) else { panic!("{bad} accepted") };
            assert!(message.starts_with("since must be an RFC 3339 time"), "{message}");
        }
        assert!(window(Some("1h"), Some("2h"), now).is_err(), "since after until");
        assert_eq!(window(Some("2h"), Some("1h"), now).unwrap(), (Some(now - 7_200_000), Some(now - 3_600_000)));
    }

    #[test]
    fn the_key_is_one_header_of_printable_ascii_up_to_200_characters() {
        let with = |values: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("idempotency-key", axum::http::HeaderValue::from_bytes(v).unwrap());
            }
            idempotency_key(&headers)
        };
        assert_eq!(with(&[]).unwrap(), None);
        assert_eq!(with(&[b"retry dead 2026-12-01"]).unwrap().as_deref(), Some("retry dead 2026-12-01"));
        assert_eq!(with(&[&[b'k'; 200]]).unwrap().map(|k| k.len()), Some(200));
        for bad in [&[b'k'; 201][..], b"", "clé".as_bytes(), b"tab\there"] {
            assert!(matches!(with(&[bad]), Err(ApiError::BadRequest(_))), "{bad:?}");
        }
        assert!(matches!(with(&[b"a", b"b"]), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn the_fingerprint_ignores_spacing_and_key_order_but_not_the_operation_or_filter() {
        let a: JobsFilter = parse_filter(br#"{"route": "deploy", "since": "1h"}"#).unwrap();
        let b: JobsFilter = parse_filter(br#"{"since":"1h","route":"deploy"}"#).unwrap();
        let c: JobsFilter = parse_filter(br#"{"since":"2h","route":"deploy"}"#).unwrap();
        assert_eq!(fingerprint("jobs.retry", &a), fingerprint("jobs.retry", &b));
        assert_ne!(fingerprint("jobs.retry", &a), fingerprint("jobs.cancel", &a));
        assert_ne!(fingerprint("jobs.retry", &a), fingerprint("jobs.retry", &c));
        let unknown = parse_filter::<JobsFilter>(br#"{"rout": "deploy"}"#);
        assert!(matches!(unknown, Err(ApiError::BadRequest(m)) if m.contains("unknown field `rout`")));
        assert!(parse_filter::<JobsFilter>(b" ").unwrap().route.is_none());
    }
}
