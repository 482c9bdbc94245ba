//! The reference configuration (`config.default.toml`, `hookgate config example`) held to the parser: every
//! key of the file format appears in it, every key in it parses, and every value it shows is the default.

use std::collections::BTreeMap;
use std::path::Path;

use super::{field_names as fields_of, parse, raw, Config, REFERENCE};

/// Whether `text` sets `key` somewhere: `key =` as a whole word, written out or commented, or a table
/// `[….key]`.
fn mentions_key(text: &str, key: &str) -> bool {
    let assigned = text
        .match_indices(&format!("{key} ="))
        .any(|(at, _)| text[..at].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_')));
    assigned || text.contains(&format!(".{key}]"))
}

/// The reference with its commented-out keys and tables written out.
fn uncommented() -> String {
    REFERENCE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_key(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

fn env() -> BTreeMap<String, String> {
    [
        ("GITHUB_WEBHOOK_SECRET", "gh"),
        ("GITHUB_TOKEN", "ghp_reference"),
        ("PARTNER_SECRET", "partner"),
        ("APP_TOKEN", "app"),
        ("PARTNER_SIGNING_SECRET", "signing"),
        ("HOOKGATE_ADMIN_TOKEN", "a-long-enough-admin-token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn load(text: &str) -> Config {
    parse(text, Path::new(""), &env()).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

#[test]
fn the_reference_lists_every_key_of_the_file_format() {
    let mut sections: Vec<(&str, &[&str])> = vec![
        ("server", fields_of::<raw::Server>()),
        ("store", fields_of::<raw::Store>()),
        ("admin", fields_of::<raw::Admin>()),
        ("worker", fields_of::<raw::Worker>()),
        ("sources", raw::Source::COMMON),
        ("sources.recovery", fields_of::<crate::github::settings::RawRecovery>()),
        ("routes", fields_of::<raw::Route>()),
        ("routes.action.sign", fields_of::<crate::actions::RawSign>()),
        ("routes.retry", fields_of::<raw::Retry>()),
        ("routes.circuit_breaker", fields_of::<raw::Breaker>()),
    ];
    sections.extend(crate::actions::kinds().into_iter().map(|(_, keys)| ("routes.action", keys)));
    for (section, fields) in sections {
        assert!(!fields.is_empty(), "{section}: no fields read");
        for field in fields {
            assert!(mentions_key(REFERENCE, field), "config.default.toml does not show {section}.{field}");
        }
    }
    // A source's other keys are its provider's, listed in the provider table.
    for provider in crate::verify::PROVIDERS {
        for key in provider.keys {
            assert!(
                mentions_key(REFERENCE, key),
                "config.default.toml does not show {key} of provider {}",
                provider.name
            );
        }
    }
}

#[test]
fn the_reference_parses_as_written_and_with_every_commented_key() {
    let written = load(REFERENCE);
    assert_eq!(written.sources.len(), 3);
    assert_eq!(written.routes.len(), 2);
    let full = load(&uncommented());
    assert!(full.sources[0].rate_limit.is_some() && full.routes[1].circuit_breaker.is_some());
    assert!(full.sources[0].recovery.is_some());
    assert!(full.routes[0].filter.is_some() && full.routes[0].schedule.is_some());
}

#[test]
fn every_value_the_reference_shows_is_the_default() {
    let minimal = r#"
        [[sources]]
        name = "github"
        provider = "github"
        secrets = ["env:GITHUB_WEBHOOK_SECRET"]

        [[sources]]
        name = "partner"
        provider = "hmac"
        secrets = ["env:PARTNER_SECRET"]
        signature_header = "X-Webhook-Signature"

        [[sources]]
        name = "app"
        provider = "token"
        secrets = ["env:APP_TOKEN"]

        [[routes]]
        name = "fetch"
        source = "github"
        action = { type = "command", argv = ["git", "-C", "/srv/repos/{{ body.repository.name }}", "fetch", "--prune"] }

        [[routes]]
        name = "notify"
        source = "app"
        action = { type = "http", url = "https://partner.example/hooks" }
    "#;
    let (shown, defaults) = (load(REFERENCE), load(minimal));
    let same = |what: &str, a: String, b: String| assert_eq!(a, b, "{what}: the reference differs from the default");
    same("server", format!("{:?}", shown.server), format!("{:?}", defaults.server));
    same("store", format!("{:?}", shown.store), format!("{:?}", defaults.store));
    same("worker", format!("{:?}", shown.worker), format!("{:?}", defaults.worker));
    same(
        "admin",
        format!("{:?} {:?}", shown.admin_token.is_some(), shown.admin_auth_failure_limit),
        format!("{:?} {:?}", defaults.admin_token.is_some(), defaults.admin_auth_failure_limit),
    );
    for (a, b) in shown.sources.iter().zip(&defaults.sources) {
        same(&format!("sources `{}`", a.name), format!("{a:?}"), format!("{b:?}"));
    }
    for (a, b) in shown.routes.iter().zip(&defaults.routes) {
        same(&format!("routes `{}`", a.name), format!("{a:?}"), format!("{b:?}"));
    }
    // A circuit breaker's keys, once it is set, default to what the reference's comment shows.
    let full = load(&uncommented());
    let set = load(&minimal.replace("name = \"notify\"", "name = \"notify\"\ncircuit_breaker = {}"));
    same(
        "circuit_breaker",
        format!("{:?}", full.routes[1].circuit_breaker),
        format!("{:?}", set.routes[1].circuit_breaker),
    );
}
