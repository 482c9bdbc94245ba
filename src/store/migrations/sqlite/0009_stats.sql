-- hookgate schema, version 9 (SQLite): the dashboard's per-minute aggregates, one row per (scope, name, minute).
-- Each instance adds what it counted since its last flush: counters merge by addition, the queue gauges by max,
-- the last error by its time, so rows written by several instances stay exact. `d0..d15` count job durations
-- up to 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000 ms and beyond. Rows older
-- than 8 days go with the retention purge.
CREATE TABLE stats_minute (
    scope           TEXT NOT NULL CHECK (scope IN ('source', 'route')),
    name            TEXT NOT NULL,
    minute          INTEGER NOT NULL,
    accepted        INTEGER NOT NULL DEFAULT 0,
    duplicate       INTEGER NOT NULL DEFAULT 0,
    rejected_401    INTEGER NOT NULL DEFAULT 0,
    rejected_413    INTEGER NOT NULL DEFAULT 0,
    rejected_429    INTEGER NOT NULL DEFAULT 0,
    rejected_400    INTEGER NOT NULL DEFAULT 0,
    rejected_other  INTEGER NOT NULL DEFAULT 0,
    succeeded       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    dead            INTEGER NOT NULL DEFAULT 0,
    d0              INTEGER NOT NULL DEFAULT 0,
    d1              INTEGER NOT NULL DEFAULT 0,
    d2              INTEGER NOT NULL DEFAULT 0,
    d3              INTEGER NOT NULL DEFAULT 0,
    d4              INTEGER NOT NULL DEFAULT 0,
    d5              INTEGER NOT NULL DEFAULT 0,
    d6              INTEGER NOT NULL DEFAULT 0,
    d7              INTEGER NOT NULL DEFAULT 0,
    d8              INTEGER NOT NULL DEFAULT 0,
    d9              INTEGER NOT NULL DEFAULT 0,
    d10             INTEGER NOT NULL DEFAULT 0,
    d11             INTEGER NOT NULL DEFAULT 0,
    d12             INTEGER NOT NULL DEFAULT 0,
    d13             INTEGER NOT NULL DEFAULT 0,
    d14             INTEGER NOT NULL DEFAULT 0,
    d15             INTEGER NOT NULL DEFAULT 0,
    queue_depth     INTEGER,
    queue_oldest_ms INTEGER,
    last_error      TEXT,
    last_error_at   INTEGER,
    PRIMARY KEY (scope, name, minute)
) WITHOUT ROWID;
-- The purge deletes by age across every name.
CREATE INDEX stats_minute_age ON stats_minute (minute);
-- Each route's last error (`GET /api/v1/routes`) from the few rows that have one, not every minute of 8 days.
CREATE INDEX stats_minute_errors ON stats_minute (name, last_error_at) WHERE scope = 'route' AND last_error_at IS NOT NULL;
