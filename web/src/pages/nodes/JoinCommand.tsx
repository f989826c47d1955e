import { useState } from "react";
import { Button, Code, Stack, Text } from "@mantine/core";
import { useCreateToken } from "../../api/tokens";
import { TokenKind } from "../../gen/quarry/v1/auth_pb";
import { ErrorAlert } from "../../components/ErrorAlert";
import { SecretOnce } from "../../components/SecretOnce";
import { useCan } from "../../lib/session";

/** The agent command line for a node, as quarry token create --join prints it. */
export function agentCommand(server: string, node: string, address: string, token = "TOKEN", caHash = "sha256:CA_HASH"): string {
  const port = address.match(/:(\d+)$/)?.[1] ?? "9090";
  return `quarry agent --server ${server} --join-token ${token} --ca-hash ${caHash} --name ${node} --listen :${port}`;
}

/**
 * JoinCommand shows what to run on a node whose agent has not enrolled;
 * admins can make a single-use join token right here (shown once).
 */
export function JoinCommand({ node, address }: { node: string; address: string }) {
  const isAdmin = useCan("admin");
  const create = useCreateToken();
  const [made, setMade] = useState<{ secret: string; caHash: string } | null>(null);
  const server = window.location.origin;
  return (
    <Stack gap="xs">
      <Text size="sm">Start the node's agent with a join token to enroll it:</Text>
      {made ? (
        <>
          <SecretOnce label="Join token" secret={made.secret} />
          <Text size="sm">Run this on the node (single use, valid for 1 hour):</Text>
          <SecretOnce label="Agent command" secret={agentCommand(server, node, address, made.secret, made.caHash)} />
        </>
      ) : (
        <Code block>{agentCommand(server, node, address)}</Code>
      )}
      {isAdmin && !made && (
        <Button
          size="xs"
          variant="light"
          w="fit-content"
          loading={create.isPending}
          onClick={() =>
            create.mutate(
              { name: `join-${node}`, kind: TokenKind.JOIN, singleUse: true },
              { onSuccess: (r) => setMade({ secret: r.secret, caHash: r.caHash }) },
            )
          }
        >
          Create join token for {node}
        </Button>
      )}
      {!isAdmin && (
        <Text size="xs" c="dimmed">
          An admin makes the token: quarry token create --join --single-use
        </Text>
      )}
      <ErrorAlert error={create.error} />
    </Stack>
  );
}
