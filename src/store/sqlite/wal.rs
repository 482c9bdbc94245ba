//! Keeping the SQLite WAL bounded: checkpoints copy it into the database file on a thread of their own, and
//! under steady load the writer is asked to let it start over from the top.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::Connection;

/// The least time between two checkpoints. Each checkpoint ends by syncing the pages it copied, and the
/// writer's next WAL sync waits behind that flush: short pauses keep every flush small. At 10,000 requests/s,
/// 100 ms put p99 at 31–39 ms, 10 ms at 7–8 ms (bench/RESULTS.md, 2026-12-07), for ~10 % less peak ingest
/// (a page written by many batches, an index leaf, is copied more often).
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(10);

/// Copy committed WAL frames into the database file on its own thread and connection, so the writer never
/// spends a batch's time on it (SQLite's automatic checkpoint would run inside the committing thread).
/// PASSIVE never blocks the writer or readers. But the writer keeps appending while it copies, so under
/// steady load the WAL is never found fully copied, never starts over, and would grow without end. Once it
/// holds `restart_frames` frames, this catches up and then asks the writer to rewind (see [`rewind_wal`]).
pub(super) fn checkpoint_loop(
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
        // Let a few commits accumulate: a page written by several batches (an index leaf) is copied once.
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
pub(super) fn rewind_wal(conn: &Connection) {
    let _ = checkpoint_passive(conn);
}

/// Copy what the WAL holds into the database file as far as readers allow, without waiting for any lock;
/// returns how many frames the WAL holds. A failure is only logged: the next checkpoint tries again.
fn checkpoint_passive(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
        .inspect_err(|e| tracing::debug!(error = %e, "WAL checkpoint did not run; the next one will"))
}
