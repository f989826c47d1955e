-- Indexes for the paged, filtered lists (ListImages, ListJobs, ListNodes,
-- ListAudit). Each list is read in one unique order, a page at a time
-- after a keyset cursor, so a filter is served best by an index on the
-- filtered column followed by that order: the database then reads exactly
-- the page. Orders: images (pool_id, rel_path), jobs (created_at, id)
-- descending, nodes (name), audit (id) descending. Unfiltered lists and
-- the pool filter of images use the indexes of 0001, 0003 and 0004, and
-- the audit log its primary key. Text search (a substring, in any column)
-- can use no B-tree index: it reads rows in the list's order until a page
-- is full.
CREATE INDEX images_kind_order ON images (kind, pool_id, rel_path);
CREATE INDEX images_state_order ON images (state, pool_id, rel_path);
CREATE INDEX jobs_state_order ON jobs (state, created_at, id);
CREATE INDEX jobs_pool_order ON jobs (pool_id, created_at, id);
CREATE INDEX jobs_kind_order ON jobs (kind, created_at, id);
CREATE INDEX jobs_node_order ON jobs (node_id, created_at, id);
CREATE INDEX jobs_image_order ON jobs (image_id, created_at, id);
CREATE INDEX nodes_state_order ON nodes (state, name);
CREATE INDEX audit_log_result_order ON audit_log (result, id);
-- The two indexes of 0004 that the new ones begin with would only cost
-- writes now.
DROP INDEX jobs_state;
DROP INDEX jobs_pool_id;
