-- Image library: the files in each pool that VMs can use. Same conventions
-- as 0001 (portable SQL, TEXT ids, BIGINT unix microseconds with 0 = never,
-- INTEGER 0/1 booleans, '' for none).

-- No ON DELETE on pool_id: deleting a pool that still holds images must
-- fail (the store checks first so the error can say how many remain).
-- rel_path is slash-separated and relative to the pool root; a file is at
-- most one image, so (pool_id, rel_path) is unique. That index also serves
-- listing a pool in path order.
CREATE TABLE images (
	id            TEXT    NOT NULL PRIMARY KEY,
	pool_id       TEXT    NOT NULL REFERENCES pools (id),
	name          TEXT    NOT NULL DEFAULT '',
	kind          TEXT    NOT NULL DEFAULT '',
	format        TEXT    NOT NULL DEFAULT '',
	state         TEXT    NOT NULL DEFAULT '',
	state_reason  TEXT    NOT NULL DEFAULT '',
	rel_path      TEXT    NOT NULL,
	size_bytes    BIGINT  NOT NULL DEFAULT 0,
	mod_time      BIGINT  NOT NULL DEFAULT 0,
	volume_label  TEXT    NOT NULL DEFAULT '',
	bootable      INTEGER NOT NULL DEFAULT 0 CHECK (bootable IN (0, 1)),
	os_distro     TEXT    NOT NULL DEFAULT '',
	os_version    TEXT    NOT NULL DEFAULT '',
	os_arch       TEXT    NOT NULL DEFAULT '',
	sha256        TEXT    NOT NULL DEFAULT '',
	origin        TEXT    NOT NULL DEFAULT '',
	created_at    BIGINT  NOT NULL DEFAULT 0,
	updated_at    BIGINT  NOT NULL DEFAULT 0,
	missing_since BIGINT  NOT NULL DEFAULT 0,
	UNIQUE (pool_id, rel_path)
);
CREATE INDEX images_pool_id_kind ON images (pool_id, kind);
