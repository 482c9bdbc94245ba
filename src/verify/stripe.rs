//! Stripe: `Stripe-Signature: t=…,v1=…[,v1=…]` over `t.body`, keyed with the whole secret string.

use super::signing::{hex_mac, push, Lines, Message, SignError};
use super::{
    body_field, header, mac, parse_time, replay_key, Algorithm, Check, Encoding, Inbound, Secret, TimeUnit, Verified,
    Verifier, VerifyError,
};

fn verify(v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
    let value = header(req, "stripe-signature").ok_or(VerifyError::MissingSignature)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => signatures.push(sig),
            _ => {}
        }
    }
    let t = timestamp.ok_or(VerifyError::InvalidSignature)?;
    if signatures.is_empty() {
        return Err(VerifyError::InvalidSignature);
    }
    let at = parse_time(t, TimeUnit::Seconds).ok_or(VerifyError::InvalidSignature)?;
    v.check_time(at, req.now_ms)?;
    let parts: [&[u8]; 3] = [t.as_bytes(), b".", req.body];
    let mut ok = false;
    for sig in signatures {
        ok |= mac::matches_any(v.keys(), Algorithm::Sha256, Encoding::Hex, sig, &parts);
    }
    if !ok {
        return Err(VerifyError::InvalidSignature);
    }
    Ok(Verified {
        event: body_field(req.body, "type")?,
        delivery: body_field(req.body, "id")?,
        replay: Some(replay_key(at, req.body)),
    })
}

#[derive(Debug)]
pub(super) struct Stripe;

impl Check for Stripe {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        verify(v, req)
    }

    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let seconds = msg.timestamp_ms.div_euclid(1000).to_string();
        let v1 = hex_mac(secret.expose(), &[seconds.as_bytes(), b".", msg.body]);
        let mut out = Vec::new();
        push(&mut out, "Stripe-Signature", format!("t={seconds},v1={v1}"));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const NOW: i64 = 1_700_000_000_000;

    fn v1(t: &str) -> String {
        hex::encode(mac::compute(Algorithm::Sha256, SECRET.as_bytes(), &[t.as_bytes(), b".", BODY]))
    }

    #[test]
    fn a_stripe_signature_verifies_among_several() {
        let v = verifier(Scheme::named("stripe").unwrap(), &[SECRET]);
        let header = format!("t=1700000000,v1={},v1={},v0=abc", "00".repeat(32), v1("1700000000"));
        let ok = check(&v, &[("stripe-signature", &header)], BODY, NOW).unwrap();
        assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("payment_intent.succeeded"), Some("evt_1")));
    }

    #[test]
    fn a_stripe_timestamp_one_second_past_tolerance_fails() {
        let v = verifier(Scheme::named("stripe").unwrap(), &[SECRET]);
        let header = format!("t=1700000000,v1={}", v1("1700000000"));
        assert!(check(&v, &[("stripe-signature", &header)], BODY, NOW + 300_000).is_ok());
        assert_eq!(check(&v, &[("stripe-signature", &header)], BODY, NOW + 301_000), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn stripe_rejects_missing_parts_and_wrong_signatures() {
        let v = verifier(Scheme::named("stripe").unwrap(), &[SECRET]);
        for bad in [
            format!("v1={}", v1("1700000000")),
            "t=1700000000".to_string(),
            format!("t=1700000001,v1={}", v1("1700000000")),
        ] {
            assert_eq!(
                check(&v, &[("stripe-signature", &bad)], BODY, NOW),
                Err(VerifyError::InvalidSignature),
                "{bad}"
            );
        }
    }

    fn valid() -> String {
        format!("t=1700000000,v1={}", v1("1700000000"))
    }

    #[test]
    fn a_stripe_timestamp_one_second_in_the_future_past_tolerance_fails() {
        let v = verifier(Scheme::named("stripe").unwrap(), &[SECRET]);
        assert!(check(&v, &[("stripe-signature", &valid())], BODY, NOW - 300_000).is_ok());
        assert_eq!(check(&v, &[("stripe-signature", &valid())], BODY, NOW - 301_000), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn stripe_rejects_empty_truncated_and_v0_only_signatures() {
        let v = verifier(Scheme::named("stripe").unwrap(), &[SECRET]);
        let good = v1("1700000000");
        for bad in [
            "t=1700000000,v1=".to_string(),
            format!("t=1700000000,v1={}", &good[..good.len() - 2]),
            format!("t=1700000000,v0={good}"),
            format!("t=1700000000,V1={good}"),
        ] {
            assert_eq!(
                check(&v, &[("stripe-signature", &bad)], BODY, NOW),
                Err(VerifyError::InvalidSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn stripe_without_a_signature_is_missing() {
        let v = verifier(Scheme::named("stripe").unwrap(), &[SECRET]);
        assert_eq!(check(&v, &[], BODY, NOW), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn stripe_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::named("stripe").unwrap(), &["whsec_old", SECRET]);
        assert!(check(&v, &[("stripe-signature", &valid())], BODY, NOW).is_ok());
    }

    #[test]
    fn stripe_with_only_an_empty_secret_has_no_secret() {
        let v = verifier(Scheme::named("stripe").unwrap(), &[""]);
        assert_eq!(check(&v, &[("stripe-signature", &valid())], BODY, NOW), Err(VerifyError::NoSecret));
    }

    #[test]
    fn a_verified_stripe_body_that_is_not_json_is_malformed() {
        let v = verifier(Scheme::named("stripe").unwrap(), &[SECRET]);
        let sig = hex::encode(mac::compute(Algorithm::Sha256, SECRET.as_bytes(), &[b"1700000000.", b"nope"]));
        assert!(matches!(
            check(&v, &[("stripe-signature", &format!("t=1700000000,v1={sig}"))], b"nope", NOW),
            Err(VerifyError::MalformedBody(_))
        ));
    }
}
