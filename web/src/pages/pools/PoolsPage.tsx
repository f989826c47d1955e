import { useEffect, useState } from "react";
import { Anchor, Button, Checkbox, Drawer, Group, Modal, MultiSelect, Stack, Text, TextInput, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link, useNavigate, useParams } from "react-router-dom";
import { useCreatePool, useDeletePool, usePool, usePools, useUpdatePool, mountedOn } from "../../api/pools";
import { everyNodeRequest, useNodes } from "../../api/nodes";
import type { StoragePool } from "../../gen/quarry/v1/pool_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { RelativeTime } from "../../components/RelativeTime";
import { EmptyState } from "../../components/EmptyState";
import { ErrorAlert } from "../../components/ErrorAlert";
import { PageHeader } from "../../components/PageHeader";
import { ConfirmDialog } from "../../components/ConfirmDialog";
import { Fields } from "../../components/Fields";
import { useCan } from "../../lib/session";
import { formatBytes } from "../../lib/format";
import { matchesSearch } from "../../lib/table";
import { toDate } from "../../lib/time";
import { MountReasons, PoolMounts } from "../nodes/PoolMounts";

export function poolSpace(p: StoragePool): string {
  const m = p.nodes.find((n) => n.mounted);
  return m ? `${formatBytes(m.freeBytes)} free of ${formatBytes(m.totalBytes)}` : "—";
}

export default function PoolsPage() {
  const { id } = useParams();
  const navigate = useNavigate();
  const pools = usePools();
  const nodes = useNodes(everyNodeRequest);
  const isAdmin = useCan("admin");
  const [query, setQuery] = useState("");
  const [editing, setEditing] = useState<StoragePool | "new" | null>(null);
  const [toDelete, setToDelete] = useState<StoragePool | null>(null);
  const del = useDeletePool();
  const nodeName = new Map((nodes.data?.nodes ?? []).map((n) => [n.id, n.name]));

  const all = pools.data?.pools ?? [];
  const rows = all.filter((p) => matchesSearch(query, [p.name, p.path, ...p.nodes.map((n) => n.nodeName)]));
  const columns: Column<StoragePool>[] = [
    {
      key: "name",
      header: "Name",
      sort: (p) => p.name,
      render: (p) => (
        <Anchor component={Link} to={`/pools/${p.id}`} fw={500}>
          {p.name}
        </Anchor>
      ),
    },
    { key: "path", header: "Path", sort: (p) => p.path, render: (p) => <code>{p.path}</code> },
    { key: "shared", header: "Shared", sort: (p) => p.shared, render: (p) => (p.shared ? "Yes" : "No") },
    {
      key: "assigned",
      header: "Assigned nodes",
      render: (p) => p.assignedNodeIds.map((i) => nodeName.get(i) ?? i).join(", ") || "—",
    },
    { key: "mounted", header: "Mounted on", sort: (p) => mountedOn(p).length, render: (p) => <PoolMounts mounts={p.nodes} by="node" /> },
    { key: "why", header: "Not mounted because", render: (p) => <MountReasons mounts={p.nodes} by="node" /> },
    { key: "space", header: "Free / total", render: (p) => poolSpace(p) },
    { key: "created", header: "Created", sort: (p) => toDate(p.createdAt)?.getTime(), render: (p) => <RelativeTime value={p.createdAt} /> },
  ];
  if (isAdmin)
    columns.push({
      key: "actions",
      header: "Actions",
      render: (p) => (
        <Group gap={4} wrap="nowrap">
          <Button size="compact-xs" variant="subtle" aria-label={`Edit pool ${p.name}`} onClick={() => setEditing(p)}>
            Edit
          </Button>
          <Button size="compact-xs" variant="subtle" color="red" aria-label={`Delete pool ${p.name}`} onClick={() => setToDelete(p)}>
            Delete
          </Button>
        </Group>
      ),
    });

  return (
    <>
      <PageHeader title="Pools">{isAdmin && <Button onClick={() => setEditing("new")}>Create pool…</Button>}</PageHeader>
      <Stack>
        <TextInput label="Search" placeholder="Name, path, node…" value={query} onChange={(e) => setQuery(e.currentTarget.value)} maw={420} />
        <ErrorAlert error={pools.error} title="Could not list pools" />
        {pools.isSuccess && all.length === 0 ? (
          <EmptyState title="No pools yet">
            A pool is a directory on the nodes where images live. {isAdmin ? "Create one with Create pool…" : "An admin creates pools."}
          </EmptyState>
        ) : (
          <DataTable label="Pools" rows={rows} columns={columns} rowKey={(p) => p.id} defaultSort={{ key: "name", dir: "asc" }} />
        )}
      </Stack>
      <PoolDrawer id={id} onClose={() => navigate("/pools")} />
      <PoolDialog pool={editing} onClose={() => setEditing(null)} />
      <ConfirmDialog
        opened={!!toDelete}
        title="Delete pool"
        confirmLabel="Delete pool"
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
                notifications.show({ message: `Deleted pool ${toDelete.name}` });
                setToDelete(null);
              },
            },
          )
        }
      >
        Delete pool <b>{toDelete?.name}</b> ({toDelete?.path})? The server refuses while the pool holds images.
      </ConfirmDialog>
    </>
  );
}

function PoolDrawer({ id, onClose }: { id?: string; onClose: () => void }) {
  const q = usePool(id);
  const p = q.data?.pool;
  return (
    <Drawer opened={!!id} onClose={onClose} position="right" size="lg" title={p ? `Pool ${p.name}` : "Pool"}>
      <ErrorAlert error={q.error} title="Could not load the pool" />
      {p && (
        <Stack>
          <Fields
            label="Pool details"
            rows={[
              ["Path", <code>{p.path}</code>],
              ["Type", p.type],
              ["Shared", p.shared ? "Yes" : "No"],
              ["Space", poolSpace(p)],
              ["Created", <RelativeTime value={p.createdAt} />],
              ["Id", <code>{p.id}</code>],
            ]}
          />
          <Title order={3} size="h5">
            Nodes
          </Title>
          {p.nodes.map((m) => (
            <Text size="sm" key={m.nodeId}>
              <b>{m.nodeName}</b>
              {m.assigned ? " (assigned)" : ""}: {m.mounted ? `mounted, ${formatBytes(m.freeBytes)} free of ${formatBytes(m.totalBytes)}` : `not mounted — ${m.reason || "no report yet"}`}
            </Text>
          ))}
          <Title order={3} size="h5">
            How work would pick a node now
          </Title>
          {q.data!.candidates.map((c) => (
            <Text size="sm" key={c.nodeId} c={c.kept ? undefined : "dimmed"}>
              {c.kept ? "✓" : "✕"} <b>{c.nodeName}</b>: {c.reason}
            </Text>
          ))}
        </Stack>
      )}
    </Drawer>
  );
}

function PoolDialog({ pool, onClose }: { pool: StoragePool | "new" | null; onClose: () => void }) {
  const nodes = useNodes(everyNodeRequest);
  const create = useCreatePool();
  const update = useUpdatePool();
  const isNew = pool === "new";
  const [name, setName] = useState("");
  const [path, setPath] = useState("");
  const [shared, setShared] = useState(false);
  const [assigned, setAssigned] = useState<string[]>([]);
  const [errors, setErrors] = useState<Record<string, string>>({});
  useEffect(() => {
    if (!pool) return;
    create.reset();
    update.reset();
    setErrors({});
    if (pool === "new") {
      setName("");
      setPath("");
      setShared(false);
      setAssigned([]);
    } else {
      setName(pool.name);
      setPath(pool.path);
      setShared(pool.shared);
      setAssigned(pool.assignedNodeIds);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [pool]);

  function submit(e: React.FormEvent) {
    e.preventDefault();
    const errs: Record<string, string> = {};
    if (!name.trim()) errs.name = "Give the pool a name.";
    if (isNew && !path.startsWith("/")) errs.path = "An absolute path on the nodes, such as /srv/images.";
    setErrors(errs);
    if (Object.keys(errs).length) return;
    const done = () => {
      notifications.show({ message: isNew ? `Created pool ${name}` : `Saved pool ${name}` });
      onClose();
    };
    if (isNew) create.mutate({ name: name.trim(), path: path.trim(), shared, assignedNodeIds: assigned }, { onSuccess: done });
    else if (pool) update.mutate({ id: pool.id, name: name.trim(), shared, assignedNodeIds: { ids: assigned } }, { onSuccess: done });
  }
  return (
    <Modal opened={!!pool} onClose={onClose} title={isNew ? "Create a pool" : "Edit pool"}>
      <form onSubmit={submit} noValidate>
        <Stack>
          <TextInput label="Name" value={name} onChange={(e) => setName(e.currentTarget.value)} error={errors.name} />
          <TextInput
            label="Path"
            description={isNew ? "Absolute directory on the nodes." : "The path is the pool's identity and cannot change."}
            value={path}
            disabled={!isNew}
            onChange={(e) => setPath(e.currentTarget.value)}
            error={errors.path}
          />
          <Checkbox label="Shared (the same filesystem is mounted on several nodes)" checked={shared} onChange={(e) => setShared(e.currentTarget.checked)} />
          <MultiSelect
            label="Assigned nodes"
            description="In preference order."
            data={(nodes.data?.nodes ?? []).map((n) => ({ value: n.id, label: n.name }))}
            value={assigned}
            onChange={setAssigned}
            searchable
          />
          <ErrorAlert error={create.error ?? update.error} />
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" loading={create.isPending || update.isPending}>
              {isNew ? "Create pool" : "Save"}
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
