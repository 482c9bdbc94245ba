//! events: the built-in `hookgate` source — operational events (a job died, a route stopped, paused or resumed,
//! a circuit opened or closed) stored as JSON deliveries that routes act on like any webhook.
//!
//! Nobody outside can send to this source (`POST /hooks/hookgate` is 404): only [`Events::emit`] writes to it.
//! An event about a route that itself takes `hookgate` events is never emitted, so an events route whose peer
//! is down cannot feed on its own failures.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::admin::timestamp;
use crate::live::LiveHandle;
use crate::metrics::EVENTS_TOTAL;
use crate::store::control::Transition;
use crate::store::{new_id, now_ms, Delivery, DynStore, Insert, Millis};
use crate::template::EventContext;

/// The source name of operational events, reserved: a `[[sources]]` entry may not take it.
pub const SOURCE: &str = "hookgate";

/// One operational event. Each names the route it is about; none carries a secret, a header or a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpsEvent {
    /// A job ended `dead`: its attempts are used up, its failure cannot be fixed by retrying, or the peer
    /// answered 410 Gone. `delivery` is the stored delivery's id (`GET /api/v1/deliveries/{id}`); `source`
    /// and `event` are that delivery's.
    JobDead {
        route: String,
        job: String,
        delivery: String,
        source: String,
        event: String,
        attempts: u32,
        /// The last attempt's error text, which never holds a secret.
        error: Option<String>,
    },
    /// The peer answered `status` (410 Gone): the route runs nothing until it is resumed.
    RouteStopped { route: String, status: u16, reason: String },
    /// An operator paused the route.
    RoutePaused { route: String, by: String, reason: Option<String> },
    /// An operator resumed the route.
    RouteResumed { route: String, by: String },
    /// The route's circuit breaker opened after `failures` failures in its window; no job runs before
    /// `open_until`, then one probe.
    CircuitOpened { route: String, failures: u32, open_until: Millis },
    /// The route's circuit breaker closed: its peer answers again.
    CircuitClosed { route: String },
}

impl OpsEvent {
    /// The event name routes filter on (`event == "job.dead"`).
    pub fn name(&self) -> &'static str {
        match self {
            OpsEvent::JobDead { .. } => "job.dead",
            OpsEvent::RouteStopped { .. } => "route.stopped",
            OpsEvent::RoutePaused { .. } => "route.paused",
            OpsEvent::RouteResumed { .. } => "route.resumed",
            OpsEvent::CircuitOpened { .. } => "circuit.opened",
            OpsEvent::CircuitClosed { .. } => "circuit.closed",
        }
    }

    /// The event a change of a route's shared state is, if any: a pause, a resume, a 410 stop, the circuit
    /// opening or closing (half-open is not one: the probe's outcome is). `by` names who resumed it.
    pub fn from_transition(route: &str, transition: &Transition, by: &str) -> Option<OpsEvent> {
        let route = route.to_string();
        Some(match transition {
            Transition::Paused(p) => OpsEvent::RoutePaused {
                route,
                by: p.by.clone(),
                reason: Some(p.reason.clone()).filter(|r| !r.is_empty()),
            },
            Transition::Resumed => OpsEvent::RouteResumed { route, by: by.to_string() },
            Transition::Stopped(s) => OpsEvent::RouteStopped { route, status: s.status, reason: s.reason.clone() },
            Transition::Circuit { to: "open", failures, open_until, .. } => OpsEvent::CircuitOpened {
                route,
                failures: *failures as u32,
                open_until: open_until.unwrap_or_default(),
            },
            Transition::Circuit { to: "closed", .. } => OpsEvent::CircuitClosed { route },
            Transition::Circuit { .. } => return None,
        })
    }

    /// The route the event is about.
    pub fn route(&self) -> &str {
        match self {
            OpsEvent::JobDead { route, .. }
            | OpsEvent::RouteStopped { route, .. }
            | OpsEvent::RoutePaused { route, .. }
            | OpsEvent::RouteResumed { route, .. }
            | OpsEvent::CircuitOpened { route, .. }
            | OpsEvent::CircuitClosed { route } => route,
        }
    }

    /// The JSON body: `event`, `at` (RFC 3339), `instance` (the host name, when known), `route`, and the
    /// event's own fields.
    pub fn body(&self, at: Millis, instance: Option<&str>) -> Value {
        let mut body = Map::new();
        body.insert("event".into(), json!(self.name()));
        body.insert("at".into(), json!(timestamp(at)));
        if let Some(instance) = instance {
            body.insert("instance".into(), json!(instance));
        }
        body.insert("route".into(), json!(self.route()));
        let fields = match self {
            OpsEvent::JobDead { job, delivery, source, event, attempts, error, .. } => json!({
                "job": job, "delivery": delivery, "source": source, "delivery_event": event,
                "attempts": attempts, "error": error,
            }),
            OpsEvent::RouteStopped { status, reason, .. } => json!({ "status": status, "reason": reason }),
            OpsEvent::RoutePaused { by, reason, .. } => json!({ "by": by, "reason": reason }),
            OpsEvent::RouteResumed { by, .. } => json!({ "by": by }),
            OpsEvent::CircuitOpened { failures, open_until, .. } => {
                json!({ "failures": failures, "open_until": timestamp(*open_until) })
            }
            OpsEvent::CircuitClosed { .. } => json!({}),
        };
        if let Value::Object(fields) = fields {
            body.extend(fields);
        }
        Value::Object(body)
    }
}

/// Emits operational events: cheap to clone, shared by the worker and the HTTP handlers.
#[derive(Clone)]
pub struct Events {
    store: DynStore,
    live: LiveHandle,
    /// Wakes the worker when an event created jobs.
    wake: Arc<crate::worker::wake::Wake>,
    /// This machine's host name, read once.
    instance: Option<Arc<str>>,
}

impl Events {
    pub fn new(store: DynStore, live: LiveHandle, wake: Arc<crate::worker::wake::Wake>) -> Self {
        Events { store, live, wake, instance: host_name().map(Arc::from) }
    }

    /// Store the event as a delivery of the `hookgate` source with a job for every route it matches (none is
    /// fine: it is still listed by `GET /api/v1/deliveries?source=hookgate`), then wake the worker. Never
    /// fails its caller: a store error is logged and counted. An event about a route that takes `hookgate`
    /// events itself is dropped (no loops).
    pub async fn emit(&self, event: OpsEvent) {
        let name = event.name();
        let live = self.live.current();
        if live.config.route(event.route()).is_some_and(|r| r.source == SOURCE) {
            tracing::debug!(event = name, route = event.route(), "no event about an events route's own jobs");
            metrics::counter!(EVENTS_TOTAL, "event" => name, "outcome" => "suppressed").increment(1);
            return;
        }
        let now = now_ms();
        let id = new_id();
        let delivery = Delivery {
            id: id.clone(),
            source: SOURCE.to_string(),
            event: name.to_string(),
            delivery: id.clone(),
            received_at: now,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: Bytes::from(event.body(now, self.instance.as_deref()).to_string()),
            replay_key: None,
        };
        let jobs = live.routes.jobs_for(&EventContext::from_stored(&delivery), now);
        let earliest = jobs.iter().map(|j| j.run_at).min().unwrap_or(now);
        match self.store.insert_delivery(delivery, jobs).await {
            Ok(Insert::Stored { jobs, .. }) => {
                metrics::counter!(EVENTS_TOTAL, "event" => name, "outcome" => "stored").increment(1);
                tracing::debug!(event = name, route = event.route(), delivery = %id, jobs, "operational event stored");
                if jobs > 0 {
                    self.wake.jobs_due_at(earliest, now);
                }
            }
            // Not reachable with a fresh id; nothing was written.
            Ok(Insert::Duplicate { .. }) => {}
            Err(e) => {
                metrics::counter!(EVENTS_TOTAL, "event" => name, "outcome" => "failed").increment(1);
                tracing::warn!(event = name, route = event.route(), error = %e, "could not store an operational event");
            }
        }
    }
}

impl Events {
    /// Emit the events of what this instance changed on a route (see [`OpsEvent::from_transition`]).
    pub async fn route_changed(&self, route: &str, transitions: &[Transition], by: &str) {
        for event in transitions.iter().filter_map(|t| OpsEvent::from_transition(route, t, by)) {
            self.emit(event).await;
        }
    }
}

/// The kernel's host name (Linux); None elsewhere or when unreadable.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Millis = 1_764_590_400_000; // 2025-12-01T12:00:00Z

    fn all() -> Vec<OpsEvent> {
        vec![
            OpsEvent::JobDead {
                route: "deploy".into(),
                job: "j1".into(),
                delivery: "d1".into(),
                source: "github".into(),
                event: "push".into(),
                attempts: 5,
                error: Some("peer answered 500".into()),
            },
            OpsEvent::RouteStopped { route: "deploy".into(), status: 410, reason: "the peer answered 410 Gone".into() },
            OpsEvent::RoutePaused { route: "deploy".into(), by: "admin".into(), reason: Some("maintenance".into()) },
            OpsEvent::RouteResumed { route: "deploy".into(), by: "admin".into() },
            OpsEvent::CircuitOpened { route: "deploy".into(), failures: 5, open_until: AT + 60_000 },
            OpsEvent::CircuitClosed { route: "deploy".into() },
        ]
    }

    #[test]
    fn every_event_has_its_name_and_the_common_fields() {
        let names: Vec<_> = all().iter().map(OpsEvent::name).collect();
        assert_eq!(
            names,
            ["job.dead", "route.stopped", "route.paused", "route.resumed", "circuit.opened", "circuit.closed"]
        );
        for event in all() {
            let body = event.body(AT, Some("host-1"));
            assert_eq!(body["event"], event.name());
            assert_eq!(body["at"], "2025-12-01T12:00:00.000Z");
            assert_eq!(body["instance"], "host-1");
            assert_eq!(body["route"], "deploy");
        }
        assert!(all()[0].body(AT, None).get("instance").is_none());
    }

    #[test]
    fn a_job_dead_event_names_the_job_its_delivery_attempts_and_error_and_nothing_else() {
        let body = all()[0].body(AT, None);
        assert_eq!(
            body,
            json!({
                "event": "job.dead", "at": "2025-12-01T12:00:00.000Z", "route": "deploy", "job": "j1",
                "delivery": "d1", "source": "github", "delivery_event": "push", "attempts": 5,
                "error": "peer answered 500",
            })
        );
    }

    #[test]
    fn each_event_carries_its_own_fields() {
        let bodies: Vec<Value> = all().iter().map(|e| e.body(AT, None)).collect();
        assert_eq!((&bodies[1]["status"], &bodies[1]["reason"]), (&json!(410), &json!("the peer answered 410 Gone")));
        assert_eq!((&bodies[2]["by"], &bodies[2]["reason"]), (&json!("admin"), &json!("maintenance")));
        assert_eq!(bodies[3]["by"], "admin");
        assert_eq!((&bodies[4]["failures"], &bodies[4]["open_until"]), (&json!(5), &json!("2025-12-01T12:01:00.000Z")));
        assert_eq!(bodies[5].as_object().unwrap().len(), 3, "{}", bodies[5]);
    }

    #[test]
    fn no_event_body_has_a_field_that_could_hold_a_secret_a_header_or_a_payload() {
        let allowed = [
            "event",
            "at",
            "instance",
            "route",
            "job",
            "delivery",
            "source",
            "delivery_event",
            "attempts",
            "error",
            "status",
            "reason",
            "by",
            "failures",
            "open_until",
        ];
        for event in all() {
            for key in event.body(AT, Some("h")).as_object().unwrap().keys() {
                assert!(allowed.contains(&key.as_str()), "{} has an unexpected field `{key}`", event.name());
            }
        }
    }
}
