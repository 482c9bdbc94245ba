//! http::secret_header: header values that are secrets — `env:NAME` (read at load) or `file:PATH` (read at each
//! attempt, so a rotated Kubernetes service-account token is picked up), and `bearer_token`, which sends one as
//! `Authorization: Bearer …`.
//!
//! Such a value is never a template (it is not rendered, so a template cannot print it), never written into an
//! error, a log line or the API: errors name the header and the file's path only.

use std::path::{Path, PathBuf};

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};

use crate::config::value::{invalid, resolve_secret, ConfigError, Env};
use crate::verify::Secret;

/// Where a secret header's value comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// `env:NAME`, resolved at load.
    Loaded(Secret),
    /// `file:PATH`, read at each attempt.
    File(PathBuf),
}

/// One header whose value is a secret.
#[derive(Debug, Clone)]
pub struct SecretHeader {
    pub name: String,
    /// Put before the secret: `"Bearer "` for `bearer_token`, else empty.
    pub prefix: &'static str,
    pub source: SecretSource,
}

/// Whether a header value as written is a secret reference rather than a template.
pub(super) fn is_reference(value: &str) -> bool {
    value.starts_with("env:") || value.starts_with("file:")
}

/// Resolve a reference written at `key`: `env:` now; `file:` is read now too, so that a missing file is refused
/// at load, and again at each attempt.
pub(super) fn resolve(
    key: &str,
    name: &str,
    prefix: &'static str,
    reference: &str,
    base: &Path,
    env: &dyn Env,
) -> Result<SecretHeader, ConfigError> {
    if !is_reference(reference) {
        return Err(invalid(key, "must be `env:NAME` or `file:PATH` (a secret is never written in the file)"));
    }
    let secret = resolve_secret(key, reference, base, env)?
        .ok_or_else(|| invalid(key, "resolves to nothing (is the variable or file set?)"))?;
    header_value(prefix, secret.expose()).map_err(|_| invalid(key, "not a valid header value (a line break?)"))?;
    let source = match reference.strip_prefix("file:") {
        Some(path) => SecretSource::File(base.join(path)),
        None => SecretSource::Loaded(secret),
    };
    Ok(SecretHeader { name: name.to_string(), prefix, source })
}

/// `Authorization: Bearer <bearer_token>`.
pub(super) fn bearer(key: &str, reference: &str, base: &Path, env: &dyn Env) -> Result<SecretHeader, ConfigError> {
    resolve(key, AUTHORIZATION.as_str(), "Bearer ", reference, base, env)
}

fn header_value(prefix: &str, secret: &[u8]) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(secret);
    let mut value = HeaderValue::from_bytes(&bytes)?;
    // Marked so that hyper's and reqwest's Debug output never show it.
    value.set_sensitive(true);
    Ok(value)
}

impl SecretHeader {
    /// The header for one attempt. The error names the header and the file, never the value.
    pub fn value(&self) -> Result<(HeaderName, HeaderValue), String> {
        let name = HeaderName::try_from(self.name.as_str()).map_err(|_| format!("invalid header name `{}`", self.name))?;
        let value = match &self.source {
            SecretSource::Loaded(secret) => header_value(self.prefix, secret.expose()),
            SecretSource::File(path) => {
                let text = std::fs::read(path)
                    .map_err(|e| format!("cannot read header `{name}` from {}: {}", path.display(), e.kind()))?;
                let trimmed = text.trim_ascii_end();
                if trimmed.is_empty() {
                    return Err(format!("header `{name}`: {} is empty", path.display()));
                }
                header_value(self.prefix, trimmed)
            }
        };
        let value = value.map_err(|_| format!("invalid value for header `{name}`"))?;
        Ok((name, value))
    }
}
