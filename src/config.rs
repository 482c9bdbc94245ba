//! config: the TOML file read once at start-up, validated into typed values, with env overrides.
//!
//! Two layers: `raw` mirrors the file exactly (unknown keys are errors that name the key), and
//! `Config` holds parsed durations, sizes, secrets and provider schemes. Every error names the key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::verify::{Keys, Scheme, Secret, Value, Verifier};

pub mod value;

pub use value::{
    field_names, invalid, opt_duration, parse_duration, parse_rate, parse_size, resolve_secret, validate_env_pass,
    ConfigError, Env, ProcessEnv, RateLimit,
};
use value::{is_literal, opt_size};

/// The file used when neither `--config` nor `HOOKGATE_CONFIG` names one.
pub const DEFAULT_PATH: &str = "hookgate.toml";

/// Every key with its default and a comment (`hookgate config example`); a test holds it to the parser.
pub const REFERENCE: &str = include_str!("../config.default.toml");

/// The value of every key left out, in one place; `config.default.toml` shows them and a test holds the two
/// together. (An action kind's defaults live with the kind, in `actions/`.)
pub mod defaults {
    use std::time::Duration;

    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const MAX_BODY: usize = 1 << 20;
    pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const MAX_CONNECTIONS_PER_IP: usize = 256;
    pub const MAX_BUFFERED: usize = 256 << 20;
    pub const UNVERIFIED_RATE_LIMIT: &str = "60/m";

    pub const STORE_URL: &str = "sqlite://hookgate.db";
    pub const RETENTION: Duration = Duration::from_secs(7 * 86_400);
    pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

    pub const ADMIN_TOKEN: &str = "env:HOOKGATE_ADMIN_TOKEN";
    pub const ADMIN_AUTH_FAILURE_LIMIT: &str = "10/m";

    pub const WORKER_CONCURRENCY: usize = 32;
    pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    pub const OUTPUT_CAP: usize = 16 << 10;
    pub const LEASE_MARGIN: Duration = Duration::from_secs(10);
    /// Commands run below the edge's priority, so a burst of actions cannot slow acknowledgements.
    pub const ACTION_NICE: i32 = 10;

    pub const TOLERANCE: Duration = Duration::from_secs(300);

    pub const BREAKER_WINDOW: Duration = Duration::from_secs(120);
    pub const BREAKER_MAX_FAILURES: u32 = 5;
    pub const BREAKER_OPEN_FOR: Duration = Duration::from_secs(60);
}

/// The file as written; [`REFERENCE`] (`config.default.toml`) lists every key.
pub mod raw {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        #[serde(default)]
        pub server: Server,
        #[serde(default)]
        pub store: Store,
        #[serde(default)]
        pub admin: Admin,
        #[serde(default)]
        pub worker: Worker,
        #[serde(default)]
        pub log: Log,
        #[serde(default)]
        pub sources: Vec<Source>,
        #[serde(default)]
        pub routes: Vec<Route>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub listen: Option<String>,
        pub max_body: Option<String>,
        pub log_client_ip: Option<bool>,
        pub read_timeout: Option<String>,
        pub max_connections: Option<usize>,
        pub max_connections_per_ip: Option<usize>,
        pub max_buffered: Option<String>,
        pub unverified_rate_limit: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        pub url: Option<String>,
        pub retention: Option<String>,
        pub purge_interval: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Admin {
        pub token: Option<String>,
        pub auth_failure_limit: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Worker {
        pub concurrency: Option<usize>,
        pub poll_interval: Option<String>,
        pub shutdown_grace: Option<String>,
        pub output_cap: Option<String>,
        pub lease_margin: Option<String>,
        pub action_nice: Option<i32>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Log {
        pub format: Option<String>,
    }

    /// A source as written: the keys every source has, and its provider's own keys. Which of those a
    /// provider takes is the provider table's call, so `validate_source` (not serde) refuses the others,
    /// naming the keys that provider does take.
    #[derive(Debug, Default, Deserialize)]
    pub struct Source {
        pub name: Option<String>,
        pub provider: Option<String>,
        #[serde(default)]
        pub secrets: Vec<String>,
        pub secret: Option<String>,
        pub max_body: Option<String>,
        pub rate_limit: Option<String>,
        pub tolerance: Option<String>,
        pub enabled: Option<bool>,
        /// The provider's own keys: whatever the fields above do not hold.
        #[serde(flatten)]
        pub options: BTreeMap<String, toml::Value>,
    }

    impl Source {
        /// The keys every source has: the fields above (a flattened struct does not tell serde's field list).
        pub const COMMON: &[&str] =
            &["name", "provider", "secrets", "secret", "max_body", "rate_limit", "tolerance", "enabled"];
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Route {
        pub name: Option<String>,
        pub source: Option<String>,
        pub filter: Option<String>,
        pub coalesce: Option<String>,
        pub coalesce_window: Option<String>,
        pub action: Option<crate::actions::RawAction>,
        pub retry: Option<Retry>,
        pub circuit_breaker: Option<Breaker>,
        pub concurrency: Option<usize>,
        pub enabled: Option<bool>,
        pub schedule: Option<String>,
        pub env_pass: Option<Vec<String>>,
        pub github_token: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Retry {
        pub max_attempts: Option<u32>,
        pub initial: Option<String>,
        pub max: Option<String>,
        pub throttle_floor: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Breaker {
        pub window: Option<String>,
        pub max_failures: Option<u32>,
        pub open_for: Option<String>,
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub store: StoreConfig,
    pub admin_token: Option<Secret>,
    /// Failed admin authentications allowed per client address.
    pub admin_auth_failure_limit: RateLimit,
    pub worker: WorkerConfig,
    /// How log lines are written (`[log] format`, `HOOKGATE_LOG_FORMAT` overrides).
    pub log_format: LogFormat,
    pub sources: Vec<Source>,
    pub routes: Vec<Route>,
    /// Weak spots worth a warning at start (never holding a secret's value).
    pub warnings: Vec<ConfigWarning>,
}

/// One line of text per event for people, or one JSON object per line for log collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Something that works but should not stay that way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigWarning {
    #[error("{key}: a literal secret is written in the configuration; use env:NAME or file:PATH")]
    LiteralSecret { key: String },
    #[error("admin.token: shorter than 16 characters, so it can be guessed")]
    ShortAdminToken,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body: usize,
    pub log_client_ip: bool,
    /// Time allowed to receive a request's headers and body.
    pub read_timeout: Duration,
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 /64 counts as one) at most.
    pub max_connections_per_ip: usize,
    /// Request body bytes held in memory at once, across all requests; past it, bodies are refused (503).
    pub max_buffered: usize,
    /// Requests per client address that may fail verification; past it, that address is answered 429
    /// before its body is read. The sources' own `rate_limit` counts verified requests only.
    pub unverified_rate_limit: RateLimit,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Which store, and where; its Debug and Display hide a PostgreSQL password.
    pub url: crate::store::StoreUrl,
    pub retention: Duration,
    /// How often deliveries past `retention` are purged (in small batches that let writes through).
    pub purge_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once by this instance, across routes.
    pub concurrency: usize,
    /// How often to look for due jobs when nothing wakes the worker.
    pub poll_interval: Duration,
    /// On SIGTERM, how long running jobs may finish before they are stopped and released.
    pub shutdown_grace: Duration,
    pub output_cap: usize,
    /// Lease time beyond an action's timeout: a job whose runner stopped is settled once it has passed.
    pub lease_margin: Duration,
    /// The nice value command actions (and what they start) run at: 0 (the gateway's own) to 19 (lowest).
    pub action_nice: i32,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub verifier: Verifier,
    pub max_body: usize,
    pub rate_limit: Option<RateLimit>,
    /// False when disabled, or when no secret is usable ("a source with no usable secret is off").
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// GitHub sources: ask GitHub's API to redeliver what failed (see `crate::github`).
    pub recovery: Option<crate::github::Recovery>,
}

pub use crate::retry::Retry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    pub window: Duration,
    pub max_failures: u32,
    pub open_for: Duration,
}

/// A route's action: each kind's options live in `crate::actions`.
pub use crate::actions::Action;

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub source: String,
    pub filter: Option<String>,
    pub coalesce: Option<String>,
    /// A keyed job waits this long before it runs, so a burst for one key becomes one run.
    pub coalesce_window: Duration,
    pub action: Action,
    pub retry: Retry,
    pub circuit_breaker: Option<Breaker>,
    pub concurrency: Option<usize>,
    pub enabled: bool,
    pub schedule: Option<Duration>,
    /// The GitHub source whose credentials (its `recovery` token or App installation token) the action gets:
    /// `Authorization: Bearer …` for http, `GITHUB_TOKEN` and a git credential helper for a command.
    pub github_token: Option<String>,
}

impl Config {
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// Read, parse and validate a config file, applying `HOOKGATE_*` overrides from `env`.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base, env)
}

/// Parse and validate config text; relative `file:` secrets resolve against `base`.
pub fn parse(text: &str, base: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let file: raw::File = toml::from_str(text).map_err(|e| ConfigError::Parse(describe_toml_error(text, &e)))?;
    validate(file, base, env)
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    // The message names the key ("unknown field `x`"); the source snippet is dropped: it may hold a secret.
    let message = e.message().trim();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

fn validate(file: raw::File, base: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut warnings = literal_secrets(&file, env);
    let listen_text = env.var("HOOKGATE_LISTEN").or(file.server.listen).unwrap_or_else(|| defaults::LISTEN.into());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| invalid("server.listen", format!("`{listen_text}` is not an address like 127.0.0.1:8080")))?;
    let max_body = opt_size("server.max_body", file.server.max_body.as_deref(), defaults::MAX_BODY)?;
    let server = Server {
        listen,
        max_body,
        log_client_ip: file.server.log_client_ip.unwrap_or(false),
        read_timeout: opt_duration("server.read_timeout", file.server.read_timeout.as_deref(), defaults::READ_TIMEOUT)?,
        max_connections: file.server.max_connections.unwrap_or(defaults::MAX_CONNECTIONS),
        max_connections_per_ip: file.server.max_connections_per_ip.unwrap_or(defaults::MAX_CONNECTIONS_PER_IP),
        max_buffered: opt_size("server.max_buffered", file.server.max_buffered.as_deref(), defaults::MAX_BUFFERED)?,
        unverified_rate_limit: parse_rate(
            "server.unverified_rate_limit",
            file.server.unverified_rate_limit.as_deref().unwrap_or(defaults::UNVERIFIED_RATE_LIMIT),
        )?,
    };
    if server.max_connections == 0 {
        return Err(invalid("server.max_connections", "must be at least 1"));
    }
    if server.max_connections_per_ip == 0 {
        return Err(invalid("server.max_connections_per_ip", "must be at least 1"));
    }

    let url_text = env.var("HOOKGATE_STORE_URL").or(file.store.url).unwrap_or_else(|| defaults::STORE_URL.into());
    let url = crate::store::StoreUrl::parse(&url_text).map_err(|e| invalid("store.url", e.to_string()))?;
    let store = StoreConfig {
        url: url.relative_to(base),
        retention: opt_duration("store.retention", file.store.retention.as_deref(), defaults::RETENTION)?,
        purge_interval: opt_duration(
            "store.purge_interval",
            file.store.purge_interval.as_deref(),
            defaults::PURGE_INTERVAL,
        )?,
    };
    if store.purge_interval < Duration::from_secs(1) {
        return Err(invalid("store.purge_interval", "must be at least 1s"));
    }
    if let crate::store::StoreUrl::Postgres(url) = &store.url {
        // sslmode and the certificate files are checked now, not at the first connection.
        crate::store::postgres_tls::connect_options(url).map_err(|e| invalid("store.url", e.to_string()))?;
    }

    let admin_token_ref = file.admin.token.unwrap_or_else(|| defaults::ADMIN_TOKEN.into());
    let admin_token = resolve_secret("admin.token", &admin_token_ref, base, env)?;
    let admin_auth_failure_limit = parse_rate(
        "admin.auth_failure_limit",
        file.admin.auth_failure_limit.as_deref().unwrap_or(defaults::ADMIN_AUTH_FAILURE_LIMIT),
    )?;
    if admin_token.as_ref().is_some_and(|t| String::from_utf8_lossy(t.expose()).chars().count() < 16) {
        warnings.push(ConfigWarning::ShortAdminToken);
    }

    let worker = WorkerConfig {
        concurrency: file.worker.concurrency.unwrap_or(defaults::WORKER_CONCURRENCY),
        poll_interval: opt_duration(
            "worker.poll_interval",
            file.worker.poll_interval.as_deref(),
            defaults::POLL_INTERVAL,
        )?,
        shutdown_grace: opt_duration(
            "worker.shutdown_grace",
            file.worker.shutdown_grace.as_deref(),
            defaults::SHUTDOWN_GRACE,
        )?,
        output_cap: opt_size("worker.output_cap", file.worker.output_cap.as_deref(), defaults::OUTPUT_CAP)?,
        lease_margin: opt_duration("worker.lease_margin", file.worker.lease_margin.as_deref(), defaults::LEASE_MARGIN)?,
        action_nice: file.worker.action_nice.unwrap_or(defaults::ACTION_NICE),
    };
    // A negative value would need CAP_SYS_NICE, and an action above the edge is what this key exists to prevent.
    if !(0..=19).contains(&worker.action_nice) {
        return Err(invalid("worker.action_nice", "must be 0 (the gateway's own priority) to 19 (the lowest)"));
    }
    if worker.concurrency == 0 {
        return Err(invalid("worker.concurrency", "must be at least 1"));
    }
    // Less would let a finished run lose its lease while it writes its outcome.
    if worker.lease_margin < Duration::from_secs(1) {
        return Err(invalid("worker.lease_margin", "must be at least 1s"));
    }

    let log_format_text = env.var("HOOKGATE_LOG_FORMAT").or(file.log.format).unwrap_or_else(|| "text".into());
    let log_format = LogFormat::parse(&log_format_text)
        .ok_or_else(|| invalid("log.format", format!("must be \"text\" or \"json\", not `{log_format_text}`")))?;

    let mut sources = Vec::new();
    for (i, raw) in file.sources.into_iter().enumerate() {
        let source = validate_source(i, raw, max_body, base, env)?;
        if sources.iter().any(|s: &Source| s.name == source.name) {
            return Err(invalid(format!("sources[{i}].name"), format!("`{}` is used twice", source.name)));
        }
        sources.push(source);
    }

    // A body the budget could never hold would be refused every time: say so now.
    if let Some((i, source)) = sources.iter().enumerate().find(|(_, s)| s.max_body > server.max_buffered) {
        return Err(invalid(
            format!("sources[{i}].max_body"),
            format!("{} bytes is more than server.max_buffered ({} bytes)", source.max_body, server.max_buffered),
        ));
    }

    let mut routes = Vec::new();
    for (i, raw) in file.routes.into_iter().enumerate() {
        let route = validate_route(i, raw, &sources, base, env)?;
        if routes.iter().any(|r: &Route| r.name == route.name) {
            return Err(invalid(format!("routes[{i}].name"), format!("`{}` is used twice", route.name)));
        }
        routes.push(route);
    }

    Ok(Config { server, store, admin_token, admin_auth_failure_limit, worker, log_format, sources, routes, warnings })
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn validate_source(
    i: usize,
    raw: raw::Source,
    default_max_body: usize,
    base: &Path,
    env: &dyn Env,
) -> Result<Source, ConfigError> {
    let key = |k: &str| format!("sources[{i}].{k}");
    let name = raw.name.ok_or_else(|| invalid(key("name"), "missing"))?;
    if !is_valid_name(&name) {
        return Err(invalid(key("name"), "use letters, digits, '-', '_' or '.' (at most 64)"));
    }
    if name == crate::events::SOURCE {
        return Err(invalid(
            key("name"),
            format!("`{name}` is reserved: routes take hookgate's operational events with source = \"{name}\""),
        ));
    }
    let key = |k: &str| format!("sources[{i}].{k}");
    let provider_name = raw.provider.ok_or_else(|| invalid(key("provider"), "missing"))?;
    let provider = crate::verify::provider(&provider_name).ok_or_else(|| {
        let known = crate::verify::provider_names().join(", ");
        invalid(key("provider"), format!("unknown provider `{provider_name}` ({known})"))
    })?;
    let mut options = raw.options;
    let recovery = match options.remove("recovery") {
        Some(_) if provider.name != "github" => {
            return Err(invalid(key("recovery"), "only a github source can recover failed deliveries"));
        }
        Some(value) => Some(crate::github::settings::validate(&key("recovery"), value, base, env)?),
        None => None,
    };
    let mut keys = Keys::default();
    for (name, value) in options {
        let value = match value {
            toml::Value::String(text) => Value::Text(text),
            toml::Value::Boolean(flag) => Value::Flag(flag),
            _ => return Err(invalid(key(&name), "expected a string or true/false")),
        };
        keys.set(name, value);
    }
    let scheme = Scheme::new(provider, &keys).map_err(|e| invalid(key(&e.key), e.message))?;
    let mut refs = raw.secrets;
    refs.extend(raw.secret);
    let mut secrets = Vec::new();
    for (j, r) in refs.iter().enumerate() {
        if let Some(s) = resolve_secret(&key(&format!("secrets[{j}]")), r, base, env)? {
            secrets.push(s);
        }
    }
    let tolerance = opt_duration(&key("tolerance"), raw.tolerance.as_deref(), defaults::TOLERANCE)?;
    let max_body = opt_size(&key("max_body"), raw.max_body.as_deref(), default_max_body)?;
    let rate_limit = raw.rate_limit.as_deref().map(|r| parse_rate(&key("rate_limit"), r)).transpose()?;
    let mut enabled = raw.enabled.unwrap_or(true);
    let mut disabled_reason = (!enabled).then(|| "enabled = false".to_string());
    if enabled && secrets.is_empty() {
        enabled = false;
        disabled_reason = Some("no usable secret (check the env: or file: reference)".into());
    }
    Ok(Source {
        name,
        verifier: Verifier { scheme, secrets, tolerance },
        max_body,
        rate_limit,
        enabled,
        disabled_reason,
        recovery,
    })
}

fn validate_route(
    i: usize,
    raw: raw::Route,
    sources: &[Source],
    base: &Path,
    env: &dyn Env,
) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let name = raw.name.ok_or_else(|| invalid(key("name"), "missing"))?;
    if !is_valid_name(&name) {
        return Err(invalid(key("name"), "use letters, digits, '-', '_' or '.' (at most 64)"));
    }
    let source = raw.source.ok_or_else(|| invalid(key("source"), "missing"))?;
    // The built-in source of operational events needs no `[[sources]]` entry (see `crate::events`).
    if source != crate::events::SOURCE && !sources.iter().any(|s| s.name == source) {
        return Err(invalid(key("source"), format!("no source named `{source}`")));
    }
    let action = raw.action.ok_or_else(|| invalid(key("action"), "missing"))?;
    let route_env_pass = validate_env_pass(&key("env_pass"), raw.env_pass)?;
    let mut action = crate::actions::validate(&key("action"), action, base, env)?;
    match &mut action {
        Action::Command(command) => command.env_pass.extend(route_env_pass),
        _ if !route_env_pass.is_empty() => {
            return Err(invalid(key("env_pass"), "env_pass belongs to command actions"));
        }
        _ => {}
    }
    let retry = match raw.retry {
        None => Retry::default(),
        Some(r) => {
            let d = Retry::default();
            let retry = Retry {
                max_attempts: r.max_attempts.unwrap_or(d.max_attempts),
                initial: opt_duration(&key("retry.initial"), r.initial.as_deref(), d.initial)?,
                max: opt_duration(&key("retry.max"), r.max.as_deref(), d.max)?,
                throttle_floor: opt_duration(
                    &key("retry.throttle_floor"),
                    r.throttle_floor.as_deref(),
                    d.throttle_floor,
                )?,
            };
            if retry.max_attempts == 0 {
                return Err(invalid(key("retry.max_attempts"), "must be at least 1"));
            }
            if retry.max < retry.initial {
                return Err(invalid(key("retry.max"), "must not be less than retry.initial"));
            }
            retry
        }
    };
    let circuit_breaker = raw
        .circuit_breaker
        .map(|b| -> Result<Breaker, ConfigError> {
            Ok(Breaker {
                window: opt_duration(&key("circuit_breaker.window"), b.window.as_deref(), defaults::BREAKER_WINDOW)?,
                max_failures: b.max_failures.unwrap_or(defaults::BREAKER_MAX_FAILURES).max(1),
                open_for: opt_duration(
                    &key("circuit_breaker.open_for"),
                    b.open_for.as_deref(),
                    defaults::BREAKER_OPEN_FOR,
                )?,
            })
        })
        .transpose()?;
    if raw.concurrency == Some(0) {
        return Err(invalid(key("concurrency"), "must be at least 1"));
    }
    let schedule = raw.schedule.as_deref().map(|s| parse_duration(&key("schedule"), s)).transpose()?;
    if schedule.is_some_and(|s| s < Duration::from_secs(1)) {
        return Err(invalid(key("schedule"), "must be at least 1s"));
    }
    let coalesce_window =
        raw.coalesce_window.as_deref().map(|w| parse_duration(&key("coalesce_window"), w)).transpose()?;
    if coalesce_window.is_some() && raw.coalesce.is_none() {
        return Err(invalid(key("coalesce_window"), "needs `coalesce` (the key that events are merged by)"));
    }
    if let Some(github) = &raw.github_token {
        let recovering = sources.iter().find(|s| &s.name == github).is_some_and(|s| s.recovery.is_some());
        if !recovering {
            return Err(invalid(
                key("github_token"),
                format!("`{github}` is not a github source with a `recovery` section (its credentials are lent)"),
            ));
        }
        if let Action::Http(http) = &action {
            let names = http.headers.iter().map(|(n, _)| n).chain(http.secret_headers.iter().map(|h| &h.name));
            if names.into_iter().any(|n| n.eq_ignore_ascii_case("authorization")) {
                return Err(invalid(key("github_token"), "the http action already sends an Authorization header"));
            }
        }
    }
    Ok(Route {
        name,
        source,
        filter: raw.filter,
        coalesce: raw.coalesce,
        coalesce_window: coalesce_window.unwrap_or(Duration::ZERO),
        action,
        retry,
        circuit_breaker,
        concurrency: raw.concurrency,
        enabled: raw.enabled.unwrap_or(true),
        schedule,
        github_token: raw.github_token,
    })
}

/// Every secret of the file that is written in it (the admin token's length is checked on its own).
fn literal_secrets(file: &raw::File, env: &dyn Env) -> Vec<ConfigWarning> {
    let mut refs: Vec<(String, &str)> = Vec::new();
    if let Some(token) = &file.admin.token {
        refs.push(("admin.token".into(), token));
    }
    for (i, s) in file.sources.iter().enumerate() {
        for (j, r) in s.secrets.iter().chain(&s.secret).enumerate() {
            refs.push((format!("sources[{i}].secrets[{j}]"), r));
        }
    }
    for (i, r) in file.routes.iter().enumerate() {
        for (name, secret) in r.action.iter().flat_map(crate::actions::secret_refs) {
            refs.push((format!("routes[{i}].action.{name}"), secret));
        }
    }
    refs.into_iter().filter(|(_, r)| is_literal(r, env)).map(|(key, _)| ConfigWarning::LiteralSecret { key }).collect()
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const MINIMAL: &str = r#"
        [[sources]]
        name = "github"
        provider = "github"
        secrets = ["env:GH_SECRET"]

        [[routes]]
        name = "refresh"
        source = "github"
        action = { type = "command", argv = ["true"] }
    "#;

    #[test]
    fn the_purge_interval_is_read_and_a_zero_interval_is_refused() {
        let vars = env(&[("GH_SECRET", "s3cret")]);
        let cfg = parse(&format!("[store]\npurge_interval = \"10m\"\n{MINIMAL}"), Path::new(""), &vars).unwrap();
        assert_eq!(cfg.store.purge_interval, Duration::from_secs(600));
        let err = parse(&format!("[store]\npurge_interval = \"0s\"\n{MINIMAL}"), Path::new(""), &vars).unwrap_err();
        assert!(err.to_string().contains("store.purge_interval"), "{err}");
    }

    #[test]
    fn the_log_format_is_text_or_json_and_the_environment_overrides_it() {
        let vars = env(&[("GH_SECRET", "s3cret")]);
        assert_eq!(parse(MINIMAL, Path::new(""), &vars).unwrap().log_format, LogFormat::Text);
        let json = parse(&format!("[log]\nformat = \"json\"\n{MINIMAL}"), Path::new(""), &vars).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let err = parse(&format!("[log]\nformat = \"xml\"\n{MINIMAL}"), Path::new(""), &vars).unwrap_err();
        assert!(err.to_string().contains("log.format") && err.to_string().contains("xml"), "{err}");
        let overridden = env(&[("GH_SECRET", "s3cret"), ("HOOKGATE_LOG_FORMAT", "json")]);
        assert_eq!(parse(MINIMAL, Path::new(""), &overridden).unwrap().log_format, LogFormat::Json);
    }

    #[test]
    fn defaults_apply_when_sections_are_absent() {
        let cfg = parse(MINIMAL, Path::new(""), &env(&[("GH_SECRET", "s3cret")])).unwrap();
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.server.max_body, 1 << 20);
        assert_eq!(cfg.store.url.to_string(), "sqlite://hookgate.db");
        assert_eq!(cfg.store.retention, Duration::from_secs(7 * 86400));
        assert_eq!(cfg.store.purge_interval, Duration::from_secs(3600));
        assert!(cfg.sources[0].enabled);
        assert_eq!(cfg.routes[0].retry.max_attempts, 5);
        assert!(cfg.admin_token.is_none());
    }

    #[test]
    fn edge_limits_have_defaults_and_a_body_limit_must_fit_the_budget() {
        let cfg = parse(MINIMAL, Path::new(""), &env(&[("GH_SECRET", "s")])).unwrap();
        assert_eq!(cfg.server.max_buffered, 256 << 20);
        assert_eq!(cfg.server.max_connections_per_ip, 256);
        assert_eq!((cfg.server.unverified_rate_limit.count, cfg.server.unverified_rate_limit.per.as_secs()), (60, 60));
        let too_small = format!(
            "[server]\nmax_buffered = \"1MiB\"\n{}",
            MINIMAL.replace("secrets", "max_body = \"2MiB\"\nsecrets")
        );
        let err = parse(&too_small, Path::new(""), &env(&[("GH_SECRET", "s")])).unwrap_err().to_string();
        assert!(err.starts_with("sources[0].max_body"), "{err}");
        let zero = format!("[server]\nmax_connections_per_ip = 0\n{MINIMAL}");
        let err = parse(&zero, Path::new(""), &env(&[("GH_SECRET", "s")])).unwrap_err().to_string();
        assert!(err.starts_with("server.max_connections_per_ip"), "{err}");
    }

    #[test]
    fn env_overrides_listen_and_store_url() {
        let e = env(&[
            ("GH_SECRET", "x"),
            ("HOOKGATE_LISTEN", "127.0.0.1:0"),
            ("HOOKGATE_STORE_URL", "sqlite:///tmp/x.db"),
        ]);
        let cfg = parse(MINIMAL, Path::new(""), &e).unwrap();
        assert_eq!(cfg.server.listen.port(), 0);
        assert_eq!(cfg.store.url.to_string(), "sqlite:///tmp/x.db");
    }

    #[test]
    fn a_source_without_a_usable_secret_is_off() {
        let cfg = parse(MINIMAL, Path::new(""), &env(&[])).unwrap();
        assert!(!cfg.sources[0].enabled);
        assert!(cfg.sources[0].disabled_reason.as_deref().unwrap().contains("no usable secret"));
    }

    #[test]
    fn secrets_come_from_files_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gh.secret"), "from-file\n").unwrap();
        let text = MINIMAL.replace("env:GH_SECRET", "file:gh.secret");
        let cfg = parse(&text, dir.path(), &env(&[])).unwrap();
        assert_eq!(cfg.sources[0].verifier.secrets[0].expose(), b"from-file");
    }

    #[test]
    fn the_lease_margin_defaults_to_ten_seconds_and_may_not_be_under_one() {
        let cfg = parse(MINIMAL, Path::new(""), &env(&[])).unwrap();
        assert_eq!(cfg.worker.lease_margin, Duration::from_secs(10));
        let short = format!("[worker]\nlease_margin = \"500ms\"\n{MINIMAL}");
        let err = parse(&short, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("worker.lease_margin"), "{err}");
    }

    #[test]
    fn actions_run_at_nice_ten_unless_set_and_the_value_is_bounded() {
        let cfg = parse(MINIMAL, Path::new(""), &env(&[])).unwrap();
        assert_eq!(cfg.worker.action_nice, 10);
        let zero = format!("[worker]\naction_nice = 0\n{MINIMAL}");
        assert_eq!(parse(&zero, Path::new(""), &env(&[])).unwrap().worker.action_nice, 0);
        for bad in ["-1", "20"] {
            let text = format!("[worker]\naction_nice = {bad}\n{MINIMAL}");
            let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
            assert!(err.contains("worker.action_nice"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_unknown_key_is_named() {
        let text = MINIMAL.replace("provider = \"github\"", "provider = \"github\"\nsecretz = []");
        let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("secretz"), "{err}");
    }

    #[test]
    fn an_unknown_provider_names_the_key() {
        let text = MINIMAL.replace("provider = \"github\"", "provider = \"githb\"");
        let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("sources[0].provider"), "{err}");
    }

    #[test]
    fn an_unknown_provider_lists_every_name_in_the_table() {
        let text = MINIMAL.replace("provider = \"github\"", "provider = \"githb\"");
        let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
        for name in crate::verify::provider_names() {
            assert!(err.contains(name), "{name} in {err}");
        }
        assert!(err.contains("forgejo"), "{err}");
    }

    #[test]
    fn forgejo_is_a_name_of_gitea() {
        let text = MINIMAL.replace("provider = \"github\"", "provider = \"forgejo\"");
        let cfg = parse(&text, Path::new(""), &env(&[])).unwrap();
        assert_eq!(cfg.sources[0].verifier.scheme.name(), "gitea");
    }

    /// A source of `provider` with the extra `key_line`, as `check` would read it.
    fn source_error(provider: &str, key_line: &str) -> String {
        let extra = match provider {
            "hmac" => "signature_header = \"X-Sig\"\n",
            _ => "",
        };
        let text =
            format!("[[sources]]\nname = \"s\"\nprovider = \"{provider}\"\nsecrets = [\"k\"]\n{extra}{key_line}\n");
        parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string()
    }

    #[test]
    fn the_common_source_keys_are_the_fields_serde_fills() {
        let values = ["\"s\"", "\"github\"", "[\"k\"]", "\"k\"", "\"1MiB\"", "\"1/s\"", "\"5m\"", "true"];
        assert_eq!(values.len(), raw::Source::COMMON.len());
        let lines: Vec<String> = raw::Source::COMMON.iter().zip(values).map(|(k, v)| format!("{k} = {v}")).collect();
        let source: raw::Source = toml::from_str(&lines.join("\n")).unwrap();
        assert!(source.options.is_empty(), "not fields: {:?}", source.options.keys().collect::<Vec<_>>());
    }

    #[test]
    fn a_key_of_another_provider_is_refused_naming_its_path() {
        let err = source_error("github", "signature_header = \"X-Sig\"");
        assert_eq!(err, "sources[0].signature_header: not a key of provider \"github\" (it takes: allow_sha1)");
        for (provider, key_line, key) in [
            ("hmac", "allow_sha1 = true", "allow_sha1"),
            ("hmac", "query_param = \"t\"", "query_param"),
            ("token", "signature_header = \"X-Sig\"", "signature_header"),
            ("token", "allow_sha1 = false", "allow_sha1"),
            ("gitea", "header = \"x-token\"", "header"),
            ("slack", "event_field = \"type\"", "event_field"),
            ("standard", "timestamp_header = \"X-Ts\"", "timestamp_header"),
            ("forgejo", "allow_sha1 = true", "allow_sha1"),
        ] {
            let err = source_error(provider, key_line);
            let expected = format!("sources[0].{key}: not a key of provider");
            assert!(err.starts_with(&expected), "{provider} with {key_line}: {err}");
        }
    }

    #[test]
    fn the_keys_a_provider_takes_are_accepted() {
        let ok = |text: &str| parse(text, Path::new(""), &env(&[])).map(|_| ()).map_err(|e| e.to_string());
        let github = "[[sources]]\nname = \"s\"\nprovider = \"github\"\nsecrets = [\"k\"]\nallow_sha1 = true\n";
        assert_eq!(ok(github), Ok(()));
        let token = "[[sources]]\nname = \"s\"\nprovider = \"token\"\nsecrets = [\"k\"]\nheader = \"X-Api-Token\"\nquery_param = \"t\"\nid_header = \"x-id\"\nevent_field = \"type\"\n";
        assert_eq!(ok(token), Ok(()));
    }

    #[test]
    fn a_provider_key_of_the_wrong_type_is_named() {
        assert!(source_error("github", "allow_sha1 = 1").starts_with("sources[0].allow_sha1:"));
        assert!(source_error("github", "allow_sha1 = \"yes\"").starts_with("sources[0].allow_sha1:"));
        assert!(source_error("hmac", "algorithm = \"md5\"").starts_with("sources[0].algorithm:"));
        assert!(source_error("token", "event_header = \"x-e\"\nevent_field = \"type\"")
            .starts_with("sources[0].event_field:"));
    }

    /// A route whose http action signs with `sign`.
    fn signed_route(sign: &str) -> Result<Config, String> {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nname = \"out\"\nsource = \"github\"\naction = {{ type = \"http\", url = \"http://127.0.0.1:9/\", sign = {{ {sign} }} }}\n"
        );
        parse(&text, Path::new(""), &env(&[])).map_err(|e| e.to_string())
    }

    #[test]
    fn outbound_signing_takes_any_provider_in_the_table_with_its_own_keys() {
        for name in crate::verify::provider_names() {
            let secret = if name == "standard" { "whsec_c2VjcmV0" } else { "k" };
            let cfg = signed_route(&format!("scheme = \"{name}\", secret = \"{secret}\"")).unwrap();
            let Action::Http(http) = &cfg.routes[1].action else { panic!("{name}: not an http action") };
            let scheme = &http.sign.as_ref().unwrap_or_else(|| panic!("{name}: no sign spec")).scheme;
            assert_eq!(Some(scheme.provider().name), crate::verify::provider(name).map(|p| p.name));
        }
        let err = signed_route("scheme = \"github\", secret = \"k\", signature_header = \"X-Sig\"").unwrap_err();
        assert!(err.starts_with("routes[1].action.sign.signature_header: not a key of provider \"github\""), "{err}");
        let err = signed_route("scheme = \"githb\", secret = \"k\"").unwrap_err();
        assert!(err.starts_with("routes[1].action.sign.scheme") && err.contains("forgejo"), "{err}");
    }

    #[test]
    fn an_outbound_secret_the_scheme_cannot_sign_with_is_refused_at_load() {
        let err = signed_route("scheme = \"standard\", secret = \"whsec_!!!\"").unwrap_err();
        assert!(err.starts_with("routes[1].action.sign.secret"), "{err}");
        let err = signed_route("scheme = \"token\", secret = \" padded \"").unwrap_err();
        assert!(err.starts_with("routes[1].action.sign.secret"), "{err}");
    }

    #[test]
    fn a_coalesce_window_needs_a_coalesce_key() {
        let text = MINIMAL.replace("source = \"github\"", "source = \"github\"\ncoalesce_window = \"2s\"");
        let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].coalesce_window"), "{err}");
        let text = text.replace("coalesce_window", "coalesce = \"k\"\ncoalesce_window");
        assert_eq!(parse(&text, Path::new(""), &env(&[])).unwrap().routes[0].coalesce_window, Duration::from_secs(2));
    }

    #[test]
    fn a_route_to_a_missing_source_names_the_key() {
        let text = MINIMAL.replace("source = \"github\"", "source = \"gitlab\"");
        let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].source"), "{err}");
    }

    #[test]
    fn a_bad_duration_names_the_key() {
        let text = MINIMAL.replace("argv = [\"true\"]", "argv = [\"true\"], timeout = \"soon\"");
        let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].action.timeout"), "{err}");
    }

    #[test]
    fn hmac_content_placeholders_need_their_headers() {
        let text = r#"
            [[sources]]
            name = "p"
            provider = "hmac"
            secrets = ["s"]
            signature_header = "X-Sig"
            content = "{timestamp}.{body}"
        "#;
        let err = parse(text, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("sources[0].content"), "{err}");
        let ok = text.replace("content =", "timestamp_header = \"X-Ts\"\ncontent =");
        assert!(parse(&ok, Path::new(""), &env(&[])).is_ok());
    }

    #[test]
    fn sizes_durations_and_rates_parse() {
        assert_eq!(parse_size("k", "1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("k", "25MiB").unwrap(), 25 << 20);
        assert_eq!(parse_size("k", "512").unwrap(), 512);
        assert!(parse_size("k", "1XB").is_err());
        assert!(parse_size("k", "0").is_err());
        assert_eq!(parse_duration("k", "7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("k", "120s").unwrap(), Duration::from_secs(120));
        let r = parse_rate("k", "100/s").unwrap();
        assert_eq!((r.count, r.per), (100, Duration::from_secs(1)));
        assert!(parse_rate("k", "100/week").is_err());
    }

    #[test]
    fn a_relative_sqlite_path_is_relative_to_the_config_file() {
        let text = format!("[store]\nurl = \"sqlite://data/h.db\"\n{MINIMAL}");
        let cfg = parse(&text, Path::new("/etc/hookgate"), &env(&[])).unwrap();
        assert_eq!(cfg.store.url.to_string(), "sqlite:///etc/hookgate/data/h.db");
    }

    #[test]
    fn a_store_url_of_an_unknown_scheme_is_refused_naming_store_url() {
        for url in ["mysql://app@db/h", "hookgate.db"] {
            let text = format!("[store]\nurl = \"{url}\"\n{MINIMAL}");
            let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
            assert!(err.starts_with("store.url: "), "{err}");
            // The environment's URL is checked the same way.
            let err = parse(MINIMAL, Path::new(""), &env(&[("HOOKGATE_STORE_URL", url)])).unwrap_err().to_string();
            assert!(err.starts_with("store.url: "), "{err}");
        }
    }

    #[test]
    fn an_env_fallback_applies_only_while_the_variable_is_unset() {
        let text = MINIMAL.replace("env:GH_SECRET", "env:GH_SECRET?change-me");
        let set = parse(&text, Path::new(""), &env(&[("GH_SECRET", "from-env")])).unwrap();
        assert_eq!(set.sources[0].verifier.secrets.len(), 1);
        assert_eq!(set.sources[0].verifier.secrets[0].expose(), b"from-env");
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        for unset in [env(&[]), env(&[("GH_SECRET", "")])] {
            let cfg = parse(&text, Path::new(""), &unset).unwrap();
            assert_eq!(cfg.sources[0].verifier.secrets.len(), 1);
            assert_eq!(cfg.sources[0].verifier.secrets[0].expose(), b"change-me");
            assert_eq!(cfg.warnings, [ConfigWarning::LiteralSecret { key: "sources[0].secrets[0]".into() }]);
        }
    }

    #[test]
    fn literal_secrets_and_a_short_admin_token_are_warned_about_without_their_values() {
        let text = format!(
            "[admin]\ntoken = \"short-admin\"\n{}",
            MINIMAL.replace("[\"env:GH_SECRET\"]", "[\"env:GH_SECRET\", \"literal-one\", \"file:gh.secret\"]")
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gh.secret"), "from-file").unwrap();
        let cfg = parse(&text, dir.path(), &env(&[("GH_SECRET", "x")])).unwrap();
        assert_eq!(
            cfg.warnings,
            [
                ConfigWarning::LiteralSecret { key: "admin.token".into() },
                ConfigWarning::LiteralSecret { key: "sources[0].secrets[1]".into() },
                ConfigWarning::ShortAdminToken,
            ]
        );
        let shown: Vec<String> = cfg.warnings.iter().map(ToString::to_string).collect();
        assert!(!shown.iter().any(|w| w.contains("short-admin") || w.contains("literal-one")), "{shown:?}");
        let long =
            parse(MINIMAL, Path::new(""), &env(&[("HOOKGATE_ADMIN_TOKEN", "a-token-of-16-ch"), ("GH_SECRET", "x")]));
        assert!(long.unwrap().warnings.is_empty());
    }

    #[test]
    fn env_pass_takes_variable_names_only() {
        let text = MINIMAL.replace("source = \"github\"", "source = \"github\"\nenv_pass = [\"KUBECONFIG\", \"_X1\"]");
        let cfg = parse(&text, Path::new(""), &env(&[])).unwrap();
        let Action::Command(command) = &cfg.routes[0].action else { panic!("a command") };
        assert_eq!(command.env_pass, ["KUBECONFIG", "_X1"]);
        for bad in ["LC_*", "1ABC", "A-B", "", "A=B"] {
            let text = text.replace("\"_X1\"", &format!("{bad:?}"));
            let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
            assert!(err.starts_with("routes[0].env_pass[1]"), "{bad}: {err}");
        }
        let in_action = MINIMAL.replace("argv = [\"true\"]", "argv = [\"true\"], env_pass = [\"no way\"]");
        let err = parse(&in_action, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].action.env_pass[0]"), "{err}");
    }

    #[test]
    fn the_admin_auth_failure_limit_is_a_rate() {
        let cfg = parse(MINIMAL, Path::new(""), &env(&[])).unwrap();
        assert_eq!(
            (cfg.admin_auth_failure_limit.count, cfg.admin_auth_failure_limit.per),
            (10, Duration::from_secs(60))
        );
        let text = format!("[admin]\nauth_failure_limit = \"often\"\n{MINIMAL}");
        let err = parse(&text, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("admin.auth_failure_limit"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let cfg = parse(MINIMAL, Path::new(""), &env(&[("GH_SECRET", "hunter2-secret")])).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2-secret"));
        let e = env(&[("GH_SECRET", "x"), ("HOOKGATE_STORE_URL", "postgres://app:hunter2-pw@db/h?sslmode=require")]);
        let cfg = parse(MINIMAL, Path::new(""), &e).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2-pw"));
    }

    #[test]
    fn a_route_takes_the_built_in_hookgate_source_without_a_sources_entry() {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nname = \"alerts\"\nsource = \"hookgate\"\nfilter = 'event == \"job.dead\"'\naction = {{ type = \"http\", url = \"https://pager.example/hook\" }}\n"
        );
        let cfg = parse(&text, Path::new(""), &env(&[("GH_SECRET", "s")])).unwrap();
        assert_eq!(cfg.routes[1].source, "hookgate");
        assert!(cfg.source("hookgate").is_none(), "no webhook source: POST /hooks/hookgate stays 404");
        let unknown = text.replace("source = \"hookgate\"", "source = \"hookgat\"");
        let err = parse(&unknown, Path::new(""), &env(&[])).unwrap_err().to_string();
        assert_eq!(err, "routes[1].source: no source named `hookgat`");
    }

    #[test]
    fn a_github_source_takes_a_recovery_section_and_other_providers_do_not() {
        let vars = env(&[("GH_SECRET", "s"), ("GITHUB_TOKEN", "ghp_x")]);
        let text = MINIMAL.replace(
            "secrets = [\"env:GH_SECRET\"]",
            "secrets = [\"env:GH_SECRET\"]\nrecovery = { hook = \"repos/octo/hello/hooks/1\", token = \"env:GITHUB_TOKEN\", every = \"1m\", lookback = \"1d\" }",
        );
        let cfg = parse(&text, Path::new(""), &vars).unwrap();
        let recovery = cfg.sources[0].recovery.as_ref().unwrap();
        assert_eq!(recovery.hook.path(), "repos/octo/hello/hooks/1");
        assert_eq!((recovery.every, recovery.lookback), (Duration::from_secs(60), Duration::from_secs(86_400)));
        let err = parse(&text.replace("\"1d\"", "\"4d\""), Path::new(""), &vars).unwrap_err().to_string();
        assert!(err.starts_with("sources[0].recovery.lookback"), "{err}");
        let err = parse(&text.replace("provider = \"github\"", "provider = \"gitlab\""), Path::new(""), &vars)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("sources[0].recovery:"), "{err}");
        assert!(parse(MINIMAL, Path::new(""), &vars).unwrap().sources[0].recovery.is_none());
    }

    #[test]
    fn github_token_lends_a_recovering_github_sources_credentials_and_nothing_else() {
        let vars = env(&[("GH_SECRET", "s"), ("GITHUB_TOKEN", "ghp_x")]);
        let recovering = MINIMAL.replace(
            "secrets = [\"env:GH_SECRET\"]",
            "secrets = [\"env:GH_SECRET\"]\nrecovery = { hook = \"repos/octo/hello/hooks/1\", token = \"env:GITHUB_TOKEN\" }",
        );
        let lent = |text: &str| {
            text.replace("source = \"github\"\n", "source = \"github\"\n        github_token = \"github\"\n")
        };
        let cfg = parse(&lent(&recovering), Path::new(""), &vars).unwrap();
        assert_eq!(cfg.routes[0].github_token.as_deref(), Some("github"));
        let err = parse(&lent(MINIMAL), Path::new(""), &vars).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].github_token: `github` is not a github source with a `recovery`"), "{err}");
        let http = lent(&recovering).replace(
            "action = { type = \"command\", argv = [\"true\"] }",
            "action = { type = \"http\", url = \"http://a/\", headers = { Authorization = \"Basic x\" } }",
        );
        let err = parse(&http, Path::new(""), &vars).unwrap_err().to_string();
        assert!(err.contains("already sends an Authorization header"), "{err}");
    }

    #[test]
    fn a_source_named_hookgate_is_refused_because_the_name_is_reserved() {
        let text = MINIMAL.replace("name = \"github\"", "name = \"hookgate\"");
        let err = parse(&text, Path::new(""), &env(&[("GH_SECRET", "s")])).unwrap_err().to_string();
        assert!(err.starts_with("sources[0].name: `hookgate` is reserved"), "{err}");
    }
}
