//! `hookgate routes …` and `hookgate sources …`: the shared route and source controls of a running gateway,
//! through its admin API. Both take the same three commands.

use clap::Subcommand;

use super::{admin_call, admin_request, AdminArgs};

/// `routes` or `sources`: a paused route holds its jobs in the queue, a paused source answers 503 with
/// `Retry-After` and stores nothing — on every instance, until resumed.
#[derive(Subcommand)]
pub enum ControlCommand {
    /// List them with their state on every instance (routes: paused, stopped by a 410, circuit).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pause one on every instance (a route's jobs wait in the queue; a source's webhooks answer 503).
    Pause {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
        #[command(flatten)]
        why: Why,
    },
    /// Let it run again (for a route this also clears a 410 stop and an open circuit).
    Resume {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
        #[command(flatten)]
        why: Why,
    },
}

/// Who asks and why: kept with the pause and shown by `list`.
#[derive(clap::Args)]
pub struct Why {
    /// Why (shown to other operators).
    #[arg(long, default_value = "")]
    reason: String,
    /// Who (default: $USER).
    #[arg(long, env = "USER", default_value = "cli")]
    by: String,
}

/// Run a command on `kind`, `"routes"` or `"sources"` (the admin API's collection).
pub async fn run(kind: &str, cmd: ControlCommand) -> anyhow::Result<()> {
    let (admin, name, why, action) = match cmd {
        ControlCommand::List { admin } => {
            return admin_call(&admin, reqwest::Method::GET, &format!("/api/v1/{kind}"), &[]).await;
        }
        ControlCommand::Pause { admin, name, why } => (admin, name, why, "pause"),
        ControlCommand::Resume { admin, name, why } => (admin, name, why, "resume"),
    };
    let body = serde_json::json!({ "reason": why.reason, "by": why.by });
    let path = format!("/api/v1/{kind}/{name}/{action}");
    admin_request(&admin, reqwest::Method::POST, &path, &[], Some(body), None).await
}
