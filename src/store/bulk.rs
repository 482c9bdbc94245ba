//! bulk: what a store is asked for the bulk operations (retry and cancel jobs by filter, replay deliveries by
//! filter) and what it answers, with the idempotency keys that make a retried request act once.
//!
//! A key is stored in the transaction of the action it answers, with a fingerprint of the request (operation
//! and filter) and the outcome: the same key again gets the stored outcome and nothing is done twice; the same
//! key with another fingerprint is refused. Keys are forgotten after [`IDEMPOTENCY_TTL`].

use super::*;

/// The `last_error` of a job an operator cancelled.
pub const CANCELLED_BY_OPERATOR: &str = "cancelled by an operator";

/// How long an idempotency key is remembered (and refuses another request): 24 hours.
pub const IDEMPOTENCY_TTL: Millis = 24 * 3_600_000;

/// The most jobs, or deliveries, one bulk request acts on; the answer says when more matched. Bounds the time a
/// request holds the store's writer (and the memory a replay plans in).
pub const BULK_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Terminal jobs go back to the queue, attempts reset, due now.
    Retry,
    /// Queued jobs become `cancelled`; running jobs are left to finish.
    Cancel,
}

impl BulkAction {
    /// The status of the jobs this action takes: cancel takes queued jobs (running ones finish as they
    /// would); retry takes terminal jobs, `dead` unless another terminal status is asked for.
    pub fn target(self, asked: Option<JobStatus>) -> Result<JobStatus, String> {
        match (self, asked) {
            (BulkAction::Cancel, None | Some(JobStatus::Queued)) => Ok(JobStatus::Queued),
            (BulkAction::Cancel, Some(other)) => Err(format!(
                "only queued jobs can be cancelled (running jobs are left to finish), not `{}`",
                other.as_str()
            )),
            (BulkAction::Retry, None) => Ok(JobStatus::Dead),
            (BulkAction::Retry, Some(status)) if status.is_terminal() => Ok(status),
            (BulkAction::Retry, Some(other)) => {
                Err(format!("only dead, cancelled or succeeded jobs can be retried, not `{}`", other.as_str()))
            }
        }
    }
}

/// A request's idempotency key and the fingerprint of what it asks (operation and filter, as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

/// Retry or cancel the jobs of `status` (see [`BulkAction::target`]) matching the filter, oldest (by id)
/// first, at most `limit`. `since` (inclusive) and `until` (exclusive) compare with the job's `updated_at`:
/// when it last changed state — for a dead, succeeded or cancelled job, when it ended.
#[derive(Debug, Clone)]
pub struct BulkJobs {
    pub action: BulkAction,
    pub status: JobStatus,
    pub route: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub limit: usize,
    pub now: Millis,
    pub key: Option<IdempotencyKey>,
}

/// Deliveries to replay: `since` (inclusive) and `until` (exclusive) compare with `received_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub source: Option<String>,
    pub event: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

/// Jobs to add to stored deliveries (routed again by the caller with the current routes), in one transaction.
#[derive(Debug, Clone)]
pub struct BulkReplay {
    /// Each delivery id with the jobs it gets (possibly none: it is still counted as replayed).
    pub plan: Vec<(String, Vec<NewJob>)>,
    /// More deliveries matched than the plan holds.
    pub more: bool,
    pub now: Millis,
    pub key: Option<IdempotencyKey>,
}

/// What a bulk operation did: `count` jobs retried or cancelled, or deliveries replayed; `jobs` created or
/// merged by a replay (0 otherwise); `more` when others matched beyond the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    pub count: u64,
    pub jobs: u64,
    pub more: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAnswer {
    /// Acted now (and stored the outcome under the key, if there was one).
    Done(BulkOutcome),
    /// The key was used before for the same request: its stored outcome; nothing was done now.
    Repeat(BulkOutcome),
    /// The key was used before for another operation or filter; nothing was done.
    KeyReused,
}

impl BulkAnswer {
    /// The answer for a key found stored with `fingerprint` and `outcome`.
    pub fn stored(key: &IdempotencyKey, fingerprint: &str, outcome: BulkOutcome) -> Self {
        if key.fingerprint == fingerprint {
            BulkAnswer::Repeat(outcome)
        } else {
            BulkAnswer::KeyReused
        }
    }
}

/// Keys created before this are forgotten.
pub fn idempotency_cutoff(now: Millis) -> Millis {
    now - IDEMPOTENCY_TTL
}
