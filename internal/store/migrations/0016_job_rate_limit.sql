-- The bandwidth limit a download was requested with, in bytes per second;
-- 0: none of its own (the node's limit still applies).
ALTER TABLE jobs ADD COLUMN max_bytes_per_second BIGINT NOT NULL DEFAULT 0;
