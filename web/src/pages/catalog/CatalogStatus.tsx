import { useEffect, useState } from "react";
import { Button, Stack, Text, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useCatalogStatus, useRefreshCatalog } from "../../api/images";
import type { CatalogStatus } from "../../gen/quarry/v1/image_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { ErrorAlert } from "../../components/ErrorAlert";
import { RelativeTime } from "../../components/RelativeTime";
import { formatDuration } from "../../lib/format";
import { errorMessage } from "../../lib/errors";
import { useCan } from "../../lib/session";

/** What the last check or refresh of an entry in a pool found. */
function statusText(s: CatalogStatus): string {
  if (s.jobId) return `Downloading a new build (job ${s.jobId})`;
  return s.error || s.result || "Not checked yet";
}

/**
 * The catalog images present in pools: per entry and pool, the current
 * build and its date, the builds kept, the last check for a new build and
 * the next, and a button that checks now.
 */
export function CatalogStatusSection() {
  // A check asked for here is followed closely for a minute: checks
  // write no events.
  const [watchUntil, setWatchUntil] = useState(0);
  useEffect(() => {
    if (!watchUntil) return;
    const t = setTimeout(() => setWatchUntil(0), Math.max(0, watchUntil - Date.now()));
    return () => clearTimeout(t);
  }, [watchUntil]);
  const status = useCatalogStatus(watchUntil > 0);
  const refresh = useRefreshCatalog();
  const canOperate = useCan("operator");
  const rows = status.data?.statuses ?? [];
  const interval = Number(status.data?.interval?.seconds ?? 0);
  const keep = status.data?.keep ?? 0;

  const check = (catalogId: string) =>
    refresh.mutate(
      { catalogId },
      {
        onSuccess: () => {
          setWatchUntil(Date.now() + 60_000);
          notifications.show({ message: `Checking ${catalogId} for a new build` });
        },
        onError: (e) => notifications.show({ color: "red", title: "Could not check", message: errorMessage(e) }),
      },
    );

  const columns: Column<CatalogStatus>[] = [
    { key: "entry", header: "Entry", sort: (s) => s.catalogId, render: (s) => <code>{s.catalogId}</code> },
    { key: "pool", header: "Pool", sort: (s) => s.storagePoolName, render: (s) => s.storagePoolName },
    { key: "current", header: "Current image", sort: (s) => s.currentImageName, render: (s) => s.currentImageName || "—" },
    { key: "build", header: "Build", sort: (s) => s.currentBuild, render: (s) => s.currentBuild || "—" },
    { key: "built", header: "Built", render: (s) => <RelativeTime value={s.currentBuiltAt} /> },
    { key: "kept", header: "Builds kept", render: (s) => s.builds.length },
    { key: "last", header: "Last check", render: (s) => <RelativeTime value={s.lastCheckAt} /> },
    { key: "next", header: "Next check", render: (s) => (s.nextCheckAt ? <RelativeTime value={s.nextCheckAt} /> : "when asked") },
    {
      key: "status",
      header: "Status",
      render: (s) => (
        <Text size="sm" c={s.error ? "red" : undefined} title={statusText(s)} lineClamp={2}>
          {statusText(s)}
        </Text>
      ),
    },
  ];
  if (canOperate)
    columns.push({
      key: "actions",
      header: "Actions",
      render: (s) => (
        <Button size="compact-xs" variant="light" aria-label={`Check ${s.catalogId} for a new build now`} loading={refresh.isPending} onClick={() => check(s.catalogId)}>
          Check now
        </Button>
      ),
    });

  return (
    <Stack gap="xs">
      <Title order={2} size="h4">
        In pools
      </Title>
      {status.isSuccess && (
        <Text size="sm" c="dimmed">
          {interval > 0
            ? `Upstream is checked every ${formatDuration(interval)} for new builds; ${keep} builds are kept per pool.`
            : `Periodic checks are off (quarry server --catalog-refresh); ${keep} builds are kept per pool.`}
        </Text>
      )}
      <ErrorAlert error={status.error} title="Could not read the catalog status" />
      {status.isSuccess && rows.length === 0 ? (
        <Text size="sm">No catalog image is in a pool yet: download one to have it kept up to date.</Text>
      ) : (
        rows.length > 0 && (
          <DataTable label="Catalog images in pools" rows={rows} columns={columns} rowKey={(s) => `${s.catalogId}/${s.storagePoolId}`} defaultSort={{ key: "entry", dir: "asc" }} />
        )
      )}
    </Stack>
  );
}
