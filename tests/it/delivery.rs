//! Reliable delivery against real peers: signed outbound calls (scenarios 2 and 3), retries, circuit breaker,
//! 410 Gone, faults, coalescing, per-route concurrency and the SIGHUP kill switch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::*;

/// How the peer answers one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Sleep this long before answering 200 (past the action's timeout, the attempt fails).
    Hang(Duration),
    /// This status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
}

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: bytes::Bytes,
    at: Instant,
}

/// A real HTTP peer on 127.0.0.1:0 that records every request and answers from a script.
#[derive(Clone)]
struct Peer {
    url: String,
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
}

impl Peer {
    async fn start(script: Vec<Reply>, default: Reply) -> Peer {
        let peer = Peer {
            url: String::new(),
            log: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
            default: Arc::new(Mutex::new(default)),
        };
        let state = peer.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: bytes::Bytes| {
            let state = state.clone();
            async move {
                state.log.lock().unwrap().push(Received { headers, body, at: Instant::now() });
                let reply = state.script.lock().unwrap().pop_front().unwrap_or(*state.default.lock().unwrap());
                match reply {
                    Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
                    Reply::RetryAfter(code, secs) => {
                        (StatusCode::from_u16(code).unwrap(), [("retry-after", secs.to_string())]).into_response()
                    }
                    Reply::Hang(d) => {
                        tokio::time::sleep(d).await;
                        StatusCode::OK.into_response()
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Peer { url, ..peer }
    }

    fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Standard Webhooks verification written here from the specification, independent of hookgate's code.
fn standard_webhook_is_valid(r: &Received, secret: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", header(r, "webhook-id"), header(r, "webhook-timestamp")).as_bytes());
    mac.update(&r.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header(r, "webhook-signature").split(' ').any(|s| s == format!("v1,{expected}"))
}

/// Scenario 3's signature: hex HMAC-SHA256 of "<timestamp>.<body>", checked independently.
fn partner_signature_is_valid(r: &Received, secret: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.", header(r, "x-webhook-timestamp")).as_bytes());
    mac.update(&r.body);
    header(r, "x-webhook-signature") == hex::encode(mac.finalize().into_bytes())
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn post_github(base: &str, event: &str, delivery: &str, body: &str) -> serde_json::Value {
    let mut request = reqwest::Client::new().post(format!("{base}/hooks/github")).body(body.to_string());
    for (k, v) in github_headers(event, delivery, body) {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn publish(base: &str, token: &str, body: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/hooks/app"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn job_of(base: &str, delivery_id: &str) -> serde_json::Value {
    admin_json(base, &format!("/api/v1/deliveries/{delivery_id}")).await["jobs"][0].clone()
}

const SCAN_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

store_test! {
    async fn scenario_2_pushes_and_pull_requests_become_signed_scan_jobs(backend) {
        let peer = Peer::start(vec![], Reply::Status(202)).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hookgate.toml");
        std::fs::write(&config, example("scan-pipeline").replace("http://127.0.0.1:9000", &peer.url)).unwrap();
        let store_url = backend.fresh_url(dir.path()).await;
        let server = BinaryServer::start(
            &config,
            &[
                ("HOOKGATE_STORE_URL", &store_url),
                ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET),
                ("SCAN_AGENT_SECRET", SCAN_SECRET),
                ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ],
        );
        let push = serde_json::json!({"ref": "refs/heads/main", "after": "abc123", "deleted": false,
            "repository": {"name": "api", "full_name": "acme/api"}}).to_string();
        let pr = serde_json::json!({"action": "opened", "repository": {"name": "api", "full_name": "acme/api"},
            "pull_request": {"head": {"ref": "feature/x", "sha": "def456"}}}).to_string();
        let closed = serde_json::json!({"action": "closed", "repository": {"full_name": "acme/api"}}).to_string();
        let push_id = post_github(&server.addr, "push", "s2-push", &push).await["id"].as_str().unwrap().to_string();
        let pr_id = post_github(&server.addr, "pull_request", "s2-pr", &pr).await["id"].as_str().unwrap().to_string();
        assert_eq!(post_github(&server.addr, "pull_request", "s2-closed", &closed).await["jobs"], 0);

        let received = eventually(Duration::from_secs(20), "two scan jobs at the agent", || async {
            let r = peer.received();
            (r.len() == 2).then_some(r)
        })
        .await;
        let mut jobs: Vec<serde_json::Value> = Vec::new();
        let official = standardwebhooks::Webhook::new(SCAN_SECRET).unwrap();
        for r in &received {
            assert!(standard_webhook_is_valid(r, SCAN_SECRET), "the agent could not verify {:?}", r.headers);
            official.verify(&r.body, &r.headers).expect("the official Standard Webhooks library verifies it");
            jobs.push(serde_json::from_slice(&r.body).expect("the scan job is JSON"));
        }
        jobs.sort_by_key(|j| j["scan_target"]["type"].as_str().unwrap().to_string());
        assert_eq!(jobs[0]["scan_target"], serde_json::json!({"type": "branch", "reference": "refs/heads/main", "commit_sha": "abc123"}));
        assert_eq!(jobs[1]["scan_target"], serde_json::json!({"type": "pull_request", "reference": "feature/x", "commit_sha": "def456"}));
        for job in &jobs {
            assert_eq!(job["repository"], "acme/api");
            assert!(job["job_id"].as_str().unwrap().len() > 10);
            assert!(job["created_at"].as_str().unwrap().ends_with('Z'));
        }
        // The job status is visible in the admin API, under the id the agent received.
        for id in [&push_id, &pr_id] {
            let job = eventually(Duration::from_secs(10), "the job to succeed", || async {
                let job = job_of(&server.addr, id).await;
                (job["status"] == "succeeded").then_some(job)
            })
            .await;
            assert!(jobs.iter().any(|j| j["job_id"] == job["id"]));
        }
    }
}

const PARTNER_SECRET: &str = "partner-signing-secret";
const APP_TOKEN: &str = "app-publish-token";

fn notify_config(dir: &std::path::Path, peer: &Peer, enabled: bool) -> std::path::PathBuf {
    let path = dir.join("hookgate.toml");
    let text = example("notify")
        .replace("http://127.0.0.1:9100", &peer.url)
        .replace("enabled = true ", &format!("enabled = {enabled} "));
    std::fs::write(&path, text).unwrap();
    path
}

fn notify_env(store_url: &str) -> [(&'static str, &str); 4] {
    [
        ("HOOKGATE_STORE_URL", store_url),
        ("APP_PUBLISH_TOKEN", APP_TOKEN),
        ("PARTNER_SIGNING_SECRET", PARTNER_SECRET),
        ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN),
    ]
}

store_test! {
    async fn scenario_3_notifications_are_signed_and_retried_with_one_id_and_fresh_timestamps(backend) {
        let peer = Peer::start(vec![Reply::Status(500), Reply::Status(503)], Reply::Status(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let store_url = backend.fresh_url(dir.path()).await;
        let config = notify_config(dir.path(), &peer, true);
        let server = BinaryServer::start(&config, &notify_env(&store_url));

        let published = publish(&server.addr, APP_TOKEN, r#"{"type":"order.created","order":{"id":42}}"#).await;
        assert_eq!(published["event"], "order.created");
        assert_eq!(publish(&server.addr, APP_TOKEN, r#"{"type":"user.login"}"#).await["jobs"], 0);
        let id = published["id"].as_str().unwrap().to_string();
        let job = eventually(Duration::from_secs(30), "the notification to succeed", || async {
            let job = job_of(&server.addr, &id).await;
            (job["status"] == "succeeded").then_some(job)
        })
        .await;
        assert_eq!(job["attempts"], 3);

        let received = peer.received();
        assert_eq!(received.len(), 3, "no call after the success");
        for r in &received {
            assert!(partner_signature_is_valid(r, PARTNER_SECRET), "bad signature: {:?}", r.headers);
            assert_eq!(header(r, "x-webhook-event"), "order.created");
            assert_eq!(&r.body[..], br#"{"type":"order.created","order":{"id":42}}"#);
        }
        let ids: Vec<&str> = received.iter().map(|r| header(r, "x-webhook-id")).collect();
        assert!(ids.iter().all(|i| *i == ids[0] && !i.is_empty()), "the id changed across retries: {ids:?}");
        let stamps: Vec<i64> = received.iter().map(|r| header(r, "x-webhook-timestamp").parse().unwrap()).collect();
        assert!(stamps.windows(2).all(|w| w[1] > w[0]), "timestamps not fresh per attempt: {stamps:?}");
        assert!(stamps[0] > 1_000_000_000_000, "timestamp is in milliseconds");
        // Backoff: the retries were spaced (initial 1 s, ±20 %).
        assert!(received[1].at.duration_since(received[0].at) >= Duration::from_millis(700));
    }
}

store_test! {
    async fn the_kill_switch_pauses_a_route_on_sighup_without_dropping_its_queued_jobs(backend) {
        let peer = Peer::start(vec![Reply::Status(500)], Reply::Status(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let store_url = backend.fresh_url(dir.path()).await;
        let config = notify_config(dir.path(), &peer, true);
        let server = BinaryServer::start(&config, &notify_env(&store_url));
        let id = publish(&server.addr, APP_TOKEN, r#"{"type":"order.paid"}"#).await["id"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(10), "the first attempt to fail", || async { (peer.count() == 1).then_some(()) }).await;

        // Kill switch: one line, then SIGHUP. The job waiting for its retry stays queued and is not sent.
        notify_config(dir.path(), &peer, false);
        let reloads = server.log_text().matches("configuration reloaded").count();
        server.signal(nix::sys::signal::Signal::SIGHUP);
        eventually(Duration::from_secs(10), "the reload", || async {
            (server.log_text().matches("configuration reloaded").count() > reloads).then_some(())
        })
        .await;
        assert_eq!(publish(&server.addr, APP_TOKEN, r#"{"type":"order.paid"}"#).await["jobs"], 0, "a disabled route takes no new jobs");
        tokio::time::sleep(Duration::from_secs(3)).await; // longer than the retry's backoff
        assert_eq!(peer.count(), 1, "a disabled route sent a notification");
        assert_eq!(job_of(&server.addr, &id).await["status"], "queued");

        // Switched back on: the queued job goes out.
        notify_config(dir.path(), &peer, true);
        server.signal(nix::sys::signal::Signal::SIGHUP);
        eventually(Duration::from_secs(15), "the queued job to be delivered", || async {
            (job_of(&server.addr, &id).await["status"] == "succeeded").then_some(())
        })
        .await;
        assert_eq!(peer.count(), 2);
    }
}

fn http_route(peer: &Peer, extra: &str) -> String {
    format!(
        r#"[[sources]]
name = "app"
provider = "token"
secrets = ["{APP_TOKEN}"]

[[routes]]
name = "peer"
source = "app"
action = {{ type = "http", url = "{}/hook", timeout = "500ms" }}
{extra}
"#,
        peer.url
    )
}

store_test! {
    async fn an_open_circuit_makes_jobs_wait_then_a_probe_closes_it(backend) {
        let peer = Peer::start(vec![], Reply::Status(500)).await;
        // Metrics are process-wide and tests run in parallel: this route's name is its own.
        let route = format!("breaker-{}", backend.name());
        let app = spawn_app(
            &backend,
            &http_route(&peer, "retry = { max_attempts = 20, initial = \"50ms\", max = \"100ms\" }\ncircuit_breaker = { window = \"60s\", max_failures = 3, open_for = \"2s\" }")
                .replace("name = \"peer\"", &format!("name = \"{route}\"")),
        )
        .await;
        let id = publish(&app.addr, APP_TOKEN, r#"{"n":1}"#).await["id"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(10), "three failures", || async { (peer.count() >= 3).then_some(()) }).await;
        // The peer counts the third request before the worker has recorded its failure: wait for the record.
        eventually(Duration::from_secs(5), "the circuit to open", || async {
            let routes = app.admin_get("/api/v1/routes").await;
            (routes["items"][0]["circuit"] == "open").then_some(())
        })
        .await;
        let metrics = app.client.get(format!("{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains(&format!(r#"hookgate_circuit_state{{route="{route}"}} 2"#)), "{metrics}");
        // While open the job waits: queued, not dead, and the peer hears nothing.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(peer.count(), 3);
        assert_eq!(delivery_jobs(&app, &id).await[0]["status"], "queued");

        peer.set_default(Reply::Status(200));
        let job = eventually(Duration::from_secs(10), "the probe to succeed", || async {
            let jobs = delivery_jobs(&app, &id).await;
            (jobs[0]["status"] == "succeeded").then_some(jobs[0].clone())
        })
        .await;
        assert_eq!(job["attempts"], 4);
        let received = peer.received();
        assert!(received[3].at.duration_since(received[2].at) >= Duration::from_millis(1900), "probed before open_for");
        assert_eq!(app.admin_get("/api/v1/routes").await["items"][0]["circuit"], "closed");
        // Every transition is counted: closed → open → half-open (the probe) → closed.
        let metrics = app.client.get(format!("{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
        for to in ["open", "half-open", "closed"] {
            let line = format!(r#"hookgate_circuit_transitions_total{{route="{route}",to="{to}"}} 1"#);
            assert!(metrics.contains(&line), "{line} missing from {metrics}");
        }
    }
}

store_test! {
    async fn a_410_gone_disables_the_route_until_an_operator_enables_it(backend) {
        let peer = Peer::start(vec![Reply::Status(410)], Reply::Status(200)).await;
        let app = spawn_app(&backend, &http_route(&peer, "")).await;
        let first = publish(&app.addr, APP_TOKEN, r#"{"n":1}"#).await["id"].as_str().unwrap().to_string();
        let jobs = terminal_jobs(&app, &first).await;
        assert_eq!(jobs[0]["status"], "dead");
        assert!(jobs[0]["last_error"].as_str().unwrap().contains("410"), "{jobs:?}");
        let route = app.admin_get("/api/v1/routes").await["items"][0].clone();
        assert!(route["disabled_reason"].as_str().unwrap().contains("410 Gone"), "{route}");

        let second = publish(&app.addr, APP_TOKEN, r#"{"n":2}"#).await["id"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(peer.count(), 1, "a route stopped by 410 still sent");
        assert_eq!(delivery_jobs(&app, &second).await[0]["status"], "queued");

        assert_eq!(app.admin_post("/api/v1/routes/peer/enable").await.status(), 200);
        let jobs = terminal_jobs(&app, &second).await;
        assert_eq!(jobs[0]["status"], "succeeded");
        assert!(app.admin_get("/api/v1/routes").await["items"][0]["disabled_reason"].is_null());
    }
}

store_test! {
    async fn refused_failing_and_hanging_peers_end_succeeded_or_dead_and_never_run_after_success(backend) {
        // A port with nothing listening: connection refused on every attempt.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let flaky = Peer::start(vec![Reply::Status(500), Reply::Hang(Duration::from_secs(3)), Reply::Status(502)], Reply::Status(200))
            .await;
        let body = format!(
            r#"[[sources]]
name = "app"
provider = "token"
secrets = ["{APP_TOKEN}"]

[[routes]]
name = "refused"
source = "app"
action = {{ type = "http", url = "http://{closed}/hook", timeout = "500ms" }}
retry = {{ max_attempts = 3, initial = "50ms", max = "100ms" }}

[[routes]]
name = "flaky"
source = "app"
action = {{ type = "http", url = "{}/hook", timeout = "500ms" }}
retry = {{ max_attempts = 5, initial = "50ms", max = "100ms" }}
"#,
            flaky.url
        );
        let app = spawn_app(&backend, &body).await;
        let id = publish(&app.addr, APP_TOKEN, r#"{"n":1}"#).await["id"].as_str().unwrap().to_string();
        let jobs = terminal_jobs(&app, &id).await;
        let by_route = |name: &str| jobs.iter().find(|j| j["route"] == name).unwrap().clone();
        let refused = by_route("refused");
        assert_eq!(refused["status"], "dead");
        assert_eq!(refused["attempts"], 3);
        assert!(refused["last_error"].as_str().unwrap().contains("refused"), "{refused}");
        // Counted for alerting (the SQLite and PostgreSQL runs share the process's metrics: one or both).
        let metrics = app.client.get(format!("{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
        let dead = metrics.lines().find(|l| l.starts_with(r#"hookgate_jobs_dead_total{route="refused"}"#));
        assert!(dead.is_some_and(|l| !l.ends_with(" 0")), "{metrics}");
        assert!(!metrics.contains(r#"hookgate_jobs_dead_total{route="flaky"}"#), "{metrics}");
        let flaky_job = by_route("flaky");
        assert_eq!(flaky_job["status"], "succeeded");
        assert_eq!(flaky_job["attempts"], 4, "500, timeout, 502, then 200");
        let log: Vec<String> =
            flaky_job["attempt_log"].as_array().unwrap().iter().map(|a| a["error"].as_str().unwrap_or("ok").to_string()).collect();
        assert!(log[1].contains("timed out"), "{log:?}");
        // Nothing after the success, even once the hanging request's handler finished.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(flaky.count(), 4);
        assert_eq!(terminal_jobs(&app, &id).await.len(), 2);
    }
}

store_test! {
    async fn a_burst_of_a_thousand_pushes_to_one_repository_runs_the_action_at_most_twice(backend) {
        let app = spawn_app(
            &backend,
            &format!(
                r#"{GITHUB_SOURCE}
[[routes]]
name = "refresh"
source = "github"
coalesce = "{{{{ body.repository.full_name }}}}"
action = {{ type = "command", argv = ["sh", "-c", "echo run >> {{dir}}/runs; while [ ! -e {{dir}}/burst-over ]; do sleep 0.05; done"], timeout = "2m" }}
"#
            ),
        )
        .await;
        let body = push_body("refs/heads/main", "acme/fleet");
        let client = reqwest::Client::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(32));
        let mut sends = Vec::new();
        for i in 0..1000 {
            let (client, addr, body, sem) = (client.clone(), app.addr.clone(), body.clone(), sem.clone());
            sends.push(tokio::spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                let mut request = client.post(format!("{addr}/hooks/github")).body(body.clone());
                for (k, v) in github_headers("push", &format!("burst-{i}"), &body) {
                    request = request.header(k, v);
                }
                request.send().await.unwrap().status()
            }));
        }
        for s in sends {
            assert_eq!(s.await.unwrap(), 202);
        }
        // The run under way lasts the whole burst, however slow this machine is: every later push had to
        // merge into the one queued job.
        std::fs::write(app.path("burst-over"), "").unwrap();
        let jobs = eventually(Duration::from_secs(60), "the coalesced jobs to finish", || async {
            let page = app.admin_get("/api/v1/jobs?route=refresh&limit=1000").await;
            let items = page["items"].as_array().unwrap().clone();
            items.iter().all(|j| j["status"] == "succeeded").then_some(items)
        })
        .await;
        let runs = std::fs::read_to_string(app.path("runs")).unwrap().lines().count();
        assert!(runs <= 2, "1000 pushes ran the action {runs} times");
        assert_eq!(jobs.len(), runs);
        let merged: u64 = jobs.iter().map(|j| j["merged"].as_u64().unwrap()).sum();
        assert_eq!(merged as usize + jobs.len(), 1000, "every push is accounted for");
    }
}

store_test! {
    async fn a_route_with_concurrency_one_never_runs_two_jobs_at_once(backend) {
        let app = spawn_app(
            &backend,
            &format!(
                r#"{GITHUB_SOURCE}
[[routes]]
name = "serial"
source = "github"
concurrency = 1
action = {{ type = "command", argv = ["sh", "-c", "mkdir {{dir}}/lock || exit 99; sleep 0.2; rmdir {{dir}}/lock"] }}
retry = {{ max_attempts = 1 }}
"#
            ),
        )
        .await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let json: serde_json::Value = app.github("push", &format!("serial-{i}"), "{}").await.json().await.unwrap();
            ids.push(json["id"].as_str().unwrap().to_string());
        }
        for id in ids {
            let jobs = terminal_jobs(&app, &id).await;
            assert_eq!(jobs[0]["status"], "succeeded", "two ran at once: {jobs:?}");
        }
    }
}

store_test! {
    async fn github_and_custom_hmac_signatures_verify_at_the_peer(backend) {
        let peer = Peer::start(vec![], Reply::Status(200)).await;
        let body = format!(
            r#"[[sources]]
name = "app"
provider = "token"
secrets = ["{APP_TOKEN}"]

[[routes]]
name = "as-github"
source = "app"
action = {{ type = "http", url = "{url}/github", sign = {{ scheme = "github", secret = "gh-out" }} }}

[[routes]]
name = "as-shopify"
source = "app"
action = {{ type = "http", url = "{url}/shopify", sign = {{ scheme = "hmac", secret = "shop-out", signature_header = "X-Shopify-Hmac-Sha256", encoding = "base64", algorithm = "sha512", prefix = "v=", timestamp_header = "X-Sent-At", timestamp_unit = "s", content = "{{id}}:{{timestamp}}:{{body}}", id_header = "X-Message-Id" }} }}
"#,
            url = peer.url
        );
        let app = spawn_app(&backend, &body).await;
        let id = publish(&app.addr, APP_TOKEN, r#"{"type":"x"}"#).await["id"].as_str().unwrap().to_string();
        terminal_jobs(&app, &id).await;
        let received = peer.received();
        assert_eq!(received.len(), 2);
        for r in &received {
            if let Some(sig) = r.headers.get("x-hub-signature-256") {
                assert_eq!(sig.to_str().unwrap(), github_signature("gh-out", &r.body));
            } else {
                let content = format!("{}:{}:", header(r, "x-message-id"), header(r, "x-sent-at"));
                let mut mac = Hmac::<sha2::Sha512>::new_from_slice(b"shop-out").unwrap();
                mac.update(content.as_bytes());
                mac.update(&r.body);
                let expected = format!("v={}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
                assert_eq!(header(r, "x-shopify-hmac-sha256"), expected);
                assert!(header(r, "x-sent-at").len() == 10, "seconds, not milliseconds");
            }
        }
    }
}

store_test! {
    async fn a_source_switched_off_by_sighup_answers_404(backend) {
        let peer = Peer::start(vec![], Reply::Status(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let store_url = backend.fresh_url(dir.path()).await;
        let config = notify_config(dir.path(), &peer, true);
        let server = BinaryServer::start(&config, &notify_env(&store_url));
        publish(&server.addr, APP_TOKEN, r#"{"type":"order.paid"}"#).await;
        let text = std::fs::read_to_string(&config).unwrap().replace("name = \"app\"\n", "name = \"app\"\nenabled = false\n");
        std::fs::write(&config, text).unwrap();
        server.signal(nix::sys::signal::Signal::SIGHUP);
        eventually(Duration::from_secs(10), "the source to be off", || async {
            let status = reqwest::Client::new()
                .post(format!("{}/hooks/app", server.addr))
                .bearer_auth(APP_TOKEN)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status();
            (status == 404).then_some(())
        })
        .await;
    }
}

store_test! {
    async fn a_peers_retry_after_is_honoured(backend) {
        let peer = Peer::start(vec![Reply::RetryAfter(429, 2)], Reply::Status(200)).await;
        // A Retry-After longer than the throttle floor wins over it.
        let retry = "retry = { max_attempts = 3, initial = \"100ms\", max = \"30s\", throttle_floor = \"1s\" }";
        let app = spawn_app(&backend, &http_route(&peer, retry)).await;
        let id = publish(&app.addr, APP_TOKEN, r#"{"n":1}"#).await["id"].as_str().unwrap().to_string();
        let jobs = terminal_jobs(&app, &id).await;
        assert_eq!(jobs[0]["status"], "succeeded");
        let received = peer.received();
        let pause = received[1].at.duration_since(received[0].at);
        assert!(pause >= Duration::from_millis(1900), "retried after {pause:?}, before Retry-After: 2");
        assert!(pause < Duration::from_secs(10));
    }
}

store_test! {
    async fn after_a_429_or_a_timeout_the_next_attempt_waits_the_throttle_floor_but_not_after_a_500(backend) {
        let peer = Peer::start(
            vec![Reply::Status(429), Reply::Status(500), Reply::Hang(Duration::from_secs(2))],
            Reply::Status(200),
        )
        .await;
        let retry = "retry = { max_attempts = 5, initial = \"50ms\", max = \"10s\", throttle_floor = \"1500ms\" }";
        let app = spawn_app(&backend, &http_route(&peer, retry)).await;
        let id = publish(&app.addr, APP_TOKEN, r#"{"n":1}"#).await["id"].as_str().unwrap().to_string();
        let jobs = terminal_jobs(&app, &id).await;
        assert_eq!(jobs[0]["status"], "succeeded");
        assert_eq!(jobs[0]["attempts"], 4, "429, 500, timeout, then 200");
        let at: Vec<Instant> = peer.received().iter().map(|r| r.at).collect();
        let after_429 = at[1].duration_since(at[0]);
        let after_500 = at[2].duration_since(at[1]);
        // The hanging request is abandoned at the action's 500 ms timeout; the floor counts from then.
        let after_timeout = at[3].duration_since(at[2]);
        assert!(after_429 >= Duration::from_millis(1500), "retried {after_429:?} after a 429");
        assert!(after_500 < Duration::from_millis(1000), "waited {after_500:?} after a 500: the floor is for throttling");
        assert!(after_timeout >= Duration::from_millis(2000), "retried {after_timeout:?} after a timeout");
    }
}
