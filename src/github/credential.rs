//! github::credential: hookgate as a git credential helper (`git config credential.helper "hookgate github
//! credential --config … --source …"`), so a `git fetch` of a private repository uses the source's
//! credentials — an App's installation token (fetched the same way as for recovery), or the token.
//!
//! It reads the configuration itself and prints the token only to git on stdout, for the host of the
//! source's GitHub (`api.github.com` → `github.com`; GitHub Enterprise `HOST/api/v3` → `HOST`); never to the
//! API, a log, or another host.

use std::collections::HashMap;

use super::api::GithubError;
use super::settings::Recovery;

/// The hosts git may ask about: the API's host, and for `api.X` also `X`.
pub(super) fn hosts(recovery: &Recovery) -> Vec<String> {
    let Ok(url) = url::Url::parse(&recovery.api_url) else { return Vec::new() };
    let Some(host) = url.host_str() else { return Vec::new() };
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let mut hosts = vec![host.clone()];
    if let Some(web) = host.strip_prefix("api.") {
        hosts.push(web.to_string());
    }
    hosts
}

/// Git's request (`key=value` lines) answered for `get`: `username=x-access-token` and `password=<token>`
/// when it asks about the source's host over the API's scheme, else `None` (git then asks elsewhere).
pub async fn get(recovery: &Recovery, http: &reqwest::Client, request: &str) -> Result<Option<String>, GithubError> {
    let fields: HashMap<&str, &str> = request.lines().filter_map(|l| l.split_once('=')).collect();
    let scheme = url::Url::parse(&recovery.api_url).map(|u| u.scheme().to_string()).unwrap_or_default();
    let wanted = fields.get("protocol") == Some(&scheme.as_str())
        && fields.get("host").is_some_and(|h| hosts(recovery).iter().any(|ours| ours == h));
    if !wanted {
        return Ok(None);
    }
    let token = recovery.credentials.repository_token(http, &recovery.api_url, &recovery.hook).await?;
    let token = String::from_utf8(token.expose().to_vec())
        .map_err(|_| GithubError::Credentials("the token is not text".into()))?;
    Ok(Some(format!("username=x-access-token\npassword={token}\n")))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A repository hook's recovery with the token `ghp_t`, against `api_url`.
    pub fn with_token(api_url: &str) -> Recovery {
        Recovery {
            hook: super::super::Hook::parse("repos/o/r/hooks/1").unwrap(),
            credentials: super::super::Credentials::Token(super::super::settings::TokenSource::Loaded(
                crate::verify::Secret::new("ghp_t"),
            )),
            every: std::time::Duration::from_secs(60),
            lookback: std::time::Duration::from_secs(3600),
            api_url: api_url.into(),
        }
    }

    #[test]
    fn git_is_answered_for_the_web_and_api_hosts_of_the_source_only() {
        let mut recovery = with_token("https://api.github.com");
        assert_eq!(hosts(&recovery), ["api.github.com", "github.com"]);
        recovery.api_url = "https://ghe.example:8443/api/v3".into();
        assert_eq!(hosts(&recovery), ["ghe.example:8443"]);
    }

    #[tokio::test]
    async fn another_host_or_scheme_gets_nothing() {
        let recovery = with_token("https://api.github.com");
        let http = reqwest::Client::new();
        let answer = get(&recovery, &http, "protocol=https\nhost=github.com\n").await.unwrap();
        assert_eq!(answer.as_deref(), Some("username=x-access-token\npassword=ghp_t\n"));
        for other in ["protocol=https\nhost=evil.example\n", "protocol=http\nhost=github.com\n", "host=github.com\n"] {
            assert_eq!(get(&recovery, &http, other).await.unwrap(), None, "{other}");
        }
    }
}
