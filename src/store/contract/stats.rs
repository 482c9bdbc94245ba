//! The contract of the dashboard statistics: deltas of several instances add up, gauges take the max, minutes
//! group into buckets, each route's newest error is found, and old rows go with the purge.

use super::*;
use crate::store::stats::{
    Counter, Scope, StatsBucket, StatsDelta, StatsQuery, DURATION_BUCKETS, FIRST_DURATION, STATS_RETENTION_MS,
};

const MINUTE: Millis = 60_000;

/// A minute well inside the retention, aligned on the hour so buckets of up to an hour start with it.
fn base() -> Millis {
    (now_ms() - 2 * HOUR).div_euclid(HOUR) * HOUR
}

fn delta(scope: Scope, name: &str, minute: Millis, counters: &[(Counter, i64)]) -> StatsDelta {
    let mut d = StatsDelta::new(scope, name, minute);
    for &(counter, n) in counters {
        d.counts[counter as usize] = n;
    }
    d
}

fn find<'a>(buckets: &'a [StatsBucket], scope: Scope, name: &str, bucket: Millis) -> &'a StatsBucket {
    buckets.iter().find(|b| b.scope == scope && b.name == name && b.bucket == bucket).expect("a bucket with rows")
}

pub async fn stats_of_two_instances_for_one_minute_add_up_and_gauges_take_the_max(f: &dyn Fixture) {
    let store = f.store();
    let minute = base();
    let mut first = delta(Scope::Source, "github", minute, &[(Counter::Accepted, 3), (Counter::Rejected401, 1)]);
    first.counts[FIRST_DURATION + 4] = 2;
    let mut route = delta(Scope::Route, "deploy", minute, &[(Counter::Succeeded, 2)]);
    route.queue_depth = Some(7);
    route.queue_oldest_ms = None;
    store.record_stats(vec![first, route]).await.unwrap();
    // A second instance's flush for the same rows.
    let second = delta(Scope::Source, "github", minute, &[(Counter::Accepted, 2), (Counter::Duplicate, 1)]);
    let mut route = delta(Scope::Route, "deploy", minute, &[(Counter::Failed, 1), (Counter::Dead, 1)]);
    route.queue_depth = Some(4);
    route.queue_oldest_ms = Some(1_500);
    store.record_stats(vec![second, route]).await.unwrap();
    store.record_stats(Vec::new()).await.unwrap();

    let series = store.stats(StatsQuery { since: minute, until: minute + MINUTE, bucket_ms: MINUTE }).await.unwrap();
    assert_eq!(series.buckets.len(), 2, "{series:?}");
    let source = find(&series.buckets, Scope::Source, "github", minute);
    assert_eq!(
        [Counter::Accepted, Counter::Duplicate, Counter::Rejected401, Counter::Rejected413].map(|c| source.count(c)),
        [5, 1, 1, 0]
    );
    assert_eq!(source.durations()[4], 2);
    assert_eq!(source.durations().len(), DURATION_BUCKETS);
    assert_eq!((source.queue_depth, source.queue_oldest_ms), (None, None), "no gauge sample: none");
    let route = find(&series.buckets, Scope::Route, "deploy", minute);
    assert_eq!([Counter::Succeeded, Counter::Failed, Counter::Dead].map(|c| route.count(c)), [2, 1, 1]);
    // The higher depth of the two, and the only age sampled.
    assert_eq!((route.queue_depth, route.queue_oldest_ms), (Some(7), Some(1_500)));
}

pub async fn stats_group_minutes_into_buckets_within_the_window(f: &dyn Fixture) {
    let store = f.store();
    let start = base();
    let rows: Vec<StatsDelta> = (0..10)
        .map(|i| {
            let mut d = delta(Scope::Route, "deploy", start + i * MINUTE, &[(Counter::Succeeded, i + 1)]);
            d.queue_depth = Some(10 - i);
            d
        })
        .collect();
    store.record_stats(rows).await.unwrap();
    store.record_stats(vec![delta(Scope::Route, "other", start + 9 * MINUTE, &[(Counter::Failed, 1)])]).await.unwrap();

    let q = StatsQuery { since: start, until: start + 10 * MINUTE, bucket_ms: 5 * MINUTE };
    let series = store.stats(q).await.unwrap();
    let deploy: Vec<(Millis, i64, Option<i64>)> = series
        .buckets
        .iter()
        .filter(|b| b.name == "deploy")
        .map(|b| (b.bucket - start, b.count(Counter::Succeeded), b.queue_depth))
        .collect();
    // Minutes 0..4 hold 1+2+3+4+5, minutes 5..9 hold 6+…+10; the depth is the bucket's highest sample.
    assert_eq!(deploy, vec![(0, 15, Some(10)), (5 * MINUTE, 40, Some(5))]);
    assert_eq!(find(&series.buckets, Scope::Route, "other", start + 5 * MINUTE).count(Counter::Failed), 1);

    // The window's ends: `since` is inclusive, `until` exclusive.
    let q = StatsQuery { since: start + 2 * MINUTE, until: start + 4 * MINUTE, bucket_ms: MINUTE };
    let minutes: Vec<Millis> = store.stats(q).await.unwrap().buckets.iter().map(|b| b.bucket - start).collect();
    assert_eq!(minutes, vec![2 * MINUTE, 3 * MINUTE]);
    let q = StatsQuery { since: start - HOUR, until: start, bucket_ms: MINUTE };
    assert!(store.stats(q).await.unwrap().buckets.is_empty());
}

pub async fn the_newest_error_of_each_route_is_its_last_error(f: &dyn Fixture) {
    let store = f.store();
    assert!(store.last_errors().await.unwrap().is_empty());
    let start = base();
    let error = |route: &str, minute: Millis, text: &str, at: Millis| StatsDelta {
        last_error: Some((text.to_string(), at)),
        ..StatsDelta::new(Scope::Route, route, minute)
    };
    store
        .record_stats(vec![
            error("deploy", start, "connection refused", start + 5),
            error("deploy", start + MINUTE, "exit status 1", start + MINUTE + 10),
            error("notify", start, "timed out", start + 30),
            delta(Scope::Route, "quiet", start, &[(Counter::Succeeded, 1)]),
        ])
        .await
        .unwrap();
    // Another instance's older error for the same minute does not replace the newer one; a newer one does.
    store.record_stats(vec![error("deploy", start + MINUTE, "stale", start + MINUTE + 1)]).await.unwrap();
    store.record_stats(vec![error("notify", start, "refused", start + 40)]).await.unwrap();
    let errors = store.last_errors().await.unwrap();
    assert_eq!(
        errors,
        vec![
            ("deploy".to_string(), "exit status 1".to_string(), start + MINUTE + 10),
            ("notify".to_string(), "refused".to_string(), start + 40),
        ]
    );
}

pub async fn purge_drops_stats_rows_past_their_retention(f: &dyn Fixture) {
    let store = f.store();
    let now = now_ms();
    let old = crate::store::stats::minute_of(now - STATS_RETENTION_MS - HOUR);
    let kept = crate::store::stats::minute_of(now - STATS_RETENTION_MS + HOUR);
    store
        .record_stats(vec![
            delta(Scope::Source, "github", old, &[(Counter::Accepted, 1)]),
            delta(Scope::Source, "github", kept, &[(Counter::Accepted, 2)]),
        ])
        .await
        .unwrap();
    let all = StatsQuery { since: old - HOUR, until: now, bucket_ms: MINUTE };
    assert_eq!(store.stats(all).await.unwrap().buckets.len(), 2);
    store.purge(now - HOUR).await.unwrap();
    let left: Vec<(Millis, i64)> =
        store.stats(all).await.unwrap().buckets.iter().map(|b| (b.bucket, b.count(Counter::Accepted))).collect();
    assert_eq!(left, vec![(kept, 2)]);
}

pub async fn queued_jobs_are_counted_per_route(f: &dyn Fixture) {
    let store = f.store();
    assert!(store.queued_by_route().await.unwrap().is_empty());
    store_one(store, "a", vec![job("deploy", None), job("deploy", None), job("notify", None)]).await;
    store_one(store, "b", vec![job("done", None)]).await;
    let finished = store.claim_jobs(claim("o", &["done"], 1)).await.unwrap();
    assert!(store.finish_job(&finished[0].id, "o", record(1, true), NextState::Succeeded).await.unwrap());
    let queued = store.queued_by_route().await.unwrap();
    assert_eq!(queued, vec![("deploy".to_string(), 2), ("notify".to_string(), 1)]);
}
