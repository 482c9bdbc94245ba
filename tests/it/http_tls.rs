//! The http action reaching internal APIs: a private CA, a peer that demands a client certificate (mTLS), a
//! server on a Unix socket, and a `file:` header read again at each attempt. Real servers, certificates made by
//! the test with rcgen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::routing::any;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::helpers::*;

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, issued by a [`TestCa`].
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        TestCa { cert: params.self_signed(&key).unwrap(), key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.issue(vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self) -> Leaf {
        self.issue(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "hookgate test");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Serves `app` over TLS on 127.0.0.1 with `server`'s certificate; when `client_ca` is given, a client
/// certificate issued by it is demanded. Returns `https://localhost:PORT`.
pub async fn serve_tls(app: Router, server: &Leaf, client_ca: Option<&TestCa>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone()));
    let mut config = builder.with_single_cert(vec![server.der.clone()], key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A refused handshake (no or an unknown client certificate) just ends the connection.
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    format!("https://localhost:{port}")
}

/// What a test peer saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// A router answering 200 "ok" that records every request.
pub fn recording() -> (Router, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let app = Router::new().fallback(any(move |request: Request| {
        let sink = sink.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            sink.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            "ok"
        }
    }));
    (app, seen)
}

/// One route per entry, each `(name, action options)`, on the GitHub source; one attempt each.
fn routes(entries: &[(&str, String)]) -> String {
    let mut text = GITHUB_SOURCE.to_string();
    for (name, action) in entries {
        text.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\nsource = \"github\"\nretry = {{ max_attempts = 1 }}\naction = {{ type = \"http\", {action} }}\n"
        ));
    }
    text
}

/// Push once and wait for every job; returns `route name -> job`.
async fn push_and_wait(app: &TestApp, delivery: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let body = push_body("refs/heads/main", "octo/hello");
    let json: serde_json::Value = app.github("push", delivery, &body).await.json().await.unwrap();
    let jobs = terminal_jobs(app, json["id"].as_str().unwrap()).await;
    jobs.into_iter().map(|j| (j["route"].as_str().unwrap().to_string(), j)).collect()
}

fn last_error(job: &serde_json::Value) -> String {
    job["last_error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_peer_demanding_a_client_certificate_refuses_a_job_without_one_and_serves_it_with_one() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("internal CA");
    let (app, seen) = recording();
    let url = serve_tls(app, &ca.server(), Some(&ca)).await;
    let client = ca.client();
    let ca_path = write(pki.path(), "ca.pem", &ca.pem());
    let cert = write(pki.path(), "client.pem", &client.cert_pem);
    let key = write(pki.path(), "client.key", &client.key_pem);
    let (ca_path, cert, key) = (ca_path.display(), cert.display(), key.display());

    let app = spawn_app(
        &Backend::Sqlite,
        &routes(&[
            ("anonymous", format!(r#"url = "{url}/agent/run", ca = "file:{ca_path}""#)),
            (
                "mutual",
                format!(
                    r#"url = "{url}/agent/run", ca = "file:{ca_path}", client_cert = "{cert}", client_key = "{key}""#
                ),
            ),
        ]),
    )
    .await;
    let jobs = push_and_wait(&app, "mtls-1").await;
    assert_eq!(jobs["mutual"]["status"], "succeeded", "{jobs:?}");
    assert_eq!(jobs["anonymous"]["status"], "dead", "{jobs:?}");
    let error = last_error(&jobs["anonymous"]);
    assert_eq!(error, "request failed: received fatal alert: CertificateRequired");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "only the job with the client certificate got through");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/agent/run"));
}

#[tokio::test]
async fn a_private_ca_must_be_configured_and_ca_only_trusts_nothing_else() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("internal CA");
    let other = TestCa::new("another CA");
    let (app, seen) = recording();
    let url = serve_tls(app, &ca.server(), None).await;
    let right = write(pki.path(), "ca.pem", &ca.pem());
    let wrong = write(pki.path(), "other.pem", &other.pem());
    let (right, wrong) = (right.display(), wrong.display());

    let app = spawn_app(
        &Backend::Sqlite,
        &routes(&[
            ("public-roots-only", format!(r#"url = "{url}/x""#)),
            ("another-ca-only", format!(r#"url = "{url}/x", ca = "file:{wrong}", ca_only = true"#)),
            ("its-ca-only", format!(r#"url = "{url}/x", ca = "{right}", ca_only = true"#)),
            ("its-ca-and-public-roots", format!(r#"url = "{url}/x", ca = "file:{right}""#)),
        ]),
    )
    .await;
    let jobs = push_and_wait(&app, "ca-1").await;
    for refused in ["public-roots-only", "another-ca-only"] {
        assert_eq!(jobs[refused]["status"], "dead", "{refused}: {jobs:?}");
        let error = last_error(&jobs[refused]);
        assert!(error.contains("invalid peer certificate: UnknownIssuer"), "{refused}: {error}");
    }
    for trusted in ["its-ca-only", "its-ca-and-public-roots"] {
        assert_eq!(jobs[trusted]["status"], "succeeded", "{trusted}: {jobs:?}");
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
}

store_test! {
    async fn a_request_over_a_unix_socket_arrives_with_method_path_headers_and_body(backend) {
        let sockets = tempfile::tempdir().unwrap();
        let socket = sockets.path().join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let (router, seen) = crate::http_tls::recording();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

        let action = format!(
            r#"url = "http://docker/v1.47/containers/{{{{ body.repository.name }}}}/restart?t=5", method = "POST", unix_socket = "{}", headers = {{ "X-Registry-Auth" = "e30=" }}, body = '{{"ref": "{{{{ body.ref }}}}"}}'"#,
            socket.display()
        );
        let app = spawn_app(&backend, &crate::http_tls::routes(&[("restart", action)])).await;
        let jobs = crate::http_tls::push_and_wait(&app, "uds-1").await;
        assert_eq!(jobs["restart"]["status"], "succeeded", "{jobs:?}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/v1.47/containers/hello/restart?t=5");
        assert_eq!(seen[0].headers["host"], "docker");
        assert_eq!(seen[0].headers["x-registry-auth"], "e30=");
        assert_eq!(seen[0].headers["content-type"], "application/json");
        assert_eq!(seen[0].body, r#"{"ref": "refs/heads/main"}"#);
    }
}

#[tokio::test]
async fn a_file_header_is_read_again_at_each_attempt_and_never_shown() {
    let secrets = tempfile::tempdir().unwrap();
    let token = write(secrets.path(), "token", "first-token-4a7c\n");
    // The peer rotates the token file while it answers the first attempt 503, so the retry must read it anew.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (sink, rotate) = (seen.clone(), token.clone());
    let peer = Router::new().fallback(any(move |request: Request| {
        let (sink, rotate) = (sink.clone(), rotate.clone());
        async move {
            let mut sink = sink.lock().unwrap();
            let auth = request.headers().get("authorization").map(|v| v.to_str().unwrap().to_string());
            let key = request.headers().get("x-api-key").map(|v| v.to_str().unwrap().to_string());
            sink.push(format!("{} {}", auth.unwrap_or_default(), key.unwrap_or_default()));
            if sink.len() == 1 {
                std::fs::write(&rotate, "second-token-9e21\n").unwrap();
                return http::StatusCode::SERVICE_UNAVAILABLE;
            }
            http::StatusCode::OK
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, peer).await.unwrap() });

    let text = format!(
        "{GITHUB_SOURCE}\n[[routes]]\nname = \"api\"\nsource = \"github\"\n\
         retry = {{ max_attempts = 3, initial = \"50ms\", max = \"100ms\" }}\n\
         action = {{ type = \"http\", url = \"{url}/v1/deploy\", bearer_token = \"file:{}\", headers = {{ \"X-Api-Key\" = \"env:AGENT_API_KEY\" }} }}\n",
        token.display()
    );
    let env = [("AGENT_API_KEY".to_string(), "api-key-77f0".to_string())].into();
    let app = spawn_app_with_env(&Backend::Sqlite, &text, env).await;
    let body = push_body("refs/heads/main", "octo/hello");
    let json: serde_json::Value = app.github("push", "rotate-1", &body).await.json().await.unwrap();
    let id = json["id"].as_str().unwrap().to_string();
    let jobs = terminal_jobs(&app, &id).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{jobs:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        ["Bearer first-token-4a7c api-key-77f0", "Bearer second-token-9e21 api-key-77f0"]
    );
    let detail = app.admin_get(&format!("/api/v1/deliveries/{id}")).await.to_string();
    for secret in ["first-token", "second-token", "api-key-77f0"] {
        assert!(!detail.contains(secret), "the API shows {secret}: {detail}");
    }

    // The file gone: the attempt fails naming the path, and retries (the volume may be back).
    std::fs::remove_file(&token).unwrap();
    let json: serde_json::Value = app.github("push", "rotate-2", &body).await.json().await.unwrap();
    let jobs = terminal_jobs(&app, json["id"].as_str().unwrap()).await;
    assert_eq!((jobs[0]["status"].as_str(), jobs[0]["attempts"].as_i64()), (Some("dead"), Some(3)), "{jobs:?}");
    let error = last_error(&jobs[0]);
    assert_eq!(error, format!("cannot read header `authorization` from {}: entity not found", token.display()));
}

#[test]
fn check_refuses_a_missing_or_bad_pem_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write(dir.path(), "ca.pem", "not a certificate\n");
    let ca = TestCa::new("c");
    let client = ca.client();
    let cert = write(dir.path(), "client.pem", &client.cert_pem);
    let cases = [
        (format!(r#"ca = "file:{}""#, not_pem.display()), "routes[0].action.ca: "),
        (format!(r#"ca = "file:{}/missing.pem""#, dir.path().display()), "routes[0].action.ca: cannot read"),
        (
            format!(r#"client_cert = "{}", client_key = "{}""#, cert.display(), cert.display()),
            "routes[0].action.client_key: ",
        ),
        (format!(r#"client_cert = "{}""#, cert.display()), "routes[0].action.client_key: missing"),
        ("ca_only = true".to_string(), "routes[0].action.ca_only: needs `ca`"),
    ];
    for (options, expected) in cases {
        let config =
            write(dir.path(), "hookgate.toml", &routes(&[("r", format!(r#"url = "https://a.internal/", {options}"#))]));
        let out = std::process::Command::new(hookgate_bin())
            .args(["check", "--config"])
            .arg(&config)
            .env("GITHUB_WEBHOOK_SECRET", "s")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{options}: {stderr}");
        assert!(stderr.contains(expected), "{options}: {stderr}");
    }
}

#[tokio::test]
async fn a_replaced_ca_file_is_trusted_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let (app, seen) = recording();
    let url = serve_tls(app, &new.server(), None).await;
    let ca = write(dir.path(), "ca.pem", &old.pem());
    let rest = format!(
        "[[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"env:GITHUB_WEBHOOK_SECRET\"]\n\
         [[routes]]\nname = \"agent\"\nsource = \"github\"\nretry = {{ max_attempts = 1 }}\n\
         action = {{ type = \"http\", url = \"{url}/run\", ca = \"file:{}\", ca_only = true }}\n",
        ca.display()
    );
    let config = binary_config(dir.path(), "", &rest);
    let server = BinaryServer::start(
        &config,
        &[("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let run = |delivery: &'static str| {
        let addr = server.addr.clone();
        async move {
            let response = send_push(&reqwest::Client::new(), &addr, delivery).await.unwrap();
            let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
            eventually(std::time::Duration::from_secs(20), "the job to finish", || async {
                let job = admin_json(&addr, &format!("/api/v1/deliveries/{id}")).await["jobs"][0].clone();
                (job["status"] == "succeeded" || job["status"] == "dead").then_some(job)
            })
            .await
        }
    };
    let before = run("reload-1").await;
    assert_eq!(before["status"], "dead", "{before}");
    assert!(last_error(&before).contains("UnknownIssuer"), "{before}");

    std::fs::write(&ca, new.pem()).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(std::time::Duration::from_secs(10), "the reload", || async {
        server.log_text().contains("configuration reloaded").then_some(())
    })
    .await;
    let after = run("reload-2").await;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
