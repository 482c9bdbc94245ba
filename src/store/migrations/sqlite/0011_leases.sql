-- hookgate schema, version 11 (SQLite): named leases, so that one instance at a time does work that must not
-- run twice at once (GitHub delivery recovery). A lease is free once `until` (Unix ms) has passed.
CREATE TABLE leases (
    name  TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
) WITHOUT ROWID;
