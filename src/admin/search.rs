//! search: `GET /api/v1/deliveries` — the dashboard's delivery search by source, event, delivery id, time range,
//! job status, and a filter expression on the body in the route filter language, with the work bounded.
//!
//! Without `filter` the store answers the whole query in SQL. With it, the store's candidates (every other
//! parameter applied) are read newest first, bodies included, and the expression is evaluated against each as
//! a route's filter is (`body`, `headers`, `event`, `source`, `delivery`, `id`, `received_at`); one that fails
//! to evaluate does not match. One request reads at most [`SCAN_LIMIT`] candidates and evaluates for at most
//! [`SCAN_TIME`]; it stops once `limit` deliveries matched. The answer's `next` continues the scan where it
//! stopped and `scanned` says how many candidates were read, so the dashboard can say "none in the last N".

use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::Json;
use minijinja::{Environment, Value as MjValue};
use serde::Deserialize;
use serde_json::{json, Value};

use super::bulk::{parse_status, window};
use super::{delivery_summary, AdminAuth};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{now_ms, DeliveryQuery, DeliverySummary, DynStore, ScannedDelivery};
use crate::template::{environment, EventContext};

/// The longest filter expression taken.
pub const MAX_FILTER_LEN: usize = 1_000;

/// The most candidates one request evaluates its filter on.
pub const SCAN_LIMIT: usize = 2_000;

/// How long one request may spend evaluating; what was not reached is left to `next`.
pub const SCAN_TIME: Duration = Duration::from_secs(3);

/// Candidates (with their bodies) read from the store at a time.
const SCAN_PAGE: usize = 100;

/// Operators and filters (`~`, `+`, `|`) one expression may apply: each may copy a whole body, so together
/// they bound the bytes one evaluation moves.
const MAX_OPERATIONS: usize = 24;

/// Names (variables, filters, tests, keywords; not fields after a `.`) one expression may use: a list literal
/// of `body` a hundred times over would copy the body a hundred times without an operator.
const MAX_NAMES: usize = 32;

/// Names refused in a search filter: each makes work or output that does not depend on the stored delivery's
/// size (`range` counts to 100,000; `replace` multiplies a string, again at each link of a chain; `indent`,
/// `batch`, `slice` and `format` pad to a width or count the expression chooses; `indent` is also `tojson`'s
/// argument). Route filters come from the operator's configuration; this one comes from an API client. The
/// filters and functions among them are also taken out of the search's environment, so that `map("replace",
/// …)`, which names a filter in a string, fails (and does not match) instead.
const REFUSED_NAMES: [&str; 6] = ["range", "replace", "indent", "batch", "slice", "format"];

/// The route environment ([`environment`]) without the filters and functions of [`REFUSED_NAMES`], and with a
/// `tojson` that takes no indent (a width the expression chooses, at every line).
fn search_environment() -> Environment<'static> {
    let mut env = environment();
    for name in REFUSED_NAMES {
        env.remove_filter(name);
        env.remove_global(name);
    }
    env.add_filter("tojson", |value: &MjValue| {
        serde_json::to_string(value)
            .map(MjValue::from_safe_string)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
    });
    env
}

#[derive(Deserialize)]
pub(super) struct DeliveriesParams {
    source: Option<String>,
    event: Option<String>,
    delivery: Option<String>,
    id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    status: Option<String>,
    filter: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(super) async fn list_deliveries(
    _auth: AdminAuth,
    State(state): State<AppState>,
    Query(p): Query<DeliveriesParams>,
) -> Result<Json<Value>, ApiError> {
    let (since, until) = window(p.since.as_deref(), p.until.as_deref(), now_ms())?;
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_status(s)?),
    };
    let limit = p.limit.unwrap_or(50).clamp(1, 1000);
    let query = DeliveryQuery {
        source: nonempty(p.source),
        event: nonempty(p.event),
        delivery: nonempty(p.delivery),
        id: nonempty(p.id),
        since,
        until,
        status,
        limit,
        before: nonempty(p.cursor),
    };
    let Some(expr) = nonempty(p.filter) else {
        let page = state.store.list_deliveries(query).await?;
        let items: Vec<Value> = page.items.iter().map(delivery_summary).collect();
        return Ok(Json(json!({ "items": items, "next": page.next })));
    };
    check_filter(&expr)?;
    let found = search(&state.store, query, expr, Bounds { scan: SCAN_LIMIT, time: SCAN_TIME }).await?;
    let items: Vec<Value> = found.items.iter().map(delivery_summary).collect();
    Ok(Json(json!({ "items": items, "next": found.next, "scanned": found.scanned })))
}

/// An empty parameter (`?source=`, as a form sends it) filters nothing.
fn nonempty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// How much one search may read and how long it may evaluate.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub scan: usize,
    pub time: Duration,
}

/// What a search found: the matches (newest first), where to continue, and how many candidates it read.
#[derive(Debug)]
pub struct Found {
    pub items: Vec<DeliverySummary>,
    pub next: Option<String>,
    pub scanned: usize,
}

/// Refuse an expression that is too long, does not compile, or could make work out of proportion to the
/// deliveries it reads (see [`REFUSED_NAMES`], [`MAX_OPERATIONS`]); the message names the problem.
pub fn check_filter(expr: &str) -> Result<(), ApiError> {
    if expr.len() > MAX_FILTER_LEN {
        return Err(ApiError::BadRequest(format!(
            "filter is {} bytes long; at most {MAX_FILTER_LEN} are taken",
            expr.len()
        )));
    }
    guard(expr).map_err(|m| ApiError::BadRequest(format!("filter is refused: {m}")))?;
    // A fresh environment per request: the expression never meets the routes' templates.
    let env = search_environment();
    env.compile_expression(expr).map(drop).map_err(|e| {
        let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
        ApiError::BadRequest(format!("filter is not a valid expression: {detail}"))
    })
}

/// The lexical part of [`check_filter`]: string literals are skipped, so `body.msg == "a * b"` is fine.
fn guard(expr: &str) -> Result<(), String> {
    let bytes = expr.as_bytes();
    let (mut i, mut operations, mut names, mut previous) = (0, 0, 0, b' ');
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'*' => return Err("`*` repeats a string or list; it is not available in a search".into()),
            b'~' | b'+' | b'|' => {
                operations += 1;
                if operations > MAX_OPERATIONS {
                    return Err(format!("more than {MAX_OPERATIONS} operators and filters (`~`, `+`, `|`)"));
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i + 1 < bytes.len() && (bytes[i + 1].is_ascii_alphanumeric() || bytes[i + 1] == b'_') {
                    i += 1;
                }
                let name = &expr[start..=i];
                // `body.range` is a field of the body, not the function.
                if previous != b'.' {
                    if REFUSED_NAMES.contains(&name) {
                        return Err(format!("`{name}` is not available in a search"));
                    }
                    names += 1;
                    if names > MAX_NAMES {
                        return Err(format!("more than {MAX_NAMES} names (variables, filters, tests, keywords)"));
                    }
                }
            }
            _ => {}
        }
        if !c.is_ascii_whitespace() {
            previous = c;
        }
        i += 1;
    }
    Ok(())
}

/// Evaluate `expr` (checked by [`check_filter`]) against the candidates of `query`, newest first, within
/// `bounds`, until `query.limit` matched.
pub async fn search(store: &DynStore, query: DeliveryQuery, expr: String, bounds: Bounds) -> Result<Found, ApiError> {
    let started = Instant::now();
    let wanted = query.limit.clamp(1, 1000);
    let bounds = Bounds { scan: bounds.scan.max(1), ..bounds };
    let mut found = Found { items: Vec::new(), next: None, scanned: 0 };
    let mut cursor = query.before.clone();
    let mut expr = expr;
    loop {
        let room = (bounds.scan - found.scanned).min(SCAN_PAGE);
        let page =
            store.scan_deliveries(DeliveryQuery { limit: room, before: cursor.clone(), ..query.clone() }).await?;
        let more = page.next.is_some();
        let deadline = bounds.time.saturating_sub(started.elapsed());
        let need = wanted - found.items.len();
        // Evaluation is CPU work: it runs off the async workers, one page at a time.
        let (back, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = evaluate(&expr, &page.items, need, Instant::now() + deadline);
            (expr, outcome)
        })
        .await
        .map_err(|e| ApiError::internal(format!("search evaluation stopped: {e}")))?;
        expr = back;
        found.scanned += outcome.read;
        found.items.extend(outcome.matched);
        cursor = outcome.last.or(cursor);
        if found.items.len() == wanted {
            found.next = found.items.last().map(|d| d.id.clone());
            return Ok(found);
        }
        // Out of time (candidates of this page are left), or out of candidates to read (the store may hold
        // more when the page was full).
        let stopped = outcome.timed_out || found.scanned >= bounds.scan;
        if stopped || !more {
            found.next = if stopped && (more || outcome.timed_out) { cursor } else { None };
            return Ok(found);
        }
    }
}

/// What the evaluation of one page of candidates gave.
struct PageOutcome {
    matched: Vec<DeliverySummary>,
    /// Candidates evaluated, and the id of the last of them.
    read: usize,
    last: Option<String>,
    timed_out: bool,
}

fn evaluate(expr: &str, candidates: &[ScannedDelivery], need: usize, deadline: Instant) -> PageOutcome {
    let mut outcome = PageOutcome { matched: Vec::new(), read: 0, last: None, timed_out: false };
    let env = search_environment();
    let Ok(compiled) = env.compile_expression(expr) else {
        // Checked before the search began; an expression that no longer compiles matches nothing.
        outcome.read = candidates.len();
        outcome.last = candidates.last().map(|c| c.delivery.id.clone());
        return outcome;
    };
    for candidate in candidates {
        // At least one candidate per page, so every request moves the cursor on.
        if outcome.read > 0 && Instant::now() >= deadline {
            outcome.timed_out = true;
            break;
        }
        let ctx = EventContext::from_stored(&candidate.delivery);
        let matches = compiled.eval(ctx.to_value()).map(|v| v.is_true()).unwrap_or(false);
        outcome.read += 1;
        outcome.last = Some(candidate.delivery.id.clone());
        if matches {
            outcome.matched.push(candidate.summary());
            if outcome.matched.len() == need {
                break;
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(expr: &str) -> String {
        match check_filter(expr) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{expr}: {other:?}"),
        }
    }

    #[test]
    fn route_filter_expressions_compile() {
        for ok in [
            r#"body.repository.full_name == "octo/hello""#,
            r#"event == "push" and body.ref == "refs/heads/main""#,
            r#"headers["x-github-event"] == "push" and source in ["github", "gitlab"]"#,
            r#"body.commits | length > 2 and body.message == "a * b | c ~ range""#,
            r#"body.range == 1 and body.pusher.name | lower == "octo""#,
        ] {
            check_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn a_syntax_error_is_refused_with_the_parsers_words() {
        let m = refused(r#"body.repository.full_name == "#);
        assert!(m.starts_with("filter is not a valid expression: "), "{m}");
        assert!(m.len() > "filter is not a valid expression: ".len() + 5, "{m}");
        // A statement cannot be smuggled in: the filter is an expression, not a template.
        refused(r#"true %}{% for i in x %}{% endfor %}{% if true"#);
    }

    #[test]
    fn an_expression_over_1000_bytes_is_refused_and_1000_is_taken() {
        let at_limit = format!("body.a == \"{}\"", "x".repeat(MAX_FILTER_LEN - 12));
        assert_eq!(at_limit.len(), MAX_FILTER_LEN);
        check_filter(&at_limit).unwrap();
        let m = refused(&format!("{at_limit} "));
        assert!(m.contains("at most 1000"), "{m}");
    }

    #[test]
    fn amplifiers_are_refused_outside_string_literals() {
        for (expr, word) in [
            (r#""x" * 100000000 == body.a"#, "`*`"),
            (r#"range(100000) | length > 0"#, "`range`"),
            (r#"body.a | replace("a", "aaaaaaaaaa") | replace("a", "aaaaaaaaaa")"#, "`replace`"),
            (r#"body | tojson(indent=100000) | length > 0"#, "`indent`"),
            (r#"[1] | batch(100000000, 0) | list"#, "`batch`"),
            (r#""%100000000s" | format(1)"#, "`format`"),
        ] {
            let m = refused(expr);
            assert!(m.contains(word), "{expr}: {m}");
        }
        let chain = vec!["body.a"; MAX_OPERATIONS + 2].join(" ~ ");
        assert!(refused(&chain).contains("operators"));
        let within = vec!["body.a"; MAX_OPERATIONS + 1].join(" ~ ");
        check_filter(&within).unwrap();
        let listed = format!("[{}] | join | length > 0", vec!["body"; MAX_NAMES].join(", "));
        assert!(refused(&listed).contains("names"), "{listed}");
        check_filter(&format!("[{}] | join | length > 0", vec!["body"; MAX_NAMES - 3].join(", "))).unwrap();
    }

    #[test]
    fn refused_filters_named_in_strings_fail_and_tojson_takes_no_indent() {
        let env = search_environment();
        let eval = |expr: &str| env.compile_expression(expr).unwrap().eval(minijinja::context! { s => "ab" });
        assert!(eval(r#"[s] | map("replace", "", "aaaaaaaaaa") | first"#).is_err());
        assert!(eval(r#"[s] | map("format") | first"#).is_err());
        assert!(eval(r#"s | tojson(100000)"#).is_err());
        assert_eq!(eval(r#"{"a": [s]} | tojson"#).unwrap().as_str(), Some(r#"{"a":["ab"]}"#));
        assert_eq!(eval(r#"s | upper ~ (s | length)"#).unwrap().as_str(), Some("AB2"));
    }

    #[test]
    fn deep_nesting_is_refused_by_the_parser() {
        let deep = format!("{}body{}", "(".repeat(400), ")".repeat(400));
        refused(&deep);
        refused(&"not ".repeat(240));
    }
}
