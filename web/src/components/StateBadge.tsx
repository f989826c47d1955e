import { Badge } from "@mantine/core";
import { enumLabel } from "../lib/format";

const colors: Record<string, string> = {
  READY: "green",
  SUCCEEDED: "green",
  RUNNING: "blue",
  DOWNLOADING: "blue",
  UPLOADING: "blue",
  VERIFYING: "cyan",
  PENDING: "gray",
  QUEUED: "gray",
  UNKNOWN: "gray",
  DELETING: "orange",
  MISSING: "orange",
  CANCELLED: "gray",
  ERROR: "red",
  FAILED: "red",
  UNREACHABLE: "red",
};

/** A state as a coloured badge: StateBadge name={ImageState[img.state]}. */
export function StateBadge({ name }: { name: string | undefined }) {
  const n = name ?? "UNSPECIFIED";
  return (
    <Badge
      color={colors[n] ?? "gray"}
      variant="dot"
      radius="sm"
      styles={{ root: { flexShrink: 0, overflow: "visible" }, label: { overflow: "visible" } }}
    >
      {enumLabel(n)}
    </Badge>
  );
}
