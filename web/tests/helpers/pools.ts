import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, devNode, type Api } from "./api";

/** A pool in a fresh directory on the dev node, once the node mounts it. */
export async function createMountedPool(api: Api, name: string) {
  const dir = mkdtempSync(join(tmpdir(), `quarry-${name}-`));
  const dev = await devNode(api);
  const { pool } = await api.pools.createPool({ name, path: dir, assignedNodeIds: [dev.id] });
  await eventually(async () => {
    const { pool: p } = await api.pools.getPool({ id: pool!.id });
    return p?.nodes.some((m) => m.mounted) ? true : undefined;
  }, `pool ${name} mounted`);
  return { pool: pool!, dir };
}

/** A pool at a path no node has: scans skip it and say why. */
export async function createUnreachablePool(api: Api, name: string) {
  const dev = await devNode(api);
  const { pool } = await api.pools.createPool({ name, path: `/nonexistent/${name}`, assignedNodeIds: [dev.id] });
  return pool!;
}
