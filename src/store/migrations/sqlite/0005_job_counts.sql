-- hookgate schema, version 5 (SQLite): queue depths kept up to date by triggers, inside the transaction of
-- every change to a job, so `/metrics` reads one row per (route, status) instead of counting the jobs table.
-- Also a one-row table that `/readyz` writes to prove a commit can reach the disk.
CREATE TABLE job_counts (
    route  TEXT NOT NULL,
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (route, status)
) WITHOUT ROWID;
INSERT INTO job_counts (route, status, n) SELECT route, status, COUNT(*) FROM jobs GROUP BY route, status;

CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (route, status, n) VALUES (new.route, new.status, 1)
    ON CONFLICT (route, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER job_counts_update AFTER UPDATE OF route, status ON jobs
WHEN old.status IS NOT new.status OR old.route IS NOT new.route BEGIN
    UPDATE job_counts SET n = n - 1 WHERE route = old.route AND status = old.status;
    INSERT INTO job_counts (route, status, n) VALUES (new.route, new.status, 1)
    ON CONFLICT (route, status) DO UPDATE SET n = n + 1;
END;
-- Also fires for the jobs a deleted delivery takes with it (ON DELETE CASCADE).
CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE route = old.route AND status = old.status;
END;

CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
