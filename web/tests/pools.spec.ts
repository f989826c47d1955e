import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, expect, signIn } from "./helpers/fixtures";
import { addIsoToLocalPool } from "./helpers/images";

test("an admin creates a pool on a node, edits it and deletes it", async ({ page }) => {
  const name = `p${Date.now() % 100000}`;
  const dir = mkdtempSync(join(tmpdir(), "quarry-pool-"));
  await signIn(page, undefined, "/pools");
  await page.getByRole("button", { name: "Create pool…" }).click();
  const dialog = page.getByRole("dialog", { name: "Create a pool" });
  await dialog.getByRole("textbox", { name: "Name" }).fill(name);
  await dialog.getByRole("textbox", { name: "Path" }).fill(dir);
  await dialog.getByRole("textbox", { name: "Assigned nodes" }).click();
  await page.getByRole("option", { name: "dev" }).click();
  await page.keyboard.press("Tab"); // leaves the multi-select: its list closes
  await dialog.getByRole("button", { name: "Create pool" }).click();
  await expect(dialog).toBeHidden();
  const row = page.getByRole("row").filter({ has: page.getByRole("link", { name, exact: true }) });
  await expect(row.getByLabel(/^dev: mounted/)).toBeVisible();
  await expect(row).toContainText("free of");

  await page.getByRole("button", { name: `Edit pool ${name}` }).click();
  const edit = page.getByRole("dialog", { name: "Edit pool" });
  await edit.getByRole("checkbox", { name: /Shared/ }).check();
  await edit.getByRole("button", { name: "Save" }).click();
  await expect(row.getByRole("cell", { name: "Yes", exact: true })).toBeVisible();

  await page.getByRole("button", { name: `Delete pool ${name}` }).click();
  await page.getByRole("dialog", { name: "Delete pool" }).getByRole("button", { name: "Delete pool" }).click();
  await expect(page.getByRole("link", { name, exact: true })).toHaveCount(0);
});

test("a call the server refuses shows its message verbatim", async ({ page, api, dataDir }) => {
  await addIsoToLocalPool(api, dataDir, `keep-${Date.now()}.iso`);
  await signIn(page, undefined, "/pools");
  await page.getByRole("button", { name: "Delete pool local" }).click();
  const dialog = page.getByRole("dialog", { name: "Delete pool" });
  await dialog.getByRole("button", { name: "Delete pool" }).click();
  const refusal = dialog.getByRole("alert").filter({ hasText: "The server refused" });
  await expect(refusal).toBeVisible();
  expect((await refusal.textContent())!.length).toBeGreaterThan(30);
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await expect(page.getByRole("link", { name: "local", exact: true })).toBeVisible();
});
