// Single sign-on through a real OpenID Connect provider: the global setup
// starts the test identity provider (internal/oidctest: mockoidc behind a
// sign-in page where the browser picks its user) and a second `quarry
// server --dev` that signs dashboard users in with it (QUARRY_SSO_URL),
// groups mapped to roles as helpers/sso.ts says. Nothing here is faked:
// the browser goes to the provider and back, and the server exchanges the
// code and verifies the ID token.
import { test, expect, navigate } from "./helpers/fixtures";
import { providerButton, ssoGroups, ssoURL, ssoUsers, type SSOUser } from "./helpers/sso";
import type { Page } from "@playwright/test";

/** Clicks "Sign in with SSO" on the sign-in page of path and signs in at the provider as u. */
async function signInWithSSO(page: Page, u: SSOUser, path: string) {
  await page.goto(ssoURL(path));
  await page.getByRole("link", { name: "Sign in with SSO" }).click();
  await expect(page.getByRole("heading", { name: "Test identity provider" })).toBeVisible();
  expect(new URL(page.url()).origin, "the sign-in page is the provider's").not.toBe(new URL(ssoURL()).origin);
  await page.getByRole("button", { name: providerButton(u) }).click();
}

test("without single sign-on the sign-in page has no SSO button", async ({ page }) => {
  await page.goto("/nodes");
  await expect(page.getByRole("button", { name: "Sign in", exact: true })).toBeVisible();
  await expect(page.getByRole("link", { name: "Sign in with SSO" })).toHaveCount(0);
});

test("an admin signs in at the identity provider and comes back to the page, signed in as admin", async ({ page }) => {
  const u = ssoUsers.admin;
  await signInWithSSO(page, u, "/images?node=dev");
  await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
  await expect(page.getByRole("heading", { level: 1, name: "Images" })).toBeVisible();
  expect(page.url()).toBe(ssoURL("/images?node=dev"));
  await expect(page.getByText(`sso ${u.email} (sub ${u.subject}) · admin`)).toBeVisible();
  const session = (await page.context().cookies(ssoURL())).find((c) => c.name === "quarry_session");
  expect(session?.httpOnly, "an HttpOnly session cookie").toBe(true);

  // The sign-in is a token of kind SSO with the mapped role.
  await navigate(page, "Tokens");
  const row = page.getByRole("row").filter({ hasText: `${u.email} (sub ${u.subject}) (this session)` });
  await expect(row.getByRole("cell").nth(1)).toHaveText("SSO");
  await expect(row.getByRole("cell").nth(2)).toHaveText("Admin");

  await page.reload();
  await expect(page.getByRole("heading", { level: 1, name: "Tokens" })).toBeVisible();
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByRole("link", { name: "Sign in with SSO" })).toBeVisible();
});

test("a member of the viewer group signs in as a viewer", async ({ page }) => {
  const u = ssoUsers.viewer;
  await signInWithSSO(page, u, "/tokens");
  await expect(page.getByText(`sso ${u.email} (sub ${u.subject}) · viewer`)).toBeVisible();
  await expect(page.getByRole("button", { name: "Create token…" })).toHaveCount(0);
});

test("a user in no mapped group is refused with a page that says why, and gets no session", async ({ page }) => {
  const u = ssoUsers.unmapped;
  await signInWithSSO(page, u, "/");
  await expect(page.getByRole("heading", { name: "No access to Quarry" })).toBeVisible();
  await expect(page.getByText(`You are signed in at the identity provider as ${u.email} (sub ${u.subject})`)).toContainText(
    `none of your groups is one Quarry grants a role to (${ssoGroups.admin}, ${ssoGroups.viewer})`,
  );
  expect((await page.context().cookies(ssoURL())).map((c) => c.name)).not.toContain("quarry_session");
  await page.getByRole("link", { name: "Back to the sign-in page" }).click();
  await expect(page.getByRole("link", { name: "Sign in with SSO" })).toBeVisible();
});
