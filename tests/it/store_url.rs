//! The store URL: only `sqlite://` and `postgres://` are stores; anything else stops `check` and `serve` with
//! exit 64 naming `store.url`, before a file is created; a store that cannot be opened says why.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

/// Run the binary in `dir` (so a relative file it might create lands there); returns (exit code, stderr).
fn run_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(hookgate_bin());
    cmd.args(args).current_dir(dir).env_remove("HOOKGATE_CONFIG").env_remove("HOOKGATE_STORE_URL");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

const BODY: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\ntoken = \"test-admin-token-long-enough\"\n";

#[test]
fn an_unknown_store_scheme_or_a_bare_path_is_a_config_error_for_check_and_serve() {
    for url in ["mysql://app:hunter2@127.0.0.1/h", "hookgate.db"] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hookgate.toml");
        std::fs::write(&config, format!("[store]\nurl = \"{url}\"\n{BODY}")).unwrap();
        for command in ["check", "serve"] {
            let (code, err) = run_in(dir.path(), &[command, "-c", config.to_str().unwrap()], &[]);
            assert_eq!(code, Some(64), "{command} {url}: {err}");
            assert!(err.contains("store.url: "), "{command} {url}: {err}");
            assert!(!err.contains("hunter2"), "the password never appears: {err}");
        }
        // The environment's URL is refused the same way, over a good one in the file.
        std::fs::write(&config, format!("[store]\nurl = \"sqlite://ok.db\"\n{BODY}")).unwrap();
        let (code, err) =
            run_in(dir.path(), &["serve", "-c", config.to_str().unwrap()], &[("HOOKGATE_STORE_URL", url)]);
        assert_eq!(code, Some(64), "HOOKGATE_STORE_URL={url}: {err}");
        assert!(err.contains("store.url: "), "{err}");
        assert_eq!(entries(dir.path()), ["hookgate.toml"], "no store was opened for {url}");
    }
}

#[test]
fn serve_on_an_unreachable_postgres_server_exits_naming_the_refused_connection() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("hookgate.toml");
    let url = format!("postgres://hookgate@127.0.0.1:{port}/hookgate?sslmode=disable");
    std::fs::write(&config, format!("[store]\nurl = \"{url}\"\n{BODY}")).unwrap();
    let (code, err) = run_in(dir.path(), &["serve", "-c", config.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("store unavailable") && err.to_lowercase().contains("connection refused"), "{err}");
}
