// The test object every spec uses: baseURL points at the dashboard the
// global setup started, `api` is an admin client, and signIn fills the
// sign-in form the way a person would.
import { test as base, expect, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { clients, type Api } from "./api";

export const test = base.extend<{ api: Api; dataDir: string }>({
  baseURL: async ({}, use) => use(process.env.QUARRY_UI_URL),
  api: async ({}, use) => use(clients()),
  dataDir: async ({}, use) => use(process.env.QUARRY_DATA_DIR!),
});
export { expect };

export const adminToken = () => process.env.QUARRY_ADMIN_TOKEN!;

export async function signIn(page: Page, token = adminToken(), path = "/") {
  await page.goto(path);
  await page.getByLabel("Token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
}

/** Clicks a link of the main navigation (opening it first on narrow screens). */
export async function navigate(page: Page, name: string) {
  const nav = page.getByRole("navigation", { name: "Main" });
  // Below Mantine's "sm" breakpoint the navigation hides behind a burger.
  if ((page.viewportSize()?.width ?? 1280) < 768) {
    await page.getByRole("button", { name: "Toggle navigation" }).click();
  }
  await nav.getByRole("link", { name, exact: true }).click();
  await expect(page.getByRole("heading", { level: 1, name })).toBeVisible();
}

/** Fails on serious or critical axe-core violations of the current page. */
export async function expectAccessible(page: Page, what: string) {
  const res = await new AxeBuilder({ page }).analyze();
  const bad = res.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const text = bad.map((v) => `${v.id} (${v.impact}): ${v.help}\n  ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join("\n  ")}`).join("\n");
  expect(bad, `${what}: axe violations\n${text}`).toEqual([]);
}
