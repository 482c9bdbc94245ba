//! worker: claims due jobs under a lease, runs their actions, records attempts, retries with backoff.
//!
//! Job life: `queued` → `running` (leased to this instance) → `succeeded` | `queued` again with a later
//! `run_at` | `dead`. A crashed instance's leases expire and its jobs are claimed again. On shutdown the
//! worker stops claiming, lets running jobs finish within the grace period, then stops them and gives
//! them back to the queue without using up an attempt.

pub mod maintenance;
pub mod wake;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::actions::{ActionSpec, AttemptResult, Outcome, Runner};
use crate::events::{Events, OpsEvent};
use crate::live::{Live, LiveHandle};
use crate::metrics::{CIRCUIT_TRANSITIONS, DELIVERY_LATENCY, JOBS_DEAD, JOBS_TOTAL, JOB_DURATION};
use crate::store::control::{RouteChange, Stop};
use crate::store::stats::{JobOutcome, Recorder};
use crate::store::{now_ms, AttemptRecord, Claim, ClaimedJob, DynStore, Millis, NextState, RouteLimits, StoreError};
use crate::template::EventContext;
use wake::Wake;

/// Claims that may wait for their commit at once.
const CLAIMS_IN_FLIGHT: usize = 2;

pub struct Worker {
    store: DynStore,
    live: LiveHandle,
    runner: Runner,
    owner: String,
    wake: Arc<Wake>,
    slots: Arc<Semaphore>,
    /// Fires when the shutdown grace is over: running actions are stopped.
    force: CancellationToken,
    /// Operational events: `job.dead` when a job ends dead.
    events: Events,
    /// The dashboard's per-minute counts (outcomes, durations, last errors).
    stats: Arc<Recorder>,
}

/// What a claim task hands back: the configuration it claimed under and the jobs it leased.
type ClaimOutcome = (Arc<Live>, Result<Vec<Running>, StoreError>);

/// A job this worker claimed, with the capacity it holds while running.
struct Running {
    job: ClaimedJob,
    slot: OwnedSemaphorePermit,
}

impl Worker {
    pub fn new(
        store: DynStore,
        live: LiveHandle,
        wake: Arc<Wake>,
        runner: Runner,
        events: Events,
        stats: Arc<Recorder>,
    ) -> Self {
        let concurrency = live.current().config.worker.concurrency;
        let id = crate::store::new_id();
        Worker {
            store,
            live,
            runner,
            owner: format!("{}-{}", std::process::id(), &id[id.len() - 8..]),
            wake,
            slots: Arc::new(Semaphore::new(concurrency)),
            force: CancellationToken::new(),
            events,
            stats,
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
                _ = self.wake.claim_now() => idle = false,
                // A job due sooner than the timer was set for: go round and set it again.
                _ = self.wake.sooner() => {}
                _ = tokio::time::sleep(self.wake.sleep_for(live.config.worker.poll_interval, now_ms())), if claims.is_empty() => {
                    self.wake.passed(now_ms());
                    idle = false;
                }
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

    /// Claim as many due jobs as there are free slots. The store enforces what holds routes back across
    /// every instance: a route's `concurrency`, its circuit breaker (nothing while open, one probe while
    /// half-open), pauses and 410 stops. Routes switched off in the configuration are not claimed at all.
    async fn claim(&self, live: &Live) -> Result<Vec<Running>, StoreError> {
        let limit = self.slots.available_permits();
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The capacity is taken before the claim, so claims can overlap (one may be waiting for its commit
        // while the next is issued); what the claim does not use goes back when these permits drop.
        let Ok(mut slots) = self.slots.clone().try_acquire_many_owned(limit as u32) else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        // The margin beyond the action's timeout covers the kill grace and the final write.
        let lease = |timeout: Duration| now + (timeout + live.config.worker.lease_margin).as_millis() as i64;
        let mut routes = Vec::new();
        let mut retry = HashMap::new();
        let mut limits = HashMap::new();
        let mut leases = HashMap::new();
        let mut lockless = HashSet::new();
        for route in live.routes.routes().filter(|r| r.config.enabled) {
            let name = route.name().to_string();
            leases.insert(name.clone(), lease(route.config.action.timeout()));
            retry.insert(name.clone(), route.config.retry.clone());
            let route_limits =
                RouteLimits { concurrency: route.config.concurrency, breaker: route.config.circuit_breaker.is_some() };
            if route_limits != RouteLimits::default() {
                limits.insert(name.clone(), route_limits);
            } else if route.config.coalesce.is_none() {
                lockless.insert(name.clone());
            }
            routes.push(name);
        }
        if routes.is_empty() {
            return Ok(Vec::new());
        }
        // The longest lease is the default; routes whose own is shorter say so.
        let lease_until = leases.values().copied().max().unwrap_or(now);
        leases.retain(|_, l| *l < lease_until);
        let claim =
            Claim { owner: self.owner.clone(), limit, now, lease_until, routes, retry, limits, leases, lockless };
        let jobs = self.store.claim_jobs(claim).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            // The store hands out at most `limit` jobs, and `limit` permits are held.
            let slot = slots.split(1).expect("a slot per claimed job");
            if job.probe {
                tracing::info!(route = %job.route, job = %job.id, "circuit half-open: one probe goes");
                metrics::counter!(CIRCUIT_TRANSITIONS, "route" => job.route.clone(), "to" => "half-open").increment(1);
            }
            out.push(Running { job, slot });
        }
        Ok(out)
    }

    /// Tell the store what an attempt means for its route: a peer's 410 stops it; an unhealthy answer (or
    /// the probe's answer) moves its circuit breaker. Done before the attempt is recorded, so a job of the
    /// route that waits for this one (`concurrency`) already sees the change when it is claimed.
    async fn update_route(&self, route: &crate::config::Route, job: &ClaimedJob, outcome: &Outcome, at: Millis) {
        let mut changes = Vec::new();
        if *outcome == Outcome::Gone {
            let reason = "the peer answered 410 Gone; route stopped until resumed".to_string();
            changes.push(RouteChange::Stop(Stop { status: 410, reason, at }));
        }
        // Only a peer that did not answer properly counts against the circuit; a 4xx is an answer.
        let healthy = !matches!(outcome, Outcome::Retryable(_));
        if let Some(breaker) = route.circuit_breaker.clone().filter(|_| !healthy || job.probe) {
            changes.push(RouteChange::Attempt { healthy, probe: job.probe, breaker });
        }
        for change in changes {
            match self.store.change_route(&route.name, change, at).await {
                Ok((before, after)) => {
                    let transitions = self.live.shared.route_changed(&before, after);
                    self.events.route_changed(&route.name, &transitions, "hookgate").await;
                }
                Err(e) => tracing::warn!(route = %route.name, error = %e, "could not record the route's new state"),
            }
        }
    }

    async fn execute(&self, live: &Live, running: Running) {
        let Running { job, slot } = running;
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
        let spec = match live.routes.render_action(route, &ctx, &job.id, output_cap) {
            Ok(spec) => lend_github_token(live, &route.config, spec).await,
            Err(e) => Err(e.to_string()),
        };
        let result = match spec {
            Ok(spec) => self.runner.run(spec, &self.force).await,
            Err(error) => {
                AttemptResult { outcome: Outcome::Failed, error: Some(error), output: None, status_code: None }
            }
        };
        let finished_ms = now_ms();
        // The action is over: its capacity goes to the next job while this one's outcome is written. The
        // job stays `running` (and leased) until then, so nothing else can take it or its coalesce key.
        drop(slot);
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
        self.update_route(&route.config, job, &result.outcome, finished_ms).await;
        let mut result = result;
        if result.outcome == Outcome::Gone {
            result.error = Some("the peer answered 410 Gone; route stopped until resumed".to_string());
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
        let outcome = match next {
            NextState::Succeeded => JobOutcome::Succeeded,
            NextState::Retry { .. } => JobOutcome::Failed,
            NextState::Dead => JobOutcome::Dead,
        };
        self.stats.job(&route_label, outcome, started.elapsed());
        if let Some(error) = record.error.as_deref().filter(|_| !record.ok) {
            self.stats.error(&route_label, error, finished_ms);
        }
        if next == NextState::Succeeded {
            let latency = (finished_ms - job.delivery.received_at).max(0) as f64 / 1000.0;
            metrics::histogram!(DELIVERY_LATENCY, "route" => route_label.clone()).record(latency);
        }
        log_attempt(&route_label, job, retry.max_attempts, label, &result, started.elapsed());
        let error = record.error.clone();
        // Only the runner that recorded the death tells of it (a lost lease means another took the job).
        let recorded = self.finish(job, record, next).await;
        if let (true, NextState::Retry { at }) = (recorded, next) {
            // Its backoff is over at `at`: the worker wakes then, not at its next poll.
            self.wake.jobs_due_at(at, now_ms());
        }
        if recorded && next == NextState::Dead {
            let delivery = &job.delivery;
            self.events
                .emit(OpsEvent::JobDead {
                    route: route_label,
                    job: job.id.clone(),
                    delivery: delivery.id.clone(),
                    source: delivery.source.clone(),
                    event: delivery.event.clone(),
                    attempts: job.attempt,
                    error,
                })
                .await;
        }
    }

    /// Record the attempt; a store hiccup is retried briefly, after which the lease expiry takes over. True
    /// when it was recorded.
    async fn finish(&self, job: &ClaimedJob, record: AttemptRecord, next: NextState) -> bool {
        for pause_ms in [0u64, 200, 1000, 3000] {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            match self.store.finish_job(&job.id, &self.owner, record.clone(), next).await {
                Ok(true) => return true,
                Ok(false) => {
                    tracing::warn!(job = %job.id, "lease was lost before the attempt was recorded");
                    return false;
                }
                Err(e) => tracing::warn!(job = %job.id, error = %e, "could not record attempt; retrying"),
            }
        }
        false
    }
}

/// The one line per attempt operators read and parse: which route ran which job for which delivery and
/// event, attempt n of N, the outcome, the peer's status code when there was one, how long it took, and the
/// error text (never a secret).
fn log_attempt(
    route: &str,
    job: &ClaimedJob,
    max_attempts: u32,
    outcome: &str,
    result: &AttemptResult,
    took: Duration,
) {
    let attempt = format!("{}/{}", job.attempt, max_attempts);
    let duration_ms = took.as_millis() as u64;
    let (delivery, event) = (&job.delivery.id, &job.delivery.event);
    let status = result.status_code;
    match &result.error {
        Some(error) => tracing::info!(
            route = %route, job = %job.id, delivery = %delivery, event = %event, attempt, outcome, status, duration_ms,
            error = %error, "job attempt"
        ),
        None => tracing::info!(
            route = %route, job = %job.id, delivery = %delivery, event = %event, attempt, outcome, status, duration_ms,
            "job attempt"
        ),
    }
}

/// The action of a route with `github_token` gets its GitHub source's token; a failure to get one fails the
/// attempt (it is retried), naming the source and GitHub's answer, never a token.
async fn lend_github_token(live: &Live, route: &crate::config::Route, spec: ActionSpec) -> Result<ActionSpec, String> {
    let Some(source) = &route.github_token else {
        return Ok(spec);
    };
    let Some(recovery) = live.config.source(source).and_then(|s| s.recovery.as_ref()) else {
        return Err(format!("github_token: source `{source}` has no recovery section in the running configuration"));
    };
    crate::github::lend::lend(recovery, spec).await.map_err(|e| format!("GitHub token of source `{source}`: {e}"))
}
