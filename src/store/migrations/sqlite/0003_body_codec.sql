-- hookgate schema, version 3 (SQLite): bodies may be stored compressed; each row says how (0 = as received,
-- 1 = LZ4 block with the length in front). Rows written before this version are as received.
ALTER TABLE deliveries ADD COLUMN body_codec INTEGER NOT NULL DEFAULT 0;
