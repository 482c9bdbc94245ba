//! github::lend: a route's action borrows its GitHub source's credentials (`github_token = "<source>"` on the
//! route): an http action sends the token as `Authorization: Bearer …`; a command gets it as `GITHUB_TOKEN`,
//! with git told (through `GIT_CONFIG_*` variables, nothing on disk) to answer with it for the source's GitHub
//! host only, so `git fetch` of a private repository works as it is.
//!
//! The token is an App's installation token (fetched and cached as for recovery) or the source's own token. It
//! is never a template value, never in argv, and never reaches the attempt's error or a log line.

use std::sync::OnceLock;

use super::api::GithubError;
use super::credential::hosts;
use super::settings::Recovery;
use crate::actions::{ActionSpec, SecretHeader, SecretSource};

/// The variable a command finds the token in (what `gh` and most GitHub tooling read).
pub const TOKEN_VARIABLE: &str = "GITHUB_TOKEN";

/// A git credential helper that answers `get` from [`TOKEN_VARIABLE`]; git runs it through the shell with the
/// command's environment, so the token is read from there and never written into the value.
const GIT_HELPER: &str =
    "!f() { test \"$1\" = get && printf 'username=x-access-token\\npassword=%s\\n' \"$GITHUB_TOKEN\"; }; f";

/// One client for every action's token requests (GitHub's, not the action's: no redirects).
fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(super::http_client)
}

/// `spec` with the token of `recovery`'s credentials added (see the module's text).
pub async fn lend(recovery: &Recovery, mut spec: ActionSpec) -> Result<ActionSpec, GithubError> {
    let token = recovery.credentials.repository_token(http(), &recovery.api_url, &recovery.hook).await?;
    match &mut spec {
        ActionSpec::Http(http) => http.secret_headers.push(SecretHeader {
            name: "authorization".into(),
            prefix: "Bearer ",
            source: SecretSource::Loaded(token),
        }),
        ActionSpec::Command(command) => {
            let text = String::from_utf8(token.expose().to_vec())
                .map_err(|_| GithubError::Credentials("the token is not text".into()))?;
            command.env.push((TOKEN_VARIABLE.into(), text));
            command.env.extend(git_config(recovery));
        }
    }
    Ok(spec)
}

/// `GIT_CONFIG_COUNT`/`KEY_n`/`VALUE_n`: the credential helper, scoped to each host of the source's GitHub.
fn git_config(recovery: &Recovery) -> Vec<(String, String)> {
    let scheme = url::Url::parse(&recovery.api_url).map(|u| u.scheme().to_string()).unwrap_or_else(|_| "https".into());
    let hosts = hosts(recovery);
    let mut env = vec![("GIT_CONFIG_COUNT".to_string(), hosts.len().to_string())];
    for (i, host) in hosts.iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), format!("credential.{scheme}://{host}.helper")));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), GIT_HELPER.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_is_given_a_helper_for_each_host_of_the_source_and_no_token_in_its_configuration() {
        let recovery = crate::github::credential::tests::with_token("https://api.github.com");
        let env = git_config(&recovery);
        assert_eq!(env[0], ("GIT_CONFIG_COUNT".into(), "2".into()));
        assert_eq!(env[1].1, "credential.https://api.github.com.helper");
        assert_eq!(env[3].1, "credential.https://github.com.helper");
        assert!(env.iter().all(|(_, v)| !v.contains("ghp_t")), "{env:?}");
    }
}
