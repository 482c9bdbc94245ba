//! SQLite side of the dashboard statistics: merging per-minute deltas into `stats_minute` and reading them
//! back grouped into buckets (migration 9).

use std::sync::LazyLock;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Row};

use super::{internal, sql_error};
use crate::store::stats::{
    newest_per_route, sql, Counts, Scope, StatsBucket, StatsDelta, StatsQuery, StatsSeries, COUNTER_COLUMNS,
};
use crate::store::{Millis, StoreError};

/// Counters add; `max()` of a NULL is NULL in SQLite, so a gauge without a sample on one side keeps the other's.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    sql::upsert(
        |i| format!("?{i}"),
        |c| format!("COALESCE(max(stats_minute.{c}, excluded.{c}), stats_minute.{c}, excluded.{c})"),
    )
});

static BUCKETS: LazyLock<String> = LazyLock::new(|| sql::buckets(|i| format!("?{i}"), ""));

pub(super) fn record_stats_tx(c: &Connection, rows: &[StatsDelta]) -> Result<(), StoreError> {
    let mut statement = c.prepare_cached(&UPSERT).map_err(sql_error)?;
    for row in rows {
        let mut values: Vec<Value> =
            vec![row.scope.as_str().to_string().into(), row.name.clone().into(), row.minute.into()];
        values.extend(row.counts.iter().map(|&n| Value::from(n)));
        values.push(row.queue_depth.into());
        values.push(row.queue_oldest_ms.into());
        values.push(row.last_error.as_ref().map(|(text, _)| text.clone()).into());
        values.push(row.last_error.as_ref().map(|(_, at)| *at).into());
        statement.execute(params_from_iter(values)).map_err(sql_error)?;
    }
    Ok(())
}

pub(super) fn stats_tx(c: &Connection, q: &StatsQuery) -> Result<StatsSeries, StoreError> {
    if q.bucket_ms <= 0 {
        return Err(internal("a stats bucket must be longer than zero"));
    }
    let mut statement = c.prepare_cached(&BUCKETS).map_err(sql_error)?;
    let rows = statement
        .query_map(params![q.since, q.until, q.bucket_ms], |r| Ok(bucket_row(r)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    Ok(StatsSeries { buckets: rows.into_iter().collect::<Result<Vec<_>, StoreError>>()? })
}

fn bucket_row(r: &Row) -> Result<StatsBucket, StoreError> {
    let scope: String = r.get(0).map_err(sql_error)?;
    let scope = Scope::parse(&scope).ok_or_else(|| internal(format!("unknown stats scope `{scope}`")))?;
    let mut counts: Counts = [0; COUNTER_COLUMNS.len()];
    for (i, n) in counts.iter_mut().enumerate() {
        *n = r.get(3 + i).map_err(sql_error)?;
    }
    let gauges = 3 + COUNTER_COLUMNS.len();
    Ok(StatsBucket {
        scope,
        name: r.get(1).map_err(sql_error)?,
        bucket: r.get(2).map_err(sql_error)?,
        counts,
        queue_depth: r.get(gauges).map_err(sql_error)?,
        queue_oldest_ms: r.get(gauges + 1).map_err(sql_error)?,
    })
}

pub(super) fn last_errors_tx(c: &Connection) -> Result<Vec<(String, String, Millis)>, StoreError> {
    let mut statement = c.prepare_cached(sql::LAST_ERRORS).map_err(sql_error)?;
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Millis>(2)?)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    Ok(newest_per_route(rows))
}

pub(super) fn purge_stats_tx(c: &Connection, before: Millis) -> Result<usize, StoreError> {
    c.prepare_cached("DELETE FROM stats_minute WHERE minute < ?1")
        .map_err(sql_error)?
        .execute([before])
        .map_err(sql_error)
}

pub(super) fn queued_by_route_tx(c: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut statement = c
        .prepare_cached("SELECT route, n FROM job_counts WHERE status = 'queued' AND n > 0 ORDER BY route")
        .map_err(sql_error)?;
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    Ok(rows)
}
