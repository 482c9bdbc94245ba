//! PostgreSQL side of the dashboard statistics: merging per-minute deltas into `stats_minute` and reading them
//! back grouped into buckets (migration 9).

use std::sync::LazyLock;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{pg_error, PostgresStore};
use crate::store::stats::{
    newest_per_route, sql, Counts, Scope, StatsBucket, StatsDelta, StatsQuery, StatsSeries, COUNTER_COLUMNS,
};
use crate::store::{Millis, StoreError};

/// Counters add; `GREATEST` passes over NULLs, so a gauge without a sample on one side keeps the other's.
static UPSERT: LazyLock<String> =
    LazyLock::new(|| sql::upsert(|i| format!("${i}"), |c| format!("GREATEST(stats_minute.{c}, excluded.{c})")));

static BUCKETS: LazyLock<String> = LazyLock::new(|| sql::buckets(|i| format!("${i}"), "::bigint"));

const QUEUED_BY_ROUTE: &str = "SELECT route, SUM(n)::bigint FROM job_counts WHERE status = 'queued'
     GROUP BY route HAVING SUM(n) > 0 ORDER BY route";

fn internal(text: impl Into<String>) -> StoreError {
    StoreError::Internal(text.into())
}

impl PostgresStore {
    /// Rows are written in key order: two instances flushing the same rows at once lock them in the same order
    /// and never deadlock.
    pub(super) async fn record_stats_tx(&self, mut rows: Vec<StatsDelta>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort_by(|a, b| (a.scope, &a.name, a.minute).cmp(&(b.scope, &b.name, b.minute)));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let statement = tx.prepare_cached(&UPSERT).await.map_err(pg_error)?;
        for row in &rows {
            let scope = row.scope.as_str();
            let (error, error_at) = match &row.last_error {
                Some((text, at)) => (Some(text.as_str()), Some(*at)),
                None => (None, None),
            };
            let mut values: Vec<&(dyn ToSql + Sync)> = vec![&scope, &row.name, &row.minute];
            values.extend(row.counts.iter().map(|n| n as &(dyn ToSql + Sync)));
            values.extend([&row.queue_depth as &(dyn ToSql + Sync), &row.queue_oldest_ms, &error, &error_at]);
            tx.execute(&statement, &values).await.map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    pub(super) async fn stats_query(&self, q: StatsQuery) -> Result<StatsSeries, StoreError> {
        if q.bucket_ms <= 0 {
            return Err(internal("a stats bucket must be longer than zero"));
        }
        let client = self.client().await?;
        let statement = client.prepare_cached(&BUCKETS).await.map_err(pg_error)?;
        let rows = client.query(&statement, &[&q.since, &q.until, &q.bucket_ms]).await.map_err(pg_error)?;
        Ok(StatsSeries { buckets: rows.iter().map(bucket_row).collect::<Result<Vec<_>, StoreError>>()? })
    }

    pub(super) async fn last_errors_query(&self) -> Result<Vec<(String, String, Millis)>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(sql::LAST_ERRORS, &[]).await.map_err(pg_error)?;
        Ok(newest_per_route(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()))
    }

    pub(super) async fn queued_by_route_query(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(QUEUED_BY_ROUTE, &[]).await.map_err(pg_error)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Delete the rows of minutes before `before`.
pub(super) async fn purge_stats(
    client: &impl tokio_postgres::GenericClient,
    before: Millis,
) -> Result<u64, StoreError> {
    client.execute("DELETE FROM stats_minute WHERE minute < $1", &[&before]).await.map_err(pg_error)
}

fn bucket_row(r: &Row) -> Result<StatsBucket, StoreError> {
    let scope: &str = r.get(0);
    let scope = Scope::parse(scope).ok_or_else(|| internal(format!("unknown stats scope `{scope}`")))?;
    let mut counts: Counts = [0; COUNTER_COLUMNS.len()];
    for (i, n) in counts.iter_mut().enumerate() {
        *n = r.try_get(3 + i).map_err(pg_error)?;
    }
    let gauges = 3 + COUNTER_COLUMNS.len();
    Ok(StatsBucket {
        scope,
        name: r.get(1),
        bucket: r.get(2),
        counts,
        queue_depth: r.get(gauges),
        queue_oldest_ms: r.get(gauges + 1),
    })
}
