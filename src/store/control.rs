//! control: what operators and peers decided about routes and sources, kept in the store so every instance
//! acts on it and a restart keeps it — a pause (by whom, why, when), a peer's 410 stop, the circuit breaker —
//! and the rules that move a route's state. The stores only load, lock and save it.

use std::collections::HashMap;

use serde::Serialize;

use super::{Millis, RouteLimits};
use crate::config::Breaker;

/// Who paused something, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub by: String,
    pub reason: String,
    pub at: Millis,
}

/// A peer told us to stop (410 Gone): the route sends nothing until an operator resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stop {
    pub status: u16,
    pub reason: String,
    pub at: Millis,
}

/// A route's circuit breaker, shared by every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    /// Nothing runs until `until`; then one probe.
    Open {
        until: Millis,
    },
    /// One probe may run; `probe_until` is the lease of the probe under way, if one is.
    HalfOpen {
        probe_until: Option<Millis>,
    },
}

impl Circuit {
    pub fn name(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open { .. } => "open",
            Circuit::HalfOpen { .. } => "half-open",
        }
    }

    /// The value of `hookgate_circuit_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            Circuit::Closed => 0.0,
            Circuit::HalfOpen { .. } => 1.0,
            Circuit::Open { .. } => 2.0,
        }
    }

    /// The row's (`circuit`, `circuit_until`) columns.
    pub fn columns(self) -> (&'static str, Option<Millis>) {
        match self {
            Circuit::Closed => ("closed", None),
            Circuit::Open { until } => ("open", Some(until)),
            Circuit::HalfOpen { probe_until } => ("half-open", probe_until),
        }
    }

    pub fn from_columns(name: &str, until: Option<Millis>) -> Self {
        match name {
            "open" => Circuit::Open { until: until.unwrap_or(0) },
            "half-open" => Circuit::HalfOpen { probe_until: until },
            _ => Circuit::Closed,
        }
    }
}

/// Everything kept about one route. A route never touched has no row and is [`RouteState::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub route: String,
    pub paused: Option<Pause>,
    pub stopped: Option<Stop>,
    pub circuit: Circuit,
    /// Times of recent failures, oldest first: those inside the window while closed, those that opened it
    /// while open. At most `max_failures` are kept.
    pub failures: Vec<Millis>,
    pub updated_at: Millis,
}

/// Something that happens to a route.
#[derive(Debug, Clone)]
pub enum RouteChange {
    /// An operator stops the route's jobs from starting; they wait in the queue.
    Pause(Pause),
    /// An operator lets it run again: clears a pause, a 410 stop and an open circuit.
    Resume,
    /// A peer answered 410 Gone.
    Stop(Stop),
    /// An attempt ended: feed its health to the breaker. `probe` says it was the half-open circuit's probe.
    Attempt { healthy: bool, probe: bool, breaker: Breaker },
}

/// How many of a route's jobs may start now, by its state (concurrency is counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Any,
    /// The half-open circuit's single probe.
    Probe,
    None,
}

/// What a change did, seen by the instance that made it: the one that logs it, counts it and emits its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Paused(Pause),
    Resumed,
    Stopped(Stop),
    Circuit { from: &'static str, to: &'static str, failures: usize, open_until: Option<Millis> },
}

impl RouteState {
    pub fn new(route: &str) -> Self {
        RouteState {
            route: route.to_string(),
            paused: None,
            stopped: None,
            circuit: Circuit::Closed,
            failures: Vec::new(),
            updated_at: 0,
        }
    }

    /// Failures counted now: in the window while closed, those that opened it while open.
    pub fn failure_count(&self) -> usize {
        self.failures.len()
    }

    /// Apply a change at `now`.
    pub fn apply(&mut self, change: &RouteChange, now: Millis) {
        self.updated_at = now;
        match change {
            RouteChange::Pause(pause) => self.paused = Some(pause.clone()),
            RouteChange::Resume => {
                self.paused = None;
                self.stopped = None;
                self.circuit = Circuit::Closed;
                self.failures.clear();
            }
            RouteChange::Stop(stop) => self.stopped = Some(stop.clone()),
            RouteChange::Attempt { healthy, probe, breaker } => self.record(*healthy, *probe, breaker, now),
        }
    }

    /// The breaker's rules: `max_failures` unhealthy attempts within `window` open the circuit for `open_for`;
    /// then one probe runs, and its result closes the circuit or opens it again. Only failures that say the
    /// peer is unwell count (timeouts, connection errors, 5xx, 429): a 4xx is the request's fault.
    fn record(&mut self, healthy: bool, probe: bool, breaker: &Breaker, now: Millis) {
        let open_for = breaker.open_for.as_millis() as Millis;
        match (self.circuit, healthy) {
            (Circuit::HalfOpen { .. }, true) if probe => {
                self.circuit = Circuit::Closed;
                self.failures.clear();
            }
            (Circuit::HalfOpen { .. }, false) if probe => {
                self.circuit = Circuit::Open { until: now + open_for };
                self.failures = vec![now];
            }
            (Circuit::Closed, false) => {
                let window = breaker.window.as_millis() as Millis;
                self.failures.retain(|t| now - *t <= window);
                self.failures.push(now);
                let max = breaker.max_failures.max(1) as usize;
                if self.failures.len() > max {
                    self.failures.drain(..self.failures.len() - max);
                }
                if self.failures.len() >= max {
                    self.circuit = Circuit::Open { until: now + open_for };
                }
            }
            // Successes while closed change nothing; results of attempts that started before the circuit
            // opened (or that were not the probe) change nothing either.
            _ => {}
        }
    }

    /// What may start now. `breaker` says whether the route (still) has a circuit breaker configured: one
    /// removed by a reload no longer holds the route back.
    pub fn allowance(&self, breaker: bool, now: Millis) -> Allowance {
        if self.paused.is_some() || self.stopped.is_some() {
            return Allowance::None;
        }
        if !breaker {
            return Allowance::Any;
        }
        match self.circuit {
            Circuit::Closed => Allowance::Any,
            Circuit::Open { until } if now < until => Allowance::None,
            Circuit::Open { .. } | Circuit::HalfOpen { probe_until: None } => Allowance::Probe,
            // The probe's runner stopped before it reported: its lease ran out, another probe may go.
            Circuit::HalfOpen { probe_until: Some(lease) } if lease < now => Allowance::Probe,
            Circuit::HalfOpen { .. } => Allowance::None,
        }
    }

    /// A probe was claimed, leased until `lease_until`.
    pub fn probe_started(&mut self, lease_until: Millis, now: Millis) {
        self.circuit = Circuit::HalfOpen { probe_until: Some(lease_until) };
        self.updated_at = now;
    }

    /// What changed between `before` and `self`, in the order an operator would tell it.
    pub fn transitions(&self, before: &RouteState) -> Vec<Transition> {
        let mut out = Vec::new();
        if let (None, Some(p)) = (&before.paused, &self.paused) {
            out.push(Transition::Paused(p.clone()));
        }
        if let (None, Some(s)) = (&before.stopped, &self.stopped) {
            out.push(Transition::Stopped(s.clone()));
        }
        let was_held = before.paused.is_some() || before.stopped.is_some();
        if was_held && self.paused.is_none() && self.stopped.is_none() {
            out.push(Transition::Resumed);
        }
        if before.circuit.name() != self.circuit.name()
            || matches!(
                (before.circuit, self.circuit),
                (Circuit::Open { until: a }, Circuit::Open { until: b }) if a != b
            )
        {
            let open_until = match self.circuit {
                Circuit::Open { until } => Some(until),
                _ => None,
            };
            out.push(Transition::Circuit {
                from: before.circuit.name(),
                to: self.circuit.name(),
                failures: self.failures.len(),
                open_until,
            });
        }
        out
    }

    /// The failure times as stored (a JSON array of Unix milliseconds).
    pub fn failures_json(&self) -> String {
        serde_json::to_string(&self.failures).unwrap_or_else(|_| "[]".into())
    }

    pub fn parse_failures(text: &str) -> Vec<Millis> {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// What is kept about one source: only whether an operator paused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    pub source: String,
    pub paused: Option<Pause>,
    pub updated_at: Millis,
}

/// Every route and source that has a row: what an instance caches and refreshes.
#[derive(Debug, Clone, Default)]
pub struct ControlState {
    pub routes: Vec<RouteState>,
    pub sources: Vec<SourceState>,
}

/// How one claim takes each route's jobs, decided inside the claim's transaction (under its lock) from the
/// routes' states and the jobs running on every instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimPlan {
    /// Routes with no cap: claimed together, in queue order.
    pub uncapped: Vec<String>,
    /// Routes with a cap, claimed one by one.
    pub capped: Vec<Capped>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    pub route: String,
    /// At most this many of its jobs now: what its `concurrency` leaves, or the one probe.
    pub cap: usize,
    /// The job claimed is the half-open circuit's probe.
    pub probe: bool,
}

/// Plan a claim of `routes`: paused, stopped and open routes are left out, a half-open one gets its single
/// probe, a route with `concurrency` gets what its jobs running anywhere (`running`) leave of it.
pub fn plan_claim(
    routes: &[String],
    limits: &HashMap<String, RouteLimits>,
    states: &HashMap<String, RouteState>,
    running: &HashMap<String, usize>,
    now: Millis,
) -> ClaimPlan {
    let mut plan = ClaimPlan::default();
    for route in routes {
        let limit = limits.get(route).copied().unwrap_or_default();
        let allowance = states.get(route).map_or(Allowance::Any, |s| s.allowance(limit.breaker, now));
        let left = limit.concurrency.map(|n| n.saturating_sub(running.get(route).copied().unwrap_or(0)));
        let (cap, probe) = match (allowance, left) {
            (Allowance::None, _) | (_, Some(0)) => continue,
            (Allowance::Probe, _) => (Some(1), true),
            (Allowance::Any, left) => (left, false),
        };
        match cap {
            None => plan.uncapped.push(route.clone()),
            Some(cap) => plan.capped.push(Capped { route: route.clone(), cap, probe }),
        }
    }
    plan
}

/// Build an optional [`Pause`] from its three nullable columns.
pub fn pause_from(by: Option<String>, reason: Option<String>, at: Option<Millis>) -> Option<Pause> {
    at.map(|at| Pause { by: by.unwrap_or_default(), reason: reason.unwrap_or_default(), at })
}

/// Build an optional [`Stop`] from its three nullable columns.
pub fn stop_from(status: Option<i64>, reason: Option<String>, at: Option<Millis>) -> Option<Stop> {
    at.map(|at| Stop { status: status.unwrap_or(410) as u16, reason: reason.unwrap_or_default(), at })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker() -> Breaker {
        Breaker { window: Duration::from_secs(120), max_failures: 5, open_for: Duration::from_secs(60) }
    }

    fn attempt(healthy: bool, probe: bool) -> RouteChange {
        RouteChange::Attempt { healthy, probe, breaker: breaker() }
    }

    const S: Millis = 1000;

    #[test]
    fn five_failures_within_the_window_open_the_circuit() {
        let mut r = RouteState::new("r");
        for i in 0..4 {
            r.apply(&attempt(false, false), i * S);
        }
        assert_eq!(r.allowance(true, 5 * S), Allowance::Any);
        r.apply(&attempt(false, false), 5 * S);
        assert_eq!(r.circuit, Circuit::Open { until: 65 * S });
        assert_eq!(r.allowance(true, 6 * S), Allowance::None);
        assert_eq!(r.failure_count(), 5, "the failures that opened it");
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_open_it() {
        let mut r = RouteState::new("r");
        for i in 0..10 {
            r.apply(&attempt(false, false), i * 31 * S);
        }
        assert_eq!(r.circuit, Circuit::Closed);
        assert!(r.failure_count() <= 4);
    }

    #[test]
    fn after_open_for_one_probe_goes_and_its_success_closes() {
        let mut r = RouteState::new("r");
        for _ in 0..5 {
            r.apply(&attempt(false, false), 0);
        }
        assert_eq!(r.allowance(true, 59 * S), Allowance::None);
        assert_eq!(r.allowance(true, 60 * S), Allowance::Probe);
        r.probe_started(90 * S, 60 * S);
        assert_eq!(r.allowance(true, 61 * S), Allowance::None, "one probe at a time");
        r.apply(&attempt(true, false), 62 * S);
        assert_eq!(r.circuit.name(), "half-open", "a late success that was not the probe changes nothing");
        r.apply(&attempt(true, true), 62 * S);
        assert_eq!(r.circuit, Circuit::Closed);
        assert_eq!(r.allowance(true, 62 * S), Allowance::Any);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_lost_probe_is_replaced() {
        let mut r = RouteState::new("r");
        for _ in 0..5 {
            r.apply(&attempt(false, false), 0);
        }
        r.probe_started(90 * S, 61 * S);
        assert_eq!(r.allowance(true, 91 * S), Allowance::Probe, "the probe's lease ran out");
        r.apply(&attempt(false, true), 95 * S);
        assert_eq!(r.circuit, Circuit::Open { until: 155 * S });
        assert_eq!(r.failure_count(), 1);
    }

    #[test]
    fn pause_and_stop_hold_everything_and_resume_clears_all() {
        let mut r = RouteState::new("r");
        for _ in 0..5 {
            r.apply(&attempt(false, false), 0);
        }
        let before = r.clone();
        r.apply(&RouteChange::Pause(Pause { by: "ops".into(), reason: "deploy".into(), at: S }), S);
        r.apply(&RouteChange::Stop(Stop { status: 410, reason: "gone".into(), at: S }), S);
        assert_eq!(r.allowance(false, 2 * S), Allowance::None, "held even without a breaker");
        let t = r.transitions(&before);
        assert!(matches!(&t[..], [Transition::Paused(_), Transition::Stopped(_)]), "{t:?}");
        let held = r.clone();
        r.apply(&RouteChange::Resume, 3 * S);
        assert_eq!(r.allowance(true, 3 * S), Allowance::Any);
        assert_eq!(
            r.transitions(&held),
            vec![
                Transition::Resumed,
                Transition::Circuit { from: "open", to: "closed", failures: 0, open_until: None }
            ]
        );
    }

    #[test]
    fn a_route_whose_breaker_was_removed_runs_though_its_circuit_is_open() {
        let mut r = RouteState::new("r");
        for _ in 0..5 {
            r.apply(&attempt(false, false), 0);
        }
        assert_eq!(r.allowance(false, S), Allowance::Any);
    }

    #[test]
    fn opening_is_one_transition_with_the_failures_that_caused_it() {
        let mut r = RouteState::new("r");
        for _ in 0..4 {
            r.apply(&attempt(false, false), 0);
        }
        let before = r.clone();
        r.apply(&attempt(false, false), S);
        assert_eq!(
            r.transitions(&before),
            vec![Transition::Circuit { from: "closed", to: "open", failures: 5, open_until: Some(61 * S) }]
        );
    }

    #[test]
    fn a_claim_plan_leaves_out_held_routes_and_caps_the_limited_ones() {
        let routes: Vec<String> = ["free", "paused", "one", "full", "probing"].map(String::from).to_vec();
        let limited = |n| RouteLimits { concurrency: Some(n), breaker: false };
        let limits = HashMap::from([
            ("one".to_string(), limited(3)),
            ("full".to_string(), limited(2)),
            ("probing".to_string(), RouteLimits { concurrency: Some(5), breaker: true }),
        ]);
        let mut paused = RouteState::new("paused");
        paused.apply(&RouteChange::Pause(Pause { by: "ops".into(), reason: String::new(), at: 0 }), 0);
        let mut probing = RouteState::new("probing");
        probing.circuit = Circuit::Open { until: 10 };
        let states = HashMap::from([("paused".to_string(), paused), ("probing".to_string(), probing)]);
        let running = HashMap::from([("one".to_string(), 2), ("full".to_string(), 2)]);
        let plan = plan_claim(&routes, &limits, &states, &running, 20);
        assert_eq!(plan.uncapped, vec!["free".to_string()]);
        assert_eq!(
            plan.capped,
            vec![
                Capped { route: "one".into(), cap: 1, probe: false },
                Capped { route: "probing".into(), cap: 1, probe: true },
            ]
        );
    }

    #[test]
    fn failures_round_trip_through_their_column() {
        let mut r = RouteState::new("r");
        r.failures = vec![1, 2, 3];
        assert_eq!(RouteState::parse_failures(&r.failures_json()), vec![1, 2, 3]);
        assert_eq!(RouteState::parse_failures("garbage"), Vec::<Millis>::new());
    }
}
