import { describe, expect, it } from "vitest";
import { validateDownload } from "./DownloadDialog";

const base = { source: "url" as const, catalogId: "", url: "https://example.com/a.img", poolId: "p1", checksum: "", name: "" };

describe("validateDownload", () => {
  it("accepts a URL with a checksum file", () => {
    expect(validateDownload({ ...base, checksumUrl: "https://example.com/SHA256SUMS" })).toEqual({});
  });
  it("refuses a checksum file that is not an http(s) URL", () => {
    expect(validateDownload({ ...base, checksumUrl: "ftp://example.com/SUMS" }).checksumUrl).toMatch(/checksum file/);
  });
  it("refuses a checksum and a checksum file together", () => {
    const e = validateDownload({ ...base, checksum: "sha256:" + "a".repeat(64), checksumUrl: "https://example.com/SUMS" });
    expect(e.checksumUrl).toMatch(/not both/);
  });
});
