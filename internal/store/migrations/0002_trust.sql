-- Trust: node certificates, API and join tokens, dashboard sessions and the
-- audit log. Same conventions as 0001 (portable SQL, TEXT ids, BIGINT unix
-- microseconds with 0 = never, INTEGER 0/1 booleans, '' for none).
-- The serial_pk placeholder below is expanded by the store's Dialect (see
-- internal/store/migrate.go).

-- What the control plane remembers of the certificate it signed for the
-- node's agent; '' and 0 until the agent enrolls.
ALTER TABLE nodes ADD COLUMN cert_serial    TEXT   NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN cert_not_after BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN cert_issued_at BIGINT NOT NULL DEFAULT 0;

-- secret_hash is the SHA-256 of the secret as lower-case hex: TEXT compares
-- and round-trips the same everywhere, unlike BLOB/BYTEA.
CREATE TABLE tokens (
	id           TEXT    NOT NULL PRIMARY KEY,
	name         TEXT    NOT NULL DEFAULT '',
	kind         TEXT    NOT NULL,
	role         TEXT    NOT NULL DEFAULT '',
	secret_hash  TEXT    NOT NULL,
	created_at   BIGINT  NOT NULL DEFAULT 0,
	expires_at   BIGINT  NOT NULL DEFAULT 0,
	revoked_at   BIGINT  NOT NULL DEFAULT 0,
	single_use   INTEGER NOT NULL DEFAULT 0 CHECK (single_use IN (0, 1)),
	last_used_at BIGINT  NOT NULL DEFAULT 0,
	use_count    BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX tokens_created_at ON tokens (created_at, id);

-- id is the SHA-256 (hex) of the cookie value, never the value itself.
CREATE TABLE sessions (
	id         TEXT   NOT NULL PRIMARY KEY,
	token_id   TEXT   NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
	csrf       TEXT   NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL DEFAULT 0,
	expires_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_token_id ON sessions (token_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Append-only. id is assigned by the database and only ever grows, so it
-- orders the log and serves as the paging cursor.
CREATE TABLE audit_log (
	id          {{serial_pk}},
	time        BIGINT NOT NULL DEFAULT 0,
	actor       TEXT   NOT NULL DEFAULT '',
	role        TEXT   NOT NULL DEFAULT '',
	procedure   TEXT   NOT NULL DEFAULT '',
	target      TEXT   NOT NULL DEFAULT '',
	result      TEXT   NOT NULL DEFAULT '',
	message     TEXT   NOT NULL DEFAULT '',
	remote_addr TEXT   NOT NULL DEFAULT ''
);
