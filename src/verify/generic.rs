//! The configurable `hmac` provider: header, algorithm, encoding, prefix, optional timestamp and a
//! signed-content template such as `{timestamp}.{body}` (Shopify, the scenario-3 format, and many more).

use super::{event_from, header, header_owned, mac, parse_time, HmacOptions, Inbound, Verified, Verifier, VerifyError};

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

pub(super) fn verify(v: &Verifier, req: &Inbound<'_>, o: &HmacOptions) -> Result<Verified, VerifyError> {
    let presented = header(req, &o.signature_header).ok_or(VerifyError::MissingSignature)?;
    let encoded = presented.strip_prefix(o.prefix.as_str()).ok_or(VerifyError::InvalidSignature)?;
    let timestamp = match &o.timestamp_header {
        Some(name) => {
            let text = header(req, name).ok_or(VerifyError::MissingSignature)?;
            let at = parse_time(text, o.timestamp_unit).ok_or(VerifyError::InvalidSignature)?;
            v.check_time(at, req.now_ms)?;
            text
        }
        None => "",
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
        let v = verifier(Scheme::Hmac(scenario3()), &["partner"]);
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
    }

    #[test]
    fn a_millisecond_timestamp_one_second_past_tolerance_fails() {
        let v = verifier(Scheme::Hmac(scenario3()), &["partner"]);
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
        let v = verifier(Scheme::Hmac(options), &["shpss_secret"]);
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
        let v = verifier(Scheme::Hmac(options), &["k"]);
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
}
