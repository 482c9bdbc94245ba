//! SQLite store: one writer thread commits batches (group commit), a small pool of readers serves queries.
//!
//! Durability: WAL with `synchronous = FULL`, so a method that changes state answers only after its COMMIT
//! reached the disk; bodies are zstd-compressed by the caller (see `codec`), so each commit syncs fewer
//! bytes. Throughput: every write waiting when the writer thread becomes free joins one transaction and the
//! whole batch shares one `fdatasync` (`.cargo/config.toml` builds SQLite to use it). A batch in which a
//! write fails runs again with each write in its own SAVEPOINT, so one failure does not undo the others.
//! Reads run on their own connections under `spawn_blocking` and never wait for the writer.
//!
//! Files by concern: `setup` opens the file (permissions, pragmas, migrations), `writer` runs the group
//! commit, `wal` keeps the WAL bounded with checkpoints, `writes` and `queries` hold the SQL, `bulk` the bulk
//! operations' (retry, cancel and replay by filter, with idempotency keys).

mod bulk;
mod control;
mod leases;
mod queries;
mod setup;
mod stats;
mod wal;
mod writer;
mod writes;

#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode};
use tokio::sync::{oneshot, Semaphore};

use super::*;
use queries::*;
use setup::*;
use wal::checkpoint_loop;
use writer::{writer_gone, writer_loop, Op, WriteOp};
use writes::*;

/// Tuning for [`SqliteStore::open_with`]; [`SqliteStore::open`] uses the defaults.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a connection waits for a lock held by another process before the store is `Unavailable`.
    pub busy_timeout: Duration,
    /// Read-only connections serving queries (at least one).
    pub readers: usize,
    /// Once the WAL holds this many bytes, it is made to start over from its beginning (and cut back to this
    /// size); otherwise it would grow without end under a sustained flood. Each rewind pauses the writer for
    /// a copy of a few milliseconds' worth of commits, so the default is large: a flood, not a burst.
    pub wal_limit: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { busy_timeout: Duration::from_secs(5), readers: 4, wal_limit: 256 << 20 }
    }
}

pub struct SqliteStore {
    /// `None` only while dropping: closing the channel tells the writer to finish and exit.
    commands: Option<mpsc::Sender<Box<dyn WriteOp>>>,
    writer: Option<JoinHandle<()>>,
    /// Exits after the writer (which holds its only sender) has.
    checkpointer: Option<JoinHandle<()>>,
    readers: Arc<ReadPool>,
    commits: Arc<AtomicU64>,
    path: PathBuf,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// Conditions of the file, the disk or other processes mean "try later"; everything else is a bug. The text
/// keeps SQLite's own words and code (`database or disk is full: Error code 13: …`).
fn sql_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::ReadOnly
                    | ErrorCode::PermissionDenied
                    | ErrorCode::FileLockingProtocolFailed
                    | ErrorCode::NoLargeFileSupport
                    | ErrorCode::OutOfMemory
                    | ErrorCode::OperationInterrupted
            ) =>
        {
            StoreError::Unavailable(error_chain(&e))
        }
        _ => StoreError::Internal(error_chain(&e)),
    }
}

struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    /// One permit per connection, so a query waits asynchronously instead of blocking a thread.
    permits: Arc<Semaphore>,
}

impl ReadPool {
    fn take(&self) -> Option<Connection> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put(&self, conn: Connection) {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }
}

impl SqliteStore {
    /// Open (creating the file and its directory if missing) and apply pending migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options)).await.map_err(internal)?
    }

    fn open_blocking(path: PathBuf, options: SqliteOptions) -> Result<Self, StoreError> {
        let name = path.to_string_lossy();
        if name.is_empty() || name == ":memory:" || name.starts_with("file::memory:") {
            // Readers on their own connections would each see a different, empty database.
            return Err(internal("the SQLite store needs a file path"));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| unavailable(format!("cannot create {}: {e}", parent.display())))?;
        }
        owner_only(&path)?;
        let mut conn = Connection::open(&path).map_err(sql_error)?;
        configure_writer(&conn, &options)?;
        migrate(&mut conn)?;
        let count = options.readers.max(1);
        let readers = (0..count).map(|_| open_reader(&path, &options)).collect::<Result<Vec<_>, _>>()?;
        let readers = Arc::new(ReadPool { conns: Mutex::new(readers), permits: Arc::new(Semaphore::new(count)) });
        let commits = Arc::new(AtomicU64::new(0));
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).map_err(sql_error)?;
        let restart_frames = (options.wal_limit as i64 / (page_size + 24)).max(1);
        let checkpointer_conn = Connection::open(&path).map_err(sql_error)?;
        let database =
            std::fs::File::open(&path).map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        checkpointer_conn.busy_timeout(options.busy_timeout).map_err(sql_error)?;
        let (checkpoint_due, checkpoint_inbox) = mpsc::sync_channel(1);
        let rewind = Arc::new(AtomicBool::new(false));
        let rewind_due = rewind.clone();
        let checkpointer = std::thread::Builder::new()
            .name("hookgate-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer_conn, database, checkpoint_inbox, restart_frames, rewind_due))
            .map_err(|e| internal(format!("cannot start the SQLite checkpointer: {e}")))?;
        let (commands, inbox) = mpsc::channel();
        let writer_commits = commits.clone();
        let writer = std::thread::Builder::new()
            .name("hookgate-sqlite-writer".into())
            .spawn(move || writer_loop(conn, inbox, writer_commits, checkpoint_due, rewind))
            .map_err(|e| internal(format!("cannot start the SQLite writer: {e}")))?;
        Ok(SqliteStore {
            commands: Some(commands),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            readers,
            commits,
            path,
        })
    }

    /// Transactions committed by the writer so far; with group commit it grows slower than the writes.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The highest applied migration.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(sql_error)
        })
        .await
    }

    /// Finish pending writes and close the file without blocking the async runtime (dropping also works).
    pub async fn close(mut self) {
        self.commands.take();
        let threads = [self.writer.take(), self.checkpointer.take()];
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().flatten().for_each(|t| drop(t.join()))).await;
    }

    /// Hand `work` to the writer thread; it answers after the batch holding it has committed.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Op { work, result: None, reply });
        let commands = self.commands.as_ref().ok_or_else(writer_gone)?;
        commands.send(op).map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Run `work` on a reader inside one read transaction (a consistent snapshot).
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| unavailable("the SQLite readers are closed"))?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = pool.take().ok_or_else(|| internal("no free SQLite reader"))?;
            let result = catch_unwind(AssertUnwindSafe(|| {
                let tx = conn.transaction().map_err(sql_error)?;
                work(&tx)
            }))
            .unwrap_or_else(|_| Err(internal("a store read panicked")));
            pool.put(conn);
            result
        })
        .await
        .map_err(internal)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued, commit it and exit.
        self.commands.take();
        for thread in [self.writer.take(), self.checkpointer.take()].into_iter().flatten() {
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// Goes through the writer: BEGIN IMMEDIATE proves the file can be written, not just read.
    async fn ping(&self) -> Result<(), StoreError> {
        // SQLite keeps using a deleted file through its open descriptor; that is not a healthy store.
        if let Err(e) = tokio::fs::metadata(&self.path).await {
            return Err(unavailable(format!("database file {}: {e}", self.path.display())));
        }
        self.write(|c| {
            c.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
                .map_err(sql_error)
        })
        .await
    }

    /// Rewrites the one `write_probe` row: a commit that has to reach the WAL on disk.
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO write_probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )
            .map_err(sql_error)?
            .execute([now_ms()])
            .map(|_| ())
            .map_err(sql_error)
        })
        .await
    }

    async fn insert_delivery(&self, delivery: Delivery, jobs: Vec<NewJob>) -> Result<Insert, StoreError> {
        let row = DeliveryRow::encode(delivery)?;
        self.write(move |c| insert_delivery_tx(c, &row, &jobs)).await
    }

    /// An unknown delivery (purged, or never stored) adds nothing and returns `Ok(0)`.
    async fn insert_jobs(&self, delivery_id: &str, jobs: Vec<NewJob>) -> Result<usize, StoreError> {
        let delivery_id = delivery_id.to_string();
        self.write(move |c| {
            let exists = c
                .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1")
                .map_err(sql_error)?
                .exists([&delivery_id])
                .map_err(sql_error)?;
            if !exists {
                return Ok(0);
            }
            insert_jobs_tx(c, &delivery_id, &jobs, now_ms())
        })
        .await
    }

    async fn claim_jobs(&self, claim: Claim) -> Result<Vec<ClaimedJob>, StoreError> {
        if claim.limit == 0 || claim.routes.is_empty() {
            return Ok(Vec::new());
        }
        // The writer only leases; reading the deliveries (bodies) happens on a reader, off the serial path.
        // Should that read fail, the leases expire and the jobs are claimed again.
        let leased = self.write(move |c| claim_tx(c, &claim)).await?;
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| with_deliveries(c, leased)).await
    }

    async fn finish_job(
        &self,
        job_id: &str,
        owner: &str,
        attempt: AttemptRecord,
        next: NextState,
    ) -> Result<bool, StoreError> {
        let (job_id, owner) = (job_id.to_string(), owner.to_string());
        self.write(move |c| finish_tx(c, &job_id, &owner, &attempt, next)).await
    }

    async fn release_job(&self, job_id: &str, owner: &str, run_at: Millis) -> Result<bool, StoreError> {
        let (job_id, owner) = (job_id.to_string(), owner.to_string());
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE jobs SET status = 'queued', run_at = ?3, attempts = MAX(attempts - 1, 0),
                                     lease_owner = NULL, lease_until = NULL, updated_at = ?4
                     WHERE id = ?1 AND status = 'running' AND lease_owner = ?2",
                )
                .map_err(sql_error)?
                .execute(params![job_id, owner, run_at, now_ms()])
                .map_err(sql_error)?;
            Ok(n > 0)
        })
        .await
    }

    async fn retry_job(&self, job_id: &str, now: Millis) -> Result<bool, StoreError> {
        let job_id = job_id.to_string();
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE jobs SET status = 'queued', attempts = 0, run_at = ?2, last_error = NULL,
                                     lease_owner = NULL, lease_until = NULL, updated_at = ?2
                     WHERE id = ?1 AND status IN ('dead', 'succeeded', 'cancelled')",
                )
                .map_err(sql_error)?
                .execute(params![job_id, now])
                .map_err(sql_error)?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryDetail>, StoreError> {
        let id = id.to_string();
        self.read(move |c| get_delivery_tx(c, &id)).await
    }

    async fn list_deliveries(&self, query: DeliveryQuery) -> Result<Page<DeliverySummary>, StoreError> {
        self.read(move |c| list_deliveries_tx(c, &query)).await
    }

    async fn list_jobs(&self, query: JobQuery) -> Result<Page<JobSummary>, StoreError> {
        self.read(move |c| list_jobs_tx(c, &query)).await
    }

    async fn scan_deliveries(&self, query: DeliveryQuery) -> Result<Page<ScannedDelivery>, StoreError> {
        self.read(move |c| scan_deliveries_tx(c, &query)).await
    }

    /// Each batch is one command for the writer: writes that queued up while it ran are committed before the
    /// next batch is even sent.
    async fn purge(&self, before: Millis) -> Result<u64, StoreError> {
        self.write(|c| bulk::forget_keys_tx(c, now_ms())).await?;
        self.write(|c| self::stats::purge_stats_tx(c, now_ms() - super::stats::STATS_RETENTION_MS)).await?;
        let mut cursor = PurgeCursor::start();
        let mut total = 0;
        loop {
            let started = std::time::Instant::now();
            let from = cursor.clone();
            let (deleted, seen, next) = self.write(move |c| purge_batch_tx(c, before, &from)).await?;
            total += deleted;
            if seen < PURGE_BATCH {
                return Ok(total);
            }
            cursor = next;
            purge_pause(started.elapsed()).await;
        }
    }

    async fn change_route(
        &self,
        route: &str,
        change: crate::store::control::RouteChange,
        now: Millis,
    ) -> Result<(crate::store::control::RouteState, crate::store::control::RouteState), StoreError> {
        let route = route.to_string();
        self.write(move |c| self::control::change_route_tx(c, &route, &change, now)).await
    }

    async fn pause_source(
        &self,
        source: &str,
        pause: Option<crate::store::control::Pause>,
        now: Millis,
    ) -> Result<Option<crate::store::control::Pause>, StoreError> {
        let source = source.to_string();
        self.write(move |c| self::control::pause_source_tx(c, &source, pause.as_ref(), now)).await
    }

    async fn control_state(&self) -> Result<crate::store::control::ControlState, StoreError> {
        self.read(self::control::control_state_tx).await
    }

    async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        self.read(job_counts_tx).await
    }

    async fn bulk_jobs(&self, op: BulkJobs) -> Result<BulkAnswer, StoreError> {
        self.write(move |c| bulk::bulk_jobs_tx(c, &op)).await
    }

    async fn find_deliveries(
        &self,
        filter: &DeliveryFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (filter, after) = (filter.clone(), after.map(str::to_string));
        self.read(move |c| bulk::find_deliveries_tx(c, &filter, after.as_deref(), limit)).await
    }

    async fn replay_deliveries(&self, replay: BulkReplay) -> Result<BulkAnswer, StoreError> {
        self.write(move |c| bulk::replay_tx(c, &replay)).await
    }

    async fn idempotent_answer(&self, key: &IdempotencyKey, now: Millis) -> Result<Option<BulkAnswer>, StoreError> {
        let key = key.clone();
        self.read(move |c| bulk::stored_answer(c, &key, now)).await
    }

    async fn oldest_due(&self, routes: &[String], now: Millis) -> Result<Vec<(String, Millis)>, StoreError> {
        let routes = routes.to_vec();
        self.read(move |c| oldest_due_tx(c, &routes, now)).await
    }

    async fn queued_by_route(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(self::stats::queued_by_route_tx).await
    }

    /// Through the writer like every write: the deltas share a batch's transaction (and its one sync).
    async fn record_stats(&self, rows: Vec<super::stats::StatsDelta>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(move |c| self::stats::record_stats_tx(c, &rows)).await
    }

    async fn stats(&self, query: super::stats::StatsQuery) -> Result<super::stats::StatsSeries, StoreError> {
        self.read(move |c| self::stats::stats_tx(c, &query)).await
    }

    async fn last_errors(&self) -> Result<Vec<(String, String, Millis)>, StoreError> {
        self.read(self::stats::last_errors_tx).await
    }

    async fn stored_deliveries(
        &self,
        source: &str,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let (source, ids) = (source.to_string(), serde_json::to_string(ids).map_err(internal)?);
        self.read(move |c| leases::stored_deliveries_tx(c, &source, &ids)).await
    }

    async fn take_lease(&self, name: &str, owner: &str, until: Millis, now: Millis) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write(move |c| leases::take_lease_tx(c, &name, &owner, until, now)).await
    }
}
