//! Per-route health shared by the worker and the admin API: circuit breakers, and routes disabled by a
//! peer's 410 Gone (until an operator enables them again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::breaker::{Allowance, CircuitBreaker};
use crate::config::Route;
use crate::metrics::{CIRCUIT_STATE, CIRCUIT_TRANSITIONS};
use crate::store::Millis;

#[derive(Debug, Default)]
struct RouteState {
    breaker: Option<CircuitBreaker>,
    gone: Option<(String, Millis)>,
}

/// What the admin API shows for a route.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub circuit: &'static str,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Millis>,
}

#[derive(Debug, Default)]
pub struct RouteHealth {
    routes: Mutex<HashMap<String, RouteState>>,
}

impl RouteHealth {
    fn with<T>(&self, route: &Route, f: impl FnOnce(&mut RouteState) -> T) -> T {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let state = routes.entry(route.name.clone()).or_default();
        let before = circuit(state);
        // A reload may have added, removed or changed the breaker.
        match (&route.circuit_breaker, &state.breaker) {
            (None, Some(_)) => state.breaker = None,
            (Some(cfg), Some(b)) if b.config() == cfg => {}
            (Some(cfg), _) => state.breaker = Some(CircuitBreaker::new(cfg.clone())),
            (None, None) => {}
        }
        let result = f(state);
        let after = circuit(state);
        if after != before {
            let failures = state.breaker.as_ref().map_or(0, CircuitBreaker::failures);
            tracing::warn!(route = %route.name, from = before, to = after, failures, "circuit breaker changed");
            metrics::counter!(CIRCUIT_TRANSITIONS, "route" => route.name.clone(), "to" => after).increment(1);
        }
        result
    }

    /// How many jobs of `route` may start now (none while disabled by 410 or while the circuit is open).
    pub fn allowance(&self, route: &Route) -> Allowance {
        let now = Instant::now();
        self.with(route, |s| {
            if s.gone.is_some() {
                return Allowance::None { until: now + std::time::Duration::from_secs(3600) };
            }
            let allowance = s.breaker.as_mut().map_or(Allowance::Any, |b| b.allowance(now));
            publish(&route.name, s);
            allowance
        })
    }

    pub fn started(&self, route: &Route) {
        self.with(route, |s| {
            if let Some(b) = s.breaker.as_mut() {
                b.started();
            }
        });
    }

    /// Feed an attempt's health into the route's breaker.
    pub fn record(&self, route: &Route, healthy: bool) {
        self.with(route, |s| {
            if let Some(b) = s.breaker.as_mut() {
                b.record(healthy, Instant::now());
            }
            publish(&route.name, s);
        });
    }

    /// A peer answered 410 Gone: stop running this route until it is enabled again.
    pub fn mark_gone(&self, route: &Route, reason: String, at: Millis) {
        self.with(route, |s| s.gone = Some((reason, at)));
    }

    /// Clear a 410 and reset the breaker; true if there was anything to clear.
    pub fn enable(&self, route: &Route) -> bool {
        self.with(route, |s| {
            let was = s.gone.take().is_some()
                || s.breaker.as_ref().is_some_and(|b| b.state() != super::breaker::State::Closed);
            if let Some(cfg) = &route.circuit_breaker {
                s.breaker = Some(CircuitBreaker::new(cfg.clone()));
            }
            publish(&route.name, s);
            was
        })
    }

    pub fn status(&self, route: &Route) -> RouteStatus {
        self.with(route, |s| RouteStatus {
            circuit: circuit(s),
            disabled_reason: s.gone.as_ref().map(|(r, _)| r.clone()),
            disabled_at: s.gone.as_ref().map(|(_, at)| *at),
        })
    }
}

/// The circuit's state by name; a route without a breaker is always closed.
fn circuit(s: &RouteState) -> &'static str {
    s.breaker.as_ref().map_or("closed", |b| b.state().name())
}

fn publish(route: &str, s: &RouteState) {
    let value = s.breaker.as_ref().map_or(0.0, |b| b.state().gauge());
    metrics::gauge!(CIRCUIT_STATE, "route" => route.to_string()).set(value);
}
