-- A check that finds a node's pools as its last check wrote them leaves
-- their rows alone, however old: the node's row says when a check last
-- found them so (mounts_seen_at), and a mount was last checked at the later
-- of that and its row's checked_at. Before, each row was rewritten once a
-- minute to keep its checked_at recent, and the nodes whose rows were written
-- together (a shared pool's) rewrote them together a minute later. The old
-- column held the oldest checked_at of the node's rows: no later than when
-- a check last found them, so it serves until the node's next check.
ALTER TABLE nodes RENAME COLUMN mounts_checked_at TO mounts_seen_at;
