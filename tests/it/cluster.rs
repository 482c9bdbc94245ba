//! Several real `hookgate serve` processes on one PostgreSQL: shared dedup, shared queue, a killed instance.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;

async fn all_jobs(base: &str) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/jobs?limit=1000&cursor={c}"),
            None => "/api/v1/jobs?limit=1000".to_string(),
        };
        let page = admin_json(base, &path).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return items,
        }
    }
}

async fn send(client: &reqwest::Client, base: &str, delivery: &str) -> Option<reqwest::StatusCode> {
    send_push(client, base, delivery).await.ok().map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_queue_and_survive_losing_one() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("skipped: HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let runs = dir.path().join("runs");
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
{GITHUB_SOURCE}
[[routes]]
name = "record"
source = "github"
action = {{ type = "command", argv = ["sh", "-c", "echo \"$1\" >> '{runs}'; sleep 0.02", "sh", "{{{{ id }}}}"], timeout = "2s" }}
"#,
            runs = runs.display()
        ),
    )
    .unwrap();
    let mut servers: Vec<BinaryServer> = (0..3).map(|_| BinaryServer::start(&config, &[])).collect();
    let bases: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // The same delivery sent to every instance at once is stored once.
    let mut racing = Vec::new();
    for base in &bases {
        let (client, base) = (client.clone(), base.clone());
        racing.push(tokio::spawn(async move { send(&client, &base, "race-1").await }));
    }
    let mut statuses = Vec::new();
    for r in racing {
        statuses.push(r.await.unwrap().unwrap().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 202], "exactly one instance stored it");

    // 300 deliveries spread over the three; instance 1 is killed a third of the way in.
    let acked: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for worker in 0..6 {
        let (client, bases, acked) = (client.clone(), bases.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..50 {
                let delivery = format!("spread-{worker}-{i}");
                let base = &bases[(worker + i) % 3];
                if let Some(status) = send(&client, base, &delivery).await {
                    assert!(status == 202 || status == 200, "unexpected {status}");
                    acked.lock().unwrap().insert(delivery);
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "a third of the deliveries", || async {
        (acked.lock().unwrap().len() >= 100).then_some(())
    })
    .await;
    servers[1].kill9();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200, "only {} acknowledged", acked.len());

    // Every job ends succeeded, including those the killed instance held (after their lease ran out).
    let survivor = bases[0].clone();
    let jobs = eventually(Duration::from_secs(90), "every job to succeed", || async {
        let jobs = all_jobs(&survivor).await;
        jobs.iter().all(|j| j["status"] == "succeeded").then_some(jobs)
    })
    .await;

    // Every acknowledged delivery is stored exactly once, with exactly one job.
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    let mut deliveries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/deliveries?limit=1000&cursor={c}"),
            None => "/api/v1/deliveries?limit=1000".to_string(),
        };
        let page = admin_json(&survivor, &path).await;
        deliveries.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    for d in &deliveries {
        *per_delivery.entry(d["delivery"].as_str().unwrap().to_string()).or_default() += 1;
    }
    for delivery in acked.iter().chain(std::iter::once(&"race-1".to_string())) {
        assert_eq!(per_delivery.get(delivery), Some(&1), "{delivery} stored {:?} times", per_delivery.get(delivery));
    }
    assert_eq!(jobs.len(), deliveries.len(), "one job per delivery");

    // Each job reached its terminal state once: one successful attempt, and the action ran at most once
    // per attempt (a run cut short by the kill may repeat, never a leased one).
    let run_log = std::fs::read_to_string(&runs).unwrap();
    let mut runs_per_delivery: HashMap<&str, usize> = HashMap::new();
    for line in run_log.lines() {
        *runs_per_delivery.entry(line).or_default() += 1;
    }
    let mut repeated = 0;
    for job in &jobs {
        let detail =
            admin_json(&survivor, &format!("/api/v1/deliveries/{}", job["delivery_id"].as_str().unwrap())).await;
        let log = detail["jobs"][0]["attempt_log"].as_array().unwrap().clone();
        assert_eq!(log.iter().filter(|a| a["ok"] == true).count(), 1, "{detail}");
        let ran = runs_per_delivery.get(job["delivery_id"].as_str().unwrap()).copied().unwrap_or(0);
        assert!(ran >= 1, "job {} never ran", job["id"]);
        if ran > 1 {
            repeated += 1;
        }
    }
    // Only jobs running on the killed instance at the moment of the kill may have run twice.
    assert!(repeated <= 32, "{repeated} jobs ran twice");
    drop(servers);
}
