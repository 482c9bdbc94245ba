//! The PostgreSQL store's route and source state (see [`crate::store::control`]). Every change takes the
//! claim lock, so no claim on any instance reads a route's state while another instance is changing it.

use std::collections::HashMap;

use tokio_postgres::{GenericClient, Row};

use super::control::{pause_from, stop_from, Circuit, ControlState, Pause, RouteChange, RouteState, SourceState};
use super::postgres::{pg_error, CLAIM_LOCK};
use super::{Millis, StoreError};

const ROUTE_COLUMNS: &str = "route, paused_by, paused_reason, paused_at, stopped_status, stopped_reason, stopped_at,
     circuit, circuit_until, failures, updated_at";

fn route_state(row: &Row) -> RouteState {
    RouteState {
        route: row.get(0),
        paused: pause_from(row.get(1), row.get(2), row.get(3)),
        stopped: stop_from(row.get::<_, Option<i32>>(4).map(i64::from), row.get(5), row.get(6)),
        circuit: Circuit::from_columns(row.get(7), row.get(8)),
        failures: RouteState::parse_failures(row.get(9)),
        updated_at: row.get(10),
    }
}

/// The states of these routes that have a row.
pub(super) async fn load_route_states(
    client: &impl deadpool_postgres::GenericClient,
    routes: &[String],
) -> Result<HashMap<String, RouteState>, StoreError> {
    let statement = client
        .prepare_cached(&format!("SELECT {ROUTE_COLUMNS} FROM route_state WHERE route = ANY($1)"))
        .await
        .map_err(pg_error)?;
    let rows = client.query(&statement, &[&routes]).await.map_err(pg_error)?;
    Ok(rows.iter().map(route_state).map(|s| (s.route.clone(), s)).collect())
}

pub(super) async fn save_route_state(
    client: &impl deadpool_postgres::GenericClient,
    s: &RouteState,
) -> Result<(), StoreError> {
    let (circuit, until) = s.circuit.columns();
    let paused = s.paused.as_ref();
    let stopped = s.stopped.as_ref();
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO route_state ({ROUTE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (route) DO UPDATE SET
                     paused_by = EXCLUDED.paused_by, paused_reason = EXCLUDED.paused_reason,
                     paused_at = EXCLUDED.paused_at, stopped_status = EXCLUDED.stopped_status,
                     stopped_reason = EXCLUDED.stopped_reason, stopped_at = EXCLUDED.stopped_at,
                     circuit = EXCLUDED.circuit, circuit_until = EXCLUDED.circuit_until,
                     failures = EXCLUDED.failures, updated_at = EXCLUDED.updated_at"
        ))
        .await
        .map_err(pg_error)?;
    client
        .execute(
            &statement,
            &[
                &s.route,
                &paused.map(|p| &p.by),
                &paused.map(|p| &p.reason),
                &paused.map(|p| p.at),
                &stopped.map(|t| i32::from(t.status)),
                &stopped.map(|t| &t.reason),
                &stopped.map(|t| t.at),
                &circuit,
                &until,
                &s.failures_json(),
                &s.updated_at,
            ],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Jobs of these routes running under a live lease, on any instance.
pub(super) async fn running_counts(
    client: &impl deadpool_postgres::GenericClient,
    routes: &[&String],
    now: Millis,
) -> Result<HashMap<String, usize>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT route, COUNT(*) FROM jobs
             WHERE status = 'running' AND lease_until >= $2 AND route = ANY($1)
             GROUP BY route",
        )
        .await
        .map_err(pg_error)?;
    let rows = client.query(&statement, &[&routes, &now]).await.map_err(pg_error)?;
    Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize)).collect())
}

pub(super) async fn change_route(
    client: &mut deadpool_postgres::Object,
    route: &str,
    change: &RouteChange,
    now: Millis,
) -> Result<(RouteState, RouteState), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK]).await.map_err(pg_error)?;
    let before =
        load_route_states(&tx, &[route.to_string()]).await?.remove(route).unwrap_or_else(|| RouteState::new(route));
    let mut after = before.clone();
    after.apply(change, now);
    if after != before {
        save_route_state(&tx, &after).await?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok((before, after))
}

pub(super) async fn pause_source(
    client: &mut deadpool_postgres::Object,
    source: &str,
    pause: Option<&Pause>,
    now: Millis,
) -> Result<Option<Pause>, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let before = tx
        .query_opt(
            "SELECT paused_by, paused_reason, paused_at FROM source_state WHERE source = $1 FOR UPDATE",
            &[&source],
        )
        .await
        .map_err(pg_error)?
        .and_then(|r| pause_from(r.get(0), r.get(1), r.get(2)));
    tx.execute(
        "INSERT INTO source_state (source, paused_by, paused_reason, paused_at, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source) DO UPDATE SET paused_by = EXCLUDED.paused_by, paused_reason = EXCLUDED.paused_reason,
             paused_at = EXCLUDED.paused_at, updated_at = EXCLUDED.updated_at",
        &[&source, &pause.map(|p| &p.by), &pause.map(|p| &p.reason), &pause.map(|p| p.at), &now],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(before)
}

pub(super) async fn control_state(client: &impl GenericClient) -> Result<ControlState, StoreError> {
    let routes = client
        .query(&format!("SELECT {ROUTE_COLUMNS} FROM route_state ORDER BY route"), &[])
        .await
        .map_err(pg_error)?
        .iter()
        .map(route_state)
        .collect();
    let sources = client
        .query("SELECT source, paused_by, paused_reason, paused_at, updated_at FROM source_state ORDER BY source", &[])
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| SourceState {
            source: r.get(0),
            paused: pause_from(r.get(1), r.get(2), r.get(3)),
            updated_at: r.get(4),
        })
        .collect();
    Ok(ControlState { routes, sources })
}
