import { test, expect, signIn, navigate, expectAccessible } from "./helpers/fixtures";
import { clients, eventually, localPool } from "./helpers/api";
import { addIsoToLocalPool } from "./helpers/images";
import { startOrigin } from "./helpers/origin";
import { JobState } from "../src/gen/quarry/v1/job_pb";

// Pages with something in them: an ISO and a finished download.
test.beforeAll(async () => {
  const api = clients();
  await addIsoToLocalPool(api, process.env.QUARRY_DATA_DIR!, `a11y-${Date.now()}.iso`);
  const origin = await startOrigin();
  try {
    const { job } = await api.images.downloadImage({ url: `${origin.url}/a11y-${Date.now()}.img?size=1048576&rate=67108864`, storagePoolId: (await localPool(api)).id });
    await eventually(async () => ((await api.jobs.getJob({ id: job!.id })).job?.state === JobState.SUCCEEDED ? true : undefined), "download done");
  } finally {
    await origin.close();
  }
});

const pages = ["Overview", "Images", "Jobs", "Catalog", "Nodes", "Pools", "Tokens", "Audit"];

test("sign-in page is accessible", async ({ page }) => {
  await page.goto("/");
  await expect(page.getByRole("button", { name: "Sign in" })).toBeVisible();
  await expectAccessible(page, "sign-in");
});

for (const [label, viewport, scheme] of [
  ["1280×800, light", { width: 1280, height: 800 }, "light"],
  ["390 px, dark", { width: 390, height: 844 }, "dark"],
] as const) {
  test(`every page is accessible and keyboard-reachable at ${label}`, async ({ page }) => {
    await page.setViewportSize(viewport);
    await page.emulateMedia({ colorScheme: scheme });
    await signIn(page);
    for (const name of pages) {
      await navigate(page, name);
      await expect(page.locator(".mantine-Loader-root")).toHaveCount(0);
      await expectAccessible(page, `${name} (${label})`);
      // Nothing wider than the screen but the tables' own scrolling regions.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      expect(overflow, `${name} scrolls sideways at ${label}`).toBeLessThanOrEqual(1);
    }
    await navigate(page, "Images");
    await page.getByRole("button", { name: "Download…" }).click();
    await expect(page.getByRole("dialog", { name: "Download an image" })).toBeVisible();
    await expectAccessible(page, `download dialog (${label})`);
    await page.keyboard.press("Escape");
    await expect(page.getByRole("dialog")).toHaveCount(0);
  });
}

test("the sign-in form and navigation work with the keyboard alone", async ({ page }) => {
  await page.goto("/images");
  await page.getByLabel("Token").focus();
  await page.keyboard.type(process.env.QUARRY_ADMIN_TOKEN!);
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { level: 1, name: "Images" })).toBeVisible();
  const jobs = page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs", exact: true });
  for (let i = 0; i < 30 && !(await jobs.evaluate((el) => el === document.activeElement)); i++) await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { level: 1, name: "Jobs" })).toBeVisible();
});
