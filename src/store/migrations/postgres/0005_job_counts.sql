-- hookgate schema, version 5 (PostgreSQL): queue depths kept up to date by statement triggers, inside the
-- transaction of every change to jobs, so `/metrics` reads a few rows per (route, status) instead of counting
-- the jobs table. Each database connection (backend) keeps its own counter rows (`shard` = its process id), so
-- concurrent transactions, of one instance or several, never wait for one another's row lock and cannot deadlock
-- on counters; a scrape sums them. The purge folds the rows of connections that are gone into `shard` 0.
-- Also a one-row table that `/readyz` writes to prove a commit can reach the disk.
CREATE TABLE job_counts (
    route  TEXT NOT NULL,
    status TEXT NOT NULL,
    shard  INTEGER NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (route, status, shard)
) WITH (fillfactor = 50);

-- `job_counts` is found through the connection's search_path, as the jobs table itself is (pinning it with
-- `SET search_path` costs a quarter of the trigger's time).
CREATE FUNCTION hookgate_job_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_counts AS c (route, status, shard, n)
        SELECT route, status, pg_backend_pid(), COUNT(*) FROM new_rows
        GROUP BY route, status ORDER BY route, status
        ON CONFLICT (route, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO job_counts AS c (route, status, shard, n)
        SELECT route, status, pg_backend_pid(), -COUNT(*) FROM old_rows
        GROUP BY route, status ORDER BY route, status
        ON CONFLICT (route, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO job_counts AS c (route, status, shard, n)
        SELECT route, status, pg_backend_pid(), SUM(delta) FROM (
            SELECT route, status, -1 AS delta FROM old_rows
            UNION ALL
            SELECT route, status, 1 FROM new_rows
        ) moved
        GROUP BY route, status HAVING SUM(delta) <> 0 ORDER BY route, status
        ON CONFLICT (route, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

-- The triggers first: they lock out writers of jobs until this migration commits, so the count below is exact.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;
CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION hookgate_job_counts();
CREATE TRIGGER job_counts_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION hookgate_job_counts();
-- Also fires for the jobs deleted deliveries take with them (ON DELETE CASCADE).
CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION hookgate_job_counts();
INSERT INTO job_counts (route, status, shard, n) SELECT route, status, 0, COUNT(*) FROM jobs GROUP BY route, status;

CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at BIGINT NOT NULL
);
