import { useEffect, useState } from "react";
import { Anchor, Button, Group, Modal, SegmentedControl, Select, Stack, Text, TextInput } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link } from "react-router-dom";
import { useCatalog, useDownloadImage } from "../../api/images";
import { usePoolChoice } from "../../api/pools";
import { ErrorAlert } from "../../components/ErrorAlert";

export type DownloadPreset = { catalogId?: string; url?: string };

/** Pure validation of the form, shared with tests. */
export function validateDownload(f: {
  source: "catalog" | "url";
  catalogId: string;
  url: string;
  poolId: string;
  checksum: string;
  checksumUrl?: string;
  name: string;
}): Record<string, string> {
  const e: Record<string, string> = {};
  if (f.source === "catalog" && !f.catalogId) e.catalogId = "Choose a catalog entry.";
  if (f.source === "url") {
    let u: URL | undefined;
    try {
      u = new URL(f.url.trim());
    } catch {
      /* below */
    }
    if (!u || (u.protocol !== "http:" && u.protocol !== "https:")) e.url = "Enter an http:// or https:// URL.";
  }
  if (!f.poolId) e.poolId = "Choose a pool.";
  const c = f.checksum.trim();
  if (c && !/^(sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128})$/.test(c))
    e.checksum = 'Use "sha256:<64 hex digits>" or "sha512:<128 hex digits>", or leave empty.';
  const cu = (f.checksumUrl ?? "").trim();
  if (cu) {
    let u: URL | undefined;
    try {
      u = new URL(cu);
    } catch {
      /* below */
    }
    if (!u || (u.protocol !== "http:" && u.protocol !== "https:"))
      e.checksumUrl = "Enter the http:// or https:// URL of a checksum file (SHA256SUMS), or leave empty.";
    else if (c) e.checksumUrl = "Give either a checksum or a checksum file, not both.";
  }
  if (f.name && !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(f.name.trim()))
    e.name = "Letters, digits, dot, dash and underscore; start with a letter or digit.";
  return e;
}

export function DownloadDialog({ opened, onClose, preset }: { opened: boolean; onClose: () => void; preset?: DownloadPreset }) {
  const catalog = useCatalog();
  const download = useDownloadImage();
  const [source, setSource] = useState<"catalog" | "url">("catalog");
  const [catalogId, setCatalogId] = useState("");
  const [url, setUrl] = useState("");
  const { options: poolOptions, poolId, setPoolId, none: noPool } = usePoolChoice(opened);
  const [checksum, setChecksum] = useState("");
  const [checksumUrl, setChecksumUrl] = useState("");
  const [name, setName] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});

  useEffect(() => {
    if (!opened) return;
    download.reset();
    setErrors({});
    setSource(preset?.url ? "url" : preset?.catalogId ? "catalog" : "url");
    setCatalogId(preset?.catalogId ?? "");
    setUrl(preset?.url ?? "");
    setChecksum("");
    setChecksumUrl("");
    setName("");
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [opened, preset?.catalogId, preset?.url]);


  function submit(e: React.FormEvent) {
    e.preventDefault();
    const errs = validateDownload({ source, catalogId, url, poolId, checksum, checksumUrl, name });
    setErrors(errs);
    if (Object.keys(errs).length) return;
    download.mutate(
      {
        catalogId: source === "catalog" ? catalogId : "",
        url: source === "url" ? url.trim() : "",
        storagePoolId: poolId,
        checksum: checksum.trim(),
        checksumUrl: checksumUrl.trim(),
        name: name.trim(),
      },
      {
        onSuccess: (res) => {
          const img = res.image;
          notifications.show({
            color: "green",
            title: res.existing ? "Already there" : "Download started",
            message: (
              <>
                {img?.name} into {img?.storagePoolName}.{" "}
                {res.job ? (
                  <Anchor component={Link} to={`/jobs/${res.job.id}`} size="sm">
                    Follow the job
                  </Anchor>
                ) : (
                  img && (
                    <Anchor component={Link} to={`/images/${img.id}`} size="sm">
                      Open the image
                    </Anchor>
                  )
                )}
              </>
            ),
          });
          onClose();
        },
      },
    );
  }

  const entries = catalog.data?.entries ?? [];
  return (
    <Modal opened={opened} onClose={onClose} title="Download an image" size="lg">
      <form onSubmit={submit} noValidate>
        <Stack>
          <SegmentedControl
            aria-label="Source"
            value={source}
            onChange={(v) => setSource(v as "catalog" | "url")}
            data={[
              { value: "catalog", label: "Catalog entry" },
              { value: "url", label: "URL" },
            ]}
          />
          {source === "catalog" ? (
            <Select
              label="Catalog entry"
              placeholder="Choose an image"
              searchable
              data={entries.map((c) => ({ value: c.id, label: `${c.name} (${c.id})` }))}
              value={catalogId || null}
              onChange={(v) => setCatalogId(v ?? "")}
              error={errors.catalogId}
            />
          ) : (
            <TextInput
              label="URL"
              placeholder="https://cloud-images.ubuntu.com/…/noble-server-cloudimg-amd64.img"
              value={url}
              onChange={(e) => setUrl(e.currentTarget.value)}
              error={errors.url}
            />
          )}
          <Select
            label="Pool"
            description="Pools no node mounts cannot take a download."
            data={poolOptions}
            value={poolId || null}
            onChange={(v) => setPoolId(v ?? "")}
            error={errors.poolId}
            allowDeselect={false}
          />
          <TextInput
            label="Name"
            description="Optional: default is the catalog id or the URL's file name."
            value={name}
            onChange={(e) => setName(e.currentTarget.value)}
            error={errors.name}
          />
          <TextInput
            label="Checksum"
            description="Optional: sha256:<hex> or sha512:<hex>; overrides the catalog's."
            value={checksum}
            onChange={(e) => setChecksum(e.currentTarget.value)}
            error={errors.checksum}
          />
          <TextInput
            label="Checksum file URL"
            description="Optional, instead of a checksum: a SHA256SUMS-style file the image's file name is looked up in."
            value={checksumUrl}
            onChange={(e) => setChecksumUrl(e.currentTarget.value)}
            error={errors.checksumUrl}
          />
          <ErrorAlert error={download.error} />
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" loading={download.isPending}>
              Start download
            </Button>
          </Group>
          {noPool && (
            <Text size="sm" c="red">
              No pool is mounted on any node: check the Pools page.
            </Text>
          )}
        </Stack>
      </form>
    </Modal>
  );
}
