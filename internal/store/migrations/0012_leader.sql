-- Several control-plane replicas on one database.
--
-- leader_lease: one row per lease (one so far, 'leader'). The replica that
-- holds it runs the background controllers; epoch grows by one at every
-- takeover and fences the writes of earlier holders. expires_at is unix
-- microseconds on the database's clock, so replicas' clocks do not matter.
CREATE TABLE leader_lease (
	name       TEXT   NOT NULL PRIMARY KEY,
	holder     TEXT   NOT NULL,
	epoch      BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);

-- secrets: what every replica must share, encrypted by the replicas with
-- the key in --secret-key-file (the CA). value is base64 text.
CREATE TABLE secrets (
	name       TEXT   NOT NULL PRIMARY KEY,
	value      TEXT   NOT NULL,
	created_at BIGINT NOT NULL
);

-- leader_requests: work a follower asks the leader to do for an API call
-- (an ISO scan) and the answer it waits for.
CREATE TABLE leader_requests (
	id          TEXT   NOT NULL PRIMARY KEY,
	kind        TEXT   NOT NULL,
	request     TEXT   NOT NULL,
	response    TEXT   NOT NULL DEFAULT '',
	answered    INTEGER NOT NULL DEFAULT 0,
	created_at  BIGINT NOT NULL
);
