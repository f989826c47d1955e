-- What a node's health check last wrote of its pool mounts: a digest of what
-- the check reported, and the oldest checked_at among the rows it left. A
-- check that reports the same, while no row is store.MountRefresh old,
-- writes only the node's row, without reading the node's mounts.
ALTER TABLE nodes ADD COLUMN mounts_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN mounts_checked_at BIGINT NOT NULL DEFAULT 0;
