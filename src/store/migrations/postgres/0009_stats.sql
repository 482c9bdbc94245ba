-- hookgate schema, version 9 (PostgreSQL): the dashboard's per-minute aggregates, one row per (scope, name, minute).
-- Each instance adds what it counted since its last flush: counters merge by addition, the queue gauges by max,
-- the last error by its time, so rows written by several instances stay exact. `d0..d15` count job durations
-- up to 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000 ms and beyond. Rows older
-- than 8 days go with the retention purge.
CREATE TABLE stats_minute (
    scope           TEXT NOT NULL CHECK (scope IN ('source', 'route')),
    name            TEXT NOT NULL,
    minute          BIGINT NOT NULL,
    accepted        BIGINT NOT NULL DEFAULT 0,
    duplicate       BIGINT NOT NULL DEFAULT 0,
    rejected_401    BIGINT NOT NULL DEFAULT 0,
    rejected_413    BIGINT NOT NULL DEFAULT 0,
    rejected_429    BIGINT NOT NULL DEFAULT 0,
    rejected_400    BIGINT NOT NULL DEFAULT 0,
    rejected_other  BIGINT NOT NULL DEFAULT 0,
    succeeded       BIGINT NOT NULL DEFAULT 0,
    failed          BIGINT NOT NULL DEFAULT 0,
    dead            BIGINT NOT NULL DEFAULT 0,
    d0              BIGINT NOT NULL DEFAULT 0,
    d1              BIGINT NOT NULL DEFAULT 0,
    d2              BIGINT NOT NULL DEFAULT 0,
    d3              BIGINT NOT NULL DEFAULT 0,
    d4              BIGINT NOT NULL DEFAULT 0,
    d5              BIGINT NOT NULL DEFAULT 0,
    d6              BIGINT NOT NULL DEFAULT 0,
    d7              BIGINT NOT NULL DEFAULT 0,
    d8              BIGINT NOT NULL DEFAULT 0,
    d9              BIGINT NOT NULL DEFAULT 0,
    d10             BIGINT NOT NULL DEFAULT 0,
    d11             BIGINT NOT NULL DEFAULT 0,
    d12             BIGINT NOT NULL DEFAULT 0,
    d13             BIGINT NOT NULL DEFAULT 0,
    d14             BIGINT NOT NULL DEFAULT 0,
    d15             BIGINT NOT NULL DEFAULT 0,
    queue_depth     BIGINT,
    queue_oldest_ms BIGINT,
    last_error      TEXT,
    last_error_at   BIGINT,
    PRIMARY KEY (scope, name, minute)
);
-- The purge deletes by age across every name.
CREATE INDEX stats_minute_age ON stats_minute (minute);
-- Each route's last error (`GET /api/v1/routes`) from the few rows that have one, not every minute of 8 days.
CREATE INDEX stats_minute_errors ON stats_minute (name, last_error_at) WHERE scope = 'route' AND last_error_at IS NOT NULL;
