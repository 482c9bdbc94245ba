//! The SQLite writer thread: every write waiting when it becomes free joins one transaction (group commit),
//! and a batch in which one write fails runs again with each write in its own savepoint.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::wal::rewind_wal;
use super::{internal, sql_error};
use crate::metrics::{STORE_BATCH_SIZE, STORE_COMMIT_DURATION};
use crate::store::StoreError;

/// The most commands one transaction takes; bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 256;

pub(super) fn writer_gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

/// One command for the writer, type-erased so one channel carries every kind of write.
pub(super) trait WriteOp: Send {
    /// Run inside the batch transaction; false if it failed. May run twice: a batch in which one command
    /// failed is rolled back and run again with each command in its own savepoint.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answer the caller once the batch's fate is known.
    fn reply(self: Box<Self>, committed: Result<(), &StoreError>);
}

pub(super) struct Op<T, F> {
    pub(super) work: F,
    pub(super) result: Option<Result<T, StoreError>>,
    pub(super) reply: oneshot::Sender<Result<T, StoreError>>,
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
            (_, Err(e)) => Err(e.clone()),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => Err(internal("a store write did not run")),
        };
        // The caller may have given up (its future was dropped); the write stands either way.
        let _ = this.reply.send(answer);
    }
}

pub(super) fn writer_loop(
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

/// Run every command in one IMMEDIATE transaction and commit once. Commands almost never fail (a duplicate
/// delivery is an answer, not an error), so they first run back to back; only when one fails is the batch
/// rolled back and run again with each command in its own savepoint, so the failure undoes nothing else.
pub(super) fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteOp>]) -> Result<(), StoreError> {
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
