// A network cable between the browser and the quarry server that a test
// can pull: a TCP proxy that counts the bytes the browser sends through
// it. holdAt() stops the browser's bytes at an exact count until
// release(), so that a test acts at that point and not some way past it;
// cut() resets every connection open at that moment, as a link going down
// mid-request does (connections made afterwards go through again); slow()
// caps what the browser may send.
import { createServer, connect, type Socket } from "node:net";

export type Cable = {
  /** The server's URL through the cable. */
  url: string;
  /** Bytes the browser has sent through the cable so far. */
  sent: () => number;
  /** Resolves once the browser has sent n bytes; what it sends next waits for release(). */
  holdAt: (n: number) => Promise<void>;
  release: () => void;
  /** Resets every open connection; returns how many there were. */
  cut: () => number;
  /** Lets the browser send at most bytesPerSecond from now on, over all connections. */
  slow: (bytesPerSecond: number) => void;
  close: () => Promise<void>;
};

export async function cable(target: string): Promise<Cable> {
  const to = new URL(target);
  const open = new Set<Socket>();
  let sent = 0;
  let rate = 0; // bytes a second; 0: no cap
  let free = 0; // when the cap lets the next byte through (ms)
  let hold: { at: number; reached: () => void } | null = null;
  let held: Socket[] = [];
  const server = createServer((browser) => {
    const upstream = connect(Number(to.port), to.hostname);
    open.add(browser);
    open.add(upstream);
    // What the browser sends waits for the server to take it and, under
    // a cap, for its time; past a hold, for the release.
    browser.on("data", (b: Buffer) => {
      sent += b.length;
      const drained = upstream.write(b);
      if (hold && sent >= hold.at) {
        hold.reached();
        browser.pause();
        held.push(browser);
        return;
      }
      let wait = 0;
      if (rate > 0) {
        const now = Date.now();
        free = Math.max(free, now) + (b.length / rate) * 1000;
        // Timers are not finer than milliseconds: the cap waits once it is
        // 20 ms ahead, and the waits add up to the rate.
        if (free - now > 20) wait = free - now;
      }
      if (drained && wait === 0) return;
      browser.pause();
      const go = () => setTimeout(() => browser.resume(), wait);
      if (drained) go();
      else upstream.once("drain", go);
    });
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
    holdAt: (n) => new Promise<void>((reached) => (hold = { at: n, reached })),
    release: () => {
      hold = null;
      for (const s of held) s.resume();
      held = [];
    },
    cut: () => {
      const n = open.size;
      for (const s of [...open]) s.resetAndDestroy();
      open.clear();
      return n;
    },
    slow: (bytesPerSecond) => {
      rate = bytesPerSecond;
    },
    close: () =>
      new Promise<void>((res) => {
        for (const s of open) s.destroy();
        server.close(() => res());
      }),
  };
}
