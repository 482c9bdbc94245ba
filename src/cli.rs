//! cli: `hookgate serve|check|migrate|sign|send|deliveries|jobs|routes|sources|config`, with `--help` on every
//! command.

mod control;
mod github;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ProcessEnv};
use crate::verify::{Keys, Scheme, Secret, PROVIDERS};

/// Exit code for a bad configuration (EX_CONFIG-like, as sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "Self-hosted webhook gateway: verify, store durably, answer fast, run actions reliably."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: receive webhooks, and run their actions.
    Serve(ConfigArg),
    /// Validate a configuration file; exits non-zero naming the bad key.
    Check(ConfigArg),
    /// Create or upgrade the store's schema, then exit.
    Migrate(ConfigArg),
    /// Print the header lines that make BODY (stdin) verify for a provider.
    Sign(SignArgs),
    /// Sign a body (FILE or stdin) and POST it to URL.
    Send(SendArgs),
    /// Inspect and replay stored deliveries, one or by filter (admin API).
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Inspect, retry and cancel jobs, one or by filter (admin API).
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// List, pause and resume routes on every instance (admin API).
    #[command(subcommand)]
    Routes(control::ControlCommand),
    /// List, pause and resume sources on every instance (admin API).
    #[command(subcommand)]
    Sources(control::ControlCommand),
    /// GitHub delivery recovery: what GitHub saw beside what hookgate stored; a recovery round now (admin API).
    #[command(subcommand)]
    Github(github::GithubCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the reference configuration: every key with its default, commented.
    Example,
}

#[derive(Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(short, long, env = "HOOKGATE_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Args, Clone)]
struct SchemeArgs {
    /// The provider whose headers to produce.
    #[arg(long, value_parser = provider_names())]
    provider: String,
    /// The shared secret (or env:NAME / file:PATH).
    #[arg(long)]
    secret: String,
    /// hmac: header carrying the signature.
    #[arg(long, default_value = crate::verify::OUTBOUND_SIGNATURE_HEADER)]
    signature_header: String,
    /// hmac: sha1, sha256 or sha512.
    #[arg(long, default_value = "sha256")]
    algorithm: String,
    /// hmac: hex or base64.
    #[arg(long, default_value = "hex")]
    encoding: String,
    /// hmac: text before the signature, e.g. "sha256=".
    #[arg(long, default_value = "")]
    prefix: String,
    /// hmac: header carrying the timestamp.
    #[arg(long)]
    timestamp_header: Option<String>,
    /// hmac: s or ms.
    #[arg(long, default_value = "s")]
    timestamp_unit: String,
    /// hmac: signed content, e.g. "{timestamp}.{body}".
    #[arg(long, default_value = "{body}")]
    content: String,
    /// hmac/token: header carrying the delivery id.
    #[arg(long)]
    id_header: Option<String>,
    /// hmac/token: header carrying the event name.
    #[arg(long)]
    event_header: Option<String>,
    /// token: header holding the token (default Authorization: Bearer).
    #[arg(long, default_value = "authorization")]
    token_header: String,
}

#[derive(Args)]
struct SignArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Message / delivery id (default: a new one).
    #[arg(long)]
    id: Option<String>,
    /// Timestamp in Unix seconds (or ms when > 10^12; default: now).
    #[arg(long)]
    timestamp: Option<i64>,
    /// Event name to include where the provider carries one in a header.
    #[arg(long)]
    event: Option<String>,
}

#[derive(Args)]
struct SendArgs {
    /// Where to POST, e.g. http://127.0.0.1:8080/hooks/github.
    url: String,
    #[command(flatten)]
    scheme: SchemeArgs,
    #[arg(long)]
    event: Option<String>,
    /// Body file (default: stdin).
    file: Option<PathBuf>,
}

#[derive(Args)]
struct AdminArgs {
    /// Base URL of a running hookgate.
    #[arg(long, env = "HOOKGATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token.
    #[arg(long, env = "HOOKGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List recent deliveries, newest first, or search them.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        event: Option<String>,
        /// The provider's delivery id (GitHub's X-GitHub-Delivery, …), exactly.
        #[arg(long)]
        delivery: Option<String>,
        /// Received from this time: RFC 3339 ("2026-12-01T10:00:00Z") or a duration ago ("1h").
        #[arg(long)]
        since: Option<String>,
        /// Received before this time (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// Only deliveries with a job in this status: queued, running, succeeded, dead or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// A route filter expression on the delivery ('body.repository.full_name == "octo/hello"'); one
        /// request reads at most 2 000 deliveries, and `next` continues from where it stopped.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one delivery with its jobs and attempts.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        id: String,
    },
    /// Route a stored delivery again (or every delivery matching the filter), creating new jobs with the
    /// current routes.
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
        /// One delivery's id; without it, the deliveries matching the filter (at most 10 000 a run).
        #[arg(conflicts_with_all = ["source", "event", "since", "until", "all", "idempotency_key"])]
        id: Option<String>,
        /// Only deliveries from this source.
        #[arg(long)]
        source: Option<String>,
        /// Only deliveries of this event.
        #[arg(long)]
        event: Option<String>,
        #[command(flatten)]
        bulk: BulkArgs,
    },
}

/// The filter and key every bulk command takes.
#[derive(Args)]
struct BulkArgs {
    /// From this time: RFC 3339 ("2026-12-01T10:00:00Z") or a duration ago ("1h"). Jobs compare it with when
    /// they last changed state (for a finished job, when it ended), deliveries with when they were received.
    #[arg(long)]
    since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Act on everything: a filter naming nothing is refused without it.
    #[arg(long)]
    all: bool,
    /// Idempotency-Key of the request (default: a new one, printed on stderr). Run the command again with the
    /// printed key to retry it safely: a request that already acted answers what it did, and acts no more.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// queued, running, succeeded, dead or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        route: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Queue a dead (or succeeded, or cancelled) job again, or every such job matching the filter.
    Retry {
        #[command(flatten)]
        admin: AdminArgs,
        /// One job's id; without it, the jobs matching the filter (at most 10 000 a run).
        #[arg(conflicts_with_all = ["route", "status", "since", "until", "all", "idempotency_key"])]
        id: Option<String>,
        /// Only jobs of this route.
        #[arg(long)]
        route: Option<String>,
        /// dead (the default), cancelled or succeeded.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        bulk: BulkArgs,
    },
    /// Cancel the queued jobs matching the filter (at most 10 000 a run). Running jobs are left to finish.
    Cancel {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only jobs of this route.
        #[arg(long)]
        route: Option<String>,
        /// queued (the only status that can be cancelled).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        bulk: BulkArgs,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` starts logging once its configuration says how (`[log] format`); the other commands at once.
    if !matches!(cli.command, Command::Serve(_)) {
        let format = std::env::var("HOOKGATE_LOG_FORMAT").ok().and_then(|f| config::LogFormat::parse(&f));
        crate::logging::init(format.unwrap_or_default());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(a) => return serve(&a.config).await,
        Command::Check(a) => return check(&a.config),
        Command::Migrate(a) => migrate(&a.config).await,
        Command::Sign(a) => sign(a),
        Command::Send(a) => send(a).await,
        Command::Deliveries(c) => deliveries(c).await,
        Command::Jobs(c) => jobs(c).await,
        Command::Routes(c) => control::run("routes", c).await,
        Command::Sources(c) => control::run("sources", c).await,
        Command::Github(c) => github::run(c).await,
        Command::Config(ConfigCommand::Example) => {
            print!("{}", config::REFERENCE);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<crate::live::Live, String> {
    let config = config::load(path, &ProcessEnv).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::live::Live::build(config).map_err(|e| format!("{}: {e}", path.display()))
}

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(live) => {
            for w in &live.config.warnings {
                eprintln!("warning: {w}");
            }
            for s in live.config.sources.iter().filter(|s| !s.enabled) {
                eprintln!(
                    "warning: sources `{}` is off: {}",
                    s.name,
                    s.disabled_reason.as_deref().unwrap_or("disabled")
                );
            }
            println!(
                "{}: ok ({} sources, {} routes)",
                path.display(),
                live.config.sources.len(),
                live.config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn migrate(path: &Path) -> anyhow::Result<()> {
    let live = load(path).map_err(anyhow::Error::msg)?;
    crate::store::open(&live.config.store.url).await?;
    println!("store is at the current schema");
    Ok(())
}

async fn serve(path: &Path) -> ExitCode {
    // Templates are compiled here too, so a broken one stops `serve` as it stops `check`: exit 64.
    let live = match load(path) {
        Ok(live) => live,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::logging::init(live.config.log_format);
    let shutdown = CancellationToken::new();
    // Before any command runs: as PID 1 in a container, nothing else would reap their orphans.
    crate::actions::reaper::start();
    let app = match crate::startup::Application::build_live(live).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(watch_signals(shutdown.clone(), app.state().live.clone(), path.to_path_buf()));
    match app.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM / Ctrl-C stop gracefully; SIGHUP reloads sources and routes from the same file.
async fn watch_signals(shutdown: CancellationToken, live: crate::live::LiveHandle, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => match load(&path) {
                Ok(next) => {
                    let old = live.current();
                    if next.config.store.url != old.config.store.url || next.config.server.listen != old.config.server.listen {
                        tracing::warn!("store.url and server.listen change only on restart");
                    }
                    for warning in &next.config.warnings {
                        tracing::warn!("{warning}");
                    }
                    live.replace(next);
                    tracing::info!("configuration reloaded");
                }
                Err(e) => tracing::error!(error = %e, "reload refused; keeping the running configuration"),
            },
        }
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// `--provider`'s values: every name in the provider table (aliases too), each with its one-line description.
fn provider_names() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    let values = PROVIDERS.iter().flat_map(|p| {
        let aliases = p.aliases.iter().map(move |alias| PossibleValue::new(*alias).help(format!("same as {}", p.name)));
        std::iter::once(PossibleValue::new(p.name).help(p.about)).chain(aliases)
    });
    clap::builder::PossibleValuesParser::new(values)
}

fn scheme_from(args: &SchemeArgs) -> anyhow::Result<(Scheme, Secret)> {
    let env = ProcessEnv;
    let secret = config::resolve_secret("--secret", &args.secret, Path::new("."), &env)?
        .ok_or_else(|| anyhow::anyhow!("--secret is empty"))?;
    let provider = crate::verify::provider(&args.provider)
        .ok_or_else(|| anyhow::anyhow!("--provider: unknown `{}`", args.provider))?;
    // Each option flag sets the provider key of the same name (`--token-header` sets `header`); the
    // provider is handed only the keys it takes, so the defaults of the others never get in its way.
    let flags = [
        ("signature_header", Some(&args.signature_header), "signature-header"),
        ("algorithm", Some(&args.algorithm), "algorithm"),
        ("encoding", Some(&args.encoding), "encoding"),
        ("prefix", Some(&args.prefix), "prefix"),
        ("timestamp_header", args.timestamp_header.as_ref(), "timestamp-header"),
        ("timestamp_unit", Some(&args.timestamp_unit), "timestamp-unit"),
        ("content", Some(&args.content), "content"),
        ("id_header", args.id_header.as_ref(), "id-header"),
        ("event_header", args.event_header.as_ref(), "event-header"),
        ("header", Some(&args.token_header), "token-header"),
    ];
    let mut keys = Keys::default();
    for (key, value, _) in &flags {
        if let Some(value) = value.filter(|_| provider.keys.contains(key)) {
            keys.set_text(*key, value.as_str());
        }
    }
    let scheme = Scheme::new(provider, &keys).map_err(|e| {
        let flag = flags.iter().find(|(key, _, _)| *key == e.key).map_or(e.key.as_str(), |(_, _, flag)| flag);
        anyhow::anyhow!("--{flag}: {}", e.message)
    })?;
    Ok((scheme, secret))
}

fn signed_headers(
    args: &SchemeArgs,
    id: Option<String>,
    timestamp: Option<i64>,
    event: Option<&str>,
    body: &[u8],
) -> anyhow::Result<Vec<(String, String)>> {
    let (scheme, secret) = scheme_from(args)?;
    let id = id.unwrap_or_else(|| format!("msg_{}", crate::store::new_id().replace('-', "")));
    let timestamp_ms = match timestamp {
        Some(t) if t > 1_000_000_000_000 => t,
        Some(t) => t * 1000,
        None => crate::store::now_ms(),
    };
    let msg = crate::sign::Message { id: &id, event, timestamp_ms, body };
    Ok(crate::sign::headers(&scheme, &secret, &msg)?)
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    for (name, value) in signed_headers(&args.scheme, args.id, args.timestamp, args.event.as_deref(), &body)? {
        println!("{name}: {value}");
    }
    Ok(())
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let body = match &args.file {
        Some(path) => std::fs::read(path)?,
        None => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b)?;
            b
        }
    };
    let headers = signed_headers(&args.scheme, None, None, args.event.as_deref(), &body)?;
    let mut request = reqwest::Client::new().post(&args.url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.body(body).send().await?;
    let status = response.status();
    println!("{}", status.as_u16());
    println!("{}", response.text().await.unwrap_or_default());
    if !status.is_success() {
        anyhow::bail!("the gateway answered {status}");
    }
    Ok(())
}

/// Call the admin API and print its JSON answer; fails on a non-2xx answer.
async fn admin_call(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<()> {
    admin_request(admin, method, path, query, None, None).await
}

/// A bulk request: the filter as a JSON body, under an idempotency key (a new one, printed, when none is given).
async fn bulk_call(
    admin: &AdminArgs,
    path: &str,
    mut filter: serde_json::Map<String, serde_json::Value>,
    bulk: BulkArgs,
) -> anyhow::Result<()> {
    for (name, value) in [("since", bulk.since), ("until", bulk.until)] {
        if let Some(value) = value {
            filter.insert(name.into(), value.into());
        }
    }
    if bulk.all {
        filter.insert("all".into(), true.into());
    }
    let key = bulk.idempotency_key.unwrap_or_else(crate::store::new_id);
    eprintln!("idempotency key: {key} (to retry this request safely, run it again with --idempotency-key {key})");
    admin_request(admin, reqwest::Method::POST, path, &[], Some(serde_json::Value::Object(filter)), Some(key)).await
}

fn filter_of(pairs: [(&str, Option<String>); 2]) -> serde_json::Map<String, serde_json::Value> {
    pairs.into_iter().filter_map(|(name, value)| Some((name.to_string(), value?.into()))).collect()
}

/// Call the admin API with an optional JSON body and `Idempotency-Key`, and print its JSON answer; fails on a
/// non-2xx answer.
async fn admin_request(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<serde_json::Value>,
    idempotency_key: Option<String>,
) -> anyhow::Result<()> {
    let url = format!("{}{path}", admin.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().request(method, url).bearer_auth(&admin.token).query(query);
    if let Some(json) = body {
        request = request.json(&json);
    }
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    println!("{pretty}");
    if !status.is_success() {
        anyhow::bail!("the admin API answered {status}");
    }
    Ok(())
}

fn opt(pairs: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<String>) {
    if let Some(v) = value {
        pairs.push((key, v));
    }
}

async fn deliveries(cmd: DeliveriesCommand) -> anyhow::Result<()> {
    match cmd {
        DeliveriesCommand::List { admin, source, event, delivery, since, until, status, filter, limit, cursor } => {
            let mut q = vec![("limit", limit.to_string())];
            opt(&mut q, "source", source);
            opt(&mut q, "event", event);
            opt(&mut q, "delivery", delivery);
            opt(&mut q, "since", since);
            opt(&mut q, "until", until);
            opt(&mut q, "status", status);
            opt(&mut q, "filter", filter);
            opt(&mut q, "cursor", cursor);
            admin_call(&admin, reqwest::Method::GET, "/api/v1/deliveries", &q).await
        }
        DeliveriesCommand::Show { admin, id } => {
            admin_call(&admin, reqwest::Method::GET, &format!("/api/v1/deliveries/{id}"), &[]).await
        }
        DeliveriesCommand::Replay { admin, id: Some(id), .. } => {
            admin_call(&admin, reqwest::Method::POST, &format!("/api/v1/deliveries/{id}/replay"), &[]).await
        }
        DeliveriesCommand::Replay { admin, id: None, source, event, bulk } => {
            let filter = filter_of([("source", source), ("event", event)]);
            bulk_call(&admin, "/api/v1/deliveries/replay", filter, bulk).await
        }
    }
}

async fn jobs(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::List { admin, status, route, limit } => {
            let mut q = vec![("limit", limit.to_string())];
            opt(&mut q, "status", status);
            opt(&mut q, "route", route);
            admin_call(&admin, reqwest::Method::GET, "/api/v1/jobs", &q).await
        }
        JobsCommand::Retry { admin, id: Some(id), .. } => {
            admin_call(&admin, reqwest::Method::POST, &format!("/api/v1/jobs/{id}/retry"), &[]).await
        }
        JobsCommand::Retry { admin, id: None, route, status, bulk } => {
            bulk_call(&admin, "/api/v1/jobs/retry", filter_of([("route", route), ("status", status)]), bulk).await
        }
        JobsCommand::Cancel { admin, route, status, bulk } => {
            bulk_call(&admin, "/api/v1/jobs/cancel", filter_of([("route", route), ("status", status)]), bulk).await
        }
    }
}
