import { test, expect, signIn, adminToken } from "./helpers/fixtures";
import { createApiToken } from "./helpers/api";

test("a revoked session returns to sign-in with a message and comes back to the same page", async ({ page, api }) => {
  const op = await createApiToken(api, "operator");
  await signIn(page, op.secret, "/images");
  await expect(page.getByRole("heading", { level: 1, name: "Images" })).toBeVisible();
  await api.tokens.revokeToken({ id: op.id });
  // The next call the page makes is refused: open a page not shown yet.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Nodes", exact: true }).click();
  await expect(page.getByRole("button", { name: "Sign in" })).toBeVisible();
  await expect(page.getByText(/Your session has ended/)).toBeVisible();
  await expect(page).toHaveURL(/\/nodes$/);
  await page.getByLabel("Token").fill(adminToken());
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Nodes" })).toBeVisible();
});
