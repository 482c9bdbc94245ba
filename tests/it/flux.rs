//! `examples/flux-reconcile.toml` as written (only its cluster address and service-account paths pointed at the
//! test's), on the real binary, against a TLS stand-in for the Kubernetes API with a CA the test makes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;

use crate::helpers::*;
use crate::http_tls::{serve_tls, write, Seen, TestCa};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.service-account-token-3f9d";
const GITREPOSITORY: &str = "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system";
const KUSTOMIZATION: &str = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/flux-system";

/// The API stand-in: records each request and answers with the status set for its path (200 by default).
struct KubeApi {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    statuses: Arc<Mutex<BTreeMap<&'static str, u16>>>,
}

impl KubeApi {
    async fn start(ca: &TestCa) -> KubeApi {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let statuses: Arc<Mutex<BTreeMap<&'static str, u16>>> = Arc::default();
        let (sink, answers) = (seen.clone(), statuses.clone());
        let app = Router::new().fallback(any(move |request: Request| {
            let (sink, answers) = (sink.clone(), answers.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let path = parts.uri.path().to_string();
                let status = answers.lock().unwrap().get(path.as_str()).copied().unwrap_or(200);
                sink.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path,
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let status = http::StatusCode::from_u16(status).unwrap();
                (status, [("content-type", "application/json")], r#"{"kind":"Status"}"#).into_response()
            }
        }));
        KubeApi { url: serve_tls(app, &ca.server(), None).await, seen, statuses }
    }

    fn answer(&self, path: &'static str, status: u16) {
        self.statuses.lock().unwrap().insert(path, status);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The example with the API at `api` and the service-account files in `dir` (a token and the CA).
fn flux_config(dir: &Path, api: &KubeApi, ca: &TestCa) -> std::path::PathBuf {
    let accounts = dir.join("serviceaccount");
    std::fs::create_dir(&accounts).unwrap();
    write(&accounts, "token", &format!("{TOKEN}\n"));
    write(&accounts, "ca.crt", &ca.pem());
    let example = std::fs::read_to_string(format!("{}/examples/flux-reconcile.toml", env!("CARGO_MANIFEST_DIR")));
    let text = example
        .unwrap()
        .replace("https://kubernetes.default.svc", &api.url)
        .replace("/var/run/secrets/kubernetes.io/serviceaccount", accounts.to_str().unwrap());
    write(dir, "hookgate.toml", &text)
}

/// A signed push to refs/heads/main; returns the stored delivery's id.
async fn push(server: &BinaryServer, delivery: &str) -> String {
    let response = send_push(&reqwest::Client::new(), &server.addr, delivery).await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Every job of the delivery, once all are finished, by route.
async fn finished_jobs(server: &BinaryServer, id: &str) -> BTreeMap<String, serde_json::Value> {
    eventually(Duration::from_secs(30), "the reconcile jobs to finish", || async {
        let detail = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
        let jobs = detail["jobs"].as_array().cloned().unwrap_or_default();
        let done = jobs.len() == 2 && jobs.iter().all(|j| j["status"] == "succeeded" || j["status"] == "dead");
        done.then(|| jobs.into_iter().map(|j| (j["route"].as_str().unwrap().to_string(), j)).collect())
    })
    .await
}

fn env(store_url: &str) -> [(&'static str, &str); 3] {
    [("HOOKGATE_STORE_URL", store_url), ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)]
}

store_test! {
    async fn a_push_to_main_annotates_the_gitrepository_and_the_kustomization_through_the_api(backend) {
        let ca = TestCa::new("cluster CA");
        let api = KubeApi::start(&ca).await;
        let dir = tempfile::tempdir().unwrap();
        let config = flux_config(dir.path(), &api, &ca);
        let store_url = backend.fresh_url(dir.path()).await;
        let server = BinaryServer::start(&config, &env(&store_url));

        let before = SystemTime::now();
        let id = push(&server, "flux-1").await;
        let jobs = finished_jobs(&server, &id).await;
        for route in ["flux-gitrepository", "flux-kustomization"] {
            assert_eq!(jobs[route]["status"], "succeeded", "{route}: {jobs:?}");
        }
        let after = SystemTime::now();

        let mut seen = api.seen();
        seen.sort_by(|a, b| a.path.cmp(&b.path));
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, [KUSTOMIZATION, GITREPOSITORY]);
        for request in &seen {
            assert_eq!(request.method, "PATCH", "{}", request.path);
            assert_eq!(request.headers["content-type"], "application/merge-patch+json");
            assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}").as_str());
            let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
            let annotations = body["metadata"]["annotations"].as_object().unwrap();
            assert_eq!(annotations.len(), 1, "{body}");
            let requested_at = annotations["reconcile.fluxcd.io/requestedAt"].as_str().unwrap();
            let at = humantime::parse_rfc3339(requested_at).unwrap();
            let slack = Duration::from_secs(2);
            assert!(before - slack <= at && at <= after + slack, "{requested_at} is not now");
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        }

        let mut server = server;
        assert!(server.terminate().success());
        let log = server.log_text();
        assert!(!log.contains(TOKEN), "the log holds the token:\n{log}");
    }
}

#[tokio::test]
async fn a_missing_object_or_refused_token_fails_at_once_with_the_reason() {
    let ca = TestCa::new("cluster CA");
    let api = KubeApi::start(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let config = flux_config(dir.path(), &api, &ca);
    let store_url = Backend::Sqlite.fresh_url(dir.path()).await;
    let server = BinaryServer::start(&config, &env(&store_url));

    let cases = [
        (404, "HTTP 404 Not Found: nothing at this URL (for Kubernetes: no such object in that namespace"),
        (403, "HTTP 403 Forbidden: the credentials are valid but not allowed this (for Kubernetes: the service account's Role lacks this verb"),
        (401, "HTTP 401 Unauthorized: the credentials were refused"),
    ];
    for (n, (status, reason)) in cases.into_iter().enumerate() {
        api.answer(GITREPOSITORY, status);
        api.answer(KUSTOMIZATION, status);
        let id = push(&server, &format!("flux-fail-{n}")).await;
        let jobs = finished_jobs(&server, &id).await;
        for route in ["flux-gitrepository", "flux-kustomization"] {
            let job = &jobs[route];
            assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("dead"), Some(1)), "{status}: {job}");
            let error = job["last_error"].as_str().unwrap();
            assert!(error.starts_with(reason), "{status}: {error}");
        }
    }
    assert_eq!(api.seen().len(), 6, "one request per route and push: no retry");
}
