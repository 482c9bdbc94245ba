//! Group commit on PostgreSQL: writes from concurrent callers wait in a queue, a collector hands every one
//! waiting (up to a batch's size) to one write on a pooled connection, and each caller gets its own answer
//! once that write has committed or failed. Ingest (`batch.rs`) and job outcomes (`outcomes.rs`) use it.
//!
//! One batch commits at a time per collector: the next one collects while it commits, so under load the
//! batches grow instead of the commits multiplying. On two loaded cores (`JOBS=0 STORE=postgres bench/run
//! 10s 64 2`) one ingest batch in flight ingested 0–26 % more than two and 7 % more than four, eight lost
//! 18 %; a larger host with several instances gets parallel commits from the instances.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::{STORE_BATCH_SIZE, STORE_COMMIT_DURATION};
use crate::store::StoreError;

/// Requests waiting for a batch; a sender waits when it is full.
const QUEUE: usize = 4096;

struct Pending<R, T> {
    request: R,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

/// The sending side of one group commit; its collector task ends once this is dropped and the queue is empty.
pub(super) struct Group<R, T> {
    queue: mpsc::Sender<Pending<R, T>>,
    what: &'static str,
}

impl<R: Send + 'static, T: Send + 'static> Group<R, T> {
    /// Start the collector on the current runtime. `write` takes up to `max_batch` requests and answers each,
    /// in order; `what` names the writer in the error callers get if it has stopped.
    pub(super) fn start<W, F>(pool: Pool, max_batch: usize, what: &'static str, write: W) -> Self
    where
        W: Fn(Pool, Vec<R>) -> F + Send + 'static,
        F: Future<Output = Vec<Result<T, StoreError>>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(collect(pool, waiting, max_batch, write));
        Group { queue, what }
    }

    /// Write `request` with the next batch; the answer comes after its COMMIT (or the failure).
    pub(super) async fn submit(&self, request: R) -> Result<T, StoreError> {
        let gone = || StoreError::Unavailable(format!("the PostgreSQL {} has stopped", self.what));
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { request, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn collect<R, T, W, F>(pool: Pool, mut waiting: mpsc::Receiver<Pending<R, T>>, max_batch: usize, write: W)
where
    R: Send + 'static,
    T: Send + 'static,
    W: Fn(Pool, Vec<R>) -> F,
    F: Future<Output = Vec<Result<T, StoreError>>> + Send + 'static,
{
    let committing = Arc::new(Semaphore::new(1));
    loop {
        // While a batch commits, requests pile up in the queue and the next batch takes them all.
        let Ok(slot) = committing.clone().acquire_owned().await else { return };
        let mut batch = Vec::new();
        if waiting.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let (requests, replies): (Vec<R>, Vec<_>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
        let written = write(pool.clone(), requests);
        // On a task of its own: the next batch starts collecting the moment this one has committed, while
        // its callers are being answered; and a write that panics fails its batch, not the collector.
        tokio::spawn(async move {
            let started = Instant::now();
            let size = replies.len();
            let answers = written.await;
            metrics::histogram!(STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
            metrics::histogram!(STORE_BATCH_SIZE).record(size as f64);
            drop(slot);
            for (reply, answer) in replies.into_iter().zip(answers) {
                // The caller may have given up (its future was dropped); the write stands either way.
                let _ = reply.send(answer);
            }
        });
    }
}
