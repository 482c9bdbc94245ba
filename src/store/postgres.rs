//! PostgreSQL store: several hookgate instances share one queue (SKIP LOCKED claims, leases, advisory locks).
//!
//! Ingest is group-committed (`postgres/batch.rs`): deliveries whose jobs have no coalesce key, from
//! concurrent requests, are written by one statement (one transaction) on a pooled connection, and each
//! caller is answered after that COMMIT; a batch that fails for one request's sake is written again one
//! request at a time. Job outcomes are group-committed the same way (`postgres/outcomes.rs`), both through
//! `postgres/group.rs`. A claim is one short transaction: routes that neither coalesce nor limit are claimed side
//! by side under the claim lock taken shared (one `SKIP LOCKED` statement); the others under it taken exclusively,
//! their reads pipelined. Every claim statement is prepared once per connection. Every other write (a delivery with keyed jobs, bulk operations) is
//! one transaction of its own, and PostgreSQL's own group commit batches the WAL flushes of concurrent ones.
//! A lost server answers `Unavailable` and the pool reconnects by itself. Connections use TLS as the URL's
//! `sslmode` asks, the way libpq reads it (`postgres_tls`). The bulk operations (retry, cancel and replay by
//! filter, with idempotency keys) are in `postgres/bulk.rs`.

mod batch;
mod bulk;
mod group;
mod leases;
mod outcomes;
mod stats;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::postgres_control;
use super::postgres_tls::connect_options;
use super::row::{self, headers_from_text, headers_to_text, page, page_limit, JobRow, JOB_COLUMNS, JOB_FROM};
use super::*;

/// Versioned schema steps; a step never changes once released.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_claim_order.sql")),
    // Version 3 is SQLite's body codec; PostgreSQL compresses large values itself (TOAST).
    (4, include_str!("migrations/postgres/0004_replay_key.sql")),
    (5, include_str!("migrations/postgres/0005_job_counts.sql")),
    (6, include_str!("migrations/postgres/0006_cancelled.sql")),
    (7, include_str!("migrations/postgres/0007_control.sql")),
    (8, include_str!("migrations/postgres/0008_queue_oldest.sql")),
    (9, include_str!("migrations/postgres/0009_stats.sql")),
    (10, include_str!("migrations/postgres/0010_search.sql")),
    (11, include_str!("migrations/postgres/0011_leases.sql")),
    // Version 12 is SQLite's leaner delivery indexes; PostgreSQL purges and searches through its own.
    (13, include_str!("migrations/postgres/0013_body_lz4.sql")),
    (14, include_str!("migrations/postgres/0014_route_queue_order.sql")),
];

/// Run after the migrations have committed, at every start, each a no-op once done: work that must not hold
/// the migration's locks, such as validating a constraint added `NOT VALID` (a scan of the table under a lock
/// that lets reads and writes go on).
const FOLLOW_UPS: &[&str] = &["DO $$ BEGIN
         IF EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_status_check' AND NOT convalidated) THEN
             ALTER TABLE jobs VALIDATE CONSTRAINT jobs_status_check;
         END IF;
     END $$"];

/// Advisory lock ids: one serialises migrations, one claims (exclusive for per-key exclusivity and caps across
/// instances, shared for lockless claims) and route changes (exclusive, so a pause waits for claims in flight).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_0001;
pub(super) const CLAIM_LOCK: i64 = 0x686f_6f6b_0002;

pub struct PostgresStore {
    pool: Pool,
    batcher: batch::Batcher,
    outcomes: outcomes::Outcomes,
}

fn unavailable(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(describe(&e))
}

/// Settle the claimed routes' jobs whose lease expired as failed attempts (see [`Claim::after_lost`]). They
/// are few: at most the jobs that were running when an instance died.
async fn settle_expired(tx: &deadpool_postgres::Transaction<'_>, claim: &Claim) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "SELECT id, route, attempts, updated_at, COALESCE(lease_owner, '') FROM jobs
             WHERE status = 'running' AND lease_until < $2 AND route = ANY($1)
             ORDER BY run_at, id
             FOR UPDATE SKIP LOCKED",
        )
        .await
        .map_err(pg_error)?;
    let expired = tx.query(&statement, &[&claim.routes, &claim.now]).await.map_err(pg_error)?;
    for row in &expired {
        let (id, route): (&str, &str) = (row.get(0), row.get(1));
        let (record, next) = claim.after_lost(id, route, row.get::<_, i32>(2) as u32, row.get(3));
        finish_attempt(tx, id, row.get(4), &record, next).await?;
    }
    Ok(())
}

/// Record an attempt and move the job on, if `owner` still holds it; false (and nothing written) otherwise.
async fn finish_attempt(
    client: &impl deadpool_postgres::GenericClient,
    job_id: &str,
    owner: &str,
    attempt: &AttemptRecord,
    next: NextState,
) -> Result<bool, StoreError> {
    let (status, run_at) = next.row();
    // PostgreSQL's text cannot hold NUL (22021): a command that printed one would leave its outcome unrecorded.
    let (error, output) = (without_nul(&attempt.error), without_nul(&attempt.output));
    // One statement, so atomic on its own: the job moves on and its attempt is recorded, or, when the lease was
    // lost, neither. Outside a transaction it is one round trip instead of four (BEGIN, UPDATE, INSERT, COMMIT).
    let recorded = client
        .execute(
            &client
                .prepare_cached(
                    "WITH finished AS (
                         UPDATE jobs SET status = $3, run_at = COALESCE($4, run_at), last_error = $5,
                                         lease_owner = NULL, lease_until = NULL, updated_at = $6
                         WHERE id = $1 AND status = 'running' AND lease_owner = $2
                         RETURNING id
                     )
                     INSERT INTO attempts (job_id, attempt, started_at, finished_at, ok, error, output, status_code)
                     SELECT id, $7, $8, $6, $9, $5, $10, $11 FROM finished",
                )
                .await
                .map_err(pg_error)?,
            &[
                &job_id,
                &owner,
                &status,
                &run_at,
                &error,
                &attempt.finished_at,
                &(attempt.attempt as i32),
                &attempt.started_at,
                &attempt.ok,
                &output,
                &attempt.status_code.map(i32::from),
            ],
        )
        .await
        .map_err(pg_error)?;
    Ok(recorded == 1)
}

/// `text` with each NUL replaced by U+FFFD, borrowed when it has none.
fn without_nul(text: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
    let text = text.as_deref()?;
    Some(if text.contains('\0') { text.replace('\0', "\u{FFFD}").into() } else { text.into() })
}

/// Coalesce keys held by a live lease among the claimed routes: no second job of one of them may start.
async fn busy_keys(
    tx: &deadpool_postgres::Transaction<'_>,
    claim: &Claim,
) -> Result<HashSet<(String, String)>, StoreError> {
    let statement = tx
        .prepare_cached(
            "SELECT DISTINCT route, coalesce_key FROM jobs
             WHERE status = 'running' AND lease_until >= $2 AND coalesce_key IS NOT NULL AND route = ANY($1)",
        )
        .await
        .map_err(pg_error)?;
    let rows = tx.query(&statement, &[&claim.routes, &claim.now]).await.map_err(pg_error)?;
    Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))).collect())
}

/// The locked claim's jobs: the ids it picked (`$1`) that are still queued and due (`$2`); a late `finish_job` may
/// have moved one on, and SKIP LOCKED never waits on a row another transaction is finishing.
const CLAIM_PICKED: &str = "SELECT id FROM jobs WHERE id = ANY($1) AND status = 'queued' AND run_at <= $2
     FOR UPDATE SKIP LOCKED";

/// A lockless claim's jobs: the first `$6` due (`$2`) queued jobs of the routes `$1` in queue order, each route's
/// read from its range of `jobs_route_queue_order`; rows another claimer holds are skipped, not waited for.
const CLAIM_NEXT_DUE: &str = "SELECT j.id FROM (SELECT DISTINCT unnest($1::text[])) AS r (route) CROSS JOIN LATERAL (
         SELECT id, run_at FROM jobs
         WHERE status = 'queued' AND route = r.route AND run_at <= $2
         ORDER BY run_at, id
         LIMIT $6
         FOR UPDATE SKIP LOCKED
     ) j
     ORDER BY j.run_at, j.id
     LIMIT $6";

/// The claim statement around `picked` (a query of job ids): those jobs leased to `$3` until their route's lease
/// in `$5` (a JSON object) or `$4`, at `$2`, each returned with its delivery, in queue order.
fn claim_statement(picked: &str) -> String {
    format!(
        "WITH picked AS ({picked}), claimed AS (
             UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1, lease_owner = $3,
                             lease_until = COALESCE(($5::text::jsonb ->> jobs.route)::bigint, $4), updated_at = $2
             FROM picked WHERE jobs.id = picked.id
             RETURNING jobs.id AS job_id, jobs.route, jobs.coalesce_key, jobs.attempts, jobs.created_at, jobs.run_at,
                       jobs.delivery_id
         )
         SELECT c.job_id, c.route, c.coalesce_key, c.attempts, c.created_at, {DELIVERY_COLUMNS}
         FROM claimed c JOIN deliveries ON deliveries.id = c.delivery_id
         ORDER BY c.run_at, c.job_id"
    )
}

/// A row of [`claim_statement`].
fn claimed_job(r: &Row, probe: bool) -> Result<ClaimedJob, StoreError> {
    Ok(ClaimedJob {
        id: r.get("job_id"),
        route: r.get("route"),
        coalesce_key: r.get("coalesce_key"),
        attempt: r.get::<_, i32>("attempts") as u32,
        created_at: r.get("created_at"),
        probe,
        delivery: stored_delivery(r)?,
    })
}

/// Due queued jobs of the routes `$1` after `($3, $4)` in queue order, at most `$5`: each route's from its
/// own range of `jobs_route_queue_order`, merged.
const PICK_QUEUED: &str = "SELECT j.id, j.route, j.coalesce_key, j.run_at
     FROM (SELECT DISTINCT unnest($1::text[])) AS r (route) CROSS JOIN LATERAL (
         SELECT id, route, coalesce_key, run_at FROM jobs
         WHERE status = 'queued' AND route = r.route AND run_at <= $2 AND (run_at, id) > ($3, $4)
         ORDER BY run_at, id
         LIMIT $5
     ) j
     ORDER BY j.run_at, j.id
     LIMIT $5";

/// Add jobs of `routes` to `picked` in queue order until it holds `up_to`: due queued jobs read from the
/// `jobs_route_queue_order` index a page at a time, so a claim costs the same with a backlog of millions.
/// One job per (route, coalesce key), and none whose key is held by a live lease (`keys_taken`).
async fn pick_candidates(
    tx: &deadpool_postgres::Transaction<'_>,
    claim: &Claim,
    routes: &[String],
    up_to: usize,
    keys_taken: &mut HashSet<(String, String)>,
    picked: &mut Vec<String>,
) -> Result<(), StoreError> {
    let mut take = |row: &Row, picked: &mut Vec<String>| {
        let key: Option<String> = row.get(2);
        if let Some(key) = key {
            if !keys_taken.insert((row.get(1), key)) {
                return;
            }
        }
        picked.push(row.get(0));
    };
    // A page at a time, each a query of its own after the last row seen. Each route's due jobs are read in
    // order from its range of `jobs_route_queue_order` (migration 14) and stop at the page's size, whatever
    // the table's statistics say; an open-ended query read in pages was planned to read and sort every queued
    // job of the routes first (17 ms a claim with 28,000 queued).
    let queued = tx.prepare_cached(PICK_QUEUED).await.map_err(pg_error)?;
    let page = ((up_to - picked.len()) * 2).clamp(16, 1024) as i64;
    let mut after: (Millis, String) = (Millis::MIN, String::new());
    while picked.len() < up_to {
        let rows = tx.query(&queued, &[&routes, &claim.now, &after.0, &after.1, &page]).await.map_err(pg_error)?;
        for row in &rows {
            if picked.len() < up_to {
                take(row, picked);
            }
        }
        match rows.last() {
            Some(last) if rows.len() == page as usize => after = (last.get(3), last.get(0)),
            _ => break,
        }
    }
    Ok(())
}

/// What a claim is planned from: the routes' shared state, the jobs running on every instance for routes
/// with a `concurrency` cap, and the coalesce keys held by live leases.
struct ClaimInputs {
    states: HashMap<String, control::RouteState>,
    running: HashMap<String, usize>,
    keys_taken: HashSet<(String, String)>,
}

/// Read a claim's inputs with their statements pipelined: one round trip, not three.
async fn claim_inputs(tx: &deadpool_postgres::Transaction<'_>, claim: &Claim) -> Result<ClaimInputs, StoreError> {
    let limited: Vec<&String> =
        claim.routes.iter().filter(|r| claim.limits.get(*r).is_some_and(|l| l.concurrency.is_some())).collect();
    let running = async {
        match limited.is_empty() {
            true => Ok(HashMap::new()),
            false => postgres_control::running_counts(tx, &limited, claim.now).await,
        }
    };
    let (states, running, keys_taken) =
        tokio::try_join!(postgres_control::load_route_states(tx, &claim.routes), running, busy_keys(tx, claim))?;
    Ok(ClaimInputs { states, running, keys_taken })
}

/// Choose the jobs to claim: the routes' shared state and their jobs running on every instance decide what
/// each may start (see [`control::plan_claim`]); a half-open route's probe is recorded here. Returns the
/// picked ids in queue order per route and the probes among them.
async fn plan_and_pick(
    tx: &deadpool_postgres::Transaction<'_>,
    claim: &Claim,
    inputs: ClaimInputs,
) -> Result<(Vec<String>, HashSet<String>), StoreError> {
    let ClaimInputs { mut states, running, mut keys_taken } = inputs;
    let plan = control::plan_claim(&claim.routes, &claim.limits, &states, &running, claim.now);
    let mut picked = Vec::new();
    let mut probes = HashSet::new();
    for capped in &plan.capped {
        let room = claim.limit - picked.len();
        if room == 0 {
            break;
        }
        let before = picked.len();
        let routes = [capped.route.clone()];
        pick_candidates(tx, claim, &routes, before + capped.cap.min(room), &mut keys_taken, &mut picked).await?;
        if capped.probe && picked.len() > before {
            probes.insert(picked[before].clone());
            let state = states.entry(capped.route.clone()).or_insert_with(|| control::RouteState::new(&capped.route));
            state.probe_started(claim.lease_for(&capped.route), claim.now);
            postgres_control::save_route_state(tx, state).await?;
        }
    }
    if !plan.uncapped.is_empty() && picked.len() < claim.limit {
        pick_candidates(tx, claim, &plan.uncapped, claim.limit, &mut keys_taken, &mut picked).await?;
    }
    Ok((picked, probes))
}

pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let text = describe(&e);
    match e.code() {
        // Data errors and bugs are ours; connection, resource and shutdown classes mean "try later".
        Some(code) => {
            let class = &code.code()[..2];
            if matches!(class, "08" | "53" | "57" | "58" | "40") {
                StoreError::Unavailable(text)
            } else {
                StoreError::Internal(text)
            }
        }
        None => StoreError::Unavailable(text),
    }
}

/// An error and its causes, with a server error in the server's words and its SQLSTATE code
/// (`db error: ERROR 53100 could not extend file "base/…": No space left on device`); tokio-postgres' own
/// text is only "db error". Its DETAIL is left out: for a failed constraint it repeats the whole row, and a
/// delivery row holds the webhook's headers and body.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    error_chain_with(e, |link| {
        let db = link.downcast_ref::<tokio_postgres::error::DbError>()?;
        let mut text = format!("{} {} {}", db.severity(), db.code().code(), db.message());
        if let Some(hint) = db.hint() {
            text.push_str(&format!(" (hint: {hint})"));
        }
        Some(text)
    })
}

impl PostgresStore {
    /// Connect (lazily: a server that is down now may come back) and apply pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = connect_options(url).map_err(|e| StoreError::Internal(format!("store.url: {e}")))?;
        let manager = Manager::from_config(
            options.config,
            options.tls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let store = PostgresStore::with_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// A store on `pool` (not migrated), with its group-commit task started on the current runtime.
    fn with_pool(pool: Pool) -> Self {
        PostgresStore { batcher: batch::start(pool.clone()), outcomes: outcomes::start(pool.clone()), pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Apply every migration not yet recorded, under an advisory lock so concurrent starts agree.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_to(i32::MAX).await
    }

    /// Apply the migrations not yet recorded up to version `last` (tests build old schemas).
    async fn migrate_to(&self, last: i32) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS hookgate_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(pg_error)?;
        let current: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM hookgate_migrations", &[])
            .await
            .map_err(pg_error)?
            .get(0);
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current && *v <= last) {
            tx.batch_execute(sql).await.map_err(pg_error)?;
            tx.execute("INSERT INTO hookgate_migrations (version, applied_at) VALUES ($1, $2)", &[version, &now_ms()])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        for sql in FOLLOW_UPS {
            client.batch_execute(sql).await.map_err(pg_error)?;
        }
        Ok(())
    }

    /// The highest applied migration.
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT COALESCE(MAX(version), 0) FROM hookgate_migrations", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }
}

fn job_summary(row: &Row) -> Result<JobSummary, StoreError> {
    JobRow {
        id: row.get("id"),
        delivery_id: row.get("delivery_id"),
        route: row.get("route"),
        status: row.get("status"),
        attempts: row.get::<_, i32>("attempts") as u32,
        last_error: row.get("last_error"),
        run_at: row.get("run_at"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        merged: row.get::<_, i32>("merged") as u32,
        source: row.get("source"),
        event: row.get("event"),
    }
    .into_summary()
}

const DELIVERY_COLUMNS: &str = "id, source, event, delivery, received_at, headers, body, replay_key";

fn stored_delivery(row: &Row) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: row.get("id"),
        source: row.get("source"),
        event: row.get("event"),
        delivery: row.get("delivery"),
        received_at: row.get("received_at"),
        headers: headers_from_text(row.get("headers"))?,
        body: Bytes::from(row.get::<_, Vec<u8>>("body")),
        replay_key: row.get("replay_key"),
    })
}

/// Each job status counted over the jobs `j` joined to a delivery, read back by [`job_counts_of`].
const JOB_COUNT_COLUMNS: &str = "COUNT(j.id) FILTER (WHERE j.status = 'queued') AS queued,
    COUNT(j.id) FILTER (WHERE j.status = 'running') AS running,
    COUNT(j.id) FILTER (WHERE j.status = 'succeeded') AS succeeded,
    COUNT(j.id) FILTER (WHERE j.status = 'dead') AS dead,
    COUNT(j.id) FILTER (WHERE j.status = 'cancelled') AS cancelled";

fn job_counts_of(r: &Row) -> JobCounts {
    JobCounts {
        queued: r.get::<_, i64>("queued") as u64,
        running: r.get::<_, i64>("running") as u64,
        succeeded: r.get::<_, i64>("succeeded") as u64,
        dead: r.get::<_, i64>("dead") as u64,
        cancelled: r.get::<_, i64>("cancelled") as u64,
    }
}

/// The conditions of a delivery query on `deliveries`, with the arguments of [`delivery_args`] ($9 is left
/// for the limit).
const DELIVERY_FILTER: &str = "($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR event = $2)
     AND ($3::text IS NULL OR delivery = $3) AND ($4::text IS NULL OR id = $4)
     AND ($5::bigint IS NULL OR received_at >= $5) AND ($6::bigint IS NULL OR received_at < $6)
     AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM jobs s WHERE s.delivery_id = deliveries.id AND s.status = $7))
     AND ($8::text IS NULL OR id < $8)";

fn delivery_args<'a>(q: &'a DeliveryQuery, status: &'a Option<&'a str>, limit: &'a i64) -> [&'a (dyn ToSql + Sync); 9] {
    [&q.source, &q.event, &q.delivery, &q.id, &q.since, &q.until, status, &q.before, limit]
}

/// Insert jobs for a delivery inside `tx`, merging keyed jobs into a queued one of the same route and key.
async fn insert_jobs_tx(
    tx: &deadpool_postgres::Transaction<'_>,
    delivery_id: &str,
    jobs: &[NewJob],
    now: Millis,
) -> Result<usize, StoreError> {
    let mut count = 0;
    for job in jobs {
        if let Some(key) = &job.coalesce_key {
            // Serialise writers of one (route, key) so two instances cannot both miss the queued job.
            tx.execute(
                &tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))")
                    .await
                    .map_err(pg_error)?,
                &[&job.route, key],
            )
            .await
            .map_err(pg_error)?;
            let merged = tx
                .execute(
                    &tx.prepare_cached(
                        "UPDATE jobs SET delivery_id = $1, merged = merged + 1, updated_at = $2
                     WHERE id = (SELECT id FROM jobs WHERE route = $3 AND coalesce_key = $4 AND status = 'queued'
                                 ORDER BY run_at LIMIT 1)
                       AND status = 'queued'",
                    )
                    .await
                    .map_err(pg_error)?,
                    &[&delivery_id, &now, &job.route, key],
                )
                .await
                .map_err(pg_error)?;
            if merged > 0 {
                count += 1;
                continue;
            }
        }
        tx.execute(
            &tx.prepare_cached("INSERT INTO jobs (id, delivery_id, route, coalesce_key, status, attempts, run_at, created_at, updated_at, merged)
             VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6, 0)").await.map_err(pg_error)?,
            &[&job.id, &delivery_id, &job.route, &job.coalesce_key, &job.run_at, &now],
        )
        .await
        .map_err(pg_error)?;
        count += 1;
    }
    Ok(count)
}

/// The id hookgate gave the first copy of a delivery that arrived again: same (source, delivery), else same
/// (source, replay_key).
async fn existing_delivery_id(client: &impl tokio_postgres::GenericClient, d: &Delivery) -> Result<String, StoreError> {
    for (column, value) in row::dedup_keys(d) {
        let row = client
            .query_opt(&format!("SELECT id FROM deliveries WHERE source = $1 AND {column} = $2"), &[&d.source, &value])
            .await
            .map_err(pg_error)?;
        if let Some(row) = row {
            return Ok(row.get(0));
        }
    }
    Err(row::id_taken(d))
}

/// A delivery and its jobs in one statement (one round trip, its own transaction), for the common case of
/// jobs without a coalesce key: nothing to merge, so nothing to lock. A duplicate inserts nothing.
const INSERT_UNKEYED: &str = "WITH d AS (
         INSERT INTO deliveries (id, source, event, delivery, received_at, headers, body, replay_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $11)
         ON CONFLICT DO NOTHING RETURNING id
     ), j AS (
         INSERT INTO jobs (id, delivery_id, route, coalesce_key, status, attempts, run_at, created_at, updated_at, merged)
         SELECT u.id, d.id, u.route, NULL, 'queued', 0, u.run_at, $5, $5, 0
         FROM d CROSS JOIN unnest($8::text[], $9::text[], $10::bigint[]) AS u (id, route, run_at)
         RETURNING 1
     )
     SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM j)";

async fn insert_unkeyed(
    client: &deadpool_postgres::Object,
    d: Delivery,
    jobs: &[NewJob],
) -> Result<Insert, StoreError> {
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let routes: Vec<&str> = jobs.iter().map(|j| j.route.as_str()).collect();
    let run_at: Vec<Millis> = jobs.iter().map(|j| j.run_at).collect();
    let statement = client.prepare_cached(INSERT_UNKEYED).await.map_err(pg_error)?;
    let headers = headers_to_text(&d.headers)?;
    let row = client
        .query_one(
            &statement,
            &[
                &d.id,
                &d.source,
                &d.event,
                &d.delivery,
                &d.received_at,
                &headers,
                &&d.body[..],
                &ids,
                &routes,
                &run_at,
                &d.replay_key,
            ],
        )
        .await
        .map_err(pg_error)?;
    if row.get::<_, i64>(0) == 0 {
        return Ok(Insert::Duplicate { id: existing_delivery_id(&***client, &d).await? });
    }
    Ok(Insert::Stored { id: d.id, jobs: row.get::<_, i64>(1) as usize })
}

impl PostgresStore {
    /// A delivery with keyed jobs: one transaction, merging each keyed job into a queued one of its key.
    async fn insert_keyed(&self, d: Delivery, jobs: Vec<NewJob>) -> Result<Insert, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let inserted = tx
            .query_opt(
                &tx.prepare_cached(
                    "INSERT INTO deliveries (id, source, event, delivery, received_at, headers, body, replay_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT DO NOTHING RETURNING id",
                )
                .await
                .map_err(pg_error)?,
                &[
                    &d.id,
                    &d.source,
                    &d.event,
                    &d.delivery,
                    &d.received_at,
                    &headers_to_text(&d.headers)?,
                    &&d.body[..],
                    &d.replay_key,
                ],
            )
            .await
            .map_err(pg_error)?;
        if inserted.is_none() {
            let existing = existing_delivery_id(&*tx, &d).await?;
            tx.rollback().await.map_err(pg_error)?;
            return Ok(Insert::Duplicate { id: existing });
        }
        let count = insert_jobs_tx(&tx, &d.id, &jobs, d.received_at).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Insert::Stored { id: d.id, jobs: count })
    }

    /// Claim jobs of routes that need no exclusivity (see [`Claim::lockless`]): the claim lock is taken shared,
    /// so such claims run side by side and `FOR UPDATE SKIP LOCKED` alone keeps two from taking one job, while
    /// a route change (which takes it exclusively) still waits for them and is seen by every later one.
    async fn claim_lockless(&self, claim: &Claim) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let lock = tx.prepare_cached("SELECT pg_advisory_xact_lock_shared($1)").await.map_err(pg_error)?;
        tx.execute(&lock, &[&CLAIM_LOCK]).await.map_err(pg_error)?;
        let ((), states) =
            tokio::try_join!(settle_expired(&tx, claim), postgres_control::load_route_states(&tx, &claim.routes))?;
        // No limits: every route the plan keeps (not paused, not stopped) is uncapped.
        let plan = control::plan_claim(&claim.routes, &HashMap::new(), &states, &HashMap::new(), claim.now);
        if plan.uncapped.is_empty() {
            tx.commit().await.map_err(pg_error)?;
            return Ok(Vec::new());
        }
        let statement = tx.prepare_cached(&claim_statement(CLAIM_NEXT_DUE)).await.map_err(pg_error)?;
        let rows = tx
            .query(
                &statement,
                &[
                    &plan.uncapped,
                    &claim.now,
                    &claim.owner,
                    &claim.lease_until,
                    &claim.leases_json(),
                    &(claim.limit as i64),
                ],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(|r| claimed_job(r, false)).collect()
    }

    /// Claim under the exclusive claim lock: every guarantee (per-key exclusivity, `concurrency` caps, one
    /// half-open probe) holds across instances, as claims take turns.
    async fn claim_locked(&self, claim: Claim) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // One claimer at a time across instances: claims are short, and it makes per-key exclusivity exact.
        let lock = tx.prepare_cached("SELECT pg_advisory_xact_lock($1)").await.map_err(pg_error)?;
        tx.execute(&lock, &[&CLAIM_LOCK]).await.map_err(pg_error)?;
        // Pipelined, in one round trip; each statement sees everything committed before the lock was granted.
        let ((), inputs) = tokio::try_join!(settle_expired(&tx, &claim), claim_inputs(&tx, &claim))?;
        let (picked, probes) = plan_and_pick(&tx, &claim, inputs).await?;
        if picked.is_empty() {
            tx.commit().await.map_err(pg_error)?;
            return Ok(Vec::new());
        }
        // Still claimable (nothing else claims while the lock is held, but a late `finish_job` may have
        // moved one on); SKIP LOCKED never waits on a row another transaction is finishing. Each job comes
        // back with its delivery, in the same statement.
        let statement = tx.prepare_cached(&claim_statement(CLAIM_PICKED)).await.map_err(pg_error)?;
        let rows = tx
            .query(&statement, &[&picked, &claim.now, &claim.owner, &claim.lease_until, &claim.leases_json()])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let mut claimed = rows
            .iter()
            .map(|r| claimed_job(r, probes.contains(r.get::<_, &str>("job_id"))))
            .collect::<Result<Vec<ClaimedJob>, StoreError>>()?;
        // In queue order, as `pick_candidates` chose them (and as SQLite answers).
        let order: HashMap<&str, usize> = picked.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        claimed.sort_by_key(|j| order.get(j.id.as_str()).copied());
        Ok(claimed)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await.map_err(pg_error)?;
        Ok(())
    }

    /// Rewrites the one `write_probe` row: a commit that has to reach the WAL on disk.
    async fn probe_write(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO write_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                &[&now_ms()],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn insert_delivery(&self, d: Delivery, jobs: Vec<NewJob>) -> Result<Insert, StoreError> {
        if jobs.iter().all(|j| j.coalesce_key.is_none()) {
            return self.batcher.submit(batch::Request { delivery: d, jobs }).await;
        }
        let started = std::time::Instant::now();
        let answer = self.insert_keyed(d, jobs).await;
        metrics::histogram!(crate::metrics::STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::STORE_BATCH_SIZE).record(1.0);
        answer
    }

    async fn insert_jobs(&self, delivery_id: &str, jobs: Vec<NewJob>) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let exists = tx.query_opt("SELECT 1 FROM deliveries WHERE id = $1", &[&delivery_id]).await.map_err(pg_error)?;
        if exists.is_none() {
            return Ok(0);
        }
        let count = insert_jobs_tx(&tx, delivery_id, &jobs, now_ms()).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(count)
    }

    async fn claim_jobs(&self, claim: Claim) -> Result<Vec<ClaimedJob>, StoreError> {
        if claim.limit == 0 || claim.routes.is_empty() {
            return Ok(Vec::new());
        }
        let (lockless, locked): (Vec<String>, Vec<String>) =
            claim.routes.iter().cloned().partition(|r| claim.lockless.contains(r));
        let mut claimed = match lockless.is_empty() {
            true => Vec::new(),
            false => self.claim_lockless(&Claim { routes: lockless, ..claim.clone() }).await?,
        };
        let room = claim.limit - claimed.len();
        if room > 0 && !locked.is_empty() {
            claimed.extend(self.claim_locked(Claim { routes: locked, limit: room, ..claim }).await?);
        }
        Ok(claimed)
    }

    async fn finish_job(
        &self,
        job_id: &str,
        owner: &str,
        attempt: AttemptRecord,
        next: NextState,
    ) -> Result<bool, StoreError> {
        let outcome = outcomes::Outcome { job_id: job_id.to_string(), owner: owner.to_string(), attempt, next };
        self.outcomes.submit(outcome).await
    }

    async fn release_job(&self, job_id: &str, owner: &str, run_at: Millis) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE jobs SET status = 'queued', run_at = $3, attempts = GREATEST(attempts - 1, 0),
                                 lease_owner = NULL, lease_until = NULL, updated_at = $4
                 WHERE id = $1 AND status = 'running' AND lease_owner = $2",
                &[&job_id, &owner, &run_at, &now_ms()],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn retry_job(&self, job_id: &str, now: Millis) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, last_error = NULL, updated_at = $2
                 WHERE id = $1 AND status IN ('dead', 'succeeded', 'cancelled')",
                &[&job_id, &now],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryDetail>, StoreError> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"), &[&id])
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let delivery = stored_delivery(&row)?;
        let job_rows = client
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.delivery_id = $1 ORDER BY j.created_at, j.id"),
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        let job_ids: Vec<String> = job_rows.iter().map(|r| r.get("id")).collect();
        let attempt_rows = client
            .query(
                "SELECT job_id, attempt, started_at, finished_at, ok, error, output, status_code
                 FROM attempts WHERE job_id = ANY($1) ORDER BY seq",
                &[&job_ids],
            )
            .await
            .map_err(pg_error)?;
        let mut jobs = Vec::with_capacity(job_rows.len());
        for row in &job_rows {
            let job = job_summary(row)?;
            let attempts = attempt_rows
                .iter()
                .filter(|a| a.get::<_, &str>("job_id") == job.id)
                .map(|a| AttemptRecord {
                    attempt: a.get::<_, i32>("attempt") as u32,
                    started_at: a.get("started_at"),
                    finished_at: a.get("finished_at"),
                    ok: a.get("ok"),
                    error: a.get("error"),
                    output: a.get("output"),
                    status_code: a.get::<_, Option<i32>>("status_code").map(|c| c as u16),
                })
                .collect();
            jobs.push(JobDetail { job, attempts });
        }
        Ok(Some(DeliveryDetail { delivery, jobs }))
    }

    async fn list_deliveries(&self, q: DeliveryQuery) -> Result<Page<DeliverySummary>, StoreError> {
        let limit = page_limit(q.limit);
        let status = q.status.map(|s| s.as_str());
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT d.id, d.source, d.event, d.delivery, d.received_at, {JOB_COUNT_COLUMNS}
                 FROM (SELECT id, source, event, delivery, received_at FROM deliveries
                       WHERE {DELIVERY_FILTER} ORDER BY id DESC LIMIT $9) d
                 LEFT JOIN jobs j ON j.delivery_id = d.id
                 GROUP BY d.id, d.source, d.event, d.delivery, d.received_at
                 ORDER BY d.id DESC"
                ),
                &delivery_args(&q, &status, &(limit as i64)),
            )
            .await
            .map_err(pg_error)?;
        let items: Vec<DeliverySummary> = rows
            .iter()
            .map(|r| DeliverySummary {
                id: r.get("id"),
                source: r.get("source"),
                event: r.get("event"),
                delivery: r.get("delivery"),
                received_at: r.get("received_at"),
                jobs: job_counts_of(r),
            })
            .collect();
        Ok(page(items, limit, |d| &d.id))
    }

    async fn list_jobs(&self, q: JobQuery) -> Result<Page<JobSummary>, StoreError> {
        let limit = page_limit(q.limit);
        let status = q.status.map(|s| s.as_str().to_string());
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM {JOB_FROM}
                     WHERE ($1::text IS NULL OR j.status = $1) AND ($2::text IS NULL OR j.route = $2)
                       AND ($3::text IS NULL OR j.id < $3)
                       AND ($5::bigint IS NULL OR j.updated_at >= $5) AND ($6::bigint IS NULL OR j.updated_at < $6)
                     ORDER BY j.id DESC LIMIT $4"
                ),
                &[&status, &q.route, &q.before, &(limit as i64), &q.since, &q.until],
            )
            .await
            .map_err(pg_error)?;
        let items = rows.iter().map(job_summary).collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit, |j| &j.id))
    }

    async fn scan_deliveries(&self, q: DeliveryQuery) -> Result<Page<ScannedDelivery>, StoreError> {
        let limit = page_limit(q.limit);
        let status = q.status.map(|s| s.as_str());
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT d.*, c.*
                     FROM (SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {DELIVERY_FILTER}
                           ORDER BY id DESC LIMIT $9) d
                     CROSS JOIN LATERAL (SELECT {JOB_COUNT_COLUMNS} FROM jobs j WHERE j.delivery_id = d.id) c
                     ORDER BY d.id DESC"
                ),
                &delivery_args(&q, &status, &(limit as i64)),
            )
            .await
            .map_err(pg_error)?;
        let items = rows
            .iter()
            .map(|r| Ok(ScannedDelivery { delivery: stored_delivery(r)?, jobs: job_counts_of(r) }))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(page(items, limit, |d| &d.delivery.id))
    }

    /// Each batch is its own short transaction. Rows another transaction holds (another instance's purge) are
    /// skipped rather than waited for; the next purge takes them.
    async fn purge(&self, before: Millis) -> Result<u64, StoreError> {
        self.client().await?.execute(FOLD_COUNTERS, &[]).await.map_err(pg_error)?;
        bulk::forget_keys(&**self.client().await?, now_ms()).await?;
        stats::purge_stats(&**self.client().await?, now_ms() - super::stats::STATS_RETENTION_MS).await?;
        let mut cursor: (Millis, String) = (Millis::MIN, String::new());
        let mut total = 0;
        loop {
            let started = std::time::Instant::now();
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let rows = tx
                .query(
                    &tx.prepare_cached(PURGE_CANDIDATES).await.map_err(pg_error)?,
                    &[&before, &cursor.0, &cursor.1, &(PURGE_BATCH as i64)],
                )
                .await
                .map_err(pg_error)?;
            let done: Vec<&str> = rows.iter().filter(|r| !r.get::<_, bool>(2)).map(|r| r.get(0)).collect();
            if !done.is_empty() {
                total += tx.execute("DELETE FROM deliveries WHERE id = ANY($1)", &[&done]).await.map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)?;
            drop(client);
            let Some(last) = rows.last() else { return Ok(total) };
            if rows.len() < PURGE_BATCH {
                return Ok(total);
            }
            cursor = (last.get(1), last.get(0));
            purge_pause(started.elapsed()).await;
        }
    }

    async fn change_route(
        &self,
        route: &str,
        change: control::RouteChange,
        now: Millis,
    ) -> Result<(control::RouteState, control::RouteState), StoreError> {
        postgres_control::change_route(&mut self.client().await?, route, &change, now).await
    }

    async fn pause_source(
        &self,
        source: &str,
        pause: Option<control::Pause>,
        now: Millis,
    ) -> Result<Option<control::Pause>, StoreError> {
        postgres_control::pause_source(&mut self.client().await?, source, pause.as_ref(), now).await
    }

    async fn control_state(&self) -> Result<control::ControlState, StoreError> {
        postgres_control::control_state(&**self.client().await?).await
    }

    async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        let client = self.client().await?;
        let rows = client.query(JOB_COUNTS, &[]).await.map_err(pg_error)?;
        row::job_counts(rows.iter().map(|r| (r.get::<_, &str>(0), r.get::<_, i64>(1))))
    }

    async fn bulk_jobs(&self, op: BulkJobs) -> Result<BulkAnswer, StoreError> {
        self.bulk_jobs_tx(op).await
    }

    async fn find_deliveries(
        &self,
        filter: &DeliveryFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.find_deliveries_tx(filter, after, limit).await
    }

    async fn replay_deliveries(&self, replay: BulkReplay) -> Result<BulkAnswer, StoreError> {
        self.replay_tx(replay).await
    }

    async fn idempotent_answer(&self, key: &IdempotencyKey, now: Millis) -> Result<Option<BulkAnswer>, StoreError> {
        bulk::stored_answer(&**self.client().await?, key, now).await
    }

    async fn oldest_due(&self, routes: &[String], now: Millis) -> Result<Vec<(String, Millis)>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(OLDEST_DUE, &[&routes, &now]).await.map_err(pg_error)?;
        Ok(rows.iter().filter_map(|r| Some((r.get::<_, String>(0), r.get::<_, Option<i64>>(1)?))).collect())
    }

    async fn queued_by_route(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.queued_by_route_query().await
    }

    async fn record_stats(&self, rows: Vec<super::stats::StatsDelta>) -> Result<(), StoreError> {
        self.record_stats_tx(rows).await
    }

    async fn stats(&self, query: super::stats::StatsQuery) -> Result<super::stats::StatsSeries, StoreError> {
        self.stats_query(query).await
    }

    async fn last_errors(&self) -> Result<Vec<(String, String, Millis)>, StoreError> {
        self.last_errors_query().await
    }

    async fn stored_deliveries(&self, source: &str, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        leases::stored_deliveries(&**self.client().await?, source, ids).await
    }

    async fn take_lease(&self, name: &str, owner: &str, until: Millis, now: Millis) -> Result<bool, StoreError> {
        leases::take_lease(&**self.client().await?, name, owner, until, now).await
    }
}

/// Each route's earliest due job, from the `jobs_route_queue_order` index (migration 14): one index seek per
/// route, in one round trip.
const OLDEST_DUE: &str = "SELECT r.route, (SELECT j.run_at FROM jobs j
         WHERE j.route = r.route AND j.status = 'queued' AND j.run_at <= $2 ORDER BY j.run_at LIMIT 1)
     FROM unnest($1::text[]) AS r(route)";

/// Queue depths from the counter rows the `job_counts` triggers keep (migration 5): one per (route, status) and
/// database connection, plus one for connections that are gone.
const JOB_COUNTS: &str = "SELECT status, SUM(n)::bigint FROM job_counts GROUP BY status";

/// Move the counter rows of connections that are gone into `shard` 0, so their number stays that of the live
/// connections. A row is moved whole, so the sums stay exact even if its process id was reused meanwhile; one
/// that is locked (being written) is left for the next purge, so this never waits for a writer.
const FOLD_COUNTERS: &str = "WITH gone AS (
         DELETE FROM job_counts WHERE (route, status, shard) IN (
             SELECT route, status, shard FROM job_counts c
             WHERE shard <> 0 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.shard)
             FOR UPDATE SKIP LOCKED)
         RETURNING route, status, n)
     INSERT INTO job_counts AS c (route, status, shard, n)
     SELECT route, status, 0, SUM(n) FROM gone GROUP BY route, status ORDER BY route, status
     ON CONFLICT (route, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n";

/// The next deliveries past the cursor received before the cutoff, in (received_at, id) order, locked for this
/// batch, each with whether it still has unfinished jobs; a fixed number per batch, so deliveries kept back by
/// a queued job are stepped over once per purge. Their jobs and attempts go by `ON DELETE CASCADE`.
const PURGE_CANDIDATES: &str = "SELECT d.id, d.received_at,
            EXISTS (SELECT 1 FROM jobs j WHERE j.delivery_id = d.id AND j.status IN ('queued', 'running'))
     FROM deliveries d
     WHERE d.received_at < $1 AND d.received_at >= $2 AND (d.received_at, d.id) > ($2, $3)
     ORDER BY d.received_at, d.id LIMIT $4
     FOR UPDATE OF d SKIP LOCKED";

/// Create a fresh, empty schema on the server of `base_url` and return a URL whose connections use it.
/// Tests give every case its own schema this way; nothing else should need it.
pub async fn fresh_schema_url(base_url: &str) -> Result<String, StoreError> {
    let options = connect_options(base_url).map_err(|e| StoreError::Internal(format!("store.url: {e}")))?;
    let (client, connection) = options.config.connect(options.tls).await.map_err(pg_error)?;
    let task = tokio::spawn(connection);
    let schema = format!("hookgate_test_{}", new_id().replace('-', ""));
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.map_err(pg_error)?;
    drop(client);
    let _ = task.await;
    let separator = if base_url.contains('?') { '&' } else { '?' };
    Ok(format!("{base_url}{separator}options=-csearch_path%3D{schema}"))
}

/// A URL to a fresh schema on the test server (`HOOKGATE_TEST_POSTGRES_URL`), or `None` once it has said on
/// stderr that the test is skipped because none is set.
#[cfg(test)]
pub(super) async fn test_schema_url() -> Option<String> {
    let Ok(base) = std::env::var("HOOKGATE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: HOOKGATE_TEST_POSTGRES_URL is not set");
        return None;
    };
    Some(fresh_schema_url(&base).await.expect("PostgreSQL reachable"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{delivery, job};

    /// A store on a fresh schema of the test server (several test runs share its database).
    struct Fixture {
        store: PostgresStore,
    }

    #[async_trait]
    impl crate::store::contract::Fixture for Fixture {
        fn store(&self) -> &dyn Store {
            &self.store
        }

        async fn rows(&self, table: &str) -> i64 {
            let client = self.store.client().await.unwrap();
            client.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[]).await.unwrap().get(0)
        }
    }

    async fn fixture() -> Option<Fixture> {
        let url = test_schema_url().await?;
        Some(Fixture { store: PostgresStore::open(&url).await.expect("store opens") })
    }

    async fn store() -> Option<PostgresStore> {
        fixture().await.map(|f| f.store)
    }

    mod contract {
        crate::store::contract::contract_suite!(super::fixture);
    }

    #[tokio::test]
    async fn migrations_apply_once_and_record_their_version() {
        let Some(store) = store().await else { return };
        store.migrate().await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), MIGRATIONS.last().unwrap().0);
    }

    /// Migration 6 swaps the jobs status CHECK for one that admits `cancelled`: added NOT VALID inside the
    /// migration, validated after it; the rows of a version-5 schema stay, and unknown statuses are still refused.
    #[tokio::test]
    async fn a_version_5_schema_with_rows_migrates_and_its_status_check_is_validated() {
        let Some(url) = test_schema_url().await else { return };
        let options = connect_options(&url).unwrap();
        let manager = Manager::from_config(options.config, options.tls, ManagerConfig::default());
        let old = PostgresStore::with_pool(Pool::builder(manager).max_size(2).build().unwrap());
        old.migrate_to(5).await.unwrap();
        let j = job("r", None);
        old.insert_delivery(delivery("github", "d1"), vec![j.clone(), job("r", None)]).await.unwrap();
        let client = old.client().await.unwrap();
        assert!(client.execute("UPDATE jobs SET status = 'cancelled'", &[]).await.is_err(), "version 5");
        drop(client);

        let store = PostgresStore::open(&url).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), MIGRATIONS.last().unwrap().0);
        let client = store.client().await.unwrap();
        let validated: bool = client
            .query_one(
                "SELECT convalidated FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_status_check'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(validated);
        assert_eq!(client.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", &[&j.id]).await.unwrap(), 1);
        assert!(client.execute("UPDATE jobs SET status = 'paused'", &[]).await.is_err());
        let counts = store.job_counts().await.unwrap();
        assert_eq!((counts.queued, counts.cancelled), (1, 1));
    }

    #[tokio::test]
    async fn queue_depths_are_read_from_counter_rows_not_the_jobs_table() {
        let Some(store) = store().await else { return };
        let client = store.client().await.unwrap();
        let plan: Vec<String> =
            client.query(&format!("EXPLAIN {JOB_COUNTS}"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        let plan = plan.join("\n");
        assert!(plan.contains(" on job_counts"), "{plan}");
        assert!(!plan.contains(" on jobs"), "a scrape must not read the jobs table: {plan}");
    }

    #[tokio::test]
    async fn counter_rows_of_closed_connections_fold_into_one_and_the_sums_stay_exact() {
        let Some(url) = test_schema_url().await else { return };
        let store = PostgresStore::open(&url).await.unwrap();
        let other = PostgresStore::open(&url).await.unwrap();
        for i in 0..20 {
            let writer = if i % 2 == 0 { &store } else { &other };
            writer.insert_delivery(delivery("github", &format!("f{i}")), vec![job("r", None)]).await.unwrap();
        }
        let rows = |s: &'static str| {
            let store = &store;
            async move {
                let client = store.client().await.unwrap();
                client.query_one(s, &[]).await.unwrap().get::<_, i64>(0)
            }
        };
        assert!(rows("SELECT COUNT(*) FROM job_counts WHERE shard <> 0").await >= 2);
        // The other instance stops: its connections (and their process ids) are gone.
        other.pool.close();
        drop(other);
        for _ in 0..200 {
            let dead = rows(
                "SELECT COUNT(*) FROM job_counts c
                 WHERE shard <> 0 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.shard)",
            );
            if dead.await > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(store.purge(now_ms() - 3_600_000).await.unwrap(), 0);
        let dead = rows(
            "SELECT COUNT(*) FROM job_counts c
             WHERE shard <> 0 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.shard)",
        );
        assert_eq!(dead.await, 0, "the rows of closed connections were folded");
        assert_eq!(rows("SELECT COUNT(*) FROM job_counts WHERE shard = 0").await, 1);
        assert_eq!(store.job_counts().await.unwrap().queued, 20);
    }

    /// A claim reads each route's due jobs in order from `jobs_route_queue_order` and stops at its page, even on
    /// a table too new for statistics and with the plan PostgreSQL caches for every claim (the generic plan).
    /// Read through `jobs_queue` filtered by route, such a table was planned to read and sort every queued job.
    #[tokio::test]
    async fn a_claim_reads_its_page_in_index_order_without_table_statistics() {
        let Some(store) = store().await else { return };
        let client = store.client().await.unwrap();
        client
            .batch_execute(
                "INSERT INTO deliveries (id, source, event, delivery, received_at, headers, body)
                 VALUES ('d', 'github', 'push', 'd', 0, '', '');
                 INSERT INTO jobs (id, delivery_id, route, status, attempts, run_at, created_at, updated_at)
                 SELECT 'j' || g, 'd', CASE WHEN g % 10 = 0 THEN 'other' ELSE 'noop' END, 'queued', 0, 1000, 0, 0
                 FROM generate_series(1, 20000) g",
            )
            .await
            .unwrap();
        let args = "ARRAY['noop', 'other'], 9999999999999, 0, '', 64";
        let plan: Vec<String> = client
            .simple_query(&format!(
                "SET plan_cache_mode = force_generic_plan;
                 PREPARE pick (text[], bigint, bigint, text, bigint) AS {PICK_QUEUED};
                 EXPLAIN (ANALYZE, COSTS OFF) EXECUTE pick ({args})"
            ))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap().to_string()),
                _ => None,
            })
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan using jobs_route_queue_order"), "{plan}");
        // No step of the plan reads more than a page (64) from each of the two routes, of 20,000 queued jobs.
        let most = plan.split("rows=").skip(1).filter_map(|r| r.split(' ').next()?.parse::<u32>().ok()).max();
        assert!(most.is_some_and(|n| n <= 128), "{plan}");
    }

    #[tokio::test]
    async fn a_url_to_a_closed_port_is_unavailable_and_the_error_names_the_refused_connection() {
        // A port that was just free: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://hookgate@127.0.0.1:{port}/hookgate?sslmode=disable&connect_timeout=5");
        let Err(StoreError::Unavailable(text)) = PostgresStore::open(&url).await else {
            panic!("a closed port must make the store unavailable");
        };
        assert!(text.to_lowercase().contains("connection refused"), "{text}");
    }

    #[tokio::test]
    async fn a_statement_error_names_its_sqlstate_and_the_servers_message() {
        let Some(fixture) = fixture().await else { return };
        let client = fixture.store.client().await.unwrap();
        client.batch_execute("DROP TABLE deliveries CASCADE").await.unwrap();
        let Err(StoreError::Internal(text)) = fixture.store.insert_delivery(delivery("github", "d1"), vec![]).await
        else {
            panic!("a missing table is a bug, not an outage");
        };
        assert!(text.contains("42P01") && text.contains(r#"relation "deliveries" does not exist"#), "{text}");
        // A cancelled statement is an outage class (57): try later.
        client.batch_execute("SET statement_timeout = '10ms'").await.unwrap();
        let cancelled = pg_error(client.query("SELECT pg_sleep(1)", &[]).await.unwrap_err());
        let StoreError::Unavailable(text) = cancelled else { panic!("{cancelled:?}") };
        assert!(text.contains("57014") && text.contains("statement timeout"), "{text}");
    }

    /// A failed constraint's DETAIL repeats the row — for a delivery, its headers and body — so it never
    /// reaches the error text an operator's log gets.
    #[tokio::test]
    async fn a_constraint_error_names_its_sqlstate_but_not_the_rows_values() {
        let Some(fixture) = fixture().await else { return };
        let client = fixture.store.client().await.unwrap();
        client.batch_execute("CREATE TEMP TABLE secrets_probe (v text PRIMARY KEY)").await.unwrap();
        let insert = "INSERT INTO secrets_probe VALUES ('payload-marker-7f3a')";
        client.batch_execute(insert).await.unwrap();
        let StoreError::Internal(text) = pg_error(client.batch_execute(insert).await.unwrap_err()) else {
            panic!("a duplicate key is a bug, not an outage");
        };
        assert!(text.contains("23505"), "{text}");
        assert!(!text.contains("payload-marker-7f3a"), "the row leaked into the error: {text}");
    }
}
