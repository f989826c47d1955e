-- The library's counts by pool, kind and state (CountImages, read at every
-- metrics scrape) are read from one index that holds all three: with the
-- index of 0003 on (pool_id, kind) alone, every image's row was read as
-- well, 0.3 s of a control plane's CPU per scrape at 100,000 images
-- (75 ms against 12 ms in the sqlite3 shell). The new index begins with the
-- old one's columns and serves what it served.
CREATE INDEX images_pool_kind_state ON images (pool_id, kind, state);
DROP INDEX images_pool_id_kind;
