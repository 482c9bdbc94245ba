//! store: the durable record of deliveries, jobs and attempts behind one trait, kept in SQLite or PostgreSQL.
//!
//! Every method that changes state returns only after the change is committed to disk, so a caller may
//! acknowledge what it wrote. Times are Unix milliseconds (`Millis`), ids are UUIDv7 strings (time-ordered).

mod bulk;
pub mod codec;
#[cfg(test)]
mod contract;
pub mod control;
pub mod postgres;
mod postgres_control;
pub mod postgres_tls;
mod row;
pub mod sqlite;
pub mod stats;
mod url;
pub mod watched;

pub use bulk::*;
pub use url::{StoreUrl, StoreUrlError};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

/// Unix time in milliseconds.
pub type Millis = i64;

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new time-ordered id (UUIDv7, lower-case hyphenated).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A new id as [`new_id`] would have made it at `at` (tests and imports that date a delivery in the past).
pub fn id_at(at: Millis) -> String {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, (at / 1000) as u64, ((at % 1000) * 1_000_000) as u32);
    uuid::Uuid::new_v7(ts).to_string()
}

/// The least id [`new_id`] can make at or after `at`: every id made before `at` sorts below it (ids compare
/// bytewise, and a UUIDv7 starts with its time in milliseconds as fixed-width lower-case hex). A delivery's
/// id is made just after its `received_at`, so `id < id_floor(t)` is the id range of everything received
/// before `t`, and the primary key can stand in for an index on `received_at`.
pub fn id_floor(at: Millis) -> String {
    let ms = at.clamp(0, (1 << 48) - 1) as u64;
    format!("{:08x}-{:04x}-0000-0000-000000000000", ms >> 16, ms & 0xffff)
}

/// Clone: one failed batch (a group commit) is the answer of every write in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the write; nothing was committed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or a corrupt row; the operation did not happen.
    #[error("store error: {0}")]
    Internal(String),
}

/// An error with its whole `source()` chain on one line. The cause an operator needs is usually in a source,
/// not in the error's own text: tokio-postgres says only "db error" or "error performing TLS handshake",
/// with the SQLSTATE, a refused connection or an unknown issuer below it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    error_chain_with(e, |_| None)
}

/// [`error_chain`], where `describe` may word a link itself (PostgreSQL's server errors carry their SQLSTATE
/// code apart from their text); links it passes over are shown as they display.
pub fn error_chain_with(
    e: &(dyn std::error::Error + 'static),
    describe: impl Fn(&(dyn std::error::Error + 'static)) -> Option<String>,
) -> String {
    let text_of = |link: &(dyn std::error::Error + 'static)| describe(link).unwrap_or_else(|| link.to_string());
    let mut text = text_of(e);
    let mut source = e.source();
    while let Some(cause) = source {
        let part = text_of(cause);
        // Some wrappers (deadpool's, rusqlite's) already print their source.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// A verified webhook: what `insert_delivery` commits, and what reads give back.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub source: String,
    pub event: String,
    /// The provider's delivery id; the dedup key together with `source`.
    pub delivery: String,
    pub received_at: Millis,
    /// Lower-case header names, in arrival order, as received.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// A digest of the signed (timestamp, body) pair, for timestamped schemes: a second dedup key together
    /// with `source`, so a replay under a new delivery id is a duplicate too.
    pub replay_key: Option<String>,
}

/// A job to create for a delivery (one per matching route).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub route: String,
    /// Jobs of one route with one key merge while queued, and never run at the same time.
    pub coalesce_key: Option<String>,
    /// Earliest time the job may run.
    pub run_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// Committed; `jobs` counts the jobs created or merged into a queued job.
    Stored { id: String, jobs: usize },
    /// (source, delivery), or (source, replay_key), was already stored; nothing was written. `id` is the
    /// first copy's.
    Duplicate { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Dead,
    /// Cancelled by an operator while queued; terminal, as `succeeded` and `dead`.
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [Self::Queued, Self::Running, Self::Succeeded, Self::Dead, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    /// A job in a terminal status never runs again unless retried.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A job this worker now holds a lease on.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub route: String,
    pub coalesce_key: Option<String>,
    /// The number of this attempt, starting at 1.
    pub attempt: u32,
    pub created_at: Millis,
    /// The delivery it acts on.
    pub delivery: Delivery,
    /// The half-open circuit's single probe: its result closes the circuit or opens it again.
    pub probe: bool,
}

/// What to claim: due jobs of these routes, at most `limit`, leased to `owner` until `lease_until`.
#[derive(Debug, Clone)]
pub struct Claim {
    pub owner: String,
    pub limit: usize,
    pub now: Millis,
    pub lease_until: Millis,
    /// Only claim jobs of these routes (the ones this instance has enabled, with free concurrency).
    pub routes: Vec<String>,
    /// The routes' retry policies, for settling jobs whose lease expired (see [`Claim::after_lost`]); a route
    /// missing here gets the default policy.
    pub retry: HashMap<String, crate::retry::Retry>,
    /// What holds each route back across all instances; a route missing here has no limit but its state
    /// (paused and stopped routes are never claimed).
    pub limits: HashMap<String, RouteLimits>,
    /// A route's own lease, where it ends before `lease_until` (its action's timeout is shorter than the
    /// longest): a crashed runner's job of that route is taken up again sooner.
    pub leases: HashMap<String, Millis>,
    /// Routes whose configuration neither coalesces nor limits them: nothing about one of their jobs depends on
    /// another's, so a store may claim them without serialising against other claimers (their state, such as a
    /// pause, still holds). A route not named here is claimed with every guarantee.
    pub lockless: HashSet<String>,
}

impl Claim {
    /// When a job of `route` claimed now stops being held.
    pub fn lease_for(&self, route: &str) -> Millis {
        self.leases.get(route).copied().unwrap_or(self.lease_until)
    }

    /// [`Claim::leases`] as a JSON object, for the stores' lease statements.
    pub fn leases_json(&self) -> String {
        serde_json::to_string(&self.leases).unwrap_or_else(|_| "{}".into())
    }
}

/// A route's limits a claim enforces in the store, so they hold across every instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteLimits {
    /// Jobs of the route running at once, counted over all instances.
    pub concurrency: Option<usize>,
    /// The route has a circuit breaker: an open circuit holds it back, a half-open one lets one probe go.
    pub breaker: bool,
}

/// The error of an attempt whose runner stopped before it reported: its lease expired.
pub const LEASE_EXPIRED: &str = "lease expired: the runner stopped";

impl Claim {
    /// A running job whose lease expired lost its attempt: its runner stopped (the process died, perhaps killed
    /// by that very job). The attempt counts as failed, so a job that keeps killing its runner ends `dead`
    /// after its route's `max_attempts` instead of being claimed again after every restart; otherwise it
    /// waits out the backoff like any failed attempt. Returns the attempt to record and the job's next state.
    pub fn after_lost(&self, job: &str, route: &str, attempt: u32, started_at: Millis) -> (AttemptRecord, NextState) {
        let policy = self.retry.get(route).cloned().unwrap_or_default();
        let (next, outcome) = if attempt >= policy.max_attempts {
            (NextState::Dead, "dead")
        } else {
            let pause = crate::retry::delay(&policy, attempt, crate::retry::Hint::default());
            (NextState::Retry { at: self.now + pause.as_millis() as i64 }, "retry")
        };
        tracing::warn!(route, job, attempt, outcome, "{LEASE_EXPIRED}");
        metrics::counter!(crate::metrics::JOBS_TOTAL, "route" => route.to_string(), "outcome" => outcome).increment(1);
        if next == NextState::Dead {
            metrics::counter!(crate::metrics::JOBS_DEAD, "route" => route.to_string()).increment(1);
        }
        let record = AttemptRecord {
            attempt,
            started_at,
            finished_at: self.now,
            ok: false,
            error: Some(LEASE_EXPIRED.to_string()),
            output: None,
            status_code: None,
        };
        (record, next)
    }
}

/// One run of an action, kept for the admin API and the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub ok: bool,
    /// A short description of the failure; never a secret.
    pub error: Option<String>,
    /// Capped stdout/stderr of a command, or the capped response body of an HTTP call.
    pub output: Option<String>,
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextState {
    Succeeded,
    /// Back to queued, to run again at this time.
    Retry {
        at: Millis,
    },
    Dead,
}

impl NextState {
    /// The job row's status and, for a retry, its new `run_at`.
    pub fn row(self) -> (&'static str, Option<Millis>) {
        match self {
            NextState::Succeeded => (JobStatus::Succeeded.as_str(), None),
            NextState::Retry { at } => (JobStatus::Queued.as_str(), Some(at)),
            NextState::Dead => (JobStatus::Dead.as_str(), None),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub delivery_id: String,
    pub route: String,
    pub status: JobStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// How many later deliveries were merged into this job by coalescing.
    pub merged: u32,
    /// The source and event of the job's delivery, so a list of jobs says where each came from.
    pub source: String,
    pub event: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct JobCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl JobCounts {
    /// The number of jobs in `status`.
    pub fn of(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Queued => self.queued,
            JobStatus::Running => self.running,
            JobStatus::Succeeded => self.succeeded,
            JobStatus::Dead => self.dead,
            JobStatus::Cancelled => self.cancelled,
        }
    }

    fn set(&mut self, status: JobStatus, n: u64) {
        match status {
            JobStatus::Queued => self.queued = n,
            JobStatus::Running => self.running = n,
            JobStatus::Succeeded => self.succeeded = n,
            JobStatus::Dead => self.dead = n,
            JobStatus::Cancelled => self.cancelled = n,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliverySummary {
    pub id: String,
    pub source: String,
    pub event: String,
    pub delivery: String,
    pub received_at: Millis,
    pub jobs: JobCounts,
}

/// A delivery as a search reads it: stored (headers and body, for its body filter), with its jobs counted.
#[derive(Debug, Clone)]
pub struct ScannedDelivery {
    pub delivery: Delivery,
    pub jobs: JobCounts,
}

impl ScannedDelivery {
    pub fn summary(&self) -> DeliverySummary {
        let d = &self.delivery;
        DeliverySummary {
            id: d.id.clone(),
            source: d.source.clone(),
            event: d.event.clone(),
            delivery: d.delivery.clone(),
            received_at: d.received_at,
            jobs: self.jobs.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobDetail {
    pub job: JobSummary,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Clone)]
pub struct DeliveryDetail {
    pub delivery: Delivery,
    pub jobs: Vec<JobDetail>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub source: Option<String>,
    pub event: Option<String>,
    /// The provider's delivery id (`X-GitHub-Delivery`, …), exactly.
    pub delivery: Option<String>,
    /// hookgate's own id, exactly.
    pub id: Option<String>,
    /// `received_at` at or after this time.
    pub since: Option<Millis>,
    /// `received_at` before this time.
    pub until: Option<Millis>,
    /// Deliveries with at least one job in this status.
    pub status: Option<JobStatus>,
    pub limit: usize,
    /// Return deliveries with an id strictly below this one (the `next` of the previous page).
    pub before: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    pub route: Option<String>,
    /// `updated_at` at or after this time (for a terminal job: when it ended).
    pub since: Option<Millis>,
    /// `updated_at` before this time.
    pub until: Option<Millis>,
    pub limit: usize,
    pub before: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Cursor for the next page, when there may be one.
    pub next: Option<String>,
}

/// Why the store cannot take a delivery now (`/readyz`).
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// The database does not answer.
    #[error("{0}")]
    Unreachable(StoreError),
    /// The last write failed (a full disk, a read-only file system) and none has succeeded since.
    #[error("the last write failed: {0}")]
    WriteFailed(StoreError),
}

/// Deliveries one purge transaction removes at most: a write queued behind it waits milliseconds, not seconds.
pub const PURGE_BATCH: usize = 500;

/// After a purge batch that took `took`, rest as long (at most a second): the purge then takes at most about
/// half of the store's write capacity, and a write queued meanwhile never shares a transaction with it.
pub(crate) async fn purge_pause(took: std::time::Duration) {
    tokio::time::sleep(took.clamp(std::time::Duration::from_millis(1), std::time::Duration::from_secs(1))).await;
}

/// The one storage interface; SQLite and PostgreSQL implement it with the same behaviour.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip proving the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Commit a tiny write (one row of its own), proving a commit reaches the disk now.
    async fn probe_write(&self) -> Result<(), StoreError>;

    /// Whether a delivery can be committed now (`/readyz`). Plain stores only check that the database
    /// answers; [`watched::Watched`] (what [`open`] returns) also remembers whether the last write failed.
    async fn readiness(&self) -> Result<(), NotReady> {
        self.ping().await.map_err(NotReady::Unreachable)
    }

    /// Commit a delivery and its jobs atomically and durably. If (source, delivery) or (source, replay_key)
    /// exists, write nothing and return `Duplicate`. A job with a `coalesce_key` for which a *queued* job of
    /// the same route and key exists is merged into it: the queued job now points at this (newer) delivery
    /// and `merged` grows.
    async fn insert_delivery(&self, delivery: Delivery, jobs: Vec<NewJob>) -> Result<Insert, StoreError>;

    /// Add jobs to a stored delivery (replay, schedules); coalescing applies. Returns jobs created or merged.
    async fn insert_jobs(&self, delivery_id: &str, jobs: Vec<NewJob>) -> Result<usize, StoreError>;

    /// Lease due jobs: queued with `run_at <= now`. First, running jobs of these routes whose lease expired
    /// (a crashed runner) are settled as failed attempts (see [`Claim::after_lost`]), with an attempt row.
    /// Never hands out two jobs with the same (route, coalesce_key) while one of them is running and leased.
    /// Claimed jobs become `running`, `attempt` grows by one, owner and lease are set.
    async fn claim_jobs(&self, claim: Claim) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Record an attempt and move the job on. Returns false (and changes nothing) if `owner` no longer
    /// holds the job (its lease expired and someone else claimed it).
    async fn finish_job(
        &self,
        job_id: &str,
        owner: &str,
        attempt: AttemptRecord,
        next: NextState,
    ) -> Result<bool, StoreError>;

    /// Give a running job back without using up an attempt (shutdown, open circuit); it runs at `run_at`.
    async fn release_job(&self, job_id: &str, owner: &str, run_at: Millis) -> Result<bool, StoreError>;

    /// Put a dead (or succeeded, or cancelled) job back in the queue with its attempt count reset. False if unknown
    /// or currently queued/running.
    async fn retry_job(&self, job_id: &str, now: Millis) -> Result<bool, StoreError>;

    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryDetail>, StoreError>;
    async fn list_deliveries(&self, query: DeliveryQuery) -> Result<Page<DeliverySummary>, StoreError>;
    async fn list_jobs(&self, query: JobQuery) -> Result<Page<JobSummary>, StoreError>;

    /// The deliveries [`Store::list_deliveries`] would list, newest first, with headers and bodies: the
    /// candidates a search evaluates its body filter on. `next` as in `list_deliveries`.
    async fn scan_deliveries(&self, query: DeliveryQuery) -> Result<Page<ScannedDelivery>, StoreError>;

    /// Delete deliveries received before `before` whose jobs are all terminal, with their jobs and attempts,
    /// in transactions of at most [`PURGE_BATCH`] deliveries with a pause after each (see [`purge_pause`]), so
    /// writes are never held up for long. Dropping the future stops it between (or within) batches.
    async fn purge(&self, before: Millis) -> Result<u64, StoreError>;

    /// Number of jobs in each status, from counters kept by the writes themselves: a few rows per route are
    /// read, never the jobs table.
    async fn job_counts(&self) -> Result<JobCounts, StoreError>;

    /// Change a route's shared state (see [`control`]) atomically, serialized with claims, and return it as it
    /// was before and after. A route never changed starts from [`control::RouteState::new`].
    async fn change_route(
        &self,
        route: &str,
        change: control::RouteChange,
        now: Millis,
    ) -> Result<(control::RouteState, control::RouteState), StoreError>;

    /// Pause a source (`Some`) or resume it (`None`); returns its pause before the change.
    async fn pause_source(
        &self,
        source: &str,
        pause: Option<control::Pause>,
        now: Millis,
    ) -> Result<Option<control::Pause>, StoreError>;

    /// Every route and source with shared state: what each instance caches and refreshes.
    async fn control_state(&self) -> Result<control::ControlState, StoreError>;

    // Bulk operations (see `bulk`): retry and cancel by filter, replay by filter, once per idempotency key.

    /// Retry or cancel, in one transaction, the jobs `op` selects (see [`BulkJobs`]). With a key: the key, its
    /// fingerprint and the outcome are stored in that same transaction; the same key again answers `Repeat`
    /// with the stored outcome and changes nothing, with another fingerprint `KeyReused`. Concurrent requests
    /// with one key act once. A key older than [`IDEMPOTENCY_TTL`] is forgotten.
    async fn bulk_jobs(&self, op: BulkJobs) -> Result<BulkAnswer, StoreError>;

    /// Deliveries matching `filter` with an id above `after`, oldest first, at most `limit`, bodies included.
    async fn find_deliveries(
        &self,
        filter: &DeliveryFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Add the planned jobs to their deliveries in one transaction (coalescing applies), with the idempotency
    /// rules of [`Store::bulk_jobs`]. `count` is the planned deliveries still stored, `jobs` the jobs created
    /// or merged.
    async fn replay_deliveries(&self, replay: BulkReplay) -> Result<BulkAnswer, StoreError>;

    /// What an earlier request with this key answered (`Repeat` or `KeyReused`); `None` for a key unknown or
    /// expired. Only reads: it spares a repeated replay its planning, the write decides.
    async fn idempotent_answer(&self, key: &IdempotencyKey, now: Millis) -> Result<Option<BulkAnswer>, StoreError>;

    // Operational signals (issue 14).

    /// For each of `routes` with a due job (queued, `run_at <= now`), the `run_at` of its earliest: how long
    /// the route's queue has kept a job waiting (`hookgate_queue_oldest_seconds`). Routes without a due job
    /// are left out. One index lookup per route (migration 8), however long the backlog.
    async fn oldest_due(&self, routes: &[String], now: Millis) -> Result<Vec<(String, Millis)>, StoreError>;

    /// Jobs queued per route, from the counters the writes keep (migration 5); routes with none are left out.
    async fn queued_by_route(&self) -> Result<Vec<(String, i64)>, StoreError>;

    // Dashboard statistics (see [`stats`]).

    /// Merge per-minute deltas into `stats_minute` in one transaction: counters add, gauges take the max,
    /// the newer error wins; so the deltas of several instances for one row add up as their events did.
    /// Rows older than [`stats::STATS_RETENTION_MS`] go with [`Store::purge`].
    async fn record_stats(&self, rows: Vec<stats::StatsDelta>) -> Result<(), StoreError>;

    /// The rows with `since <= minute < until`, grouped by (scope, name, `(minute / bucket) * bucket`).
    async fn stats(&self, query: stats::StatsQuery) -> Result<stats::StatsSeries, StoreError>;

    /// Each route's newest recorded error: (route, error, when), by route.
    async fn last_errors(&self) -> Result<Vec<(String, String, Millis)>, StoreError>;

    // GitHub delivery recovery (issue 18).

    /// Which of `ids` (provider delivery ids) are stored for `source`: one query however many, so a recovery
    /// round asks once for a whole page of GitHub's deliveries.
    async fn stored_deliveries(
        &self,
        source: &str,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError>;

    /// Take the lease `name` for `owner` until `until`: true when it was free, had expired (`until < now`), or
    /// was already `owner`'s (then it is extended); false while another owner holds it. Atomic across
    /// instances: of two owners asking at once, one gets it.
    async fn take_lease(&self, name: &str, owner: &str, until: Millis, now: Millis) -> Result<bool, StoreError>;
}

pub type DynStore = Arc<dyn Store>;

/// Open the store a URL names; migrations run here. The store comes watched: its readiness reflects the
/// outcome of the last write (see [`watched`]). A new backend is one file and one arm here (and in [`StoreUrl`]).
pub async fn open(url: &StoreUrl) -> Result<DynStore, StoreError> {
    let store: DynStore = match url {
        StoreUrl::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(path).await?),
        StoreUrl::Postgres(url) => Arc::new(postgres::PostgresStore::open(url).await?),
    };
    Ok(Arc::new(watched::Watched::new(store)))
}
