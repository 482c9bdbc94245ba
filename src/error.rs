//! error: the errors a client can see, the one table mapping each to an HTTP status and a stable code, and
//! the one place a server error's cause is logged.
//!
//! A client gets the stable code and a message that reveals nothing internal. The operator gets the cause —
//! a full disk, a locked file, a refused PostgreSQL connection — in one log line per failed request, written
//! by [`log_server_errors`] at the outer edge of the router, never again by the layers below.

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;
use crate::verify::VerifyError;

/// Every error answered over HTTP. Bodies are `{"code", "message"}` and never reveal secrets,
/// expected signatures or internal details.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    BadRequest(String),
    /// A bulk request's `Idempotency-Key` was used before for another operation or filter.
    #[error("this Idempotency-Key was used for another request (operation or filter); use a new key")]
    IdempotencyKeyReused,
    #[error("request body was not received in time")]
    RequestTimeout,
    /// `cause` is for the log only (the client sees the message).
    #[error("storage is unavailable; nothing was stored, retry later")]
    StoreUnavailable { cause: String },
    /// Too many request bytes are in memory already; nothing was read past this point.
    #[error("the server is busy; nothing was stored, retry later")]
    Overloaded { retry_after_secs: u64 },
    /// An operator paused the source: nothing was stored, the sender should retry later.
    #[error("this source is paused by an operator; nothing was stored, retry later")]
    SourcePaused { retry_after_secs: u64 },
    /// Another instance is doing it now (it holds the lease); nothing was done here.
    #[error("{0}")]
    Conflict(String),
    /// A peer API hookgate called for this request (GitHub's) refused or failed; the message says how.
    #[error("{0}")]
    Upstream(String),
    #[error("internal error")]
    Internal { cause: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::StoreUnavailable { .. } | ApiError::Overloaded { .. } | ApiError::SourcePaused { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable snake_case code for scripts; also the `outcome` label of `hookgate_requests_total`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::StoreUnavailable { .. } => "store_unavailable",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::SourcePaused { .. } => "source_paused",
            ApiError::Conflict(_) => "conflict",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// What went wrong on our side, for the operator; `None` for what the client caused.
    pub fn cause(&self) -> Option<String> {
        match self {
            ApiError::StoreUnavailable { cause } | ApiError::Internal { cause } => Some(cause.clone()),
            ApiError::Upstream(message) => Some(message.clone()),
            ApiError::Overloaded { .. } => {
                Some("request bodies in memory reached server.max_buffered; new bodies are refused".into())
            }
            _ => None,
        }
    }

    pub fn internal(cause: impl Into<String>) -> Self {
        ApiError::Internal { cause: cause.into() }
    }
}

/// Attached to a 5xx response by [`ApiError`]; read and logged once by [`log_server_errors`].
#[derive(Debug, Clone)]
pub struct ServerErrorCause {
    pub code: &'static str,
    pub cause: String,
}

/// Attached to a response by a handler that knows which configured source it served, so the one log line
/// of a server error names it.
#[derive(Debug, Clone)]
pub struct SourceLabel(pub String);

/// The boundary: every 5xx answer's cause is logged here, once, with the route pattern (never the raw URL,
/// which a client chose) and the source when there is one.
pub async fn log_server_errors(request: Request, next: Next) -> Response {
    // Kept cheaply for every request (a standard method and an `Arc<str>`); formatted only on a 5xx.
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    if let Some(error) = response.extensions().get::<ServerErrorCause>() {
        let status = response.status().as_u16();
        let route = matched.as_ref().map_or("(no route)", MatchedPath::as_str);
        match response.extensions().get::<SourceLabel>() {
            Some(SourceLabel(source)) => tracing::error!(
                %method, %route, status, code = error.code, source = %source, cause = %error.cause,
                "request failed"
            ),
            None => tracing::error!(
                %method, %route, status, code = error.code, cause = %error.cause, "request failed"
            ),
        }
    }
    response
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::MissingSignature => ApiError::Unauthorized("missing signature"),
            VerifyError::InvalidSignature => ApiError::Unauthorized("invalid signature"),
            VerifyError::StaleTimestamp => ApiError::Unauthorized("timestamp outside tolerance"),
            // A source with no secret is off; say so as for an unknown source.
            VerifyError::NoSecret => ApiError::NotFound,
            VerifyError::MalformedBody(what) => ApiError::BadRequest(format!("unparseable body: {what}")),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => ApiError::StoreUnavailable { cause },
            StoreError::Internal(cause) => ApiError::Internal { cause },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs }
        | ApiError::Overloaded { retry_after_secs }
        | ApiError::SourcePaused { retry_after_secs } = &self
        {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from((*retry_after_secs).max(1)));
        }
        if let (true, Some(cause)) = (self.status().is_server_error(), self.cause()) {
            response.extensions_mut().insert(ServerErrorCause { code: self.code(), cause });
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    /// Everything the subscriber writes, as text.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn answer(router: Router, uri: &str) -> (StatusCode, String, String) {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let router = router.layer(axum::middleware::from_fn(log_server_errors));
        let response = router.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned(), log)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_store_failure_is_logged_once_with_its_cause_and_the_client_sees_only_the_code() {
        let cause = "database or disk is full: No space left on device (os error 28)";
        let router = Router::new().route(
            "/hooks/{source}",
            get(move || async move {
                let mut response = ApiError::from(StoreError::Unavailable(cause.into())).into_response();
                response.extensions_mut().insert(SourceLabel("github".into()));
                response
            }),
        );
        let (status, body, log) = answer(router, "/hooks/github?token=x").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("store_unavailable") && !body.contains("disk"), "{body}");
        assert_eq!(log.matches("request failed").count(), 1, "{log}");
        for part in [cause, "route=/hooks/{source}", "code=\"store_unavailable\"", "source=github", "status=503"] {
            assert!(log.contains(part), "{part} missing from {log}");
        }
        // The route pattern is logged, never the URL the client chose.
        assert!(!log.contains("token=x"), "{log}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn client_errors_leave_no_server_error_line() {
        let router = Router::new().route("/x", get(|| async { ApiError::BadRequest("broken JSON".into()) }));
        let (status, _, log) = answer(router, "/x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(!log.contains("request failed"), "{log}");
    }
}
