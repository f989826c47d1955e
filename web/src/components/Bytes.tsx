import { formatBytes } from "../lib/format";

/** A size in binary units, the exact byte count on hover. */
export function Bytes({ value }: { value: bigint | number | undefined }) {
  if (value === undefined || (typeof value === "bigint" ? value === 0n : value === 0)) return <span>—</span>;
  return <span title={`${value.toLocaleString()} bytes`}>{formatBytes(value)}</span>;
}
