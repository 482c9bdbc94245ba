//! github::settings: a GitHub source's `recovery` section — which webhook, which credentials, how often and
//! how far back — parsed once at load into typed values, with errors that name the key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::api::GithubError;
use super::app::App;
use crate::config::value::{invalid, opt_duration, resolve_secret, ConfigError, Env};
use crate::verify::Secret;

pub const DEFAULT_API_URL: &str = "https://api.github.com";
pub const DEFAULT_EVERY: Duration = Duration::from_secs(300);
/// GitHub keeps a hook's deliveries for three days: further back there is nothing to list or redeliver.
pub const MAX_LOOKBACK: Duration = Duration::from_secs(3 * 86_400);
pub const DEFAULT_LOOKBACK: Duration = MAX_LOOKBACK;

/// The section as written (`[sources.recovery]` or `recovery = { … }`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecovery {
    pub hook: Option<String>,
    pub token: Option<String>,
    pub every: Option<String>,
    pub lookback: Option<String>,
    pub api_url: Option<String>,
    /// A GitHub App instead of a token: its id, its private key (`env:`/`file:`), and optionally the
    /// installation (else found from the hook's repository or organization).
    pub app_id: Option<u64>,
    pub private_key: Option<String>,
    pub installation_id: Option<u64>,
}

/// The webhook whose deliveries are recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// `repos/{owner}/{repo}/hooks/{id}`
    Repository { owner: String, repo: String, id: u64 },
    /// `orgs/{org}/hooks/{id}`
    Organization { org: String, id: u64 },
    /// `app/hook`: the GitHub App's own webhook (needs App credentials).
    App,
}

impl Hook {
    pub fn parse(text: &str) -> Option<Hook> {
        let name_ok = |s: &str| {
            // Dots alone would climb the URL's path ("..").
            !s.is_empty()
                && s.len() <= 100
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && s.chars().any(|c| c != '.')
        };
        let parts: Vec<&str> = text.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["repos", owner, repo, "hooks", id] if name_ok(owner) && name_ok(repo) => {
                Some(Hook::Repository { owner: owner.to_string(), repo: repo.to_string(), id: id.parse().ok()? })
            }
            ["orgs", org, "hooks", id] if name_ok(org) => {
                Some(Hook::Organization { org: org.to_string(), id: id.parse().ok()? })
            }
            ["app", "hook"] => Some(Hook::App),
            _ => None,
        }
    }

    /// The hook's path under the API base, without a leading slash (as written in the configuration).
    pub fn path(&self) -> String {
        match self {
            Hook::Repository { owner, repo, id } => format!("repos/{owner}/{repo}/hooks/{id}"),
            Hook::Organization { org, id } => format!("orgs/{org}/hooks/{id}"),
            Hook::App => "app/hook".into(),
        }
    }
}

/// Where a token comes from: `env:` is read at load, `file:` at each use (so a rotated token is picked up).
#[derive(Debug, Clone)]
pub enum TokenSource {
    Loaded(Secret),
    File(PathBuf),
}

impl TokenSource {
    /// The token for one request. The error names the file, never the value.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            TokenSource::Loaded(secret) => Ok(secret.clone()),
            TokenSource::File(path) => {
                let text = std::fs::read(path)
                    .map_err(|e| format!("cannot read the token file {}: {}", path.display(), e.kind()))?;
                let token = text.trim_ascii();
                if token.is_empty() {
                    return Err(format!("the token file {} is empty", path.display()));
                }
                Ok(Secret::new(token.to_vec()))
            }
        }
    }
}

/// How hookgate authenticates to GitHub's API; every use goes through [`Credentials::bearer`].
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A fine-grained or classic personal access token.
    Token(TokenSource),
    /// A GitHub App: a JWT for the App's own hook, installation tokens for the others (cached in it).
    App(Arc<App>),
}

impl Credentials {
    /// The value of `Authorization: Bearer …` for the next request about `hook`.
    pub async fn bearer(&self, http: &reqwest::Client, api_url: &str, hook: &Hook) -> Result<Secret, GithubError> {
        match self {
            Credentials::Token(source) => source.read().map_err(GithubError::Credentials),
            Credentials::App(app) => app.bearer(http, api_url, hook).await,
        }
    }

    /// A token for git and the API about repositories: the token itself, or the App's installation token
    /// (never the App's JWT, which only GitHub's App endpoints take).
    pub async fn repository_token(
        &self,
        http: &reqwest::Client,
        api_url: &str,
        hook: &Hook,
    ) -> Result<Secret, GithubError> {
        match self {
            Credentials::Token(source) => source.read().map_err(GithubError::Credentials),
            Credentials::App(app) => app.installation_token(http, api_url, hook).await,
        }
    }
}

/// A source's recovery, validated.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub hook: Hook,
    pub credentials: Credentials,
    /// Time between two rounds.
    pub every: Duration,
    /// How far back a round looks at GitHub's deliveries (at most three days).
    pub lookback: Duration,
    /// The API's base URL, without a trailing slash (GitHub Enterprise Server: `https://HOST/api/v3`).
    pub api_url: String,
}

/// An `env:` (read now) or `file:` (read now, to refuse a missing file, and at each use) secret at `key`.
fn secret_source(key: &str, reference: &str, base: &Path, env: &dyn Env) -> Result<TokenSource, ConfigError> {
    if !(reference.starts_with("env:") || reference.starts_with("file:")) {
        return Err(invalid(key, "must be `env:NAME` or `file:PATH` (a secret is never written in the file)"));
    }
    let secret = resolve_secret(key, reference, base, env)?
        .ok_or_else(|| invalid(key, "resolves to nothing (is the variable or file set?)"))?;
    Ok(match reference.strip_prefix("file:") {
        Some(path) => TokenSource::File(base.join(path)),
        None => TokenSource::Loaded(secret),
    })
}

/// Parse the section at `key` (`sources[i].recovery`).
pub fn validate(key: &str, value: toml::Value, base: &Path, env: &dyn Env) -> Result<Recovery, ConfigError> {
    let k = |name: &str| format!("{key}.{name}");
    let raw: RawRecovery = value.try_into().map_err(|e: toml::de::Error| invalid(key, e.message().trim()))?;
    let hook_text = raw.hook.ok_or_else(|| invalid(k("hook"), "missing (e.g. \"repos/OWNER/REPO/hooks/ID\")"))?;
    let hook = Hook::parse(&hook_text).ok_or_else(|| {
        invalid(
            k("hook"),
            format!("`{hook_text}` is not \"repos/OWNER/REPO/hooks/ID\", \"orgs/ORG/hooks/ID\" or \"app/hook\""),
        )
    })?;
    let credentials = match (raw.token, raw.app_id, raw.private_key) {
        (Some(token), None, None) => {
            if raw.installation_id.is_some() {
                return Err(invalid(k("installation_id"), "belongs to App credentials (app_id, private_key)"));
            }
            if hook == Hook::App {
                return Err(invalid(k("hook"), "the App's own hook needs App credentials (app_id, private_key)"));
            }
            Credentials::Token(secret_source(&k("token"), &token, base, env)?)
        }
        (None, Some(app_id), Some(key)) => {
            let key = secret_source(&k("private_key"), &key, base, env)?;
            App::check_key(&key).map_err(|e| invalid(k("private_key"), e))?;
            Credentials::App(Arc::new(App::new(app_id, key, raw.installation_id)))
        }
        (None, Some(_), None) => {
            return Err(invalid(k("private_key"), "missing: the App's private key (env: or file:)"))
        }
        (None, None, Some(_)) => return Err(invalid(k("app_id"), "missing: the App's id, next to private_key")),
        (None, None, None) => {
            return Err(invalid(
                k("token"),
                "missing: a token (\"env:NAME\" or \"file:PATH\"), or app_id and private_key",
            ))
        }
        (Some(_), _, _) => {
            return Err(invalid(k("token"), "a token or App credentials (app_id, private_key), not both"))
        }
    };
    let every = opt_duration(&k("every"), raw.every.as_deref(), DEFAULT_EVERY)?;
    if every < Duration::from_secs(1) {
        return Err(invalid(k("every"), "must be at least 1s"));
    }
    let lookback = opt_duration(&k("lookback"), raw.lookback.as_deref(), DEFAULT_LOOKBACK)?;
    if lookback > MAX_LOOKBACK {
        return Err(invalid(k("lookback"), "at most \"3d\": GitHub keeps a hook's deliveries for three days"));
    }
    if lookback < Duration::from_secs(60) {
        return Err(invalid(k("lookback"), "must be at least 1m"));
    }
    let api_text = raw.api_url.unwrap_or_else(|| DEFAULT_API_URL.into());
    let api_url = url::Url::parse(&api_text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none())
        .ok_or_else(|| invalid(k("api_url"), format!("`{api_text}` is not an http(s) URL like {DEFAULT_API_URL}")))?;
    Ok(Recovery { hook, credentials, every, lookback, api_url: api_url.as_str().trim_end_matches('/').to_string() })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Recovery, String> {
        let env: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let value: toml::Value = toml::from_str::<toml::Table>(text).unwrap().into();
        validate("sources[0].recovery", value, Path::new(""), &env).map_err(|e| e.to_string())
    }

    const TOKEN: &[(&str, &str)] = &[("GITHUB_TOKEN", "ghp_secret")];

    fn token_of(r: &Recovery) -> Result<Secret, String> {
        match &r.credentials {
            Credentials::Token(source) => source.read(),
            Credentials::App(_) => panic!("not a token"),
        }
    }

    #[test]
    fn app_credentials_take_an_id_and_a_private_key_and_refuse_half_of_them_or_a_token_too() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("app.pem");
        let made = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .unwrap();
        assert!(made.status.success());
        let app = format!("hook = \"app/hook\"\napp_id = 12345\nprivate_key = \"file:{}\"\n", key.display());
        let r = parse(&app, &[]).unwrap();
        let Credentials::App(credentials) = &r.credentials else { panic!("App credentials") };
        assert_eq!(credentials.app_id, 12345);
        assert!(!format!("{r:?}").contains("PRIVATE KEY"));
        let repo = app.replace("app/hook", "repos/octo/hello/hooks/1") + "installation_id = 77\n";
        assert!(parse(&repo, &[]).is_ok());
        for (text, key) in [
            (app.replace("app_id = 12345\n", ""), "app_id"),
            ("hook = \"app/hook\"\napp_id = 1\n".to_string(), "private_key"),
            (format!("{app}token = \"env:GITHUB_TOKEN\"\n"), "token"),
            (app.replace(&key.display().to_string(), "/nonexistent/app.pem"), "private_key"),
            (
                "hook = \"repos/o/r/hooks/1\"\ntoken = \"env:GITHUB_TOKEN\"\ninstallation_id = 1\n".to_string(),
                "installation_id",
            ),
        ] {
            let err = parse(&text, TOKEN).unwrap_err();
            assert!(err.starts_with(&format!("sources[0].recovery.{key}:")), "{text}: {err}");
        }
        std::fs::write(&key, "-----BEGIN RSA PRIVATE KEY-----\nhunter2\n-----END RSA PRIVATE KEY-----\n").unwrap();
        let err = parse(&app, &[]).unwrap_err();
        assert!(err.starts_with("sources[0].recovery.private_key:") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_three_kinds_of_hook_parse_and_print_as_written() {
        for text in ["repos/octo/hello-world/hooks/123", "orgs/octo/hooks/9", "app/hook"] {
            assert_eq!(Hook::parse(text).unwrap().path(), text);
        }
        for bad in ["repos/octo/hooks/1", "repos/octo/hello/hooks/x", "orgs//hooks/1", "users/octo/hooks/1", ""] {
            assert_eq!(Hook::parse(bad), None, "{bad}");
        }
        assert_eq!(Hook::parse("repos/../x/hooks/1"), None, "a name cannot climb the URL's path");
    }

    #[test]
    fn defaults_are_every_five_minutes_over_three_days_at_api_github_com() {
        let r = parse("hook = \"repos/octo/hello/hooks/1\"\ntoken = \"env:GITHUB_TOKEN\"", TOKEN).unwrap();
        assert_eq!((r.every, r.lookback), (DEFAULT_EVERY, MAX_LOOKBACK));
        assert_eq!(r.api_url, "https://api.github.com");
        assert_eq!(token_of(&r).unwrap().expose(), b"ghp_secret");
        assert!(!format!("{r:?}").contains("ghp_secret"));
    }

    #[test]
    fn each_bad_key_is_named() {
        let base = "hook = \"repos/octo/hello/hooks/1\"\ntoken = \"env:GITHUB_TOKEN\"\n";
        for (extra, key) in [
            ("lookback = \"4d\"", "lookback"),
            ("every = \"0s\"", "every"),
            ("api_url = \"ftp://x\"", "api_url"),
            ("every = \"soon\"", "every"),
        ] {
            let err = parse(&format!("{base}{extra}"), TOKEN).unwrap_err();
            assert!(err.starts_with(&format!("sources[0].recovery.{key}:")), "{extra}: {err}");
        }
        let err = parse(&base.replace("env:GITHUB_TOKEN", "ghp_literal"), TOKEN).unwrap_err();
        assert!(err.starts_with("sources[0].recovery.token:") && !err.contains("ghp_literal"), "{err}");
        let err = parse(base, &[]).unwrap_err();
        assert!(err.starts_with("sources[0].recovery.token:"), "{err}");
        let err = parse(&base.replace("repos/octo/hello/hooks/1", "app/hook"), TOKEN).unwrap_err();
        assert!(err.starts_with("sources[0].recovery.hook:"), "{err}");
        let err = parse(&format!("{base}hooks = \"x\""), TOKEN).unwrap_err();
        assert!(err.contains("hooks"), "{err}");
    }

    #[test]
    fn a_file_token_is_read_at_each_use_so_rotation_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let text = format!("hook = \"orgs/octo/hooks/2\"\ntoken = \"file:{}\"", path.display());
        let r = parse(&text, &[]).unwrap();
        assert_eq!(token_of(&r).unwrap().expose(), b"first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(token_of(&r).unwrap().expose(), b"second");
        std::fs::remove_file(&path).unwrap();
        let err = token_of(&r).unwrap_err();
        assert!(err.contains("token file") && !err.contains("second"), "{err}");
    }
}
