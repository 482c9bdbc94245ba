//! A shared token: `Authorization: Bearer <token>`, another header holding it as is, or a query parameter.

use std::sync::Arc;

use super::signing::{push, push_some, token_text, Lines, Message, SignError};
use super::{
    event_from, header, header_owned, mac, Check, EventFrom, Inbound, KeyError, Keys, Scheme, Secret, TokenOptions,
    Verified, Verifier, VerifyError,
};

pub(super) fn configure(keys: &Keys) -> Result<Arc<dyn Check>, KeyError> {
    Ok(Arc::new(TokenOptions {
        header: keys.text("header")?.unwrap_or("authorization").to_ascii_lowercase(),
        query_param: keys.text("query_param")?.map(str::to_string),
        id_header: keys.text("id_header")?.map(str::to_string),
        event: keys.event()?,
    }))
}

impl Scheme {
    /// The shared-token scheme with options already built.
    pub fn token(options: TokenOptions) -> Scheme {
        Scheme::with("token", Arc::new(options))
    }
}

impl Check for TokenOptions {
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        verify(v, req, self)
    }

    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        let token = token_text(secret.expose())?;
        let mut out = Vec::new();
        if self.header.trim().eq_ignore_ascii_case("authorization") {
            push(&mut out, "Authorization", format!("Bearer {token}"));
        } else {
            push(&mut out, &self.header, token);
        }
        if let Some(name) = &self.id_header {
            push_some(&mut out, name, Some(msg.id));
        }
        if let EventFrom::Header(name) = &self.event {
            push_some(&mut out, name, msg.event);
        }
        Ok(out)
    }

    fn credential_header(&self) -> Option<&str> {
        Some(&self.header)
    }
}

fn verify(v: &Verifier, req: &Inbound<'_>, o: &TokenOptions) -> Result<Verified, VerifyError> {
    let from_header = header(req, &o.header).and_then(|value| {
        if o.header.trim().eq_ignore_ascii_case("authorization") {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
        } else {
            Some(value.to_string())
        }
    });
    let from_query = || {
        let name = o.query_param.as_deref()?;
        url::form_urlencoded::parse(req.query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    };
    let token = from_header.or_else(from_query).ok_or(VerifyError::MissingSignature)?;
    if !mac::token_matches_any(v.keys(), token.as_bytes()) {
        return Err(VerifyError::InvalidSignature);
    }
    Ok(Verified {
        event: event_from(req, &o.event)?,
        delivery: o.id_header.as_deref().and_then(|h| header_owned(req, h)),
        replay: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    fn options(header: &str) -> TokenOptions {
        TokenOptions {
            header: header.into(),
            query_param: Some("token".into()),
            id_header: Some("x-request-id".into()),
            event: EventFrom::Field("type".into()),
        }
    }

    #[test]
    fn a_bearer_token_verifies() {
        let v = verifier(Scheme::token(options("authorization")), &["t0k3n"]);
        let ok =
            check(&v, &[("authorization", "Bearer t0k3n"), ("x-request-id", "r1")], br#"{"type":"user.created"}"#, 0)
                .unwrap();
        assert_eq!((ok.event.as_deref(), ok.delivery.as_deref()), (Some("user.created"), Some("r1")));
    }

    #[test]
    fn a_wrong_shorter_or_unprefixed_token_fails() {
        let v = verifier(Scheme::token(options("authorization")), &["t0k3n"]);
        for bad in ["Bearer t0k3", "Bearer t0k3n!", "t0k3n", "Basic t0k3n"] {
            let result = check(&v, &[("authorization", bad)], b"{}", 0);
            assert!(matches!(result, Err(VerifyError::InvalidSignature | VerifyError::MissingSignature)), "{bad}");
        }
    }

    #[test]
    fn a_token_in_another_header_or_the_url_verifies() {
        let v = verifier(Scheme::token(options("x-api-token")), &["t0k3n"]);
        assert!(check(&v, &[("x-api-token", "t0k3n")], b"{}", 0).is_ok());
        let headers = headers(&[]);
        let req = Inbound { headers: &headers, body: b"{}", query: Some("a=1&token=t0k3n"), now_ms: 0 };
        assert!(v.verify(&req).is_ok());
        let req = Inbound { headers: &headers, body: b"{}", query: Some("token=nope"), now_ms: 0 };
        assert_eq!(v.verify(&req), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn an_empty_bearer_token_is_missing() {
        let v = verifier(Scheme::token(options("authorization")), &["t0k3n"]);
        assert_eq!(check(&v, &[("authorization", "Bearer ")], b"{}", 0), Err(VerifyError::MissingSignature));
        assert_eq!(check(&v, &[], b"{}", 0), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn the_authorization_option_is_case_insensitive() {
        let v = verifier(Scheme::token(options("Authorization")), &["t0k3n"]);
        assert!(check(&v, &[("authorization", "bearer t0k3n")], b"{}", 0).is_ok());
    }

    #[test]
    fn a_token_accepts_the_second_secret_during_rotation() {
        let v = verifier(Scheme::token(options("authorization")), &["old", "t0k3n"]);
        assert!(check(&v, &[("authorization", "Bearer t0k3n")], b"{}", 0).is_ok());
    }

    #[test]
    fn a_token_with_only_an_empty_secret_has_no_secret() {
        let v = verifier(Scheme::token(options("authorization")), &[""]);
        assert_eq!(check(&v, &[("authorization", "Bearer ")], b"{}", 0), Err(VerifyError::NoSecret));
    }

    #[test]
    fn an_empty_token_in_the_url_never_verifies() {
        let v = verifier(Scheme::token(options("x-api-token")), &["t0k3n"]);
        let headers = headers(&[]);
        let req = Inbound { headers: &headers, body: b"{}", query: Some("token="), now_ms: 0 };
        assert_eq!(v.verify(&req), Err(VerifyError::InvalidSignature));
    }
}
