//! logging: the one subscriber, on stderr — text for people or one JSON object per line for log collectors
//! (`[log] format`); the level comes from `HOOKGATE_LOG` (default `info`).

use std::io::IsTerminal;

use crate::config::LogFormat;

/// Install the subscriber. A second call (tests, or `serve` after the early one) changes nothing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        // Fields at the top level (`route`, `job`, …) next to `timestamp`, `level`, `target` and `message`.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}
