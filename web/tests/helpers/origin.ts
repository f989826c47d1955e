// A local HTTP origin serving generated files at a limited rate, so a
// download's progress is visible: GET /<name>?size=BYTES&rate=BYTES_PER_S.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export type Origin = { url: string; close: () => Promise<void> };

export async function startOrigin(): Promise<Origin> {
  const sockets = new Set<import("node:net").Socket>();
  const server: Server = createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    const size = Number(u.searchParams.get("size") ?? 4 * 1024 * 1024);
    const rate = Number(u.searchParams.get("rate") ?? 1024 * 1024);
    let start = 0;
    const range = req.headers.range?.match(/^bytes=(\d+)-$/);
    if (range) start = Math.min(Number(range[1]), size);
    const headers: Record<string, string | number> = {
      "Content-Type": "application/octet-stream",
      "Content-Length": size - start,
      "Accept-Ranges": "bytes",
      "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
      ETag: `"${size}"`,
    };
    if (range) headers["Content-Range"] = `bytes ${start}-${size - 1}/${size}`;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === "HEAD") return res.end();
    const chunk = 16 * 1024;
    const interval = Math.max(5, (chunk / rate) * 1000);
    let sent = start;
    const buf = Buffer.alloc(chunk, 0x51);
    const tick = () => {
      if (res.destroyed) return;
      if (sent >= size) return res.end();
      const n = Math.min(chunk, size - sent);
      sent += n;
      const ok = res.write(n === chunk ? buf : buf.subarray(0, n));
      if (ok) setTimeout(tick, interval);
      else res.once("drain", () => setTimeout(tick, interval));
    };
    tick();
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
