// Writes the README's screenshots to docs/ from a real server with real
// data: an ISO, a finished and a running download.
import { join, resolve } from "node:path";
import { test, expect, signIn } from "./helpers/fixtures";
import { eventually, localPool } from "./helpers/api";
import { addIsoToLocalPool } from "./helpers/images";
import { startOrigin, type Origin } from "./helpers/origin";
import { JobState } from "../src/gen/quarry/v1/job_pb";

const docs = resolve(import.meta.dirname, "../../docs");
let origin: Origin;
test.beforeAll(async () => {
  origin = await startOrigin();
});
test.afterAll(async () => origin?.close());

test("README screenshots", async ({ page, api, dataDir }) => {
  // Only what the pictures are about: the other specs' images go.
  for (const img of (await api.images.listImages({ pageSize: 1000 })).images) await api.images.deleteImage({ id: img.id }).catch(() => undefined);
  await addIsoToLocalPool(api, dataDir, "ubuntu-24.04.1-live-server-amd64.iso");
  const pool = await localPool(api);
  const done = await api.images.downloadImage({ url: `${origin.url}/debian-12-genericcloud-amd64.qcow2?size=3145728&rate=67108864`, storagePoolId: pool.id });
  await eventually(async () => ((await api.jobs.getJob({ id: done.job!.id })).job?.state === JobState.SUCCEEDED ? true : undefined), "download done");
  const running = await api.images.downloadImage({ url: `${origin.url}/noble-server-cloudimg-amd64.img?size=${512 * 1024 * 1024}&rate=${2 * 1024 * 1024}`, storagePoolId: pool.id });

  await page.setViewportSize({ width: 1280, height: 800 });
  await signIn(page, undefined, "/images");
  await expect(page.getByRole("link", { name: "ubuntu-24.04.1-live-server-amd64.iso" })).toBeVisible();
  await page.screenshot({ path: join(docs, "dashboard-images.png") });

  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs", exact: true }).click();
  await expect(page.getByRole("progressbar", { name: "Progress of noble-server-cloudimg-amd64.img" })).toHaveAttribute("aria-valuenow", /^[1-9]/);
  await page.screenshot({ path: join(docs, "dashboard-jobs.png") });
  await api.jobs.cancelJob({ id: running.job!.id });

  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Nodes", exact: true }).click();
  await expect(page.getByRole("link", { name: "dev", exact: true })).toBeVisible();
  await page.screenshot({ path: join(docs, "dashboard-nodes.png") });
});
