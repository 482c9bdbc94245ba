//! github::app: GitHub App credentials — an RS256 JWT signed with the App's private key, exchanged for an
//! installation token (`POST /app/installations/{id}/access_tokens`) that is cached until shortly before it
//! expires. The App's own hook (`app/hook`) is called with the JWT itself.
//!
//! The private key, the JWT and the tokens never reach a log line, an error, the API or the dashboard: errors
//! name the key's key or file and GitHub's answer, never a value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use super::api::GithubError;
use super::settings::{Hook, TokenSource};
use crate::verify::Secret;

/// GitHub refuses a JWT that lives longer than ten minutes; `iat` is set a minute back for clock drift.
const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);
/// A JWT or token is replaced this long before it expires, so none expires in the middle of a round.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// An App's credentials and what they bought: a JWT and an installation token, each until it expires.
pub struct App {
    pub app_id: u64,
    key: TokenSource,
    /// Given in the configuration, or found from the hook's repository or organization, then kept.
    installation: Mutex<Option<u64>>,
    jwt: Mutex<Option<(Secret, SystemTime)>>,
    token: Mutex<Option<(Secret, SystemTime)>>,
    /// Held while a token is minted: callers that miss the cache together (two actions and a recovery round
    /// at once) wait for that one token instead of minting one each. It keeps how the last mint failed.
    minting: tokio::sync::Mutex<Option<GithubError>>,
    /// Mints tried so far (changed only under `minting`): a caller that saw another mint start and end while it
    /// waited takes that mint's failure rather than queueing one more 30 s try against a GitHub that is down.
    mints: AtomicU64,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("app_id", &self.app_id).finish_non_exhaustive()
    }
}

/// Parse a PEM private key: PKCS#1 (`RSA PRIVATE KEY`, what GitHub hands out) or PKCS#8 (`PRIVATE KEY`).
pub fn parse_key(pem: &[u8]) -> Result<RsaKeyPair, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_string())?;
    let label = |l: &str| text.contains(&format!("-----BEGIN {l}-----"));
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| "not PEM: bad base64".to_string())?;
    let key = if label("RSA PRIVATE KEY") {
        RsaKeyPair::from_der(&der)
    } else if label("PRIVATE KEY") {
        RsaKeyPair::from_pkcs8(&der)
    } else {
        return Err("not a PEM \"RSA PRIVATE KEY\" or \"PRIVATE KEY\"".into());
    };
    key.map_err(|e| format!("not a usable RSA private key ({e})"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// An RS256 JWT for `app_id` issued at `now`: `{"iat": now - 60, "exp": now + 9 min, "iss": "<app_id>"}`.
pub fn jwt(key: &RsaKeyPair, app_id: u64, now: SystemTime) -> Result<String, String> {
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iat": unix(now).saturating_sub(60),
        "exp": unix(now + JWT_LIFETIME),
        "iss": app_id.to_string(),
    });
    let signed = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signed.as_bytes(), &mut signature)
        .map_err(|_| "the private key could not sign".to_string())?;
    Ok(format!("{signed}.{}", b64(&signature)))
}

impl App {
    pub fn new(app_id: u64, key: TokenSource, installation: Option<u64>) -> Self {
        App {
            app_id,
            key,
            installation: Mutex::new(installation),
            jwt: Mutex::default(),
            token: Mutex::default(),
            minting: tokio::sync::Mutex::default(),
            mints: AtomicU64::new(0),
        }
    }

    /// Check the key now (at load), as every later use will.
    pub fn check_key(key: &TokenSource) -> Result<(), String> {
        parse_key(key.read()?.expose()).map(|_| ())
    }

    /// A JWT valid for some minutes yet: the cached one, or a new one signed with the key as it is now (a
    /// `file:` key is read again, so a rotated key is picked up).
    pub fn jwt(&self) -> Result<Secret, GithubError> {
        let now = SystemTime::now();
        let mut cached = self.jwt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((jwt, _)) = cached.as_ref().filter(|(_, until)| *until > now + RENEW_BEFORE) {
            return Ok(jwt.clone());
        }
        let key = self.key.read().map_err(GithubError::Credentials)?;
        let key =
            parse_key(key.expose()).map_err(|e| GithubError::Credentials(format!("the App's private key: {e}")))?;
        let jwt = Secret::new(jwt(&key, self.app_id, now).map_err(GithubError::Credentials)?);
        *cached = Some((jwt.clone(), now + JWT_LIFETIME));
        Ok(jwt)
    }

    /// The bearer for calls about `hook`: the JWT for the App's own hook, else an installation token.
    pub async fn bearer(&self, http: &reqwest::Client, api_url: &str, hook: &Hook) -> Result<Secret, GithubError> {
        if *hook == Hook::App {
            return self.jwt();
        }
        self.installation_token(http, api_url, hook).await
    }

    /// An installation token (what git and the API take for a repository): cached, renewed before it expires.
    pub async fn installation_token(
        &self,
        http: &reqwest::Client,
        api_url: &str,
        hook: &Hook,
    ) -> Result<Secret, GithubError> {
        if let Some(token) = self.cached_token() {
            return Ok(token);
        }
        let seen = self.mints.load(Ordering::Acquire);
        let mut last_failure = self.minting.lock().await;
        // Another caller may have minted one while this one waited, or failed to.
        if let Some(token) = self.cached_token() {
            return Ok(token);
        }
        if self.mints.load(Ordering::Acquire) != seen {
            if let Some(failed) = last_failure.as_ref() {
                return Err(failed.clone());
            }
        }
        let minted = self.mint(http, api_url, hook).await;
        *last_failure = minted.as_ref().err().cloned();
        self.mints.fetch_add(1, Ordering::AcqRel);
        let (token, expires) = minted?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), expires));
        Ok(token)
    }

    /// Ask GitHub for a new installation token; returns it and when it expires.
    async fn mint(
        &self,
        http: &reqwest::Client,
        api_url: &str,
        hook: &Hook,
    ) -> Result<(Secret, SystemTime), GithubError> {
        let installation = self.installation(http, api_url, hook).await?;
        let url = format!("{api_url}/app/installations/{installation}/access_tokens");
        let (status, headers, body) = super::api::send(http, reqwest::Method::POST, &url, &self.jwt()?).await?;
        if !status.is_success() {
            let what = format!("app/installations/{installation}");
            return Err(super::api::classify(status, &headers, &body, &what, SystemTime::now()));
        }
        #[derive(serde::Deserialize)]
        struct Issued {
            token: String,
            expires_at: String,
        }
        let issued: Issued =
            serde_json::from_slice(&body).map_err(|_| GithubError::Invalid("an installation token answer".into()))?;
        let expires = humantime::parse_rfc3339_weak(issued.expires_at.trim_end_matches('Z'))
            .map_err(|_| GithubError::Invalid("an installation token's expires_at".into()))?;
        Ok((Secret::new(issued.token), expires))
    }

    /// The cached installation token, unless it is due for renewal.
    fn cached_token(&self) -> Option<Secret> {
        let cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        let (token, expires) = cached.as_ref()?;
        (*expires > SystemTime::now() + RENEW_BEFORE).then(|| token.clone())
    }

    /// The installation: configured, or the one GitHub names for the hook's repository or organization.
    async fn installation(&self, http: &reqwest::Client, api_url: &str, hook: &Hook) -> Result<u64, GithubError> {
        if let Some(id) = *self.installation.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(id);
        }
        let path =
            match hook {
                Hook::Repository { owner, repo, .. } => format!("repos/{owner}/{repo}/installation"),
                Hook::Organization { org, .. } => format!("orgs/{org}/installation"),
                Hook::App => return Err(GithubError::Credentials(
                    "the App's own hook names no repository: set recovery.installation_id to get installation tokens"
                        .into(),
                )),
            };
        let url = format!("{api_url}/{path}");
        let (status, headers, body) = super::api::send(http, reqwest::Method::GET, &url, &self.jwt()?).await?;
        if !status.is_success() {
            return Err(super::api::classify(status, &headers, &body, &path, SystemTime::now()));
        }
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id")?.as_u64())
            .ok_or_else(|| GithubError::Invalid(format!("{path}: no installation id")))?;
        tracing::info!(app_id = self.app_id, installation = id, "found the GitHub App's installation");
        *self.installation.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    /// A fresh 2048-bit key from `openssl genrsa` (PKCS#1 PEM, as GitHub hands out), and its public key as
    /// PKCS#1 DER, which ring verifies with.
    pub fn keypair(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
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
        (key, public.stdout)
    }

    /// A loopback stand-in for `POST /app/installations/7/access_tokens` that counts the requests, waits a
    /// little (so callers pile up behind the first), and answers `status`.
    async fn token_endpoint(status: u16) -> (String, std::sync::Arc<AtomicU64>) {
        let asked = std::sync::Arc::new(AtomicU64::new(0));
        let count = asked.clone();
        let app = axum::Router::new().route(
            "/app/installations/7/access_tokens",
            axum::routing::post(move || {
                let count = count.clone();
                async move {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let body = format!(r#"{{"token":"ghs_minted{n}","expires_at":"2999-01-01T00:00:00Z"}}"#);
                    (axum::http::StatusCode::from_u16(status).unwrap(), body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, asked)
    }

    /// Eight callers at once, all missing the cache: what each got, and how many mints GitHub saw.
    async fn eight_at_once(status: u16) -> (Vec<Result<String, GithubError>>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = keypair(dir.path());
        let app = std::sync::Arc::new(App::new(4242, TokenSource::File(key), Some(7)));
        let (url, asked) = token_endpoint(status).await;
        let http = reqwest::Client::new();
        let hook = Hook::Repository { owner: "octo".into(), repo: "hello".into(), id: 1 };
        let calls = (0..8).map(|_| {
            let (app, http, url, hook) = (app.clone(), http.clone(), url.clone(), hook.clone());
            tokio::spawn(async move {
                app.installation_token(&http, &url, &hook)
                    .await
                    .map(|t| String::from_utf8_lossy(t.expose()).into_owned())
            })
        });
        let got = futures_util::future::join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
        (got, asked.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn callers_that_miss_the_cache_together_share_one_minted_token() {
        let (got, asked) = eight_at_once(201).await;
        assert_eq!(asked, 1, "one mint for eight callers");
        assert!(got.iter().all(|t| t.as_deref() == Ok("ghs_minted1")), "{got:?}");
    }

    #[tokio::test]
    async fn callers_waiting_on_a_mint_that_fails_share_its_error_instead_of_each_trying_again() {
        let (got, asked) = eight_at_once(503).await;
        assert_eq!(asked, 1, "a GitHub that is down is asked once, not once per waiting caller");
        assert!(got.iter().all(|r| matches!(r, Err(GithubError::Status { status: 503, .. }))), "{got:?}");
    }

    #[test]
    fn the_jwt_is_rs256_for_the_app_and_verifies_with_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public) = keypair(dir.path());
        let key = parse_key(&std::fs::read(&path).unwrap()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = jwt(&key, 12345, now).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |p: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(claims, serde_json::json!({"iat": 1_799_999_940u64, "exp": 1_800_000_540u64, "iss": "12345"}));
        let signed = format!("{}.{}", parts[0], parts[1]);
        let verifier = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public);
        verifier.verify(signed.as_bytes(), &decode(parts[2])).expect("the signature verifies with the public key");
        // Another claim under the same signature does not.
        let forged = format!("{}.{}", parts[0], b64(br#"{"iss":"666"}"#));
        assert!(verifier.verify(forged.as_bytes(), &decode(parts[2])).is_err());
    }

    #[test]
    fn pkcs8_keys_parse_and_other_text_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = keypair(dir.path());
        let pkcs8 = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(parse_key(&pkcs8.stdout).is_ok());
        for bad in [&b"hunter2"[..], b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", b"\xff"]
        {
            let Err(err) = parse_key(bad) else { panic!("accepted") };
            assert!(!err.contains("hunter2") && !err.contains("AAAA"), "{err}");
        }
    }
}
