-- The token that created a job, for uploads: only it (or an admin) may
-- write to or end the upload. Empty for every other job.
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
