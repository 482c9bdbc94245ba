//! github::api: the small typed client of GitHub's hook-deliveries API — list one page, ask for a
//! redelivery — with GitHub's rate-limit answers turned into typed errors that say how long to wait.
//!
//! Hostile or broken answers are bounded: a body over [`MAX_BODY`] is refused, every request has a timeout,
//! and a `Link: rel="next"` that leaves the configured API's origin is never followed (it would carry the
//! token elsewhere). The token never reaches an error, a log line or the API's answers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::settings::Recovery;

/// GitHub's page size limit for deliveries.
pub const PER_PAGE: usize = 100;
/// A page of 100 deliveries is some tens of KB; anything much larger is not GitHub.
pub const MAX_BODY: usize = 4 << 20;
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// GitHub: "if you are rate limited for another reason, wait at least one minute".
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);
const API_VERSION: &str = "2022-11-28";

/// One delivery attempt as GitHub lists it (fields hookgate does not use are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookDelivery {
    pub id: u64,
    pub guid: String,
    pub delivered_at: String,
    #[serde(default)]
    pub redelivery: bool,
    #[serde(default)]
    pub status: String,
    /// 0 when GitHub could not connect or timed out.
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
}

impl HookDelivery {
    /// Whether hookgate answered 2xx to this attempt.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }

    /// `delivered_at` in Unix milliseconds; `None` when GitHub's text is not RFC 3339.
    pub fn delivered_ms(&self) -> Option<i64> {
        let at = humantime::parse_rfc3339_weak(self.delivered_at.trim_end_matches('Z')).ok()?;
        Some(at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
    }
}

/// A page and the URL of the next one (from the `Link` header), if any.
#[derive(Debug)]
pub struct Page {
    pub deliveries: Vec<HookDelivery>,
    pub next: Option<String>,
}

/// What went wrong talking to GitHub. The messages are for operators (log, CLI); none holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GithubError {
    #[error("GitHub answered 401: bad credentials (is the token valid and not expired?)")]
    BadCredentials,
    #[error(
        "GitHub answered 403: forbidden ({0}); the token needs the \"Webhooks\" permission (read and write) on \
         the repository or organization"
    )]
    Forbidden(String),
    #[error("GitHub answered 404 for {0}: the hook does not exist, or the token cannot see it")]
    NotFound(String),
    #[error("GitHub answered 422: {0}")]
    Unprocessable(String),
    /// A primary limit (remaining 0, wait for the reset) or a secondary one (`Retry-After`).
    #[error("GitHub's rate limit is exhausted: waiting {}s", wait.as_secs())]
    RateLimited { wait: Duration },
    #[error("GitHub answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot reach GitHub's API: {0}")]
    Transport(String),
    #[error("GitHub's answer is not what its API documents: {0}")]
    Invalid(String),
    #[error("{0}")]
    Credentials(String),
}

impl GithubError {
    /// How long to leave GitHub alone after this error before the next round.
    pub fn backoff(&self) -> Option<Duration> {
        match self {
            GithubError::RateLimited { wait } => Some(*wait),
            _ => None,
        }
    }
}

/// The rate limit as GitHub reported it on the last answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub remaining: Option<u64>,
    /// Unix seconds.
    pub reset: Option<u64>,
}

impl Quota {
    fn from_headers(headers: &HeaderMap) -> Quota {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        Quota { remaining: number("x-ratelimit-remaining"), reset: number("x-ratelimit-reset") }
    }

    /// When the quota is used up: how long until it resets (at least a second).
    pub fn exhausted_for(&self, now: SystemTime) -> Option<Duration> {
        if self.remaining != Some(0) {
            return None;
        }
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let reset = self.reset.unwrap_or(now + DEFAULT_BACKOFF.as_secs());
        Some(Duration::from_secs(reset.saturating_sub(now).clamp(1, 3600)))
    }
}

/// Classify a refused answer (GitHub's documented rules, in order): remaining 0 → wait for the reset;
/// `Retry-After` → wait that long; another 403/429 rate limit → a minute; then the status's own meaning.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], what: &str, now: SystemTime) -> GithubError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_default();
    let message: String = message.chars().take(200).collect();
    if matches!(status, StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS) {
        if let Some(wait) = Quota::from_headers(headers).exhausted_for(now) {
            return GithubError::RateLimited { wait };
        }
        let retry_after =
            headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if let Some(seconds) = retry_after {
            return GithubError::RateLimited { wait: Duration::from_secs(seconds.clamp(1, 3600)) };
        }
        if status == StatusCode::TOO_MANY_REQUESTS || message.to_ascii_lowercase().contains("rate limit") {
            return GithubError::RateLimited { wait: DEFAULT_BACKOFF };
        }
    }
    match status {
        StatusCode::UNAUTHORIZED => GithubError::BadCredentials,
        StatusCode::FORBIDDEN => GithubError::Forbidden(if message.is_empty() { "no message".into() } else { message }),
        StatusCode::NOT_FOUND => GithubError::NotFound(what.to_string()),
        StatusCode::UNPROCESSABLE_ENTITY => GithubError::Unprocessable(message),
        _ => GithubError::Status { status: status.as_u16(), message },
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(http::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// A client for one source's hook.
pub struct Client<'a> {
    http: &'a reqwest::Client,
    recovery: &'a Recovery,
}

impl<'a> Client<'a> {
    pub fn new(http: &'a reqwest::Client, recovery: &'a Recovery) -> Self {
        Client { http, recovery }
    }

    fn hook_url(&self) -> String {
        format!("{}/{}", self.recovery.api_url, self.recovery.hook.path())
    }

    /// The first page of the hook's deliveries (newest first), or the page `next` names.
    pub async fn list(&self, next: Option<&str>) -> Result<(Page, Quota), GithubError> {
        let url = match next {
            Some(url) => self.same_origin(url)?,
            None => format!("{}/deliveries?per_page={PER_PAGE}", self.hook_url()),
        };
        let (status, headers, body) = self.send(reqwest::Method::GET, &url).await?;
        let quota = Quota::from_headers(&headers);
        if !status.is_success() {
            return Err(classify(status, &headers, &body, &self.recovery.hook.path(), SystemTime::now()));
        }
        let deliveries: Vec<HookDelivery> =
            serde_json::from_slice(&body).map_err(|e| GithubError::Invalid(format!("deliveries: {e}")))?;
        Ok((Page { deliveries, next: next_link(&headers) }, quota))
    }

    /// Ask GitHub to send delivery `id` again (202 Accepted).
    pub async fn redeliver(&self, id: u64) -> Result<Quota, GithubError> {
        let url = format!("{}/deliveries/{id}/attempts", self.hook_url());
        let (status, headers, body) = self.send(reqwest::Method::POST, &url).await?;
        let quota = Quota::from_headers(&headers);
        if !status.is_success() {
            let what = format!("{}/deliveries/{id}", self.recovery.hook.path());
            return Err(classify(status, &headers, &body, &what, SystemTime::now()));
        }
        Ok(quota)
    }

    /// A `next` link is followed only on the configured API's scheme, host and port.
    fn same_origin(&self, url: &str) -> Result<String, GithubError> {
        let base = url::Url::parse(&self.recovery.api_url).map_err(|e| GithubError::Invalid(e.to_string()))?;
        let next = url::Url::parse(url).map_err(|_| GithubError::Invalid("a Link header that is not a URL".into()))?;
        if next.origin() != base.origin() {
            return Err(GithubError::Invalid(format!(
                "a Link header pointing away from {} (to {}); not followed",
                self.recovery.api_url,
                next.origin().ascii_serialization()
            )));
        }
        Ok(next.to_string())
    }

    async fn send(&self, method: reqwest::Method, url: &str) -> Result<(StatusCode, HeaderMap, Vec<u8>), GithubError> {
        let recovery = self.recovery;
        let token = recovery.credentials.bearer(self.http, &recovery.api_url, &recovery.hook).await?;
        send(self.http, method, url, &token).await
    }
}

/// One request to GitHub's API with the documented headers and `bearer`; the answer's body is bounded.
pub async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    bearer: &crate::verify::Secret,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), GithubError> {
    {
        let mut authorization = http::HeaderValue::from_bytes(&[b"Bearer ", bearer.expose()].concat())
            .map_err(|_| GithubError::Credentials("the token is not a valid header value (a line break?)".into()))?;
        authorization.set_sensitive(true);
        let response = http
            .request(method, url)
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header(http::header::AUTHORIZATION, authorization)
            .header("x-github-api-version", API_VERSION)
            .header(http::header::USER_AGENT, concat!("hookgate/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| GithubError::Transport(crate::store::error_chain(&e.without_url())))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| GithubError::Transport(crate::store::error_chain(&e.without_url())))?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(GithubError::Invalid(format!("an answer larger than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap())).collect()
    }

    const NOW: u64 = 1_700_000_000;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn an_exhausted_primary_limit_waits_until_its_reset() {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &(NOW + 42).to_string())]);
        for status in [StatusCode::FORBIDDEN, StatusCode::TOO_MANY_REQUESTS] {
            let e = classify(status, &h, b"{\"message\":\"API rate limit exceeded\"}", "hook", at(NOW));
            assert_eq!(e, GithubError::RateLimited { wait: Duration::from_secs(42) });
        }
        // A reset already past still waits a second; one absurdly far is capped at an hour.
        let past = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]);
        assert_eq!(classify(StatusCode::FORBIDDEN, &past, b"", "h", at(NOW)).backoff(), Some(Duration::from_secs(1)));
        let far = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "99999999999")]);
        assert_eq!(classify(StatusCode::FORBIDDEN, &far, b"", "h", at(NOW)).backoff(), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn a_secondary_limit_waits_retry_after_and_an_unexplained_one_a_minute() {
        let h = headers(&[("retry-after", "7"), ("x-ratelimit-remaining", "4000")]);
        let e = classify(StatusCode::FORBIDDEN, &h, b"{\"message\":\"secondary rate limit\"}", "h", at(NOW));
        assert_eq!(e.backoff(), Some(Duration::from_secs(7)));
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b"", "h", at(NOW));
        assert_eq!(e.backoff(), Some(DEFAULT_BACKOFF));
        let e = classify(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            b"{\"message\":\"You have exceeded a secondary rate limit\"}",
            "h",
            at(NOW),
        );
        assert_eq!(e.backoff(), Some(DEFAULT_BACKOFF));
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let none = HeaderMap::new();
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, &none, b"{\"message\":\"Bad credentials\"}", "h", at(NOW)),
            GithubError::BadCredentials
        );
        let e = classify(
            StatusCode::FORBIDDEN,
            &none,
            b"{\"message\":\"Resource not accessible by personal access token\"}",
            "h",
            at(NOW),
        );
        assert!(e.to_string().contains("Resource not accessible") && e.to_string().contains("Webhooks"), "{e}");
        let e = classify(StatusCode::NOT_FOUND, &none, b"{}", "repos/o/r/hooks/1", at(NOW));
        assert!(e.to_string().contains("repos/o/r/hooks/1"), "{e}");
        let e = classify(StatusCode::UNPROCESSABLE_ENTITY, &none, b"{\"message\":\"Validation Failed\"}", "h", at(NOW));
        assert_eq!(e, GithubError::Unprocessable("Validation Failed".into()));
        assert_eq!(e.backoff(), None);
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let h = headers(&[(
            "link",
            "<https://api.github.com/x?per_page=100&cursor=v1_1>; rel=\"prev\", <https://api.github.com/x?per_page=100&cursor=v1_2>; rel=\"next\"",
        )]);
        assert_eq!(next_link(&h).as_deref(), Some("https://api.github.com/x?per_page=100&cursor=v1_2"));
        assert_eq!(next_link(&headers(&[("link", "<https://a/x>; rel=\"prev\"")])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn a_delivery_parses_as_documented_and_fails_unless_2xx() {
        let text = r#"{"id": 12345678, "guid": "0b989ba4-242f-11e5-81e1-c7b6966d2516", "delivered_at": "2019-06-03T00:57:16Z",
            "redelivery": false, "duration": 0.27, "status": "Invalid HTTP Response: 503", "status_code": 503,
            "event": "push", "action": null, "installation_id": null, "repository_id": null, "throttled_at": null}"#;
        let d: HookDelivery = serde_json::from_str(text).unwrap();
        assert!(!d.succeeded());
        assert_eq!(d.delivered_ms(), Some(1_559_523_436_000));
        for (code, ok) in [(0, false), (200, true), (202, true), (299, true), (301, false), (401, false)] {
            assert_eq!(HookDelivery { status_code: code, ..d.clone() }.succeeded(), ok, "{code}");
        }
    }

    #[test]
    fn a_next_link_leaving_the_api_origin_is_not_followed() {
        let recovery = Recovery {
            hook: crate::github::Hook::parse("repos/o/r/hooks/1").unwrap(),
            credentials: crate::github::Credentials::Token(crate::github::settings::TokenSource::Loaded(
                crate::verify::Secret::new("t"),
            )),
            every: Duration::from_secs(60),
            lookback: Duration::from_secs(3600),
            api_url: "https://github.example.com/api/v3".into(),
        };
        let http = reqwest::Client::new();
        let client = Client::new(&http, &recovery);
        let same = "https://github.example.com/api/v3/repos/o/r/hooks/1/deliveries?cursor=v1_2";
        assert_eq!(client.same_origin(same).unwrap(), same);
        for away in [
            "https://evil.example/api/v3/repos/o/r/hooks/1/deliveries",
            "http://github.example.com/api/v3/x",
            "https://github.example.com:8443/api/v3/x",
            "not a url",
        ] {
            assert!(matches!(client.same_origin(away), Err(GithubError::Invalid(_))), "{away}");
        }
    }
}
