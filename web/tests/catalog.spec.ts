import { test, expect, signIn, navigate } from "./helpers/fixtures";
import { eventually, localPool } from "./helpers/api";
import { JobState } from "../src/gen/quarry/v1/job_pb";

// A catalog image in a pool shows up under "In pools" with its current
// build, and an operator can ask for a check for a new build.
test("the catalog page shows catalog images in pools and checks one on demand", async ({ page, api }) => {
  const entry = process.env.QUARRY_CATALOG_ENTRY;
  test.skip(!entry, "needs the server the global setup starts, with its catalog file");
  const pool = await localPool(api);
  const { job } = await api.images.downloadImage({ catalogId: entry!, storagePoolId: pool.id });
  if (job) await eventually(async () => ((await api.jobs.getJob({ id: job.id })).job?.state === JobState.SUCCEEDED ? true : undefined), "download done");

  await signIn(page);
  await navigate(page, "Catalog");
  await expect(page.getByRole("heading", { name: "In pools" })).toBeVisible();
  await expect(page.getByText(/Upstream is checked every 6 h for new builds; 2 builds are kept per pool/)).toBeVisible();
  const table = page.getByRole("region", { name: "Catalog images in pools" });
  const row = table.getByRole("row").filter({ hasText: entry! });
  await expect(row).toContainText(pool.name);
  await expect(row).toContainText(`${entry}.img`);
  await expect(row).toContainText("upstream not checked yet");

  await row.getByRole("button", { name: `Check ${entry} for a new build now` }).click();
  await expect(page.getByText(`Checking ${entry} for a new build`)).toBeVisible();
  // The check finds the same file: nothing to download.
  await expect(row).toContainText("unchanged", { timeout: 20_000 });
});
