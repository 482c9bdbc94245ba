//! The `http` action: one request with the shared client, optionally signed, classified for the retry policy.
//!
//! Config: `url` (a template; values are encoded for the part of the URL they land in, and may choose the
//! host only within `allowed_hosts`), `method`, `headers`, `body` (default: the original body), `timeout`
//! (default 10s) and `sign` (`scheme`: any provider in `verify`'s table, default `standard`, with those of
//! that provider's keys `sign` has — `hmac`'s header, algorithm, timestamp, content, id and event keys).
//!
//! To reach internal and cluster APIs: a header value may be a secret (`env:NAME`, `file:PATH`; see
//! `secret_header`), `bearer_token` sends one as `Authorization: Bearer …`, and `ca`, `ca_only`, `client_cert`,
//! `client_key` and `unix_socket` give the action its own client (see `transport`). Both clients go through the
//! same request, timeout, output cap, signing and `Retry-After` code below.
//!
//! Errors recorded on the attempt are short and built from status codes and transport error kinds only:
//! never from header values, the URL (its query may hold a token) or the secret.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use minijinja::Environment;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

mod secret_header;
mod transport;

pub use self::secret_header::{SecretHeader, SecretSource};

use super::command::human;
use super::{table_as, AttemptResult, Hint, JobContext, Outcome, Runner};
use crate::config::value::{invalid, opt_duration, resolve_secret, ConfigError, Env};
use crate::sign::{self, Message, SignError};
use crate::template::{RenderError, Text};
use crate::verify::{Keys, Scheme, Secret};

/// What a request does when the action leaves it out (`config.default.toml` shows them).
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_METHOD: &str = "POST";
const DEFAULT_SIGN_SCHEME: &str = "standard";

/// The `type` that selects this kind.
pub(super) const TYPE: &str = "http";

/// The options as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    url: Option<String>,
    method: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    body: Option<String>,
    timeout: Option<String>,
    /// Read as [`RawSign`] once its key path is known.
    sign: Option<toml::Table>,
    allowed_hosts: Option<Vec<String>>,
    /// `env:NAME` or `file:PATH`, sent as `Authorization: Bearer …`.
    bearer_token: Option<String>,
    ca: Option<String>,
    ca_only: Option<bool>,
    client_cert: Option<String>,
    client_key: Option<String>,
    unix_socket: Option<String>,
}

/// `sign = { … }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSign {
    scheme: Option<String>,
    secret: Option<String>,
    signature_header: Option<String>,
    algorithm: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
    timestamp_header: Option<String>,
    timestamp_unit: Option<String>,
    content: Option<String>,
    id_header: Option<String>,
    event_header: Option<String>,
}

/// An HTTP action. `T` is a template: its text after validation, a compiled [`Text`] in routes.
#[derive(Debug, Clone)]
pub struct Http<T = String> {
    pub url: T,
    pub method: http::Method,
    pub headers: Vec<(String, T)>,
    /// None: the original body is sent.
    pub body: Option<T>,
    pub timeout: Duration,
    pub sign: Option<SignSpec>,
    /// Hosts a template value may choose in `url` (`*.domain` for subdomains); none by default.
    pub allowed_hosts: Vec<String>,
    /// Headers whose values are secrets (and `bearer_token`): never templates.
    pub secret_headers: Vec<SecretHeader>,
    /// The action's own client (private CA, client certificate, Unix socket); None: the shared one.
    pub client: Option<reqwest::Client>,
}

/// How an outbound request is signed.
#[derive(Debug, Clone)]
pub struct SignSpec {
    pub scheme: Scheme,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub url: String,
    pub method: http::Method,
    pub headers: Vec<(String, String)>,
    pub secret_headers: Vec<SecretHeader>,
    pub client: Option<reqwest::Client>,
    pub body: Bytes,
    pub timeout: Duration,
    pub sign: Option<SignSpec>,
    /// Stable across retries of one job (the job id); used as the signed message id.
    pub message_id: String,
    pub event: String,
    /// Bytes of the response body kept on the attempt.
    pub output_cap: usize,
}

pub(super) fn validate(key: &str, raw: Raw, base: &Path, env: &dyn Env) -> Result<Http, ConfigError> {
    let k = |s: &str| format!("{key}.{s}");
    let url = raw.url.ok_or_else(|| invalid(k("url"), "missing"))?;
    if !url.contains("{{") && url::Url::parse(&url).is_err() {
        return Err(invalid(k("url"), format!("`{url}` is not a URL")));
    }
    let method_text = raw.method.unwrap_or_else(|| DEFAULT_METHOD.into()).to_ascii_uppercase();
    let method = http::Method::from_bytes(method_text.as_bytes())
        .map_err(|_| invalid(k("method"), format!("`{method_text}` is not an HTTP method")))?;
    let mut headers = Vec::new();
    let mut secret_headers = Vec::new();
    for (name, value) in raw.headers.unwrap_or_default() {
        let key = k(&format!("headers.{name}"));
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(key, "not a valid header name"));
        }
        if secret_header::is_reference(&value) {
            secret_headers.push(secret_header::resolve(&key, &name, "", &value, base, env)?);
        } else {
            headers.push((name, value));
        }
    }
    if let Some(reference) = &raw.bearer_token {
        let taken = headers.iter().map(|(n, _)| n).chain(secret_headers.iter().map(|h| &h.name));
        if taken.into_iter().any(|n| n.eq_ignore_ascii_case("authorization")) {
            return Err(invalid(k("bearer_token"), "headers already set Authorization"));
        }
        secret_headers.push(secret_header::bearer(&k("bearer_token"), reference, base, env)?);
    }
    let options = transport::TransportOptions {
        ca: raw.ca,
        ca_only: raw.ca_only,
        client_cert: raw.client_cert,
        client_key: raw.client_key,
        unix_socket: raw.unix_socket,
    };
    let client = transport::client(key, options, base)?;
    let sign = raw.sign.map(|s| validate_sign(&k("sign"), table_as(&k("sign"), s)?, base, env)).transpose()?;
    let allowed_hosts = raw.allowed_hosts.unwrap_or_default();
    if let Some((i, _)) = allowed_hosts.iter().enumerate().find(|(_, h)| !is_host_pattern(h)) {
        return Err(invalid(k(&format!("allowed_hosts[{i}]")), "not a host name or `*.domain`"));
    }
    Ok(Http {
        url,
        method,
        headers,
        body: raw.body,
        timeout: opt_duration(&k("timeout"), raw.timeout.as_deref(), DEFAULT_TIMEOUT)?,
        sign,
        allowed_hosts,
        secret_headers,
        client,
    })
}

/// A host name or IP address, or `*.` and a domain.
fn is_host_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty() && url::Host::parse(name).is_ok() && !name.contains(['/', ':', '@', '*'])
}

fn validate_sign(key: &str, raw: RawSign, base: &Path, env: &dyn Env) -> Result<SignSpec, ConfigError> {
    let k = |s: &str| format!("{key}.{s}");
    let secret_ref = raw.secret.ok_or_else(|| invalid(k("secret"), "missing"))?;
    let secret = resolve_secret(&k("secret"), &secret_ref, base, env)?
        .ok_or_else(|| invalid(k("secret"), "resolves to nothing (is the variable or file set?)"))?;
    let scheme_name = raw.scheme.unwrap_or_else(|| DEFAULT_SIGN_SCHEME.into());
    let provider = crate::verify::provider(&scheme_name).ok_or_else(|| {
        let known = crate::verify::provider_names().join(", ");
        invalid(k("scheme"), format!("unknown scheme `{scheme_name}` ({known})"))
    })?;
    let mut keys = Keys::default();
    let written = [
        ("signature_header", raw.signature_header),
        ("algorithm", raw.algorithm),
        ("encoding", raw.encoding),
        ("prefix", raw.prefix),
        ("timestamp_header", raw.timestamp_header),
        ("timestamp_unit", raw.timestamp_unit),
        ("content", raw.content),
        ("id_header", raw.id_header),
        ("event_header", raw.event_header),
    ];
    for (name, value) in written {
        if let Some(value) = value {
            keys.set_text(name, value);
        }
    }
    if provider.keys.contains(&"signature_header") {
        keys.default_text("signature_header", crate::verify::OUTBOUND_SIGNATURE_HEADER);
    }
    let scheme = Scheme::new(provider, &keys).map_err(|e| invalid(k(&e.key), e.message))?;
    // A secret the scheme cannot sign with (a `whsec_` without base64, a token with a line break) is
    // refused at load, not at the first delivery.
    let probe = Message { id: "msg_check", event: Some("check"), timestamp_ms: 0, body: b"{}" };
    scheme.sign(&secret, &probe).map_err(|e| match e {
        SignError::BadSecret(why) => invalid(k("secret"), why),
        other => invalid(k("secret"), other.to_string()),
    })?;
    Ok(SignSpec { scheme, secret })
}

/// `sign.secret` and `bearer_token` as written, for the warning about literal secrets (a literal
/// `bearer_token` is refused anyway).
pub(super) fn secret_refs(options: &toml::Table) -> Vec<(&'static str, &str)> {
    let secret = options.get("sign").and_then(|s| s.get("secret")).and_then(toml::Value::as_str);
    let bearer = options.get("bearer_token").and_then(toml::Value::as_str);
    secret.map(|s| ("sign.secret", s)).into_iter().chain(bearer.map(|b| ("bearer_token", b))).collect()
}

impl Http {
    pub(super) fn compile(&self, env: &mut Environment<'static>, key: &str) -> Result<Http<Text>, ConfigError> {
        Ok(Http {
            // The `.url` suffix has the environment's formatter mark values for `template::url`.
            url: Text::compile(env, format!("{key}.url"), &self.url)?,
            method: self.method.clone(),
            headers: self
                .headers
                .iter()
                .map(|(name, v)| Ok((name.clone(), Text::compile(env, format!("{key}.headers.{name}"), v)?)))
                .collect::<Result<_, ConfigError>>()?,
            body: self.body.as_deref().map(|b| Text::compile(env, format!("{key}.body"), b)).transpose()?,
            timeout: self.timeout,
            sign: self.sign.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            secret_headers: self.secret_headers.clone(),
            client: self.client.clone(),
        })
    }
}

impl Http<Text> {
    pub(super) fn render(&self, job: &JobContext<'_>) -> Result<HttpSpec, RenderError> {
        // `now`: this attempt's time, RFC 3339 with nanoseconds (as Flux's own receiver writes
        // `reconcile.fluxcd.io/requestedAt`); a retry sends a fresh one.
        let now = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        let vars = &minijinja::context! { now => now, ..job.vars.clone() };
        let templates = job.templates;
        // Values are encoded for the part of the URL they land in.
        let marked = self.url.render(templates, vars)?;
        let url = crate::template::url::finish(self.url.key(), &marked, &self.allowed_hosts)?.to_string();
        let headers = self
            .headers
            .iter()
            .map(|(name, v)| Ok((name.clone(), v.render_guarded(templates, vars, false)?)))
            .collect::<Result<_, RenderError>>()?;
        let body = match &self.body {
            Some(b) => Bytes::from(b.render(templates, vars)?),
            None => job.event.raw_body.clone(),
        };
        Ok(HttpSpec {
            url,
            method: self.method.clone(),
            headers,
            secret_headers: self.secret_headers.clone(),
            client: self.client.clone(),
            body,
            timeout: self.timeout,
            sign: self.sign.clone(),
            message_id: job.job_id.to_string(),
            event: job.event.event.clone(),
            output_cap: job.output_cap,
        })
    }
}

/// What the 4xx answers that an API gives most often mean (the Kubernetes API's among them); they fail at once.
const UNAUTHORIZED: &str = "the credentials were refused (a missing, wrong or expired token)";
const FORBIDDEN: &str =
    "the credentials are valid but not allowed this (for Kubernetes: the service account's Role lacks this verb on this resource)";
const NOT_FOUND: &str =
    "nothing at this URL (for Kubernetes: no such object in that namespace, or its API or CRD is not installed)";

/// A peer cannot park a job for longer than this with `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The shared client: rustls, redirects are answers (3xx fails the attempt), not followed.
pub(super) fn client() -> reqwest::Client {
    transport::shared()
}

pub(super) async fn run(runner: &Runner, spec: HttpSpec, cancel: &CancellationToken) -> AttemptResult {
    let client = spec.client.as_ref().unwrap_or(&runner.http);
    // A secret file that cannot be read now may be back at the next attempt (a volume being remounted).
    let secret_headers = match spec.secret_headers.iter().map(SecretHeader::value).collect::<Result<Vec<_>, _>>() {
        Ok(headers) => headers,
        Err(error) => return result(retry(None, false), Some(error), None, None),
    };
    let request = match build(client, &spec, secret_headers) {
        Ok(request) => request,
        Err(error) => return result(Outcome::Failed, Some(error), None, None),
    };
    tokio::select! {
        result = send(client, request, &spec) => result,
        () = cancel.cancelled() => result(retry(None, false), Some("cancelled".into()), None, None),
    }
}

fn build(
    client: &reqwest::Client,
    spec: &HttpSpec,
    secret_headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<reqwest::Request, String> {
    let url = reqwest::Url::parse(&spec.url).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("invalid URL: unsupported scheme `{}`", url.scheme()));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &spec.headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|_| format!("invalid header name `{name}`"))?;
        let value = HeaderValue::try_from(value.as_str()).map_err(|_| format!("invalid value for header `{name}`"))?;
        headers.append(name, value);
    }
    for (name, value) in secret_headers {
        headers.insert(name, value);
    }
    if let Some(sign) = &spec.sign {
        let message =
            Message { id: &spec.message_id, event: Some(&spec.event), timestamp_ms: now_ms(), body: &spec.body };
        let signed = sign::headers(&sign.scheme, &sign.secret, &message).map_err(|e| format!("cannot sign: {e}"))?;
        for (name, value) in signed {
            let name =
                HeaderName::try_from(name.as_str()).map_err(|_| format!("cannot sign: bad header name `{name}`"))?;
            let value =
                HeaderValue::try_from(value).map_err(|_| format!("cannot sign: bad value for header `{name}`"))?;
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

async fn send(client: &reqwest::Client, request: reqwest::Request, spec: &HttpSpec) -> AttemptResult {
    let mut response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            let hint = Hint { retry_after: None, throttled: timed_out(&e) };
            return result(Outcome::Retryable(hint), Some(transport_error(&e, spec.timeout)), None, None);
        }
    };
    let status = response.status();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| parse_retry_after(v, SystemTime::now()));
    let output = read_capped(&mut response, spec.output_cap).await;

    let (outcome, error) = match status.as_u16() {
        200..=299 => (Outcome::Success, None),
        410 => (Outcome::Gone, Some(format!("HTTP {}", status.as_u16()))),
        // 408 and 429: the peer is slow or throttling us, so the next attempt waits at least the floor.
        408 | 429 => (retry(retry_after, true), Some(format!("HTTP {}", status.as_u16()))),
        500..=599 => (retry(retry_after, false), Some(format!("HTTP {}", status.as_u16()))),
        300..=399 => (Outcome::Failed, Some(format!("HTTP {} (redirects are not followed)", status.as_u16()))),
        401 => (Outcome::Failed, Some(format!("HTTP 401 Unauthorized: {UNAUTHORIZED}"))),
        403 => (Outcome::Failed, Some(format!("HTTP 403 Forbidden: {FORBIDDEN}"))),
        404 => (Outcome::Failed, Some(format!("HTTP 404 Not Found: {NOT_FOUND}"))),
        _ => (Outcome::Failed, Some(format!("HTTP {}", status.as_u16()))),
    };
    result(outcome, error, output, Some(status.as_u16()))
}

fn result(outcome: Outcome, error: Option<String>, output: Option<String>, status_code: Option<u16>) -> AttemptResult {
    AttemptResult { outcome, error, output, status_code }
}

fn retry(retry_after: Option<Duration>, throttled: bool) -> Outcome {
    Outcome::Retryable(Hint { retry_after, throttled })
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Reads at most `cap` bytes of the body; the rest is not read (the connection is dropped instead).
async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Option<String> {
    // Taken up front: reqwest reports what is left of the body, not its total.
    let total = response.content_length();
    let mut kept: Vec<u8> = Vec::new();
    let mut truncated = false;
    // A body failing half-way keeps what arrived: the status already decided the outcome.
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap - kept.len();
        if chunk.len() > room {
            kept.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        kept.extend_from_slice(&chunk);
    }
    if kept.is_empty() && !truncated {
        return None;
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if truncated {
        match total {
            Some(total) => text.push_str(&format!("…[truncated {} bytes]", total.saturating_sub(cap as u64))),
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
/// The request or the connection ran out of time (as opposed to being refused or reset).
fn timed_out(e: &reqwest::Error) -> bool {
    let mut source = e.source();
    while let Some(cause) = source {
        if cause.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::TimedOut) {
            return true;
        }
        source = cause.source();
    }
    e.is_timeout()
}

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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::body::Bytes as AxumBytes;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::any;
    use axum::Router;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    use tokio::sync::mpsc;

    use super::secret_header::SecretSource;
    use super::*;
    use crate::actions::ActionSpec;
    use crate::route::Routes;
    use crate::template::EventContext;

    fn config(action: &str) -> Result<crate::config::Config, ConfigError> {
        let text = format!(
            "[[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"env:GH_SECRET\"]\n\
             [[routes]]\nname = \"scan\"\nsource = \"github\"\naction = {action}\n"
        );
        let env: BTreeMap<String, String> = [("SCAN_SECRET".to_string(), "whsec_c2VjcmV0".to_string())].into();
        crate::config::parse(&text, Path::new(""), &env)
    }

    /// A route's config, compiled, rendered for one event: the path a job takes from the file to its spec.
    #[test]
    fn a_configured_request_renders_to_its_spec() {
        let cfg = config(
            r#"{ type = "http", url = "https://{{ body.agent }}/scan/{{ body.repository.full_name | segments }}?ref={{ body.ref }}", method = "put", headers = { "X-Repo" = "{{ body.repository.full_name }}" }, body = '{"job": "{{ job }}"}', timeout = "30s", sign = { scheme = "standard", secret = "env:SCAN_SECRET" }, allowed_hosts = ["*.agents.internal"] }"#,
        )
        .unwrap();
        assert_eq!(cfg.routes[0].action.timeout(), Duration::from_secs(30));
        let routes = Routes::compile(&cfg).unwrap();
        let body = serde_json::json!({
            "agent": "scan-1.agents.internal",
            "ref": "refs/heads/main&x=1",
            "repository": { "full_name": "octo/repo" },
        });
        let ctx = EventContext::new("github", "push", "d-1", "id-1", body, vec![]);
        let ActionSpec::Http(spec) = routes.render_action(routes.get("scan").unwrap(), &ctx, "job-1", 100).unwrap()
        else {
            panic!("an http spec")
        };
        assert_eq!(spec.url, "https://scan-1.agents.internal/scan/octo/repo?ref=refs%2Fheads%2Fmain%26x%3D1");
        assert_eq!(spec.method, http::Method::PUT);
        assert_eq!(spec.headers, [("X-Repo".to_string(), "octo/repo".to_string())]);
        assert_eq!(&spec.body[..], br#"{"job": "job-1"}"#);
        assert_eq!(spec.timeout, Duration::from_secs(30));
        let sign = spec.sign.expect("signed");
        assert_eq!((sign.scheme.name(), sign.secret.expose()), ("standard", &b"whsec_c2VjcmV0"[..]));
        assert_eq!((spec.message_id.as_str(), spec.event.as_str(), spec.output_cap), ("job-1", "push", 100));

        let elsewhere =
            serde_json::json!({ "agent": "evil.example", "ref": "r", "repository": { "full_name": "o/r" } });
        let ctx = EventContext::new("github", "push", "d-2", "id-2", elsewhere, vec![]);
        let err = routes.render_action(routes.get("scan").unwrap(), &ctx, "job-2", 100).unwrap_err();
        assert!(matches!(err, RenderError::HostNotAllowed { .. }), "{err}");
    }

    #[test]
    fn a_request_posts_the_original_body_within_ten_seconds_by_default() {
        let cfg = config(r#"{ type = "http", url = "http://agent.internal/hook" }"#).unwrap();
        let routes = Routes::compile(&cfg).unwrap();
        let ctx = EventContext::new("github", "push", "d", "i", serde_json::json!({ "a": 1 }), vec![]);
        let ActionSpec::Http(spec) = routes.render_action(routes.get("scan").unwrap(), &ctx, "job", 10).unwrap() else {
            panic!("an http spec")
        };
        assert_eq!((spec.method, spec.timeout), (http::Method::POST, Duration::from_secs(10)));
        assert_eq!(spec.body, ctx.raw_body);
        assert!(spec.sign.is_none());
    }

    #[test]
    fn a_header_value_with_a_newline_is_refused() {
        let cfg = config(r#"{ type = "http", url = "http://a/", headers = { "X-A" = "{{ body.x }}" } }"#).unwrap();
        let routes = Routes::compile(&cfg).unwrap();
        let ctx = EventContext::new("github", "push", "d", "i", serde_json::json!({ "x": "a\r\nInjected: 1" }), vec![]);
        let err = routes.render_action(routes.get("scan").unwrap(), &ctx, "job", 10).unwrap_err();
        assert!(matches!(err, RenderError::ControlCharacter { .. }), "{err}");
    }

    #[test]
    fn allowed_hosts_take_host_names_and_wildcard_domains_only() {
        let action = |hosts: &str| {
            format!(r#"{{ type = "http", url = "http://{{{{ body.host }}}}/x", allowed_hosts = {hosts} }}"#)
        };
        let ok = config(&action(r#"["scanner.internal", "*.agents.internal", "10.0.0.7"]"#));
        assert!(ok.is_ok(), "{ok:?}");
        for bad in [r#"["http://x"]"#, r#"["a/b"]"#, r#"["*"]"#, r#"[""]"#, r#"["x:80"]"#] {
            let err = config(&action(bad)).unwrap_err().to_string();
            assert!(err.starts_with("routes[0].action.allowed_hosts[0]"), "{bad}: {err}");
        }
    }

    #[test]
    fn sign_options_are_checked_with_their_key_paths() {
        let cases = [
            (r#"{ scheme = "hmac", secret = "s", bogus = 1 }"#, "routes[0].action.sign: unknown field `bogus`"),
            (r#"{ scheme = "rsa", secret = "s" }"#, "routes[0].action.sign.scheme: unknown scheme `rsa`"),
            (r#"{ scheme = "standard" }"#, "routes[0].action.sign.secret: missing"),
            (r#"{ secret = "env:UNSET" }"#, "routes[0].action.sign.secret: resolves to nothing"),
            (r#"{ secret = "whsec_!!" }"#, "routes[0].action.sign.secret: a whsec_ secret must be base64"),
            (
                r#"{ scheme = "hmac", secret = "s", content = "{timestamp}.{body}" }"#,
                "routes[0].action.sign.content: uses {timestamp}",
            ),
        ];
        for (sign, expected) in cases {
            let err = config(&format!(r#"{{ type = "http", url = "http://a/", sign = {sign} }}"#)).unwrap_err();
            assert!(err.to_string().starts_with(expected), "{sign}: {err}");
        }
    }

    #[test]
    fn a_literal_signing_secret_is_warned_about() {
        let cfg = config(r#"{ type = "http", url = "http://a/", sign = { secret = "literal-signing-key" } }"#).unwrap();
        let key = "routes[0].action.sign.secret".to_string();
        assert_eq!(cfg.warnings, [crate::config::ConfigWarning::LiteralSecret { key }]);
        let from_env = config(r#"{ type = "http", url = "http://a/", sign = { secret = "env:SCAN_SECRET" } }"#);
        assert!(from_env.unwrap().warnings.is_empty());
    }

    #[test]
    fn secret_headers_are_resolved_at_load_and_never_rendered_or_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t0ken-from-file\n").unwrap();
        let text = "[[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"s\"]\n\
             [[routes]]\nname = \"scan\"\nsource = \"github\"\n\
             action = { type = \"http\", url = \"http://a/\", bearer_token = \"file:token\", \
             headers = { \"X-Key\" = \"env:KEY\", \"X-Repo\" = \"{{ body.repo }}\" } }\n";
        let env: BTreeMap<String, String> = [("KEY".to_string(), "{{ body.repo }}-k3y".to_string())].into();
        let cfg = crate::config::parse(text, dir.path(), &env).unwrap();
        let routes = Routes::compile(&cfg).unwrap();
        let ctx = EventContext::new("github", "push", "d", "i", serde_json::json!({ "repo": "octo/r" }), vec![]);
        let ActionSpec::Http(spec) = routes.render_action(routes.get("scan").unwrap(), &ctx, "job", 10).unwrap() else {
            panic!("an http spec")
        };
        assert_eq!(spec.headers, [("X-Repo".to_string(), "octo/r".to_string())]);
        let values: Vec<_> = spec.secret_headers.iter().map(|h| h.value().unwrap()).collect();
        let shown: Vec<_> = values.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
        // Sorted by header name as written; the env value is sent as it is, not as a template.
        assert_eq!(shown, [("x-key", "{{ body.repo }}-k3y"), ("authorization", "Bearer t0ken-from-file")]);
        let debug = format!("{spec:?} {:?}", cfg.routes[0]);
        assert!(!debug.contains("k3y") && !debug.contains("t0ken"), "{debug}");
    }

    #[test]
    fn secret_header_mistakes_are_refused_by_key() {
        let cases = [
            (r#"bearer_token = "literal""#, "routes[0].action.bearer_token: must be `env:NAME` or `file:PATH`"),
            (r#"bearer_token = "env:UNSET""#, "routes[0].action.bearer_token: resolves to nothing"),
            (r#"headers = { "X-K" = "env:UNSET" }"#, "routes[0].action.headers.X-K: resolves to nothing"),
            (r#"headers = { "X-K" = "file:/nonexistent/token" }"#, "routes[0].action.headers.X-K: cannot read secret file"),
            (
                r#"bearer_token = "env:SCAN_SECRET", headers = { authorization = "x" }"#,
                "routes[0].action.bearer_token: headers already set Authorization",
            ),
            (r#"client_key = "k.pem""#, "routes[0].action.client_cert: missing"),
            (r#"unix_socket = """#, "routes[0].action.unix_socket: empty"),
        ];
        for (options, expected) in cases {
            let err = config(&format!(r#"{{ type = "http", url = "http://a/", {options} }}"#)).unwrap_err();
            assert!(err.to_string().starts_with(expected), "{options}: {err}");
        }
    }

    #[test]
    fn templates_see_now_fresh_at_each_render() {
        let cfg = config(r#"{ type = "http", url = "http://a/", body = "{{ now }}" }"#).unwrap();
        let routes = Routes::compile(&cfg).unwrap();
        let ctx = EventContext::new("github", "push", "d", "i", serde_json::json!({}), vec![]);
        let before = SystemTime::now();
        let ActionSpec::Http(spec) = routes.render_action(routes.get("scan").unwrap(), &ctx, "job", 10).unwrap() else {
            panic!("an http spec")
        };
        let at = humantime::parse_rfc3339(std::str::from_utf8(&spec.body).unwrap()).unwrap();
        assert!(before <= at && at <= SystemTime::now(), "{:?}", spec.body);
    }

    #[tokio::test]
    async fn a_secret_header_file_gone_at_attempt_time_is_retried_naming_the_path_only() {
        let (url, _seen) = recording().await;
        let mut s = spec(url);
        let path = std::path::PathBuf::from("/nonexistent/hookgate/token");
        s.secret_headers =
            vec![SecretHeader { name: "Authorization".into(), prefix: "Bearer ", source: SecretSource::File(path) }];
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Retryable(Hint::default()));
        assert_eq!(
            result.error.as_deref(),
            Some("cannot read header `authorization` from /nonexistent/hookgate/token: entity not found")
        );
    }

    /// What the test server saw.
    #[derive(Debug)]
    struct Received {
        method: http::Method,
        path: String,
        headers: HeaderMap,
        body: AxumBytes,
    }

    /// Serves `app` on 127.0.0.1 at a free port; returns the base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// A server answering every request with `status`, `headers` and `body`.
    async fn answering(status: u16, headers: &[(&'static str, &'static str)], body: &'static str) -> String {
        let headers: Vec<_> = headers.to_vec();
        let app = Router::new().fallback(any(move || {
            let headers = headers.clone();
            async move {
                let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(name, HeaderValue::from_static(value));
                }
                response
            }
        }));
        serve(app).await
    }

    /// A server answering 200 "ok" that reports each request on the channel.
    async fn recording() -> (String, mpsc::UnboundedReceiver<Received>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().fallback(any(move |request: Request| {
            let tx = tx.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let _ = tx.send(Received {
                    method: parts.method,
                    path: parts.uri.path().to_string(),
                    headers: parts.headers,
                    body,
                });
                "ok"
            }
        }));
        (serve(app).await, rx)
    }

    fn spec(url: impl Into<String>) -> HttpSpec {
        HttpSpec {
            url: url.into(),
            method: http::Method::POST,
            headers: Vec::new(),
            secret_headers: Vec::new(),
            client: None,
            body: Bytes::from_static(br#"{"hello":"world"}"#),
            timeout: Duration::from_secs(10),
            sign: None,
            message_id: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".into(),
            event: "push".into(),
            output_cap: 64 * 1024,
        }
    }

    async fn run_spec(spec: HttpSpec) -> AttemptResult {
        run(&Runner::new(), spec, &CancellationToken::new()).await
    }

    #[tokio::test]
    async fn a_2xx_answer_is_a_success_with_the_body_kept() {
        let url = answering(200, &[], "thanks").await;
        let result = run_spec(spec(url)).await;
        assert_eq!(result.outcome, Outcome::Success);
        assert_eq!(result.status_code, Some(200));
        assert_eq!(result.error, None);
        assert_eq!(result.output.as_deref(), Some("thanks"));
    }

    #[tokio::test]
    async fn a_500_is_retryable() {
        let url = answering(500, &[], "boom").await;
        let result = run_spec(spec(url)).await;
        assert_eq!(result.outcome, Outcome::Retryable(Hint::default()));
        assert_eq!(result.status_code, Some(500));
        assert_eq!(result.error.as_deref(), Some("HTTP 500"));
        assert_eq!(result.output.as_deref(), Some("boom"));
    }

    #[tokio::test]
    async fn a_429_with_retry_after_is_retryable_after_that_delay() {
        let url = answering(429, &[("retry-after", "7")], "").await;
        let result = run_spec(spec(url)).await;
        assert_eq!(
            result.outcome,
            Outcome::Retryable(Hint { retry_after: Some(Duration::from_secs(7)), throttled: true })
        );
        assert_eq!(result.status_code, Some(429));
        assert_eq!(result.error.as_deref(), Some("HTTP 429"));
        assert_eq!(result.output, None);
    }

    #[tokio::test]
    async fn a_408_and_a_503_are_retryable_and_only_the_408_is_throttling() {
        for (status, throttled) in [(408, true), (503, false)] {
            let url = answering(status, &[], "").await;
            let result = run_spec(spec(url)).await;
            assert_eq!(result.outcome, Outcome::Retryable(Hint { retry_after: None, throttled }), "{status}");
        }
    }

    #[tokio::test]
    async fn a_404_fails_at_once() {
        let url = answering(404, &[], "no such hook").await;
        let result = run_spec(spec(url)).await;
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.status_code, Some(404));
        assert_eq!(result.error.as_deref(), Some(format!("HTTP 404 Not Found: {NOT_FOUND}").as_str()));
    }

    #[tokio::test]
    async fn a_410_means_gone() {
        let url = answering(410, &[], "").await;
        let result = run_spec(spec(url)).await;
        assert_eq!(result.outcome, Outcome::Gone);
        assert_eq!(result.status_code, Some(410));
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_fails() {
        let (target, mut seen) = recording().await;
        let location: &'static str = Box::leak(format!("{target}/elsewhere").into_boxed_str());
        let url = answering(307, &[("location", location)], "").await;
        let result = run_spec(spec(url)).await;
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.status_code, Some(307));
        assert_eq!(result.error.as_deref(), Some("HTTP 307 (redirects are not followed)"));
        assert!(seen.try_recv().is_err(), "the redirect was followed");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let result = run_spec(spec(format!("http://{addr}/hook?token=s3cr3t"))).await;
        assert_eq!(result.outcome, Outcome::Retryable(Hint::default()));
        assert_eq!(result.status_code, None);
        assert_eq!(result.error.as_deref(), Some("connection refused"));
    }

    #[tokio::test]
    async fn an_unresolvable_host_is_retryable() {
        // `.invalid` never resolves (RFC 2606); without a resolver this may time out instead.
        let mut s = spec("http://hookgate-test.invalid/hook?token=s3cr3t");
        s.timeout = Duration::from_secs(3);
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Retryable(Hint::default()));
        let error = result.error.unwrap();
        assert!(!error.contains("s3cr3t") && !error.contains("hookgate-test"), "{error}");
    }

    #[tokio::test]
    async fn a_slow_peer_times_out_and_is_retryable() {
        let app = Router::new().fallback(any(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }));
        let url = serve(app).await;
        let mut s = spec(url);
        s.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let result = run_spec(s).await;
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert_eq!(result.outcome, Outcome::Retryable(Hint { retry_after: None, throttled: true }));
        assert_eq!(result.error.as_deref(), Some("timed out after 300ms"));
    }

    #[tokio::test]
    async fn cancellation_abandons_the_request() {
        let app = Router::new().fallback(any(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }));
        let url = serve(app).await;
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let result = run(&Runner::new(), spec(url), &cancel).await;
        assert_eq!(result.outcome, Outcome::Retryable(Hint::default()));
        assert_eq!(result.error.as_deref(), Some("cancelled"));
    }

    #[tokio::test]
    async fn method_headers_and_body_are_delivered() {
        let (url, mut seen) = recording().await;
        let mut s = spec(format!("{url}/deploy/now"));
        s.method = http::Method::PUT;
        s.headers = vec![("X-Custom".into(), "one".into()), ("x-custom".into(), "two".into())];
        s.body = Bytes::from_static(b"payload bytes");
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Success);
        let got = seen.recv().await.unwrap();
        assert_eq!(got.method, http::Method::PUT);
        assert_eq!(got.path, "/deploy/now");
        assert_eq!(&got.body[..], b"payload bytes");
        let custom: Vec<_> = got.headers.get_all("x-custom").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(custom, ["one", "two"]);
        assert_eq!(got.headers["content-type"], "application/json");
        assert_eq!(got.headers["user-agent"], "hookgate");
    }

    #[tokio::test]
    async fn a_configured_content_type_is_kept() {
        let (url, mut seen) = recording().await;
        let mut s = spec(url);
        s.headers = vec![("Content-Type".into(), "text/plain".into())];
        run_spec(s).await;
        let got = seen.recv().await.unwrap();
        let types: Vec<_> = got.headers.get_all("content-type").iter().collect();
        assert_eq!(types, ["text/plain"]);
    }

    #[tokio::test]
    async fn the_response_body_is_capped() {
        let app = Router::new().fallback(any(|| async { "a".repeat(10_000) }));
        let url = serve(app).await;
        let mut s = spec(url);
        s.output_cap = 100;
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Success);
        assert_eq!(result.output.unwrap(), format!("{}…[truncated 9900 bytes]", "a".repeat(100)));
    }

    #[tokio::test]
    async fn an_invalid_url_fails() {
        for url in ["not a url", "ftp://127.0.0.1/x", ""] {
            let result = run_spec(spec(url)).await;
            assert_eq!(result.outcome, Outcome::Failed, "{url}");
            assert!(result.error.unwrap().starts_with("invalid URL"), "{url}");
        }
    }

    #[tokio::test]
    async fn an_invalid_header_fails_without_echoing_its_value() {
        let (url, _seen) = recording().await;
        let mut s = spec(url);
        s.headers = vec![("Authorization".into(), "Bearer s3cr3t\nInjected: yes".into())];
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Failed);
        let error = result.error.unwrap();
        assert_eq!(error, "invalid value for header `authorization`");
    }

    #[tokio::test]
    async fn a_standard_webhooks_signature_verifies_at_the_peer() {
        let key = b"test signing key for hookgate!!";
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        let (url, mut seen) = recording().await;
        let mut s = spec(url);
        s.sign = Some(SignSpec { scheme: Scheme::named("standard").unwrap(), secret: Secret::new(secret) });
        let before_ms = now_ms();
        let result = run_spec(s.clone()).await;
        assert_eq!(result.outcome, Outcome::Success, "{:?}", result.error);

        let got = seen.recv().await.unwrap();
        let id = got.headers["webhook-id"].to_str().unwrap();
        let timestamp = got.headers["webhook-timestamp"].to_str().unwrap();
        assert_eq!(id, s.message_id);
        let seconds: i64 = timestamp.parse().unwrap();
        assert!((before_ms / 1000 - 1..=now_ms() / 1000 + 1).contains(&seconds), "{timestamp}");

        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&got.body);
        let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
        let signatures = got.headers["webhook-signature"].to_str().unwrap();
        assert!(signatures.split(' ').any(|sig| sig == expected), "{signatures} lacks {expected}");
        assert_eq!(&got.body[..], &s.body[..]);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates_within_an_hour() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let parse = |text: &'static str| parse_retry_after(&HeaderValue::from_static(text), now);
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let date = |text: &str| parse_retry_after(&HeaderValue::try_from(text).unwrap(), now);
        assert_eq!(date(&in_90s), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(date(&past), Some(Duration::ZERO));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(7 * 86400));
        assert_eq!(date(&far), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("-5"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
    }
}
