-- hookgate schema, version 11 (PostgreSQL): named leases, so that one instance at a time does work that must
-- not run twice at once (GitHub delivery recovery). A lease is free once `until` (Unix ms) has passed.
CREATE TABLE leases (
    name  TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until BIGINT NOT NULL
);
