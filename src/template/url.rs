//! URL templates: every template value is percent-encoded for the part of the URL it lands in, so a
//! payload can fill in a path segment or a query value but never add segments, a query, a fragment, or
//! a different host.
//!
//! While a URL template renders, the formatter writes each value between two private-use marks, hex
//! encoded; afterwards the literal text around the marks tells which part of the URL each value is in
//! (before `://…/` the scheme and host, then the path, after `?` the query, after `#` the fragment), and
//! the value is encoded for that part. A value may set the scheme or host only when the route lists the
//! resulting host in `allowed_hosts`.

use std::sync::Arc;

use minijinja::value::{Object, Value};
use minijinja::{Error, Output, State};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::RenderError;

/// Template names of URL templates end with this; the formatter marks values only in those.
pub(super) const URL_TEMPLATE_SUFFIX: &str = ".url";

const VALUE_START: char = '\u{E000}';
const VALUE_END: char = '\u{E001}';
/// After `VALUE_START`: a plain value, or one whose `/` separate path segments (`| segments`).
const PLAIN: char = 'v';
const SEGMENTS: char = 's';

/// Everything but RFC 3986's unreserved characters is encoded: `/`, `?`, `#`, `%`, `&`, `=`, `+` included.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The value of `| segments`: a string whose `/` are kept as path separators (each segment encoded).
#[derive(Debug)]
struct Segments(String);

impl Object for Segments {
    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `{{ body.repository.full_name | segments }}`: in a URL path, keep the value's `/` as separators.
pub(super) fn segments(value: String) -> Value {
    Value::from_object(Segments(value))
}

/// The environment's formatter: marks values in URL templates, formats everything else as usual.
pub(super) fn formatter(out: &mut Output<'_>, state: &State<'_, '_>, value: &Value) -> Result<(), Error> {
    if !state.name().ends_with(URL_TEMPLATE_SUFFIX) {
        return minijinja::escape_formatter(out, state, value);
    }
    let (kind, text) = match value.downcast_object_ref::<Segments>() {
        Some(segments) => (SEGMENTS, segments.0.clone()),
        None => (PLAIN, value.to_string()),
    };
    write!(out, "{VALUE_START}{kind}{}{VALUE_END}", hex::encode(text))
        .map_err(|_| Error::new(minijinja::ErrorKind::WriteFailure, "cannot write the URL"))
}

/// Where in a URL the text written so far has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Scheme, `://`, user info, host and port.
    Authority,
    Path,
    Query,
    Fragment,
}

impl Part {
    /// The part after literal text `c` written in `self`.
    fn after(self, c: char, written: &str) -> Part {
        match (self, c) {
            (Part::Authority, '/')
                if written.contains("://") && !written.ends_with(":/") && !written.ends_with("//") =>
            {
                Part::Path
            }
            (Part::Authority | Part::Path, '?') if written.contains("://") => Part::Query,
            (Part::Authority | Part::Path | Part::Query, '#') if written.contains("://") => Part::Fragment,
            (part, _) => part,
        }
    }
}

/// Turn a rendered URL template (values marked) into the URL to call; `allowed_hosts` are the hosts a
/// template value may choose. `key` names the template in errors.
pub(crate) fn finish(key: &str, marked: &str, allowed_hosts: &[String]) -> Result<url::Url, RenderError> {
    let invalid = || RenderError::InvalidUrl { key: key.to_string() };
    let mut url = String::with_capacity(marked.len());
    let mut part = Part::Authority;
    let mut value_sets_host = false;
    let mut rest = marked;
    while let Some(start) = rest.find(VALUE_START) {
        for c in rest[..start].chars() {
            url.push(c);
            part = part.after(c, &url);
        }
        let after = &rest[start + VALUE_START.len_utf8()..];
        let end = after.find(VALUE_END).ok_or_else(invalid)?;
        let (kind, hex_text) = after[..end].split_at(1);
        let value = hex::decode(hex_text).ok().and_then(|v| String::from_utf8(v).ok()).ok_or_else(invalid)?;
        match (part, kind.chars().next()) {
            (Part::Authority, _) => {
                value_sets_host = true;
                url.push_str(&value);
            }
            (Part::Path, Some(SEGMENTS)) => {
                let encoded: Vec<String> =
                    value.split('/').map(|s| utf8_percent_encode(s, COMPONENT).to_string()).collect();
                url.push_str(&encoded.join("/"));
            }
            _ => url.extend(utf8_percent_encode(&value, COMPONENT)),
        }
        rest = &after[end + VALUE_END.len_utf8()..];
    }
    url.push_str(rest);

    check_path_segments(key, &url)?;
    let parsed = url::Url::parse(&url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(invalid());
    }
    if value_sets_host {
        let host = parsed.host_str().unwrap_or_default();
        if !allowed_hosts.iter().any(|allowed| host_matches(allowed, host)) {
            return Err(RenderError::HostNotAllowed { key: key.to_string() });
        }
    }
    Ok(parsed)
}

/// `..` as a path segment, even percent-encoded, would be resolved away by the URL parser and climb out of
/// the configured path: refused, whoever wrote it.
fn check_path_segments(key: &str, url: &str) -> Result<(), RenderError> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_more = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    let path = path_and_more.split(['?', '#']).next().unwrap_or_default();
    for segment in path.split(['/', '\\']) {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        if decoded == ".." || decoded.eq_ignore_ascii_case(".%2e") || decoded.eq_ignore_ascii_case("%2e.") {
            return Err(RenderError::PathTraversal { key: key.to_string() });
        }
    }
    Ok(())
}

/// `allowed` is a host name (any case) or `*.domain` for its subdomains.
fn host_matches(allowed: &str, host: &str) -> bool {
    match allowed.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        }
        None => allowed.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, body: serde_json::Value, allowed: &[&str]) -> Result<String, RenderError> {
        let mut env = crate::template::environment();
        env.add_template_owned("r.url".to_string(), template.to_string()).unwrap();
        let marked = env.get_template("r.url").unwrap().render(minijinja::context! { body => body }).unwrap();
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        finish("r.url", &marked, &allowed).map(|u| u.to_string())
    }

    #[test]
    fn a_value_in_a_path_segment_stays_one_segment() {
        let hostile = "%2e%2e/admin/delete?all=1#x";
        let url =
            render("http://peer/repos/{{ body.name }}/scan", serde_json::json!({ "name": hostile }), &[]).unwrap();
        assert_eq!(url, "http://peer/repos/%252e%252e%2Fadmin%2Fdelete%3Fall%3D1%23x/scan");
        let segment = url::Url::parse(&url).unwrap().path_segments().unwrap().nth(1).unwrap().to_string();
        assert_eq!(percent_decode_str(&segment).decode_utf8().unwrap(), hostile);
    }

    #[test]
    fn a_value_in_the_query_or_fragment_cannot_add_parameters() {
        let url = render(
            "http://peer/scan?repo={{ body.r }}&ref={{ body.f }}#{{ body.f }}",
            serde_json::json!({ "r": "a&admin=1", "f": "x#y z+" }),
            &[],
        )
        .unwrap();
        assert_eq!(url, "http://peer/scan?repo=a%26admin%3D1&ref=x%23y%20z%2B#x%23y%20z%2B");
        let pairs: Vec<(String, String)> = url::Url::parse(&url).unwrap().query_pairs().into_owned().collect();
        assert_eq!(pairs, [("repo".into(), "a&admin=1".into()), ("ref".into(), "x#y z+".into())]);
    }

    #[test]
    fn segments_keeps_slashes_and_encodes_each_segment() {
        let url = render(
            "http://peer/repos/{{ body.full_name | segments }}/scan",
            serde_json::json!({ "full_name": "octo cat/hello?world" }),
            &[],
        )
        .unwrap();
        assert_eq!(url, "http://peer/repos/octo%20cat/hello%3Fworld/scan");
    }

    #[test]
    fn a_dotdot_segment_is_refused_however_it_is_written() {
        for name in ["..", "a/../..", "%2e%2e"] {
            let err = render("http://peer/repos/{{ body.n | segments }}/scan", serde_json::json!({ "n": name }), &[])
                .map(|u| u.to_string());
            if name == "%2e%2e" {
                // Its `%` is encoded: the peer sees the text `%2e%2e`, not a parent directory.
                assert_eq!(err.unwrap(), "http://peer/repos/%252e%252e/scan");
            } else {
                assert!(matches!(err, Err(RenderError::PathTraversal { .. })), "{name}: {err:?}");
            }
        }
        let plain = render("http://peer/repos/{{ body.n }}/scan", serde_json::json!({ "n": ".." }), &[]);
        assert!(matches!(plain, Err(RenderError::PathTraversal { .. })), "{plain:?}");
    }

    #[test]
    fn a_templated_host_needs_the_allow_list() {
        let body = serde_json::json!({ "host": "scanner.internal", "evil": "evil.example#@scanner.internal" });
        let refused = render("http://{{ body.host }}/scan", body.clone(), &[]);
        assert!(matches!(refused, Err(RenderError::HostNotAllowed { .. })), "{refused:?}");
        assert_eq!(
            render("http://{{ body.host }}/scan", body.clone(), &["scanner.internal"]).unwrap(),
            "http://scanner.internal/scan"
        );
        assert_eq!(
            render("http://{{ body.host }}/scan", body.clone(), &["*.internal"]).unwrap(),
            "http://scanner.internal/scan"
        );
        let tricked = render("http://{{ body.evil }}/scan", body.clone(), &["scanner.internal"]);
        assert!(matches!(tricked, Err(RenderError::HostNotAllowed { .. })), "{tricked:?}");
        let scheme = render(
            "{{ body.scheme }}://scanner.internal/",
            serde_json::json!({ "scheme": "file" }),
            &["scanner.internal"],
        );
        assert!(matches!(scheme, Err(RenderError::InvalidUrl { .. })), "{scheme:?}");
    }

    #[test]
    fn a_url_without_values_is_kept_as_written() {
        assert_eq!(
            render("https://peer:8443/a/b?c=d#e", serde_json::json!({}), &[]).unwrap(),
            "https://peer:8443/a/b?c=d#e"
        );
    }
}
