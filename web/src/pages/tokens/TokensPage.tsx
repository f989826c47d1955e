import { useState } from "react";
import { Button, Checkbox, Group, Modal, NumberInput, Select, Stack, TextInput } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useCreateToken, useRevokeToken, useTokens } from "../../api/tokens";
import { Role, TokenKind, type Token, type CreateTokenResponse } from "../../gen/quarry/v1/auth_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { RelativeTime } from "../../components/RelativeTime";
import { EmptyState } from "../../components/EmptyState";
import { ErrorAlert } from "../../components/ErrorAlert";
import { PageHeader } from "../../components/PageHeader";
import { ConfirmDialog } from "../../components/ConfirmDialog";
import { SecretOnce } from "../../components/SecretOnce";
import { AdminOnly } from "../../components/AdminOnly";
import { StateBadge } from "../../components/StateBadge";
import { useCan, useSession } from "../../lib/session";
import { matchesSearch } from "../../lib/table";
import { roleLabel, tokenHasRole, tokenKindLabel } from "../../lib/labels";
import { toDate } from "../../lib/time";

function tokenState(t: Token): string {
  if (t.revokedAt) return "REVOKED";
  const exp = toDate(t.expiresAt);
  if (exp && exp.getTime() < Date.now()) return "EXPIRED";
  return "ACTIVE";
}

export default function TokensPage() {
  const isAdmin = useCan("admin");
  const { state } = useSession();
  const myTokenId = state.status === "signed-in" ? state.session.tokenId : "";
  const tokens = useTokens(isAdmin);
  const revoke = useRevokeToken();
  const [query, setQuery] = useState("");
  const [createOpen, setCreateOpen] = useState(false);
  const [toRevoke, setToRevoke] = useState<Token | null>(null);
  if (!isAdmin)
    return (
      <>
        <PageHeader title="Tokens" />
        <AdminOnly what="Tokens" />
      </>
    );

  const all = tokens.data?.tokens ?? [];
  const rows = all.filter((t) => matchesSearch(query, [t.name, t.id, tokenKindLabel(t.kind), roleLabel(t.role), tokenState(t)]));
  const columns: Column<Token>[] = [
    { key: "name", header: "Name", sort: (t) => t.name, render: (t) => <b>{t.name}{t.id === myTokenId ? " (this session)" : ""}</b> },
    { key: "kind", header: "Kind", sort: (t) => t.kind, render: (t) => tokenKindLabel(t.kind) },
    { key: "role", header: "Role", sort: (t) => t.role, render: (t) => (tokenHasRole(t.kind) ? roleLabel(t.role) : "—") },
    { key: "state", header: "State", sort: (t) => tokenState(t), render: (t) => <StateBadge name={tokenState(t) === "ACTIVE" ? "READY" : "CANCELLED"} /> },
    { key: "status", header: "Status", render: (t) => tokenState(t).toLowerCase() },
    { key: "created", header: "Created", sort: (t) => toDate(t.createdAt)?.getTime(), render: (t) => <RelativeTime value={t.createdAt} /> },
    { key: "expires", header: "Expires", sort: (t) => toDate(t.expiresAt)?.getTime(), render: (t) => (t.expiresAt ? <RelativeTime value={t.expiresAt} /> : "never") },
    { key: "used", header: "Last used", sort: (t) => toDate(t.lastUsedAt)?.getTime(), render: (t) => <RelativeTime value={t.lastUsedAt} /> },
    { key: "uses", header: "Uses", sort: (t) => t.useCount, render: (t) => String(t.useCount) + (t.singleUse ? " (single use)" : "") },
    { key: "id", header: "Id", render: (t) => <code>{t.id}</code> },
    {
      key: "actions",
      header: "Actions",
      render: (t) =>
        t.revokedAt ? null : (
          <Button size="compact-xs" variant="subtle" color="red" aria-label={`Revoke token ${t.name}`} onClick={() => setToRevoke(t)}>
            Revoke
          </Button>
        ),
    },
  ];

  return (
    <>
      <PageHeader title="Tokens">
        <Button onClick={() => setCreateOpen(true)}>Create token…</Button>
      </PageHeader>
      <Stack>
        <TextInput label="Search" placeholder="Name, kind, role, state…" value={query} onChange={(e) => setQuery(e.currentTarget.value)} maw={420} />
        <ErrorAlert error={tokens.error} title="Could not list tokens" />
        {tokens.isSuccess && all.length === 0 ? (
          <EmptyState title="No tokens">Create one for each person or tool that uses the API.</EmptyState>
        ) : (
          <DataTable label="Tokens" rows={rows} columns={columns} rowKey={(t) => t.id} defaultSort={{ key: "created", dir: "desc" }} />
        )}
      </Stack>
      <CreateTokenDialog opened={createOpen} onClose={() => setCreateOpen(false)} />
      <ConfirmDialog
        opened={!!toRevoke}
        title="Revoke token"
        confirmLabel="Revoke token"
        loading={revoke.isPending}
        error={revoke.error}
        onClose={() => {
          setToRevoke(null);
          revoke.reset();
        }}
        onConfirm={() =>
          toRevoke &&
          revoke.mutate(
            { id: toRevoke.id },
            {
              onSuccess: () => {
                notifications.show({ message: `Revoked ${toRevoke.name}` });
                setToRevoke(null);
              },
            },
          )
        }
      >
        Revoke <b>{toRevoke?.name}</b>? Every session signed in with it ends now.
        {toRevoke?.id === myTokenId && " This is the token of your own session: you will be signed out."}
      </ConfirmDialog>
    </>
  );
}

function CreateTokenDialog({ opened, onClose }: { opened: boolean; onClose: () => void }) {
  const create = useCreateToken();
  const [name, setName] = useState("");
  const [kind, setKind] = useState<string>(String(TokenKind.API));
  const [role, setRole] = useState<string>(String(Role.VIEWER));
  const [ttl, setTtl] = useState<number | string>("");
  const [singleUse, setSingleUse] = useState(false);
  const [error, setError] = useState("");
  const [made, setMade] = useState<CreateTokenResponse | null>(null);

  function close() {
    setMade(null);
    setName("");
    setTtl("");
    setError("");
    create.reset();
    onClose();
  }
  function submit(e: React.FormEvent) {
    e.preventDefault();
    if (!name.trim()) {
      setError("Give the token a name (who or what uses it).");
      return;
    }
    setError("");
    const hours = Number(ttl) || 0;
    create.mutate(
      { name: name.trim(), kind: Number(kind), role: Number(role), ttlSeconds: BigInt(Math.round(hours * 3600)), singleUse },
      { onSuccess: setMade },
    );
  }
  return (
    <Modal opened={opened} onClose={close} title="Create a token" size="lg">
      {made ? (
        <Stack>
          <SecretOnce label={`Token ${made.token?.name}`} secret={made.secret} />
          {made.caHash && <SecretOnce label="CA hash for --ca-hash" secret={made.caHash} />}
          <Group justify="flex-end">
            <Button onClick={close}>Done</Button>
          </Group>
        </Stack>
      ) : (
        <form onSubmit={submit} noValidate>
          <Stack>
            <TextInput label="Name" value={name} onChange={(e) => setName(e.currentTarget.value)} error={error || undefined} />
            <Select
              label="Kind"
              allowDeselect={false}
              data={[
                { value: String(TokenKind.API), label: "API token (dashboard, CLI)" },
                { value: String(TokenKind.JOIN), label: "Join token (agent enrollment)" },
              ]}
              value={kind}
              onChange={(v) => setKind(v ?? String(TokenKind.API))}
            />
            {Number(kind) === TokenKind.API && (
              <Select
                label="Role"
                allowDeselect={false}
                data={[
                  { value: String(Role.VIEWER), label: "Viewer: read everything" },
                  { value: String(Role.OPERATOR), label: "Operator: also images, scans and jobs" },
                  { value: String(Role.ADMIN), label: "Admin: also nodes, pools and tokens" },
                ]}
                value={role}
                onChange={(v) => setRole(v ?? String(Role.VIEWER))}
              />
            )}
            <NumberInput
              label="Lifetime in hours"
              description="Empty: join tokens 1 h, API tokens never expire."
              min={0}
              value={ttl}
              onChange={setTtl}
            />
            {Number(kind) === TokenKind.JOIN && (
              <Checkbox label="Single use" checked={singleUse} onChange={(e) => setSingleUse(e.currentTarget.checked)} />
            )}
            <ErrorAlert error={create.error} />
            <Group justify="flex-end">
              <Button variant="default" onClick={close}>
                Cancel
              </Button>
              <Button type="submit" loading={create.isPending}>
                Create token
              </Button>
            </Group>
          </Stack>
        </form>
      )}
    </Modal>
  );
}
