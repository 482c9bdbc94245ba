//! The worker end to end: actions run, failures retry with backoff then die, leases recover crashed runs.

use std::time::Duration;

use hookgate::store::{new_id, now_ms, Claim, JobStatus, NewJob};

use crate::helpers::*;

store_test! {
    async fn a_matching_push_runs_its_command_with_rendered_arguments(backend) {
        let app = spawn_app(&backend, &format!(
            r#"{GITHUB_SOURCE}
    [[routes]]
    name = "record"
    source = "github"
    filter = 'event == "push"'
    action = {{ type = "command", argv = ["sh", "-c", "printf '%s' \"$1\" > {{dir}}/out.txt", "sh", "{{{{ body.repository.full_name }}}}"] }}
    "#
        ))
        .await;
        let body = push_body("refs/heads/main", "octo/hello");
        let json: serde_json::Value = app.github("push", "run-1", &body).await.json().await.unwrap();
        let jobs = terminal_jobs(&app, json["id"].as_str().unwrap()).await;
        assert_eq!(jobs[0]["status"], "succeeded", "{jobs:?}");
        assert_eq!(std::fs::read_to_string(app.path("out.txt")).unwrap(), "octo/hello");
    }
}

store_test! {
    async fn hostile_payload_values_never_reach_a_shell_or_become_options(backend) {
        let app = spawn_app(&backend, &format!(
            r#"{GITHUB_SOURCE}
    [[routes]]
    name = "echo"
    source = "github"
    action = {{ type = "command", argv = ["printf", "%s", "{{{{ body.repository.full_name }}}}"] }}
    retry = {{ max_attempts = 1 }}
    "#
        ))
        .await;
        let marker = app.path("pwned");
        let hostile = format!("x; touch {0} $(touch {0}) `touch {0}`", marker.display());
        let body = serde_json::json!({ "repository": { "full_name": hostile, "name": "x" } }).to_string();
        let json: serde_json::Value = app.github("push", "hostile-1", &body).await.json().await.unwrap();
        let id = json["id"].as_str().unwrap().to_string();
        let jobs = terminal_jobs(&app, &id).await;
        assert_eq!(jobs[0]["status"], "succeeded");
        let detail = app.admin_get(&format!("/api/v1/deliveries/{id}")).await;
        assert_eq!(detail["jobs"][0]["attempt_log"][0]["output"], hostile);
        assert!(!marker.exists(), "a shell ran the payload");

        let option = serde_json::json!({ "repository": { "full_name": "--upload-pack=touch /tmp/x", "name": "x" } }).to_string();
        let json: serde_json::Value = app.github("push", "hostile-2", &option).await.json().await.unwrap();
        let jobs = terminal_jobs(&app, json["id"].as_str().unwrap()).await;
        assert_eq!(jobs[0]["status"], "dead");
        assert!(jobs[0]["last_error"].as_str().unwrap().contains("option"), "{jobs:?}");
    }
}

store_test! {
    async fn a_failing_action_is_retried_with_backoff_then_dead(backend) {
        let app = spawn_app(&backend, &format!(
            r#"{GITHUB_SOURCE}
    [[routes]]
    name = "fails"
    source = "github"
    action = {{ type = "command", argv = ["sh", "-c", "echo boom >&2; exit 3"] }}
    retry = {{ max_attempts = 3, initial = "100ms", max = "200ms" }}
    "#
        ))
        .await;
        let json: serde_json::Value = app.github("push", "fail-1", "{}").await.json().await.unwrap();
        let jobs = terminal_jobs(&app, json["id"].as_str().unwrap()).await;
        let job = &jobs[0];
        assert_eq!(job["status"], "dead");
        assert_eq!(job["attempts"], 3);
        let log = job["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 3);
        assert!(log.iter().all(|a| a["ok"] == false));
        assert!(log[0]["output"].as_str().unwrap().contains("boom"));
        assert!(job["last_error"].as_str().unwrap().contains('3'));
    }
}

store_test! {
    async fn a_job_whose_lease_expired_is_run_by_another_worker(backend) {
        let (app, dir) = build_app(&backend, &format!(
            r#"{GITHUB_SOURCE}
    [[routes]]
    name = "touch"
    source = "github"
    action = {{ type = "command", argv = ["touch", "{{dir}}/ran"] }}
    retry = {{ initial = "100ms", max = "100ms" }}
    "#
        ))
        .await;
        let store = app.state().store.clone();
        let delivery = new_delivery("github", "lease-1");
        let job = NewJob { id: new_id(), route: "touch".into(), coalesce_key: None, run_at: now_ms() };
        store.insert_delivery(delivery.clone(), vec![job.clone()]).await.unwrap();

        // A crashed instance holds the job under a live lease: nobody else may run it.
        let claim = |owner: &str, lease_until| Claim {
            owner: owner.into(),
            limit: 10,
            now: now_ms(),
            lease_until,
            routes: vec!["touch".into()],
            retry: Default::default(),
            limits: Default::default(),
            leases: Default::default(),
            lockless: Default::default(),
        };
        let held = store.claim_jobs(claim("crashed", now_ms() + 60_000)).await.unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(app.worker().run_due_jobs().await.unwrap(), 0, "a leased job ran twice");

        // Its lease runs out (simulated by a second claim with an already expired lease).
        store.release_job(&job.id, "crashed", now_ms()).await.unwrap();
        store.claim_jobs(claim("crashed", now_ms() - 1)).await.unwrap();
        // The lost run counts as a failed attempt; after the route's backoff the job runs here.
        eventually(Duration::from_secs(10), "the job to run again", || async {
            (app.worker().run_due_jobs().await.unwrap() == 1).then_some(())
        })
        .await;
        assert!(dir.path().join("ran").exists());
        let detail = store.get_delivery(&delivery.id).await.unwrap().unwrap();
        assert_eq!(detail.jobs[0].job.status, JobStatus::Succeeded);
        let errors: Vec<_> = detail.jobs[0].attempts.iter().map(|a| a.error.as_deref()).collect();
        assert_eq!(errors, [Some(hookgate::store::LEASE_EXPIRED), None]);
        // The crashed instance's late report is refused: it no longer holds the job.
        let late = hookgate::store::AttemptRecord {
            attempt: 1, started_at: 0, finished_at: 0, ok: false, error: Some("late".into()), output: None, status_code: None,
        };
        assert!(!store.finish_job(&job.id, "crashed", late, hookgate::store::NextState::Dead).await.unwrap());
    }
}

store_test! {
    async fn graceful_shutdown_lets_a_running_job_finish(backend) {
        let app = spawn_app(&backend, &format!(
            r#"{GITHUB_SOURCE}
    [[routes]]
    name = "slow"
    source = "github"
    action = {{ type = "command", argv = ["sh", "-c", "sleep 0.5; touch {{dir}}/done"] }}
    "#
        ))
        .await;
        let json: serde_json::Value = app.github("push", "slow-1", "{}").await.json().await.unwrap();
        let id = json["id"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(10), "the job to start", || async {
            let jobs = delivery_jobs(&app, &id).await;
            (jobs[0]["status"] == "running").then_some(())
        })
        .await;
        let store = app.store.clone();
        let done = app.path("done");
        let _dir = app.stop().await;
        assert!(done.exists(), "the running job was not allowed to finish");
        let detail = store.get_delivery(&id).await.unwrap().unwrap();
        assert_eq!(detail.jobs[0].job.status, hookgate::store::JobStatus::Succeeded);
    }
}

store_test! {
    async fn a_job_past_the_shutdown_grace_is_stopped_and_released_for_later(backend) {
        let app = spawn_app(&backend, &format!(
            r#"{GITHUB_SOURCE}
    [[routes]]
    name = "endless"
    source = "github"
    action = {{ type = "command", argv = ["sleep", "60"], timeout = "5m" }}
    "#
        ))
        .await;
        let json: serde_json::Value = app.github("push", "endless-1", "{}").await.json().await.unwrap();
        let id = json["id"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(10), "the job to start", || async {
            (delivery_jobs(&app, &id).await[0]["status"] == "running").then_some(())
        })
        .await;
        let store = app.store.clone();
        let started = std::time::Instant::now();
        let _dir = app.stop().await; // grace is 5 s in tests
        assert!(started.elapsed() < Duration::from_secs(30));
        let job = &store.get_delivery(&id).await.unwrap().unwrap().jobs[0];
        assert_eq!(job.job.status, hookgate::store::JobStatus::Queued, "released, not lost or dead");
        assert_eq!(job.job.attempts, 0, "a stopped run does not use up an attempt");
    }
}

store_test! {
    async fn a_scheduled_route_runs_without_a_delivery(backend) {
        let app = spawn_app(&backend, &format!(
            r#"{GITHUB_SOURCE}
    [[routes]]
    name = "backstop"
    source = "github"
    filter = "false"
    schedule = "1s"
    action = {{ type = "command", argv = ["touch", "{{dir}}/scheduled"] }}
    "#
        ))
        .await;
        let marker = app.path("scheduled");
        eventually(Duration::from_secs(10), "the schedule to fire", || async { marker.exists().then_some(()) }).await;
        let page = app.admin_get("/api/v1/deliveries?event=schedule").await;
        assert!(!page["items"].as_array().unwrap().is_empty());
    }
}

store_test! {
    /// Claims overlap (one may wait for its commit while the next is issued); the capacity each takes is
    /// reserved before it claims, so the worker never runs more than `concurrency` actions at once.
    async fn the_worker_never_runs_more_actions_at_once_than_its_concurrency(backend) {
        let app = spawn_app_with_worker(
            &backend,
            "concurrency = 2",
            &format!(
                r#"{GITHUB_SOURCE}
[[routes]]
name = "two-at-most"
source = "github"
action = {{ type = "command", argv = ["sh", "-c", "if mkdir {{dir}}/a; then L=a; elif mkdir {{dir}}/b; then L=b; else exit 99; fi; sleep 0.05; rmdir {{dir}}/$L"] }}
retry = {{ max_attempts = 1 }}
"#
            ),
        )
        .await;
        let mut ids = Vec::new();
        for i in 0..16 {
            let json: serde_json::Value = app.github("push", &format!("cap-{i}"), "{}").await.json().await.unwrap();
            ids.push(json["id"].as_str().unwrap().to_string());
        }
        for id in ids {
            let jobs = terminal_jobs(&app, &id).await;
            assert_eq!(jobs[0]["status"], "succeeded", "a third action ran alongside two others: {jobs:?}");
        }
    }
}

store_test! {
    /// A keyed job waits out its coalesce window; the worker wakes when it comes due instead of at its next poll
    /// (a minute here), and a burst for one key runs it once with the last payload.
    async fn a_coalesced_job_runs_when_its_window_ends_not_at_the_next_poll(backend) {
        let app = polling_once_a_minute(&backend, r#"
    name = "coalesced-wake"
    filter = 'event == "push"'
    coalesce = "{{ body.repository.full_name }}"
    coalesce_window = "400ms"
    action = { type = "command", argv = ["sh", "-c", "printf '%s\n' \"$1\" >> {dir}/runs.txt", "sh", "{{ body.after }}"] }
    "#)
        .await;
        let started = std::time::Instant::now();
        for i in 0..5 {
            let body = push_body("refs/heads/main", "octo/wake").replace("\"after\":\"", &format!("\"after\":\"{i}"));
            assert!(app.github("push", &format!("wake-{i}"), &body).await.status().is_success());
        }
        let runs = eventually(Duration::from_secs(10), "the coalesced job to run", || async {
            std::fs::read_to_string(app.path("runs.txt")).ok()
        })
        .await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "ran {took:?} after the first push: it waited for a poll");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let runs = std::fs::read_to_string(app.path("runs.txt")).unwrap_or(runs);
        assert_eq!(runs.lines().count(), 1, "one run for the burst: {runs:?}");
        assert!(runs.starts_with('4'), "the last push's payload: {runs:?}");
    }
}

store_test! {
    /// The worker wakes when a failed job's backoff is over, not at its next poll (a minute here).
    async fn a_retry_runs_when_its_backoff_ends_not_at_the_next_poll(backend) {
        let app = polling_once_a_minute(&backend, r#"
    name = "retry-wake"
    action = { type = "command", argv = ["sh", "-c", "exit 3"] }
    retry = { max_attempts = 3, initial = "200ms", max = "300ms" }
    "#)
        .await;
        let started = std::time::Instant::now();
        let json: serde_json::Value = app.github("push", "retry-wake-1", "{}").await.json().await.unwrap();
        let jobs = terminal_jobs(&app, json["id"].as_str().unwrap()).await;
        assert_eq!((jobs[0]["status"].as_str(), jobs[0]["attempts"].as_i64()), (Some("dead"), Some(3)), "{jobs:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(8), "three attempts took {took:?}: a retry waited for a poll");
    }
}

/// An app whose worker polls once a minute, with one GitHub route (`route`: its keys but `source`): what runs
/// within seconds ran because the worker woke for it.
async fn polling_once_a_minute(backend: &Backend, route: &str) -> TestApp {
    let body = format!("{GITHUB_SOURCE}\n[[routes]]\nsource = \"github\"{route}");
    spawn_app_with_worker(backend, "poll_interval = \"60s\"", &body).await
}
