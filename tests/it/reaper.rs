//! hookgate as PID 1 of a PID namespace (a container without an init): the orphaned background processes
//! of commands are reaped, while the exit status of every command still reaches its job.

use std::time::Duration;

use crate::helpers::*;

const WRAPPER: [&str; 5] = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

fn unshare_works() -> bool {
    std::process::Command::new(WRAPPER[0])
        .args(&WRAPPER[1..])
        .arg("true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let routes = r#"
[[routes]]
name = "orphans"
source = "github"
action = { type = "command", argv = ["sh", "-c", "sleep 0.2 & sleep 0.1 & echo started"] }

[[routes]]
name = "exit-3"
source = "github"
action = { type = "command", argv = ["sh", "-c", "sleep 0.05 & exit 3"] }
retry = { max_attempts = 1 }

[[routes]]
name = "exit-0"
source = "github"
action = { type = "command", argv = ["true"] }
"#;
    binary_config(dir, "", &format!("{GITHUB_SOURCE}{routes}"))
}

/// (state, parent pid) from `/proc/PID/stat`.
fn state_and_parent(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.parse().ok()?))
}

/// Processes whose parent is `parent`, with their state.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| state_and_parent(pid).filter(|(_, ppid)| *ppid == parent).map(|(state, _)| (pid, state)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_pid_1_orphans_of_commands_are_reaped_and_exit_codes_still_reach_their_jobs() {
    if !unshare_works() {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` is not available (needs root or user namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        BinaryServer::start_wrapped(&WRAPPER, &config(dir.path()), &[("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    // The wrapper's only child is hookgate; inside its namespace it is PID 1.
    let unshare = server.child.id();
    let hookgate = children_of(unshare).first().map(|(pid, _)| *pid).expect("unshare runs hookgate");
    let status = std::fs::read_to_string(format!("/proc/{hookgate}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.split_whitespace().last() == Some("1"), "hookgate is not PID 1 in its namespace: {nspid}");

    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..8 {
        let body = push_body("refs/heads/main", "octo/reaper");
        let mut request = client.post(format!("{}/hooks/github", server.addr)).body(body.clone());
        for (name, value) in github_headers("push", &format!("reap-{n}"), &body) {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 202);
        ids.push(response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }

    for id in &ids {
        let jobs = eventually(Duration::from_secs(30), "every job to finish", || async {
            let jobs =
                admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await["jobs"].as_array().unwrap().clone();
            jobs.iter().all(|j| j["status"] == "succeeded" || j["status"] == "dead").then_some(jobs)
        })
        .await;
        for job in &jobs {
            let (status, error) = (job["status"].as_str().unwrap(), job["last_error"].as_str());
            match job["route"].as_str().unwrap() {
                "exit-3" => assert_eq!((status, error), ("dead", Some("exit status 3")), "{job}"),
                _ => assert_eq!((status, error), ("succeeded", None), "{job}"),
            }
        }
    }

    // Every background sleep has ended by now or soon; none may stay a zombie of PID 1.
    eventually(Duration::from_secs(10), "no zombie children of hookgate", || async {
        let zombies: Vec<u32> = children_of(hookgate).into_iter().filter(|(_, s)| s == "Z").map(|(p, _)| p).collect();
        let sleeping = children_of(hookgate).iter().any(|(_, s)| s != "Z");
        (zombies.is_empty() && !sleeping).then_some(())
    })
    .await;

    // SIGTERM to hookgate itself: the wrapper ignores it while it waits for its child.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(hookgate as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}: {}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_a_container_orphans_of_commands_come_back_to_hookgate_and_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    let route = format!(
        r#"
[[routes]]
name = "background"
source = "github"
action = {{ type = "command", argv = ["sh", "-c", "sleep 2 > /dev/null 2>&1 & echo $! > '{}'"] }}
"#,
        pid_file.display()
    );
    let config = binary_config(dir.path(), "", &format!("{GITHUB_SOURCE}{route}"));
    let server = BinaryServer::start(&config, &[("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let hookgate = server.child.id();

    let body = push_body("refs/heads/main", "octo/orphan");
    let mut request = reqwest::Client::new().post(format!("{}/hooks/github", server.addr)).body(body.clone());
    for (name, value) in github_headers("push", "orphan-1", &body) {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), 202);

    let background: u32 = eventually(Duration::from_secs(20), "the background pid", || async {
        std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse().ok())
    })
    .await;
    // Its shell has exited: as a child subreaper hookgate, not init, is now its parent...
    eventually(Duration::from_secs(5), "the orphan to be hookgate's child", || async {
        state_and_parent(background).filter(|(_, ppid)| *ppid == hookgate).map(|_| ())
    })
    .await;
    // ...and waits for it when it ends, so it does not stay a zombie.
    eventually(Duration::from_secs(10), "the orphan to be reaped", || async {
        state_and_parent(background).is_none_or(|(_, ppid)| ppid != hookgate).then_some(())
    })
    .await;
}
