//! The public edge under hostile traffic: rate limits per source and per address, slow headers, a connection
//! cap, shutdown.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const LIMITED: &str = r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["It's a Secret to Everybody"]
rate_limit = "3/m"

[[sources]]
name = "app"
provider = "token"
secrets = ["app-token"]
event_field = "type"
rate_limit = "3/m"

[[sources]]
name = "open"
provider = "token"
secrets = ["open-token"]
event_field = "type"
"#;

async fn publish(app: &TestApp, source: &str, token: &str, n: usize) -> reqwest::StatusCode {
    let body = format!(r#"{{"type":"order.created","n":{n}}}"#);
    app.post_hook(source, &[("authorization", format!("Bearer {token}"))], &body).await.status()
}

store_test! {
    async fn a_source_over_its_rate_limit_is_answered_429_with_retry_after(backend) {
        let app = spawn_app(&backend, LIMITED).await;
        for n in 0..3 {
            let body = push_body("refs/heads/main", "octo/hello");
            assert_eq!(app.github("push", &format!("rl-{n}"), &body).await.status(), 202);
        }
        let body = push_body("refs/heads/main", "octo/hello");
        let refused = app.github("push", "rl-over", &body).await;
        assert_eq!(refused.status(), 429);
        let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        // 3 per minute: one request every 20 s comes back.
        assert!((1..=20).contains(&retry_after), "Retry-After: {retry_after}");
        let json: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(json["code"], "rate_limited");
        assert!(!delivered(&app.store).await.contains(&"rl-over".to_string()));
    }
}

store_test! {
    async fn junk_from_one_address_is_refused_cheaply_and_never_uses_up_a_signed_senders_limit(backend) {
        let app = spawn_app_with_server(&backend, "unverified_rate_limit = \"3/m\"", LIMITED).await;
        // A flood of forged deliveries from 127.0.0.2: three failures are answered 401, then that address is
        // refused with 429 before its body is read.
        let flooder = client_from("127.0.0.2");
        let flood = futures_util::future::join_all((0..40).map(|n| {
            let (app, flooder) = (&app, &flooder);
            async move {
                flooder
                    .post(format!("{}/hooks/github", app.addr))
                    .header("x-hub-signature-256", "sha256=00")
                    .body(format!("{{\"n\":{n}}}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        }))
        .await;
        assert_eq!(flood.iter().filter(|s| **s == 401).count(), 3, "{flood:?}");
        assert_eq!(flood.iter().filter(|s| **s == 429).count(), 37, "{flood:?}");

        // The real sender, from its own address, still has all of the source's limit (3/m): junk never
        // counted against it.
        for n in 0..3 {
            let body = push_body("refs/heads/main", "octo/hello");
            assert_eq!(app.github("push", &format!("after-flood-{n}"), &body).await.status(), 202);
        }
        let body = push_body("refs/heads/main", "octo/hello");
        assert_eq!(app.github("push", "over-the-source-limit", &body).await.status(), 429);
        // Other sources are served as if nothing happened.
        for n in 0..3 {
            assert_eq!(publish(&app, "app", "app-token", n).await, 202);
        }
    }
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback).
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

/// Provider delivery ids of every stored delivery.
async fn delivered(store: &hookgate::store::DynStore) -> Vec<String> {
    let page = store.list_deliveries(Default::default()).await.unwrap();
    page.items.into_iter().map(|d| d.delivery).collect()
}

fn host(app: &TestApp) -> String {
    app.addr.trim_start_matches("http://").to_string()
}

/// Read until the server closes the connection (or resets it); None if it stays open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok().map(|_| seen)
}

async fn healthz_ok(app: &TestApp) -> bool {
    // On a new connection: the server closes keep-alive connections idle for `read_timeout`, and a pooled
    // one reused just as that happens fails without saying anything about the server.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let response = fresh.get(format!("{}/healthz", app.addr)).timeout(Duration::from_secs(5)).send().await;
    response.is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_headers_slowly_is_cut_off_within_the_read_timeout() {
    let app = spawn_app_with_server(&Backend::Sqlite, "read_timeout = \"1s\"", GITHUB_SOURCE).await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(host(&app)).await.unwrap();
    slow.write_all(b"POST /hooks/github HTTP/1.1\r\nHost: hookgate\r\n").await.unwrap();
    let (mut read, mut write) = slow.into_split();
    // Slowloris: one more header line every 200 ms, never the blank line that ends the head.
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            if write.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // A client that connects and sends nothing at all.
    let mut silent = TcpStream::connect(host(&app)).await.unwrap();

    // Normal traffic is served meanwhile.
    assert!(healthz_ok(&app).await);
    let body = push_body("refs/heads/main", "octo/hello");
    assert_eq!(app.github("push", "while-slow", &body).await.status(), 202);

    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 256];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "the slow client was still connected after 5 s");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "cut off too early: {elapsed:?}");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await.is_some(), "the silent client stayed connected");
    trickle.abort();
    assert!(healthz_ok(&app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app =
        spawn_app_with_server(&Backend::Sqlite, "max_connections = 2\nread_timeout = \"30s\"", GITHUB_SOURCE).await;
    // Two idle connections take both places.
    let first = TcpStream::connect(host(&app)).await.unwrap();
    let mut second = TcpStream::connect(host(&app)).await.unwrap();
    // Prove the second was accepted (and so the first too): it is answered.
    second.write_all(b"GET /healthz HTTP/1.1\r\nHost: hookgate\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));

    // A third connection is not served while both places are taken ...
    let mut third = TcpStream::connect(host(&app)).await.unwrap();
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: hookgate\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let waited = tokio::time::timeout(Duration::from_millis(750), third.read_to_end(&mut response)).await;
    assert!(waited.is_err(), "served beyond the cap: {}", String::from_utf8_lossy(&response));

    // ... and is served as soon as one closes.
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
    drop(second);
    assert!(healthz_ok(&app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_but_finishes_a_request_in_flight() {
    let app = spawn_app(&Backend::Sqlite, GITHUB_SOURCE).await;
    let addr = host(&app);
    let body = push_body("refs/heads/main", "octo/hello");
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    // `Expect: 100-continue`: the "100 Continue" proves the handler has started reading the body.
    let mut head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: hookgate\r\nContent-Length: {}\r\nExpect: 100-continue\r\n",
        body.len()
    );
    for (name, value) in github_headers("push", "in-flight", &body) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&buf[..n]));
    // The request is now in the handler, waiting for its body.
    let store = app.store.clone();
    let stopping = tokio::spawn(app.stop());

    eventually(Duration::from_secs(5), "new connections to be refused", || {
        let addr = addr.clone();
        async move {
            let Ok(mut probe) = TcpStream::connect(&addr).await else { return Some(()) };
            let _ = probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: hookgate\r\n\r\n").await;
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(200), probe.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(!stopping.is_finished(), "stopped before the request in flight was answered");

    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with(b"HTTP/1.1 202"), "{}", String::from_utf8_lossy(&response));
    let _dir = tokio::time::timeout(Duration::from_secs(10), stopping).await.unwrap().unwrap();
    assert_eq!(delivered(&store).await, ["in-flight"]);
}
