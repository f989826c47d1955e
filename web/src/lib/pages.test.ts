import { describe, expect, it } from "vitest";
import { longestWord } from "./pages";

describe("longestWord", () => {
  it("picks the longest word, the first of equals", () => {
    expect(longestWord("  ubuntu 24.04 server ")).toBe("ubuntu");
    expect(longestWord("abc xyz")).toBe("abc");
  });
  it("is empty for blank queries", () => {
    expect(longestWord("   ")).toBe("");
    expect(longestWord("")).toBe("");
  });
});
