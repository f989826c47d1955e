-- The disk size a VM sees, read from the image's header (qcow2, vmdk, vhdx);
-- 0 when the format does not say.
ALTER TABLE images ADD COLUMN virtual_size BIGINT NOT NULL DEFAULT 0;
