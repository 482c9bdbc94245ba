//! niced: commands start at `worker.action_nice` from their first instruction. On Linux the nice value belongs
//! to a thread and a new process takes the value of the thread that spawned it; so each nice value gets one
//! spawning thread of its own that lowered itself once, and commands are spawned there. Lowering a child after
//! spawn would leave it at the gateway's priority for its first moments (a short command might never be
//! lowered), and setting it in the child before exec needs `unsafe` (`pre_exec`).

use std::collections::HashMap;
use std::io;
use std::sync::{mpsc, Mutex, OnceLock};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::reaper::{self, Owned};

type Spawned = io::Result<(Child, Owned)>;
/// A command to spawn, the runtime whose child handling it joins (the caller's), and where to answer.
type Request = (Command, tokio::runtime::Handle, oneshot::Sender<Spawned>);

/// The spawning thread of each nice value asked for so far.
static SPAWNERS: OnceLock<Mutex<HashMap<i32, mpsc::Sender<Request>>>> = OnceLock::new();

/// Spawn `command` at `nice` (from a thread at that value), or where we are when `nice` is not below the
/// gateway's own priority (lowering is all an unprivileged process may do).
pub(super) async fn spawn(command: Command, nice: i32) -> Spawned {
    let own = rustix::process::getpriority_process(None).unwrap_or(0);
    if nice <= own {
        let mut command = command;
        return reaper::spawn(&mut command);
    }
    let (answer, answered) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    spawner(nice).send((command, runtime, answer)).map_err(|_| io::Error::other("the command spawner stopped"))?;
    answered.await.map_err(|_| io::Error::other("the command spawner stopped"))?
}

fn spawner(nice: i32) -> mpsc::Sender<Request> {
    let mut spawners = SPAWNERS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    spawners.entry(nice).or_insert_with(|| start(nice)).clone()
}

fn start(nice: i32) -> mpsc::Sender<Request> {
    let (requests, incoming) = mpsc::channel::<Request>();
    let thread = std::thread::Builder::new().name(format!("hookgate-spawn-nice{nice}")).spawn(move || {
        // `None`: this thread (Linux keeps the nice value per thread).
        if let Err(e) = rustix::process::setpriority_process(None, nice) {
            tracing::warn!(error = %e, nice, "cannot lower the command spawner's priority; commands run at the gateway's");
        }
        for (mut command, runtime, answer) in incoming {
            // tokio's child handling (its SIGCHLD watch) belongs to the caller's runtime.
            let _context = runtime.enter();
            let _ = answer.send(reaper::spawn(&mut command));
        }
    });
    if let Err(e) = thread {
        tracing::warn!(error = %e, "cannot start the command spawner thread");
    }
    requests
}
