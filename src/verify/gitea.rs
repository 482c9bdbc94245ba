//! Gitea and Forgejo: bare hex HMAC-SHA256 of the body in `X-Gitea-Signature` / `X-Forgejo-Signature`.

use super::signing::{hex_mac, push, push_some, Lines, Message, SignError};
use super::{header, header_owned, mac, Algorithm, Check, Encoding, Inbound, Secret, Verified, Verifier, VerifyError};

#[derive(Debug)]
pub(super) struct Gitea;

impl Check for Gitea {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let presented = header(req, "x-gitea-signature")
            .or_else(|| header(req, "x-forgejo-signature"))
            .ok_or(VerifyError::MissingSignature)?;
        if !mac::matches_any(v.keys(), Algorithm::Sha256, Encoding::Hex, presented, &[req.body]) {
            return Err(VerifyError::InvalidSignature);
        }
        Ok(Verified {
            event: header_owned(req, "x-gitea-event").or_else(|| header_owned(req, "x-forgejo-event")),
            delivery: header_owned(req, "x-gitea-delivery").or_else(|| header_owned(req, "x-forgejo-delivery")),
            replay: None,
        })
    }

    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let mut out = Vec::new();
        push(&mut out, "X-Gitea-Signature", hex_mac(secret.expose(), &[msg.body]));
        push_some(&mut out, "X-Gitea-Event", msg.event);
        push_some(&mut out, "X-Gitea-Delivery", Some(msg.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    fn sig(secret: &str, body: &[u8]) -> String {
        hex::encode(mac::compute(Algorithm::Sha256, secret.as_bytes(), &[body]))
    }

    #[test]
    fn gitea_and_forgejo_signatures_verify() {
        let v = verifier(Scheme::named("gitea").unwrap(), &["s3"]);
        let body = br#"{"ref":"refs/heads/main"}"#;
        let ok = check(
            &v,
            &[("x-gitea-signature", &sig("s3", body)), ("x-gitea-event", "push"), ("x-gitea-delivery", "g-1")],
            body,
            0,
        )
        .unwrap();
        assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("push"), Some("g-1")));
        let ok = check(&v, &[("x-forgejo-signature", &sig("s3", body)), ("x-forgejo-event", "push")], body, 0).unwrap();
        assert_eq!(ok.event.as_deref(), Some("push"));
    }

    #[test]
    fn gitea_rejects_prefixed_truncated_and_missing_signatures() {
        let v = verifier(Scheme::named("gitea").unwrap(), &["s3"]);
        let good = sig("s3", b"x");
        for bad in [format!("sha256={good}"), good[..10].to_string(), sig("other", b"x")] {
            assert_eq!(check(&v, &[("x-gitea-signature", &bad)], b"x", 0), Err(VerifyError::InvalidSignature));
        }
        assert_eq!(check(&v, &[], b"x", 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn gitea_rejects_an_empty_signature_and_non_hex_garbage() {
        let v = verifier(Scheme::named("gitea").unwrap(), &["s3"]);
        assert_eq!(check(&v, &[("x-gitea-signature", "")], b"x", 0), Err(VerifyError::MissingSignature));
        let garbage = "g".repeat(64);
        assert_eq!(check(&v, &[("x-gitea-signature", &garbage)], b"x", 0), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn gitea_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::named("gitea").unwrap(), &["old", "s3"]);
        assert!(check(&v, &[("x-gitea-signature", &sig("s3", b"x"))], b"x", 0).is_ok());
    }

    #[test]
    fn gitea_with_only_an_empty_secret_has_no_secret() {
        let v = verifier(Scheme::named("gitea").unwrap(), &[""]);
        assert_eq!(check(&v, &[("x-gitea-signature", &sig("", b"x"))], b"x", 0), Err(VerifyError::NoSecret));
    }

    #[test]
    fn forgejo_names_its_delivery() {
        let v = verifier(Scheme::named("gitea").unwrap(), &["s3"]);
        let ok =
            check(&v, &[("x-forgejo-signature", &sig("s3", b"x")), ("x-forgejo-delivery", "f-1")], b"x", 0).unwrap();
        assert_eq!((ok.event, ok.delivery.as_deref()), (None, Some("f-1")));
    }
}
