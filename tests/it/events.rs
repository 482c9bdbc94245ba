//! Operational events (the built-in `hookgate` source) end to end against real peers, and the
//! `hookgate_queue_oldest_seconds` gauge.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::*;

const APP_TOKEN: &str = "events-app-token";

/// A real HTTP peer on 127.0.0.1:0 that answers every request with one status (until told another) and keeps
/// the bodies.
#[derive(Clone)]
struct Peer {
    url: String,
    bodies: Arc<Mutex<Vec<bytes::Bytes>>>,
    status: Arc<AtomicU16>,
}

impl Peer {
    async fn start(status: u16) -> Peer {
        let bodies: Arc<Mutex<Vec<bytes::Bytes>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(status));
        let (log, answer) = (bodies.clone(), status.clone());
        let app = axum::Router::new().fallback(move |body: bytes::Bytes| {
            let (log, answer) = (log.clone(), answer.clone());
            async move {
                log.lock().unwrap().push(body);
                StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Peer { url, bodies, status }
    }

    /// Answer every later request with `status`.
    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().iter().map(|b| serde_json::from_slice(b).expect("a JSON body")).collect()
    }
}

/// The token source `app` that every test here publishes to.
const APP_SOURCE: &str = r#"[[sources]]
name = "app"
provider = "token"
secrets = ["events-app-token"]
"#;

/// The source `app`, a route `deploy` to `target` (with `deploy_extra` keys), and a route `alerts` that sends
/// the events `filter` takes to `pager`.
fn routes(target: &Peer, deploy_extra: &str, pager: &Peer, filter: &str) -> String {
    format!(
        r#"{APP_SOURCE}
[[routes]]
name = "deploy"
source = "app"
action = {{ type = "http", url = "{}/deploy", timeout = "2s" }}
{deploy_extra}

[[routes]]
name = "alerts"
source = "hookgate"
filter = '{filter}'
action = {{ type = "http", url = "{}/page", timeout = "2s" }}
retry = {{ max_attempts = 1 }}
"#,
        target.url, pager.url
    )
}

/// A route `deploy` to `target` that gives up after one attempt, and a route `alerts` that sends `job.dead`
/// events to `pager`, also after one attempt.
fn config(target: &Peer, pager: &Peer) -> String {
    routes(target, "retry = { max_attempts = 1 }", pager, r#"event == "job.dead""#)
}

async fn publish(app: &TestApp, body: &str) -> String {
    let response = app
        .client
        .post(format!("{}/hooks/app", app.addr))
        .bearer_auth(APP_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// The stored deliveries of the `hookgate` source, newest first.
async fn ops_deliveries(app: &TestApp) -> Vec<serde_json::Value> {
    app.admin_get("/api/v1/deliveries?source=hookgate").await["items"].as_array().unwrap().clone()
}

store_test! {
    async fn a_job_that_dies_sends_a_job_dead_event_through_the_events_route(backend) {
        let (target, pager) = (Peer::start(500).await, Peer::start(200).await);
        let app = spawn_app(&backend, &config(&target, &pager)).await;
        // Nobody outside may forge an operational event.
        let forged = app.post_hook("hookgate", &[("content-type", "application/json".into())], "{}").await;
        assert_eq!(forged.status(), 404);

        let id = publish(&app, r#"{"secret_payload": "do-not-leak"}"#).await;
        let job = terminal_jobs(&app, &id).await.remove(0);
        assert_eq!(job["status"], "dead");
        let sent = eventually(Duration::from_secs(20), "the pager to receive job.dead", || async {
            pager.bodies().into_iter().next()
        })
        .await;
        assert_eq!(sent["event"], "job.dead");
        assert_eq!(sent["route"], "deploy");
        assert_eq!(sent["job"], job["id"]);
        assert_eq!(sent["delivery"], id.as_str());
        assert_eq!((&sent["source"], &sent["attempts"]), (&"app".into(), &1.into()));
        assert!(sent["error"].as_str().unwrap().contains("500"), "{sent}");
        assert!(sent["at"].as_str().unwrap().ends_with('Z'), "{sent}");
        let text = sent.to_string();
        assert!(!text.contains("do-not-leak") && !text.contains(APP_TOKEN), "{text}");

        // Stored like any delivery: listed by source, with the events route's job.
        let stored = ops_deliveries(&app).await;
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0]["event"], "job.dead");
        let jobs = terminal_jobs(&app, stored[0]["id"].as_str().unwrap()).await;
        assert_eq!((&jobs[0]["route"], &jobs[0]["status"]), (&"alerts".into(), &"succeeded".into()));
        assert_eq!(pager.bodies().len(), 1);
    }
}

store_test! {
    async fn an_events_route_whose_own_job_dies_makes_no_further_event(backend) {
        let (target, pager) = (Peer::start(500).await, Peer::start(503).await);
        let app = spawn_app(&backend, &config(&target, &pager)).await;
        let id = publish(&app, r#"{"n": 1}"#).await;
        assert_eq!(terminal_jobs(&app, &id).await[0]["status"], "dead");
        let event = eventually(Duration::from_secs(20), "the job.dead event", || async {
            ops_deliveries(&app).await.into_iter().next()
        })
        .await;
        let jobs = terminal_jobs(&app, event["id"].as_str().unwrap()).await;
        assert_eq!((&jobs[0]["route"], &jobs[0]["status"]), (&"alerts".into(), &"dead".into()));
        assert_eq!(pager.bodies().len(), 1);
        // The events route's dead job is not an event: a later one would be stored within milliseconds of it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stored = ops_deliveries(&app).await;
        assert_eq!(stored.len(), 1, "an event about the events route's own job: {stored:?}");
        assert_eq!(pager.bodies().len(), 1);
    }
}

store_test! {
    async fn the_metrics_show_how_long_each_routes_oldest_due_job_has_waited(backend) {
        // Metrics are process-wide and tests run in parallel: these route names are this test's own.
        let (parked, idle) = (format!("parked-{}", backend.name()), format!("idle-{}", backend.name()));
        let body = format!(
            r#"{APP_SOURCE}
[[routes]]
name = "{parked}"
source = "app"
enabled = false
action = {{ type = "command", argv = ["true"] }}

[[routes]]
name = "{idle}"
source = "app"
action = {{ type = "command", argv = ["true"] }}
"#
        );
        let app = spawn_app(&backend, &body).await;
        // A disabled route is never claimed: its job, due 90 s ago, waits in the queue.
        let now = hookgate::store::now_ms();
        let mut delivery = new_delivery("app", "old-one");
        delivery.received_at = now - 90_000;
        delivery.id = hookgate::store::id_at(delivery.received_at);
        let job = hookgate::store::NewJob {
            id: hookgate::store::new_id(),
            route: parked.clone(),
            coalesce_key: None,
            run_at: now - 90_000,
        };
        app.store.insert_delivery(delivery, vec![job]).await.unwrap();

        let metrics = app.client.get(format!("{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
        let value = |route: &str| -> f64 {
            let prefix = format!("hookgate_queue_oldest_seconds{{route=\"{route}\"}} ");
            let line = metrics.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{prefix}: {metrics}"));
            line[prefix.len()..].parse().unwrap()
        };
        let waited = value(&parked);
        assert!((90.0..120.0).contains(&waited), "{waited}");
        assert_eq!(value(&idle), 0.0);
        assert!(metrics.contains("# HELP hookgate_queue_oldest_seconds"), "{metrics}");
    }
}

store_test! {
    async fn pauses_resumes_and_the_circuit_opening_and_closing_are_events_too(backend) {
        let target = Peer::start(503).await;
        let pager = Peer::start(200).await;
        let breaker = r#"retry = { max_attempts = 5, initial = "10ms", max = "10ms" }
circuit_breaker = { window = "60s", max_failures = 2, open_for = "1h" }"#;
        let body = routes(&target, breaker, &pager, r#"event != "job.dead""#);
        let app = spawn_app(&backend, &body).await;
        let events = |n: usize| {
            let pager = pager.clone();
            async move {
                eventually(Duration::from_secs(10), "the pager's events", || async {
                    let got = pager.bodies();
                    (got.len() >= n).then_some(got)
                })
                .await
            }
        };

        // Two failures open the circuit.
        let id = publish(&app, r#"{"n":1}"#).await;
        let got = events(1).await;
        assert_eq!(got[0]["event"], "circuit.opened", "{got:?}");
        assert_eq!(got[0]["route"], "deploy");
        assert_eq!(got[0]["failures"], 2);
        assert!(got[0]["open_until"].as_str().is_some());

        let paused = app
            .client
            .post(format!("{}/api/v1/routes/deploy/pause", app.addr))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"reason": "peer down", "by": "dana"}))
            .send()
            .await
            .unwrap();
        assert_eq!(paused.status(), 200);
        let got = events(2).await;
        assert_eq!((got[1]["event"].as_str(), got[1]["by"].as_str()), (Some("route.paused"), Some("dana")));
        assert_eq!(got[1]["reason"], "peer down");

        // The peer is back. Resuming clears the pause and the open circuit: two events. (Were the peer still
        // down, the held job's next failures would open the circuit again at once, a fifth event.)
        target.answer(200);
        assert_eq!(app.admin_post("/api/v1/routes/deploy/resume").await.status(), 200);
        let got = events(4).await;
        // Both are stored at once and their jobs run side by side: they may arrive in either order.
        let mut names: Vec<&str> = got[2..].iter().map(|e| e["event"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["circuit.closed", "route.resumed"], "{got:?}");
        let resumed = got[2..].iter().find(|e| e["event"] == "route.resumed").unwrap();
        assert_eq!(resumed["by"], "admin API");
        // Every event is stored as a delivery of the `hookgate` source.
        let stored = app.admin_get("/api/v1/deliveries?source=hookgate").await;
        assert_eq!(stored["items"].as_array().unwrap().len(), 4, "{stored}");
        // The job held by the open circuit and the pause ran once they were cleared.
        assert_eq!(terminal_jobs(&app, &id).await[0]["status"], "succeeded");
    }
}
