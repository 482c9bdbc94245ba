//! Periodic work: route schedules (`schedule = "5m"`), the retention purge, reading the shared route and
//! source state (see [`crate::live::shared`]), and flushing the dashboard's statistics with queue samples.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::live::LiveHandle;
use crate::store::stats::Recorder;
use crate::store::{new_id, now_ms, Delivery, DynStore, Insert};
use crate::template::EventContext;
use crate::worker::wake::Wake;

/// How often the dashboard's counts reach the store (and the queues are sampled).
pub const STATS_FLUSH: Duration = Duration::from_secs(2);

/// Fire due schedules once a second, purge old deliveries every `store.purge_interval`, read the shared
/// state every [`crate::live::shared::REFRESH`] and flush statistics every [`STATS_FLUSH`], until `shutdown`.
pub async fn run(
    store: DynStore,
    live: LiveHandle,
    wake: Arc<Wake>,
    stats: Arc<Recorder>,
    shutdown: CancellationToken,
) {
    let routes = || live.current().routes.routes().map(|r| r.name().to_string()).collect();
    tokio::join!(
        schedules(&store, &live, &wake, &shutdown),
        purges(&store, &live, &shutdown),
        crate::live::shared::refresh(&store, &live.shared, routes, &wake, &shutdown),
        stats_flushes(&store, &live, &stats, &shutdown),
    );
}

async fn schedules(store: &DynStore, live: &LiveHandle, wake: &Wake, shutdown: &CancellationToken) {
    let mut last_slot: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if fire_schedules(store, live, &mut last_slot).await > 0 {
            wake.notify_one();
        }
    }
}

/// The retention purge, on its own task: a large one takes a while (it pauses between batches so writes get
/// through), and schedules must not wait for it. The first runs at start.
async fn purges(store: &DynStore, live: &LiveHandle, shutdown: &CancellationToken) {
    loop {
        let config = live.current().config.store.clone();
        let started = tokio::time::Instant::now();
        let before = now_ms() - config.retention.as_millis() as i64;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = store.purge(before) => match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(deliveries = n, took = ?started.elapsed(), "purged deliveries past retention"),
                Err(e) => tracing::warn!(error = %e, "retention purge failed; the next one tries again"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(started + config.purge_interval) => {}
        }
    }
}

/// Insert one `schedule` delivery per route whose interval slot changed since the last look.
/// The delivery id names the slot, so several instances sharing a store run each slot once.
pub async fn fire_schedules(store: &DynStore, live: &LiveHandle, last_slot: &mut HashMap<String, i64>) -> usize {
    let live = live.current();
    let now = now_ms();
    let mut fired = 0;
    for route in live.routes.routes().filter(|r| r.config.enabled) {
        let Some(every) = route.config.schedule else { continue };
        let slot = now / (every.as_millis() as i64).max(1);
        let previous = last_slot.insert(route.name().to_string(), slot);
        // The first look only starts the clock: a restart must not fire every schedule at once.
        if previous.is_none_or(|p| p == slot) {
            continue;
        }
        let id = new_id();
        let delivery = format!("schedule:{}:{slot}", route.name());
        let ctx = EventContext::new(&route.config.source, "schedule", &delivery, &id, serde_json::Value::Null, vec![]);
        let Some(job) = live.routes.scheduled_job(route.name(), &ctx, now) else { continue };
        let result = store
            .insert_delivery(
                Delivery {
                    id,
                    source: route.config.source.clone(),
                    event: "schedule".into(),
                    delivery,
                    received_at: now,
                    headers: Vec::new(),
                    body: Bytes::new(),
                    replay_key: None,
                },
                vec![job],
            )
            .await;
        match result {
            Ok(Insert::Stored { .. }) => fired += 1,
            Ok(Insert::Duplicate { .. }) => {}
            Err(e) => tracing::warn!(route = %route.name(), error = %e, "could not queue scheduled run"),
        }
    }
    fired
}

/// Sample every configured route's queue, then write what was counted. The last flush, after the worker has
/// drained, is [`crate::startup::Application::run_until_stopped`]'s.
async fn stats_flushes(store: &DynStore, live: &LiveHandle, stats: &Recorder, shutdown: &CancellationToken) {
    let mut tick = tokio::time::interval(STATS_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sample_queues(store, live, stats).await {
            tracing::debug!(error = %e, "could not sample the queues for the dashboard");
        }
        match flush_stats(store, stats).await {
            Ok(()) if failing => {
                tracing::info!("dashboard statistics are written again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "could not write dashboard statistics; they are kept for the next flush");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Each configured route's queued jobs and the age of its oldest due one (0 with none due).
async fn sample_queues(store: &DynStore, live: &LiveHandle, stats: &Recorder) -> Result<(), crate::store::StoreError> {
    let routes: Vec<String> = live.current().routes.routes().map(|r| r.name().to_string()).collect();
    if routes.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let queued: HashMap<String, i64> = store.queued_by_route().await?.into_iter().collect();
    let oldest: HashMap<String, i64> = store.oldest_due(&routes, now).await?.into_iter().collect();
    for route in &routes {
        let depth = queued.get(route).copied().unwrap_or(0);
        let age = oldest.get(route).map_or(0, |run_at| (now - run_at).max(0));
        stats.queue(route, depth, age);
    }
    Ok(())
}

/// Write what `stats` counted since the last flush. A failed write gives the rows back to the recorder (merged
/// with what arrives meanwhile), so the next flush carries them.
pub async fn flush_stats(store: &DynStore, stats: &Recorder) -> Result<(), crate::store::StoreError> {
    let rows = stats.take();
    if rows.is_empty() {
        return Ok(());
    }
    store.record_stats(rows.clone()).await.inspect_err(|_| stats.restore(rows))
}
