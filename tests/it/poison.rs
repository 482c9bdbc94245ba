//! Poison jobs end: a claim whose lease expired is a failed attempt, so a job that keeps killing its runner dies.

use std::collections::HashMap;
use std::time::Duration;

use hookgate::config::Retry;
use hookgate::store::{new_id, now_ms, Claim, DynStore, JobStatus, NewJob, LEASE_EXPIRED};

use crate::helpers::*;

async fn fresh_store(backend: &Backend) -> (tempfile::TempDir, DynStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = hookgate::store::open(&backend.fresh_url(dir.path()).await.parse().unwrap()).await.unwrap();
    (dir, store)
}

/// A claim of `route` under `policy`, leased until `lease_for` ms from now (negative: already expired).
fn claim(owner: &str, route: &str, policy: &Retry, lease_for: i64) -> Claim {
    let now = now_ms();
    Claim {
        owner: owner.into(),
        limit: 10,
        now,
        lease_until: now + lease_for,
        routes: vec![route.into()],
        retry: HashMap::from([(route.to_string(), policy.clone())]),
        limits: HashMap::new(),
        leases: HashMap::new(),
        lockless: Default::default(),
    }
}

async fn store_job(store: &DynStore, route: &str) -> (String, String) {
    let delivery = new_delivery("github", &new_id());
    let job = NewJob { id: new_id(), route: route.into(), coalesce_key: None, run_at: now_ms() };
    store.insert_delivery(delivery.clone(), vec![job.clone()]).await.unwrap();
    (delivery.id, job.id)
}

store_test! {
    async fn a_job_whose_runner_keeps_dying_is_dead_after_max_attempts(backend) {
        let (_dir, store) = fresh_store(&backend).await;
        let policy = Retry { max_attempts: 2, initial: Duration::ZERO, max: Duration::ZERO, ..Retry::default() };
        let (delivery, job) = store_job(&store, "poison").await;

        // Each runner dies holding the job: its lease is already over when the next claim comes.
        let first = store.claim_jobs(claim("runner-1", "poison", &policy, -1)).await.unwrap();
        assert_eq!(first.iter().map(|j| j.attempt).collect::<Vec<_>>(), [1]);
        // Attempt 1 is recorded as lost; without a pause the job is due again and taken as attempt 2.
        let second = store.claim_jobs(claim("runner-2", "poison", &policy, -1)).await.unwrap();
        assert_eq!(second.iter().map(|j| j.attempt).collect::<Vec<_>>(), [2]);
        // Attempt 2 was the last: the job is dead, not claimed a third time.
        assert!(store.claim_jobs(claim("runner-3", "poison", &policy, 60_000)).await.unwrap().is_empty());
        assert!(store.claim_jobs(claim("runner-4", "poison", &policy, 60_000)).await.unwrap().is_empty());

        let detail = store.get_delivery(&delivery).await.unwrap().unwrap();
        let summary = &detail.jobs[0].job;
        assert_eq!(summary.id, job);
        assert_eq!(summary.status, JobStatus::Dead);
        assert_eq!(summary.attempts, 2);
        assert_eq!(summary.last_error.as_deref(), Some(LEASE_EXPIRED));
        let attempts: Vec<_> =
            detail.jobs[0].attempts.iter().map(|a| (a.attempt, a.ok, a.error.as_deref())).collect();
        assert_eq!(attempts, [(1, false, Some(LEASE_EXPIRED)), (2, false, Some(LEASE_EXPIRED))]);
        // The runners are gone; one coming back late is refused.
        let late = detail.jobs[0].attempts[0].clone();
        assert!(!store.finish_job(&job, "runner-2", late, hookgate::store::NextState::Succeeded).await.unwrap());
        assert_eq!(store.job_counts().await.unwrap().dead, 1);
    }
}

store_test! {
    async fn a_lost_attempt_that_is_not_the_last_waits_out_its_backoff(backend) {
        let (_dir, store) = fresh_store(&backend).await;
        let policy = Retry { max_attempts: 5, initial: Duration::from_secs(3600), max: Duration::from_secs(7200), ..Retry::default() };
        let (delivery, job) = store_job(&store, "slow").await;
        // A live lease is left alone.
        assert_eq!(store.claim_jobs(claim("runner-1", "slow", &policy, 200)).await.unwrap().len(), 1);
        assert!(store.claim_jobs(claim("runner-2", "slow", &policy, 60_000)).await.unwrap().is_empty());
        let detail = store.get_delivery(&delivery).await.unwrap().unwrap();
        assert_eq!(detail.jobs[0].job.status, JobStatus::Running);
        assert!(detail.jobs[0].attempts.is_empty());

        // Once it expires, the next claim records the lost attempt and requeues the job after the backoff
        // (one hour ± 20 %), instead of running it again at once.
        let expired = eventually(Duration::from_secs(10), "the lease to expire", || async {
            let settled_at = now_ms();
            let claimed = store.claim_jobs(claim("runner-2", "slow", &policy, 60_000)).await.unwrap();
            assert!(claimed.is_empty(), "a job whose runner stopped was handed out again at once");
            let detail = store.get_delivery(&delivery).await.unwrap().unwrap();
            (detail.jobs[0].job.status != JobStatus::Running).then_some((settled_at, detail))
        })
        .await;
        let (settled_at, detail) = expired;
        let summary = &detail.jobs[0].job;
        assert_eq!(summary.id, job);
        assert_eq!(summary.status, JobStatus::Queued);
        assert_eq!(summary.attempts, 1);
        assert_eq!(summary.last_error.as_deref(), Some(LEASE_EXPIRED));
        let pause = summary.next_attempt_at.unwrap() - settled_at;
        assert!((2_880_000..=4_330_000).contains(&pause), "backoff of {pause} ms");
        assert_eq!(detail.jobs[0].attempts.len(), 1);
        assert_eq!(detail.jobs[0].attempts[0].error.as_deref(), Some(LEASE_EXPIRED));
    }
}

// The gateway's own process is what the action kills: restart it until the job gives up.
store_test! {
    async fn a_job_that_kills_the_gateway_ends_dead_across_restarts(backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = backend.fresh_url(dir.path()).await;
        let config = dir.path().join("hookgate.toml");
        std::fs::write(
            &config,
            format!(
                r#"[store]
url = "{url}"
[admin]
token = "{ADMIN_TOKEN}"
[worker]
poll_interval = "100ms"
lease_margin = "1s"
{GITHUB_SOURCE}
[[routes]]
name = "poison"
source = "github"
action = {{ type = "command", argv = ["sh", "-c", "sleep 0.3; kill -9 $PPID"], timeout = "2s" }}
retry = {{ max_attempts = 2, initial = "100ms", max = "100ms" }}
"#
            ),
        )
        .unwrap();
        let mut server = BinaryServer::start(&config, &[]);
        let body = push_body("refs/heads/main", "octo/poison");
        let mut request = reqwest::Client::new().post(format!("{}/hooks/github", server.addr)).body(body.clone());
        for (name, value) in github_headers("push", "poison-1", &body) {
            request = request.header(name, value);
        }
        let answer: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
        let id = answer["id"].as_str().expect("stored").to_string();

        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let mut starts = 1;
        let job = loop {
            // The gateway dies (the job killed it again), or stays up with the job finished.
            let outcome = eventually(Duration::from_secs(30), "the gateway to die or the job to end", || {
                let died = server.child.try_wait().unwrap().is_some();
                let request = client.get(format!("{}/api/v1/deliveries/{id}", server.addr)).bearer_auth(ADMIN_TOKEN);
                async move {
                    if died {
                        return Some(None);
                    }
                    let detail: serde_json::Value = request.send().await.ok()?.json().await.ok()?;
                    let job = detail["jobs"][0].clone();
                    (job["status"] == "dead" || job["status"] == "succeeded").then_some(Some(job))
                }
            })
            .await;
            match outcome {
                Some(job) => break job,
                None => {
                    starts += 1;
                    assert!(starts <= 4, "the gateway was killed {} times", starts - 1);
                    server = BinaryServer::start(&config, &[]);
                }
            }
        };
        assert_eq!(job["status"], "dead", "{job}");
        assert_eq!(job["attempts"], 2, "{job}");
        assert_eq!(job["last_error"], LEASE_EXPIRED, "{job}");
        let log = job["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 2, "{job}");
        assert!(log.iter().all(|a| a["error"] == LEASE_EXPIRED), "{job}");
        assert_eq!(starts, 3, "killed by attempts 1 and 2, then settled");
        // It stays dead: the gateway lives on.
        assert!(server.child.try_wait().unwrap().is_none());
    }
}
