//! The dashboard's search: deliveries by body filter, delivery id, time range and job status; hostile filters
//! refused or bounded; the scan bound; jobs by time with their delivery's source and event.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hookgate::admin::search::{check_filter, search, Bounds, SCAN_LIMIT};
use hookgate::store::{DeliveryQuery, NewJob};
use serde_json::Value;

use crate::helpers::*;

fn config() -> String {
    ok_and_broken_routes("", "{ max_attempts = 1 }")
}

/// GET with the admin token: status and JSON answer.
async fn get(app: &TestApp, path_and_query: &str) -> (u16, Value) {
    let response =
        app.client.get(format!("{}{path_and_query}", app.addr)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Search deliveries with these query parameters (URL-encoded here).
async fn deliveries(app: &TestApp, params: &[(&str, &str)]) -> (u16, Value) {
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    get(app, &format!("/api/v1/deliveries?{query}")).await
}

/// The provider delivery ids of an answer's items, newest first.
fn names(answer: &Value) -> Vec<String> {
    answer["items"].as_array().unwrap().iter().map(|d| d["delivery"].as_str().unwrap().to_string()).collect()
}

/// Send a push for `repo` on `reference` with GitHub delivery id `guid`; its hookgate id.
async fn push(app: &TestApp, guid: &str, reference: &str, repo: &str) -> String {
    let response = app.github("push", guid, &push_body(reference, repo)).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

store_test! {
    async fn deliveries_are_found_by_body_filter_delivery_id_time_and_status(backend) {
        let app = spawn_app(&backend, &config()).await;
        let mut ids = Vec::new();
        for (guid, reference, repo) in [
            ("h1", "refs/heads/main", "octo/hello"),
            ("w1", "refs/heads/main", "octo/world"),
            ("h2", "refs/heads/broken", "octo/hello"),
            ("w2", "refs/heads/broken", "octo/world"),
            ("h3", "refs/heads/main", "octo/hello"),
        ] {
            let id = push(&app, guid, reference, repo).await;
            terminal_jobs(&app, &id).await;
            ids.push(id);
        }

        // (`source=github` leaves out the `job.dead` events hookgate stores as deliveries of its own.)
        let hello_filter = r#"body.repository.full_name == "octo/hello""#;
        let (status, hello) = deliveries(&app, &[("filter", hello_filter), ("source", "github")]).await;
        assert_eq!(status, 200, "{hello}");
        assert_eq!(names(&hello), ["h3", "h2", "h1"]);
        assert_eq!(hello["scanned"], 5);
        assert!(hello["next"].is_null());
        assert_eq!(hello["items"][1]["jobs"]["dead"], 1, "items keep the list's shape: {hello}");
        assert_eq!(hello["items"][1]["id"], ids[2].as_str());

        // With a limit, `next` continues the scan below the last match.
        let (_, first) =
            deliveries(&app, &[("filter", r#"body.repository.full_name == "octo/hello""#), ("limit", "2")]).await;
        assert_eq!(names(&first), ["h3", "h2"]);
        let next = first["next"].as_str().unwrap();
        let (_, rest) = deliveries(
            &app,
            &[("filter", r#"body.repository.full_name == "octo/hello""#), ("limit", "2"), ("cursor", next)],
        )
        .await;
        assert_eq!(names(&rest), ["h1"]);
        assert!(rest["next"].is_null());

        // The filter sees what a route's filter sees, and combines with the other parameters.
        let (_, headers) =
            deliveries(&app, &[("filter", r#"headers["x-github-event"] == "push" and body.ref == "refs/heads/main""#)])
                .await;
        assert_eq!(names(&headers), ["h3", "w1", "h1"]);
        let (_, dead_hello) = deliveries(
            &app,
            &[("filter", r#"body.repository.full_name == "octo/hello""#), ("status", "dead"), ("source", "github")],
        )
        .await;
        assert_eq!(names(&dead_hello), ["h2"]);
        assert_eq!(dead_hello["scanned"], 2, "only the dead ones were read");
        // A field missing from a body does not match (and is no error).
        let (status, missing) = deliveries(&app, &[("filter", "body.no.such.field == 1")]).await;
        assert_eq!((status, names(&missing).len()), (200, 0));

        let (_, by_guid) = deliveries(&app, &[("delivery", "w2")]).await;
        assert_eq!(names(&by_guid), ["w2"]);
        assert!(by_guid.get("scanned").is_none(), "no filter, no scan");
        let (_, by_id) = deliveries(&app, &[("id", ids[1].as_str())]).await;
        assert_eq!(names(&by_id), ["w1"]);

        let (_, dead) = deliveries(&app, &[("status", "dead")]).await;
        assert_eq!(names(&dead), ["w2", "h2"]);
        let (status, bad) = deliveries(&app, &[("status", "lost")]).await;
        assert_eq!(status, 400);
        assert!(bad["message"].as_str().unwrap().contains("status must be one of"), "{bad}");

        let (_, recent) = deliveries(&app, &[("since", "1h"), ("source", "github")]).await;
        assert_eq!(names(&recent).len(), 5);
        let (_, old) = deliveries(&app, &[("until", "1h")]).await;
        assert!(names(&old).is_empty());
        let (_, future) = deliveries(&app, &[("since", "2099-01-01T00:00:00Z")]).await;
        assert!(names(&future).is_empty());
        let (status, bad) = deliveries(&app, &[("since", "yesterday")]).await;
        assert_eq!(status, 400);
        assert!(bad["message"].as_str().unwrap().starts_with("since must be an RFC 3339 time"), "{bad}");
    }
}

store_test! {
    async fn broken_long_and_hostile_filters_are_refused_or_bounded(backend) {
        let app = spawn_app(&backend, &config()).await;
        let id = push(&app, "h1", "refs/heads/main", "octo/hello").await;
        terminal_jobs(&app, &id).await;

        let (status, broken) = deliveries(&app, &[("filter", "body.repository.full_name == ")]).await;
        assert_eq!(status, 400, "{broken}");
        assert_eq!(broken["code"], "bad_request");
        let message = broken["message"].as_str().unwrap();
        assert!(message.starts_with("filter is not a valid expression: "), "{message}");

        let long = format!("body.a == \"{}\"", "x".repeat(1_000));
        let (status, too_long) = deliveries(&app, &[("filter", &long)]).await;
        assert_eq!(status, 400);
        assert!(too_long["message"].as_str().unwrap().contains("at most 1000"), "{too_long}");

        // Work out of proportion to the stored deliveries is refused before anything is read.
        let chain = vec!["body.repository.full_name"; 30].join(" ~ ");
        let started = Instant::now();
        for hostile in [
            format!("({chain}) | length > 0"),
            r#""x" * 100000000 ~ "x" * 100000000 == body"#.to_string(),
            r#"range(100000) | map("string") | join | length > 0"#.to_string(),
            r#"body.ref | replace("", "aaaaaaaaaa") | replace("a", "aaaaaaaaaa") | length > 0"#.to_string(),
            format!("{}body{}", "(".repeat(300), ")".repeat(300)),
            format!("{}1{}", "[".repeat(300), "]".repeat(300)),
            format!("[{}] | join | length > 0", vec!["body"; 100].join(", ")),
            "not ".repeat(200) + "body",
            r#"true %}{% for i in body %}{% endfor %}{% if true"#.to_string(),
        ] {
            let (status, answer) = deliveries(&app, &[("filter", &hostile)]).await;
            assert_eq!(status, 400, "{hostile}: {answer}");
        }
        // Long but cheap: taken, and answered at once.
        let cheap = format!("body.ref in [{}]", vec!["\"x\""; 150].join(", "));
        let (status, answer) = deliveries(&app, &[("filter", &cheap)]).await;
        assert_eq!((status, names(&answer).len()), (200, 0), "{answer}");
        // A refused filter named in a string is not there: no match, no error.
        let by_name = r#"[body.ref] | map("replace", "", "aaaaaaaaaa") | map("replace", "a", "aaaaaaaaaa") | first"#;
        let (status, answer) = deliveries(&app, &[("filter", by_name)]).await;
        assert_eq!((status, names(&answer).len()), (200, 0), "{answer}");
        // What is left stays proportional to the body: the longest chain taken is quick and matches.
        let within = vec!["body.repository.full_name"; 24].join(" ~ ");
        let (status, answer) = deliveries(&app, &[("filter", &format!("({within}) | length > 0"))]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(names(&answer), ["h1"]);
        let (status, recursive) = deliveries(&app, &[("filter", "body | tojson | length > 0")]).await;
        assert_eq!((status, names(&recursive).len()), (200, 1));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}

store_test! {
    async fn one_request_reads_at_most_the_scan_bound_and_next_continues(backend) {
        let app = spawn_app(&backend, &config()).await;
        // The oldest delivery matches; SCAN_LIMIT newer ones do not. Stored directly: no route runs.
        let mut wanted = new_delivery("github", "wanted");
        wanted.body = bytes::Bytes::from_static(br#"{"repository": {"full_name": "octo/hello"}}"#);
        app.store.insert_delivery(wanted, vec![]).await.unwrap();
        for chunk in (0..SCAN_LIMIT).collect::<Vec<_>>().chunks(100) {
            join_all(chunk.iter().map(|i| {
                let mut d = new_delivery("github", &format!("other-{i}"));
                d.body = bytes::Bytes::from_static(br#"{"repository": {"full_name": "octo/world"}}"#);
                app.store.insert_delivery(d, Vec::<NewJob>::new())
            }))
            .await
            .into_iter()
            .for_each(|r| drop(r.unwrap()));
        }

        let filter = r#"body.repository.full_name == "octo/hello""#;
        let (status, first) = deliveries(&app, &[("filter", filter)]).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["scanned"], SCAN_LIMIT);
        assert!(names(&first).is_empty());
        let next = first["next"].as_str().expect("the scan stopped at its bound and says where to go on");
        let (_, second) = deliveries(&app, &[("filter", filter), ("cursor", next)]).await;
        assert_eq!(names(&second), ["wanted"]);
        assert_eq!(second["scanned"], 1);
        assert!(second["next"].is_null());

        // The time bound: with no time at all, one candidate per page is still read, so the cursor moves on.
        check_filter(filter).unwrap();
        let query = DeliveryQuery { limit: 10, ..Default::default() };
        let timed = search(&app.store, query.clone(), filter.into(), Bounds { scan: SCAN_LIMIT, time: Duration::ZERO })
            .await
            .unwrap();
        assert_eq!((timed.scanned, timed.items.len()), (1, 0));
        let newest = app.store.list_deliveries(DeliveryQuery { limit: 1, ..Default::default() }).await.unwrap();
        assert_eq!(timed.next.as_deref(), Some(newest.items[0].id.as_str()));
        // A lower scan bound, reached within one page.
        let small = search(&app.store, query, filter.into(), Bounds { scan: 3, time: Duration::from_secs(5) })
            .await
            .unwrap();
        assert_eq!(small.scanned, 3);
        assert!(small.next.is_some());
    }
}

store_test! {
    async fn dead_jobs_are_listed_by_time_with_their_source_and_event(backend) {
        let app = spawn_app(&backend, &config()).await;
        let id = push(&app, "b1", "refs/heads/broken", "octo/hello").await;
        terminal_jobs(&app, &id).await;

        let (status, dead) = get(&app, "/api/v1/jobs?status=dead&since=1h").await;
        assert_eq!(status, 200, "{dead}");
        let items = dead["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{dead}");
        assert_eq!((items[0]["source"].as_str(), items[0]["event"].as_str()), (Some("github"), Some("push")));
        assert_eq!(items[0]["route"], "broken");
        assert_eq!(items[0]["delivery_id"], id.as_str());
        assert!(items[0]["last_error"].is_string(), "the existing fields stay: {dead}");

        let (_, before) = get(&app, "/api/v1/jobs?status=dead&until=1h").await;
        assert!(before["items"].as_array().unwrap().is_empty());
        let (status, bad) = get(&app, "/api/v1/jobs?until=tomorrow").await;
        assert_eq!(status, 400, "{bad}");
    }
}
