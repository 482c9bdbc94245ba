//! The CLI: `check` names bad keys and exits 64, `sign` output verifies, `send` and admin commands work.

use std::process::Command;

use crate::helpers::*;

fn run(args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(hookgate_bin());
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.env_remove("HOOKGATE_CONFIG").env_remove("HOOKGATE_ADMIN_TOKEN");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_accepts_every_example() {
    let env = [
        ("GITHUB_WEBHOOK_SECRET", "s"),
        ("SCAN_AGENT_SECRET", "whsec_c2VjcmV0"),
        ("APP_PUBLISH_TOKEN", "t"),
        ("PARTNER_SIGNING_SECRET", "p"),
        ("INFISICAL_WEBHOOK_SECRET", "i"),
    ];
    for example in ["quickstart", "gitops-reconcile", "repo-refresh", "scan-pipeline", "notify", "secret-sync"] {
        let path = format!("{}/examples/{example}.toml", env!("CARGO_MANIFEST_DIR"));
        let (code, out, err) = run(&["check", "--config", &path], None, &env);
        assert_eq!(code, 0, "{example}: {out}{err}");
        assert!(out.contains("ok"));
    }
}

#[test]
fn check_names_the_bad_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\ntolerance = \"soon\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()], None, &[]);
    assert_eq!(code, 64);
    assert!(err.contains("sources[0].tolerance"), "{err}");

    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 2\n").unwrap();
    let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()], None, &[]);
    assert_eq!(code, 64);
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn check_and_serve_both_refuse_a_broken_template_with_exit_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}/h.db\"\n\
             [[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n\
             [[routes]]\nname = \"r\"\nsource = \"g\"\n\
             action = {{ type = \"command\", argv = [\"echo\", \"{{{{ body.ref \"] }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    for command in ["check", "serve"] {
        let (code, _, err) = run(&[command, "-c", path.to_str().unwrap()], None, &[]);
        assert_eq!(code, 64, "{command}: {err}");
        assert!(err.contains("routes[0].action.argv[1]"), "{command}: {err}");
    }
    assert!(!dir.path().join("h.db").exists(), "serve opened the store before the configuration compiled");
}

#[test]
fn config_example_prints_a_reference_that_check_accepts() {
    let (code, reference, _) = run(&["config", "example"], None, &[]);
    assert_eq!(code, 0);
    assert!(reference.contains("[server]") && reference.contains("throttle_floor"), "{reference}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, &reference).unwrap();
    // As printed, with no secrets set: it checks, and says which sources are off for want of one.
    let (code, out, err) = run(&["check", "-c", path.to_str().unwrap()], None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 sources, 2 routes") && err.contains("sources `github` is off"), "{out}{err}");
}

#[test]
fn sign_prints_headers_that_match_githubs_documented_vector() {
    let (code, out, err) =
        run(&["sign", "--provider", "github", "--secret", GITHUB_SECRET], Some("Hello, World!"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        "{out}"
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check", "--help"],
        vec!["sign", "--help"],
        vec!["send", "--help"],
        vec!["deliveries", "--help"],
        vec!["deliveries", "list", "--help"],
        vec!["jobs", "list", "--help"],
        vec!["jobs", "retry", "--help"],
        vec!["config", "example", "--help"],
        vec!["routes", "list", "--help"],
        vec!["routes", "pause", "--help"],
        vec!["sources", "resume", "--help"],
    ] {
        let (code, out, _) = run(&args, None, &[]);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage"), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_the_admin_commands_work_against_a_running_server() {
    let app = spawn_app(&Backend::Sqlite, &format!(
        "{GITHUB_SOURCE}\n[[routes]]\nname = \"fails\"\nsource = \"github\"\naction = {{ type = \"command\", argv = [\"false\"] }}\nretry = {{ max_attempts = 1 }}\n"
    ))
    .await;
    let url = format!("{}/hooks/github", app.addr);
    let addr = app.addr.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(
            &["send", &url, "--provider", "github", "--secret", GITHUB_SECRET, "--event", "push"],
            Some("{\"ref\":\"x\"}"),
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("202"), "{out}");
    let id = serde_json::from_str::<serde_json::Value>(out.lines().nth(1).unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    terminal_jobs(&app, &id).await;

    let env = [("HOOKGATE_URL", addr.as_str()), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let (code, out, _) = tokio::task::block_in_place(|| run(&["deliveries", "list"], None, &env));
    assert_eq!(code, 0);
    assert!(out.contains(&id));
    let (code, out, _) = tokio::task::block_in_place(|| run(&["deliveries", "show", &id], None, &env));
    assert_eq!(code, 0);
    assert!(out.contains("\"route\": \"fails\""));
    let (code, out, _) = tokio::task::block_in_place(|| run(&["jobs", "list", "--status", "dead"], None, &env));
    assert_eq!(code, 0);
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job_id = jobs["items"][0]["id"].as_str().unwrap().to_string();
    let (code, _, _) = tokio::task::block_in_place(|| run(&["jobs", "retry", &job_id], None, &env));
    assert_eq!(code, 0);
    let (code, out, _) = tokio::task::block_in_place(|| run(&["deliveries", "replay", &id], None, &env));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"jobs\": 1"));
    let (code, _, _) = tokio::task::block_in_place(|| {
        run(&["deliveries", "list"], None, &[("HOOKGATE_URL", addr.as_str()), ("HOOKGATE_ADMIN_TOKEN", "wrong")])
    });
    assert_ne!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_searched_from_the_command_line() {
    let app = spawn_app(&Backend::Sqlite, GITHUB_SOURCE).await;
    for (guid, repo) in [("guid-hello", "octo/hello"), ("guid-world", "octo/world")] {
        assert_eq!(app.github("push", guid, &push_body("refs/heads/main", repo)).await.status(), 202);
    }
    let env = [("HOOKGATE_URL", app.addr.as_str()), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let listed = |args: &[&str]| {
        let mut all = vec!["deliveries", "list"];
        all.extend_from_slice(args);
        let (code, out, err) = tokio::task::block_in_place(|| run(&all, None, &env));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
        answer["items"].as_array().unwrap().iter().map(|d| d["delivery"].as_str().unwrap().to_string()).collect()
    };
    let found: Vec<String> = listed(&["--filter", r#"body.repository.full_name == "octo/hello""#, "--since", "1h"]);
    assert_eq!(found, ["guid-hello"]);
    let found: Vec<String> = listed(&["--delivery", "guid-world", "--until", "2099-01-01T00:00:00Z"]);
    assert_eq!(found, ["guid-world"]);
    assert!(listed(&["--status", "dead"]).is_empty(), "no route, no job");
    let (code, out, _) =
        tokio::task::block_in_place(|| run(&["deliveries", "list", "--filter", "body.a =="], None, &env));
    assert_ne!(code, 0);
    assert!(out.contains("filter is not a valid expression"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_sources_are_paused_and_resumed_from_the_command_line() {
    let app = spawn_app(&Backend::Sqlite, &format!(
        "{GITHUB_SOURCE}\n[[routes]]\nname = \"deploy\"\nsource = \"github\"\naction = {{ type = \"command\", argv = [\"true\"] }}\n"
    ))
    .await;
    let addr = app.addr.clone();
    let env = [("HOOKGATE_URL", addr.as_str()), ("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN), ("USER", "carol")];
    let cli = |args: &[&str]| tokio::task::block_in_place(|| run(args, None, &env));

    let (code, out, err) = cli(&["routes", "pause", "deploy", "--reason", "release freeze"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = cli(&["routes", "list"]);
    let routes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(routes["items"][0]["paused"]["by"], "carol", "{out}");
    assert_eq!(routes["items"][0]["paused"]["reason"], "release freeze");
    assert_eq!(cli(&["routes", "resume", "deploy"]).0, 0);
    let (_, out, _) = cli(&["routes", "list"]);
    assert!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["items"][0]["paused"].is_null(), "{out}");

    assert_eq!(cli(&["sources", "pause", "github", "--by", "oncall"]).0, 0);
    assert_eq!(app.github("push", "cli-paused", "{}").await.status(), 503);
    let (_, out, _) = cli(&["sources", "list"]);
    assert!(out.contains("\"by\": \"oncall\""), "{out}");
    assert_eq!(cli(&["sources", "resume", "github"]).0, 0);
    assert_eq!(app.github("push", "cli-resumed", "{}").await.status(), 202);

    let (code, out, _) = cli(&["routes", "pause", "nope"]);
    assert_ne!(code, 0, "an unknown route fails the command");
    assert!(out.contains("not_found"), "{out}");
}

store_test! {
    async fn migrate_creates_the_schema_and_is_idempotent(backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        let config = dir.path().join("hookgate.toml");
        std::fs::write(&config, format!("[store]\nurl = \"{url}\"\n")).unwrap();
        for _ in 0..2 {
            let config = config.clone();
            let (code, out, err) =
                tokio::task::spawn_blocking(move || run(&["migrate", "-c", config.to_str().unwrap()], None, &[]))
                    .await
                    .unwrap();
            assert_eq!(code, 0, "{out}{err}");
            assert!(out.contains("current schema"), "{out}");
        }
        let store = hookgate::store::open(&url.parse().unwrap()).await.unwrap();
        assert_eq!(store.job_counts().await.unwrap().queued, 0);
    }
}

#[test]
fn check_and_serve_refuse_a_key_of_another_provider_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://hookgate.db\"\n[[sources]]\nname = \"gh\"\nprovider = \"github\"\nsecrets = [\"s\"]\nsignature_header = \"X-Webhook-Signature\"\n",
    )
    .unwrap();
    for command in ["check", "serve"] {
        let (code, _, err) = run(&[command, "-c", path.to_str().unwrap()], None, &[]);
        assert_eq!(code, 64, "{command}: {err}");
        assert!(err.contains("sources[0].signature_header: not a key of provider \"github\""), "{command}: {err}");
    }
    assert!(!dir.path().join("hookgate.db").exists(), "serve opened the store before refusing the configuration");
}

#[test]
fn sign_offers_every_provider_in_the_table_forgejo_included() {
    let (code, help, _) = run(&["sign", "--help"], None, &[]);
    assert_eq!(code, 0);
    for name in hookgate::verify::provider_names() {
        assert!(help.contains(&format!("- {name}:")), "{name} missing from\n{help}");
    }
    for name in hookgate::verify::provider_names() {
        let secret = if name == "standard" { "whsec_c2VjcmV0" } else { "s3cret" };
        let (code, out, err) = run(&["sign", "--provider", name, "--secret", secret], Some(r#"{"timestamp":1}"#), &[]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(!out.trim().is_empty(), "{name}");
    }
    let (_, out, _) = run(&["sign", "--provider", "forgejo", "--secret", "s3cret"], Some("x"), &[]);
    let expected = hex::encode(hookgate::verify::mac::compute(hookgate::verify::Algorithm::Sha256, b"s3cret", &[b"x"]));
    assert!(out.contains(&format!("X-Gitea-Signature: {expected}")), "{out}");
    // The provider's own checks apply on the command line too, naming the flag.
    let (code, _, err) =
        run(&["sign", "--provider", "hmac", "--secret", "s", "--content", "{timestamp}.{body}"], Some("x"), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--content: uses {timestamp} but no timestamp_header is set"), "{err}");
    let (code, _, err) = run(&["sign", "--provider", "githb", "--secret", "s"], Some("x"), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("forgejo"), "{err}");
}
