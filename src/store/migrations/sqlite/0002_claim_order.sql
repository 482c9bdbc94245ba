-- hookgate schema, version 2 (SQLite): claims walk due queued jobs in (run_at, id) order straight from an
-- index and stop as soon as they have enough, instead of sorting the whole backlog on every claim.
DROP INDEX jobs_claim;
CREATE INDEX jobs_queue ON jobs (status, run_at, id);
