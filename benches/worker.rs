//! Worker and coalescing benchmarks on the real application (SQLite file, real HTTP, real processes).
//!
//!   cargo bench --bench worker -- worker [JOBS=50000] [CONCURRENCY=64]
//!       N jobs queued up front, each an `http` action to a loopback peer that answers 204 at once
//!       (a no-op job); reports how fast the worker claims, runs and records them.
//!   cargo bench --bench worker -- burst [PUSHES=10000]
//!       N signed pushes for one repository sent through `POST /hooks/github` by 64 connections; the route
//!       runs `/bin/true` with `coalesce = "{{ body.repository.full_name }}"` and `coalesce_window = "2s"`;
//!       reports how often it ran.
//!
//!   HOOKGATE_BENCH_STORE=postgres://…?options=-csearch_path%3D<fresh schema> cargo bench --bench worker -- …
//!       the same on another store (default: a fresh SQLite file); `bench/worker-stores` runs both side by side.
//!
//! Bounded by count; everything listens on 127.0.0.1. Numbers go to bench/RESULTS.md, never into tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use hookgate::startup::Application;
use hookgate::store::{new_id, now_ms, Delivery, NewJob};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

// The same allocator as the `hookgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let number = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("burst") => runtime.block_on(burst(number(1, 10_000))),
        Some("worker") | None => runtime.block_on(worker(number(1, 50_000), number(2, 64))),
        Some(other) => eprintln!("unknown benchmark `{other}` (worker, burst)"),
    }
}

/// A loopback HTTP peer that answers every request 204 and counts them.
async fn no_op_peer() -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    async {
                        let mut response = hyper::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                        Ok::<_, Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (port, hits)
}

async fn build(dir: &std::path::Path, routes: &str, concurrency: usize) -> Application {
    let url =
        std::env::var("HOOKGATE_BENCH_STORE").unwrap_or_else(|_| format!("sqlite://{}/hookgate.db", dir.display()));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{url}\"\n[worker]\nconcurrency = {concurrency}\n\
         [[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"bench-secret\"]\n{routes}"
    );
    let config = hookgate::config::parse(&text, dir, &BTreeMap::<String, String>::new()).expect("bench config");
    Application::build(config).await.expect("application")
}

async fn worker(jobs: usize, concurrency: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, hits) = no_op_peer().await;
    let route = format!(
        "[[routes]]\nname = \"noop\"\nsource = \"github\"\n\
         action = {{ type = \"http\", url = \"http://127.0.0.1:{port}/noop\", timeout = \"10s\" }}\n"
    );
    let app = build(dir.path(), &route, concurrency).await;
    let store = app.state().store.clone();

    // Queue the jobs (64 writers at a time, as concurrent requests would).
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (store, next) = (store.clone(), next.clone());
        writers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < jobs as u64 {
                let delivery = Delivery {
                    id: new_id(),
                    source: "github".into(),
                    event: "push".into(),
                    delivery: new_id(),
                    received_at: now_ms(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: Bytes::from_static(b"{\"ref\":\"refs/heads/main\"}"),
                    replay_key: None,
                };
                let job = NewJob { id: new_id(), route: "noop".into(), coalesce_key: None, run_at: now_ms() };
                store.insert_delivery(delivery, vec![job]).await.expect("insert");
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let enqueue = started.elapsed();

    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(app.worker().run(shutdown.clone()));
    // Counting rows competes with the worker for the store; watch the peer until the last request, then
    // the store until the last attempt is recorded.
    while hits.load(Ordering::Relaxed) < jobs as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loop {
        let counts = store.job_counts().await.expect("counts");
        if counts.succeeded + counts.dead >= jobs as u64 {
            assert_eq!(counts.dead, 0, "no-op jobs must not fail");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let run = started.elapsed();
    shutdown.cancel();
    let _ = running.await;
    println!(
        "worker: {jobs} no-op http jobs, concurrency {concurrency}: queued in {:.2}s ({:.0} deliveries+jobs/s), \
         ran in {:.2}s = {:.0} jobs/s (peer saw {} requests)",
        enqueue.as_secs_f64(),
        jobs as f64 / enqueue.as_secs_f64(),
        run.as_secs_f64(),
        jobs as f64 / run.as_secs_f64(),
        hits.load(Ordering::Relaxed)
    );
    print_store_batching();
}

/// How the writes were grouped into commits over the whole run (from the store's own metrics).
fn print_store_batching() {
    let text = hookgate::metrics::install().render();
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    let commits = value("hookgate_store_batch_size_count");
    if commits > 0.0 {
        println!(
            "store: {commits:.0} commits, {:.1} writes per commit, {:.2} ms per commit",
            value("hookgate_store_batch_size_sum") / commits,
            value("hookgate_store_commit_seconds_sum") / commits * 1000.0
        );
    }
}

async fn burst(pushes: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let route = "[[routes]]\nname = \"refresh\"\nsource = \"github\"\n\
                 filter = 'event == \"push\" and body.ref == \"refs/heads/main\"'\n\
                 coalesce = \"{{ body.repository.full_name }}\"\ncoalesce_window = \"2s\"\n\
                 action = { type = \"command\", argv = [\"/bin/true\"] }\n";
    let app = build(dir.path(), route, 32).await;
    let port = app.port();
    let store = app.state().store.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let body = Bytes::from(std::fs::read("bench/push.json").expect("run from the repository root: bench/push.json"));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"bench-secret").expect("any key length");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/hooks/github");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (client, url, body, signature, next) =
            (client.clone(), url.clone(), body.clone(), signature.clone(), next.clone());
        senders.spawn(async move {
            let mut accepted = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < pushes as u64 {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", new_id())
                    .header("x-hub-signature-256", &signature)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("hookgate answers");
                assert_eq!(response.status(), 202);
                accepted += 1;
            }
            accepted
        });
    }
    let mut accepted = 0;
    while let Some(n) = senders.join_next().await {
        accepted += n.expect("sender");
    }
    let sent_in = started.elapsed();
    loop {
        let counts = store.job_counts().await.expect("counts");
        if counts.queued + counts.running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = store.job_counts().await.expect("counts");
    shutdown.cancel();
    let _ = server.await;
    println!(
        "burst: {accepted} pushes for one repository accepted in {:.2}s ({:.0} req/s); the command ran {} time(s) \
         ({} dead)",
        sent_in.as_secs_f64(),
        accepted as f64 / sent_in.as_secs_f64(),
        counts.succeeded,
        counts.dead
    );
}
