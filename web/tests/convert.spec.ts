import { test, expect, signIn } from "./helpers/fixtures";
import { startOrigin, type Origin } from "./helpers/origin";
import { localPool, eventually } from "./helpers/api";
import { JobState } from "../src/gen/quarry/v1/job_pb";
import { ImageState } from "../src/gen/quarry/v1/image_pb";

let origin: Origin;
test.beforeAll(async () => {
  origin = await startOrigin();
});
test.afterAll(async () => origin?.close());

test("convert a raw image to qcow2 from its drawer: the new image shows its format and virtual size", async ({ page, api }) => {
  const stem = `conv-${Date.now()}`;
  const pool = await localPool(api);
  const { job, image } = await api.images.downloadImage({ url: `${origin.url}/${stem}.img?size=${2 * 1024 * 1024}&rate=${64 * 1024 * 1024}`, storagePoolId: pool.id });
  await eventually(async () => ((await api.jobs.getJob({ id: job!.id })).job?.state === JobState.SUCCEEDED ? true : undefined), "download done");

  await signIn(page, undefined, `/images/${image!.id}`);
  const drawer = page.getByRole("dialog", { name: `${stem}.img` });
  await expect(drawer).toContainText("raw");
  await drawer.getByRole("button", { name: "Convert…" }).click();
  const dialog = page.getByRole("dialog", { name: `Convert ${stem}.img` });
  await expect(dialog.getByRole("textbox", { name: "Target format" })).toHaveValue("qcow2");
  await dialog.getByRole("button", { name: "Convert", exact: true }).click();
  await expect(page.getByText("Conversion started")).toBeVisible();

  const converted = await eventually(async () => {
    const im = (await api.images.listImages({})).images.find((i) => i.name === `${stem}.qcow2`);
    return im?.state === ImageState.READY ? im : undefined;
  }, "converted image READY");
  expect(converted.format).toBe("qcow2");
  expect(converted.virtualSizeBytes).toBe(BigInt(2 * 1024 * 1024));
  await page.goto(`/images/${converted.id}`);
  const fields = page.getByRole("dialog", { name: `${stem}.qcow2` });
  await expect(fields).toContainText("qcow2");
  await expect(fields).toContainText("2.00 MiB");
  await expect(fields).toContainText("converted");
});
