//! SQLite store: one writer thread commits batches (group commit), reader connections serve queries.
//!
//! STUB: a helper fills this in.

use async_trait::async_trait;

use super::*;

pub struct SqliteStore;

impl SqliteStore {
    pub async fn open(_path: &str) -> Result<Self, StoreError> {
        todo!()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> { todo!() }
    async fn insert_delivery(&self, _d: NewDelivery, _j: Vec<NewJob>) -> Result<Insert, StoreError> { todo!() }
    async fn insert_jobs(&self, _id: &str, _j: Vec<NewJob>) -> Result<usize, StoreError> { todo!() }
    async fn claim_jobs(&self, _c: Claim) -> Result<Vec<ClaimedJob>, StoreError> { todo!() }
    async fn finish_job(&self, _id: &str, _o: &str, _a: AttemptRecord, _n: NextState) -> Result<bool, StoreError> { todo!() }
    async fn release_job(&self, _id: &str, _o: &str, _r: Millis) -> Result<bool, StoreError> { todo!() }
    async fn retry_job(&self, _id: &str, _now: Millis) -> Result<bool, StoreError> { todo!() }
    async fn get_delivery(&self, _id: &str) -> Result<Option<DeliveryDetail>, StoreError> { todo!() }
    async fn list_deliveries(&self, _q: DeliveryQuery) -> Result<Page<DeliverySummary>, StoreError> { todo!() }
    async fn list_jobs(&self, _q: JobQuery) -> Result<Page<JobSummary>, StoreError> { todo!() }
    async fn purge(&self, _before: Millis) -> Result<u64, StoreError> { todo!() }
    async fn job_counts(&self) -> Result<JobCounts, StoreError> { todo!() }
}
