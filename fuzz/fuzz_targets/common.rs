//! Shared input for the verifier targets: secrets, headers (mostly provider header names), body, clock,
//! and optionally a correct signature made first so verification reaches the code after the MAC check.

use std::time::Duration;

use arbitrary::Arbitrary;
use hookgate::sign::{headers as sign_headers, Message};
use hookgate::verify::{Inbound, Scheme, Secret, Verifier};

/// Every header name some provider reads, so the fuzzer need not guess them.
pub const NAMES: &[&str] = &[
    "x-hub-signature-256",
    "x-hub-signature",
    "x-github-event",
    "x-github-delivery",
    "x-gitlab-token",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-gitea-signature",
    "x-forgejo-signature",
    "x-gitea-event",
    "x-gitea-delivery",
    "x-event-key",
    "x-request-uuid",
    "x-request-id",
    "x-infisical-signature",
    "stripe-signature",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "authorization",
    "x-token",
    "x-webhook-signature",
    "x-webhook-timestamp",
    "x-webhook-id",
    "x-webhook-event",
    "content-type",
];

#[derive(Arbitrary, Debug)]
pub struct Request<'a> {
    pub secrets: Vec<&'a [u8]>,
    pub headers: Vec<(u8, &'a [u8])>,
    pub body: &'a [u8],
    pub query: Option<&'a str>,
    pub now_ms: i64,
    pub tolerance_s: u32,
    /// Sign first (id, event, timestamp offset from now) with the first secret, then apply `headers` on top.
    pub sign: Option<(&'a str, Option<&'a str>, i32)>,
}

/// Verify `req` under `scheme`; only panics (and hangs) are findings.
pub fn run(scheme: Scheme, req: &Request<'_>) {
    let verifier = Verifier {
        scheme,
        secrets: req.secrets.iter().map(|s| Secret::new(s.to_vec())).collect(),
        tolerance: Duration::from_secs(u64::from(req.tolerance_s)),
    };
    let mut map = http::HeaderMap::new();
    if let (Some((id, event, offset)), Some(secret)) = (req.sign, verifier.secrets.first()) {
        let msg = Message { id, event, timestamp_ms: req.now_ms.saturating_add(i64::from(offset)), body: req.body };
        if let Ok(lines) = sign_headers(&verifier.scheme, secret, &msg) {
            for (name, value) in lines {
                if let (Ok(n), Ok(v)) =
                    (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value))
                {
                    map.append(n, v);
                }
            }
        }
    }
    for (index, value) in &req.headers {
        let name = NAMES[usize::from(*index) % NAMES.len()];
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            map.insert(name, value);
        }
    }
    let _ = verifier.verify(&Inbound { headers: &map, body: req.body, query: req.query, now_ms: req.now_ms });
}
