//! Opening the SQLite file: owner-only permissions, the connections' pragmas, and the schema migrations.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::{internal, sql_error, unavailable, SqliteOptions};
use crate::store::{now_ms, StoreError};

/// Versioned schema steps, applied in order at open; a step never changes once released.
pub(super) const MIGRATIONS: &[(i64, Step)] = &[
    (1, Step::Sql(include_str!("../migrations/sqlite/0001_init.sql"))),
    (2, Step::Sql(include_str!("../migrations/sqlite/0002_claim_order.sql"))),
    (3, Step::Sql(include_str!("../migrations/sqlite/0003_body_codec.sql"))),
    (4, Step::Sql(include_str!("../migrations/sqlite/0004_replay_key.sql"))),
    (5, Step::Sql(include_str!("../migrations/sqlite/0005_job_counts.sql"))),
    (
        6,
        Step::EditSchema {
            sql: include_str!("../migrations/sqlite/0006_cancelled.sql"),
            proof: "SELECT instr(sql, '''cancelled''') > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'",
        },
    ),
    (7, Step::Sql(include_str!("../migrations/sqlite/0007_control.sql"))),
    (8, Step::Sql(include_str!("../migrations/sqlite/0008_queue_oldest.sql"))),
    (9, Step::Sql(include_str!("../migrations/sqlite/0009_stats.sql"))),
    (10, Step::Sql(include_str!("../migrations/sqlite/0010_search.sql"))),
    (11, Step::Sql(include_str!("../migrations/sqlite/0011_leases.sql"))),
    (12, Step::Sql(include_str!("../migrations/sqlite/0012_lean_deliveries.sql"))),
    // Version 13 is PostgreSQL's LZ4 compression of bodies; SQLite compresses them itself (`codec`).
];

/// One schema step.
pub(super) enum Step {
    Sql(&'static str),
    /// SQL that also edits table definitions in `sqlite_schema` itself, to loosen a constraint that SQLite
    /// cannot alter (https://www.sqlite.org/lang_altertable.html section 7): it runs with `writable_schema` on,
    /// then `schema_version` grows by one so every connection reads the schema again. `proof` answers 1 once
    /// the edit took; a definition that did not read as expected stops the migration instead.
    EditSchema {
        sql: &'static str,
        proof: &'static str,
    },
}

impl Step {
    fn apply(&self, tx: &Connection) -> Result<(), StoreError> {
        match self {
            Step::Sql(sql) => tx.execute_batch(sql).map_err(sql_error),
            Step::EditSchema { sql, proof } => {
                tx.pragma_update(None, "writable_schema", true).map_err(sql_error)?;
                let edited = tx.execute_batch(sql).map_err(sql_error).and_then(|()| {
                    let version: i64 =
                        tx.pragma_query_value(None, "schema_version", |r| r.get(0)).map_err(sql_error)?;
                    tx.pragma_update(None, "schema_version", version + 1).map_err(sql_error)
                });
                tx.pragma_update(None, "writable_schema", false).map_err(sql_error)?;
                edited?;
                let took: bool = tx.query_row(proof, [], |r| r.get(0)).map_err(sql_error)?;
                if !took {
                    return Err(internal(format!("a schema edit did not apply (`{proof}` is false)")));
                }
                Ok(())
            }
        }
    }
}

pub(super) fn configure_writer(conn: &Connection, options: &SqliteOptions) -> Result<(), StoreError> {
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
    // Every insert walks the unique index on (source, delivery) at a random leaf: with SQLite's default 2 MB
    // page cache those leaves were read back from the file again and again under load.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB).map_err(sql_error)?;
    Ok(())
}

/// The writer's page cache, in KiB as a negative `cache_size` means; it fills only as pages are touched.
const WRITER_CACHE_KIB: i64 = -16 * 1024;

pub(super) fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
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
pub(super) fn owner_only(path: &Path) -> Result<(), StoreError> {
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
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, i64::MAX)
}

/// Apply the migrations not yet recorded up to version `last`, in one transaction (tests build old schemas).
pub(super) fn migrate_to(conn: &mut Connection, last: i64) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(sql_error)?;
    let current: i64 =
        tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(sql_error)?;
    for (version, step) in MIGRATIONS.iter().filter(|(v, _)| *v > current && *v <= last) {
        step.apply(&tx)?;
        tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", params![version, now_ms()])
            .map_err(sql_error)?;
    }
    tx.commit().map_err(sql_error)
}
