-- Retry state of a job, kept so that a control-plane or agent restart
-- during a backoff neither forgets the attempts made nor retries early.
-- failures_in_row counts failed attempts since the job last got further
-- (the retry budget); retry_since is when that run of failures began;
-- next_attempt_at is when the job may be tried again (0: now).
ALTER TABLE jobs ADD COLUMN failures_in_row BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN retry_since BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
