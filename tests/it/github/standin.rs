//! A GitHub API stand-in on loopback: a real HTTP server implementing the hook-deliveries endpoints as GitHub
//! documents them — cursor pagination with `Link`, rate-limit headers on every answer, 401/403/404/422 — and
//! delivering webhooks (first attempts and redeliveries) to hookgate signed with the source's secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::helpers::{github_signature, GITHUB_SECRET};

/// One attempt, as GitHub keeps it (with the payload, so a redelivery sends the same body).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: u64,
    pub guid: String,
    pub event: String,
    pub body: String,
    pub delivered_at: SystemTime,
    pub status_code: u16,
    pub redelivery: bool,
}

/// A request the stand-in answered: which endpoint, with which token, when, and the status it answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// `list`, `redeliver`, `installation` (finding the App's installation) or `token` (an installation token).
    pub kind: &'static str,
    pub redeliver: Option<u64>,
    pub token: String,
    pub at: SystemTime,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    /// Oldest first; listed newest first.
    attempts: Vec<Attempt>,
    next_id: u64,
    /// Where deliveries go (`http://host:port/hooks/SOURCE`); `None` = the receiver is down.
    target: Option<String>,
    calls: Vec<Call>,
    /// Requests left before the primary limit is used up, and when it resets (Unix seconds).
    remaining: u64,
    reset: u64,
    /// Answer every API request with this status (401, 403, 404), as GitHub does for bad credentials, a token
    /// without the permission, or a hook it cannot see.
    force: Option<u16>,
    /// Delivery ids GitHub will not redeliver (422).
    unprocessable: Vec<u64>,
    /// Installation tokens handed out to the App.
    issued: Vec<String>,
}

/// The App the stand-in knows: its id, its public key (PKCS#1 DER) and its installation on the hook's repository.
#[derive(Clone)]
pub struct AppSide {
    pub id: u64,
    pub public_key: Vec<u8>,
    pub installation: u64,
}

#[derive(Clone)]
pub struct StandIn {
    pub url: String,
    pub hook: String,
    tokens: Arc<Vec<String>>,
    app: Option<AppSide>,
    page_size: usize,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl StandIn {
    /// Serve `hook` (e.g. `repos/octo/hello/hooks/1`) for these tokens, `page_size` deliveries a page.
    pub async fn start(hook: &str, tokens: &[&str], page_size: usize) -> StandIn {
        Self::start_with(hook, tokens, None, page_size).await
    }

    /// Also a GitHub App: JWTs signed with its key are accepted for `app/hook` and exchanged for installation
    /// tokens.
    pub async fn start_app(hook: &str, app: AppSide) -> StandIn {
        Self::start_with(hook, &[], Some(app), 100).await
    }

    async fn start_with(hook: &str, tokens: &[&str], app: Option<AppSide>, page_size: usize) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let standin = StandIn {
            url,
            hook: hook.to_string(),
            tokens: Arc::new(tokens.iter().map(|t| t.to_string()).collect()),
            app,
            page_size,
            inner: Arc::new(Mutex::new(Inner {
                remaining: 5000,
                reset: unix(SystemTime::now()) + 3600,
                ..Default::default()
            })),
            http: reqwest::Client::new(),
        };
        let router = Router::new()
            .route(&format!("/{hook}/deliveries"), get(list))
            .route(&format!("/{hook}/deliveries/{{id}}/attempts"), post(redeliver))
            .route("/repos/{owner}/{repo}/installation", get(installation))
            .route("/app/installations/{id}/access_tokens", post(access_token))
            .with_state(standin.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        standin
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub fn set_target(&self, target: Option<String>) {
        self.inner().target = target;
    }

    pub fn force(&self, status: Option<u16>) {
        self.inner().force = status;
    }

    /// Use up the primary limit until `reset`.
    pub fn exhaust_until(&self, reset: SystemTime) {
        let mut inner = self.inner();
        inner.remaining = 0;
        inner.reset = unix(reset);
    }

    pub fn refuse_redelivery_of(&self, id: u64) {
        self.inner().unprocessable.push(id);
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.inner().attempts.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner().calls.clone()
    }

    /// Redeliveries asked for, by delivery id.
    pub fn redeliveries(&self) -> Vec<u64> {
        self.calls().iter().filter(|c| c.status == 202).filter_map(|c| c.redeliver).collect()
    }

    /// A new event: GitHub's first attempt to deliver it, recorded with hookgate's answer (0 when down).
    pub async fn deliver(&self, event: &str, body: &str) -> Attempt {
        let guid = hookgate::store::new_id();
        self.attempt(&guid, event, body, false).await
    }

    /// Record an attempt that failed with `status_code` without sending anything (an answer seen by GitHub
    /// from whatever stood at the hook's URL then, such as a load balancer's 503).
    pub fn record(&self, guid: &str, event: &str, body: &str, status_code: u16) -> Attempt {
        self.keep(guid, event, body, status_code, false)
    }

    /// Add an attempt to what GitHub lists, with the next id.
    fn keep(&self, guid: &str, event: &str, body: &str, status_code: u16, redelivery: bool) -> Attempt {
        let mut inner = self.inner();
        inner.next_id += 1;
        let attempt = Attempt {
            id: inner.next_id,
            guid: guid.into(),
            event: event.into(),
            body: body.into(),
            delivered_at: SystemTime::now(),
            status_code,
            redelivery,
        };
        inner.attempts.push(attempt.clone());
        attempt
    }

    async fn attempt(&self, guid: &str, event: &str, body: &str, redelivery: bool) -> Attempt {
        let target = self.inner().target.clone();
        let status_code = match target {
            None => 0,
            Some(url) => {
                let sent = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-github-event", event)
                    .header("x-github-delivery", guid)
                    .header("x-hub-signature-256", github_signature(GITHUB_SECRET, body.as_bytes()))
                    .header("user-agent", "GitHub-Hookshot/stand-in")
                    .body(body.to_string())
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                sent.map_or(0, |r| r.status().as_u16())
            }
        };
        self.keep(guid, event, body, status_code, redelivery)
    }

    /// Authenticate, count the request against the limit, and say how to refuse it, if so.
    /// Whether `token` is a JWT of the App, signed with its key, unexpired and short-lived as GitHub demands.
    fn valid_jwt(&self, token: &str) -> bool {
        use base64::Engine;
        let Some(app) = &self.app else { return false };
        let parts: Vec<&str> = token.split('.').collect();
        let decode = |p: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok();
        let (Some(claims), Some(signature)) =
            (parts.get(1).and_then(|p| decode(p)), parts.get(2).and_then(|p| decode(p)))
        else {
            return false;
        };
        let key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &app.public_key);
        if parts.len() != 3 || key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).is_err() {
            return false;
        }
        let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&claims) else { return false };
        let now = unix(SystemTime::now());
        let (iat, exp) = (claims["iat"].as_u64().unwrap_or(0), claims["exp"].as_u64().unwrap_or(0));
        claims["iss"].as_str().and_then(|i| i.parse::<u64>().ok()) == Some(app.id)
            && iat <= now
            && now < exp
            && exp - iat <= 660
    }

    fn admit(&self, headers: &HeaderMap, redeliver: Option<u64>) -> (Result<(), Response>, HeaderMap) {
        let kind = if redeliver.is_some() { "redeliver" } else { "list" };
        // The App's own hook takes its JWT; other hooks an installation token or a personal token.
        let jwt_hook = self.hook == "app/hook";
        self.admit_as(headers, kind, redeliver, jwt_hook)
    }

    fn admit_as(
        &self,
        headers: &HeaderMap,
        kind: &'static str,
        redeliver: Option<u64>,
        jwt: bool,
    ) -> (Result<(), Response>, HeaderMap) {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        let documented = headers.get("accept").is_some_and(|v| v == "application/vnd.github+json")
            && headers.get("x-github-api-version").is_some_and(|v| v == "2022-11-28")
            && headers.get("user-agent").is_some_and(|v| v.to_str().unwrap_or("").starts_with("hookgate/"));
        let now = SystemTime::now();
        let valid = if jwt { self.valid_jwt(&token) } else { self.tokens.contains(&token) };
        let mut inner = self.inner();
        let valid = valid || (!jwt && inner.issued.contains(&token));
        if inner.remaining == 0 && unix(now) >= inner.reset {
            inner.remaining = 5000;
            inner.reset = unix(now) + 3600;
        }
        let exhausted = inner.remaining == 0;
        inner.remaining = inner.remaining.saturating_sub(1);
        let mut out = HeaderMap::new();
        for (name, value) in [
            ("x-ratelimit-limit", "5000".to_string()),
            ("x-ratelimit-remaining", inner.remaining.to_string()),
            ("x-ratelimit-reset", inner.reset.to_string()),
            ("x-ratelimit-used", (5000 - inner.remaining).to_string()),
            ("x-ratelimit-resource", "core".to_string()),
        ] {
            out.insert(name, HeaderValue::from_str(&value).unwrap());
        }
        let refusal = if !documented {
            Some((StatusCode::BAD_REQUEST, "missing the documented Accept, X-GitHub-Api-Version or User-Agent"))
        } else if !valid || inner.force == Some(401) {
            Some((StatusCode::UNAUTHORIZED, "Bad credentials"))
        } else if exhausted {
            Some((StatusCode::FORBIDDEN, "API rate limit exceeded for user ID 1."))
        } else if inner.force == Some(403) {
            Some((StatusCode::FORBIDDEN, "Resource not accessible by personal access token"))
        } else if inner.force == Some(404) {
            Some((StatusCode::NOT_FOUND, "Not Found"))
        } else if redeliver.is_some_and(|id| inner.unprocessable.contains(&id)) {
            Some((StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed"))
        } else if redeliver.is_some_and(|id| !inner.attempts.iter().any(|a| a.id == id)) {
            Some((StatusCode::NOT_FOUND, "Not Found"))
        } else {
            None
        };
        let ok = match kind {
            "redeliver" => 202,
            "token" => 201,
            _ => 200,
        };
        let status = refusal.map_or(ok, |(s, _)| s.as_u16());
        inner.calls.push(Call { kind, redeliver, token, at: now, status });
        let result = match refusal {
            None => Ok(()),
            Some((status, message)) => Err((
                status,
                out.clone(),
                Json(json!({ "message": message, "documentation_url": "https://docs.github.com/rest" })),
            )
                .into_response()),
        };
        (result, out)
    }
}

async fn list(State(s): State<StandIn>, headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    let (admitted, mut out) = s.admit(&headers, None);
    if let Err(refused) = admitted {
        return refused;
    }
    let per_page = query.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30usize).min(s.page_size);
    // The cursor names the newest id the page may hold.
    let before: u64 = query.get("cursor").and_then(|c| c.strip_prefix("v1_")?.parse().ok()).unwrap_or(u64::MAX);
    let attempts: Vec<Attempt> = s.inner().attempts.iter().rev().filter(|a| a.id <= before).cloned().collect();
    let page = &attempts[..attempts.len().min(per_page)];
    if attempts.len() > per_page {
        let next = attempts[per_page].id;
        let link = format!("<{}/{}/deliveries?per_page={per_page}&cursor=v1_{next}>; rel=\"next\"", s.url, s.hook);
        out.insert("link", HeaderValue::from_str(&link).unwrap());
    }
    let items: Vec<serde_json::Value> = page
        .iter()
        .map(|a| {
            let at = humantime::format_rfc3339_seconds(a.delivered_at).to_string();
            let status = match a.status_code {
                0 => "failed to connect to host".to_string(),
                200..=299 => "OK".to_string(),
                code => format!("Invalid HTTP Response: {code}"),
            };
            json!({
                "id": a.id, "guid": a.guid, "delivered_at": at, "redelivery": a.redelivery, "duration": 0.1,
                "status": status, "status_code": a.status_code, "event": a.event, "action": null,
                "installation_id": null, "repository_id": 1, "throttled_at": null,
            })
        })
        .collect();
    (StatusCode::OK, out, Json(items)).into_response()
}

async fn redeliver(State(s): State<StandIn>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    let (admitted, out) = s.admit(&headers, Some(id));
    if let Err(refused) = admitted {
        return refused;
    }
    let original = s.inner().attempts.iter().find(|a| a.id == id).cloned().expect("admitted ids exist");
    // As GitHub: accepted now, sent a moment later, with the same GUID and payload.
    let sender = s.clone();
    tokio::spawn(async move { sender.attempt(&original.guid, &original.event, &original.body, true).await });
    (StatusCode::ACCEPTED, out).into_response()
}

async fn installation(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    let (admitted, out) = s.admit_as(&headers, "installation", None, true);
    if let Err(refused) = admitted {
        return refused;
    }
    let Some(app) = s.app.as_ref().filter(|_| s.hook.starts_with(&format!("repos/{owner}/{repo}/"))) else {
        return (StatusCode::NOT_FOUND, out, Json(json!({ "message": "Not Found" }))).into_response();
    };
    (StatusCode::OK, out, Json(json!({ "id": app.installation, "app_id": app.id }))).into_response()
}

async fn access_token(State(s): State<StandIn>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    let (admitted, out) = s.admit_as(&headers, "token", None, true);
    if let Err(refused) = admitted {
        return refused;
    }
    if s.app.as_ref().is_none_or(|a| a.installation != id) {
        return (StatusCode::NOT_FOUND, out, Json(json!({ "message": "Not Found" }))).into_response();
    }
    let mut inner = s.inner();
    let token = format!("ghs_installation{}", inner.issued.len() + 1);
    inner.issued.push(token.clone());
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)).to_string();
    (StatusCode::CREATED, out, Json(json!({ "token": token, "expires_at": expires }))).into_response()
}
