import { test, expect, signIn } from "./helpers/fixtures";
import { isoBytes } from "./helpers/iso";

test("upload an ISO from this computer: it becomes an image of the pool", async ({ page }) => {
  const name = `upload-${Date.now()}.iso`;
  await signIn(page, undefined, "/images");
  await page.getByRole("button", { name: "Upload…" }).click();
  const dialog = page.getByRole("dialog", { name: "Upload an image" });
  await dialog.locator('input[type="file"]').setInputFiles({ name, mimeType: "application/octet-stream", buffer: isoBytes("UPLOADED", 2 * 1024 * 1024) });
  await expect(dialog.getByRole("textbox", { name: "Name" })).toHaveValue(name);
  await dialog.getByRole("textbox", { name: "Pool" }).click();
  await page.getByRole("option", { name: /^local — mounted on dev/ }).click();
  await dialog.getByRole("button", { name: "Upload" }).click();
  await expect(page.getByText("Upload finished")).toBeVisible();
  const row = page.getByRole("row").filter({ hasText: name });
  await expect(row.getByRole("link", { name, exact: true })).toBeVisible();
  await expect(row.getByText("Ready", { exact: true })).toBeVisible();
  await expect(row).toContainText("ISO");
});

test("an upload the server refuses shows its reason", async ({ page }) => {
  await signIn(page, undefined, "/images");
  await page.getByRole("button", { name: "Upload…" }).click();
  const dialog = page.getByRole("dialog", { name: "Upload an image" });
  await dialog.locator('input[type="file"]').setInputFiles({ name: "bad.iso", mimeType: "application/octet-stream", buffer: isoBytes("BAD") });
  // A checksum that cannot match: the node refuses the whole file.
  await dialog.getByRole("textbox", { name: "Checksum", exact: true }).fill(`sha256:${"0".repeat(64)}`);
  await dialog.getByRole("button", { name: "Upload" }).click();
  await expect(dialog.getByRole("alert").filter({ hasText: "The upload failed" })).toContainText(/sha256|checksum|digest/i);
});
