//! The variables that expressions and templates see: `event`, `body`, `headers`, `source`, `delivery`, `id`.

use std::sync::Arc;

use minijinja::Value;

use super::lazy::{self, JsonDoc};

use crate::store::Delivery;

/// One event as expressions and templates see it.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub source: String,
    pub event: String,
    pub delivery: String,
    pub id: String,
    /// The JSON body (validated, converted only where a template reads it), or None when it is not JSON.
    pub body: Option<JsonDoc>,
    /// Why a stored body that claims to be JSON could not be used (it was stored before a limit that now
    /// refuses it); rendering an action then fails with this instead of running on a null body.
    pub body_error: Option<BodyError>,
    /// Lower-case header names.
    pub headers: Arc<Vec<(String, String)>>,
    /// The body exactly as received (the default body of an `http` action).
    pub raw_body: bytes::Bytes,
    /// When hookgate received it, RFC 3339 (templates: `received_at`).
    pub received_at: String,
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Why a body that needed parsing could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

impl EventContext {
    pub fn new(
        source: &str,
        event: &str,
        delivery: &str,
        id: &str,
        body: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> Self {
        let body = match body {
            serde_json::Value::Null => None,
            value => JsonDoc::validate(bytes::Bytes::from(value.to_string())).ok(),
        };
        EventContext {
            source: source.into(),
            event: event.into(),
            delivery: delivery.into(),
            id: id.into(),
            body,
            body_error: None,
            headers: Arc::new(headers),
            raw_body: bytes::Bytes::new(),
            received_at: rfc3339(crate::store::now_ms()),
        }
    }

    /// Rebuild the context of a stored delivery (in the worker). A body that no longer parses is null, and
    /// remembered as `body_error`.
    pub fn from_stored(d: &Delivery) -> Self {
        let content_type = d.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str());
        let (body, body_error) = match parse_body(content_type, &d.body) {
            Ok(body) => (body, None),
            Err(e) => (None, Some(e)),
        };
        EventContext {
            body_error,
            source: d.source.clone(),
            event: d.event.clone(),
            delivery: d.delivery.clone(),
            id: d.id.clone(),
            body,
            headers: Arc::new(d.headers.clone()),
            raw_body: d.body.clone(),
            received_at: rfc3339(d.received_at),
        }
    }

    pub fn to_value(&self) -> Value {
        minijinja::context! {
            event => &self.event,
            source => &self.source,
            delivery => &self.delivery,
            id => &self.id,
            headers => Value::from_object(lazy::Headers(self.headers.clone())),
            body => lazy::body_value(self.body.as_ref()),
            received_at => &self.received_at,
        }
    }
}

/// Check a webhook body: JSON, or a form with a `payload` field holding JSON (GitHub's form content type).
/// Returns `None` for bodies that are neither (plain text, empty). An error means the body claims to be
/// JSON but is not. Nothing is converted here: templates read the document lazily.
pub fn parse_body(content_type: Option<&str>, body: &bytes::Bytes) -> Result<Option<JsonDoc>, BodyError> {
    let media = content_type.and_then(|c| c.split(';').next()).map(|c| c.trim().to_ascii_lowercase());
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &body[i..]);
    let json = |text: bytes::Bytes, what: &str| {
        JsonDoc::validate(text).map(Some).map_err(|e| match e {
            lazy::DocError::Syntax(e) => BodyError(format!("{what} is not valid JSON: {e}")),
            lazy::DocError::TooDeep => BodyError(format!("{what}: {e}")),
        })
    };
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => {
            match url::form_urlencoded::parse(body).find(|(k, _)| k == "payload").map(|(_, v)| v) {
                Some(p) => json(bytes::Bytes::from(p.into_owned()), "form field `payload`"),
                None => Ok(None),
            }
        }
        Some(m) if m == "application/json" || m.ends_with("+json") => match trimmed {
            None => Ok(None),
            Some(_) => json(body.clone(), "body"),
        },
        // No or another content type: JSON if it looks like JSON, else nothing.
        _ => match trimmed {
            Some([b'{' | b'[', ..]) => json(body.clone(), "body"),
            _ => Ok(None),
        },
    }
}

/// The context of a request being received; fails when a body that claims to be JSON is not.
pub fn context_for_request(
    source: &str,
    event: &str,
    delivery: &str,
    id: &str,
    headers: Arc<Vec<(String, String)>>,
    body: &bytes::Bytes,
) -> Result<EventContext, BodyError> {
    let content_type = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str());
    Ok(EventContext {
        source: source.into(),
        event: event.into(),
        delivery: delivery.into(),
        id: id.into(),
        body: parse_body(content_type, body)?,
        body_error: None,
        headers,
        raw_body: body.clone(),
        received_at: rfc3339(crate::store::now_ms()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(content_type: Option<&str>, body: &'static [u8]) -> Result<serde_json::Value, BodyError> {
        let doc = parse_body(content_type, &bytes::Bytes::from_static(body))?;
        Ok(doc.map(|d| d.to_value()).unwrap_or(serde_json::Value::Null))
    }

    #[test]
    fn json_bodies_parse() {
        let v = parse(Some("application/json"), br#"{"a":1}"#).unwrap();
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn broken_json_is_an_error() {
        assert!(parse(Some("application/json"), b"{\"a\":").is_err());
        assert!(parse(None, b"{\"a\":").is_err());
        assert!(parse(Some("application/json"), b"{\"a\":1} trailing").is_err());
    }

    #[test]
    fn github_form_payloads_parse() {
        let v = parse(Some("application/x-www-form-urlencoded"), b"payload=%7B%22ref%22%3A%22x%22%7D").unwrap();
        assert_eq!(v["ref"], "x");
    }

    #[test]
    fn plain_text_is_null() {
        assert_eq!(parse(Some("text/plain"), b"hello").unwrap(), serde_json::Value::Null);
        assert_eq!(parse(None, b"").unwrap(), serde_json::Value::Null);
    }
}
