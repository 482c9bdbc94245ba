//! Standard Webhooks: `webhook-id`, `webhook-timestamp` (s), `webhook-signature` (`v1,<base64>` list) over
//! `id.timestamp.body`, with `whsec_<base64>` secrets.

use base64::Engine;

use super::signing::{push, Lines, Message, SignError};
use super::{
    body_field, header, mac, parse_time, replay_key, Algorithm, Check, Encoding, Inbound, Secret, TimeUnit, Verified,
    Verifier, VerifyError,
};

/// The HMAC key of a Standard Webhooks secret: base64 after `whsec_`, else the bytes as written.
pub fn key(secret: &Secret) -> Option<Vec<u8>> {
    let raw = secret.expose();
    match raw.strip_prefix(b"whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).ok().filter(|k| !k.is_empty()),
        None => Some(raw.to_vec()).filter(|k| !k.is_empty()),
    }
}

/// Check the three headers; returns the message id and the timestamp (Unix milliseconds).
pub(super) fn check_headers(v: &Verifier, req: &Inbound<'_>) -> Result<(String, i64), VerifyError> {
    let signatures = header(req, "webhook-signature").ok_or(VerifyError::MissingSignature)?;
    let id = header(req, "webhook-id").ok_or(VerifyError::MissingSignature)?;
    let timestamp = header(req, "webhook-timestamp").ok_or(VerifyError::MissingSignature)?;
    let at = parse_time(timestamp, TimeUnit::Seconds).ok_or(VerifyError::InvalidSignature)?;
    v.check_time(at, req.now_ms)?;
    let keys: Vec<Vec<u8>> = v.secrets.iter().filter_map(key).collect();
    if keys.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", req.body];
    let mut ok = false;
    for candidate in signatures.split_whitespace() {
        if let Some(b64) = candidate.strip_prefix("v1,") {
            ok |= mac::matches_any(keys.iter().map(Vec::as_slice), Algorithm::Sha256, Encoding::Base64, b64, &parts);
        }
    }
    if !ok {
        return Err(VerifyError::InvalidSignature);
    }
    Ok((id.to_string(), at))
}

fn verify(v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
    let (id, at) = check_headers(v, req)?;
    Ok(Verified { event: body_field(req.body, "type")?, delivery: Some(id), replay: Some(replay_key(at, req.body)) })
}

#[derive(Debug)]
pub(super) struct Standard;

impl Check for Standard {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        verify(v, req)
    }

    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        if msg.id.is_empty() {
            return Err(SignError::Unverifiable("Standard Webhooks needs a message id"));
        }
        let key = key(secret).ok_or(SignError::BadSecret("a whsec_ secret must be base64 after the prefix"))?;
        let seconds = msg.timestamp_ms.div_euclid(1000).to_string();
        let signature =
            mac::compute(Algorithm::Sha256, &key, &[msg.id.as_bytes(), b".", seconds.as_bytes(), b".", msg.body]);
        let mut out = Vec::new();
        push(&mut out, "webhook-id", msg.id);
        push(&mut out, "webhook-timestamp", seconds);
        push(&mut out, "webhook-signature", format!("v1,{}", mac::encode(Encoding::Base64, &signature)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const NOW: i64 = 1_614_265_330_000;

    #[test]
    fn the_replay_key_is_the_signed_timestamp_and_body_whatever_the_id() {
        use base64::Engine;
        let v = verifier(Scheme::named("standard").unwrap(), &[SECRET]);
        let key = standard_key(&Secret::new(SECRET.as_bytes().to_vec())).unwrap();
        let signed = |id: &str, ts: &str, body: &[u8]| {
            let mac = mac::compute(Algorithm::Sha256, &key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            let sig = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac));
            check(&v, &[("webhook-id", id), ("webhook-timestamp", ts), ("webhook-signature", &sig)], body, NOW).unwrap()
        };
        let first = signed(ID, TS, BODY);
        assert_eq!(first.replay, Some(replay_key(NOW, BODY)));
        assert_eq!(signed("msg_other", TS, BODY).replay, first.replay);
        assert_ne!(signed(ID, "1614265331", BODY).replay, first.replay);
        assert_ne!(signed(ID, TS, b"{}").replay, first.replay);
    }

    fn headers_with(sig: &str, ts: &str) -> Vec<(&'static str, String)> {
        vec![("webhook-id", ID.into()), ("webhook-timestamp", ts.into()), ("webhook-signature", sig.into())]
    }

    fn run(v: &Verifier, pairs: Vec<(&'static str, String)>, now: i64) -> Result<Verified, VerifyError> {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        check(v, &pairs, BODY, now)
    }

    #[test]
    fn the_standard_webhooks_vector_verifies() {
        let v = verifier(Scheme::named("standard").unwrap(), &[SECRET]);
        let ok = run(&v, headers_with(SIGNATURE, TS), NOW).unwrap();
        assert_eq!(ok.delivery.as_deref(), Some(ID));
        assert_eq!(ok.event, None);
    }

    #[test]
    fn one_matching_signature_in_a_list_is_enough() {
        let v = verifier(Scheme::named("standard").unwrap(), &[SECRET]);
        let list = format!("v1,Zm9v v2,abc {SIGNATURE}");
        assert!(run(&v, headers_with(&list, TS), NOW).is_ok());
    }

    #[test]
    fn a_timestamp_one_second_past_tolerance_fails() {
        let v = verifier(Scheme::named("standard").unwrap(), &[SECRET]);
        assert!(run(&v, headers_with(SIGNATURE, TS), NOW + 300_000).is_ok());
        assert_eq!(run(&v, headers_with(SIGNATURE, TS), NOW + 301_000), Err(VerifyError::StaleTimestamp));
        assert_eq!(run(&v, headers_with(SIGNATURE, TS), NOW - 301_000), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn standard_rejects_wrong_version_truncation_and_missing_headers() {
        let v = verifier(Scheme::named("standard").unwrap(), &[SECRET]);
        for bad in ["v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "v1,g0hM9SsE+OTPJTGt", "v1,", ""] {
            let expected = if bad.is_empty() { VerifyError::MissingSignature } else { VerifyError::InvalidSignature };
            assert_eq!(run(&v, headers_with(bad, TS), NOW), Err(expected), "{bad}");
        }
        let mut no_id = headers_with(SIGNATURE, TS);
        no_id.remove(0);
        assert_eq!(run(&v, no_id, NOW), Err(VerifyError::MissingSignature));
        let other = verifier(Scheme::named("standard").unwrap(), &["whsec_c2VjcmV0"]);
        assert_eq!(run(&other, headers_with(SIGNATURE, TS), NOW), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn the_event_is_the_bodys_type() {
        let v = verifier(Scheme::named("standard").unwrap(), &["whsec_c2VjcmV0"]);
        let body = br#"{"type":"invoice.paid"}"#;
        let sig = format!(
            "v1,{}",
            mac::encode(Encoding::Base64, &mac::compute(Algorithm::Sha256, b"secret", &[b"m1.1614265330.", body]))
        );
        let ok = check(&v, &[("webhook-id", "m1"), ("webhook-timestamp", TS), ("webhook-signature", &sig)], body, NOW)
            .unwrap();
        assert_eq!(ok.event.as_deref(), Some("invoice.paid"));
    }

    #[test]
    fn standard_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::named("standard").unwrap(), &["whsec_c2VjcmV0", SECRET]);
        assert!(run(&v, headers_with(SIGNATURE, TS), NOW).is_ok());
    }

    #[test]
    fn a_standard_secret_with_nothing_after_the_prefix_is_no_secret() {
        for secret in ["whsec_", "whsec_!!!not base64"] {
            let v = verifier(Scheme::named("standard").unwrap(), &[secret]);
            assert_eq!(run(&v, headers_with(SIGNATURE, TS), NOW), Err(VerifyError::NoSecret), "{secret}");
        }
        let empty = verifier(Scheme::named("standard").unwrap(), &[""]);
        assert_eq!(run(&empty, headers_with(SIGNATURE, TS), NOW), Err(VerifyError::NoSecret));
    }

    #[test]
    fn a_standard_secret_without_the_prefix_is_used_as_raw_bytes() {
        let v = verifier(Scheme::named("standard").unwrap(), &["raw-key"]);
        let sig = format!(
            "v1,{}",
            mac::encode(
                Encoding::Base64,
                &mac::compute(Algorithm::Sha256, b"raw-key", &[ID.as_bytes(), b".", TS.as_bytes(), b".", BODY])
            )
        );
        assert!(run(&v, headers_with(&sig, TS), NOW).is_ok());
    }

    #[test]
    fn standard_rejects_a_timestamp_that_is_not_a_number() {
        let v = verifier(Scheme::named("standard").unwrap(), &[SECRET]);
        assert_eq!(run(&v, headers_with(SIGNATURE, "soon"), NOW), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn a_verified_standard_body_that_is_not_json_is_malformed() {
        let v = verifier(Scheme::named("standard").unwrap(), &["whsec_c2VjcmV0"]);
        let sig = format!(
            "v1,{}",
            mac::encode(Encoding::Base64, &mac::compute(Algorithm::Sha256, b"secret", &[b"m1.1614265330.", b"<xml/>"]))
        );
        assert!(matches!(
            check(&v, &[("webhook-id", "m1"), ("webhook-timestamp", TS), ("webhook-signature", &sig)], b"<xml/>", NOW),
            Err(VerifyError::MalformedBody(_))
        ));
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
        let headers = Scheme::named("standard").unwrap().sign(&secret, &msg).unwrap();
        assert_eq!(headers[2], ("webhook-signature".into(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()));
    }
}
