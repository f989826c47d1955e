// Starts what the browser tests run against and puts its coordinates in
// the environment the workers inherit:
//   QUARRY_UI_URL    where the dashboard is served
//   QUARRY_API_URL   the quarry server
//   QUARRY_DATA_DIR  its data directory (admin token, pool "local")
//   QUARRY_SSO_URL   a second `quarry server --dev`, with single sign-on
//                    (its provider's users: helpers/sso.ts)
//
// By default it starts `quarry server --dev` on a free port with a fresh
// data directory: the binary from QUARRY_BIN, else built with `go build`.
// QUARRY_URL + QUARRY_DATA_DIR use a server that is already running.
// When the server does not serve this dashboard at / yet (no embedded
// bundle), `vite preview` serves web/dist and proxies the API to it.
//
// For single sign-on it starts, alongside, a real OpenID Connect provider
// (internal/oidctest/cmd/quarry-test-oidc: from QUARRY_OIDC_BIN, else
// built) and a second dev server on its own port and data directory that
// signs dashboard users in with it, mapping groups to roles.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ssoGroups, ssoUsers } from "./sso";
import { startOrigin, type Origin } from "./origin";

const webDir = resolve(import.meta.dirname, "../..");
const repoDir = resolve(webDir, "..");

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (a && typeof a === "object" ? res(a.port) : rej(new Error("no port"))));
    });
  });
}

/** Resolves with the first capture of re in the child's output. */
function waitForLine(child: ChildProcess, re: RegExp, what: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((res, rej) => {
    let out = "";
    const t = setTimeout(() => rej(new Error(`${what} did not start within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const on = (b: Buffer) => {
      out += b.toString();
      const m = out.match(re);
      if (m) {
        clearTimeout(t);
        res(m[1]);
      }
    };
    child.stdout?.on("data", on);
    child.stderr?.on("data", on);
    child.on("exit", (code) => {
      clearTimeout(t);
      rej(new Error(`${what} exited with ${code}:\n${out}`));
    });
  });
}

/** Starts `quarry server --dev` on a free port; resolves with its URL once it serves. */
async function startDevServer(bin: string, dataDir: string, extra: string[], what: string): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const child = spawn(bin, ["server", "--dev", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const url = (await waitForLine(child, /API and web page:\s+(http:\/\/\S+?)\/?\s/, what)).replace(/\/$/, "");
  child.stdout?.resume();
  child.stderr?.resume();
  return { child, url };
}

/** Builds (unless given) and starts the test identity provider, then a dev server signing users in with it. */
async function startSSO(bin: string, tmp: string): Promise<{ provider: ChildProcess; server: ChildProcess; url: string }> {
  let oidcBin = process.env.QUARRY_OIDC_BIN;
  if (!oidcBin) {
    oidcBin = join(tmp, "quarry-test-oidc");
    execFileSync("go", ["build", "-o", oidcBin, "./internal/oidctest/cmd/quarry-test-oidc"], { cwd: repoDir, stdio: "inherit" });
  }
  const users = Object.values(ssoUsers).flatMap((u) => ["--user", `${u.subject}:${u.email}:${u.groups.join(",")}`]);
  const provider = spawn(oidcBin, ["--listen", "127.0.0.1:0", ...users], { stdio: ["ignore", "pipe", "pipe"] });
  // It prints its coordinates once it listens.
  const line = await waitForLine(provider, /^(\{.*"issuer".*\})$/m, "the test identity provider", 20_000);
  provider.stdout?.resume();
  provider.stderr?.resume();
  const idp = JSON.parse(line) as { issuer: string; clientId: string; clientSecret: string };
  const secretFile = join(tmp, "oidc-client-secret");
  writeFileSync(secretFile, idp.clientSecret + "\n", { mode: 0o600 });
  try {
    const { child, url } = await startDevServer(bin, join(tmp, "sso-data"), [
      "--oidc-issuer", idp.issuer,
      "--oidc-client-id", idp.clientId,
      "--oidc-client-secret-file", secretFile,
      "--oidc-admin-group", ssoGroups.admin,
      "--oidc-viewer-group", ssoGroups.viewer,
    ], "quarry server with single sign-on");
    return { provider, server: child, url };
  } catch (e) {
    await stop(provider);
    throw e;
  }
}

async function servesDashboard(url: string): Promise<boolean> {
  try {
    const res = await fetch(url + "/");
    return res.ok && (await res.text()).includes('content="quarry-web"');
  } catch {
    return false;
  }
}

function stop(child: ChildProcess | undefined) {
  if (!child || child.exitCode !== null) return Promise.resolve();
  return new Promise<void>((res) => {
    const t = setTimeout(() => child.kill("SIGKILL"), 5000);
    child.on("exit", () => {
      clearTimeout(t);
      res();
    });
    child.kill("SIGTERM");
  });
}

export default async function globalSetup() {
  if (!existsSync(process.env.CHROMIUM ?? "/usr/bin/chromium"))
    throw new Error("Chromium is missing: apt-get install -y chromium (as root), or set CHROMIUM to a Chromium binary.");

  let server: ChildProcess | undefined;
  let preview: ChildProcess | undefined;
  let origin: Origin | undefined;
  let apiURL = process.env.QUARRY_URL?.replace(/\/$/, "");
  let dataDir = process.env.QUARRY_DATA_DIR;
  const tmp = mkdtempSync(join(tmpdir(), "quarry-web-e2e-"));
  let bin = process.env.QUARRY_BIN;
  if (!bin) {
    bin = join(tmp, "quarry");
    console.log(`building quarry into ${bin}`);
    execFileSync("go", ["build", "-o", bin, "./cmd/quarry"], { cwd: repoDir, stdio: "inherit" });
  }

  // The two servers and the identity provider start side by side.
  const sso = startSSO(bin, tmp);
  let ssoEnv: Awaited<typeof sso> | undefined;
  try {
    if (!apiURL) {
      dataDir = join(tmp, "data");
      // A catalog entry served by a local origin, for the catalog refresh
      // spec (QUARRY_CATALOG_ENTRY).
      origin = await startOrigin();
      const catalog = join(tmp, "catalog.json");
      writeFileSync(catalog, JSON.stringify({ entries: [{ id: "local-mirror", name: "Local mirror image", url: `${origin.url}/local-mirror.img?size=1048576&rate=67108864`, format: "raw" }] }));
      process.env.QUARRY_CATALOG_ENTRY = "local-mirror";
      let url: string;
      ({ child: server, url } = await startDevServer(bin, dataDir, ["--allow-loopback-urls", "--catalog", catalog], "quarry server"));
      apiURL = url;
    }
    ssoEnv = await sso;
  } catch (e) {
    await stop(server);
    await origin?.close();
    await sso.then((s) => Promise.all([stop(s.server), stop(s.provider)]), () => undefined);
    throw e;
  }
  if (!dataDir) throw new Error("QUARRY_URL needs QUARRY_DATA_DIR (the server's --data-dir)");

  let uiURL = apiURL;
  if (!(await servesDashboard(apiURL))) {
    if (!existsSync(join(webDir, "dist/index.html"))) throw new Error("web/dist is missing: run npm run build first");
    const port = await freePort();
    console.log(`${apiURL} does not serve the dashboard yet: serving web/dist with vite preview`);
    preview = spawn(join(webDir, "node_modules/.bin/vite"), ["preview", "--host", "127.0.0.1", "--port", String(port), "--strictPort"], {
      cwd: webDir,
      env: { ...process.env, QUARRY_API: apiURL },
      stdio: ["ignore", "pipe", "pipe"],
    });
    await waitForLine(preview, /(Local):/, "vite preview");
    preview.stdout?.resume();
    preview.stderr?.resume();
    uiURL = `http://127.0.0.1:${port}`;
  }

  process.env.QUARRY_UI_URL = uiURL;
  process.env.QUARRY_API_URL = apiURL;
  process.env.QUARRY_DATA_DIR = dataDir;
  process.env.QUARRY_ADMIN_TOKEN = readFileSync(join(dataDir, "admin.token"), "utf8").trim();
  process.env.QUARRY_SSO_URL = ssoEnv.url;
  console.log(`dashboard ${uiURL}, API ${apiURL}, data ${dataDir}; with single sign-on ${ssoEnv.url}`);

  return async () => {
    await stop(preview);
    await Promise.all([stop(server), stop(ssoEnv.server)]);
    await stop(ssoEnv.provider);
    await origin?.close();
    if (!process.env.QUARRY_KEEP) rmSync(tmp, { recursive: true, force: true });
  };
}
