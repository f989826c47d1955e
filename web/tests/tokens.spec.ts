import { test, expect, signIn } from "./helpers/fixtures";

test("creating a token shows its secret once, with a copy button; revoking it shows in the list", async ({ page, context }) => {
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  const name = `ci-${Date.now()}`;
  await signIn(page, undefined, "/tokens");
  await page.getByRole("button", { name: "Create token…" }).click();
  const dialog = page.getByRole("dialog", { name: "Create a token" });
  await dialog.getByRole("textbox", { name: "Name" }).fill(name);
  await dialog.getByRole("textbox", { name: "Role" }).click();
  await page.getByRole("option", { name: /^Operator/ }).click();
  await dialog.getByRole("button", { name: "Create token" }).click();

  await expect(dialog.getByText("shown only now")).toBeVisible();
  const secret = (await dialog.getByTestId("secret").textContent())!.trim();
  expect(secret).toMatch(/^qk_/);
  await dialog.getByRole("button", { name: "Copy" }).click();
  await expect(dialog.getByRole("button", { name: "Copied" })).toBeVisible();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(secret);
  await dialog.getByRole("button", { name: "Done" }).click();

  const row = page.getByRole("row").filter({ hasText: name });
  await expect(row).toContainText("Operator");
  await expect(page.getByText(secret)).toHaveCount(0);
  await page.reload();
  await expect(page.getByRole("row").filter({ hasText: name })).toBeVisible();
  await expect(page.getByText(secret)).toHaveCount(0);

  await page.getByRole("button", { name: `Revoke token ${name}` }).click();
  await page.getByRole("dialog", { name: "Revoke token" }).getByRole("button", { name: "Revoke token" }).click();
  await expect(page.getByRole("row").filter({ hasText: name })).toContainText("revoked");
});

test("a not-enrolled node shows the agent command, and an admin makes its join token", async ({ page, api }) => {
  const node = `n${Date.now() % 100000}`;
  await api.nodes.registerNode({ name: node, managementAddress: "127.0.0.9:9555" });
  await signIn(page, undefined, `/nodes/${node}`);
  await expect(page.getByRole("heading", { name: "Not enrolled" })).toBeVisible();
  await expect(page.getByText(`--name ${node} --listen :9555`)).toBeVisible();
  await page.getByRole("button", { name: `Create join token for ${node}` }).click();
  const cmd = page.getByTestId("secret").filter({ hasText: "quarry agent" });
  await expect(cmd).toContainText(/--join-token qj_\S+ --ca-hash sha256:[0-9a-f]{64} --name/);
});
