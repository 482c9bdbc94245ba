//! contract: the behaviour every store backend shares, written once; each backend runs the whole suite.
//!
//! A backend's test module calls [`contract_suite!`] with a function that makes a fresh, empty store (a
//! temporary SQLite file, a new PostgreSQL schema); every test below then runs against it under its own
//! name. What only one backend has (group commit, WAL, advisory locks, TLS) is tested in that backend.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::*;

mod control;
mod leases;
mod search;
mod stats;
pub use control::*;
pub use leases::*;
pub use search::*;
pub use stats::*;

/// A fresh, empty store of one backend, for one test.
#[async_trait]
pub trait Fixture: Send + Sync {
    fn store(&self) -> &dyn Store;
    /// The rows of `table`, counted past the store: for what the trait does not show, such as the attempts
    /// of purged jobs.
    async fn rows(&self, table: &str) -> i64;
}

/// Run every contract test against `$fixture`: an `async fn() -> Option<impl Fixture>` that returns `None`
/// (after saying why on stderr) when its backend is not available here.
macro_rules! contract_suite {
    ($fixture:path) => {
        $crate::store::contract::contract_suite!(@each $fixture;
            a_delivery_round_trips_with_its_headers_body_and_jobs,
            a_duplicate_delivery_returns_the_first_id_and_writes_nothing,
            a_replay_under_a_new_delivery_id_is_a_duplicate_of_the_first_copy,
            a_delivery_whose_id_is_taken_is_an_internal_error_and_writes_nothing,
            a_large_body_round_trips_as_received,
            a_keyed_job_merges_into_a_queued_job_but_not_a_running_one,
            claims_respect_run_at_routes_and_limit,
            claims_never_hand_out_two_jobs_of_one_key_at_once,
            one_claim_takes_at_most_one_job_per_key,
            concurrent_claimers_never_receive_the_same_job,
            lockless_claimers_never_receive_the_same_job_and_take_them_all,
            a_lockless_claim_settles_expired_leases,
            a_claim_over_lockless_and_keyed_routes_serves_both,
            claims_lease_retry_and_finish,
            an_expired_lease_is_a_failed_attempt_and_the_first_owner_can_no_longer_finish,
            a_failing_job_retries_then_dies_with_an_attempt_row_each_time,
            an_outcome_whose_output_holds_nul_bytes_is_recorded,
            concurrent_outcomes_are_each_recorded_once_and_only_by_their_owner,
            releasing_a_job_does_not_use_up_an_attempt,
            a_dead_job_can_be_retried_and_a_queued_one_cannot,
            replayed_jobs_attach_to_a_stored_delivery_and_coalesce,
            deliveries_page_newest_first_with_a_cursor_and_filters,
            jobs_list_newest_first_filtered_by_status_and_route,
            purge_keeps_recent_deliveries_and_those_with_unfinished_jobs,
            a_purge_in_batches_takes_expired_deliveries_with_their_jobs_and_attempts_and_steps_over_unfinished_ones,
            // Shared route and source state (contract/control.rs).
            route_and_source_state_is_kept_and_listed,
            a_paused_or_stopped_route_is_not_claimed_until_resumed,
            a_paused_or_stopped_lockless_route_is_not_claimed_until_resumed,
            concurrency_counts_the_jobs_running_for_every_claimer,
            an_open_circuit_holds_its_route_then_lets_exactly_one_probe_go,
            each_route_is_leased_for_its_own_time,

            // Bulk operations (issue 14).
            terminal_jobs_are_retried_by_route_status_and_time,
            queued_jobs_are_cancelled_by_filter_and_running_ones_are_left_to_finish,
            cancelled_jobs_are_never_claimed_until_retried,
            a_bulk_action_takes_at_most_its_limit_and_says_more_matched,
            a_repeated_key_answers_the_stored_outcome_and_acts_once,
            a_key_reused_for_another_request_is_refused_and_nothing_is_done,
            concurrent_requests_with_one_key_act_once,
            an_expired_key_is_forgotten_and_purged,
            deliveries_are_found_by_filter_oldest_first_and_replayed_with_their_jobs,
            purge_takes_deliveries_whose_jobs_were_cancelled,

            // Operational signals.
            the_oldest_due_job_of_each_route_is_found_and_future_running_and_finished_ones_are_not,

            // Dashboard statistics (contract/stats.rs).
            stats_of_two_instances_for_one_minute_add_up_and_gauges_take_the_max,
            stats_group_minutes_into_buckets_within_the_window,
            the_newest_error_of_each_route_is_its_last_error,
            purge_drops_stats_rows_past_their_retention,
            queued_jobs_are_counted_per_route,
            // The dashboard's search (contract/search.rs).
            deliveries_are_searched_by_delivery_id_time_and_job_status_alone_and_together,
            the_scan_reads_headers_bodies_and_job_counts_and_pages_with_filters,
            jobs_list_by_time_with_the_source_and_event_of_their_delivery,
            // GitHub recovery (contract/leases.rs).
            stored_deliveries_names_the_stored_ids_of_one_source_only,
            a_lease_is_held_by_one_owner_until_it_expires_and_its_owner_may_extend_it,
            of_concurrent_lease_takers_exactly_one_wins,
        );
    };
    (@each $fixture:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let Some(fixture) = $fixture().await else { return };
                $crate::store::contract::$test(&fixture).await;
            }
        )*
    };
}
pub(crate) use contract_suite;

pub const HOUR: Millis = 3_600_000;

pub fn delivery(source: &str, delivery: &str) -> Delivery {
    Delivery {
        id: new_id(),
        source: source.into(),
        event: "push".into(),
        delivery: delivery.into(),
        received_at: now_ms(),
        headers: vec![("x-github-event".into(), "push".into()), ("x-a".into(), "1".into())],
        body: Bytes::from_static(b"{\"ref\":\"refs/heads/main\"}"),
        replay_key: None,
    }
}

/// A job that is due now.
pub fn job(route: &str, key: Option<&str>) -> NewJob {
    job_at(route, key, now_ms() - 1)
}

pub fn job_at(route: &str, key: Option<&str>, run_at: Millis) -> NewJob {
    NewJob { id: new_id(), route: route.into(), coalesce_key: key.map(Into::into), run_at }
}

/// A claim of due jobs of `routes`, leased for an hour.
pub fn claim(owner: &str, routes: &[&str], limit: usize) -> Claim {
    let now = now_ms();
    Claim {
        owner: owner.into(),
        limit,
        now,
        lease_until: now + HOUR,
        routes: routes.iter().map(|r| r.to_string()).collect(),
        retry: HashMap::new(),
        limits: HashMap::new(),
        leases: HashMap::new(),
        lockless: Default::default(),
    }
}

pub fn record(attempt: u32, ok: bool) -> AttemptRecord {
    AttemptRecord {
        attempt,
        started_at: now_ms(),
        finished_at: now_ms(),
        ok,
        error: (!ok).then(|| format!("failure {attempt}")),
        output: Some("out".into()),
        status_code: Some(if ok { 200 } else { 503 }),
    }
}

/// Store a new GitHub delivery named `id` with `jobs`; returns its id.
pub async fn store_one(store: &dyn Store, id: &str, jobs: Vec<NewJob>) -> String {
    match store.insert_delivery(delivery("github", id), jobs).await.unwrap() {
        Insert::Stored { id, .. } => id,
        other => panic!("not stored: {other:?}"),
    }
}

pub async fn job_of(store: &dyn Store, id: &str) -> JobSummary {
    let page = store.list_jobs(JobQuery { limit: 1000, ..Default::default() }).await.unwrap();
    page.items.into_iter().find(|j| j.id == id).expect("job exists")
}

pub async fn a_delivery_round_trips_with_its_headers_body_and_jobs(f: &dyn Fixture) {
    let store = f.store();
    let d = delivery("github", "d1");
    let j = job("r", None);
    let stored = store.insert_delivery(d.clone(), vec![j.clone()]).await.unwrap();
    assert_eq!(stored, Insert::Stored { id: d.id.clone(), jobs: 1 });
    let detail = store.get_delivery(&d.id).await.unwrap().unwrap();
    assert_eq!(detail.delivery.headers, d.headers);
    assert_eq!(detail.delivery.body, d.body);
    assert_eq!(detail.delivery.received_at, d.received_at);
    assert_eq!(detail.jobs.len(), 1);
    assert_eq!(detail.jobs[0].job.id, j.id);
    assert_eq!(detail.jobs[0].job.status, JobStatus::Queued);
    assert_eq!(detail.jobs[0].job.next_attempt_at, Some(j.run_at));
    assert_eq!(detail.delivery.replay_key, None);
    assert!(store.get_delivery("nope").await.unwrap().is_none());
    store.ping().await.unwrap();
    store.probe_write().await.unwrap();
}

pub async fn a_duplicate_delivery_returns_the_first_id_and_writes_nothing(f: &dyn Fixture) {
    let store = f.store();
    let first = store_one(store, "d1", vec![job("r", None)]).await;
    let again = store.insert_delivery(delivery("github", "d1"), vec![job("r", None), job("s", None)]).await.unwrap();
    assert_eq!(again, Insert::Duplicate { id: first.clone() });
    // The same delivery id from another source is a different delivery.
    let other = store.insert_delivery(delivery("gitlab", "d1"), vec![]).await.unwrap();
    assert!(matches!(other, Insert::Stored { jobs: 0, .. }));
    let page = store.list_deliveries(Default::default()).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(store.job_counts().await.unwrap().queued, 1);
}

pub async fn a_keyed_job_merges_into_a_queued_job_but_not_a_running_one(f: &dyn Fixture) {
    let store = f.store();
    let first = job("fetch", Some("octo/a"));
    let d1 = store_one(store, "d1", vec![first.clone()]).await;
    // Same key merges; another key and another route do not.
    let d2 = store
        .insert_delivery(
            delivery("github", "d2"),
            vec![job("fetch", Some("octo/a")), job("fetch", Some("octo/b")), job("other", Some("octo/a"))],
        )
        .await
        .unwrap();
    assert!(matches!(d2, Insert::Stored { jobs: 3, .. }));
    let merged = job_of(store, &first.id).await;
    assert_eq!(merged.merged, 1);
    assert_ne!(merged.delivery_id, d1);
    // The older delivery stays stored, now without jobs.
    let old = store.get_delivery(&d1).await.unwrap().unwrap();
    assert!(old.jobs.is_empty());
    assert_eq!(store.job_counts().await.unwrap().queued, 3);

    let claimed = store.claim_jobs(claim("w", &["fetch"], 10)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let running = claimed.iter().find(|c| c.id == first.id).unwrap();
    assert_eq!(running.delivery.delivery, "d2");
    // Now running: a new delivery with the key gets a job of its own.
    let newer = job("fetch", Some("octo/a"));
    store_one(store, "d3", vec![newer.clone()]).await;
    assert_eq!(job_of(store, &newer.id).await.status, JobStatus::Queued);
    assert_eq!(job_of(store, &first.id).await.merged, 1);
}

pub async fn claims_respect_run_at_routes_and_limit(f: &dyn Fixture) {
    let store = f.store();
    let later = job_at("a", None, now_ms() + HOUR);
    let a1 = job_at("a", None, now_ms() - 30);
    let a2 = job_at("a", None, now_ms() - 20);
    let a3 = job_at("a", None, now_ms() - 10);
    let b1 = job_at("b", None, now_ms() - 40);
    store_one(store, "d1", vec![later.clone(), a1.clone(), a2.clone(), a3.clone(), b1.clone()]).await;

    let first = store.claim_jobs(claim("w", &["a"], 2)).await.unwrap();
    let ids: Vec<_> = first.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, [a1.id.clone(), a2.id.clone()], "oldest run_at first");
    assert!(first.iter().all(|c| c.attempt == 1));
    let rest = store.claim_jobs(claim("w", &["a"], 10)).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, a3.id);
    assert!(store.claim_jobs(claim("w", &["a"], 10)).await.unwrap().is_empty());
    assert!(store.claim_jobs(claim("w", &[], 10)).await.unwrap().is_empty());
    assert!(store.claim_jobs(claim("w", &["b"], 0)).await.unwrap().is_empty());
    let b = store.claim_jobs(claim("w", &["b", "c"], 10)).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].id, b1.id);
    let counts = store.job_counts().await.unwrap();
    assert_eq!((counts.queued, counts.running), (1, 4));
    let running = job_of(store, &a1.id).await;
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.attempts, 1);
    assert_eq!(running.next_attempt_at, None);
}

pub async fn claims_never_hand_out_two_jobs_of_one_key_at_once(f: &dyn Fixture) {
    let store = f.store();
    let k1 = job("fetch", Some("k"));
    store_one(store, "d1", vec![k1.clone()]).await;
    let claimed = store.claim_jobs(claim("w", &["fetch"], 10)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // A second job of the key is queued while the first runs: it waits.
    let k2 = job("fetch", Some("k"));
    let other = job("fetch", Some("other"));
    store_one(store, "d2", vec![k2.clone(), other.clone()]).await;
    let next = store.claim_jobs(claim("v", &["fetch"], 10)).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, other.id);
    assert!(store.finish_job(&k1.id, "w", record(1, true), NextState::Succeeded).await.unwrap());
    let now_free = store.claim_jobs(claim("v", &["fetch"], 10)).await.unwrap();
    assert_eq!(now_free.len(), 1);
    assert_eq!(now_free[0].id, k2.id);
}

pub async fn one_claim_takes_at_most_one_job_per_key(f: &dyn Fixture) {
    let store = f.store();
    let expired = job("fetch", Some("k"));
    store_one(store, "d1", vec![expired.clone()]).await;
    let mut short = claim("w", &["fetch"], 10);
    short.lease_until = short.now - 1;
    assert_eq!(store.claim_jobs(short).await.unwrap().len(), 1);
    // One job of the key has an expired lease and another is queued. Without a pause before a retry, the
    // expired one is due again at once: both are candidates, one is claimed.
    let queued = job("fetch", Some("k"));
    store_one(store, "d2", vec![queued.clone()]).await;
    let mut next = claim("v", &["fetch"], 10);
    let no_pause = crate::retry::Retry { initial: Duration::ZERO, ..Default::default() };
    next.retry.insert("fetch".into(), no_pause);
    let claimed = store.claim_jobs(next).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(job_of(store, &expired.id).await.attempts, 1, "{claimed:?}");
}

pub async fn an_expired_lease_is_a_failed_attempt_and_the_first_owner_can_no_longer_finish(f: &dyn Fixture) {
    let store = f.store();
    let j = job("r", Some("k"));
    store_one(store, "d1", vec![j.clone()]).await;
    let mut first = claim("a", &["r"], 1);
    first.lease_until = first.now + 50;
    assert_eq!(store.claim_jobs(first).await.unwrap().len(), 1);
    // Still leased: nobody else gets it.
    assert!(store.claim_jobs(claim("b", &["r"], 1)).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Expired: the lost attempt is recorded and the job waits out its backoff (1 s by default).
    assert!(store.claim_jobs(claim("b", &["r"], 1)).await.unwrap().is_empty());
    let summary = job_of(store, &j.id).await;
    assert_eq!(summary.status, JobStatus::Queued);
    assert_eq!(summary.last_error.as_deref(), Some(LEASE_EXPIRED));
    assert!(!store.finish_job(&j.id, "a", record(1, true), NextState::Succeeded).await.unwrap());
    assert!(!store.release_job(&j.id, "a", now_ms()).await.unwrap());
    let mut later = claim("b", &["r"], 1);
    later.now = summary.next_attempt_at.unwrap();
    let taken = store.claim_jobs(later).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempt, 2);
    assert!(store.finish_job(&j.id, "b", record(2, true), NextState::Succeeded).await.unwrap());
    let detail = store.get_delivery(&summary.delivery_id).await.unwrap().unwrap();
    let attempts: Vec<_> = detail.jobs[0].attempts.iter().map(|a| (a.attempt, a.ok, a.error.clone())).collect();
    assert_eq!(attempts, [(1, false, Some(LEASE_EXPIRED.to_string())), (2, true, None)]);
    assert_eq!(detail.jobs[0].job.status, JobStatus::Succeeded);
}

/// `claim` with every one of its routes named lockless (see [`Claim::lockless`]).
pub fn lockless(claim: Claim) -> Claim {
    Claim { lockless: claim.routes.iter().cloned().collect(), ..claim }
}

/// Claims of routes that need no exclusivity (PostgreSQL runs them side by side) still hand a job to one
/// claimer only, and together take every job.
pub async fn lockless_claimers_never_receive_the_same_job_and_take_them_all(f: &dyn Fixture) {
    let store = f.store();
    for i in 0..300 {
        store.insert_delivery(delivery("github", &format!("l{i}")), vec![job("r", None)]).await.unwrap();
    }
    let claimers = (0..4).map(|owner| async move {
        let mut mine = Vec::new();
        loop {
            let got = store.claim_jobs(lockless(claim(&format!("o{owner}"), &["r"], 7))).await.unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|j| j.id));
        }
    });
    let all: Vec<String> = futures_util::future::join_all(claimers).await.into_iter().flatten().collect();
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (300, 300), "each job handed out once");
    assert_eq!(store.job_counts().await.unwrap().running, 300);
}

/// A lockless claim settles its routes' expired leases like any claim, and leaves live ones alone.
pub async fn a_lockless_claim_settles_expired_leases(f: &dyn Fixture) {
    let store = f.store();
    let j = job("r", None);
    store_one(store, "d1", vec![j.clone()]).await;
    let mut first = lockless(claim("a", &["r"], 1));
    first.lease_until = first.now + 50;
    assert_eq!(store.claim_jobs(first).await.unwrap().len(), 1);
    assert!(store.claim_jobs(lockless(claim("b", &["r"], 1))).await.unwrap().is_empty(), "still leased");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(store.claim_jobs(lockless(claim("b", &["r"], 1))).await.unwrap().is_empty(), "waits out its backoff");
    let summary = job_of(store, &j.id).await;
    assert_eq!((summary.status, summary.last_error.as_deref()), (JobStatus::Queued, Some(LEASE_EXPIRED)));
    assert!(!store.finish_job(&j.id, "a", record(1, true), NextState::Succeeded).await.unwrap());
    let later = Claim { now: summary.next_attempt_at.unwrap(), ..lockless(claim("b", &["r"], 1)) };
    let taken = store.claim_jobs(later).await.unwrap();
    assert_eq!((taken.len(), taken[0].attempt), (1, 2));
}

/// One claim over a lockless route and a coalescing one serves both within its limit, the coalescing one with
/// one job per key.
pub async fn a_claim_over_lockless_and_keyed_routes_serves_both(f: &dyn Fixture) {
    let store = f.store();
    for i in 0..3 {
        store_one(store, &format!("p{i}"), vec![job("plain", None)]).await;
        store_one(store, &format!("k{i}"), vec![job_at("keyed", Some(&format!("k{i}")), now_ms() - 1)]).await;
    }
    store_one(store, "k-again", vec![job("keyed", Some("k0"))]).await;
    let mut both = claim("w", &["plain", "keyed"], 10);
    both.lockless = ["plain".to_string()].into();
    let claimed = store.claim_jobs(both).await.unwrap();
    let count = |route: &str| claimed.iter().filter(|j| j.route == route).count();
    // The second "k0" delivery merged into the queued job of its key: three keyed jobs, each its own key.
    assert_eq!((count("plain"), count("keyed")), (3, 3));
    for i in 3..6 {
        store_one(store, &format!("p{i}"), vec![job("plain", None)]).await;
    }
    // Made after the jobs, so they are due at its `now`.
    let mut small = claim("w2", &["plain", "keyed"], 2);
    small.lockless = ["plain".to_string()].into();
    assert_eq!(store.claim_jobs(small).await.unwrap().len(), 2, "the limit holds across both kinds");
}

pub async fn a_failing_job_retries_then_dies_with_an_attempt_row_each_time(f: &dyn Fixture) {
    let store = f.store();
    let j = job("r", None);
    let other = job("r2", None);
    let d = store_one(store, "d1", vec![j.clone(), other.clone()]).await;
    let c1 = store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
    assert_eq!(c1[0].attempt, 1);
    assert_eq!(c1[0].delivery.id, d);
    assert_eq!(c1[0].delivery.headers[0].0, "x-github-event");
    let retry_at = now_ms() + HOUR;
    assert!(store.finish_job(&j.id, "w", record(1, false), NextState::Retry { at: retry_at }).await.unwrap());
    let queued = job_of(store, &j.id).await;
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.next_attempt_at, Some(retry_at));
    assert_eq!(queued.last_error.as_deref(), Some("failure 1"));
    // Not due yet.
    assert!(store.claim_jobs(claim("w", &["r"], 1)).await.unwrap().is_empty());
    assert!(store.release_job(&j.id, "w", 0).await.map(|owned| !owned).unwrap());
    let mut later = claim("w", &["r"], 1);
    later.now = retry_at;
    later.lease_until = retry_at + HOUR;
    let c2 = store.claim_jobs(later).await.unwrap();
    assert_eq!(c2[0].attempt, 2);
    assert!(store.finish_job(&j.id, "w", record(2, false), NextState::Dead).await.unwrap());
    assert!(!store.finish_job(&j.id, "w", record(3, false), NextState::Dead).await.unwrap());

    let detail = store.get_delivery(&d).await.unwrap().unwrap();
    let ids: Vec<_> = detail.jobs.iter().map(|j| j.job.id.clone()).collect();
    assert_eq!(ids, [j.id.clone(), other.id.clone()], "created order");
    let dead = &detail.jobs[0];
    assert_eq!(dead.job.status, JobStatus::Dead);
    assert_eq!(dead.job.attempts, 2);
    assert_eq!(dead.job.next_attempt_at, None);
    assert_eq!(dead.job.last_error.as_deref(), Some("failure 2"));
    let numbers: Vec<_> = dead.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(dead.attempts[0].status_code, Some(503));
    assert_eq!(dead.attempts[0].output.as_deref(), Some("out"));
    assert!(!dead.attempts[1].ok);
    let list = store.list_deliveries(Default::default()).await.unwrap();
    assert_eq!(list.items[0].jobs.dead, 1);
    assert_eq!(list.items[0].jobs.queued, 1);
}

/// A command that prints NUL bytes (broken or compromised) still gets its outcome recorded.
pub async fn an_outcome_whose_output_holds_nul_bytes_is_recorded(f: &dyn Fixture) {
    let store = f.store();
    let j = job("r", None);
    let d = store_one(store, "d1", vec![j.clone()]).await;
    store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
    let mut attempt = record(1, false);
    attempt.output = Some("before\0after".into());
    attempt.error = Some("exit\0status 1".into());
    assert!(store.finish_job(&j.id, "w", attempt, NextState::Dead).await.unwrap());
    let detail = store.get_delivery(&d).await.unwrap().unwrap();
    let output = detail.jobs[0].attempts[0].output.clone().unwrap();
    assert!(output.starts_with("before") && output.ends_with("after"), "{output:?}");
    assert!(detail.jobs[0].job.last_error.as_deref().unwrap().starts_with("exit"));
}

/// Outcomes that end together (the PostgreSQL store records them in one statement) are each recorded once,
/// each answered for its own job: an owner that lost the lease gets false and writes nothing, and the queue
/// depths stay exact.
pub async fn concurrent_outcomes_are_each_recorded_once_and_only_by_their_owner(f: &dyn Fixture) {
    let store = f.store();
    for i in 0..120 {
        store.insert_delivery(delivery("github", &format!("o{i}")), vec![job("r", None)]).await.unwrap();
    }
    let a = store.claim_jobs(claim("a", &["r"], 60)).await.unwrap();
    let b = store.claim_jobs(claim("b", &["r"], 60)).await.unwrap();
    assert_eq!((a.len(), b.len()), (60, 60));
    let next = |i: usize| match i % 3 {
        0 => NextState::Succeeded,
        1 => NextState::Retry { at: now_ms() + HOUR },
        _ => NextState::Dead,
    };
    let finishes = a
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.clone(), "a", next(i), true))
        // Twenty of b's jobs finished by an owner that does not hold them; the other forty by b.
        .chain(b.iter().take(20).map(|j| (j.id.clone(), "a", NextState::Succeeded, false)))
        .chain(b.iter().skip(20).enumerate().map(|(i, j)| (j.id.clone(), "b", next(i), true)));
    let answers = futures_util::future::join_all(finishes.map(|(id, owner, next, expected)| async move {
        let recorded = store.finish_job(&id, owner, record(1, next == NextState::Succeeded), next).await.unwrap();
        (id, recorded, expected)
    }))
    .await;
    for (id, recorded, expected) in &answers {
        assert_eq!(recorded, expected, "job {id}");
    }
    assert_eq!(f.rows("attempts").await, 100);
    let counts = store.job_counts().await.unwrap();
    // 100 finished in turn as succeeded, retried (queued again) and dead: 34, 33 and 33; 20 still running.
    assert_eq!((counts.running, counts.queued, counts.succeeded, counts.dead), (20, 33, 34, 33));
    let retried = job_of(store, &a[1].id).await;
    assert_eq!((retried.status, retried.last_error.as_deref()), (JobStatus::Queued, Some("failure 1")));
    for j in b.iter().take(20) {
        assert_eq!(job_of(store, &j.id).await.status, JobStatus::Running);
        assert!(store.finish_job(&j.id, "b", record(1, true), NextState::Succeeded).await.unwrap());
    }
    assert_eq!(f.rows("attempts").await, 120);
    assert_eq!(store.job_counts().await.unwrap().running, 0);
}

pub async fn releasing_a_job_does_not_use_up_an_attempt(f: &dyn Fixture) {
    let store = f.store();
    let j = job("r", Some("k"));
    store_one(store, "d1", vec![j.clone()]).await;
    let c1 = store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
    assert_eq!(c1[0].attempt, 1);
    assert!(!store.release_job(&j.id, "someone else", 0).await.unwrap());
    assert!(store.release_job(&j.id, "w", now_ms() - 1).await.unwrap());
    let released = job_of(store, &j.id).await;
    assert_eq!(released.status, JobStatus::Queued);
    assert_eq!(released.attempts, 0);
    let c2 = store.claim_jobs(claim("v", &["r"], 1)).await.unwrap();
    assert_eq!(c2[0].attempt, 1);
    assert!(!store.release_job(&j.id, "w", 0).await.unwrap());
}

pub async fn a_dead_job_can_be_retried_and_a_queued_one_cannot(f: &dyn Fixture) {
    let store = f.store();
    let j = job("r", None);
    store_one(store, "d1", vec![j.clone()]).await;
    assert!(!store.retry_job(&j.id, now_ms()).await.unwrap(), "queued");
    assert!(!store.retry_job("unknown", now_ms()).await.unwrap());
    store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
    assert!(!store.retry_job(&j.id, now_ms()).await.unwrap(), "running");
    store.finish_job(&j.id, "w", record(1, false), NextState::Dead).await.unwrap();
    let now = now_ms();
    assert!(store.retry_job(&j.id, now).await.unwrap());
    let retried = job_of(store, &j.id).await;
    assert_eq!(retried.status, JobStatus::Queued);
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.next_attempt_at, Some(now));
    assert_eq!(retried.last_error, None);
    let again = store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
    assert_eq!(again[0].attempt, 1);
}

pub async fn replayed_jobs_attach_to_a_stored_delivery_and_coalesce(f: &dyn Fixture) {
    let store = f.store();
    let d = store_one(store, "d1", vec![]).await;
    let added = store.insert_jobs(&d, vec![job("r", Some("k")), job("r", Some("k")), job("s", None)]).await.unwrap();
    assert_eq!(added, 3);
    let detail = store.get_delivery(&d).await.unwrap().unwrap();
    assert_eq!(detail.jobs.len(), 2);
    assert_eq!(detail.jobs[0].job.merged, 1);
    assert_eq!(store.insert_jobs("missing", vec![job("r", None)]).await.unwrap(), 0);
    assert_eq!(store.job_counts().await.unwrap().queued, 2);
}

pub async fn deliveries_page_newest_first_with_a_cursor_and_filters(f: &dyn Fixture) {
    let store = f.store();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut d = delivery(if i % 2 == 0 { "github" } else { "gitlab" }, &format!("d{i}"));
        d.event = if i < 3 { "push".into() } else { "ping".into() };
        ids.push(d.id.clone());
        store.insert_delivery(d, vec![job("r", None)]).await.unwrap();
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_deliveries(DeliveryQuery { limit: 3, before: cursor.clone(), ..Default::default() })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        assert!(page.items.iter().all(|d| d.jobs.queued == 1));
        match page.next {
            Some(next) => {
                assert_eq!(page.items.len(), 3);
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(seen, ids, "newest first, every delivery once");

    let github =
        store.list_deliveries(DeliveryQuery { source: Some("github".into()), ..Default::default() }).await.unwrap();
    assert_eq!(github.items.len(), 4);
    assert!(github.next.is_none());
    let github_push = store
        .list_deliveries(DeliveryQuery {
            source: Some("github".into()),
            event: Some("push".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<_> = github_push.items.iter().map(|d| d.delivery.clone()).collect();
    assert_eq!(names, ["d2", "d0"]);
    let after = store
        .list_deliveries(DeliveryQuery { before: Some(ids[1].clone()), limit: 1000, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(after.items.len(), 5);
    assert!(after.next.is_none());
}

pub async fn jobs_list_newest_first_filtered_by_status_and_route(f: &dyn Fixture) {
    let store = f.store();
    let jobs: Vec<_> = (0..5).map(|i| job(if i < 3 { "a" } else { "b" }, None)).collect();
    store_one(store, "d1", jobs.clone()).await;
    store.claim_jobs(claim("w", &["b"], 1)).await.unwrap();
    let a = store.list_jobs(JobQuery { route: Some("a".into()), limit: 2, ..Default::default() }).await.unwrap();
    let ids: Vec<_> = a.items.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, [jobs[2].id.clone(), jobs[1].id.clone()]);
    let rest = store
        .list_jobs(JobQuery { route: Some("a".into()), limit: 2, before: a.next, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next.is_none());
    let running = store.list_jobs(JobQuery { status: Some(JobStatus::Running), ..Default::default() }).await.unwrap();
    assert_eq!(running.items.len(), 1);
    assert_eq!(running.items[0].route, "b");
    let queued_b = store
        .list_jobs(JobQuery { status: Some(JobStatus::Queued), route: Some("b".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(queued_b.items.len(), 1);
}

pub async fn purge_keeps_recent_deliveries_and_those_with_unfinished_jobs(f: &dyn Fixture) {
    let store = f.store();
    let old = now_ms() - 10 * HOUR;
    let insert = |name: &str, received_at: Millis| {
        let mut d = delivery("github", name);
        d.received_at = received_at;
        d.id = id_at(d.received_at);
        d
    };
    let done = insert("done", old);
    let no_jobs = insert("no-jobs", old);
    let pending = insert("pending", old);
    let recent = insert("recent", now_ms());
    let done_job = job("r", None);
    store.insert_delivery(done.clone(), vec![done_job.clone()]).await.unwrap();
    store.insert_delivery(no_jobs, vec![]).await.unwrap();
    store.insert_delivery(pending.clone(), vec![job_at("later", None, now_ms() + HOUR)]).await.unwrap();
    store.insert_delivery(recent.clone(), vec![]).await.unwrap();
    store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
    store.finish_job(&done_job.id, "w", record(1, true), NextState::Succeeded).await.unwrap();

    assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 2);
    let left: Vec<_> =
        store.list_deliveries(Default::default()).await.unwrap().items.into_iter().map(|d| d.delivery).collect();
    assert_eq!(left, ["recent", "pending"]);
    assert!(store.get_delivery(&done.id).await.unwrap().is_none());
    let counts = store.job_counts().await.unwrap();
    assert_eq!((counts.queued, counts.succeeded), (1, 0));
    assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 0);
}

pub async fn a_purge_in_batches_takes_expired_deliveries_with_their_jobs_and_attempts_and_steps_over_unfinished_ones(
    f: &dyn Fixture,
) {
    let store = f.store();
    let old = now_ms() - 10 * HOUR;
    let count = PURGE_BATCH * 2 + 17;
    for i in 0..count {
        let mut d = delivery("github", &format!("d{i}"));
        d.received_at = old + i as i64;
        d.id = id_at(d.received_at);
        // Every 100th keeps a queued job: it must stay, wherever it falls in the batches.
        let run_at = if i % 100 == 0 { now_ms() + HOUR } else { now_ms() - 1 };
        store.insert_delivery(d, vec![job_at(if i % 100 == 0 { "later" } else { "r" }, None, run_at)]).await.unwrap();
    }
    let ran = store.claim_jobs(claim("w", &["r"], 2000)).await.unwrap();
    for j in &ran {
        store.finish_job(&j.id, "w", record(1, true), NextState::Succeeded).await.unwrap();
    }
    let kept = count.div_ceil(100);
    assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), (count - kept) as u64);
    assert_eq!(f.rows("deliveries").await, kept as i64);
    assert_eq!(f.rows("jobs").await, kept as i64);
    assert_eq!(f.rows("attempts").await, 0, "attempts of purged jobs go too");
    let counts = store.job_counts().await.unwrap();
    assert_eq!((counts.queued, counts.succeeded), (kept as u64, 0));
}

pub async fn a_replay_under_a_new_delivery_id_is_a_duplicate_of_the_first_copy(f: &dyn Fixture) {
    let store = f.store();
    let mut first = delivery("stripe", "evt_1");
    first.replay_key = Some("digest-1".into());
    assert!(matches!(store.insert_delivery(first.clone(), vec![job("r", None)]).await.unwrap(), Insert::Stored { .. }));
    // The same signed (timestamp, body) under another delivery id is the same webhook sent again.
    let mut replayed = delivery("stripe", "evt_2");
    replayed.replay_key = Some("digest-1".into());
    assert_eq!(
        store.insert_delivery(replayed, vec![job("r", None)]).await.unwrap(),
        Insert::Duplicate { id: first.id.clone() }
    );
    // The key counts per source, and another key is another delivery.
    let mut elsewhere = delivery("github", "evt_2");
    elsewhere.replay_key = Some("digest-1".into());
    assert!(matches!(store.insert_delivery(elsewhere, vec![]).await.unwrap(), Insert::Stored { .. }));
    let mut fresh = delivery("stripe", "evt_3");
    fresh.replay_key = Some("digest-2".into());
    assert!(matches!(store.insert_delivery(fresh, vec![]).await.unwrap(), Insert::Stored { .. }));
    let stored = store.get_delivery(&first.id).await.unwrap().unwrap();
    assert_eq!(stored.delivery.replay_key.as_deref(), Some("digest-1"));
    assert_eq!(store.list_deliveries(Default::default()).await.unwrap().items.len(), 3);
    assert_eq!(store.job_counts().await.unwrap().queued, 1);
}

pub async fn a_delivery_whose_id_is_taken_is_an_internal_error_and_writes_nothing(f: &dyn Fixture) {
    let store = f.store();
    let good = delivery("github", "good");
    store.insert_delivery(good.clone(), vec![job("r", None)]).await.unwrap();
    let mut clash = delivery("github", "clash");
    clash.id = good.id.clone();
    for jobs in [vec![job("r", None)], vec![job("r", Some("k"))]] {
        let taken = store.insert_delivery(clash.clone(), jobs).await;
        assert!(matches!(taken, Err(StoreError::Internal(_))), "{taken:?}");
    }
    let names: Vec<_> =
        store.list_deliveries(Default::default()).await.unwrap().items.into_iter().map(|d| d.delivery).collect();
    assert_eq!(names, ["good"]);
    assert_eq!(store.job_counts().await.unwrap().queued, 1);
}

pub async fn a_large_body_round_trips_as_received(f: &dyn Fixture) {
    let store = f.store();
    for (name, body) in [
        ("json", Bytes::from(std::fs::read("bench/push.json").unwrap())),
        ("noise", codec::incompressible(64 << 10, 7)),
    ] {
        let mut d = delivery("github", name);
        d.body = body;
        store.insert_delivery(d.clone(), vec![job(name, None)]).await.unwrap();
        assert_eq!(store.get_delivery(&d.id).await.unwrap().unwrap().delivery.body, d.body);
        let claimed = store.claim_jobs(claim("w", &[name], 1)).await.unwrap();
        assert_eq!(claimed[0].delivery.body, d.body, "the worker sees the body as received");
    }
}

pub async fn claims_lease_retry_and_finish(f: &dyn Fixture) {
    let store = f.store();
    let d = delivery("github", "d2");
    let j = job("r", Some("k"));
    store.insert_delivery(d.clone(), vec![j.clone()]).await.unwrap();
    // Coalesces into the queued job.
    store.insert_delivery(delivery("github", "d3"), vec![job("r", Some("k"))]).await.unwrap();
    let lease = |owner: &str, lease_until| Claim { lease_until, ..claim(owner, &["r"], 10) };
    let claimed = store.claim_jobs(lease("a", now_ms() + 60_000)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt, 1);
    assert!(store.claim_jobs(lease("b", now_ms() + 60_000)).await.unwrap().is_empty());
    let failed = AttemptRecord { error: Some("boom".into()), ..record(1, false) };
    assert!(!store.finish_job(&claimed[0].id, "b", failed.clone(), NextState::Dead).await.unwrap());
    assert!(store.finish_job(&claimed[0].id, "a", failed, NextState::Retry { at: 0 }).await.unwrap());
    let again = store.claim_jobs(lease("b", now_ms() - 1)).await.unwrap();
    assert_eq!(again[0].attempt, 2);
    // Its lease already ran out: the next claim records the lost attempt, and the job waits out its backoff.
    assert!(store.claim_jobs(lease("c", now_ms() + 60_000)).await.unwrap().is_empty());
    let job = store.list_jobs(JobQuery::default()).await.unwrap().items.remove(0);
    assert_eq!((job.status, job.attempts, job.last_error.as_deref()), (JobStatus::Queued, 2, Some(LEASE_EXPIRED)));
    let mut later = lease("c", now_ms() + 60_000);
    later.now = job.next_attempt_at.unwrap();
    let taken = store.claim_jobs(later).await.unwrap();
    assert_eq!(taken[0].attempt, 3);
    assert!(store.release_job(&taken[0].id, "c", now_ms()).await.unwrap());
    let page = store.list_jobs(JobQuery { status: Some(JobStatus::Queued), ..Default::default() }).await.unwrap();
    assert_eq!(page.items[0].merged, 1);
}

pub async fn concurrent_claimers_never_receive_the_same_job(f: &dyn Fixture) {
    let store = f.store();
    for i in 0..200 {
        let key = (i % 10 == 0).then(|| format!("k{}", i % 3));
        store.insert_delivery(delivery("github", &format!("c{i}")), vec![job("r", key.as_deref())]).await.unwrap();
    }
    let claimers = (0..4).map(|owner| async move {
        let mut mine = Vec::new();
        loop {
            let got = store.claim_jobs(claim(&format!("o{owner}"), &["r"], 7)).await.unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|j| (j.id, j.coalesce_key)));
        }
    });
    let all: Vec<_> = futures_util::future::join_all(claimers).await.into_iter().flatten().collect();
    let unique: std::collections::HashSet<_> = all.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(unique.len(), all.len(), "a job was handed out twice");
    // Keyed jobs merged while queued: 20 keyed deliveries over 3 keys leave 3 jobs, so 180 + 3 in all;
    // and no two running jobs share a key.
    assert_eq!(all.len(), 183);
    let keys: Vec<_> = all.iter().filter_map(|(_, k)| k.clone()).collect();
    let unique_keys: std::collections::HashSet<_> = keys.iter().collect();
    assert_eq!(keys.len(), unique_keys.len());
}

// Bulk operations (issue 14): retry and cancel by filter, replay by filter, idempotency keys.

/// A bulk request with everything but the action and status left open.
pub fn bulk(action: BulkAction, status: JobStatus) -> BulkJobs {
    BulkJobs { action, status, route: None, since: None, until: None, limit: BULK_LIMIT, now: now_ms(), key: None }
}

pub fn key(key: &str, fingerprint: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey { key: key.into(), fingerprint: fingerprint.into() })
}

/// Jobs that ran once and ended in `next` (a delivery each).
pub async fn finished_jobs(store: &dyn Store, route: &str, n: usize, next: NextState) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let j = job(route, None);
        store.insert_delivery(delivery("github", &new_id()), vec![j.clone()]).await.unwrap();
        ids.push(j.id);
    }
    let claimed = store.claim_jobs(claim("w", &[route], n)).await.unwrap();
    assert_eq!(claimed.len(), n);
    for c in &claimed {
        assert!(store.finish_job(&c.id, "w", record(1, next == NextState::Succeeded), next).await.unwrap());
    }
    ids
}

pub async fn statuses(store: &dyn Store, ids: &[String]) -> Vec<JobStatus> {
    let mut out = Vec::new();
    for id in ids {
        out.push(job_of(store, id).await.status);
    }
    out
}

pub async fn terminal_jobs_are_retried_by_route_status_and_time(f: &dyn Fixture) {
    let store = f.store();
    let started = now_ms();
    let dead_a = finished_jobs(store, "a", 2, NextState::Dead).await;
    let dead_b = finished_jobs(store, "b", 1, NextState::Dead).await;
    let done_a = finished_jobs(store, "a", 1, NextState::Succeeded).await;
    let queued = job("a", None);
    store_one(store, "q", vec![queued.clone()]).await;
    // Times compare with when the job ended: nothing ended an hour ago, and all of them since `started`.
    let earlier = BulkJobs { until: Some(started - HOUR), ..bulk(BulkAction::Retry, JobStatus::Dead) };
    assert_eq!(store.bulk_jobs(earlier).await.unwrap(), BulkAnswer::Done(BulkOutcome::default()));
    let op = BulkJobs {
        route: Some("a".into()),
        since: Some(started),
        until: Some(now_ms() + 1),
        ..bulk(BulkAction::Retry, JobStatus::Dead)
    };
    let now = op.now;
    assert_eq!(store.bulk_jobs(op).await.unwrap(), BulkAnswer::Done(BulkOutcome { count: 2, jobs: 0, more: false }));
    for id in &dead_a {
        let retried = job_of(store, id).await;
        assert_eq!((retried.status, retried.attempts, retried.last_error), (JobStatus::Queued, 0, None));
        assert_eq!(retried.next_attempt_at, Some(now));
    }
    assert_eq!(statuses(store, &dead_b).await, [JobStatus::Dead], "another route");
    assert_eq!(statuses(store, &done_a).await, [JobStatus::Succeeded], "another status");
    let succeeded = bulk(BulkAction::Retry, JobStatus::Succeeded);
    assert_eq!(
        store.bulk_jobs(succeeded).await.unwrap(),
        BulkAnswer::Done(BulkOutcome { count: 1, jobs: 0, more: false })
    );
    assert_eq!(job_of(store, &queued.id).await.next_attempt_at, Some(queued.run_at), "a queued job is not touched");
    let counts = store.job_counts().await.unwrap();
    assert_eq!((counts.queued, counts.dead, counts.succeeded), (4, 1, 0));
    let again = store.claim_jobs(claim("w", &["a"], 10)).await.unwrap();
    assert_eq!(again.len(), 4);
    assert!(again.iter().all(|j| j.attempt == 1));
}

pub async fn queued_jobs_are_cancelled_by_filter_and_running_ones_are_left_to_finish(f: &dyn Fixture) {
    let store = f.store();
    let running = job("a", None);
    store_one(store, "d0", vec![running.clone()]).await;
    assert_eq!(store.claim_jobs(claim("w", &["a"], 1)).await.unwrap().len(), 1);
    let queued: Vec<NewJob> = vec![job("a", None), job_at("a", Some("k"), now_ms() + HOUR), job("a", None)];
    let other = job("b", None);
    store_one(store, "d1", queued.clone()).await;
    store_one(store, "d2", vec![other.clone()]).await;
    let op = BulkJobs { route: Some("a".into()), ..bulk(BulkAction::Cancel, JobStatus::Queued) };
    assert_eq!(store.bulk_jobs(op).await.unwrap(), BulkAnswer::Done(BulkOutcome { count: 3, jobs: 0, more: false }));
    for j in &queued {
        let cancelled = job_of(store, &j.id).await;
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(cancelled.last_error.as_deref(), Some(CANCELLED_BY_OPERATOR));
        assert_eq!(cancelled.next_attempt_at, None);
    }
    assert_eq!(job_of(store, &other.id).await.status, JobStatus::Queued);
    assert_eq!(job_of(store, &running.id).await.status, JobStatus::Running);
    let counts = store.job_counts().await.unwrap();
    assert_eq!((counts.queued, counts.running, counts.cancelled), (1, 1, 3));
    // The running job finishes as it would have.
    assert!(store.finish_job(&running.id, "w", record(1, true), NextState::Succeeded).await.unwrap());
    let listed = store.list_jobs(JobQuery { status: Some(JobStatus::Cancelled), ..Default::default() }).await.unwrap();
    assert_eq!(listed.items.len(), 3);
    let d1 = store.list_deliveries(Default::default()).await.unwrap().items.into_iter().find(|d| d.delivery == "d1");
    assert_eq!(d1.unwrap().jobs.cancelled, 3);
    // Nothing queued is left on the route: cancelling again does nothing.
    let op = BulkJobs { route: Some("a".into()), ..bulk(BulkAction::Cancel, JobStatus::Queued) };
    assert_eq!(store.bulk_jobs(op).await.unwrap(), BulkAnswer::Done(BulkOutcome::default()));
}

pub async fn cancelled_jobs_are_never_claimed_until_retried(f: &dyn Fixture) {
    let store = f.store();
    let j = job("r", Some("k"));
    store_one(store, "d1", vec![j.clone()]).await;
    store.bulk_jobs(bulk(BulkAction::Cancel, JobStatus::Queued)).await.unwrap();
    let mut later = claim("w", &["r"], 10);
    later.now += 10 * HOUR;
    later.lease_until = later.now + HOUR;
    assert!(store.claim_jobs(later).await.unwrap().is_empty());
    // A new job of the same key does not merge into the cancelled one.
    let newer = job("r", Some("k"));
    store_one(store, "d2", vec![newer.clone()]).await;
    assert_eq!(job_of(store, &newer.id).await.status, JobStatus::Queued);
    assert_eq!(job_of(store, &j.id).await.merged, 0);
    assert!(store.finish_job(&j.id, "w", record(1, true), NextState::Succeeded).await.map(|ok| !ok).unwrap());
    // A cancelled job can be retried, one at a time or by filter.
    assert!(store.retry_job(&j.id, now_ms()).await.unwrap());
    let claimed = store.claim_jobs(claim("w", &["r"], 10)).await.unwrap();
    assert_eq!(claimed.len(), 1, "one job per key at a time");
}

pub async fn a_bulk_action_takes_at_most_its_limit_and_says_more_matched(f: &dyn Fixture) {
    let store = f.store();
    let dead = finished_jobs(store, "r", 3, NextState::Dead).await;
    let op = BulkJobs { limit: 2, ..bulk(BulkAction::Retry, JobStatus::Dead) };
    assert_eq!(store.bulk_jobs(op).await.unwrap(), BulkAnswer::Done(BulkOutcome { count: 2, jobs: 0, more: true }));
    assert_eq!(statuses(store, &dead).await, [JobStatus::Queued, JobStatus::Queued, JobStatus::Dead], "oldest first");
    let op = BulkJobs { limit: 1, ..bulk(BulkAction::Retry, JobStatus::Dead) };
    assert_eq!(store.bulk_jobs(op).await.unwrap(), BulkAnswer::Done(BulkOutcome { count: 1, jobs: 0, more: false }));
}

pub async fn a_repeated_key_answers_the_stored_outcome_and_acts_once(f: &dyn Fixture) {
    let store = f.store();
    let dead = finished_jobs(store, "r", 2, NextState::Dead).await;
    let op = BulkJobs { key: key("k1", "retry r"), ..bulk(BulkAction::Retry, JobStatus::Dead) };
    let done = BulkOutcome { count: 2, jobs: 0, more: false };
    assert_eq!(store.bulk_jobs(op.clone()).await.unwrap(), BulkAnswer::Done(done));
    // They run and die again; the same request again (a client's retry) changes nothing.
    let claimed = store.claim_jobs(claim("w", &["r"], 10)).await.unwrap();
    for c in &claimed {
        store.finish_job(&c.id, "w", record(2, false), NextState::Dead).await.unwrap();
    }
    assert_eq!(store.bulk_jobs(op.clone()).await.unwrap(), BulkAnswer::Repeat(done));
    assert_eq!(statuses(store, &dead).await, [JobStatus::Dead, JobStatus::Dead]);
    assert_eq!(
        store.idempotent_answer(op.key.as_ref().unwrap(), now_ms()).await.unwrap(),
        Some(BulkAnswer::Repeat(done))
    );
    assert_eq!(store.idempotent_answer(key("unknown", "x").as_ref().unwrap(), now_ms()).await.unwrap(), None);

    // A replay under a key: its jobs are created once.
    let d = store_one(store, "d", vec![]).await;
    let replay = |jobs: Vec<NewJob>| BulkReplay {
        plan: vec![(d.clone(), jobs)],
        more: false,
        now: now_ms(),
        key: key("k2", "replay"),
    };
    let created = BulkOutcome { count: 1, jobs: 2, more: false };
    assert_eq!(
        store.replay_deliveries(replay(vec![job("s", None), job("t", Some("x"))])).await.unwrap(),
        BulkAnswer::Done(created)
    );
    assert_eq!(
        store.replay_deliveries(replay(vec![job("s", None), job("t", Some("y"))])).await.unwrap(),
        BulkAnswer::Repeat(created)
    );
    assert_eq!(store.get_delivery(&d).await.unwrap().unwrap().jobs.len(), 2);
}

pub async fn a_key_reused_for_another_request_is_refused_and_nothing_is_done(f: &dyn Fixture) {
    let store = f.store();
    let dead = finished_jobs(store, "r", 1, NextState::Dead).await;
    let queued = job("q", None);
    let d = store_one(store, "d", vec![queued.clone()]).await;
    let cancel = BulkJobs { key: key("k", "cancel q"), ..bulk(BulkAction::Cancel, JobStatus::Queued) };
    assert!(matches!(store.bulk_jobs(cancel).await.unwrap(), BulkAnswer::Done(BulkOutcome { count: 1, .. })));
    let retry = BulkJobs { key: key("k", "retry r"), ..bulk(BulkAction::Retry, JobStatus::Dead) };
    assert_eq!(store.bulk_jobs(retry).await.unwrap(), BulkAnswer::KeyReused);
    assert_eq!(statuses(store, &dead).await, [JobStatus::Dead]);
    let replay = BulkReplay {
        plan: vec![(d.clone(), vec![job("s", None)])],
        more: false,
        now: now_ms(),
        key: key("k", "replay"),
    };
    assert_eq!(store.replay_deliveries(replay).await.unwrap(), BulkAnswer::KeyReused);
    assert_eq!(store.get_delivery(&d).await.unwrap().unwrap().jobs.len(), 1);
    assert_eq!(
        store.idempotent_answer(key("k", "other").as_ref().unwrap(), now_ms()).await.unwrap(),
        Some(BulkAnswer::KeyReused)
    );
}

pub async fn concurrent_requests_with_one_key_act_once(f: &dyn Fixture) {
    let store = f.store();
    let d = store_one(store, "d", vec![]).await;
    let replay = || BulkReplay {
        plan: vec![(d.clone(), vec![job("s", None)])],
        more: false,
        now: now_ms(),
        key: key("k", "replay"),
    };
    let answers = futures_util::future::join_all((0..8).map(|_| store.replay_deliveries(replay()))).await;
    let answers: Vec<BulkAnswer> = answers.into_iter().map(Result::unwrap).collect();
    let created = BulkOutcome { count: 1, jobs: 1, more: false };
    assert_eq!(answers.iter().filter(|a| **a == BulkAnswer::Done(created)).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|a| matches!(a, BulkAnswer::Done(_) | BulkAnswer::Repeat(_))), "{answers:?}");
    assert!(
        answers.iter().all(|a| matches!(a, BulkAnswer::Done(o) | BulkAnswer::Repeat(o) if *o == created)),
        "{answers:?}"
    );
    assert_eq!(store.get_delivery(&d).await.unwrap().unwrap().jobs.len(), 1);
}

pub async fn an_expired_key_is_forgotten_and_purged(f: &dyn Fixture) {
    let store = f.store();
    finished_jobs(store, "r", 1, NextState::Dead).await;
    let old = BulkJobs {
        key: key("k", "retry"),
        now: now_ms() - IDEMPOTENCY_TTL - HOUR,
        ..bulk(BulkAction::Retry, JobStatus::Dead)
    };
    assert!(matches!(store.bulk_jobs(old).await.unwrap(), BulkAnswer::Done(BulkOutcome { count: 1, .. })));
    assert_eq!(store.idempotent_answer(key("k", "retry").as_ref().unwrap(), now_ms()).await.unwrap(), None);
    assert_eq!(f.rows("idempotency_keys").await, 1);
    assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 0);
    assert_eq!(f.rows("idempotency_keys").await, 0, "the purge forgets expired keys");
    // Another request under the key, a day later, acts (here: on nothing, the job is queued).
    let op = BulkJobs { key: key("k", "cancel"), ..bulk(BulkAction::Cancel, JobStatus::Queued) };
    assert!(matches!(store.bulk_jobs(op.clone()).await.unwrap(), BulkAnswer::Done(BulkOutcome { count: 1, .. })));
    assert!(matches!(store.bulk_jobs(op).await.unwrap(), BulkAnswer::Repeat(BulkOutcome { count: 1, .. })));
}

pub async fn deliveries_are_found_by_filter_oldest_first_and_replayed_with_their_jobs(f: &dyn Fixture) {
    let store = f.store();
    let base = now_ms() - 10 * HOUR;
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut d = delivery(if i % 2 == 0 { "github" } else { "gitlab" }, &format!("d{i}"));
        d.event = if i < 4 { "push".into() } else { "ping".into() };
        d.received_at = base + i as i64 * HOUR;
        d.id = id_at(d.received_at);
        ids.push(d.id.clone());
        store.insert_delivery(d, vec![]).await.unwrap();
    }
    let found = |filter: DeliveryFilter, after: Option<String>, limit: usize| async move {
        let page = store.find_deliveries(&filter, after.as_deref(), limit).await.unwrap();
        page.into_iter().map(|d| d.delivery).collect::<Vec<_>>()
    };
    let all = DeliveryFilter::default();
    assert_eq!(found(all.clone(), None, 100).await, ["d0", "d1", "d2", "d3", "d4", "d5"]);
    assert_eq!(found(all.clone(), Some(ids[1].clone()), 2).await, ["d2", "d3"]);
    let github_push =
        DeliveryFilter { source: Some("github".into()), event: Some("push".into()), ..Default::default() };
    assert_eq!(found(github_push, None, 100).await, ["d0", "d2"]);
    let window = DeliveryFilter { since: Some(base + HOUR), until: Some(base + 3 * HOUR), ..Default::default() };
    assert_eq!(found(window, None, 100).await, ["d1", "d2"], "since inclusive, until exclusive");
    let bodies = store.find_deliveries(&all, None, 1).await.unwrap();
    assert_eq!(bodies[0].body, delivery("github", "x").body);
    assert_eq!(bodies[0].headers, delivery("github", "x").headers);

    // A planned delivery purged meanwhile is not counted; one without jobs is.
    let plan = vec![
        (ids[0].clone(), vec![job("r", None), job("s", Some("k"))]),
        (ids[1].clone(), vec![]),
        ("gone".to_string(), vec![job("r", None)]),
        (ids[2].clone(), vec![job("s", Some("k"))]),
    ];
    let replay = BulkReplay { plan, more: true, now: now_ms(), key: None };
    let outcome = BulkOutcome { count: 3, jobs: 3, more: true };
    assert_eq!(store.replay_deliveries(replay).await.unwrap(), BulkAnswer::Done(outcome));
    // The keyed job of d2 merged into d0's.
    assert_eq!(store.job_counts().await.unwrap().queued, 2);
    let jobs = store.get_delivery(&ids[2]).await.unwrap().unwrap().jobs;
    assert_eq!((jobs.len(), jobs[0].job.merged), (1, 1));
}

pub async fn purge_takes_deliveries_whose_jobs_were_cancelled(f: &dyn Fixture) {
    let store = f.store();
    let mut d = delivery("github", "old");
    d.received_at = now_ms() - 10 * HOUR;
    d.id = id_at(d.received_at);
    store.insert_delivery(d.clone(), vec![job("r", None), job("s", None)]).await.unwrap();
    assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 0, "queued jobs keep it");
    let op = BulkJobs { route: Some("r".into()), ..bulk(BulkAction::Cancel, JobStatus::Queued) };
    store.bulk_jobs(op).await.unwrap();
    assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 0, "one job is still queued");
    store.bulk_jobs(bulk(BulkAction::Cancel, JobStatus::Queued)).await.unwrap();
    assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 1);
    assert!(store.get_delivery(&d.id).await.unwrap().is_none());
    assert_eq!(f.rows("jobs").await, 0);
    assert_eq!(store.job_counts().await.unwrap().cancelled, 0);
}

pub async fn the_oldest_due_job_of_each_route_is_found_and_future_running_and_finished_ones_are_not(f: &dyn Fixture) {
    let store = f.store();
    let now = now_ms();
    let routes: Vec<String> = ["late", "future", "busy", "done", "idle"].map(String::from).to_vec();
    store_one(store, "a", vec![job_at("late", None, now - 1_000), job_at("late", None, now + HOUR)]).await;
    store_one(store, "b", vec![job_at("late", None, now - 5_000), job_at("future", None, now + 60_000)]).await;
    // `busy`: its older job is running (leased), so the queued one is the oldest due.
    store_one(store, "c", vec![job_at("busy", None, now - 3_000), job_at("busy", None, now - 500)]).await;
    let running = store.claim_jobs(claim("o", &["busy"], 1)).await.unwrap();
    assert_eq!(running.len(), 1);
    // `done`: a due job that succeeded is no longer in the queue.
    store_one(store, "d", vec![job_at("done", None, now - 9_000)]).await;
    let finished = store.claim_jobs(claim("o", &["done"], 1)).await.unwrap();
    assert!(store.finish_job(&finished[0].id, "o", record(1, true), NextState::Succeeded).await.unwrap());

    let mut oldest = store.oldest_due(&routes, now).await.unwrap();
    oldest.sort();
    assert_eq!(oldest, vec![("busy".to_string(), now - 500), ("late".to_string(), now - 5_000)]);
    // Once the future job is due, it counts; nothing is found for routes not asked about.
    let later = store.oldest_due(&routes[1..2], now + 60_000).await.unwrap();
    assert_eq!(later, vec![("future".to_string(), now + 60_000)]);
    assert!(store.oldest_due(&[], now).await.unwrap().is_empty());
}
