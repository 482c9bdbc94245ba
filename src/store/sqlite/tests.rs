//! Tests of what only the SQLite store does (group commit, WAL, file permissions); the behaviour both stores
//! share is the contract suite (`store::contract`), run here against a temporary file.

use bytes::Bytes;
use rusqlite::Connection;

use super::queries::JOB_COUNTS;
use super::setup::{migrate, MIGRATIONS};
use super::writer::{run_batch, Op, WriteOp};
use super::writes::{insert_delivery_tx, DeliveryRow, CLAIM_EXPIRED, CLAIM_QUEUED, PURGE_CANDIDATES};
use super::*;
use crate::store::codec::{self, BodyCodec};
use crate::store::contract::{claim, delivery, job, store_one, HOUR};

/// A temporary SQLite store, with its file in a directory SQLite must create.
struct Fixture {
    dir: tempfile::TempDir,
    store: SqliteStore,
}

impl Fixture {
    fn path(&self) -> PathBuf {
        self.dir.path().join("nested/dir/hookgate.db")
    }
}

#[async_trait]
impl crate::store::contract::Fixture for Fixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    async fn rows(&self, table: &str) -> i64 {
        let raw = Connection::open(self.path()).unwrap();
        raw.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }
}

async fn fixture() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("nested/dir/hookgate.db")).await.unwrap();
    Some(Fixture { dir, store })
}

mod contract {
    crate::store::contract::contract_suite!(super::fixture);
}

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let Fixture { dir, store } = fixture().await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn the_checkpointer_copies_the_wal_into_the_database_and_empties_it_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    for i in 0..200 {
        store.insert_delivery(delivery("github", &format!("d-{i}")), vec![job("r", None)]).await.unwrap();
    }
    store.close().await;
    let wal = std::fs::metadata(dir.path().join("hookgate.db-wal")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "the WAL is truncated once the writer stopped");
    let reopened = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    assert_eq!(reopened.job_counts().await.unwrap().queued, 200);
}

#[tokio::test]
async fn claims_read_the_queue_from_an_index_without_sorting_the_backlog() {
    let (_dir, store) = fresh().await;
    let plans = store
        .read(|c| {
            let mut plans = Vec::new();
            for sql in [CLAIM_QUEUED, CLAIM_EXPIRED] {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).map_err(sql_error)?;
                let rows = stmt.query_map(params!["[\"r\"]", 0], |r| r.get::<_, String>(3)).map_err(sql_error)?;
                plans.push(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_error)?.join("; "));
            }
            Ok(plans)
        })
        .await
        .unwrap();
    for plan in plans {
        assert!(plan.contains("USING INDEX jobs_queue"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "a claim must not sort the backlog: {plan}");
    }
}

#[tokio::test]
async fn purge_candidates_come_from_the_primary_key_and_queue_depths_from_counters() {
    let (_dir, store) = fresh().await;
    let plan = |sql: &'static str| {
        store.read(move |c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).map_err(sql_error)?;
            let params: &[&dyn rusqlite::ToSql] = if sql.contains("?4") { &[&"", &0, &"", &1] } else { &[] };
            let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).map_err(sql_error)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_error)?.join("; "))
        })
    };
    let purge = plan(PURGE_CANDIDATES).await.unwrap();
    assert!(purge.contains("USING INDEX sqlite_autoindex_deliveries_1 (id>? AND id<?)"), "{purge}");
    assert!(!purge.contains("TEMP B-TREE"), "a purge batch must not sort the backlog: {purge}");
    let counts = plan(JOB_COUNTS).await.unwrap();
    assert!(!counts.contains("jobs"), "a scrape must not read the jobs table: {counts}");
}

/// Schema 12 dropped the index on `delivery` alone: a search by a provider's delivery id hops the sources of the
/// (source, delivery) unique index instead, and one by time bounds the primary key.
#[tokio::test]
async fn a_search_by_delivery_id_alone_uses_the_unique_index_and_one_by_time_the_primary_key() {
    let (_dir, store) = fresh().await;
    for source in ["github", "gitlab", "stripe"] {
        for i in 0..50 {
            store.insert_delivery(delivery(source, &format!("{source}-{i}")), vec![]).await.unwrap();
        }
    }
    store.insert_delivery(delivery("gitlab", "shared-guid"), vec![]).await.unwrap();
    store.insert_delivery(delivery("stripe", "shared-guid"), vec![]).await.unwrap();
    let by_delivery = DeliveryQuery { delivery: Some("shared-guid".into()), ..Default::default() };
    let found = store.list_deliveries(by_delivery.clone()).await.unwrap();
    let mut sources: Vec<_> = found.items.iter().map(|d| d.source.as_str()).collect();
    sources.sort();
    assert_eq!(sources, ["gitlab", "stripe"]);

    let plan = |q: DeliveryQuery| {
        store.read(move |c| {
            let (filter, mut args) = super::queries::delivery_filter(&q);
            args.push(rusqlite::types::Value::Integer(10));
            let sql = format!("EXPLAIN QUERY PLAN {}", super::queries::list_deliveries_sql(&filter));
            let mut stmt = c.prepare(&sql).map_err(sql_error)?;
            let rows =
                stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3)).map_err(sql_error)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_error)?.join("; "))
        })
    };
    let delivery_plan = plan(by_delivery).await.unwrap();
    assert!(
        delivery_plan.contains("USING INDEX sqlite_autoindex_deliveries_2 (source=? AND delivery=?)"),
        "{delivery_plan}"
    );
    assert!(!delivery_plan.contains("SCAN deliveries"), "{delivery_plan}");
    let since = now_ms() - HOUR;
    let by_time = DeliveryQuery { since: Some(since), until: Some(since + 60_000), ..Default::default() };
    let time_plan = plan(by_time).await.unwrap();
    assert!(time_plan.contains("sqlite_autoindex_deliveries_1 (id>? AND id<?)"), "{time_plan}");
}

#[test]
fn an_id_made_before_a_time_sorts_below_its_floor_and_one_made_at_or_after_it_does_not() {
    let at: Millis = 1_764_600_000_123;
    for (made, below) in [(at - 1, true), (at - 86_400_000, true), (at, false), (at + 1, false)] {
        assert_eq!(id_at(made) < id_floor(at), below, "id made at {made} against the floor of {at}");
    }
    assert_eq!(uuid::Uuid::parse_str(&id_at(at)).unwrap().get_version_num(), 7);
    assert!(id_floor(0) < id_at(1));
}

#[tokio::test]
async fn data_survives_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let path = path.to_str().unwrap();
    let store = SqliteStore::open(path).await.unwrap();
    let j = job("r", None);
    let id = store_one(&store, "d1", vec![j.clone()]).await;
    assert_eq!(store.schema_version().await.unwrap(), MIGRATIONS.last().unwrap().0);
    store.close().await;

    let store = SqliteStore::open(path).await.unwrap();
    let detail = store.get_delivery(&id).await.unwrap().unwrap();
    assert_eq!(detail.jobs[0].job.id, j.id);
    assert_eq!(store.schema_version().await.unwrap(), MIGRATIONS.last().unwrap().0);
    let applied: i64 = store
        .read(|c| c.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).map_err(sql_error))
        .await
        .unwrap();
    assert_eq!(applied, MIGRATIONS.len() as i64, "nothing re-applied");
    drop(store);

    // Dropping (rather than closing) also commits what was accepted.
    let store = SqliteStore::open(path).await.unwrap();
    assert_eq!(store.insert_delivery(delivery("github", "d1"), vec![]).await.unwrap(), Insert::Duplicate { id });
    store_one(&store, "d2", vec![]).await;
    drop(store);
    let store = SqliteStore::open(path).await.unwrap();
    assert_eq!(store.list_deliveries(Default::default()).await.unwrap().items.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_all_commit_in_far_fewer_transactions() {
    let (_dir, store) = fresh().await;
    let store = Arc::new(store);
    let before = store.commit_count();
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_delivery(
                        delivery("github", &format!("c{i}")),
                        vec![job("r", Some(&format!("k{}", i % 10)))],
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap().unwrap(), Insert::Stored { jobs: 1, .. }));
    }
    let commits = store.commit_count() - before;
    assert!(commits >= 1);
    assert!(commits < 500, "{commits} commits for 500 inserts");
    let page = store.list_deliveries(DeliveryQuery { limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 500);
    // Ten keys: everything coalesced into ten queued jobs.
    assert_eq!(store.job_counts().await.unwrap().queued, 10);
}

#[tokio::test]
async fn a_failing_write_does_not_undo_the_others_in_its_batch() {
    let (_dir, store) = fresh().await;
    let good = delivery("github", "good");
    let mut clash = delivery("github", "clash");
    clash.id = good.id.clone();
    let (a, b, c) = tokio::join!(
        store.insert_delivery(good.clone(), vec![job("r", None)]),
        store.insert_delivery(clash, vec![job("r", None)]),
        store.insert_delivery(delivery("github", "third"), vec![job("r", None)]),
    );
    assert!(matches!(a.unwrap(), Insert::Stored { .. }));
    assert!(matches!(b, Err(StoreError::Internal(_))));
    assert!(matches!(c.unwrap(), Insert::Stored { .. }));
    let names: Vec<_> =
        store.list_deliveries(Default::default()).await.unwrap().items.into_iter().map(|d| d.delivery).collect();
    assert_eq!(names.len(), 2);
    assert!(!names.contains(&"clash".to_string()));
    assert_eq!(store.job_counts().await.unwrap().queued, 2);
}

/// A write that fails after writing something: the batch is rolled back and run again with savepoints.
#[test]
fn a_batch_with_a_failing_write_runs_again_with_each_write_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("hookgate.db")).unwrap();
    migrate(&mut conn).unwrap();
    let mut answers = Vec::new();
    let mut batch: Vec<Box<dyn WriteOp>> = Vec::new();
    for (name, fail) in [("a", false), ("b", true), ("c", false)] {
        let row = DeliveryRow::encode(delivery("github", name)).unwrap();
        let (reply, answer) = oneshot::channel();
        answers.push(answer);
        let work = move |c: &Connection| {
            insert_delivery_tx(c, &row, &[job("r", None)])?;
            if fail {
                return Err(internal("failed after writing"));
            }
            Ok(())
        };
        batch.push(Box::new(Op { work, result: None, reply }));
    }
    run_batch(&conn, &mut batch).unwrap();
    for op in batch {
        op.reply(Ok(()));
    }
    let outcomes: Vec<bool> = answers.into_iter().map(|mut a| a.try_recv().unwrap().is_ok()).collect();
    assert_eq!(outcomes, [true, false, true]);
    let stored: Vec<String> = conn
        .prepare("SELECT delivery FROM deliveries ORDER BY delivery")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, ["a", "c"]);
    let jobs: i64 = conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0)).unwrap();
    assert_eq!(jobs, 2, "the failed write's job was undone too");
}

#[tokio::test]
async fn a_large_body_is_stored_compressed_and_read_back_as_received() {
    let (dir, store) = fresh().await;
    let mut d = delivery("github", "big");
    d.body = Bytes::from(std::fs::read("bench/push.json").unwrap());
    store.insert_delivery(d.clone(), vec![job("r", None)]).await.unwrap();
    let raw = Connection::open(dir.path().join("nested/dir/hookgate.db")).unwrap();
    let (codec, stored): (i64, usize) = raw
        .query_row("SELECT body_codec, length(body) FROM deliveries WHERE id = ?1", [&d.id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(codec, BodyCodec::Zstd as i64);
    assert!(stored * 5 < d.body.len(), "{stored} bytes on disk for {}", d.body.len());
    assert_eq!(store.get_delivery(&d.id).await.unwrap().unwrap().delivery.body, d.body);
    let claimed = store.claim_jobs(claim("w", &["r"], 1)).await.unwrap();
    assert_eq!(claimed[0].delivery.body, d.body, "the worker sees the body as received");
}

#[tokio::test]
async fn under_steady_writes_the_wal_starts_over_instead_of_growing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let options = SqliteOptions { wal_limit: 512 << 10, ..Default::default() };
    let store = Arc::new(SqliteStore::open_with(path.to_str().unwrap(), options).await.unwrap());
    let wal = dir.path().join("hookgate.db-wal");
    // Incompressible 4 KiB bodies: about 40 MiB of WAL over the run, written without pause.
    let mut largest = 0;
    for round in 0..100 {
        let writes = (0..100).map(|i| {
            let mut d = delivery("github", &format!("{round}-{i}"));
            d.body = codec::incompressible(4096, round * 100 + i + 1);
            let store = store.clone();
            async move { store.insert_delivery(d, vec![]).await.unwrap() }
        });
        futures_util::future::join_all(writes).await;
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    // Without a restart it would hold all ~40 MiB; a checkpoint starved by a loaded machine (other builds and
    // tests on two cores) may let it reach a dozen MiB before it starts over, so the bound is half the run.
    assert!(largest < 20 << 20, "the WAL grew to {largest} bytes");
}

#[tokio::test]
async fn a_locked_database_is_unavailable_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let options = SqliteOptions { busy_timeout: Duration::from_millis(100), readers: 2, ..Default::default() };
    let store = SqliteStore::open_with(path.to_str().unwrap(), options).await.unwrap();
    store_one(&store, "before", vec![]).await;
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked = store.insert_delivery(delivery("github", "d1"), vec![]).await;
    let Err(StoreError::Unavailable(text)) = &locked else { panic!("{locked:?}") };
    assert!(text.contains("database is locked"), "the error names its cause: {text}");
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    // Readers are not blocked by a writer in WAL mode.
    assert_eq!(store.list_deliveries(Default::default()).await.unwrap().items.len(), 1);
    other.execute_batch("ROLLBACK").unwrap();
    store.ping().await.unwrap();
    store_one(&store, "d1", vec![]).await;
}

#[tokio::test]
async fn a_missing_database_file_fails_the_ping() {
    let (dir, store) = fresh().await;
    store.ping().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("nested")).unwrap();
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn an_in_memory_path_is_refused() {
    assert!(SqliteStore::open(":memory:").await.is_err());
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_fresh_database_and_its_wal_and_shm_files_are_readable_by_their_owner_only() {
    let (dir, store) = fresh().await;
    store_one(&store, "d1", vec![job("r", None)]).await;
    let db = dir.path().join("nested/dir/hookgate.db");
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn an_existing_database_readable_by_others_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hookgate.db");
    let store = SqliteStore::open(db.to_str().unwrap()).await.unwrap();
    let id = store_one(&store, "d1", vec![]).await;
    store.close().await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = SqliteStore::open(db.to_str().unwrap()).await.unwrap();
    assert_eq!(mode(&db), 0o600);
    assert!(store.get_delivery(&id).await.unwrap().is_some(), "the data is still there");
    store_one(&store, "d2", vec![]).await;
    assert_eq!(mode(&dir.path().join("hookgate.db-wal")), 0o600);
}

#[tokio::test]
async fn a_full_database_is_unavailable_and_the_error_names_the_cause() {
    let (_dir, store) = fresh().await;
    store_one(&store, "before", vec![]).await;
    // SQLite's own size cap stands in for a full disk: a write past it fails with SQLITE_FULL just the same.
    store
        .write(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(sql_error)?;
            c.query_row(&format!("PRAGMA max_page_count = {}", pages + 8), [], |_| Ok(())).map_err(sql_error)
        })
        .await
        .unwrap();
    let mut full = None;
    for i in 0..64 {
        let mut d = delivery("github", &format!("big-{i}"));
        d.body = codec::incompressible(16 << 10, i + 1);
        if let Err(e) = store.insert_delivery(d, vec![]).await {
            full = Some(e);
            break;
        }
    }
    let Some(StoreError::Unavailable(text)) = &full else { panic!("the file never filled: {full:?}") };
    assert!(text.contains("database or disk is full"), "{text}");
    // Reads still work, and what was committed before stays.
    assert!(store.list_deliveries(Default::default()).await.unwrap().items.iter().any(|d| d.delivery == "before"));
}

/// Migration 6 loosens the jobs table's CHECK by editing its stored definition (SQLite cannot alter a CHECK,
/// and rebuilding `jobs` would cascade into `attempts`): a version-5 database with rows keeps every row, passes
/// SQLite's own integrity and foreign-key checks, takes cancelled jobs and still refuses unknown statuses.
#[tokio::test]
async fn a_version_5_database_with_rows_migrates_in_place_and_takes_cancelled_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        super::setup::migrate_to(&mut conn, 5).unwrap();
        conn.execute_batch(
            "INSERT INTO deliveries (id, source, event, delivery, received_at, headers, body)
                 VALUES ('d1', 'github', 'push', 'g1', 1, '[]', x'7b7d');
             INSERT INTO jobs (id, delivery_id, route, status, attempts, run_at, created_at, updated_at)
                 VALUES ('j1', 'd1', 'r', 'dead', 2, 1, 1, 1), ('j2', 'd1', 'r', 'queued', 0, 1, 1, 1),
                        ('j3', 'd1', 'r', 'succeeded', 1, 1, 1, 1);
             INSERT INTO attempts (job_id, attempt, started_at, finished_at, ok)
                 VALUES ('j1', 1, 1, 1, 0), ('j1', 2, 1, 1, 0), ('j3', 1, 1, 1, 1);",
        )
        .unwrap();
        let refused = conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = 'j2'", []);
        assert!(refused.is_err(), "version 5 knows no cancelled status");
    }

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), super::setup::MIGRATIONS.last().unwrap().0);
    let cancel = BulkJobs {
        action: BulkAction::Cancel,
        status: JobStatus::Queued,
        route: None,
        since: None,
        until: None,
        limit: BULK_LIMIT,
        now: now_ms(),
        key: None,
    };
    assert_eq!(
        store.bulk_jobs(cancel).await.unwrap(),
        BulkAnswer::Done(BulkOutcome { count: 1, jobs: 0, more: false })
    );
    let counts = store.job_counts().await.unwrap();
    assert_eq!((counts.cancelled, counts.dead, counts.succeeded, counts.queued), (1, 1, 1, 0));
    store.close().await;

    let conn = Connection::open(&path).unwrap();
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let orphans: i64 = conn.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(orphans, 0);
    let attempts: i64 = conn.query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0)).unwrap();
    assert_eq!(attempts, 3, "no attempt was lost");
    let status: String = conn.query_row("SELECT status FROM jobs WHERE id = 'j2'", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "cancelled");
    let bogus = conn.execute("UPDATE jobs SET status = 'paused' WHERE id = 'j2'", []);
    assert!(bogus.is_err(), "the loosened CHECK still refuses unknown statuses");
}
