//! Group commit for PostgreSQL ingest: deliveries whose jobs have no coalesce key, from concurrent requests,
//! are written together by one statement (one transaction, one WAL flush), and each caller is answered only
//! after that COMMIT (through `group.rs`). A batch that fails for the sake of one request is written again one
//! request at a time.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Pool;

use super::group::Group;
use super::{insert_unkeyed, pg_error, unavailable};
use crate::store::row::{self, headers_to_text};
use crate::store::*;

/// The most deliveries one statement takes; bounds the latency a batch adds to its first request.
pub(super) const MAX_BATCH: usize = 256;

/// One delivery waiting to be written, with its jobs (none with a coalesce key).
pub(super) struct Request {
    pub(super) delivery: Delivery,
    pub(super) jobs: Vec<NewJob>,
}

/// The group commit of ingest.
pub(super) type Batcher = Group<Request, Insert>;

/// Start the ingest group commit on the current runtime.
pub(super) fn start(pool: Pool) -> Batcher {
    Group::start(pool, MAX_BATCH, "batch writer", |pool, requests| async move { write(&pool, requests).await })
}

/// Whether a failed batch statement may owe its failure to one of its requests (a constraint or data error,
/// a deadlock with another writer): then each request is written again on its own. Connection, resource and
/// shutdown errors (or none from the server at all) fail every request alike.
pub(super) fn tied_to_a_request(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| !matches!(&code.code()[..2], "08" | "53" | "57" | "58"))
}

/// Write `requests` in one statement on one pooled connection and answer each, in order: `Stored` once
/// committed, `Duplicate` with the first copy's id (from the table or from earlier in the batch), or the error.
pub(super) async fn write(pool: &Pool, requests: Vec<Request>) -> Vec<Result<Insert, StoreError>> {
    let every = |e: StoreError| (0..requests.len()).map(|_| Err(e.clone())).collect();
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => return every(unavailable(e)),
    };
    let inserted = match insert_all(&client, &requests).await {
        Ok(inserted) => inserted,
        Err(BatchError::Db(e)) if tied_to_a_request(&e) => {
            let mut answers = Vec::with_capacity(requests.len());
            for r in requests {
                answers.push(insert_unkeyed(&client, r.delivery, &r.jobs).await);
            }
            return answers;
        }
        Err(BatchError::Db(e)) => return every(pg_error(e)),
        Err(BatchError::Store(e)) => return every(e),
    };
    let duplicates: Vec<&Delivery> =
        requests.iter().map(|r| &r.delivery).filter(|d| !inserted.contains(d.id.as_str())).collect();
    let mut first_copies = match duplicates.is_empty() {
        true => Ok(HashMap::new()),
        false => first_copies_of(&client, &duplicates).await,
    };
    requests
        .iter()
        .map(|r| {
            let d = &r.delivery;
            if inserted.contains(d.id.as_str()) {
                return Ok(Insert::Stored { id: d.id.clone(), jobs: r.jobs.len() });
            }
            match &mut first_copies {
                Ok(found) => match found.remove(d.id.as_str()) {
                    Some(id) => Ok(Insert::Duplicate { id }),
                    None => Err(row::id_taken(d)),
                },
                Err(e) => Err(e.clone()),
            }
        })
        .collect()
}

enum BatchError {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

/// The deliveries, and the jobs of those that are new, in one statement: its own transaction, committed
/// when the server answers. A delivery already stored, or twice in the batch, inserts nothing. Returns the
/// ids inserted.
const INSERT_BATCH: &str = "WITH d AS (
         INSERT INTO deliveries (id, source, event, delivery, received_at, headers, body, replay_key)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bytea[],
                              $8::text[])
         ON CONFLICT DO NOTHING RETURNING id
     ), j AS (
         INSERT INTO jobs (id, delivery_id, route, coalesce_key, status, attempts, run_at, created_at, updated_at, merged)
         SELECT u.id, u.delivery_id, u.route, NULL, 'queued', 0, u.run_at, u.created_at, u.created_at, 0
         FROM unnest($9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[])
              AS u (id, delivery_id, route, run_at, created_at)
         WHERE u.delivery_id IN (SELECT id FROM d)
     )
     SELECT id FROM d";

async fn insert_all(client: &deadpool_postgres::Object, requests: &[Request]) -> Result<HashSet<String>, BatchError> {
    // In (source, delivery) order: two batches that share deliveries take their index entries in one order,
    // so neither waits for a row the other one is still to insert.
    let mut order: Vec<&Request> = requests.iter().collect();
    order.sort_by(|a, b| (&a.delivery.source, &a.delivery.delivery).cmp(&(&b.delivery.source, &b.delivery.delivery)));
    let deliveries = || order.iter().map(|r| &r.delivery);
    let ids: Vec<&str> = deliveries().map(|d| d.id.as_str()).collect();
    let sources: Vec<&str> = deliveries().map(|d| d.source.as_str()).collect();
    let events: Vec<&str> = deliveries().map(|d| d.event.as_str()).collect();
    let provider_ids: Vec<&str> = deliveries().map(|d| d.delivery.as_str()).collect();
    let received_at: Vec<Millis> = deliveries().map(|d| d.received_at).collect();
    let headers: Vec<String> =
        deliveries().map(|d| headers_to_text(&d.headers)).collect::<Result<_, _>>().map_err(BatchError::Store)?;
    let bodies: Vec<&[u8]> = deliveries().map(|d| &d.body[..]).collect();
    let replay_keys: Vec<Option<&str>> = deliveries().map(|d| d.replay_key.as_deref()).collect();
    let jobs = || order.iter().flat_map(|r| r.jobs.iter().map(move |j| (&r.delivery, j)));
    let job_ids: Vec<&str> = jobs().map(|(_, j)| j.id.as_str()).collect();
    let job_deliveries: Vec<&str> = jobs().map(|(d, _)| d.id.as_str()).collect();
    let job_routes: Vec<&str> = jobs().map(|(_, j)| j.route.as_str()).collect();
    let job_run_at: Vec<Millis> = jobs().map(|(_, j)| j.run_at).collect();
    let job_created: Vec<Millis> = jobs().map(|(d, _)| d.received_at).collect();
    let statement = client.prepare_cached(INSERT_BATCH).await.map_err(BatchError::Db)?;
    let rows = client
        .query(
            &statement,
            &[
                &ids,
                &sources,
                &events,
                &provider_ids,
                &received_at,
                &headers,
                &bodies,
                &replay_keys,
                &job_ids,
                &job_deliveries,
                &job_routes,
                &job_run_at,
                &job_created,
            ],
        )
        .await
        .map_err(BatchError::Db)?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// The first copy of each duplicate, by its own id, found as [`super::existing_delivery_id`] finds one (same
/// (source, delivery), else same (source, replay_key)), in one round trip; a delivery missing from the
/// answer clashed on its id alone.
async fn first_copies_of(
    client: &deadpool_postgres::Object,
    duplicates: &[&Delivery],
) -> Result<HashMap<String, String>, StoreError> {
    let ids: Vec<&str> = duplicates.iter().map(|d| d.id.as_str()).collect();
    let sources: Vec<&str> = duplicates.iter().map(|d| d.source.as_str()).collect();
    let provider_ids: Vec<&str> = duplicates.iter().map(|d| d.delivery.as_str()).collect();
    let replay_keys: Vec<Option<&str>> = duplicates.iter().map(|d| d.replay_key.as_deref()).collect();
    let rows = client
        .query(
            "SELECT u.id, COALESCE(
                 (SELECT d.id FROM deliveries d WHERE d.source = u.source AND d.delivery = u.delivery),
                 (SELECT d.id FROM deliveries d WHERE d.source = u.source AND d.replay_key = u.replay_key))
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u (id, source, delivery, replay_key)",
            &[&ids, &sources, &provider_ids, &replay_keys],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().filter_map(|r| Some((r.get::<_, String>(0), r.get::<_, Option<String>>(1)?))).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::contract::{delivery, job};
    use crate::store::postgres::{test_schema_url, PostgresStore};

    async fn count(store: &PostgresStore, sql: &str) -> i64 {
        store.client().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    fn request(d: Delivery, jobs: usize) -> Request {
        Request { delivery: d, jobs: (0..jobs).map(|_| job("r", None)).collect() }
    }

    /// 500 concurrent requests on two instances of one schema, a third of them copies of 17 deliveries, a
    /// third replays (a new delivery id, one of 13 replay keys), a third distinct: each delivery is stored
    /// once, with its jobs, and every other copy is answered Duplicate with the stored copy's id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_copies_on_two_instances_are_stored_once_and_name_the_first_copy() {
        let Some(url) = test_schema_url().await else { return };
        let stores = Arc::new([PostgresStore::open(&url).await.unwrap(), PostgresStore::open(&url).await.unwrap()]);
        let mut tasks = Vec::new();
        for i in 0..500usize {
            let mut d = delivery("github", &format!("own-{i}"));
            let group = match i % 3 {
                0 => {
                    d.delivery = format!("shared-{}", i % 17);
                    d.delivery.clone()
                }
                1 => {
                    d.replay_key = Some(format!("replay-{}", i % 13));
                    d.replay_key.clone().unwrap()
                }
                _ => d.delivery.clone(),
            };
            let jobs = vec![job("r", None), job("s", None)];
            let job_ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
            let stores = stores.clone();
            tasks.push(tokio::spawn(async move {
                let id = d.id.clone();
                let answer = stores[i % 2].insert_delivery(d, jobs).await;
                (group, id, job_ids, answer)
            }));
        }
        let mut stored: HashMap<String, String> = HashMap::new();
        let mut duplicates: Vec<(String, String)> = Vec::new();
        let mut stored_jobs = Vec::new();
        for task in tasks {
            let (group, id, job_ids, answer) = task.await.unwrap();
            match answer.unwrap() {
                Insert::Stored { id: got, jobs } => {
                    assert_eq!((got.as_str(), jobs), (id.as_str(), 2));
                    assert!(stored.insert(group.clone(), id).is_none(), "{group} stored twice");
                    stored_jobs.extend(job_ids);
                }
                Insert::Duplicate { id: first } => duplicates.push((group, first)),
            }
        }
        assert_eq!(stored.len(), 17 + 13 + 166);
        assert_eq!(duplicates.len(), 500 - stored.len());
        for (group, first) in &duplicates {
            assert_eq!(Some(first), stored.get(group), "{group}");
        }
        let store = &stores[0];
        assert_eq!(count(store, "SELECT COUNT(*) FROM deliveries").await, stored.len() as i64);
        assert_eq!(count(store, "SELECT COUNT(*) FROM jobs").await, 2 * stored.len() as i64);
        let client = store.client().await.unwrap();
        let found: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
                 WHERE j.id = ANY($1) AND d.id = ANY($2) AND j.status = 'queued'",
                &[&stored_jobs, &stored.values().collect::<Vec<_>>()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, stored_jobs.len() as i64, "each stored delivery has its own jobs");
        assert_eq!(store.job_counts().await.unwrap().queued, stored_jobs.len() as u64);
    }

    /// Copies inside one batch, and of a delivery stored before, are answered Duplicate with the first copy's
    /// id; only the new deliveries and their jobs are written.
    #[tokio::test]
    async fn a_batch_answers_copies_within_it_and_of_stored_deliveries() {
        let Some(url) = test_schema_url().await else { return };
        let store = PostgresStore::open(&url).await.unwrap();
        let before = delivery("github", "before");
        let before_id = before.id.clone();
        store.insert_delivery(before, vec![job("r", None)]).await.unwrap();
        let a = delivery("github", "a");
        let mut b = delivery("github", "b");
        b.replay_key = Some("k".into());
        let mut replay = delivery("github", "b-again");
        replay.replay_key = Some("k".into());
        let (a_id, b_id) = (a.id.clone(), b.id.clone());
        let answers = write(
            &store.pool,
            vec![
                request(delivery("github", "a"), 1),
                request(a, 2),
                request(delivery("github", "before"), 1),
                request(b, 0),
                request(replay, 1),
                request(delivery("gitlab", "a"), 1),
            ],
        )
        .await;
        let answers: Vec<Insert> = answers.into_iter().map(Result::unwrap).collect();
        // Either copy of "a" may be the first; the other names it.
        let (first, jobs, second) = match (&answers[0], &answers[1]) {
            (Insert::Stored { id, jobs }, Insert::Duplicate { id: second }) => (id, *jobs, second),
            (Insert::Duplicate { id: second }, Insert::Stored { id, jobs }) => (id, *jobs, second),
            _ => panic!("{answers:?}"),
        };
        assert_eq!(first, second);
        assert!(jobs >= 1);
        assert!(*first == a_id || jobs == 1);
        assert_eq!(answers[2], Insert::Duplicate { id: before_id });
        assert_eq!(answers[3], Insert::Stored { id: b_id.clone(), jobs: 0 });
        assert_eq!(answers[4], Insert::Duplicate { id: b_id });
        assert!(matches!(answers[5], Insert::Stored { jobs: 1, .. }));
        assert_eq!(count(&store, "SELECT COUNT(*) FROM deliveries").await, 4);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM jobs").await, 1 + jobs as i64 + 1);
    }

    /// A request the server refuses (text with a NUL byte; a job id already taken) fails alone: the batch
    /// is written again one request at a time and the others are stored, copies still found.
    #[tokio::test]
    async fn a_request_that_fails_does_not_fail_the_rest_of_its_batch() {
        let Some(url) = test_schema_url().await else { return };
        let store = PostgresStore::open(&url).await.unwrap();
        let taken = job("r", None);
        store.insert_delivery(delivery("github", "taken"), vec![taken.clone()]).await.unwrap();
        let mut nul = delivery("github", "nul");
        nul.event = "pu\0sh".into();
        let mut clash = request(delivery("github", "clash"), 1);
        clash.jobs.push(NewJob { id: taken.id.clone(), ..job("r", None) });
        let good = delivery("github", "good");
        let good_id = good.id.clone();
        let answers =
            write(&store.pool, vec![request(good, 2), request(nul, 1), clash, request(delivery("github", "good"), 1)])
                .await;
        assert_eq!(answers[0].as_ref().unwrap(), &Insert::Stored { id: good_id.clone(), jobs: 2 });
        assert!(matches!(&answers[1], Err(StoreError::Internal(text)) if text.contains("22021")), "{:?}", answers[1]);
        assert!(matches!(&answers[2], Err(StoreError::Internal(text)) if text.contains("23505")), "{:?}", answers[2]);
        assert_eq!(answers[3].as_ref().unwrap(), &Insert::Duplicate { id: good_id });
        assert_eq!(count(&store, "SELECT COUNT(*) FROM deliveries").await, 2);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM jobs").await, 3);
        // Through the batcher too, among concurrent requests.
        let mut nul = delivery("github", "nul-2");
        nul.event = "\0".into();
        let others: Vec<Delivery> = (0..20).map(|i| delivery("github", &format!("other-{i}"))).collect();
        let (bad, good) = tokio::join!(
            store.insert_delivery(nul, vec![]),
            futures_util::future::join_all(others.into_iter().map(|d| store.insert_delivery(d, vec![job("r", None)])))
        );
        assert!(matches!(bad, Err(StoreError::Internal(_))), "{bad:?}");
        assert!(good.iter().all(|a| matches!(a, Ok(Insert::Stored { jobs: 1, .. }))), "{good:?}");
    }

    /// A store that cannot reach its server answers Unavailable to every request, and never Stored.
    #[tokio::test]
    async fn a_store_without_a_server_answers_unavailable_to_every_request() {
        if let Some(url) = test_schema_url().await {
            let store = PostgresStore::open(&url).await.unwrap();
            store.pool.close();
            let answers = futures_util::future::join_all(
                (0..10).map(|i| store.insert_delivery(delivery("github", &format!("d{i}")), vec![job("r", None)])),
            )
            .await;
            assert!(answers.iter().all(|a| matches!(a, Err(StoreError::Unavailable(_)))), "{answers:?}");
        }
        // Nothing listens on the port: no connection can be made.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://hookgate@127.0.0.1:{port}/hookgate?sslmode=disable&connect_timeout=5");
        let options = crate::store::postgres_tls::connect_options(&url).unwrap();
        let manager = deadpool_postgres::Manager::from_config(options.config, options.tls, Default::default());
        let pool = Pool::builder(manager).max_size(4).runtime(deadpool_postgres::Runtime::Tokio1).build().unwrap();
        let store = PostgresStore::with_pool(pool);
        let answers = futures_util::future::join_all(
            (0..10).map(|i| store.insert_delivery(delivery("github", &format!("d{i}")), vec![job("r", None)])),
        )
        .await;
        assert!(answers.iter().all(|a| matches!(a, Err(StoreError::Unavailable(_)))), "{answers:?}");
    }
}
