-- hookgate schema, version 1 (PostgreSQL). Times are Unix milliseconds; ids are UUIDv7 text,
-- compared bytewise (COLLATE "C") so that id order is time order.

CREATE TABLE deliveries (
    id          TEXT COLLATE "C" PRIMARY KEY,
    source      TEXT NOT NULL,
    event       TEXT NOT NULL,
    delivery    TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    headers     TEXT NOT NULL,
    body        BYTEA NOT NULL,
    UNIQUE (source, delivery)
);
CREATE INDEX deliveries_source_id ON deliveries (source, id DESC);
CREATE INDEX deliveries_event_id ON deliveries (event, id DESC);
CREATE INDEX deliveries_received_at ON deliveries (received_at);

CREATE TABLE jobs (
    id           TEXT COLLATE "C" PRIMARY KEY,
    delivery_id  TEXT COLLATE "C" NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    route        TEXT NOT NULL,
    coalesce_key TEXT,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_at       BIGINT NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    merged       INTEGER NOT NULL DEFAULT 0
);
-- Claims look only at unfinished jobs.
CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_key ON jobs (route, coalesce_key) WHERE coalesce_key IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX jobs_delivery ON jobs (delivery_id);
CREATE INDEX jobs_status_id ON jobs (status, id DESC);
CREATE INDEX jobs_route_id ON jobs (route, id DESC);

CREATE TABLE attempts (
    seq         BIGSERIAL PRIMARY KEY,
    job_id      TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    ok          BOOLEAN NOT NULL,
    error       TEXT,
    output      TEXT,
    status_code INTEGER
);
CREATE INDEX attempts_job ON attempts (job_id, seq);
