//! The store under operations: a large retention purge lets writes through, `/readyz` tells a full disk, and
//! queue depths come from counters that stay exact through every job transition.

use std::process::Command;
use std::time::{Duration, Instant};

use hookgate::store::{
    now_ms, AttemptRecord, Claim, DynStore, Insert, JobCounts, JobQuery, JobStatus, NewJob, NextState,
};

use crate::helpers::*;

const HOUR: i64 = 3_600_000;

/// A store opened the way the app opens it, on a fresh database (the directory holds the SQLite file).
async fn fresh_store(backend: &Backend) -> (tempfile::TempDir, String, DynStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let store = hookgate::store::open(&url.parse().unwrap()).await.unwrap();
    (dir, url, store)
}

/// Deliveries received `age` ago, `jobs_each` finished jobs apiece (or none): what a purge removes.
async fn insert_expired(store: &DynStore, prefix: &str, count: usize, age: i64) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(250) {
        let writes = chunk.iter().map(|i| {
            let mut d = new_delivery("github", &format!("{prefix}-{i}"));
            // Oldest first: the purge walks deliveries in the order they were received.
            d.received_at = now_ms() - age - (count - i) as i64;
            d.id = hookgate::store::id_at(d.received_at);
            let store = store.clone();
            async move { store.insert_delivery(d, vec![]).await.unwrap() }
        });
        for stored in futures_util::future::join_all(writes).await {
            match stored {
                Insert::Stored { id, .. } => ids.push(id),
                other => panic!("not stored: {other:?}"),
            }
        }
    }
    ids
}

store_test! {
    async fn an_insert_made_while_a_large_purge_runs_commits_before_the_purge_ends(backend) {
        let (_dir, _url, store) = fresh_store(&backend).await;
        let expired = insert_expired(&store, "old", 6_000, 10 * HOUR).await;
        let purge = {
            let store = store.clone();
            tokio::spawn(async move {
                let n = store.purge(now_ms() - HOUR).await.unwrap();
                (n, Instant::now())
            })
        };
        // The oldest delivery gone means the purge has committed something and is still under way.
        eventually(Duration::from_secs(60), "the purge to start", || async {
            store.get_delivery(&expired[0]).await.unwrap().is_none().then_some(())
        })
        .await;
        let stored = store.insert_delivery(new_delivery("github", "during-purge"), vec![]).await.unwrap();
        let inserted_at = Instant::now();
        assert!(matches!(stored, Insert::Stored { .. }));
        let (purged, purged_at) = purge.await.unwrap();
        assert_eq!(purged, 6_000);
        assert!(
            inserted_at < purged_at,
            "the insert waited for the whole purge ({:?} after it ended)",
            inserted_at - purged_at
        );
        assert!(store.get_delivery(&expired[5_999]).await.unwrap().is_none());
        let left = store.list_deliveries(Default::default()).await.unwrap();
        assert_eq!(left.items.len(), 1);
        assert_eq!(left.items[0].delivery, "during-purge");
    }
}

/// On PostgreSQL several instances purge at once: a row one of them holds is stepped over, never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_purge_steps_over_rows_another_transaction_holds() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("skipped: HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let (_dir, url, store) = fresh_store(&backend).await;
    let expired = insert_expired(&store, "old", 1_200, 10 * HOUR).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("BEGIN").await.unwrap();
    client.execute("SELECT 1 FROM deliveries WHERE id = $1 FOR UPDATE", &[&expired[600]]).await.unwrap();

    let purged = tokio::time::timeout(Duration::from_secs(20), store.purge(now_ms() - HOUR))
        .await
        .expect("the purge waited for a row lock");
    assert_eq!(purged.unwrap(), 1_199);
    client.batch_execute("ROLLBACK").await.unwrap();
    // The next purge takes what was held.
    assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------------------
// Readiness

/// The real binary with every file it writes limited to `bytes` (RLIMIT_FSIZE, with SIGXFSZ ignored): past
/// the limit a write fails as on a full disk, and `prlimit --pid` lifts it again.
fn start_with_file_size_limit(config: &std::path::Path, bytes: u64) -> BinaryServer {
    let fsize = format!("--fsize={bytes}:unlimited");
    let wrapper = ["prlimit", &fsize, "--", "sh", "-c", "trap '' XFSZ; exec \"$0\" \"$@\""];
    BinaryServer::start_wrapped(&wrapper, config, &[])
}

async fn readyz(client: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
    let response = client.get(format!("{base}/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_readyz_answers_503_until_a_write_commits_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(
        &config,
        format!("[store]\nurl = \"sqlite://{}/hookgate.db\"\n{GITHUB_SOURCE}", dir.path().display()),
    )
    .unwrap();
    let server = start_with_file_size_limit(&config, 2 << 20);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    assert_eq!(readyz(&client, &server.addr).await.0, 200);

    // Fill the "disk" with deliveries (random, so they do not compress) until they are refused and /readyz
    // agrees; a checkpoint may free the WAL for a moment, so keep going until both hold at once.
    let mut refused = 0;
    let mut not_ready = None;
    for i in 0..3_000 {
        let pad: String = (0..16_384).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let body = serde_json::json!({ "pad": pad }).to_string();
        let mut request = client.post(format!("{}/hooks/github", server.addr)).body(body.clone());
        for (k, v) in github_headers("push", &format!("fill-{i}"), &body) {
            request = request.header(k, v);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert!(status == 202 || status == 503, "unexpected {status}");
        if status == 503 {
            refused += 1;
            let (ready, body) = readyz(&client, &server.addr).await;
            if ready == 503 {
                not_ready = Some(body);
                break;
            }
        }
    }
    assert!(refused > 0, "the file size limit never made a write fail");
    let body = not_ready.expect("/readyz said ready while writes failed");
    assert_eq!(body["code"], "store_write_failed", "{body}");
    // Alerts that read /metrics see it too.
    let metrics = client.get(format!("{}/metrics", server.addr)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hookgate_store_ready 0"), "{metrics}");
    // Nothing about the failure is guessable from outside beyond the code; the reason is in the log.
    assert!(server.log_text().contains("a store write failed"), "{}", server.log_text());
    // Each refused webhook is logged once, at the HTTP boundary, with the cause an operator can act on.
    let log = server.log_text();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("request failed")).collect();
    assert_eq!(failed.len(), refused, "{log}");
    assert!(
        failed.iter().all(|l| l.contains("code=\"store_unavailable\"") && l.contains("source=github")),
        "{failed:?}"
    );
    assert!(failed.iter().all(|l| l.to_ascii_lowercase().contains("disk")), "no cause in {failed:?}");

    // Space again: the probe write commits and the store is ready; deliveries are accepted.
    let lifted = Command::new("prlimit")
        .arg(format!("--pid={}", server.child.id()))
        .arg("--fsize=unlimited:unlimited")
        .status()
        .unwrap();
    assert!(lifted.success());
    eventually(Duration::from_secs(10), "/readyz to recover", || async {
        (readyz(&client, &server.addr).await.0 == 200).then_some(())
    })
    .await;
    let body = push_body("refs/heads/main", "octo/hello");
    let mut request = client.post(format!("{}/hooks/github", server.addr)).body(body.clone());
    for (k, v) in github_headers("push", "after-full", &body) {
        request = request.header(k, v);
    }
    assert_eq!(request.send().await.unwrap().status(), 202);
}

/// PostgreSQL with a full disk: every write fails with `disk_full` (SQLSTATE 53100) while reads still work.
/// Triggers raise exactly that error, on the tables a delivery and the probe write to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_postgres_disk_readyz_answers_503_until_a_write_commits_again() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("skipped: HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url(dir.path()).await;
    let app = spawn_app_at(&url, GITHUB_SOURCE).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let body = push_body("refs/heads/main", "octo/hello");
    assert_eq!(app.github("push", "before", &body).await.status(), 202);
    assert_eq!(readyz(&app.client, &app.addr).await.0, 200);

    client
        .batch_execute(
            "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$;
             CREATE TRIGGER full_deliveries BEFORE INSERT ON deliveries FOR EACH ROW EXECUTE FUNCTION disk_full();
             DO $$ BEGIN
                 IF to_regclass('write_probe') IS NOT NULL THEN
                     CREATE TRIGGER full_probe BEFORE INSERT OR UPDATE ON write_probe
                         FOR EACH ROW EXECUTE FUNCTION disk_full();
                 END IF;
             END $$;",
        )
        .await
        .unwrap();
    assert_eq!(app.github("push", "full-1", &body).await.status(), 503);
    let (status, answer) = readyz(&app.client, &app.addr).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "store_write_failed");

    client.batch_execute("DROP FUNCTION disk_full() CASCADE").await.unwrap();
    eventually(Duration::from_secs(10), "/readyz to recover", || async {
        (readyz(&app.client, &app.addr).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(app.github("push", "full-1", &body).await.status(), 202);
}

// ---------------------------------------------------------------------------------------------------------
// Queue depths

/// Counted the long way, through the admin listing of each status (pages of at most 1,000).
async fn full_count(store: &DynStore) -> JobCounts {
    let mut counts = JobCounts::default();
    for status in JobStatus::ALL {
        let mut n = 0;
        let mut before = None;
        loop {
            let page = store
                .list_jobs(JobQuery { status: Some(status), limit: 1000, before: before.clone(), ..Default::default() })
                .await
                .unwrap();
            n += page.items.len() as u64;
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        match status {
            JobStatus::Queued => counts.queued = n,
            JobStatus::Running => counts.running = n,
            JobStatus::Succeeded => counts.succeeded = n,
            JobStatus::Dead => counts.dead = n,
            JobStatus::Cancelled => counts.cancelled = n,
        }
    }
    counts
}

async fn assert_depths(store: &DynStore, after: &str, expected: [u64; 4]) {
    let full = full_count(store).await;
    let kept = store.job_counts().await.unwrap();
    let as_array = |c: &JobCounts| [c.queued, c.running, c.succeeded, c.dead];
    assert_eq!(as_array(&full), expected, "full count after {after}");
    assert_eq!(as_array(&kept), expected, "kept counters after {after}");
}

fn job(route: &str, key: Option<&str>) -> NewJob {
    NewJob {
        id: hookgate::store::new_id(),
        route: route.into(),
        coalesce_key: key.map(Into::into),
        run_at: now_ms() - 1,
    }
}

fn claim(owner: &str, routes: &[&str], limit: usize, lease: i64) -> Claim {
    let now = now_ms();
    Claim {
        owner: owner.into(),
        limit,
        now,
        lease_until: now + lease,
        routes: routes.iter().map(|r| r.to_string()).collect(),
        retry: Default::default(),
        limits: Default::default(),
        leases: Default::default(),
        lockless: Default::default(),
    }
}

fn attempt(n: u32, ok: bool) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        started_at: now_ms(),
        finished_at: now_ms(),
        ok,
        error: (!ok).then(|| "failed".to_string()),
        output: None,
        status_code: None,
    }
}

store_test! {
    async fn queue_depths_match_a_full_count_through_every_transition(backend) {
        let (_dir, _url, store) = fresh_store(&backend).await;
        assert_depths(&store, "opening", [0, 0, 0, 0]).await;

        // insert: one delivery with jobs of two routes, one keyed
        let mut old = new_delivery("github", "d-old");
        old.received_at = now_ms() - 10 * HOUR;
        old.id = hookgate::store::id_at(old.received_at);
        let Insert::Stored { id: old_id, .. } =
            store.insert_delivery(old, vec![job("a", None), job("b", Some("k"))]).await.unwrap()
        else {
            panic!("not stored")
        };
        assert_depths(&store, "insert", [2, 0, 0, 0]).await;
        // coalescing merge: the keyed job takes the newer delivery; no job is added
        store.insert_delivery(new_delivery("github", "d-new"), vec![job("b", Some("k"))]).await.unwrap();
        assert_depths(&store, "coalescing merge", [2, 0, 0, 0]).await;
        // a duplicate writes nothing
        store.insert_delivery(new_delivery("github", "d-new"), vec![job("a", None)]).await.unwrap();
        assert_depths(&store, "duplicate", [2, 0, 0, 0]).await;

        // claim, then finish as succeeded / retry / dead
        let a = store.claim_jobs(claim("w", &["a"], 10, HOUR)).await.unwrap();
        assert_eq!(a.len(), 1);
        assert_depths(&store, "claim", [1, 1, 0, 0]).await;
        assert!(store.finish_job(&a[0].id, "w", attempt(1, true), NextState::Succeeded).await.unwrap());
        assert_depths(&store, "finish (succeeded)", [1, 0, 1, 0]).await;
        let b = store.claim_jobs(claim("w", &["b"], 10, HOUR)).await.unwrap();
        assert!(store.finish_job(&b[0].id, "w", attempt(1, false), NextState::Retry { at: now_ms() - 1 }).await.unwrap());
        assert_depths(&store, "finish (retry)", [1, 0, 1, 0]).await;
        // a finish by an owner that lost the job changes nothing
        assert!(!store.finish_job(&b[0].id, "w", attempt(1, false), NextState::Dead).await.unwrap());
        assert_depths(&store, "a stale finish", [1, 0, 1, 0]).await;
        let b = store.claim_jobs(claim("w", &["b"], 10, HOUR)).await.unwrap();
        assert!(store.finish_job(&b[0].id, "w", attempt(2, false), NextState::Dead).await.unwrap());
        assert_depths(&store, "finish (dead)", [0, 0, 1, 1]).await;

        // retry a dead job, claim it, release it
        assert!(store.retry_job(&b[0].id, now_ms() - 1).await.unwrap());
        assert_depths(&store, "retry", [1, 0, 1, 0]).await;
        let b = store.claim_jobs(claim("w", &["b"], 10, HOUR)).await.unwrap();
        assert_depths(&store, "claim after retry", [0, 1, 1, 0]).await;
        assert!(store.release_job(&b[0].id, "w", now_ms() - 1).await.unwrap());
        assert_depths(&store, "release", [1, 0, 1, 0]).await;

        // a lease that runs out: another owner claims the job again (or it ends, as that path decides)
        store.claim_jobs(claim("dies", &["b"], 10, -1)).await.unwrap();
        store.claim_jobs(claim("w", &["b"], 10, HOUR)).await.unwrap();
        let after_expiry = full_count(&store).await;
        assert_eq!(after_expiry.queued + after_expiry.running + after_expiry.dead, 1);
        assert_depths(
            &store,
            "an expired lease claimed again",
            [after_expiry.queued, after_expiry.running, 1, after_expiry.dead],
        )
        .await;

        // replay: new jobs for a stored delivery
        assert_eq!(store.insert_jobs(&old_id, vec![job("c", None), job("c", None)]).await.unwrap(), 2);
        let before_purge = full_count(&store).await;
        assert_depths(
            &store,
            "replay",
            [before_purge.queued, before_purge.running, before_purge.succeeded, before_purge.dead],
        )
        .await;
        let c = store.claim_jobs(claim("w", &["c"], 10, HOUR)).await.unwrap();
        for j in &c {
            assert!(store.finish_job(&j.id, "w", attempt(1, true), NextState::Succeeded).await.unwrap());
        }

        // purge: the old delivery goes with its finished jobs (route a's, and the two replays)
        let left = full_count(&store).await;
        assert_eq!(left.succeeded, 3);
        assert_eq!(store.purge(now_ms() - HOUR).await.unwrap(), 1);
        assert_depths(&store, "purge", [left.queued, left.running, 0, left.dead]).await;
    }
}

store_test! {
    async fn queue_depths_never_read_the_jobs_table(backend) {
        let (dir, url, store) = fresh_store(&backend).await;
        for i in 0..20 {
            let jobs = vec![job("a", None), job("b", None)];
            store.insert_delivery(new_delivery("github", &format!("d-{i}")), jobs).await.unwrap();
        }
        store.claim_jobs(claim("w", &["a"], 5, HOUR)).await.unwrap();
        // With the jobs table out of reach, only counters kept elsewhere can answer.
        let rename = "ALTER TABLE jobs RENAME TO jobs_out_of_reach";
        match &backend {
            Backend::Sqlite => {
                rusqlite::Connection::open(dir.path().join("hookgate.db")).unwrap().execute_batch(rename).unwrap();
            }
            Backend::Postgres(_) => {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client.batch_execute(rename).await.unwrap();
            }
        }
        let counts = store.job_counts().await.expect("queue depths without reading the jobs table");
        assert_eq!([counts.queued, counts.running, counts.succeeded, counts.dead], [35, 5, 0, 0]);
    }
}

store_test! {
    async fn queue_depths_stay_exact_when_two_instances_insert_and_claim_at_once(backend) {
        let (_dir, url, first) = fresh_store(&backend).await;
        // PostgreSQL: a second instance on the same database. SQLite has one process per file.
        let second = match &backend {
            Backend::Sqlite => first.clone(),
            Backend::Postgres(_) => hookgate::store::open(&url.parse().unwrap()).await.unwrap(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (n, store) in [first.clone(), second.clone()].into_iter().enumerate() {
            let inserter = store.clone();
            tasks.spawn(async move {
                for i in 0..150 {
                    let key = (i % 5 == 0).then(|| format!("k{}", i % 3));
                    let jobs = vec![job("a", None), job("b", key.as_deref())];
                    inserter.insert_delivery(new_delivery("github", &format!("{n}-{i}")), jobs).await.unwrap();
                }
            });
            tasks.spawn(async move {
                for round in 0..60 {
                    let owner = format!("w{n}");
                    for j in store.claim_jobs(claim(&owner, &["a", "b"], 7, HOUR)).await.unwrap() {
                        let next = if round % 3 == 0 { NextState::Dead } else { NextState::Succeeded };
                        store.finish_job(&j.id, &owner, attempt(1, round % 3 != 0), next).await.unwrap();
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let full = full_count(&first).await;
        assert!(full.succeeded + full.dead > 0, "the claimers ran nothing: {full:?}");
        for store in [&first, &second] {
            let kept = store.job_counts().await.unwrap();
            assert_eq!(
                [kept.queued, kept.running, kept.succeeded, kept.dead],
                [full.queued, full.running, full.succeeded, full.dead]
            );
        }
    }
}
