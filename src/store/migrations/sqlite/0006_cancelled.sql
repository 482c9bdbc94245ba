-- hookgate schema, version 6 (SQLite): job status `cancelled` (terminal, set by an operator), and the
-- idempotency keys of bulk requests.
--
-- SQLite cannot alter a CHECK constraint, and rebuilding `jobs` (create, copy, drop, rename) would delete every
-- attempt with it (`attempts` references `jobs` ON DELETE CASCADE, and foreign keys are on). A check that only
-- admits more values leaves every stored row valid, so the table's stored definition is edited in place: the
-- procedure of https://www.sqlite.org/lang_altertable.html section 7. `setup::migrate` runs this step with
-- `writable_schema` on, then bumps `schema_version` so that every connection reads the schema again.
UPDATE sqlite_schema
SET sql = replace(sql, 'CHECK (status IN (''queued'', ''running'', ''succeeded'', ''dead''))',
                       'CHECK (status IN (''queued'', ''running'', ''succeeded'', ''dead'', ''cancelled''))')
WHERE type = 'table' AND name = 'jobs';

-- The key of a bulk request (`Idempotency-Key`), the fingerprint of its operation and filter, and its answer;
-- written in the transaction of the action. Forgotten after 24 hours.
CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT NOT NULL,
    count       INTEGER NOT NULL,
    jobs        INTEGER NOT NULL,
    more        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
