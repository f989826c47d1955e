-- Whether the image's digest was checked against an expected one (a
-- checksum given, from the catalog or a checksum file), as opposed to only
-- computed. 0 for every image recorded before, which nobody can vouch for.
ALTER TABLE images ADD COLUMN verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1));
