//! Route and source state shared by every instance: pause and resume over the API, kept across a restart,
//! and — with three real binaries on one PostgreSQL — `concurrency`, pauses and a peer's 410 holding on all.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::helpers::*;

/// A command route that appends one line per run to `{dir}/runs`.
const RECORDING_ROUTE: &str = r#"
[[routes]]
name = "record"
source = "github"
action = { type = "command", argv = ["sh", "-c", "echo run >> '{dir}/runs'"], timeout = "5s" }
"#;

fn runs(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("runs")).map(|t| t.lines().count()).unwrap_or(0)
}

async fn post_json(client: &reqwest::Client, base: &str, path: &str, body: &str) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn push(client: &reqwest::Client, base: &str, delivery: &str) -> reqwest::Response {
    send_push(client, base, delivery).await.unwrap()
}

store_test! {
    async fn a_paused_route_keeps_its_jobs_until_resumed_even_across_a_restart(backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        let body = format!("{GITHUB_SOURCE}{RECORDING_ROUTE}").replace("{dir}", &dir.path().display().to_string());
        let app = spawn_app_at(&url, &body).await;
        let paused = post_json(&app.client, &app.addr, "/api/v1/routes/record/pause",
            r#"{"reason": "deploy freeze", "by": "alice"}"#).await;
        assert_eq!(paused.status(), 200);
        let paused: serde_json::Value = paused.json().await.unwrap();
        assert_eq!(paused["paused"]["by"], "alice");
        assert_eq!(paused["paused"]["reason"], "deploy freeze");

        assert_eq!(push(&app.client, &app.addr, "held-1").await.status(), 202, "a paused route still takes deliveries");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(runs(dir.path()), 0, "a paused route ran a job");
        let route = app.admin_get("/api/v1/routes").await["items"][0].clone();
        assert_eq!(route["paused"]["by"], "alice", "{route}");
        assert_eq!(app.admin_get("/api/v1/jobs?status=queued").await["items"].as_array().unwrap().len(), 1);

        // A restart forgets nothing: the pause and the job are in the store.
        let _ = app.stop().await;
        let app = spawn_app_at(&url, &body).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(runs(dir.path()), 0, "the pause did not survive the restart");
        assert_eq!(app.admin_get("/api/v1/routes").await["items"][0]["paused"]["reason"], "deploy freeze");

        let resumed = post_json(&app.client, &app.addr, "/api/v1/routes/record/resume", "").await;
        assert_eq!(resumed.status(), 200);
        eventually(Duration::from_secs(10), "the held job to run", || async { (runs(dir.path()) == 1).then_some(()) })
            .await;
        assert!(app.admin_get("/api/v1/routes").await["items"][0]["paused"].is_null());
    }
}

store_test! {
    async fn a_paused_source_answers_503_with_retry_after_and_stores_nothing(backend) {
        let app = spawn_app(&backend, &format!("{GITHUB_SOURCE}{RECORDING_ROUTE}")).await;
        let paused = post_json(&app.client, &app.addr, "/api/v1/sources/github/pause", r#"{"reason": "incident 42"}"#).await;
        assert_eq!(paused.status(), 200);

        let refused = push(&app.client, &app.addr, "while-paused").await;
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "60");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "source_paused");
        assert!(app.admin_get("/api/v1/deliveries").await["items"].as_array().unwrap().is_empty(), "stored while paused");
        let sources = app.admin_get("/api/v1/sources").await;
        assert_eq!(sources["items"][0]["paused"]["reason"], "incident 42", "{sources}");
        assert_eq!(sources["items"][0]["paused"]["by"], "admin API");

        // Unknown names stay unknown.
        assert_eq!(app.post_hook("nope", &[], "{}").await.status(), 404);
        assert_eq!(post_json(&app.client, &app.addr, "/api/v1/sources/nope/pause", "").await.status(), 404);

        assert_eq!(post_json(&app.client, &app.addr, "/api/v1/sources/github/resume", "").await.status(), 200);
        assert_eq!(push(&app.client, &app.addr, "after-resume").await.status(), 202);
        // The sender's retry of the refused delivery is taken now: nothing of it was stored before.
        assert_eq!(push(&app.client, &app.addr, "while-paused").await.status(), 202);
    }
}

store_test! {
    async fn pause_and_resume_refuse_bad_requests_clearly(backend) {
        let app = spawn_app(&backend, &format!("{GITHUB_SOURCE}{RECORDING_ROUTE}")).await;
        let base = app.addr.clone();
        for (path, body, status) in [
            ("/api/v1/routes/record/pause", "{not json", 400),
            ("/api/v1/routes/record/pause", r#"{"reason": "x", "extra": 1}"#, 400),
            ("/api/v1/routes/record/pause", &format!(r#"{{"reason": "{}"}}"#, "x".repeat(501)), 400),
            ("/api/v1/routes/record/pause", r#"{"reason": "$(rm -rf /); --upload-pack=evil"}"#, 200),
            ("/api/v1/routes/nope/pause", "", 404),
            ("/api/v1/routes/nope/resume", "", 404),
        ] {
            let response = post_json(&app.client, &base, path, body).await;
            assert_eq!(response.status().as_u16(), status, "{path} {body}");
        }
        // A hostile reason is only text: kept and shown as given.
        let route = app.admin_get("/api/v1/routes").await["items"][0].clone();
        assert_eq!(route["paused"]["reason"], "$(rm -rf /); --upload-pack=evil");
        let anonymous = app.client.post(format!("{base}/api/v1/routes/record/resume")).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        assert!(!app.admin_get("/api/v1/routes").await["items"][0]["paused"].is_null(), "resumed without a token");
    }
}

/// A loopback peer that counts requests and answers with a status the test can change.
struct Peer {
    url: String,
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
}

impl Peer {
    async fn start(status: u16) -> Peer {
        let hits = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicU16::new(status));
        let (h, s) = (hits.clone(), status.clone());
        let app = axum::Router::new().fallback(move || {
            let (h, s) = (h.clone(), s.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap().into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Peer { url, hits, status }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_concurrency_pauses_and_a_410_stop() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("skipped: HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let spans = dir.path().join("spans");
    let peer = Peer::start(410).await;
    let config = dir.path().join("hookgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[store]
url = "{url}"
[admin]
token = "{ADMIN_TOKEN}"
[worker]
poll_interval = "50ms"
concurrency = 4
{GITHUB_SOURCE}
[[sources]]
name = "app"
provider = "token"
secrets = ["app-secret"]

[[routes]]
name = "serial"
source = "github"
concurrency = 1
action = {{ type = "command", argv = ["sh", "-c", "echo start >> '{spans}'; sleep 0.03; echo end >> '{spans}'"], timeout = "5s" }}

[[routes]]
name = "partner"
source = "app"
concurrency = 1
action = {{ type = "http", url = "{peer}/hook", timeout = "5s" }}
"#,
            spans = spans.display(),
            peer = peer.url,
        ),
    )
    .unwrap();
    let servers: Vec<BinaryServer> = (0..3).map(|_| BinaryServer::start(&config, &[])).collect();
    let bases: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // 50 jobs of a `concurrency = 1` route, arriving at all three instances: never two at once.
    for n in 0..50 {
        assert_eq!(push(&client, &bases[n % 3], &format!("serial-{n}")).await.status(), 202);
    }
    let lines = eventually(Duration::from_secs(60), "50 serial runs", || async {
        let text = std::fs::read_to_string(&spans).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        (lines.len() == 100).then_some(lines)
    })
    .await;
    for (i, pair) in lines.chunks(2).enumerate() {
        assert_eq!(pair, ["start", "end"], "run {i} overlapped another: {lines:?}");
    }
    // Each run is logged by the instance that ran it, once its command has ended.
    let ran = eventually(Duration::from_secs(10), "every run in an instance's log", || async {
        let ran: Vec<usize> = servers
            .iter()
            .map(|s| s.log_text().lines().filter(|l| l.contains("job attempt") && l.contains("route=serial")).count())
            .collect();
        (ran.iter().sum::<usize>() == 50).then_some(ran)
    })
    .await;
    assert!(ran.iter().filter(|n| **n > 0).count() >= 2, "the runs were not shared between instances: {ran:?}");

    // A pause made on one instance holds on the others within a second.
    let paused = post_json(&client, &bases[0], "/api/v1/routes/serial/pause", r#"{"reason": "freeze"}"#).await;
    assert_eq!(paused.status(), 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (n, base) in bases.iter().enumerate() {
        assert_eq!(push(&client, base, &format!("held-{n}")).await.status(), 202);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(std::fs::read_to_string(&spans).unwrap().lines().count(), 100, "a paused route ran somewhere");
    assert_eq!(post_json(&client, &bases[2], "/api/v1/routes/serial/resume", "").await.status(), 200);
    eventually(Duration::from_secs(10), "the held jobs to run after the resume", || async {
        (std::fs::read_to_string(&spans).unwrap_or_default().lines().count() == 106).then_some(())
    })
    .await;

    // A source paused on one instance answers 503 on every instance within a second.
    assert_eq!(post_json(&client, &bases[1], "/api/v1/sources/github/pause", "").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (n, base) in bases.iter().enumerate() {
        assert_eq!(push(&client, base, &format!("refused-{n}")).await.status(), 503, "instance {n}");
    }
    assert_eq!(post_json(&client, &bases[1], "/api/v1/sources/github/resume", "").await.status(), 200);

    // The partner answers 410 to its first request: no instance sends it another until it is resumed.
    for n in 0..9 {
        let body = format!(r#"{{"n":{n}}}"#);
        let response = client
            .post(format!("{}/hooks/app", bases[n % 3]))
            .bearer_auth("app-secret")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }
    eventually(Duration::from_secs(10), "the partner's first request", || async {
        (peer.hits.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(peer.hits.load(Ordering::SeqCst), 1, "an instance sent the route another request after its 410");
    for base in &bases {
        let routes = admin_json(base, "/api/v1/routes").await;
        let partner = routes["items"].as_array().unwrap().iter().find(|r| r["name"] == "partner").unwrap().clone();
        assert_eq!(partner["stopped"]["status"], 410, "{partner}");
    }
    // One instance saw the 410 and told of it once, as a `route.stopped` event.
    let stopped = admin_json(&bases[0], "/api/v1/deliveries?source=hookgate&event=route.stopped").await;
    assert_eq!(stopped["items"].as_array().unwrap().len(), 1, "{stopped}");
    peer.status.store(200, Ordering::SeqCst);
    assert_eq!(post_json(&client, &bases[1], "/api/v1/routes/partner/resume", "").await.status(), 200);
    eventually(Duration::from_secs(20), "the 8 held requests after the resume", || async {
        (peer.hits.load(Ordering::SeqCst) == 9).then_some(())
    })
    .await;
    drop(servers);
}
