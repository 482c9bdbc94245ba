//! route: which routes an event matches (filter expressions), the jobs it fans out to (coalesce keys), and
//! each job's rendered action.
//!
//! Everything is compiled once at start-up so a bad expression is a configuration error, not a runtime one.
//! Each action kind compiles and renders its own options (`crate::actions`) with `crate::template`.

use std::collections::HashMap;

use minijinja::{Environment, Value};

use crate::actions::{Action, ActionSpec, JobContext};
use crate::config::{Config, ConfigError, Route};
use crate::store::{new_id, Millis, NewJob};
use crate::template::{environment, EventContext, RenderError, Text};

/// One route, with the names of its compiled templates in the shared environment.
#[derive(Debug)]
pub struct CompiledRoute {
    pub config: Route,
    filter: Option<String>,
    coalesce: Option<String>,
    action: Action<Text>,
}

/// All routes of a configuration, compiled.
pub struct Routes {
    env: Environment<'static>,
    routes: Vec<CompiledRoute>,
    by_source: HashMap<String, Vec<usize>>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("routes", &self.routes).finish()
    }
}

impl Routes {
    /// Compile every route's filter, coalesce key and action templates; errors name the key.
    pub fn compile(config: &Config) -> Result<Self, ConfigError> {
        let mut env = environment();
        let mut routes = Vec::new();
        let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, route) in config.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            let filter = match &route.filter {
                Some(expr) => {
                    let name = key("filter");
                    add(&mut env, &name, format!("{{% if {expr} %}}1{{% endif %}}"))?;
                    Some(name)
                }
                None => None,
            };
            let coalesce = match &route.coalesce {
                Some(t) => {
                    let name = key("coalesce");
                    add(&mut env, &name, t.clone())?;
                    Some(name)
                }
                None => None,
            };
            let action = route.action.compile(&mut env, &key("action"))?;
            by_source.entry(route.source.clone()).or_default().push(routes.len());
            routes.push(CompiledRoute { config: route.clone(), filter, coalesce, action });
        }
        Ok(Routes { env, routes, by_source })
    }

    pub fn routes(&self) -> impl Iterator<Item = &CompiledRoute> {
        self.routes.iter()
    }

    pub fn get(&self, name: &str) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.config.name == name)
    }

    /// The jobs an event creates: one per enabled route of its source whose filter matches.
    /// Without a filter a route takes every event but `ping`. A filter that fails to evaluate does not match.
    pub fn jobs_for(&self, ctx: &EventContext, now: Millis) -> Vec<NewJob> {
        let Some(indexes) = self.by_source.get(&ctx.source) else {
            return Vec::new();
        };
        let value = ctx.to_value();
        let mut jobs = Vec::new();
        for route in indexes.iter().map(|&i| &self.routes[i]) {
            if !route.config.enabled || !self.matches(route, ctx, &value) {
                continue;
            }
            jobs.push(self.new_job(route, &value, now));
        }
        jobs
    }

    /// A job for a route run by its schedule (event `schedule`, body null); None if the route is unknown.
    pub fn scheduled_job(&self, route: &str, ctx: &EventContext, now: Millis) -> Option<NewJob> {
        let route = self.get(route)?;
        Some(self.new_job(route, &ctx.to_value(), now))
    }

    /// A job of `route` for one event. A keyed job waits out the route's `coalesce_window`; events for its
    /// key meanwhile merge into it.
    fn new_job(&self, route: &CompiledRoute, value: &Value, now: Millis) -> NewJob {
        let coalesce_key = self.coalesce_key(route, value);
        let delay = if coalesce_key.is_some() { route.config.coalesce_window.as_millis() as Millis } else { 0 };
        NewJob { id: new_id(), route: route.config.name.clone(), coalesce_key, run_at: now + delay }
    }

    fn matches(&self, route: &CompiledRoute, ctx: &EventContext, value: &Value) -> bool {
        let Some(name) = &route.filter else {
            return ctx.event != "ping";
        };
        match self.env.get_template(name).and_then(|t| t.render(value)) {
            Ok(out) => out == "1",
            Err(e) => {
                tracing::debug!(route = %route.config.name, error = %e, "filter did not evaluate; route skipped");
                false
            }
        }
    }

    fn coalesce_key(&self, route: &CompiledRoute, value: &Value) -> Option<String> {
        let name = route.coalesce.as_ref()?;
        match self.env.get_template(name).and_then(|t| t.render(value)) {
            Ok(key) if !key.trim().is_empty() => Some(key),
            // No key: the job runs on its own rather than merging with unrelated ones.
            _ => None,
        }
    }

    /// Render a route's action for one job: every template evaluated, hostile values refused.
    pub fn render_action(
        &self,
        route: &CompiledRoute,
        ctx: &EventContext,
        job_id: &str,
        output_cap: usize,
    ) -> Result<ActionSpec, RenderError> {
        if let Some(e) = &ctx.body_error {
            return Err(RenderError::Body { message: e.to_string() });
        }
        let vars = minijinja::context! { job => job_id, ..ctx.to_value() };
        route.action.render(&JobContext { templates: &self.env, vars: &vars, event: ctx, job_id, output_cap })
    }
}

fn add(env: &mut Environment<'static>, name: &str, source: String) -> Result<(), ConfigError> {
    env.add_template_owned(name.to_string(), source).map_err(|e| ConfigError::Invalid {
        key: name.to_string(),
        message: e.detail().unwrap_or("syntax error").to_string(),
    })
}

impl CompiledRoute {
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn routes(toml: &str) -> Routes {
        let text = format!("[[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"s\"]\n{toml}");
        let cfg = crate::config::parse(&text, Path::new(""), &BTreeMap::<String, String>::new()).unwrap();
        Routes::compile(&cfg).unwrap()
    }

    fn push(reference: &str, repo: &str) -> EventContext {
        EventContext::new(
            "github",
            "push",
            "d-1",
            "id-1",
            serde_json::json!({ "ref": reference, "repository": { "full_name": repo, "name": "r" } }),
            vec![("x-github-event".into(), "push".into())],
        )
    }

    const REFRESH: &str = r#"
        [[routes]]
        name = "refresh"
        source = "github"
        filter = 'event == "push" and body.ref == "refs/heads/main"'
        coalesce = "{{ body.repository.full_name }}"
        action = { type = "command", argv = ["git", "-C", "/srv/{{ body.repository.name }}", "fetch"] }
    "#;

    #[test]
    fn a_filter_selects_matching_events() {
        let r = routes(REFRESH);
        assert_eq!(r.jobs_for(&push("refs/heads/main", "o/r"), 0).len(), 1);
        assert!(r.jobs_for(&push("refs/heads/dev", "o/r"), 0).is_empty());
    }

    #[test]
    fn a_filter_over_a_missing_field_does_not_match() {
        let r = routes(REFRESH);
        let ctx = EventContext::new("github", "push", "d", "i", serde_json::Value::Null, vec![]);
        assert!(r.jobs_for(&ctx, 0).is_empty());
    }

    #[test]
    fn the_coalesce_key_is_rendered() {
        let r = routes(REFRESH);
        let jobs = r.jobs_for(&push("refs/heads/main", "octo/repo"), 0);
        assert_eq!(jobs[0].coalesce_key.as_deref(), Some("octo/repo"));
    }

    #[test]
    fn a_coalesce_window_delays_keyed_jobs_only() {
        let r = routes(&REFRESH.replace("coalesce =", "coalesce_window = \"2s\"\n        coalesce ="));
        assert_eq!(r.jobs_for(&push("refs/heads/main", "o/r"), 1_000)[0].run_at, 3_000);
        let unkeyed = routes(REFRESH);
        assert_eq!(unkeyed.jobs_for(&push("refs/heads/main", "o/r"), 1_000)[0].run_at, 1_000);
    }

    #[test]
    fn without_a_filter_every_event_but_ping_matches() {
        let r = routes(
            "[[routes]]\nname = \"all\"\nsource = \"github\"\naction = { type = \"command\", argv = [\"true\"] }",
        );
        assert_eq!(r.jobs_for(&push("x", "y"), 0).len(), 1);
        let ping = EventContext::new("github", "ping", "d", "i", serde_json::json!({}), vec![]);
        assert!(r.jobs_for(&ping, 0).is_empty());
    }

    #[test]
    fn every_matching_route_gets_a_job() {
        let two = format!("{REFRESH}\n[[routes]]\nname = \"audit\"\nsource = \"github\"\naction = {{ type = \"command\", argv = [\"true\"] }}");
        let r = routes(&two);
        let jobs = r.jobs_for(&push("refs/heads/main", "o/r"), 0);
        let names: Vec<_> = jobs.iter().map(|j| j.route.as_str()).collect();
        assert_eq!(names, ["refresh", "audit"]);
    }

    #[test]
    fn a_syntax_error_in_a_filter_names_the_key() {
        let text = "[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n[[routes]]\nname = \"r\"\nsource = \"g\"\nfilter = 'event == '\naction = { type = \"command\", argv = [\"true\"] }";
        let cfg = crate::config::parse(text, Path::new(""), &BTreeMap::<String, String>::new()).unwrap();
        let err = Routes::compile(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("routes[0].filter"), "{err}");
    }

    #[test]
    fn argv_templates_render_one_argument_each() {
        let r = routes(REFRESH);
        let route = r.get("refresh").unwrap();
        let ActionSpec::Command(spec) = r.render_action(route, &push("refs/heads/main", "o/r"), "job", 100).unwrap()
        else {
            panic!("command expected")
        };
        assert_eq!(spec.argv, ["git", "-C", "/srv/r", "fetch"]);
    }

    #[test]
    fn a_deep_body_stored_before_the_nesting_limit_fails_its_job_not_the_process() {
        let r = routes(
            "[[routes]]\nname = \"fwd\"\nsource = \"github\"\naction = { type = \"command\", argv = [\"echo\", \"{{ body.data | tojson }}\"] }",
        );
        let stored = crate::store::Delivery {
            id: "i".into(),
            source: "github".into(),
            event: "push".into(),
            delivery: "d".into(),
            received_at: 0,
            headers: vec![("content-type".into(), "application/json".into())],
            body: bytes::Bytes::from(format!(r#"{{"data": {}}}"#, crate::template::lazy::nested(20_000))),
            replay_key: None,
        };
        let ctx = EventContext::from_stored(&stored);
        let err = r.render_action(r.get("fwd").unwrap(), &ctx, "job", 100).unwrap_err();
        assert!(matches!(err, RenderError::Body { .. }), "{err}");
        assert!(err.to_string().contains("deeper than"), "{err}");
    }
}
