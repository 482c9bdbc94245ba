-- hookgate schema, version 12 (SQLite): two fewer index entries for every delivery stored (issue 17).
-- The purge walks deliveries by id (a UUIDv7 starts with its time, made just after `received_at`), and a search
-- by a provider's delivery id alone hops the few sources of the (source, delivery) unique index.
DROP INDEX deliveries_received_at;
DROP INDEX deliveries_delivery;
