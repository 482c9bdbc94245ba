//! Dashboard statistics: what the edge and the worker count reaches `GET /api/v1/stats` within a flush, exactly,
//! and a route's last error shows in `GET /api/v1/routes`.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

fn config() -> String {
    ok_and_broken_routes("max_body = \"4KiB\"\n", r#"{ max_attempts = 2, initial = "50ms", max = "100ms" }"#)
}

/// The sum of a series of numbers.
fn sum(series: &Value) -> i64 {
    series.as_array().expect("a series").iter().map(|v| v.as_i64().expect("a count")).sum()
}

fn named<'a>(items: &'a Value, name: &str) -> &'a Value {
    items.as_array().unwrap().iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("{name} is listed"))
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app.client.get(format!("{}{path}", app.addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

store_test! {
    async fn webhooks_and_jobs_are_counted_per_minute_and_the_last_error_is_shown(backend) {
        let app = spawn_app(&backend, &config()).await;
        let main = push_body("refs/heads/main", "acme/fleet");
        assert_eq!(app.github("push", "m1", &main).await.status(), 202);
        assert_eq!(app.github("push", "m2", &main).await.status(), 202);
        assert_eq!(app.github("push", "m1", &main).await.status(), 200, "a duplicate");
        let broken: Value =
            app.github("push", "b1", &push_body("refs/heads/broken", "acme/fleet")).await.json().await.unwrap();
        let mut forged = github_headers("push", "f1", &main);
        forged.retain(|(name, _)| *name != "x-hub-signature-256");
        forged.push(("x-hub-signature-256", github_signature("not the secret", main.as_bytes())));
        assert_eq!(app.post_hook("github", &forged, &main).await.status(), 401);
        let large = "x".repeat(5 * 1024);
        assert_eq!(app.post_hook("github", &github_headers("push", "l1", &large), &large).await.status(), 413);
        // An unknown source is refused and counted nowhere.
        assert_eq!(app.post_hook("nobody", &[], "{}").await.status(), 404);
        let jobs = terminal_jobs(&app, broken["id"].as_str().unwrap()).await;
        assert_eq!(jobs[0]["status"], "dead");

        let stats = eventually(Duration::from_secs(20), "the counts to be flushed", || async {
            let stats = app.admin_get("/api/v1/stats?since=10m").await;
            let ok = named(&stats["routes"], "ok");
            let broken = named(&stats["routes"], "broken");
            let done = sum(&ok["succeeded"]) == 2 && sum(&broken["dead"]) == 1 && sum(&broken["failed"]) == 1;
            done.then_some(stats)
        })
        .await;
        assert_eq!(stats["bucket_seconds"], 60);
        let buckets = stats["buckets"].as_array().unwrap();
        assert!((10..=11).contains(&buckets.len()), "{}", buckets.len());
        assert_eq!(stats["since"], buckets[0]);
        assert_eq!(stats["sources"].as_array().unwrap().len(), 1, "only configured sources");
        let github = named(&stats["sources"], "github");
        assert_eq!(sum(&github["accepted"]), 3);
        assert_eq!(sum(&github["duplicate"]), 1);
        let rejected = &github["rejected"];
        assert_eq!(
            ["401", "413", "429", "400", "other"].map(|code| sum(&rejected[code])),
            [1, 1, 0, 0, 0]
        );
        assert_eq!(github["accepted"].as_array().unwrap().len(), buckets.len(), "aligned with the buckets");
        let ok = named(&stats["routes"], "ok");
        assert_eq!((ok["source"].as_str(), sum(&ok["failed"]), sum(&ok["dead"])), (Some("github"), 0, 0));
        for key in ["duration_p50_ms", "duration_p95_ms", "queue_depth", "queue_oldest_seconds"] {
            let series = ok[key].as_array().unwrap();
            assert_eq!(series.len(), buckets.len(), "{key}");
            assert!(series.iter().all(|v| v.is_null() || v.is_number()), "{key}: {series:?}");
            assert!(series.iter().any(Value::is_number), "{key} has a sample: {series:?}");
        }
        assert!(ok["duration_p95_ms"].as_array().unwrap().iter().filter_map(Value::as_f64).all(|ms| ms > 0.0));
        assert_eq!(
            stats["totals"],
            serde_json::json!({ "accepted": 3, "rejected": 2, "succeeded": 2, "failed": 1, "dead": 1 })
        );

        // The dead job's error is the broken route's last error.
        let routes = app.admin_get("/api/v1/routes").await;
        let error = &named(&routes["items"], "broken")["last_error"];
        assert_eq!(error["message"], jobs[0]["last_error"], "{error}");
        assert!(error["at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(named(&routes["items"], "ok")["last_error"], Value::Null);

        // Bounded and authenticated.
        for query in ["bucket=90s", "bucket=soon", "since=2d&bucket=1m", "since=yesterday", "since=1m&until=2m"] {
            let (status, answer) = get(&app, &format!("/api/v1/stats?{query}"), Some(ADMIN_TOKEN)).await;
            assert_eq!(status, 400, "{query}: {answer}");
            assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}: {answer}");
        }
        let (status, _) = get(&app, "/api/v1/stats", None).await;
        assert_eq!(status, 401);
        let (status, day) = get(&app, "/api/v1/stats?since=1d", Some(ADMIN_TOKEN)).await;
        assert_eq!((status, day["bucket_seconds"].as_i64()), (200, Some(24 * 60)));
        assert_eq!(sum(&named(&day["sources"], "github")["accepted"]), 3);
    }
}

store_test! {
    async fn what_was_counted_before_a_graceful_stop_is_written(backend) {
        let app = spawn_app(&backend, &config()).await;
        assert_eq!(app.github("push", "m1", &push_body("refs/heads/main", "acme/fleet")).await.status(), 202);
        let store = app.store.clone();
        // Stopped at once: the periodic flush may not have run yet; the last one at shutdown has.
        app.stop().await;
        let now = hookgate::store::now_ms();
        let query = hookgate::store::stats::StatsQuery { since: now - 600_000, until: now + 60_000, bucket_ms: 60_000 };
        let series = store.stats(query).await.unwrap();
        let accepted: i64 =
            series.buckets.iter().map(|b| b.count(hookgate::store::stats::Counter::Accepted)).sum();
        assert_eq!(accepted, 1);
    }
}
