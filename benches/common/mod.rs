//! common: what the load generators share — a keep-alive HTTP/1 connection that sends a signed GitHub push and
//! records when it was answered (from its send and from when it was due), and percentiles of those times.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// What one connection saw: latencies in microseconds, the answers that were not 2xx, and transport errors.
#[derive(Default)]
pub struct Seen {
    pub from_send: Vec<u64>,
    pub from_due: Vec<u64>,
    pub failed: u64,
    pub errors: u64,
    pub last_sent: Option<Instant>,
}

/// One signed `push` to send.
pub struct Push<'a> {
    pub delivery: &'a str,
    pub signature: &'a str,
    pub body: Bytes,
    pub user_agent: &'static str,
}

impl Seen {
    /// Send `push` on `sender` (connecting first when there is no connection) and record its answer against
    /// `due`; a transport error drops the connection, so the next push opens a new one.
    pub async fn send(&mut self, sender: &mut Option<Sender>, url: &url::Url, push: Push<'_>, due: Instant) {
        if sender.is_none() {
            *sender = connect(url).await;
        }
        let Some(conn) = sender.as_mut() else {
            self.errors += 1;
            return;
        };
        let request = hyper::Request::post(url.path())
            .header("host", url.authority())
            .header("content-type", "application/json")
            .header("user-agent", push.user_agent)
            .header("x-github-event", "push")
            .header("x-github-delivery", push.delivery)
            .header("x-hub-signature-256", push.signature)
            .body(Full::new(push.body))
            .expect("request");
        let sent = Instant::now();
        self.last_sent = self.last_sent.max(Some(sent));
        let answered = async {
            conn.ready().await?;
            let response = conn.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        let done = Instant::now();
        match answered {
            Ok(status) => {
                self.from_send.push((done - sent).as_micros() as u64);
                self.from_due.push((done - due).as_micros() as u64);
                if !status.is_success() {
                    self.failed += 1;
                }
            }
            Err(_) => {
                self.errors += 1;
                *sender = None;
            }
        }
    }
}

pub async fn connect(url: &url::Url) -> Option<Sender> {
    let address = url.socket_addrs(|| Some(80)).ok()?.into_iter().next()?;
    let stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// The `p`th percentile of sorted microseconds, in milliseconds.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}
