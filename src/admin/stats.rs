//! `GET /api/v1/stats?since=&until=&bucket=`: the dashboard's time series per configured source and route, from
//! the store's per-minute aggregates, zero-filled and aligned on one list of buckets.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{timestamp, AdminAuth};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::stats::{percentile, Counter, Scope, StatsBucket, StatsQuery};
use crate::store::{now_ms, Millis};

/// The most buckets a window may span: a day of minutes (an answer may hold one more, see [`Buckets::parse`]).
pub const MAX_BUCKETS: i64 = 1_440;

/// About how many buckets an answer has when the request names no `bucket`.
const DEFAULT_BUCKETS: i64 = 60;

const MINUTE_MS: Millis = 60_000;

/// The longest bucket asked for: a year (stats are kept 8 days; this only keeps the arithmetic small).
const MAX_BUCKET_MS: Millis = 366 * 24 * 3_600_000;

/// How much of a refused `bucket` the error repeats.
const ECHO_CHARS: usize = 40;

#[derive(Debug, Default, Deserialize)]
pub(super) struct StatsParams {
    since: Option<String>,
    until: Option<String>,
    bucket: Option<String>,
}

/// The buckets an answer covers: `count` of `bucket_ms` from `start` (`since` rounded down to the bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Buckets {
    start: Millis,
    until: Millis,
    bucket_ms: Millis,
    count: usize,
}

impl Buckets {
    fn parse(p: &StatsParams, now: Millis) -> Result<Self, ApiError> {
        let (since, until) = super::bulk::window(Some(p.since.as_deref().unwrap_or("1h")), p.until.as_deref(), now)?;
        let until = until.unwrap_or(now);
        let since = since.unwrap_or(until - 3_600_000);
        if since < 0 {
            return Err(ApiError::BadRequest("since must not be before 1970".into()));
        }
        if since >= until {
            return Err(ApiError::BadRequest("since must be before until".into()));
        }
        let bucket_ms = match p.bucket.as_deref() {
            Some(text) => bucket(text)?,
            // Rounded up to whole minutes: the store keeps minutes.
            None => (ceil_div(until - since, DEFAULT_BUCKETS * MINUTE_MS) * MINUTE_MS).max(MINUTE_MS),
        };
        // The window asked for is what is limited: `since=1d&bucket=1m` is 1440 buckets, and one more when
        // `since` does not fall on a whole minute (the first bucket then starts before it).
        let asked = ceil_div(until - since, bucket_ms);
        if asked > MAX_BUCKETS {
            return Err(ApiError::BadRequest(format!(
                "{asked} buckets of {}s from since to until; at most {MAX_BUCKETS}: ask for a longer bucket or a shorter window",
                bucket_ms / 1000
            )));
        }
        let start = since.div_euclid(bucket_ms) * bucket_ms;
        let count = ceil_div(until - start, bucket_ms);
        Ok(Buckets { start, until, bucket_ms, count: count as usize })
    }

    /// The position of a bucket the store answered; `None` outside the window (it asked for none such).
    fn index(&self, bucket: Millis) -> Option<usize> {
        let i = (bucket - self.start).checked_div(self.bucket_ms)?;
        usize::try_from(i).ok().filter(|&i| i < self.count)
    }
}

/// `n / d` rounded up, for `n >= 0` and `d > 0` (`i64::div_ceil` is not stable).
fn ceil_div(n: Millis, d: Millis) -> Millis {
    (n + d - 1) / d
}

/// A bucket length: a duration of whole minutes (`60s`, `5m`, `1h`).
fn bucket(text: &str) -> Result<Millis, ApiError> {
    let shown: String = text.chars().take(ECHO_CHARS).collect();
    let refused = || {
        ApiError::BadRequest(format!("bucket must be a whole number of minutes like \"60s\" or \"5m\", not `{shown}`"))
    };
    let duration = humantime::parse_duration(text.trim()).map_err(|_| refused())?;
    let ms = duration.as_millis();
    if ms > MAX_BUCKET_MS as u128 {
        return Err(ApiError::BadRequest(format!("bucket must be at most {} days", MAX_BUCKET_MS / 86_400_000)));
    }
    let ms = ms as Millis;
    if ms == 0 || ms % MINUTE_MS != 0 {
        return Err(refused());
    }
    Ok(ms)
}

pub(super) async fn show_stats(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Query(p): Query<StatsParams>,
) -> Result<Json<Value>, ApiError> {
    let window = Buckets::parse(&p, now_ms())?;
    let query = StatsQuery { since: window.start, until: window.until, bucket_ms: window.bucket_ms };
    let series = state.store.stats(query).await?;
    let mut rows: HashMap<(Scope, &str), Vec<&StatsBucket>> = HashMap::new();
    for b in &series.buckets {
        rows.entry((b.scope, b.name.as_str())).or_default().push(b);
    }
    let live = state.live.current();
    let mut totals = Totals::default();
    let sources: Vec<Value> = live
        .config
        .sources
        .iter()
        .map(|s| {
            source_series(&s.name, rows.get(&(Scope::Source, s.name.as_str())).map(Vec::as_slice), &window, &mut totals)
        })
        .collect();
    let routes: Vec<Value> = live
        .routes
        .routes()
        .map(|r| {
            let mut item = route_series(rows.get(&(Scope::Route, r.name())).map(Vec::as_slice), &window, &mut totals);
            item["name"] = json!(r.name());
            item["source"] = json!(r.config.source);
            item
        })
        .collect();
    let buckets: Vec<String> =
        (0..window.count as i64).map(|i| timestamp(window.start + i * window.bucket_ms)).collect();
    Ok(Json(json!({
        "since": timestamp(window.start),
        "until": timestamp(window.until),
        "bucket_seconds": window.bucket_ms / 1000,
        "buckets": buckets,
        "sources": sources,
        "routes": routes,
        "totals": totals,
    })))
}

#[derive(Debug, Default, serde::Serialize)]
struct Totals {
    accepted: i64,
    rejected: i64,
    succeeded: i64,
    failed: i64,
    dead: i64,
}

const REJECTED: [(&str, Counter); 5] = [
    ("401", Counter::Rejected401),
    ("413", Counter::Rejected413),
    ("429", Counter::Rejected429),
    ("400", Counter::Rejected400),
    ("other", Counter::RejectedOther),
];

/// One counter per bucket, zero where the store has no row; also its total.
fn counter(rows: Option<&[&StatsBucket]>, window: &Buckets, c: Counter) -> (Vec<i64>, i64) {
    let mut values = vec![0; window.count];
    for b in rows.into_iter().flatten() {
        if let Some(i) = window.index(b.bucket) {
            values[i] += b.count(c);
        }
    }
    let total = values.iter().sum();
    (values, total)
}

fn source_series(name: &str, rows: Option<&[&StatsBucket]>, window: &Buckets, totals: &mut Totals) -> Value {
    let (accepted, n) = counter(rows, window, Counter::Accepted);
    totals.accepted += n;
    let (duplicate, _) = counter(rows, window, Counter::Duplicate);
    let mut rejected = serde_json::Map::new();
    for (key, c) in REJECTED {
        let (values, n) = counter(rows, window, c);
        totals.rejected += n;
        rejected.insert(key.to_string(), json!(values));
    }
    json!({ "name": name, "accepted": accepted, "duplicate": duplicate, "rejected": rejected })
}

fn route_series(rows: Option<&[&StatsBucket]>, window: &Buckets, totals: &mut Totals) -> Value {
    let (succeeded, n) = counter(rows, window, Counter::Succeeded);
    totals.succeeded += n;
    let (failed, n) = counter(rows, window, Counter::Failed);
    totals.failed += n;
    let (dead, n) = counter(rows, window, Counter::Dead);
    totals.dead += n;
    let mut p50 = vec![None; window.count];
    let mut p95 = vec![None; window.count];
    let mut depth = vec![None; window.count];
    let mut oldest = vec![None; window.count];
    for b in rows.into_iter().flatten() {
        let Some(i) = window.index(b.bucket) else { continue };
        p50[i] = percentile(b.durations(), 0.50).map(round);
        p95[i] = percentile(b.durations(), 0.95).map(round);
        depth[i] = b.queue_depth;
        oldest[i] = b.queue_oldest_ms.map(|ms| ms as f64 / 1000.0);
    }
    json!({
        "succeeded": succeeded, "failed": failed, "dead": dead,
        "duration_p50_ms": p50, "duration_p95_ms": p95,
        "queue_depth": depth, "queue_oldest_seconds": oldest,
    })
}

/// Milliseconds to a thousandth: finer is noise from the interpolation.
fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(since: Option<&str>, until: Option<&str>, bucket: Option<&str>) -> StatsParams {
        StatsParams { since: since.map(Into::into), until: until.map(Into::into), bucket: bucket.map(Into::into) }
    }

    fn bad_request(result: Result<Buckets, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("not a 400: {other:?}"),
        }
    }

    const NOW: Millis = 1_800_000_030_000;

    #[test]
    fn the_default_is_the_last_hour_in_about_sixty_minute_buckets_from_a_whole_minute() {
        let b = Buckets::parse(&params(None, None, None), NOW).unwrap();
        assert_eq!((b.start, b.until, b.bucket_ms, b.count), (NOW - 3_600_000 - 30_000, NOW, 60_000, 61));
        let day = Buckets::parse(&params(Some("1d"), None, None), NOW).unwrap();
        assert_eq!(day.bucket_ms, 24 * 60_000);
        assert!((60..=61).contains(&day.count));
        // A window shorter than an hour still has minute buckets.
        let short = Buckets::parse(&params(Some("5m"), None, None), NOW).unwrap();
        assert_eq!((short.bucket_ms, short.count), (60_000, 6));
        let odd = Buckets::parse(&params(Some("90m"), None, None), NOW).unwrap();
        assert_eq!(odd.bucket_ms, 2 * 60_000, "90 s rounds up to whole minutes");
    }

    #[test]
    fn bucket_and_window_are_parsed_and_bounded() {
        let b = Buckets::parse(&params(Some("2026-12-01T10:00:00Z"), Some("2026-12-01T11:00:00Z"), Some("5m")), NOW);
        let b = b.unwrap();
        assert_eq!((b.start, b.bucket_ms, b.count), (1_796_119_200_000, 300_000, 12));
        assert_eq!(b.index(b.start + 300_000), Some(1));
        assert_eq!(b.index(b.start + 12 * 300_000), None);
        // NOW is half a minute past a minute: the first bucket starts before `since`.
        assert_eq!(Buckets::parse(&params(Some("1d"), None, Some("1m")), NOW).unwrap().count, 1_441);
        assert!(bad_request(Buckets::parse(&params(Some("2d"), None, Some("60s")), NOW)).contains("at most 1440"));
        for bucket in ["90s", "0s", "soon", "", "1ms"] {
            let message = bad_request(Buckets::parse(&params(None, None, Some(bucket)), NOW));
            assert!(message.contains("whole number of minutes"), "{bucket}: {message}");
        }
        assert!(bad_request(Buckets::parse(&params(None, None, Some("400000d")), NOW)).contains("at most 366 days"));
        let long = "9".repeat(5_000);
        assert!(bad_request(Buckets::parse(&params(None, None, Some(&long)), NOW)).len() < 200);
        assert!(bad_request(Buckets::parse(&params(Some("10m"), Some("20m"), None), NOW)).contains("before until"));
        assert!(bad_request(Buckets::parse(&params(Some("100000y"), None, None), NOW)).contains("1970"));
        assert!(bad_request(Buckets::parse(&params(Some("yesterday"), None, None), NOW)).contains("since must be"));
    }
}
