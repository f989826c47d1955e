-- An upload created without a kind: its content, not only its name,
-- decides whether it ends in iso/ or images/. 0 for every other job.
ALTER TABLE jobs ADD COLUMN kind_from_content INTEGER NOT NULL DEFAULT 0;
