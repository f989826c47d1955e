import { useEffect, useMemo, useState } from "react";
import { Alert, Anchor, Button, Group, List, Select, Stack, Text, TextInput } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useDebouncedValue } from "@mantine/hooks";
import { Link, useNavigate, useParams } from "react-router-dom";
import { useImages, useScanISOs, useScanStatus, useDeleteImage } from "../../api/images";
import { usePools } from "../../api/pools";
import { ImageKind, ImageState, type Image, type PoolScanResult } from "../../gen/quarry/v1/image_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { StateBadge } from "../../components/StateBadge";
import { Bytes } from "../../components/Bytes";
import { RelativeTime } from "../../components/RelativeTime";
import { EmptyState } from "../../components/EmptyState";
import { ErrorAlert } from "../../components/ErrorAlert";
import { PageHeader } from "../../components/PageHeader";
import { FileDrop } from "../../components/FileDrop";
import { ConfirmDialog } from "../../components/ConfirmDialog";
import { Pager } from "../../components/Pager";
import { longestWord, usePageTokens } from "../../lib/pages";
import { useCan } from "../../lib/session";
import { enumLabel, shortDigest } from "../../lib/format";
import { searcher } from "../../lib/table";
import { enumOptions, imageKindName, imageSearchFields, imageStateName, osLabel } from "../../lib/labels";
import { errorMessage } from "../../lib/errors";
import { toDate } from "../../lib/time";
import { DownloadDialog } from "./DownloadDialog";
import { UploadDialog } from "./UploadDialog";
import { ImageDrawer } from "./ImageDrawer";

const searchImages = searcher(imageSearchFields);

export function scanMessage(discovered: number): string {
  return discovered > 0 ? `Discovered ${discovered} new ISO(s)` : "No new ISOs found";
}

/** Rows a page of the Images page holds: the table is virtualized, so more than the server's default. */
export const imagesPageSize = 500;

export default function ImagesPage() {
  const { id } = useParams();
  const navigate = useNavigate();
  const canOperate = useCan("operator");
  const pools = usePools();
  const [query, setQuery] = useState("");
  const [kind, setKind] = useState<string | null>(null);
  const [pool, setPool] = useState<string | null>(null);
  const [state, setState] = useState<string | null>(null);
  // The server filters the whole library (by the longest word typed, once
  // typing pauses); the page it sends is narrowed here at every keystroke
  // by every word.
  const [typed] = useDebouncedValue(longestWord(query), 250);
  const filter = { storagePoolId: pool ?? "", kind: Number(kind ?? 0), state: Number(state ?? 0), search: typed };
  const pages = usePageTokens(JSON.stringify(filter));
  const images = useImages({ ...filter, pageSize: imagesPageSize, pageToken: pages.token });
  const filtered = !!(pool || kind || state || query.trim());
  const [downloadOpen, setDownloadOpen] = useState(false);
  const [uploadOpen, setUploadOpen] = useState(false);
  const [dropped, setDropped] = useState<File | null>(null);
  const [skipped, setSkipped] = useState<PoolScanResult[]>([]);
  const [toDelete, setToDelete] = useState<Image | null>(null);
  const del = useDeleteImage();
  const scan = useScanISOs();
  const scanStatus = useScanStatus(scan.isPending);

  const all = images.data?.images ?? [];
  useEffect(() => {
    const t = setTimeout(() => searchImages.warm(all), 0);
    return () => clearTimeout(t);
  }, [all]);
  const rows = useMemo(() => {
    const matches = searchImages(query);
    return all.filter(
      (i) =>
        (!kind || String(i.kind) === kind) &&
        (!pool || i.storagePoolId === pool) &&
        (!state || String(i.state) === state) &&
        matches(i),
    );
  }, [all, kind, pool, state, query]);

  function runScan() {
    setSkipped([]);
    scan.mutate(
      { storagePoolId: pool ?? "" },
      {
        onSuccess: (res) => {
          notifications.show({ color: "green", title: "Scan finished", message: scanMessage(res.discoveredCount) });
          const sk = res.results.filter((r) => r.skipped);
          setSkipped(sk);
          if (sk.length)
            notifications.show({
              color: "yellow",
              title: `${sk.length} pool(s) skipped`,
              autoClose: 15_000,
              message: sk.map((r) => `${r.storagePoolName}: ${r.skipReason}`).join("\n"),
              style: { whiteSpace: "pre-line" },
            });
        },
        onError: (e) => notifications.show({ color: "red", title: "Scan failed", message: errorMessage(e) }),
      },
    );
  }

  const columns: Column<Image>[] = [
    {
      key: "name",
      header: "Name",
      sort: (i) => i.name,
      render: (i) => (
        <Anchor component={Link} to={`/images/${i.id}`} fw={500}>
          {i.name}
        </Anchor>
      ),
    },
    { key: "kind", header: "Kind", sort: (i) => i.kind, render: (i) => enumLabel(imageKindName(i.kind)) },
    { key: "pool", header: "Pool", sort: (i) => i.storagePoolName, render: (i) => i.storagePoolName },
    {
      key: "state",
      header: "State",
      sort: (i) => imageStateName(i.state),
      render: (i) => (
        <span title={i.stateReason || undefined}>
          <StateBadge name={imageStateName(i.state)} />
        </span>
      ),
    },
    { key: "size", header: "Size", sort: (i) => i.sizeBytes, render: (i) => <Bytes value={i.sizeBytes} /> },
    {
      key: "vsize",
      header: "Virtual size",
      sort: (i) => i.virtualSizeBytes,
      render: (i) => <Bytes value={i.virtualSizeBytes} />,
    },
    { key: "format", header: "Format", sort: (i) => i.format, render: (i) => i.format || "—" },
    { key: "os", header: "OS", sort: (i) => osLabel(i.os), render: (i) => osLabel(i.os) || "—" },
    { key: "label", header: "Label", sort: (i) => i.volumeLabel, render: (i) => i.volumeLabel || "—" },
    {
      key: "digest",
      header: "Checksum",
      render: (i) => <span title={i.digest || undefined}>{shortDigest(i.digest)}</span>,
    },
    { key: "verified", header: "Verified", sort: (i) => i.verified, render: (i) => (i.verified ? "Yes" : "No") },
    {
      key: "created",
      header: "Created",
      sort: (i) => toDate(i.createdAt)?.getTime(),
      render: (i) => <RelativeTime value={i.createdAt} />,
    },
  ];
  if (canOperate)
    columns.push({
      key: "actions",
      header: "Actions",
      render: (i) => (
        <Button size="compact-xs" variant="subtle" color="red" aria-label={`Delete ${i.name}`} onClick={() => setToDelete(i)}>
          Delete
        </Button>
      ),
    });

  function dropFiles(files: File[]) {
    if (files.length > 1) {
      notifications.show({ color: "red", title: "One file at a time", message: `${files.length} files were dropped; each upload is one image. Drop them one by one.` });
      return;
    }
    setDropped(files[0]);
    setUploadOpen(true);
  }

  const running = scanStatus.data?.running ?? [];
  return (
    <>
      <PageHeader title="Images">
        {canOperate && (
          <>
            <Button variant="default" onClick={runScan} loading={scan.isPending} loaderProps={{ type: "dots" }}>
              Scan ISOs
            </Button>
            <Button variant="default" onClick={() => setUploadOpen(true)}>
              Upload…
            </Button>
            <Button onClick={() => setDownloadOpen(true)}>Download…</Button>
          </>
        )}
      </PageHeader>
      <Stack>
        {scan.isPending && (
          <Alert color="blue" title="Scanning" role="status">
            {running.length === 0
              ? `Scanning ${pool ? "the pool" : "every pool"}…`
              : running.map((r) => (
                  <div key={r.storagePoolId}>
                    {r.storagePoolName} on {r.nodeName}: {r.filesSeen} file(s) seen
                  </div>
                ))}
          </Alert>
        )}
        {skipped.length > 0 && (
          <Alert color="yellow" title="Pools skipped by the last scan" withCloseButton onClose={() => setSkipped([])}>
            <List size="sm">
              {skipped.map((r) => (
                <List.Item key={r.storagePoolId}>
                  <b>{r.storagePoolName}</b>: {r.skipReason}
                </List.Item>
              ))}
            </List>
          </Alert>
        )}
        <Group gap="sm" align="flex-end" wrap="wrap">
          <TextInput
            label="Search"
            placeholder="Name, label, OS, digest…"
            value={query}
            onChange={(e) => setQuery(e.currentTarget.value)}
            style={{ flex: "1 1 220px" }}
          />
          <Select label="Kind" placeholder="All kinds" clearable data={enumOptions(ImageKind)} value={kind} onChange={setKind} w={150} />
          <Select
            label="Pool"
            placeholder="All pools"
            clearable
            data={(pools.data?.pools ?? []).map((p) => ({ value: p.id, label: p.name }))}
            value={pool}
            onChange={setPool}
            w={160}
          />
          <Select label="State" placeholder="All states" clearable data={enumOptions(ImageState)} value={state} onChange={setState} w={150} />
        </Group>
        <ErrorAlert error={images.error} title="Could not list images" />
        <Text size="sm" c="dimmed" aria-live="polite" data-testid="image-count">
          Showing {rows.length} of {all.length} images
        </Text>
        {images.isSuccess && all.length === 0 && !filtered && pages.page === 1 ? (
          <EmptyState title="No images yet">
            Copy an ISO into a pool's <code>iso/</code> directory (it shows up here by itself), press <b>Scan ISOs</b>,
            download a cloud image from the <Anchor component={Link} to="/catalog">catalog</Anchor>, or drop a file on
            this page to upload it.
          </EmptyState>
        ) : images.isSuccess && rows.length === 0 ? (
          <EmptyState title="No image matches">Clear the search or the filters.</EmptyState>
        ) : (
          <DataTable label="Images" rows={rows} sortBase={all} columns={columns} rowKey={(i) => i.id} defaultSort={{ key: "name", dir: "asc" }} rowLabel={(i) => i.name} />
        )}
        <Pager label="Image pages" pages={pages} nextToken={images.data?.nextPageToken}>
          up to {imagesPageSize} images a page
        </Pager>
      </Stack>
      <DownloadDialog opened={downloadOpen} onClose={() => setDownloadOpen(false)} />
      <UploadDialog opened={uploadOpen} onClose={() => setUploadOpen(false)} dropped={dropped} />
      {canOperate ? (
        <FileDrop title="Drop to upload" hint="One file: an ISO or a disk image. You choose its pool next." onDrop={dropFiles} />
      ) : (
        <FileDrop title="Uploads need the operator role" hint="Sign in with an operator's or an admin's token to upload." onDrop={() => {}} />
      )}
      <ImageDrawer id={id} onClose={() => navigate("/images")} onDelete={setToDelete} />
      <ConfirmDialog
        opened={!!toDelete}
        title="Delete image"
        confirmLabel="Delete image"
        loading={del.isPending}
        error={del.error}
        onClose={() => {
          setToDelete(null);
          del.reset();
        }}
        onConfirm={() =>
          toDelete &&
          del.mutate(
            { id: toDelete.id },
            {
              onSuccess: () => {
                notifications.show({ color: "green", message: `Deleted ${toDelete.path || toDelete.name} from ${toDelete.storagePoolName}` });
                if (id === toDelete.id) navigate("/images");
                setToDelete(null);
              },
            },
          )
        }
      >
        Delete <b>{toDelete?.path || toDelete?.name}</b> from pool <b>{toDelete?.storagePoolName}</b>? The file is removed
        from the pool and the image from the library.
      </ConfirmDialog>
    </>
  );
}
