import { useState } from "react";
import { Anchor, Button, Group, Modal, Select, Stack, Text, TextInput } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useDebouncedValue } from "@mantine/hooks";
import { Link } from "react-router-dom";
import { useDeleteNode, useNodes, useRegisterNode } from "../../api/nodes";
import { NodeState, type Node } from "../../gen/quarry/v1/node_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { StateBadge } from "../../components/StateBadge";
import { RelativeTime } from "../../components/RelativeTime";
import { EmptyState } from "../../components/EmptyState";
import { ErrorAlert } from "../../components/ErrorAlert";
import { PageHeader } from "../../components/PageHeader";
import { ConfirmDialog } from "../../components/ConfirmDialog";
import { Pager } from "../../components/Pager";
import { longestWord, usePageTokens } from "../../lib/pages";
import { useCan } from "../../lib/session";
import { formatBytes } from "../../lib/format";
import { matchesSearch } from "../../lib/table";
import { enumOptions, nodeStateName } from "../../lib/labels";
import { toDate } from "../../lib/time";
import { MountReasons, PoolMounts } from "./PoolMounts";

export function isNotEnrolled(n: Node): boolean {
  return n.state !== NodeState.READY && n.stateReason.startsWith("not enrolled");
}

export function freeSpace(n: Node): string {
  const m = n.pools.filter((p) => p.mounted);
  if (!m.length) return "—";
  return m.map((p) => `${p.storagePoolName}: ${formatBytes(p.freeBytes)}`).join(", ");
}

const nodesPageSize = 200;

export default function NodesPage() {
  const isAdmin = useCan("admin");
  const [query, setQuery] = useState("");
  const [state, setState] = useState<string | null>(null);
  // As on the Images page: the server filters by the longest word once
  // typing pauses, the page is narrowed here by every word at once.
  const [typed] = useDebouncedValue(longestWord(query), 250);
  const filter = { state: Number(state ?? 0), search: typed };
  const pages = usePageTokens(JSON.stringify(filter));
  const nodes = useNodes({ ...filter, pageSize: nodesPageSize, pageToken: pages.token });
  const filtered = !!(state || query.trim());
  const [registerOpen, setRegisterOpen] = useState(false);
  const [toDelete, setToDelete] = useState<Node | null>(null);
  const del = useDeleteNode();

  const all = nodes.data?.nodes ?? [];
  const rows = all.filter(
    (n) => (!state || String(n.state) === state) && matchesSearch(query, [n.name, n.managementAddress, n.hostname, n.stateReason, n.agentVersion]),
  );
  const columns: Column<Node>[] = [
    {
      key: "name",
      header: "Name",
      sort: (n) => n.name,
      render: (n) => (
        <Anchor component={Link} to={`/nodes/${encodeURIComponent(n.name)}`} fw={500}>
          {n.name}
        </Anchor>
      ),
    },
    { key: "state", header: "State", sort: (n) => nodeStateName(n.state), render: (n) => <StateBadge name={nodeStateName(n.state)} /> },
    { key: "since", header: "Since", sort: (n) => toDate(n.stateSince)?.getTime(), render: (n) => <RelativeTime value={n.stateSince} /> },
    {
      key: "error",
      header: "Last error",
      render: (n) => (
        <Text size="sm" c={n.stateReason ? "red" : undefined} title={n.stateReason} style={{ maxWidth: 320, overflow: "hidden", textOverflow: "ellipsis" }}>
          {isNotEnrolled(n) ? "Not enrolled: open the node for the agent command" : n.stateReason || "—"}
        </Text>
      ),
    },
    { key: "version", header: "Version", sort: (n) => n.agentVersion, render: (n) => n.agentVersion || "—" },
    { key: "address", header: "Address", sort: (n) => n.managementAddress, render: (n) => <code>{n.managementAddress}</code> },
    { key: "pools", header: "Pools", render: (n) => <PoolMounts mounts={n.pools} by="pool" /> },
    { key: "why", header: "Not mounted because", render: (n) => <MountReasons mounts={n.pools} by="pool" /> },
    { key: "free", header: "Free space", render: (n) => freeSpace(n) },
  ];
  if (isAdmin)
    columns.push({
      key: "actions",
      header: "Actions",
      render: (n) => (
        <Button size="compact-xs" variant="subtle" color="red" aria-label={`Remove node ${n.name}`} onClick={() => setToDelete(n)}>
          Remove
        </Button>
      ),
    });

  return (
    <>
      <PageHeader title="Nodes">{isAdmin && <Button onClick={() => setRegisterOpen(true)}>Register node…</Button>}</PageHeader>
      <Stack>
        <Group gap="sm" align="flex-end" wrap="wrap">
          <TextInput label="Search" placeholder="Name, address, error…" value={query} onChange={(e) => setQuery(e.currentTarget.value)} style={{ flex: "1 1 220px" }} />
          <Select label="State" placeholder="All states" clearable data={enumOptions(NodeState)} value={state} onChange={setState} w={160} />
        </Group>
        <ErrorAlert error={nodes.error} title="Could not list nodes" />
        {nodes.isSuccess && all.length === 0 && !filtered && pages.page === 1 ? (
          <EmptyState title="No nodes yet">
            Start an agent on each hypervisor with a join token (<code>quarry token create --join</code>), or register a node by
            its address and enroll it afterwards.
          </EmptyState>
        ) : (
          <DataTable label="Nodes" rows={rows} columns={columns} rowKey={(n) => n.id} defaultSort={{ key: "name", dir: "asc" }} />
        )}
        <Pager label="Node pages" pages={pages} nextToken={nodes.data?.nextPageToken}>
          up to {nodesPageSize} nodes a page, by name
        </Pager>
      </Stack>
      <RegisterDialog opened={registerOpen} onClose={() => setRegisterOpen(false)} />
      <ConfirmDialog
        opened={!!toDelete}
        title="Remove node"
        confirmLabel="Remove node"
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
                notifications.show({ message: `Removed node ${toDelete.name}` });
                setToDelete(null);
              },
            },
          )
        }
      >
        Remove node <b>{toDelete?.name}</b> ({toDelete?.managementAddress})? Its agent's certificate stops being accepted.
      </ConfirmDialog>
    </>
  );
}

function RegisterDialog({ opened, onClose }: { opened: boolean; onClose: () => void }) {
  const reg = useRegisterNode();
  const [name, setName] = useState("");
  const [address, setAddress] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  function submit(e: React.FormEvent) {
    e.preventDefault();
    const errs: Record<string, string> = {};
    if (!name.trim()) errs.name = "Give the node a name.";
    if (!address.trim()) errs.address = "Give the address the control plane dials (host, host:port or IP).";
    setErrors(errs);
    if (Object.keys(errs).length) return;
    reg.mutate(
      { name: name.trim(), managementAddress: address.trim() },
      {
        onSuccess: (r) => {
          notifications.show({ message: `Registered ${r.node?.name} at ${r.node?.managementAddress}` });
          setName("");
          setAddress("");
          reg.reset();
          onClose();
        },
      },
    );
  }
  return (
    <Modal opened={opened} onClose={onClose} title="Register a node">
      <form onSubmit={submit} noValidate>
        <Stack>
          <TextInput label="Name" value={name} onChange={(e) => setName(e.currentTarget.value)} error={errors.name} />
          <TextInput
            label="Management address"
            description="host, host:port or IP (10.0.0.5/24 works); port 9090 when none is given."
            value={address}
            onChange={(e) => setAddress(e.currentTarget.value)}
            error={errors.address}
          />
          <ErrorAlert error={reg.error} />
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" loading={reg.isPending}>
              Register
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
