//! A provider's own keys as written (in a source, a `sign` table or on the command line), and their parsing.
//!
//! The keys every source has (`name`, `secrets`, `max_body`, …) are the configuration's business; these are
//! the ones a provider reads to choose its options, checked against the provider's list in the table.

use std::collections::BTreeMap;

use super::{Algorithm, Encoding, EventFrom, TimeUnit};

/// What the hmac keys mean when left out (`config.default.toml` shows them).
const DEFAULT_ALGORITHM: &str = "sha256";
const DEFAULT_ENCODING: &str = "hex";
const DEFAULT_TIMESTAMP_UNIT: &str = "s";
const DEFAULT_CONTENT: &str = "{body}";

/// A key's value: the configuration and the command line only ever hand providers text or a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Flag(bool),
}

/// The provider keys that were set, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys(BTreeMap<String, Value>);

/// A provider key that was wrong; `key` is relative (`algorithm`), the caller adds where it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        KeyError { key: key.into(), message: message.into() }
    }
}

impl Keys {
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        self.0.insert(key.into(), value);
    }

    pub fn set_text(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.set(key, Value::Text(value.into()));
    }

    /// Set `key` unless it already is.
    pub fn default_text(&mut self, key: &str, value: &str) {
        self.0.entry(key.to_string()).or_insert_with(|| Value::Text(value.to_string()));
    }

    /// The names that were set, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Keep only the keys `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|k, _| keep(k));
    }

    /// The text of `key`; None when unset, an error when it is a flag.
    pub fn text(&self, key: &str) -> Result<Option<&str>, KeyError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Text(text)) => Ok(Some(text)),
            Some(Value::Flag(_)) => Err(KeyError::new(key, "expected a string")),
        }
    }

    /// The flag `key`; None when unset, an error when it is text.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, KeyError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Flag(flag)) => Ok(Some(*flag)),
            Some(Value::Text(_)) => Err(KeyError::new(key, "expected true or false")),
        }
    }

    pub fn algorithm(&self) -> Result<Algorithm, KeyError> {
        match self.text("algorithm")?.unwrap_or(DEFAULT_ALGORITHM) {
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(KeyError::new("algorithm", format!("unknown algorithm `{other}` (sha1, sha256, sha512)"))),
        }
    }

    pub fn encoding(&self) -> Result<Encoding, KeyError> {
        match self.text("encoding")?.unwrap_or(DEFAULT_ENCODING) {
            "hex" => Ok(Encoding::Hex),
            "base64" => Ok(Encoding::Base64),
            other => Err(KeyError::new("encoding", format!("unknown encoding `{other}` (hex, base64)"))),
        }
    }

    pub fn timestamp_unit(&self) -> Result<TimeUnit, KeyError> {
        match self.text("timestamp_unit")?.unwrap_or(DEFAULT_TIMESTAMP_UNIT) {
            "s" => Ok(TimeUnit::Seconds),
            "ms" => Ok(TimeUnit::Millis),
            other => Err(KeyError::new("timestamp_unit", format!("unknown unit `{other}` (s, ms)"))),
        }
    }

    /// `event_header` or `event_field`, not both.
    pub fn event(&self) -> Result<EventFrom, KeyError> {
        match (self.text("event_header")?, self.text("event_field")?) {
            (Some(_), Some(_)) => Err(KeyError::new("event_field", "set event_header or event_field, not both")),
            (Some(h), None) => Ok(EventFrom::Header(h.to_string())),
            (None, Some(f)) => Ok(EventFrom::Field(f.to_string())),
            (None, None) => Ok(EventFrom::None),
        }
    }

    /// The signed-content template (default `{body}`), with only known placeholders.
    pub fn content(&self) -> Result<String, KeyError> {
        let content = self.text("content")?.unwrap_or(DEFAULT_CONTENT).to_string();
        let mut rest = content.as_str();
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').ok_or_else(|| KeyError::new("content", "unclosed `{`"))?;
            let name = &rest[start + 1..start + end];
            if !matches!(name, "body" | "timestamp" | "id") {
                return Err(KeyError::new(
                    "content",
                    format!("unknown placeholder `{{{name}}}` (body, timestamp, id)"),
                ));
            }
            rest = &rest[start + end + 1..];
        }
        Ok(content)
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for Keys {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Keys(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_of_the_wrong_kind_is_named() {
        let keys: Keys =
            [("allow_sha1", Value::Text("yes".into())), ("prefix", Value::Flag(true))].into_iter().collect();
        assert_eq!(keys.flag("allow_sha1").unwrap_err().key, "allow_sha1");
        assert_eq!(keys.text("prefix").unwrap_err().key, "prefix");
        assert_eq!(keys.text("absent"), Ok(None));
    }

    #[test]
    fn unknown_values_and_placeholders_are_named() {
        let bad = |k: &str, v: &str| -> Keys { [(k, Value::Text(v.into()))].into_iter().collect() };
        assert_eq!(bad("algorithm", "md5").algorithm().unwrap_err().key, "algorithm");
        assert_eq!(bad("encoding", "b32").encoding().unwrap_err().key, "encoding");
        assert_eq!(bad("timestamp_unit", "us").timestamp_unit().unwrap_err().key, "timestamp_unit");
        assert_eq!(bad("content", "{nonce}.{body}").content().unwrap_err().key, "content");
        assert_eq!(bad("content", "{body").content().unwrap_err().key, "content");
        let both: Keys =
            [("event_header", Value::Text("x".into())), ("event_field", Value::Text("y".into()))].into_iter().collect();
        assert_eq!(both.event().unwrap_err().key, "event_field");
    }

    #[test]
    fn defaults_apply_when_unset() {
        let keys = Keys::default();
        assert_eq!(keys.algorithm(), Ok(Algorithm::Sha256));
        assert_eq!(keys.encoding(), Ok(Encoding::Hex));
        assert_eq!(keys.timestamp_unit(), Ok(TimeUnit::Seconds));
        assert_eq!(keys.content().as_deref(), Ok("{body}"));
        assert_eq!(keys.event(), Ok(EventFrom::None));
    }
}
