-- hookgate schema, version 6 (PostgreSQL): job status `cancelled` (terminal, set by an operator), and the
-- idempotency keys of bulk requests.
--
-- The new check admits more values than the old one, so every stored row passes it: it is added NOT VALID (no
-- scan while the migration holds the table's lock), and validated after the migration has committed, under a
-- lock that lets reads and writes go on (`FOLLOW_UPS` in postgres.rs).
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')) NOT VALID;

-- The key of a bulk request (`Idempotency-Key`), the fingerprint of its operation and filter, and its answer;
-- written in the transaction of the action. Forgotten after 24 hours.
CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    count       BIGINT NOT NULL,
    jobs        BIGINT NOT NULL,
    more        BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
