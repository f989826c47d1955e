// Formatting for people: sizes in binary units, rates, durations and
// relative times. Pure functions, tested in format.test.ts.

const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** formatBytes(1536) → "1.5 KiB"; 3 significant digits above 1 KiB. */
export function formatBytes(n: number | bigint | undefined | null): string {
  if (n === undefined || n === null) return "—";
  let v = typeof n === "bigint" ? Number(n) : n;
  if (!Number.isFinite(v) || v < 0) return "—";
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${v} B`;
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(digits)} ${units[i]}`;
}

/** formatRate(1048576) → "1.00 MiB/s"; "—" when unknown or zero. */
export function formatRate(bytesPerSecond: number | undefined | null): string {
  if (!bytesPerSecond || !Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "—";
  return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

/** formatDuration(3725) → "1 h 2 min"; seconds for short spans. */
export function formatDuration(seconds: number | bigint | undefined | null): string {
  if (seconds === undefined || seconds === null) return "—";
  let s = Math.round(typeof seconds === "bigint" ? Number(seconds) : seconds);
  if (!Number.isFinite(s) || s < 0) return "—";
  if (s < 60) return `${s} s`;
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return h > 0 ? `${d} d ${h} h` : `${d} d`;
  if (h > 0) return m > 0 ? `${h} h ${m} min` : `${h} h`;
  return s > 0 ? `${m} min ${s} s` : `${m} min`;
}

/** formatEta: time left, "—" while unknown (0). */
export function formatEta(seconds: number | bigint | undefined | null): string {
  if (seconds === undefined || seconds === null) return "—";
  const s = typeof seconds === "bigint" ? Number(seconds) : seconds;
  if (s <= 0) return "—";
  return formatDuration(s);
}

/** percent(512, 1024) → 50; undefined while the total is unknown. */
export function percent(done: number | bigint, total: number | bigint): number | undefined {
  const t = Number(total);
  if (!t || t <= 0) return undefined;
  return Math.min(100, Math.max(0, (Number(done) / t) * 100));
}

const rtf = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

/** formatRelative(date, now) → "5 minutes ago", "in 2 hours", "now". */
export function formatRelative(date: Date | undefined | null, now: Date = new Date()): string {
  if (!date) return "—";
  const diff = (date.getTime() - now.getTime()) / 1000;
  const abs = Math.abs(diff);
  if (abs < 10) return "just now";
  const steps: [number, Intl.RelativeTimeFormatUnit][] = [
    [60, "second"],
    [3600, "minute"],
    [86400, "hour"],
    [86400 * 30, "day"],
    [86400 * 365, "month"],
    [Infinity, "year"],
  ];
  const div: Record<string, number> = {
    second: 1,
    minute: 60,
    hour: 3600,
    day: 86400,
    month: 86400 * 30,
    year: 86400 * 365,
  };
  for (const [limit, unit] of steps) {
    if (abs < limit) return rtf.format(Math.trunc(diff / div[unit]), unit);
  }
  return date.toISOString();
}

/** formatAbsolute: the exact local time, for tooltips. */
export function formatAbsolute(date: Date | undefined | null): string {
  if (!date) return "";
  const pad = (n: number) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

/** enumLabel("READY") → "Ready"; "CLOUD_IMAGE" → "Cloud image". */
export function enumLabel(name: string | undefined): string {
  if (!name || name === "UNSPECIFIED") return "—";
  const s = name.toLowerCase().replace(/_/g, " ");
  return s === "iso" ? "ISO" : s.charAt(0).toUpperCase() + s.slice(1);
}

/** shortDigest("sha256:abcdef…") → "sha256:abcdef012345…". */
export function shortDigest(d: string | undefined, keep = 12): string {
  if (!d) return "—";
  const i = d.indexOf(":");
  const hex = i >= 0 ? d.slice(i + 1) : d;
  return hex.length > keep ? `${d.slice(0, i + 1)}${hex.slice(0, keep)}…` : d;
}
