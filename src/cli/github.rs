//! `hookgate github …`: GitHub delivery recovery through a running gateway's admin API, which holds the
//! GitHub credentials — what GitHub saw beside what hookgate stored, and one recovery round now.

use clap::Subcommand;

use super::{admin_call, AdminArgs};

#[derive(Subcommand)]
pub enum GithubCommand {
    /// List the hook's deliveries as GitHub saw them (newest first), each with whether hookgate stored it.
    Deliveries {
        #[command(flatten)]
        admin: AdminArgs,
        /// The GitHub source (with a recovery section).
        #[arg(long)]
        source: String,
        /// Only attempts that failed (status code not 2xx; 0 = GitHub could not connect).
        #[arg(long)]
        failed: bool,
        /// From this time: RFC 3339 or a duration ago ("1h"); default: the source's lookback.
        #[arg(long)]
        since: Option<String>,
        /// At most this many attempts.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// A git credential helper: answer `get` with the source's token (a GitHub App's installation token, or
    /// the configured token), from the configuration file, for its GitHub host only. Use it as
    /// `git config credential.https://github.com.helper "/usr/bin/hookgate github credential -c /etc/hookgate.toml --source github"`.
    Credential {
        /// Configuration file.
        #[arg(short, long, env = "HOOKGATE_CONFIG", default_value = crate::config::DEFAULT_PATH)]
        config: std::path::PathBuf,
        #[arg(long)]
        source: String,
        /// What git asks: get (answered), store and erase (nothing to do).
        operation: String,
    },
    /// Run one recovery round now: ask GitHub to redeliver every failed delivery hookgate has not stored.
    Recover {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        source: String,
        /// Look back to this time: RFC 3339 or a duration ago ("1h"); default: since the last round.
        #[arg(long)]
        since: Option<String>,
    },
}

pub async fn run(cmd: GithubCommand) -> anyhow::Result<()> {
    match cmd {
        GithubCommand::Credential { config, source, operation } => credential(&config, &source, &operation).await,
        GithubCommand::Deliveries { admin, source, failed, since, limit } => {
            let mut query = vec![("limit", limit.to_string()), ("failed", failed.to_string())];
            query.extend(since.map(|s| ("since", s)));
            let path = format!("/api/v1/sources/{source}/github/deliveries");
            admin_call(&admin, reqwest::Method::GET, &path, &query).await
        }
        GithubCommand::Recover { admin, source, since } => {
            let query: Vec<(&str, String)> = since.map(|s| ("since", s)).into_iter().collect();
            let path = format!("/api/v1/sources/{source}/github/recover");
            admin_call(&admin, reqwest::Method::POST, &path, &query).await
        }
    }
}

/// Git's credential protocol: the request on stdin, the answer on stdout; nothing else is printed there.
async fn credential(config: &std::path::Path, source: &str, operation: &str) -> anyhow::Result<()> {
    use std::io::Read;
    let mut request = String::new();
    std::io::stdin().take(64 << 10).read_to_string(&mut request)?;
    if operation != "get" {
        return Ok(());
    }
    let config = crate::config::load(config, &crate::config::ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let recovery = config
        .source(source)
        .ok_or_else(|| anyhow::anyhow!("no source named `{source}`"))?
        .recovery
        .clone()
        .ok_or_else(|| anyhow::anyhow!("source `{source}` has no recovery section with GitHub credentials"))?;
    if let Some(answer) = crate::github::credential::get(&recovery, &crate::github::http_client(), &request).await? {
        print!("{answer}");
    }
    Ok(())
}
