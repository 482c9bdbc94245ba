//! Commands start with a clean environment: the gateway's secrets never reach a child, so they can never
//! land in the stored output the admin API and dashboard show; `env_pass` names and PATH still do. They run at
//! `worker.action_nice`, below the edge.

use std::time::Duration;

use crate::helpers::*;

const UNLISTED: &str = "unlisted-value-of-the-operator";
const PASSED: &str = "eu-north-7";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    // The whole environment is kept, however large, so nothing could hide past the output cap.
    let rest = r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["env:GITHUB_WEBHOOK_SECRET"]

[[routes]]
name = "print-env"
source = "github"
env_pass = ["DEPLOY_REGION"]
action = { type = "command", argv = ["env"], env = { FROM_ROUTE = "route-value" } }

[[routes]]
name = "path-works"
source = "github"
action = { type = "command", argv = ["sh", "-c", "ls / > /dev/null && echo path-works"], env_pass = ["UNSET_BUT_LISTED"] }
"#;
    binary_config(dir, "output_cap = \"1MiB\"", rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_never_sees_the_admin_token_or_a_secret_but_gets_env_pass_names_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(
        &config(dir.path()),
        &[
            ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET),
            ("DEPLOY_REGION", PASSED),
            ("UNLISTED_VARIABLE", UNLISTED),
        ],
    );
    let id = push_to(&server.addr, "octo/env", "env-1").await;

    let jobs = eventually(Duration::from_secs(20), "both commands to succeed", || async {
        let detail = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
        let jobs = detail["jobs"].as_array().unwrap().clone();
        (jobs.len() == 2 && jobs.iter().all(|j| j["status"] == "succeeded")).then_some(jobs)
    })
    .await;
    let output = |route: &str| -> String {
        let job = jobs.iter().find(|j| j["route"] == route).unwrap();
        job["attempt_log"][0]["output"].as_str().unwrap_or_default().to_string()
    };

    let env = output("print-env");
    for secret in [ADMIN_TOKEN, GITHUB_SECRET, UNLISTED] {
        assert!(!env.contains(secret), "the stored output holds {secret:?}:\n{env}");
    }
    let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=').map(|(n, _)| n)).collect();
    for name in &names {
        let allowed =
            ["PATH", "HOME", "LANG", "TZ", "DEPLOY_REGION", "FROM_ROUTE"].contains(name) || name.starts_with("LC_");
        assert!(allowed, "`{name}` reached the command:\n{env}");
    }
    assert!(env.lines().any(|l| l == format!("DEPLOY_REGION={PASSED}")), "{env}");
    assert!(env.lines().any(|l| l == "FROM_ROUTE=route-value"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=/")), "{env}");
    assert_eq!(output("path-works"), "path-works\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_at_the_configured_action_nice_below_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let rest = r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["env:GITHUB_WEBHOOK_SECRET"]

[[routes]]
name = "print-nice"
source = "github"
action = { type = "command", argv = ["sh", "-c", "cut -d' ' -f19 /proc/self/stat"] }
"#;
    let config = binary_config(dir.path(), "action_nice = 7", rest);
    let server = BinaryServer::start(
        &config,
        &[("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN), ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)],
    );
    let id = push_to(&server.addr, "octo/nice", "nice-1").await;

    let output = eventually(Duration::from_secs(20), "the command to succeed", || async {
        let detail = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
        let job = detail["jobs"][0].clone();
        (job["status"] == "succeeded").then(|| job["attempt_log"][0]["output"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert_eq!(output, "7\n");
}

/// A signed push for `repo` to the running binary; the stored delivery's id.
async fn push_to(addr: &str, repo: &str, delivery: &str) -> String {
    let body = push_body("refs/heads/main", repo);
    let mut request = reqwest::Client::new().post(format!("{addr}/hooks/github")).body(body.clone());
    for (name, value) in github_headers("push", delivery, &body) {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}
