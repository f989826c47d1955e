import { test, expect, signIn, navigate } from "./helpers/fixtures";
import { createApiToken } from "./helpers/api";
import { addIsoToLocalPool } from "./helpers/images";

// Buttons that change something; a viewer must see none of them.
const mutating = /^(Scan ISOs|Download.*|Upload.*|Delete.*|Cancel job.*|Verify|Register node…|Remove.*|Create pool…|Edit.*|Create token…|Revoke.*|Create join token.*)$/;

test("a viewer sees no create, delete, download or scan controls", async ({ page, api, dataDir }) => {
  await addIsoToLocalPool(api, dataDir, `viewer-${Date.now()}.iso`);
  const viewer = await createApiToken(api, "viewer");
  await signIn(page, viewer.secret, "/");
  for (const name of ["Overview", "Images", "Jobs", "Catalog", "Nodes", "Pools", "Tokens", "Audit"]) {
    await navigate(page, name);
    if (name === "Images") await expect(page.getByRole("table")).toBeVisible();
    if (name === "Catalog") await expect(page.getByRole("region", { name: "Catalog", exact: true }).getByRole("table")).toBeVisible();
    await expect(page.getByRole("button", { name: mutating })).toHaveCount(0);
  }
  await expect(page.getByText("Tokens are for admins")).toHaveCount(0); // we are on Audit now
  await navigate(page, "Tokens");
  await expect(page.getByText("Tokens are for admins")).toBeVisible();
  await page.goto("/nodes/dev");
  await expect(page.getByRole("heading", { name: "Node dev" })).toBeVisible();
  await expect(page.getByRole("button", { name: mutating })).toHaveCount(0);
});

test("an operator sees image, scan and job controls but not node, pool or token ones", async ({ page, api }) => {
  const op = await createApiToken(api, "operator");
  await signIn(page, op.secret, "/images");
  await expect(page.getByRole("button", { name: "Scan ISOs" })).toBeVisible();
  await expect(page.getByRole("button", { name: "Download…" })).toBeVisible();
  await navigate(page, "Nodes");
  await expect(page.getByRole("table")).toBeVisible();
  await expect(page.getByRole("button", { name: /Register node|Remove/ })).toHaveCount(0);
  await navigate(page, "Pools");
  await expect(page.getByRole("table")).toBeVisible();
  await expect(page.getByRole("button", { name: /Create pool|Edit|Delete/ })).toHaveCount(0);
  await navigate(page, "Catalog");
  await expect(page.getByRole("button", { name: /^Download .* to pool…$/ }).first()).toBeVisible();
});
