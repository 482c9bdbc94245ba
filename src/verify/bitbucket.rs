//! Bitbucket: `X-Hub-Signature: sha256=<hex>` over the raw body.

use super::signing::{hex_mac, push, push_some, Lines, Message, SignError};
use super::{header, header_owned, mac, Algorithm, Check, Encoding, Inbound, Secret, Verified, Verifier, VerifyError};

fn verify(v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
    let presented = header(req, "x-hub-signature").ok_or(VerifyError::MissingSignature)?;
    let hex = presented.strip_prefix("sha256=").ok_or(VerifyError::InvalidSignature)?;
    if !mac::matches_any(v.keys(), Algorithm::Sha256, Encoding::Hex, hex, &[req.body]) {
        return Err(VerifyError::InvalidSignature);
    }
    Ok(Verified {
        event: header_owned(req, "x-event-key"),
        delivery: header_owned(req, "x-request-uuid").or_else(|| header_owned(req, "x-request-id")),
        replay: None,
    })
}

#[derive(Debug)]
pub(super) struct Bitbucket;

impl Check for Bitbucket {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        verify(v, req)
    }

    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let mut out = Vec::new();
        push(&mut out, "X-Hub-Signature", format!("sha256={}", hex_mac(secret.expose(), &[msg.body])));
        push_some(&mut out, "X-Event-Key", msg.event);
        push_some(&mut out, "X-Request-UUID", Some(msg.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    #[test]
    fn bitbucket_signatures_verify_and_name_the_event() {
        let v = verifier(Scheme::named("bitbucket").unwrap(), &["bb"]);
        let body = br#"{"push":{}}"#;
        let sig = format!("sha256={}", hex::encode(mac::compute(Algorithm::Sha256, b"bb", &[body])));
        let ok =
            check(&v, &[("x-hub-signature", &sig), ("x-event-key", "repo:push"), ("x-request-uuid", "u-1")], body, 0)
                .unwrap();
        assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("repo:push"), Some("u-1")));
        let ok = check(&v, &[("x-hub-signature", &sig), ("x-request-id", "r-1")], body, 0).unwrap();
        assert_eq!(ok.delivery.as_deref(), Some("r-1"));
    }

    #[test]
    fn bitbucket_rejects_a_bare_or_wrong_signature() {
        let v = verifier(Scheme::named("bitbucket").unwrap(), &["bb"]);
        let hex = hex::encode(mac::compute(Algorithm::Sha256, b"bb", &[b"x"]));
        assert_eq!(check(&v, &[("x-hub-signature", &hex)], b"x", 0), Err(VerifyError::InvalidSignature));
        assert_eq!(check(&v, &[("x-hub-signature", "sha256=00")], b"x", 0), Err(VerifyError::InvalidSignature));
    }

    fn sig(secret: &str, body: &[u8]) -> String {
        format!("sha256={}", hex::encode(mac::compute(Algorithm::Sha256, secret.as_bytes(), &[body])))
    }

    #[test]
    fn bitbucket_without_a_signature_is_missing() {
        let v = verifier(Scheme::named("bitbucket").unwrap(), &["bb"]);
        assert_eq!(check(&v, &[], b"x", 0), Err(VerifyError::MissingSignature));
        assert_eq!(check(&v, &[("x-hub-signature", "")], b"x", 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn bitbucket_rejects_truncated_empty_and_sha1_prefixed_signatures() {
        let v = verifier(Scheme::named("bitbucket").unwrap(), &["bb"]);
        let good = sig("bb", b"x");
        for bad in [good[..good.len() - 1].to_string(), "sha256=".into(), good.replace("sha256=", "sha1=")] {
            assert_eq!(check(&v, &[("x-hub-signature", &bad)], b"x", 0), Err(VerifyError::InvalidSignature), "{bad}");
        }
    }

    #[test]
    fn bitbucket_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::named("bitbucket").unwrap(), &["old", "bb"]);
        assert!(check(&v, &[("x-hub-signature", &sig("bb", b"x"))], b"x", 0).is_ok());
    }

    #[test]
    fn bitbucket_with_only_an_empty_secret_has_no_secret() {
        let v = verifier(Scheme::named("bitbucket").unwrap(), &[""]);
        assert_eq!(check(&v, &[("x-hub-signature", &sig("", b"x"))], b"x", 0), Err(VerifyError::NoSecret));
    }
}
