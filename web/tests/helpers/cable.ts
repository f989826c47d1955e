// A network cable between the browser and the quarry server that a test
// can pull: a TCP proxy that counts the bytes the browser sends through
// it and, on cut(), resets every connection open at that moment, as a
// link going down mid-request does. Connections made afterwards go
// through again.
import { createServer, connect, type Socket } from "node:net";

export type Cable = {
  /** The server's URL through the cable. */
  url: string;
  /** Bytes the browser has sent through the cable so far. */
  sent: () => number;
  /** Resets every open connection; returns how many there were. */
  cut: () => number;
  close: () => Promise<void>;
};

export async function cable(target: string): Promise<Cable> {
  const to = new URL(target);
  const open = new Set<Socket>();
  let sent = 0;
  const server = createServer((browser) => {
    const upstream = connect(Number(to.port), to.hostname);
    open.add(browser);
    open.add(upstream);
    browser.on("data", (b: Buffer) => {
      sent += b.length;
    });
    browser.pipe(upstream);
    upstream.pipe(browser);
    const end = () => {
      open.delete(browser);
      open.delete(upstream);
      browser.destroy();
      upstream.destroy();
    };
    for (const s of [browser, upstream]) {
      s.on("error", end);
      s.on("close", end);
    }
  });
  await new Promise<void>((res) => server.listen(0, "127.0.0.1", res));
  const addr = server.address();
  if (!addr || typeof addr !== "object") throw new Error("the cable has no address");
  return {
    url: `http://127.0.0.1:${addr.port}`,
    sent: () => sent,
    cut: () => {
      const n = open.size;
      for (const s of [...open]) s.resetAndDestroy();
      open.clear();
      return n;
    },
    close: () =>
      new Promise<void>((res) => {
        for (const s of open) s.destroy();
        server.close(() => res());
      }),
  };
}
