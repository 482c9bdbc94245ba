//! The SQLite store's reads, each run on a reader connection inside one read transaction (a snapshot).

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension, Row};

use super::writes::LeasedJob;
use super::{internal, sql_error};
use crate::store::codec;
use crate::store::row::{self, headers_from_text, page, page_limit, JobRow, JOB_COLUMNS, JOB_FROM};
use crate::store::*;

const DELIVERY_COLUMNS: &str = "id, source, event, delivery, received_at, headers, body, body_codec, replay_key";

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
        source: row.get(10)?,
        event: row.get(11)?,
    })
}

/// A delivery row as read with [`DELIVERY_COLUMNS`], before its headers and body are decoded.
type DeliveryRow = (String, String, String, String, Millis, String, Vec<u8>, i64, Option<String>);

fn delivery_row(r: &Row) -> rusqlite::Result<DeliveryRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
}

fn decode_delivery(row: DeliveryRow) -> Result<Delivery, StoreError> {
    let (id, source, event, delivery, received_at, headers, body, codec, replay_key) = row;
    Ok(Delivery {
        id,
        source,
        event,
        delivery,
        received_at,
        headers: headers_from_text(&headers)?,
        body: codec::decode(codec, body)?,
        replay_key,
    })
}

pub(super) fn load_delivery(conn: &Connection, id: &str) -> Result<Option<Delivery>, StoreError> {
    conn.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"))
        .map_err(sql_error)?
        .query_row([id], delivery_row)
        .optional()
        .map_err(sql_error)?
        .map(decode_delivery)
        .transpose()
}

/// Attach their deliveries to leased jobs (deliveries never change, and a leased job's is never purged).
pub(super) fn with_deliveries(conn: &Connection, leased: Vec<LeasedJob>) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut deliveries: HashMap<String, Delivery> = HashMap::new();
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
        let LeasedJob { id, route, coalesce_key, attempt, created_at, probe, .. } = job;
        claimed.push(ClaimedJob { id, route, coalesce_key, attempt, created_at, delivery, probe });
    }
    Ok(claimed)
}

pub(super) fn get_delivery_tx(conn: &Connection, id: &str) -> Result<Option<DeliveryDetail>, StoreError> {
    let Some(delivery) = load_delivery(conn, id)? else {
        return Ok(None);
    };
    let job_rows = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.delivery_id = ?1 ORDER BY j.created_at, j.id"
        ))
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

/// Every source that has deliveries, one index step each (a loose scan of the (source, delivery) index): with
/// it, a search by a provider's delivery id alone is a few lookups in that index rather than a table scan.
const STORED_SOURCES: &str = "WITH RECURSIVE s(name) AS (
         SELECT MIN(source) FROM deliveries
         UNION ALL SELECT (SELECT MIN(source) FROM deliveries WHERE source > s.name) FROM s WHERE s.name IS NOT NULL)
     SELECT name FROM s WHERE name IS NOT NULL";

/// How much later than `received_at` a delivery's id may have been made: it is made on receipt, right after.
const ID_SLACK_MS: Millis = 60_000;

/// Conditions for deliveries received in [since, until): exact on `received_at`, plus the id range that holds
/// them (see [`id_floor`]), so the primary key bounds the scan; there is no index on `received_at`.
pub(super) fn received_between(
    since: Option<Millis>,
    until: Option<Millis>,
    filter: &mut String,
    args: &mut Vec<Value>,
) {
    if let Some(at) = since {
        filter.push_str(" AND received_at >= ? AND id >= ?");
        args.extend([Value::Integer(at), Value::Text(id_floor(at))]);
    }
    if let Some(at) = until {
        filter.push_str(" AND received_at < ? AND id < ?");
        args.extend([Value::Integer(at), Value::Text(id_floor(at.saturating_add(ID_SLACK_MS)))]);
    }
}

/// The `WHERE` conditions (after `1 = 1`) and arguments of a delivery query. Only the filters in use appear in
/// the SQL, so SQLite can pick the matching index: (source, id), (event, id), (source, delivery), the id.
pub(super) fn delivery_filter(q: &DeliveryQuery) -> (String, Vec<Value>) {
    let mut filter = String::new();
    let mut args: Vec<Value> = Vec::new();
    for (column, value) in [("source", &q.source), ("event", &q.event), ("delivery", &q.delivery), ("id", &q.id)] {
        if let Some(v) = value {
            filter.push_str(&format!(" AND {column} = ?"));
            args.push(Value::Text(v.clone()));
        }
    }
    if q.delivery.is_some() && q.source.is_none() {
        filter.push_str(&format!(" AND source IN ({STORED_SOURCES})"));
    }
    received_between(q.since, q.until, &mut filter, &mut args);
    if let Some(status) = q.status {
        filter.push_str(" AND EXISTS (SELECT 1 FROM jobs s WHERE s.delivery_id = deliveries.id AND s.status = ?)");
        args.push(Value::Text(status.as_str().into()));
    }
    if let Some(before) = &q.before {
        filter.push_str(" AND id < ?");
        args.push(Value::Text(before.clone()));
    }
    (filter, args)
}

/// Each job status counted over the jobs `j` joined to a delivery, in [`JobCounts`] order.
const JOB_COUNT_COLUMNS: &str = "COALESCE(SUM(j.status = 'queued'), 0), COALESCE(SUM(j.status = 'running'), 0),
    COALESCE(SUM(j.status = 'succeeded'), 0), COALESCE(SUM(j.status = 'dead'), 0),
    COALESCE(SUM(j.status = 'cancelled'), 0)";

/// The [`JOB_COUNT_COLUMNS`] of a row, starting at column `at`.
fn job_counts_at(r: &Row, at: usize) -> rusqlite::Result<JobCounts> {
    Ok(JobCounts {
        queued: r.get::<_, i64>(at)? as u64,
        running: r.get::<_, i64>(at + 1)? as u64,
        succeeded: r.get::<_, i64>(at + 2)? as u64,
        dead: r.get::<_, i64>(at + 3)? as u64,
        cancelled: r.get::<_, i64>(at + 4)? as u64,
    })
}

/// A page of deliveries matching `filter` (from [`delivery_filter`]), newest first, with their job counts.
pub(super) fn list_deliveries_sql(filter: &str) -> String {
    format!(
        "SELECT d.id, d.source, d.event, d.delivery, d.received_at, {JOB_COUNT_COLUMNS}
         FROM (SELECT id, source, event, delivery, received_at FROM deliveries
               WHERE 1 = 1{filter} ORDER BY id DESC LIMIT ?) d
         LEFT JOIN jobs j ON j.delivery_id = d.id
         GROUP BY d.id ORDER BY d.id DESC"
    )
}

pub(super) fn list_deliveries_tx(conn: &Connection, q: &DeliveryQuery) -> Result<Page<DeliverySummary>, StoreError> {
    let limit = page_limit(q.limit);
    let (filter, mut args) = delivery_filter(q);
    args.push(Value::Integer(limit as i64));
    let sql = list_deliveries_sql(&filter);
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
                jobs: job_counts_at(r, 5)?,
            })
        })
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    Ok(page(items, limit, |d| &d.id))
}

pub(super) fn scan_deliveries_tx(conn: &Connection, q: &DeliveryQuery) -> Result<Page<ScannedDelivery>, StoreError> {
    let limit = page_limit(q.limit);
    let (filter, mut args) = delivery_filter(q);
    args.push(Value::Integer(limit as i64));
    let sql = format!(
        "SELECT d.id, d.source, d.event, d.delivery, d.received_at, d.headers, d.body, d.body_codec, d.replay_key,
                {JOB_COUNT_COLUMNS}
         FROM (SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1{filter} ORDER BY id DESC LIMIT ?) d
         LEFT JOIN jobs j ON j.delivery_id = d.id
         GROUP BY d.id ORDER BY d.id DESC"
    );
    let items = conn
        .prepare_cached(&sql)
        .map_err(sql_error)?
        .query_map(params_from_iter(args), |r| Ok((delivery_row(r)?, job_counts_at(r, 9)?)))
        .map_err(sql_error)?
        .map(|row| {
            let (delivery, jobs) = row.map_err(sql_error)?;
            Ok(ScannedDelivery { delivery: decode_delivery(delivery)?, jobs })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(page(items, limit, |d| &d.delivery.id))
}

pub(super) fn list_jobs_tx(conn: &Connection, q: &JobQuery) -> Result<Page<JobSummary>, StoreError> {
    let limit = page_limit(q.limit);
    let mut filter = String::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(status) = q.status {
        filter.push_str(" AND j.status = ?");
        args.push(Value::Text(status.as_str().into()));
    }
    if let Some(route) = &q.route {
        filter.push_str(" AND j.route = ?");
        args.push(Value::Text(route.clone()));
    }
    for (bound, value) in [(" AND j.updated_at >= ?", q.since), (" AND j.updated_at < ?", q.until)] {
        if let Some(at) = value {
            filter.push_str(bound);
            args.push(Value::Integer(at));
        }
    }
    if let Some(before) = &q.before {
        filter.push_str(" AND j.id < ?");
        args.push(Value::Text(before.clone()));
    }
    args.push(Value::Integer(limit as i64));
    let sql = format!("SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE 1 = 1{filter} ORDER BY j.id DESC LIMIT ?");
    let items = conn
        .prepare_cached(&sql)
        .map_err(sql_error)?
        .query_map(params_from_iter(args), job_row)
        .map_err(sql_error)?
        .map(|row| row.map_err(sql_error).and_then(JobRow::into_summary))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(page(items, limit, |j| &j.id))
}

/// Queue depths from the counters the `job_counts` triggers keep (migration 5): one row per (route, status).
pub(super) const JOB_COUNTS: &str = "SELECT status, SUM(n) FROM job_counts GROUP BY status";

pub(super) fn job_counts_tx(conn: &Connection) -> Result<JobCounts, StoreError> {
    let rows = conn
        .prepare_cached(JOB_COUNTS)
        .map_err(sql_error)?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    row::job_counts(rows)
}

/// The earliest due job of one route, from the `jobs_route_queue` index (migration 8): one seek.
pub(super) const OLDEST_DUE: &str =
    "SELECT run_at FROM jobs WHERE route = ?1 AND status = 'queued' AND run_at <= ?2 ORDER BY run_at LIMIT 1";

pub(super) fn oldest_due_tx(
    conn: &Connection,
    routes: &[String],
    now: Millis,
) -> Result<Vec<(String, Millis)>, StoreError> {
    let mut statement = conn.prepare_cached(OLDEST_DUE).map_err(sql_error)?;
    let mut out = Vec::new();
    for route in routes {
        let run_at: Option<Millis> =
            statement.query_row(rusqlite::params![route, now], |r| r.get(0)).optional().map_err(sql_error)?;
        out.extend(run_at.map(|at| (route.clone(), at)));
    }
    Ok(out)
}
