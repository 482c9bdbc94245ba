-- hookgate schema, version 4 (PostgreSQL): a delivery of a timestamped scheme keeps a digest of its signed
-- (timestamp, body) pair; the same pair again from one source is a replay, a duplicate whatever its id. The
-- unique index makes this hold across instances.
ALTER TABLE deliveries ADD COLUMN replay_key TEXT;
CREATE UNIQUE INDEX deliveries_replay ON deliveries (source, replay_key) WHERE replay_key IS NOT NULL;
