//! `hookgate routes …` and `hookgate sources …`: the shared route and source controls of a running gateway,
//! through its admin API.

use clap::Subcommand;

use super::{admin_call, admin_request, AdminArgs};

#[derive(Subcommand)]
pub enum RoutesCommand {
    /// List routes with their state on every instance: paused, stopped by a 410, circuit.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Hold a route's jobs in the queue, on every instance, until it is resumed.
    Pause {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
        #[command(flatten)]
        why: Why,
    },
    /// Let a route run again: clears a pause, a 410 stop and an open circuit.
    Resume {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
        #[command(flatten)]
        why: Why,
    },
}

#[derive(Subcommand)]
pub enum SourcesCommand {
    /// List sources and whether they are paused.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Answer a source's webhooks with 503 and Retry-After, storing nothing, on every instance.
    Pause {
        #[command(flatten)]
        admin: AdminArgs,
        name: String,
        #[command(flatten)]
        why: Why,
    },
    /// Take a source's webhooks again.
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

impl Why {
    fn body(&self) -> serde_json::Value {
        serde_json::json!({ "reason": self.reason, "by": self.by })
    }
}

pub async fn routes(cmd: RoutesCommand) -> anyhow::Result<()> {
    let post = reqwest::Method::POST;
    match cmd {
        RoutesCommand::List { admin } => admin_call(&admin, reqwest::Method::GET, "/api/v1/routes", &[]).await,
        RoutesCommand::Pause { admin, name, why } => {
            admin_request(&admin, post, &format!("/api/v1/routes/{name}/pause"), &[], Some(why.body()), None).await
        }
        RoutesCommand::Resume { admin, name, why } => {
            admin_request(&admin, post, &format!("/api/v1/routes/{name}/resume"), &[], Some(why.body()), None).await
        }
    }
}

pub async fn sources(cmd: SourcesCommand) -> anyhow::Result<()> {
    let post = reqwest::Method::POST;
    match cmd {
        SourcesCommand::List { admin } => admin_call(&admin, reqwest::Method::GET, "/api/v1/sources", &[]).await,
        SourcesCommand::Pause { admin, name, why } => {
            admin_request(&admin, post, &format!("/api/v1/sources/{name}/pause"), &[], Some(why.body()), None).await
        }
        SourcesCommand::Resume { admin, name, why } => {
            admin_request(&admin, post, &format!("/api/v1/sources/{name}/resume"), &[], Some(why.body()), None).await
        }
    }
}
