//! A hostile sender at the edge: deep JSON, memory floods, connection floods, junk that eats rate limits.

use crate::helpers::*;

/// `levels` nested arrays around a scalar, as a JSON text.
fn nested_arrays(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

const TOJSON_ROUTE: &str = r#"
[[routes]]
name = "forward"
source = "github"
action = { type = "command", argv = ["echo", "{{ body.data | tojson }}"] }
"#;

store_test! {
    async fn a_signed_body_nested_deeper_than_128_levels_is_refused_400_and_nothing_is_stored(backend) {
        let app = spawn_app(&backend, &format!("{GITHUB_SOURCE}{TOJSON_ROUTE}")).await;
        let body = format!(r#"{{"data": {}}}"#, nested_arrays(10_000));
        let refused = app.github("push", "deep-1", &body).await;
        assert_eq!(refused.status(), 400);
        let json: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(json["code"], "bad_request");
        assert!(json["message"].as_str().unwrap().contains("deeper than 128 levels"), "{json}");
        let listed = app.admin_get("/api/v1/deliveries").await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 0, "{listed}");

        // The deepest allowed body is accepted, and its job runs to the end.
        let body = format!(r#"{{"data": {}}}"#, nested_arrays(127));
        let accepted = app.github("push", "deep-2", &body).await;
        assert_eq!(accepted.status(), 202);
        let id = accepted.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let jobs = terminal_jobs(&app, &id).await;
        assert_eq!(jobs[0]["status"], "succeeded", "{jobs:?}");
        assert_eq!(app.client.get(format!("{}/healthz", app.addr)).send().await.unwrap().status(), 200);
    }
}
