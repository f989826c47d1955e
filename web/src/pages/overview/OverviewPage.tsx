import { Alert, Anchor, Badge, Group, Paper, SimpleGrid, Stack, Table, Text, Title } from "@mantine/core";
import { Link } from "react-router-dom";
import { useNodes } from "../../api/nodes";
import { usePools, mountedOn } from "../../api/pools";
import { useImages, useScanStatus } from "../../api/images";
import { useJobs } from "../../api/jobs";
import { NodeState } from "../../gen/quarry/v1/node_pb";
import { JobState } from "../../gen/quarry/v1/job_pb";
import { ImageKind, ImageState } from "../../gen/quarry/v1/image_pb";
import { RelativeTime } from "../../components/RelativeTime";
import { StateBadge } from "../../components/StateBadge";
import { PageHeader } from "../../components/PageHeader";
import { ErrorAlert } from "../../components/ErrorAlert";
import { enumLabel } from "../../lib/format";
import { toDate } from "../../lib/time";
import { imageKindName, imageStateName, nodeStateName, sourceName } from "../../lib/labels";
import { JobProgress } from "../jobs/JobsPage";
import { poolSpace } from "../pools/PoolsPage";

/** countBy(["a","b","a"], x => x) → Map {a: 2, b: 1}. */
export function countBy<T>(xs: readonly T[], key: (x: T) => string): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of xs) m.set(key(x), (m.get(key(x)) ?? 0) + 1);
  return m;
}

function Counts({ counts, label }: { counts: Map<string, number>; label: string }) {
  if (!counts.size) return <Text c="dimmed" size="sm">None</Text>;
  return (
    <Group gap="xs" role="group" aria-label={label}>
      {[...counts].map(([k, n]) => (
        <Group key={k} gap={4}>
          <StateBadge name={k} />
          <Text size="sm">{n}</Text>
        </Group>
      ))}
    </Group>
  );
}

function Card({ title, children, to }: { title: string; children: React.ReactNode; to?: string }) {
  return (
    <Paper withBorder p="md" radius="md">
      <Group justify="space-between" mb="xs">
        <Title order={2} size="h4">
          {title}
        </Title>
        {to && (
          <Anchor component={Link} to={to} size="sm">
            All {title.toLowerCase()}
          </Anchor>
        )}
      </Group>
      {children}
    </Paper>
  );
}

export default function OverviewPage() {
  // Pages of the largest size: the counts are exact up to 1,000 of each.
  const nodes = useNodes({ pageSize: 1000 });
  const pools = usePools();
  const images = useImages({ pageSize: 1000 });
  const jobs = useJobs({ pageSize: 1000 });
  const scans = useScanStatus();

  const nodeList = nodes.data?.nodes ?? [];
  const poolList = pools.data?.pools ?? [];
  const imageList = images.data?.images ?? [];
  const jobList = jobs.data?.jobs ?? [];
  const unreachable = nodeList.filter((n) => n.state === NodeState.UNREACHABLE || (n.state === NodeState.UNKNOWN && n.stateReason));
  const unmounted = poolList.filter((p) => mountedOn(p).length === 0);
  const failed = jobList.filter((j) => j.state === JobState.FAILED).slice(0, 5);
  const running = jobList.filter((j) => j.state === JobState.RUNNING || j.state === JobState.QUEUED);
  const lastScans = [...(scans.data?.last ?? [])]
    .sort((a, b) => (toDate(b.finishedAt)?.getTime() ?? 0) - (toDate(a.finishedAt)?.getTime() ?? 0))
    .slice(0, 5);
  const problems = unreachable.length + unmounted.length + failed.length;

  return (
    <>
      <PageHeader title="Overview" />
      <Stack>
        <ErrorAlert error={nodes.error ?? pools.error ?? images.error ?? jobs.error} title="Could not load the overview" />
        <section aria-label="Problems">
          <Title order={2} size="h4" mb="xs">
            Problems
          </Title>
          {nodes.isSuccess && pools.isSuccess && jobs.isSuccess && problems === 0 && (
            <Alert color="green">No problems: every node answers, every pool is mounted, no job failed.</Alert>
          )}
          <Stack gap="xs">
            {unreachable.map((n) => (
              <Alert key={n.id} color="red" title={`Node ${n.name} is ${enumLabel(nodeStateName(n.state)).toLowerCase()}`}>
                Since <RelativeTime value={n.stateSince} />: {n.stateReason || "never reached"}.{" "}
                <Anchor component={Link} to={`/nodes/${encodeURIComponent(n.name)}`}>
                  Open the node
                </Anchor>
              </Alert>
            ))}
            {unmounted.map((p) => (
              <Alert key={p.id} color="orange" title={`Pool ${p.name} is mounted on no node`}>
                {p.nodes.length
                  ? p.nodes.map((m) => `${m.nodeName}: ${m.reason || "no report yet"}`).join("; ")
                  : "No node is assigned to it."}{" "}
                <Anchor component={Link} to={`/pools/${p.id}`}>
                  Open the pool
                </Anchor>
              </Alert>
            ))}
            {failed.map((j) => (
              <Alert key={j.id} color="red" title={`Job failed: ${sourceName(j.source)}`}>
                <RelativeTime value={j.finishedAt ?? j.updatedAt} />: {j.message}{" "}
                <Anchor component={Link} to={`/jobs/${j.id}`}>
                  Open the job
                </Anchor>
              </Alert>
            ))}
          </Stack>
        </section>
        <SimpleGrid cols={{ base: 1, md: 2 }}>
          <Card title="Nodes" to="/nodes">
            <Counts label="Nodes by state" counts={countBy(nodeList, (n) => nodeStateName(n.state))} />
          </Card>
          <Card title="Images" to="/images">
            <Stack gap="xs">
              <Counts label="Images by state" counts={countBy(imageList, (i) => imageStateName(i.state))} />
              <Group gap="xs" role="group" aria-label="Images by kind">
                {[...countBy(imageList, (i) => imageKindName(i.kind))].map(([k, n]) => (
                  <Badge key={k} variant="outline" color="gray" radius="sm">
                    {enumLabel(k)}: {n}
                  </Badge>
                ))}
              </Group>
              <Text size="xs" c="dimmed">
                {imageList.filter((i) => i.kind === ImageKind.ISO).length} ISO(s),{" "}
                {imageList.filter((i) => i.state === ImageState.READY).length} ready of {imageList.length}
                {images.data?.nextPageToken ? " (the first 1,000 counted)" : ""}
              </Text>
            </Stack>
          </Card>
          <Card title="Pools" to="/pools">
            {poolList.length === 0 ? (
              <Text c="dimmed" size="sm">No pools yet.</Text>
            ) : (
              <Table aria-label="Pools">
                <Table.Thead>
                  <Table.Tr>
                    <Table.Th>Pool</Table.Th>
                    <Table.Th>Mounted on</Table.Th>
                    <Table.Th>Space</Table.Th>
                  </Table.Tr>
                </Table.Thead>
                <Table.Tbody>
                  {poolList.map((p) => (
                    <Table.Tr key={p.id}>
                      <Table.Td>{p.name}</Table.Td>
                      <Table.Td>
                        {mountedOn(p).length} of {p.nodes.length} node(s)
                      </Table.Td>
                      <Table.Td>{poolSpace(p)}</Table.Td>
                    </Table.Tr>
                  ))}
                </Table.Tbody>
              </Table>
            )}
          </Card>
          <Card title="Downloads" to="/jobs">
            {running.length === 0 ? (
              <Text c="dimmed" size="sm">
                Nothing running. Download from the <Anchor component={Link} to="/catalog">catalog</Anchor>.
              </Text>
            ) : (
              <Stack gap="xs">
                {running.slice(0, 8).map((j) => (
                  <div key={j.id}>
                    <Anchor component={Link} to={`/jobs/${j.id}`} size="sm">
                      {sourceName(j.source)}
                    </Anchor>
                    <JobProgress job={j} />
                  </div>
                ))}
              </Stack>
            )}
          </Card>
          <Card title="Recent scans">
            {lastScans.length === 0 ? (
              <Text c="dimmed" size="sm">No scan yet.</Text>
            ) : (
              <Stack gap={4}>
                {lastScans.map((s) => (
                  <Text size="sm" key={s.storagePoolId}>
                    <b>{s.storagePoolName}</b> <RelativeTime value={s.finishedAt} /> ({s.trigger}
                    {s.nodeName ? ` via ${s.nodeName}` : ""}):{" "}
                    {s.skipped ? `skipped — ${s.skipReason}` : `${s.discoveredCount} new, ${s.updatedCount} updated, ${s.missingCount} missing`}
                  </Text>
                ))}
              </Stack>
            )}
          </Card>
        </SimpleGrid>
      </Stack>
    </>
  );
}
