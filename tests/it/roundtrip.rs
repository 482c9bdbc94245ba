//! Property tests: for every provider scheme, what `sign` produces verifies, and a flipped byte does not.

use std::time::Duration;

use base64::Engine;
use hookgate::sign::{headers as sign_headers, Message};
use hookgate::verify::{
    Algorithm, Encoding, EventFrom, HmacOptions, Inbound, Scheme, Secret, TimeUnit, TokenOptions, Verifier, PROVIDERS,
};
use proptest::prelude::*;

const TOLERANCE: Duration = Duration::from_secs(300);

fn hmac_options() -> impl Strategy<Value = HmacOptions> {
    (
        prop::sample::select(vec!["X-Webhook-Signature", "X-Shopify-Hmac-Sha256", "x-signature"]),
        prop::sample::select(vec![Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512]),
        prop::sample::select(vec![Encoding::Hex, Encoding::Base64]),
        "(sha(1|256|512)=|v1,)?",
        any::<bool>(),
        prop::sample::select(vec![TimeUnit::Seconds, TimeUnit::Millis]),
        any::<bool>(),
        0..3u8,
        0..5usize,
    )
        .prop_map(
            |(signature_header, algorithm, encoding, prefix, timestamped, timestamp_unit, with_id, event, content)| {
                // `{timestamp}` and `{id}` only where the matching header carries them to the receiver.
                let contents: Vec<&str> = match (timestamped, with_id) {
                    (true, true) => vec![
                        "{body}",
                        "{timestamp}.{body}",
                        "{id}.{timestamp}.{body}",
                        "v0:{timestamp}:{body}",
                        "{body}|{id}",
                    ],
                    (true, false) => vec!["{body}", "{timestamp}.{body}", "v0:{timestamp}:{body}"],
                    (false, true) => vec!["{body}", "{id}.{body}"],
                    (false, false) => vec!["{body}"],
                };
                HmacOptions {
                    signature_header: signature_header.to_string(),
                    algorithm,
                    encoding,
                    prefix,
                    timestamp_header: timestamped.then(|| "X-Webhook-Timestamp".to_string()),
                    timestamp_unit,
                    content: contents[content % contents.len()].to_string(),
                    id_header: with_id.then(|| "X-Webhook-Id".to_string()),
                    event: match event {
                        0 => EventFrom::Header("X-Webhook-Event".into()),
                        1 => EventFrom::Field("type".into()),
                        _ => EventFrom::None,
                    },
                }
            },
        )
}

fn token_options() -> impl Strategy<Value = TokenOptions> {
    (prop::sample::select(vec!["authorization", "x-token"]), any::<bool>(), 0..3u8).prop_map(|(header, id, event)| {
        TokenOptions {
            header: header.to_string(),
            query_param: None,
            id_header: id.then(|| "x-request-id".to_string()),
            event: match event {
                0 => EventFrom::Header("x-event".into()),
                1 => EventFrom::Field("type".into()),
                _ => EventFrom::None,
            },
        }
    })
}

/// A scheme to test, and whether its bodies must be JSON (it reads event, id or timestamp from the body).
#[derive(Debug, Clone)]
struct Case {
    scheme: Scheme,
    json: bool,
}

/// A provider from the table that takes no keys.
fn keyless() -> impl Strategy<Value = Case> {
    let names: Vec<&str> = PROVIDERS.iter().filter(|p| p.keys.is_empty()).map(|p| p.name).collect();
    prop::sample::select(names).prop_map(|name| Case {
        scheme: Scheme::named(name).unwrap(),
        json: matches!(name, "infisical" | "standard" | "stripe" | "slack"),
    })
}

fn scheme() -> impl Strategy<Value = Case> {
    prop_oneof![
        any::<bool>().prop_map(|allow_sha1| Case { scheme: Scheme::github(allow_sha1), json: false }),
        keyless(),
        hmac_options().prop_map(|o| Case { json: matches!(o.event, EventFrom::Field(_)), scheme: Scheme::hmac(o) }),
        token_options().prop_map(|o| Case { json: matches!(o.event, EventFrom::Field(_)), scheme: Scheme::token(o) }),
    ]
}

/// Schemes that check a shared token rather than a MAC of the body.
fn checks_only_a_token(scheme: &Scheme) -> bool {
    matches!(scheme.name(), "gitlab" | "token")
}

/// A secret of the shape the scheme takes: `whsec_<base64>` for Standard Webhooks, a header-safe token for
/// the token schemes, any bytes for the MAC schemes.
fn secret_for(scheme: &Scheme, raw: &[u8], token: &str) -> Secret {
    match scheme.name() {
        "standard" => {
            Secret::new(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(raw)).into_bytes())
        }
        _ if checks_only_a_token(scheme) => Secret::new(token.as_bytes().to_vec()),
        _ => Secret::new(raw.to_vec()),
    }
}

/// Schemes that read the body (event, id, timestamp) need JSON; the others sign any bytes.
fn body_for(case: &Case, raw: &[u8], event: &str, id: &str, t: i64, text: &str) -> Vec<u8> {
    if !case.json {
        return raw.to_vec();
    }
    serde_json::json!({ "type": event, "event": event, "id": id, "event_id": id, "timestamp": t, "data": text })
        .to_string()
        .into_bytes()
}

/// The header holding what is checked against the secret, as the provider table names it.
fn signature_header(scheme: &Scheme, lines: &[(String, String)]) -> String {
    let (name, _) = lines.iter().find(|(name, _)| scheme.is_credential(name)).expect("a credential header");
    name.to_ascii_lowercase()
}

fn header_map(lines: &[(String, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in lines {
        map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), http::HeaderValue::from_str(value).unwrap());
    }
    map
}

fn verify(v: &Verifier, headers: &http::HeaderMap, body: &[u8], now_ms: i64) -> bool {
    v.verify(&Inbound { headers, body, query: None, now_ms }).is_ok()
}

/// One character of the MAC changed to a different one, whatever the case (hex decoding ignores case).
fn flip_char(value: &str, at: usize) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    let i = chars.len().saturating_sub(1 + at % 8);
    chars[i] = if chars[i] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn what_sign_produces_verifies_and_a_flipped_byte_does_not(
        case in scheme(),
        raw_secret in prop::collection::vec(any::<u8>(), 1..64),
        token in "[A-Za-z0-9_.~-]{1,48}",
        decoy_first in any::<bool>(),
        raw_body in prop::collection::vec(any::<u8>(), 1..512),
        text in ".{0,64}",
        id in "[A-Za-z0-9_.-]{1,40}",
        event in "[a-z_.]{1,24}",
        now_ms in 1_000_000_000_000i64..4_000_000_000_000,
        skew_ms in -290_000i64..290_000,
        flip_at in any::<prop::sample::Index>(),
        flip_sig_at in any::<usize>(),
    ) {
        let scheme = case.scheme.clone();
        let secret = secret_for(&scheme, &raw_secret, &token);
        let t = now_ms + skew_ms;
        let body = body_for(&case, &raw_body, &event, &id, t, &text);
        let message = Message { id: &id, event: Some(&event), timestamp_ms: t, body: &body };
        let lines = sign_headers(&scheme, &secret, &message).unwrap();
        let headers = header_map(&lines);

        // During rotation another secret sits next to the right one, in either order.
        let decoy = secret_for(&scheme, b"another secret entirely", "another-token");
        let secrets = if decoy_first { vec![decoy, secret.clone()] } else { vec![secret.clone(), decoy] };
        let verifier = Verifier { scheme: scheme.clone(), secrets, tolerance: TOLERANCE };
        prop_assert!(verify(&verifier, &headers, &body, now_ms), "{scheme:?} did not verify its own signature: {lines:?}");

        // A single flipped bit anywhere in the body fails, except where only a token is checked.
        if !checks_only_a_token(&scheme) {
            let mut tampered = body.clone();
            tampered[flip_at.index(body.len())] ^= 0x01;
            prop_assert!(!verify(&verifier, &headers, &tampered, now_ms), "{scheme:?} accepted a changed body");
        }

        // A changed character of the signature (or token) fails.
        let name = signature_header(&scheme, &lines);
        let mut forged = headers.clone();
        let value = forged.get(&name).unwrap_or_else(|| panic!("{name} in {lines:?}")).to_str().unwrap().to_string();
        forged.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), flip_char(&value, flip_sig_at).parse().unwrap());
        prop_assert!(!verify(&verifier, &forged, &body, now_ms), "{scheme:?} accepted {value} changed");

        // The wrong secret alone never verifies.
        let wrong = Verifier {
            scheme: scheme.clone(),
            secrets: vec![secret_for(&scheme, b"not the secret", "not-the-token")],
            tolerance: TOLERANCE,
        };
        prop_assert!(!verify(&wrong, &headers, &body, now_ms));
    }

    #[test]
    fn a_signature_older_than_the_tolerance_fails_for_every_timestamped_scheme(
        case in prop_oneof![
            prop::sample::select(vec!["infisical", "standard", "stripe", "slack"])
                .prop_map(|name| Case { scheme: Scheme::named(name).unwrap(), json: true }),
            hmac_options()
                .prop_filter("timestamped", |o| o.timestamp_header.is_some())
                .prop_map(|o| Case { json: matches!(o.event, EventFrom::Field(_)), scheme: Scheme::hmac(o) }),
        ],
        raw_secret in prop::collection::vec(any::<u8>(), 1..64),
        now_ms in 1_000_000_000_000i64..4_000_000_000_000,
        late_ms in 1_001i64..10_000_000,
        ahead in any::<bool>(),
    ) {
        let scheme = case.scheme.clone();
        let secret = secret_for(&scheme, &raw_secret, "unused");
        // Past the tolerance by more than a second, so rounding to whole seconds cannot bring it back.
        let offset = TOLERANCE.as_millis() as i64 + late_ms;
        let t = if ahead { now_ms + offset } else { now_ms - offset };
        let body = body_for(&case, b"{}", "e", "id-1", t, "");
        let lines = sign_headers(&scheme, &secret, &Message { id: "id-1", event: Some("e"), timestamp_ms: t, body: &body }).unwrap();
        let verifier = Verifier { scheme: scheme.clone(), secrets: vec![secret], tolerance: TOLERANCE };
        prop_assert!(!verify(&verifier, &header_map(&lines), &body, now_ms), "{scheme:?} accepted a stale signature");
    }
}
