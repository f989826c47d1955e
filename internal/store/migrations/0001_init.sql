-- Portable SQL: this file runs unchanged on SQLite and PostgreSQL.
-- Ids are TEXT, times are BIGINT unix microseconds (0 = never), booleans are
-- INTEGER 0/1, and "none" is '' rather than NULL so scans need no NullString.

CREATE TABLE nodes (
	id              TEXT    NOT NULL PRIMARY KEY,
	name            TEXT    NOT NULL UNIQUE,
	address         TEXT    NOT NULL UNIQUE,
	state           TEXT    NOT NULL DEFAULT 'UNKNOWN',
	state_reason    TEXT    NOT NULL DEFAULT '',
	state_since     BIGINT  NOT NULL DEFAULT 0,
	last_checked_at BIGINT  NOT NULL DEFAULT 0,
	hostname        TEXT    NOT NULL DEFAULT '',
	agent_version   TEXT    NOT NULL DEFAULT '',
	created_at      BIGINT  NOT NULL DEFAULT 0
);

-- initialized_by is deliberately not a foreign key: the marker stays on disk
-- after the node that wrote it is deleted, so the fact must outlive the node.
CREATE TABLE pools (
	id             TEXT    NOT NULL PRIMARY KEY,
	name           TEXT    NOT NULL UNIQUE,
	type           TEXT    NOT NULL,
	path           TEXT    NOT NULL UNIQUE,
	shared         INTEGER NOT NULL DEFAULT 0 CHECK (shared IN (0, 1)),
	initialized_by TEXT    NOT NULL DEFAULT '',
	created_at     BIGINT  NOT NULL DEFAULT 0
);

-- No ON DELETE on node_id: deleting a node a pool still relies on must fail.
CREATE TABLE pool_assignments (
	pool_id  TEXT    NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
	node_id  TEXT    NOT NULL REFERENCES nodes (id),
	position INTEGER NOT NULL,
	PRIMARY KEY (pool_id, node_id),
	UNIQUE (pool_id, position)
);
CREATE INDEX pool_assignments_node_id ON pool_assignments (node_id);

CREATE TABLE pool_mounts (
	node_id     TEXT    NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
	pool_id     TEXT    NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
	mounted     INTEGER NOT NULL DEFAULT 0 CHECK (mounted IN (0, 1)),
	reason      TEXT    NOT NULL DEFAULT '',
	free_bytes  BIGINT  NOT NULL DEFAULT 0,
	total_bytes BIGINT  NOT NULL DEFAULT 0,
	checked_at  BIGINT  NOT NULL DEFAULT 0,
	PRIMARY KEY (node_id, pool_id)
);
CREATE INDEX pool_mounts_pool_id ON pool_mounts (pool_id);
