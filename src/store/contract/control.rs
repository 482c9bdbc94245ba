//! The contract of the shared route and source state: kept, enforced by claims for every claimer, and moved
//! by the breaker's rules inside the store.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::config::Breaker;
use crate::store::control::{Circuit, Pause, RouteChange, Stop};

fn pause(by: &str) -> Pause {
    Pause { by: by.into(), reason: "deploy window".into(), at: now_ms() }
}

fn limited(claim: Claim, route: &str, limits: RouteLimits) -> Claim {
    Claim { limits: HashMap::from([(route.to_string(), limits)]), ..claim }
}

pub async fn route_and_source_state_is_kept_and_listed(f: &dyn Fixture) {
    let store = f.store();
    assert!(store.control_state().await.unwrap().routes.is_empty(), "a fresh store holds no state");
    let (before, after) = store.change_route("deploy", RouteChange::Pause(pause("alice")), now_ms()).await.unwrap();
    assert_eq!(before, crate::store::control::RouteState::new("deploy"));
    assert_eq!(after.paused.as_ref().unwrap().by, "alice");
    let stop = Stop { status: 410, reason: "gone".into(), at: now_ms() };
    store.change_route("notify", RouteChange::Stop(stop.clone()), now_ms()).await.unwrap();
    assert_eq!(store.pause_source("github", Some(pause("bob")), now_ms()).await.unwrap(), None);

    let state = store.control_state().await.unwrap();
    let routes: Vec<&str> = state.routes.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(routes, ["deploy", "notify"]);
    assert_eq!(state.routes[0].paused.as_ref().unwrap().reason, "deploy window");
    assert_eq!(state.routes[1].stopped, Some(stop));
    assert_eq!(state.sources[0].source, "github");
    assert_eq!(state.sources[0].paused.as_ref().unwrap().by, "bob");

    let (_, resumed) = store.change_route("notify", RouteChange::Resume, now_ms()).await.unwrap();
    assert_eq!(resumed.stopped, None);
    let was = store.pause_source("github", None, now_ms()).await.unwrap();
    assert_eq!(was.unwrap().by, "bob", "resuming returns the pause it lifted");
    assert_eq!(store.control_state().await.unwrap().sources[0].paused, None);
}

pub async fn a_paused_or_stopped_route_is_not_claimed_until_resumed(f: &dyn Fixture) {
    paused_or_stopped_routes_are_held(f, |c| c).await;
}

/// The same for routes claimed without the exclusive claim lock (see [`Claim::lockless`]).
pub async fn a_paused_or_stopped_lockless_route_is_not_claimed_until_resumed(f: &dyn Fixture) {
    paused_or_stopped_routes_are_held(f, lockless).await;
}

async fn paused_or_stopped_routes_are_held(f: &dyn Fixture, claim_as: fn(Claim) -> Claim) {
    let claim = |owner: &str, routes: &[&str], limit: usize| claim_as(claim(owner, routes, limit));
    let store = f.store();
    store_one(store, "d1", vec![job("held", None), job("free", None)]).await;
    store.change_route("held", RouteChange::Pause(pause("ops")), now_ms()).await.unwrap();
    let claimed = store.claim_jobs(claim("w1", &["held", "free"], 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.route.as_str()).collect::<Vec<_>>(), ["free"]);

    store.change_route("held", RouteChange::Resume, now_ms()).await.unwrap();
    let stop = Stop { status: 410, reason: "gone".into(), at: now_ms() };
    store.change_route("held", RouteChange::Stop(stop), now_ms()).await.unwrap();
    assert!(store.claim_jobs(claim("w2", &["held"], 10)).await.unwrap().is_empty(), "a 410 holds it too");

    store.change_route("held", RouteChange::Resume, now_ms()).await.unwrap();
    let claimed = store.claim_jobs(claim("w2", &["held"], 10)).await.unwrap();
    assert_eq!(claimed.len(), 1, "resumed: its job was kept and runs now");
}

pub async fn concurrency_counts_the_jobs_running_for_every_claimer(f: &dyn Fixture) {
    let store = f.store();
    let one = RouteLimits { concurrency: Some(1), breaker: false };
    store_one(store, "d1", vec![job("deploy", None)]).await;
    store_one(store, "d2", vec![job("deploy", None)]).await;
    store_one(store, "d3", vec![job("deploy", None)]).await;

    let first = store.claim_jobs(limited(claim("a", &["deploy"], 10), "deploy", one)).await.unwrap();
    assert_eq!(first.len(), 1, "concurrency 1 takes one job, though ten were asked for");
    let other = store.claim_jobs(limited(claim("b", &["deploy"], 10), "deploy", one)).await.unwrap();
    assert!(other.is_empty(), "another instance may not start a second one while the first runs");

    store.finish_job(&first[0].id, "a", record(1, true), NextState::Succeeded).await.unwrap();
    let next = store.claim_jobs(limited(claim("b", &["deploy"], 10), "deploy", one)).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(!next[0].probe);

    // A lease that ran out no longer counts: its job is settled as a failed attempt first.
    let expired = Claim { lease_until: now_ms() - 1, ..claim("c", &["deploy"], 10) };
    store.finish_job(&next[0].id, "b", record(1, true), NextState::Succeeded).await.unwrap();
    let lost = store.claim_jobs(limited(expired, "deploy", one)).await.unwrap();
    assert_eq!(lost.len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = store.claim_jobs(limited(claim("d", &["deploy"], 10), "deploy", one)).await.unwrap();
    assert_eq!(after.len(), 0, "the lost job went back with a backoff: nothing else is queued and due");
    assert_eq!(job_of(store, &lost[0].id).await.status, JobStatus::Queued);
}

pub async fn an_open_circuit_holds_its_route_then_lets_exactly_one_probe_go(f: &dyn Fixture) {
    let store = f.store();
    let breaker = Breaker { window: Duration::from_secs(60), max_failures: 2, open_for: Duration::from_millis(200) };
    let fail = RouteChange::Attempt { healthy: false, probe: false, breaker: breaker.clone() };
    let limits = RouteLimits { concurrency: None, breaker: true };
    for n in 0..3 {
        store_one(store, &format!("d{n}"), vec![job("hook", None)]).await;
    }
    store.change_route("hook", fail.clone(), now_ms()).await.unwrap();
    let (_, opened) = store.change_route("hook", fail, now_ms()).await.unwrap();
    assert!(matches!(opened.circuit, Circuit::Open { .. }), "{opened:?}");
    assert_eq!(opened.failures.len(), 2);
    let held = store.claim_jobs(limited(claim("a", &["hook"], 10), "hook", limits)).await.unwrap();
    assert!(held.is_empty(), "open: nothing goes");

    tokio::time::sleep(Duration::from_millis(250)).await;
    let probe = store.claim_jobs(limited(claim("a", &["hook"], 10), "hook", limits)).await.unwrap();
    assert_eq!(probe.len(), 1, "half-open: one probe");
    assert!(probe[0].probe);
    let state = store.control_state().await.unwrap().routes.remove(0);
    assert!(matches!(state.circuit, Circuit::HalfOpen { probe_until: Some(_) }), "{state:?}");
    let second = store.claim_jobs(limited(claim("b", &["hook"], 10), "hook", limits)).await.unwrap();
    assert!(second.is_empty(), "no second probe while the first runs, whoever asks");

    let healed = RouteChange::Attempt { healthy: true, probe: true, breaker };
    let (_, closed) = store.change_route("hook", healed, now_ms()).await.unwrap();
    assert_eq!(closed.circuit, Circuit::Closed);
    store.finish_job(&probe[0].id, "a", record(1, true), NextState::Succeeded).await.unwrap();
    let rest = store.claim_jobs(limited(claim("b", &["hook"], 10), "hook", limits)).await.unwrap();
    assert_eq!(rest.len(), 2, "closed: everything goes");
    assert!(rest.iter().all(|j| !j.probe));
}

pub async fn each_route_is_leased_for_its_own_time(f: &dyn Fixture) {
    let store = f.store();
    // A dot in a name is a plain character, not a JSON path.
    store_one(store, "d1", vec![job("quick.v2", None), job("slow", None)]).await;
    let now = now_ms();
    let first = Claim {
        lease_until: now + HOUR,
        leases: HashMap::from([("quick.v2".to_string(), now + 1)]),
        ..claim("a", &["quick.v2", "slow"], 10)
    };
    let claimed = store.claim_jobs(first).await.unwrap();
    assert_eq!(claimed.len(), 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Only the quick route's lease has run out: its job is settled and claimable again after its backoff.
    let no_pause = crate::retry::Retry { initial: Duration::ZERO, max: Duration::ZERO, ..Default::default() };
    let mut again = claim("b", &["quick.v2", "slow"], 10);
    again.retry = HashMap::from([("quick.v2".to_string(), no_pause.clone()), ("slow".to_string(), no_pause)]);
    let retaken = store.claim_jobs(again).await.unwrap();
    assert_eq!(retaken.iter().map(|j| j.route.as_str()).collect::<Vec<_>>(), ["quick.v2"]);
    assert_eq!(retaken[0].attempt, 2, "the lost run counted as an attempt");
}
