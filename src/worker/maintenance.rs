//! Periodic work: route schedules (`schedule = "5m"`) and the retention purge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::live::LiveHandle;
use crate::route::EventContext;
use crate::store::{new_id, now_ms, DynStore, Insert, NewDelivery};

const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Fire due schedules once a second and purge old deliveries hourly, until `shutdown`.
pub async fn run(store: DynStore, live: LiveHandle, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut last_slot: HashMap<String, i64> = HashMap::new();
    let mut next_purge = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if fire_schedules(&store, &live, &mut last_slot).await > 0 {
            wake.notify_one();
        }
        if tokio::time::Instant::now() >= next_purge {
            next_purge += PURGE_EVERY;
            let retention = live.current().config.store.retention;
            match store.purge(now_ms() - retention.as_millis() as i64).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deliveries = n, "purged deliveries past retention"),
                Err(e) => tracing::warn!(error = %e, "retention purge failed"),
            }
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
                NewDelivery {
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
