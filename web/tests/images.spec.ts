import { existsSync, mkdirSync, renameSync } from "node:fs";
import { join } from "node:path";
import { test, expect, signIn } from "./helpers/fixtures";
import { writeIso, stageIso } from "./helpers/iso";
import { eventually } from "./helpers/api";
import { addIsoToLocalPool } from "./helpers/images";
import { createMountedPool, createUnreachablePool } from "./helpers/pools";

test("an ISO copied into the pool appears without a reload", async ({ page, dataDir }) => {
  await signIn(page, undefined, "/images");
  await expect(page.getByRole("status").filter({ hasText: "Live" })).toBeVisible();
  const name = `live-${Date.now()}.iso`;
  writeIso(join(dataDir, "pools/local/iso", name), "LIVE");
  await expect(page.getByRole("link", { name, exact: true })).toBeVisible();
});

test("Scan ISOs reports what it discovered, then nothing new, and each skipped pool with its reason", async ({ page, api }) => {
  // A pool whose iso/ directory the agent's watch no longer sees: the
  // watched directory is moved aside (the watch follows it) and a new,
  // unwatched iso/ takes its place. Only a scan finds files put there.
  const { dir } = await createMountedPool(api, `scan-${Date.now() % 100000}`);
  const probe = "probe.iso";
  writeIso(join(dir, "iso", probe), "PROBE");
  await eventually(async () => (await api.images.listImages({ search: probe, pageSize: 1000 })).images.find((i) => i.path === `iso/${probe}` && i.storagePoolName.startsWith("scan-")), "the probe ISO through the watch", 30_000);
  renameSync(join(dir, "iso"), join(dir, "iso-watched"));
  mkdirSync(join(dir, "iso"));
  const ghost = await createUnreachablePool(api, `ghost-${Date.now() % 100000}`);

  await signIn(page, undefined, "/images");
  const name = `scanned-${Date.now()}.iso`;
  stageIso(join(dir, "iso"), name, "SCANNED");
  await page.getByRole("button", { name: "Scan ISOs" }).click();
  await expect(page.getByText("Discovered 1 new ISO(s)")).toBeVisible();
  await expect(page.getByRole("link", { name, exact: true })).toBeVisible();
  const skipped = page.getByRole("alert").filter({ hasText: "Pools skipped by the last scan" });
  await expect(skipped).toContainText(ghost.name);
  await expect(skipped.getByRole("listitem").filter({ hasText: ghost.name })).toHaveText(new RegExp(`${ghost.name}: \\S+`));

  await page.getByRole("button", { name: "Scan ISOs" }).click();
  await expect(page.getByText("No new ISOs found")).toBeVisible();
});

test("delete an image with a confirmation naming its file and pool", async ({ page, api, dataDir }) => {
  const name = `doomed-${Date.now()}.iso`;
  await addIsoToLocalPool(api, dataDir, name);
  await signIn(page, undefined, "/images");
  await page.getByLabel("Search").fill("doomed");
  await page.getByRole("button", { name: `Delete ${name}` }).click();
  const dialog = page.getByRole("dialog", { name: "Delete image" });
  await expect(dialog).toContainText(`iso/${name}`);
  await expect(dialog).toContainText("local");
  await dialog.getByRole("button", { name: "Delete image" }).click();
  await expect(dialog).toBeHidden();
  await expect(page.getByRole("link", { name, exact: true })).toHaveCount(0);
  expect(existsSync(join(dataDir, "pools/local/iso", name))).toBe(false);
});

test("the details drawer shows everything about an image", async ({ page, api, dataDir }) => {
  const name = `detail-${Date.now()}.iso`;
  const img = await addIsoToLocalPool(api, dataDir, name);
  await signIn(page, undefined, `/images/${img.id}`);
  const drawer = page.getByRole("dialog", { name });
  await expect(drawer.getByRole("table", { name: "Image details" })).toContainText(`iso/${name}`);
  await expect(drawer).toContainText("discovered");
  await page.keyboard.press("Escape");
  await expect(page).toHaveURL(/\/images$/);
});
