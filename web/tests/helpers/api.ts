// Typed API clients for the tests, from the same generated code the
// dashboard uses, authenticated with a bearer token.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { NodeService } from "../../src/gen/quarry/v1/node_pb";
import { StoragePoolService } from "../../src/gen/quarry/v1/pool_pb";
import { ImageService } from "../../src/gen/quarry/v1/image_pb";
import { JobService } from "../../src/gen/quarry/v1/job_pb";
import { TokenService, Role, TokenKind } from "../../src/gen/quarry/v1/auth_pb";

export function clients(token = process.env.QUARRY_ADMIN_TOKEN!, baseUrl = process.env.QUARRY_API_URL!) {
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("Authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createConnectTransport({ baseUrl, interceptors: [bearer] });
  const c = <S extends DescService>(s: S): Client<S> => createClient(s, transport);
  return {
    nodes: c(NodeService),
    pools: c(StoragePoolService),
    images: c(ImageService),
    jobs: c(JobService),
    tokens: c(TokenService),
  };
}

export type Api = ReturnType<typeof clients>;

/** A new API token with this role; returns its secret and id. */
export async function createApiToken(api: Api, role: "viewer" | "operator" | "admin", name = `e2e-${role}-${Date.now()}`) {
  const r = { viewer: Role.VIEWER, operator: Role.OPERATOR, admin: Role.ADMIN }[role];
  const res = await api.tokens.createToken({ name, kind: TokenKind.API, role: r });
  return { secret: res.secret, id: res.token!.id, name };
}

/** Polls until f returns a value (API state, not the page; no fixed sleeps in page checks). */
export async function eventually<T>(f: () => Promise<T | undefined>, what: string, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function localPool(api: Api) {
  const { pools } = await api.pools.listPools({});
  const p = pools.find((x) => x.name === "local");
  if (!p) throw new Error("dev pool local not found");
  return p;
}

export async function devNode(api: Api) {
  const { nodes } = await api.nodes.listNodes({ search: "dev", pageSize: 1000 });
  const n = nodes.find((x) => x.name === "dev");
  if (!n) throw new Error("dev node not found");
  return n;
}
