import { test, expect, signIn } from "./helpers/fixtures";
import { createMountedPool, createUnreachablePool } from "./helpers/pools";

test("a node's pools show their names in full, mounted or not", async ({ page, api }) => {
  // Enough pools that the Pools column must share the row's width.
  const n = Date.now() % 100000;
  const names = [`nodes-a${n}`, `nodes-b${n}`];
  const mounted = await Promise.all(names.map((name) => createMountedPool(api, name)));
  const unreachable = await createUnreachablePool(api, `nodes-gone${n}`);
  try {
    await signIn(page, undefined, "/nodes");
    const row = page.getByRole("row").filter({ has: page.getByRole("link", { name: "dev", exact: true }) });
    for (const name of [...names, "local"]) await expect(row.getByLabel(new RegExp(`^${name}: mounted`))).toHaveText(name);
    await expect(row.getByLabel(new RegExp(`^nodes-gone${n}: not mounted`))).toHaveText(`nodes-gone${n} ✕`);
    // Nothing cut off: every badge's label is as wide as its text.
    const labels = row.locator(".mantine-Badge-label");
    expect(await labels.count()).toBeGreaterThanOrEqual(4);
    const clipped = await labels.evaluateAll((els) => els.filter((e) => e.scrollWidth > e.clientWidth).map((e) => e.textContent));
    expect(clipped).toEqual([]);
  } finally {
    for (const { pool } of mounted) await api.pools.deletePool({ id: pool.id });
    await api.pools.deletePool({ id: unreachable.id });
  }
});
