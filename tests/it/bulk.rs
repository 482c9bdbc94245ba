//! Bulk operator actions: retry and cancel jobs and replay deliveries by filter, once per Idempotency-Key.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

fn config() -> String {
    ok_and_broken_routes("", "{ max_attempts = 1 }")
}

/// POST a bulk request; its status and JSON answer.
async fn bulk(app: &TestApp, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = app.client.post(format!("{}{path}", app.addr)).bearer_auth(ADMIN_TOKEN).body(body.to_string());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Store `n` deliveries with a queued job each for `route`, which this app has no route for: nothing claims them.
async fn parked_jobs(app: &TestApp, route: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let job = hookgate::store::NewJob {
            id: hookgate::store::new_id(),
            route: route.into(),
            coalesce_key: None,
            run_at: hookgate::store::now_ms(),
        };
        ids.push(job.id.clone());
        let delivery = new_delivery("github", &hookgate::store::new_id());
        app.store.insert_delivery(delivery, vec![job]).await.unwrap();
    }
    ids
}

async fn jobs(app: &TestApp, query: &str) -> Vec<Value> {
    app.admin_get(&format!("/api/v1/jobs?limit=1000&{query}")).await["items"].as_array().unwrap().clone()
}

store_test! {
    async fn a_retried_bulk_request_with_the_same_key_acts_once(backend) {
        let app = spawn_app(&backend, &config()).await;
        let mut deliveries = Vec::new();
        for i in 0..3 {
            let answer: Value =
                app.github("push", &format!("b{i}"), &push_body("refs/heads/broken", "o/r")).await.json().await.unwrap();
            deliveries.push(answer["id"].as_str().unwrap().to_string());
        }
        for id in &deliveries {
            terminal_jobs(&app, id).await;
        }
        let (status, answer) = bulk(&app, "/api/v1/jobs/retry", r#"{"route": "broken"}"#, Some("retry-1")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, json!({ "count": 3, "more": false, "repeat": false, "idempotency_key": "retry-1" }));
        // They run again and die again, each with a second attempt.
        for id in &deliveries {
            eventually(Duration::from_secs(20), "a second attempt", || async {
                let jobs = delivery_jobs(&app, id).await;
                (jobs[0]["status"] == "dead" && jobs[0]["attempt_log"].as_array().unwrap().len() == 2).then_some(())
            })
            .await;
        }
        // The client did not see the answer and sends the request again: the stored answer, nothing queued.
        let (status, again) = bulk(&app, "/api/v1/jobs/retry", r#"{ "route":"broken" }"#, Some("retry-1")).await;
        assert_eq!(status, 200);
        assert_eq!(again, json!({ "count": 3, "more": false, "repeat": true, "idempotency_key": "retry-1" }));
        let broken = jobs(&app, "route=broken").await;
        assert_eq!(broken.len(), 3);
        assert!(broken.iter().all(|j| j["status"] == "dead"), "{broken:?}");

        // A replay under a key: its jobs are created once, however often it is sent.
        let filter = r#"{"source": "github", "event": "push", "since": "1h"}"#;
        let (status, replayed) = bulk(&app, "/api/v1/deliveries/replay", filter, Some("replay-1")).await;
        assert_eq!(status, 200, "{replayed}");
        assert_eq!((replayed["count"].as_u64(), replayed["jobs"].as_u64()), (Some(3), Some(3)));
        let (_, repeated) = bulk(&app, "/api/v1/deliveries/replay", filter, Some("replay-1")).await;
        assert_eq!(repeated["repeat"], true);
        assert_eq!((repeated["count"].as_u64(), repeated["jobs"].as_u64()), (Some(3), Some(3)));
        assert_eq!(jobs(&app, "route=broken").await.len(), 6, "3 first jobs and 3 replayed, not 9");

        // The same key for another request is refused.
        let (status, refused) = bulk(&app, "/api/v1/jobs/retry", r#"{"route": "ok"}"#, Some("retry-1")).await;
        assert_eq!(status, 422);
        assert_eq!(refused["code"], "idempotency_key_reused");
        let (status, _) = bulk(&app, "/api/v1/jobs/cancel", r#"{"route": "broken"}"#, Some("replay-1")).await;
        assert_eq!(status, 422);
    }
}

store_test! {
    async fn cancelled_jobs_are_listed_as_cancelled_and_can_be_retried(backend) {
        let app = spawn_app(&backend, &config()).await;
        let parked = parked_jobs(&app, "parked", 3).await;
        let kept = parked_jobs(&app, "kept", 1).await;
        let (status, answer) = bulk(&app, "/api/v1/jobs/cancel", r#"{"route": "parked"}"#, None).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, json!({ "count": 3, "more": false, "repeat": false, "idempotency_key": null }));
        let cancelled = jobs(&app, "status=cancelled").await;
        let mut ids: Vec<&str> = cancelled.iter().map(|j| j["id"].as_str().unwrap()).collect();
        ids.sort();
        let mut expected: Vec<&str> = parked.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(ids, expected);
        assert!(cancelled.iter().all(|j| j["last_error"] == "cancelled by an operator" && j["next_attempt_at"].is_null()));
        let other = jobs(&app, "route=kept").await;
        assert_eq!((other[0]["id"].as_str(), other[0]["status"].as_str()), (Some(kept[0].as_str()), Some("queued")));
        let delivery = cancelled[0]["delivery_id"].as_str().unwrap();
        let listed = app.admin_get("/api/v1/deliveries?limit=100").await;
        let summary = listed["items"].as_array().unwrap().iter().find(|d| d["id"] == delivery).unwrap().clone();
        assert_eq!(summary["jobs"]["cancelled"], 1);
        let metrics = app.client.get(format!("{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("hookgate_queue_depth{status=\"cancelled\"}"), "{metrics}");

        let retry = r#"{"route": "parked", "status": "cancelled"}"#;
        let (status, answer) = bulk(&app, "/api/v1/jobs/retry", retry, None).await;
        assert_eq!((status, answer["count"].as_u64()), (200, Some(3)));
        assert!(jobs(&app, "route=parked").await.iter().all(|j| j["status"] == "queued"));
        // One cancelled job again, and retried by its id.
        bulk(&app, "/api/v1/jobs/cancel", r#"{"all": true}"#, None).await;
        assert_eq!(app.admin_post(&format!("/api/v1/jobs/{}/retry", parked[0])).await.status(), 202);
    }
}

store_test! {
    async fn replay_by_filter_routes_the_matching_deliveries_again(backend) {
        let app = spawn_app(&backend, &config()).await;
        let mut main = Vec::new();
        for i in 0..2 {
            let answer: Value =
                app.github("push", &format!("m{i}"), &push_body("refs/heads/main", "o/r")).await.json().await.unwrap();
            main.push(answer["id"].as_str().unwrap().to_string());
        }
        app.github("ping", "p0", "{}").await;
        for id in &main {
            terminal_jobs(&app, id).await;
        }
        let window = r#"{"event": "push", "since": "1h", "until": "2099-01-01T00:00:00+01:00"}"#;
        let (status, answer) = bulk(&app, "/api/v1/deliveries/replay", window, None).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!((answer["count"].as_u64(), answer["jobs"].as_u64(), answer["more"].as_bool()), (Some(2), Some(2), Some(false)));
        for id in &main {
            eventually(Duration::from_secs(20), "the replayed job to succeed", || async {
                let jobs = delivery_jobs(&app, id).await;
                (jobs.len() == 2 && jobs.iter().all(|j| j["status"] == "succeeded")).then_some(())
            })
            .await;
        }
        // Nothing was received in the future; the ping matches no route, but it is replayed.
        let (_, none) = bulk(&app, "/api/v1/deliveries/replay", r#"{"since": "2099-01-01T00:00:00Z"}"#, None).await;
        assert_eq!((none["count"].as_u64(), none["jobs"].as_u64()), (Some(0), Some(0)));
        let (_, ping) = bulk(&app, "/api/v1/deliveries/replay", r#"{"event": "ping"}"#, None).await;
        assert_eq!((ping["count"].as_u64(), ping["jobs"].as_u64()), (Some(1), Some(0)));
    }
}

store_test! {
    async fn bad_filters_and_keys_are_refused_with_400_naming_the_problem(backend) {
        let app = spawn_app(&backend, &config()).await;
        parked_jobs(&app, "parked", 1).await;
        let long_key = "k".repeat(201);
        let cases: &[(&str, &str, Option<&str>, &str)] = &[
            ("/api/v1/jobs/retry", r#"{"status": "finished"}"#, None, "status must be one of queued, running"),
            ("/api/v1/jobs/retry", r#"{"status": "running"}"#, None, "only dead, cancelled or succeeded"),
            ("/api/v1/jobs/cancel", r#"{"status": "dead"}"#, None, "only queued jobs can be cancelled"),
            ("/api/v1/jobs/cancel", r#"{"since": "yesterday"}"#, None, "since must be an RFC 3339 time"),
            ("/api/v1/jobs/cancel", r#"{"until": "2026-13-01T00:00:00Z"}"#, None, "until must be an RFC 3339"),
            ("/api/v1/jobs/cancel", r#"{"since": "1h", "until": "2h"}"#, None, "since must be before until"),
            ("/api/v1/jobs/cancel", r#"{"rout": "parked"}"#, None, "unknown field `rout`"),
            ("/api/v1/jobs/cancel", r#"{"route": 7}"#, None, "the filter is not valid"),
            ("/api/v1/jobs/cancel", "{", None, "the filter is not valid"),
            ("/api/v1/jobs/cancel", "{}", None, "send {\"all\": true}"),
            ("/api/v1/jobs/retry", "", None, "send {\"all\": true}"),
            ("/api/v1/jobs/cancel", r#"{"all": false}"#, None, "send {\"all\": true}"),
            ("/api/v1/deliveries/replay", "{}", None, "send {\"all\": true}"),
            ("/api/v1/deliveries/replay", r#"{"route": "x"}"#, None, "unknown field `route`"),
            ("/api/v1/jobs/cancel", r#"{"route": "parked"}"#, Some(""), "Idempotency-Key must be 1 to 200"),
            ("/api/v1/jobs/cancel", r#"{"route": "parked"}"#, Some(&long_key), "Idempotency-Key must be 1 to 200"),
        ];
        for (path, body, key, message) in cases {
            let (status, answer) = bulk(&app, path, body, *key).await;
            assert_eq!(status, 400, "{path} {body}: {answer}");
            assert_eq!(answer["code"], "bad_request");
            assert!(answer["message"].as_str().unwrap().contains(message), "{path} {body}: {answer}");
        }
        assert_eq!(jobs(&app, "status=queued").await.len(), 1, "nothing was cancelled");
        let unauthenticated = app.client.post(format!("{}/api/v1/jobs/cancel", app.addr)).body("{\"all\":true}").send().await;
        assert_eq!(unauthenticated.unwrap().status(), 401);
        let (status, _) = bulk(&app, "/api/v1/jobs/cancel", r#"{"route": "parked"}"#, Some("a key, with spaces")).await;
        assert_eq!(status, 200);
    }
}

fn hookgate(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(hookgate_bin());
    cmd.args(args).env_remove("HOOKGATE_CONFIG").env_remove("HOOKGATE_ADMIN_TOKEN");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_cancels_jobs_by_route_and_a_rerun_with_the_printed_key_acts_once() {
    let app = spawn_app(&Backend::Sqlite, &config()).await;
    parked_jobs(&app, "parked", 2).await;
    let env = [("HOOKGATE_URL", app.addr.as_str()), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let (code, out, err) =
        tokio::task::block_in_place(|| hookgate(&["jobs", "cancel", "--route", "parked", "--since", "1h"], &env));
    assert_eq!(code, 0, "{out}{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((answer["count"].as_u64(), answer["repeat"].as_bool()), (Some(2), Some(false)));
    let key = err
        .split("idempotency key: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(answer["idempotency_key"], key);
    parked_jobs(&app, "parked", 1).await;
    let (code, out, err) = tokio::task::block_in_place(|| {
        hookgate(&["jobs", "cancel", "--route", "parked", "--since", "1h", "--idempotency-key", key], &env)
    });
    assert_eq!(code, 0, "{out}{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((again["count"].as_u64(), again["repeat"].as_bool()), (Some(2), Some(true)));
    assert_eq!(jobs(&app, "status=queued").await.len(), 1, "the rerun cancelled nothing");
    let (code, help, _) = tokio::task::block_in_place(|| hookgate(&["jobs", "cancel", "--help"], &[]));
    assert_eq!(code, 0);
    assert!(help.contains("Running jobs are left to finish") && help.contains("--idempotency-key"), "{help}");
    // A filter that names nothing fails, with the server's reason.
    let (code, out, _) = tokio::task::block_in_place(|| hookgate(&["jobs", "cancel"], &env));
    assert_ne!(code, 0);
    assert!(out.contains("send {\\\"all\\\": true}"), "{out}");
}
