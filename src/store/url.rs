//! url: the store URL parsed once, when the configuration is read — which backend, and where its data is.
//!
//! Only the schemes the configuration documents are accepted; anything else (`mysql://…`, a bare file name)
//! is refused at start-up instead of quietly becoming a SQLite file named like the URL.

use std::path::{Path, PathBuf};

/// Where the store keeps its data: `sqlite://PATH` or `postgres://…` (`store.url`, `HOOKGATE_STORE_URL`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The SQLite database file (`sqlite://PATH`, also `sqlite:PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`) as written: its libpq parameters (`sslmode`, …)
    /// are read by `postgres_tls`.
    Postgres(String),
}

/// Why a text is not a store URL. Its message never repeats a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreUrlError(String);

impl StoreUrl {
    pub fn parse(text: &str) -> Result<Self, StoreUrlError> {
        if let Some(path) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(StoreUrlError(format!("`{text}` names no database file; write sqlite://PATH")));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(text.to_string()));
        }
        let shown = super::postgres_tls::redacted(text);
        let hint = if text.contains("://") {
            "the store is sqlite://PATH or postgres://USER@HOST/DB".to_string()
        } else {
            format!("the store is sqlite://PATH or postgres://USER@HOST/DB (for a SQLite file, write sqlite://{shown})")
        };
        Err(StoreUrlError(format!("`{shown}` is not a store URL: {hint}")))
    }

    /// A relative SQLite path taken as relative to `base` (the configuration file's folder), like `file:`
    /// secrets; an empty `base` leaves it relative to the working directory.
    pub fn relative_to(self, base: &Path) -> Self {
        match self {
            StoreUrl::Sqlite(path) if path.is_relative() && base != Path::new("") => StoreUrl::Sqlite(base.join(path)),
            other => other,
        }
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(text)
    }
}

/// The URL as an operator would write it, with a PostgreSQL password replaced by `***`.
impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => f.write_str(&super::postgres_tls::redacted(url)),
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_schemes_parse_into_their_backend() {
        assert_eq!(StoreUrl::parse("sqlite://hookgate.db").unwrap(), StoreUrl::Sqlite("hookgate.db".into()));
        assert_eq!(StoreUrl::parse("sqlite:///var/lib/h.db").unwrap(), StoreUrl::Sqlite("/var/lib/h.db".into()));
        assert_eq!(StoreUrl::parse("sqlite:data/h.db").unwrap(), StoreUrl::Sqlite("data/h.db".into()));
        for url in ["postgres://app@db/h", "postgresql://app@db/h?sslmode=require"] {
            assert_eq!(StoreUrl::parse(url).unwrap(), StoreUrl::Postgres(url.into()));
        }
    }

    #[test]
    fn an_unknown_scheme_a_bare_path_or_an_empty_path_is_refused() {
        for url in ["mysql://x", "hookgate.db", "/var/lib/h.db", "", "sqlite://", "sqlite:", "file:h.db"] {
            assert!(StoreUrl::parse(url).is_err(), "{url}");
        }
        let bare = StoreUrl::parse("hookgate.db").unwrap_err().to_string();
        assert!(bare.contains("sqlite://hookgate.db"), "{bare}");
    }

    #[test]
    fn a_password_never_reaches_the_text_of_a_url_or_of_its_error() {
        let url = StoreUrl::parse("postgres://app:hunter2@db/h?sslmode=require").unwrap();
        assert!(!url.to_string().contains("hunter2"), "{url}");
        assert!(!format!("{url:?}").contains("hunter2"), "{url:?}");
        let err = StoreUrl::parse("mysql://app:hunter2@db/h").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("mysql://app:***@db/h"), "{err}");
    }

    #[test]
    fn relative_sqlite_paths_resolve_against_the_config_folder() {
        let base = Path::new("/etc/hookgate");
        assert_eq!(
            StoreUrl::parse("sqlite://data/h.db").unwrap().relative_to(base),
            StoreUrl::Sqlite("/etc/hookgate/data/h.db".into())
        );
        assert_eq!(StoreUrl::parse("sqlite:///h.db").unwrap().relative_to(base), StoreUrl::Sqlite("/h.db".into()));
        assert_eq!(
            StoreUrl::parse("sqlite://h.db").unwrap().relative_to(Path::new("")),
            StoreUrl::Sqlite("h.db".into())
        );
        let pg = StoreUrl::parse("postgres://db/h").unwrap();
        assert_eq!(pg.clone().relative_to(base), pg);
    }
}
