//! row: what both stores write and read the same way — headers as JSON text, job status names, job rows,
//! duplicate lookups, page limits and cursors, and the queue-depth counters.
//!
//! Each backend still reads its own rows (`rusqlite::Row`, `tokio_postgres::Row`); what happens to the
//! values after that is here, once, so the two cannot drift apart.

use super::*;

/// The job columns, in the order [`JobRow`] takes them, read from [`JOB_FROM`].
pub const JOB_COLUMNS: &str = "j.id, j.delivery_id, j.route, j.status, j.attempts, j.last_error, j.run_at, \
                               j.created_at, j.updated_at, j.merged, d.source, d.event";

/// Jobs (`j`) with their delivery (`d`), which names the job's source and event.
pub const JOB_FROM: &str = "jobs j JOIN deliveries d ON d.id = j.delivery_id";

/// Headers as stored: a JSON list of `[name, value]` pairs, in arrival order.
pub fn headers_to_text(headers: &[(String, String)]) -> Result<String, StoreError> {
    serde_json::to_string(headers).map_err(|e| StoreError::Internal(format!("headers do not encode: {e}")))
}

pub fn headers_from_text(text: &str) -> Result<Vec<(String, String)>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("corrupt headers: {e}")))
}

pub fn status_of(text: &str) -> Result<JobStatus, StoreError> {
    JobStatus::parse(text).ok_or_else(|| StoreError::Internal(format!("unknown job status `{text}`")))
}

/// A job row as stored ([`JOB_COLUMNS`]), before its status text is checked.
pub struct JobRow {
    pub id: String,
    pub delivery_id: String,
    pub route: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub run_at: Millis,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub merged: u32,
    pub source: String,
    pub event: String,
}

impl JobRow {
    pub fn into_summary(self) -> Result<JobSummary, StoreError> {
        let status = status_of(&self.status)?;
        Ok(JobSummary {
            id: self.id,
            delivery_id: self.delivery_id,
            route: self.route,
            status,
            attempts: self.attempts,
            last_error: self.last_error,
            next_attempt_at: (status == JobStatus::Queued).then_some(self.run_at),
            created_at: self.created_at,
            updated_at: self.updated_at,
            merged: self.merged,
            source: self.source,
            event: self.event,
        })
    }
}

/// Where the first copy of a delivery that arrived again is found, in this order: the column to compare
/// (together with `source`) and the value. A delivery without a replay key has only the first.
pub fn dedup_keys(d: &Delivery) -> Vec<(&'static str, &str)> {
    let mut keys = vec![("delivery", d.delivery.as_str())];
    keys.extend(d.replay_key.as_deref().map(|key| ("replay_key", key)));
    keys
}

/// Neither dedup key found the first copy, so only the primary key is left to clash: a bug in the caller,
/// never a duplicate.
pub fn id_taken(d: &Delivery) -> StoreError {
    StoreError::Internal(format!("delivery id {} is already taken", d.id))
}

/// The rows a list query asks for: 50 when the caller gave no limit, never more than 1000.
pub fn page_limit(limit: usize) -> usize {
    if limit == 0 {
        50
    } else {
        limit.min(1000)
    }
}

/// A page read with `limit` (from [`page_limit`]): a full page may have more after it, starting below its
/// last id.
pub fn page<T>(items: Vec<T>, limit: usize, id: impl Fn(&T) -> &str) -> Page<T> {
    let next = if items.len() == limit { items.last().map(|item| id(item).to_string()) } else { None };
    Page { items, next }
}

/// Queue depths from `(status, count)` rows of the `job_counts` counters (summed per status).
pub fn job_counts<S: AsRef<str>>(rows: impl IntoIterator<Item = (S, i64)>) -> Result<JobCounts, StoreError> {
    let mut counts = JobCounts::default();
    for (status, n) in rows {
        // A negative sum would be a bug; it reads as empty, not as a huge number.
        let n = n.max(0) as u64;
        counts.set(status_of(status.as_ref())?, n);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_corrupt_text_is_an_internal_error() {
        let headers = vec![("x-a".to_string(), "1".to_string()), ("x-b".to_string(), "two".to_string())];
        assert_eq!(headers_from_text(&headers_to_text(&headers).unwrap()).unwrap(), headers);
        assert!(matches!(headers_from_text("{"), Err(StoreError::Internal(_))));
        assert!(matches!(status_of("paused"), Err(StoreError::Internal(_))));
    }

    #[test]
    fn a_full_page_points_below_its_last_item_and_a_short_one_ends() {
        assert_eq!(page_limit(0), 50);
        assert_eq!(page_limit(5000), 1000);
        let full = page(vec!["c".to_string(), "b".to_string()], 2, |s| s);
        assert_eq!(full.next.as_deref(), Some("b"));
        assert!(page(vec!["c".to_string()], 2, |s| s).next.is_none());
    }
}
