-- Catalog auto-refresh (quarry server --catalog-refresh). Same conventions
-- as 0001 (portable SQL, TEXT ids, BIGINT unix microseconds with 0 = never,
-- '' for none).

-- One row per catalog entry present in a pool: which of its builds is the
-- current image, when upstream was last and will next be checked (kept so a
-- restart neither checks early nor forgets a check that is due), what the
-- last check found, and the refresh download in flight. No foreign keys:
-- the refresh controller forgets the rows of a pool or image that is gone,
-- and a pool's deletion must not be refused for them.
CREATE TABLE catalog_refresh (
	catalog_id       TEXT   NOT NULL,
	pool_id          TEXT   NOT NULL,
	current_image_id TEXT   NOT NULL DEFAULT '',
	last_check_at    BIGINT NOT NULL DEFAULT 0,
	next_check_at    BIGINT NOT NULL DEFAULT 0,
	result           TEXT   NOT NULL DEFAULT '',
	error            TEXT   NOT NULL DEFAULT '',
	job_id           TEXT   NOT NULL DEFAULT '',
	PRIMARY KEY (catalog_id, pool_id)
);

-- The builds of a catalog entry in a pool, one per image: the upstream
-- validators and digest it was fetched with (what the next check compares
-- against) and its build label and date (from the origin's Last-Modified).
CREATE TABLE catalog_builds (
	image_id      TEXT   NOT NULL PRIMARY KEY,
	catalog_id    TEXT   NOT NULL,
	pool_id       TEXT   NOT NULL,
	build         TEXT   NOT NULL DEFAULT '',
	built_at      BIGINT NOT NULL DEFAULT 0,
	etag          TEXT   NOT NULL DEFAULT '',
	last_modified TEXT   NOT NULL DEFAULT '',
	digest        TEXT   NOT NULL DEFAULT '',
	created_at    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX catalog_builds_entry_pool ON catalog_builds (catalog_id, pool_id, created_at);
