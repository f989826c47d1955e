import { expect, it } from "vitest";
import { atLeast } from "./roles";

it("orders roles", () => {
  expect(atLeast("admin", "operator")).toBe(true);
  expect(atLeast("operator", "operator")).toBe(true);
  expect(atLeast("viewer", "operator")).toBe(false);
  expect(atLeast("bogus", "viewer")).toBe(false);
  expect(atLeast(undefined, "viewer")).toBe(false);
});
