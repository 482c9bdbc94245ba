//! Orphan reaping: as a child subreaper (or PID 1 in a container) hookgate waits for the orphaned
//! descendants of its commands — never for the commands themselves, whose exit status tokio collects.
//!
//! A blanket `waitpid(-1)` would race tokio's own reaping and could take a command's exit status. So
//! every command is spawned under a lock that records its pid, and the reaper, holding the same lock,
//! waits only for zombie children that are not recorded. Zombies are found in
//! `/proc/self/task/*/children` (or, without that file, by scanning `/proc`), after each SIGCHLD and
//! every few seconds as a backstop.

use std::collections::BTreeSet;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

/// Pids of the children tokio owns, from spawn until they are reaped.
static OWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Look again this often even without a SIGCHLD (signals coalesce; one may come before we listen).
const BACKSTOP: Duration = Duration::from_secs(5);
/// At most one scan per this interval: a burst of command exits is one scan, and a zombie waiting this
/// long harms nobody.
const SETTLE: Duration = Duration::from_millis(100);

fn owned() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    OWNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a spawned child's pid out of the reaper's hands until dropped (after tokio has reaped it).
pub(super) struct Owned(Option<u32>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            owned().remove(&pid);
        }
    }
}

/// Spawn `command` with its pid recorded before the reaper can look: the lock spans both.
pub(super) fn spawn(command: &mut Command) -> io::Result<(Child, Owned)> {
    let mut owned = owned();
    let child = command.spawn()?;
    let pid = child.id();
    if let Some(pid) = pid {
        owned.insert(pid);
    }
    Ok((child, Owned(pid)))
}

/// Become a child subreaper, so orphans of commands come back to hookgate instead of to an init that
/// may not reap them, and reap them for as long as the runtime lives (commands may still finish during
/// a graceful shutdown). Only for the serving binary: a test harness reaps its own children.
pub fn start() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans of commands go to init");
    }
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGCHLD; reaping orphans every {}s", BACKSTOP.as_secs());
            None
        }
    };
    tokio::spawn(async move {
        loop {
            let n = tokio::task::spawn_blocking(reap_orphans).await.unwrap_or(0);
            if n > 0 {
                tracing::debug!(reaped = n, "orphaned processes reaped");
            }
            tokio::time::sleep(SETTLE).await;
            tokio::select! {
                () = tokio::time::sleep(BACKSTOP) => {}
                Some(()) = async { match sigchld.as_mut() { Some(s) => s.recv().await, None => None } } => {}
            }
        }
    });
}

/// Wait for every zombie child that tokio does not own; returns how many were reaped.
pub fn reap_orphans() -> usize {
    let owned = owned();
    zombie_children()
        .into_iter()
        .filter(|pid| !owned.contains(pid))
        .filter(|&pid| {
            let pid = i32::try_from(pid).map(Pid::from_raw);
            pid.is_ok_and(
                |pid| matches!(waitpid(pid, Some(WaitPidFlag::WNOHANG)), Ok(s) if s != WaitStatus::StillAlive),
            )
        })
        .count()
}

/// Children of this process that have exited and wait to be reaped.
fn zombie_children() -> Vec<u32> {
    let candidates = children_from_tasks().unwrap_or_else(children_from_scan);
    candidates
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| is_zombie(&s)))
        .collect()
}

/// `/proc/self/task/*/children` (Linux ≥ 3.5 with CONFIG_PROC_CHILDREN): no need to read every process.
fn children_from_tasks() -> Option<Vec<u32>> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that ended since the listing has no file; a kernel without the feature has none at all.
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(text) => pids.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !task.path().join("stat").exists() => {}
            Err(_) => return None,
        }
    }
    Some(pids)
}

/// Every process whose parent is this one.
fn children_from_scan() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parent_of(&s)) == Some(me))
        .collect()
}

/// The fields after the command name, which may itself hold spaces and parentheses.
fn fields_after_name(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace())
}

fn is_zombie(stat: &str) -> bool {
    fields_after_name(stat).and_then(|mut f| f.next()) == Some("Z")
}

fn parent_of(stat: &str) -> Option<u32> {
    fields_after_name(stat)?.nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines_are_read_past_odd_command_names() {
        assert!(is_zombie("42 (sleep) Z 1 42 42 0 -1"));
        assert!(is_zombie("42 (a) b) Z 7 42 42 0 -1"));
        assert!(!is_zombie("42 (sleep) S 1 42 42 0 -1"));
        assert!(!is_zombie("garbage"));
        assert_eq!(parent_of("42 (a (b) c) S 7 42 42"), Some(7));
        assert_eq!(parent_of("42 (x) S"), None);
    }

    #[test]
    fn the_children_of_this_process_are_listed() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        let from_tasks = children_from_tasks().expect("this kernel lists children");
        assert!(from_tasks.contains(&pid), "{from_tasks:?}");
        assert!(children_from_scan().contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
