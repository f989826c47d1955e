import { closeSync, mkdtempSync, openSync, rmSync, writeSync, ftruncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "@playwright/test";
import { test, expect, signIn, adminToken, navigate } from "./helpers/fixtures";
import { isoBytes } from "./helpers/iso";
import { cable, type Cable } from "./helpers/cable";
import { createApiToken, eventually, type Api } from "./helpers/api";
import { ImageState } from "../src/gen/quarry/v1/image_pb";

const MiB = 1024 * 1024;

test("upload an ISO from this computer: it becomes an image of the pool", async ({ page }) => {
  const name = `upload-${Date.now()}.iso`;
  await signIn(page, undefined, "/images");
  await page.getByRole("button", { name: "Upload…" }).click();
  const dialog = page.getByRole("dialog", { name: "Upload an image" });
  await dialog.locator('input[type="file"]').setInputFiles({ name, mimeType: "application/octet-stream", buffer: isoBytes("UPLOADED", 2 * MiB) });
  await expect(dialog.getByRole("textbox", { name: "Name" })).toHaveValue(name);
  await choosePool(page);
  await dialog.getByRole("button", { name: "Upload" }).click();
  await expect(page.getByText("Upload finished")).toBeVisible();
  const row = page.getByRole("row").filter({ hasText: name });
  await expect(row.getByRole("link", { name, exact: true })).toBeVisible();
  await expect(row.getByText("Ready", { exact: true })).toBeVisible();
  await expect(row).toContainText("ISO");
});

test("a file dropped on the Images page opens the upload with it", async ({ page, api }) => {
  const name = `dropped-${Date.now()}.iso`;
  await signIn(page, undefined, "/images");
  await dropFiles(page, [name], "Drop to upload");
  const dialog = page.getByRole("dialog", { name: "Upload an image" });
  await expect(dialog.getByRole("textbox", { name: "Name" })).toHaveValue(name);
  await choosePool(page);
  await dialog.getByRole("button", { name: "Upload" }).click();
  await expect(page.getByText("Upload finished")).toBeVisible();
  const img = await readyImage(api, name);
  expect(img.volumeLabel).toBe("DROPPED");

  // Several files at once: each upload is one image, so none starts.
  await dropFiles(page, ["a.iso", "b.iso"], "Drop to upload");
  await expect(page.getByText("2 files were dropped; each upload is one image")).toBeVisible();
  await expect(dialog).toBeHidden();
});

test("a viewer dropping a file is told uploads need the operator role", async ({ page, api }) => {
  const viewer = await createApiToken(api, "viewer");
  await signIn(page, viewer.secret, "/images");
  await expect(page.getByRole("heading", { level: 1, name: "Images" })).toBeVisible();
  await dropFiles(page, ["viewer.iso"], "Uploads need the operator role");
  await expect(page.getByRole("dialog", { name: "Upload an image" })).toHaveCount(0);
  await expect(page).toHaveURL(/\/images$/);
});

test("an upload the server refuses shows its reason", async ({ page }) => {
  await signIn(page, undefined, "/images");
  await page.getByRole("button", { name: "Upload…" }).click();
  const dialog = page.getByRole("dialog", { name: "Upload an image" });
  await dialog.locator('input[type="file"]').setInputFiles({ name: "bad.iso", mimeType: "application/octet-stream", buffer: isoBytes("BAD") });
  // A checksum that cannot match: the node refuses the whole file.
  await dialog.getByRole("textbox", { name: "Checksum", exact: true }).fill(`sha256:${"0".repeat(64)}`);
  await dialog.getByRole("button", { name: "Upload" }).click();
  await expect(dialog.getByRole("alert").filter({ hasText: "The upload failed" })).toContainText(/sha256|checksum|digest/i);
});

// The resumption tests send a 256 MiB ISO (QUARRY_UPLOAD_TEST_MIB sets
// another size, such as 4096 for the 4 GiB of a Windows installer) in the
// dashboard's 64 MiB writes and break off after 15/32 of it (120 MiB),
// well into the second write: the bytes sent again must stay within what
// the node may not have made durable (8 MiB plus one 32 MiB checkpoint
// interval), far below the 56 MiB a restart of the write, or the 120 MiB
// a restart from zero, would send again.
const size = (Number(process.env.QUARRY_UPLOAD_TEST_MIB) || 256) * MiB;
const breakAt = Math.floor((size * 15) / 32);
const mayResend = 40 * MiB;
// The sign-in and the API calls the dashboard makes meanwhile.
const otherTraffic = 2 * MiB;
// Generous for 2 shared cores: 20 MiB/s, and a minute on top.
const slow = 60_000 + (size / (20 * MiB)) * 1000;

test.describe("a broken upload resumes", () => {
  test.setTimeout(2 * slow);
  let dir = "";
  let line: Cable;
  test.beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "quarry-upload-"));
    line = await cable(process.env.QUARRY_UI_URL!);
  });
  test.afterEach(async () => {
    await line.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Starts the upload of a new ISO through the cable; returns once breakAt
   * has gone through, with the browser's next bytes held (line.release()).
   */
  async function uploadHalf(page: Page, label: string) {
    const name = `${label.toLowerCase()}-${Date.now()}.iso`;
    const path = bigIso(dir, name, label);
    await signIn(page, adminToken(), `${line.url}/images`);
    const started = Date.now();
    const half = line.holdAt(breakAt);
    await startUpload(page, path);
    await half;
    return { name, path, label, started };
  }

  /** Waits for the upload's end; checks what was sent again, and the image. */
  async function expectResumed(page: Page, api: Api, how: string, u: Awaited<ReturnType<typeof uploadHalf>>) {
    await expect(page.getByText("Upload finished")).toBeVisible({ timeout: slow });
    const resent = line.sent() - size;
    report(how, u.started, resent);
    expect(resent).toBeLessThanOrEqual(mayResend + otherTraffic);
    const img = await readyImage(api, u.name);
    expect(img.volumeLabel).toBe(u.label);
    expect(img.sizeBytes).toBe(BigInt(size));
  }

  test("when the network drops halfway, where the node's copy ends", async ({ page, api }) => {
    const u = await uploadHalf(page, "CUTHALFWAY");
    expect(line.cut()).toBeGreaterThan(0);
    // The upload goes on while one closes its dialog and looks at another
    // page (the rest takes 4 s at least), shows there as a running job,
    // and its end is told there.
    line.slow(size / 8);
    line.release();
    // A file dropped meanwhile waits: one upload at a time.
    await dropFiles(page, ["next.iso"], "Drop to upload");
    await expect(page.getByText("An upload is in progress")).toBeVisible();
    await page.getByRole("dialog", { name: "Upload an image" }).getByRole("button", { name: "Close" }).click();
    await navigate(page, "Jobs");
    await expect(page.getByRole("row").filter({ hasText: u.name }).getByText("Running", { exact: true })).toBeVisible();
    await expectResumed(page, api, "cut", u);
  });

  test("after a reload, when the same file is chosen again", async ({ page, api }) => {
    const u = await uploadHalf(page, "RELOADED");
    line.release(); // the reload's requests go through; the upload's, a little further
    await page.reload();
    await expect(page.getByRole("heading", { level: 1, name: "Images" })).toBeVisible();
    await startUpload(page, u.path);
    await expect(page.getByText(/Resumed: .* were already on the node/)).toBeVisible();
    await expectResumed(page, api, "reloaded", u);
  });
});

/** Prints what a resumed upload took, for the figures of the README. */
function report(how: string, started: number, resent: number) {
  const s = (Date.now() - started) / 1000;
  console.log(
    `upload of ${size / MiB} MiB ${how} after ${(breakAt / MiB).toFixed(0)} MiB: sent in ${s.toFixed(1)} s ` +
      `(${(size / MiB / s).toFixed(0)} MiB/s), ${(resent / MiB).toFixed(1)} MiB beyond the file's size`,
  );
}

/** An ISO of `size` bytes at dir/name: a volume descriptor with label, then zeros. */
function bigIso(dir: string, name: string, label: string): string {
  const path = join(dir, name);
  const fd = openSync(path, "w");
  writeSync(fd, isoBytes(label));
  ftruncateSync(fd, size);
  closeSync(fd);
  return path;
}

/**
 * Drags ISOs named names from the desktop onto the page until its overlay
 * says title (the page takes drops once it has loaded, after the
 * sign-in), then drops them there.
 */
async function dropFiles(page: Page, names: string[], title: string) {
  const files = await page.evaluateHandle(
    ({ names, b64 }) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      for (const n of names) dt.items.add(new File([bytes], n, { type: "application/octet-stream" }));
      return dt;
    },
    { names, b64: isoBytes("DROPPED").toString("base64") },
  );
  const overlay = page.getByRole("status", { name: title });
  await expect(async () => {
    await page.dispatchEvent("main", "dragenter", { dataTransfer: files });
    await expect(overlay).toBeVisible({ timeout: 1000 });
  }).toPass();
  await page.dispatchEvent("main", "drop", { dataTransfer: files });
  await expect(overlay).toBeHidden();
}

async function choosePool(page: Page) {
  const dialog = page.getByRole("dialog", { name: "Upload an image" });
  await dialog.getByRole("textbox", { name: "Pool" }).click();
  await page.getByRole("option", { name: /^local — mounted on dev/ }).click();
}

async function startUpload(page: Page, path: string) {
  await page.getByRole("button", { name: "Upload…" }).click();
  const dialog = page.getByRole("dialog", { name: "Upload an image" });
  await dialog.locator('input[type="file"]').setInputFiles(path);
  await choosePool(page);
  await dialog.getByRole("button", { name: "Upload" }).click();
}

/** Waits for the image named name to be READY and returns it. */
async function readyImage(api: Api, name: string) {
  return eventually(async () => {
    const { images } = await api.images.listImages({ search: name, pageSize: 10 });
    return images.find((i) => i.name === name && i.state === ImageState.READY);
  }, `image ${name} READY`, slow);
}
