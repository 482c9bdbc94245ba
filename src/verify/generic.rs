//! The configurable `hmac` provider: header, algorithm, encoding, prefix, optional timestamp and a
//! signed-content template such as `{timestamp}.{body}` (Shopify, the scenario-3 format, and many more).

use std::sync::Arc;

use super::signing::{push, push_some, Lines, Message, SignError};
use super::{
    event_from, header, header_owned, mac, parse_time, replay_key, Check, EventFrom, HmacOptions, Inbound, KeyError,
    Keys, Scheme, Secret, TimeUnit, Verified, Verifier, VerifyError,
};

/// Where outbound `hmac` signatures go unless `signature_header` says otherwise (the scenario-3 format).
pub const OUTBOUND_SIGNATURE_HEADER: &str = "X-Webhook-Signature";

pub(super) fn configure(keys: &Keys) -> Result<Arc<dyn Check>, KeyError> {
    let signature_header = keys
        .text("signature_header")?
        .ok_or_else(|| KeyError::new("signature_header", "required for provider \"hmac\""))?;
    let options = HmacOptions {
        signature_header: signature_header.to_string(),
        algorithm: keys.algorithm()?,
        encoding: keys.encoding()?,
        prefix: keys.text("prefix")?.unwrap_or_default().to_string(),
        timestamp_header: keys.text("timestamp_header")?.map(str::to_string),
        timestamp_unit: keys.timestamp_unit()?,
        content: keys.content()?,
        id_header: keys.text("id_header")?.map(str::to_string),
        event: keys.event()?,
    };
    // The receiver can only substitute what a header carries to it.
    if options.content.contains("{timestamp}") && options.timestamp_header.is_none() {
        return Err(KeyError::new("content", "uses {timestamp} but no timestamp_header is set"));
    }
    if options.content.contains("{id}") && options.id_header.is_none() {
        return Err(KeyError::new("content", "uses {id} but no id_header is set"));
    }
    Ok(Arc::new(options))
}

impl Scheme {
    /// The configurable HMAC scheme with options already built (no check of `{timestamp}`/`{id}`: signing
    /// refuses what cannot verify).
    pub fn hmac(options: HmacOptions) -> Scheme {
        Scheme::with("hmac", Arc::new(options))
    }
}

impl Check for HmacOptions {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        verify(v, req, self)
    }

    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let o = self;
        // The receiver substitutes only what it is sent: no timestamp header means an empty `{timestamp}`.
        let timestamp = match (&o.timestamp_header, o.timestamp_unit) {
            (None, _) => String::new(),
            (Some(_), TimeUnit::Seconds) => msg.timestamp_ms.div_euclid(1000).to_string(),
            (Some(_), TimeUnit::Millis) => msg.timestamp_ms.to_string(),
        };
        if o.content.contains("{id}") && (o.id_header.is_none() || msg.id.is_empty()) {
            return Err(SignError::Unverifiable("{id} is signed but no id header carries it"));
        }
        let content = signed_content(&o.content, msg.body, &timestamp, msg.id);
        let signature = mac::encode(o.encoding, &mac::compute(o.algorithm, secret.expose(), &[&content]));
        let mut out = Vec::new();
        push(&mut out, &o.signature_header, format!("{}{signature}", o.prefix));
        if let Some(name) = &o.timestamp_header {
            push(&mut out, name, timestamp);
        }
        if let Some(name) = &o.id_header {
            push_some(&mut out, name, Some(msg.id));
        }
        if let EventFrom::Header(name) = &o.event {
            push_some(&mut out, name, msg.event);
        }
        Ok(out)
    }

    fn credential_header(&self) -> Option<&str> {
        Some(&self.signature_header)
    }
}

/// The bytes to sign for `content`, with `{body}`, `{timestamp}` and `{id}` substituted.
pub fn signed_content(content: &str, body: &[u8], timestamp: &str, id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + content.len() + timestamp.len() + id.len());
    let mut rest = content;
    while let Some(start) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..start]);
        let after = &rest[start..];
        let (value, skip): (&[u8], usize) = if after.starts_with("{body}") {
            (body, 6)
        } else if after.starts_with("{timestamp}") {
            (timestamp.as_bytes(), 11)
        } else if after.starts_with("{id}") {
            (id.as_bytes(), 4)
        } else {
            (b"{", 1)
        };
        out.extend_from_slice(value);
        rest = &after[skip..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

fn verify(v: &Verifier, req: &Inbound<'_>, o: &HmacOptions) -> Result<Verified, VerifyError> {
    let presented = header(req, &o.signature_header).ok_or(VerifyError::MissingSignature)?;
    let encoded = presented.strip_prefix(o.prefix.as_str()).ok_or(VerifyError::InvalidSignature)?;
    let (timestamp, at) = match &o.timestamp_header {
        Some(name) => {
            let text = header(req, name).ok_or(VerifyError::MissingSignature)?;
            let at = parse_time(text, o.timestamp_unit).ok_or(VerifyError::InvalidSignature)?;
            v.check_time(at, req.now_ms)?;
            (text, Some(at))
        }
        None => ("", None),
    };
    let id = o.id_header.as_deref().and_then(|h| header(req, h)).unwrap_or("");
    if o.content.contains("{id}") && id.is_empty() {
        return Err(VerifyError::MissingSignature);
    }
    let content = signed_content(&o.content, req.body, timestamp, id);
    if !mac::matches_any(v.keys(), o.algorithm, o.encoding, encoded, &[&content]) {
        return Err(VerifyError::InvalidSignature);
    }
    Ok(Verified {
        event: event_from(req, &o.event)?,
        delivery: o.id_header.as_deref().and_then(|h| header_owned(req, h)),
        replay: at.map(|at| replay_key(at, req.body)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    fn scenario3() -> HmacOptions {
        HmacOptions {
            signature_header: "x-webhook-signature".into(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: String::new(),
            timestamp_header: Some("x-webhook-timestamp".into()),
            timestamp_unit: TimeUnit::Millis,
            content: "{timestamp}.{body}".into(),
            id_header: Some("x-webhook-id".into()),
            event: EventFrom::Header("x-webhook-event".into()),
        }
    }

    const NOW: i64 = 1_700_000_000_123;

    #[test]
    fn the_scenario_3_format_verifies() {
        let v = verifier(Scheme::hmac(scenario3()), &["partner"]);
        let body = br#"{"order":1}"#;
        let sig = hex::encode(mac::compute(Algorithm::Sha256, b"partner", &[b"1700000000123.", body]));
        let ok = check(
            &v,
            &[
                ("x-webhook-signature", &sig),
                ("x-webhook-timestamp", "1700000000123"),
                ("x-webhook-id", "wh-1"),
                ("x-webhook-event", "order.created"),
            ],
            body,
            NOW,
        )
        .unwrap();
        assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("order.created"), Some("wh-1")));
        assert_eq!(ok.replay, Some(replay_key(NOW, body)), "the signed pair, whatever the (unsigned) id");
    }

    #[test]
    fn without_a_timestamp_there_is_no_replay_key() {
        // Nothing bounds the window: an identical body may be a new event (dedup is by id header only).
        let options = HmacOptions { timestamp_header: None, content: "{body}".into(), ..scenario3() };
        let v = verifier(Scheme::hmac(options), &["partner"]);
        let sig = hex::encode(mac::compute(Algorithm::Sha256, b"partner", &[b"{}"]));
        let ok = check(&v, &[("x-webhook-signature", &sig), ("x-webhook-id", "wh-2")], b"{}", NOW).unwrap();
        assert_eq!((ok.delivery.as_deref(), ok.replay), (Some("wh-2"), None));
    }

    #[test]
    fn a_millisecond_timestamp_one_second_past_tolerance_fails() {
        let v = verifier(Scheme::hmac(scenario3()), &["partner"]);
        let old = NOW - 301_000;
        let sig = hex::encode(mac::compute(Algorithm::Sha256, b"partner", &[format!("{old}.").as_bytes(), b"{}"]));
        let pairs = [("x-webhook-signature", sig.as_str()), ("x-webhook-timestamp", &old.to_string())];
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(check(&v, &pairs, b"{}", NOW), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn shopifys_base64_header_verifies() {
        let options = HmacOptions {
            signature_header: "x-shopify-hmac-sha256".into(),
            encoding: Encoding::Base64,
            timestamp_header: None,
            content: "{body}".into(),
            id_header: Some("x-shopify-webhook-id".into()),
            event: EventFrom::Header("x-shopify-topic".into()),
            ..scenario3()
        };
        let v = verifier(Scheme::hmac(options), &["shpss_secret"]);
        let body = br#"{"id":820982911946154508}"#;
        let sig = mac::encode(Encoding::Base64, &mac::compute(Algorithm::Sha256, b"shpss_secret", &[body]));
        let ok = check(&v, &[("x-shopify-hmac-sha256", &sig), ("x-shopify-topic", "orders/create")], body, 0).unwrap();
        assert_eq!(ok.event.as_deref(), Some("orders/create"));
        assert_eq!(check(&v, &[("x-shopify-hmac-sha256", &sig[..20])], body, 0), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn a_configured_prefix_and_algorithm_are_required() {
        let options = HmacOptions {
            algorithm: Algorithm::Sha512,
            prefix: "sha512=".into(),
            timestamp_header: None,
            content: "{body}".into(),
            event: EventFrom::Field("type".into()),
            ..scenario3()
        };
        let v = verifier(Scheme::hmac(options), &["k"]);
        let hex = hex::encode(mac::compute(Algorithm::Sha512, b"k", &[br#"{"type":"a.b"}"#]));
        let ok = check(&v, &[("x-webhook-signature", &format!("sha512={hex}"))], br#"{"type":"a.b"}"#, 0).unwrap();
        assert_eq!(ok.event.as_deref(), Some("a.b"));
        assert_eq!(
            check(&v, &[("x-webhook-signature", &hex)], br#"{"type":"a.b"}"#, 0),
            Err(VerifyError::InvalidSignature)
        );
        let sha256 = hex::encode(mac::compute(Algorithm::Sha256, b"k", &[br#"{"type":"a.b"}"#]));
        assert_eq!(
            check(&v, &[("x-webhook-signature", &format!("sha512={sha256}"))], br#"{"type":"a.b"}"#, 0),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn signed_content_substitutes_placeholders() {
        assert_eq!(signed_content("{id}.{timestamp}.{body}", b"B", "T", "I"), b"I.T.B");
        assert_eq!(signed_content("{body}", b"{x}", "", ""), b"{x}");
        assert_eq!(signed_content("a{b", b"B", "", ""), b"a{b");
    }

    fn body_only(event: EventFrom) -> HmacOptions {
        HmacOptions { timestamp_header: None, content: "{body}".into(), event, ..scenario3() }
    }

    fn hex_sig(key: &[u8], content: &[u8]) -> String {
        hex::encode(mac::compute(Algorithm::Sha256, key, &[content]))
    }

    #[test]
    fn hmac_without_a_signature_header_is_missing() {
        let v = verifier(Scheme::hmac(body_only(EventFrom::None)), &["k"]);
        assert_eq!(check(&v, &[], b"x", 0), Err(VerifyError::MissingSignature));
        assert_eq!(check(&v, &[("x-webhook-signature", "")], b"x", 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn hmac_rejects_truncated_and_garbage_signatures() {
        let v = verifier(Scheme::hmac(body_only(EventFrom::None)), &["k"]);
        let good = hex_sig(b"k", b"x");
        for bad in [good[..good.len() - 2].to_string(), "x".repeat(64), format!("{good}00")] {
            assert_eq!(check(&v, &[("x-webhook-signature", &bad)], b"x", 0), Err(VerifyError::InvalidSignature));
        }
    }

    #[test]
    fn hmac_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::hmac(body_only(EventFrom::None)), &["old", "k"]);
        assert!(check(&v, &[("x-webhook-signature", &hex_sig(b"k", b"x"))], b"x", 0).is_ok());
    }

    #[test]
    fn hmac_with_only_an_empty_secret_has_no_secret() {
        let v = verifier(Scheme::hmac(body_only(EventFrom::None)), &[""]);
        assert_eq!(check(&v, &[("x-webhook-signature", &hex_sig(b"", b"x"))], b"x", 0), Err(VerifyError::NoSecret));
    }

    #[test]
    fn hmac_sha1_signatures_verify_when_configured() {
        let options = HmacOptions { algorithm: Algorithm::Sha1, ..body_only(EventFrom::None) };
        let v = verifier(Scheme::hmac(options), &["k"]);
        let sig = hex::encode(mac::compute(Algorithm::Sha1, b"k", &[b"x"]));
        assert!(check(&v, &[("x-webhook-signature", &sig)], b"x", 0).is_ok());
        assert_eq!(
            check(&v, &[("x-webhook-signature", &hex_sig(b"k", b"x"))], b"x", 0),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn a_seconds_timestamp_exactly_at_tolerance_passes_and_one_second_past_fails() {
        let options = HmacOptions { timestamp_unit: TimeUnit::Seconds, ..scenario3() };
        let v = verifier(Scheme::hmac(options), &["k"]);
        let sig = hex_sig(b"k", b"1700000000.x");
        let pairs = [("x-webhook-signature", sig.as_str()), ("x-webhook-timestamp", "1700000000")];
        assert!(check(&v, &pairs, b"x", 1_700_000_300_000).is_ok());
        assert!(check(&v, &pairs, b"x", 1_699_999_700_000).is_ok());
        assert_eq!(check(&v, &pairs, b"x", 1_700_000_301_000), Err(VerifyError::StaleTimestamp));
        assert_eq!(check(&v, &pairs, b"x", 1_699_999_699_000), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn a_configured_timestamp_header_is_required() {
        let v = verifier(Scheme::hmac(scenario3()), &["k"]);
        assert_eq!(
            check(&v, &[("x-webhook-signature", &hex_sig(b"k", b".x"))], b"x", NOW),
            Err(VerifyError::MissingSignature)
        );
    }

    #[test]
    fn an_id_in_the_signed_content_is_required_and_checked() {
        let options = HmacOptions { content: "{id}.{body}".into(), timestamp_header: None, ..scenario3() };
        let v = verifier(Scheme::hmac(options), &["k"]);
        let sig = hex_sig(b"k", b"wh-1.x");
        assert!(check(&v, &[("x-webhook-signature", &sig), ("x-webhook-id", "wh-1")], b"x", 0).is_ok());
        assert_eq!(
            check(&v, &[("x-webhook-signature", &sig), ("x-webhook-id", "wh-2")], b"x", 0),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(check(&v, &[("x-webhook-signature", &sig)], b"x", 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn an_event_field_in_a_body_that_is_not_json_is_malformed_only_after_verifying() {
        let v = verifier(Scheme::hmac(body_only(EventFrom::Field("type".into()))), &["k"]);
        assert!(matches!(
            check(&v, &[("x-webhook-signature", &hex_sig(b"k", b"x"))], b"x", 0),
            Err(VerifyError::MalformedBody(_))
        ));
        assert_eq!(
            check(&v, &[("x-webhook-signature", &hex_sig(b"j", b"x"))], b"x", 0),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn shopifys_documented_style_uses_the_whole_body_with_any_header_case() {
        let options = HmacOptions {
            signature_header: "X-Shopify-Hmac-Sha256".into(),
            encoding: Encoding::Base64,
            ..body_only(EventFrom::None)
        };
        let v = verifier(Scheme::hmac(options), &["hush"]);
        let sig = mac::encode(Encoding::Base64, &mac::compute(Algorithm::Sha256, b"hush", &[b"{}"]));
        assert!(check(&v, &[("X-SHOPIFY-HMAC-SHA256", &sig)], b"{}", 0).is_ok());
    }
}
