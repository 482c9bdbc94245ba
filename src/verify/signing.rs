//! What every provider's signer shares: the message being signed, the error, and header-building helpers.

use super::{mac, Algorithm};

/// What is being signed.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Stable across retries (`webhook-id`, `X-Webhook-Id`, ...).
    pub id: &'a str,
    pub event: Option<&'a str>,
    /// Fresh on every attempt, Unix milliseconds.
    pub timestamp_ms: i64,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("secret is not usable for this scheme: {0}")]
    BadSecret(&'static str),
    /// The options ask for something the receiver could never check (e.g. `{id}` without an id header).
    #[error("options cannot produce a verifiable signature: {0}")]
    Unverifiable(&'static str),
}

/// Header lines (name, value) in the order they are sent.
pub type Lines = Vec<(String, String)>;

/// Lower-case hex HMAC-SHA256 of the concatenated `parts`.
pub(super) fn hex_mac(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac::compute(Algorithm::Sha256, key, parts))
}

pub(super) fn push(out: &mut Lines, name: &str, value: impl Into<String>) {
    out.push((name.to_string(), value.into()));
}

/// Optional headers (event, delivery id) are left out rather than sent empty.
pub(super) fn push_some(out: &mut Lines, name: &str, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        push(out, name, value);
    }
}

/// A shared token as it travels in a header: printable ASCII, without surrounding blanks the receiver would trim.
pub(super) fn token_text(key: &[u8]) -> Result<&str, SignError> {
    let printable = key.iter().all(|b| (0x20..0x7f).contains(b));
    let trimmed = key.first() != Some(&b' ') && key.last() != Some(&b' ');
    match std::str::from_utf8(key) {
        Ok(text) if printable && trimmed => Ok(text),
        _ => Err(SignError::BadSecret("a token must be printable ASCII without surrounding spaces")),
    }
}
