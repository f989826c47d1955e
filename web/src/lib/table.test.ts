import { describe, expect, it } from "vitest";
import { matchesSearch, searcher, sortRows } from "./table";

describe("sortRows", () => {
  const rows = [{ n: "b10" }, { n: "b2" }, { n: "" }, { n: "A1" }];
  it("sorts naturally, unknowns last", () =>
    expect(sortRows(rows, (r) => r.n, "asc").map((r) => r.n)).toEqual(["A1", "b2", "b10", ""]));
  it("reverses", () => expect(sortRows(rows, (r) => r.n, "desc").map((r) => r.n)).toEqual(["", "b10", "b2", "A1"]));
  it("sorts bigints", () =>
    expect(sortRows([{ s: 5n }, { s: 1n }], (r) => r.s, "asc").map((r) => r.s)).toEqual([1n, 5n]));
});

describe("matchesSearch", () => {
  it("needs every word", () => {
    expect(matchesSearch("ubu iso", ["ubuntu-24.04.iso", "local"])).toBe(true);
    expect(matchesSearch("ubu win", ["ubuntu-24.04.iso", "local"])).toBe(false);
  });
  it("empty matches all", () => expect(matchesSearch("  ", [])).toBe(true));
});

describe("searcher", () => {
  it("matches like matchesSearch", () => {
    const search = searcher((r: { a: string; b?: string }) => [r.a, r.b]);
    const rows = [{ a: "ubuntu.iso", b: "local" }, { a: "win.iso" }];
    expect(rows.filter(search("ISO loc"))).toEqual([rows[0]]);
    expect(rows.filter(search(""))).toEqual(rows);
  });
});
