//! Script carried by a webhook — in its body, its headers and its event name — shown on every page of the
//! dashboard, in headless Chromium: it reads as text, and none of it runs (a `window` marker stays unset).

use std::time::Duration;

use fantoccini::Locator;

use super::Browser;
use crate::helpers::*;

/// Each sets `window.__xss` if it ever runs, whatever the way in: an element's handler, a script element
/// closed early, a `javascript:` URL, an SVG handler.
const IMG: &str = "<img src=x onerror=\"window.__xss='img'\">";
const SCRIPT: &str = "</script><script>window.__xss='script'</script>";
const URL: &str = "javascript:window.__xss='url'";
const SVG: &str = "<svg onload=\"window.__xss='svg'\"></svg>";

fn config() -> String {
    // The failing route prints the hostile ref into its attempt's output, and dies: the delivery's detail,
    // the dead letters (which name the event) and the routes page's last error all show it.
    format!(
        r#"{GITHUB_SOURCE}
[[routes]]
name = "echo"
source = "github"
action = {{ type = "command", argv = ["sh", "-c", "printf '%s\n' \"$1\" >&2; exit 1", "echo", "{{{{ body.ref }}}}"], timeout = "5s" }}
retry = {{ max_attempts = 1 }}
"#
    )
}

store_test! {
    async fn script_in_a_payload_its_headers_and_its_event_name_never_runs(backend) {
        let Some(browser) = Browser::start().await else { return };
        let app = spawn_app(&backend, &config()).await;
        let body = serde_json::json!({
            "ref": IMG,
            "repository": { "full_name": SCRIPT, "html_url": URL, "description": SVG },
            "pusher": { "name": "<b>mallory</b>" },
        })
        .to_string();
        let mut headers = github_headers(IMG, "xss-1", &body);
        headers.push(("x-evil", SCRIPT.to_string()));
        headers.push(("x-link", URL.to_string()));
        assert_eq!(app.post_hook("github", &headers, &body).await.status(), 202);
        eventually(Duration::from_secs(10), "the echo job to die", || async {
            let jobs = app.admin_get("/api/v1/jobs?status=dead").await;
            (jobs["items"].as_array().unwrap().len() == 1).then_some(())
        })
        .await;

        browser.open_dashboard(&app).await;
        browser.page("deliveries").await;
        let row = browser
            .text_when(Locator::Id("deliveries"), "the hostile delivery in the list", |t| t.contains("xss-1"))
            .await;
        assert!(row.contains(IMG), "the event name reads as text: {row}");
        browser.click(Locator::XPath("//tbody[@id='deliveries']/tr[td[4]='xss-1']"), "the delivery").await;
        let detail = browser
            .text_when(Locator::Id("detail"), "the hostile delivery's detail", |t| t.contains("xss-1") && t.contains("dead"))
            .await;
        for text in ["window.__xss='img'", "</script><script>", "javascript:window.__xss='url'", "<svg onload="] {
            assert!(detail.contains(text), "{text} reads as text in {detail}");
        }

        // The body filter is typed by the operator, but it is shown back as text too.
        let filter = browser.wait_for(Locator::Id("q-filter"), "the body filter").await;
        filter.send_keys(&format!("body.ref == \"{}\"", IMG.replace('"', "\\\""))).await.unwrap();
        filter.send_keys("\u{E007}").await.unwrap();
        browser.text_when(Locator::Id("deliveries"), "the search to find it", |t| t.contains("xss-1")).await;

        browser.page("dead").await;
        browser.text_when(Locator::Id("dead"), "the dead job from its event", |t| t.contains(IMG)).await;
        browser.page("routes").await;
        browser.text_when(Locator::Id("routes"), "the route's last error", |t| t.contains("exit status 1")).await;
        browser.page("overview").await;
        browser.wait_for(Locator::Css("#source-charts svg.chart"), "the charts").await;

        let marker = browser
            .eval("return [window.__xss === undefined, document.querySelectorAll('img, main script, main svg:not(.chart)').length]")
            .await;
        assert_eq!(marker, serde_json::json!([true, 0]), "nothing from the payload ran or became an element");
        browser.close().await;
    }
}
