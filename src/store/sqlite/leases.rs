//! The SQLite store's named leases and the bulk "which delivery ids are stored" lookup (GitHub recovery).

use std::collections::HashSet;

use rusqlite::{params, Connection};

use super::sql_error;
use crate::store::{Millis, StoreError};

/// `ids` is a JSON array of delivery ids: one statement, whatever their number.
pub(super) fn stored_deliveries_tx(conn: &Connection, source: &str, ids: &str) -> Result<HashSet<String>, StoreError> {
    conn.prepare_cached(
        "SELECT delivery FROM deliveries WHERE source = ?1 AND delivery IN (SELECT value FROM json_each(?2))",
    )
    .map_err(sql_error)?
    .query_map(params![source, ids], |r| r.get::<_, String>(0))
    .map_err(sql_error)?
    .collect::<rusqlite::Result<_>>()
    .map_err(sql_error)
}

/// Runs on the single writer thread, so two takers are serialised; the upsert's WHERE decides.
pub(super) fn take_lease_tx(
    conn: &Connection,
    name: &str,
    owner: &str,
    until: Millis,
    now: Millis,
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.until < ?4 OR leases.owner = excluded.owner",
        )
        .map_err(sql_error)?
        .execute(params![name, owner, until, now])
        .map_err(sql_error)?;
    Ok(changed > 0)
}
