//! verify: pure signature checks for every provider — headers and bytes in, verdict out (no I/O) — and
//! the mirror-image signatures for outbound webhooks.
//!
//! Nothing here depends on the rest of the crate: it is fuzzable on its own. Every comparison of a secret
//! or signature is constant-time, and no error carries an expected value. The providers are listed once,
//! in [`PROVIDERS`] (`provider.rs`); each provider's file holds both its check and its signature.

mod bitbucket;
mod generic;
mod gitea;
mod github;
mod gitlab;
mod infisical;
mod keys;
pub mod mac;
mod provider;
mod secret;
mod signing;
mod slack;
mod standard;
mod stripe;
mod token;

pub use generic::{signed_content, OUTBOUND_SIGNATURE_HEADER};
pub use keys::{KeyError, Keys, Value};
pub use provider::{names as provider_names, provider, Check, Provider, Scheme, PROVIDERS};
pub use secret::Secret;
pub use signing::{Lines, Message, SignError};
pub use standard::key as standard_key;

use std::time::Duration;

/// What a request brings to verification.
pub struct Inbound<'a> {
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
    /// The raw query string, for tokens passed in the URL.
    pub query: Option<&'a str>,
    /// The current time, Unix milliseconds (a parameter so tests can pin it).
    pub now_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Millis,
}

/// Where the event name comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFrom {
    Header(String),
    /// A top-level string field of the JSON body.
    Field(String),
    None,
}

/// The configurable HMAC scheme (`provider = "hmac"`, and `sign = { scheme = "hmac" }` outbound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacOptions {
    pub signature_header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub prefix: String,
    pub timestamp_header: Option<String>,
    pub timestamp_unit: TimeUnit,
    /// Signed content with `{body}`, `{timestamp}` and `{id}` placeholders; default `{body}`.
    pub content: String,
    pub id_header: Option<String>,
    pub event: EventFrom,
}

/// A shared token (`provider = "token"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOptions {
    /// Header holding the token; `authorization` expects `Bearer <token>`.
    pub header: String,
    /// Query parameter that may hold the token instead (Flux "generic" style URLs).
    pub query_param: Option<String>,
    pub id_header: Option<String>,
    pub event: EventFrom,
}

/// What a verified request told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub event: Option<String>,
    pub delivery: Option<String>,
    /// For timestamped schemes, a digest of the signed (timestamp, body) pair (see [`replay_key`]).
    pub replay: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature")]
    MissingSignature,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("timestamp outside tolerance")]
    StaleTimestamp,
    #[error("no usable secret")]
    NoSecret,
    /// Verified, but the body could not be parsed where the scheme needs it (→ 400).
    #[error("unparseable body: {0}")]
    MalformedBody(&'static str),
}

/// A provider scheme with its secrets, ready to check requests.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub scheme: Scheme,
    pub secrets: Vec<Secret>,
    pub tolerance: Duration,
}

impl Verifier {
    /// Check a request; on success say which event and delivery it carries.
    pub fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        if !self.secrets.iter().any(|s| !s.is_empty()) {
            return Err(VerifyError::NoSecret);
        }
        self.scheme.check().verify(self, req)
    }

    /// The secrets worth trying (empty ones never verify anything).
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.secrets.iter().filter(|s| !s.is_empty()).map(|s| s.expose())
    }

    /// Fail unless `timestamp_ms` is within the tolerance of now, in either direction.
    fn check_time(&self, timestamp_ms: i64, now_ms: i64) -> Result<(), VerifyError> {
        let skew = now_ms.abs_diff(timestamp_ms);
        if u128::from(skew) > self.tolerance.as_millis() {
            return Err(VerifyError::StaleTimestamp);
        }
        Ok(())
    }
}

/// The same signed (timestamp, body) pair seen again within the tolerance is the same request replayed,
/// whatever delivery id it carries (an id header is often not signed, and even a signed one may be new on a
/// sender's retry). The store keeps this digest with the delivery and answers such a request as a duplicate.
pub fn replay_key(timestamp_ms: i64, body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new().chain_update(timestamp_ms.to_string()).chain_update(b".").chain_update(body);
    hex::encode(digest.finalize())
}

/// A header's value as text, trimmed; None when absent, not text, or empty.
fn header<'a>(req: &'a Inbound<'_>, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn header_owned(req: &Inbound<'_>, name: &str) -> Option<String> {
    header(req, name).map(str::to_owned)
}

/// A top-level field of a JSON body as text (strings as is, numbers printed). Only call after the
/// signature verified: a body that is not JSON is then a 400, not a 401.
fn body_field(body: &[u8], field: &str) -> Result<Option<String>, VerifyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| VerifyError::MalformedBody("the body is not JSON"))?;
    Ok(match value.get(field) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Seconds (or milliseconds) since the epoch as sent in a header.
fn parse_time(text: &str, unit: TimeUnit) -> Option<i64> {
    let n: i64 = text.trim().parse().ok()?;
    match unit {
        TimeUnit::Seconds => n.checked_mul(1000),
        TimeUnit::Millis => Some(n),
    }
}

fn event_from(req: &Inbound<'_>, from: &EventFrom) -> Result<Option<String>, VerifyError> {
    match from {
        EventFrom::Header(name) => Ok(header_owned(req, name)),
        EventFrom::Field(field) => body_field(req.body, field),
        EventFrom::None => Ok(None),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Building requests for the provider tests.
    use super::*;

    pub fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
        }
        map
    }

    pub fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
        Verifier {
            scheme,
            secrets: secrets.iter().map(|s| Secret::new(s.as_bytes().to_vec())).collect(),
            tolerance: Duration::from_secs(300),
        }
    }

    pub fn check(v: &Verifier, pairs: &[(&str, &str)], body: &[u8], now_ms: i64) -> Result<Verified, VerifyError> {
        let headers = headers(pairs);
        v.verify(&Inbound { headers: &headers, body, query: None, now_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn a_verifier_never_prints_its_secrets() {
        let v = verifier(Scheme::github(false), &["hunter2-secret"]);
        assert!(!format!("{v:?}").contains("hunter2"));
    }

    #[test]
    fn errors_never_carry_the_expected_signature() {
        let v = verifier(Scheme::named("gitea").unwrap(), &["s3"]);
        let expected = hex::encode(mac::compute(Algorithm::Sha256, b"s3", &[b"x"]));
        let err = check(&v, &[("x-gitea-signature", &"0".repeat(64))], b"x", 0).unwrap_err();
        assert!(!err.to_string().contains(&expected) && !format!("{err:?}").contains(&expected));
        assert!(!err.to_string().contains("s3"));
    }

    #[test]
    fn every_scheme_without_a_usable_secret_is_off() {
        // Every provider that needs no keys; `hmac` (which does) has its own test.
        for scheme in PROVIDERS.iter().filter_map(|p| Scheme::new(p, &Keys::default()).ok()) {
            assert_eq!(
                check(&verifier(scheme.clone(), &["", ""]), &[], b"", 0),
                Err(VerifyError::NoSecret),
                "{scheme:?}"
            );
        }
    }
}
