import { useState } from "react";
import { Group, Select, Stack, Text, TextInput } from "@mantine/core";
import { useDebouncedValue } from "@mantine/hooks";
import { useAudit } from "../../api/audit";
import type { AuditEntry } from "../../gen/quarry/v1/auth_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { RelativeTime } from "../../components/RelativeTime";
import { EmptyState } from "../../components/EmptyState";
import { ErrorAlert } from "../../components/ErrorAlert";
import { PageHeader } from "../../components/PageHeader";
import { AdminOnly } from "../../components/AdminOnly";
import { Pager } from "../../components/Pager";
import { useCan } from "../../lib/session";
import { usePageTokens } from "../../lib/pages";
import { roleLabel } from "../../lib/labels";

export default function AuditPage() {
  const isAdmin = useCan("admin");
  const [query, setQuery] = useState("");
  const [result, setResult] = useState<string | null>(null);
  // The server filters the whole log; typing is sent once it pauses.
  const [search] = useDebouncedValue(query.trim(), 250);
  const filter = { search, result: result ?? "" };
  const pages = usePageTokens(JSON.stringify(filter));
  const audit = useAudit(isAdmin, filter, pages.token);
  if (!isAdmin)
    return (
      <>
        <PageHeader title="Audit" />
        <AdminOnly what="Audit entries" />
      </>
    );

  const rows = audit.data?.entries ?? [];
  const filtered = !!(filter.search || filter.result);
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
        {audit.isSuccess && rows.length === 0 && pages.page === 1 ? (
          filtered ? (
            <EmptyState title="No matching audit entries">No entry matches the search and result chosen.</EmptyState>
          ) : (
            <EmptyState title="No audit entries">Every change made through the API is written here.</EmptyState>
          )
        ) : (
          <DataTable label="Audit log" rows={rows} columns={columns} rowKey={(e) => String(e.id)} defaultSort={{ key: "time", dir: "desc" }} />
        )}
        <Pager label="Audit log pages" pages={pages} nextToken={audit.data?.nextPageToken}>
          {rows.length} {filtered ? "matching " : ""}entries, newest first
        </Pager>
      </Stack>
    </>
  );
}
