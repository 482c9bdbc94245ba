//! `POST /hooks/{source}` status codes, deduplication, limits, health and metrics.

use std::time::Duration;

use crate::helpers::*;

fn config() -> String {
    format!(
        r#"{GITHUB_SOURCE}
max_body = "4KiB"

[[sources]]
name = "off"
provider = "github"
secrets = ["x"]
enabled = false

[[sources]]
name = "app"
provider = "token"
secrets = ["app-token"]
event_field = "type"

[[routes]]
name = "log"
source = "github"
filter = 'event == "push"'
action = {{ type = "command", argv = ["true"] }}
"#
    )
}

store_test! {
    async fn a_verified_delivery_is_stored_and_answered_202_with_its_jobs(backend) {
        let app = spawn_app(&backend, &config()).await;
        let body = push_body("refs/heads/main", "octo/hello");
        let response = app.github("push", "d-1", &body).await;
        assert_eq!(response.status(), 202);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["delivery"], "d-1");
        assert_eq!(json["event"], "push");
        assert_eq!(json["jobs"], 1);
        let id = json["id"].as_str().unwrap();
        let stored = app.store.get_delivery(id).await.unwrap().expect("stored before the 202");
        assert_eq!(&stored.delivery.body[..], body.as_bytes());
    }
}

store_test! {
    async fn the_same_delivery_twice_is_answered_200_duplicate_without_new_jobs(backend) {
        let app = spawn_app(&backend, &config()).await;
        let body = push_body("refs/heads/main", "octo/hello");
        let first: serde_json::Value = app.github("push", "same", &body).await.json().await.unwrap();
        let again = app.github("push", "same", &body).await;
        assert_eq!(again.status(), 200);
        let json: serde_json::Value = again.json().await.unwrap();
        assert_eq!(json["duplicate"], true);
        assert_eq!(json["id"], first["id"]);
        let jobs = app.store.list_jobs(Default::default()).await.unwrap();
        assert_eq!(jobs.items.len(), 1);
    }
}

store_test! {
    async fn a_ping_is_answered_and_runs_nothing(backend) {
        let app = spawn_app(&backend, &config()).await;
        let response = app.github("ping", "p-1", r#"{"zen":"Keep it logically awesome."}"#).await;
        assert_eq!(response.status(), 202);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["jobs"], 0);
    }
}

store_test! {
    async fn a_wrong_or_missing_signature_is_401_and_reveals_nothing(backend) {
        let app = spawn_app(&backend, &config()).await;
        let body = push_body("refs/heads/main", "octo/hello");
        let mut headers = github_headers("push", "bad-1", &body);
        headers[3].1 = github_signature("wrong secret", body.as_bytes());
        let response = app.post_hook("github", &headers, &body).await;
        assert_eq!(response.status(), 401);
        let text = response.text().await.unwrap();
        let expected = github_signature(GITHUB_SECRET, body.as_bytes());
        assert!(!text.contains(&expected[7..]), "the expected signature leaked: {text}");
        assert!(!text.contains("Secret"));

        headers.remove(3);
        assert_eq!(app.post_hook("github", &headers, &body).await.status(), 401);

        let truncated = vec![
            ("x-github-event", "push".to_string()),
            ("x-github-delivery", "bad-2".to_string()),
            ("x-hub-signature-256", expected[..expected.len() - 2].to_string()),
        ];
        assert_eq!(app.post_hook("github", &truncated, &body).await.status(), 401);
        assert!(app.store.list_deliveries(Default::default()).await.unwrap().items.is_empty());
    }
}

store_test! {
    async fn unknown_and_disabled_sources_are_404(backend) {
        let app = spawn_app(&backend, &config()).await;
        let body = "{}";
        assert_eq!(app.post_hook("nope", &github_headers("push", "x", body), body).await.status(), 404);
        assert_eq!(app.post_hook("off", &github_headers("push", "x", body), body).await.status(), 404);
    }
}

store_test! {
    async fn other_methods_are_405(backend) {
        let app = spawn_app(&backend, &config()).await;
        let response = app.client.get(format!("{}/hooks/github", app.addr)).send().await.unwrap();
        assert_eq!(response.status(), 405);
        let response = app.client.put(format!("{}/hooks/github", app.addr)).send().await.unwrap();
        assert_eq!(response.status(), 405);
    }
}

store_test! {
    async fn a_body_over_the_limit_is_413_declared_or_streamed(backend) {
        let app = spawn_app(&backend, &config()).await;
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
        let response = app.github("push", "big-1", &big).await;
        assert_eq!(response.status(), 413);

        // Without Content-Length (chunked): answered 413 once the limit is crossed, while the client still
        // holds the rest of the body back.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.addr.trim_start_matches("http://").to_string();
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..5 {
            socket.write_all(format!("400\r\n{}\r\n", "x".repeat(1024)).as_bytes()).await.unwrap();
        }
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
}

store_test! {
    async fn a_verified_body_that_is_not_json_is_400(backend) {
        let app = spawn_app(&backend, &config()).await;
        let body = "{\"ref\": ";
        let response = app.github("push", "broken-1", body).await;
        assert_eq!(response.status(), 400);
        assert!(app.store.list_deliveries(Default::default()).await.unwrap().items.is_empty());
    }
}

store_test! {
    async fn a_token_source_takes_the_event_from_the_body(backend) {
        let app = spawn_app(&backend, &config()).await;
        let headers = [("authorization", "Bearer app-token".to_string()), ("content-type", "application/json".into())];
        let response = app.post_hook("app", &headers, r#"{"type":"user.created"}"#).await;
        assert_eq!(response.status(), 202);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["event"], "user.created");
        let wrong = [("authorization", "Bearer nope".to_string())];
        assert_eq!(app.post_hook("app", &wrong, "{}").await.status(), 401);
    }
}

store_test! {
    async fn an_unavailable_store_answers_503_acknowledges_nothing_and_recovers(backend) {
        match backend {
            Backend::Sqlite => sqlite_locked_store_answers_503().await,
            Backend::Postgres(_) => postgres_outage_answers_503_and_recovers(&backend).await,
        }
    }
}

async fn sqlite_locked_store_answers_503() {
    let app = spawn_app(&Backend::Sqlite, &config()).await;
    // Another connection holds the write lock longer than the store's busy timeout.
    let db = app.path("hookgate.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    let body = push_body("refs/heads/main", "octo/hello");
    let response = app.github("push", "locked-1", &body).await;
    assert_eq!(response.status(), 503);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    // Once the store is back, the same delivery is accepted (it was not stored before).
    assert_eq!(app.github("push", "locked-1", &body).await.status(), 202);
}

async fn postgres_outage_answers_503_and_recovers(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let parsed = url::Url::parse(&url).unwrap();
    let target = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap_or(5432));
    let proxy = TcpProxy::start(target.clone()).await;
    let app = spawn_app_at(&url.replacen(&target, &proxy.addr.to_string(), 1), &config()).await;
    let body = push_body("refs/heads/main", "octo/hello");
    assert_eq!(app.github("push", "pg-1", &body).await.status(), 202);

    proxy.cut();
    assert_eq!(app.github("push", "pg-2", &body).await.status(), 503);
    let ready = app.client.get(format!("{}/readyz", app.addr)).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    proxy.restore();
    eventually(Duration::from_secs(20), "the store to come back", || async {
        (app.github("push", "pg-2", &body).await.status() == 202).then_some(())
    })
    .await;
    assert_eq!(app.client.get(format!("{}/readyz", app.addr)).send().await.unwrap().status(), 200);
    // Exactly what was acknowledged is stored: pg-1 and pg-2, once each.
    let page = app.store.list_deliveries(Default::default()).await.unwrap();
    let mut ids: Vec<_> = page.items.iter().map(|d| d.delivery.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["pg-1", "pg-2"]);
}

store_test! {
    async fn health_readiness_and_metrics_answer(backend) {
        let app = spawn_app(&backend, &config()).await;
        let body = push_body("refs/heads/main", "octo/hello");
        app.github("push", "m-1", &body).await;
        let health = app.client.get(format!("{}/healthz", app.addr)).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.headers()["x-content-type-options"], "nosniff");
        assert!(health.headers().get("server").is_none());
        assert_eq!(app.client.get(format!("{}/readyz", app.addr)).send().await.unwrap().status(), 200);
        let metrics = app.client.get(format!("{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
        for name in ["hookgate_requests_total", "hookgate_request_duration_seconds", "hookgate_queue_depth"] {
            assert!(metrics.contains(name), "{name} missing from /metrics");
        }
        assert!(metrics.contains(r#"hookgate_requests_total{source="github",outcome="accepted"}"#), "{metrics}");
        assert!(metrics.contains("hookgate_store_ready 1"), "{metrics}");
    }
}

store_test! {
    async fn responses_never_echo_the_payload_or_server_version(backend) {
        let app = spawn_app(&backend, &config()).await;
        let body = r#"{"ref":"refs/heads/main","secret_marker":"do-not-echo-7731"}"#;
        let response = app.github("push", "echo-1", body).await;
        assert!(response.headers().get("server").is_none());
        assert!(!response.text().await.unwrap().contains("do-not-echo-7731"));
    }
}
