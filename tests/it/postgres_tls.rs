//! PostgreSQL over TLS: every `sslmode` against the local server, which `.ci/postgres-tls` sets up with a test CA.
//!
//! Needs `HOOKGATE_TEST_POSTGRES_URL` and `HOOKGATE_TEST_POSTGRES_CA` (the CA's `ca.pem`; `other-ca.pem`,
//! `client.pem` and `client.key` lie beside it), as `.ci/run` exports them; says it was skipped otherwise.
//! Whether a connection really is encrypted is read from the server's side (`pg_stat_ssl`), for the
//! connections of a store opened with a unique `application_name`.

use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::*;

struct TlsServer {
    /// HOOKGATE_TEST_POSTGRES_URL: a plaintext URL to the server, with host 127.0.0.1.
    base: url::Url,
    dir: PathBuf,
}

impl TlsServer {
    fn from_env() -> Option<TlsServer> {
        let (Ok(base), Ok(ca)) =
            (std::env::var("HOOKGATE_TEST_POSTGRES_URL"), std::env::var("HOOKGATE_TEST_POSTGRES_CA"))
        else {
            eprintln!(
                "skipped: HOOKGATE_TEST_POSTGRES_CA or HOOKGATE_TEST_POSTGRES_URL is not set (.ci/postgres-tls makes the CA)"
            );
            return None;
        };
        let dir = PathBuf::from(ca).parent().expect("the CA file is in a directory").to_path_buf();
        Some(TlsServer { base: base.parse().expect("HOOKGATE_TEST_POSTGRES_URL is a URL"), dir })
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A URL to a fresh schema, reached as `host`, with `params` appended and a unique application name.
    async fn url(&self, host: &str, params: &[(&str, String)]) -> (String, String) {
        let schema_url = hookgate::store::postgres::fresh_schema_url(self.base.as_str()).await.expect("PostgreSQL");
        let mut url: url::Url = schema_url.parse().unwrap();
        url.set_host(Some(host)).unwrap();
        let name = format!("hookgate-tls-{}", hookgate::store::new_id());
        url.query_pairs_mut().append_pair("application_name", &name);
        for (key, value) in params {
            url.query_pairs_mut().append_pair(key, value);
        }
        (url.to_string(), name)
    }

    /// For each server connection of `application_name`: whether it is encrypted, and the client
    /// certificate's subject (read on a connection of its own).
    async fn connections(&self, application_name: &str) -> Vec<(bool, Option<String>)> {
        // Plaintext on purpose: the observer needs no TLS of ours to report on the store's connections.
        let (client, connection) =
            tokio_postgres::connect(self.base.as_str(), tokio_postgres::NoTls).await.expect("observer connects");
        let task = tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT s.ssl, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = $1",
                &[&application_name],
            )
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// Open a store on `url` (migrations run), use it, and report its connections as the server sees them.
    async fn open_and_inspect(&self, url: &str, name: &str) -> Result<Vec<(bool, Option<String>)>, String> {
        let url = hookgate::store::StoreUrl::parse(url).map_err(|e| e.to_string())?;
        let store = hookgate::store::open(&url).await.map_err(|e| e.to_string())?;
        store.job_counts().await.map_err(|e| e.to_string())?;
        let seen = self.connections(name).await;
        drop(store);
        Ok(seen)
    }
}

/// Query parameters to add to a URL.
type Params = Vec<(&'static str, String)>;

fn params(list: &[(&'static str, &str)]) -> Params {
    list.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[tokio::test]
async fn every_sslmode_connects_and_only_disable_is_plaintext() {
    let Some(server) = TlsServer::from_env() else { return };
    let ca = server.file("ca.pem");
    let cases: [(&str, Params, bool); 8] = [
        ("127.0.0.1", params(&[]), true), // the default is prefer, and this server offers TLS
        ("127.0.0.1", params(&[("sslmode", "disable")]), false),
        ("127.0.0.1", params(&[("sslmode", "prefer")]), true),
        ("127.0.0.1", params(&[("sslmode", "require")]), true),
        ("127.0.0.1", params(&[("sslmode", "require"), ("sslrootcert", &ca)]), true),
        ("127.0.0.1", params(&[("sslmode", "verify-ca"), ("sslrootcert", &ca)]), true),
        ("localhost", params(&[("sslmode", "verify-full"), ("sslrootcert", &ca)]), true),
        // The certificate names IP 127.0.0.1 too, and an IP address is checked against it.
        ("127.0.0.1", params(&[("sslmode", "verify-full"), ("sslrootcert", &ca)]), true),
    ];
    for (host, params, encrypted) in cases {
        let (url, name) = server.url(host, &params).await;
        let seen = server.open_and_inspect(&url, &name).await.unwrap_or_else(|e| panic!("{host} {params:?}: {e}"));
        assert!(!seen.is_empty(), "{host} {params:?}: the store holds a connection");
        assert!(
            seen.iter().all(|(ssl, _)| *ssl == encrypted),
            "{host} {params:?}: ssl should be {encrypted}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_unless_nothing_is_checked() {
    let Some(server) = TlsServer::from_env() else { return };
    let other = server.file("other-ca.pem");
    for mode in ["verify-full", "verify-ca", "require"] {
        let (url, name) = server.url("localhost", &params(&[("sslmode", mode), ("sslrootcert", &other)])).await;
        let err = server.open_and_inspect(&url, &name).await.expect_err(mode);
        assert!(err.contains("invalid peer certificate") && err.contains("UnknownIssuer"), "{mode}: {err}");
    }
    // Without a root file, require encrypts but checks nothing (libpq's meaning).
    let (url, name) = server.url("localhost", &params(&[("sslmode", "require")])).await;
    assert!(server.open_and_inspect(&url, &name).await.unwrap().iter().all(|(ssl, _)| *ssl));
}

#[tokio::test]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_name_and_verify_ca_does_not_check_it() {
    let Some(server) = TlsServer::from_env() else { return };
    let ca = server.file("ca.pem");
    // hostaddr makes the connection go to 127.0.0.1 while the name checked is the host's.
    let host = "db.hookgate.invalid";
    let full = params(&[("sslmode", "verify-full"), ("sslrootcert", &ca), ("hostaddr", "127.0.0.1")]);
    let (url, name) = server.url(host, &full).await;
    let err = server.open_and_inspect(&url, &name).await.expect_err("name mismatch");
    assert!(err.contains("invalid peer certificate") && err.contains("not valid for name"), "{err}");

    let ca_only = params(&[("sslmode", "verify-ca"), ("sslrootcert", &ca), ("hostaddr", "127.0.0.1")]);
    let (url, name) = server.url(host, &ca_only).await;
    let seen = server.open_and_inspect(&url, &name).await.expect("verify-ca ignores the name");
    assert!(!seen.is_empty() && seen.iter().all(|(ssl, _)| *ssl), "{seen:?}");
}

#[tokio::test]
async fn sslcert_and_sslkey_present_a_client_certificate() {
    let Some(server) = TlsServer::from_env() else { return };
    let (cert, key, ca) = (server.file("client.pem"), server.file("client.key"), server.file("ca.pem"));
    let list = params(&[("sslmode", "verify-full"), ("sslrootcert", &ca), ("sslcert", &cert), ("sslkey", &key)]);
    let (url, name) = server.url("localhost", &list).await;
    let seen = server.open_and_inspect(&url, &name).await.unwrap();
    assert!(!seen.is_empty());
    for (ssl, client_dn) in seen {
        assert!(ssl);
        assert_eq!(client_dn.as_deref(), Some("/CN=hookgate-test"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_stores_a_webhook_and_runs_its_job_over_verify_full() {
    let Some(server) = TlsServer::from_env() else { return };
    let ca = server.file("ca.pem");
    let (url, name) = server.url("localhost", &params(&[("sslmode", "verify-full"), ("sslrootcert", &ca)])).await;
    let app = spawn_app_at(
        &url,
        &format!(
            r#"{GITHUB_SOURCE}
[[routes]]
name = "record"
source = "github"
filter = 'event == "push"'
action = {{ type = "command", argv = ["touch", "{{dir}}/ran"] }}
"#
        ),
    )
    .await;
    let response = app.github("push", "tls-1", &push_body("refs/heads/main", "octo/tls")).await;
    assert_eq!(response.status(), 202);
    let json: serde_json::Value = response.json().await.unwrap();
    let jobs = terminal_jobs(&app, json["id"].as_str().unwrap()).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{jobs:?}");
    assert!(app.path("ran").exists());
    let seen = eventually(Duration::from_secs(5), "the app's connections", || async {
        let seen = server.connections(&name).await;
        (!seen.is_empty()).then_some(seen)
    })
    .await;
    assert!(seen.iter().all(|(ssl, _)| *ssl), "every connection of the app is encrypted: {seen:?}");
    app.stop().await;
}

#[test]
fn a_bad_sslmode_or_an_unreadable_root_file_is_a_config_error_naming_store_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    for query in ["sslmode=sometimes", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"] {
        let url = format!("postgres://app:hunter2@127.0.0.1:5432/db?{query}");
        std::fs::write(&path, format!("[store]\nurl = \"{url}\"\n")).unwrap();
        let out = std::process::Command::new(hookgate_bin())
            .args(["check", "-c", path.to_str().unwrap()])
            .env_remove("HOOKGATE_STORE_URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{query}: {err}");
        assert!(err.contains("store.url"), "{query}: {err}");
        assert!(!err.contains("hunter2"), "the password never appears: {err}");
    }
}
