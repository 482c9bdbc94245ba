//! The SQLite store's reads, each run on a reader connection inside one read transaction (a snapshot).

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension, Row};

use super::writes::LeasedJob;
use super::{internal, sql_error};
use crate::store::codec;
use crate::store::row::{self, headers_from_text, page, page_limit, JobRow, JOB_COLUMNS};
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
    })
}

pub(super) fn load_delivery(conn: &Connection, id: &str) -> Result<Option<Delivery>, StoreError> {
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
                r.get::<_, Option<String>>(8)?,
            ))
        })
        .optional()
        .map_err(sql_error)?;
    let Some((id, source, event, delivery, received_at, headers, body, codec, replay_key)) = row else {
        return Ok(None);
    };
    Ok(Some(Delivery {
        id,
        source,
        event,
        delivery,
        received_at,
        headers: headers_from_text(&headers)?,
        body: codec::decode(codec, body)?,
        replay_key,
    }))
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

pub(super) fn list_deliveries_tx(conn: &Connection, q: &DeliveryQuery) -> Result<Page<DeliverySummary>, StoreError> {
    let limit = page_limit(q.limit);
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
                COALESCE(SUM(j.status = 'succeeded'), 0), COALESCE(SUM(j.status = 'dead'), 0),
                COALESCE(SUM(j.status = 'cancelled'), 0)
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
                    cancelled: r.get::<_, i64>(9)? as u64,
                },
            })
        })
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    Ok(page(items, limit, |d| &d.id))
}

pub(super) fn list_jobs_tx(conn: &Connection, q: &JobQuery) -> Result<Page<JobSummary>, StoreError> {
    let limit = page_limit(q.limit);
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
