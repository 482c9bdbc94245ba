//! Group commit for job outcomes on PostgreSQL: the attempts that end at about the same time, on one instance,
//! are recorded by one statement (one transaction, one run of the queue-depth trigger, one WAL flush) instead
//! of one each. Each caller learns whether its own job was still leased to it, exactly as one at a time.
//! A batch that fails for the sake of one outcome is written again one outcome at a time.

use std::collections::HashSet;

use deadpool_postgres::Pool;

use super::batch::tied_to_a_request;
use super::group::Group;
use super::{finish_attempt, pg_error, unavailable, without_nul};
use crate::store::*;

/// The most outcomes one statement records: at most the worker's slots, in practice.
const MAX_BATCH: usize = 256;

/// One attempt that has ended: record it and move its job on, if `owner` still holds the job's lease.
pub(super) struct Outcome {
    pub(super) job_id: String,
    pub(super) owner: String,
    pub(super) attempt: AttemptRecord,
    pub(super) next: NextState,
}

/// The group commit of outcomes; each answer says whether the outcome was recorded.
pub(super) type Outcomes = Group<Outcome, bool>;

/// Start the outcome group commit on the current runtime.
pub(super) fn start(pool: Pool) -> Outcomes {
    Group::start(pool, MAX_BATCH, "outcome writer", |pool, outcomes| async move { write(&pool, outcomes).await })
}

/// Record `outcomes` and answer each, in order. A job named twice (its caller tried again while the first try
/// still waited) is recorded by the first; the second finds the lease gone, as it would one at a time.
pub(super) async fn write(pool: &Pool, outcomes: Vec<Outcome>) -> Vec<Result<bool, StoreError>> {
    let every = |e: StoreError| (0..outcomes.len()).map(|_| Err(e.clone())).collect();
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => return every(unavailable(e)),
    };
    let mut seen = HashSet::new();
    let (first, again): (Vec<usize>, Vec<usize>) = (0..outcomes.len()).partition(|&i| seen.insert(&outcomes[i].job_id));
    let mut answers: Vec<Result<bool, StoreError>> = (0..outcomes.len()).map(|_| Ok(false)).collect();
    let batch: Vec<&Outcome> = first.iter().map(|&i| &outcomes[i]).collect();
    match record_all(&client, &batch).await {
        Ok(recorded) => {
            for &i in &first {
                answers[i] = Ok(recorded.contains(outcomes[i].job_id.as_str()));
            }
        }
        Err(e) if tied_to_a_request(&e) => {
            for &i in &first {
                answers[i] = record_one(&client, &outcomes[i]).await;
            }
        }
        Err(e) => return every(pg_error(e)),
    }
    for i in again {
        answers[i] = record_one(&client, &outcomes[i]).await;
    }
    answers
}

async fn record_one(client: &deadpool_postgres::Object, o: &Outcome) -> Result<bool, StoreError> {
    finish_attempt(client, &o.job_id, &o.owner, &o.attempt, o.next).await
}

/// Every outcome in one statement, atomic on its own: a job still leased to its owner moves on and gets its
/// attempt recorded; a job whose lease was lost gets neither. Returns the ids of the jobs moved on.
const RECORD_BATCH: &str = "WITH outcome AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
                              $7::int[], $8::bigint[], $9::bool[], $10::text[], $11::int[])
              AS o (id, owner, status, run_at, error, finished_at, attempt, started_at, ok, output, status_code)
     ), finished AS (
         UPDATE jobs SET status = o.status, run_at = COALESCE(o.run_at, jobs.run_at), last_error = o.error,
                         lease_owner = NULL, lease_until = NULL, updated_at = o.finished_at
         FROM outcome o
         WHERE jobs.id = o.id AND jobs.status = 'running' AND jobs.lease_owner = o.owner
         RETURNING jobs.id
     ), recorded AS (
         INSERT INTO attempts (job_id, attempt, started_at, finished_at, ok, error, output, status_code)
         SELECT o.id, o.attempt, o.started_at, o.finished_at, o.ok, o.error, o.output, o.status_code
         FROM outcome o JOIN finished f ON f.id = o.id
     )
     SELECT id FROM finished";

async fn record_all(
    client: &deadpool_postgres::Object,
    outcomes: &[&Outcome],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let ids: Vec<&str> = outcomes.iter().map(|o| o.job_id.as_str()).collect();
    let owners: Vec<&str> = outcomes.iter().map(|o| o.owner.as_str()).collect();
    let states: Vec<(&str, Option<Millis>)> = outcomes.iter().map(|o| o.next.row()).collect();
    let statuses: Vec<&str> = states.iter().map(|s| s.0).collect();
    let run_at: Vec<Option<Millis>> = states.iter().map(|s| s.1).collect();
    // PostgreSQL's text cannot hold NUL (22021): a command that printed one would leave its outcome unrecorded.
    let errors: Vec<_> = outcomes.iter().map(|o| without_nul(&o.attempt.error)).collect();
    let output: Vec<_> = outcomes.iter().map(|o| without_nul(&o.attempt.output)).collect();
    let finished_at: Vec<Millis> = outcomes.iter().map(|o| o.attempt.finished_at).collect();
    let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempt.attempt as i32).collect();
    let started_at: Vec<Millis> = outcomes.iter().map(|o| o.attempt.started_at).collect();
    let ok: Vec<bool> = outcomes.iter().map(|o| o.attempt.ok).collect();
    let status_codes: Vec<Option<i32>> = outcomes.iter().map(|o| o.attempt.status_code.map(i32::from)).collect();
    let statement = client.prepare_cached(RECORD_BATCH).await?;
    let rows = client
        .query(
            &statement,
            &[
                &ids,
                &owners,
                &statuses,
                &run_at,
                &errors,
                &finished_at,
                &attempts,
                &started_at,
                &ok,
                &output,
                &status_codes,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{claim, delivery, job, record};
    use crate::store::postgres::{test_schema_url, PostgresStore};

    async fn store(options: &str) -> Option<PostgresStore> {
        let url = test_schema_url().await?;
        Some(PostgresStore::open(&format!("{url}{options}")).await.expect("store opens"))
    }

    /// `n` jobs of route "r", claimed by "w"; their ids.
    async fn running(store: &PostgresStore, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let j = job("r", None);
            store.insert_delivery(delivery("github", &format!("d{i}")), vec![j.clone()]).await.unwrap();
            ids.push(j.id);
        }
        assert_eq!(store.claim_jobs(claim("w", &["r"], n)).await.unwrap().len(), n);
        ids
    }

    fn outcome(job_id: &str, owner: &str) -> Outcome {
        Outcome { job_id: job_id.into(), owner: owner.into(), attempt: record(1, true), next: NextState::Succeeded }
    }

    async fn attempts(store: &PostgresStore) -> i64 {
        store.client().await.unwrap().query_one("SELECT COUNT(*) FROM attempts", &[]).await.unwrap().get(0)
    }

    /// One batch answers each outcome for its own job: a job named twice is recorded once, a lease held by
    /// another owner is left alone.
    #[tokio::test]
    async fn a_batch_records_each_job_once_and_only_for_its_owner() {
        let Some(store) = store("").await else { return };
        let ids = running(&store, 3).await;
        let answers = write(
            &store.pool,
            vec![outcome(&ids[0], "w"), outcome(&ids[1], "someone-else"), outcome(&ids[0], "w"), outcome(&ids[2], "w")],
        )
        .await;
        let answers: Vec<bool> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, [true, false, false, true]);
        assert_eq!(attempts(&store).await, 2);
        assert_eq!(store.job_counts().await.unwrap().running, 1);
    }

    /// When the batch statement fails for one outcome's sake (here: its job's row is locked by another
    /// transaction past `lock_timeout`), the others are recorded one at a time and only that one fails; it is
    /// recorded once the lock is gone.
    #[tokio::test]
    async fn an_outcome_that_fails_does_not_fail_the_rest_of_its_batch() {
        let Some(store) = store("%20-clock_timeout%3D200").await else { return };
        let ids = running(&store, 4).await;
        let mut holder = store.client().await.unwrap();
        let lock = holder.transaction().await.unwrap();
        lock.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&ids[2]]).await.unwrap();
        let answers = write(&store.pool, ids.iter().map(|id| outcome(id, "w")).collect()).await;
        assert!(matches!(&answers[2], Err(StoreError::Internal(text)) if text.contains("55P03")), "{:?}", answers[2]);
        for i in [0, 1, 3] {
            assert!(answers[i].as_ref().unwrap(), "{i}: {:?}", answers[i]);
        }
        assert_eq!(attempts(&store).await, 3);
        lock.rollback().await.unwrap();
        assert_eq!(write(&store.pool, vec![outcome(&ids[2], "w")]).await[0].as_ref().unwrap(), &true);
        assert_eq!(attempts(&store).await, 4);
        assert_eq!(store.job_counts().await.unwrap().succeeded, 4);
    }

    /// A store whose server is gone answers Unavailable to every outcome, and records none.
    #[tokio::test]
    async fn without_a_server_every_outcome_is_unavailable() {
        let Some(store) = store("").await else { return };
        let ids = running(&store, 2).await;
        store.pool.close();
        let answers = futures_util::future::join_all(
            ids.iter().map(|id| store.finish_job(id, "w", record(1, true), NextState::Succeeded)),
        )
        .await;
        assert!(answers.iter().all(|a| matches!(a, Err(StoreError::Unavailable(_)))), "{answers:?}");
    }
}
