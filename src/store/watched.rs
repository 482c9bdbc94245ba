//! Write health: a store wrapper that remembers whether the last write failed, so `/readyz` means "a delivery can be committed now".
//!
//! A full disk or a read-only file system still lets the database answer a read (the old `/readyz` said
//! ready while every delivery got 503). Every write through this wrapper is watched: one that fails because
//! the store is unavailable makes the store not ready until a later write, or a probe write made by
//! [`Store::readiness`] itself (at most one a second), commits. Both stores are watched the same way.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;

/// The least time between two probe writes, however often `/readyz` (which needs no credentials) is asked.
const PROBE_EVERY: Duration = Duration::from_secs(1);

pub struct Watched {
    inner: DynStore,
    state: Mutex<State>,
    /// One probe at a time; holds when the last one ran and whether it committed.
    probe: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

#[derive(Default)]
struct State {
    /// Why the last watched write failed; `None` once one committed after it.
    failed: Option<String>,
    /// Grows with every failure, so a probe that started before a newer failure does not clear it.
    failures: u64,
}

impl Watched {
    pub fn new(inner: DynStore) -> Self {
        Watched { inner, state: Mutex::new(State::default()), probe: tokio::sync::Mutex::new(None) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note the outcome of a write: `wrote` says whether an `Ok` committed a change (a duplicate or an empty
    /// claim writes nothing and proves nothing). Errors that are not about the store's availability (a bug,
    /// a bad row) say nothing about the disk either.
    fn observe<T>(&self, result: Result<T, StoreError>, wrote: impl FnOnce(&T) -> bool) -> Result<T, StoreError> {
        match &result {
            Ok(value) if wrote(value) => self.succeeded(None),
            Err(StoreError::Unavailable(e)) => self.failed(e),
            _ => {}
        }
        result
    }

    fn failed(&self, error: &str) {
        let mut state = self.state();
        if state.failed.is_none() {
            tracing::error!(error, "a store write failed; /readyz answers 503 until a write commits again");
        }
        state.failed = Some(error.to_string());
        state.failures += 1;
    }

    /// A write committed; `since` (a failure count) keeps a failure newer than the write's start.
    fn succeeded(&self, since: Option<u64>) {
        let mut state = self.state();
        if state.failed.is_some() && since.is_none_or(|n| n == state.failures) {
            tracing::info!("store writes commit again; ready");
            state.failed = None;
        }
    }
}

#[async_trait]
impl Store for Watched {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let since = self.state().failures;
        let result = self.inner.probe_write().await;
        match &result {
            Ok(()) => self.succeeded(Some(since)),
            Err(StoreError::Unavailable(e)) => self.failed(e),
            Err(_) => {}
        }
        result
    }

    async fn readiness(&self) -> Result<(), NotReady> {
        let Some(reason) = self.state().failed.clone() else {
            return self.inner.ping().await.map_err(NotReady::Unreachable);
        };
        let mut last = self.probe.lock().await;
        if let Some((at, false)) = *last {
            if at.elapsed() < PROBE_EVERY {
                return Err(NotReady::WriteFailed(StoreError::Unavailable(reason)));
            }
        }
        let result = self.probe_write().await;
        *last = Some((Instant::now(), result.is_ok()));
        match (result, self.state().failed.clone()) {
            (Ok(()), None) => Ok(()),
            // A real write failed while the probe ran: that is the newer news.
            (Ok(()), Some(reason)) => Err(NotReady::WriteFailed(StoreError::Unavailable(reason))),
            (Err(e), _) => Err(NotReady::WriteFailed(e)),
        }
    }

    async fn insert_delivery(&self, delivery: Delivery, jobs: Vec<NewJob>) -> Result<Insert, StoreError> {
        let result = self.inner.insert_delivery(delivery, jobs).await;
        self.observe(result, |i| matches!(i, Insert::Stored { .. }))
    }

    async fn insert_jobs(&self, delivery_id: &str, jobs: Vec<NewJob>) -> Result<usize, StoreError> {
        let result = self.inner.insert_jobs(delivery_id, jobs).await;
        self.observe(result, |n| *n > 0)
    }

    async fn claim_jobs(&self, claim: Claim) -> Result<Vec<ClaimedJob>, StoreError> {
        let result = self.inner.claim_jobs(claim).await;
        self.observe(result, |jobs| !jobs.is_empty())
    }

    async fn finish_job(
        &self,
        job_id: &str,
        owner: &str,
        attempt: AttemptRecord,
        next: NextState,
    ) -> Result<bool, StoreError> {
        let result = self.inner.finish_job(job_id, owner, attempt, next).await;
        self.observe(result, |done| *done)
    }

    async fn release_job(&self, job_id: &str, owner: &str, run_at: Millis) -> Result<bool, StoreError> {
        let result = self.inner.release_job(job_id, owner, run_at).await;
        self.observe(result, |done| *done)
    }

    async fn retry_job(&self, job_id: &str, now: Millis) -> Result<bool, StoreError> {
        let result = self.inner.retry_job(job_id, now).await;
        self.observe(result, |done| *done)
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryDetail>, StoreError> {
        self.inner.get_delivery(id).await
    }

    async fn list_deliveries(&self, query: DeliveryQuery) -> Result<Page<DeliverySummary>, StoreError> {
        self.inner.list_deliveries(query).await
    }

    async fn list_jobs(&self, query: JobQuery) -> Result<Page<JobSummary>, StoreError> {
        self.inner.list_jobs(query).await
    }

    async fn scan_deliveries(&self, query: DeliveryQuery) -> Result<Page<ScannedDelivery>, StoreError> {
        self.inner.scan_deliveries(query).await
    }

    async fn purge(&self, before: Millis) -> Result<u64, StoreError> {
        let result = self.inner.purge(before).await;
        self.observe(result, |n| *n > 0)
    }

    async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        self.inner.job_counts().await
    }

    async fn change_route(
        &self,
        route: &str,
        change: control::RouteChange,
        now: Millis,
    ) -> Result<(control::RouteState, control::RouteState), StoreError> {
        let result = self.inner.change_route(route, change, now).await;
        self.observe(result, |_| true)
    }

    async fn pause_source(
        &self,
        source: &str,
        pause: Option<control::Pause>,
        now: Millis,
    ) -> Result<Option<control::Pause>, StoreError> {
        let result = self.inner.pause_source(source, pause, now).await;
        self.observe(result, |_| true)
    }

    async fn control_state(&self) -> Result<control::ControlState, StoreError> {
        self.inner.control_state().await
    }

    async fn bulk_jobs(&self, op: BulkJobs) -> Result<BulkAnswer, StoreError> {
        let result = self.inner.bulk_jobs(op).await;
        self.observe(result, |answer| matches!(answer, BulkAnswer::Done(o) if o.count > 0))
    }

    async fn find_deliveries(
        &self,
        filter: &DeliveryFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.inner.find_deliveries(filter, after, limit).await
    }

    async fn replay_deliveries(&self, replay: BulkReplay) -> Result<BulkAnswer, StoreError> {
        let result = self.inner.replay_deliveries(replay).await;
        self.observe(result, |answer| matches!(answer, BulkAnswer::Done(o) if o.jobs > 0))
    }

    async fn idempotent_answer(&self, key: &IdempotencyKey, now: Millis) -> Result<Option<BulkAnswer>, StoreError> {
        self.inner.idempotent_answer(key, now).await
    }

    async fn oldest_due(&self, routes: &[String], now: Millis) -> Result<Vec<(String, Millis)>, StoreError> {
        self.inner.oldest_due(routes, now).await
    }

    async fn queued_by_route(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.inner.queued_by_route().await
    }

    async fn record_stats(&self, rows: Vec<stats::StatsDelta>) -> Result<(), StoreError> {
        // An empty flush commits nothing, so it proves nothing.
        let wrote = !rows.is_empty();
        let result = self.inner.record_stats(rows).await;
        self.observe(result, |_| wrote)
    }

    async fn stats(&self, query: stats::StatsQuery) -> Result<stats::StatsSeries, StoreError> {
        self.inner.stats(query).await
    }

    async fn last_errors(&self) -> Result<Vec<(String, String, Millis)>, StoreError> {
        self.inner.last_errors().await
    }

    async fn stored_deliveries(
        &self,
        source: &str,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.inner.stored_deliveries(source, ids).await
    }

    async fn take_lease(&self, name: &str, owner: &str, until: Millis, now: Millis) -> Result<bool, StoreError> {
        let result = self.inner.take_lease(name, owner, until, now).await;
        self.observe(result, |taken| *taken)
    }
}
