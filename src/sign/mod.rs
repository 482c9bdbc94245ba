//! sign: signatures for outbound webhooks and for `hookgate sign`, the mirror image of `verify`.
//!
//! STUB: interface fixed; a helper fills it in. Depends only on `verify`'s pure types.

use crate::verify::{Scheme, Secret};

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
}

/// The header lines (name, value) that make `msg` verify under `scheme` with `secret`.
pub fn headers(_scheme: &Scheme, _secret: &Secret, _msg: &Message<'_>) -> Result<Vec<(String, String)>, SignError> {
    todo!("sign")
}
