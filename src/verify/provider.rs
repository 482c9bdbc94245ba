//! The provider table: every scheme hookgate verifies and signs, with its keys and credential headers.
//!
//! Configuration, `hookgate sign`, outbound signing, header redaction and the README all read this one
//! table. Adding a provider is one new file in `src/verify/` (its check: verify and sign) plus one entry here.

use std::fmt;
use std::sync::Arc;

use super::keys::{KeyError, Keys};
use super::signing::{Lines, Message, SignError};
use super::{
    bitbucket, generic, gitea, github, gitlab, infisical, slack, standard, stripe, token, Inbound, Secret, Verified,
    Verifier, VerifyError,
};

/// One provider: what it is called, what it reads, and how its scheme is built from those keys.
pub struct Provider {
    pub name: &'static str,
    /// Other names it answers to in configuration and on the command line.
    pub aliases: &'static [&'static str],
    /// One line for `--help` and the README.
    pub about: &'static str,
    /// The keys it reads besides those every source has (`name`, `secrets`, `max_body`, `tolerance`, …).
    pub keys: &'static [&'static str],
    /// Headers (lower case) that carry its credential: never stored, shown or handed to an action.
    pub credentials: &'static [&'static str],
    /// Builds its check from its keys (only keys listed in `keys` ever reach it).
    pub configure: fn(&Keys) -> Result<Arc<dyn Check>, KeyError>,
}

/// A provider's scheme with the options its keys chose: inbound verification and the mirror-image signature.
pub trait Check: fmt::Debug + Send + Sync {
    /// Check a request whose verifier has at least one usable secret.
    fn verify(&self, v: &Verifier, req: &Inbound<'_>) -> Result<Verified, VerifyError>;
    /// The header lines that make `msg` verify with `secret` (never empty: the caller checked).
    fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError>;
    /// The credential header these options name, on top of the provider's fixed `credentials`.
    /// Checked for every header of every request, so it allocates nothing.
    fn credential_header(&self) -> Option<&str> {
        None
    }
}

/// The providers, in the order help and the README list them.
pub static PROVIDERS: &[Provider] = &[
    Provider {
        name: "github",
        aliases: &[],
        about: "GitHub: `X-Hub-Signature-256: sha256=<hex>` HMAC of the body (sha1 `X-Hub-Signature` only with `allow_sha1`)",
        keys: &["allow_sha1"],
        credentials: &["x-hub-signature-256", "x-hub-signature"],
        configure: github::configure,
    },
    Provider {
        name: "gitlab",
        aliases: &[],
        about: "GitLab: `X-Gitlab-Token` equal to a secret, or Standard Webhooks headers when present",
        keys: &[],
        credentials: &["x-gitlab-token", "webhook-signature"],
        configure: |_| Ok(Arc::new(gitlab::Gitlab)),
    },
    Provider {
        name: "gitea",
        aliases: &["forgejo"],
        about: "Gitea and Forgejo: bare hex HMAC-SHA256 of the body in `X-Gitea-Signature` / `X-Forgejo-Signature`",
        keys: &[],
        credentials: &["x-gitea-signature", "x-forgejo-signature"],
        configure: |_| Ok(Arc::new(gitea::Gitea)),
    },
    Provider {
        name: "bitbucket",
        aliases: &[],
        about: "Bitbucket: `X-Hub-Signature: sha256=<hex>` HMAC of the body",
        keys: &[],
        credentials: &["x-hub-signature"],
        configure: |_| Ok(Arc::new(bitbucket::Bitbucket)),
    },
    Provider {
        name: "infisical",
        aliases: &[],
        about: "Infisical: `x-infisical-signature: t=<ms>;<hex>`, `t` equal to the body's `timestamp`",
        keys: &[],
        credentials: &["x-infisical-signature"],
        configure: |_| Ok(Arc::new(infisical::Infisical)),
    },
    Provider {
        name: "standard",
        aliases: &[],
        about: "Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`, `whsec_` secrets",
        keys: &[],
        credentials: &["webhook-signature"],
        configure: |_| Ok(Arc::new(standard::Standard)),
    },
    Provider {
        name: "stripe",
        aliases: &[],
        about: "Stripe: `Stripe-Signature: t=…,v1=…` over `t.body`",
        keys: &[],
        credentials: &["stripe-signature"],
        configure: |_| Ok(Arc::new(stripe::Stripe)),
    },
    Provider {
        name: "slack",
        aliases: &[],
        about: "Slack: `X-Slack-Signature: v0=<hex>` over `v0:ts:body`, with `X-Slack-Request-Timestamp`",
        keys: &[],
        credentials: &["x-slack-signature"],
        configure: |_| Ok(Arc::new(slack::Slack)),
    },
    Provider {
        name: "hmac",
        aliases: &[],
        about: "Any HMAC: header, algorithm, encoding, prefix, optional timestamp and signed-content template",
        keys: &[
            "signature_header",
            "algorithm",
            "encoding",
            "prefix",
            "timestamp_header",
            "timestamp_unit",
            "content",
            "id_header",
            "event_header",
            "event_field",
        ],
        credentials: &[],
        configure: generic::configure,
    },
    Provider {
        name: "token",
        aliases: &[],
        about: "A shared token in `Authorization: Bearer`, another header, or a URL query parameter",
        keys: &["header", "query_param", "id_header", "event_header", "event_field"],
        credentials: &[],
        configure: token::configure,
    },
];

/// The provider called `name` (or one of its aliases).
pub fn provider(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name == name || p.aliases.contains(&name))
}

/// Every name a provider answers to, aliases included, in table order.
pub fn names() -> Vec<&'static str> {
    PROVIDERS.iter().flat_map(|p| std::iter::once(p.name).chain(p.aliases.iter().copied())).collect()
}

/// A provider's scheme, configured: verifies requests (see [`Verifier`]) and signs messages the same way.
#[derive(Clone)]
pub struct Scheme {
    provider: &'static Provider,
    check: Arc<dyn Check>,
}

impl Scheme {
    /// Build `provider`'s scheme from its keys; a key it does not read is an error naming that key.
    pub fn new(provider: &'static Provider, keys: &Keys) -> Result<Scheme, KeyError> {
        if let Some(foreign) = keys.names().find(|k| !provider.keys.contains(k)) {
            let takes = match provider.keys {
                [] => "it takes no keys of its own".to_string(),
                keys => format!("it takes: {}", keys.join(", ")),
            };
            return Err(KeyError::new(foreign, format!("not a key of provider \"{}\" ({takes})", provider.name)));
        }
        Ok(Scheme { provider, check: (provider.configure)(keys)? })
    }

    /// The scheme of the provider called `name`, with no keys set.
    pub fn named(name: &str) -> Result<Scheme, KeyError> {
        let provider = provider(name)
            .ok_or_else(|| KeyError::new("provider", format!("unknown provider `{name}` ({})", names().join(", "))))?;
        Scheme::new(provider, &Keys::default())
    }

    /// A scheme from options already built, for the providers whose files offer typed constructors.
    pub(super) fn with(name: &str, check: Arc<dyn Check>) -> Scheme {
        Scheme { provider: provider(name).expect("the constructor's provider is in the table"), check }
    }

    pub fn name(&self) -> &'static str {
        self.provider.name
    }

    pub fn provider(&self) -> &'static Provider {
        self.provider
    }

    pub(super) fn check(&self) -> &dyn Check {
        self.check.as_ref()
    }

    /// The header lines (name, value) that make `msg` verify under this scheme with `secret`.
    pub fn sign(&self, secret: &Secret, msg: &Message<'_>) -> Result<Lines, SignError> {
        if secret.is_empty() {
            return Err(SignError::BadSecret("empty"));
        }
        self.check.sign(secret, msg)
    }

    /// Does the header `name` carry this scheme's credential?
    pub fn is_credential(&self, name: &str) -> bool {
        let fixed = self.provider.credentials.iter().copied();
        fixed.chain(self.check.credential_header()).any(|c| c.eq_ignore_ascii_case(name))
    }
}

impl fmt::Debug for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheme").field("provider", &self.provider.name).field("options", &self.check).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::Value;
    use super::super::{Algorithm, Encoding, EventFrom, HmacOptions, TimeUnit, TokenOptions};
    use super::*;
    use std::time::Duration;

    const NOW: i64 = 1_700_000_000_456;

    /// One configured scheme per provider in the table, with a secret of the shape it takes; the
    /// configurable ones also in a second, differently keyed variant.
    fn every_scheme() -> Vec<(Scheme, &'static str)> {
        let mut out = Vec::new();
        for p in PROVIDERS {
            let secret = match p.name {
                "standard" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                _ => "s3cret-t0ken",
            };
            let variants: Vec<Keys> = match p.name {
                "github" => vec![Keys::default(), keys(&[("allow_sha1", Value::Flag(true))])],
                "hmac" => vec![
                    text_keys(&[
                        ("signature_header", "X-Webhook-Signature"),
                        ("timestamp_header", "X-Webhook-Timestamp"),
                        ("timestamp_unit", "ms"),
                        ("content", "{timestamp}.{body}"),
                        ("id_header", "X-Webhook-Id"),
                        ("event_header", "X-Webhook-Event"),
                    ]),
                    text_keys(&[
                        ("signature_header", "X-Shopify-Hmac-Sha256"),
                        ("algorithm", "sha512"),
                        ("encoding", "base64"),
                        ("prefix", "sha512="),
                    ]),
                ],
                "token" => vec![
                    text_keys(&[("id_header", "x-request-id"), ("event_header", "x-event")]),
                    text_keys(&[("header", "X-Api-Token")]),
                ],
                _ => vec![Keys::default()],
            };
            for k in variants {
                out.push((Scheme::new(p, &k).unwrap_or_else(|e| panic!("{}: {e}", p.name)), secret));
            }
        }
        out
    }

    fn keys(pairs: &[(&str, Value)]) -> Keys {
        pairs.iter().cloned().collect()
    }

    fn text_keys(pairs: &[(&str, &str)]) -> Keys {
        pairs.iter().map(|(k, v)| (*k, Value::Text(v.to_string()))).collect()
    }

    fn header_map(pairs: &[(String, String)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn verifier(scheme: &Scheme, secrets: &[&str]) -> Verifier {
        Verifier {
            scheme: scheme.clone(),
            secrets: secrets.iter().map(|s| Secret::new(s.as_bytes().to_vec())).collect(),
            tolerance: Duration::from_secs(300),
        }
    }

    fn body(timestamp_ms: i64) -> String {
        format!(r#"{{"type":"a.b","id":"evt_1","event":"secrets.modified","timestamp":{timestamp_ms}}}"#)
    }

    /// Providers that check a shared token rather than a MAC of the body.
    fn checks_only_a_token(scheme: &Scheme) -> bool {
        matches!(scheme.name(), "gitlab" | "token")
    }

    #[test]
    fn every_provider_verifies_what_it_signs_and_refuses_a_tampered_body() {
        let body = body(NOW);
        for (scheme, secret) in every_scheme() {
            let msg = Message { id: "msg_1", event: Some("push"), timestamp_ms: NOW, body: body.as_bytes() };
            let lines = scheme.sign(&Secret::new(secret.as_bytes().to_vec()), &msg).unwrap();
            let headers = header_map(&lines);
            let v = verifier(&scheme, &[secret]);
            let verified =
                v.verify(&Inbound { headers: &headers, body: body.as_bytes(), query: None, now_ms: NOW + 1000 });
            assert!(verified.is_ok(), "{scheme:?}: {verified:?}");

            let tampered = format!("{body} ");
            let inbound = Inbound { headers: &headers, body: tampered.as_bytes(), query: None, now_ms: NOW + 1000 };
            if !checks_only_a_token(&scheme) {
                assert!(v.verify(&inbound).is_err(), "{scheme:?} accepted a tampered body");
            }
        }
    }

    #[test]
    fn every_provider_verifies_with_the_new_secret_during_rotation() {
        let body = body(NOW);
        let msg = Message { id: "msg_1", event: Some("push"), timestamp_ms: NOW, body: body.as_bytes() };
        for (scheme, secret) in every_scheme() {
            let old = if scheme.name() == "standard" { "whsec_b2xk" } else { "old" };
            let headers = header_map(&scheme.sign(&Secret::new(secret.as_bytes().to_vec()), &msg).unwrap());
            let v = verifier(&scheme, &[old, secret]);
            let inbound = Inbound { headers: &headers, body: body.as_bytes(), query: None, now_ms: NOW };
            assert!(v.verify(&inbound).is_ok(), "{scheme:?}");
        }
    }

    #[test]
    fn every_timestamped_provider_refuses_a_stale_signature() {
        let stale = NOW - 301_000;
        let body = body(stale);
        let msg = Message { id: "m", event: None, timestamp_ms: stale, body: body.as_bytes() };
        let mut timed = 0;
        for (scheme, secret) in every_scheme() {
            let headers = header_map(&scheme.sign(&Secret::new(secret.as_bytes().to_vec()), &msg).unwrap());
            let inbound = Inbound { headers: &headers, body: body.as_bytes(), query: None, now_ms: NOW };
            let fresh = Inbound { now_ms: stale, ..inbound };
            let v = verifier(&scheme, &[secret]);
            // A scheme whose signature carries no time verifies either way; one that does must refuse.
            if v.verify(&inbound) == Err(VerifyError::StaleTimestamp) {
                timed += 1;
            } else {
                assert!(v.verify(&fresh).is_ok() && v.verify(&inbound).is_ok(), "{scheme:?}");
            }
        }
        // infisical, standard, stripe, slack and the timestamped hmac variant.
        assert_eq!(timed, 5);
    }

    #[test]
    fn every_header_that_depends_on_the_secret_is_a_credential_header() {
        // What a request proves itself with is redacted by the edge, which learns the names only from here.
        let body = body(NOW);
        let msg = Message { id: "msg_1", event: Some("push"), timestamp_ms: NOW, body: body.as_bytes() };
        for (scheme, secret) in every_scheme() {
            let other = if scheme.name() == "standard" { "whsec_b3RoZXI=" } else { "another-secret" };
            let a = scheme.sign(&Secret::new(secret.as_bytes().to_vec()), &msg).unwrap();
            let b = scheme.sign(&Secret::new(other.as_bytes().to_vec()), &msg).unwrap();
            let mut credentials = 0;
            for ((name, value), (_, other_value)) in a.iter().zip(&b) {
                if value != other_value {
                    assert!(scheme.is_credential(name), "{scheme:?}: {name} carries the credential");
                    credentials += 1;
                } else {
                    assert!(!scheme.is_credential(name), "{scheme:?}: {name} is no credential");
                }
            }
            assert!(credentials > 0, "{scheme:?}");
        }
    }

    #[test]
    fn a_key_the_provider_does_not_read_is_named() {
        let github = provider("github").unwrap();
        let err = Scheme::new(github, &text_keys(&[("signature_header", "X-Sig")])).unwrap_err();
        assert_eq!(err.key, "signature_header");
        assert_eq!(err.message, "not a key of provider \"github\" (it takes: allow_sha1)");
        let err = Scheme::new(provider("slack").unwrap(), &keys(&[("allow_sha1", Value::Flag(true))])).unwrap_err();
        assert_eq!(err.to_string(), "allow_sha1: not a key of provider \"slack\" (it takes no keys of its own)");
    }

    #[test]
    fn names_are_unique_and_forgejo_is_gitea() {
        let all = names();
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(all.len(), unique.len(), "{all:?}");
        assert_eq!(provider("forgejo").unwrap().name, "gitea");
        assert!(provider("githb").is_none());
        assert_eq!(Scheme::named("forgejo").unwrap().name(), "gitea");
        assert_eq!(Scheme::named("githb").unwrap_err().key, "provider");
    }

    #[test]
    fn typed_constructors_match_their_keys() {
        assert_eq!(Scheme::github(true).name(), "github");
        let hmac = HmacOptions {
            signature_header: "X-Sig".into(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: String::new(),
            timestamp_header: None,
            timestamp_unit: TimeUnit::Seconds,
            content: "{body}".into(),
            id_header: None,
            event: EventFrom::None,
        };
        let from_keys = Scheme::new(provider("hmac").unwrap(), &text_keys(&[("signature_header", "X-Sig")])).unwrap();
        assert_eq!(format!("{:?}", Scheme::hmac(hmac)), format!("{from_keys:?}"));
        let token =
            TokenOptions { header: "authorization".into(), query_param: None, id_header: None, event: EventFrom::None };
        assert_eq!(format!("{:?}", Scheme::token(token)), format!("{:?}", Scheme::named("token").unwrap()));
    }

    #[test]
    fn an_empty_secret_signs_nothing() {
        let msg = Message { id: "m", event: None, timestamp_ms: 0, body: b"" };
        for (scheme, _) in every_scheme() {
            assert_eq!(scheme.sign(&Secret::new(Vec::new()), &msg), Err(SignError::BadSecret("empty")), "{scheme:?}");
        }
    }

    #[test]
    fn the_readme_provider_table_is_the_table() {
        // The block between the markers is generated from PROVIDERS: paste the expected text on a change.
        let readme = include_str!("../../README.md");
        let quoted =
            |names: &mut dyn Iterator<Item = &str>| names.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let mut expected = String::from("| provider | checks | its own keys |\n|---|---|---|\n");
        for p in PROVIDERS {
            let names = quoted(&mut std::iter::once(p.name).chain(p.aliases.iter().copied()));
            let keys = if p.keys.is_empty() { "—".to_string() } else { quoted(&mut p.keys.iter().copied()) };
            expected.push_str(&format!("| {names} | {} | {keys} |\n", p.about));
        }
        let block = readme
            .split_once("<!-- providers: generated from src/verify/provider.rs -->\n")
            .and_then(|(_, rest)| rest.split_once("<!-- /providers -->"))
            .map(|(block, _)| block);
        assert_eq!(block, Some(expected.as_str()), "README.md's provider table should read:\n{expected}");
    }
}
