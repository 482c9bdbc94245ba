//! Action templates: one configured string compiled once, rendered per job, with the guards every kind shares.
//!
//! argv never meets a shell, so `; rm -rf` and `$(…)` stay inert text. What remains dangerous is a value
//! that turns into an option (`--upload-pack=…`), climbs out of a directory (`../..`) or splits a line
//! (a header, an environment value): each is refused when it comes from a template value rather than from
//! the configuration itself. Action kinds (`crate::actions`) decide which guard applies to which option.

use minijinja::{Environment, Value};

use crate::config::value::ConfigError;

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
pub struct Text {
    key: String,
    literal: String,
    compiled: bool,
}

impl Text {
    /// Compile `literal` under `key`, the key path that errors name (`routes[0].action.argv[2]`). A key
    /// ending in `.url` gets its values marked for URL encoding (see `url`).
    pub(crate) fn compile(env: &mut Environment<'static>, key: String, literal: &str) -> Result<Self, ConfigError> {
        let compiled = literal.contains("{{") || literal.contains("{%");
        if compiled {
            env.add_template_owned(key.clone(), literal.to_string()).map_err(|e| ConfigError::Invalid {
                key: key.clone(),
                message: e.detail().unwrap_or("syntax error").to_string(),
            })?;
        }
        Ok(Text { key, literal: literal.to_string(), compiled })
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// True when a payload value can reach the output (the text holds template syntax).
    pub(crate) fn is_template(&self) -> bool {
        self.compiled
    }

    /// Render without guards: for text that is never a path, an argument or a header line (a body).
    pub(crate) fn render(&self, env: &Environment<'static>, ctx: &Value) -> Result<String, RenderError> {
        if !self.compiled {
            return Ok(self.literal.clone());
        }
        env.get_template(&self.key)
            .and_then(|t| t.render(ctx))
            .map_err(|e| RenderError::Template { key: self.key.clone(), message: describe(&e) })
    }

    /// Render, then refuse what only a template value could have introduced: control characters, a `..`
    /// segment, and — `as_argument` — a leading `-`.
    pub(crate) fn render_guarded(
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
