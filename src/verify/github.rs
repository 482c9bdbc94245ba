//! GitHub: `X-Hub-Signature-256: sha256=<hex>` over the raw body (`X-Hub-Signature` sha1 only when allowed).

use super::{header, header_owned, mac, Algorithm, Encoding, Inbound, Verified, Verifier, VerifyError};

pub(super) fn verify(v: &Verifier, req: &Inbound<'_>, allow_sha1: bool) -> Result<Verified, VerifyError> {
    let (presented, algorithm) = match header(req, "x-hub-signature-256") {
        Some(sig) => (sig.strip_prefix("sha256=").ok_or(VerifyError::InvalidSignature)?, Algorithm::Sha256),
        None if allow_sha1 => match header(req, "x-hub-signature") {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn github() -> Verifier {
        verifier(Scheme::Github { allow_sha1: false }, &[SECRET])
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
        let other = verifier(Scheme::Github { allow_sha1: false }, &["another"]);
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
        let v = verifier(Scheme::Github { allow_sha1: false }, &["old", SECRET]);
        assert!(check(&v, &[("x-hub-signature-256", SIGNATURE)], BODY, 0).is_ok());
    }

    #[test]
    fn github_sha1_is_refused_unless_allowed() {
        let sha1 = format!("sha1={}", hex::encode(mac::compute(Algorithm::Sha1, SECRET.as_bytes(), &[BODY])));
        assert_eq!(check(&github(), &[("x-hub-signature", &sha1)], BODY, 0), Err(VerifyError::MissingSignature));
        let allowing = verifier(Scheme::Github { allow_sha1: true }, &[SECRET]);
        assert!(check(&allowing, &[("x-hub-signature", &sha1)], BODY, 0).is_ok());
    }

    #[test]
    fn an_empty_secret_never_verifies() {
        let v = verifier(Scheme::Github { allow_sha1: false }, &[""]);
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
        let v = verifier(Scheme::Github { allow_sha1: false }, &["", SECRET]);
        assert!(check(&v, &[("x-hub-signature-256", SIGNATURE)], BODY, 0).is_ok());
        let none = verifier(Scheme::Github { allow_sha1: false }, &[]);
        assert_eq!(check(&none, &[("x-hub-signature-256", SIGNATURE)], BODY, 0), Err(VerifyError::NoSecret));
    }

    #[test]
    fn github_without_event_or_delivery_headers_leaves_them_unset() {
        let ok = check(&github(), &[("X-Hub-Signature-256", SIGNATURE)], BODY, 0).unwrap();
        assert_eq!(ok, Verified::default());
    }

    #[test]
    fn github_prefers_sha256_when_both_signatures_are_sent() {
        let v = verifier(Scheme::Github { allow_sha1: true }, &[SECRET]);
        let bad_256 = format!("sha256={}", "00".repeat(32));
        let sha1 = format!("sha1={}", hex::encode(mac::compute(Algorithm::Sha1, SECRET.as_bytes(), &[BODY])));
        assert_eq!(
            check(&v, &[("x-hub-signature-256", &bad_256), ("x-hub-signature", &sha1)], BODY, 0),
            Err(VerifyError::InvalidSignature)
        );
    }
}
