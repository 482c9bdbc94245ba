//! sign: signatures for outbound webhooks and for `hookgate sign`, the mirror image of `verify`.
//!
//! Depends only on `verify`'s pure types and MAC helpers. For every scheme, what `headers` produces
//! verifies under `verify::Verifier` with the same secret (tested below, scheme by scheme).

use crate::verify::mac;
use crate::verify::{Algorithm, Encoding, EventFrom, HmacOptions, Scheme, Secret, TimeUnit, TokenOptions};

/// What is being signed.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Stable across retries (`webhook-id`, `X-Webhook-Id`, ...).
    pub id: &'a str,
    pub event: Option<&'a str>,
    /// Fresh on every attempt, Unix milliseconds.
    pub timestamp_ms: i64,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("secret is not usable for this scheme: {0}")]
    BadSecret(&'static str),
    /// The options ask for something the receiver could never check (e.g. `{id}` without an id header).
    #[error("options cannot produce a verifiable signature: {0}")]
    Unverifiable(&'static str),
}

/// The name a scheme has in configuration and on the command line.
pub fn scheme_name(scheme: &Scheme) -> &'static str {
    match scheme {
        Scheme::Github { .. } => "github",
        Scheme::Gitlab => "gitlab",
        Scheme::Gitea => "gitea",
        Scheme::Bitbucket => "bitbucket",
        Scheme::Infisical => "infisical",
        Scheme::Standard => "standard",
        Scheme::Stripe => "stripe",
        Scheme::Slack => "slack",
        Scheme::Hmac(_) => "hmac",
        Scheme::Token(_) => "token",
    }
}

/// Lower-case hex HMAC of `data` under `key`.
pub fn hmac_hex(algorithm: Algorithm, key: &[u8], data: &[u8]) -> String {
    hex::encode(mac::compute(algorithm, key, &[data]))
}

fn hex_mac(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac::compute(Algorithm::Sha256, key, parts))
}

fn push(out: &mut Vec<(String, String)>, name: &str, value: impl Into<String>) {
    out.push((name.to_string(), value.into()));
}

/// A shared token as it travels in a header: printable ASCII, without surrounding blanks the receiver would trim.
fn token_text(key: &[u8]) -> Result<&str, SignError> {
    let printable = key.iter().all(|b| (0x20..0x7f).contains(b));
    let trimmed = key.first() != Some(&b' ') && key.last() != Some(&b' ');
    match std::str::from_utf8(key) {
        Ok(text) if printable && trimmed => Ok(text),
        _ => Err(SignError::BadSecret("a token must be printable ASCII without surrounding spaces")),
    }
}

/// Optional headers (event, delivery id) are left out rather than sent empty.
fn push_some(out: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        push(out, name, value);
    }
}

/// The header lines (name, value) that make `msg` verify under `scheme` with `secret`.
pub fn headers(scheme: &Scheme, secret: &Secret, msg: &Message<'_>) -> Result<Vec<(String, String)>, SignError> {
    let key = secret.expose();
    if key.is_empty() {
        return Err(SignError::BadSecret("empty"));
    }
    let seconds = msg.timestamp_ms.div_euclid(1000).to_string();
    let mut out = Vec::new();
    match scheme {
        Scheme::Github { .. } => {
            push(&mut out, "X-Hub-Signature-256", format!("sha256={}", hex_mac(key, &[msg.body])));
            push_some(&mut out, "X-GitHub-Event", msg.event);
            push_some(&mut out, "X-GitHub-Delivery", Some(msg.id));
        }
        Scheme::Gitlab => {
            push(&mut out, "X-Gitlab-Token", token_text(key)?);
            push_some(&mut out, "X-Gitlab-Event", msg.event);
            push_some(&mut out, "Idempotency-Key", Some(msg.id));
        }
        Scheme::Gitea => {
            push(&mut out, "X-Gitea-Signature", hex_mac(key, &[msg.body]));
            push_some(&mut out, "X-Gitea-Event", msg.event);
            push_some(&mut out, "X-Gitea-Delivery", Some(msg.id));
        }
        Scheme::Bitbucket => {
            push(&mut out, "X-Hub-Signature", format!("sha256={}", hex_mac(key, &[msg.body])));
            push_some(&mut out, "X-Event-Key", msg.event);
            push_some(&mut out, "X-Request-UUID", Some(msg.id));
        }
        Scheme::Infisical => {
            // The body must carry `"timestamp": <the same ms>`; Infisical itself signs that way.
            let t = msg.timestamp_ms.to_string();
            push(&mut out, "x-infisical-signature", format!("t={t};{}", hex_mac(key, &[msg.body])));
        }
        Scheme::Standard => {
            if msg.id.is_empty() {
                return Err(SignError::Unverifiable("Standard Webhooks needs a message id"));
            }
            let key =
                crate::verify::standard_key(secret).ok_or(SignError::BadSecret("whsec_ must be followed by base64"))?;
            let signature =
                mac::compute(Algorithm::Sha256, &key, &[msg.id.as_bytes(), b".", seconds.as_bytes(), b".", msg.body]);
            push(&mut out, "webhook-id", msg.id);
            push(&mut out, "webhook-timestamp", seconds);
            push(&mut out, "webhook-signature", format!("v1,{}", mac::encode(Encoding::Base64, &signature)));
        }
        Scheme::Stripe => {
            let v1 = hex_mac(key, &[seconds.as_bytes(), b".", msg.body]);
            push(&mut out, "Stripe-Signature", format!("t={seconds},v1={v1}"));
        }
        Scheme::Slack => {
            let v0 = hex_mac(key, &[b"v0:", seconds.as_bytes(), b":", msg.body]);
            push(&mut out, "X-Slack-Request-Timestamp", seconds.as_str());
            push(&mut out, "X-Slack-Signature", format!("v0={v0}"));
        }
        Scheme::Hmac(o) => hmac_headers(&mut out, o, key, msg)?,
        Scheme::Token(o) => token_headers(&mut out, o, token_text(key)?, msg),
    }
    Ok(out)
}

fn hmac_headers(
    out: &mut Vec<(String, String)>,
    o: &HmacOptions,
    key: &[u8],
    msg: &Message<'_>,
) -> Result<(), SignError> {
    // The receiver substitutes only what it is sent: no timestamp header means an empty `{timestamp}`.
    let timestamp = match (&o.timestamp_header, o.timestamp_unit) {
        (None, _) => String::new(),
        (Some(_), TimeUnit::Seconds) => msg.timestamp_ms.div_euclid(1000).to_string(),
        (Some(_), TimeUnit::Millis) => msg.timestamp_ms.to_string(),
    };
    if o.content.contains("{id}") && (o.id_header.is_none() || msg.id.is_empty()) {
        return Err(SignError::Unverifiable("{id} is signed but no id header carries it"));
    }
    let content = crate::verify::signed_content(&o.content, msg.body, &timestamp, msg.id);
    let signature = mac::encode(o.encoding, &mac::compute(o.algorithm, key, &[&content]));
    push(out, &o.signature_header, format!("{}{signature}", o.prefix));
    if let Some(name) = &o.timestamp_header {
        push(out, name, timestamp);
    }
    if let Some(name) = &o.id_header {
        push_some(out, name, Some(msg.id));
    }
    if let EventFrom::Header(name) = &o.event {
        push_some(out, name, msg.event);
    }
    Ok(())
}

fn token_headers(out: &mut Vec<(String, String)>, o: &TokenOptions, token: &str, msg: &Message<'_>) {
    if o.header.trim().eq_ignore_ascii_case("authorization") {
        push(out, "Authorization", format!("Bearer {token}"));
    } else {
        push(out, &o.header, token);
    }
    if let Some(name) = &o.id_header {
        push_some(out, name, Some(msg.id));
    }
    if let EventFrom::Header(name) = &o.event {
        push_some(out, name, msg.event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Inbound, Verifier};
    use std::time::Duration;

    const NOW: i64 = 1_700_000_000_456;

    fn schemes() -> Vec<(Scheme, &'static str)> {
        let hmac = HmacOptions {
            signature_header: "X-Webhook-Signature".into(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: String::new(),
            timestamp_header: Some("X-Webhook-Timestamp".into()),
            timestamp_unit: TimeUnit::Millis,
            content: "{timestamp}.{body}".into(),
            id_header: Some("X-Webhook-Id".into()),
            event: EventFrom::Header("X-Webhook-Event".into()),
        };
        let shopify = HmacOptions {
            signature_header: "X-Shopify-Hmac-Sha256".into(),
            encoding: Encoding::Base64,
            timestamp_header: None,
            content: "{body}".into(),
            algorithm: Algorithm::Sha512,
            prefix: "sha512=".into(),
            id_header: None,
            event: EventFrom::None,
            timestamp_unit: TimeUnit::Seconds,
        };
        let token = TokenOptions {
            header: "authorization".into(),
            query_param: None,
            id_header: Some("x-request-id".into()),
            event: EventFrom::Header("x-event".into()),
        };
        vec![
            (Scheme::Github { allow_sha1: false }, "gh-secret"),
            (Scheme::Gitlab, "gl-token"),
            (Scheme::Gitea, "gt-secret"),
            (Scheme::Bitbucket, "bb-secret"),
            (Scheme::Infisical, "inf-secret"),
            (Scheme::Standard, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            (Scheme::Stripe, "whsec_stripe"),
            (Scheme::Slack, "8f742231b10e8888abcd99yyyzzz85a5"),
            (Scheme::Hmac(hmac), "partner"),
            (Scheme::Hmac(shopify), "shop"),
            (Scheme::Token(token), "t0k3n"),
        ]
    }

    fn header_map(pairs: &[(String, String)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn what_is_signed_verifies_for_every_scheme() {
        let body = format!(r#"{{"type":"a.b","id":"evt_1","event":"secrets.modified","timestamp":{NOW}}}"#);
        for (scheme, secret) in schemes() {
            let secret = Secret::new(secret.as_bytes().to_vec());
            let msg = Message { id: "msg_1", event: Some("push"), timestamp_ms: NOW, body: body.as_bytes() };
            let headers = header_map(&headers(&scheme, &secret, &msg).unwrap());
            let verifier =
                Verifier { scheme: scheme.clone(), secrets: vec![secret], tolerance: Duration::from_secs(300) };
            let inbound = Inbound { headers: &headers, body: body.as_bytes(), query: None, now_ms: NOW + 1000 };
            let verified = verifier.verify(&inbound);
            assert!(verified.is_ok(), "{}: {verified:?}", scheme_name(&scheme));

            let tampered = format!("{body} ");
            let inbound = Inbound { headers: &headers, body: tampered.as_bytes(), query: None, now_ms: NOW + 1000 };
            if !matches!(scheme, Scheme::Gitlab | Scheme::Token(_)) {
                assert!(verifier.verify(&inbound).is_err(), "{} accepted a tampered body", scheme_name(&scheme));
            }
        }
    }

    #[test]
    fn github_signing_matches_the_documented_vector() {
        let secret = Secret::new(b"It's a Secret to Everybody".to_vec());
        let msg = Message { id: "d", event: None, timestamp_ms: 0, body: b"Hello, World!" };
        let headers = headers(&Scheme::Github { allow_sha1: false }, &secret, &msg).unwrap();
        assert_eq!(headers[0].1, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    }

    #[test]
    fn standard_signing_matches_the_documented_vector() {
        let secret = Secret::new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec());
        let msg = Message {
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            event: None,
            timestamp_ms: 1_614_265_330_000,
            body: br#"{"test": 2432232314}"#,
        };
        let headers = headers(&Scheme::Standard, &secret, &msg).unwrap();
        assert_eq!(headers[2], ("webhook-signature".into(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()));
    }

    #[test]
    fn unusable_secrets_are_refused() {
        let msg = Message { id: "m", event: None, timestamp_ms: 0, body: b"" };
        assert!(headers(&Scheme::Standard, &Secret::new(b"whsec_!!!".to_vec()), &msg).is_err());
        assert!(headers(&Scheme::Gitea, &Secret::new(Vec::new()), &msg).is_err());
    }
}
