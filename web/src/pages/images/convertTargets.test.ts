import { describe, expect, it } from "vitest";
import { convertTargets } from "./ConvertDialog";

describe("convertTargets", () => {
  it("offers what ConvertImage converts", () => {
    expect(convertTargets("qcow2")).toEqual(["raw"]);
    expect(convertTargets("raw")).toEqual(["qcow2"]);
    expect(convertTargets("vmdk")).toEqual(["qcow2"]);
    expect(convertTargets("vhdx")).toEqual(["qcow2"]);
  });
  it("offers nothing for ISOs and unknown formats", () => {
    expect(convertTargets("iso")).toEqual([]);
    expect(convertTargets("")).toEqual([]);
  });
});
