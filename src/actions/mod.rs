//! actions: run one attempt of a job's action — a command (argv, never a shell) or an HTTP call (optionally signed).
//!
//! Specs arrive fully rendered: templates were already evaluated by `route`. One call is one attempt;
//! retry timing belongs to the worker, which gets the classification (and any `Retry-After`) from here.

mod command;
mod http;
pub(crate) mod reaper;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::verify::{Scheme, Secret};

/// A command to run: argv[0] is the program, looked up in PATH; no shell ever sees these strings.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    /// Set on top of the clean environment a command starts with.
    pub env: Vec<(String, String)>,
    /// Names taken from hookgate's own environment.
    pub env_pass: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub timeout: Duration,
    /// Bytes of stdout+stderr kept on the attempt.
    pub output_cap: usize,
}

/// How an outbound request is signed.
#[derive(Debug, Clone)]
pub struct SignSpec {
    pub scheme: Scheme,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub url: String,
    pub method: ::http::Method,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub timeout: Duration,
    pub sign: Option<SignSpec>,
    /// Stable across retries of one job (the job id); used as the signed message id.
    pub message_id: String,
    pub event: String,
    /// Bytes of the response body kept on the attempt.
    pub output_cap: usize,
}

// One spec is built per attempt and moved once; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ActionSpec {
    Command(CommandSpec),
    Http(HttpSpec),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Worth another attempt (timeouts, connection errors, 408/429/5xx, non-zero exit).
    Retryable {
        retry_after: Option<Duration>,
    },
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
}

impl Runner {
    pub fn new() -> Self {
        Runner { http: http::client() }
    }

    /// Run one attempt. `cancel` fires on forced shutdown: a command's process group is killed, an HTTP
    /// request is abandoned; either way the attempt ends `Retryable` with the error "cancelled".
    pub async fn run(&self, spec: ActionSpec, cancel: &CancellationToken) -> AttemptResult {
        match spec {
            ActionSpec::Command(spec) => command::run(spec, cancel).await,
            ActionSpec::Http(spec) => http::run(&self.http, spec, cancel).await,
        }
    }
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}
