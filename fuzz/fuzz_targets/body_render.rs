//! Fuzz body validation at the edge and templates that walk the whole body, with deep and odd nesting.
//!
//! Two input modes, chosen by the first byte. Below 0x80 the rest is the body as sent (the byte picks
//! the content type), so hand-written seeds and the dictionary apply directly. From 0x80 the rest
//! drives a generator of JSON with thousands of `[`/`{` levels, mixed arrays and objects, huge and
//! duplicate keys, escapes (lone surrogates too), numbers at the edges, and damage (cut, BOM, junk).
//!
//! A body goes through the edge's `context_for_request` and its routes' filters and coalesce keys, as a
//! request does; then every route's action is rendered as the worker renders a job. A body the edge
//! refuses is rendered anyway through the worker's `EventContext::from_stored`, as a body stored before a
//! limit existed would be, so rendering must be safe whatever the edge lets through. Rendering runs on a
//! thread with tokio's 2 MiB worker stack, where production renders: only panics, aborts (a stack
//! overflow is one), hangs, out-of-memory and a body that `tojson` does not give back are findings; every
//! `Err` is an answer.
#![no_main]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use hookgate::route::Routes;
use hookgate::template::{context_for_request, EventContext};
use hookgate::store::Delivery;
use libfuzzer_sys::fuzz_target;

/// Tokio's default worker stack: where the edge evaluates filters and the worker renders actions.
const WORKER_STACK: usize = 2 << 20;

/// Levels of one generated nest at most: past 10,000 (the depth of the issue's crash), below what makes
/// the lazy document's per-level re-indexing (quadratic in depth) slow enough to time out.
const MAX_DEPTH: usize = 20_000;

/// Generated text stops growing here. Huge keys at every level would otherwise reach gigabytes, and a
/// 1 MiB body of huge keys took seconds per input (every level of a walk re-indexes what is below it).
const MAX_BYTES: usize = 128 << 10;

/// One route per template, so an error in one does not stop the others from being rendered. Actions
/// are `http` with a literal URL (rendered unguarded, the whole output kept) and one `command` (guarded).
const CONFIG: &str = r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["s"]

[[routes]]
name = "filter-walks"
source = "github"
filter = 'body | tojson | length > 1 and body == body'
coalesce = "{{ body.data | tojson }}"
action = { type = "http", url = "http://127.0.0.1:9/a", body = "{{ body | tojson }}" }

[[routes]]
name = "data"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/b", headers = { "x-len" = "{{ body.data | tojson | length }}" }, body = "{{ body.data | tojson }}" }

[[routes]]
name = "lengths"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/c", body = "{{ body | length }} {{ body | string | length }} {{ body | pprint | length }} {{ body | tojson(indent=2) | length }}" }

[[routes]]
name = "loop"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/d", body = "{% for k in body %}{{ k }}={{ (body[k] if body is mapping else k) | tojson }};{% endfor %}" }

[[routes]]
name = "items"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/e", body = '''{% for k, v in body | items %}{{ k | upper }}:{{ v | string | trim | replace('"', "'") | lower | title }};{% endfor %}''' }

[[routes]]
name = "recursive-loop"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/f", body = "{% for v in [body] recursive %}{% if v is mapping %}{{ loop(v | items | map('last')) }}{% elif v is sequence %}[{{ loop(v) }}]{% else %}{{ v }}{% endif %}{% endfor %}" }

[[routes]]
name = "macro"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/g", body = "{% macro walk(v) %}{% if v is mapping %}{% for k in v %}{{ k }}({{ walk(v[k]) }}){% endfor %}{% elif v is sequence %}{% for x in v %}{{ walk(x) }},{% endfor %}{% else %}{{ v }}{% endif %}{% endmacro %}{{ walk(body) }}" }

[[routes]]
name = "sequence-filters"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/h", body = "{{ body | list | length }} {{ body | first | tojson }} {{ body | last | tojson }} {{ body | reverse | list | length }} {{ body | unique | list | length }} {{ body | map('tojson') | join(',') | length }}" }

[[routes]]
name = "compare"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/i", body = "{{ body | sort | tojson }} {{ body | min | tojson }} {{ body | max | tojson }} {{ body.data in body }}" }

[[routes]]
name = "strings"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/j", body = '''{{ body | join(',') | length }} {{ body | string | split | list | length }} {{ body | string | lines | list | length }} {{ body | string | indent(2) | upper | length }} {{ body | string | capitalize | replace('\\', '/') | trim }}''' }

[[routes]]
name = "reshape"
source = "github"
action = { type = "http", url = "http://127.0.0.1:9/k", body = "{{ body | dictsort | tojson }} {{ body | batch(3) | list | tojson }} {{ body | slice(2) | list | length }} {{ body | select | list | length }}" }

[[routes]]
name = "argv"
source = "github"
action = { type = "command", argv = ["echo", "{{ body.data | tojson }}", "{% for k in body %}{{ k }}{% endfor %}", "{{ body | string }}"], env = { BODY = "{{ body | tojson }}" } }
"#;

fn routes() -> &'static Routes {
    static ROUTES: OnceLock<Routes> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let config = hookgate::config::parse(CONFIG, Path::new("/tmp"), &BTreeMap::<String, String>::new())
            .expect("the fuzz configuration is valid");
        Routes::compile(&config).expect("the fuzz routes compile")
    })
}

/// How the body is labelled: the edge parses by content type, sniffs without one.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Encoding {
    Json,
    PlusJson,
    /// GitHub's form delivery: the JSON in a `payload` field.
    Form,
    Sniffed,
    TextPlain,
}

impl Encoding {
    fn from_byte(b: u8) -> Self {
        [Encoding::Json, Encoding::PlusJson, Encoding::Form, Encoding::Sniffed, Encoding::TextPlain][usize::from(b) % 5]
    }

    fn content_type(self) -> Option<&'static str> {
        match self {
            Encoding::Json => Some("application/json; charset=utf-8"),
            Encoding::PlusJson => Some("application/vnd.api+json"),
            Encoding::Form => Some("application/x-www-form-urlencoded"),
            Encoding::Sniffed => None,
            Encoding::TextPlain => Some("text/plain"),
        }
    }

    fn wrap(self, text: Vec<u8>) -> Vec<u8> {
        match self {
            Encoding::Form => {
                let payload = String::from_utf8_lossy(&text);
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("zen", "x")
                    .append_pair("payload", &payload)
                    .finish()
                    .into_bytes()
            }
            _ => text,
        }
    }
}

/// A generated document: a value, then damage that makes odd or invalid JSON of it.
#[derive(Arbitrary, Debug)]
struct Generated<'a> {
    encoding: Encoding,
    /// Wrap the value as `{"data": …}` (what `body.data` templates read).
    under_data: bool,
    root: Node<'a>,
    bom: bool,
    leading_ws: u8,
    /// Cut the text here (modulo its length): unbalanced brackets, half escapes.
    cut: Option<u32>,
    trailing: Option<&'a [u8]>,
}

#[derive(Arbitrary, Debug)]
enum Node<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Number(EdgeNumber),
    Str(&'a str),
    Escaped(Vec<Escape>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Key<'a>, Node<'a>)>),
    /// `depth` levels cycling through `levels`, around `inner`: the nesting a bounded input cannot
    /// spell out bracket by bracket. With the top bit set, `depth` lands within 16 levels of the edge's
    /// nesting limit (128), where an off-by-one would hide.
    Deep {
        levels: Vec<Level<'a>>,
        depth: u16,
        inner: Box<Node<'a>>,
    },
}

#[derive(Arbitrary, Debug)]
enum Level<'a> {
    /// `[` with `before` scalar siblings ahead of the nested value and one after if `after`.
    Array { before: u8, after: bool },
    /// `{"key": …}`; with `duplicate` the key appears twice, the nested value under the last one
    /// (which the lazy document must pick, as `serde_json` would) or the first.
    Object { key: Key<'a>, duplicate: Option<bool> },
}

#[derive(Arbitrary, Debug)]
enum Key<'a> {
    Data,
    Items,
    Empty,
    Text(&'a str),
    Escaped(Vec<Escape>),
    /// One character repeated: keys far longer than any real payload has.
    Huge {
        c: char,
        len: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum Escape {
    Char(char),
    /// `\uXXXX`, any value: lone and swapped surrogates included.
    Unicode(u16),
    Pair(u16, u16),
    /// `\` and one byte: the valid short escapes and invalid ones.
    Short(u8),
    /// A raw control or non-UTF-8 byte inside the string.
    Raw(u8),
}

#[derive(Arbitrary, Debug)]
enum EdgeNumber {
    Listed(u8),
    /// `n` nines, with optional sign, fraction and exponent: past every integer and float range.
    Digits {
        n: u16,
        negative: bool,
        fraction: bool,
        exponent: Option<i32>,
    },
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1e308",
    "1e309",
    "-1e309",
    "1e-400",
    "4.9e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "0.1e+1",
    "1E400",
    "1e",
    "01",
    "1.",
    ".5",
    "-",
    "+1",
    "NaN",
    "Infinity",
    "0x10",
];

/// Writes generated JSON; nesting of `Node`s is bounded by the input, `Deep` levels are written by loops.
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn node(&mut self, node: &Node<'_>) {
        match node {
            Node::Null => self.out.extend_from_slice(b"null"),
            Node::Bool(b) => self.out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Node::Int(i) => self.out.extend_from_slice(i.to_string().as_bytes()),
            Node::Float(f) => match serde_json::to_vec(f) {
                Ok(text) => self.out.extend_from_slice(&text),
                Err(_) => self.out.extend_from_slice(b"1e999"),
            },
            Node::Number(n) => self.number(n),
            Node::Str(s) => self.out.extend_from_slice(&serde_json::to_vec(s).unwrap_or_default()),
            Node::Escaped(parts) => self.escaped(parts),
            Node::Array(items) => {
                self.out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.node(item);
                }
                self.out.push(b']');
            }
            Node::Object(members) => {
                self.out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.key(key);
                    self.node(value);
                }
                self.out.push(b'}');
            }
            Node::Deep { levels, depth, inner } => {
                let depth = if depth & 0x8000 != 0 { 112 + usize::from(depth % 33) } else { usize::from(*depth) };
                self.deep(levels, depth, inner)
            }
        }
    }

    fn deep(&mut self, levels: &[Level<'_>], depth: usize, inner: &Node<'_>) {
        if levels.is_empty() {
            return self.node(inner);
        }
        let mut depth = depth.min(MAX_DEPTH);
        for (opened, level) in levels.iter().cycle().take(depth).enumerate() {
            if self.out.len() > MAX_BYTES {
                depth = opened;
                break;
            }
            match level {
                Level::Array { before, .. } => {
                    self.out.push(b'[');
                    for i in 0..*before % 4 {
                        let _ = write!(Sink(&mut self.out), "{i},");
                    }
                }
                Level::Object { key, duplicate } => {
                    self.out.push(b'{');
                    if *duplicate == Some(true) {
                        self.key(key);
                        self.out.extend_from_slice(b"0,");
                    }
                    self.key(key);
                }
            }
        }
        self.node(inner);
        let closing: Vec<&Level<'_>> = levels.iter().cycle().take(depth).collect();
        for level in closing.into_iter().rev() {
            match level {
                Level::Array { after, .. } => {
                    self.out.extend_from_slice(if *after { b",null]" } else { b"]" });
                }
                Level::Object { key, duplicate } => {
                    if *duplicate == Some(false) {
                        self.out.push(b',');
                        self.key(key);
                        self.out.extend_from_slice(b"{}");
                    }
                    self.out.push(b'}');
                }
            }
        }
    }

    fn key(&mut self, key: &Key<'_>) {
        match key {
            Key::Data => self.out.extend_from_slice(b"\"data\""),
            Key::Items => self.out.extend_from_slice(b"\"items\""),
            Key::Empty => self.out.extend_from_slice(b"\"\""),
            Key::Text(s) => self.out.extend_from_slice(&serde_json::to_vec(s).unwrap_or_default()),
            Key::Escaped(parts) => self.escaped(parts),
            Key::Huge { c, len } => {
                let len = usize::from(*len).min(MAX_BYTES.saturating_sub(self.out.len()) / 4);
                let s: String = std::iter::repeat_n(*c, len).collect();
                self.out.extend_from_slice(&serde_json::to_vec(&s).unwrap_or_default());
            }
        }
        self.out.push(b':');
    }

    fn escaped(&mut self, parts: &[Escape]) {
        self.out.push(b'"');
        for part in parts {
            match part {
                Escape::Char(c) => {
                    let _ = write!(Sink(&mut self.out), "{c}");
                }
                Escape::Unicode(u) => {
                    let _ = write!(Sink(&mut self.out), "\\u{u:04x}");
                }
                Escape::Pair(hi, lo) => {
                    let _ =
                        write!(Sink(&mut self.out), "\\u{:04X}\\u{:04x}", 0xd800 | (hi & 0x3ff), 0xdc00 | (lo & 0x3ff));
                }
                Escape::Short(b) => self.out.extend_from_slice(&[b'\\', *b]),
                Escape::Raw(b) => self.out.push(*b),
            }
        }
        self.out.push(b'"');
    }

    fn number(&mut self, n: &EdgeNumber) {
        match n {
            EdgeNumber::Listed(i) => self.out.extend_from_slice(NUMBERS[usize::from(*i) % NUMBERS.len()].as_bytes()),
            EdgeNumber::Digits { n, negative, fraction, exponent } => {
                if *negative {
                    self.out.push(b'-');
                }
                self.out.push(b'1');
                self.out.extend(std::iter::repeat_n(b'9', usize::from(*n)));
                if *fraction {
                    self.out.extend_from_slice(b".5");
                }
                if let Some(e) = exponent {
                    let _ = write!(Sink(&mut self.out), "e{e}");
                }
            }
        }
    }
}

/// `write!` into the byte buffer.
struct Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn generate(data: &[u8]) -> Option<(Encoding, Vec<u8>)> {
    let input = Generated::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    let mut w = Writer { out: Vec::new() };
    if input.bom {
        w.out.extend_from_slice("\u{feff}".as_bytes());
    }
    w.out.extend(std::iter::repeat_n(b' ', usize::from(input.leading_ws % 4)));
    if input.under_data {
        w.out.extend_from_slice(b"{\"data\":");
    }
    w.node(&input.root);
    if input.under_data {
        w.out.push(b'}');
    }
    if let Some(cut) = input.cut {
        let len = w.out.len().max(1);
        w.out.truncate(cut as usize % len);
    }
    if let Some(tail) = input.trailing {
        w.out.extend_from_slice(tail);
    }
    Some((input.encoding, input.encoding.wrap(w.out)))
}

fn render_everything(ctx: &EventContext) {
    let routes = routes();
    let _ = routes.jobs_for(ctx, 0);
    for route in routes.routes() {
        let _ = routes.render_action(route, ctx, "job-1", 1024);
    }
}

/// The one property checked beyond "no crash": a body the edge took as JSON reads back whole and unchanged
/// through `{{ body | tojson }}` (duplicate keys: the last wins, as in `serde_json`), floats to the bit
/// (`regressions/body_render/float-one-ulp-off`). Only where `serde_json` itself builds the value; it
/// refuses lone surrogates, numbers past `f64` and depth past 128.
fn check_round_trip(ctx: &EventContext, encoding: Encoding, body: &[u8]) {
    if ctx.body.is_none() || matches!(encoding, Encoding::Form) {
        return;
    }
    let Ok(expected) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let rendered = hookgate::template::environment()
        .render_str("{{ body | tojson }}", ctx.to_value())
        .expect("an accepted body renders with tojson");
    let got: serde_json::Value = serde_json::from_str(&rendered).expect("tojson renders JSON");
    assert!(got == expected, "tojson of an accepted body differs from it: {rendered}");
}

fn run(encoding: Encoding, body: Vec<u8>) {
    // Reproducing a finding needs the body itself (for a test with `curl`, say), not the fuzzer's bytes.
    if let Some(path) = std::env::var_os("BODY_RENDER_DUMP") {
        let _ = std::fs::write(&path, &body);
        eprintln!("body_render: {} bytes, content type {:?}, written to {path:?}", body.len(), encoding.content_type());
    }
    let body = bytes::Bytes::from(body);
    let mut headers = vec![("x-github-event".to_string(), "push".to_string())];
    if let Some(ct) = encoding.content_type() {
        headers.push(("content-type".into(), ct.into()));
    }
    let worker = std::thread::Builder::new().stack_size(WORKER_STACK).spawn(move || {
        match context_for_request("github", "push", "d-1", "id-1", Arc::new(headers.clone()), &body) {
            Ok(ctx) => {
                check_round_trip(&ctx, encoding, &body);
                render_everything(&ctx)
            }
            Err(_) => {
                let stored = Delivery {
                    id: "id-1".into(),
                    source: "github".into(),
                    event: "push".into(),
                    delivery: "d-1".into(),
                    received_at: 0,
                    headers,
                    body,
                    replay_key: None,
                };
                render_everything(&EventContext::from_stored(&stored));
            }
        }
    });
    if let Err(panic) = worker.expect("spawn a worker thread").join() {
        std::panic::resume_unwind(panic);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode < 0x80 {
        let encoding = Encoding::from_byte(mode);
        run(encoding, encoding.wrap(rest.to_vec()));
    } else if let Some((encoding, body)) = generate(rest) {
        run(encoding, body);
    }
});
