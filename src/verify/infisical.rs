//! Infisical: `x-infisical-signature: t=<ms>;<hex HMAC-SHA256 of the body>`, with `t` equal to the body's
//! `timestamp` and within tolerance.

use super::signing::{hex_mac, push, Lines, Message, SignError};
use super::{
    body_field, header, mac, replay_key, Algorithm, Check, Encoding, Inbound, Secret, Verified, Verifier, VerifyError,
};

fn verify(v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
    let value = header(req, "x-infisical-signature").ok_or(VerifyError::MissingSignature)?;
    let (t, signature) = value.split_once(';').ok_or(VerifyError::InvalidSignature)?;
    let t = t.trim().strip_prefix("t=").ok_or(VerifyError::InvalidSignature)?;
    let signature = signature.trim();
    let at: i64 = t.parse().map_err(|_| VerifyError::InvalidSignature)?;
    v.check_time(at, req.now_ms)?;
    if !mac::matches_any(v.keys(), Algorithm::Sha256, Encoding::Hex, signature, &[req.body]) {
        return Err(VerifyError::InvalidSignature);
    }
    // The signed body carries the same timestamp: a replayed body with a fresh `t` does not pass.
    match body_field(req.body, "timestamp")? {
        Some(body_t) if body_t == t => {}
        _ => return Err(VerifyError::InvalidSignature),
    }
    // Hex is case-insensitive: the same signature in upper case is the same delivery, not a new one.
    Ok(Verified {
        event: body_field(req.body, "event")?,
        delivery: Some(format!("{at}.{}", signature.to_ascii_lowercase())),
        replay: Some(replay_key(at, req.body)),
    })
}

#[derive(Debug)]
pub(super) struct Infisical;

impl Check for Infisical {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        verify(v, req)
    }

    /// The body must carry `"timestamp": <the same ms>`; Infisical itself signs that way.
    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let mut out = Vec::new();
        let signature = hex_mac(secret.expose(), &[msg.body]);
        push(&mut out, "x-infisical-signature", format!("t={};{signature}", msg.timestamp_ms));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    const NOW: i64 = 1_732_000_000_000;

    fn signed(secret: &str, t: i64, body: &str) -> String {
        format!("t={t};{}", hex::encode(mac::compute(Algorithm::Sha256, secret.as_bytes(), &[body.as_bytes()])))
    }

    fn body(t: i64) -> String {
        format!(
            r#"{{"event":"secrets.modified","project":{{"workspaceId":"w1","environment":"prod","secretPath":"/"}},"timestamp":{t}}}"#
        )
    }

    #[test]
    fn an_infisical_signature_verifies_and_names_the_event() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let ok = check(&v, &[("x-infisical-signature", &signed("inf", NOW, &body(NOW)))], body(NOW).as_bytes(), NOW)
            .unwrap();
        assert_eq!(ok.event.as_deref(), Some("secrets.modified"));
        assert!(ok.delivery.unwrap().starts_with(&format!("{NOW}.")));
    }

    #[test]
    fn a_header_timestamp_that_differs_from_the_body_fails() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let header = signed("inf", NOW + 1, &body(NOW));
        assert_eq!(
            check(&v, &[("x-infisical-signature", &header)], body(NOW).as_bytes(), NOW),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn a_stale_infisical_timestamp_fails() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let old = NOW - 301_000;
        let header = signed("inf", old, &body(old));
        assert_eq!(
            check(&v, &[("x-infisical-signature", &header)], body(old).as_bytes(), NOW),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn malformed_or_wrong_infisical_signatures_fail() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let good = signed("inf", NOW, &body(NOW));
        let hex_only = good.split_once(';').unwrap().1.to_string();
        for bad in [
            hex_only.clone(),
            format!("t={NOW}"),
            format!("t={NOW};{}", &hex_only[..20]),
            signed("other", NOW, &body(NOW)),
        ] {
            assert_eq!(
                check(&v, &[("x-infisical-signature", &bad)], body(NOW).as_bytes(), NOW),
                Err(VerifyError::InvalidSignature),
                "{bad}"
            );
        }
        assert_eq!(check(&v, &[], body(NOW).as_bytes(), NOW), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn a_verified_body_that_is_not_json_is_malformed() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let header = signed("inf", NOW, "not json");
        assert!(matches!(
            check(&v, &[("x-infisical-signature", &header)], b"not json", NOW),
            Err(VerifyError::MalformedBody(_))
        ));
    }

    fn run(v: &Verifier, t: i64, now: i64) -> Result<Verified, VerifyError> {
        check(v, &[("x-infisical-signature", &signed("inf", t, &body(t)))], body(t).as_bytes(), now)
    }

    #[test]
    fn an_infisical_timestamp_exactly_at_tolerance_passes_in_either_direction() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        assert!(run(&v, NOW - 300_000, NOW).is_ok());
        assert!(run(&v, NOW + 300_000, NOW).is_ok());
    }

    #[test]
    fn an_infisical_timestamp_one_second_in_the_future_past_tolerance_fails() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        assert_eq!(run(&v, NOW + 301_000, NOW), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn infisical_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["old", "inf"]);
        assert!(run(&v, NOW, NOW).is_ok());
    }

    #[test]
    fn infisical_with_only_an_empty_secret_has_no_secret() {
        let v = verifier(Scheme::named("infisical").unwrap(), &[""]);
        assert_eq!(run(&v, NOW, NOW), Err(VerifyError::NoSecret));
    }

    #[test]
    fn infisical_rejects_an_empty_signature_and_a_wrong_prefix() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let good = signed("inf", NOW, &body(NOW));
        for bad in [format!("t={NOW};"), good.replacen("t=", "ts=", 1), good.replacen(';', ",", 1)] {
            assert_eq!(
                check(&v, &[("x-infisical-signature", &bad)], body(NOW).as_bytes(), NOW),
                Err(VerifyError::InvalidSignature),
                "{bad}"
            );
        }
        assert_eq!(
            check(&v, &[("x-infisical-signature", "")], body(NOW).as_bytes(), NOW),
            Err(VerifyError::MissingSignature)
        );
    }

    #[test]
    fn a_body_without_a_timestamp_fails() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let body = r#"{"event":"secrets.modified"}"#;
        assert_eq!(
            check(&v, &[("x-infisical-signature", &signed("inf", NOW, body))], body.as_bytes(), NOW),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn a_string_body_timestamp_as_in_infisicals_docs_verifies() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let body = format!(r#"{{"event":"secrets.modified","timestamp":"{NOW}"}}"#);
        assert!(check(&v, &[("x-infisical-signature", &signed("inf", NOW, &body))], body.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn upper_case_hex_is_the_same_delivery_and_replay_key() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let lower = signed("inf", NOW, &body(NOW));
        let upper = format!("t={NOW};{}", lower.split_once(';').unwrap().1.to_ascii_uppercase());
        let a = check(&v, &[("x-infisical-signature", &lower)], body(NOW).as_bytes(), NOW).unwrap();
        let b = check(&v, &[("x-infisical-signature", &upper)], body(NOW).as_bytes(), NOW).unwrap();
        assert_eq!(a.delivery, b.delivery);
        assert!(a.replay.is_some());
        assert_eq!(a.replay, b.replay);
        assert_ne!(run(&v, NOW + 1, NOW).unwrap().replay, a.replay, "another timestamp is another request");
    }

    #[test]
    fn the_infisical_delivery_is_the_timestamp_and_signature() {
        let v = verifier(Scheme::named("infisical").unwrap(), &["inf"]);
        let header = signed("inf", NOW, &body(NOW));
        let ok = run(&v, NOW, NOW).unwrap();
        assert_eq!(ok.delivery, Some(header.replacen("t=", "", 1).replacen(';', ".", 1)));
    }

    #[test]
    fn infisical_signing_puts_milliseconds_in_t() {
        let msg = Message { id: "", event: None, timestamp_ms: NOW, body: b"{}" };
        let lines = Scheme::named("infisical").unwrap().sign(&Secret::new(b"k".to_vec()), &msg).unwrap();
        assert_eq!(lines[0].1, format!("t={NOW};{}", hex::encode(mac::compute(Algorithm::Sha256, b"k", &[b"{}"]))));
    }
}
