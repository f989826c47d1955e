import { useState } from "react";
import { Anchor, Button, Stack, Text, TextInput } from "@mantine/core";
import { useCatalog } from "../../api/images";
import type { CatalogEntry } from "../../gen/quarry/v1/image_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { EmptyState } from "../../components/EmptyState";
import { ErrorAlert } from "../../components/ErrorAlert";
import { PageHeader } from "../../components/PageHeader";
import { useCan } from "../../lib/session";
import { matchesSearch } from "../../lib/table";
import { shortDigest } from "../../lib/format";
import { DownloadDialog, type DownloadPreset } from "../images/DownloadDialog";
import { CatalogStatusSection } from "./CatalogStatus";

export default function CatalogPage() {
  const catalog = useCatalog();
  const canOperate = useCan("operator");
  const [query, setQuery] = useState("");
  const [preset, setPreset] = useState<DownloadPreset | undefined>();
  const all = catalog.data?.entries ?? [];
  const rows = all.filter((c) => matchesSearch(query, [c.id, c.name, c.os?.distro, c.os?.version, c.os?.arch, c.url, c.defaultUser]));

  const columns: Column<CatalogEntry>[] = [
    { key: "name", header: "Name", sort: (c) => c.name, render: (c) => <Text fw={500} size="sm">{c.name}</Text> },
    { key: "id", header: "Id", sort: (c) => c.id, render: (c) => <code>{c.id}</code> },
    { key: "os", header: "OS", sort: (c) => c.os?.distro, render: (c) => c.os?.distro || "—" },
    { key: "version", header: "Version", sort: (c) => c.os?.version, render: (c) => c.os?.version || "—" },
    { key: "arch", header: "Arch", sort: (c) => c.os?.arch, render: (c) => c.os?.arch || "—" },
    { key: "user", header: "Default user", sort: (c) => c.defaultUser, render: (c) => c.defaultUser || "—" },
    { key: "format", header: "Format", render: (c) => c.format || "—" },
    {
      key: "source",
      header: "Source",
      render: (c) => (
        <Anchor href={c.url} target="_blank" rel="noreferrer" size="sm" title={c.url}>
          {new URL(c.url, "http://x").host || c.url}
        </Anchor>
      ),
    },
    {
      key: "checksum",
      header: "Checksum",
      render: (c) => (c.checksum ? <span title={c.checksum}>{shortDigest(c.checksum)}</span> : c.checksumUrl ? "checksum file" : "—"),
    },
  ];
  if (canOperate)
    columns.push({
      key: "actions",
      header: "Actions",
      render: (c) => (
        <Button size="compact-xs" variant="light" aria-label={`Download ${c.name} to pool…`} onClick={() => setPreset({ catalogId: c.id })}>
          Download to pool…
        </Button>
      ),
    });

  return (
    <>
      <PageHeader title="Catalog" />
      <Stack>
        <TextInput label="Search" placeholder="Name, OS, version…" value={query} onChange={(e) => setQuery(e.currentTarget.value)} maw={420} />
        <ErrorAlert error={catalog.error} title="Could not list the catalog" />
        {catalog.isSuccess && all.length === 0 ? (
          <EmptyState title="The catalog is empty">
            Start the server with <code>--catalog FILE</code> to add entries, or download any URL from the Images page.
          </EmptyState>
        ) : (
          <DataTable label="Catalog" rows={rows} columns={columns} rowKey={(c) => c.id} defaultSort={{ key: "name", dir: "asc" }} />
        )}
        <CatalogStatusSection />
      </Stack>
      <DownloadDialog opened={!!preset} preset={preset} onClose={() => setPreset(undefined)} />
    </>
  );
}
