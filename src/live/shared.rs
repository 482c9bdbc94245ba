//! The route and source state every instance shares (pauses, 410 stops, circuit breakers), as this instance
//! last read it from the store: refreshed every [`REFRESH`] and at once after a change it makes itself. The
//! store stays the authority (claims read it in their own transaction); this copy answers the edge (is a
//! source paused?), the gauges, and tells what a change did.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{CIRCUIT_STATE, CIRCUIT_TRANSITIONS};
use crate::store::control::{ControlState, Pause, RouteState, Transition};
use crate::store::DynStore;

/// How often every instance reads the shared state: a change made on another instance is seen within this.
pub const REFRESH: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct SharedState {
    routes: RwLock<HashMap<String, RouteState>>,
    sources: RwLock<HashMap<String, Option<Pause>>>,
    /// Bumped by each change this instance makes itself: a refresh that read the store before it would put the
    /// older state back, so such a read is dropped (the next one sees the change).
    local_changes: std::sync::atomic::AtomicU64,
}

impl SharedState {
    /// The source's pause, if an operator paused it.
    pub fn source_paused(&self, source: &str) -> Option<Pause> {
        self.sources.read().unwrap_or_else(|e| e.into_inner()).get(source).cloned().flatten()
    }

    /// The route's state as last seen; a route never changed is running normally.
    pub fn route(&self, route: &str) -> RouteState {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.get(route).cloned().unwrap_or_else(|| RouteState::new(route))
    }

    /// Take what the store holds now; true if anything differs from what was seen.
    pub fn replace(&self, state: ControlState) -> bool {
        let routes: HashMap<String, RouteState> = state.routes.into_iter().map(|r| (r.route.clone(), r)).collect();
        let sources: HashMap<String, Option<Pause>> = state.sources.into_iter().map(|s| (s.source, s.paused)).collect();
        let mut changed = false;
        {
            let mut seen = self.routes.write().unwrap_or_else(|e| e.into_inner());
            if *seen != routes {
                *seen = routes;
                changed = true;
            }
        }
        let mut seen = self.sources.write().unwrap_or_else(|e| e.into_inner());
        if *seen != sources {
            *seen = sources;
            changed = true;
        }
        changed
    }

    /// This instance changed a route (`before` → `after`, as the store returned them): keep the new state,
    /// and log and count each transition. Returns the transitions, for the operational events.
    pub fn route_changed(&self, before: &RouteState, after: RouteState) -> Vec<Transition> {
        let transitions = after.transitions(before);
        self.local_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for t in &transitions {
            note(&after.route, t);
        }
        let gauge = after.circuit.gauge();
        metrics::gauge!(CIRCUIT_STATE, "route" => after.route.clone()).set(gauge);
        self.routes.write().unwrap_or_else(|e| e.into_inner()).insert(after.route.clone(), after);
        transitions
    }

    /// This instance paused or resumed a source.
    pub fn source_changed(&self, source: &str, pause: Option<Pause>) {
        self.sources.write().unwrap_or_else(|e| e.into_inner()).insert(source.to_string(), pause);
        self.local_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many changes this instance has made itself (see `local_changes`).
    pub fn local_changes(&self) -> u64 {
        self.local_changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Set `hookgate_circuit_state` for these routes from the state last seen.
    pub fn publish_gauges<'a>(&self, routes: impl Iterator<Item = &'a str>) {
        let seen = self.routes.read().unwrap_or_else(|e| e.into_inner());
        for route in routes {
            let value = seen.get(route).map_or(0.0, |s| s.circuit.gauge());
            metrics::gauge!(CIRCUIT_STATE, "route" => route.to_string()).set(value);
        }
    }
}

/// One log line (and for the breaker, one count) per transition, by the instance that made it.
pub fn note(route: &str, t: &Transition) {
    match t {
        Transition::Paused(p) => tracing::warn!(route, by = %p.by, reason = %p.reason, "route paused"),
        Transition::Resumed => tracing::info!(route, "route resumed"),
        Transition::Stopped(s) => {
            tracing::warn!(route, status = s.status, "the peer answered {}; route stopped until resumed", s.status)
        }
        Transition::Circuit { from, to, failures, .. } => {
            tracing::warn!(route, from, to, failures, "circuit breaker changed");
            metrics::counter!(CIRCUIT_TRANSITIONS, "route" => route.to_string(), "to" => *to).increment(1);
        }
    }
}

/// Read the shared state every [`REFRESH`] until `shutdown`; wake the worker when it changed (a route resumed
/// on another instance has jobs waiting). A store that does not answer keeps the last state seen.
pub async fn refresh(
    store: &DynStore,
    shared: &SharedState,
    routes: impl Fn() -> Vec<String>,
    wake: &crate::worker::wake::Wake,
    shutdown: &CancellationToken,
) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let changes = shared.local_changes();
        match tokio::time::timeout(Duration::from_secs(5), store.control_state()).await {
            // Read before a change this instance made: older than what it already holds.
            Ok(Ok(_)) if shared.local_changes() != changes => {}
            Ok(Ok(state)) => {
                failures = 0;
                if shared.replace(state) {
                    wake.notify_one();
                }
                shared.publish_gauges(routes().iter().map(String::as_str));
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures == 1 || failures % 120 == 0 {
                    tracing::warn!(error = %e, "cannot read the shared route state; keeping the last one seen");
                }
            }
            Err(_) => failures += 1,
        }
    }
}
