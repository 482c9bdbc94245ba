//! Slack: `X-Slack-Signature: v0=<hex>` over `v0:<ts>:<body>`, with `X-Slack-Request-Timestamp` (s).

use super::signing::{hex_mac, push, Lines, Message, SignError};
use super::{
    body_field, header, mac, parse_time, replay_key, Algorithm, Check, Encoding, Inbound, Secret, TimeUnit, Verified,
    Verifier, VerifyError,
};

fn verify(v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
    let signature = header(req, "x-slack-signature").ok_or(VerifyError::MissingSignature)?;
    let ts = header(req, "x-slack-request-timestamp").ok_or(VerifyError::MissingSignature)?;
    let hex = signature.strip_prefix("v0=").ok_or(VerifyError::InvalidSignature)?;
    let at = parse_time(ts, TimeUnit::Seconds).ok_or(VerifyError::InvalidSignature)?;
    v.check_time(at, req.now_ms)?;
    if !mac::matches_any(v.keys(), Algorithm::Sha256, Encoding::Hex, hex, &[b"v0:", ts.as_bytes(), b":", req.body]) {
        return Err(VerifyError::InvalidSignature);
    }
    // Retries of one Events API event keep `event_id`; otherwise the signed pair identifies the request.
    let derived = || Some(format!("{ts}.{}", hex.to_ascii_lowercase()));
    let is_json = req.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_json {
        let delivery = body_field(req.body, "event_id")?.or_else(derived);
        return Ok(Verified { event: body_field(req.body, "type")?, delivery, replay: Some(replay_key(at, req.body)) });
    }
    // Slash commands and interactions arrive as forms; interactions carry their JSON in `payload`.
    let form: Vec<(String, String)> = url::form_urlencoded::parse(req.body).into_owned().collect();
    let event = match form.iter().find(|(k, _)| k == "payload") {
        Some((_, payload)) if !form.iter().any(|(k, _)| k == "command") => body_field(payload.as_bytes(), "type")?,
        _ => Some("command".to_string()),
    };
    Ok(Verified { event, delivery: derived(), replay: Some(replay_key(at, req.body)) })
}

#[derive(Debug)]
pub(super) struct Slack;

impl Check for Slack {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        verify(v, req)
    }

    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let seconds = msg.timestamp_ms.div_euclid(1000).to_string();
        let v0 = hex_mac(secret.expose(), &[b"v0:", seconds.as_bytes(), b":", msg.body]);
        let mut out = Vec::new();
        push(&mut out, "X-Slack-Request-Timestamp", seconds.as_str());
        push(&mut out, "X-Slack-Signature", format!("v0={v0}"));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const NOW: i64 = 1_531_420_618_000;

    #[test]
    fn slacks_documented_vector_verifies() {
        let v = verifier(Scheme::named("slack").unwrap(), &[SECRET]);
        let ok =
            check(&v, &[("x-slack-signature", SIGNATURE), ("x-slack-request-timestamp", TS)], BODY.as_bytes(), NOW)
                .unwrap();
        assert_eq!(ok.event.as_deref(), Some("command"));
        assert_eq!(ok.delivery, Some(format!("{TS}.{}", &SIGNATURE[3..])));
    }

    #[test]
    fn a_slack_request_one_second_past_tolerance_fails() {
        let v = verifier(Scheme::named("slack").unwrap(), &[SECRET]);
        let pairs = [("x-slack-signature", SIGNATURE), ("x-slack-request-timestamp", TS)];
        assert!(check(&v, &pairs, BODY.as_bytes(), NOW + 300_000).is_ok());
        assert_eq!(check(&v, &pairs, BODY.as_bytes(), NOW + 301_000), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn slack_rejects_a_wrong_prefix_or_a_shorter_signature() {
        let v = verifier(Scheme::named("slack").unwrap(), &[SECRET]);
        for bad in
            [&SIGNATURE[3..], "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", &SIGNATURE[..40]]
        {
            let pairs = [("x-slack-signature", bad), ("x-slack-request-timestamp", TS)];
            assert_eq!(check(&v, &pairs, BODY.as_bytes(), NOW), Err(VerifyError::InvalidSignature), "{bad}");
        }
        assert_eq!(
            check(&v, &[("x-slack-signature", SIGNATURE)], BODY.as_bytes(), NOW),
            Err(VerifyError::MissingSignature)
        );
    }

    fn sign(secret: &str, ts: &str, body: &[u8]) -> String {
        format!(
            "v0={}",
            hex::encode(mac::compute(Algorithm::Sha256, secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]))
        )
    }

    #[test]
    fn a_slack_request_one_second_in_the_future_past_tolerance_fails() {
        let v = verifier(Scheme::named("slack").unwrap(), &[SECRET]);
        let pairs = [("x-slack-signature", SIGNATURE), ("x-slack-request-timestamp", TS)];
        assert!(check(&v, &pairs, BODY.as_bytes(), NOW - 300_000).is_ok());
        assert_eq!(check(&v, &pairs, BODY.as_bytes(), NOW - 301_000), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn slack_rejects_an_empty_signature() {
        let v = verifier(Scheme::named("slack").unwrap(), &[SECRET]);
        let pairs = [("x-slack-signature", "v0="), ("x-slack-request-timestamp", TS)];
        assert_eq!(check(&v, &pairs, BODY.as_bytes(), NOW), Err(VerifyError::InvalidSignature));
        let pairs = [("x-slack-signature", ""), ("x-slack-request-timestamp", TS)];
        assert_eq!(check(&v, &pairs, BODY.as_bytes(), NOW), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn slack_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::named("slack").unwrap(), &["old", SECRET]);
        let pairs = [("x-slack-signature", SIGNATURE), ("x-slack-request-timestamp", TS)];
        assert!(check(&v, &pairs, BODY.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn slack_with_only_an_empty_secret_has_no_secret() {
        let v = verifier(Scheme::named("slack").unwrap(), &[""]);
        let pairs = [("x-slack-signature", SIGNATURE), ("x-slack-request-timestamp", TS)];
        assert_eq!(check(&v, &pairs, BODY.as_bytes(), NOW), Err(VerifyError::NoSecret));
    }

    #[test]
    fn a_slack_event_callback_names_its_type_and_event_id() {
        let v = verifier(Scheme::named("slack").unwrap(), &[SECRET]);
        let body = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention"}}"#;
        let sig = sign(SECRET, TS, body);
        let ok = check(&v, &[("x-slack-signature", &sig), ("x-slack-request-timestamp", TS)], body, NOW).unwrap();
        assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("event_callback"), Some("Ev1")));
    }

    #[test]
    fn a_slack_body_without_event_id_gets_a_delivery_from_timestamp_and_signature() {
        let v = verifier(Scheme::named("slack").unwrap(), &[SECRET]);
        let body = br#"{"type":"url_verification","challenge":"c"}"#;
        let sig = sign(SECRET, TS, body);
        let ok = check(&v, &[("x-slack-signature", &sig), ("x-slack-request-timestamp", TS)], body, NOW).unwrap();
        assert_eq!(ok.event.as_deref(), Some("url_verification"));
        assert_eq!(ok.delivery, Some(format!("{TS}.{}", &sig[3..])));
    }

    #[test]
    fn a_slack_interaction_names_the_payloads_type() {
        let v = verifier(Scheme::named("slack").unwrap(), &[SECRET]);
        let body = b"payload=%7B%22type%22%3A%22block_actions%22%7D";
        let sig = sign(SECRET, TS, body);
        let ok = check(&v, &[("x-slack-signature", &sig), ("x-slack-request-timestamp", TS)], body, NOW).unwrap();
        assert_eq!(ok.event.as_deref(), Some("block_actions"));
    }

    #[test]
    fn slack_signing_matches_the_documented_vector() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let secret = Secret::new(b"8f742231b10e8888abcd99yyyzzz85a5".to_vec());
        let msg = Message { id: "", event: None, timestamp_ms: 1_531_420_618_000, body: body.as_bytes() };
        let lines = Scheme::named("slack").unwrap().sign(&secret, &msg).unwrap();
        assert!(lines.contains(&("X-Slack-Request-Timestamp".into(), "1531420618".into())));
        assert!(lines.contains(&(
            "X-Slack-Signature".into(),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".into()
        )));
    }
}
