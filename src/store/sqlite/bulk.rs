//! The SQLite store's bulk operations (retry, cancel, replay by filter) and their idempotency keys. Each write
//! runs on the writer thread inside the batch transaction, so the key commits with its action or not at all,
//! and the single writer serialises two requests that carry one key.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::queries::load_delivery;
use super::writes::insert_jobs_tx;
use super::{internal, sql_error};
use crate::store::*;

/// Claim `key` for this request: `None` when it is new (or expired) and now taken, else the stored answer.
fn take_key(conn: &Connection, key: &IdempotencyKey, now: Millis) -> Result<Option<BulkAnswer>, StoreError> {
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE key = ?1 AND created_at < ?2")
        .map_err(sql_error)?
        .execute(params![key.key, idempotency_cutoff(now)])
        .map_err(sql_error)?;
    let taken = conn
        .prepare_cached(
            "INSERT INTO idempotency_keys (key, fingerprint, count, jobs, more, created_at)
             VALUES (?1, ?2, 0, 0, 0, ?3) ON CONFLICT (key) DO NOTHING",
        )
        .map_err(sql_error)?
        .execute(params![key.key, key.fingerprint, now])
        .map_err(sql_error)?;
    if taken == 1 {
        return Ok(None);
    }
    stored_answer(conn, key, now)?
        .ok_or_else(|| internal("an idempotency key vanished inside its transaction"))
        .map(Some)
}

/// The answer stored under `key`, if it is known and not expired.
pub(super) fn stored_answer(
    conn: &Connection,
    key: &IdempotencyKey,
    now: Millis,
) -> Result<Option<BulkAnswer>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT fingerprint, count, jobs, more FROM idempotency_keys WHERE key = ?1 AND created_at >= ?2",
        )
        .map_err(sql_error)?
        .query_row(params![key.key, idempotency_cutoff(now)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, bool>(3)?))
        })
        .optional()
        .map_err(sql_error)?;
    Ok(row.map(|(fingerprint, count, jobs, more)| {
        BulkAnswer::stored(key, &fingerprint, BulkOutcome { count: count as u64, jobs: jobs as u64, more })
    }))
}

fn record_outcome(conn: &Connection, key: &Option<IdempotencyKey>, outcome: BulkOutcome) -> Result<(), StoreError> {
    let Some(key) = key else { return Ok(()) };
    conn.prepare_cached("UPDATE idempotency_keys SET count = ?2, jobs = ?3, more = ?4 WHERE key = ?1")
        .map_err(sql_error)?
        .execute(params![key.key, outcome.count as i64, outcome.jobs as i64, outcome.more])
        .map_err(sql_error)?;
    Ok(())
}

pub(super) fn bulk_jobs_tx(conn: &Connection, op: &BulkJobs) -> Result<BulkAnswer, StoreError> {
    if let Some(key) = &op.key {
        if let Some(answer) = take_key(conn, key, op.now)? {
            return Ok(answer);
        }
    }
    // Only the filters in use appear in the SQL; `status` first, so the (status, id) index serves the order.
    let mut filter = String::new();
    let mut args: Vec<Value> = vec![Value::Text(op.status.as_str().into())];
    if let Some(route) = &op.route {
        filter.push_str(" AND route = ?");
        args.push(Value::Text(route.clone()));
    }
    for (bound, value) in [(" AND updated_at >= ?", op.since), (" AND updated_at < ?", op.until)] {
        if let Some(at) = value {
            filter.push_str(bound);
            args.push(Value::Integer(at));
        }
    }
    args.push(Value::Integer(op.limit as i64 + 1));
    let mut ids = conn
        .prepare(&format!("SELECT id FROM jobs WHERE status = ?{filter} ORDER BY id LIMIT ?"))
        .map_err(sql_error)?
        .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    let more = ids.len() > op.limit;
    ids.truncate(op.limit);
    let ids = serde_json::to_string(&ids).map_err(internal)?;
    let changed = match op.action {
        BulkAction::Retry => conn
            .prepare_cached(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = ?2, last_error = NULL,
                                 lease_owner = NULL, lease_until = NULL, updated_at = ?2
                 WHERE id IN (SELECT value FROM json_each(?1)) AND status = ?3",
            )
            .map_err(sql_error)?
            .execute(params![ids, op.now, op.status.as_str()]),
        BulkAction::Cancel => conn
            .prepare_cached(
                "UPDATE jobs SET status = 'cancelled', last_error = ?3, lease_owner = NULL, lease_until = NULL,
                                 updated_at = ?2
                 WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'queued'",
            )
            .map_err(sql_error)?
            .execute(params![ids, op.now, CANCELLED_BY_OPERATOR]),
    }
    .map_err(sql_error)?;
    let outcome = BulkOutcome { count: changed as u64, jobs: 0, more };
    record_outcome(conn, &op.key, outcome)?;
    Ok(BulkAnswer::Done(outcome))
}

pub(super) fn replay_tx(conn: &Connection, replay: &BulkReplay) -> Result<BulkAnswer, StoreError> {
    if let Some(key) = &replay.key {
        if let Some(answer) = take_key(conn, key, replay.now)? {
            return Ok(answer);
        }
    }
    let mut outcome = BulkOutcome { more: replay.more, ..Default::default() };
    let mut exists = conn.prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1").map_err(sql_error)?;
    for (delivery_id, jobs) in &replay.plan {
        // Purged since it was planned: not replayed.
        if !exists.exists([delivery_id]).map_err(sql_error)? {
            continue;
        }
        outcome.count += 1;
        outcome.jobs += insert_jobs_tx(conn, delivery_id, jobs, replay.now)? as u64;
    }
    record_outcome(conn, &replay.key, outcome)?;
    Ok(BulkAnswer::Done(outcome))
}

pub(super) fn find_deliveries_tx(
    conn: &Connection,
    f: &DeliveryFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let mut filter = String::new();
    let mut args: Vec<Value> = Vec::new();
    for (column, value) in [("source", &f.source), ("event", &f.event)] {
        if let Some(v) = value {
            filter.push_str(&format!(" AND {column} = ?"));
            args.push(Value::Text(v.clone()));
        }
    }
    super::queries::received_between(f.since, f.until, &mut filter, &mut args);
    if let Some(after) = after {
        filter.push_str(" AND id > ?");
        args.push(Value::Text(after.to_string()));
    }
    args.push(Value::Integer(limit as i64));
    let ids = conn
        .prepare(&format!("SELECT id FROM deliveries WHERE 1 = 1{filter} ORDER BY id LIMIT ?"))
        .map_err(sql_error)?
        .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    // One read transaction: a delivery found above is still there.
    ids.iter().filter_map(|id| load_delivery(conn, id).transpose()).collect()
}

/// Forget the idempotency keys older than [`IDEMPOTENCY_TTL`] (part of the purge).
pub(super) fn forget_keys_tx(conn: &Connection, now: Millis) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")
        .map_err(sql_error)?
        .execute([idempotency_cutoff(now)])
        .map_err(sql_error)?;
    Ok(())
}
