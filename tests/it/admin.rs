//! The admin API: bearer auth, listing with cursors, detail with redaction, replay and retry.

use crate::helpers::*;

fn config() -> String {
    ok_and_broken_routes("", "{ max_attempts = 1 }")
}

store_test! {
    async fn the_admin_api_needs_the_bearer_token(backend) {
        let app = spawn_app(&backend, &config()).await;
        let url = format!("{}/api/v1/deliveries", app.addr);
        assert_eq!(app.client.get(&url).send().await.unwrap().status(), 401);
        assert_eq!(app.client.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
        assert_eq!(app.client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), 200);
    }
}

store_test! {
    async fn without_an_admin_token_the_api_and_dashboard_do_not_exist(backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{url}\"\n{GITHUB_SOURCE}");
        let config = hookgate::config::parse(&text, dir.path(), &std::collections::BTreeMap::<String, String>::new()).unwrap();
        let app = hookgate::startup::Application::build(config).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(app.run_until_stopped(stop.clone()));
        let client = reqwest::Client::new();
        for path in ["/api/v1/deliveries", "/api/v1/jobs", "/ui/", "/ui/app.js", "/ui/app.css"] {
            let status = client.get(format!("{base}{path}")).bearer_auth("anything").send().await.unwrap().status();
            assert_eq!(status, 404, "{path}");
        }
        stop.cancel();
    }
}

store_test! {
    async fn deliveries_are_listed_newest_first_with_a_cursor_and_filters(backend) {
        let app = spawn_app(&backend, &config()).await;
        for i in 0..5 {
            app.github("push", &format!("list-{i}"), &push_body("refs/heads/main", "o/r")).await;
        }
        app.github("ping", "list-ping", "{}").await;
        let page = app.admin_get("/api/v1/deliveries?limit=3").await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["delivery"], "list-ping");
        for key in ["id", "source", "event", "delivery", "received_at", "jobs"] {
            assert!(items[0].get(key).is_some(), "{key} missing");
        }
        let next = page["next"].as_str().expect("a next cursor");
        let rest = app.admin_get(&format!("/api/v1/deliveries?limit=10&cursor={next}")).await;
        assert_eq!(rest["items"].as_array().unwrap().len(), 3);
        assert!(rest["next"].is_null());
        let pushes = app.admin_get("/api/v1/deliveries?event=push&limit=100").await;
        assert_eq!(pushes["items"].as_array().unwrap().len(), 5);
    }
}

store_test! {
    async fn a_delivery_shows_its_body_jobs_and_redacted_signature_headers(backend) {
        let app = spawn_app(&backend, &config()).await;
        let body = push_body("refs/heads/main", "o/r");
        let json: serde_json::Value = app.github("push", "show-1", &body).await.json().await.unwrap();
        let id = json["id"].as_str().unwrap();
        terminal_jobs(&app, id).await;
        let detail = app.admin_get(&format!("/api/v1/deliveries/{id}")).await;
        assert_eq!(detail["body"]["ref"], "refs/heads/main");
        assert_eq!(detail["headers"]["x-hub-signature-256"], "[redacted]");
        assert_eq!(detail["headers"]["x-github-event"], "push");
        let job = &detail["jobs"][0];
        for key in ["id", "route", "status", "attempts", "last_error", "next_attempt_at"] {
            assert!(job.get(key).is_some(), "{key} missing");
        }
        assert_eq!(job["route"], "ok");
        assert_eq!(job["status"], "succeeded");
        let missing = app.client.get(format!("{}/api/v1/deliveries/nope", app.addr)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(missing.status(), 404);
    }
}

store_test! {
    async fn a_replay_creates_new_jobs_that_run(backend) {
        let app = spawn_app(&backend, &config()).await;
        let json: serde_json::Value = app.github("push", "replay-1", &push_body("refs/heads/main", "o/r")).await.json().await.unwrap();
        let id = json["id"].as_str().unwrap();
        terminal_jobs(&app, id).await;
        let response = app.admin_post(&format!("/api/v1/deliveries/{id}/replay")).await;
        assert_eq!(response.status(), 202);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["jobs"], 1);
        let jobs = eventually(std::time::Duration::from_secs(10), "two succeeded jobs", || async {
            let jobs = delivery_jobs(&app, id).await;
            (jobs.len() == 2 && jobs.iter().all(|j| j["status"] == "succeeded")).then_some(jobs)
        })
        .await;
        assert_eq!(jobs.len(), 2);
    }
}

store_test! {
    async fn a_dead_job_is_listed_and_can_be_retried(backend) {
        let app = spawn_app(&backend, &config()).await;
        let json: serde_json::Value = app.github("push", "dead-1", &push_body("refs/heads/broken", "o/r")).await.json().await.unwrap();
        let id = json["id"].as_str().unwrap();
        let jobs = terminal_jobs(&app, id).await;
        assert_eq!(jobs[0]["status"], "dead");
        let dead = app.admin_get("/api/v1/jobs?status=dead").await;
        let items = dead["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        let job_id = items[0]["id"].as_str().unwrap();
        let response = app.admin_post(&format!("/api/v1/jobs/{job_id}/retry")).await;
        assert_eq!(response.status(), 202);
        // It runs again (and dies again: `false` never succeeds), with a fresh attempt count.
        eventually(std::time::Duration::from_secs(10), "the retried job to run", || async {
            let jobs = delivery_jobs(&app, id).await;
            (jobs[0]["status"] == "dead" && jobs[0]["attempt_log"].as_array().unwrap().len() == 2).then_some(())
        })
        .await;
        let bad = app.client.get(format!("{}/api/v1/jobs?status=lost", app.addr)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(app.admin_post("/api/v1/jobs/nope/retry").await.status(), 404);
    }
}

store_test! {
    async fn the_dashboard_is_served_with_a_strict_content_policy(backend) {
        let app = spawn_app(&backend, &config()).await;
        let response = app.client.get(format!("{}/ui/", app.addr)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
        let policy = response.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(policy.contains("script-src 'self'") && policy.contains("style-src 'self'"), "{policy}");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script>") && !html.contains("<style>") && !html.contains(" style="), "inline code: {html}");
        assert!(!has_inline_handler(&html), "inline event handler: {html}");
        // Every module the page loads is served as JavaScript, and none of them parses API values as markup.
        let mut seen = std::collections::BTreeSet::new();
        let mut queue = vec!["app.js".to_string()];
        while let Some(name) = queue.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let script = app.client.get(format!("{}/ui/{name}", app.addr)).send().await.unwrap();
            assert_eq!(script.status(), 200, "{name}");
            assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8", "{name}");
            let script = script.text().await.unwrap();
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!script.contains(sink), "{name} uses {sink}: payload values must be inserted as text");
            }
            queue.extend(script.split("from \"./").skip(1).filter_map(|rest| rest.split('"').next()).map(String::from));
        }
        assert!(seen.contains("deliveries.js") && seen.contains("chart.js"), "{seen:?}");
        let style = app.client.get(format!("{}/ui/app.css", app.addr)).send().await.unwrap();
        assert_eq!(style.headers()["content-type"], "text/css; charset=utf-8");
    }
}

/// An attribute like ` onclick=` or ` onerror =` anywhere in the markup.
fn has_inline_handler(html: &str) -> bool {
    let lower = html.to_ascii_lowercase();
    lower.match_indices(" on").any(|(at, _)| {
        let rest = lower[at + 3..].trim_start_matches(|c: char| c.is_ascii_lowercase());
        rest.len() < lower.len() - at - 3 && rest.trim_start().starts_with('=')
    })
}
