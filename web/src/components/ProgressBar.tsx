import { Group, Progress, Text } from "@mantine/core";
import { formatBytes, percent } from "../lib/format";

/** Bytes done of total, with a bar; striped and full while the total is unknown. */
export function ProgressBar({ done, total, label, active = true }: {
  done: bigint;
  total: bigint;
  label: string;
  active?: boolean;
}) {
  const p = percent(done, total);
  const text = p === undefined ? `${formatBytes(done)}` : `${formatBytes(done)} of ${formatBytes(total)} (${Math.floor(p)}%)`;
  return (
    <div style={{ minWidth: 160 }}>
      <Progress.Root size="md">
        <Progress.Section
          value={p ?? 100}
          striped={p === undefined || active}
          animated={active && p === undefined}
          withAria={false}
          role="progressbar"
          aria-label={label}
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={p === undefined ? undefined : Math.floor(p)}
          aria-valuetext={text}
        />
      </Progress.Root>
      <Group gap={4} mt={2}>
        <Text size="xs" c="dimmed">
          {text}
        </Text>
      </Group>
    </div>
  );
}
