//! Rendering a route's action for one job, refusing template values that would inject options or paths.
//!
//! argv never meets a shell, so `; rm -rf` and `$(…)` stay inert text. What remains dangerous is a value
//! that turns into an option (`--upload-pack=…`) or climbs out of a directory (`../..`): both are refused
//! when they come from a template value rather than from the configuration itself.

use std::time::Duration;

use minijinja::{Environment, Value};

use super::EventContext;
use crate::actions::{ActionSpec, CommandSpec, HttpSpec, SignSpec};
use crate::config::{Action, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("template `{key}` failed: {message}")]
    Template { key: String, message: String },
    #[error("{key}: a template value would start an option ('-'); refused")]
    OptionInjection { key: String },
    #[error("{key}: a template value contains a '..' path segment; refused")]
    PathTraversal { key: String },
    #[error("{key}: a template value contains a NUL, CR or LF; refused")]
    ControlCharacter { key: String },
    #[error("{key}: rendered URL is not an http(s) URL")]
    InvalidUrl { key: String },
    #[error("the stored body cannot be used: {message}")]
    Body { message: String },
    #[error(
        "{key}: a template value sets the URL's scheme or host to one the route's allowed_hosts does not list; refused"
    )]
    HostNotAllowed { key: String },
}

/// A template: the configured text, and its compiled name when it has any `{{`/`{%`.
#[derive(Debug, Clone)]
pub(super) struct Text {
    key: String,
    literal: String,
    compiled: bool,
}

impl Text {
    fn compile(env: &mut Environment<'static>, key: String, literal: &str) -> Result<Self, ConfigError> {
        let compiled = literal.contains("{{") || literal.contains("{%");
        if compiled {
            env.add_template_owned(key.clone(), literal.to_string()).map_err(|e| ConfigError::Invalid {
                key: key.clone(),
                message: e.detail().unwrap_or("syntax error").to_string(),
            })?;
        }
        Ok(Text { key, literal: literal.to_string(), compiled })
    }

    fn render(&self, env: &Environment<'static>, ctx: &Value) -> Result<String, RenderError> {
        if !self.compiled {
            return Ok(self.literal.clone());
        }
        env.get_template(&self.key)
            .and_then(|t| t.render(ctx))
            .map_err(|e| RenderError::Template { key: self.key.clone(), message: describe(&e) })
    }

    /// Render, then refuse what only a template value could have introduced.
    fn render_guarded(
        &self,
        env: &Environment<'static>,
        ctx: &Value,
        as_argument: bool,
    ) -> Result<String, RenderError> {
        let out = self.render(env, ctx)?;
        if !self.compiled {
            return Ok(out);
        }
        if out.contains(['\0', '\n', '\r']) && !self.literal.contains(['\n', '\r']) {
            return Err(RenderError::ControlCharacter { key: self.key.clone() });
        }
        if as_argument && out.starts_with('-') && !self.literal.starts_with('-') {
            return Err(RenderError::OptionInjection { key: self.key.clone() });
        }
        if has_dotdot_segment(&out) && !has_dotdot_segment(&self.literal) {
            return Err(RenderError::PathTraversal { key: self.key.clone() });
        }
        Ok(out)
    }
}

fn has_dotdot_segment(s: &str) -> bool {
    s.split(['/', '\\']).any(|seg| seg == "..")
}

fn describe(e: &minijinja::Error) -> String {
    // The kind and detail name the problem ("undefined value") without echoing values.
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per route, built once
pub(super) enum ActionTemplates {
    Command {
        argv: Vec<Text>,
        env: Vec<(String, Text)>,
        env_pass: Vec<String>,
        cwd: Option<Text>,
        timeout: Duration,
    },
    Http {
        url: Text,
        method: http::Method,
        headers: Vec<(String, Text)>,
        body: Option<Text>,
        timeout: Duration,
        sign: Option<SignSpec>,
        allowed_hosts: Vec<String>,
    },
}

impl ActionTemplates {
    pub(super) fn compile(env: &mut Environment<'static>, key: &str, action: &Action) -> Result<Self, ConfigError> {
        Ok(match action {
            Action::Command { argv, env: vars, env_pass, cwd, timeout } => ActionTemplates::Command {
                argv: argv
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Text::compile(env, format!("{key}.argv[{i}]"), a))
                    .collect::<Result<_, _>>()?,
                env: vars
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Text::compile(env, format!("{key}.env.{k}"), v)?)))
                    .collect::<Result<_, ConfigError>>()?,
                env_pass: env_pass.clone(),
                cwd: cwd.as_deref().map(|c| Text::compile(env, format!("{key}.cwd"), c)).transpose()?,
                timeout: *timeout,
            },
            Action::Http { url, method, headers, body, timeout, sign, allowed_hosts } => ActionTemplates::Http {
                url: Text::compile(env, format!("{key}.url"), url)?,
                method: method.clone(),
                headers: headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Text::compile(env, format!("{key}.headers.{k}"), v)?)))
                    .collect::<Result<_, ConfigError>>()?,
                body: body.as_deref().map(|b| Text::compile(env, format!("{key}.body"), b)).transpose()?,
                timeout: *timeout,
                sign: sign.clone(),
                allowed_hosts: allowed_hosts.clone(),
            },
        })
    }

    pub(super) fn render(
        &self,
        env: &Environment<'static>,
        value: &Value,
        ctx: &EventContext,
        job_id: &str,
        output_cap: usize,
    ) -> Result<ActionSpec, RenderError> {
        match self {
            ActionTemplates::Command { argv, env: vars, env_pass, cwd, timeout } => {
                let mut rendered = Vec::with_capacity(argv.len());
                for (i, arg) in argv.iter().enumerate() {
                    // argv[0] is the program: a value must not pick an option there either.
                    rendered.push(arg.render_guarded(env, value, i > 0 || arg.compiled)?);
                }
                let vars = vars
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render_guarded(env, value, false)?)))
                    .collect::<Result<_, RenderError>>()?;
                let cwd = cwd.as_ref().map(|c| c.render_guarded(env, value, false)).transpose()?;
                Ok(ActionSpec::Command(CommandSpec {
                    argv: rendered,
                    env: vars,
                    env_pass: env_pass.clone(),
                    cwd: cwd.map(Into::into),
                    timeout: *timeout,
                    output_cap,
                }))
            }
            ActionTemplates::Http { url, method, headers, body, timeout, sign, allowed_hosts } => {
                // Values are encoded for the part of the URL they land in (see `url`).
                let rendered_url = super::url::finish(&url.key, &url.render(env, value)?, allowed_hosts)?.to_string();
                let headers = headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render_guarded(env, value, false)?)))
                    .collect::<Result<_, RenderError>>()?;
                let body = match body {
                    Some(b) => bytes::Bytes::from(b.render(env, value)?),
                    None => ctx.raw_body.clone(),
                };
                Ok(ActionSpec::Http(HttpSpec {
                    url: rendered_url,
                    method: method.clone(),
                    headers,
                    body,
                    timeout: *timeout,
                    sign: sign.clone(),
                    message_id: job_id.to_string(),
                    event: ctx.event.clone(),
                    output_cap,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_argv(template: &str, body: serde_json::Value) -> Result<Vec<String>, RenderError> {
        let mut env = super::super::environment();
        let action = Action::Command {
            argv: vec!["git".into(), "fetch".into(), template.into()],
            env: vec![],
            env_pass: vec![],
            cwd: None,
            timeout: Duration::from_secs(1),
        };
        let t = ActionTemplates::compile(&mut env, "a", &action).unwrap();
        let ctx = EventContext::new("s", "push", "d", "i", body, vec![]);
        match t.render(&env, &ctx.to_value(), &ctx, "job", 10)? {
            ActionSpec::Command(c) => Ok(c.argv),
            _ => unreachable!(),
        }
    }

    #[test]
    fn shell_metacharacters_stay_one_literal_argument() {
        for hostile in ["; rm -rf /", "$(touch /tmp/pwned)", "`id`", "a && b | c > /etc/x"] {
            let argv = render_argv("{{ body.x }}", serde_json::json!({ "x": hostile })).unwrap();
            assert_eq!(argv[2], hostile);
            assert_eq!(argv.len(), 3);
        }
    }

    #[test]
    fn a_value_that_would_become_an_option_is_refused() {
        let err =
            render_argv("{{ body.x }}", serde_json::json!({ "x": "--upload-pack=touch /tmp/pwned" })).unwrap_err();
        assert!(matches!(err, RenderError::OptionInjection { .. }), "{err}");
    }

    #[test]
    fn an_option_written_in_the_config_is_kept() {
        let argv = render_argv("--depth={{ body.n }}", serde_json::json!({ "n": 1 })).unwrap();
        assert_eq!(argv[2], "--depth=1");
    }

    #[test]
    fn a_value_that_climbs_out_of_a_directory_is_refused() {
        let err = render_argv("/srv/{{ body.x }}", serde_json::json!({ "x": "../../etc" })).unwrap_err();
        assert!(matches!(err, RenderError::PathTraversal { .. }), "{err}");
    }

    #[test]
    fn a_value_with_a_newline_is_refused() {
        let err = render_argv("{{ body.x }}", serde_json::json!({ "x": "a\nb" })).unwrap_err();
        assert!(matches!(err, RenderError::ControlCharacter { .. }), "{err}");
    }

    #[test]
    fn a_missing_value_is_an_error_not_an_empty_string() {
        let err = render_argv("/srv/{{ body.repository.name }}", serde_json::json!({})).unwrap_err();
        assert!(matches!(err, RenderError::Template { .. }), "{err}");
    }
}
