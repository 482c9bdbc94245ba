//! GitHub: `X-Hub-Signature-256: sha256=<hex>` over the raw body (`X-Hub-Signature` sha1 only when allowed).

use std::sync::Arc;

use super::signing::{hex_mac, push, push_some, Lines, Message, SignError};
use super::{
    header, header_owned, mac, Algorithm, Check, Encoding, Inbound, KeyError, Keys, Scheme, Secret, Verified, Verifier,
    VerifyError,
};

#[derive(Debug)]
struct Github {
    allow_sha1: bool,
}

pub(super) fn configure(keys: &Keys) -> Result<Arc<dyn Check>, KeyError> {
    Ok(Arc::new(Github { allow_sha1: keys.flag("allow_sha1")?.unwrap_or(false) }))
}

impl Scheme {
    /// GitHub's scheme; `allow_sha1` also accepts the legacy `X-Hub-Signature: sha1=…`.
    pub fn github(allow_sha1: bool) -> Scheme {
        Scheme::with("github", Arc::new(Github { allow_sha1 }))
    }
}

impl Check for Github {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let (presented, algorithm) = match header(req, "x-hub-signature-256") {
            Some(sig) => (sig.strip_prefix("sha256=").ok_or(VerifyError::InvalidSignature)?, Algorithm::Sha256),
            None if self.allow_sha1 => match header(req, "x-hub-signature") {
                Some(sig) => (sig.strip_prefix("sha1=").ok_or(VerifyError::InvalidSignature)?, Algorithm::Sha1),
                None => return Err(VerifyError::MissingSignature),
            },
            None => return Err(VerifyError::MissingSignature),
        };
        if !mac::matches_any(v.keys(), algorithm, Encoding::Hex, presented, &[req.body]) {
            return Err(VerifyError::InvalidSignature);
        }
        Ok(Verified {
            event: header_owned(req, "x-github-event"),
            delivery: header_owned(req, "x-github-delivery"),
            replay: None,
        })
    }

    /// Always SHA-256, whatever `allow_sha1` lets in.
    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let mut out = Vec::new();
        push(&mut out, "X-Hub-Signature-256", format!("sha256={}", hex_mac(secret.expose(), &[msg.body])));
        push_some(&mut out, "X-GitHub-Event", msg.event);
        push_some(&mut out, "X-GitHub-Delivery", Some(msg.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn github() -> Verifier {
        verifier(Scheme::github(false), &[SECRET])
    }

    #[test]
    fn githubs_documented_vector_verifies() {
        let ok = check(
            &github(),
            &[("x-hub-signature-256", SIGNATURE), ("x-github-event", "push"), ("x-github-delivery", "d-1")],
            BODY,
            0,
        )
        .unwrap();
        assert_eq!(ok.event.as_deref(), Some("push"));
        assert_eq!(ok.delivery.as_deref(), Some("d-1"));
    }

    #[test]
    fn github_rejects_a_wrong_body_or_secret() {
        assert_eq!(
            check(&github(), &[("x-hub-signature-256", SIGNATURE)], b"Hello, World?", 0),
            Err(VerifyError::InvalidSignature)
        );
        let other = verifier(Scheme::github(false), &["another"]);
        assert_eq!(check(&other, &[("x-hub-signature-256", SIGNATURE)], BODY, 0), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn github_rejects_truncated_empty_and_unprefixed_signatures() {
        let truncated = &SIGNATURE[..SIGNATURE.len() - 2];
        for sig in [truncated, "sha256=", &SIGNATURE[7..], "sha1=757107ea", "sha256=zz"] {
            assert_eq!(
                check(&github(), &[("x-hub-signature-256", sig)], BODY, 0),
                Err(VerifyError::InvalidSignature),
                "{sig}"
            );
        }
    }

    #[test]
    fn github_without_a_signature_is_missing() {
        assert_eq!(check(&github(), &[], BODY, 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn github_accepts_any_secret_during_rotation() {
        let v = verifier(Scheme::github(false), &["old", SECRET]);
        assert!(check(&v, &[("x-hub-signature-256", SIGNATURE)], BODY, 0).is_ok());
    }

    #[test]
    fn github_sha1_is_refused_unless_allowed() {
        let sha1 = format!("sha1={}", hex::encode(mac::compute(Algorithm::Sha1, SECRET.as_bytes(), &[BODY])));
        assert_eq!(check(&github(), &[("x-hub-signature", &sha1)], BODY, 0), Err(VerifyError::MissingSignature));
        let allowing = verifier(Scheme::github(true), &[SECRET]);
        assert!(check(&allowing, &[("x-hub-signature", &sha1)], BODY, 0).is_ok());
    }

    #[test]
    fn an_empty_secret_never_verifies() {
        let v = verifier(Scheme::github(false), &[""]);
        let sig = format!("sha256={}", hex::encode(mac::compute(Algorithm::Sha256, b"", &[BODY])));
        assert_eq!(check(&v, &[("x-hub-signature-256", &sig)], BODY, 0), Err(VerifyError::NoSecret));
    }

    #[test]
    fn github_rejects_an_empty_signature_header() {
        assert_eq!(check(&github(), &[("x-hub-signature-256", "")], BODY, 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn github_rejects_non_hex_garbage_of_the_right_length() {
        let garbage = format!("sha256={}", "zz".repeat(32));
        assert_eq!(check(&github(), &[("x-hub-signature-256", &garbage)], BODY, 0), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn github_rejects_a_wrong_prefix_case() {
        let upper = SIGNATURE.replace("sha256=", "SHA256=");
        assert_eq!(check(&github(), &[("x-hub-signature-256", &upper)], BODY, 0), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn github_skips_empty_secrets_but_has_no_secret_without_any() {
        let v = verifier(Scheme::github(false), &["", SECRET]);
        assert!(check(&v, &[("x-hub-signature-256", SIGNATURE)], BODY, 0).is_ok());
        let none = verifier(Scheme::github(false), &[]);
        assert_eq!(check(&none, &[("x-hub-signature-256", SIGNATURE)], BODY, 0), Err(VerifyError::NoSecret));
    }

    #[test]
    fn github_without_event_or_delivery_headers_leaves_them_unset() {
        let ok = check(&github(), &[("X-Hub-Signature-256", SIGNATURE)], BODY, 0).unwrap();
        assert_eq!(ok, Verified::default());
    }

    #[test]
    fn github_prefers_sha256_when_both_signatures_are_sent() {
        let v = verifier(Scheme::github(true), &[SECRET]);
        let bad_256 = format!("sha256={}", "00".repeat(32));
        let sha1 = format!("sha1={}", hex::encode(mac::compute(Algorithm::Sha1, SECRET.as_bytes(), &[BODY])));
        assert_eq!(
            check(&v, &[("x-hub-signature-256", &bad_256), ("x-hub-signature", &sha1)], BODY, 0),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn github_signing_matches_the_documented_vector() {
        let msg = Message { id: "d", event: None, timestamp_ms: 0, body: BODY };
        let lines = Scheme::github(false).sign(&Secret::new(SECRET.as_bytes().to_vec()), &msg).unwrap();
        assert_eq!(lines[0], ("X-Hub-Signature-256".to_string(), SIGNATURE.to_string()));
    }

    #[test]
    fn github_signing_leaves_out_an_absent_event_and_delivery() {
        let msg = Message { id: "", event: None, timestamp_ms: 0, body: b"x" };
        let lines = Scheme::github(false).sign(&Secret::new(b"k".to_vec()), &msg).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, "X-Hub-Signature-256");
    }
}
