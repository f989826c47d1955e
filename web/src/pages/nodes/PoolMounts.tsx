import { Badge, Group, Text, Tooltip } from "@mantine/core";
import type { PoolMount } from "../../gen/quarry/v1/node_pb";
import { formatBytes } from "../../lib/format";

/**
 * Which pools a node mounts, and why not, one badge each. A badge is as
 * wide as its name (a long one is shortened; the tooltip has it whole) and
 * they wrap onto more lines: with Mantine's clipping label a table's cell
 * shrank them to a dot and a letter. Names keep their case.
 */
export function PoolMounts({ mounts, by }: { mounts: PoolMount[]; by: "pool" | "node" }) {
  if (!mounts.length) return <span>—</span>;
  return (
    <Group gap={4} wrap="wrap" maw={360}>
      {mounts.map((m) => {
        const name = by === "pool" ? m.storagePoolName : m.nodeName;
        const tip = m.mounted
          ? `${name}: mounted, ${formatBytes(m.freeBytes)} free of ${formatBytes(m.totalBytes)}`
          : `${name}: not mounted — ${m.reason || "no report yet"}`;
        return (
          <Tooltip key={`${m.nodeId}/${m.storagePoolId}`} label={tip} multiline maw={360}>
            <Badge color={m.mounted ? "green" : "red"} variant="dot" radius="sm" tt="none" tabIndex={0} aria-label={tip} styles={{ label: { overflow: "visible" } }}>
              {shortened(name)}
              {m.mounted ? "" : " ✕"}
            </Badge>
          </Tooltip>
        );
      })}
    </Group>
  );
}

const longestShown = 24;

function shortened(name: string): string {
  return name.length > longestShown ? `${name.slice(0, longestShown - 1)}…` : name;
}

/** Why each unmounted pool is not mounted, one line each: the exact reason the node gave. */
export function MountReasons({ mounts, by }: { mounts: PoolMount[]; by: "pool" | "node" }) {
  const not = mounts.filter((m) => !m.mounted);
  if (!not.length) return <span>—</span>;
  return (
    <div>
      {not.map((m) => {
        const text = `${by === "pool" ? m.storagePoolName : m.nodeName}: ${m.reason || "no report yet"}`;
        return (
          <Text key={`${m.nodeId}/${m.storagePoolId}`} size="xs" c="red" title={text} style={{ maxWidth: 360, overflow: "hidden", textOverflow: "ellipsis" }}>
            {text}
          </Text>
        );
      })}
    </div>
  );
}
