//! SQLite store: one writer thread commits batches (group commit), a small pool of readers serves queries.
//!
//! Durability: WAL with `synchronous = FULL`, so a method that changes state answers only after its COMMIT
//! reached the disk. Throughput: every write waiting when the writer thread becomes free joins one
//! transaction (each in its own SAVEPOINT, so one failure does not undo the others) and the whole batch
//! shares one fsync. Reads run on their own connections under `spawn_blocking` and never wait for the writer.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior,
};
use tokio::sync::{oneshot, Semaphore};

use super::*;

/// Versioned schema steps, applied in order at open; a step never changes once released.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/sqlite/0001_init.sql"))];

/// The most commands one transaction takes; bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 256;

/// Tuning for [`SqliteStore::open_with`]; [`SqliteStore::open`] uses the defaults.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a connection waits for a lock held by another process before the store is `Unavailable`.
    pub busy_timeout: Duration,
    /// Read-only connections serving queries (at least one).
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { busy_timeout: Duration::from_secs(5), readers: 4 }
    }
}

pub struct SqliteStore {
    /// `None` only while dropping: closing the channel tells the writer to finish and exit.
    commands: Option<mpsc::Sender<Box<dyn WriteOp>>>,
    writer: Option<JoinHandle<()>>,
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

/// Conditions of the file, the disk or other processes mean "try later"; everything else is a bug.
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
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// StoreError is not Clone; one batch failure is reported to every command of the batch.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

// ---------------------------------------------------------------------------------------------------------
// The writer thread

/// One command for the writer, type-erased so one channel carries every kind of write.
trait WriteOp: Send {
    /// Run inside the batch transaction; false if it failed (its savepoint is then rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answer the caller once the batch's fate is known.
    fn reply(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Op<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteOp for Op<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A bug in one command must not take the writer thread (and every later request) down with it.
        let result =
            catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| Err(internal("a store write panicked")));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn reply(self: Box<Self>, committed: Result<(), &StoreError>) {
        let this = *self;
        let answer = match (this.result, committed) {
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(copy_error(e)),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => Err(internal("a store write did not run")),
        };
        // The caller may have given up (its future was dropped); the write stands either way.
        let _ = this.reply.send(answer);
    }
}

fn writer_loop(conn: Connection, commands: mpsc::Receiver<Box<dyn WriteOp>>, commits: Arc<AtomicU64>) {
    // `recv` keeps returning queued commands after the store is dropped, so nothing pending is lost.
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&conn, &mut batch);
        if outcome.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        for op in batch {
            op.reply(outcome.as_ref().copied());
        }
    }
    let _ = conn.execute_batch("PRAGMA optimize");
}

/// Run every command in one IMMEDIATE transaction, each inside a savepoint, and commit once.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteOp>]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)?;
    for op in batch.iter_mut() {
        if let Err(e) = conn.execute_batch("SAVEPOINT op") {
            return abort(conn, e);
        }
        let end = if op.run(conn) { "RELEASE op" } else { "ROLLBACK TO op; RELEASE op" };
        // Fails when SQLite already rolled the whole transaction back (I/O error, full disk).
        if let Err(e) = conn.execute_batch(end) {
            return abort(conn, e);
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => abort(conn, e),
    }
}

fn abort(conn: &Connection, e: rusqlite::Error) -> Result<(), StoreError> {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    Err(sql_error(e))
}

// ---------------------------------------------------------------------------------------------------------
// Readers

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

// ---------------------------------------------------------------------------------------------------------
// Opening and migrations

fn configure_writer(conn: &Connection, options: &SqliteOptions) -> Result<(), StoreError> {
    conn.busy_timeout(options.busy_timeout).map_err(sql_error)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sql_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(internal(format!("SQLite refused WAL journal mode (got `{mode}`)")));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(sql_error)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(sql_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    // Read-write flags with `query_only`: a READ_ONLY connection cannot recreate a missing `-shm` file.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sql_error)?;
    conn.busy_timeout(options.busy_timeout).map_err(sql_error)?;
    conn.pragma_update(None, "query_only", "ON").map_err(sql_error)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Apply every migration not yet recorded in `schema_migrations`, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(sql_error)?;
    let current: i64 =
        tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(sql_error)?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql).map_err(sql_error)?;
        tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", params![version, now_ms()])
            .map_err(sql_error)?;
    }
    tx.commit().map_err(sql_error)
}

impl SqliteStore {
    /// Open (creating the file and its directory if missing) and apply pending migrations.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    pub async fn open_with(path: &str, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = PathBuf::from(path);
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
        let mut conn = Connection::open(&path).map_err(sql_error)?;
        configure_writer(&conn, &options)?;
        migrate(&mut conn)?;
        let count = options.readers.max(1);
        let readers = (0..count).map(|_| open_reader(&path, &options)).collect::<Result<Vec<_>, _>>()?;
        let readers = Arc::new(ReadPool { conns: Mutex::new(readers), permits: Arc::new(Semaphore::new(count)) });
        let commits = Arc::new(AtomicU64::new(0));
        let (commands, inbox) = mpsc::channel();
        let writer_commits = commits.clone();
        let writer = std::thread::Builder::new()
            .name("hookgate-sqlite-writer".into())
            .spawn(move || writer_loop(conn, inbox, writer_commits))
            .map_err(|e| internal(format!("cannot start the SQLite writer: {e}")))?;
        Ok(SqliteStore { commands: Some(commands), writer: Some(writer), readers, commits, path })
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
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }

    /// Hand `work` to the writer thread; it answers after the batch holding it has committed.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Op { work: Some(work), result: None, reply });
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
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Row helpers

fn headers_to_text(headers: &[(String, String)]) -> Result<String, StoreError> {
    serde_json::to_string(headers).map_err(internal)
}

fn headers_from_text(text: &str) -> Result<Vec<(String, String)>, StoreError> {
    serde_json::from_str(text).map_err(|e| internal(format!("corrupt headers: {e}")))
}

fn status_of(text: &str) -> Result<JobStatus, StoreError> {
    JobStatus::parse(text).ok_or_else(|| internal(format!("unknown job status `{text}`")))
}

const JOB_COLUMNS: &str =
    "id, delivery_id, route, status, attempts, last_error, run_at, created_at, updated_at, merged";

/// A job row as stored, before its status text is checked.
struct JobRow {
    id: String,
    delivery_id: String,
    route: String,
    status: String,
    attempts: u32,
    last_error: Option<String>,
    run_at: Millis,
    created_at: Millis,
    updated_at: Millis,
    merged: u32,
}

fn job_row(row: &Row) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: row.get(0)?,
        delivery_id: row.get(1)?,
        route: row.get(2)?,
        status: row.get(3)?,
        attempts: row.get(4)?,
        last_error: row.get(5)?,
        run_at: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        merged: row.get(9)?,
    })
}

impl JobRow {
    fn into_summary(self) -> Result<JobSummary, StoreError> {
        let status = status_of(&self.status)?;
        Ok(JobSummary {
            id: self.id,
            delivery_id: self.delivery_id,
            route: self.route,
            status,
            attempts: self.attempts,
            last_error: self.last_error,
            next_attempt_at: (status == JobStatus::Queued).then_some(self.run_at),
            created_at: self.created_at,
            updated_at: self.updated_at,
            merged: self.merged,
        })
    }
}

const DELIVERY_COLUMNS: &str = "id, source, event, delivery, received_at, headers, body";

fn load_delivery(conn: &Connection, id: &str) -> Result<Option<StoredDelivery>, StoreError> {
    let row = conn
        .prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"))
        .map_err(sql_error)?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Millis>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Vec<u8>>(6)?,
            ))
        })
        .optional()
        .map_err(sql_error)?;
    let Some((id, source, event, delivery, received_at, headers, body)) = row else {
        return Ok(None);
    };
    Ok(Some(StoredDelivery {
        id,
        source,
        event,
        delivery,
        received_at,
        headers: headers_from_text(&headers)?,
        body: Bytes::from(body),
    }))
}

fn clamp_limit(limit: usize) -> usize {
    if limit == 0 {
        50
    } else {
        limit.min(1000)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Writes (run on the writer thread, inside the batch transaction)

fn insert_delivery_tx(conn: &Connection, d: &NewDelivery, jobs: &[NewJob]) -> Result<Insert, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO deliveries (id, source, event, delivery, received_at, headers, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (source, delivery) DO NOTHING",
        )
        .map_err(sql_error)?
        .execute(
            params![d.id, d.source, d.event, d.delivery, d.received_at, headers_to_text(&d.headers)?, &d.body[..],],
        )
        .map_err(sql_error)?;
    if inserted == 0 {
        let id: String = conn
            .prepare_cached("SELECT id FROM deliveries WHERE source = ?1 AND delivery = ?2")
            .map_err(sql_error)?
            .query_row(params![d.source, d.delivery], |r| r.get(0))
            .map_err(sql_error)?;
        return Ok(Insert::Duplicate { id });
    }
    let count = insert_jobs_tx(conn, &d.id, jobs, d.received_at)?;
    Ok(Insert::Stored { id: d.id.clone(), jobs: count })
}

/// Insert jobs for a delivery, merging keyed jobs into a queued one of the same route and key.
fn insert_jobs_tx(conn: &Connection, delivery_id: &str, jobs: &[NewJob], now: Millis) -> Result<usize, StoreError> {
    let mut count = 0;
    for job in jobs {
        if let Some(key) = &job.coalesce_key {
            let merged = conn
                .prepare_cached(
                    "UPDATE jobs SET delivery_id = ?1, merged = merged + 1, updated_at = ?2
                     WHERE id = (SELECT id FROM jobs
                                 WHERE route = ?3 AND coalesce_key = ?4 AND status = 'queued'
                                 ORDER BY run_at, id LIMIT 1)",
                )
                .map_err(sql_error)?
                .execute(params![delivery_id, now, job.route, key])
                .map_err(sql_error)?;
            if merged > 0 {
                count += 1;
                continue;
            }
        }
        conn.prepare_cached(
            "INSERT INTO jobs (id, delivery_id, route, coalesce_key, status, attempts, run_at,
                               created_at, updated_at, merged)
             VALUES (?1, ?2, ?3, ?4, 'queued', 0, ?5, ?6, ?6, 0)",
        )
        .map_err(sql_error)?
        .execute(params![job.id, delivery_id, job.route, job.coalesce_key, job.run_at, now])
        .map_err(sql_error)?;
        count += 1;
    }
    Ok(count)
}

fn claim_tx(conn: &Connection, claim: &Claim) -> Result<Vec<ClaimedJob>, StoreError> {
    let routes = serde_json::to_string(&claim.routes).map_err(internal)?;
    let mut picked: Vec<(String, String, Option<String>)> = Vec::new();
    {
        let mut candidates = conn
            .prepare_cached(
                "SELECT id, route, coalesce_key FROM jobs
                 WHERE route IN (SELECT value FROM json_each(?1))
                   AND ((status = 'queued' AND run_at <= ?2)
                        OR (status = 'running' AND lease_until < ?2))
                 ORDER BY run_at, id",
            )
            .map_err(sql_error)?;
        let mut key_busy = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs
                                WHERE route = ?1 AND coalesce_key = ?2 AND id <> ?3
                                  AND status = 'running' AND lease_until >= ?4)",
            )
            .map_err(sql_error)?;
        // A key is decided once per claim: taken by an earlier candidate, or held by a live lease.
        let mut keys_seen: HashSet<(String, String)> = HashSet::new();
        let mut rows = candidates.query(params![routes, claim.now]).map_err(sql_error)?;
        while picked.len() < claim.limit {
            let Some(row) = rows.next().map_err(sql_error)? else {
                break;
            };
            let id: String = row.get(0).map_err(sql_error)?;
            let route: String = row.get(1).map_err(sql_error)?;
            let key: Option<String> = row.get(2).map_err(sql_error)?;
            if let Some(k) = &key {
                if !keys_seen.insert((route.clone(), k.clone())) {
                    continue;
                }
                let busy: bool =
                    key_busy.query_row(params![route, k, id, claim.now], |r| r.get(0)).map_err(sql_error)?;
                if busy {
                    continue;
                }
            }
            picked.push((id, route, key));
        }
    }

    let mut deliveries: HashMap<String, StoredDelivery> = HashMap::new();
    let mut claimed = Vec::with_capacity(picked.len());
    for (id, route, coalesce_key) in picked {
        let (attempts, created_at, delivery_id): (u32, Millis, String) = conn
            .prepare_cached(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?2,
                                 lease_until = ?3, updated_at = ?4
                 WHERE id = ?1
                 RETURNING attempts, created_at, delivery_id",
            )
            .map_err(sql_error)?
            .query_row(params![id, claim.owner, claim.lease_until, claim.now], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(sql_error)?;
        let delivery = match deliveries.get(&delivery_id) {
            Some(d) => d.clone(),
            None => {
                let d = load_delivery(conn, &delivery_id)?
                    .ok_or_else(|| internal(format!("job {id} points at missing delivery {delivery_id}")))?;
                deliveries.insert(delivery_id, d.clone());
                d
            }
        };
        claimed.push(ClaimedJob { id, route, coalesce_key, attempt: attempts, created_at, delivery });
    }
    Ok(claimed)
}

fn finish_tx(
    conn: &Connection,
    job_id: &str,
    owner: &str,
    attempt: &AttemptRecord,
    next: NextState,
) -> Result<bool, StoreError> {
    let (status, run_at): (&str, Option<Millis>) = match next {
        NextState::Succeeded => ("succeeded", None),
        NextState::Retry { at } => ("queued", Some(at)),
        NextState::Dead => ("dead", None),
    };
    let updated = conn
        .prepare_cached(
            "UPDATE jobs SET status = ?3, run_at = COALESCE(?4, run_at), last_error = ?5,
                             lease_owner = NULL, lease_until = NULL, updated_at = ?6
             WHERE id = ?1 AND status = 'running' AND lease_owner = ?2",
        )
        .map_err(sql_error)?
        .execute(params![job_id, owner, status, run_at, attempt.error, now_ms()])
        .map_err(sql_error)?;
    if updated == 0 {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO attempts (job_id, attempt, started_at, finished_at, ok, error, output, status_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(sql_error)?
    .execute(params![
        job_id,
        attempt.attempt,
        attempt.started_at,
        attempt.finished_at,
        attempt.ok,
        attempt.error,
        attempt.output,
        attempt.status_code,
    ])
    .map_err(sql_error)?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------------------
// Reads (run on a reader connection)

fn get_delivery_tx(conn: &Connection, id: &str) -> Result<Option<DeliveryDetail>, StoreError> {
    let Some(delivery) = load_delivery(conn, id)? else {
        return Ok(None);
    };
    let job_rows = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE delivery_id = ?1 ORDER BY created_at, id"))
        .map_err(sql_error)?
        .query_map([id], job_row)
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    let mut attempts: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT a.job_id, a.attempt, a.started_at, a.finished_at, a.ok, a.error, a.output,
                        a.status_code
                 FROM attempts a JOIN jobs j ON j.id = a.job_id
                 WHERE j.delivery_id = ?1 ORDER BY a.seq",
            )
            .map_err(sql_error)?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    AttemptRecord {
                        attempt: r.get(1)?,
                        started_at: r.get(2)?,
                        finished_at: r.get(3)?,
                        ok: r.get(4)?,
                        error: r.get(5)?,
                        output: r.get(6)?,
                        status_code: r.get(7)?,
                    },
                ))
            })
            .map_err(sql_error)?;
        for row in rows {
            let (job_id, record) = row.map_err(sql_error)?;
            attempts.entry(job_id).or_default().push(record);
        }
    }
    let jobs = job_rows
        .into_iter()
        .map(|row| {
            let job = row.into_summary()?;
            let attempts = attempts.remove(&job.id).unwrap_or_default();
            Ok(JobDetail { job, attempts })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(DeliveryDetail { delivery, jobs }))
}

fn list_deliveries_tx(conn: &Connection, q: &DeliveryQuery) -> Result<Page<DeliverySummary>, StoreError> {
    let limit = clamp_limit(q.limit);
    // Only the filters in use appear in the SQL, so SQLite can pick the matching (column, id) index.
    let mut filter = String::new();
    let mut args: Vec<Value> = Vec::new();
    for (column, value) in [("source", &q.source), ("event", &q.event)] {
        if let Some(v) = value {
            filter.push_str(&format!(" AND {column} = ?"));
            args.push(Value::Text(v.clone()));
        }
    }
    if let Some(before) = &q.before {
        filter.push_str(" AND id < ?");
        args.push(Value::Text(before.clone()));
    }
    args.push(Value::Integer(limit as i64));
    let sql = format!(
        "SELECT d.id, d.source, d.event, d.delivery, d.received_at,
                COALESCE(SUM(j.status = 'queued'), 0), COALESCE(SUM(j.status = 'running'), 0),
                COALESCE(SUM(j.status = 'succeeded'), 0), COALESCE(SUM(j.status = 'dead'), 0)
         FROM (SELECT id, source, event, delivery, received_at FROM deliveries
               WHERE 1 = 1{filter} ORDER BY id DESC LIMIT ?) d
         LEFT JOIN jobs j ON j.delivery_id = d.id
         GROUP BY d.id ORDER BY d.id DESC"
    );
    let items = conn
        .prepare_cached(&sql)
        .map_err(sql_error)?
        .query_map(params_from_iter(args), |r| {
            Ok(DeliverySummary {
                id: r.get(0)?,
                source: r.get(1)?,
                event: r.get(2)?,
                delivery: r.get(3)?,
                received_at: r.get(4)?,
                jobs: JobCounts {
                    queued: r.get::<_, i64>(5)? as u64,
                    running: r.get::<_, i64>(6)? as u64,
                    succeeded: r.get::<_, i64>(7)? as u64,
                    dead: r.get::<_, i64>(8)? as u64,
                },
            })
        })
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    let next = (items.len() == limit).then(|| items.last().map(|d| d.id.clone())).flatten();
    Ok(Page { items, next })
}

fn list_jobs_tx(conn: &Connection, q: &JobQuery) -> Result<Page<JobSummary>, StoreError> {
    let limit = clamp_limit(q.limit);
    let mut filter = String::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(status) = q.status {
        filter.push_str(" AND status = ?");
        args.push(Value::Text(status.as_str().into()));
    }
    if let Some(route) = &q.route {
        filter.push_str(" AND route = ?");
        args.push(Value::Text(route.clone()));
    }
    if let Some(before) = &q.before {
        filter.push_str(" AND id < ?");
        args.push(Value::Text(before.clone()));
    }
    args.push(Value::Integer(limit as i64));
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1{filter} ORDER BY id DESC LIMIT ?");
    let items = conn
        .prepare_cached(&sql)
        .map_err(sql_error)?
        .query_map(params_from_iter(args), job_row)
        .map_err(sql_error)?
        .map(|row| row.map_err(sql_error).and_then(JobRow::into_summary))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let next = (items.len() == limit).then(|| items.last().map(|j| j.id.clone())).flatten();
    Ok(Page { items, next })
}

fn job_counts_tx(conn: &Connection) -> Result<JobCounts, StoreError> {
    let rows = conn
        .prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        .map_err(sql_error)?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    let mut counts = JobCounts::default();
    for (status, n) in rows {
        let n = n as u64;
        match status_of(&status)? {
            JobStatus::Queued => counts.queued = n,
            JobStatus::Running => counts.running = n,
            JobStatus::Succeeded => counts.succeeded = n,
            JobStatus::Dead => counts.dead = n,
        }
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------------------------------------

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

    async fn insert_delivery(&self, delivery: NewDelivery, jobs: Vec<NewJob>) -> Result<Insert, StoreError> {
        self.write(move |c| insert_delivery_tx(c, &delivery, &jobs)).await
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
        self.write(move |c| claim_tx(c, &claim)).await
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
                     WHERE id = ?1 AND status IN ('dead', 'succeeded')",
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

    async fn purge(&self, before: Millis) -> Result<u64, StoreError> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM deliveries WHERE received_at < ?1 AND NOT EXISTS (
                         SELECT 1 FROM jobs j
                         WHERE j.delivery_id = deliveries.id AND j.status IN ('queued', 'running'))",
                )
                .map_err(sql_error)?
                .execute([before])
                .map_err(sql_error)?;
            Ok(n as u64)
        })
        .await
    }

    async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        self.read(job_counts_tx).await
    }
}
