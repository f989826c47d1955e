import { join } from "node:path";
import { eventually, type Api } from "./api";
import { writeIso } from "./iso";

/** Writes an ISO into the dev pool "local" and waits until the API lists it. */
export async function addIsoToLocalPool(api: Api, dataDir: string, name: string) {
  writeIso(join(dataDir, "pools/local/iso", name), name.replace(/\W/g, "").slice(0, 16));
  return eventually(async () => (await api.images.listImages({ search: name, pageSize: 1000 })).images.find((i) => i.name === name), `image ${name}`);
}
