-- hookgate schema, version 7 (SQLite): what operators and peers decided about routes and sources, shared by
-- every instance and kept across restarts. A route or source without a row is running normally.
CREATE TABLE route_state (
    route          TEXT PRIMARY KEY NOT NULL,
    paused_by      TEXT,
    paused_reason  TEXT,
    paused_at      INTEGER,
    stopped_status INTEGER,
    stopped_reason TEXT,
    stopped_at     INTEGER,
    circuit        TEXT NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open', 'half-open')),
    -- open: until when; half-open: the lease of the probe under way, if any.
    circuit_until  INTEGER,
    -- JSON array of the recent failures' times (Unix ms), at most the breaker's max_failures.
    failures       TEXT NOT NULL DEFAULT '[]',
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE source_state (
    source        TEXT PRIMARY KEY NOT NULL,
    paused_by     TEXT,
    paused_reason TEXT,
    paused_at     INTEGER,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;
