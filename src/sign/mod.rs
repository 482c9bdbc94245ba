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
    use crate::verify::{Inbound, Verified, Verifier, VerifyError};
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

    fn verify_signed(
        scheme: &Scheme,
        secrets: &[&str],
        msg: &Message<'_>,
        now_ms: i64,
    ) -> Result<Verified, VerifyError> {
        let secret = Secret::new(secrets[secrets.len() - 1].as_bytes().to_vec());
        let headers = header_map(&headers(scheme, &secret, msg).unwrap());
        let verifier = Verifier {
            scheme: scheme.clone(),
            secrets: secrets.iter().map(|s| Secret::new(s.as_bytes().to_vec())).collect(),
            tolerance: Duration::from_secs(300),
        };
        verifier.verify(&Inbound { headers: &headers, body: msg.body, query: None, now_ms })
    }

    #[test]
    fn signed_requests_verify_with_the_new_secret_during_rotation() {
        let body = format!(r#"{{"type":"a.b","id":"evt_1","event":"e","timestamp":{NOW}}}"#);
        let msg = Message { id: "msg_1", event: Some("push"), timestamp_ms: NOW, body: body.as_bytes() };
        for (scheme, secret) in schemes() {
            let old = if scheme == Scheme::Standard { "whsec_b2xk" } else { "old" };
            assert!(verify_signed(&scheme, &[old, secret], &msg, NOW).is_ok(), "{}", scheme_name(&scheme));
        }
    }

    #[test]
    fn signed_header_schemes_carry_event_and_delivery_through() {
        let msg = Message { id: "d-1", event: Some("push"), timestamp_ms: NOW, body: b"{}" };
        for scheme in [Scheme::Github { allow_sha1: true }, Scheme::Gitlab, Scheme::Gitea, Scheme::Bitbucket] {
            let ok = verify_signed(&scheme, &["s3cret"], &msg, NOW).unwrap();
            assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("push"), Some("d-1")), "{scheme:?}");
        }
    }

    #[test]
    fn signed_hmac_variants_verify() {
        let base = HmacOptions {
            signature_header: "X-Sig".into(),
            algorithm: Algorithm::Sha1,
            encoding: Encoding::Base64,
            prefix: "v1=".into(),
            timestamp_header: Some("X-Ts".into()),
            timestamp_unit: TimeUnit::Seconds,
            content: "{id}:{timestamp}:{body}".into(),
            id_header: Some("X-Id".into()),
            event: EventFrom::Field("type".into()),
        };
        let untimed = HmacOptions { timestamp_header: None, content: "{timestamp}{body}".into(), ..base.clone() };
        let msg = Message { id: "m-9", event: None, timestamp_ms: NOW, body: br#"{"type":"order.paid"}"# };
        for options in [base, untimed] {
            let ok = verify_signed(&Scheme::Hmac(options.clone()), &["k"], &msg, NOW + 299_000).unwrap();
            assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("order.paid"), Some("m-9")), "{options:?}");
        }
    }

    #[test]
    fn a_token_in_a_custom_header_verifies() {
        let options =
            TokenOptions { header: "x-api-token".into(), query_param: None, id_header: None, event: EventFrom::None };
        let msg = Message { id: "m", event: None, timestamp_ms: NOW, body: b"" };
        let lines = headers(&Scheme::Token(options.clone()), &Secret::new(b"tok".to_vec()), &msg).unwrap();
        assert_eq!(lines, vec![("x-api-token".to_string(), "tok".to_string())]);
        assert!(verify_signed(&Scheme::Token(options), &["tok"], &msg, NOW).is_ok());
    }

    #[test]
    fn a_stale_signature_does_not_verify() {
        let body = format!(r#"{{"type":"a","id":"e","event":"e","timestamp":{}}}"#, NOW - 301_000);
        let msg = Message { id: "m", event: None, timestamp_ms: NOW - 301_000, body: body.as_bytes() };
        for (scheme, secret) in schemes() {
            let timed = match &scheme {
                Scheme::Infisical | Scheme::Standard | Scheme::Stripe | Scheme::Slack => true,
                Scheme::Hmac(o) => o.timestamp_header.is_some(),
                _ => false,
            };
            if timed {
                assert_eq!(
                    verify_signed(&scheme, &[secret], &msg, NOW),
                    Err(VerifyError::StaleTimestamp),
                    "{scheme:?}"
                );
            }
        }
    }

    #[test]
    fn slack_signing_matches_the_documented_vector() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let secret = Secret::new(b"8f742231b10e8888abcd99yyyzzz85a5".to_vec());
        let msg = Message { id: "", event: None, timestamp_ms: 1_531_420_618_000, body: body.as_bytes() };
        let lines = headers(&Scheme::Slack, &secret, &msg).unwrap();
        assert!(lines.contains(&("X-Slack-Request-Timestamp".into(), "1531420618".into())));
        assert!(lines.contains(&(
            "X-Slack-Signature".into(),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".into()
        )));
    }

    #[test]
    fn hmac_hex_matches_githubs_documented_vector() {
        assert_eq!(
            hmac_hex(Algorithm::Sha256, b"It's a Secret to Everybody", b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn github_signing_leaves_out_an_absent_event_and_delivery() {
        let msg = Message { id: "", event: None, timestamp_ms: 0, body: b"x" };
        let lines = headers(&Scheme::Github { allow_sha1: false }, &Secret::new(b"k".to_vec()), &msg).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, "X-Hub-Signature-256");
    }

    #[test]
    fn infisical_signing_puts_milliseconds_in_t() {
        let msg = Message { id: "", event: None, timestamp_ms: NOW, body: b"{}" };
        let lines = headers(&Scheme::Infisical, &Secret::new(b"k".to_vec()), &msg).unwrap();
        assert_eq!(lines[0].1, format!("t={NOW};{}", hmac_hex(Algorithm::Sha256, b"k", b"{}")));
    }

    #[test]
    fn signing_an_id_no_header_carries_is_refused() {
        let options = HmacOptions {
            signature_header: "x-sig".into(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: String::new(),
            timestamp_header: None,
            timestamp_unit: TimeUnit::Millis,
            content: "{id}.{body}".into(),
            id_header: None,
            event: EventFrom::None,
        };
        let msg = Message { id: "m", event: None, timestamp_ms: 0, body: b"" };
        assert!(matches!(
            headers(&Scheme::Hmac(options), &Secret::new(b"k".to_vec()), &msg),
            Err(SignError::Unverifiable(_))
        ));
        assert!(matches!(
            headers(&Scheme::Standard, &Secret::new(b"whsec_c2VjcmV0".to_vec()), &msg_with_id("")),
            Err(SignError::Unverifiable(_))
        ));
    }

    fn msg_with_id(id: &str) -> Message<'_> {
        Message { id, event: None, timestamp_ms: 0, body: b"" }
    }

    #[test]
    fn tokens_that_cannot_travel_in_a_header_are_refused() {
        let token = Scheme::Token(TokenOptions {
            header: "authorization".into(),
            query_param: None,
            id_header: None,
            event: EventFrom::None,
        });
        for bad in [&b"line\nbreak"[..], b" padded", b"\xff\xfe"] {
            let bad = bad.to_vec();
            assert!(headers(&token, &Secret::new(bad.clone()), &msg_with_id("m")).is_err(), "{bad:?}");
            assert!(headers(&Scheme::Gitlab, &Secret::new(bad), &msg_with_id("m")).is_err());
        }
    }

    #[test]
    fn every_scheme_has_its_configuration_name() {
        let names: Vec<&str> = schemes().iter().map(|(s, _)| scheme_name(s)).collect();
        assert_eq!(
            names,
            [
                "github",
                "gitlab",
                "gitea",
                "bitbucket",
                "infisical",
                "standard",
                "stripe",
                "slack",
                "hmac",
                "hmac",
                "token"
            ]
        );
    }
}
