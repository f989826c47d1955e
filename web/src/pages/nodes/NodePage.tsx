import { Anchor, Breadcrumbs, Paper, Stack, Table, Text, Title } from "@mantine/core";
import { Link, useParams } from "react-router-dom";
import { useNodes } from "../../api/nodes";
import { Fields } from "../../components/Fields";
import { StateBadge } from "../../components/StateBadge";
import { RelativeTime } from "../../components/RelativeTime";
import { EmptyState } from "../../components/EmptyState";
import { ErrorAlert } from "../../components/ErrorAlert";
import { Bytes } from "../../components/Bytes";
import { nodeStateName } from "../../lib/labels";
import { NodeState } from "../../gen/quarry/v1/node_pb";
import { isNotEnrolled } from "./NodesPage";
import { JoinCommand } from "./JoinCommand";

export default function NodePage() {
  const { name } = useParams();
  // The search narrows the list to names that hold this one: one page.
  const nodes = useNodes({ search: name ?? "", pageSize: 1000 });
  const node = nodes.data?.nodes.find((n) => n.name === name);
  return (
    <Stack>
      <Breadcrumbs>
        <Anchor component={Link} to="/nodes">
          Nodes
        </Anchor>
        <Text>{name}</Text>
      </Breadcrumbs>
      <Title order={1} size="h2">
        Node {name}
      </Title>
      <ErrorAlert error={nodes.error} title="Could not load nodes" />
      {nodes.isSuccess && !node && <EmptyState title="No such node">It may have been removed. See the node list.</EmptyState>}
      {node && (
        <>
          {isNotEnrolled(node) && (
            <Paper withBorder p="md">
              <Title order={2} size="h4" mb="xs">
                Not enrolled
              </Title>
              <JoinCommand node={node.name} address={node.managementAddress} />
            </Paper>
          )}
          <Fields
            label="Node details"
            rows={[
              ["State", <StateBadge name={nodeStateName(node.state)} />],
              ["Since", <RelativeTime value={node.stateSince} />],
              ["Last error", node.stateReason],
              ["Last checked", <RelativeTime value={node.lastCheckedAt} />],
              ["Address", <code>{node.managementAddress}</code>],
              ["Hostname", node.hostname],
              ["Agent version", node.agentVersion],
              ["qemu-img", node.qemuImgVersion || (node.state === NodeState.READY ? "None: install qemu-utils to convert images here" : "")],
              ["Registered", <RelativeTime value={node.createdAt} />],
              ["Id", <code>{node.id}</code>],
            ]}
          />
          <Title order={2} size="h4">
            Pools
          </Title>
          {node.pools.length === 0 ? (
            <Text c="dimmed">No pool is assigned to this node and it mounts none.</Text>
          ) : (
            <div style={{ overflowX: "auto" }} role="region" aria-label="Pools of the node" tabIndex={0}>
              <Table>
                <Table.Thead>
                  <Table.Tr>
                    <Table.Th>Pool</Table.Th>
                    <Table.Th>Assigned</Table.Th>
                    <Table.Th>Mounted</Table.Th>
                    <Table.Th>Free</Table.Th>
                    <Table.Th>Total</Table.Th>
                    <Table.Th>Checked</Table.Th>
                  </Table.Tr>
                </Table.Thead>
                <Table.Tbody>
                  {node.pools.map((m) => (
                    <Table.Tr key={m.storagePoolId}>
                      <Table.Td>{m.storagePoolName}</Table.Td>
                      <Table.Td>{m.assigned ? "Yes" : "No"}</Table.Td>
                      <Table.Td>{m.mounted ? "Yes" : `No: ${m.reason || "no report yet"}`}</Table.Td>
                      <Table.Td>
                        <Bytes value={m.freeBytes} />
                      </Table.Td>
                      <Table.Td>
                        <Bytes value={m.totalBytes} />
                      </Table.Td>
                      <Table.Td>
                        <RelativeTime value={m.checkedAt} />
                      </Table.Td>
                    </Table.Tr>
                  ))}
                </Table.Tbody>
              </Table>
            </div>
          )}
        </>
      )}
    </Stack>
  );
}
