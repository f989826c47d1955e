-- Jobs: the durable record of long work (downloads) and its history. Same
-- conventions as 0001 (portable SQL, TEXT ids, BIGINT unix microseconds
-- with 0 = never, INTEGER 0/1 booleans, '' for none).
-- The serial_pk placeholder below is expanded by the store's Dialect (see
-- internal/store/migrate.go).

-- image_id is deliberately not a foreign key: a job is history and outlives
-- the image it produced. No ON DELETE on pool_id: deleting a pool with a
-- job must fail, so a download cannot be orphaned; the store refuses while
-- a job is active and removes the pool's finished jobs itself.
-- fence grows every time ownership of the job moves (see store.Job).
CREATE TABLE jobs (
	id               TEXT             NOT NULL PRIMARY KEY,
	kind             TEXT             NOT NULL DEFAULT '',
	state            TEXT             NOT NULL DEFAULT '',
	image_id         TEXT             NOT NULL DEFAULT '',
	pool_id          TEXT             NOT NULL REFERENCES pools (id),
	source           TEXT             NOT NULL DEFAULT '',
	url              TEXT             NOT NULL DEFAULT '',
	checksum         TEXT             NOT NULL DEFAULT '',
	checksum_url     TEXT             NOT NULL DEFAULT '',
	node_id          TEXT             NOT NULL DEFAULT '',
	fence            BIGINT           NOT NULL DEFAULT 0,
	phase            TEXT             NOT NULL DEFAULT '',
	bytes_done       BIGINT           NOT NULL DEFAULT 0,
	bytes_total      BIGINT           NOT NULL DEFAULT 0,
	bytes_per_sec    DOUBLE PRECISION NOT NULL DEFAULT 0,
	attempts         BIGINT           NOT NULL DEFAULT 0,
	message          TEXT             NOT NULL DEFAULT '',
	cancel_requested INTEGER          NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
	created_at       BIGINT           NOT NULL DEFAULT 0,
	updated_at       BIGINT           NOT NULL DEFAULT 0,
	started_at       BIGINT           NOT NULL DEFAULT 0,
	finished_at      BIGINT           NOT NULL DEFAULT 0
);
-- At most one active (QUEUED or RUNNING) job per (source, pool): the
-- guarantee behind CreateDownload's dedupe when control-plane replicas race.
-- Partial indexes exist in SQLite (3.8+) and PostgreSQL alike.
CREATE UNIQUE INDEX jobs_active_source_pool ON jobs (source, pool_id) WHERE state IN ('QUEUED', 'RUNNING');
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_pool_id ON jobs (pool_id);
CREATE INDEX jobs_created_at ON jobs (created_at, id);

-- Append-only per job; id is assigned by the database and orders a job's
-- history. Events go with their job.
CREATE TABLE job_events (
	id      {{serial_pk}},
	job_id  TEXT   NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	time    BIGINT NOT NULL DEFAULT 0,
	message TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX job_events_job_id ON job_events (job_id, id);
