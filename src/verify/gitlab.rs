//! GitLab: `X-Gitlab-Token` equal to a secret, or Standard Webhooks headers when GitLab signs the request.

use super::signing::{push, push_some, token_text, Lines, Message, SignError};
use super::{header, header_owned, mac, replay_key, standard, Check, Inbound, Secret, Verified, Verifier, VerifyError};

#[derive(Debug)]
pub(super) struct Gitlab;

impl Check for Gitlab {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let delivery = header_owned(req, "idempotency-key").or_else(|| header_owned(req, "x-gitlab-event-uuid"));
        let event = header_owned(req, "x-gitlab-event");
        if header(req, "webhook-signature").is_some() {
            let (id, at) = standard::check_headers(v, req)?;
            return Ok(Verified { event, delivery: delivery.or(Some(id)), replay: Some(replay_key(at, req.body)) });
        }
        let token = header(req, "x-gitlab-token").ok_or(VerifyError::MissingSignature)?;
        if !mac::token_matches_any(v.keys(), token.as_bytes()) {
            return Err(VerifyError::InvalidSignature);
        }
        Ok(Verified { event, delivery, replay: None })
    }

    /// The token form: it is what GitLab sends unless told to sign.
    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let mut out = Vec::new();
        push(&mut out, "X-Gitlab-Token", token_text(secret.expose())?);
        push_some(&mut out, "X-Gitlab-Event", msg.event);
        push_some(&mut out, "Idempotency-Key", Some(msg.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    #[test]
    fn the_gitlab_token_verifies_and_names_event_and_delivery() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &["glpat-secret"]);
        let ok = check(
            &v,
            &[("x-gitlab-token", "glpat-secret"), ("x-gitlab-event", "Push Hook"), ("x-gitlab-event-uuid", "u-1")],
            b"{}",
            0,
        )
        .unwrap();
        assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("Push Hook"), Some("u-1")));
        let ok = check(
            &v,
            &[("x-gitlab-token", "glpat-secret"), ("idempotency-key", "i-1"), ("x-gitlab-event-uuid", "u")],
            b"{}",
            0,
        )
        .unwrap();
        assert_eq!(ok.delivery.as_deref(), Some("i-1"));
    }

    #[test]
    fn a_wrong_shorter_or_missing_gitlab_token_fails() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &["glpat-secret"]);
        for bad in ["glpat-secre", "glpat-secret2", "GLPAT-SECRET"] {
            assert_eq!(check(&v, &[("x-gitlab-token", bad)], b"{}", 0), Err(VerifyError::InvalidSignature));
        }
        assert_eq!(check(&v, &[], b"{}", 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn gitlab_signed_with_standard_webhooks_verifies() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        let ok = check(
            &v,
            &[
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("webhook-timestamp", "1614265330"),
                ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                ("x-gitlab-event", "Push Hook"),
            ],
            br#"{"test": 2432232314}"#,
            1_614_265_330_000,
        )
        .unwrap();
        assert_eq!(ok.delivery.as_deref(), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
        assert_eq!(ok.event.as_deref(), Some("Push Hook"));
    }

    const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const STANDARD_HEADERS: [(&str, &str); 3] = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    ];
    const STANDARD_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const STANDARD_NOW: i64 = 1_614_265_330_000;

    #[test]
    fn gitlab_rejects_an_empty_token() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &["glpat-secret"]);
        assert_eq!(check(&v, &[("x-gitlab-token", "")], b"{}", 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn gitlab_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &["old-token", "new-token"]);
        assert!(check(&v, &[("x-gitlab-token", "new-token")], b"{}", 0).is_ok());
        assert!(check(&v, &[("x-gitlab-token", "old-token")], b"{}", 0).is_ok());
    }

    #[test]
    fn gitlab_with_only_an_empty_secret_has_no_secret() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &[""]);
        assert_eq!(check(&v, &[("x-gitlab-token", "x")], b"{}", 0), Err(VerifyError::NoSecret));
    }

    #[test]
    fn gitlab_standard_webhooks_one_second_past_tolerance_fails() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &[STANDARD_SECRET]);
        assert!(check(&v, &STANDARD_HEADERS, STANDARD_BODY, STANDARD_NOW + 300_000).is_ok());
        assert_eq!(
            check(&v, &STANDARD_HEADERS, STANDARD_BODY, STANDARD_NOW + 301_000),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn gitlab_standard_webhooks_reject_a_changed_body() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &[STANDARD_SECRET]);
        assert_eq!(
            check(&v, &STANDARD_HEADERS, br#"{"test": 2432232315}"#, STANDARD_NOW),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn gitlab_never_parses_the_body() {
        let v = verifier(Scheme::named("gitlab").unwrap(), &["glpat-secret"]);
        assert!(check(&v, &[("x-gitlab-token", "glpat-secret")], b"not json", 0).is_ok());
    }
}
