//! Fuzz expression and template evaluation: body parsing, filters, coalesce keys and guarded action
//! rendering of a fixed configuration, fed arbitrary bodies, content types, events and header values.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use hookgate::route::Routes;
use hookgate::template::{context_for_request, parse_body};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["s"]

[[routes]]
name = "refresh"
source = "github"
filter = 'event == "push" and body.ref == "refs/heads/main" and body.repository.full_name is string'
coalesce = "{{ body.repository.full_name }}"
action = { type = "command", argv = ["git", "-C", "/srv/{{ body.repository.name }}", "fetch", "{{ body.after | default('HEAD') }}"], env = { REF = "{{ body.ref }}" }, cwd = "/tmp/{{ source }}" }

[[routes]]
name = "allow-list"
source = "github"
filter = 'body.project.environment in ["prod", "staging"] or headers["x-github-event"] | lower == "ping"'
coalesce = "{{ body.project.environment }}:{{ body.project.secretPath }}"
action = { type = "http", url = "http://127.0.0.1:9/{{ body.project.environment }}/{{ delivery }}", headers = { "x-env" = "{{ headers['x-env'] | default('none') }}" }, body = '''{"p": {{ body.project | tojson }}, "n": {{ body | length }}, "e": {{ event | tojson }}}''' }

[[routes]]
name = "every"
source = "github"
filter = 'body is mapping and (body.items | default([]) | length) > 2 and (body.count | default(0)) * 3 > 10'
action = { type = "command", argv = ["echo", "{% for i in body.items %}{{ i }},{% endfor %}", "{{ body.count + 1 }}", "{{ id }}"] }

[[routes]]
name = "url"
source = "github"
action = { type = "http", url = "{{ body.url }}", method = "PUT", body = "{{ body.text | upper }}{{ received_at }}" }
"#;

fn routes() -> &'static Routes {
    static ROUTES: OnceLock<Routes> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let config = hookgate::config::parse(CONFIG, Path::new("/tmp"), &BTreeMap::<String, String>::new())
            .expect("the fuzz configuration is valid");
        Routes::compile(&config).expect("the fuzz routes compile")
    })
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    content_type: Option<&'a str>,
    event: &'a str,
    delivery: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let _ = parse_body(input.content_type, &bytes::Bytes::copy_from_slice(input.body));
    let mut headers: Vec<(String, String)> =
        input.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
    if let Some(ct) = input.content_type {
        headers.push(("content-type".into(), ct.into()));
    }
    let body = bytes::Bytes::copy_from_slice(input.body);
    let Ok(ctx) =
        context_for_request("github", input.event, input.delivery, "id-1", std::sync::Arc::new(headers), &body)
    else {
        return;
    };
    let routes = routes();
    let _ = routes.jobs_for(&ctx, 0);
    for route in routes.routes() {
        let _ = routes.render_action(route, &ctx, "job-1", 1024);
    }
});
