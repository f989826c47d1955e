// The sign-in page offers single sign-on only when the server says it is
// configured (GET /auth/config). The flow itself, against a real OpenID
// Connect provider, is tested in Go: internal/e2e/oidc_test.go.
import { test, expect } from "./helpers/fixtures";

test("without single sign-on the sign-in page has no SSO button", async ({ page }) => {
  await page.goto("/nodes");
  await expect(page.getByRole("button", { name: "Sign in", exact: true })).toBeVisible();
  await expect(page.getByRole("link", { name: "Sign in with SSO" })).toHaveCount(0);
});

test("with single sign-on the button starts it and comes back to the page", async ({ page }) => {
  await page.route("**/auth/config", (route) => route.fulfill({ json: { sso: true } }));
  let started = "";
  await page.route("**/auth/oidc/login**", (route) => {
    started = route.request().url();
    return route.fulfill({ contentType: "text/html", body: "<h1>identity provider</h1>" });
  });
  await page.goto("/images?node=dev");
  await page.getByRole("link", { name: "Sign in with SSO" }).click();
  await expect(page.getByRole("heading", { name: "identity provider" })).toBeVisible();
  expect(new URL(started).searchParams.get("next")).toBe("/images?node=dev");
});
