-- hookgate schema, version 2 (PostgreSQL): claims read due queued jobs in (run_at, id) order straight from
-- an index, a page at a time, instead of ranking the whole backlog on every claim.
DROP INDEX jobs_due;
CREATE INDEX jobs_queue ON jobs (run_at, id) WHERE status = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE status = 'running';
