//! Test support: the app on port 0 with a fresh SQLite file, the real binary, independent signers, polling.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running in-process hookgate with its own temporary directory and database.
pub struct TestApp {
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub store: hookgate::store::DynStore,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Which store a test runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The server's base URL; every test gets its own fresh schema on it.
    Postgres(String),
}

impl Backend {
    /// "sqlite" or "postgres": tells apart names that share the process-wide metrics recorder.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub fn postgres() -> Option<Backend> {
        std::env::var("HOOKGATE_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()).map(Backend::Postgres)
    }

    /// A store URL with nothing in it yet.
    pub async fn fresh_url(&self, dir: &Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}/hookgate.db", dir.display()),
            Backend::Postgres(base) => {
                hookgate::store::postgres::fresh_schema_url(base).await.expect("PostgreSQL is reachable")
            }
        }
    }
}

/// The `[server]`/`[store]`/`[admin]`/`[worker]` head every test config gets.
fn head(store_url: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{store_url}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n[worker]\npoll_interval = \"100ms\"\nshutdown_grace = \"5s\"\n"
    )
}

/// Start the app on `backend` with `body` (sources and routes) appended to a test head. `{dir}` in `body`
/// is replaced by the test's temporary directory.
pub async fn spawn_app(backend: &Backend, body: &str) -> TestApp {
    spawn_app_with_env(backend, body, BTreeMap::new()).await
}

pub async fn spawn_app_with_env(backend: &Backend, body: &str, env: BTreeMap<String, String>) -> TestApp {
    spawn_app_configured(backend, "", body, env).await
}

/// Like [`spawn_app`], with extra `[worker]` keys (such as `concurrency = 2`).
pub async fn spawn_app_with_worker(backend: &Backend, worker: &str, body: &str) -> TestApp {
    spawn_app_configured(backend, worker, body, BTreeMap::new()).await
}

async fn spawn_app_configured(backend: &Backend, worker: &str, body: &str, env: BTreeMap<String, String>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let mut head = head(&url);
    if worker.contains("poll_interval") {
        head = head.replace("poll_interval = \"100ms\"\n", "");
    }
    let head = head.replace("[worker]\n", &format!("[worker]\n{worker}\n"));
    let text = format!("{head}{}", body.replace("{dir}", &dir.path().display().to_string()));
    let config = hookgate::config::parse(&text, dir.path(), &env).expect("test config is valid");
    let app = hookgate::startup::Application::build(config).await.expect("app builds");
    let addr = format!("http://127.0.0.1:{}", app.port());
    let store = app.state().store.clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp { addr, dir, client: reqwest::Client::new(), store, shutdown, handle: Some(handle) }
}

/// Build the app (store opened, port bound) without running it: tests drive the worker step by step.
pub async fn build_app(backend: &Backend, body: &str) -> (hookgate::startup::Application, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let text = format!("{}{}", head(&url), body.replace("{dir}", &dir.path().display().to_string()));
    let config = hookgate::config::parse(&text, dir.path(), &BTreeMap::<String, String>::new()).unwrap();
    (hookgate::startup::Application::build(config).await.unwrap(), dir)
}

pub fn new_delivery(source: &str, delivery: &str) -> hookgate::store::Delivery {
    hookgate::store::Delivery {
        id: hookgate::store::new_id(),
        source: source.into(),
        event: "push".into(),
        delivery: delivery.into(),
        received_at: hookgate::store::now_ms(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from_static(b"{}"),
        replay_key: None,
    }
}

impl TestApp {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn post_hook(&self, source: &str, headers: &[(&str, String)], body: &str) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/hooks/{source}", self.addr)).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("request sent")
    }

    /// A correctly signed GitHub delivery.
    pub async fn github(&self, event: &str, delivery: &str, body: &str) -> reqwest::Response {
        self.post_hook("github", &github_headers(event, delivery, body), body).await
    }

    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let response = self.client.get(format!("{}{path}", self.addr)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.unwrap()
    }

    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.client.post(format!("{}{path}", self.addr)).bearer_auth(ADMIN_TOKEN).send().await.unwrap()
    }

    /// Stop gracefully and wait for the worker to drain; the test keeps the directory (and database).
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// GitHub's `X-Hub-Signature-256`, computed here with the hmac crate, independently of hookgate's code.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn github_headers(event: &str, delivery: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".to_string()),
        ("x-github-event", event.to_string()),
        ("x-github-delivery", delivery.to_string()),
        ("x-hub-signature-256", github_signature(GITHUB_SECRET, body.as_bytes())),
    ]
}

pub fn push_body(reference: &str, full_name: &str) -> String {
    let name = full_name.rsplit('/').next().unwrap();
    serde_json::json!({
        "ref": reference,
        "after": "0000000000000000000000000000000000000001",
        "repository": { "name": name, "full_name": full_name },
        "pusher": { "name": "octo", "email": "octo@example.com" }
    })
    .to_string()
}

pub const GITHUB_SOURCE: &str = r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["It's a Secret to Everybody"]
"#;

/// POST a correctly signed GitHub `push` with delivery id `delivery` to `base`'s `/hooks/github`.
/// The GitHub source with two routes: `ok` takes pushes to main and always succeeds; `broken` takes pushes to
/// `refs/heads/broken` and always fails, retried as `broken_retry` says. `source_keys` go on the source.
pub fn ok_and_broken_routes(source_keys: &str, broken_retry: &str) -> String {
    format!(
        r#"{GITHUB_SOURCE}{source_keys}
[[routes]]
name = "ok"
source = "github"
filter = 'body.ref == "refs/heads/main"'
action = {{ type = "command", argv = ["true"] }}

[[routes]]
name = "broken"
source = "github"
filter = 'body.ref == "refs/heads/broken"'
action = {{ type = "command", argv = ["false"] }}
retry = {broken_retry}
"#
    )
}

pub async fn send_push(client: &reqwest::Client, base: &str, delivery: &str) -> reqwest::Result<reqwest::Response> {
    let body = push_body("refs/heads/main", "acme/fleet");
    let mut request = client.post(format!("{base}/hooks/github")).body(body.clone());
    for (k, v) in github_headers("push", delivery, &body) {
        request = request.header(k, v);
    }
    request.send().await
}

/// Poll `check` until it returns Some, for at most `limit`; panics with `what` on timeout.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Jobs of a delivery, from the admin API.
pub async fn delivery_jobs(app: &TestApp, id: &str) -> Vec<serde_json::Value> {
    app.admin_get(&format!("/api/v1/deliveries/{id}")).await["jobs"].as_array().unwrap().clone()
}

/// Wait until every job of the delivery is succeeded or dead, returning them.
pub async fn terminal_jobs(app: &TestApp, id: &str) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(20), "jobs to finish", || async {
        let jobs = delivery_jobs(app, id).await;
        jobs.iter().all(|j| j["status"] == "succeeded" || j["status"] == "dead").then_some(jobs)
    })
    .await
}

/// The real `hookgate` binary serving a config file; its port is read from the "listening" log line.
/// The address in the server's `listening` line, text (`listening addr=…`) or JSON (`"addr":"…"`).
fn listening_addr(line: &str) -> Option<String> {
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        return (value["message"] == "listening").then(|| value["addr"].as_str().map(String::from)).flatten();
    }
    let pos = line.find("listening addr=")?;
    Some(line[pos + "listening addr=".len()..].split_whitespace().next().unwrap_or("").to_string())
}

pub struct BinaryServer {
    pub child: Child,
    pub addr: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn hookgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hookgate")
}

impl BinaryServer {
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> BinaryServer {
        Self::start_wrapped(&[], config, envs)
    }

    /// Start the binary under `wrapper` (a program and its arguments, such as `prlimit --nofile=…`).
    pub fn start_wrapped(wrapper: &[&str], config: &Path, envs: &[(&str, &str)]) -> BinaryServer {
        Self::start_as(wrapper, hookgate_bin(), config, envs)
    }

    /// Start `binary` (the path the wrapper sees it at, such as inside a sandbox) under `wrapper`.
    pub fn start_as(wrapper: &[&str], binary: &str, config: &Path, envs: &[(&str, &str)]) -> BinaryServer {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("HOOKGATE_LISTEN", "127.0.0.1:0")
            .env("HOOKGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("hookgate binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("hookgate did not start: {:?}", log.lock().unwrap());
            }
        };
        BinaryServer { child, addr: format!("http://{addr}"), log }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the process to exit on its own.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.child.wait().expect("hookgate exits")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Admin GET against a binary server.
pub async fn admin_json(base: &str, path: &str) -> serde_json::Value {
    let response = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert!(response.status().is_success(), "GET {path}: {}", response.status());
    response.json().await.unwrap()
}

/// A loopback TCP forwarder in front of a real server, which a test can cut and restore to simulate an
/// outage (connections reset, new ones refused) without touching the server itself.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: String) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (flag, gen) = (up.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound); // refused while down
                    continue;
                }
                let target = target.clone();
                let mut cut = gen.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy { addr, up, generation, task }
    }

    /// Reset every open connection and refuse new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start the app with an explicit store URL.
pub async fn spawn_app_at(store_url: &str, body: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}{}", head(store_url), body.replace("{dir}", &dir.path().display().to_string()));
    let config = hookgate::config::parse(&text, dir.path(), &BTreeMap::<String, String>::new()).unwrap();
    let app = hookgate::startup::Application::build(config).await.expect("app builds");
    let addr = format!("http://127.0.0.1:{}", app.port());
    let store = app.state().store.clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp { addr, dir, client: reqwest::Client::new(), store, shutdown, handle: Some(handle) }
}

/// Like `spawn_app`, with extra `[server]` keys (e.g. `read_timeout = "1s"`).
pub async fn spawn_app_with_server(backend: &Backend, server: &str, body: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let head = head(&url).replacen("[server]\n", &format!("[server]\n{server}\n"), 1);
    let text = format!("{head}{}", body.replace("{dir}", &dir.path().display().to_string()));
    let config = hookgate::config::parse(&text, dir.path(), &BTreeMap::<String, String>::new()).unwrap();
    let app = hookgate::startup::Application::build(config).await.expect("app builds");
    let addr = format!("http://127.0.0.1:{}", app.port());
    let store = app.state().store.clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp { addr, dir, client: reqwest::Client::new(), store, shutdown, handle: Some(handle) }
}

/// A configuration file for the real binary, written into `dir`: loopback on port 0, SQLite in `dir`, the
/// admin token from `HOOKGATE_ADMIN_TOKEN`, a 100 ms worker poll plus `worker` (more `[worker]` keys), then
/// `rest` (sources and routes). Returns its path.
pub fn binary_config(dir: &std::path::Path, worker: &str, rest: &str) -> std::path::PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nurl = \"sqlite://{}/hookgate.db\"\n\n\
         [admin]\ntoken = \"env:HOOKGATE_ADMIN_TOKEN\"\n\n[worker]\npoll_interval = \"100ms\"\n{worker}\n{rest}",
        dir.display()
    );
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}
