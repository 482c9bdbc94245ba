//! SPEC §1 scenarios 1 and 5, each from its unmodified example file, on the real binary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Write a config for the binary: the example with its store in `dir`.
fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn post(base: &str, event: &str, delivery: &str, body: &str) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(format!("{base}/hooks/github")).body(body.to_string());
    for (k, v) in github_headers(event, delivery, body) {
        request = request.header(k, v);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn scenario_1_a_push_to_main_runs_flux_reconcile_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    // A stand-in `flux` first in PATH records how it was called.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = dir.path().join("flux-calls");
    let flux = bin.join("flux");
    std::fs::write(&flux, format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display())).unwrap();
    std::fs::set_permissions(&flux, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let config = write_config(dir.path(), &example("gitops-reconcile"));
    let server = BinaryServer::start(
        &config,
        &[("PATH", &path), ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)],
    );

    let ping = post(&server.addr, "ping", "s1-ping", r#"{"zen":"Design for failure."}"#).await;
    assert_eq!(ping.status(), 202);
    let ignored = post(&server.addr, "push", "s1-dev", &push_body("refs/heads/dev", "acme/fleet")).await;
    assert_eq!(ignored.json::<serde_json::Value>().await.unwrap()["jobs"], 0);
    let issue = post(&server.addr, "issues", "s1-issue", r#"{"action":"opened"}"#).await;
    assert_eq!(issue.json::<serde_json::Value>().await.unwrap()["jobs"], 0);
    let push = post(&server.addr, "push", "s1-main", &push_body("refs/heads/main", "acme/fleet")).await;
    assert_eq!(push.status(), 202);
    let id = push.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let detail = eventually(Duration::from_secs(20), "the reconcile to succeed", || async {
        let d = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
        (d["jobs"][0]["status"] == "succeeded").then_some(d)
    })
    .await;
    assert_eq!(detail["jobs"][0]["route"], "flux-reconcile");
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "reconcile source git flux-system\n");

    // SIGTERM stops it cleanly; its log never held the secret, a signature, a payload or an e-mail address.
    let mut server = server;
    assert!(server.terminate().success());
    let log = server.log_text();
    let body = push_body("refs/heads/main", "acme/fleet");
    let signature = github_signature(GITHUB_SECRET, body.as_bytes());
    for secret in [GITHUB_SECRET, &signature[7..], "octo@example.com", "Design for failure", "acme/fleet"] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
    assert!(log.contains("stopped"), "{log}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@localhost")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@localhost")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn scenario_5_a_push_makes_the_mirror_fetch_the_new_commit_and_bursts_coalesce() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Upstream repository with one commit, and its mirror where the example expects mirrors.
    let upstream = root.join("upstream");
    std::fs::create_dir(&upstream).unwrap();
    git(&upstream, &["init", "-q", "-b", "main"]);
    std::fs::write(upstream.join("README"), "one\n").unwrap();
    git(&upstream, &["add", "README"]);
    git(&upstream, &["commit", "-q", "-m", "one"]);
    let mirrors = root.join("mirrors");
    std::fs::create_dir(&mirrors).unwrap();
    git(&mirrors, &["clone", "-q", "--mirror", upstream.to_str().unwrap(), "fleet.git"]);
    let mirror = mirrors.join("fleet.git");

    let config = example("repo-refresh").replace("/var/lib/hookgate/mirrors", mirrors.to_str().unwrap());
    let config = write_config(root, &config);
    let server = BinaryServer::start(
        &config,
        &[("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)],
    );

    // A new commit upstream; the push delivery makes the mirror fetch it.
    std::fs::write(upstream.join("README"), "two\n").unwrap();
    git(&upstream, &["commit", "-q", "-am", "two"]);
    let head = git(&upstream, &["rev-parse", "HEAD"]);
    let push = post(&server.addr, "push", "s5-1", &push_body("refs/heads/main", "acme/fleet")).await;
    assert_eq!(push.status(), 202);
    eventually(Duration::from_secs(20), "the mirror to have the new commit", || async {
        (git(&mirror, &["rev-parse", "refs/heads/main"]) == head).then_some(())
    })
    .await;

    // A burst of 30 pushes to one repository: queued fetches merge, so far fewer than 30 run.
    let mut sends = Vec::new();
    for i in 0..30 {
        let base = server.addr.clone();
        sends.push(tokio::spawn(async move {
            post(&base, "push", &format!("s5-burst-{i}"), &push_body("refs/heads/main", "acme/fleet")).await.status()
        }));
    }
    for s in sends {
        assert_eq!(s.await.unwrap(), 202);
    }
    let jobs = eventually(Duration::from_secs(30), "every fetch to finish", || async {
        let page = admin_json(&server.addr, "/api/v1/jobs?route=mirror-fetch&limit=1000").await;
        let items = page["items"].as_array().unwrap().clone();
        items.iter().all(|j| j["status"] == "succeeded").then_some(items)
    })
    .await;
    let burst_jobs = jobs.len() - 1;
    assert!(burst_jobs <= 5, "30 pushes ran {burst_jobs} fetches");

    // A hostile repository name cannot make git leave the mirrors folder.
    let hostile = serde_json::json!({ "ref": "refs/heads/main",
        "repository": { "name": "../upstream/.git", "full_name": "x/escape" } })
    .to_string();
    let response = post(&server.addr, "push", "s5-hostile", &hostile).await;
    let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let detail = eventually(Duration::from_secs(20), "the hostile job to die", || async {
        let d = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
        (d["jobs"][0]["status"] == "dead").then_some(d)
    })
    .await;
    assert!(detail["jobs"][0]["last_error"].as_str().unwrap().contains("'..'"), "{detail}");
    assert_eq!(detail["jobs"][0]["attempts"], 1, "a refused render is not retried");
}
