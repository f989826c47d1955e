import { describe, expect, it } from "vitest";
import {
  enumLabel,
  formatBytes,
  formatDuration,
  formatEta,
  formatRate,
  formatRelative,
  percent,
  shortDigest,
} from "./format";

describe("formatBytes", () => {
  it.each([
    [0, "0 B"],
    [1023, "1023 B"],
    [1024, "1.00 KiB"],
    [1536, "1.50 KiB"],
    [10 * 1024 * 1024, "10.0 MiB"],
    [512 * 1024 * 1024, "512 MiB"],
    [2.5 * 1024 ** 3, "2.50 GiB"],
    [3 * 1024 ** 4, "3.00 TiB"],
  ])("%d → %s", (n, want) => expect(formatBytes(n)).toBe(want));
  it("takes bigints", () => expect(formatBytes(1073741824n)).toBe("1.00 GiB"));
  it("says — for unknown", () => {
    expect(formatBytes(undefined)).toBe("—");
    expect(formatBytes(-1)).toBe("—");
  });
});

describe("formatRate", () => {
  it("formats per second", () => expect(formatRate(1048576)).toBe("1.00 MiB/s"));
  it("is — when unknown", () => {
    expect(formatRate(0)).toBe("—");
    expect(formatRate(undefined)).toBe("—");
  });
});

describe("formatDuration and formatEta", () => {
  it.each([
    [0, "0 s"],
    [45, "45 s"],
    [60, "1 min"],
    [125, "2 min 5 s"],
    [3600, "1 h"],
    [3725, "1 h 2 min"],
    [90000, "1 d 1 h"],
  ])("%d s → %s", (s, want) => expect(formatDuration(s)).toBe(want));
  it("ETA 0 means unknown", () => expect(formatEta(0n)).toBe("—"));
  it("ETA from bigint", () => expect(formatEta(90n)).toBe("1 min 30 s"));
});

describe("formatRelative", () => {
  const now = new Date("2026-01-01T12:00:00Z");
  it.each([
    [new Date("2026-01-01T11:59:55Z"), "just now"],
    [new Date("2026-01-01T11:59:00Z"), "1 minute ago"],
    [new Date("2026-01-01T11:55:00Z"), "5 minutes ago"],
    [new Date("2026-01-01T09:00:00Z"), "3 hours ago"],
    [new Date("2025-12-31T12:00:00Z"), "yesterday"],
    [new Date("2026-01-01T14:00:00Z"), "in 2 hours"],
  ])("%s → %s", (d, want) => expect(formatRelative(d, now)).toBe(want));
  it("is — without a date", () => expect(formatRelative(undefined, now)).toBe("—"));
});

describe("percent", () => {
  it("is undefined while the total is unknown", () => expect(percent(5n, 0n)).toBeUndefined());
  it("clamps", () => expect(percent(20, 10)).toBe(100));
  it("computes", () => expect(percent(256n, 1024n)).toBe(25));
});

describe("labels", () => {
  it("enumLabel", () => {
    expect(enumLabel("CLOUD_IMAGE")).toBe("Cloud image");
    expect(enumLabel("ISO")).toBe("ISO");
    expect(enumLabel("UNSPECIFIED")).toBe("—");
  });
  it("shortDigest", () => expect(shortDigest("sha256:0123456789abcdef0123")).toBe("sha256:0123456789ab…"));
});
