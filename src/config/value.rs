//! config::value: one configuration value at a time — durations, sizes, rates, variable names, secret
//! references — parsed into typed values, with errors that name the key.
//!
//! A leaf: it knows no section of the file. The file's sections (`config`) and the action kinds, which own
//! their options (`crate::actions`), both parse with it, so neither needs the other to read a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::verify::Secret;

/// A configuration error, always naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// The keys a struct's `Deserialize` reads, as serde's derive declares them.
pub fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    use std::cell::Cell;

    /// A deserializer that only asks a struct for its field names.
    struct Probe<'a>(&'a Cell<&'static [&'static str]>);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("fields probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    let fields = Cell::new(&[][..]);
    let _ = T::deserialize(Probe(&fields));
    fields.get()
}

/// Where configuration reads environment variables; a trait so tests never touch the process env.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

/// Names of variables a command may take from hookgate's environment: names only, no patterns.
pub fn validate_env_pass(key: &str, names: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let names = names.unwrap_or_default();
    for (j, name) in names.iter().enumerate() {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(
                format!("{key}[{j}]"),
                format!("`{name}` is not a variable name (letters, digits and '_', not starting with a digit)"),
            ));
        }
    }
    Ok(names)
}

/// Splits `env:NAME?fallback` into the name and the fallback.
fn env_reference(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('?') {
        Some((name, fallback)) => (name, Some(fallback)),
        None => (rest, None),
    }
}

/// Whether a secret reference resolves to text written in the configuration itself: a literal, or an
/// `env:NAME?fallback` whose variable is unset.
pub fn is_literal(reference: &str, env: &dyn Env) -> bool {
    if let Some(rest) = reference.strip_prefix("env:") {
        let (name, fallback) = env_reference(rest);
        fallback.is_some_and(|f| !f.is_empty()) && env.var(name).is_none_or(|v| v.is_empty())
    } else {
        !reference.starts_with("file:") && !reference.is_empty()
    }
}

/// Resolve `env:NAME`, `file:PATH` or a literal; `env:NAME?fallback` uses the fallback only while the
/// variable is unset or empty. `Ok(None)` when nothing usable is left.
pub fn resolve_secret(key: &str, reference: &str, base: &Path, env: &dyn Env) -> Result<Option<Secret>, ConfigError> {
    let value = if let Some(rest) = reference.strip_prefix("env:") {
        let (name, fallback) = env_reference(rest);
        env.var(name).filter(|v| !v.is_empty()).or_else(|| fallback.map(str::to_string))
    } else if let Some(path) = reference.strip_prefix("file:") {
        let path = base.join(path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(key, format!("cannot read secret file {}: {e}", path.display())))?;
        Some(text.trim_end_matches(['\n', '\r']).to_string())
    } else {
        Some(reference.to_string())
    };
    Ok(value.filter(|v| !v.is_empty()).map(Secret::new))
}

pub fn opt_duration(key: &str, v: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    v.map(|v| parse_duration(key, v)).transpose().map(|d| d.unwrap_or(default))
}

/// "500ms", "10s", "5m", "2h", "7d".
pub fn parse_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v.trim())
        .map_err(|_| invalid(key, format!("`{v}` is not a duration like \"10s\", \"5m\" or \"7d\"")))
}

pub fn opt_size(key: &str, v: Option<&str>, default: usize) -> Result<usize, ConfigError> {
    v.map(|v| parse_size(key, v)).transpose().map(|d| d.unwrap_or(default))
}

/// "512", "64KiB", "1MiB", "25MB", "1GiB".
pub fn parse_size(key: &str, v: &str) -> Result<usize, ConfigError> {
    let text = v.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || invalid(key, format!("`{v}` is not a size like \"1MiB\" or \"512KiB\""));
    let n: usize = digits.parse().map_err(|_| bad())?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|n| *n > 0).ok_or_else(bad)
}

/// "100/s", "600/m", "10000/h".
pub fn parse_rate(key: &str, v: &str) -> Result<RateLimit, ConfigError> {
    let bad = || invalid(key, format!("`{v}` is not a rate like \"100/s\" or \"600/m\""));
    let (count, unit) = v.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(bad());
    }
    Ok(RateLimit { count, per })
}
