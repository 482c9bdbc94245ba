//! template: the one template language (minijinja) — the environment with the house settings, what a
//! template sees of an event (`context`, read lazily from the stored body: `lazy`), compiled strings with
//! the guards every action kind applies (`text`), and URL encoding (`url`).
//!
//! Routes compile their filters and coalesce keys with it; each action kind compiles and renders its own
//! options with it. It knows neither routes nor action kinds.

mod context;
pub(crate) mod lazy;
mod text;
pub(crate) mod url;

pub use context::{context_for_request, parse_body, BodyError, EventContext};
pub use text::{RenderError, Text};

use minijinja::{Environment, UndefinedBehavior};

/// A fresh environment with the house settings: missing values are errors, output is not escaped.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.set_formatter(url::formatter);
    env.add_filter("segments", url::segments);
    env
}
