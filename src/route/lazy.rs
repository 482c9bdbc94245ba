//! Template views of a JSON body and of request headers that convert only what a template touches.
//!
//! Converting a whole 7 KB payload into template values on every request dominated the request path;
//! a filter such as `body.ref == "refs/heads/main"` needs one field.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};

/// One step from the root of the body to a nested object or array.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// A JSON object or array inside the body, found from the shared root by its path.
#[derive(Debug)]
pub struct JsonNode {
    root: Arc<serde_json::Value>,
    path: Vec<Step>,
}

impl JsonNode {
    fn node(&self) -> &serde_json::Value {
        let mut v = &*self.root;
        for step in &self.path {
            v = match step {
                Step::Key(k) => &v[k.as_str()],
                Step::Index(i) => &v[*i],
            };
        }
        v
    }

    fn child(&self, step: Step, value: &serde_json::Value) -> Value {
        match value {
            serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                let mut path = self.path.clone();
                path.push(step);
                Value::from_object(JsonNode { root: self.root.clone(), path })
            }
            scalar => scalar_value(scalar),
        }
    }
}

fn scalar_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        // Containers are wrapped by the caller.
        other => Value::from_serialize(other),
    }
}

/// The template value of a whole body: lazy for objects and arrays, plain for scalars and null.
pub fn body_value(root: &Arc<serde_json::Value>) -> Value {
    match &**root {
        serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
            Value::from_object(JsonNode { root: root.clone(), path: Vec::new() })
        }
        scalar => scalar_value(scalar),
    }
}

impl Object for JsonNode {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.node() {
            serde_json::Value::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match self.node() {
            serde_json::Value::Object(map) => {
                let name = key.as_str()?;
                map.get(name).map(|v| self.child(Step::Key(name.to_string()), v))
            }
            serde_json::Value::Array(items) => {
                let index = key.as_usize()?;
                items.get(index).map(|v| self.child(Step::Index(index), v))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            serde_json::Value::Object(map) => Enumerator::Values(map.keys().map(|k| Value::from(k.as_str())).collect()),
            serde_json::Value::Array(items) => Enumerator::Seq(items.len()),
            _ => Enumerator::Empty,
        }
    }
}

/// Request headers (lower-case names) as a template map, looked up on demand.
#[derive(Debug)]
pub struct Headers(pub Arc<Vec<(String, String)>>);

impl Object for Headers {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| Value::from(v.as_str()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(k, _)| Value::from(k.as_str())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, body: serde_json::Value) -> String {
        let env = crate::route::environment();
        let ctx = minijinja::context! { body => body_value(&Arc::new(body)) };
        env.render_str(template, ctx).unwrap()
    }

    #[test]
    fn nested_fields_numbers_and_lists_read_as_before() {
        let body = serde_json::json!({"a": {"b": [1, {"c": "x"}]}, "n": 42, "f": 1.5, "t": true, "z": null});
        assert_eq!(
            render("{{ body.a.b[1].c }} {{ body.n + 1 }} {{ body.f }} {{ body.t }}", body.clone()),
            "x 43 1.5 True"
        );
        assert_eq!(
            render("{{ body.a.b | length }} {{ 'c' in body.a.b[1] }} {{ body.z is none }}", body.clone()),
            "2 True True"
        );
        assert_eq!(render("{{ body.missing is defined }}", body.clone()), "False");
    }

    #[test]
    fn tojson_and_loops_see_the_whole_value() {
        let body = serde_json::json!({"k": [1, 2], "s": "v"});
        let out = render("{{ body | tojson }}", body.clone());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), body);
        assert_eq!(render("{% for k in body %}{{ k }};{% endfor %}", body), "k;s;");
    }
}
