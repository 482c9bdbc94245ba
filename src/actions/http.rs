//! The `http` action: one request with the shared client, optionally signed, classified for the retry policy.
//!
//! Errors recorded on the attempt are short and built from status codes and transport error kinds only:
//! never from header values, the URL (its query may hold a token) or the secret.

use std::error::Error as _;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

use super::command::human;
use super::{AttemptResult, HttpSpec, Outcome};
use crate::sign::{self, Message};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer cannot park a job for longer than this with `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The shared client: rustls, redirects are answers (3xx fails the attempt), not followed.
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent("hookgate")
        .build()
        .expect("the HTTP client (rustls) can be built")
}

pub(super) async fn run(
    client: &reqwest::Client,
    spec: HttpSpec,
    cancel: &CancellationToken,
) -> AttemptResult {
    let request = match build(client, &spec) {
        Ok(request) => request,
        Err(error) => return result(Outcome::Failed, Some(error), None, None),
    };
    tokio::select! {
        result = send(client, request, &spec) => result,
        () = cancel.cancelled() => result(retry(None), Some("cancelled".into()), None, None),
    }
}

fn build(client: &reqwest::Client, spec: &HttpSpec) -> Result<reqwest::Request, String> {
    let url = reqwest::Url::parse(&spec.url).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid URL: unsupported scheme `{}`",
            url.scheme()
        ));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &spec.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("invalid header name `{name}`"))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("invalid value for header `{name}`"))?;
        headers.append(name, value);
    }
    if let Some(sign) = &spec.sign {
        let message = Message {
            id: &spec.message_id,
            event: Some(&spec.event),
            timestamp_ms: now_ms(),
            body: &spec.body,
        };
        let signed = sign::headers(&sign.scheme, &sign.secret, &message)
            .map_err(|e| format!("cannot sign: {e}"))?;
        for (name, value) in signed {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("cannot sign: bad header name `{name}`"))?;
            let value = HeaderValue::try_from(value)
                .map_err(|_| format!("cannot sign: bad value for header `{name}`"))?;
            // The signature must win over a configured header of the same name.
            headers.insert(name, value);
        }
    }
    if !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    client
        .request(spec.method.clone(), url)
        .headers(headers)
        .body(spec.body.clone())
        .timeout(spec.timeout)
        .build()
        .map_err(|e| format!("invalid request: {}", root_cause(&e)))
}

async fn send(
    client: &reqwest::Client,
    request: reqwest::Request,
    spec: &HttpSpec,
) -> AttemptResult {
    let mut response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            return result(
                retry(None),
                Some(transport_error(&e, spec.timeout)),
                None,
                None,
            )
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let output = read_capped(&mut response, spec.output_cap).await;

    let (outcome, error) = match status.as_u16() {
        200..=299 => (Outcome::Success, None),
        410 => (Outcome::Gone, Some(format!("HTTP {}", status.as_u16()))),
        408 | 429 | 500..=599 => (
            retry(retry_after),
            Some(format!("HTTP {}", status.as_u16())),
        ),
        300..=399 => (
            Outcome::Failed,
            Some(format!(
                "HTTP {} (redirects are not followed)",
                status.as_u16()
            )),
        ),
        _ => (Outcome::Failed, Some(format!("HTTP {}", status.as_u16()))),
    };
    result(outcome, error, output, Some(status.as_u16()))
}

fn result(
    outcome: Outcome,
    error: Option<String>,
    output: Option<String>,
    status_code: Option<u16>,
) -> AttemptResult {
    AttemptResult {
        outcome,
        error,
        output,
        status_code,
    }
}

fn retry(retry_after: Option<Duration>) -> Outcome {
    Outcome::Retryable { retry_after }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads at most `cap` bytes of the body; the rest is not read (the connection is dropped instead).
/// A body that fails half-way keeps what arrived: the status already decided the outcome.
async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Option<String> {
    let mut kept: Vec<u8> = Vec::new();
    let mut truncated = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - kept.len();
                if chunk.len() > room {
                    kept.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                kept.extend_from_slice(&chunk);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if kept.is_empty() && !truncated {
        return None;
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if truncated {
        match response.content_length() {
            Some(total) => text.push_str(&format!(
                "…[truncated {} bytes]",
                total.saturating_sub(cap as u64)
            )),
            None => text.push_str("…[truncated]"),
        }
    }
    Some(text)
}

/// `Retry-After` as delta seconds or an HTTP date, clamped to [0, 1 h]; anything else is ignored.
fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let wait = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to parse is still "a very long time".
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A short description of a transport failure; reqwest's own message would include the URL.
fn transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {}", human(timeout));
    }
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                io::ErrorKind::ConnectionReset => return "connection reset".into(),
                io::ErrorKind::ConnectionAborted => return "connection aborted".into(),
                io::ErrorKind::TimedOut => return format!("timed out after {}", human(timeout)),
                _ => {}
            }
        }
        source = cause.source();
    }
    if e.is_connect() {
        format!("cannot connect: {}", root_cause(e))
    } else {
        format!("request failed: {}", root_cause(e))
    }
}

/// The innermost cause's message: specific ("failed to lookup address information: ...", "connection closed
/// before message completed") and free of the URL that reqwest puts at the top.
fn root_cause(e: &reqwest::Error) -> String {
    let mut last = e.source();
    while let Some(next) = last.and_then(|cause| cause.source()) {
        last = Some(next);
    }
    last.map_or_else(|| "no details".to_string(), |cause| cause.to_string())
}
