//! actions: what a route does for a job — a command (argv, never a shell) or an HTTP call (optionally signed).
//!
//! Each kind owns its whole life in one file: the options as written, their validation into a typed config
//! (errors name the key path), compiling its templates once, rendering one job's spec with the guards of
//! `crate::template`, and running one attempt. This module lists the kinds and holds what they share: the
//! outcome of an attempt and the `Runner`. Retry timing belongs to the worker, which gets the classification
//! (and any `Retry-After`) from here.
//!
//! Adding a kind `foo` touches two files:
//! - `src/actions/foo.rs` (new; `command.rs` is the example to copy): `TYPE`, `Raw` (its options,
//!   `deny_unknown_fields`), `Foo<T = String>` (the validated config, with a `timeout`; `T` is a template),
//!   `validate`, `Foo::compile`, `Foo<Text>::render` to a `FooSpec`, `secret_refs`, `run`, and its tests;
//! - this file: one line in the `action_kinds!` table below, which writes the enums and every dispatch.
//!
//! `README.md`, `config.default.toml` and `examples/` then document the options (a test fails until the
//! reference configuration shows every key).

mod niced;
pub(crate) mod reaper;

use std::path::Path;
use std::time::Duration;

use minijinja::Environment;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::value::{field_names, invalid, ConfigError, Env};
use crate::template::{EventContext, RenderError, Text};

pub use self::command::{Command, CommandSpec};
#[cfg(test)]
pub(crate) use self::http::RawSign;
pub use self::http::{Http, HttpSpec, SecretHeader, SecretSource, SignSpec};
pub use crate::retry::Hint;

/// The one table of action kinds: `Variant in module => Spec`. It declares each kind's module and writes the
/// enums that list the kinds ([`Action`], [`ActionSpec`]) and every dispatch over them, so a kind is added here
/// by one line.
macro_rules! action_kinds {
    ($($kind:ident in $module:ident => $spec:ident),+ $(,)?) => {
        $(mod $module;)+

        /// A validated action. `T` is a template: the text written in the configuration, or the compiled
        /// [`Text`] that `route` keeps per route.
        #[derive(Debug, Clone)]
        #[allow(clippy::large_enum_variant)] // one per route, built once
        pub enum Action<T = String> {
            $($kind($module::$kind<T>),)+
        }

        /// One job's rendered action, ready to run.
        // One spec is built per attempt and moved once; boxing the larger variant would buy nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone)]
        pub enum ActionSpec {
            $($kind($module::$spec),)+
        }

        /// Every kind: its `type` and the option keys it reads (so a key of another kind is named as such).
        pub(crate) fn kinds() -> Vec<(&'static str, &'static [&'static str])> {
            vec![$(($module::TYPE, field_names::<$module::Raw>()),)+]
        }

        fn validate_kind(
            key: &str,
            kind: &str,
            options: toml::Table,
            base: &Path,
            env: &dyn Env,
        ) -> Result<Action, ConfigError> {
            $(if kind == $module::TYPE {
                return $module::validate(key, self::options(key, options)?, base, env).map(Action::$kind);
            })+
            let names: Vec<&str> = kinds().iter().map(|(name, _)| *name).collect();
            Err(invalid(format!("{key}.type"), format!("unknown action type `{kind}` ({})", names.join(", "))))
        }

        /// The secret references written in an action (`sign.secret`), read before validation for the
        /// warning about literal secrets: `(key below the action, reference)`.
        pub fn secret_refs(raw: &RawAction) -> Vec<(&'static str, &str)> {
            $(if raw.kind.as_deref() == Some($module::TYPE) {
                return $module::secret_refs(&raw.options);
            })+
            Vec::new()
        }

        impl<T> Action<T> {
            /// How long one attempt may take (the worker's lease covers it).
            pub fn timeout(&self) -> Duration {
                match self {
                    $(Action::$kind(a) => a.timeout,)+
                }
            }
        }

        impl Action {
            /// Compile every template of the action into `env`, named by key paths below `key`.
            pub(crate) fn compile(
                &self,
                env: &mut Environment<'static>,
                key: &str,
            ) -> Result<Action<Text>, ConfigError> {
                Ok(match self {
                    $(Action::$kind(a) => Action::$kind(a.compile(env, key)?),)+
                })
            }
        }

        impl Action<Text> {
            /// One job's spec: every template evaluated, hostile values refused.
            pub(crate) fn render(&self, job: &JobContext<'_>) -> Result<ActionSpec, RenderError> {
                Ok(match self {
                    $(Action::$kind(a) => ActionSpec::$kind(a.render(job)?),)+
                })
            }
        }

        impl Runner {
            /// Run one attempt. `cancel` fires on forced shutdown: a command's process group is killed, an
            /// HTTP request is abandoned; either way the attempt ends `Retryable` with the error "cancelled".
            pub async fn run(&self, spec: ActionSpec, cancel: &CancellationToken) -> AttemptResult {
                match spec {
                    $(ActionSpec::$kind(spec) => $module::run(self, spec, cancel).await,)+
                }
            }
        }
    };
}

action_kinds! {
    Command in command => CommandSpec,
    Http in http => HttpSpec,
}

/// An action as written: its `type` and the options of that kind. The options are read once the kind is
/// known, so that errors name the key path and tell a key of another kind from a typo.
#[derive(Debug, Default, Deserialize)]
pub struct RawAction {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(flatten)]
    pub options: toml::Table,
}

/// Validate the action at `key` (`routes[0].action`); `file:` secrets resolve against `base`.
pub fn validate(key: &str, raw: RawAction, base: &Path, env: &dyn Env) -> Result<Action, ConfigError> {
    let names: Vec<&str> = kinds().iter().map(|(name, _)| *name).collect();
    let Some(kind) = raw.kind else {
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        return Err(invalid(format!("{key}.type"), format!("missing ({})", quoted.join(" or "))));
    };
    validate_kind(key, &kind, raw.options, base, env)
}

/// Read a kind's options from their table; a key that another kind reads is named as belonging to it.
fn options<T: DeserializeOwned>(key: &str, table: toml::Table) -> Result<T, ConfigError> {
    let own = field_names::<T>();
    for name in table.keys().filter(|name| !own.contains(&name.as_str())) {
        if let Some((other, _)) = kinds().into_iter().find(|(_, keys)| keys.contains(&name.as_str())) {
            return Err(invalid(format!("{key}.{name}"), format!("{name} belongs to type = \"{other}\"")));
        }
    }
    table_as(key, table)
}

/// Deserialize a table of options (`deny_unknown_fields` names a key no kind reads).
fn table_as<T: DeserializeOwned>(key: &str, table: toml::Table) -> Result<T, ConfigError> {
    T::deserialize(toml::Value::Table(table)).map_err(|e| invalid(key, e.message().trim()))
}

/// What rendering one job's action sees.
pub struct JobContext<'a> {
    /// The environment holding the compiled templates.
    pub templates: &'a Environment<'static>,
    /// The template variables: the event's, and `job`.
    pub vars: &'a minijinja::Value,
    pub event: &'a EventContext,
    /// The job id: stable across retries, so it is also an outbound message id.
    pub job_id: &'a str,
    /// Bytes of output kept on the attempt.
    pub output_cap: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Worth another attempt (timeouts, connection errors, 408/429/5xx, non-zero exit); the hint says
    /// whether the peer asked for a pause (`Retry-After`) or was throttling or slow (429, timeouts).
    Retryable(Hint),
    /// Will not succeed by retrying (other 4xx, a program that cannot start).
    Failed,
    /// The peer answered 410 Gone: the route should be disabled.
    Gone,
}

#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: Outcome,
    /// Short, never containing secrets.
    pub error: Option<String>,
    pub output: Option<String>,
    pub status_code: Option<u16>,
}

/// Runs actions; holds the shared HTTP client.
#[derive(Clone)]
pub struct Runner {
    http: reqwest::Client,
    /// The nice value command actions start at (`worker.action_nice`).
    action_nice: i32,
}

impl Runner {
    pub fn new() -> Self {
        Runner { http: http::client(), action_nice: crate::config::defaults::ACTION_NICE }
    }

    /// Commands run at `nice` (0 to 19) instead of the default.
    pub fn with_action_nice(self, nice: i32) -> Self {
        Runner { action_nice: nice, ..self }
    }
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn error(action: &str) -> String {
        let text = format!(
            "[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n\
             [[routes]]\nname = \"r\"\nsource = \"g\"\naction = {action}\n"
        );
        crate::config::parse(&text, Path::new(""), &BTreeMap::<String, String>::new()).unwrap_err().to_string()
    }

    #[test]
    fn the_type_is_required_and_must_name_a_kind() {
        assert_eq!(error(r#"{ argv = ["true"] }"#), r#"routes[0].action.type: missing ("command" or "http")"#);
        assert_eq!(
            error(r#"{ type = "shell" }"#),
            "routes[0].action.type: unknown action type `shell` (command, http)"
        );
    }

    #[test]
    fn a_key_of_the_other_kind_is_named_as_such() {
        let cases = [
            (
                r#"{ type = "http", url = "http://a/", argv = ["x"] }"#,
                r#"routes[0].action.argv: argv belongs to type = "command""#,
            ),
            (
                r#"{ type = "http", url = "http://a/", env_pass = ["X"] }"#,
                r#"routes[0].action.env_pass: env_pass belongs to type = "command""#,
            ),
            (
                r#"{ type = "http", url = "http://a/", cwd = "/" }"#,
                r#"routes[0].action.cwd: cwd belongs to type = "command""#,
            ),
            (
                r#"{ type = "command", argv = ["x"], url = "http://a/" }"#,
                r#"routes[0].action.url: url belongs to type = "http""#,
            ),
            (
                r#"{ type = "command", argv = ["x"], body = "b" }"#,
                r#"routes[0].action.body: body belongs to type = "http""#,
            ),
            (
                r#"{ type = "command", argv = ["x"], sign = { secret = "s" } }"#,
                r#"routes[0].action.sign: sign belongs to type = "http""#,
            ),
            (
                r#"{ type = "command", argv = ["x"], headers = { A = "b" } }"#,
                r#"routes[0].action.headers: headers belongs to type = "http""#,
            ),
        ];
        for (action, expected) in cases {
            assert_eq!(error(action), expected, "{action}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        for action in
            [r#"{ type = "command", argv = ["x"], argz = 1 }"#, r#"{ type = "http", url = "http://a/", argz = 1 }"#]
        {
            let err = error(action);
            assert!(err.starts_with("routes[0].action: unknown field `argz`"), "{err}");
        }
    }

    #[test]
    fn a_route_level_env_pass_needs_a_command() {
        let text = "[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n\
                    [[routes]]\nname = \"r\"\nsource = \"g\"\nenv_pass = [\"X\"]\n\
                    action = { type = \"http\", url = \"http://a/\" }\n";
        let err = crate::config::parse(text, Path::new(""), &BTreeMap::<String, String>::new()).unwrap_err();
        assert_eq!(err.to_string(), "routes[0].env_pass: env_pass belongs to command actions");
    }

    #[test]
    fn each_kind_lists_the_keys_it_reads() {
        assert_eq!(
            kinds(),
            [
                ("command", &["argv", "env", "env_pass", "cwd", "timeout"][..]),
                (
                    "http",
                    &[
                        "url",
                        "method",
                        "headers",
                        "body",
                        "timeout",
                        "sign",
                        "allowed_hosts",
                        "bearer_token",
                        "ca",
                        "ca_only",
                        "client_cert",
                        "client_key",
                        "unix_socket"
                    ][..]
                ),
            ]
        );
    }
}
