import { test, expect, signIn } from "./helpers/fixtures";
import { startOrigin, type Origin } from "./helpers/origin";
import { localPool, eventually } from "./helpers/api";
import { JobState } from "../src/gen/quarry/v1/job_pb";

let origin: Origin;
test.beforeAll(async () => {
  origin = await startOrigin();
});
test.afterAll(async () => origin?.close());

test("a download from a local origin shows progress, ends Ready and links to its image", async ({ page }) => {
  const file = `dl-${Date.now()}.img`;
  await signIn(page, undefined, "/images");
  await page.getByRole("button", { name: "Download…" }).click();
  const dialog = page.getByRole("dialog", { name: "Download an image" });
  await dialog.getByRole("radiogroup", { name: "Source" }).getByText("URL").click();
  await dialog.getByRole("textbox", { name: "URL", exact: true }).fill(`${origin.url}/${file}?size=${6 * 1024 * 1024}&rate=${1024 * 1024}`);
  await dialog.getByRole("textbox", { name: "Pool" }).click();
  await page.getByRole("option", { name: /^local — mounted on dev/ }).click();
  await dialog.getByRole("button", { name: "Start download" }).click();
  await page.getByRole("link", { name: "Follow the job" }).click();
  await expect(page).toHaveURL(/\/jobs\/job-/);
  await page.getByRole("dialog", { name: "Job" }).getByRole("button", { name: "Close" }).click();
  await expect(page).toHaveURL(/\/jobs$/);

  // The bar in the job's row moves: its percentage grows while it runs.
  const bar = page.getByRole("row").filter({ hasText: file }).getByRole("progressbar", { name: `Progress of ${file}` });
  const percent = async () => Number((await bar.getAttribute("aria-valuenow")) ?? -1);
  await expect.poll(percent).toBeGreaterThan(0);
  const first = await percent();
  expect(first).toBeLessThan(100);
  await expect.poll(percent).toBeGreaterThan(first);
  const row = page.getByRole("row").filter({ hasText: file });
  await expect(row.getByText("Succeeded", { exact: true })).toBeVisible({ timeout: 30_000 });
  await row.getByRole("link", { name: file, exact: true }).click();
  await expect(page).toHaveURL(/\/images\/img-/);
  await expect(page.getByRole("dialog", { name: file })).toContainText("Ready");
});

test("cancel a running download", async ({ page, api }) => {
  const file = `slow-${Date.now()}.img`;
  const pool = await localPool(api);
  const { job } = await api.images.downloadImage({ url: `${origin.url}/${file}?size=${256 * 1024 * 1024}&rate=${256 * 1024}`, storagePoolId: pool.id });
  await eventually(async () => ((await api.jobs.getJob({ id: job!.id })).job?.state === JobState.RUNNING ? true : undefined), "job running");
  await signIn(page, undefined, "/jobs");
  await page.getByRole("button", { name: `Cancel job ${file}` }).click();
  const dialog = page.getByRole("dialog", { name: "Cancel job" });
  await dialog.getByRole("button", { name: "Cancel job" }).click();
  const row = page.getByRole("row").filter({ hasText: file });
  await expect(row.getByText("Cancelled", { exact: true })).toBeVisible();
  await expect(row.getByRole("button", { name: `Cancel job ${file}` })).toHaveCount(0);
});
