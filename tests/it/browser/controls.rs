//! The dashboard's pause and resume buttons, clicked in headless Chromium and checked through the admin API
//! and on the page itself.

use fantoccini::Locator;

use super::Browser;
use crate::helpers::*;

const ROUTE: &str = r#"
[[routes]]
name = "deploy"
source = "github"
action = { type = "command", argv = ["true"], timeout = "5s" }
"#;

/// Markup in the reason shows up as text: the page inserts API values with `textContent`.
const ROUTE_REASON: &str = "deploy freeze <b>until 16:00</b>";
const SOURCE_REASON: &str = "GitHub is replaying old events";

fn first_named<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["items"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("{name} in {list}"))
}

store_test! {
async fn the_dashboard_pauses_a_route_with_the_operators_reason_and_resumes_it(backend) {
    let Some(browser) = Browser::start().await else { return };
    let app = spawn_app(&backend, &format!("{GITHUB_SOURCE}{ROUTE}")).await;
    browser.open_dashboard(&app).await;
    browser.page("routes").await;

    browser.click(Locator::Css(r#"[data-action="pause-route:deploy"]"#), "the route's Pause button").await;
    let question = browser.answer_prompt(ROUTE_REASON).await;
    assert!(question.contains("deploy"), "the prompt names the route: {question}");

    let row = browser
        .row_text_when("routes", "deploy", "the route's row to say paused", |t| t.contains("paused by dashboard"))
        .await;
    assert!(row.contains(&format!("paused by dashboard: {ROUTE_REASON}")), "{row}");
    browser.wait_for(Locator::Css(r#"[data-action="resume-route:deploy"]"#), "the route's Resume button").await;
    let routes = app.admin_get("/api/v1/routes").await;
    let route = first_named(&routes, "deploy");
    assert_eq!(route["paused"]["by"], "dashboard", "{route}");
    assert_eq!(route["paused"]["reason"], ROUTE_REASON, "{route}");

    browser.click(Locator::Css(r#"[data-action="resume-route:deploy"]"#), "the route's Resume button").await;
    let row =
        browser.row_text_when("routes", "deploy", "the route's row to say active", |t| t.contains("active")).await;
    assert!(!row.contains("paused"), "{row}");
    browser.wait_for(Locator::Css(r#"[data-action="pause-route:deploy"]"#), "the route's Pause button again").await;
    let routes = app.admin_get("/api/v1/routes").await;
    assert!(first_named(&routes, "deploy")["paused"].is_null(), "{routes}");

    // A pause made elsewhere (the CLI, another instance's operator) shows up without a reload.
    let elsewhere = app.client.post(format!("{}/api/v1/routes/deploy/pause", app.addr)).bearer_auth(ADMIN_TOKEN)
        .body(r#"{"by":"bob","reason":"from the CLI"}"#).send().await.unwrap();
    assert_eq!(elsewhere.status(), 200);
    browser.row_text_when("routes", "deploy", "the live page to show bob's pause", |t| t.contains("paused by bob")).await;

    browser.close().await;
}
}

store_test! {
async fn the_dashboard_pauses_a_source_so_its_webhooks_get_503_until_resumed(backend) {
    let Some(browser) = Browser::start().await else { return };
    let app = spawn_app(&backend, &format!("{GITHUB_SOURCE}{ROUTE}")).await;
    let body = push_body("refs/heads/main", "acme/app");
    browser.open_dashboard(&app).await;
    browser.page("routes").await;

    browser.click(Locator::Css(r#"[data-action="pause-source:github"]"#), "the source's Pause button").await;
    browser.answer_prompt(SOURCE_REASON).await;
    let row = browser
        .row_text_when("sources", "github", "the source's row to say paused", |t| t.contains("paused by dashboard"))
        .await;
    assert!(row.contains(&format!("paused by dashboard: {SOURCE_REASON}")), "{row}");
    browser.wait_for(Locator::Css(r#"[data-action="resume-source:github"]"#), "the source's Resume button").await;
    let sources = app.admin_get("/api/v1/sources").await;
    let source = first_named(&sources, "github");
    assert_eq!(source["paused"]["by"], "dashboard", "{source}");
    assert_eq!(source["paused"]["reason"], SOURCE_REASON, "{source}");
    assert_eq!(app.github("push", "while-paused", &body).await.status(), 503);

    browser.click(Locator::Css(r#"[data-action="resume-source:github"]"#), "the source's Resume button").await;
    browser.row_text_when("sources", "github", "the source's row to say active", |t| t.contains("active")).await;
    browser.wait_for(Locator::Css(r#"[data-action="pause-source:github"]"#), "the source's Pause button again").await;
    let sources = app.admin_get("/api/v1/sources").await;
    assert!(first_named(&sources, "github")["paused"].is_null(), "{sources}");
    assert_eq!(app.github("push", "after-resume", &body).await.status(), 202);

    browser.close().await;
}
}

/// A real peer on a loopback port that answers every request with `status`.
async fn peer_answering(status: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    let app = axum::Router::new().fallback(move || async move { status });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

store_test! {
async fn the_routes_page_shows_a_peers_410_stop_and_an_open_circuit_until_its_end(backend) {
    let Some(browser) = Browser::start().await else { return };
    let gone = peer_answering(410).await;
    let failing = peer_answering(500).await;
    let config = format!(
        r#"{GITHUB_SOURCE}
[[routes]]
name = "retired-peer"
source = "github"
action = {{ type = "http", url = "{gone}" }}

[[routes]]
name = "flapping-peer"
source = "github"
action = {{ type = "http", url = "{failing}" }}
retry = {{ max_attempts = 1 }}
circuit_breaker = {{ window = "60s", max_failures = 1, open_for = "1h" }}
"#
    );
    let app = spawn_app(&backend, &config).await;
    let body = push_body("refs/heads/main", "acme/app");
    assert_eq!(app.github("push", "stops-and-opens", &body).await.status(), 202);
    browser.open_dashboard(&app).await;
    browser.page("routes").await;

    let stopped = browser
        .row_text_when("routes", "retired-peer", "the 410 stop", |t| t.contains("stopped: peer answered 410"))
        .await;
    assert!(stopped.contains("unlimited") || stopped.contains('1'), "the concurrency column: {stopped}");
    let open = browser
        .row_text_when("routes", "flapping-peer", "the open circuit and its last error", |t| {
            t.contains("circuit open until") && t.contains("500")
        })
        .await;
    assert!(open.contains("500"), "the last error names the peer's answer: {open}");

    // Resume clears both, on the page and in the store.
    for route in ["retired-peer", "flapping-peer"] {
        browser.click(Locator::Css(&format!(r#"[data-action="resume-route:{route}"]"#)), "Resume").await;
        browser.row_text_when("routes", route, "the route to be active again", |t| t.contains("active")).await;
    }
    let routes = app.admin_get("/api/v1/routes").await;
    assert!(first_named(&routes, "retired-peer")["stopped"].is_null(), "{routes}");
    assert_eq!(first_named(&routes, "flapping-peer")["circuit"], "closed", "{routes}");
    browser.close().await;
}
}
