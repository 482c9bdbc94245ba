//! SQLite store: one writer thread commits batches (group commit), a small pool of readers serves queries.
//!
//! Durability: WAL with `synchronous = FULL`, so a method that changes state answers only after its COMMIT
//! reached the disk; bodies are LZ4-compressed by the caller (see `codec`), so each commit syncs fewer
//! bytes. Throughput: every write waiting when the writer thread becomes free joins one transaction and the
//! whole batch shares one `fdatasync` (`.cargo/config.toml` builds SQLite to use it). A batch in which a
//! write fails runs again with each write in its own SAVEPOINT, so one failure does not undo the others.
//! Reads run on their own connections under `spawn_blocking` and never wait for the writer.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior,
};
use tokio::sync::{oneshot, Semaphore};

use super::codec::{self, BodyCodec};
use super::*;
use crate::metrics::{STORE_BATCH_SIZE, STORE_COMMIT_DURATION};

/// Versioned schema steps, applied in order at open; a step never changes once released.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_claim_order.sql")),
    (3, include_str!("migrations/sqlite/0003_body_codec.sql")),
    (4, include_str!("migrations/sqlite/0004_replay_key.sql")),
    (5, include_str!("migrations/sqlite/0005_job_counts.sql")),
];

/// The most commands one transaction takes; bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 256;

/// The least time between two checkpoints; bounds the WAL to what the writer commits in this time.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(100);

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
    /// Run inside the batch transaction; false if it failed. May run twice: a batch in which one command
    /// failed is rolled back and run again with each command in its own savepoint.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answer the caller once the batch's fate is known.
    fn reply(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Op<T, F> {
    work: F,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteOp for Op<T, F>
where
    T: Send,
    F: Fn(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // A bug in one command must not take the writer thread (and every later request) down with it.
        let result = catch_unwind(AssertUnwindSafe(|| (self.work)(conn)))
            .unwrap_or_else(|_| Err(internal("a store write panicked")));
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

fn writer_loop(
    conn: Connection,
    commands: mpsc::Receiver<Box<dyn WriteOp>>,
    commits: Arc<AtomicU64>,
    checkpoint: mpsc::SyncSender<()>,
    rewind: Arc<AtomicBool>,
) {
    // `recv` keeps returning queued commands after the store is dropped, so nothing pending is lost.
    while let Ok(first) = commands.recv() {
        if rewind.swap(false, Ordering::AcqRel) {
            rewind_wal(&conn);
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let outcome = run_batch(&conn, &mut batch);
        metrics::histogram!(STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(STORE_BATCH_SIZE).record(batch.len() as f64);
        if outcome.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
            // Full means a checkpoint is already due; it will include this commit.
            let _ = checkpoint.try_send(());
        }
        for op in batch {
            op.reply(outcome.as_ref().copied());
        }
    }
    let _ = conn.execute_batch("PRAGMA optimize");
}

/// Copy committed WAL frames into the database file on its own thread and connection, so the writer never
/// spends a batch's time on it (SQLite's automatic checkpoint would run inside the committing thread).
/// PASSIVE never blocks the writer or readers. But the writer keeps appending while it copies, so under
/// steady load the WAL is never found fully copied, never starts over, and would grow without end. Once it
/// holds `restart_frames` frames, this catches up and then asks the writer to rewind (see [`rewind_wal`]).
fn checkpoint_loop(
    conn: Connection,
    database: std::fs::File,
    due: mpsc::Receiver<()>,
    restart_frames: i64,
    rewind: Arc<AtomicBool>,
) {
    // How many frames the WAL holds, as the checkpoint saw it.
    let passive = || {
        let frames = checkpoint_passive(&conn)?;
        // SQLite syncs the database file only after a checkpoint that emptied the WAL, which under steady
        // load is the writer's rewind: it would then flush a whole WAL's worth of pages (50 ms at 10k
        // requests/s) while every request waits. Syncing here, off the writer, keeps that flush small.
        if let Err(e) = database.sync_data() {
            tracing::warn!(error = %e, "syncing the SQLite database file failed; the next checkpoint tries again");
        }
        Ok::<_, rusqlite::Error>(frames)
    };
    while due.recv().is_ok() {
        // Let commits accumulate: a page written by many batches (an index leaf) is then copied once.
        std::thread::sleep(CHECKPOINT_PAUSE);
        while due.try_recv().is_ok() {}
        let Ok(mut frames) = passive() else { continue };
        if frames < restart_frames || rewind.load(Ordering::Acquire) {
            continue;
        }
        // Copy what arrived during the last pass until little is left for the writer to copy itself.
        for _ in 0..8 {
            let Ok(now) = passive() else { break };
            let arrived = now - frames;
            frames = now;
            if arrived < (restart_frames / 128).max(64) {
                rewind.store(true, Ordering::Release);
                break;
            }
        }
    }
    // The writer has stopped: copy everything and truncate the WAL.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// Between two batches, copy the last frames the checkpointer has not (a few milliseconds' worth) on the
/// writer's own connection: with nothing left in the WAL, the next commit starts writing it from the top
/// (over blocks already allocated) and the file is cut back to the limit. Only this thread writes, so no
/// busy-waiting on locks is involved; a reader still on an old snapshot just postpones the rewind.
fn rewind_wal(conn: &Connection) {
    let _ = checkpoint_passive(conn);
}

/// Copy what the WAL holds into the database file as far as readers allow, without waiting for any lock;
/// returns how many frames the WAL holds. A failure is only logged: the next checkpoint tries again.
fn checkpoint_passive(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
        .inspect_err(|e| tracing::debug!(error = %e, "WAL checkpoint did not run; the next one will"))
}

/// Run every command in one IMMEDIATE transaction and commit once. Commands almost never fail (a duplicate
/// delivery is an answer, not an error), so they first run back to back; only when one fails is the batch
/// rolled back and run again with each command in its own savepoint, so the failure undoes nothing else.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteOp>]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)?;
    if batch.iter_mut().all(|op| op.run(conn)) {
        return match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => abort(conn, e),
        };
    }
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK").map_err(sql_error)?;
    }
    run_batch_isolated(conn, batch)
}

/// The careful path of [`run_batch`]: each command inside a savepoint.
fn run_batch_isolated(conn: &Connection, batch: &mut [Box<dyn WriteOp>]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)?;
    // Prepared once per connection: parsing these tiny statements per write was a visible cost.
    let step = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
    for op in batch.iter_mut() {
        if let Err(e) = step("SAVEPOINT op") {
            return abort(conn, e);
        }
        let ended =
            if op.run(conn) { step("RELEASE op") } else { step("ROLLBACK TO op").and_then(|_| step("RELEASE op")) };
        // Fails when SQLite already rolled the whole transaction back (I/O error, full disk).
        if let Err(e) = ended {
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
    // Checkpoints run on their own thread (see `checkpoint_loop`); a WAL that starts over is cut back.
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sql_error)?;
    conn.pragma_update(None, "journal_size_limit", options.wal_limit as i64).map_err(sql_error)?;
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

/// The database holds webhook bodies and headers: only its owner may read it. SQLite gives the `-wal`, `-shm`
/// and `-journal` files it creates the database file's mode, so creating that file 0600 (before SQLite
/// does, with the process umask) covers them all. Files left with wider modes by an older version are
/// tightened, and the operator is told.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    match created {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(unavailable(format!("cannot create {}: {e}", path.display()))),
    }
    let companions = ["-wal", "-shm", "-journal"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    });
    for file in std::iter::once(path.to_path_buf()).chain(companions) {
        let Ok(meta) = std::fs::metadata(&file) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| unavailable(format!("cannot restrict the permissions of {}: {e}", file.display())))?;
        tracing::warn!(file = %file.display(), was = format!("{mode:o}"), "a SQLite file was readable by others; now 600");
    }
    Ok(())
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

const DELIVERY_COLUMNS: &str = "id, source, event, delivery, received_at, headers, body, body_codec";

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
                r.get::<_, i64>(7)?,
            ))
        })
        .optional()
        .map_err(sql_error)?;
    let Some((id, source, event, delivery, received_at, headers, body, codec)) = row else {
        return Ok(None);
    };
    Ok(Some(StoredDelivery {
        id,
        source,
        event,
        delivery,
        received_at,
        headers: headers_from_text(&headers)?,
        body: codec::decode(codec, body)?,
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

/// A delivery row as the writer stores it, encoded by the caller (off the writer's serial path). The
/// headers and body as received are taken out of `delivery`: only their encoded forms wait for the writer.
struct DeliveryRow {
    delivery: NewDelivery,
    headers: String,
    codec: BodyCodec,
    body: Bytes,
}

impl DeliveryRow {
    fn encode(mut delivery: NewDelivery) -> Result<Self, StoreError> {
        let headers = headers_to_text(&std::mem::take(&mut delivery.headers))?;
        let (codec, body) = codec::encode(&std::mem::take(&mut delivery.body));
        Ok(DeliveryRow { delivery, headers, codec, body })
    }
}

fn insert_delivery_tx(conn: &Connection, row: &DeliveryRow, jobs: &[NewJob]) -> Result<Insert, StoreError> {
    let d = &row.delivery;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO deliveries (id, source, event, delivery, received_at, headers, body, body_codec, replay_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO NOTHING",
        )
        .map_err(sql_error)?
        .execute(params![
            d.id,
            d.source,
            d.event,
            d.delivery,
            d.received_at,
            row.headers,
            &row.body[..],
            row.codec as i64,
            d.replay_key,
        ])
        .map_err(sql_error)?;
    if inserted == 0 {
        return Ok(Insert::Duplicate { id: first_copy(conn, d)? });
    }
    let count = insert_jobs_tx(conn, &d.id, jobs, d.received_at)?;
    Ok(Insert::Stored { id: d.id.clone(), jobs: count })
}

/// The id of the stored delivery that `d` repeats: same (source, delivery), else same (source, replay_key).
fn first_copy(conn: &Connection, d: &NewDelivery) -> Result<String, StoreError> {
    let mut lookups = vec![("delivery", d.delivery.as_str())];
    lookups.extend(d.replay_key.as_deref().map(|key| ("replay_key", key)));
    for (column, value) in lookups {
        let id: Option<String> = conn
            .prepare_cached(&format!("SELECT id FROM deliveries WHERE source = ?1 AND {column} = ?2"))
            .map_err(sql_error)?
            .query_row(params![d.source, value], |r| r.get(0))
            .optional()
            .map_err(sql_error)?;
        if let Some(id) = id {
            return Ok(id);
        }
    }
    // Only the primary key is left to clash: a bug in the caller, never a duplicate.
    Err(internal(format!("delivery id {} is already taken", d.id)))
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

/// Running jobs whose lease ran out (their runner stopped), oldest first; `updated_at` is when they were leased.
const CLAIM_EXPIRED: &str = "SELECT id, route, attempts, updated_at, COALESCE(lease_owner, '') FROM jobs
     WHERE status = 'running' AND lease_until < ?2 AND route IN (SELECT value FROM json_each(?1))
     ORDER BY run_at, id";

/// Due queued jobs in queue order, straight from the `jobs_queue` index (no sort of the backlog).
const CLAIM_QUEUED: &str = "SELECT id, route, coalesce_key FROM jobs
     WHERE status = 'queued' AND run_at <= ?2 AND route IN (SELECT value FROM json_each(?1))
     ORDER BY run_at, id";

/// Settle the claimed routes' jobs whose lease expired as failed attempts (see [`Claim::after_lost`]). They
/// are few: at most the jobs that were running when an instance died.
fn settle_expired_tx(conn: &Connection, claim: &Claim, routes: &str) -> Result<(), StoreError> {
    let expired = conn
        .prepare_cached(CLAIM_EXPIRED)
        .map_err(sql_error)?
        .query_map(params![routes, claim.now], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?))
        })
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<(String, String, u32, Millis, String)>>>()
        .map_err(sql_error)?;
    for (id, route, attempt, leased_at, owner) in expired {
        let (record, next) = claim.after_lost(&id, &route, attempt, leased_at);
        finish_tx(conn, &id, &owner, &record, next)?;
    }
    Ok(())
}

fn claim_tx(conn: &Connection, claim: &Claim) -> Result<Vec<LeasedJob>, StoreError> {
    let routes = serde_json::to_string(&claim.routes).map_err(internal)?;
    settle_expired_tx(conn, claim, &routes)?;
    let mut picked: Vec<(String, String, Option<String>)> = Vec::new();
    {
        // Due queued jobs in queue order, read from the `jobs_queue` index one row at a time until the claim
        // is full: the cost of a claim does not grow with the backlog.
        let mut queued = conn.prepare_cached(CLAIM_QUEUED).map_err(sql_error)?;
        let mut key_busy = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs
                                WHERE route = ?1 AND coalesce_key = ?2 AND id <> ?3
                                  AND status = 'running' AND lease_until >= ?4)",
            )
            .map_err(sql_error)?;
        // A key is decided once per claim: taken by an earlier candidate, or held by a live lease.
        let mut keys_seen: HashSet<(String, String)> = HashSet::new();
        {
            let mut rows = queued.query(params![routes, claim.now]).map_err(sql_error)?;
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
    }

    if picked.is_empty() {
        return Ok(Vec::new());
    }
    // One statement leases them all.
    let ids = serde_json::to_string(&picked.iter().map(|(id, _, _)| id).collect::<Vec<_>>()).map_err(internal)?;
    let mut leased: HashMap<String, (u32, Millis, String)> = HashMap::with_capacity(picked.len());
    {
        let mut update = conn
            .prepare_cached(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?2,
                                 lease_until = ?3, updated_at = ?4
                 WHERE id IN (SELECT value FROM json_each(?1))
                 RETURNING id, attempts, created_at, delivery_id",
            )
            .map_err(sql_error)?;
        let mut rows = update.query(params![ids, claim.owner, claim.lease_until, claim.now]).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            leased.insert(
                row.get(0).map_err(sql_error)?,
                (row.get(1).map_err(sql_error)?, row.get(2).map_err(sql_error)?, row.get(3).map_err(sql_error)?),
            );
        }
    }
    Ok(picked
        .into_iter()
        .filter_map(|(id, route, coalesce_key)| {
            let (attempt, created_at, delivery_id) = leased.remove(&id)?;
            Some(LeasedJob { id, route, coalesce_key, attempt, created_at, delivery_id })
        })
        .collect())
}

/// A job just leased by `claim_tx`; its delivery is read afterwards on a reader connection.
struct LeasedJob {
    id: String,
    route: String,
    coalesce_key: Option<String>,
    attempt: u32,
    created_at: Millis,
    delivery_id: String,
}

/// Attach their deliveries to leased jobs (deliveries never change, and a leased job's is never purged).
fn with_deliveries(conn: &Connection, leased: Vec<LeasedJob>) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut deliveries: HashMap<String, StoredDelivery> = HashMap::new();
    let mut claimed = Vec::with_capacity(leased.len());
    for job in leased {
        let delivery = match deliveries.get(&job.delivery_id) {
            Some(d) => d.clone(),
            None => {
                let d = load_delivery(conn, &job.delivery_id)?.ok_or_else(|| {
                    internal(format!("job {} points at missing delivery {}", job.id, job.delivery_id))
                })?;
                deliveries.insert(job.delivery_id.clone(), d.clone());
                d
            }
        };
        let LeasedJob { id, route, coalesce_key, attempt, created_at, .. } = job;
        claimed.push(ClaimedJob { id, route, coalesce_key, attempt, created_at, delivery });
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
    let (status, run_at) = next.row();
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

/// Queue depths from the counters the `job_counts` triggers keep (migration 5): one row per (route, status).
const JOB_COUNTS: &str = "SELECT status, SUM(n) FROM job_counts GROUP BY status";

fn job_counts_tx(conn: &Connection) -> Result<JobCounts, StoreError> {
    let rows = conn
        .prepare_cached(JOB_COUNTS)
        .map_err(sql_error)?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    let mut counts = JobCounts::default();
    for (status, n) in rows {
        let n = n.max(0) as u64;
        match status_of(&status)? {
            JobStatus::Queued => counts.queued = n,
            JobStatus::Running => counts.running = n,
            JobStatus::Succeeded => counts.succeeded = n,
            JobStatus::Dead => counts.dead = n,
        }
    }
    Ok(counts)
}

/// Where a purge has got to: the last delivery it looked at, in `deliveries_received_at` index order.
#[derive(Debug, Clone, Copy)]
struct PurgeCursor {
    received_at: Millis,
    rowid: i64,
}

/// The next deliveries past `cursor` received before the cutoff, in index order, each with whether it still
/// has unfinished jobs. A fixed number of index entries per batch, so deliveries kept back by a queued job are
/// stepped over once per purge, not rescanned by every batch.
const PURGE_CANDIDATES: &str = "SELECT d.rowid, d.received_at, d.id,
            EXISTS (SELECT 1 FROM jobs j WHERE j.delivery_id = d.id AND j.status IN ('queued', 'running'))
     FROM deliveries d
     WHERE d.received_at < ?1 AND (d.received_at, d.rowid) > (?2, ?3)
     ORDER BY d.received_at, d.rowid LIMIT ?4";

/// One purge batch: delete what is done among the next [`PURGE_BATCH`] candidates (their jobs and attempts
/// go by `ON DELETE CASCADE`). Returns (deleted, candidates seen, where to go on).
fn purge_batch_tx(
    conn: &Connection,
    before: Millis,
    cursor: PurgeCursor,
) -> Result<(u64, usize, PurgeCursor), StoreError> {
    let mut done: Vec<String> = Vec::new();
    let mut seen = 0;
    let mut next = cursor;
    {
        let mut candidates = conn.prepare_cached(PURGE_CANDIDATES).map_err(sql_error)?;
        let mut rows = candidates
            .query(params![before, cursor.received_at, cursor.rowid, PURGE_BATCH as i64])
            .map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            seen += 1;
            next = PurgeCursor { rowid: row.get(0).map_err(sql_error)?, received_at: row.get(1).map_err(sql_error)? };
            if !row.get::<_, bool>(3).map_err(sql_error)? {
                done.push(row.get(2).map_err(sql_error)?);
            }
        }
    }
    if done.is_empty() {
        return Ok((0, seen, next));
    }
    let ids = serde_json::to_string(&done).map_err(internal)?;
    let deleted = conn
        .prepare_cached("DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))")
        .map_err(sql_error)?
        .execute([ids])
        .map_err(sql_error)?;
    Ok((deleted as u64, seen, next))
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

    async fn insert_delivery(&self, delivery: NewDelivery, jobs: Vec<NewJob>) -> Result<Insert, StoreError> {
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

    /// Each batch is one command for the writer: writes that queued up while it ran are committed before the
    /// next batch is even sent.
    async fn purge(&self, before: Millis) -> Result<u64, StoreError> {
        let mut cursor = PurgeCursor { received_at: Millis::MIN, rowid: i64::MIN };
        let mut total = 0;
        loop {
            let started = std::time::Instant::now();
            let (deleted, seen, next) = self.write(move |c| purge_batch_tx(c, before, cursor)).await?;
            total += deleted;
            if seen < PURGE_BATCH {
                return Ok(total);
            }
            cursor = next;
            purge_pause(started.elapsed()).await;
        }
    }

    async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        self.read(job_counts_tx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 3_600_000;

    async fn fresh() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/hookgate.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        (dir, store)
    }

    fn delivery(source: &str, delivery: &str) -> NewDelivery {
        NewDelivery {
            id: new_id(),
            source: source.into(),
            event: "push".into(),
            delivery: delivery.into(),
            received_at: now_ms(),
            headers: vec![("x-github-event".into(), "push".into()), ("x-a".into(), "1".into())],
            body: Bytes::from_static(b"{\"ref\":\"refs/heads/main\"}"),
            replay_key: None,
        }
    }

    fn job(route: &str, key: Option<&str>) -> NewJob {
        job_at(route, key, now_ms() - 1)
    }

    fn job_at(route: &str, key: Option<&str>, run_at: Millis) -> NewJob {
        NewJob { id: new_id(), route: route.into(), coalesce_key: key.map(Into::into), run_at }
    }

    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_into_the_database_and_empties_it_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        for i in 0..200 {
            store.insert_delivery(delivery("github", &format!("d-{i}")), vec![job("r", None)]).await.unwrap();
        }
        store.close().await;
        let wal = std::fs::metadata(dir.path().join("hookgate.db-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal, 0, "the WAL is truncated once the writer stopped");
        let reopened = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        assert_eq!(reopened.job_counts().await.unwrap().queued, 200);
    }

    #[tokio::test]
    async fn claims_read_the_queue_from_an_index_without_sorting_the_backlog() {
        let (_dir, store) = fresh().await;
        let plans = store
            .read(|c| {
                let mut plans = Vec::new();
                for sql in [CLAIM_QUEUED, CLAIM_EXPIRED] {
                    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).map_err(sql_error)?;
                    let rows = stmt.query_map(params!["[\"r\"]", 0], |r| r.get::<_, String>(3)).map_err(sql_error)?;
                    plans.push(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_error)?.join("; "));
                }
                Ok(plans)
            })
            .await
            .unwrap();
        for plan in plans {
            assert!(plan.contains("USING INDEX jobs_queue"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "a claim must not sort the backlog: {plan}");
        }
    }

    #[tokio::test]
    async fn purge_candidates_come_from_the_received_at_index_and_queue_depths_from_counters() {
        let (_dir, store) = fresh().await;
        let plan = |sql: &'static str| {
            store.read(move |c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).map_err(sql_error)?;
                let params: &[&dyn rusqlite::ToSql] = if sql.contains("?4") { &[&0, &0, &0, &1] } else { &[] };
                let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).map_err(sql_error)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_error)?.join("; "))
            })
        };
        let purge = plan(PURGE_CANDIDATES).await.unwrap();
        assert!(purge.contains("USING INDEX deliveries_received_at"), "{purge}");
        assert!(!purge.contains("TEMP B-TREE"), "a purge batch must not sort the backlog: {purge}");
        let counts = plan(JOB_COUNTS).await.unwrap();
        assert!(!counts.contains("jobs"), "a scrape must not read the jobs table: {counts}");
    }

    #[tokio::test]
    async fn a_purge_in_batches_takes_expired_deliveries_with_their_jobs_and_attempts_and_steps_over_unfinished_ones() {
        let (dir, store) = fresh().await;
        let old = now_ms() - 10 * HOUR;
        let count = PURGE_BATCH * 2 + 17;
        for i in 0..count {
            let mut d = delivery("github", &format!("d{i}"));
            d.received_at = old + i as i64;
            // Every 100th keeps a queued job: it must stay, wherever it falls in the batches.
            let run_at = if i % 100 == 0 { now_ms() + HOUR } else { now_ms() - 1 };
            store
                .insert_delivery(d, vec![job_at(if i % 100 == 0 { "later" } else { "r" }, None, run_at)])
                .await
                .unwrap();
        }
        let ran = store.claim_jobs(claim("w", &["r"], 2000)).await.unwrap();
        for j in &ran {
            store.finish_job(&j.id, "w", record(1, true), NextState::Succeeded).await.unwrap();
        }
        let kept = count.div_ceil(100);
        assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), (count - kept) as u64);
        let raw = Connection::open(dir.path().join("nested/dir/hookgate.db")).unwrap();
        let count_of =
            |table: &str| raw.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0));
        assert_eq!(count_of("deliveries").unwrap(), kept as i64);
        assert_eq!(count_of("jobs").unwrap(), kept as i64);
        assert_eq!(count_of("attempts").unwrap(), 0, "attempts of purged jobs go too");
        let counts = store.job_counts().await.unwrap();
        assert_eq!((counts.queued, counts.succeeded), (kept as u64, 0));
    }

    fn claim(owner: &str, routes: &[&str], limit: usize) -> Claim {
        let now = now_ms();
        Claim {
            owner: owner.into(),
            limit,
            now,
            lease_until: now + HOUR,
            routes: routes.iter().map(|r| r.to_string()).collect(),
            retry: HashMap::new(),
        }
    }

    fn record(attempt: u32, ok: bool) -> AttemptRecord {
        AttemptRecord {
            attempt,
            started_at: now_ms(),
            finished_at: now_ms(),
            ok,
            error: (!ok).then(|| format!("failure {attempt}")),
            output: Some("out".into()),
            status_code: Some(if ok { 200 } else { 503 }),
        }
    }

    async fn store_one(store: &SqliteStore, id: &str, jobs: Vec<NewJob>) -> String {
        match store.insert_delivery(delivery("github", id), jobs).await.unwrap() {
            Insert::Stored { id, .. } => id,
            other => panic!("not stored: {other:?}"),
        }
    }

    async fn job_of(store: &SqliteStore, id: &str) -> JobSummary {
        let page = store.list_jobs(JobQuery { limit: 1000, ..Default::default() }).await.unwrap();
        page.items.into_iter().find(|j| j.id == id).expect("job exists")
    }

    #[tokio::test]
    async fn a_delivery_round_trips_with_its_headers_body_and_jobs() {
        let (_dir, store) = fresh().await;
        let d = delivery("github", "d1");
        let j = job("r", None);
        let stored = store.insert_delivery(d.clone(), vec![j.clone()]).await.unwrap();
        assert_eq!(stored, Insert::Stored { id: d.id.clone(), jobs: 1 });
        let detail = store.get_delivery(&d.id).await.unwrap().unwrap();
        assert_eq!(detail.delivery.headers, d.headers);
        assert_eq!(detail.delivery.body, d.body);
        assert_eq!(detail.delivery.received_at, d.received_at);
        assert_eq!(detail.jobs.len(), 1);
        assert_eq!(detail.jobs[0].job.id, j.id);
        assert_eq!(detail.jobs[0].job.status, JobStatus::Queued);
        assert_eq!(detail.jobs[0].job.next_attempt_at, Some(j.run_at));
        assert!(store.get_delivery("nope").await.unwrap().is_none());
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn a_duplicate_delivery_returns_the_first_id_and_writes_nothing() {
        let (_dir, store) = fresh().await;
        let first = store_one(&store, "d1", vec![job("r", None)]).await;
        let again =
            store.insert_delivery(delivery("github", "d1"), vec![job("r", None), job("s", None)]).await.unwrap();
        assert_eq!(again, Insert::Duplicate { id: first.clone() });
        // The same delivery id from another source is a different delivery.
        let other = store.insert_delivery(delivery("gitlab", "d1"), vec![]).await.unwrap();
        assert!(matches!(other, Insert::Stored { jobs: 0, .. }));
        let page = store.list_deliveries(Default::default()).await.unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(store.job_counts().await.unwrap().queued, 1);
    }

    #[tokio::test]
    async fn a_keyed_job_merges_into_a_queued_job_but_not_a_running_one() {
        let (_dir, store) = fresh().await;
        let first = job("fetch", Some("octo/a"));
        let d1 = store_one(&store, "d1", vec![first.clone()]).await;
        // Same key merges; another key and another route do not.
        let d2 = store
            .insert_delivery(
                delivery("github", "d2"),
                vec![job("fetch", Some("octo/a")), job("fetch", Some("octo/b")), job("other", Some("octo/a"))],
            )
            .await
            .unwrap();
        assert!(matches!(d2, Insert::Stored { jobs: 3, .. }));
        let merged = job_of(&store, &first.id).await;
        assert_eq!(merged.merged, 1);
        assert_ne!(merged.delivery_id, d1);
        // The older delivery stays stored, now without jobs.
        let old = store.get_delivery(&d1).await.unwrap().unwrap();
        assert!(old.jobs.is_empty());
        assert_eq!(store.job_counts().await.unwrap().queued, 3);

        let claimed = store.claim_jobs(claim("w", &["fetch"], 10)).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let running = claimed.iter().find(|c| c.id == first.id).unwrap();
        assert_eq!(running.delivery.delivery, "d2");
        // Now running: a new delivery with the key gets a job of its own.
        let newer = job("fetch", Some("octo/a"));
        store_one(&store, "d3", vec![newer.clone()]).await;
        assert_eq!(job_of(&store, &newer.id).await.status, JobStatus::Queued);
        assert_eq!(job_of(&store, &first.id).await.merged, 1);
    }

    #[tokio::test]
    async fn claims_respect_run_at_routes_and_limit() {
        let (_dir, store) = fresh().await;
        let later = job_at("a", None, now_ms() + HOUR);
        let a1 = job_at("a", None, now_ms() - 30);
        let a2 = job_at("a", None, now_ms() - 20);
        let a3 = job_at("a", None, now_ms() - 10);
        let b1 = job_at("b", None, now_ms() - 40);
        store_one(&store, "d1", vec![later.clone(), a1.clone(), a2.clone(), a3.clone(), b1.clone()]).await;

        let first = store.claim_jobs(claim("w", &["a"], 2)).await.unwrap();
        let ids: Vec<_> = first.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids, [a1.id.clone(), a2.id.clone()], "oldest run_at first");
        assert!(first.iter().all(|c| c.attempt == 1));
        let rest = store.claim_jobs(claim("w", &["a"], 10)).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].id, a3.id);
        assert!(store.claim_jobs(claim("w", &["a"], 10)).await.unwrap().is_empty());
        assert!(store.claim_jobs(claim("w", &[], 10)).await.unwrap().is_empty());
        assert!(store.claim_jobs(claim("w", &["b"], 0)).await.unwrap().is_empty());
        let b = store.claim_jobs(claim("w", &["b", "c"], 10)).await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].id, b1.id);
        let counts = store.job_counts().await.unwrap();
        assert_eq!((counts.queued, counts.running), (1, 4));
        let running = job_of(&store, &a1.id).await;
        assert_eq!(running.status, JobStatus::Running);
        assert_eq!(running.attempts, 1);
        assert_eq!(running.next_attempt_at, None);
    }

    #[tokio::test]
    async fn claims_never_hand_out_two_jobs_of_one_key_at_once() {
        let (_dir, store) = fresh().await;
        let k1 = job("fetch", Some("k"));
        store_one(&store, "d1", vec![k1.clone()]).await;
        let claimed = store.claim_jobs(claim("w", &["fetch"], 10)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        // A second job of the key is queued while the first runs: it waits.
        let k2 = job("fetch", Some("k"));
        let other = job("fetch", Some("other"));
        store_one(&store, "d2", vec![k2.clone(), other.clone()]).await;
        let next = store.claim_jobs(claim("v", &["fetch"], 10)).await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].id, other.id);
        assert!(store.finish_job(&k1.id, "w", record(1, true), NextState::Succeeded).await.unwrap());
        let now_free = store.claim_jobs(claim("v", &["fetch"], 10)).await.unwrap();
        assert_eq!(now_free.len(), 1);
        assert_eq!(now_free[0].id, k2.id);
    }

    #[tokio::test]
    async fn one_claim_takes_at_most_one_job_per_key() {
        let (_dir, store) = fresh().await;
        let expired = job("fetch", Some("k"));
        store_one(&store, "d1", vec![expired.clone()]).await;
        let mut short = claim("w", &["fetch"], 10);
        short.lease_until = short.now - 1;
        assert_eq!(store.claim_jobs(short).await.unwrap().len(), 1);
        // One job of the key has an expired lease and another is queued. Without a pause before a retry, the
        // expired one is due again at once: both are candidates, one is claimed.
        let queued = job("fetch", Some("k"));
        store_one(&store, "d2", vec![queued.clone()]).await;
        let mut next = claim("v", &["fetch"], 10);
        let no_pause = crate::retry::Retry { initial: Duration::ZERO, ..Default::default() };
        next.retry.insert("fetch".into(), no_pause);
        let claimed = store.claim_jobs(next).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(job_of(&store, &expired.id).await.attempts, 1, "{claimed:?}");
    }

    #[tokio::test]
    async fn an_expired_lease_is_a_failed_attempt_and_the_first_owner_can_no_longer_finish() {
        let (_dir, store) = fresh().await;
        let j = job("r", Some("k"));
        store_one(&store, "d1", vec![j.clone()]).await;
        let mut first = claim("a", &["r"], 1);
        first.lease_until = first.now + 50;
        assert_eq!(store.claim_jobs(first).await.unwrap().len(), 1);
        // Still leased: nobody else gets it.
        assert!(store.claim_jobs(claim("b", &["r"], 1)).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Expired: the lost attempt is recorded and the job waits out its backoff (1 s by default).
        assert!(store.claim_jobs(claim("b", &["r"], 1)).await.unwrap().is_empty());
        let summary = job_of(&store, &j.id).await;
        assert_eq!(summary.status, JobStatus::Queued);
        assert_eq!(summary.last_error.as_deref(), Some(LEASE_EXPIRED));
        assert!(!store.finish_job(&j.id, "a", record(1, true), NextState::Succeeded).await.unwrap());
        assert!(!store.release_job(&j.id, "a", now_ms()).await.unwrap());
        let mut later = claim("b", &["r"], 1);
        later.now = summary.next_attempt_at.unwrap();
        let taken = store.claim_jobs(later).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].attempt, 2);
        assert!(store.finish_job(&j.id, "b", record(2, true), NextState::Succeeded).await.unwrap());
        let detail = store.get_delivery(&summary.delivery_id).await.unwrap().unwrap();
        let attempts: Vec<_> = detail.jobs[0].attempts.iter().map(|a| (a.attempt, a.ok, a.error.clone())).collect();
        assert_eq!(attempts, [(1, false, Some(LEASE_EXPIRED.to_string())), (2, true, None)]);
        assert_eq!(detail.jobs[0].job.status, JobStatus::Succeeded);
    }

    #[tokio::test]
    async fn a_failing_job_retries_then_dies_with_an_attempt_row_each_time() {
        let (_dir, store) = fresh().await;
        let j = job("r", None);
        let other = job("r2", None);
        let d = store_one(&store, "d1", vec![j.clone(), other.clone()]).await;
        let c1 = store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
        assert_eq!(c1[0].attempt, 1);
        assert_eq!(c1[0].delivery.id, d);
        assert_eq!(c1[0].delivery.headers[0].0, "x-github-event");
        let retry_at = now_ms() + HOUR;
        assert!(store.finish_job(&j.id, "w", record(1, false), NextState::Retry { at: retry_at }).await.unwrap());
        let queued = job_of(&store, &j.id).await;
        assert_eq!(queued.status, JobStatus::Queued);
        assert_eq!(queued.next_attempt_at, Some(retry_at));
        assert_eq!(queued.last_error.as_deref(), Some("failure 1"));
        // Not due yet.
        assert!(store.claim_jobs(claim("w", &["r"], 1)).await.unwrap().is_empty());
        assert!(store.release_job(&j.id, "w", 0).await.map(|owned| !owned).unwrap());
        let mut later = claim("w", &["r"], 1);
        later.now = retry_at;
        later.lease_until = retry_at + HOUR;
        let c2 = store.claim_jobs(later).await.unwrap();
        assert_eq!(c2[0].attempt, 2);
        assert!(store.finish_job(&j.id, "w", record(2, false), NextState::Dead).await.unwrap());
        assert!(!store.finish_job(&j.id, "w", record(3, false), NextState::Dead).await.unwrap());

        let detail = store.get_delivery(&d).await.unwrap().unwrap();
        let ids: Vec<_> = detail.jobs.iter().map(|j| j.job.id.clone()).collect();
        assert_eq!(ids, [j.id.clone(), other.id.clone()], "created order");
        let dead = &detail.jobs[0];
        assert_eq!(dead.job.status, JobStatus::Dead);
        assert_eq!(dead.job.attempts, 2);
        assert_eq!(dead.job.next_attempt_at, None);
        assert_eq!(dead.job.last_error.as_deref(), Some("failure 2"));
        let numbers: Vec<_> = dead.attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, [1, 2]);
        assert_eq!(dead.attempts[0].status_code, Some(503));
        assert_eq!(dead.attempts[0].output.as_deref(), Some("out"));
        assert!(!dead.attempts[1].ok);
        let list = store.list_deliveries(Default::default()).await.unwrap();
        assert_eq!(list.items[0].jobs.dead, 1);
        assert_eq!(list.items[0].jobs.queued, 1);
    }

    #[tokio::test]
    async fn releasing_a_job_does_not_use_up_an_attempt() {
        let (_dir, store) = fresh().await;
        let j = job("r", Some("k"));
        store_one(&store, "d1", vec![j.clone()]).await;
        let c1 = store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
        assert_eq!(c1[0].attempt, 1);
        assert!(!store.release_job(&j.id, "someone else", 0).await.unwrap());
        assert!(store.release_job(&j.id, "w", now_ms() - 1).await.unwrap());
        let released = job_of(&store, &j.id).await;
        assert_eq!(released.status, JobStatus::Queued);
        assert_eq!(released.attempts, 0);
        let c2 = store.claim_jobs(claim("v", &["r"], 1)).await.unwrap();
        assert_eq!(c2[0].attempt, 1);
        assert!(!store.release_job(&j.id, "w", 0).await.unwrap());
    }

    #[tokio::test]
    async fn a_dead_job_can_be_retried_and_a_queued_one_cannot() {
        let (_dir, store) = fresh().await;
        let j = job("r", None);
        store_one(&store, "d1", vec![j.clone()]).await;
        assert!(!store.retry_job(&j.id, now_ms()).await.unwrap(), "queued");
        assert!(!store.retry_job("unknown", now_ms()).await.unwrap());
        store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
        assert!(!store.retry_job(&j.id, now_ms()).await.unwrap(), "running");
        store.finish_job(&j.id, "w", record(1, false), NextState::Dead).await.unwrap();
        let now = now_ms();
        assert!(store.retry_job(&j.id, now).await.unwrap());
        let retried = job_of(&store, &j.id).await;
        assert_eq!(retried.status, JobStatus::Queued);
        assert_eq!(retried.attempts, 0);
        assert_eq!(retried.next_attempt_at, Some(now));
        assert_eq!(retried.last_error, None);
        let again = store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
        assert_eq!(again[0].attempt, 1);
    }

    #[tokio::test]
    async fn replayed_jobs_attach_to_a_stored_delivery_and_coalesce() {
        let (_dir, store) = fresh().await;
        let d = store_one(&store, "d1", vec![]).await;
        let added =
            store.insert_jobs(&d, vec![job("r", Some("k")), job("r", Some("k")), job("s", None)]).await.unwrap();
        assert_eq!(added, 3);
        let detail = store.get_delivery(&d).await.unwrap().unwrap();
        assert_eq!(detail.jobs.len(), 2);
        assert_eq!(detail.jobs[0].job.merged, 1);
        assert_eq!(store.insert_jobs("missing", vec![job("r", None)]).await.unwrap(), 0);
        assert_eq!(store.job_counts().await.unwrap().queued, 2);
    }

    #[tokio::test]
    async fn deliveries_page_newest_first_with_a_cursor_and_filters() {
        let (_dir, store) = fresh().await;
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut d = delivery(if i % 2 == 0 { "github" } else { "gitlab" }, &format!("d{i}"));
            d.event = if i < 3 { "push".into() } else { "ping".into() };
            ids.push(d.id.clone());
            store.insert_delivery(d, vec![job("r", None)]).await.unwrap();
        }
        ids.reverse();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list_deliveries(DeliveryQuery { limit: 3, before: cursor.clone(), ..Default::default() })
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|d| d.id.clone()));
            assert!(page.items.iter().all(|d| d.jobs.queued == 1));
            match page.next {
                Some(next) => {
                    assert_eq!(page.items.len(), 3);
                    cursor = Some(next);
                }
                None => break,
            }
        }
        assert_eq!(seen, ids, "newest first, every delivery once");

        let github =
            store.list_deliveries(DeliveryQuery { source: Some("github".into()), ..Default::default() }).await.unwrap();
        assert_eq!(github.items.len(), 4);
        assert!(github.next.is_none());
        let github_push = store
            .list_deliveries(DeliveryQuery {
                source: Some("github".into()),
                event: Some("push".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let names: Vec<_> = github_push.items.iter().map(|d| d.delivery.clone()).collect();
        assert_eq!(names, ["d2", "d0"]);
        let after = store
            .list_deliveries(DeliveryQuery { before: Some(ids[1].clone()), limit: 1000, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(after.items.len(), 5);
        assert!(after.next.is_none());
    }

    #[tokio::test]
    async fn jobs_list_newest_first_filtered_by_status_and_route() {
        let (_dir, store) = fresh().await;
        let jobs: Vec<_> = (0..5).map(|i| job(if i < 3 { "a" } else { "b" }, None)).collect();
        store_one(&store, "d1", jobs.clone()).await;
        store.claim_jobs(claim("w", &["b"], 1)).await.unwrap();
        let a = store.list_jobs(JobQuery { route: Some("a".into()), limit: 2, ..Default::default() }).await.unwrap();
        let ids: Vec<_> = a.items.iter().map(|j| j.id.clone()).collect();
        assert_eq!(ids, [jobs[2].id.clone(), jobs[1].id.clone()]);
        let rest = store
            .list_jobs(JobQuery { route: Some("a".into()), limit: 2, before: a.next, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert!(rest.next.is_none());
        let running =
            store.list_jobs(JobQuery { status: Some(JobStatus::Running), ..Default::default() }).await.unwrap();
        assert_eq!(running.items.len(), 1);
        assert_eq!(running.items[0].route, "b");
        let queued_b = store
            .list_jobs(JobQuery { status: Some(JobStatus::Queued), route: Some("b".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(queued_b.items.len(), 1);
    }

    #[tokio::test]
    async fn purge_keeps_recent_deliveries_and_those_with_unfinished_jobs() {
        let (_dir, store) = fresh().await;
        let old = now_ms() - 10 * HOUR;
        let insert = |name: &str, received_at: Millis| {
            let mut d = delivery("github", name);
            d.received_at = received_at;
            d
        };
        let done = insert("done", old);
        let no_jobs = insert("no-jobs", old);
        let pending = insert("pending", old);
        let recent = insert("recent", now_ms());
        let done_job = job("r", None);
        store.insert_delivery(done.clone(), vec![done_job.clone()]).await.unwrap();
        store.insert_delivery(no_jobs, vec![]).await.unwrap();
        store.insert_delivery(pending.clone(), vec![job_at("later", None, now_ms() + HOUR)]).await.unwrap();
        store.insert_delivery(recent.clone(), vec![]).await.unwrap();
        store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
        store.finish_job(&done_job.id, "w", record(1, true), NextState::Succeeded).await.unwrap();

        assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 2);
        let left: Vec<_> =
            store.list_deliveries(Default::default()).await.unwrap().items.into_iter().map(|d| d.delivery).collect();
        assert_eq!(left, ["recent", "pending"]);
        assert!(store.get_delivery(&done.id).await.unwrap().is_none());
        let counts = store.job_counts().await.unwrap();
        assert_eq!((counts.queued, counts.succeeded), (1, 0));
        assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn data_survives_closing_and_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let path = path.to_str().unwrap();
        let store = SqliteStore::open(path).await.unwrap();
        let j = job("r", None);
        let id = store_one(&store, "d1", vec![j.clone()]).await;
        assert_eq!(store.schema_version().await.unwrap(), MIGRATIONS.last().unwrap().0);
        store.close().await;

        let store = SqliteStore::open(path).await.unwrap();
        let detail = store.get_delivery(&id).await.unwrap().unwrap();
        assert_eq!(detail.jobs[0].job.id, j.id);
        assert_eq!(store.schema_version().await.unwrap(), MIGRATIONS.last().unwrap().0);
        let applied: i64 = store
            .read(|c| c.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).map_err(sql_error))
            .await
            .unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64, "nothing re-applied");
        drop(store);

        // Dropping (rather than closing) also commits what was accepted.
        let store = SqliteStore::open(path).await.unwrap();
        assert_eq!(store.insert_delivery(delivery("github", "d1"), vec![]).await.unwrap(), Insert::Duplicate { id });
        store_one(&store, "d2", vec![]).await;
        drop(store);
        let store = SqliteStore::open(path).await.unwrap();
        assert_eq!(store.list_deliveries(Default::default()).await.unwrap().items.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_all_commit_in_far_fewer_transactions() {
        let (_dir, store) = fresh().await;
        let store = Arc::new(store);
        let before = store.commit_count();
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .insert_delivery(
                            delivery("github", &format!("c{i}")),
                            vec![job("r", Some(&format!("k{}", i % 10)))],
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert!(matches!(task.await.unwrap().unwrap(), Insert::Stored { jobs: 1, .. }));
        }
        let commits = store.commit_count() - before;
        assert!(commits >= 1);
        assert!(commits < 500, "{commits} commits for 500 inserts");
        let page = store.list_deliveries(DeliveryQuery { limit: 1000, ..Default::default() }).await.unwrap();
        assert_eq!(page.items.len(), 500);
        // Ten keys: everything coalesced into ten queued jobs.
        assert_eq!(store.job_counts().await.unwrap().queued, 10);
    }

    #[tokio::test]
    async fn a_failing_write_does_not_undo_the_others_in_its_batch() {
        let (_dir, store) = fresh().await;
        let good = delivery("github", "good");
        let mut clash = delivery("github", "clash");
        clash.id = good.id.clone();
        let (a, b, c) = tokio::join!(
            store.insert_delivery(good.clone(), vec![job("r", None)]),
            store.insert_delivery(clash, vec![job("r", None)]),
            store.insert_delivery(delivery("github", "third"), vec![job("r", None)]),
        );
        assert!(matches!(a.unwrap(), Insert::Stored { .. }));
        assert!(matches!(b, Err(StoreError::Internal(_))));
        assert!(matches!(c.unwrap(), Insert::Stored { .. }));
        let names: Vec<_> =
            store.list_deliveries(Default::default()).await.unwrap().items.into_iter().map(|d| d.delivery).collect();
        assert_eq!(names.len(), 2);
        assert!(!names.contains(&"clash".to_string()));
        assert_eq!(store.job_counts().await.unwrap().queued, 2);
    }

    /// A write that fails after writing something: the batch is rolled back and run again with savepoints.
    #[test]
    fn a_batch_with_a_failing_write_runs_again_with_each_write_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("hookgate.db")).unwrap();
        migrate(&mut conn).unwrap();
        let mut answers = Vec::new();
        let mut batch: Vec<Box<dyn WriteOp>> = Vec::new();
        for (name, fail) in [("a", false), ("b", true), ("c", false)] {
            let row = DeliveryRow::encode(delivery("github", name)).unwrap();
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            let work = move |c: &Connection| {
                insert_delivery_tx(c, &row, &[job("r", None)])?;
                if fail {
                    return Err(internal("failed after writing"));
                }
                Ok(())
            };
            batch.push(Box::new(Op { work, result: None, reply }));
        }
        run_batch(&conn, &mut batch).unwrap();
        for op in batch {
            op.reply(Ok(()));
        }
        let outcomes: Vec<bool> = answers.into_iter().map(|mut a| a.try_recv().unwrap().is_ok()).collect();
        assert_eq!(outcomes, [true, false, true]);
        let stored: Vec<String> = conn
            .prepare("SELECT delivery FROM deliveries ORDER BY delivery")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, ["a", "c"]);
        let jobs: i64 = conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0)).unwrap();
        assert_eq!(jobs, 2, "the failed write's job was undone too");
    }

    #[tokio::test]
    async fn a_large_body_is_stored_compressed_and_read_back_as_received() {
        let (dir, store) = fresh().await;
        let mut d = delivery("github", "big");
        d.body = Bytes::from(std::fs::read("bench/push.json").unwrap());
        store.insert_delivery(d.clone(), vec![job("r", None)]).await.unwrap();
        let raw = Connection::open(dir.path().join("nested/dir/hookgate.db")).unwrap();
        let (codec, stored): (i64, usize) = raw
            .query_row("SELECT body_codec, length(body) FROM deliveries WHERE id = ?1", [&d.id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(codec, BodyCodec::Lz4 as i64);
        assert!(stored * 3 < d.body.len(), "{stored} bytes on disk for {}", d.body.len());
        assert_eq!(store.get_delivery(&d.id).await.unwrap().unwrap().delivery.body, d.body);
        let claimed = store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
        assert_eq!(claimed[0].delivery.body, d.body, "the worker sees the body as received");
    }

    #[tokio::test]
    async fn under_steady_writes_the_wal_starts_over_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let options = SqliteOptions { wal_limit: 512 << 10, ..Default::default() };
        let store = Arc::new(SqliteStore::open_with(path.to_str().unwrap(), options).await.unwrap());
        let wal = dir.path().join("hookgate.db-wal");
        // Incompressible 4 KiB bodies: about 40 MiB of WAL over the run, written without pause.
        let mut largest = 0;
        for round in 0..100 {
            let writes = (0..100).map(|i| {
                let mut d = delivery("github", &format!("{round}-{i}"));
                d.body = codec::incompressible(4096, round * 100 + i + 1);
                let store = store.clone();
                async move { store.insert_delivery(d, vec![]).await.unwrap() }
            });
            futures_util::future::join_all(writes).await;
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        assert!(largest < 12 << 20, "the WAL grew to {largest} bytes");
    }

    #[tokio::test]
    async fn a_locked_database_is_unavailable_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let options = SqliteOptions { busy_timeout: Duration::from_millis(100), readers: 2, ..Default::default() };
        let store = SqliteStore::open_with(path.to_str().unwrap(), options).await.unwrap();
        store_one(&store, "before", vec![]).await;
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let locked = store.insert_delivery(delivery("github", "d1"), vec![]).await;
        assert!(matches!(locked, Err(StoreError::Unavailable(_))), "{locked:?}");
        assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
        // Readers are not blocked by a writer in WAL mode.
        assert_eq!(store.list_deliveries(Default::default()).await.unwrap().items.len(), 1);
        other.execute_batch("ROLLBACK").unwrap();
        store.ping().await.unwrap();
        store_one(&store, "d1", vec![]).await;
    }

    #[tokio::test]
    async fn a_missing_database_file_fails_the_ping() {
        let (dir, store) = fresh().await;
        store.ping().await.unwrap();
        std::fs::remove_dir_all(dir.path().join("nested")).unwrap();
        assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    }

    #[tokio::test]
    async fn an_in_memory_path_is_refused() {
        assert!(SqliteStore::open(":memory:").await.is_err());
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_fresh_database_and_its_wal_and_shm_files_are_readable_by_their_owner_only() {
        let (dir, store) = fresh().await;
        store_one(&store, "d1", vec![job("r", None)]).await;
        let db = dir.path().join("nested/dir/hookgate.db");
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", db.display()));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }

    #[tokio::test]
    async fn an_existing_database_readable_by_others_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hookgate.db");
        let store = SqliteStore::open(db.to_str().unwrap()).await.unwrap();
        let id = store_one(&store, "d1", vec![]).await;
        store.close().await;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::open(db.to_str().unwrap()).await.unwrap();
        assert_eq!(mode(&db), 0o600);
        assert!(store.get_delivery(&id).await.unwrap().is_some(), "the data is still there");
        store_one(&store, "d2", vec![]).await;
        assert_eq!(mode(&dir.path().join("hookgate.db-wal")), 0o600);
    }
}
