//! 2xx means stored: SIGKILL the real binary mid-load; every acknowledged delivery survives and finishes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_survives_a_sigkill_and_its_jobs_finish() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}/hookgate.db\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n{GITHUB_SOURCE}\n[[routes]]\nname = \"mark\"\nsource = \"github\"\naction = {{ type = \"command\", argv = [\"true\"], timeout = \"2s\" }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut server = BinaryServer::start(&config, &[]);
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    // Eight senders post as fast as they can; the server dies under them.
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (client, base, acked) = (client.clone(), server.addr.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let body = push_body("refs/heads/main", "o/r");
                let mut request = client.post(format!("{base}/hooks/github")).body(body.clone());
                for (k, v) in github_headers("push", &format!("kill-{sender}-{i}"), &body) {
                    request = request.header(k, v);
                }
                match request.send().await {
                    Ok(r) if r.status() == 202 => {
                        if let Ok(json) = r.json::<serde_json::Value>().await {
                            acked.lock().unwrap().push(json["id"].as_str().unwrap().to_string());
                        }
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    eventually(Duration::from_secs(30), "some deliveries acknowledged", || async {
        (acked.lock().unwrap().len() >= 300).then_some(())
    })
    .await;
    server.kill9();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let server = BinaryServer::start(&config, &[]);
    for id in &acked {
        let detail = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
        assert_eq!(detail["id"], id.as_str());
    }
    // Jobs that were running when the process died come back after their lease; all end succeeded.
    eventually(Duration::from_secs(120), "every job to succeed", || async {
        let page = admin_json(&server.addr, "/api/v1/jobs?status=succeeded&limit=1").await;
        let queued = admin_json(&server.addr, "/api/v1/jobs?status=queued&limit=1").await;
        let running = admin_json(&server.addr, "/api/v1/jobs?status=running&limit=1").await;
        let dead = admin_json(&server.addr, "/api/v1/jobs?status=dead&limit=1").await;
        assert!(dead["items"].as_array().unwrap().is_empty(), "a job died");
        // The three lists are read one after another, so a job moving from running back to queued (its lost
        // attempt counted, waiting out its backoff) can slip between them: the sample below is read whole.
        let mut sample_done = true;
        for id in acked.iter().step_by(17) {
            let detail = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
            sample_done &= detail["jobs"][0]["status"] == "succeeded";
        }
        (queued["items"].as_array().unwrap().is_empty()
            && running["items"].as_array().unwrap().is_empty()
            && !page["items"].as_array().unwrap().is_empty()
            && sample_done)
            .then_some(())
    })
    .await;
    for id in acked.iter().step_by(17) {
        let detail = admin_json(&server.addr, &format!("/api/v1/deliveries/{id}")).await;
        assert_eq!(detail["jobs"][0]["status"], "succeeded", "{detail}");
    }
}
