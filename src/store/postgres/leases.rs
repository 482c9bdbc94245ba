//! The PostgreSQL store's named leases and the bulk "which delivery ids are stored" lookup (GitHub recovery).

use std::collections::HashSet;

use tokio_postgres::GenericClient;

use super::pg_error;
use crate::store::{Millis, StoreError};

pub(super) async fn stored_deliveries(
    client: &impl GenericClient,
    source: &str,
    ids: &[String],
) -> Result<HashSet<String>, StoreError> {
    let rows = client
        .query("SELECT delivery FROM deliveries WHERE source = $1 AND delivery = ANY($2)", &[&source, &ids])
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One statement: the row lock of the upsert makes a concurrent taker wait, then see the winner's row, so
/// its WHERE refuses it.
pub(super) async fn take_lease(
    client: &impl GenericClient,
    name: &str,
    owner: &str,
    until: Millis,
    now: Millis,
) -> Result<bool, StoreError> {
    let changed = client
        .execute(
            "INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until
             WHERE leases.until < $4 OR leases.owner = EXCLUDED.owner",
            &[&name, &owner, &until, &now],
        )
        .await
        .map_err(pg_error)?;
    Ok(changed > 0)
}
