//! state: what every HTTP handler shares — the webhook edge, the admin API and the dashboard alike.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::events::Events;
use crate::guard::EdgeGuards;
use crate::live::LiveHandle;
use crate::store::stats::Recorder;
use crate::store::DynStore;

/// The application state handed to every router.
#[derive(Clone)]
pub struct AppState {
    pub live: LiveHandle,
    pub store: DynStore,
    /// Wakes the worker when new jobs were committed (at once, or when they come due).
    pub wake: Arc<crate::worker::wake::Wake>,
    pub metrics: PrometheusHandle,
    /// Limits on what clients hold before they verify (memory, failed verifications per address).
    pub guards: Arc<EdgeGuards>,
    /// Operational events (the `hookgate` source).
    pub events: Events,
    /// Per-minute counts for the dashboard, flushed to the store by the maintenance loop.
    pub stats: Arc<Recorder>,
    /// Recovery of failed GitHub deliveries: what this instance asked for, shared by its loop and the admin API.
    pub github: Arc<crate::github::Recoverer>,
}
