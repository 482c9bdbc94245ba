//! Replays under a new id: a second identical signed (timestamp, body) pair is a duplicate, whatever id it carries.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::*;

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_stripe-test";
const SLACK_SECRET: &str = "slack-test-secret";
const INFISICAL_SECRET: &str = "infisical-test-secret";
const PARTNER_SECRET: &str = "partner-test-secret";

/// Every timestamped scheme, each with a route so that a stored delivery creates one job.
fn config() -> String {
    let mut text = format!(
        r#"
[[sources]]
name = "standard"
provider = "standard"
secrets = ["{STANDARD_SECRET}"]

[[sources]]
name = "gitlab"
provider = "gitlab"
secrets = ["{STANDARD_SECRET}"]

[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["{STRIPE_SECRET}"]

[[sources]]
name = "slack"
provider = "slack"
secrets = ["{SLACK_SECRET}"]

[[sources]]
name = "infisical"
provider = "infisical"
secrets = ["{INFISICAL_SECRET}"]

[[sources]]
name = "partner"
provider = "hmac"
secrets = ["{PARTNER_SECRET}"]
signature_header = "X-Webhook-Signature"
timestamp_header = "X-Webhook-Timestamp"
timestamp_unit = "ms"
content = "{{timestamp}}.{{body}}"
id_header = "X-Webhook-Id"
event_header = "X-Webhook-Event"
"#
    );
    for source in ["standard", "gitlab", "stripe", "slack", "infisical", "partner"] {
        text.push_str(&format!(
            "\n[[routes]]\nname = \"{source}-route\"\nsource = \"{source}\"\naction = {{ type = \"command\", argv = [\"true\"] }}\n"
        ));
    }
    text
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Headers and body of a request signed for a source; `id` is the delivery id it carries (where the scheme
/// has one outside the body), `t` the timestamp in milliseconds, `payload` what varies in the body.
type Signer = fn(id: &str, t: i64, payload: &str) -> (Vec<(&'static str, String)>, String);

fn standard_headers(id: &str, t: i64, body: &str) -> Vec<(&'static str, String)> {
    let key = base64::engine::general_purpose::STANDARD.decode(&STANDARD_SECRET[6..]).unwrap();
    let ts = (t / 1000).to_string();
    let mac = hmac_sha256(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()]);
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts),
        ("webhook-signature", format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac))),
    ]
}

fn standard(id: &str, t: i64, payload: &str) -> (Vec<(&'static str, String)>, String) {
    let body = serde_json::json!({ "type": "invoice.paid", "data": payload }).to_string();
    (standard_headers(id, t, &body), body)
}

/// GitLab signing with Standard Webhooks: its delivery id is the unsigned `Idempotency-Key`.
fn gitlab(id: &str, t: i64, payload: &str) -> (Vec<(&'static str, String)>, String) {
    let body = serde_json::json!({ "object_kind": "push", "data": payload }).to_string();
    let mut headers = standard_headers("msg_gitlab", t, &body);
    headers.push(("x-gitlab-event", "Push Hook".into()));
    headers.push(("idempotency-key", id.to_string()));
    (headers, body)
}

/// Stripe's delivery id is the body's `id`; an event without one is told apart by its signed pair only.
fn stripe(_id: &str, t: i64, payload: &str) -> (Vec<(&'static str, String)>, String) {
    let body = serde_json::json!({ "type": "charge.succeeded", "data": payload }).to_string();
    let ts = (t / 1000).to_string();
    let v1 = hex::encode(hmac_sha256(STRIPE_SECRET.as_bytes(), &[ts.as_bytes(), b".", body.as_bytes()]));
    (vec![("stripe-signature", format!("t={ts},v1={v1}"))], body)
}

fn slack(_id: &str, t: i64, payload: &str) -> (Vec<(&'static str, String)>, String) {
    let body = serde_json::json!({ "type": "event_callback", "event": { "text": payload } }).to_string();
    let ts = (t / 1000).to_string();
    let v0 = hex::encode(hmac_sha256(SLACK_SECRET.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body.as_bytes()]));
    (vec![("x-slack-request-timestamp", ts), ("x-slack-signature", format!("v0={v0}"))], body)
}

/// Infisical's delivery id is derived from its signature: `id` "upper" sends the same signature in upper case.
fn infisical(id: &str, t: i64, payload: &str) -> (Vec<(&'static str, String)>, String) {
    let body = serde_json::json!({ "event": "secrets.modified", "timestamp": t, "data": payload }).to_string();
    let mut signature = hex::encode(hmac_sha256(INFISICAL_SECRET.as_bytes(), &[body.as_bytes()]));
    if id == "upper" {
        signature = signature.to_ascii_uppercase();
    }
    (vec![("x-infisical-signature", format!("t={t};{signature}"))], body)
}

/// The scenario-3 format: the id header is not part of the signed content.
fn partner(id: &str, t: i64, payload: &str) -> (Vec<(&'static str, String)>, String) {
    let body = serde_json::json!({ "order": payload }).to_string();
    let ts = t.to_string();
    let signature = hex::encode(hmac_sha256(PARTNER_SECRET.as_bytes(), &[ts.as_bytes(), b".", body.as_bytes()]));
    let headers = vec![
        ("x-webhook-id", id.to_string()),
        ("x-webhook-timestamp", ts),
        ("x-webhook-event", "order.created".into()),
        ("x-webhook-signature", signature),
    ];
    (headers, body)
}

async fn send(app: &TestApp, source: &str, signed: (Vec<(&'static str, String)>, String)) -> (u16, serde_json::Value) {
    let (headers, body) = signed;
    let response = app.post_hook(source, &headers, &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The same signed pair under another id is a duplicate of the first; another body or timestamp is new.
async fn replays_are_duplicates(app: &TestApp, source: &str, sign: Signer) {
    // Whole seconds, so that schemes with second timestamps sign exactly `t`.
    let t = hookgate::store::now_ms() / 1000 * 1000;
    let (status, first) = send(app, source, sign("first", t, "a")).await;
    assert_eq!(status, 202, "{source}: {first}");
    assert_eq!(first["jobs"], 1, "{source}: {first}");
    let id = first["id"].as_str().unwrap();

    let other_id = if source == "infisical" { "upper" } else { "second" };
    let (status, again) = send(app, source, sign(other_id, t, "a")).await;
    assert_eq!(status, 200, "{source}: a replay under a new id was stored again: {again}");
    assert_eq!(again, serde_json::json!({ "id": id, "duplicate": true }), "{source}");

    let (status, other_body) = send(app, source, sign("third", t, "b")).await;
    assert_eq!(status, 202, "{source}: another body is a new delivery: {other_body}");
    let (status, other_time) = send(app, source, sign("fourth", t + 1000, "a")).await;
    assert_eq!(status, 202, "{source}: another timestamp is a new delivery: {other_time}");

    let query = hookgate::store::DeliveryQuery { source: Some(source.into()), ..Default::default() };
    let stored = app.store.list_deliveries(query).await.unwrap().items;
    assert_eq!(stored.len(), 3, "{source}: {stored:?}");
    let jobs: u64 = stored.iter().map(|d| d.jobs.queued + d.jobs.running + d.jobs.succeeded + d.jobs.dead).sum();
    assert_eq!(jobs, 3, "{source}: the duplicate added no job");
}

store_test! {
    async fn standard_webhooks_replayed_under_a_new_id_are_duplicates(backend) {
        let app = spawn_app(&backend, &config()).await;
        replays_are_duplicates(&app, "standard", standard).await;
    }
}

store_test! {
    async fn gitlab_signed_deliveries_replayed_under_a_new_idempotency_key_are_duplicates(backend) {
        let app = spawn_app(&backend, &config()).await;
        replays_are_duplicates(&app, "gitlab", gitlab).await;
    }
}

store_test! {
    async fn stripe_events_without_an_id_replayed_are_duplicates(backend) {
        let app = spawn_app(&backend, &config()).await;
        replays_are_duplicates(&app, "stripe", stripe).await;
    }
}

store_test! {
    async fn slack_requests_replayed_are_duplicates(backend) {
        let app = spawn_app(&backend, &config()).await;
        replays_are_duplicates(&app, "slack", slack).await;
    }
}

store_test! {
    async fn infisical_signatures_in_upper_case_hex_are_duplicates(backend) {
        let app = spawn_app(&backend, &config()).await;
        replays_are_duplicates(&app, "infisical", infisical).await;
    }
}

store_test! {
    async fn hmac_deliveries_replayed_under_a_new_unsigned_id_are_duplicates(backend) {
        let app = spawn_app(&backend, &config()).await;
        replays_are_duplicates(&app, "partner", partner).await;
    }
}

/// Two instances on one PostgreSQL database, sent one signed pair under different ids at the same moment:
/// exactly one stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_racing_to_two_instances_is_stored_once() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("skipped: HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let config = config();
    let (one, two) = tokio::join!(spawn_app_at(&url, &config), spawn_app_at(&url, &config));
    for round in 0..20 {
        let t = hookgate::store::now_ms() / 1000 * 1000;
        let payload = format!("race-{round}");
        let (a, b) = tokio::join!(
            send(&one, "partner", partner(&format!("one-{round}"), t, &payload)),
            send(&two, "partner", partner(&format!("two-{round}"), t, &payload))
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 202], "round {round}: {a:?} {b:?}");
        assert_eq!(a.1["id"], b.1["id"], "the duplicate names the stored delivery");
    }
}
