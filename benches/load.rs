//! A fixed-rate (open-loop) load generator: acknowledgement latency at a given request rate.
//!
//!   cargo bench --bench load -- [URL=http://127.0.0.1:18080/hooks/github] [RATE=10000] [SECONDS=10]
//!                                [CONNECTIONS=128] [SECRET=bench-secret] [BODY=bench/push.json]
//!
//! wrk sends as fast as the server answers, so its latencies describe a saturated server. This sends request
//! i at start + i / RATE whatever the server does, each a signed GitHub `push` with a random
//! `X-GitHub-Delivery` (a GUID, as GitHub sends), over CONNECTIONS keep-alive connections. It reports two
//! latencies: from the moment the request was sent to its answer (the acknowledgement), and from the moment
//! it was due (which also counts time spent waiting for a free connection, so a server that falls behind
//! cannot hide it). tokio's timer fires at most once a millisecond, so requests leave in small bursts, as
//! webhooks do. Bounded by SECONDS; loopback only. Figures go to bench/RESULTS.md.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::RngCore;

use common::{percentile, Push, Seen};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Plan {
    url: url::Url,
    rate: u64,
    total: u64,
    connections: usize,
    body: Bytes,
    signature: String,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let url: url::Url = arg(0, "http://127.0.0.1:18080/hooks/github").parse().expect("URL");
    let host = url.host_str().unwrap_or_default();
    assert!(
        host == "127.0.0.1" || host == "localhost" || host == "[::1]",
        "load is only ever sent to loopback, not {host}"
    );
    let rate: u64 = arg(1, "10000").parse().expect("RATE");
    let seconds: u64 = arg(2, "10").parse().expect("SECONDS");
    let connections: usize = arg(3, "128").parse().expect("CONNECTIONS");
    let secret = arg(4, "bench-secret");
    let body =
        Bytes::from(std::fs::read(arg(5, "bench/push.json")).expect("the body file (run from the repository root)"));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let plan = Arc::new(Plan { url, rate, total: rate * seconds, connections, body, signature });

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (seen, elapsed) = runtime.block_on(run(plan.clone()));
    report(&plan, seen, elapsed);
}

async fn run(plan: Arc<Plan>) -> (Seen, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.connections {
        let (plan, next) = (plan.clone(), next.clone());
        tasks.spawn(async move { connection(&plan, &next, start).await });
    }
    let mut seen = Seen::default();
    while let Some(part) = tasks.join_next().await {
        let part = part.expect("connection task");
        seen.from_send.extend(part.from_send);
        seen.from_due.extend(part.from_due);
        seen.failed += part.failed;
        seen.errors += part.errors;
    }
    (seen, start.elapsed())
}

/// One keep-alive connection: take the next due request, wait for its time, send it, record.
async fn connection(plan: &Plan, next: &AtomicU64, start: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut sender = None;
    let mut guid = [0u8; 16];
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.total {
            return seen;
        }
        let due = start + Duration::from_nanos(i * 1_000_000_000 / plan.rate);
        tokio::time::sleep_until(due.into()).await;
        rand::rng().fill_bytes(&mut guid);
        let delivery = guid_text(&guid);
        let push = Push {
            delivery: &delivery,
            signature: &plan.signature,
            body: plan.body.clone(),
            user_agent: "GitHub-Hookshot/hookgate-bench",
        };
        seen.send(&mut sender, &plan.url, push, due).await;
    }
}

/// 16 random bytes as a GUID (8-4-4-4-12 hex), like GitHub's delivery ids.
fn guid_text(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn report(plan: &Plan, mut seen: Seen, elapsed: Duration) {
    seen.from_send.sort_unstable();
    seen.from_due.sort_unstable();
    let answered = seen.from_send.len() as f64;
    println!(
        "load: {} requests due at {} req/s over {} connections to {}; {} answered in {:.2}s = {:.0} req/s; \
         {} non-2xx, {} connection errors",
        plan.total,
        plan.rate,
        plan.connections,
        plan.url,
        answered,
        elapsed.as_secs_f64(),
        answered / elapsed.as_secs_f64(),
        seen.failed,
        seen.errors
    );
    for (name, sorted) in [("sent → answered", &seen.from_send), ("due → answered", &seen.from_due)] {
        println!(
            "  {name:<16} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            percentile(sorted, 50.0),
            percentile(sorted, 90.0),
            percentile(sorted, 99.0),
            percentile(sorted, 99.9),
            percentile(sorted, 100.0)
        );
    }
}
