//! The `command` action: run argv directly (never through a shell) in its own process group, capped output.
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

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{AttemptResult, CommandSpec, Outcome};

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

pub(super) async fn run(spec: CommandSpec, cancel: &CancellationToken) -> AttemptResult {
    let Some((program, args)) = spec.argv.split_first() else {
        return failed("empty argv".into());
    };
    if let Some(cwd) = &spec.cwd {
        // Checked first: a missing cwd would otherwise surface as "cannot start `prog`: No such file ...".
        if !tokio::fs::metadata(cwd).await.is_ok_and(|m| m.is_dir()) {
            return failed(format!("working directory `{}` does not exist", cwd.display()));
        }
    }

    let mut command = Command::new(program);
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
    let (mut child, owned) = match super::reaper::spawn(&mut command) {
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
        Ok(status) => (Outcome::Retryable { retry_after: None }, Some(describe(status))),
        Err(error) => (Outcome::Retryable { retry_after: None }, Some(error)),
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
            outcome: Outcome::Retryable { retry_after: None },
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
        run(spec, &CancellationToken::new()).await
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
        assert_eq!(result.outcome, Outcome::Retryable { retry_after: None });
        assert_eq!(result.error.as_deref(), Some("exit status 3"));
        assert_eq!(result.output.as_deref(), Some("failing\n"));
    }

    #[tokio::test]
    async fn a_command_killed_by_a_signal_says_which() {
        let result = run_spec(spec(&["sh", "-c", "kill -9 $$"])).await;
        assert_eq!(result.outcome, Outcome::Retryable { retry_after: None });
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
        assert_eq!(result.outcome, Outcome::Retryable { retry_after: None });
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
        let result = run(s, &cancel).await;
        assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
        assert_eq!(result.outcome, Outcome::Retryable { retry_after: None });
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
