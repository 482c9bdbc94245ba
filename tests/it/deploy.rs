//! deploy/: the alert rules name only metrics a running hookgate exports, the manifests and the unit use only
//! variables and paths hookgate reads, and the binary runs unprivileged on a read-only root, keeps its state in
//! /data and stops within its grace period (the parts of deploy/Containerfile CI can prove without images).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::helpers::*;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Metrics the alert rules take from Prometheus itself, not from hookgate.
const EXTERNAL_METRICS: [&str; 1] = ["up"];

/// The metric names in a PromQL expression: identifiers outside label matchers, ranges, `by (…)` lists and
/// strings that are neither functions, aggregations (followed by `(` or `by`) nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut plain = String::new();
    let mut depth_braces = 0;
    let mut in_range = false;
    let mut in_string = false;
    for ch in expr.chars() {
        match ch {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => in_range = true,
            ']' => in_range = false,
            _ if depth_braces > 0 || in_range => {}
            _ => plain.push(ch),
        }
    }
    let mut names = BTreeSet::new();
    let chars: Vec<char> = plain.chars().collect();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            let rest: String = chars[i..].iter().collect();
            let next_word = rest.trim_start().split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or("");
            if matches!(word.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right") {
                skip_group = true;
            } else if skip_group {
                // a label inside `by (…)`
            } else if next == Some('(')
                || matches!(next_word, "by" | "without")
                || matches!(word.as_str(), "and" | "or" | "unless" | "bool" | "offset")
            {
                // a function or aggregation, or a keyword
            } else {
                names.insert(word);
            }
        } else if chars[i].is_ascii_digit() {
            // a number, with its exponent or unit letters
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            if chars[i] == ')' {
                skip_group = false;
            }
            i += 1;
        }
    }
    names
}

fn rule_expressions() -> Vec<String> {
    repo_file("deploy/prometheus/hookgate-rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:").map(|e| e.trim().to_string()))
        .collect()
}

#[test]
fn metric_names_are_read_from_promql_without_functions_labels_or_keywords() {
    let names = metric_names(
        r#"sum by (namespace, source) (rate(hookgate_requests_total{outcome="unauthorized", x="a{b"}[5m])) > 1e3 and on(route) up == 0 or max without (x) (y)"#,
    );
    assert_eq!(names, BTreeSet::from(["hookgate_requests_total", "up", "y"].map(String::from)));
    assert_eq!(rule_expressions().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alert_rules_name_is_exported_by_a_running_hookgate() {
    let mut named: BTreeSet<String> = rule_expressions().iter().flat_map(|e| metric_names(e)).collect();
    for external in EXTERNAL_METRICS {
        assert!(named.remove(external), "{external} is no longer used by the rules: drop it from EXTERNAL_METRICS");
    }
    assert!(named.iter().all(|n| n.starts_with("hookgate_")), "a metric neither hookgate's nor listed: {named:?}");

    // A separate process: the metrics recorder is process-wide, so an in-process app would see other tests'.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[store]
url = "sqlite://{dir}/hookgate.db"
[admin]
token = "{ADMIN_TOKEN}"
[worker]
poll_interval = "50ms"
{GITHUB_SOURCE}
[[routes]]
name = "fails"
source = "github"
action = {{ type = "command", argv = ["/bin/false"] }}
retry = {{ max_attempts = 1 }}

[[routes]]
name = "breaker"
source = "github"
action = {{ type = "http", url = "http://127.0.0.1:1/unreachable", timeout = "1s" }}
retry = {{ max_attempts = 10, initial = "10ms", max = "10ms" }}
circuit_breaker = {{ window = "60s", max_failures = 1, open_for = "1h" }}
"#,
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let server = BinaryServer::start(&config, &[]);
    let client = reqwest::Client::new();

    // A bad signature, and a push whose `fails` job dies and whose `breaker` job opens the circuit and then
    // waits, due, in the queue.
    let body = push_body("refs/heads/main", "acme/fleet");
    let mut bad = github_headers("push", "bad-1", &body);
    bad.retain(|(k, _)| *k != "x-hub-signature-256");
    bad.push(("x-hub-signature-256", github_signature("not the secret", body.as_bytes())));
    let mut request = client.post(format!("{}/hooks/github", server.addr)).body(body.clone());
    for (k, v) in bad {
        request = request.header(k, v);
    }
    assert_eq!(request.send().await.unwrap().status(), 401);
    assert_eq!(send_push(&client, &server.addr, "good-1").await.unwrap().status(), 202);

    let sample = |metrics: &str, name: &str, labels: &str| -> Option<f64> {
        let prefix = format!("{name}{{{labels}}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap())
    };
    let metrics = eventually(Duration::from_secs(20), "dead job, open circuit and a due queued job", || async {
        let text = client.get(format!("{}/metrics", server.addr)).send().await.ok()?.text().await.ok()?;
        let ready = sample(&text, "hookgate_jobs_dead_total", r#"route="fails""#) == Some(1.0)
            && sample(&text, "hookgate_circuit_state", r#"route="breaker""#) == Some(2.0)
            && sample(&text, "hookgate_queue_oldest_seconds", r#"route="breaker""#).is_some_and(|s| s > 0.0);
        ready.then_some(text)
    })
    .await;
    assert_eq!(
        sample(&metrics, "hookgate_requests_total", r#"outcome="unauthorized",source="github""#).or_else(|| sample(
            &metrics,
            "hookgate_requests_total",
            r#"source="github",outcome="unauthorized""#
        )),
        Some(1.0),
        "{metrics}"
    );
    for name in &named {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "the rules name {name}, which /metrics does not export:\n{metrics}"
        );
    }
}

/// Environment variable names set by the manifests, the unit and the Containerfile, by file.
fn deploy_env_names() -> BTreeMap<&'static str, BTreeSet<String>> {
    let is_name =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    let mut found = BTreeMap::new();
    for file in [
        "deploy/kubernetes/base/deployment.yaml",
        "deploy/kubernetes/overlays/sqlite/deployment-patch.yaml",
        "deploy/kubernetes/overlays/postgres/deployment-patch.yaml",
    ] {
        let names = repo_file(file)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: "))
            .filter(|n| is_name(n))
            .map(String::from)
            .collect();
        found.insert(file, names);
    }
    let unit = repo_file("deploy/systemd/hookgate.service");
    let names =
        unit.lines().filter_map(|l| l.strip_prefix("Environment=")).map(|l| l.split('=').next().unwrap().to_string());
    found.insert("deploy/systemd/hookgate.service", names.collect());
    let containerfile = repo_file("deploy/Containerfile");
    let mut names = BTreeSet::new();
    let mut in_env = false;
    for line in containerfile.lines() {
        let rest = match line.strip_prefix("ENV ") {
            Some(rest) => Some(rest),
            None if in_env => Some(line.trim()),
            None => None,
        };
        in_env = rest.is_some_and(|r| r.ends_with('\\'));
        if let Some(rest) = rest {
            names.insert(rest.split('=').next().unwrap().to_string());
        }
    }
    found.insert("deploy/Containerfile", names);
    found
}

#[test]
fn every_variable_and_path_the_manifests_and_unit_use_is_one_hookgate_reads() {
    let source = ["src/config.rs", "src/cli.rs", "src/logging.rs"].map(repo_file).join("\n");
    let shipped_config = repo_file("deploy/kubernetes/base/hookgate.toml");
    let mut all = BTreeSet::new();
    for (file, names) in deploy_env_names() {
        assert!(!names.is_empty(), "{file}: no variables found (the scan is broken)");
        for name in names {
            if name.starts_with("HOOKGATE_") {
                let read = source.contains(&format!("\"{name}\"")) || source.contains(&format!("\"env:{name}\""));
                assert!(read, "{file} sets {name}, which hookgate does not read");
            } else {
                assert!(
                    shipped_config.contains(&format!("env:{name}")),
                    "{file} sets {name}, which hookgate.toml does not use"
                );
            }
            all.insert(name);
        }
    }
    assert!(all.contains("GITHUB_WEBHOOK_SECRET") && all.contains("HOOKGATE_STORE_URL"), "{all:?}");

    // The shipped hookgate.toml with the Deployment's variables: valid, listening where the Service points,
    // its store in /data, and its source enabled by the Secret's variable (and off without it).
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("HOOKGATE_LISTEN".into(), "0.0.0.0:8080".into()),
        ("HOOKGATE_STORE_URL".into(), "sqlite:///data/hookgate.db".into()),
        ("HOOKGATE_ADMIN_TOKEN".into(), "an-admin-token-long-enough".into()),
        ("GITHUB_WEBHOOK_SECRET".into(), "a-webhook-secret".into()),
    ]);
    let config = hookgate::config::parse(&shipped_config, Path::new("/etc/hookgate"), &env).expect("valid");
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert!(matches!(&config.store.url, hookgate::store::StoreUrl::Sqlite(p) if p == Path::new("/data/hookgate.db")));
    assert!(config.sources.iter().all(|s| s.enabled && s.disabled_reason.is_none()));
    assert!(config.worker.shutdown_grace < Duration::from_secs(60 - 15), "terminationGracePeriodSeconds 60");
    env.remove("GITHUB_WEBHOOK_SECRET");
    let without = hookgate::config::parse(&shipped_config, Path::new("/etc/hookgate"), &env).expect("valid");
    assert!(
        without.sources.iter().any(|s| s.name == "github" && !s.enabled),
        "the secret's variable is not the one read"
    );

    // Paths: one config path everywhere; the store inside what each deployment makes writable.
    let deployment = repo_file("deploy/kubernetes/base/deployment.yaml");
    let unit = repo_file("deploy/systemd/hookgate.service");
    let containerfile = repo_file("deploy/Containerfile");
    assert!(
        deployment.contains("value: /etc/hookgate/hookgate.toml") && deployment.contains("mountPath: /etc/hookgate\n")
    );
    assert!(unit.contains("serve --config /etc/hookgate/hookgate.toml"));
    assert!(containerfile.contains("HOOKGATE_CONFIG=/etc/hookgate/hookgate.toml"));
    assert!(deployment.contains("mountPath: /data\n"));
    assert!(repo_file("deploy/kubernetes/overlays/sqlite/deployment-patch.yaml")
        .contains("value: sqlite:///data/hookgate.db"));
    assert!(
        containerfile.contains("HOOKGATE_STORE_URL=sqlite:///data/hookgate.db")
            && containerfile.contains("VOLUME [\"/data\"]")
    );
    assert!(
        unit.contains("StateDirectory=hookgate\n")
            && unit.contains("HOOKGATE_STORE_URL=sqlite:///var/lib/hookgate/hookgate.db")
    );
    // TimeoutStopSec covers shutdown_grace (default 30s) plus the 15s the worker gives stopped jobs.
    assert!(unit.contains("TimeoutStopSec=60s") && hookgate::config::REFERENCE.contains("shutdown_grace = \"30s\""));
}

fn bwrap() -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("bwrap")).find(|p| p.is_file())
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The process the sandbox runs (bwrap neither forwards signals nor execs: hookgate is its only child).
fn sandboxed_pid(bwrap_pid: u32) -> i32 {
    let children = std::fs::read_to_string(format!("/proc/{bwrap_pid}/task/{bwrap_pid}/children")).unwrap();
    let pids: Vec<i32> = children.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 1, "{children}");
    pids[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_nobody_on_a_read_only_root_it_serves_keeps_state_only_in_data_and_stops_within_its_grace() {
    let Some(bwrap) = bwrap() else {
        eprintln!("skipped: bwrap not found (Debian bubblewrap)");
        return;
    };
    // Not under /tmp, which the sandbox gets from a directory of its own.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(work.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let [config_dir, data, tmp, home] = ["config", "data", "tmp", "home"].map(|d| work.path().join(d));
    for d in [&config_dir, &data, &tmp, &home] {
        std::fs::create_dir(d).unwrap();
        // The sandbox's user is the host's nobody: what it may write must be writable by it.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    let config = config_dir.join("hookgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[store]
url = "sqlite:///data/hookgate.db"
[admin]
token = "{ADMIN_TOKEN}"
[worker]
poll_interval = "50ms"
shutdown_grace = "2s"
{GITHUB_SOURCE}
[[routes]]
name = "quick"
source = "github"
filter = 'event == "push"'
action = {{ type = "command", argv = ["/bin/true"] }}

[[routes]]
name = "slow"
source = "github"
filter = 'event == "release"'
action = {{ type = "command", argv = ["/bin/sleep", "60"], timeout = "120s" }}
"#
        ),
    )
    .unwrap();
    let (bin, config_dir_s) = (hookgate_bin().to_string(), config_dir.display().to_string());
    let (data_s, tmp_s, home_s) = (data.display().to_string(), tmp.display().to_string(), home.display().to_string());
    // The host's nobody (setpriv), in a root of its own (an unprivileged user namespace), read-only: /usr
    // (and the links into it) and /etc from the host, the binary at /opt/hookgate and its config at /config
    // read-only (their host paths may lie under /tmp, which the sandbox gets from a directory of its own),
    // /data, and /tmp and $HOME only to prove they stay empty.
    #[rustfmt::skip]
    let wrapper = [
        "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
        bwrap.to_str().unwrap(), "--unshare-user", "--uid", "65534", "--gid", "65534", "--die-with-parent",
        "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev",
        "--ro-bind", &bin, "/opt/hookgate/hookgate", "--ro-bind", &config_dir_s, "/config",
        "--bind", &data_s, "/data", "--bind", &tmp_s, "/tmp", "--bind", &home_s, "/home/hookgate",
        "--remount-ro", "/",
    ];
    let envs = [("HOME", "/home/hookgate"), ("TMPDIR", "/tmp")];
    let server = BinaryServer::start_as(&wrapper, "/opt/hookgate/hookgate", Path::new("/config/hookgate.toml"), &envs);
    let hookgate_pid = sandboxed_pid(server.child.id());
    let status = std::fs::read_to_string(format!("/proc/{hookgate_pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(uid, "65534", "hookgate runs as nobody on the host");
    assert!(std::fs::read_to_string(format!("/proc/{hookgate_pid}/cmdline")).unwrap().contains("serve"));

    // A webhook end to end: accepted, committed, its command run.
    let client = reqwest::Client::new();
    let response = send_push(&client, &server.addr, "sandboxed-1").await.unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(20), "the push's job to succeed", || async {
        let delivery = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
        (delivery["jobs"][0]["status"] == "succeeded").then_some(())
    })
    .await;

    // A job that outlives the grace period, then SIGTERM.
    let body = push_body("refs/heads/main", "acme/fleet");
    let mut request = client.post(format!("{}/hooks/github", server.addr)).body(body.clone());
    for (k, v) in github_headers("release", "sandboxed-2", &body) {
        request = request.header(k, v);
    }
    let slow =
        request.send().await.unwrap().json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(20), "the slow job to run", || async {
        let delivery = admin_json(&server.addr, &format!("/api/v1/deliveries/{slow}")).await;
        (delivery["jobs"][0]["status"] == "running").then_some(())
    })
    .await;
    let asked = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(hookgate_pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let status = server.child.wait().unwrap();
        (status, server)
    });
    let (exit, server) = tokio::time::timeout(Duration::from_secs(2 + 8), exit)
        .await
        .expect("hookgate exits within shutdown_grace (2s) and a margin")
        .unwrap();
    let took = asked.elapsed();
    eprintln!("SIGTERM to exit with a 60s job running and shutdown_grace 2s: {took:?}");
    assert!(exit.success(), "{exit:?}: {}", server.log_text());
    assert!(took >= Duration::from_millis(1900), "it did not wait for the running job: {took:?}");
    assert!(took < Duration::from_secs(2 + 5), "{took:?}");

    // All its state is in /data: the store, which holds both deliveries, the first job done and the second
    // given back to the queue (no attempt used, no lease held); /tmp and $HOME were not touched.
    let mut files = files_in(&data);
    files.retain(|f| f != "hookgate.db-shm" && f != "hookgate.db-wal");
    assert_eq!(files, ["hookgate.db"]);
    assert_eq!(files_in(&tmp), Vec::<String>::new());
    assert_eq!(files_in(&home), Vec::<String>::new());
    let db = rusqlite::Connection::open(data.join("hookgate.db")).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM deliveries"), 2);
    assert_eq!(count("SELECT count(*) FROM jobs WHERE route = 'quick' AND status = 'succeeded'"), 1);
    assert_eq!(
        count("SELECT count(*) FROM jobs WHERE route = 'slow' AND status = 'queued' AND lease_owner IS NULL"),
        1
    );
    assert_eq!(count("SELECT count(*) FROM attempts"), 1, "only the quick job's attempt is recorded");
}
