import { test, expect, signIn } from "./helpers/fixtures";
import { startOrigin, type Origin } from "./helpers/origin";
import { localPool, eventually } from "./helpers/api";
import { createMountedPool } from "./helpers/pools";
import { JobState } from "../src/gen/quarry/v1/job_pb";
import { ImageState } from "../src/gen/quarry/v1/image_pb";

let origin: Origin;
test.beforeAll(async () => {
  origin = await startOrigin();
});
test.afterAll(async () => origin?.close());

test("Copy to pool… copies a READY image into another pool and follows the copy job", async ({ page, api }) => {
  const file = `copy-${Date.now()}.img`;
  const local = await localPool(api);
  const { job, image } = await api.images.downloadImage({ url: `${origin.url}/${file}?size=${2 * 1024 * 1024}`, storagePoolId: local.id });
  await eventually(async () => ((await api.jobs.getJob({ id: job!.id })).job?.state === JobState.SUCCEEDED ? true : undefined), "download done");
  const target = `copies-${Date.now()}`;
  const { pool } = await createMountedPool(api, target);

  await signIn(page, undefined, `/images/${image!.id}`);
  await page.getByRole("dialog", { name: file }).getByRole("button", { name: "Copy to pool…" }).click();
  const dialog = page.getByRole("dialog", { name: "Copy to pool" });
  await dialog.getByRole("button", { name: "Start copy" }).click();
  await expect(dialog.getByText("Choose a pool.")).toBeVisible();
  await dialog.getByRole("textbox", { name: "Target pool" }).click();
  await page.getByRole("option", { name: new RegExp(`^${target} — mounted on dev`) }).click();
  await dialog.getByRole("button", { name: "Start copy" }).click();
  await page.getByRole("link", { name: "Follow the copy" }).click();
  await expect(page).toHaveURL(/\/jobs\/job-/);
  await expect(page.getByRole("dialog", { name: "Job" })).toContainText(/copied from image .* locally/, { timeout: 30_000 });

  const { images } = await api.images.listImages({ storagePoolId: pool.id });
  expect(images).toHaveLength(1);
  expect(images[0].state).toBe(ImageState.READY);
  expect(images[0].digest).toBe((await api.images.getImage({ id: image!.id })).image?.digest);
});
