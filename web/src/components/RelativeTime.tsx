import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { formatAbsolute, formatRelative } from "../lib/format";
import { toDate, useNow } from "../lib/time";

/** "5 minutes ago", with the exact time on hover (a native tooltip: cheap in long lists). */
export function RelativeTime({ value }: { value: Timestamp | Date | undefined }) {
  const now = useNow();
  const d = value instanceof Date ? value : toDate(value);
  if (!d) return <span>—</span>;
  const abs = formatAbsolute(d);
  return (
    <time dateTime={d.toISOString()} title={abs}>
      {formatRelative(d, new Date(Math.max(now.getTime(), Date.now())))}
    </time>
  );
}
