//! The SQLite store's writes, each run on the writer thread inside the batch transaction.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use super::{internal, sql_error};
use crate::store::codec::{self, BodyCodec};
use crate::store::row::{self, headers_to_text};
use crate::store::*;

/// A delivery row as the writer stores it, encoded by the caller (off the writer's serial path). The
/// headers and body as received are taken out of `delivery`: only their encoded forms wait for the writer.
pub(super) struct DeliveryRow {
    delivery: Delivery,
    headers: String,
    codec: BodyCodec,
    body: Bytes,
}

impl DeliveryRow {
    pub(super) fn encode(mut delivery: Delivery) -> Result<Self, StoreError> {
        let headers = headers_to_text(&std::mem::take(&mut delivery.headers))?;
        let (codec, body) = codec::encode(&std::mem::take(&mut delivery.body));
        Ok(DeliveryRow { delivery, headers, codec, body })
    }
}

pub(super) fn insert_delivery_tx(conn: &Connection, row: &DeliveryRow, jobs: &[NewJob]) -> Result<Insert, StoreError> {
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
fn first_copy(conn: &Connection, d: &Delivery) -> Result<String, StoreError> {
    for (column, value) in row::dedup_keys(d) {
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
    Err(row::id_taken(d))
}

/// Insert jobs for a delivery, merging keyed jobs into a queued one of the same route and key.
pub(super) fn insert_jobs_tx(
    conn: &Connection,
    delivery_id: &str,
    jobs: &[NewJob],
    now: Millis,
) -> Result<usize, StoreError> {
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
pub(super) const CLAIM_EXPIRED: &str = "SELECT id, route, attempts, updated_at, COALESCE(lease_owner, '') FROM jobs
     WHERE status = 'running' AND lease_until < ?2 AND route IN (SELECT value FROM json_each(?1))
     ORDER BY run_at, id";

/// Due queued jobs in queue order, straight from the `jobs_queue` index (no sort of the backlog).
pub(super) const CLAIM_QUEUED: &str = "SELECT id, route, coalesce_key FROM jobs
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

pub(super) fn claim_tx(conn: &Connection, claim: &Claim) -> Result<Vec<LeasedJob>, StoreError> {
    let routes = serde_json::to_string(&claim.routes).map_err(internal)?;
    settle_expired_tx(conn, claim, &routes)?;
    // The routes' shared state and their jobs running on every instance decide what each may start now.
    let mut states = super::control::load_route_states(conn, &routes)?;
    let limited: Vec<&String> =
        claim.routes.iter().filter(|r| claim.limits.get(*r).is_some_and(|l| l.concurrency.is_some())).collect();
    let running = match limited.is_empty() {
        true => HashMap::new(),
        false => super::control::running_counts(conn, &serde_json::to_string(&limited).map_err(internal)?, claim.now)?,
    };
    let plan = control::plan_claim(&claim.routes, &claim.limits, &states, &running, claim.now);

    let mut picked: Vec<Picked> = Vec::new();
    // A key is decided once per claim: taken by an earlier candidate, or held by a live lease.
    let mut keys_seen: HashSet<(String, String)> = HashSet::new();
    for capped in &plan.capped {
        let room = claim.limit - picked.len();
        if room == 0 {
            break;
        }
        let names = serde_json::to_string(&[&capped.route]).map_err(internal)?;
        let before = picked.len();
        pick_queued(conn, claim, &names, before + capped.cap.min(room), &mut keys_seen, &mut picked)?;
        if capped.probe && picked.len() > before {
            picked[before].probe = true;
            let state = states.entry(capped.route.clone()).or_insert_with(|| control::RouteState::new(&capped.route));
            state.probe_started(claim.lease_for(&capped.route), claim.now);
            super::control::save_route_state(conn, state)?;
        }
    }
    if !plan.uncapped.is_empty() && picked.len() < claim.limit {
        let names = serde_json::to_string(&plan.uncapped).map_err(internal)?;
        pick_queued(conn, claim, &names, claim.limit, &mut keys_seen, &mut picked)?;
    }

    if picked.is_empty() {
        return Ok(Vec::new());
    }
    // One statement leases them all.
    let ids = serde_json::to_string(&picked.iter().map(|p| &p.id).collect::<Vec<_>>()).map_err(internal)?;
    let mut leased: HashMap<String, (u32, Millis, String)> = HashMap::with_capacity(picked.len());
    {
        let mut update = conn
            .prepare_cached(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?2,
                                 lease_until = COALESCE((SELECT value FROM json_each(?5) WHERE key = jobs.route), ?3),
                                 updated_at = ?4
                 WHERE id IN (SELECT value FROM json_each(?1))
                 RETURNING id, attempts, created_at, delivery_id",
            )
            .map_err(sql_error)?;
        let mut rows = update
            .query(params![ids, claim.owner, claim.lease_until, claim.now, claim.leases_json()])
            .map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            leased.insert(
                row.get(0).map_err(sql_error)?,
                (row.get(1).map_err(sql_error)?, row.get(2).map_err(sql_error)?, row.get(3).map_err(sql_error)?),
            );
        }
    }
    Ok(picked
        .into_iter()
        .filter_map(|Picked { id, route, coalesce_key, probe }| {
            let (attempt, created_at, delivery_id) = leased.remove(&id)?;
            Some(LeasedJob { id, route, coalesce_key, attempt, created_at, delivery_id, probe })
        })
        .collect())
}

/// A job a claim chose, before it is leased.
struct Picked {
    id: String,
    route: String,
    coalesce_key: Option<String>,
    probe: bool,
}

/// Add due queued jobs of `routes` (a JSON array) to `picked` in queue order until it holds `up_to`, read from
/// the `jobs_queue` index one row at a time: the cost of a claim does not grow with the backlog.
fn pick_queued(
    conn: &Connection,
    claim: &Claim,
    routes: &str,
    up_to: usize,
    keys_seen: &mut HashSet<(String, String)>,
    picked: &mut Vec<Picked>,
) -> Result<(), StoreError> {
    let mut queued = conn.prepare_cached(CLAIM_QUEUED).map_err(sql_error)?;
    let mut key_busy = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs
                            WHERE route = ?1 AND coalesce_key = ?2 AND id <> ?3
                              AND status = 'running' AND lease_until >= ?4)",
        )
        .map_err(sql_error)?;
    let mut rows = queued.query(params![routes, claim.now]).map_err(sql_error)?;
    while picked.len() < up_to {
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
            let busy: bool = key_busy.query_row(params![route, k, id, claim.now], |r| r.get(0)).map_err(sql_error)?;
            if busy {
                continue;
            }
        }
        picked.push(Picked { id, route, coalesce_key: key, probe: false });
    }
    Ok(())
}

/// A job just leased by `claim_tx`; its delivery is read afterwards on a reader connection.
pub(super) struct LeasedJob {
    pub(super) id: String,
    pub(super) route: String,
    pub(super) coalesce_key: Option<String>,
    pub(super) attempt: u32,
    pub(super) created_at: Millis,
    pub(super) delivery_id: String,
    pub(super) probe: bool,
}

pub(super) fn finish_tx(
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

/// Where a purge has got to: the id of the last delivery it looked at, in id (and so arrival) order.
#[derive(Debug, Clone)]
pub(super) struct PurgeCursor(String);

impl PurgeCursor {
    /// Before the first delivery.
    pub(super) fn start() -> PurgeCursor {
        PurgeCursor(String::new())
    }
}

/// The next deliveries past the cursor received before the cutoff, in id order (the primary key: an id starts
/// with the time it was made, just after `received_at`, so `?1` is [`id_floor`] of the cutoff), each with
/// whether it still has unfinished jobs. A fixed number of entries per batch, so deliveries kept back by a
/// queued job are stepped over once per purge, not rescanned by every batch.
pub(super) const PURGE_CANDIDATES: &str = "SELECT d.id, d.received_at < ?2,
            EXISTS (SELECT 1 FROM jobs j WHERE j.delivery_id = d.id AND j.status IN ('queued', 'running'))
     FROM deliveries d
     WHERE d.id < ?1 AND d.id > ?3
     ORDER BY d.id LIMIT ?4";

/// One purge batch: delete what is done among the next [`PURGE_BATCH`] candidates (their jobs and attempts
/// go by `ON DELETE CASCADE`). Returns (deleted, candidates seen, where to go on).
pub(super) fn purge_batch_tx(
    conn: &Connection,
    before: Millis,
    cursor: &PurgeCursor,
) -> Result<(u64, usize, PurgeCursor), StoreError> {
    let mut done: Vec<String> = Vec::new();
    let mut seen = 0;
    let mut next = cursor.clone();
    {
        let mut candidates = conn.prepare_cached(PURGE_CANDIDATES).map_err(sql_error)?;
        let mut rows = candidates
            .query(params![id_floor(before), before, cursor.0.as_str(), PURGE_BATCH as i64])
            .map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            seen += 1;
            let id: String = row.get(0).map_err(sql_error)?;
            let (expired, unfinished): (bool, bool) = (row.get(1).map_err(sql_error)?, row.get(2).map_err(sql_error)?);
            if expired && !unfinished {
                done.push(id.clone());
            }
            next = PurgeCursor(id);
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
