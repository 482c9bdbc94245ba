//! The contract of the dashboard's search: deliveries found by provider delivery id, hookgate id, time range and
//! job status (alone, together, and page after page), the same candidates with their bodies for a body filter,
//! and jobs by time with the source and event of their delivery.

use super::*;

/// Ten deliveries, oldest first, one second apart from `base`: sources alternate github/gitlab, deliveries
/// 0-4 are `push` and 5-9 `ping`, each has a job of route `r`, and the jobs of deliveries 2, 5 and 8 end
/// `dead`. Returns their ids, oldest first.
async fn ten(store: &dyn Store, base: Millis) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..10i64 {
        let mut d = delivery(if i % 2 == 0 { "github" } else { "gitlab" }, &format!("guid-{i}"));
        d.event = if i < 5 { "push".into() } else { "ping".into() };
        d.received_at = base + i * 1_000;
        d.id = id_at(d.received_at);
        d.body = Bytes::from(format!(r#"{{"n":{i}}}"#));
        ids.push(d.id.clone());
        store.insert_delivery(d, vec![job("r", None)]).await.unwrap();
    }
    let mut claimed = store.claim_jobs(claim("w", &["r"], 10)).await.unwrap();
    assert_eq!(claimed.len(), 10);
    claimed.sort_by(|a, b| a.delivery.id.cmp(&b.delivery.id));
    for (i, job) in claimed.iter().enumerate() {
        let next = if [2, 5, 8].contains(&i) { NextState::Dead } else { NextState::Succeeded };
        assert!(store.finish_job(&job.id, "w", record(1, next == NextState::Succeeded), next).await.unwrap());
    }
    ids
}

/// The provider delivery ids a query lists, and those its scan reads (which must be the same, in order).
async fn found(store: &dyn Store, q: DeliveryQuery) -> Vec<String> {
    let listed: Vec<String> =
        store.list_deliveries(q.clone()).await.unwrap().items.into_iter().map(|d| d.delivery).collect();
    let scanned = store.scan_deliveries(q).await.unwrap().items;
    let names: Vec<String> = scanned.iter().map(|s| s.delivery.delivery.clone()).collect();
    assert_eq!(names, listed, "the scan reads what the list shows");
    listed
}

fn q() -> DeliveryQuery {
    DeliveryQuery { limit: 1000, ..Default::default() }
}

pub async fn deliveries_are_searched_by_delivery_id_time_and_job_status_alone_and_together(f: &dyn Fixture) {
    let store = f.store();
    let base = now_ms() - HOUR;
    let ids = ten(store, base).await;

    assert_eq!(found(store, DeliveryQuery { delivery: Some("guid-3".into()), ..q() }).await, ["guid-3"]);
    assert!(found(store, DeliveryQuery { delivery: Some("guid-".into()), ..q() }).await.is_empty(), "exact");
    assert_eq!(found(store, DeliveryQuery { id: Some(ids[4].clone()), ..q() }).await, ["guid-4"]);
    assert!(found(store, DeliveryQuery { id: Some("nope".into()), ..q() }).await.is_empty());

    // `since` is inclusive, `until` exclusive.
    let window = DeliveryQuery { since: Some(base + 3_000), until: Some(base + 6_000), ..q() };
    assert_eq!(found(store, window.clone()).await, ["guid-5", "guid-4", "guid-3"]);
    assert_eq!(found(store, DeliveryQuery { since: Some(base + 8_000), ..q() }).await, ["guid-9", "guid-8"]);
    assert_eq!(found(store, DeliveryQuery { until: Some(base + 1_000), ..q() }).await, ["guid-0"]);

    let dead = DeliveryQuery { status: Some(JobStatus::Dead), ..q() };
    assert_eq!(found(store, dead.clone()).await, ["guid-8", "guid-5", "guid-2"]);
    assert!(found(store, DeliveryQuery { status: Some(JobStatus::Queued), ..q() }).await.is_empty());
    assert_eq!(found(store, DeliveryQuery { status: Some(JobStatus::Succeeded), ..q() }).await.len(), 7);

    // Together: every condition holds.
    let github_dead = DeliveryQuery { source: Some("github".into()), ..dead.clone() };
    assert_eq!(found(store, github_dead).await, ["guid-8", "guid-2"]);
    let ping_dead_window =
        DeliveryQuery { event: Some("ping".into()), ..DeliveryQuery { status: dead.status, ..window } };
    assert_eq!(found(store, ping_dead_window).await, ["guid-5"]);
    let nothing = DeliveryQuery { delivery: Some("guid-3".into()), status: Some(JobStatus::Dead), ..q() };
    assert!(found(store, nothing).await.is_empty());

    // A delivery with a dead job and a succeeded one is found by either status, once, with both counted.
    store.insert_jobs(&ids[2], vec![job("s", None)]).await.unwrap();
    let extra = store.claim_jobs(claim("w", &["s"], 1)).await.unwrap();
    store.finish_job(&extra[0].id, "w", record(1, true), NextState::Succeeded).await.unwrap();
    let both = store.list_deliveries(DeliveryQuery { id: Some(ids[2].clone()), ..q() }).await.unwrap().items;
    assert_eq!((both[0].jobs.dead, both[0].jobs.succeeded), (1, 1));
    assert_eq!(found(store, DeliveryQuery { status: Some(JobStatus::Succeeded), ..q() }).await.len(), 8);
}

pub async fn the_scan_reads_headers_bodies_and_job_counts_and_pages_with_filters(f: &dyn Fixture) {
    let store = f.store();
    let base = now_ms() - HOUR;
    ten(store, base).await;

    let scanned = store.scan_deliveries(DeliveryQuery { delivery: Some("guid-5".into()), ..q() }).await.unwrap();
    let one = &scanned.items[0];
    assert_eq!(one.delivery.body, Bytes::from_static(br#"{"n":5}"#));
    assert_eq!(one.delivery.headers, delivery("github", "x").headers);
    assert_eq!(one.delivery.received_at, base + 5_000);
    assert_eq!((one.jobs.dead, one.jobs.succeeded, one.jobs.queued), (1, 0, 0));
    assert_eq!(one.summary().delivery, "guid-5");
    assert!(scanned.next.is_none());

    // Page one at a time through github's deliveries since the third second whose job did not fail: 6, 4
    // (8 is dead): the cursor keeps every filter.
    let filtered = DeliveryQuery {
        source: Some("github".into()),
        status: Some(JobStatus::Succeeded),
        since: Some(base + 3_000),
        limit: 1,
        ..Default::default()
    };
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_deliveries(DeliveryQuery { before: cursor, ..filtered.clone() }).await.unwrap();
        pages.push(page.items.iter().map(|d| d.delivery.clone()).collect::<Vec<_>>());
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, [vec!["guid-6"], vec!["guid-4"], vec![]]);

    let mut seen = Vec::new();
    let mut cursor = None;
    let all_github = DeliveryQuery { source: Some("github".into()), limit: 2, ..Default::default() };
    loop {
        let page = store.scan_deliveries(DeliveryQuery { before: cursor, ..all_github.clone() }).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|s| s.delivery.delivery.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["guid-8", "guid-6", "guid-4", "guid-2", "guid-0"]);
}

pub async fn jobs_list_by_time_with_the_source_and_event_of_their_delivery(f: &dyn Fixture) {
    let store = f.store();
    let before = now_ms();
    let mut d = delivery("gitlab", "g1");
    d.event = "merge_request".into();
    let j = job("r", None);
    store.insert_delivery(d, vec![j.clone()]).await.unwrap();
    store_one(store, "h1", vec![job("r", None)]).await;

    let listed = store.list_jobs(JobQuery { limit: 10, ..Default::default() }).await.unwrap().items;
    let mine = listed.iter().find(|x| x.id == j.id).unwrap();
    assert_eq!((mine.source.as_str(), mine.event.as_str()), ("gitlab", "merge_request"));
    let detail = store.get_delivery(&mine.delivery_id).await.unwrap().unwrap();
    assert_eq!(detail.jobs[0].job.source, "gitlab");

    // `updated_at` moves when the job ends: it falls in a window from before the end, not in one before it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ended = now_ms();
    let claimed = store.claim_jobs(claim("w", &["r"], 10)).await.unwrap();
    let mine = claimed.iter().find(|c| c.id == j.id).unwrap();
    store.finish_job(&mine.id, "w", record(1, false), NextState::Dead).await.unwrap();

    let since = store.list_jobs(JobQuery { since: Some(ended), limit: 10, ..Default::default() }).await.unwrap();
    assert!(since.items.iter().any(|x| x.id == j.id && x.status == JobStatus::Dead));
    let until = store.list_jobs(JobQuery { until: Some(ended), limit: 10, ..Default::default() }).await.unwrap();
    assert!(until.items.iter().all(|x| x.id != j.id), "the dead job changed after `until`");
    let window = JobQuery {
        status: Some(JobStatus::Dead),
        since: Some(before),
        until: Some(now_ms() + 1),
        limit: 10,
        ..Default::default()
    };
    let dead = store.list_jobs(window.clone()).await.unwrap().items;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].source.as_str()), (j.id.as_str(), "gitlab"));
    let later = JobQuery { since: Some(now_ms() + HOUR), ..window };
    assert!(store.list_jobs(later).await.unwrap().items.is_empty());
}
