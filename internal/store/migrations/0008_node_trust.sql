-- Node-bound join tokens and pinned agent certificates.
--
-- A join token with a node name enrolls only that node ('' : any).
ALTER TABLE tokens ADD COLUMN node_name TEXT NOT NULL DEFAULT '';
-- The SHA-256 (hex) of the public key of the certificate the node's agent
-- holds; with cert_serial, the one certificate the node link accepts. ''
-- for certificates recorded before, which are pinned by serial alone.
ALTER TABLE nodes ADD COLUMN cert_key_hash TEXT NOT NULL DEFAULT '';
