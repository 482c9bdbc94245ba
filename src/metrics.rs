//! metrics: the Prometheus recorder and the metric names of the SPEC, in one place.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const REQUESTS_TOTAL: &str = "hookgate_requests_total";
pub const REQUEST_DURATION: &str = "hookgate_request_duration_seconds";
pub const JOBS_TOTAL: &str = "hookgate_jobs_total";
pub const JOB_DURATION: &str = "hookgate_job_duration_seconds";
pub const QUEUE_DEPTH: &str = "hookgate_queue_depth";
pub const DELIVERY_LATENCY: &str = "hookgate_delivery_latency_seconds";
pub const CIRCUIT_STATE: &str = "hookgate_circuit_state";
/// Circuit breaker state changes, by route and the state entered (`to`).
pub const CIRCUIT_TRANSITIONS: &str = "hookgate_circuit_transitions_total";
/// Jobs that ended `dead` (attempts used up, a failure that retrying cannot fix, or 410 Gone), by route.
pub const JOBS_DEAD: &str = "hookgate_jobs_dead_total";
/// How long the longest-waiting due job of a route has been due (queued, `run_at` passed), in seconds.
pub const QUEUE_OLDEST: &str = "hookgate_queue_oldest_seconds";
pub const STORE_READY: &str = "hookgate_store_ready";
/// Operational events of the `hookgate` source, by event and outcome (stored, failed, suppressed).
pub const EVENTS_TOTAL: &str = "hookgate_events_total";
/// Writes committed together by one store transaction (group commit).
pub const STORE_BATCH_SIZE: &str = "hookgate_store_batch_size";
/// Time one store transaction took, from BEGIN to a durable COMMIT.
pub const STORE_COMMIT_DURATION: &str = "hookgate_store_commit_seconds";
/// Redeliveries of failed GitHub deliveries asked of GitHub's API, by source and outcome (requested, refused,
/// failed).
pub const GITHUB_REDELIVERIES: &str = "hookgate_github_redeliveries_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide recorder once (several apps in one test process share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("buckets are non-empty")
                .set_buckets_for_metric(
                    Matcher::Full(STORE_BATCH_SIZE.into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                )
                .expect("buckets are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding the app); keep ours rendering anyway.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "Webhook requests by source and outcome");
    metrics::describe_histogram!(REQUEST_DURATION, metrics::Unit::Seconds, "Time to answer a webhook request");
    metrics::describe_counter!(JOBS_TOTAL, "Job attempts by route and outcome");
    metrics::describe_histogram!(JOB_DURATION, metrics::Unit::Seconds, "Time one action attempt took");
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs in each status");
    metrics::describe_gauge!(STORE_READY, "1 while a delivery can be committed now (what /readyz answers), else 0");
    metrics::describe_histogram!(
        DELIVERY_LATENCY,
        metrics::Unit::Seconds,
        "Time from receiving a webhook to its action succeeding"
    );
    metrics::describe_gauge!(CIRCUIT_STATE, "Circuit breaker state: 0 closed, 1 half-open, 2 open");
    metrics::describe_counter!(CIRCUIT_TRANSITIONS, "Circuit breaker state changes by route and state entered");
    metrics::describe_counter!(JOBS_DEAD, "Jobs that ended dead, by route");
    metrics::describe_gauge!(
        QUEUE_OLDEST,
        metrics::Unit::Seconds,
        "How long the oldest due queued job of each route has been waiting to run (0 when none is due)"
    );
    metrics::describe_counter!(
        EVENTS_TOTAL,
        "Operational events (source hookgate) by event and outcome: stored, failed (store error), suppressed (about an events route)"
    );
    metrics::describe_counter!(
        GITHUB_REDELIVERIES,
        "Redeliveries asked of GitHub for failed deliveries hookgate never stored, by source and outcome: requested (202), refused (422), failed (another error)"
    );
    metrics::describe_histogram!(STORE_BATCH_SIZE, "Writes committed together by one store transaction");
    metrics::describe_histogram!(
        STORE_COMMIT_DURATION,
        metrics::Unit::Seconds,
        "Time one store transaction took, from BEGIN to a durable COMMIT"
    );
}
