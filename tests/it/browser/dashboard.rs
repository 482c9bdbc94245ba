//! The dashboard's pages in headless Chromium, on both stores: a delivery arriving live and opened from the
//! keyboard, a dead job retried from the dead letters until it succeeds, the overview's charts, search with a
//! body filter, the phone layout, and the screenshots in `docs/screenshots/`.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::Value;

use super::Browser;
use crate::helpers::*;

/// WebDriver's key codes.
const ENTER: &str = "\u{E007}";
const ARROW_DOWN: &str = "\u{E015}";

/// `deploy` always succeeds; `refresh-mirror` fails its first run (it leaves a marker) and succeeds after: with one
/// attempt allowed, its first job goes dead, and a retry brings it back.
fn config() -> String {
    format!(
        r#"{GITHUB_SOURCE}
[[routes]]
name = "deploy"
source = "github"
action = {{ type = "command", argv = ["true"], timeout = "5s" }}

[[routes]]
name = "refresh-mirror"
source = "github"
filter = 'body.repository.full_name == "octo/hello"'
action = {{ type = "command", argv = ["sh", "-c", "test -e {{dir}}/ran || {{ touch {{dir}}/ran; echo 'peer refused the first run' >&2; exit 3; }}"], timeout = "5s" }}
retry = {{ max_attempts = 1 }}
"#
    )
}

async fn stats_show(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) {
    eventually(Duration::from_secs(15), what, || async {
        let stats = app.admin_get("/api/v1/stats?since=10m").await;
        check(&stats).then_some(())
    })
    .await
}

store_test! {
    async fn an_operator_sees_a_new_delivery_opens_it_from_the_keyboard_and_brings_its_dead_job_back(backend) {
        let Some(browser) = Browser::start().await else { return };
        let app = spawn_app(&backend, &config()).await;
        browser.open_dashboard(&app).await;
        browser.page("deliveries").await;

        // Sent after the page was opened: live updates bring it in without a reload.
        let body = push_body("refs/heads/main", "octo/hello");
        assert_eq!(app.github("push", "live-delivery-1", &body).await.status(), 202);
        // (The list also shows the built-in `hookgate` source's operational events, such as `job.dead`.)
        let first = Locator::XPath("//tbody[@id='deliveries']/tr[td[4]='live-delivery-1']");
        let row = browser.text_when(first, "the new delivery in the list", |t| t.contains("live-delivery-1")).await;
        assert!(row.contains("github") && row.contains("push"), "{row}");

        // Keyboard: focus the list's first row, move down to the delivery (the rows above it are events), and
        // Enter opens it.
        browser.eval("document.querySelector('#deliveries tr').focus(); return true").await;
        for _ in 0..10 {
            let at = browser.eval("return document.activeElement.textContent").await;
            if at.as_str().unwrap_or_default().contains("live-delivery-1") {
                break;
            }
            browser.client.active_element().await.unwrap().send_keys(ARROW_DOWN).await.unwrap();
        }
        browser.client.active_element().await.unwrap().send_keys(ENTER).await.unwrap();
        let detail = browser
            .text_when(Locator::Id("detail"), "the delivery's detail with its dead job", |t| {
                t.contains("live-delivery-1") && t.contains("refresh-mirror") && t.contains("dead")
            })
            .await;
        assert!(detail.contains("github · push") && detail.contains("deploy"), "{detail}");
        assert!(detail.contains("peer refused the first run"), "the attempt's error is shown: {detail}");
        assert!(detail.contains("octo/hello"), "the body is shown: {detail}");

        // The dead letters list it with its error; Retry brings it back, and it succeeds.
        browser.page("dead").await;
        let dead = browser
            .text_when(Locator::Id("dead"), "the dead job in the dead letters", |t| t.contains("refresh-mirror"))
            .await;
        assert!(dead.contains("github · push") && dead.contains("exit"), "{dead}");
        browser.click(Locator::Css("#dead tr .retry"), "the dead job's Retry button").await;
        browser.text_when(Locator::Id("dead-groups"), "the dead letters to empty", |t| t.contains("No dead jobs")).await;
        let jobs = app.admin_get("/api/v1/jobs?route=refresh-mirror").await;
        let job = jobs["items"][0]["id"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(10), "the retried job to succeed", || async {
            let jobs = app.admin_get("/api/v1/jobs?route=refresh-mirror").await;
            (jobs["items"][0]["status"] == "succeeded").then_some(())
        })
        .await;

        // Back on the delivery, the page shows it succeeded.
        browser.page("deliveries").await;
        browser.click(first, "the delivery's row").await;
        let job_box = format!("div.job[data-job='{job}']");
        let shown = browser
            .text_when(Locator::Css(&job_box), "the job to show succeeded", |t| t.contains("succeeded"))
            .await;
        assert!(shown.contains("attempts 1"), "a retry starts a fresh count: {shown}");
        browser.close().await;
    }
}

store_test! {
    async fn the_overview_draws_deliveries_rejections_and_job_outcomes(backend) {
        let Some(browser) = Browser::start().await else { return };
        let app = spawn_app(&backend, &config()).await;
        let body = push_body("refs/heads/main", "acme/app");
        for i in 0..3 {
            assert_eq!(app.github("push", &format!("overview-{i}"), &body).await.status(), 202);
        }
        let mut forged = github_headers("push", "forged", &body);
        forged.retain(|(k, _)| *k != "x-hub-signature-256");
        forged.push(("x-hub-signature-256", format!("sha256={}", "0".repeat(64))));
        assert_eq!(app.post_hook("github", &forged, &body).await.status(), 401);
        stats_show(&app, "the stats to count 3 succeeded jobs", |s| s["totals"]["succeeded"] == 3).await;

        browser.open_dashboard(&app).await;
        let accepted = browser
            .text_when(Locator::Css("[data-metric='accepted'] .card-value"), "3 accepted", |t| t == "3")
            .await;
        assert_eq!(accepted, "3");
        browser.text_when(Locator::Css("[data-metric='rejected'] .card-value"), "1 rejected", |t| t == "1").await;
        let totals = browser
            .eval(
                "return Array.from(document.querySelectorAll('#source-charts svg.chart, #route-charts svg.chart'),
                  (s) => [s.closest('article').querySelector('h4').firstChild.textContent,
                          s.closest('figure').querySelector('figcaption').firstChild.textContent, Number(s.dataset.total),
                          s.querySelectorAll('rect.bar, path.line').length])",
            )
            .await;
        let find = |panel: &str, chart: &str| {
            totals.as_array().unwrap().iter().find(|t| t[0] == panel && t[1] == chart).cloned()
                .unwrap_or_else(|| panic!("chart {chart} of {panel} in {totals}"))
        };
        assert_eq!(find("github", "deliveries")[2], 4, "3 accepted + 1 rejected: {totals}");
        assert!(find("github", "deliveries")[3].as_u64().unwrap() >= 1, "bars are drawn: {totals}");
        assert_eq!(find("deploy", "jobs")[2], 3, "{totals}");
        assert!(find("deploy", "action duration")[3].as_u64().unwrap() >= 1, "a duration line: {totals}");

        // The day view counts the same deliveries.
        browser.click(Locator::Css("[data-range='24h']"), "the Last day button").await;
        browser.text_when(Locator::Id("overview-range"), "30-minute buckets", |t| t.contains("30 min")).await;
        browser.text_when(Locator::Css("[data-metric='accepted'] .card-value"), "3 accepted", |t| t == "3").await;
        browser.close().await;
    }
}

store_test! {
    async fn search_finds_deliveries_by_body_filter_delivery_id_and_job_status(backend) {
        let Some(browser) = Browser::start().await else { return };
        let app = spawn_app(&backend, &config()).await;
        // hello-1's refresh-mirror job dies before hello-2 comes in (the marker makes every later run succeed).
        let hello = push_body("refs/heads/main", "octo/hello");
        assert_eq!(app.github("push", "hello-1", &hello).await.status(), 202);
        eventually(Duration::from_secs(10), "the refresh-mirror job to die", || async {
            let jobs = app.admin_get("/api/v1/jobs?status=dead").await;
            (jobs["items"].as_array().unwrap().len() == 1).then_some(())
        })
        .await;
        assert_eq!(app.github("push", "app-1", &push_body("refs/heads/main", "acme/app")).await.status(), 202);
        assert_eq!(app.github("push", "hello-2", &hello).await.status(), 202);
        browser.open_dashboard(&app).await;
        browser.page("deliveries").await;
        browser.text_when(Locator::Id("deliveries"), "three deliveries", |t| t.matches("push").count() == 3).await;

        let filter = browser.wait_for(Locator::Id("q-filter"), "the body filter").await;
        filter.send_keys(r#"body.repository.full_name == "octo/hello""#).await.unwrap();
        filter.send_keys(ENTER).await.unwrap();
        let found = browser
            .text_when(Locator::Id("deliveries"), "the two octo/hello deliveries", |t| t.matches("push").count() == 2)
            .await;
        assert!(found.contains("hello-1") && found.contains("hello-2") && !found.contains("app-1"), "{found}");
        browser.text_when(Locator::Id("deliveries-note"), "how many were scanned", |t| t.contains("scanned")).await;

        browser.click(Locator::Id("q-clear"), "Clear").await;
        let id = browser.wait_for(Locator::Id("q-delivery"), "the delivery id field").await;
        id.send_keys("app-1").await.unwrap();
        id.send_keys(ENTER).await.unwrap();
        let found =
            browser.text_when(Locator::Id("deliveries"), "app-1 alone", |t| t.matches("push").count() == 1).await;
        assert!(found.contains("app-1"), "{found}");

        // The refresh-mirror route ran (and died) only for octo/hello: job status dead finds exactly the first of those.
        browser.click(Locator::Id("q-clear"), "Clear").await;
        browser.eval("const s = document.getElementById('q-status'); s.value = 'dead'; return true").await;
        browser.click(Locator::Id("q-run"), "Search").await;
        let found =
            browser.text_when(Locator::Id("deliveries"), "the dead one alone", |t| t.matches("push").count() == 1).await;
        assert!(found.contains("hello-1"), "{found}");

        // A broken expression is answered with a clear message.
        browser.click(Locator::Id("q-clear"), "Clear").await;
        let filter = browser.wait_for(Locator::Id("q-filter"), "the body filter").await;
        filter.send_keys("body.repository ==").await.unwrap();
        filter.send_keys(ENTER).await.unwrap();
        browser.text_when(Locator::Id("status"), "the error", |t| t.contains("filter")).await;
        browser.close().await;
    }
}

/// `gated` fails until its gate file exists: jobs pile up dead, then the gate opens and retries succeed.
fn gated_config() -> String {
    format!(
        r#"{GITHUB_SOURCE}
[[routes]]
name = "gated"
source = "github"
action = {{ type = "command", argv = ["sh", "-c", "test -e {{dir}}/gate || {{ echo 'gate closed' >&2; exit 4; }}"], timeout = "5s" }}
retry = {{ max_attempts = 1 }}
"#
    )
}

async fn jobs_with_status(app: &TestApp, status: &str) -> Vec<String> {
    let jobs = app.admin_get(&format!("/api/v1/jobs?route=gated&status={status}")).await;
    jobs["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect()
}

store_test! {
    async fn dead_letters_retry_the_jobs_ticked_from_the_keyboard_then_all_that_match(backend) {
        let Some(browser) = Browser::start().await else { return };
        let app = spawn_app(&backend, &gated_config()).await;
        let body = push_body("refs/heads/main", "acme/app");
        for i in 0..3 {
            assert_eq!(app.github("push", &format!("gated-{i}"), &body).await.status(), 202);
        }
        eventually(Duration::from_secs(10), "three dead jobs", || async {
            (jobs_with_status(&app, "dead").await.len() == 3).then_some(())
        })
        .await;
        std::fs::write(app.path("gate"), b"open").unwrap();

        browser.open_dashboard(&app).await;
        browser.page("dead").await;
        browser.text_when(Locator::Id("dead-groups"), "three dead jobs of gated", |t| t.contains("gated\n3")).await;
        // Tick the first two rows from the keyboard: focus, Space, Down, Space.
        browser.eval("document.querySelector('#dead tr').focus(); return true").await;
        for key in [" ", ARROW_DOWN, " "] {
            browser.client.active_element().await.unwrap().send_keys(key).await.unwrap();
        }
        let ticked = browser.eval("return Array.from(document.querySelectorAll('#dead tr'), (tr) => [tr.dataset.key, tr.querySelector('input').checked])").await;
        let ticked: Vec<String> = ticked.as_array().unwrap().iter().filter(|r| r[1] == true).map(|r| r[0].as_str().unwrap().to_string()).collect();
        assert_eq!(ticked.len(), 2, "two rows ticked");
        browser.text_when(Locator::Id("dead-retry-selected"), "the button to count them", |t| t.contains("(2)")).await;
        browser.click(Locator::Id("dead-retry-selected"), "Retry selected").await;
        eventually(Duration::from_secs(10), "the two ticked jobs to succeed", || async {
            let succeeded = jobs_with_status(&app, "succeeded").await;
            (succeeded.len() == 2).then_some(succeeded)
        })
        .await
        .iter()
        .for_each(|id| assert!(ticked.contains(id), "{id} was not ticked"));
        browser.text_when(Locator::Id("dead-groups"), "one left", |t| t.contains("gated\n1")).await;

        // Retry all that match asks first, then takes every dead job of the route.
        browser.click(Locator::Id("dead-retry-all"), "Retry all that match").await;
        let question = eventually(Duration::from_secs(5), "the confirmation", || async { browser.client.get_alert_text().await.ok() }).await;
        assert!(question.contains("every dead job"), "{question}");
        browser.client.accept_alert().await.unwrap();
        browser.text_when(Locator::Id("status"), "the count", |t| t.contains("1 job(s) queued again")).await;
        eventually(Duration::from_secs(10), "every job to succeed", || async {
            (jobs_with_status(&app, "succeeded").await.len() == 3).then_some(())
        })
        .await;
        browser.text_when(Locator::Id("dead-groups"), "no dead jobs", |t| t.contains("No dead jobs")).await;
        browser.close().await;
    }
}

/// The hour before the test, written through the store as the instances' recorders would have: a steady
/// flow of pushes with a few forged ones, a slow patch of `deploy`, and `refresh-mirror` failing through an incident,
/// so the screenshots show charts with a history rather than one bar.
async fn an_hour_of_history(store: &hookgate::store::DynStore) {
    use hookgate::store::stats::{duration_bucket, Counter, Scope, StatsDelta, FIRST_DURATION};
    let now = hookgate::store::now_ms();
    let mut rows = Vec::new();
    for ago in 2..60i64 {
        let minute = now - ago * 60_000;
        let wave = ((ago as f64) / 6.0).sin();
        let pushes = (14.0 + 8.0 * wave).round() as i64;
        let mut source = StatsDelta::new(Scope::Source, "github", minute);
        source.counts[Counter::Accepted as usize] = pushes;
        source.counts[Counter::Duplicate as usize] = i64::from(ago % 7 == 0);
        source.counts[Counter::Rejected401 as usize] = i64::from(ago % 11 == 3) * 3;
        source.counts[Counter::Rejected429 as usize] = i64::from((20..23).contains(&ago)) * 5;
        let mut deploy = StatsDelta::new(Scope::Route, "deploy", minute);
        deploy.counts[Counter::Succeeded as usize] = pushes;
        let slow = if (30..38).contains(&ago) { 400 } else { 40 + (ago % 5) as u64 * 10 };
        deploy.counts[FIRST_DURATION + duration_bucket(Duration::from_millis(slow))] = pushes - 1;
        deploy.counts[FIRST_DURATION + duration_bucket(Duration::from_millis(slow * 4))] = 1;
        deploy.queue_depth = Some(if (30..38).contains(&ago) { 9 - (ago - 30) } else { ago % 2 });
        deploy.queue_oldest_ms = Some(if (30..38).contains(&ago) { 12_000 } else { 300 });
        let mut mirror = StatsDelta::new(Scope::Route, "refresh-mirror", minute);
        let incident = (12..18).contains(&ago);
        mirror.counts[Counter::Succeeded as usize] = if incident { 0 } else { pushes / 3 };
        mirror.counts[Counter::Failed as usize] = if incident { 4 } else { 0 };
        mirror.counts[Counter::Dead as usize] = i64::from(incident);
        mirror.counts[FIRST_DURATION + duration_bucket(Duration::from_millis(if incident { 5_000 } else { 120 }))] = 4;
        mirror.queue_depth = Some(if incident { 6 } else { 0 });
        mirror.queue_oldest_ms = Some(if incident { 45_000 } else { 0 });
        rows.extend([source, deploy, mirror]);
    }
    store.record_stats(rows).await.expect("history stored");
}

store_test! {
    async fn every_page_fits_a_phone_and_a_laptop_and_is_photographed(backend) {
        let Some(browser) = Browser::start().await else { return };
        let app = spawn_app(&backend, &config()).await;
        an_hour_of_history(&app.store).await;
        for i in 0..6 {
            let repo = if i % 3 == 0 { "octo/hello" } else { "acme/app" };
            let body = push_body("refs/heads/main", repo);
            assert_eq!(app.github("push", &format!("shot-{i}"), &body).await.status(), 202);
        }
        let body = push_body("refs/heads/main", "acme/app");
        let mut forged = github_headers("push", "forged", &body);
        forged.retain(|(k, _)| *k != "x-hub-signature-256");
        assert_eq!(app.post_hook("github", &forged, &body).await.status(), 401);
        stats_show(&app, "the stats to count the jobs", |s| {
            s["totals"]["succeeded"].as_u64() >= Some(6) && s["totals"]["dead"].as_u64() >= Some(1)
        })
        .await;
        let pause = app.client.post(format!("{}/api/v1/routes/refresh-mirror/pause", app.addr)).bearer_auth(ADMIN_TOKEN)
            .body(r#"{"by":"alice","reason":"peer maintenance until 14:00"}"#).send().await.unwrap();
        assert_eq!(pause.status(), 200);

        browser.open_dashboard(&app).await;
        for (width, height, size) in [(1280, 800, "laptop"), (390, 844, "phone")] {
            browser.window(width, height).await;
            for page in ["overview", "deliveries", "routes", "dead"] {
                browser.page(page).await;
                let ready = match page {
                    "overview" => "#route-charts svg.chart",
                    "deliveries" => "#deliveries tr",
                    "routes" => "#routes tr",
                    _ => "#dead tr",
                };
                browser.wait_for(Locator::Css(ready), &format!("the {page} page's content")).await;
                if page == "deliveries" {
                    // A GitHub push (the list also holds the built-in source's `job.dead` events).
                    browser.click(Locator::XPath("//tbody[@id='deliveries']/tr[td[2]='github']"), "a push").await;
                    browser.wait_for(Locator::Css("#detail .job"), "its jobs").await;
                }
                let overflow = browser
                    .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                    .await;
                assert!(overflow.as_i64().unwrap() <= 0, "{page} at {size} scrolls sideways by {overflow} px");
                let nav = browser.eval("const r = document.querySelector('nav').getBoundingClientRect(); return r.right").await;
                assert!(nav.as_f64().unwrap() <= f64::from(width), "the menu fits at {size}");
                browser.screenshot(&backend, &format!("{page}-{size}")).await;
            }
        }
        browser.close().await;
    }
}
