//! The `command` action: argv run directly (never through a shell) in its own process group, capped output.
//!
//! Config: `argv` (every element a template), `env`, `env_pass`, `cwd`, `timeout` (default 60s). Rendering
//! refuses a template value that would start an option, climb out of a directory (`..`) or hold a control
//! character (see `crate::template`).
//!
//! Output: stdout and stderr are merged in arrival order (like `2>&1`, chunk by chunk) into one buffer of at
//! most `output_cap` bytes; the rest is read and discarded so a chatty child never blocks on a full pipe.
//!
//! Environment: a child starts clean — hookgate's own environment holds the admin token and every `env:`
//! secret, and whatever a command prints ends up in the stored output. It gets `PATH`, `HOME`, `LANG`,
//! `LC_*` and `TZ` from hookgate, the names the route lists in `env_pass`, and the route's `env` on top.
//!
//! Lifetime: the child leads a new process group. On timeout or cancellation the whole group gets SIGTERM,
//! then SIGKILL after [`KILL_GRACE`]. When the child exits on its own, processes it left behind are left
//! alone unless they keep stdout/stderr open for longer than [`PIPE_GRACE`]; then the group is killed too,
//! so a stray background job cannot hold the attempt open.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use minijinja::Environment;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::{AttemptResult, Hint, JobContext, Outcome, Runner};
use crate::config::value::{invalid, opt_duration, validate_env_pass, ConfigError, Env};
use crate::template::{RenderError, Text};

/// A command may run this long when the action sets no `timeout` (`config.default.toml` shows it).
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `type` that selects this kind.
pub(super) const TYPE: &str = "command";

/// The options as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    argv: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    env_pass: Option<Vec<String>>,
    cwd: Option<String>,
    timeout: Option<String>,
}

/// A command action. `T` is a template: its text after validation, a compiled [`Text`] in routes.
#[derive(Debug, Clone)]
pub struct Command<T = String> {
    pub argv: Vec<T>,
    pub env: Vec<(String, T)>,
    /// Variables the command gets from hookgate's own environment (it starts with a clean one).
    pub env_pass: Vec<String>,
    pub cwd: Option<T>,
    pub timeout: Duration,
}

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

/// Every kind validates with the same inputs; a command reads no secrets or files, so `base` and `env` go unused.
pub(super) fn validate(key: &str, raw: Raw, _base: &Path, _env: &dyn Env) -> Result<Command, ConfigError> {
    let k = |s: &str| format!("{key}.{s}");
    let argv = raw.argv.ok_or_else(|| invalid(k("argv"), "missing"))?;
    if argv.is_empty() || argv[0].trim().is_empty() {
        return Err(invalid(k("argv"), "needs at least the program"));
    }
    Ok(Command {
        argv,
        env: raw.env.unwrap_or_default().into_iter().collect(),
        env_pass: validate_env_pass(&k("env_pass"), raw.env_pass)?,
        cwd: raw.cwd,
        timeout: opt_duration(&k("timeout"), raw.timeout.as_deref(), DEFAULT_TIMEOUT)?,
    })
}

impl Command {
    pub(super) fn compile(&self, env: &mut Environment<'static>, key: &str) -> Result<Command<Text>, ConfigError> {
        Ok(Command {
            argv: self
                .argv
                .iter()
                .enumerate()
                .map(|(i, a)| Text::compile(env, format!("{key}.argv[{i}]"), a))
                .collect::<Result<_, _>>()?,
            env: self
                .env
                .iter()
                .map(|(name, v)| Ok((name.clone(), Text::compile(env, format!("{key}.env.{name}"), v)?)))
                .collect::<Result<_, ConfigError>>()?,
            env_pass: self.env_pass.clone(),
            cwd: self.cwd.as_deref().map(|c| Text::compile(env, format!("{key}.cwd"), c)).transpose()?,
            timeout: self.timeout,
        })
    }
}

impl Command<Text> {
    pub(super) fn render(&self, job: &JobContext<'_>) -> Result<CommandSpec, RenderError> {
        let (templates, vars) = (job.templates, job.vars);
        let mut argv = Vec::with_capacity(self.argv.len());
        for (i, arg) in self.argv.iter().enumerate() {
            // argv[0] is the program: a value must not pick an option there either.
            argv.push(arg.render_guarded(templates, vars, i > 0 || arg.is_template())?);
        }
        let env = self
            .env
            .iter()
            .map(|(name, v)| Ok((name.clone(), v.render_guarded(templates, vars, false)?)))
            .collect::<Result<_, RenderError>>()?;
        let cwd = self.cwd.as_ref().map(|c| c.render_guarded(templates, vars, false)).transpose()?;
        Ok(CommandSpec {
            argv,
            env,
            env_pass: self.env_pass.clone(),
            cwd: cwd.map(Into::into),
            timeout: self.timeout,
            output_cap: job.output_cap,
        })
    }
}

/// Time between SIGTERM and SIGKILL.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long the pipes may stay open after the child has exited.
pub(super) const PIPE_GRACE: Duration = Duration::from_secs(1);
/// Upper bound for reaping after SIGKILL and for the readers after the group is gone.
const REAP_BOUND: Duration = Duration::from_secs(2);
/// Variables every command gets from hookgate's environment: where programs are, whose home, which
/// language and time zone. `LC_*` too.
const BASE_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];
/// For a gateway started without PATH (some init systems), so that argv[0] is still found.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command's options hold no secret (its `env` values are the configuration's own text).
pub(super) fn secret_refs(_: &toml::Table) -> Vec<(&'static str, &str)> {
    Vec::new()
}

pub(super) async fn run(runner: &Runner, spec: CommandSpec, cancel: &CancellationToken) -> AttemptResult {
    let Some((program, args)) = spec.argv.split_first() else {
        return failed("empty argv".into());
    };
    if let Some(cwd) = &spec.cwd {
        // Checked first: a missing cwd would otherwise surface as "cannot start `prog`: No such file ...".
        if !tokio::fs::metadata(cwd).await.is_ok_and(|m| m.is_dir()) {
            return failed(format!("working directory `{}` does not exist", cwd.display()));
        }
    }

    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(clean_env(std::env::vars_os(), &spec.env_pass))
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let (mut child, owned) = match super::niced::spawn(command, runner.action_nice).await {
        Ok(spawned) => spawned,
        Err(e) => return spawn_error(program, &e),
    };
    let Some(group) = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw) else {
        // Only possible if the child was already reaped, which nothing here did.
        return failed(format!("cannot start `{program}`: no process id"));
    };

    let stop_reading = CancellationToken::new();
    let mut reader =
        tokio::spawn(capture(child.stdout.take(), child.stderr.take(), spec.output_cap, stop_reading.clone()));

    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status),
        () = tokio::time::sleep(spec.timeout) => Ended::TimedOut,
        () = cancel.cancelled() => Ended::Cancelled,
    };

    // Some once the reader task has been joined (a JoinHandle must not be polled after completion).
    let mut joined: Option<Option<Captured>> = None;
    let timed_out = matches!(ended, Ended::TimedOut);
    let status = match ended {
        Ended::Exited(status) => {
            match tokio::time::timeout(PIPE_GRACE, &mut reader).await {
                Ok(result) => joined = Some(result.ok()),
                Err(_) => {
                    tracing::warn!(program = %program, "processes left behind keep the output open; killing the group");
                    terminate_group(group, &mut child).await;
                }
            }
            status.map_err(|e| format!("waiting for `{program}` failed: {e}"))
        }
        Ended::TimedOut | Ended::Cancelled => {
            terminate_group(group, &mut child).await;
            Err(match ended {
                Ended::TimedOut => format!("timed out after {}", human(spec.timeout)),
                _ => "cancelled".to_string(),
            })
        }
    };

    // Normally done by now; the bound covers a process that escaped the group yet holds a pipe.
    let captured = match joined {
        Some(captured) => captured,
        None => match tokio::time::timeout(REAP_BOUND, &mut reader).await {
            Ok(result) => result.ok(),
            Err(_) => {
                stop_reading.cancel();
                tokio::time::timeout(REAP_BOUND, reader).await.ok().and_then(Result::ok)
            }
        },
    };
    let output = captured.and_then(Captured::into_text);
    // Reaped by now (or left to tokio's orphan queue): only then may the orphan reaper see its pid.
    drop(child);
    drop(owned);

    let (outcome, error) = match status {
        Ok(status) if status.success() => (Outcome::Success, None),
        Ok(status) => (Outcome::Retryable(Hint::default()), Some(describe(status))),
        // A command that ran out of time (a slow remote, a busy cluster) gets the throttle floor's pause.
        Err(error) => (Outcome::Retryable(Hint { retry_after: None, throttled: timed_out }), Some(error)),
    };
    AttemptResult { outcome, error, output, status_code: None }
}

/// The part of `parent` (hookgate's environment) a command may see: the base names and `pass`.
fn clean_env(parent: impl Iterator<Item = (OsString, OsString)>, pass: &[String]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = parent
        .filter(|(name, _)| {
            name.to_str().is_some_and(|n| BASE_ENV.contains(&n) || n.starts_with("LC_") || pass.iter().any(|p| p == n))
        })
        .collect();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

enum Ended {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

fn failed(error: String) -> AttemptResult {
    AttemptResult { outcome: Outcome::Failed, error: Some(error), output: None, status_code: None }
}

/// A missing or unusable program is permanent; a resource shortage (fork limits, fds) may pass.
fn spawn_error(program: &str, e: &io::Error) -> AttemptResult {
    let (reason, transient) = match e.raw_os_error().map(Errno::from_raw) {
        Some(errno @ (Errno::EAGAIN | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE)) => {
            (errno.desc().to_string(), true)
        }
        Some(errno) => (errno.desc().to_string(), false),
        None => (e.to_string(), false),
    };
    let error = format!("cannot start `{program}`: {reason}");
    if transient {
        AttemptResult {
            outcome: Outcome::Retryable(Hint::default()),
            error: Some(error),
            output: None,
            status_code: None,
        }
    } else {
        failed(error)
    }
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(signal) => format!("killed by signal {signal}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        None => status.to_string(),
    }
}

/// "90s" rather than "90.000s"; sub-second timeouts keep milliseconds.
pub(super) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// SIGTERM the group, SIGKILL it after the grace if anything is left, and reap the child.
async fn terminate_group(group: Pid, child: &mut Child) {
    if killpg(group, Signal::SIGTERM).is_err() {
        // ESRCH: the group is already empty; only a zombie leader may remain to be reaped.
        let _ = tokio::time::timeout(REAP_BOUND, child.wait()).await;
        return;
    }
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    loop {
        let leader_gone = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
        if leader_gone && !tokio::task::spawn_blocking(move || group_alive(group)).await.unwrap_or(true) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = tokio::time::timeout(REAP_BOUND, child.wait()).await;
}

/// True while a live (not zombie) process is in the group. Zombies are discounted because some PID 1s
/// (minimal container inits) reap orphans late or never; where /proc is missing, any member counts.
fn group_alive(group: Pid) -> bool {
    if matches!(killpg(group, None), Err(Errno::ESRCH)) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| live_group_of(&stat))
            == Some(group.as_raw())
    })
}

/// The process group of a `/proc/PID/stat` line, unless the process is a zombie or dead.
fn live_group_of(stat: &str) -> Option<i32> {
    // The command name may hold spaces and parentheses; the fields after the last ')' do not.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    (!matches!(state, "Z" | "X" | "x")).then_some(pgrp)
}

/// The merged, capped output.
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

impl Captured {
    fn push(&mut self, chunk: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.kept.len());
        let take = room.min(chunk.len());
        self.kept.extend_from_slice(&chunk[..take]);
        self.dropped += (chunk.len() - take) as u64;
    }

    fn into_text(self) -> Option<String> {
        if self.kept.is_empty() && self.dropped == 0 {
            return None;
        }
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!("…[truncated {} bytes]", self.dropped));
        }
        Some(text)
    }
}

/// Reads both pipes until both close or `stop` fires.
async fn capture(
    mut stdout: Option<impl AsyncRead + Unpin>,
    mut stderr: Option<impl AsyncRead + Unpin>,
    cap: usize,
    stop: CancellationToken,
) -> Captured {
    let mut captured = Captured { kept: Vec::with_capacity(cap.min(64 * 1024)), dropped: 0 };
    let mut out_buf = vec![0u8; 8192];
    let mut err_buf = vec![0u8; 8192];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Some(n) => captured.push(&out_buf[..n], cap),
                None => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Some(n) => captured.push(&err_buf[..n], cap),
                None => stderr = None,
            },
            () = stop.cancelled() => break,
        }
    }
    captured
}

/// Some(n) for data; None at end of stream or on a read error. Pends forever for a closed pipe so that
/// `select!` keeps waiting on the other one.
async fn read_some(pipe: &mut Option<impl AsyncRead + Unpin>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use super::*;
    use crate::actions::ActionSpec;
    use crate::route::Routes;
    use crate::template::EventContext;

    /// A route's config, compiled, rendered for one event: the path a job takes from the file to its spec.
    #[test]
    fn a_configured_command_renders_to_its_spec() {
        let text = r#"
            [[sources]]
            name = "github"
            provider = "github"
            secrets = ["s"]

            [[routes]]
            name = "refresh"
            source = "github"
            env_pass = ["KUBECONFIG"]
            action = { type = "command", argv = ["git", "-C", "/srv/{{ body.repository.name }}", "fetch", "--prune"], env = { REPO = "{{ body.repository.full_name }}", JOB = "{{ job }}" }, env_pass = ["SSH_AUTH_SOCK"], cwd = "/srv/{{ body.repository.name }}", timeout = "2m" }
        "#;
        let cfg = crate::config::parse(text, Path::new(""), &BTreeMap::<String, String>::new()).unwrap();
        assert_eq!(cfg.routes[0].action.timeout(), Duration::from_secs(120));
        let routes = Routes::compile(&cfg).unwrap();
        let body = serde_json::json!({ "repository": { "name": "r", "full_name": "o/r" } });
        let ctx = EventContext::new("github", "push", "d-1", "id-1", body, vec![]);
        let ActionSpec::Command(spec) =
            routes.render_action(routes.get("refresh").unwrap(), &ctx, "job-1", 100).unwrap()
        else {
            panic!("a command spec")
        };
        assert_eq!(spec.argv, ["git", "-C", "/srv/r", "fetch", "--prune"]);
        assert_eq!(spec.env, [("JOB".to_string(), "job-1".to_string()), ("REPO".to_string(), "o/r".to_string())]);
        assert_eq!(spec.env_pass, ["SSH_AUTH_SOCK", "KUBECONFIG"]);
        assert_eq!(spec.cwd.as_deref(), Some(Path::new("/srv/r")));
        assert_eq!(spec.timeout, Duration::from_secs(120));
        assert_eq!(spec.output_cap, 100);
    }

    #[test]
    fn a_command_times_out_after_a_minute_by_default() {
        let raw = Raw { argv: Some(vec!["true".into()]), env: None, env_pass: None, cwd: None, timeout: None };
        let command = validate("a", raw, Path::new(""), &BTreeMap::<String, String>::new()).unwrap();
        assert_eq!(command.timeout, Duration::from_secs(60));
    }

    #[test]
    fn an_argv_without_a_program_names_the_key() {
        for argv in [Some(vec![]), Some(vec![" ".to_string()]), None] {
            let raw = Raw { argv, env: None, env_pass: None, cwd: None, timeout: None };
            let err = validate("routes[0].action", raw, Path::new(""), &BTreeMap::<String, String>::new());
            assert!(err.unwrap_err().to_string().starts_with("routes[0].action.argv: "));
        }
    }

    fn render_argv(template: &str, body: serde_json::Value) -> Result<Vec<String>, RenderError> {
        let mut env = crate::template::environment();
        let action = Command {
            argv: vec!["git".into(), "fetch".into(), template.into()],
            env: vec![],
            env_pass: vec![],
            cwd: None,
            timeout: Duration::from_secs(1),
        };
        let compiled = action.compile(&mut env, "a").unwrap();
        let ctx = EventContext::new("s", "push", "d", "i", body, vec![]);
        let vars = ctx.to_value();
        let job = JobContext { templates: &env, vars: &vars, event: &ctx, job_id: "job", output_cap: 10 };
        compiled.render(&job).map(|spec| spec.argv)
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

    fn spec(argv: &[&str]) -> CommandSpec {
        CommandSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            env_pass: Vec::new(),
            cwd: None,
            timeout: Duration::from_secs(10),
            output_cap: 64 * 1024,
        }
    }

    async fn run_spec(spec: CommandSpec) -> AttemptResult {
        run(&Runner::new(), spec, &CancellationToken::new()).await
    }

    /// Field 19 of /proc/self/stat is the nice value; `cut` reads its own, so each line is one process's.
    const PRINT_NICE: &str = "cut -d' ' -f19 /proc/self/stat; sh -c \"cut -d' ' -f19 /proc/self/stat\"";

    #[tokio::test]
    async fn a_command_and_what_it_starts_run_at_the_action_nice_value() {
        let runner = Runner::new().with_action_nice(13);
        let result = run(&runner, spec(&["sh", "-c", PRINT_NICE]), &CancellationToken::new()).await;
        assert_eq!(result.outcome, Outcome::Success, "{:?}", result.error);
        assert_eq!(result.output.as_deref(), Some("13\n13\n"));
    }

    #[tokio::test]
    async fn action_nice_zero_leaves_commands_at_the_gateways_own_priority() {
        let own = rustix::process::getpriority_process(None).unwrap();
        let runner = Runner::new().with_action_nice(0);
        let result = run(&runner, spec(&["sh", "-c", PRINT_NICE]), &CancellationToken::new()).await;
        assert_eq!(result.output, Some(format!("{own}\n{own}\n")));
    }

    /// Alive means present and not a zombie: PID 1 here may never reap orphans.
    fn process_is_alive(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Ok(stat) => {
                let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next());
                !matches!(state, Some(Some('Z' | 'X')))
            }
            Err(_) => false,
        }
    }

    async fn read_pid_file(path: &Path) -> String {
        for _ in 0..200 {
            if let Ok(pid) = std::fs::read_to_string(path) {
                if !pid.trim().is_empty() {
                    return pid;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pid file {} was never written", path.display());
    }

    #[tokio::test]
    async fn a_successful_command_has_stdout_and_stderr_captured() {
        let result = run_spec(spec(&["sh", "-c", "echo out; echo err >&2"])).await;
        assert_eq!(result.outcome, Outcome::Success);
        assert_eq!(result.error, None);
        let output = result.output.expect("output");
        assert!(output.contains("out\n"), "{output:?}");
        assert!(output.contains("err\n"), "{output:?}");
        assert_eq!(result.status_code, None);
    }

    #[tokio::test]
    async fn a_silent_command_has_no_output() {
        let result = run_spec(spec(&["true"])).await;
        assert_eq!(result.outcome, Outcome::Success);
        assert_eq!(result.output, None);
    }

    #[tokio::test]
    async fn a_non_zero_exit_is_retryable() {
        let result = run_spec(spec(&["sh", "-c", "echo failing; exit 3"])).await;
        assert_eq!(result.outcome, Outcome::Retryable(Hint::default()));
        assert_eq!(result.error.as_deref(), Some("exit status 3"));
        assert_eq!(result.output.as_deref(), Some("failing\n"));
    }

    #[tokio::test]
    async fn a_command_killed_by_a_signal_says_which() {
        let result = run_spec(spec(&["sh", "-c", "kill -9 $$"])).await;
        assert_eq!(result.outcome, Outcome::Retryable(Hint::default()));
        assert_eq!(result.error.as_deref(), Some("killed by signal SIGKILL"));
    }

    #[tokio::test]
    async fn a_missing_program_fails_with_a_clear_error() {
        let result = run_spec(spec(&["hookgate-no-such-program", "x"])).await;
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.error.as_deref(), Some("cannot start `hookgate-no-such-program`: No such file or directory"));
    }

    #[tokio::test]
    async fn a_program_without_execute_permission_fails() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let result = run_spec(spec(&[script.to_str().unwrap()])).await;
        assert_eq!(result.outcome, Outcome::Failed);
        let error = result.error.unwrap();
        assert!(error.starts_with("cannot start `"), "{error}");
        assert!(error.ends_with("`: Permission denied"), "{error}");
    }

    #[tokio::test]
    async fn an_empty_argv_fails() {
        let result = run_spec(spec(&[])).await;
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.error.as_deref(), Some("empty argv"));
    }

    #[tokio::test]
    async fn a_missing_working_directory_fails() {
        let mut s = spec(&["true"]);
        s.cwd = Some("/nonexistent/hookgate-test".into());
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.error.as_deref(), Some("working directory `/nonexistent/hookgate-test` does not exist"));
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_drained_and_marked() {
        // 1 MB, far more than a pipe buffer: the child only finishes if the reader keeps draining.
        let mut s = spec(&["sh", "-c", "yes abcdefghi | head -c 1000000; yes 0123456789 | head -c 1000000 >&2"]);
        s.output_cap = 1000;
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Success);
        let output = result.output.unwrap();
        let (kept, marker) = output.split_at(1000);
        assert_eq!(kept, "abcdefghi\n".repeat(100));
        assert_eq!(marker, "…[truncated 1999000 bytes]");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > '{}'; sleep 30", pid_file.display());
        let mut s = spec(&["sh", "-c", &script]);
        s.timeout = Duration::from_secs(1);
        let started = Instant::now();
        let result = run_spec(s).await;
        assert!(started.elapsed() < Duration::from_secs(1) + KILL_GRACE, "took {:?}", started.elapsed());
        assert_eq!(result.outcome, Outcome::Retryable(Hint { retry_after: None, throttled: true }));
        assert_eq!(result.error.as_deref(), Some("timed out after 1s"));
        let grandchild = read_pid_file(&pid_file).await;
        assert!(!process_is_alive(&grandchild), "background process {} survived", grandchild.trim());
    }

    #[tokio::test]
    async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("stubborn.pid");
        let script = format!("trap '' TERM; echo $$ > '{}'; while :; do sleep 0.1; done", pid_file.display());
        let mut s = spec(&["sh", "-c", &script]);
        s.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let result = run_spec(s).await;
        let elapsed = started.elapsed();
        assert!(elapsed >= KILL_GRACE, "SIGKILL came before the grace: {elapsed:?}");
        assert!(elapsed < KILL_GRACE + Duration::from_secs(3), "took {elapsed:?}");
        assert_eq!(result.error.as_deref(), Some("timed out after 300ms"));
        assert!(!process_is_alive(&read_pid_file(&pid_file).await));
    }

    #[tokio::test]
    async fn cancellation_kills_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let mut s = spec(&["sh", "-c", &script]);
        s.timeout = Duration::from_secs(60);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let result = run(&Runner::new(), s, &cancel).await;
        assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
        assert_eq!(result.outcome, Outcome::Retryable(Hint::default()));
        assert_eq!(result.error.as_deref(), Some("cancelled"));
        assert!(!process_is_alive(&read_pid_file(&pid_file).await));
    }

    #[tokio::test]
    async fn a_background_process_holding_the_pipes_does_not_hang_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("daemon.pid");
        let script = format!("sleep 30 & echo $! > '{}'; echo started", pid_file.display());
        let started = Instant::now();
        let result = run_spec(spec(&["sh", "-c", &script])).await;
        assert!(started.elapsed() < PIPE_GRACE + KILL_GRACE, "took {:?}", started.elapsed());
        assert_eq!(result.outcome, Outcome::Success);
        assert_eq!(result.output.as_deref(), Some("started\n"));
        assert!(!process_is_alive(&read_pid_file(&pid_file).await));
    }

    #[tokio::test]
    async fn hostile_argument_values_are_passed_literally() {
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let victim = dir.path().join("x");
        std::fs::create_dir(&victim).unwrap();
        let hostile = format!(
            "; rm -rf {victim} $(touch {pwned}) `touch {pwned}` && touch {pwned} | touch {pwned}\n'\"*",
            victim = victim.display(),
            pwned = pwned.display()
        );
        let result = run_spec(spec(&["printf", "[%s]", &hostile, "two words"])).await;
        assert_eq!(result.outcome, Outcome::Success);
        assert_eq!(result.output.unwrap(), format!("[{hostile}][two words]"));
        assert!(!pwned.exists(), "a shell ran the argument");
        assert!(victim.exists(), "a shell ran the argument");
    }

    #[tokio::test]
    async fn env_and_cwd_are_applied_on_a_clean_environment_that_keeps_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(&["sh", "-c", r#"printf '%s|%s|%s' "$HOOKGATE_TEST_VALUE" "$(pwd -P)" "${PATH:+has-path}""#]);
        s.env = vec![("HOOKGATE_TEST_VALUE".into(), "a value; $(not run)".into())];
        s.cwd = Some(dir.path().to_path_buf());
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Success);
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(result.output.unwrap(), format!("a value; $(not run)|{}|has-path", cwd.display()));
    }

    #[tokio::test]
    async fn a_command_sees_only_the_base_variables_its_env_and_env_pass() {
        // The test process's environment is full of CARGO_* and RUST* variables: only the one passed gets through.
        let (passed, value) = std::env::vars()
            .find(|(k, v)| !BASE_ENV.contains(&k.as_str()) && !k.starts_with("LC_") && !v.contains('\n'))
            .expect("cargo runs tests with variables of its own");
        let mut s = spec(&["env"]);
        s.env = vec![("FROM_ROUTE".into(), "set".into())];
        s.env_pass = vec![passed.clone()];
        let result = run_spec(s).await;
        assert_eq!(result.outcome, Outcome::Success);
        let output = result.output.unwrap();
        let names: Vec<&str> = output.lines().filter_map(|l| l.split_once('=').map(|(n, _)| n)).collect();
        for name in &names {
            let allowed =
                BASE_ENV.contains(name) || name.starts_with("LC_") || *name == "FROM_ROUTE" || *name == passed;
            assert!(allowed, "`{name}` reached the command:\n{output}");
        }
        assert!(output.lines().any(|l| l == "FROM_ROUTE=set"), "{output}");
        assert!(output.lines().any(|l| l == format!("{passed}={value}")), "{output}");
        assert!(names.contains(&"PATH"), "{output}");
    }

    #[test]
    fn the_clean_environment_keeps_base_names_and_passed_ones_only() {
        let parent = [
            ("PATH", "/bin"),
            ("HOME", "/home/h"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "en_GB.UTF-8"),
            ("TZ", "UTC"),
            ("HOOKGATE_ADMIN_TOKEN", "admin-secret"),
            ("GITHUB_WEBHOOK_SECRET", "gh-secret"),
            ("DEPLOY_ENV", "prod"),
            ("XLC_ALL", "x"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = clean_env(parent.clone().into_iter(), &["DEPLOY_ENV".into()]);
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["PATH", "HOME", "LANG", "LC_TIME", "TZ", "DEPLOY_ENV"]);
        let without_path = clean_env(parent.into_iter().skip(1), &[]);
        assert!(without_path.contains(&("PATH".into(), DEFAULT_PATH.into())));
    }

    #[test]
    fn the_liveness_probe_sees_a_running_process() {
        assert!(process_is_alive(&std::process::id().to_string()));
        assert!(!process_is_alive("999999999"));
    }

    #[test]
    fn zombies_and_odd_command_names_are_read_from_proc_stat() {
        assert_eq!(live_group_of("42 (sleep) S 1 4242 13133 0 -1"), Some(4242));
        assert_eq!(live_group_of("42 (a) b (c) R 1 7 13133 0 -1"), Some(7));
        assert_eq!(live_group_of("42 (sleep) Z 1 4242 13133 0 -1"), None);
        assert_eq!(live_group_of("garbage"), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(120)), "120s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
    }
}
