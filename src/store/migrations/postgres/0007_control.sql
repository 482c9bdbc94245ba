-- hookgate schema, version 7 (PostgreSQL): what operators and peers decided about routes and sources, shared by
-- every instance and kept across restarts. A route or source without a row is running normally. Rows are
-- changed under the claim lock, so a claim never acts on a state another instance is changing.
CREATE TABLE route_state (
    route          TEXT PRIMARY KEY,
    paused_by      TEXT,
    paused_reason  TEXT,
    paused_at      BIGINT,
    stopped_status INTEGER,
    stopped_reason TEXT,
    stopped_at     BIGINT,
    circuit        TEXT NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open', 'half-open')),
    -- open: until when; half-open: the lease of the probe under way, if any.
    circuit_until  BIGINT,
    -- JSON array of the recent failures' times (Unix ms), at most the breaker's max_failures.
    failures       TEXT NOT NULL DEFAULT '[]',
    updated_at     BIGINT NOT NULL
);

CREATE TABLE source_state (
    source        TEXT PRIMARY KEY,
    paused_by     TEXT,
    paused_reason TEXT,
    paused_at     BIGINT,
    updated_at    BIGINT NOT NULL
);
