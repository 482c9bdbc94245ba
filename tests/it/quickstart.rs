//! The quick start's public fallback secret `change-me` verifies only while GITHUB_WEBHOOK_SECRET is unset,
//! and the binary warns at start about written-in secrets and a short admin token, never printing them.

use crate::helpers::*;

const FROM_ENV: &str = "a-secret-only-the-environment-knows";

fn quickstart() -> String {
    format!("{}/examples/quickstart.toml", env!("CARGO_MANIFEST_DIR"))
}

/// The real binary on the real example; its database in a temporary directory.
fn start(dir: &std::path::Path, github_secret: &str) -> BinaryServer {
    let store = format!("sqlite://{}/hookgate.db", dir.display());
    BinaryServer::start(
        std::path::Path::new(&quickstart()),
        &[("HOOKGATE_STORE_URL", &store), ("HOOKGATE_ADMIN_TOKEN", "admin"), ("GITHUB_WEBHOOK_SECRET", github_secret)],
    )
}

async fn push_signed_with(server: &BinaryServer, secret: &str, delivery: &str) -> u16 {
    let body = push_body("refs/heads/main", "octo/hello");
    reqwest::Client::new()
        .post(format!("{}/hooks/github", server.addr))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", github_signature(secret, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_variable_set_the_public_change_me_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), FROM_ENV);
    assert_eq!(push_signed_with(&server, "change-me", "qs-public").await, 401);
    assert_eq!(push_signed_with(&server, FROM_ENV, "qs-env").await, 202);
    assert!(server.terminate().success());
    let log = server.log_text();
    assert!(log.contains("admin.token: shorter than 16 characters"), "{log}");
    assert!(!log.contains("a literal secret"), "no fallback is in use:\n{log}");
    assert!(!log.contains(FROM_ENV), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_variable_unset_change_me_verifies_and_the_binary_warns_about_it() {
    let dir = tempfile::tempdir().unwrap();
    // Empty counts as unset (and overrides whatever the test runner's environment holds).
    let mut server = start(dir.path(), "");
    assert_eq!(push_signed_with(&server, "change-me", "qs-public").await, 202);
    assert!(server.terminate().success());
    let log = server.log_text();
    let warning =
        log.lines().find(|l| l.contains("sources[0].secrets[0]: a literal secret")).unwrap_or_else(|| panic!("{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(log.contains("admin.token: shorter than 16 characters"), "{log}");
    assert!(!log.contains("change-me"), "the log holds the secret:\n{log}");
}
