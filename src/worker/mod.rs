//! worker: claims due jobs under a lease, runs their actions, records attempts, retries with backoff.
//!
//! Job life: `queued` → `running` (leased to this instance) → `succeeded` | `queued` again with a later
//! `run_at` | `dead`. A crashed instance's leases expire and its jobs are claimed again. On shutdown the
//! worker stops claiming, lets running jobs finish within the grace period, then stops them and gives
//! them back to the queue without using up an attempt.

pub mod maintenance;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::actions::{AttemptResult, Outcome, Runner};
use crate::live::breaker::Allowance;
use crate::live::{Live, LiveHandle};
use crate::metrics::{DELIVERY_LATENCY, JOBS_DEAD, JOBS_TOTAL, JOB_DURATION};
use crate::store::{now_ms, AttemptRecord, Claim, ClaimedJob, DynStore, NextState, StoreError};
use crate::template::EventContext;

/// Claims that may wait for their commit at once.
const CLAIMS_IN_FLIGHT: usize = 2;

pub struct Worker {
    store: DynStore,
    live: LiveHandle,
    runner: Runner,
    owner: String,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    route_slots: Mutex<HashMap<(String, usize), Arc<Semaphore>>>,
    /// Held by the claim that may take a half-open route's probe (see `claim`).
    probe_claims: tokio::sync::Mutex<()>,
    /// Fires when the shutdown grace is over: running actions are stopped.
    force: CancellationToken,
}

/// What a claim task hands back: the configuration it claimed under and the jobs it leased.
type ClaimOutcome = (Arc<Live>, Result<Vec<Running>, StoreError>);

/// A job this worker claimed, with the capacity it holds while running.
struct Running {
    job: ClaimedJob,
    slot: OwnedSemaphorePermit,
    route_slot: Option<OwnedSemaphorePermit>,
}

impl Worker {
    pub fn new(store: DynStore, live: LiveHandle, wake: Arc<Notify>, runner: Runner) -> Self {
        let concurrency = live.current().config.worker.concurrency;
        let id = crate::store::new_id();
        Worker {
            store,
            live,
            runner,
            owner: format!("{}-{}", std::process::id(), &id[id.len() - 8..]),
            wake,
            slots: Arc::new(Semaphore::new(concurrency)),
            route_slots: Mutex::new(HashMap::new()),
            probe_claims: tokio::sync::Mutex::new(()),
            force: CancellationToken::new(),
        }
    }

    /// This instance's lease owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Claim what is due now and run it to completion; returns how many jobs ran. Tests drive the queue
    /// step by step with this.
    pub async fn run_due_jobs(&self) -> Result<usize, StoreError> {
        let live = self.live.current();
        let claimed = self.claim(&live).await?;
        let n = claimed.len();
        let runs = claimed.into_iter().map(|r| self.execute(&live, r));
        futures_util::future::join_all(runs).await;
        Ok(n)
    }

    /// Run until `shutdown` fires, then drain within the configured grace.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        // Claims waiting for their commit. A second one may start while the first waits, for capacity
        // freed in the meantime, so a slot does not sit idle for a whole commit.
        let mut claims: JoinSet<ClaimOutcome> = JoinSet::new();
        let mut failures = 0u32;
        let mut idle = false;
        while !shutdown.is_cancelled() {
            let live = self.live.current();
            if !idle && claims.len() < CLAIMS_IN_FLIGHT && self.slots.available_permits() > 0 {
                let worker = self.clone();
                claims.spawn(async move {
                    let claimed = worker.claim(&live).await;
                    (live, claimed)
                });
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.wake.notified() => idle = false,
                _ = tokio::time::sleep(live.config.worker.poll_interval), if claims.is_empty() => idle = false,
                Some(done) = claims.join_next(), if !claims.is_empty() => {
                    let claimed = match done {
                        Ok((live, Ok(claimed))) => {
                            failures = 0;
                            Some((live, claimed))
                        }
                        Ok((_, Err(e))) => {
                            failures += 1;
                            if failures == 1 || failures % 30 == 0 {
                                tracing::warn!(error = %e, "cannot claim jobs; will retry");
                            }
                            None
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a claim failed unexpectedly; will retry");
                            None
                        }
                    };
                    idle = claimed.as_ref().is_none_or(|(_, jobs)| jobs.is_empty());
                    if let Some((live, jobs)) = claimed {
                        self.spawn_all(&mut tasks, &live, jobs);
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            while tasks.try_join_next().is_some() {}
        }
        // Jobs leased by claims still in flight run (or are released) like the others.
        while let Some(done) = claims.join_next().await {
            if let Ok((live, Ok(jobs))) = done {
                self.spawn_all(&mut tasks, &live, jobs);
            }
        }
        self.drain(tasks).await;
    }

    fn spawn_all(self: &Arc<Self>, tasks: &mut JoinSet<()>, live: &Arc<Live>, jobs: Vec<Running>) {
        for running in jobs {
            let (worker, live) = (self.clone(), live.clone());
            tasks.spawn(async move { worker.execute(&live, running).await });
        }
    }

    async fn drain(&self, mut tasks: JoinSet<()>) {
        if tasks.is_empty() {
            return;
        }
        let grace = self.live.current().config.worker.shutdown_grace;
        tracing::info!(running = tasks.len(), grace_s = grace.as_secs(), "waiting for running jobs");
        let finished = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!(running = tasks.len(), "grace period over; stopping running jobs and releasing them");
            self.force.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), async { while tasks.join_next().await.is_some() {} })
                .await;
        }
    }

    fn route_semaphore(&self, route: &str, limit: usize) -> Arc<Semaphore> {
        let mut map = self.route_slots.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((route.to_string(), limit)).or_insert_with(|| Arc::new(Semaphore::new(limit))).clone()
    }

    /// Claim as many due jobs as there is capacity for: global slots, per-route `concurrency`, and what
    /// each route's circuit breaker allows (nothing while open, one probe while half-open). Routes that are
    /// disabled, open or stopped by a 410 are not claimed at all: their jobs wait in the queue.
    async fn claim(&self, live: &Live) -> Result<Vec<Running>, StoreError> {
        let health = &self.live.health;
        // Two claims may overlap; only the one holding this claims half-open routes' single probe, and it
        // holds it until the probe is marked as started.
        let probes = self.probe_claims.try_lock().ok();
        let mut out = Vec::new();
        let mut grouped = Vec::new();
        let mut grouped_timeout = Duration::ZERO;
        let mut single = Vec::new();
        for route in live.routes.routes().filter(|r| r.config.enabled) {
            let cap = match health.allowance(&route.config) {
                Allowance::Any => None,
                Allowance::One if probes.is_some() => Some(1),
                Allowance::One | Allowance::None { .. } => continue,
            };
            let timeout = route.config.action.timeout();
            match (route.config.concurrency, cap) {
                (None, None) => {
                    grouped.push(route.name().to_string());
                    grouped_timeout = grouped_timeout.max(timeout);
                }
                (concurrency, cap) => single.push((route, concurrency, cap, timeout)),
            }
        }
        if !grouped.is_empty() {
            self.claim_into(live, &mut out, grouped, grouped_timeout, None, None).await?;
        }
        for (route, concurrency, cap, timeout) in single {
            let sem = concurrency.map(|n| self.route_semaphore(route.name(), n));
            if sem.as_ref().is_some_and(|s| s.available_permits() == 0) {
                continue;
            }
            let before = out.len();
            self.claim_into(live, &mut out, vec![route.name().to_string()], timeout, sem, cap).await?;
            if cap.is_some() && out.len() > before {
                health.started(&route.config);
            }
        }
        Ok(out)
    }

    async fn claim_into(
        &self,
        live: &Live,
        out: &mut Vec<Running>,
        routes: Vec<String>,
        timeout: Duration,
        route_sem: Option<Arc<Semaphore>>,
        cap: Option<usize>,
    ) -> Result<(), StoreError> {
        let mut limit = self.slots.available_permits();
        if let Some(sem) = &route_sem {
            limit = limit.min(sem.available_permits());
        }
        if let Some(cap) = cap {
            limit = limit.min(cap);
        }
        if limit == 0 {
            return Ok(());
        }
        // The capacity is taken before the claim, so claims can overlap (one may be waiting for its commit
        // while the next is issued); what the claim does not use goes back when these permits drop.
        let Ok(mut slots) = self.slots.clone().try_acquire_many_owned(limit as u32) else {
            return Ok(());
        };
        let mut route_slots = match &route_sem {
            Some(sem) => match sem.clone().try_acquire_many_owned(limit as u32) {
                Ok(permits) => Some(permits),
                Err(_) => return Ok(()),
            },
            None => None,
        };
        let now = now_ms();
        // The margin beyond the action's timeout covers the kill grace and the final write.
        let lease_until = now + (timeout + live.config.worker.lease_margin).as_millis() as i64;
        // A job whose lease expired lost an attempt; the store settles it by its route's retry policy.
        let retry = routes
            .iter()
            .filter_map(|name| live.routes.get(name).map(|r| (name.clone(), r.config.retry.clone())))
            .collect();
        let claim = Claim { owner: self.owner.clone(), limit, now, lease_until, routes, retry };
        let jobs = self.store.claim_jobs(claim).await?;
        for job in jobs {
            // The store hands out at most `limit` jobs, and `limit` permits are held.
            let slot = slots.split(1).expect("a slot per claimed job");
            let route_slot = route_slots.as_mut().map(|p| p.split(1).expect("a route slot per claimed job"));
            out.push(Running { job, slot, route_slot });
        }
        Ok(())
    }

    async fn execute(&self, live: &Live, running: Running) {
        let Running { job, slot, route_slot } = running;
        let job = &job;
        let started_ms = now_ms();
        let started = Instant::now();
        let Some(route) = live.routes.get(&job.route) else {
            // The route vanished in a reload; keep the job for a configuration that knows it.
            let _ = self.store.release_job(&job.id, &self.owner, now_ms() + 60_000).await;
            return;
        };
        let ctx = EventContext::from_stored(&job.delivery);
        let output_cap = live.config.worker.output_cap;
        let result = match live.routes.render_action(route, &ctx, &job.id, output_cap) {
            Ok(spec) => self.runner.run(spec, &self.force).await,
            Err(e) => {
                AttemptResult { outcome: Outcome::Failed, error: Some(e.to_string()), output: None, status_code: None }
            }
        };
        let finished_ms = now_ms();
        // The action is over: its capacity goes to the next job while this one's outcome is written. The
        // job stays `running` (and leased) until then, so nothing else can take it or its coalesce key.
        drop((slot, route_slot));
        self.wake.notify_one();
        if self.force.is_cancelled() && result.outcome != Outcome::Success {
            // Stopped by shutdown, not by its own fault: give it back without using an attempt.
            if let Err(e) = self.store.release_job(&job.id, &self.owner, finished_ms).await {
                tracing::warn!(job = %job.id, error = %e, "could not release job; its lease will expire");
            }
            return;
        }
        let retry = &route.config.retry;
        let (next, label) = match &result.outcome {
            Outcome::Success => (NextState::Succeeded, "succeeded"),
            Outcome::Retryable(hint) if job.attempt < retry.max_attempts => {
                let pause = crate::retry::delay(retry, job.attempt, *hint);
                (NextState::Retry { at: finished_ms + pause.as_millis() as i64 }, "retry")
            }
            Outcome::Retryable(_) | Outcome::Failed => (NextState::Dead, "dead"),
            Outcome::Gone => (NextState::Dead, "gone"),
        };
        // Only a peer that did not answer properly counts against the circuit; a 4xx is an answer.
        self.live.health.record(&route.config, !matches!(result.outcome, Outcome::Retryable(_)));
        let mut result = result;
        if result.outcome == Outcome::Gone {
            let reason = "the peer answered 410 Gone; route disabled until enabled again".to_string();
            self.live.health.mark_gone(&route.config, reason.clone(), finished_ms);
            tracing::warn!(route = %route.name(), "peer answered 410 Gone; route disabled");
            result.error = Some(reason);
        }
        let record = AttemptRecord {
            attempt: job.attempt,
            started_at: started_ms,
            finished_at: finished_ms,
            ok: result.outcome == Outcome::Success,
            error: result.error.clone(),
            output: result.output.clone(),
            status_code: result.status_code,
        };
        let route_label = route.name().to_string();
        metrics::counter!(JOBS_TOTAL, "route" => route_label.clone(), "outcome" => label).increment(1);
        if next == NextState::Dead {
            metrics::counter!(JOBS_DEAD, "route" => route_label.clone()).increment(1);
        }
        metrics::histogram!(JOB_DURATION, "route" => route_label.clone()).record(started.elapsed().as_secs_f64());
        if next == NextState::Succeeded {
            let latency = (finished_ms - job.delivery.received_at).max(0) as f64 / 1000.0;
            metrics::histogram!(DELIVERY_LATENCY, "route" => route_label.clone()).record(latency);
        }
        match &result.error {
            Some(error) => {
                tracing::info!(route = %route_label, job = %job.id, attempt = job.attempt, outcome = label, error = %error, "job attempt")
            }
            None => {
                tracing::info!(route = %route_label, job = %job.id, attempt = job.attempt, outcome = label, "job attempt")
            }
        }
        self.finish(job, record, next).await;
    }

    /// Record the attempt; a store hiccup is retried briefly, after which the lease expiry takes over.
    async fn finish(&self, job: &ClaimedJob, record: AttemptRecord, next: NextState) {
        for pause_ms in [0u64, 200, 1000, 3000] {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            match self.store.finish_job(&job.id, &self.owner, record.clone(), next).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(job = %job.id, "lease was lost before the attempt was recorded");
                    return;
                }
                Err(e) => tracing::warn!(job = %job.id, error = %e, "could not record attempt; retrying"),
            }
        }
    }
}
