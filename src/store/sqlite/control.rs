//! The SQLite store's route and source state (see [`crate::store::control`]): loaded and saved on the writer
//! thread, inside the same transaction as the claim or change that reads it.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::sql_error;
use crate::store::control::{
    pause_from, stop_from, Circuit, ControlState, Pause, RouteChange, RouteState, SourceState,
};
use crate::store::{Millis, StoreError};

const ROUTE_COLUMNS: &str = "route, paused_by, paused_reason, paused_at, stopped_status, stopped_reason, stopped_at,
     circuit, circuit_until, failures, updated_at";

fn route_state(row: &Row) -> rusqlite::Result<RouteState> {
    Ok(RouteState {
        route: row.get(0)?,
        paused: pause_from(row.get(1)?, row.get(2)?, row.get(3)?),
        stopped: stop_from(row.get(4)?, row.get(5)?, row.get(6)?),
        circuit: Circuit::from_columns(&row.get::<_, String>(7)?, row.get(8)?),
        failures: RouteState::parse_failures(&row.get::<_, String>(9)?),
        updated_at: row.get(10)?,
    })
}

/// The states of these routes (a JSON array of names) that have a row.
pub(super) fn load_route_states(conn: &Connection, routes: &str) -> Result<HashMap<String, RouteState>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {ROUTE_COLUMNS} FROM route_state WHERE route IN (SELECT value FROM json_each(?1))"
    ))
    .map_err(sql_error)?
    .query_map([routes], route_state)
    .map_err(sql_error)?
    .map(|r| r.map(|s| (s.route.clone(), s)))
    .collect::<rusqlite::Result<_>>()
    .map_err(sql_error)
}

pub(super) fn save_route_state(conn: &Connection, s: &RouteState) -> Result<(), StoreError> {
    let (circuit, until) = s.circuit.columns();
    let paused = s.paused.as_ref();
    let stopped = s.stopped.as_ref();
    conn.prepare_cached(&format!(
        "INSERT INTO route_state ({ROUTE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (route) DO UPDATE SET
             paused_by = excluded.paused_by, paused_reason = excluded.paused_reason, paused_at = excluded.paused_at,
             stopped_status = excluded.stopped_status, stopped_reason = excluded.stopped_reason,
             stopped_at = excluded.stopped_at, circuit = excluded.circuit, circuit_until = excluded.circuit_until,
             failures = excluded.failures, updated_at = excluded.updated_at"
    ))
    .map_err(sql_error)?
    .execute(params![
        s.route,
        paused.map(|p| &p.by),
        paused.map(|p| &p.reason),
        paused.map(|p| p.at),
        stopped.map(|t| t.status),
        stopped.map(|t| &t.reason),
        stopped.map(|t| t.at),
        circuit,
        until,
        s.failures_json(),
        s.updated_at,
    ])
    .map_err(sql_error)?;
    Ok(())
}

pub(super) fn change_route_tx(
    conn: &Connection,
    route: &str,
    change: &RouteChange,
    now: Millis,
) -> Result<(RouteState, RouteState), StoreError> {
    let names = serde_json::to_string(&[route]).map_err(super::internal)?;
    let before = load_route_states(conn, &names)?.remove(route).unwrap_or_else(|| RouteState::new(route));
    let mut after = before.clone();
    after.apply(change, now);
    if after != before {
        save_route_state(conn, &after)?;
    }
    Ok((before, after))
}

/// Jobs of these routes (a JSON array) running under a live lease, on any instance.
pub(super) fn running_counts(
    conn: &Connection,
    routes: &str,
    now: Millis,
) -> Result<HashMap<String, usize>, StoreError> {
    conn.prepare_cached(
        "SELECT route, COUNT(*) FROM jobs
         WHERE status = 'running' AND lease_until >= ?2 AND route IN (SELECT value FROM json_each(?1))
         GROUP BY route",
    )
    .map_err(sql_error)?
    .query_map(params![routes, now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize)))
    .map_err(sql_error)?
    .collect::<rusqlite::Result<_>>()
    .map_err(sql_error)
}

pub(super) fn pause_source_tx(
    conn: &Connection,
    source: &str,
    pause: Option<&Pause>,
    now: Millis,
) -> Result<Option<Pause>, StoreError> {
    let before = conn
        .prepare_cached("SELECT paused_by, paused_reason, paused_at FROM source_state WHERE source = ?1")
        .map_err(sql_error)?
        .query_row([source], |r| Ok(pause_from(r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(sql_error)?
        .flatten();
    conn.prepare_cached(
        "INSERT INTO source_state (source, paused_by, paused_reason, paused_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (source) DO UPDATE SET paused_by = excluded.paused_by, paused_reason = excluded.paused_reason,
             paused_at = excluded.paused_at, updated_at = excluded.updated_at",
    )
    .map_err(sql_error)?
    .execute(params![source, pause.map(|p| &p.by), pause.map(|p| &p.reason), pause.map(|p| p.at), now])
    .map_err(sql_error)?;
    Ok(before)
}

pub(super) fn control_state_tx(conn: &Connection) -> Result<ControlState, StoreError> {
    let routes = conn
        .prepare_cached(&format!("SELECT {ROUTE_COLUMNS} FROM route_state ORDER BY route"))
        .map_err(sql_error)?
        .query_map([], route_state)
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    let sources = conn
        .prepare_cached(
            "SELECT source, paused_by, paused_reason, paused_at, updated_at FROM source_state ORDER BY source",
        )
        .map_err(sql_error)?
        .query_map([], |r| {
            Ok(SourceState {
                source: r.get(0)?,
                paused: pause_from(r.get(1)?, r.get(2)?, r.get(3)?),
                updated_at: r.get(4)?,
            })
        })
        .map_err(sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)?;
    Ok(ControlState { routes, sources })
}
