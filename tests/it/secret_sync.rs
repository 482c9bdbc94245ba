//! SPEC §1 scenario 4: signed Infisical deliveries clear a cache over HTTP, and redeploy an allow-listed environment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::*;

const SECRET: &str = "infisical-webhook-secret";

/// One request the stand-in application received.
#[derive(Clone, Debug)]
struct Call {
    path: String,
    body: serde_json::Value,
}

/// The application behind hookgate: a real HTTP server on 127.0.0.1:0 that records every call.
struct Receiver {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let sink = calls.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: bytes::Bytes| {
            let sink = sink.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                sink.lock().unwrap().push(Call { path: uri.path().to_string(), body });
                axum::http::StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, calls }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn to(&self, path: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.path == path).collect()
    }
}

/// The example's sources and routes, pointed at the receiver instead of the application's real address.
fn example_against(receiver: &Receiver) -> String {
    let text = std::fs::read_to_string(format!("{}/examples/secret-sync.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = text.find("[[sources]]").expect("the example has sources");
    text[start..].replace("http://127.0.0.1:9090", &receiver.url)
}

async fn start(backend: &Backend, receiver: &Receiver) -> TestApp {
    let env = BTreeMap::from([("INFISICAL_WEBHOOK_SECRET".to_string(), SECRET.to_string())]);
    spawn_app_with_env(backend, &example_against(receiver), env).await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// An Infisical payload as Infisical sends it.
fn payload(event: &str, environment: &str, path: &str, timestamp: i64) -> String {
    serde_json::json!({
        "event": event,
        "project": {
            "workspaceId": "6540a9a47b1e2b5f1f0b8c3d",
            "projectId": "6540a9a47b1e2b5f1f0b8c3d",
            "environment": environment,
            "secretPath": path,
        },
        "timestamp": timestamp,
    })
    .to_string()
}

/// `x-infisical-signature: t=<ms>;<hex HMAC-SHA256 of the body>`, computed here with the hmac crate.
fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("t={t};{}", hex::encode(mac.finalize().into_bytes()))
}

async fn send(app: &TestApp, header: String, body: &str) -> reqwest::Response {
    app.post_hook(
        "infisical",
        &[("content-type", "application/json".to_string()), ("x-infisical-signature", header)],
        body,
    )
    .await
}

store_test! {
    async fn a_secret_change_clears_the_cache_for_its_project_environment_and_path(backend) {
        let receiver = Receiver::start().await;
        let app = start(&backend, &receiver).await;
        let t = now_ms();
        let body = payload("secrets.modified", "dev", "/app/db", t);
        let response = send(&app, signature(SECRET, t, &body), &body).await;
        assert_eq!(response.status(), 202);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["event"], "secrets.modified");
        assert_eq!(json["jobs"], 1, "dev is not on the redeploy allow-list");

        let id = json["id"].as_str().unwrap();
        let jobs = terminal_jobs(&app, id).await;
        assert_eq!(jobs[0]["status"], "succeeded");
        let clears = receiver.to("/cache/clear");
        assert_eq!(clears.len(), 1);
        assert_eq!(
            clears[0].body,
            serde_json::json!({
                "projectId": "6540a9a47b1e2b5f1f0b8c3d",
                "environment": "dev",
                "secretPath": "/app/db",
            })
        );
        assert!(receiver.to("/redeploy").is_empty());
    }
}

store_test! {
    async fn a_secret_change_in_an_allow_listed_environment_also_redeploys(backend) {
        let receiver = Receiver::start().await;
        let app = start(&backend, &receiver).await;
        let t = now_ms();
        // Older Infisical payloads name only the workspace; the cache clear falls back to it.
        let body = serde_json::json!({
            "event": "secrets.modified",
            "project": { "workspaceId": "ws-42", "environment": "prod", "secretPath": "/" },
            "timestamp": t,
        })
        .to_string();
        let response = send(&app, signature(SECRET, t, &body), &body).await;
        assert_eq!(response.status(), 202);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["jobs"], 2);

        let jobs = terminal_jobs(&app, json["id"].as_str().unwrap()).await;
        assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
        let clears = receiver.to("/cache/clear");
        assert_eq!(clears.len(), 1);
        assert_eq!(clears[0].body, serde_json::json!({"projectId": "ws-42", "environment": "prod", "secretPath": "/"}));
        let redeploys = receiver.to("/redeploy");
        assert_eq!(redeploys.len(), 1);
        assert_eq!(redeploys[0].body, serde_json::json!({"environment": "prod"}));
    }
}

store_test! {
    async fn the_infisical_test_event_is_answered_but_triggers_nothing(backend) {
        let receiver = Receiver::start().await;
        let app = start(&backend, &receiver).await;
        let t = now_ms();
        let body = payload("test", "prod", "/", t);
        let response = send(&app, signature(SECRET, t, &body), &body).await;
        assert_eq!(response.status(), 202);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["event"], "test");
        assert_eq!(json["jobs"], 0);

        // A real change sent afterwards is delivered; by then the test event would have been too.
        let body = payload("secrets.modified", "staging", "/", t + 1);
        let later: serde_json::Value = send(&app, signature(SECRET, t + 1, &body), &body).await.json().await.unwrap();
        terminal_jobs(&app, later["id"].as_str().unwrap()).await;
        let paths: Vec<String> = receiver.calls().into_iter().map(|c| c.path).collect();
        assert_eq!(paths, ["/cache/clear"]);
    }
}

store_test! {
    async fn a_stale_mismatched_or_wrongly_signed_infisical_delivery_is_401(backend) {
        let receiver = Receiver::start().await;
        let app = start(&backend, &receiver).await;
        let now = now_ms();

        let stale_t = now - 6 * 60 * 1000;
        let stale = payload("secrets.modified", "prod", "/", stale_t);
        assert_eq!(send(&app, signature(SECRET, stale_t, &stale), &stale).await.status(), 401);

        // A captured body replayed under a fresh `t`: the signature is right, but `t` differs from the body.
        assert_eq!(send(&app, signature(SECRET, now, &stale), &stale).await.status(), 401);

        let body = payload("secrets.modified", "prod", "/", now);
        assert_eq!(send(&app, signature(SECRET, now + 1, &body), &body).await.status(), 401);
        assert_eq!(send(&app, signature("not the secret", now, &body), &body).await.status(), 401);
        let response = app
            .post_hook("infisical", &[("content-type", "application/json".to_string())], &body)
            .await;
        assert_eq!(response.status(), 401);
        let text = response.text().await.unwrap();
        assert!(!text.contains(&signature(SECRET, now, &body)[16..]), "the answer hints at the signature: {text}");

        assert!(app.store.list_jobs(Default::default()).await.unwrap().items.is_empty());
        assert!(receiver.calls().is_empty());
    }
}
