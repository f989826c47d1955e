// Real ISO 9660 files for the tests: 32 KiB of system area, then a
// primary volume descriptor (type 1, "CD001", version 1, volume id at
// offset 40) and a set terminator; 64 KiB or more in all.
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, renameSync, utimesSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function isoBytes(label: string, size = 64 * 1024): Buffer {
  const b = Buffer.alloc(Math.max(size, 64 * 1024));
  const pvd = 0x8000;
  b[pvd] = 1;
  b.write("CD001", pvd + 1, "ascii");
  b[pvd + 6] = 1;
  b.write(" ".repeat(32), pvd + 8, "ascii");
  b.write(label.toUpperCase().slice(0, 32).padEnd(32, " "), pvd + 40, "ascii");
  const term = pvd + 2048;
  b[term] = 255;
  b.write("CD001", term + 1, "ascii");
  b[term + 6] = 1;
  return b;
}

/** Writes and closes an ISO at path; returns the time it was closed. */
export function writeIso(path: string, label: string): number {
  const fd = openSync(path, "w");
  writeSync(fd, isoBytes(label));
  fsyncSync(fd);
  closeSync(fd);
  return Date.now();
}

/**
 * Moves a prepared file, last modified a minute ago as `cp -p` leaves it
 * (a scan leaves files written in the last seconds for later), into dir. Used with a pool's
 * iso/ directory swapped for an unwatched one (see images.spec.ts), so only
 * a scan can find the file.
 */
export function stageIso(dir: string, name: string, label: string) {
  const stage = mkdtempSync(join(tmpdir(), "quarry-iso-"));
  writeIso(join(stage, name), label);
  const past = new Date(Date.now() - 60_000);
  utimesSync(join(stage, name), past, past);
  mkdirSync(dir, { recursive: true });
  renameSync(join(stage, name), join(dir, name));
}
