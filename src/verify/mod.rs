//! verify: pure inbound signature checks for every provider — headers and bytes in, verdict out (no I/O).
//!
//! STUB: the interface is fixed; a helper fills in the schemes. Do not depend on anything else in the crate.

mod secret;

pub use secret::Secret;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Github { allow_sha1: bool },
    Gitlab,
    Gitea,
    Bitbucket,
    Infisical,
    Standard,
    Stripe,
    Slack,
    Hmac(HmacOptions),
    Token(TokenOptions),
}

/// What a verified request told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub event: Option<String>,
    pub delivery: Option<String>,
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
    pub fn verify(&self, _req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        todo!("verify")
    }
}
