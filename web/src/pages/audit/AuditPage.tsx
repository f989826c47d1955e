import { useState } from "react";
import { Button, Group, Select, Stack, Text, TextInput } from "@mantine/core";
import { auditPageSize, useAudit } from "../../api/audit";
import type { AuditEntry } from "../../gen/quarry/v1/auth_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { RelativeTime } from "../../components/RelativeTime";
import { EmptyState } from "../../components/EmptyState";
import { ErrorAlert } from "../../components/ErrorAlert";
import { PageHeader } from "../../components/PageHeader";
import { AdminOnly } from "../../components/AdminOnly";
import { useCan } from "../../lib/session";
import { matchesSearch } from "../../lib/table";
import { roleLabel } from "../../lib/labels";

export default function AuditPage() {
  const isAdmin = useCan("admin");
  // Pages are addressed by the id the next page starts below; the stack
  // lets "Newer" go back.
  const [cursors, setCursors] = useState<bigint[]>([0n]);
  const before = cursors[cursors.length - 1];
  const audit = useAudit(isAdmin, before);
  const [query, setQuery] = useState("");
  const [result, setResult] = useState<string | null>(null);
  if (!isAdmin)
    return (
      <>
        <PageHeader title="Audit" />
        <AdminOnly what="Audit entries" />
      </>
    );

  const entries = audit.data?.entries ?? [];
  const rows = entries.filter(
    (e) =>
      (!result || (result === "ok" ? e.result === "ok" : e.result !== "ok")) &&
      matchesSearch(query, [e.actor, e.procedure, e.target, e.result, e.message, e.remoteAddr]),
  );
  const columns: Column<AuditEntry>[] = [
    { key: "time", header: "Time", sort: (e) => e.id, render: (e) => <RelativeTime value={e.time} /> },
    { key: "actor", header: "Actor", sort: (e) => e.actor, render: (e) => e.actor },
    { key: "role", header: "Role", render: (e) => roleLabel(e.role) },
    { key: "procedure", header: "Procedure", sort: (e) => e.procedure, render: (e) => <code>{e.procedure.replace(/^quarry\.v1\./, "")}</code> },
    { key: "target", header: "Target", render: (e) => e.target || "—" },
    { key: "result", header: "Result", sort: (e) => e.result, render: (e) => <Text size="sm" c={e.result === "ok" ? undefined : "red"}>{e.result}</Text> },
    { key: "message", header: "Message", render: (e) => <Text size="sm" title={e.message} style={{ maxWidth: 360, overflow: "hidden", textOverflow: "ellipsis" }}>{e.message || "—"}</Text> },
    { key: "from", header: "From", render: (e) => e.remoteAddr || "—" },
  ];
  const last = entries[entries.length - 1];
  return (
    <>
      <PageHeader title="Audit" />
      <Stack>
        <Group gap="sm" align="flex-end" wrap="wrap">
          <TextInput label="Search" placeholder="Actor, procedure, target…" value={query} onChange={(e) => setQuery(e.currentTarget.value)} style={{ flex: "1 1 220px" }} />
          <Select
            label="Result"
            placeholder="All results"
            clearable
            data={[
              { value: "ok", label: "Succeeded" },
              { value: "error", label: "Refused or failed" },
            ]}
            value={result}
            onChange={setResult}
            w={180}
          />
        </Group>
        <ErrorAlert error={audit.error} title="Could not list the audit log" />
        {audit.isSuccess && entries.length === 0 ? (
          <EmptyState title="No audit entries">Every change made through the API is written here.</EmptyState>
        ) : (
          <DataTable label="Audit log" rows={rows} columns={columns} rowKey={(e) => String(e.id)} defaultSort={{ key: "time", dir: "desc" }} />
        )}
        <Group justify="space-between">
          <Text size="sm" c="dimmed">
            Page {cursors.length}, {rows.length} of {entries.length} entries shown
          </Text>
          <Group gap="xs">
            <Button variant="default" size="xs" disabled={cursors.length === 1} onClick={() => setCursors([0n])}>
              Newest
            </Button>
            <Button variant="default" size="xs" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
              Newer
            </Button>
            <Button
              variant="default"
              size="xs"
              disabled={!last || entries.length < auditPageSize}
              onClick={() => last && setCursors([...cursors, last.id])}
            >
              Older
            </Button>
          </Group>
        </Group>
      </Stack>
    </>
  );
}
