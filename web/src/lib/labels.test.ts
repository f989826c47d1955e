import { expect, it } from "vitest";
import { ImageKind } from "../gen/quarry/v1/image_pb";
import { enumOptions, osLabel } from "./labels";

it("enumOptions skips UNSPECIFIED", () =>
  expect(enumOptions(ImageKind)).toEqual([
    { value: "1", label: "Cloud image" },
    { value: "2", label: "ISO" },
    { value: "3", label: "Disk" },
  ]));

it("osLabel", () => {
  expect(osLabel(undefined)).toBe("");
  expect(osLabel({ distro: "ubuntu", version: "24.04", arch: "amd64" } as never)).toBe("ubuntu 24.04 amd64");
});

import { sourceName } from "./labels";
it("sourceName", () => {
  expect(sourceName("http://127.0.0.1:1/dir/x.img?size=5")).toBe("x.img");
  expect(sourceName("ubuntu-24.04")).toBe("ubuntu-24.04");
});

import { TokenKind } from "../gen/quarry/v1/auth_pb";
import { tokenHasRole, tokenKindLabel } from "./labels";
it("tokenKindLabel names every kind, and API and SSO tokens carry a role", () => {
  expect([TokenKind.API, TokenKind.JOIN, TokenKind.SSO, TokenKind.UNSPECIFIED].map(tokenKindLabel)).toEqual(["API", "Join", "SSO", "—"]);
  expect([TokenKind.API, TokenKind.JOIN, TokenKind.SSO].map(tokenHasRole)).toEqual([true, false, true]);
});
