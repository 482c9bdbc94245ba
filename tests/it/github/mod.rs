//! GitHub delivery recovery end to end, against a GitHub API stand-in on loopback (`standin`): failed
//! deliveries are redelivered once each and their actions run once; an exhausted rate limit is waited out;
//! of two instances on one store one recovers; GitHub's refusals reach the CLI as clear errors. Both stores.

mod standin;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::helpers::{eventually, hookgate_bin, ADMIN_TOKEN, GITHUB_SECRET};
use standin::StandIn;

const HOOK: &str = "repos/octo/hello-world/hooks/42";

/// A hookgate instance whose GitHub source recovers from the stand-in.
struct Gateway {
    addr: String,
    store: hookgate::store::DynStore,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Start an instance on `store_url` with source `source` recovering `HOOK` from `standin` with `token`. When
/// `target` is set, the stand-in delivers to this instance from now on (set before it serves, so its first
/// round, at start, already finds it up).
async fn gateway(store_url: &str, standin: &StandIn, source: &str, token: &str, every: &str, target: bool) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    gateway_with(store_url, standin, source, "token = \"file:token\"", every, target, dir).await
}

/// [`gateway`] with `credentials` as the recovery section's credential keys, in `dir`.
async fn gateway_with(
    store_url: &str,
    standin: &StandIn,
    source: &str,
    credentials: &str,
    every: &str,
    target: bool,
    dir: tempfile::TempDir,
) -> Gateway {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
url = "{store_url}"
[admin]
token = "{ADMIN_TOKEN}"
[worker]
poll_interval = "100ms"
shutdown_grace = "5s"

[[sources]]
name = "{source}"
provider = "github"
secrets = ["{GITHUB_SECRET}"]
recovery = {{ hook = "{hook}", {credentials}, every = "{every}", api_url = "{api}" }}

[[routes]]
name = "record-{source}"
source = "{source}"
action = {{ type = "command", argv = ["touch", "{dir}/ran-{{{{ delivery }}}}"] }}
"#,
        api = standin.url,
        hook = standin.hook,
        dir = dir.path().display(),
    );
    let config = hookgate::config::parse(&text, dir.path(), &BTreeMap::<String, String>::new()).expect("valid config");
    let app = hookgate::startup::Application::build(config).await.expect("app builds");
    let addr = format!("http://127.0.0.1:{}", app.port());
    if target {
        standin.set_target(Some(format!("{addr}/hooks/{source}")));
    }
    let store = app.state().store.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Gateway { addr, store, shutdown, _dir: dir }
}

impl Gateway {
    fn ran(&self) -> HashSet<String> {
        std::fs::read_dir(self._dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("ran-").map(String::from))
            .collect()
    }

    async fn stored(&self, source: &str, guids: &[String]) -> HashSet<String> {
        self.store.stored_deliveries(source, guids).await.unwrap()
    }
}

/// Run `hookgate ARGS --url URL --token ADMIN_TOKEN`; its exit status and stdout + stderr.
async fn cli(addr: &str, args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(hookgate_bin());
    command.args(args).args(["--url", addr, "--token", ADMIN_TOKEN]);
    let output = command.output().await.expect("the CLI runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn push(n: usize) -> String {
    serde_json::json!({ "ref": "refs/heads/main", "after": format!("{n:040}"), "repository": { "full_name": "octo/hello-world" } })
        .to_string()
}

/// Wait until the stand-in has answered `more` more listings than now: that many more rounds ran.
async fn rounds(standin: &StandIn, more: usize) {
    let listed = || standin.calls().iter().filter(|c| c.kind == "list").count();
    let target = listed() + more;
    eventually(Duration::from_secs(20), "more recovery rounds", || async { (listed() >= target).then_some(()) }).await;
}

store_test! {
    async fn failed_deliveries_are_redelivered_once_each_and_their_actions_run_once(backend) {
        let source = format!("gh-e2e-{}", backend.name());
        // Pages of two: a round follows the Link cursor across pages.
        let standin = StandIn::start(HOOK, &["ghp_e2e"], 2).await;
        // hookgate is down: GitHub cannot connect (status 0) for three pushes; a fourth met a 503.
        let mut lost = Vec::new();
        for n in 0..3 {
            lost.push(standin.deliver("push", &push(n)).await);
        }
        lost.push(standin.record(&hookgate::store::new_id(), "push", &push(3), 503));
        // One GitHub will not redeliver (422): asked once, reported, never asked again.
        let refused = standin.deliver("push", &push(4)).await;
        standin.refuse_redelivery_of(refused.id);
        assert!(standin.attempts().iter().all(|a| a.status_code == 0 || a.status_code == 503));

        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        let app = gateway(&url, &standin, &source, "ghp_e2e", "1s", true).await;
        let guids: Vec<String> = lost.iter().map(|a| a.guid.clone()).collect();
        eventually(Duration::from_secs(30), "every lost delivery stored and its action run", || async {
            let stored = app.stored(&source, &guids).await;
            (stored.len() == guids.len() && app.ran().len() == guids.len()).then_some(())
        })
        .await;
        // More rounds pass: nothing is asked again.
        rounds(&standin, 3).await;
        let mut asked = standin.redeliveries();
        asked.sort();
        assert_eq!(asked, lost.iter().map(|a| a.id).collect::<Vec<_>>(), "each redelivered once");
        let refusals = standin.calls().iter().filter(|c| c.redeliver == Some(refused.id)).count();
        assert_eq!(refusals, 1, "a refused redelivery is asked for once");
        assert_eq!(app.ran(), guids.iter().cloned().collect::<HashSet<_>>(), "one action per delivery");
        // Redeliveries reached hookgate with the original GUID, signed: GitHub now lists them as delivered.
        let delivered: HashSet<String> =
            standin.attempts().iter().filter(|a| a.redelivery && a.status_code == 202).map(|a| a.guid.clone()).collect();
        assert_eq!(delivered, guids.iter().cloned().collect::<HashSet<_>>());

        let jobs = reqwest::Client::new()
            .get(format!("{}/api/v1/jobs?route=record-{source}", app.addr))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        assert_eq!(jobs["items"].as_array().unwrap().len(), guids.len(), "{jobs}");

        let metrics = reqwest::get(format!("{}/metrics", app.addr)).await.unwrap().text().await.unwrap();
        for line in [
            format!("hookgate_github_redeliveries_total{{source=\"{source}\",outcome=\"requested\"}} 4"),
            format!("hookgate_github_redeliveries_total{{source=\"{source}\",outcome=\"refused\"}} 1"),
        ] {
            assert!(metrics.contains(&line), "{line} not in\n{metrics}");
        }

        // What GitHub saw beside what hookgate stored.
        let (ok, out) = cli(&app.addr, &["github", "deliveries", "--source", &source, "--failed"]).await;
        assert!(ok, "{out}");
        let seen: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let items = seen["items"].as_array().unwrap();
        assert_eq!(items.len(), 5, "the five failed first attempts: {seen}");
        for item in items {
            let expected = if item["guid"] == refused.guid.as_str() { "asked" } else { "stored" };
            assert_eq!(item["hookgate"], expected, "{item}");
        }
        assert_eq!(seen["missing"], 0);
        assert!(!out.contains("ghp_e2e"), "the token is never shown");
    }
}

store_test! {
    async fn an_exhausted_rate_limit_is_waited_out_until_its_reset(backend) {
        let source = format!("gh-limit-{}", backend.name());
        let standin = StandIn::start(HOOK, &["ghp_limit"], 100).await;
        let lost = [standin.deliver("push", &push(0)).await, standin.deliver("push", &push(1)).await];
        let reset = SystemTime::now() + Duration::from_secs(3);
        standin.exhaust_until(reset);
        let reset_secs = reset.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();

        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        let app = gateway(&url, &standin, &source, "ghp_limit", "1h", true).await;
        let guids: Vec<String> = lost.iter().map(|a| a.guid.clone()).collect();
        eventually(Duration::from_secs(30), "the lost deliveries stored after the reset", || async {
            (app.stored(&source, &guids).await.len() == 2).then_some(())
        })
        .await;
        let calls = standin.calls();
        let secs = |c: &standin::Call| c.at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let before_reset = calls.iter().filter(|c| secs(c) < reset_secs).count();
        assert_eq!(before_reset, 1, "one refused listing, then silence until the reset: {calls:?}");
        assert!(calls.iter().filter(|c| c.redeliver.is_some()).all(|c| secs(c) >= reset_secs), "{calls:?}");
        assert_eq!(standin.redeliveries().len(), 2);
    }
}

store_test! {
    async fn of_two_instances_on_one_store_only_one_recovers(backend) {
        let source = format!("gh-lease-{}", backend.name());
        let standin = StandIn::start(HOOK, &["ghp_first", "ghp_second"], 100).await;
        let mut lost = Vec::new();
        for n in 0..3 {
            lost.push(standin.deliver("push", &push(n)).await);
        }
        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        // Each instance has its own token, so the stand-in tells them apart.
        let first = gateway(&url, &standin, &source, "ghp_first", "1s", true).await;
        let second = gateway(&url, &standin, &source, "ghp_second", "1s", false).await;
        let guids: Vec<String> = lost.iter().map(|a| a.guid.clone()).collect();
        eventually(Duration::from_secs(30), "the lost deliveries stored", || async {
            (first.stored(&source, &guids).await.len() == 3).then_some(())
        })
        .await;
        rounds(&standin, 4).await;
        let tokens: HashSet<String> = standin.calls().iter().map(|c| c.token.clone()).collect();
        assert_eq!(tokens.len(), 1, "one instance talks to GitHub: {tokens:?}");
        let mut asked = standin.redeliveries();
        asked.sort();
        assert_eq!(asked, lost.iter().map(|a| a.id).collect::<Vec<_>>(), "each redelivered once");

        // The other instance says who recovers instead of doing it too.
        let (holder, other) = if tokens.contains("ghp_first") { (&first, &second) } else { (&second, &first) };
        let (ok, out) = cli(&other.addr, &["github", "recover", "--source", &source]).await;
        assert!(!ok && out.contains("409") && out.contains("another instance holds the recovery lease"), "{out}");
        let (ok, out) = cli(&holder.addr, &["github", "recover", "--source", &source, "--since", "1h"]).await;
        assert!(ok, "{out}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!((report["report"]["listed"].as_u64(), report["report"]["failed"].as_u64()), (Some(6), Some(0)));
    }
}

store_test! {
    async fn githubs_refusals_are_clear_errors_in_the_cli(backend) {
        let source = format!("gh-refused-{}", backend.name());
        let standin = StandIn::start(HOOK, &["ghp_refused"], 100).await;
        standin.deliver("push", &push(0)).await;
        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        let app = gateway(&url, &standin, &source, "ghp_refused", "1h", false).await;
        for (status, words) in [
            (401, "bad credentials"),
            (403, "the token needs the \\\"Webhooks\\\" permission"),
            (404, "repos/octo/hello-world/hooks/42: the hook does not exist, or the token cannot see it"),
        ] {
            standin.force(Some(status));
            for args in [vec!["github", "recover", "--source", &source], vec!["github", "deliveries", "--source", &source]] {
                let (ok, out) = cli(&app.addr, &args).await;
                assert!(!ok, "{out}");
                assert!(out.contains(&format!("GitHub answered {status}")) && out.contains(words), "{status}: {out}");
                assert!(out.contains("502 Bad Gateway") && !out.contains("ghp_refused"), "{out}");
            }
        }
        standin.force(None);
        let (ok, out) = cli(&app.addr, &["github", "recover", "--source", "nope"]).await;
        assert!(!ok && out.contains("404"), "{out}");
        let (ok, out) = cli(&app.addr, &["github", "recover", "--source", &source]).await;
        assert!(ok, "{out}");
    }
}

store_test! {
    async fn the_log_names_each_redelivery_and_githubs_refusal_but_never_the_token_or_payload(backend) {
        let standin = StandIn::start(HOOK, &["ghp_logtoken"], 100).await;
        standin.force(Some(401));
        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        std::fs::write(dir.path().join("token"), "ghp_logtoken").unwrap();
        let config = dir.path().join("hookgate.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[store]
url = "{url}"
[admin]
token = "env:HOOKGATE_ADMIN_TOKEN"

[[sources]]
name = "github"
provider = "github"
secrets = ["env:GITHUB_WEBHOOK_SECRET"]
recovery = {{ hook = "{HOOK}", token = "file:token", every = "1h", api_url = "{api}" }}

[[routes]]
name = "noop"
source = "github"
action = {{ type = "command", argv = ["true"] }}
"#,
                api = standin.url
            ),
        )
        .unwrap();
        let server = crate::helpers::BinaryServer::start(
            &config,
            &[("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN), ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)],
        );
        // The round at start meets a revoked token.
        eventually(Duration::from_secs(20), "the refusal in the log", || async {
            server.log_text().contains("GitHub recovery round failed").then_some(())
        })
        .await;
        let log = server.log_text();
        assert!(log.contains("source=github") && log.contains("GitHub answered 401: bad credentials"), "{log}");

        standin.force(None);
        standin.set_target(Some(format!("{}/hooks/github", server.addr)));
        let body = push(7).replace("octo/hello-world", "payload-marker-7f3a");
        let lost = standin.record(&hookgate::store::new_id(), "push", &body, 503);
        let (ok, out) = cli(&server.addr, &["github", "recover", "--source", "github"]).await;
        assert!(ok, "{out}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let log = server.log_text();
            if log.contains("asked GitHub to redeliver") && log.contains("webhook source=\"github\" outcome=\"accepted\"") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no redelivery stored:\n{log}\n{:?}", standin.calls());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = server.log_text();
        let line = log.lines().find(|l| l.contains("asked GitHub to redeliver")).unwrap();
        for part in [format!("guid={}", lost.guid), "event=push".into(), format!("github_delivery={}", lost.id), "outcome=requested".into()] {
            assert!(line.contains(&part), "{part} not in {line}");
        }
        for secret in ["ghp_logtoken", "payload-marker-7f3a", GITHUB_SECRET] {
            assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        }
    }
}

/// A fresh App key from `openssl genrsa` (PKCS#1 PEM, as GitHub hands out) in `dir`, and its public key as
/// PKCS#1 DER for the stand-in.
fn app_key(dir: &std::path::Path) -> Vec<u8> {
    let key = dir.join("app.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let public = std::process::Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success());
    public.stdout
}

store_test! {
    async fn a_github_app_recovers_with_one_cached_installation_token_and_its_own_hook_with_its_jwt(backend) {
        let store_dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(store_dir.path()).await;
        let credentials = "app_id = 4242, private_key = \"file:app.pem\"";

        // A repository hook: the installation is found from the repository, its token fetched once and reused.
        let dir = tempfile::tempdir().unwrap();
        let public_key = app_key(dir.path());
        let app = standin::AppSide { id: 4242, public_key, installation: 77 };
        let standin = StandIn::start_app(HOOK, app.clone()).await;
        let lost = [standin.deliver("push", &push(0)).await, standin.deliver("push", &push(1)).await];
        let source = format!("gh-app-{}", backend.name());
        let gw = gateway_with(&url, &standin, &source, credentials, "1s", true, dir).await;
        let guids: Vec<String> = lost.iter().map(|a| a.guid.clone()).collect();
        eventually(Duration::from_secs(30), "the lost deliveries stored", || async {
            (gw.stored(&source, &guids).await.len() == 2).then_some(())
        })
        .await;
        rounds(&standin, 3).await;
        let calls = standin.calls();
        let count = |kind: &str| calls.iter().filter(|c| c.kind == kind).count();
        assert_eq!((count("installation"), count("token")), (1, 1), "found once, exchanged once: {calls:?}");
        assert!(
            calls.iter().filter(|c| c.kind == "list" || c.kind == "redeliver").all(|c| c.token == "ghs_installation1" && c.status < 300),
            "{calls:?}"
        );
        assert_eq!(standin.redeliveries().len(), 2);

        // The App's own hook: called with the JWT itself.
        let dir = tempfile::tempdir().unwrap();
        let public_key = app_key(dir.path());
        let standin = StandIn::start_app("app/hook", standin::AppSide { public_key, ..app }).await;
        let lost = standin.deliver("pull_request", &push(2)).await;
        let source = format!("gh-app-hook-{}", backend.name());
        let gw = gateway_with(&url, &standin, &source, credentials, "1s", true, dir).await;
        eventually(Duration::from_secs(30), "the lost delivery stored", || async {
            (gw.stored(&source, std::slice::from_ref(&lost.guid)).await.len() == 1).then_some(())
        })
        .await;
        let calls = standin.calls();
        assert!(calls.iter().all(|c| c.token.split('.').count() == 3 && c.status < 300), "JWTs only: {calls:?}");
        assert!(calls.iter().all(|c| c.kind == "list" || c.kind == "redeliver"), "{calls:?}");
        let (ok, out) = cli(&gw.addr, &["github", "deliveries", "--source", &source]).await;
        assert!(ok && !out.contains(&calls[0].token) && !out.contains("PRIVATE KEY"), "{out}");
    }
}

/// `git fetch` of a private repository with the App's installation token: hookgate as git's credential helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_git_credential_helper_answers_with_an_installation_token_for_the_apps_host_only() {
    let dir = tempfile::tempdir().unwrap();
    let public_key = app_key(dir.path());
    let standin = StandIn::start_app(HOOK, standin::AppSide { id: 4242, public_key, installation: 77 }).await;
    let config = dir.path().join("hookgate.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"env:GITHUB_WEBHOOK_SECRET\"]\n\
             recovery = {{ hook = \"{HOOK}\", app_id = 4242, private_key = \"file:app.pem\", api_url = \"{}\" }}\n",
            standin.url
        ),
    )
    .unwrap();
    let host = standin.url.trim_start_matches("http://").to_string();
    let ask = |request: String| {
        let config = config.clone();
        async move {
            let mut child = tokio::process::Command::new(hookgate_bin())
                .args(["github", "credential", "--source", "github", "--config"])
                .arg(&config)
                .arg("get")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use tokio::io::AsyncWriteExt;
            child.stdin.take().unwrap().write_all(request.as_bytes()).await.unwrap();
            let output = child.wait_with_output().await.unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            assert!(output.stderr.is_empty() || !String::from_utf8_lossy(&output.stderr).contains("ghs_"));
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let answer = ask(format!("protocol=http\nhost={host}\npath=octo/hello-world.git\n\n")).await;
    assert_eq!(answer, "username=x-access-token\npassword=ghs_installation1\n");
    assert_eq!(ask("protocol=https\nhost=evil.example\n\n".into()).await, "", "another host gets nothing");
    let kinds: Vec<&str> = standin.calls().iter().map(|c| c.kind).collect();
    assert_eq!(kinds, ["installation", "token"]);
}

/// A loopback peer that answers 200 and keeps each request's `Authorization` header.
async fn authorization_recorder() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let kept = kept.clone();
        async move {
            let value = headers.get("authorization").map(|v| v.to_str().unwrap_or("").to_string());
            kept.lock().unwrap().push(value.unwrap_or_default());
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

store_test! {
    async fn a_routes_actions_get_the_apps_installation_token_as_a_bearer_and_for_git(backend) {
        let keys = tempfile::tempdir().unwrap();
        let public_key = app_key(keys.path());
        let standin = StandIn::start_app(HOOK, standin::AppSide { id: 4242, public_key, installation: 77 }).await;
        let (peer, seen) = authorization_recorder().await;
        let host = standin.url.trim_start_matches("http://").to_string();
        let body = format!(
            r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["{GITHUB_SECRET}"]
recovery = {{ hook = "{HOOK}", app_id = 4242, private_key = "file:{key}", api_url = "{api}", every = "1h" }}

[[routes]]
name = "git-with-the-apps-token"
source = "github"
github_token = "github"
action = {{ type = "command", argv = ["sh", "-c", "printf 'protocol=http\nhost={host}\n\n' | GIT_TERMINAL_PROMPT=0 git credential fill > {{dir}}/git && printf %s \"$GITHUB_TOKEN\" > {{dir}}/token"] }}

[[routes]]
name = "api-with-the-apps-token"
source = "github"
github_token = "github"
action = {{ type = "http", url = "{peer}" }}
"#,
            key = keys.path().join("app.pem").display(),
            api = standin.url,
        );
        let app = crate::helpers::spawn_app(&backend, &body).await;
        let push = crate::helpers::push_body("refs/heads/main", "octo/hello-world");
        let answer = app.github("push", "lend-1", &push).await;
        assert_eq!(answer.status(), 202);
        let id = answer.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let jobs = crate::helpers::terminal_jobs(&app, &id).await;
        assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");

        assert_eq!(std::fs::read_to_string(app.path("token")).unwrap(), "ghs_installation1");
        let git = std::fs::read_to_string(app.path("git")).unwrap();
        assert!(git.contains("username=x-access-token\npassword=ghs_installation1\n"), "git asks hookgate's helper: {git}");
        assert_eq!(*seen.lock().unwrap(), ["Bearer ghs_installation1"]);
        let kinds: Vec<&str> = standin.calls().iter().map(|c| c.kind).filter(|k| *k == "token").collect();
        assert_eq!(kinds.len(), 1, "one installation token, cached for both actions and the recovery round");
        // The token is lent, never shown: not in the delivery's jobs and attempts.
        let detail = app.admin_get(&format!("/api/v1/deliveries/{id}")).await.to_string();
        assert!(!detail.contains("ghs_installation1"), "{detail}");
    }
}
