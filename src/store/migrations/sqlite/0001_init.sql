-- hookgate schema, version 1 (SQLite). Times are Unix milliseconds; ids are UUIDv7 text, and SQLite's
-- default BINARY collation compares them bytewise, so id order is time order.

CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY NOT NULL,
    source      TEXT NOT NULL,
    event       TEXT NOT NULL,
    delivery    TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    headers     TEXT NOT NULL,
    body        BLOB NOT NULL,
    UNIQUE (source, delivery)
);
CREATE INDEX deliveries_source_id ON deliveries (source, id);
CREATE INDEX deliveries_event_id ON deliveries (event, id);
CREATE INDEX deliveries_received_at ON deliveries (received_at);

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    delivery_id  TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    route        TEXT NOT NULL,
    coalesce_key TEXT,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_at       INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    merged       INTEGER NOT NULL DEFAULT 0
);
-- Claims: due queued jobs by run_at, expired leases among running ones.
CREATE INDEX jobs_claim ON jobs (status, run_at);
-- Coalescing and per-key exclusivity look up unfinished jobs of one (route, key).
CREATE INDEX jobs_key ON jobs (route, coalesce_key, status) WHERE coalesce_key IS NOT NULL;
CREATE INDEX jobs_delivery ON jobs (delivery_id);
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_route_id ON jobs (route, id);

CREATE TABLE attempts (
    seq         INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    error       TEXT,
    output      TEXT,
    status_code INTEGER
);
CREATE INDEX attempts_job ON attempts (job_id, seq);
