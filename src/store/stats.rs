//! stats: the dashboard's per-minute aggregates — counted in memory on the hot path, merged into `stats_minute`
//! by addition and max (so several instances writing one row stay exact), read back grouped into buckets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{now_ms, Millis};

/// What a row counts for: a source (the edge's answers) or a route (its jobs and queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Source,
    Route,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Source => "source",
            Scope::Route => "route",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Scope::Source, Scope::Route].into_iter().find(|s| s.as_str() == text)
    }
}

/// The counters of a row, in the order of [`COUNTER_COLUMNS`]; the duration histogram follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Accepted,
    Duplicate,
    Rejected401,
    Rejected413,
    Rejected429,
    Rejected400,
    RejectedOther,
    Succeeded,
    Failed,
    Dead,
}

/// Upper bounds (ms) of the duration histogram's buckets `d0..d14`; `d15` holds everything longer.
pub const DURATION_BOUNDS_MS: [u64; 15] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000];

/// Histogram buckets: one per bound and one past the last.
pub const DURATION_BUCKETS: usize = DURATION_BOUNDS_MS.len() + 1;

/// Where the histogram starts among the counters.
pub const FIRST_DURATION: usize = Counter::Dead as usize + 1;

/// Every column merged by addition, as both backends name them; the one list their SQL is built from.
pub const COUNTER_COLUMNS: [&str; FIRST_DURATION + DURATION_BUCKETS] = [
    "accepted",
    "duplicate",
    "rejected_401",
    "rejected_413",
    "rejected_429",
    "rejected_400",
    "rejected_other",
    "succeeded",
    "failed",
    "dead",
    "d0",
    "d1",
    "d2",
    "d3",
    "d4",
    "d5",
    "d6",
    "d7",
    "d8",
    "d9",
    "d10",
    "d11",
    "d12",
    "d13",
    "d14",
    "d15",
];

/// The additive part of a row: counters then histogram, indexed as [`COUNTER_COLUMNS`].
pub type Counts = [i64; COUNTER_COLUMNS.len()];

/// The longest error text kept per row: a route's last error is for a glance, the attempt log has the rest.
pub const MAX_ERROR_CHARS: usize = 500;

/// Stats rows older than this go with the retention purge: the dashboard shows at most a day, a week for
/// comparison.
pub const STATS_RETENTION_MS: Millis = 8 * 24 * 3_600_000;

/// Distinct (scope, name, minute) rows one recorder holds between flushes. Names come from the configuration
/// only, so this is never reached in practice; it bounds memory should a flush keep failing.
pub const MAX_PENDING_ROWS: usize = 20_000;

const MINUTE_MS: Millis = 60_000;

/// What happened to a job's attempt, as the dashboard counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    /// Failed and will be tried again.
    Failed,
    Dead,
}

/// One row's change: what a recorder gathered for (scope, name, minute) since its last flush.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsDelta {
    pub scope: Scope,
    pub name: String,
    /// Unix ms of the start of the minute.
    pub minute: Millis,
    pub counts: Counts,
    /// Jobs queued for the route, the highest sample in the minute.
    pub queue_depth: Option<i64>,
    /// How long the route's oldest due job had waited (ms), the highest sample in the minute.
    pub queue_oldest_ms: Option<i64>,
    /// The newest error of the minute and when it happened.
    pub last_error: Option<(String, Millis)>,
}

impl StatsDelta {
    pub fn new(scope: Scope, name: &str, minute: Millis) -> Self {
        StatsDelta {
            scope,
            name: name.to_string(),
            minute: minute_of(minute),
            counts: [0; COUNTER_COLUMNS.len()],
            queue_depth: None,
            queue_oldest_ms: None,
            last_error: None,
        }
    }

    /// Fold `other` (the same row) in, the way the store merges rows: counters add, gauges take the max, the
    /// newer error wins.
    pub fn merge(&mut self, other: &StatsDelta) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.queue_depth = max_gauge(self.queue_depth, other.queue_depth);
        self.queue_oldest_ms = max_gauge(self.queue_oldest_ms, other.queue_oldest_ms);
        if let Some((text, at)) = &other.last_error {
            if self.last_error.as_ref().is_none_or(|(_, mine)| at >= mine) {
                self.last_error = Some((text.clone(), *at));
            }
        }
    }

    pub fn count(&self, counter: Counter) -> i64 {
        self.counts[counter as usize]
    }

    /// The duration histogram, `d0..d15`.
    pub fn durations(&self) -> &[i64] {
        &self.counts[FIRST_DURATION..]
    }
}

fn max_gauge(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The start of the minute holding `at`.
pub fn minute_of(at: Millis) -> Millis {
    at.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The histogram bucket of a duration: the first whose upper bound it does not exceed.
pub fn duration_bucket(duration: Duration) -> usize {
    let ms = duration.as_secs_f64() * 1000.0;
    DURATION_BOUNDS_MS.iter().position(|&bound| ms <= bound as f64).unwrap_or(DURATION_BOUNDS_MS.len())
}

/// The `q` quantile (0..=1) of a duration histogram in ms, interpolated linearly inside its bucket (as
/// Prometheus' `histogram_quantile` does); one in the last, unbounded bucket is that bucket's lower bound.
/// `None` without samples.
pub fn percentile(histogram: &[i64], q: f64) -> Option<f64> {
    let total: i64 = histogram.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0i64;
    for (i, &n) in histogram.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { DURATION_BOUNDS_MS[i - 1] as f64 };
            let Some(&upper) = DURATION_BOUNDS_MS.get(i) else { return Some(lower) };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lower + (upper as f64 - lower) * within);
        }
        below += n;
    }
    None
}

/// Cut an error to [`MAX_ERROR_CHARS`] characters.
pub fn cut_error(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

type Key = (Scope, String, Millis);

/// Counts in memory what the edge and the worker see, per (scope, name, minute), until a flush takes them.
/// Callers pass configured names only: an unknown source must not grow the table.
#[derive(Debug, Default)]
pub struct Recorder {
    rows: Mutex<HashMap<Key, StatsDelta>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A webhook of `source` was stored.
    pub fn accepted(&self, source: &str) {
        self.count(Scope::Source, source, Counter::Accepted);
    }

    /// A webhook of `source` was a duplicate of a stored one.
    pub fn duplicate(&self, source: &str) {
        self.count(Scope::Source, source, Counter::Duplicate);
    }

    /// A webhook of `source` was refused with `status`.
    pub fn rejected(&self, source: &str, status: u16) {
        let counter = match status {
            401 => Counter::Rejected401,
            413 => Counter::Rejected413,
            429 => Counter::Rejected429,
            400 => Counter::Rejected400,
            _ => Counter::RejectedOther,
        };
        self.count(Scope::Source, source, counter);
    }

    /// An attempt of a job of `route` ended with `outcome` after `duration`.
    pub fn job(&self, route: &str, outcome: JobOutcome, duration: Duration) {
        let counter = match outcome {
            JobOutcome::Succeeded => Counter::Succeeded,
            JobOutcome::Failed => Counter::Failed,
            JobOutcome::Dead => Counter::Dead,
        };
        self.update(Scope::Route, route, now_ms(), |d| {
            d.counts[counter as usize] += 1;
            d.counts[FIRST_DURATION + duration_bucket(duration)] += 1;
        });
    }

    /// A sample of `route`'s queue: jobs queued and the age of its oldest due job.
    pub fn queue(&self, route: &str, depth: i64, oldest_ms: i64) {
        self.update(Scope::Route, route, now_ms(), |d| {
            d.queue_depth = max_gauge(d.queue_depth, Some(depth));
            d.queue_oldest_ms = max_gauge(d.queue_oldest_ms, Some(oldest_ms));
        });
    }

    /// An attempt of `route` failed at `at` with `text` (cut to [`MAX_ERROR_CHARS`]).
    pub fn error(&self, route: &str, text: &str, at: Millis) {
        let error = StatsDelta { last_error: Some((cut_error(text), at)), ..StatsDelta::new(Scope::Route, route, at) };
        self.update(Scope::Route, route, at, |d| d.merge(&error));
    }

    /// Everything gathered since the last call, one delta per row.
    pub fn take(&self) -> Vec<StatsDelta> {
        let mut rows = self.lock();
        rows.drain().map(|(_, delta)| delta).collect()
    }

    /// Give back rows a flush could not write, merged with what arrived meanwhile, so the next flush has them.
    pub fn restore(&self, deltas: Vec<StatsDelta>) {
        let mut rows = self.lock();
        for delta in deltas {
            let key = (delta.scope, delta.name.clone(), delta.minute);
            let full = rows.len() >= MAX_PENDING_ROWS;
            match rows.get_mut(&key) {
                Some(row) => row.merge(&delta),
                None if !full => {
                    rows.insert(key, delta);
                }
                None => {}
            }
        }
    }

    fn count(&self, scope: Scope, name: &str, counter: Counter) {
        self.update(scope, name, now_ms(), |d| d.counts[counter as usize] += 1);
    }

    fn update(&self, scope: Scope, name: &str, at: Millis, change: impl FnOnce(&mut StatsDelta)) {
        let minute = minute_of(at);
        let mut rows = self.lock();
        if let Some(row) = rows.get_mut(&(scope, name.to_string(), minute)) {
            change(row);
            return;
        }
        if rows.len() >= MAX_PENDING_ROWS {
            return;
        }
        let mut row = StatsDelta::new(scope, name, minute);
        change(&mut row);
        rows.insert((scope, name.to_string(), minute), row);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, StatsDelta>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Rows with `since <= minute < until`, grouped into buckets of `bucket_ms` aligned on multiples of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsQuery {
    pub since: Millis,
    pub until: Millis,
    pub bucket_ms: Millis,
}

/// One (scope, name, bucket): the counters summed, the gauges' max (`None`: no sample in the bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsBucket {
    pub scope: Scope,
    pub name: String,
    /// Unix ms of the bucket's start.
    pub bucket: Millis,
    pub counts: Counts,
    pub queue_depth: Option<i64>,
    pub queue_oldest_ms: Option<i64>,
}

impl StatsBucket {
    pub fn count(&self, counter: Counter) -> i64 {
        self.counts[counter as usize]
    }

    pub fn durations(&self) -> &[i64] {
        &self.counts[FIRST_DURATION..]
    }
}

/// What [`crate::store::Store::stats`] answers: the buckets that have rows, in (scope, name, bucket) order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSeries {
    pub buckets: Vec<StatsBucket>,
}

/// One error per route from [`sql::LAST_ERRORS`]' rows (by route, newest first): should two rows of a route
/// share the newest time, the first.
pub(crate) fn newest_per_route(mut rows: Vec<(String, String, Millis)>) -> Vec<(String, String, Millis)> {
    rows.dedup_by(|later, first| later.0 == first.0);
    rows
}

/// Column lists both backends' SQL is built from, so the statements cannot drift from [`COUNTER_COLUMNS`].
pub(crate) mod sql {
    use super::COUNTER_COLUMNS;

    /// `accepted, duplicate, …, d15`.
    pub fn columns() -> String {
        COUNTER_COLUMNS.join(", ")
    }

    /// `accepted = stats_minute.accepted + excluded.accepted, …`.
    pub fn additions() -> String {
        COUNTER_COLUMNS.iter().map(|c| format!("{c} = stats_minute.{c} + excluded.{c}")).collect::<Vec<_>>().join(", ")
    }

    /// `SUM(accepted), …`, each cast with `cast` (PostgreSQL's SUM of a BIGINT is a NUMERIC).
    pub fn sums(cast: &str) -> String {
        COUNTER_COLUMNS.iter().map(|c| format!("SUM({c}){cast}")).collect::<Vec<_>>().join(", ")
    }

    /// The upsert of one row, in a dialect's placeholders (`?4`, `$4`) and its way to keep the larger of two
    /// gauges that may each be NULL.
    pub fn upsert(placeholder: impl Fn(usize) -> String, larger: impl Fn(&str) -> String) -> String {
        let n = COUNTER_COLUMNS.len();
        let values: Vec<String> = (1..=n + 7).map(&placeholder).collect();
        let gauge = |c: &str| format!("{c} = {}", larger(c));
        format!(
            "INSERT INTO stats_minute (scope, name, minute, {columns}, queue_depth, queue_oldest_ms, last_error, last_error_at)
             VALUES ({values})
             ON CONFLICT (scope, name, minute) DO UPDATE SET {additions}, {depth}, {oldest}, {LAST_ERROR}",
            columns = columns(),
            values = values.join(", "),
            additions = additions(),
            depth = gauge("queue_depth"),
            oldest = gauge("queue_oldest_ms"),
        )
    }

    /// Rows of `[since, until)` (placeholders 1 and 2) grouped into buckets of placeholder 3 ms.
    pub fn buckets(placeholder: impl Fn(usize) -> String, cast: &str) -> String {
        let (since, until, bucket) = (placeholder(1), placeholder(2), placeholder(3));
        format!(
            "SELECT scope, name, (minute / {bucket}) * {bucket} AS bucket, {sums}, MAX(queue_depth), MAX(queue_oldest_ms)
             FROM stats_minute WHERE minute >= {since} AND minute < {until}
             GROUP BY scope, name, bucket ORDER BY scope, name, bucket",
            sums = sums(cast),
        )
    }

    /// The newer error wins; shared by both dialects.
    pub const LAST_ERROR: &str = "last_error = CASE WHEN excluded.last_error_at IS NOT NULL
             AND (stats_minute.last_error_at IS NULL OR excluded.last_error_at >= stats_minute.last_error_at)
             THEN excluded.last_error ELSE stats_minute.last_error END,
         last_error_at = CASE WHEN excluded.last_error_at IS NOT NULL
             AND (stats_minute.last_error_at IS NULL OR excluded.last_error_at >= stats_minute.last_error_at)
             THEN excluded.last_error_at ELSE stats_minute.last_error_at END";

    /// Each route's newest error: the row holding the route's latest `last_error_at`.
    pub const LAST_ERRORS: &str = "SELECT s.name, s.last_error, s.last_error_at FROM stats_minute s
         JOIN (SELECT name, MAX(last_error_at) AS newest_at FROM stats_minute
               WHERE scope = 'route' AND last_error_at IS NOT NULL GROUP BY name) newest
           ON s.name = newest.name AND s.last_error_at = newest.newest_at
         WHERE s.scope = 'route' AND s.last_error IS NOT NULL
         ORDER BY s.name, s.minute DESC";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(deltas: &[StatsDelta], scope: Scope, name: &str, counter: Counter) -> i64 {
        deltas.iter().filter(|d| d.scope == scope && d.name == name).map(|d| d.count(counter)).sum()
    }

    #[test]
    fn the_recorder_merges_one_row_per_scope_name_and_minute() {
        let recorder = Recorder::new();
        let at = 1_800_000_030_000;
        for _ in 0..3 {
            recorder.update(Scope::Source, "github", at, |d| d.counts[Counter::Accepted as usize] += 1);
        }
        recorder.update(Scope::Source, "github", at + 20_000, |d| d.counts[Counter::Duplicate as usize] += 1);
        recorder.update(Scope::Source, "github", at + 60_000, |d| d.counts[Counter::Accepted as usize] += 1);
        recorder.update(Scope::Route, "github", at, |d| d.counts[Counter::Succeeded as usize] += 1);
        let mut rows = recorder.take();
        rows.sort_by(|a, b| (a.scope, &a.name, a.minute).cmp(&(b.scope, &b.name, b.minute)));
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].minute, rows[0].count(Counter::Accepted), rows[0].count(Counter::Duplicate)),
            (1_800_000_000_000, 3, 1)
        );
        assert_eq!((rows[1].minute, rows[1].count(Counter::Accepted)), (1_800_000_060_000, 1));
        assert_eq!((rows[2].scope, rows[2].count(Counter::Succeeded)), (Scope::Route, 1));
        assert!(recorder.take().is_empty(), "take empties the recorder");
    }

    #[test]
    fn rejections_are_counted_by_status_and_jobs_by_outcome_and_duration() {
        let recorder = Recorder::new();
        recorder.accepted("s");
        recorder.duplicate("s");
        for status in [401, 401, 413, 429, 400, 404, 503] {
            recorder.rejected("s", status);
        }
        recorder.job("r", JobOutcome::Succeeded, Duration::from_millis(3));
        recorder.job("r", JobOutcome::Failed, Duration::from_millis(70));
        recorder.job("r", JobOutcome::Dead, Duration::from_secs(120));
        let rows = recorder.take();
        let count = |scope, name, counter| total(&rows, scope, name, counter);
        assert_eq!(count(Scope::Source, "s", Counter::Accepted), 1);
        assert_eq!(count(Scope::Source, "s", Counter::Duplicate), 1);
        assert_eq!(count(Scope::Source, "s", Counter::Rejected401), 2);
        assert_eq!(count(Scope::Source, "s", Counter::Rejected413), 1);
        assert_eq!(count(Scope::Source, "s", Counter::Rejected429), 1);
        assert_eq!(count(Scope::Source, "s", Counter::Rejected400), 1);
        assert_eq!(count(Scope::Source, "s", Counter::RejectedOther), 2);
        assert_eq!(count(Scope::Route, "r", Counter::Succeeded), 1);
        assert_eq!(count(Scope::Route, "r", Counter::Failed), 1);
        assert_eq!(count(Scope::Route, "r", Counter::Dead), 1);
        let mut histogram = [0i64; DURATION_BUCKETS];
        for row in rows.iter().filter(|r| r.scope == Scope::Route) {
            for (sum, n) in histogram.iter_mut().zip(row.durations()) {
                *sum += n;
            }
        }
        // 3 ms in (2, 5], 70 ms in (50, 100], 120 s past the last bound.
        assert_eq!((histogram[2], histogram[6], histogram[15]), (1, 1, 1));
        assert_eq!(histogram.iter().sum::<i64>(), 3);
    }

    #[test]
    fn a_duration_falls_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        assert_eq!(duration_bucket(Duration::ZERO), 0);
        assert_eq!(duration_bucket(Duration::from_millis(1)), 0);
        assert_eq!(duration_bucket(Duration::from_micros(1_001)), 1);
        assert_eq!(duration_bucket(Duration::from_millis(10)), 3);
        assert_eq!(duration_bucket(Duration::from_millis(11)), 4);
        assert_eq!(duration_bucket(Duration::from_secs(60)), 14);
        assert_eq!(duration_bucket(Duration::from_millis(60_001)), 15);
        assert_eq!(duration_bucket(Duration::from_secs(86_400)), 15);
    }

    fn assert_near(got: Option<f64>, want: f64) {
        let got = got.expect("a percentile");
        assert!((got - want).abs() < 1e-9, "{got} is not {want}");
    }

    #[test]
    fn percentiles_interpolate_inside_the_bucket_and_are_none_without_samples() {
        assert_eq!(percentile(&[0; DURATION_BUCKETS], 0.5), None);
        assert_eq!(percentile(&[], 0.95), None);
        // Ten samples in (10, 25]: the median is halfway through it, p95 near its top.
        let mut h = [0i64; DURATION_BUCKETS];
        h[4] = 10;
        assert_near(percentile(&h, 0.5), 17.5);
        assert_near(percentile(&h, 0.95), 24.25);
        // 90 fast and 10 slow samples: the median is among the fast, p95 halfway into the slow bucket.
        let mut h = [0i64; DURATION_BUCKETS];
        h[0] = 90;
        h[9] = 10;
        assert_near(percentile(&h, 0.5), 50.0 / 90.0);
        assert_near(percentile(&h, 0.95), 750.0);
        // Only samples past the last bound: the bound is all that is known.
        let mut h = [0i64; DURATION_BUCKETS];
        h[15] = 4;
        assert_eq!(percentile(&h, 0.5), Some(60_000.0));
    }

    #[test]
    fn merging_adds_counters_keeps_the_highest_gauge_and_the_newest_error() {
        let mut a = StatsDelta::new(Scope::Route, "r", 120_000);
        a.counts[Counter::Failed as usize] = 2;
        a.queue_depth = Some(5);
        a.last_error = Some(("old".into(), 120_500));
        let mut b = StatsDelta::new(Scope::Route, "r", 120_000);
        b.counts[Counter::Failed as usize] = 3;
        b.queue_depth = Some(4);
        b.queue_oldest_ms = Some(900);
        b.last_error = Some(("new".into(), 121_000));
        a.merge(&b);
        assert_eq!(a.count(Counter::Failed), 5);
        assert_eq!((a.queue_depth, a.queue_oldest_ms), (Some(5), Some(900)));
        assert_eq!(a.last_error, Some(("new".into(), 121_000)));
        // An older error does not replace a newer one.
        a.merge(&StatsDelta { last_error: Some(("older".into(), 100)), ..StatsDelta::new(Scope::Route, "r", 0) });
        assert_eq!(a.last_error.as_ref().unwrap().0, "new");
    }

    #[test]
    fn errors_are_cut_to_500_characters_and_the_newest_is_kept() {
        let recorder = Recorder::new();
        let at = 1_800_000_000_000;
        recorder.error("r", &"é".repeat(2_000), at + 2);
        recorder.error("r", "earlier", at + 1);
        let rows = recorder.take();
        let (text, when) = rows[0].last_error.clone().unwrap();
        assert_eq!((text.chars().count(), when), (MAX_ERROR_CHARS, at + 2));
        assert_eq!(cut_error("short"), "short");
    }

    #[test]
    fn restored_rows_merge_with_new_ones_and_the_pending_rows_are_bounded() {
        let recorder = Recorder::new();
        recorder.accepted("s");
        let failed_flush = recorder.take();
        recorder.accepted("s");
        recorder.restore(failed_flush);
        assert_eq!(total(&recorder.take(), Scope::Source, "s", Counter::Accepted), 2);
        for i in 0..MAX_PENDING_ROWS + 10 {
            recorder.accepted(&format!("s{i}"));
        }
        assert_eq!(recorder.take().len(), MAX_PENDING_ROWS);
    }

    #[test]
    fn the_sql_column_lists_follow_the_counter_table() {
        assert_eq!(COUNTER_COLUMNS[Counter::Dead as usize], "dead");
        assert_eq!(COUNTER_COLUMNS[FIRST_DURATION], "d0");
        assert!(sql::additions().starts_with("accepted = stats_minute.accepted + excluded.accepted, "));
        assert!(sql::sums("::bigint").ends_with("SUM(d15)::bigint"));
        assert_eq!(Scope::parse("route"), Some(Scope::Route));
        assert_eq!(Scope::parse("x"), None);
    }
}
