import { test, expect, signIn, adminToken } from "./helpers/fixtures";

const nav: [string, string][] = [
  ["Overview", "/"],
  ["Images", "/images"],
  ["Jobs", "/jobs"],
  ["Catalog", "/catalog"],
  ["Nodes", "/nodes"],
  ["Pools", "/pools"],
  ["Tokens", "/tokens"],
  ["Audit", "/audit"],
];

test("a wrong token is refused with the server's message", async ({ page }) => {
  await page.goto("/");
  await expect(page.getByText("admin.token").first()).toBeVisible();
  await page.getByLabel("Token").fill("qk_not-a-real-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.locator("form")).toContainText(/token|refused|invalid/i);
  await expect(page.getByRole("button", { name: "Sign out" })).toHaveCount(0);
});

test("admin signs in, sees every page in the navigation, and signs out", async ({ page }) => {
  await signIn(page, adminToken(), "/nodes");
  await expect(page.getByRole("heading", { level: 1, name: "Nodes" })).toBeVisible();
  const main = page.getByRole("navigation", { name: "Main" });
  for (const [name, href] of nav) await expect(main.getByRole("link", { name, exact: true })).toHaveAttribute("href", href);
  await expect(page.getByRole("link", { name: "dev", exact: true })).toBeVisible();
  await page.reload();
  await expect(page.getByRole("heading", { level: 1, name: "Nodes" })).toBeVisible();
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByRole("button", { name: "Sign in" })).toBeVisible();
});
