import { test, expect, signIn } from "./helpers/fixtures";

test("the audit log pages through the server, filtered on the server", async ({ page, api }) => {
  // 60 refused deletes, each audited with a target only this run uses.
  const run = `paging-${Date.now()}`;
  for (let i = 0; i < 60; i++) {
    await expect(api.nodes.deleteNode({ id: `${run}-${String(i).padStart(2, "0")}` })).rejects.toThrow();
  }
  await signIn(page, undefined, "/audit");
  await page.getByRole("textbox", { name: "Search" }).fill(run);
  const pager = page.getByRole("navigation", { name: "Audit log pages" });
  await expect(pager).toContainText("Page 1, 50 matching entries");
  // Newest first: the last delete leads the first page, the first one is on the second.
  await expect(page.getByRole("cell", { name: `${run}-59`, exact: true })).toBeVisible();
  await pager.getByRole("button", { name: "Next page" }).click();
  await expect(pager).toContainText("Page 2, 10 matching entries");
  await expect(page.getByRole("cell", { name: `${run}-00`, exact: true })).toBeVisible();
  await expect(pager.getByRole("button", { name: "Next page" })).toBeDisabled();
  await pager.getByRole("button", { name: "Previous page" }).click();
  await expect(pager).toContainText("Page 1, 50 matching entries");

  // Another filter starts again at the first page.
  await page.getByRole("textbox", { name: "Result" }).click();
  await page.getByRole("option", { name: "Succeeded" }).click();
  await expect(page.getByText("No matching audit entries")).toBeVisible();
  await page.getByRole("textbox", { name: "Result" }).click();
  await page.getByRole("option", { name: "Refused or failed" }).click();
  await expect(pager).toContainText("Page 1, 50 matching entries");
});
