//! The PostgreSQL store's bulk operations (retry, cancel, replay by filter) and their idempotency keys.
//!
//! Each is one transaction that first inserts its key (`ON CONFLICT DO NOTHING`): a second request with the
//! same key, from any instance, waits on that row until the first commits, then finds the stored answer and
//! does nothing. Jobs are locked `SKIP LOCKED`: a queued job being claimed at that moment becomes running, and
//! is left to finish like any running job; a bulk request never waits on, or deadlocks with, the queue.

use std::collections::HashSet;

use tokio_postgres::types::ToSql;

use super::{insert_jobs_tx, pg_error, stored_delivery, PostgresStore, DELIVERY_COLUMNS};
use crate::store::*;

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Claim `key` for this request: `None` when it is new (or expired) and now taken, else the stored answer.
async fn take_key(tx: &Tx<'_>, key: &IdempotencyKey, now: Millis) -> Result<Option<BulkAnswer>, StoreError> {
    tx.execute(
        "DELETE FROM idempotency_keys WHERE key = $1 AND created_at < $2",
        &[&key.key, &idempotency_cutoff(now)],
    )
    .await
    .map_err(pg_error)?;
    let taken = tx
        .execute(
            "INSERT INTO idempotency_keys (key, fingerprint, count, jobs, more, created_at)
             VALUES ($1, $2, 0, 0, false, $3) ON CONFLICT (key) DO NOTHING",
            &[&key.key, &key.fingerprint, &now],
        )
        .await
        .map_err(pg_error)?;
    if taken == 1 {
        return Ok(None);
    }
    // The other request committed (else the insert would still wait): its answer is visible now.
    stored_answer(&**tx, key, now)
        .await?
        .ok_or_else(|| StoreError::Unavailable("an idempotency key vanished; retry".into()))
        .map(Some)
}

pub(super) async fn stored_answer(
    client: &impl tokio_postgres::GenericClient,
    key: &IdempotencyKey,
    now: Millis,
) -> Result<Option<BulkAnswer>, StoreError> {
    let row = client
        .query_opt(
            "SELECT fingerprint, count, jobs, more FROM idempotency_keys WHERE key = $1 AND created_at >= $2",
            &[&key.key, &idempotency_cutoff(now)],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.map(|r| {
        let outcome = BulkOutcome { count: r.get::<_, i64>(1) as u64, jobs: r.get::<_, i64>(2) as u64, more: r.get(3) };
        BulkAnswer::stored(key, r.get(0), outcome)
    }))
}

async fn record_outcome(tx: &Tx<'_>, key: &Option<IdempotencyKey>, outcome: BulkOutcome) -> Result<(), StoreError> {
    let Some(key) = key else { return Ok(()) };
    tx.execute(
        "UPDATE idempotency_keys SET count = $2, jobs = $3, more = $4 WHERE key = $1",
        &[&key.key, &(outcome.count as i64), &(outcome.jobs as i64), &outcome.more],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

impl PostgresStore {
    pub(super) async fn bulk_jobs_tx(&self, op: BulkJobs) -> Result<BulkAnswer, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if let Some(key) = &op.key {
            if let Some(answer) = take_key(&tx, key, op.now).await? {
                tx.rollback().await.map_err(pg_error)?;
                return Ok(answer);
            }
        }
        let status = op.status.as_str();
        let rows = tx
            .query(
                "SELECT id FROM jobs
                 WHERE status = $1 AND ($2::text IS NULL OR route = $2)
                   AND ($3::bigint IS NULL OR updated_at >= $3) AND ($4::bigint IS NULL OR updated_at < $4)
                 ORDER BY id LIMIT $5
                 FOR UPDATE SKIP LOCKED",
                &[&status, &op.route, &op.since, &op.until, &(op.limit as i64 + 1)],
            )
            .await
            .map_err(pg_error)?;
        let more = rows.len() > op.limit;
        let ids: Vec<&str> = rows.iter().take(op.limit).map(|r| r.get(0)).collect();
        let changed = match op.action {
            BulkAction::Retry => {
                tx.execute(
                    "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, last_error = NULL,
                                 lease_owner = NULL, lease_until = NULL, updated_at = $2
                 WHERE id = ANY($1) AND status = $3",
                    &[&ids, &op.now, &status],
                )
                .await
            }
            BulkAction::Cancel => {
                tx.execute(
                    "UPDATE jobs SET status = 'cancelled', last_error = $3, lease_owner = NULL, lease_until = NULL,
                                 updated_at = $2
                 WHERE id = ANY($1) AND status = 'queued'",
                    &[&ids, &op.now, &CANCELLED_BY_OPERATOR],
                )
                .await
            }
        }
        .map_err(pg_error)?;
        let outcome = BulkOutcome { count: changed, jobs: 0, more };
        record_outcome(&tx, &op.key, outcome).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(BulkAnswer::Done(outcome))
    }

    pub(super) async fn replay_tx(&self, replay: BulkReplay) -> Result<BulkAnswer, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if let Some(key) = &replay.key {
            if let Some(answer) = take_key(&tx, key, replay.now).await? {
                tx.rollback().await.map_err(pg_error)?;
                return Ok(answer);
            }
        }
        // Hold the planned deliveries that are still stored: a purge skips them until this commits.
        let planned: Vec<&str> = replay.plan.iter().map(|(id, _)| id.as_str()).collect();
        let stored: HashSet<String> = tx
            .query("SELECT id FROM deliveries WHERE id = ANY($1) FOR KEY SHARE", &[&planned])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut outcome = BulkOutcome { more: replay.more, ..Default::default() };
        // Jobs without a coalesce key merge with nothing: one statement inserts them all.
        let (mut ids, mut deliveries, mut routes, mut run_at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (delivery_id, jobs) in replay.plan.iter().filter(|(id, _)| stored.contains(id)) {
            outcome.count += 1;
            let (keyed, unkeyed): (Vec<NewJob>, Vec<NewJob>) =
                jobs.iter().cloned().partition(|j| j.coalesce_key.is_some());
            for job in unkeyed {
                ids.push(job.id);
                deliveries.push(delivery_id.as_str());
                routes.push(job.route);
                run_at.push(job.run_at);
            }
            if !keyed.is_empty() {
                outcome.jobs += insert_jobs_tx(&tx, delivery_id, &keyed, replay.now).await? as u64;
            }
        }
        if !ids.is_empty() {
            let params: [&(dyn ToSql + Sync); 5] = [&ids, &deliveries, &routes, &run_at, &replay.now];
            outcome.jobs += tx
                .execute(
                    "INSERT INTO jobs (id, delivery_id, route, coalesce_key, status, attempts, run_at, created_at,
                                       updated_at, merged)
                     SELECT u.id, u.delivery_id, u.route, NULL, 'queued', 0, u.run_at, $5, $5, 0
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u (id, delivery_id, route, run_at)",
                    &params,
                )
                .await
                .map_err(pg_error)?;
        }
        record_outcome(&tx, &replay.key, outcome).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(BulkAnswer::Done(outcome))
    }

    pub(super) async fn find_deliveries_tx(
        &self,
        f: &DeliveryFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR event = $2)
                       AND ($3::bigint IS NULL OR received_at >= $3) AND ($4::bigint IS NULL OR received_at < $4)
                       AND ($5::text IS NULL OR id > $5)
                     ORDER BY id LIMIT $6"
                ),
                &[&f.source, &f.event, &f.since, &f.until, &after, &(limit as i64)],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(stored_delivery).collect()
    }
}

/// Forget the idempotency keys older than [`IDEMPOTENCY_TTL`] (part of the purge).
pub(super) async fn forget_keys(client: &impl tokio_postgres::GenericClient, now: Millis) -> Result<(), StoreError> {
    client
        .execute("DELETE FROM idempotency_keys WHERE created_at < $1", &[&idempotency_cutoff(now)])
        .await
        .map_err(pg_error)?;
    Ok(())
}
