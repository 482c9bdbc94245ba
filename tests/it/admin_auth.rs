//! Admin authentication: any case of the Bearer scheme, failed attempts logged (never the token) and
//! limited per client address — 429 before the token is even looked at — while successes never count.

use std::net::IpAddr;

use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// An app on port 0 with `admin` keys (besides the token) and `server` keys in the head.
struct App {
    base: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn spawn(admin: &str) -> App {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}/hookgate.db\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n{admin}\n{GITHUB_SOURCE}",
        dir.path().display()
    );
    let config =
        hookgate::config::parse(&text, dir.path(), &std::collections::BTreeMap::<String, String>::new()).unwrap();
    let app = hookgate::startup::Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    App { base, stop, _dir: dir }
}

/// A client whose connections come from `from` (any 127.x address reaches a loopback listener).
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(from.parse::<IpAddr>().unwrap()).build().unwrap()
}

async fn get(client: &reqwest::Client, app: &App, authorization: Option<&str>) -> reqwest::Response {
    let mut request = client.get(format!("{}/api/v1/deliveries", app.base));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let app = spawn("").await;
    let client = reqwest::Client::new();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = get(&client, &app, Some(&format!("{scheme} {ADMIN_TOKEN}"))).await;
        assert_eq!(response.status(), 200, "{scheme}");
    }
    for wrong in [format!("Basic {ADMIN_TOKEN}"), ADMIN_TOKEN.to_string(), format!("Bearer {ADMIN_TOKEN}x")] {
        assert_eq!(get(&client, &app, Some(&wrong)).await.status(), 401, "{wrong}");
    }
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address_and_then_even_the_right_token_waits() {
    let app = spawn("auth_failure_limit = \"3/m\"").await;
    let guesser = client_from("127.0.0.1");
    for n in 0..3 {
        let response = get(&guesser, &app, Some(&format!("Bearer guess-{n}"))).await;
        assert_eq!(response.status(), 401, "guess {n}");
    }
    let refused = get(&guesser, &app, Some("Bearer guess-3")).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    // Blocked before the token is checked: a right guess now would teach the guesser nothing.
    assert_eq!(get(&guesser, &app, Some(&format!("Bearer {ADMIN_TOKEN}"))).await.status(), 429);
    assert_eq!(get(&guesser, &app, None).await.status(), 429);

    // Another address is not affected.
    let operator = client_from("127.0.0.2");
    assert_eq!(get(&operator, &app, Some(&format!("Bearer {ADMIN_TOKEN}"))).await.status(), 200);
    assert_eq!(get(&operator, &app, Some("Bearer one-typo")).await.status(), 401);
}

#[tokio::test]
async fn successful_requests_are_never_limited() {
    let app = spawn("auth_failure_limit = \"2/m\"").await;
    let client = client_from("127.0.0.3");
    for n in 0..40 {
        assert_eq!(get(&client, &app, Some(&format!("Bearer {ADMIN_TOKEN}"))).await.status(), 200, "request {n}");
    }
    // The quota is still whole: two failures are answered 401, the third is over it.
    assert_eq!(get(&client, &app, Some("Bearer typo-1")).await.status(), 401);
    assert_eq!(get(&client, &app, Some("Bearer typo-2")).await.status(), 401);
    assert_eq!(get(&client, &app, Some("Bearer typo-3")).await.status(), 429);
}

fn binary_config(dir: &std::path::Path, log_client_ip: bool) -> std::path::PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nlog_client_ip = {log_client_ip}\n[store]\nurl = \"sqlite://{}/hookgate.db\"\n[admin]\ntoken = \"env:HOOKGATE_ADMIN_TOKEN\"\n{GITHUB_SOURCE}",
        dir.display()
    );
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const GUESS: &str = "guessed-token-value-1234";
const BASIC: &str = "YWRtaW46aHVudGVyMg==";

/// Three kinds of failure against the real binary; returns its log.
async fn failures_logged(log_client_ip: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        BinaryServer::start(&binary_config(dir.path(), log_client_ip), &[("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/jobs?status=dead", server.addr);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(client.get(&url).header("authorization", format!("Basic {BASIC}")).send().await.unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth(GUESS).send().await.unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), 200);
    assert!(server.terminate().success());
    server.log_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_admin_authentications_are_logged_with_path_and_reason_but_never_the_token() {
    let log = failures_logged(false).await;
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("admin authentication failed")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    for (line, reason) in lines.iter().zip(["no authorization header", "not a bearer token", "wrong token"]) {
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("path=/api/v1/jobs"), "{line}");
        assert!(line.contains(reason), "{reason}: {line}");
        assert!(!line.contains("127.0.0.1"), "a client address without log_client_ip: {line}");
    }
    for secret in [GUESS, BASIC, ADMIN_TOKEN] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_client_ip_failed_admin_authentications_name_the_client() {
    let log = failures_logged(true).await;
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("admin authentication failed")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines.iter().all(|l| l.contains("client_ip=127.0.0.1")), "{log}");
    assert!(!log.contains(GUESS) && !log.contains(BASIC), "{log}");
}
