// Prints the gzipped size of the JavaScript the first page load needs
// (the entry script and its modulepreloads), and fails above the budget.
import { readFileSync, readdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";

const dist = new URL("../dist/", import.meta.url).pathname;
const budget = 350 * 1024;
const html = readFileSync(join(dist, "index.html"), "utf8");
const initial = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.js)"/g)].map((m) => m[1]);
const gz = (f) => gzipSync(readFileSync(join(dist, f)), { level: 9 }).length;
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
let total = 0;
for (const f of initial) total += gz(f);
const all = readdirSync(join(dist, "assets")).filter((f) => f.endsWith(".js"));
let lazy = 0;
for (const f of all) if (!initial.includes(`assets/${f}`)) lazy += gz(`assets/${f}`);
const css = readdirSync(join(dist, "assets")).filter((f) => f.endsWith(".css")).reduce((s, f) => s + gz(`assets/${f}`), 0);
console.log(`initial JavaScript: ${kib(total)} gzipped (${initial.length} file(s); budget ${kib(budget)}); lazy pages: ${kib(lazy)}; CSS: ${kib(css)}`);
if (total > budget) {
  console.error("initial JavaScript is over budget");
  process.exit(1);
}
