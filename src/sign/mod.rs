//! sign: signatures for outbound webhooks and for `hookgate sign`, the mirror image of `verify`.
//!
//! A thin façade: each provider signs in its own file under `src/verify/` (next to its check), found
//! through the provider table. What `headers` produces verifies under `verify::Verifier` with the same
//! secret (tested there, provider by provider, from the table).

use crate::verify::mac;
use crate::verify::{Algorithm, Scheme, Secret};

pub use crate::verify::{Message, SignError};

/// The header lines (name, value) that make `msg` verify under `scheme` with `secret`.
pub fn headers(scheme: &Scheme, secret: &Secret, msg: &Message<'_>) -> Result<Vec<(String, String)>, SignError> {
    scheme.sign(secret, msg)
}

/// Lower-case hex HMAC of `data` under `key`.
pub fn hmac_hex(algorithm: Algorithm, key: &[u8], data: &[u8]) -> String {
    hex::encode(mac::compute(algorithm, key, &[data]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{
        Encoding, EventFrom, HmacOptions, Inbound, TimeUnit, TokenOptions, Verified, Verifier, VerifyError,
    };
    use std::time::Duration;

    const NOW: i64 = 1_700_000_000_456;

    fn header_map(pairs: &[(String, String)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn unusable_secrets_are_refused() {
        let msg = Message { id: "m", event: None, timestamp_ms: 0, body: b"" };
        assert!(headers(&Scheme::named("standard").unwrap(), &Secret::new(b"whsec_!!!".to_vec()), &msg).is_err());
        assert!(headers(&Scheme::named("gitea").unwrap(), &Secret::new(Vec::new()), &msg).is_err());
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
    fn signed_header_schemes_carry_event_and_delivery_through() {
        let msg = Message { id: "d-1", event: Some("push"), timestamp_ms: NOW, body: b"{}" };
        for scheme in [
            Scheme::github(true),
            Scheme::named("gitlab").unwrap(),
            Scheme::named("gitea").unwrap(),
            Scheme::named("bitbucket").unwrap(),
        ] {
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
            let ok = verify_signed(&Scheme::hmac(options.clone()), &["k"], &msg, NOW + 299_000).unwrap();
            assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("order.paid"), Some("m-9")), "{options:?}");
        }
    }

    #[test]
    fn a_token_in_a_custom_header_verifies() {
        let options =
            TokenOptions { header: "x-api-token".into(), query_param: None, id_header: None, event: EventFrom::None };
        let msg = Message { id: "m", event: None, timestamp_ms: NOW, body: b"" };
        let lines = headers(&Scheme::token(options.clone()), &Secret::new(b"tok".to_vec()), &msg).unwrap();
        assert_eq!(lines, vec![("x-api-token".to_string(), "tok".to_string())]);
        assert!(verify_signed(&Scheme::token(options), &["tok"], &msg, NOW).is_ok());
    }

    #[test]
    fn hmac_hex_matches_githubs_documented_vector() {
        assert_eq!(
            hmac_hex(Algorithm::Sha256, b"It's a Secret to Everybody", b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
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
            headers(&Scheme::hmac(options), &Secret::new(b"k".to_vec()), &msg),
            Err(SignError::Unverifiable(_))
        ));
        assert!(matches!(
            headers(&Scheme::named("standard").unwrap(), &Secret::new(b"whsec_c2VjcmV0".to_vec()), &msg_with_id("")),
            Err(SignError::Unverifiable(_))
        ));
    }

    fn msg_with_id(id: &str) -> Message<'_> {
        Message { id, event: None, timestamp_ms: 0, body: b"" }
    }

    #[test]
    fn tokens_that_cannot_travel_in_a_header_are_refused() {
        let token = Scheme::token(TokenOptions {
            header: "authorization".into(),
            query_param: None,
            id_header: None,
            event: EventFrom::None,
        });
        for bad in [&b"line\nbreak"[..], b" padded", b"\xff\xfe"] {
            let bad = bad.to_vec();
            assert!(headers(&token, &Secret::new(bad.clone()), &msg_with_id("m")).is_err(), "{bad:?}");
            assert!(headers(&Scheme::named("gitlab").unwrap(), &Secret::new(bad), &msg_with_id("m")).is_err());
        }
    }
}
