//! startup: build the application (store, listener, worker) and run it until a shutdown signal.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::actions::Runner;
use crate::config::Config;
use crate::edge::{connection_cap, serve, ServeLimits};
use crate::error::ApiError;
use crate::events::Events;
use crate::guard::EdgeGuards;
use crate::live::{Live, LiveHandle};
use crate::state::AppState;
use crate::store::stats::Recorder;
use crate::worker::Worker;

/// The whole HTTP application: the webhook edge, the admin API and the dashboard, with the headers every
/// answer carries.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(crate::edge::router())
        .merge(crate::admin::router())
        .merge(crate::ui::router())
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::error::log_server_errors))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Arc<Worker>,
    limits: ServeLimits,
}

impl Application {
    /// Compile the configuration, open the store (running migrations) and bind the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_live(Live::build(config)?).await
    }

    /// Open the store (running migrations) and bind the listener for an already compiled configuration.
    pub async fn build_live(live: Live) -> anyhow::Result<Self> {
        for warning in &live.config.warnings {
            tracing::warn!("{warning}");
        }
        for source in live.config.sources.iter().filter(|s| !s.enabled) {
            let reason = source.disabled_reason.as_deref().unwrap_or("disabled");
            tracing::warn!(source = %source.name, reason, "source is off");
        }
        let server = &live.config.server;
        let limits = ServeLimits {
            max_connections: connection_cap(server.max_connections),
            max_connections_per_ip: server.max_connections_per_ip,
            header_timeout: server.read_timeout,
        };
        let store = crate::store::open(&live.config.store.url).await?;
        let listener = TcpListener::bind(live.config.server.listen).await?;
        let live = LiveHandle::new(live);
        let wake = Arc::new(crate::worker::wake::Wake::new());
        let events = Events::new(store.clone(), live.clone(), wake.clone());
        let stats = Arc::new(Recorder::new());
        let worker = Arc::new(Worker::new(
            store.clone(),
            live.clone(),
            wake.clone(),
            Runner::new().with_action_nice(live.current().config.worker.action_nice),
            events.clone(),
            stats.clone(),
        ));
        let guards = Arc::new(EdgeGuards::new(&live.current().config.server));
        let github = Arc::new(crate::github::Recoverer::new());
        let state = AppState { live, store, wake, metrics: crate::metrics::install(), guards, events, stats, github };
        Ok(Application { listener, state, worker, limits })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn worker(&self) -> Arc<Worker> {
        self.worker.clone()
    }

    /// Serve HTTP and run the worker and maintenance until `shutdown` fires; then stop accepting,
    /// finish in-flight requests, and let the worker drain.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(addr = %addr, "listening");
        let worker = tokio::spawn(self.worker.clone().run(shutdown.clone()));
        let maintenance = tokio::spawn(crate::worker::maintenance::run(
            self.state.store.clone(),
            self.state.live.clone(),
            self.state.wake.clone(),
            self.state.stats.clone(),
            shutdown.clone(),
        ));
        let github = tokio::spawn(crate::github::run(
            self.state.github.clone(),
            self.state.store.clone(),
            self.state.live.clone(),
            shutdown.clone(),
        ));
        serve(self.listener, app(self.state.clone()), self.limits, shutdown.clone()).await;
        let _ = github.await;
        let _ = maintenance.await;
        let _ = worker.await;
        // What the last requests and jobs counted since the last flush.
        if let Err(e) = crate::worker::maintenance::flush_stats(&self.state.store, &self.state.stats).await {
            tracing::warn!(error = %e, "could not write the last dashboard statistics");
        }
        tracing::info!("stopped");
        Ok(())
    }
}
